//! What SRTP and TLS cost the host (ignored by default; run in release:
//! `cargo test --release -p switchboard-tests --test all -- --ignored --nocapture secure_bench::`).
//! Debian's SIPp has neither TLS nor SRTP, so the load is `secure-load`
//! (tests/bin/secure_load.rs), a process of its own whose CPU is reported apart; its callers'
//! SRTP is the project's own.
//!
//! - `srtp_echo_calls_cost_against_plain`: `SECURE_BENCH_CALLS` (500) concurrent calls over SIP
//!   over TLS to the release host's echo line (`provider = "echo"`, agent `menu`, `[sip] srtp =
//!   "optional"` so that each offer decides), set up at 50 a second, in each run once with
//!   plain RTP and once with SRTP (AES_CM_128_HMAC_SHA1_80), which goes first alternating from
//!   run to run. Each caller sends a 20 ms PCMU packet every 20 ms and the host sends it back.
//!   Measured over the steady window (every call up, none ending; `SECURE_BENCH_WINDOW` s, 20):
//!   host CPU (utime + stime from /proc) per call-second, its media threads' share, the load's
//!   CPU; the ratio SRTP / plain of each run, and the median of `SECURE_BENCH_RUNS` (3) runs'
//!   ratios (goal ≤ 1.15).
//! - `tls_handshake_cost_per_certificate`: `SECURE_BENCH_HANDSHAKES` (2000) full handshakes
//!   (no session resumption, 4 at a time) with the host's SIP TLS listener, for a leaf
//!   certificate with an ECDSA P-256 and an RSA-2048 key, over TLS 1.3 and TLS 1.2: host CPU-ms
//!   per handshake (its idle CPU rate taken off), median of `SECURE_BENCH_RUNS` runs, and the
//!   capacity of 2 cores = 2000 / CPU-ms (goal ≥ 500 handshakes a second).
//!
//! Both print the machine's load average (`/proc/loadavg`, as `uptime` shows it) with the
//! figures.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agents::build_bin;
use crate::support::host::Host;
use crate::support::load::{cpu_seconds, env_or, quantile, threads_cpu_seconds};
use crate::support::model_tls::{LeafKey, TestCerts, have_openssl};
use crate::support::process::{Lines, Proc};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// The load averages over 1, 5 and 15 minutes, as `uptime` prints them.
fn load_average() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The load generator's JSON report: the last line of its output that parses.
fn report_of(out: &Lines) -> Value {
    out.seen
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no report from secure-load: {:?}", out.seen))
}

/// What one load of calls cost, over its steady window.
struct Phase {
    /// Host CPU-seconds per call-second, all of it and its media threads'.
    host: f64,
    media: f64,
    /// The load generator's CPU-seconds per call-second.
    load: f64,
    report: Value,
}

/// `calls` echo calls from `secure-load` (SRTP or plain) against `host`.
async fn phase(
    host: &mut Host,
    bin: &Path,
    ca: &Path,
    calls: u32,
    window: u64,
    srtp: bool,
) -> Phase {
    // Set up at 50 calls a second; all hang up together, well after the window.
    let ramp_ms = 20 * u64::from(calls);
    let secs = ramp_ms / 1000 + window + 12;
    let pid = host.process.pid();
    let ended_before = host.ended_calls();
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("calls")
        .args(["--target", &format!("127.0.0.1:{}", host.tls_port)])
        .arg("--ca")
        .arg(ca)
        .args(["--calls", &calls.to_string()])
        .args(["--secs", &secs.to_string()])
        .args(["--ramp-ms", &ramp_ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if srtp {
        cmd.arg("--srtp");
    }
    let mut generator = Proc::spawn("secure-load", &mut cmd);
    let load_pid = generator.pid();
    let mut out = Lines::new(generator.child.stdout.take().unwrap());
    let setup_limit = Duration::from_millis(ramp_ms) + Duration::from_secs(30);
    let up = out
        .wait_for(&["up "], setup_limit)
        .unwrap_or_else(|| panic!("the calls were not set up in {setup_limit:?}"));
    assert_eq!(
        up.trim(),
        format!("up {calls} of {calls}"),
        "every call answered"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (host0, media0, load0) = (
        cpu_seconds(pid),
        threads_cpu_seconds(pid, "media-"),
        cpu_seconds(load_pid),
    );
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (host1, media1, load1) = (
        cpu_seconds(pid),
        threads_cpu_seconds(pid, "media-"),
        cpu_seconds(load_pid),
    );
    let measured = from.elapsed().as_secs_f64();
    assert!(
        started.elapsed() + Duration::from_secs(1) < Duration::from_secs(secs),
        "the window ran into the hang-ups (set-up too slow)"
    );
    let code = generator
        .wait(Duration::from_secs(secs + 60))
        .await
        .expect("secure-load ends");
    out.drain(Duration::from_secs(2));
    assert_eq!(code, 0, "secure-load failed: {:?}", out.seen);
    let report = report_of(&out);
    host.wait_calls_ended(ended_before, calls as usize, Duration::from_secs(60));
    let call_seconds = f64::from(calls) * measured;
    Phase {
        host: (host1 - host0) / call_seconds,
        media: (media1 - media0) / call_seconds,
        load: (load1 - load0) / call_seconds,
        report,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn srtp_echo_calls_cost_against_plain() {
    if !have_openssl() {
        return;
    }
    let calls: u32 = env_or("SECURE_BENCH_CALLS", 500);
    let window: u64 = env_or("SECURE_BENCH_WINDOW", 20);
    let runs: usize = env_or("SECURE_BENCH_RUNS", 3);
    let bin = build_bin("switchboard-tests", "secure-load", true);
    let certs = TestCerts::make();
    let mut host = Host::builder()
        .release()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .sip("srtp = \"optional\"")
        // As the media benchmark: RTP only while there is audio to send.
        .calls("codecs = [\"pcmu\"]\nsend-silence = false")
        .rtp_ports(u16::try_from(2 * calls + 100).expect("fewer calls"))
        .model("provider = \"echo\"")
        .rust_log("info,rsipstack=warn")
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "2000")
        .env("RUST_LIB_BACKTRACE", "0")
        .start();
    println!("srtp bench: load average before {}", load_average());
    let mut ratios = Vec::new();
    for run in 1..=runs {
        let order = if run % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let (mut plain, mut srtp) = (None, None);
        for with_srtp in order {
            let p = phase(&mut host, &bin, &certs.ca, calls, window, with_srtp).await;
            let r = &p.report;
            println!(
                "srtp bench run {run}, {}: {calls} calls; host {:.2} ms CPU per call-second \
                 (media threads {:.2}), load {:.2}; {} failed {}; packets sent {}, received {} \
                 ({} with the tone, {} failed authentication); load average {}",
                if with_srtp { "SRTP" } else { "plain" },
                p.host * 1000.0,
                p.media * 1000.0,
                p.load * 1000.0,
                r["failed"],
                r["failures"],
                r["packets_sent"],
                r["packets_received"],
                r["tones"],
                r["auth_failures"],
                load_average(),
            );
            assert_eq!(r["failed"], 0, "{r}");
            *(if with_srtp { &mut srtp } else { &mut plain }) = Some(p.host);
        }
        let ratio = srtp.unwrap() / plain.unwrap();
        println!("srtp bench run {run}: host CPU SRTP / plain {ratio:.3}");
        ratios.push(ratio);
    }
    println!(
        "srtp bench: {calls} calls, median of {runs} runs' host CPU ratio SRTP / plain {:.3} \
         (goal ≤ 1.15); load average after {}",
        median(ratios),
        load_average()
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn tls_handshake_cost_per_certificate() {
    if !have_openssl() {
        return;
    }
    let count: u32 = env_or("SECURE_BENCH_HANDSHAKES", 2000);
    let runs: usize = env_or("SECURE_BENCH_RUNS", 3);
    let bin = build_bin("switchboard-tests", "secure-load", true);
    println!("tls bench: load average before {}", load_average());
    for leaf in [LeafKey::EcdsaP256, LeafKey::Rsa2048] {
        let certs = TestCerts::make_with(leaf);
        let host = Host::builder()
            .release()
            .examples(&["menu"])
            .tls(&certs.cert, &certs.key)
            .rust_log("info,rsipstack=warn")
            .start();
        let pid = host.process.pid();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (idle0, at) = (cpu_seconds(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let idle_rate = (cpu_seconds(pid) - idle0) / at.elapsed().as_secs_f64();
        for tls12 in [false, true] {
            let mut costs = Vec::new();
            let mut agreed = String::new();
            for _ in 0..runs {
                let (cpu0, at) = (cpu_seconds(pid), Instant::now());
                let mut cmd = Command::new(&bin);
                cmd.arg("handshakes")
                    .args(["--target", &format!("127.0.0.1:{}", host.tls_port)])
                    .arg("--ca")
                    .arg(&certs.ca)
                    .args(["--count", &count.to_string()])
                    .args(["--concurrency", "4"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit());
                if tls12 {
                    cmd.arg("--tls12");
                }
                let mut generator = Proc::spawn("secure-load", &mut cmd);
                let mut out = Lines::new(generator.child.stdout.take().unwrap());
                let code = generator
                    .wait(Duration::from_secs(300))
                    .await
                    .expect("secure-load ends");
                let cpu = cpu_seconds(pid) - cpu0 - idle_rate * at.elapsed().as_secs_f64();
                out.drain(Duration::from_secs(2));
                assert_eq!(code, 0, "secure-load failed: {:?}", out.seen);
                let report = report_of(&out);
                assert_eq!(report["ok"], count, "every handshake done: {report}");
                agreed = format!("{} {}", report["version"], report["suite"]);
                let ms = cpu * 1000.0 / f64::from(count);
                println!(
                    "tls bench {leaf:?} {agreed}: {ms:.3} CPU-ms per handshake, {:.0} \
                     handshakes/s done by the client; load average {}",
                    report["per_second"].as_f64().unwrap_or(0.0),
                    load_average()
                );
                costs.push(ms);
            }
            let ms = median(costs);
            println!(
                "tls bench {leaf:?} {agreed}: median of {runs} runs {ms:.3} CPU-ms per full \
                 handshake, capacity on 2 cores {:.0} handshakes/s (goal ≥ 500)",
                2000.0 / ms
            );
        }
    }
    println!("tls bench: load average after {}", load_average());
}
