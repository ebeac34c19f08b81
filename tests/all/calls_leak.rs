//! Nothing leaks across calls: after batches of short SIPp calls to the `menu` agent (offline
//! provider) on the `switchboard` binary, the host's open file descriptors and threads come
//! back to their idle baseline, and its resident memory does not keep growing from one batch
//! to the next.

use std::time::{Duration, Instant};

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::load::status_field;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, uac_args};
use crate::support::tempdir;

/// Calls per batch, 10 at a time.
const CALLS: u32 = 50;

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let field = |name: &str| status_field(pid, name);
    Usage {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    }
}

/// Run `calls` SIPp calls of 1 s to 1000 and wait until the host has none left.
async fn batch(host: &Host, calls: u32) {
    let dir = tempdir("sipp-leak");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let args = uac_args(
        "1000",
        calls,
        1000,
        &["-l", "10", "-r", "10", "-timeout", "120s"],
        &target,
    );
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(150)).await;
    assert_eq!(code, Some(0), "sipp: {errors}");
    Api::new(host.http, None)
        .poll("/v1/calls?active=true", Duration::from_secs(20), |l| {
            l["calls"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
}

/// Wait (bounded) until fds and threads are back within `slack` of `baseline`: idle worker
/// threads of the blocking pool exit after their keep-alive, and media tasks close their
/// sockets when the call task has finished.
async fn settled(pid: u32, baseline: Usage, slack: usize) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = usage(pid);
        let back = now.fds <= baseline.fds + slack && now.threads <= baseline.threads + slack;
        if back || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_threads_and_memory_return_to_baseline() {
    if !require("sipp") || !require("espeak-ng") {
        return;
    }
    let host = Host::builder()
        .examples(&["menu"])
        .calls("codecs = [\"pcmu\"]")
        .start();
    let pid = host.process.child.id();
    // A first batch warms everything that is created once (the speech cache, the store's
    // connections, runtime worker threads); the baseline is taken after it.
    batch(&host, 10).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let baseline = usage(pid);

    batch(&host, CALLS).await;
    let first = settled(pid, baseline, 2).await;
    batch(&host, CALLS).await;
    let second = settled(pid, baseline, 2).await;
    eprintln!("idle {baseline:?}; after {CALLS} calls {first:?}; after {CALLS} more {second:?}");

    for after in [first, second] {
        assert!(
            after.fds <= baseline.fds + 2,
            "file descriptors leak: {baseline:?} → {after:?}"
        );
        assert!(
            after.threads <= baseline.threads + 2,
            "threads leak: {baseline:?} → {after:?}"
        );
    }
    // Allocator caches may keep some memory after the first batch; a second batch of the same
    // calls must not need much more.
    let growth_mib = (second.rss_kib as f64 - first.rss_kib as f64) / 1024.0;
    assert!(
        growth_mib < 8.0,
        "RSS grows with every batch: {first:?} → {second:?} (+{growth_mib:.1} MiB)"
    );
}
