//! Load benchmark (ignored by default; run with `--ignored --nocapture`): SIPp's built-in
//! uac places 1000 calls at 100 calls/s (1 s each) against the sip module with the
//! canned-SDP consumer, and prints INVITE→200 p50/p99, retransmissions and our CPU time.

use std::time::{Duration, Instant};

use switchboard::sip::SipEndpoint;
use switchboard_tests::sip::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn sipp_load_1000_calls_at_100_cps() {
    if !require("sipp") {
        return;
    }
    let calls: u32 = std::env::var("SIP_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rate: u32 = std::env::var("SIP_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let target = ep.local_addrs().udp.unwrap();
    let dir = tempdir("sipp-bench");
    let port = free_port().to_string();
    // A capture gives microsecond INVITE→200 times (SIPp's own are in whole milliseconds).
    let pcap = dir.path().join("bench.pcap");
    let mut tshark = which("tshark").then(|| {
        let mut cmd = std::process::Command::new("tshark");
        cmd.args([
            "-i",
            "lo",
            "-q",
            "-F",
            "pcap",
            "-f",
            &format!("udp port {}", target.port()),
            "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        Proc::spawn("tshark", &mut cmd)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu0 = cpu_seconds("self");
    let t0 = Instant::now();
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sn",
            "uac",
            "-p",
            &port,
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            "1000",
            "-d",
            "1000",
            "-trace_stat",
            "-stf",
            "stat.csv",
            "-fd",
            "1",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-timeout",
            "120s",
            &target.to_string(),
        ],
        Duration::from_secs(180),
    )
    .await;
    let wall = t0.elapsed();
    let cpu = cpu_seconds("self") - cpu0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(t) = tshark.as_mut() {
        // SIGINT lets tshark flush the capture file.
        std::process::Command::new("kill")
            .arg("-INT")
            .arg(t.pid().to_string())
            .status()
            .ok();
        t.wait(Duration::from_secs(10)).await;
        if let Some(mut us) = capture_invite_to_200_us(&pcap) {
            us.sort_by(f64::total_cmp);
            let p = |q: f64| {
                us.get(((us.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "SIP bench (capture): INVITE→200 p50 {:.0} µs p99 {:.0} µs max {:.0} µs over {} calls",
                p(0.5),
                p(0.99),
                us.last().copied().unwrap_or(f64::NAN),
                us.len()
            );
        }
    }
    // Per-call INVITE→200 times from SIPp's RTT trace (`date_ms;response_time_ms;rtd_no`).
    let rtt_file = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with("_rtt.csv"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    let mut rtts: Vec<f64> = rtt_file
        .lines()
        .skip(1)
        .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let col = |name: &str| sipp_stat(&dir.path().join("stat.csv"), name).unwrap_or("?".into());
    println!(
        "SIP bench: {calls} calls @ {rate} cps in {wall:?}; sipp rc {code:?}; successful {} failed {} retransmissions {}; \
         INVITE→200 p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} samples); switchboard test process CPU {cpu:.2} s; incoming seen {}",
        col("SuccessfulCall(C)"),
        col("FailedCall(C)"),
        col("Retransmissions(C)"),
        pct(0.5),
        pct(0.99),
        rtts.last().copied().unwrap_or(f64::NAN),
        rtts.len(),
        log.entries()
            .iter()
            .filter(|e| e.starts_with("incoming:"))
            .count(),
    );
    assert_eq!(code, Some(0), "sipp errors: {errors}");
    ep.shutdown().await;
}
