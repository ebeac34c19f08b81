//! Twilio calls against Switchboard and against Pipecat, in one run (ignored by default).
//!
//! The same load hits both: `twilio-load` (tests/bin/twilio_load.rs), a process of its own
//! playing Twilio for N concurrent calls of S seconds — the voice webhook (signed for
//! Switchboard's bridge; Pipecat's example does not check signatures), the TwiML stream, 20 ms
//! μ-law frames of espeak-ng speech (a 4 s question every 10 s), marks echoed, `clear`
//! honoured, `stop` at the end. Both servers talk to the same fake OpenAI Realtime model
//! (support/fake_openai), which answers each turn at once:
//! - Switchboard: the release binary, its Twilio bridge on a public listener, `receptionist`
//!   on 2000.
//! - Pipecat: bench/pipecat/bot.py, Pipecat's documented FastAPI + `TwilioFrameSerializer`
//!   server with its OpenAI Realtime service, one process for every call, run with the
//!   Python of `PIPECAT_PYTHON` (bench/pipecat/run.sh makes that venv).
//!
//! Measured per server and call count, over the steady window (every call up, none ending):
//! CPU-seconds per call-minute (utime + stime from /proc/<pid>/stat) of the server and of the
//! load generator, RSS per call ((RSS with N calls − idle RSS) / N), calls that broke and where.
//! For Switchboard also the host-added latency as calls_bench measures it, with send-time
//! stamps carried in the audio (μ-law crosses the bridge to the model unchanged): stream in →
//! model socket out per frame, model socket in → stream out per talkspurt. Pipecat resamples
//! the audio (8 → 24 kHz PCM and back), so a stamp does not survive it.
//!
//! Run by hand, all in release builds (the fake model lives in the test process and must keep
//! up with 200 calls of 24 kHz PCM from Pipecat): `bench/pipecat/run.sh`, which makes the venv
//! and runs
//! `PIPECAT_PYTHON=bench/pipecat/.venv/bin/python BENCH_CALLS=50,200 BENCH_SECS=60 BENCH_REPEAT=3
//!  cargo test --release -p switchboard-tests --test all -- --ignored --nocapture bridge_bench::`
//! (each configuration `BENCH_REPEAT` times, medians reported; `BENCH_TARGETS=switchboard` or
//! `pipecat` runs one side only; without the variables, one smoke run of 5 calls of 15 s).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agents::{build_bin, repo_root};
use crate::support::calls::RATE;
use crate::support::fake_openai::{FakeOpenAi, Script};
use crate::support::fake_twilio::FakeTwilio;
use crate::support::host::Host;
use crate::support::load::{cpu_seconds, quantile, status_field};
use crate::support::media::{read_raw_i16, run};
use crate::support::model_audio::{epoch_to_monotonic_ns, ulaw_encode};
use crate::support::ports::{Ports, ports};
use crate::support::process::{Lines, Proc, require};
use crate::support::tempdir;

/// What the callers say in each turn of [`TURN_SECS`], after [`QUIET_SECS`] of silence (the
/// first turn's leaves the greeting to play).
const QUESTION: &str = "Hello, I would like to know when the shop opens tomorrow morning.";
const TURN_SECS: usize = 10;
const QUIET_SECS: usize = 4;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One turn of the callers' track as μ-law (silence, the question, silence), and where in it
/// the question ends (ms).
fn caller_turn(dir: &Path) -> (Vec<u8>, f64) {
    let wav = dir.join("question.wav");
    let raw = dir.join("question.raw");
    run("espeak-ng", &["-w", wav.to_str().unwrap(), QUESTION]);
    run(
        "sox",
        &[
            wav.to_str().unwrap(),
            "-r",
            "8000",
            "-c",
            "1",
            "-e",
            "signed-integer",
            "-b",
            "16",
            raw.to_str().unwrap(),
        ],
    );
    let speech = read_raw_i16(&raw);
    assert!(
        speech.len() < (TURN_SECS - QUIET_SECS - 1) * RATE,
        "the question fits a turn"
    );
    let question_end_ms = ((QUIET_SECS * RATE + speech.len()) / 8) as f64;
    let mut turn = vec![0; QUIET_SECS * RATE];
    turn.extend(speech);
    turn.resize(TURN_SECS * RATE, 0);
    (turn.into_iter().map(ulaw_encode).collect(), question_end_ms)
}

/// A server under test.
enum Server {
    Switchboard { host: Host, _public: Ports },
    Pipecat { proc: Proc, log: Lines },
}

impl Server {
    fn pid(&self) -> u32 {
        match self {
            Server::Switchboard { host, .. } => host.process.pid(),
            Server::Pipecat { proc, .. } => proc.pid(),
        }
    }

    /// Its log, every line so far collected.
    fn log(&mut self) -> &mut Lines {
        let log = match self {
            Server::Switchboard { host, .. } => &mut host.log,
            Server::Pipecat { log, .. } => log,
        };
        log.drain(Duration::from_millis(200));
        log
    }

    /// The server's warnings and errors after the first `from` lines: how many, and the first
    /// few.
    fn problems(&mut self, from: usize) -> (usize, Vec<String>) {
        let bad: Vec<&String> = self.log().seen[from..]
            .iter()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .collect();
        (bad.len(), bad.into_iter().take(5).cloned().collect())
    }
}

/// Switchboard with the Twilio bridge on a public listener; (server, webhook URL, load args).
fn start_switchboard(model: &FakeOpenAi, twilio: &FakeTwilio) -> (Server, String, Vec<String>) {
    let public = ports(1);
    let public_url = format!("http://127.0.0.1:{}", public.first());
    let host = Host::builder()
        .release()
        .examples(&["receptionist"])
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "1000")
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"",
            public.first()
        ))
        .config(&format!(
            "[bridges.twilio]\naccount-sid = \"{}\"\nauth-token = \"{}\"\napi-base = \"{}\"",
            twilio.account_sid, twilio.auth_token, twilio.api_base
        ))
        .start();
    let args = vec![
        "--auth-token".into(),
        twilio.auth_token.clone(),
        "--account-sid".into(),
        twilio.account_sid.clone(),
    ];
    let server = Server::Switchboard {
        host,
        _public: public,
    };
    (server, format!("{public_url}/twilio/voice"), args)
}

/// Pipecat's server (bench/pipecat/bot.py) on the venv's Python; (server, webhook URL).
async fn start_pipecat(python: &Path, model: &FakeOpenAi) -> (Server, String) {
    let port = ports(1);
    let mut proc = Proc::spawn(
        "pipecat",
        Command::new(python)
            .arg(repo_root().join("bench/pipecat/bot.py"))
            .args(["--port", &port.first().to_string()])
            .args(["--openai-url", &model.url, "--openai-key", "test"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(proc.child.stderr.take().unwrap());
    log.wait_for(&["Uvicorn running"], Duration::from_secs(60))
        .unwrap_or_else(|| panic!("Pipecat did not start: {:#?}", log.seen));
    let url = format!("http://127.0.0.1:{}/", port.first());
    proc.hold(port);
    (Server::Pipecat { proc, log }, url)
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Run {
    target: &'static str,
    calls: u32,
    opened: u64,
    /// Calls that broke, with where (the first few).
    failures: Vec<String>,
    failed: usize,
    server_cpu_per_call_min: f64,
    load_cpu_per_call_min: f64,
    idle_rss_mib: f64,
    rss_per_call_mib: f64,
    /// Audio the caller heard, per call (s, median).
    heard_s: f64,
    /// The caller's wait from the end of its question to the answer's first audio (the fake
    /// model's 500 ms of VAD silence included), in ms: p50, p99.
    answer_wait: Option<(f64, f64)>,
    /// Stream in → model socket out, model socket in → stream out (answers), in ms: p50, p99.
    host_in: Option<(f64, f64)>,
    host_out: Option<(f64, f64)>,
}

fn p50_p99(mut ms: Vec<f64>) -> Option<(f64, f64)> {
    ms.sort_by(f64::total_cmp);
    (!ms.is_empty()).then(|| (quantile(&ms, 0.5), quantile(&ms, 0.99)))
}

fn rss_mib(pid: u32) -> f64 {
    status_field(pid, "VmRSS:") as f64 / 1024.0
}

struct Load<'a> {
    bin: &'a Path,
    audio: &'a Path,
    question_end_ms: f64,
    calls: u32,
    secs: u64,
    epoch_ns: u64,
}

/// Play `load` at `webhook` against `server`; what it measured.
async fn measure(
    target: &'static str,
    server: &mut Server,
    webhook: &str,
    extra: &[String],
    load: &Load<'_>,
    model: &FakeOpenAi,
) -> Run {
    let pid = server.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mib(pid);
    let log_from = server.log().seen.len();
    let appends_before = model.append_latencies().len();
    // Setups spread over 20 ms a call, as a burst of real calls would be.
    let ramp_ms = 20 * u64::from(load.calls);
    let started = Instant::now();
    let mut generator = Proc::spawn(
        "twilio-load",
        Command::new(load.bin)
            .args(["--webhook", webhook])
            .args(["--calls", &load.calls.to_string()])
            .args(["--secs", &load.secs.to_string()])
            .args(["--ramp-ms", &ramp_ms.to_string()])
            .args(["--audio", load.audio.to_str().unwrap()])
            .args(["--epoch-ns", &load.epoch_ns.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let load_pid = generator.pid();
    let mut out = Lines::new(generator.child.stdout.take().unwrap());
    let setup_limit = Duration::from_millis(ramp_ms) + Duration::from_secs(30);
    let opened = out
        .wait_for(&["opened"], setup_limit)
        .unwrap_or_else(|| panic!("{target}: the calls were not set up in {setup_limit:?}"));
    // The steady window: every call up, none ending yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window_start = Instant::now();
    let window_end = started + Duration::from_secs(load.secs) - Duration::from_secs(2);
    let (cpu0, load_cpu0) = (cpu_seconds(pid), cpu_seconds(load_pid));
    let mut rss = idle_rss;
    while Instant::now() + Duration::from_secs(1) < window_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss = rss.max(rss_mib(pid));
    }
    let window = window_start.elapsed().as_secs_f64();
    assert!(
        window > 3.0,
        "{target}: a steady window of {window:.1} s is too short"
    );
    let (cpu1, load_cpu1) = (cpu_seconds(pid), cpu_seconds(load_pid));
    let exited = generator
        .wait(Duration::from_secs(load.secs + 60))
        .await
        .expect("the load generator ends");
    out.drain(Duration::from_secs(2));
    assert_eq!(exited, 0, "twilio-load failed: {:?}", out.seen);
    let report: Value = out
        .seen
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from twilio-load: {:?}", out.seen));
    let ms_list = |key: &str| -> Vec<f64> {
        report[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let failures: Vec<String> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    let call_minutes = f64::from(load.calls) * window / 60.0;
    let stamped = target == "switchboard";
    let run = Run {
        target,
        calls: load.calls,
        opened: report["opened"].as_u64().unwrap_or(0),
        failed: failures.len(),
        failures: failures.into_iter().take(5).collect(),
        server_cpu_per_call_min: (cpu1 - cpu0) / call_minutes,
        load_cpu_per_call_min: (load_cpu1 - load_cpu0) / call_minutes,
        idle_rss_mib: idle_rss,
        rss_per_call_mib: (rss - idle_rss) / f64::from(load.calls),
        heard_s: median(ms_list("heard_s")),
        // Talkspurts before the question's end are greetings.
        answer_wait: p50_p99(
            ms_list("talkspurt_at_ms")
                .into_iter()
                .map(|at| at - load.question_end_ms)
                .filter(|wait| *wait > 0.0)
                .collect(),
        ),
        host_in: stamped
            .then(|| {
                let appends = model.append_latencies();
                p50_p99(
                    appends[appends_before..]
                        .iter()
                        .map(|d| d.as_secs_f64() * 1000.0)
                        .collect(),
                )
            })
            .flatten(),
        host_out: stamped.then(|| p50_p99(ms_list("answer_ms"))).flatten(),
    };
    let (problems, first) = server.problems(log_from);
    if problems > 0 {
        println!("bridge bench: {target} logged {problems} warnings/errors, first: {first:#?}");
    }
    println!(
        "bridge bench: {target} {} calls of {} s: {opened}; window {window:.1} s; {run:?}; \
         {} media and {} marks from the server, {} clears",
        load.calls, load.secs, report["media_received"], report["marks_echoed"], report["clears"]
    );
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly (bench/pipecat/run.sh)"]
async fn twilio_calls_against_pipecat() {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let calls: Vec<u32> = env_or("BENCH_CALLS", "5")
        .split(',')
        .map(|n| n.trim().parse().expect("BENCH_CALLS: numbers"))
        .collect();
    let secs: u64 = env_or("BENCH_SECS", "15").parse().expect("BENCH_SECS");
    let repeat: usize = env_or("BENCH_REPEAT", "1").parse().expect("BENCH_REPEAT");
    let targets = env_or("BENCH_TARGETS", "switchboard,pipecat");
    let python = std::env::var_os("PIPECAT_PYTHON").map(PathBuf::from);
    if targets.contains("pipecat") {
        assert!(
            python.as_deref().is_some_and(Path::exists),
            "PIPECAT_PYTHON must name the venv's python (bench/pipecat/run.sh makes it)"
        );
    }
    let dir = tempdir("bridge-bench");
    let audio = dir.path().join("caller.ulaw");
    let (turn, question_end_ms) = caller_turn(dir.path());
    std::fs::write(&audio, turn).unwrap();
    let bin = build_bin("switchboard-tests", "twilio-load", true);
    let model = FakeOpenAi::start(Script {
        api_key: "test".into(),
        record_audio: false,
        stamp_audio: true,
        ..Script::default()
    })
    .await;
    let twilio = FakeTwilio::start().await;

    let mut runs: Vec<Run> = Vec::new();
    for &n in &calls {
        let load = Load {
            bin: &bin,
            audio: &audio,
            question_end_ms,
            calls: n,
            secs,
            epoch_ns: epoch_to_monotonic_ns(model.epoch),
        };
        for _ in 0..repeat {
            if targets.contains("switchboard") {
                let (mut server, webhook, extra) = start_switchboard(&model, &twilio);
                let run =
                    measure("switchboard", &mut server, &webhook, &extra, &load, &model).await;
                assert_eq!(run.failed, 0, "Switchboard's calls all run: {run:?}");
                runs.push(run);
            }
            if let Some(python) = python.as_deref().filter(|_| targets.contains("pipecat")) {
                let (mut server, webhook) = start_pipecat(python, &model).await;
                runs.push(measure("pipecat", &mut server, &webhook, &[], &load, &model).await);
            }
        }
    }
    report(&calls, secs, repeat, &runs);
}

/// The table: medians over the repeats, and Pipecat / Switchboard.
fn report(calls: &[u32], secs: u64, repeat: usize, runs: &[Run]) {
    println!("\nbridge bench: {secs} s calls, medians of {repeat} run(s) per row");
    println!(
        "| server | calls | calls broken | server CPU-s/call-min | load gen CPU-s/call-min | \
         idle RSS MiB | RSS MiB/call | heard s/call | question end→answer p50/p99 ms | \
         stream→model p50/p99 ms | model→stream p50/p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in calls {
        let row = |target: &str| -> Option<(f64, f64)> {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.target == target && r.calls == n)
                .collect();
            if of.is_empty() {
                return None;
            }
            let m = |f: fn(&Run) -> f64| median(of.iter().map(|r| f(r)).collect());
            let lat = |f: fn(&Run) -> Option<(f64, f64)>| {
                let v: Vec<(f64, f64)> = of.iter().filter_map(|r| f(r)).collect();
                if v.is_empty() {
                    "—".to_string()
                } else {
                    format!(
                        "{:.2} / {:.2}",
                        median(v.iter().map(|x| x.0).collect()),
                        median(v.iter().map(|x| x.1).collect())
                    )
                }
            };
            let (cpu, rss) = (m(|r| r.server_cpu_per_call_min), m(|r| r.rss_per_call_mib));
            println!(
                "| {target} | {n} | {} | {cpu:.4} | {:.4} | {:.1} | {rss:.3} | {:.1} | {} | {} | {} |",
                of.iter()
                    .map(|r| r.failed.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                m(|r| r.load_cpu_per_call_min),
                m(|r| r.idle_rss_mib),
                m(|r| r.heard_s),
                lat(|r| r.answer_wait),
                lat(|r| r.host_in),
                lat(|r| r.host_out),
            );
            for r in of.iter().filter(|r| r.failed > 0) {
                println!(
                    "  {target} at {n}: {} of {} calls broke (streams opened {}), e.g. {:?}",
                    r.failed, r.calls, r.opened, r.failures
                );
            }
            Some((cpu, rss))
        };
        if let (Some(s), Some(p)) = (row("switchboard"), row("pipecat")) {
            println!(
                "| Pipecat / Switchboard | {n} | | {:.1}× | | | {:.1}× | | | | |",
                p.0 / s.0,
                p.1 / s.1
            );
        }
    }
}
