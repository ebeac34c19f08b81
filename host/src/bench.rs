//! `switchboard bench agents`: the runtime's costs on this machine, measured with a deployed
//! agent: instantiate + on-start, one hook call, reload-to-live, and memory per live session.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::plugins::registry::Registry;
use crate::plugins::runtime::{AgentsConfig, InterpreterPool, Runtime, test_call_info};
use crate::plugins::watcher;
use crate::plugins::{AgentEventKind, Language, StartOutcome};

pub struct Figures {
    pub instantiate_start_p50: Duration,
    pub instantiate_start_p99: Duration,
    pub hook_p50: Duration,
    pub hook_p99: Duration,
    pub reload_to_live_median: Duration,
    pub reload_samples: Vec<Duration>,
    pub rss_for_sessions_mib: f64,
    /// The agent's language: the wave-1 targets are a Rust agent's.
    pub language: Language,
    pub sessions: usize,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Append a custom section so the bytes (and so the content hash) differ without changing
/// behaviour: every reload round then pays the full compile.
fn with_marker(wasm: &[u8], round: u32) -> Vec<u8> {
    let name = b"switchboard-bench";
    let payload = round.to_le_bytes();
    let body_len = 1 + name.len() + payload.len();
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(body_len as u8); // fits one LEB128 byte
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// Measure with `agent` (name) deployed in `agents_dir`.
pub async fn agents(agents_dir: &Path, agent: &str, sessions: usize) -> anyhow::Result<Figures> {
    let wasm_path = agents_dir.join(format!("{agent}.wasm"));
    let manifest_path = agents_dir.join(format!("{agent}.toml"));
    let data = tempfile::tempdir()?;
    let defaults = AgentsConfig::default();
    let pool = |memory_mb| InterpreterPool {
        max_instances: (sessions + 100) as u32,
        memory_mb,
    };
    let config = AgentsConfig {
        dir: agents_dir.to_path_buf(),
        max_instances: (sessions + 100) as u32,
        python: pool(defaults.python.memory_mb),
        js: pool(defaults.js.memory_mb),
        ..defaults
    };
    let rt = Runtime::new(config.clone(), BTreeMap::new(), data.path())?;
    let version = Arc::new(rt.load(&wasm_path, &manifest_path).await?);
    let info = test_call_info("bench", "+15550100001", "1000");

    // Instantiate + on-start, then drop, many times.
    let mut setup = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        let mut s = rt.session(&version, "bench").await?;
        let out = s.start(&info).await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(
            matches!(out, StartOutcome::Accept { .. }),
            "{agent} refused the call"
        );
        if i >= 200 {
            setup.push(elapsed);
        }
    }
    // One hook on a live session.
    let mut s = rt.session(&version, "bench").await?;
    s.start(&info).await?;
    let mut hooks = Vec::new();
    for i in 0..20_000 {
        let t = Instant::now();
        s.dtmf("9").await?;
        if i >= 1000 {
            hooks.push(t.elapsed());
        }
    }
    drop(s);

    // Memory for many live sessions (each after on-start and one hook).
    let before = rss_kib()?;
    let mut live = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut s = rt.session(&version, &format!("live-{i}")).await?;
        s.start(&info).await?;
        s.dtmf("1").await?;
        live.push(s);
    }
    let after = rss_kib()?;
    drop(live);

    // Reload-to-live: publish a new build (temp file + rename) and wait for it to be live.
    let dir = tempfile::tempdir()?;
    let wasm = std::fs::read(&wasm_path)?;
    std::fs::copy(&manifest_path, dir.path().join(format!("{agent}.toml")))?;
    std::fs::write(
        dir.path().join(format!("{agent}.wasm")),
        with_marker(&wasm, 0),
    )?;
    let rt2 = Runtime::new(
        AgentsConfig {
            dir: dir.path().to_path_buf(),
            max_instances: 16,
            ..config
        },
        BTreeMap::new(),
        data.path(),
    )?;
    let registry = Registry::new(rt2, BTreeMap::new())?;
    let mut events = registry.subscribe();
    let _watch = watcher::watch(registry.clone());
    tokio::time::timeout(Duration::from_secs(60), events.recv()).await??;
    let mut reloads = Vec::new();
    for round in 1..=7 {
        let tmp = dir.path().join(".bench.partial");
        std::fs::write(&tmp, with_marker(&wasm, round))?;
        let t = Instant::now();
        std::fs::rename(&tmp, dir.path().join(format!("{agent}.wasm")))?;
        let ev = tokio::time::timeout(Duration::from_secs(60), events.recv()).await??;
        anyhow::ensure!(
            matches!(ev.kind, AgentEventKind::Loaded { .. }),
            "reload failed: {ev:?}"
        );
        reloads.push(t.elapsed());
    }

    Ok(Figures {
        instantiate_start_p50: percentile(&mut setup, 0.5),
        instantiate_start_p99: percentile(&mut setup, 0.99),
        hook_p50: percentile(&mut hooks, 0.5),
        hook_p99: percentile(&mut hooks, 0.99),
        reload_to_live_median: percentile(&mut reloads.clone(), 0.5),
        reload_samples: reloads,
        rss_for_sessions_mib: after.saturating_sub(before) as f64 / 1024.0,
        language: version.manifest().language,
        sessions,
    })
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The targets were set for Rust agents; an interpreter's agent is measured against them
        // only in the note, as a ratio.
        let target = |t: &'static str| {
            if self.language == Language::Rust {
                t
            } else {
                ""
            }
        };
        writeln!(
            f,
            "instantiate + on-start   p50 {:>9.1?}  p99 {:>9.1?}{}",
            self.instantiate_start_p50,
            self.instantiate_start_p99,
            target("   (target ≤ 50 µs p50)")
        )?;
        writeln!(
            f,
            "hook call (on-dtmf)      p50 {:>9.1?}  p99 {:>9.1?}{}",
            self.hook_p50,
            self.hook_p99,
            target("   (target ≤ 5 µs p50)")
        )?;
        writeln!(
            f,
            "reload to live           median {:>7.1?}  samples {:?}{}",
            self.reload_to_live_median,
            self.reload_samples,
            target("   (target ≤ 300 ms)")
        )?;
        writeln!(
            f,
            "RSS for {} live sessions {:.1} MiB{}",
            self.sessions,
            self.rss_for_sessions_mib,
            target("   (target ≤ 64 MiB for 1000)")
        )?;
        let per_call_mib = self.rss_for_sessions_mib / self.sessions.max(1) as f64;
        writeln!(
            f,
            "memory per call          {:.0} KiB   ({:.0} calls per GiB)",
            per_call_mib * 1024.0,
            1024.0 / per_call_mib.max(f64::EPSILON)
        )
    }
}
