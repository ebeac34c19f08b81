//! Web calls against SIP calls in one run (issue 27's benchmark, ignored by default): how many
//! web calls the host holds at once on this 2-core machine with audio both ways (goal ≥ 300,
//! host-added latency p99 ≤ 20 ms), and what a web call costs next to a SIP call.
//!
//! Each repeat starts the release host (`receptionist` on 2000, the OpenAI provider being the
//! fake of support/fake_openai, which answers each turn at once) and gives it two loads in
//! turn, which one first alternating from repeat to repeat; N calls of S seconds each, set up at
//! 50 a second, every caller speaking the same looped turn of espeak-ng speech (silence while
//! the greeting plays, a question, silence):
//! - web: `webrtc-load` (tests/bin/webrtc_load.rs), a process of its own: str0m peers offering
//!   Opus and the `switchboard` data channel at `POST /v1/webrtc/2000`, the speech at 48 kHz in
//!   20 ms Opus frames, hanging up over the data channel;
//! - SIP: callers in this process as calls_bench places them (support/load.rs `pcmu_caller`):
//!   PCMU over RTP, the speech at 8 kHz, hanging up with a BYE.
//!
//! Measured per load over its steady window (every call up, none ending): host CPU-seconds per
//! call-minute (utime + stime from /proc/<pid>/stat), the load generator's too for web, RSS per
//! call ((peak RSS − RSS before the load) / N, for the first load on a host only); then from the call records (`GET
//! /v1/calls/{id}`) the host's own per-turn split (`turn-latency`: caller audio in → model,
//! model audio → out to the caller; Opus carries no in-band stamp, so this one measure serves
//! both legs): host-in, host-out and their sum per turn, p50 and p99; and the calls broken:
//! failed in the load, or whose record is not of the leg's transport, did not end with the
//! caller's hangup, or has no answered turn.
//!
//! Run by hand, in release builds: `bench/webrtc.sh` (300 calls of 60 s, 3 repeats), or
//! `BENCH_CALLS=20 BENCH_SECS=20 BENCH_REPEAT=1 cargo test --release -p switchboard-tests
//!  --test all -- --ignored --nocapture webrtc_bench::` (defaults: 10 calls of 30 s, once).
//! Medians of the repeats per leg, and web / SIP, in a markdown table.
//!
//! `webrtc_load_smoke` (not ignored) runs the generator against the debug host so that CI
//! exercises it: 2 web calls of a few seconds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::agents::build_bin;
use crate::support::api::{Api, metric};
use crate::support::calls::espeak_at;
use crate::support::consumer::test_config;
use crate::support::fake_openai::{FakeOpenAi, Script};
use crate::support::host::Host;
use crate::support::load::{cpu_seconds, pcmu_caller, quantile, status_field};
use crate::support::ports::{Ports, ports};
use crate::support::process::{Lines, Proc, require};
use crate::support::tempdir;
use switchboard::sip::SipEndpoint;

/// What the callers say in each turn of [`TURN_SECS`], after [`QUIET_SECS`] of silence (the
/// first turn's leaves the greeting to play).
const QUESTION: &str = "Hello, I would like to know when the shop opens tomorrow morning.";
const TURN_SECS: usize = 10;
const QUIET_SECS: usize = 4;
/// Call setups a second, as a burst of real calls would come.
const SETUPS_PER_SEC: u64 = 50;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

/// One turn of the callers' speech at `rate`: silence, the question, silence.
fn caller_turn(rate: u32) -> Vec<i16> {
    let rate_usize = rate as usize;
    let mut turn = vec![0; QUIET_SECS * rate_usize];
    turn.extend(espeak_at(QUESTION, rate));
    assert!(
        turn.len() < TURN_SECS * rate_usize,
        "the question fits a turn"
    );
    turn.resize(TURN_SECS * rate_usize, 0);
    turn
}

/// The turn at 48 kHz as `webrtc-load` reads it (16-bit little-endian), in `dir`.
fn web_audio(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("turn-48k.raw");
    let bytes: Vec<u8> = caller_turn(48000)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A host taking `calls` web calls and as many SIP calls (`receptionist` on 2000, `model`
/// behind it); the UDP ports of its web calls are held by the [`Ports`] returned.
fn start_host(model: &FakeOpenAi, calls: u32, release: bool) -> (Host, Ports) {
    let web_ports = ports(u16::try_from(calls + 10).expect("fewer calls"));
    let mut builder = Host::builder();
    if release {
        // Calls' events stay out of the log under load; the records hold them.
        builder = builder.release().rust_log("info,rsipstack=warn");
    }
    let host = builder
        .examples(&["receptionist"])
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "2000")
        .rtp_ports(u16::try_from(2 * calls + 100).expect("fewer calls"))
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .config(&format!(
            "[webrtc]\npublic-ip = \"127.0.0.1\"\nports = [{}, {}]\nmax-calls = {}",
            web_ports.first(),
            web_ports.last(),
            calls + 10
        ))
        .start();
    (host, web_ports)
}

fn fake_model() -> Script {
    Script {
        api_key: "test".into(),
        record_audio: false,
        ..Script::default()
    }
}

/// `webrtc-load` placing `calls` web calls of `secs` to 2000 on `host`, its stdout read.
fn web_load(bin: &Path, host: &Host, audio: &Path, calls: u32, secs: u64) -> (Proc, Lines) {
    let ramp_ms = 1000 * u64::from(calls) / SETUPS_PER_SEC;
    let mut load = Proc::spawn(
        "webrtc-load",
        Command::new(bin)
            .args([
                "--offer-url",
                &format!("http://{}/v1/webrtc/2000", host.http),
            ])
            .args(["--calls", &calls.to_string()])
            .args(["--secs", &secs.to_string()])
            .args(["--ramp-ms", &ramp_ms.to_string()])
            .arg("--audio")
            .arg(audio)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = Lines::new(load.child.stdout.take().unwrap());
    (load, out)
}

/// Waits for `webrtc-load` to end (its calls last `secs`) and returns its JSON report.
async fn web_report(load: &mut Proc, out: &mut Lines, secs: u64) -> Value {
    let code = load.wait(Duration::from_secs(secs + 90)).await;
    out.drain(Duration::from_secs(2));
    assert_eq!(code, Some(0), "webrtc-load failed: {:?}", out.seen);
    out.seen
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from webrtc-load: {:?}", out.seen))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The records of the calls started since `from_ms` (`GET /v1/calls/{id}`), once every call
/// has ended.
async fn records_since(api: &Api, from_ms: i64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&api.get("/metrics").await.text, "switchboard_calls_active") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "calls still up 60 s after the load"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(&format!("/v1/calls?from_ms={from_ms}&limit=1000{cursor}"))
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        ids.extend(
            page.json["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string()),
        );
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mut records = Vec::new();
    for id in ids {
        let ended = |d: &Value| {
            d["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "ended"))
        };
        records.push(
            api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), ended)
                .await,
        );
    }
    records
}

/// Why a call's record shows it broken, if it does: not of `transport`, not ended by the
/// caller's hangup, or no answered turn.
fn record_problem(record: &Value, transport: &str) -> Option<String> {
    let call = &record["call"];
    if call["transport"] != transport {
        return Some(format!("transport {}", call["transport"]));
    }
    if call["end_reason"] != "caller-hangup" {
        return Some(format!("ended: {}", call["end_reason"]));
    }
    if record["latencies"].as_array().is_none_or(Vec::is_empty) {
        return Some("no turn answered".into());
    }
    None
}

/// p50 and p99 of `v`; None when empty.
fn p50_p99(mut v: Vec<f64>) -> Option<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| (quantile(&v, 0.5), quantile(&v, 0.99)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:") as f64 / 1024.0
}

/// What the steady window of a load measured.
struct Window {
    host_cpu: f64,
    load_cpu: Option<f64>,
    peak_rss: f64,
    secs: f64,
}

/// From 2 s after every call is up until 2 s before the first hangs up (`first_end`): the
/// CPU of the host `pid` (and of the load `load_pid`), the host's peak RSS.
async fn steady_window(pid: u32, load_pid: Option<u32>, first_end: Instant) -> Window {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window_end = first_end - Duration::from_secs(2);
    let start = Instant::now();
    let (cpu0, load0) = (cpu_seconds(pid), load_pid.map(cpu_seconds));
    let mut peak_rss = rss_mib(pid);
    while Instant::now() + Duration::from_secs(1) < window_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_mib(pid));
    }
    let (cpu1, load1) = (cpu_seconds(pid), load_pid.map(cpu_seconds));
    let secs = start.elapsed().as_secs_f64();
    assert!(secs > 3.0, "a steady window of {secs:.1} s is too short");
    Window {
        host_cpu: cpu1 - cpu0,
        load_cpu: load1.zip(load0).map(|(b, a)| b - a),
        peak_rss,
        secs,
    }
}

/// What one load measured.
#[derive(Debug, Clone)]
struct Phase {
    leg: &'static str,
    calls: u32,
    /// Broken calls: how many, and the first few with why.
    broken: usize,
    why: Vec<String>,
    host_cpu_per_call_min: f64,
    load_cpu_per_call_min: Option<f64>,
    /// Only for the first load on a host: after one, the allocator keeps its memory for the
    /// next, whose growth would read too small.
    rss_per_call_mib: Option<f64>,
    /// Per turn, in ms: host-in, host-out, and their sum; p50 and p99.
    host_in: Option<(f64, f64)>,
    host_out: Option<(f64, f64)>,
    added: Option<(f64, f64)>,
    turns: usize,
    /// Sound heard per web call (s, median).
    heard_s: Option<f64>,
}

impl Phase {
    /// The figures of a load of `calls` from its window, the RSS before it (on a fresh host),
    /// its calls' records and the failures its callers saw (by call id when known; a call that left no
    /// record failed at its caller).
    fn new(
        leg: &'static str,
        calls: u32,
        window: &Window,
        idle_rss: Option<f64>,
        records: &[Value],
        mut broken: BTreeMap<String, String>,
    ) -> Phase {
        let transport = if leg == "web" { "webrtc" } else { "udp" };
        for record in records {
            let id = record["call"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(problem) = record_problem(record, transport) {
                broken.entry(id).or_insert(problem);
            }
        }
        let turns: Vec<&Value> = records
            .iter()
            .flat_map(|r| r["latencies"].as_array().into_iter().flatten())
            .collect();
        let ms = |t: &Value, key: &str| t[key].as_f64().unwrap_or(f64::NAN);
        let call_minutes = f64::from(calls) * window.secs / 60.0;
        Phase {
            leg,
            calls,
            broken: broken.len(),
            why: broken
                .into_iter()
                .take(5)
                .map(|(id, why)| format!("{id}: {why}"))
                .collect(),
            host_cpu_per_call_min: window.host_cpu / call_minutes,
            load_cpu_per_call_min: window.load_cpu.map(|c| c / call_minutes),
            rss_per_call_mib: idle_rss.map(|idle| (window.peak_rss - idle) / f64::from(calls)),
            host_in: p50_p99(turns.iter().map(|t| ms(t, "host_in_ms")).collect()),
            host_out: p50_p99(turns.iter().map(|t| ms(t, "host_out_ms")).collect()),
            added: p50_p99(
                turns
                    .iter()
                    .map(|t| ms(t, "host_in_ms") + ms(t, "host_out_ms"))
                    .collect(),
            ),
            turns: turns.len(),
            heard_s: None,
        }
    }
}

/// The host's warnings and errors logged from line `from` on: how many, and the first few.
fn problems(host: &mut Host, from: usize) -> (usize, Vec<String>) {
    host.log.drain(Duration::from_millis(200));
    let bad: Vec<&String> = host.log.seen[from..]
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    (bad.len(), bad.into_iter().take(5).cloned().collect())
}

/// `calls` web calls of `secs` from `webrtc-load` against `host` (`fresh`: its first load).
async fn web_phase(
    host: &mut Host,
    bin: &Path,
    audio: &Path,
    calls: u32,
    secs: u64,
    fresh: bool,
) -> Phase {
    let api = Api::new(host.http, None);
    let pid = host.process.pid();
    let idle_rss = fresh.then(|| rss_mib(pid));
    let (from_ms, log_from) = (unix_ms(), host.log.seen.len());
    let started = Instant::now();
    let (mut load, mut out) = web_load(bin, host, audio, calls, secs);
    let setup_limit =
        Duration::from_millis(1000 * u64::from(calls) / SETUPS_PER_SEC) + Duration::from_secs(40);
    let up = out
        .wait_for(&["connected "], setup_limit)
        .unwrap_or_else(|| panic!("web calls not set up in {setup_limit:?}: {:?}", out.seen));
    let window = steady_window(pid, Some(load.pid()), started + Duration::from_secs(secs)).await;
    let report = web_report(&mut load, &mut out, secs).await;
    let records = records_since(&api, from_ms).await;
    let failed: BTreeMap<String, String> = report["per_call"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(n, c)| {
            let why = c["failure"].as_str()?.to_string();
            let id = c["id"].as_str().map_or(format!("call {n}"), str::to_string);
            Some((id, why))
        })
        .collect();
    let mut phase = Phase::new("web", calls, &window, idle_rss, &records, failed);
    phase.heard_s = Some(median(
        report["heard_s"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect(),
    ));
    let (count, first) = problems(host, log_from);
    println!(
        "webrtc bench: web {calls} calls of {secs} s: {up}; window {:.1} s; frames sent {}, \
         received {}, dropped sends {}; {} records; host logged {count} warnings/errors \
         {first:#?}; {phase:?}",
        window.secs,
        report["sent"],
        report["received"],
        report["send_drops"],
        records.len()
    );
    phase
}

/// `calls` SIP calls of `secs` placed from this process against `host` (`fresh`: its first
/// load).
async fn sip_phase(
    host: &mut Host,
    endpoint: &SipEndpoint,
    calls: u32,
    secs: u64,
    fresh: bool,
) -> Phase {
    let api = Api::new(host.http, None);
    let pid = host.process.pid();
    let idle_rss = fresh.then(|| rss_mib(pid));
    let (from_ms, log_from) = (unix_ms(), host.log.seen.len());
    let turn = caller_turn(8000);
    let track: Arc<Vec<i16>> = Arc::new(
        turn.iter()
            .copied()
            .cycle()
            .take(secs as usize * 8000)
            .collect(),
    );
    let started = Instant::now();
    let ramp_ms = 1000 * u64::from(calls) / SETUPS_PER_SEC;
    let tasks: Vec<_> = (0..calls)
        .map(|n| {
            let (endpoint, track) = (endpoint.clone(), track.clone());
            let uri = format!("sip:2000@127.0.0.1:{}", host.sip_port);
            tokio::spawn(async move {
                let after = ramp_ms * u64::from(n) / u64::from(calls);
                tokio::time::sleep(Duration::from_millis(after)).await;
                pcmu_caller(endpoint, uri, n, &track, None).await
            })
        })
        .collect();
    let setup_limit = Duration::from_millis(ramp_ms) + Duration::from_secs(30);
    let deadline = Instant::now() + setup_limit;
    let mut up = 0.0;
    while up < f64::from(calls) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        up = metric(&api.get("/metrics").await.text, "switchboard_calls_active");
    }
    let window = steady_window(pid, None, started + Duration::from_secs(secs)).await;
    let mut failed = BTreeMap::new();
    for (n, task) in tasks.into_iter().enumerate() {
        if let Err(e) = task.await {
            failed.insert(format!("call {n}"), e.to_string());
        }
    }
    let records = records_since(&api, from_ms).await;
    let phase = Phase::new("SIP", calls, &window, idle_rss, &records, failed);
    let (count, first) = problems(host, log_from);
    println!(
        "webrtc bench: SIP {calls} calls of {secs} s: {up} up at once; window {:.1} s; {} \
         records; host logged {count} warnings/errors {first:#?}; {phase:?}",
        window.secs,
        records.len()
    );
    phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly (bench/webrtc.sh)"]
async fn web_calls_against_sip_calls() {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let calls = u32::try_from(env_or("BENCH_CALLS", 10)).expect("BENCH_CALLS");
    let secs = env_or("BENCH_SECS", 30);
    let repeat = env_or("BENCH_REPEAT", 1);
    let dir = tempdir("webrtc-bench");
    let audio = web_audio(dir.path());
    let bin = build_bin("switchboard-tests", "webrtc-load", true);
    let model = FakeOpenAi::start(fake_model()).await;
    let (endpoint, _events) = SipEndpoint::start(test_config()).await.unwrap();
    let mut phases = Vec::new();
    for run in 0..repeat {
        let (mut host, _web_ports) = start_host(&model, calls, true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (nth, web) in [run % 2 == 0, run % 2 == 1].into_iter().enumerate() {
            let fresh = nth == 0;
            phases.push(if web {
                web_phase(&mut host, &bin, &audio, calls, secs, fresh).await
            } else {
                sip_phase(&mut host, &endpoint, calls, secs, fresh).await
            });
        }
        assert!(host.is_running(), "the host survived the run");
    }
    endpoint.shutdown().await;
    report(calls, secs, repeat, &phases);
}

/// The table: medians over the repeats per leg, and web / SIP.
fn report(calls: u32, secs: u64, repeat: u64, phases: &[Phase]) {
    println!(
        "\nwebrtc bench: {calls} concurrent calls of {secs} s per leg, medians of {repeat} \
         run(s); host-added latency goal: in+out p99 ≤ 20 ms"
    );
    println!(
        "| leg | calls | calls broken | host CPU-s/call-min | load CPU-s/call-min | RSS MiB/call \
         (first load on a host) | host-in p50/p99 ms | host-out p50/p99 ms | in+out p50/p99 ms | turns | heard s/call |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let row = |leg: &str| -> (f64, Option<f64>) {
        let of: Vec<&Phase> = phases.iter().filter(|p| p.leg == leg).collect();
        let m = |f: fn(&Phase) -> f64| median(of.iter().map(|p| f(p)).collect());
        let pair = |f: fn(&Phase) -> Option<(f64, f64)>| {
            let v: Vec<(f64, f64)> = of.iter().filter_map(|p| f(p)).collect();
            if v.is_empty() {
                return "—".to_string();
            }
            format!(
                "{:.2} / {:.2}",
                median(v.iter().map(|x| x.0).collect()),
                median(v.iter().map(|x| x.1).collect())
            )
        };
        let optional = |f: fn(&Phase) -> Option<f64>| {
            let v: Vec<f64> = of.iter().filter_map(|p| f(p)).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let shown = |v: Option<f64>, digits: usize| {
            v.map_or("—".to_string(), |v| format!("{v:.digits$}"))
        };
        let cpu = m(|p| p.host_cpu_per_call_min);
        let rss = optional(|p| p.rss_per_call_mib);
        println!(
            "| {leg} | {calls} | {} | {cpu:.4} | {} | {} | {} | {} | {} | {} | {} |",
            of.iter()
                .map(|p| p.broken.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            shown(optional(|p| p.load_cpu_per_call_min), 4),
            shown(rss, 3),
            pair(|p| p.host_in),
            pair(|p| p.host_out),
            pair(|p| p.added),
            m(|p| p.turns as f64),
            shown(optional(|p| p.heard_s), 1),
        );
        for p in of.iter().filter(|p| p.broken > 0) {
            println!(
                "  {leg}: {} of {} calls broke, e.g. {:?}",
                p.broken, p.calls, p.why
            );
        }
        (cpu, rss)
    };
    let web = row("web");
    let sip = row("SIP");
    let rss_ratio = web
        .1
        .zip(sip.1)
        .map_or("—".to_string(), |(w, s)| format!("{:.2}×", w / s));
    println!(
        "| web / SIP | | | {:.2}× | | {rss_ratio} | | | | | |",
        web.0 / sip.0
    );
}

/// The load generator in CI: 2 web calls of a few seconds against the debug host, each
/// connected with audio both ways, and the records saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_load_smoke() {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let dir = tempdir("webrtc-smoke");
    let audio = web_audio(dir.path());
    let bin = build_bin("switchboard-tests", "webrtc-load", false);
    let model = FakeOpenAi::start(fake_model()).await;
    let (host, _web_ports) = start_host(&model, 2, false);
    // Long enough for the greeting and one question (4 s of silence, then the speech).
    let secs = 10;
    let (mut load, mut out) = web_load(&bin, &host, &audio, 2, secs);
    let report = web_report(&mut load, &mut out, secs).await;
    assert!(
        out.seen.iter().any(|l| l == "connected 2 of 2"),
        "{:?}",
        out.seen
    );
    assert_eq!(report["failed"], 0, "{report}");
    let per_call = report["per_call"].as_array().unwrap();
    for call in per_call {
        // 20 ms frames through the call (50 a second; a loaded CI machine may skip some), the
        // greeting heard, the call's state on the channel.
        assert!(call["sent"].as_u64().unwrap() >= 30 * secs, "{call}");
        assert!(call["received"].as_u64().unwrap() > 0, "{call}");
        assert!(call["heard_s"].as_f64().unwrap() > 0.5, "{call}");
        assert!(call["events"]["state"].as_u64().unwrap_or(0) > 0, "{call}");
    }
    // The model got the callers' speech: at least the question's seconds of audio on each of
    // the two sessions (24 kHz PCM is 48 bytes a ms, G.711 8).
    let appended = model.appended_by_connection();
    assert_eq!(appended.len(), 2, "{appended:?}");
    assert!(appended.iter().all(|&b| b >= 3 * 8000), "{appended:?}");
    let api = Api::new(host.http, None);
    for call in per_call {
        let id = call["id"].as_str().unwrap();
        let record = api
            .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
                d["call"]["end_reason"].is_string()
            })
            .await;
        assert_eq!(record["call"]["transport"], "webrtc", "{record}");
        assert_eq!(record["call"]["end_reason"], "caller-hangup", "{record}");
    }
}
