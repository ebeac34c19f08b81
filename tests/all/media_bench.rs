//! Media load benchmark (ignored by default; run with `--ignored --nocapture`; it builds the
//! release binary first). SIPp places calls (`sipp/uac_pcap_30ms.xml`) that each play 7.4 s of
//! PCMA (`g711a.pcap`, 30 ms packets) and hang up after about 9 s, at 200 calls @ 50 cps and
//! 1000 @ 100 cps, against two callees in turn: the release `switchboard` with the `echo`
//! provider (every call runs the `menu` agent, is recorded in the call store, and sends the
//! caller's audio back through the whole media path), and SIPp's `uas -rtp_echo`, which echoes
//! packets untouched, as the reference. Prints each callee's CPU seconds (utime + stime from
//! /proc; switchboard's split into its media threads and the rest: signalling, call tasks,
//! agents, the call store) and failed calls per run, the medians, and the median of the runs'
//! ratios.
//! `MEDIA_BENCH_RUNS` (default 3) sets the number of runs, `MEDIA_BENCH_LOADS` (default `200@50,1000@100`) the calls @ calls per second.
//!
//! Like the reference, the host sends RTP only while it has audio (`send-silence = false`):
//! the default steady silence stream goes on for the whole 9 s call, about 1.2 times the
//! packets of the 7.4 s the reference echoes. `MEDIA_BENCH_SEND_SILENCE=1` measures with the
//! default. `MEDIA_BENCH_AUDIO=rtpstream` sends the callers' audio with `rtp_stream` instead of
//! pcap play (see `sipp/uac_rtpstream.xml`); `MEDIA_BENCH_AUDIO=none` places the same calls
//! without RTP (`sipp/uac_silent.xml`), the cost of a call apart from its media.

use std::time::Duration;

use crate::support::host::Host;
use crate::support::load::{
    CallerAudio, SippStats, cpu_seconds, media_load_args, media_load_dir, threads_cpu_seconds,
};
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, spawn_sipp};
use crate::support::tempdir;

/// One load of `calls` @ `rate` against `target`; returns (successful, failed) calls.
async fn load(target: &str, calls: u32, rate: u32) -> (u32, u32) {
    let dir = media_load_dir("media-bench");
    // The load is pcap play; rtp_stream shows the callee without the raw-socket cost.
    let audio = match std::env::var("MEDIA_BENCH_AUDIO").as_deref() {
        Ok("rtpstream") => CallerAudio::RtpStream,
        Ok("none") => CallerAudio::Silent,
        _ => CallerAudio::Pcap,
    };
    let (args, _media) = media_load_args(audio, calls, rate, target, dir.path());
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(240)).await;
    let stats = SippStats::read(dir.path());
    let (ok, failed) = (stats.successful as u32, stats.failed as u32);
    if code != Some(0) {
        eprintln!(
            "sipp rc {code:?} against {target}: {}",
            errors.lines().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    (ok, failed.max(calls.saturating_sub(ok + failed)))
}

/// CPU seconds `pid` spends while `calls` calls @ `rate` run against `target`, and the calls'
/// outcome. `settled` waits until the callee has finished with the calls.
async fn measure(
    pid: u32,
    target: &str,
    calls: u32,
    rate: u32,
    settled: impl FnOnce(),
) -> (f64, u32, u32) {
    let before = cpu_seconds(pid);
    let (ok, failed) = load(target, calls, rate).await;
    settled();
    (cpu_seconds(pid) - before, ok, failed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn host(silence: bool) -> Host {
    Host::builder()
        .release()
        .examples(&["menu"])
        .calls(&format!(
            "codecs = [\"pcma\", \"pcmu\"]\nsend-silence = {silence}"
        ))
        // 2 ports per call.
        .rtp_ports(10000)
        .model("provider = \"echo\"")
        // Production logging (one line per call step, no per-event debug).
        .rust_log("info,rsipstack=warn")
        // One agent instance per live call: about 900 at once at 100 cps.
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "2000")
        // Errors capture no backtrace, as in production without RUST_BACKTRACE (wasmtime
        // builds one error per dropped agent store).
        .env("RUST_LIB_BACKTRACE", "0")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn echo_calls_cost_against_sipp_rtp_echo() {
    if !require("sipp") {
        return;
    }
    let runs: usize = std::env::var("MEDIA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let send_silence = std::env::var("MEDIA_BENCH_SEND_SILENCE").is_ok_and(|v| v == "1");
    let mut host = host(send_silence);
    let host_target = format!("127.0.0.1:{}", host.sip_port);
    let host_pid = host.process.child.id();
    let loads: Vec<(u32, u32)> = std::env::var("MEDIA_BENCH_LOADS")
        .unwrap_or_else(|_| "200@50,1000@100".into())
        .split(',')
        .map(|l| {
            let (calls, rate) = l
                .split_once('@')
                .expect("MEDIA_BENCH_LOADS: calls@rate,...");
            (calls.trim().parse().unwrap(), rate.trim().parse().unwrap())
        })
        .collect();
    for (calls, rate) in loads {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=runs {
            // The reference callee: SIPp echoing RTP as received, for this run only.
            let uas_dir = tempdir("media-bench-uas");
            let uas_port = free_port();
            let uas = spawn_sipp(
                uas_dir.path(),
                &[
                    "-sn",
                    "uas",
                    "-rtp_echo",
                    "-p",
                    &uas_port.to_string(),
                    "-mp",
                    &free_port().to_string(),
                ],
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (ref_cpu, ref_ok, ref_failed) = measure(
                uas.pid(),
                &format!("127.0.0.1:{uas_port}"),
                calls,
                rate,
                || std::thread::sleep(Duration::from_secs(1)),
            )
            .await;
            drop(uas);
            let ended_before = host.ended_calls();
            let media_before = threads_cpu_seconds(host_pid, "media-");
            let (our_cpu, ok, failed) = measure(host_pid, &host_target, calls, rate, || {
                host.wait_calls_ended(ended_before, calls as usize, Duration::from_secs(60))
            })
            .await;
            let media_cpu = threads_cpu_seconds(host_pid, "media-") - media_before;
            println!(
                "media bench {calls} @ {rate} cps, run {run}: switchboard {our_cpu:.2} CPU-s \
                 (media threads {media_cpu:.2}, the rest {:.2}; {ok} ok, {failed} failed); sipp \
                 uas -rtp_echo {ref_cpu:.2} CPU-s ({ref_ok} ok, {ref_failed} failed); ratio {:.2}",
                our_cpu - media_cpu,
                our_cpu / ref_cpu
            );
            ours.push(our_cpu);
            theirs.push(ref_cpu);
            ratios.push(our_cpu / ref_cpu);
        }
        let (o, t) = (median(ours), median(theirs));
        // Both callees of a run share the machine's mood of the moment, so the ratio within a
        // run is steadier than either figure across runs.
        println!(
            "media bench {calls} @ {rate} cps, median of {runs}: switchboard {o:.2} CPU-s, \
             sipp uas -rtp_echo {t:.2} CPU-s, ratio {:.2}; median of the runs' ratios {:.2} \
             (goal ≤ 1.5)",
            o / t,
            median(ratios)
        );
    }
    assert!(host.is_running());
}
