//! Load benchmarks (ignored by default; run with `--ignored --nocapture`), 1000 calls at 100
//! calls/s unless `SIP_BENCH_CALLS` / `SIP_BENCH_RATE` say otherwise:
//! - SIPp's built-in uac (1 s calls) against the sip module with the canned-SDP consumer;
//! - SIPp with `sipp/uac_rtpstream.xml` (7 s of G.711 audio a call, sent from ordinary UDP
//!   sockets; see the scenario for why not pcap play) against the release
//!   binary with the `menu` agent on the offline provider, and the same load against a SIPp
//!   uas with `-rtp_echo` as the reference callee.
//!
//! Each prints failed calls, retransmissions, INVITE→200 p50/p99 and CPU seconds.

use std::time::{Duration, Instant};

use crate::support::consumer::{Mode, spawn_consumer, test_config};
use crate::support::host::Host;
use crate::support::load::{
    CallerAudio, LOAD_TRACES, SippStats, cpu_seconds, media_load_args, media_load_dir, quantile,
};
use crate::support::ports::free_port;
use crate::support::process::{Proc, require};
use crate::support::sipp::{run_sipp, spawn_sipp};
use crate::support::tempdir;
use switchboard::sip::SipEndpoint;

fn which(bin: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Per-call time from the first INVITE to the first 200 for it, from a capture.
fn capture_invite_to_200_us(pcap: &std::path::Path) -> Option<Vec<f64>> {
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-Y",
            "sip.CSeq.method == \"INVITE\"",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "frame.time_epoch",
            "-e",
            "sip.Call-ID",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut invites = std::collections::HashMap::new();
    let mut times = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(';').collect();
        let (Some(t), Some(cid)) = (f.first().and_then(|t| t.parse::<f64>().ok()), f.get(1)) else {
            continue;
        };
        if f.get(2) == Some(&"INVITE") {
            invites.entry(cid.to_string()).or_insert(t);
        } else if f.get(3) == Some(&"200")
            && let Some(t0) = invites.remove(*cid)
        {
            times.push((t - t0) * 1e6);
        }
    }
    Some(times)
}

fn bench_size() -> (u32, u32) {
    let env = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (env("SIP_BENCH_CALLS", 1000), env("SIP_BENCH_RATE", 100))
}

/// A tshark capture of the SIP port: microsecond INVITE→200 times (SIPp's are whole ms).
struct Capture {
    pcap: std::path::PathBuf,
    tshark: Option<Proc>,
}

impl Capture {
    async fn start(dir: &std::path::Path, sip_port: u16) -> Capture {
        let pcap = dir.join("bench.pcap");
        let tshark = which("tshark").then(|| {
            let mut cmd = std::process::Command::new("tshark");
            cmd.args([
                "-i",
                "lo",
                "-q",
                "-F",
                "pcap",
                "-f",
                &format!("udp port {sip_port}"),
                "-w",
            ])
            .arg(&pcap)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            Proc::spawn("tshark", &mut cmd)
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        Capture { pcap, tshark }
    }

    /// Stops the capture and prints the INVITE→200 distribution.
    async fn report(mut self, label: &str) {
        let Some(t) = self.tshark.as_mut() else {
            return;
        };
        // SIGINT lets tshark flush the capture file.
        t.signal(libc::SIGINT);
        t.wait(Duration::from_secs(10)).await;
        if let Some(mut us) = capture_invite_to_200_us(&self.pcap) {
            us.sort_by(f64::total_cmp);
            println!(
                "{label} (capture): INVITE→200 p50 {:.0} µs p99 {:.0} µs max {:.0} µs over {} calls",
                quantile(&us, 0.5),
                quantile(&us, 0.99),
                quantile(&us, 1.0),
                us.len()
            );
        }
    }
}

fn print_sipp(label: &str, dir: &std::path::Path, code: Option<i32>, wall: Duration, cpu: f64) {
    let stats = SippStats::read(dir);
    println!(
        "{label}: sipp rc {code:?} in {wall:.1?}; successful {} failed {} retransmissions {}; \
         INVITE→200 p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} samples); callee CPU {cpu:.2} s",
        stats.successful,
        stats.failed,
        stats.retransmissions,
        stats.rtt_quantile(0.5),
        stats.rtt_quantile(0.99),
        stats.rtt_quantile(1.0),
        stats.rtt_ms.len(),
    );
}

async fn run_uac_pcap(dir: &std::path::Path, args: &[String]) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    let (code, _) = run_sipp(dir, args, Duration::from_secs(300)).await;
    (code, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn binary_with_media_against_the_menu_agent_and_sipp_uas_reference() {
    if !require("sipp") || !require("espeak-ng") {
        return;
    }
    let (calls, rate) = bench_size();

    // Reference: the same load against SIPp's uas echoing the audio.
    let uas_dir = tempdir("sipp-uas-echo");
    let uas_port = free_port();
    let uas = spawn_sipp(
        uas_dir.path(),
        &["-sn", "uas", "-rtp_echo", "-p", &uas_port.to_string()],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dir = media_load_dir("sipp-uac-ref");
    let cpu0 = cpu_seconds(uas.pid());
    let (args, _media) = media_load_args(
        CallerAudio::RtpStream,
        calls,
        rate,
        &format!("127.0.0.1:{uas_port}"),
        dir.path(),
    );
    let (code, wall) = run_uac_pcap(dir.path(), &args).await;
    let uas_cpu = cpu_seconds(uas.pid()) - cpu0;
    drop(uas);
    print_sipp(
        &format!("sipp uas -rtp_echo, {calls} calls @ {rate} cps"),
        dir.path(),
        code,
        wall,
        uas_cpu,
    );

    // Switchboard: release build, menu agent, offline provider, every call recorded in SQLite.
    let host = Host::builder()
        .release()
        .examples(&["menu"])
        .calls("codecs = [\"pcma\", \"pcmu\"]")
        .rtp_ports(6000)
        // Production logging (one line per call step, no per-event debug).
        .rust_log("info,rsipstack=warn")
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "1500")
        // Errors capture no backtrace, as in production without RUST_BACKTRACE (wasmtime
        // builds one error per dropped agent store).
        .env("RUST_LIB_BACKTRACE", "0")
        .start();
    let pid = host.process.child.id();
    let dir = media_load_dir("sipp-uac-host");
    let capture = Capture::start(dir.path(), host.sip_port).await;
    let cpu0 = cpu_seconds(pid);
    let (args, _media) = media_load_args(
        CallerAudio::RtpStream,
        calls,
        rate,
        &format!("127.0.0.1:{}", host.sip_port),
        dir.path(),
    );
    let (code, wall) = run_uac_pcap(dir.path(), &args).await;
    let host_cpu = cpu_seconds(pid) - cpu0;
    let label = format!("switchboard menu agent, {calls} calls @ {rate} cps");
    print_sipp(&label, dir.path(), code, wall, host_cpu);
    capture.report(&label).await;
    println!(
        "CPU: switchboard {host_cpu:.2} s vs sipp uas -rtp_echo {uas_cpu:.2} s = {:.2}x",
        host_cpu / uas_cpu.max(0.01)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn sipp_load_1000_calls_at_100_cps() {
    if !require("sipp") {
        return;
    }
    let (calls, rate) = bench_size();
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let target = ep.local_addrs().udp.unwrap();
    let dir = tempdir("sipp-bench");
    let port = free_port().to_string();
    let capture = Capture::start(dir.path(), target.port()).await;
    let cpu0 = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    let (calls_arg, rate_arg, target_arg) =
        (calls.to_string(), rate.to_string(), target.to_string());
    let mut args = vec![
        "-sn", "uac", "-p", &port, "-m", &calls_arg, "-r", &rate_arg, "-l", "1000", "-d", "1000",
        "-timeout", "120s",
    ];
    args.extend(LOAD_TRACES);
    args.push(&target_arg);
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(180)).await;
    let wall = t0.elapsed();
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let label = format!("sip module, {calls} calls @ {rate} cps");
    capture.report(&label).await;
    print_sipp(&label, dir.path(), code, wall, cpu);
    println!(
        "incoming seen {}",
        log.entries()
            .iter()
            .filter(|e| e.starts_with("incoming:"))
            .count()
    );
    assert_eq!(code, Some(0), "sipp errors: {errors}");
    ep.shutdown().await;
}
