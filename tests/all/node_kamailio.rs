//! Three nodes behind kamailio's dispatcher (`deploy/kamailio/kamailio.cfg`) on one Postgres
//! store (issue 34), as separate processes: 300 SIPp calls through kamailio spread evenly
//! (within ±10% per node) and each is recorded once in Postgres; with one node killed
//! (`kill -9`) under load, the dispatcher's probes and failover send new calls to the others;
//! a node drained (SIGTERM) under load takes no new call, cuts none and exits 0.

use std::time::Duration;

use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::postgres;
use crate::support::process::require;
use crate::support::sipp::{scenario, sipp_errors, spawn_sipp};
use crate::support::tempdir;

fn node(url: &str, id: &str) -> Host {
    Host::builder()
        .examples(&["menu"])
        // Call events at debug would be most of the work of three debug builds on two cores.
        .rust_log("info,rsipstack=warn")
        .config(&format!(
            "[store]\nurl = {url:?}\n[node]\nid = {id:?}\nlease-secs = 5\n"
        ))
        .start()
}

/// SIPp's final cumulative (successful, failed) calls from its statistics file in `dir`.
fn sipp_outcome(dir: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join("stats.csv")).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.last().unwrap_or_default().split(';').collect();
    let column = |name: &str| {
        let i = header.iter().position(|h| *h == name).expect(name);
        last[i].parse::<u64>().unwrap()
    };
    (column("SuccessfulCall(C)"), column("FailedCall(C)"))
}

/// Calls per node in the database, by node id.
fn calls_per_node(url: &str) -> Vec<(String, u64)> {
    postgres::psql(
        url,
        "SELECT node || ' ' || COUNT(*) FROM calls GROUP BY node ORDER BY node",
    )
    .lines()
    .map(|l| {
        let (node, n) = l.split_once(' ').unwrap();
        (node.to_string(), n.parse().unwrap())
    })
    .collect()
}

/// SIPp placing `calls` calls to 1000 through kamailio on `kport`, `rate` a second, each held
/// `hold_ms`, honouring the proxy's Record-Route; its folder (errors, statistics) and process.
async fn run_calls(
    kport: u16,
    calls: u32,
    hold_ms: u32,
    rate: &str,
    name: &str,
) -> (tempfile::TempDir, crate::support::process::Proc) {
    let dir = tempdir(name);
    let stats = dir.path().join("stats.csv").display().to_string();
    let target = format!("127.0.0.1:{kport}");
    let scenario = scenario("uac_record_route.xml").display().to_string();
    let (calls, hold_ms) = (calls.to_string(), hold_ms.to_string());
    // A 180 the proxy's workers forward after the 200 is no reason to abort the call.
    let args = [
        "-sf",
        &scenario,
        "-s",
        "1000",
        "-m",
        &calls,
        "-d",
        &hold_ms,
        "-r",
        rate,
        "-l",
        "60",
        "-default_behaviors",
        "all,-abortunexp",
        "-trace_stat",
        "-stf",
        &stats,
        "-fd",
        "1",
        &target,
    ];
    let sipp = spawn_sipp(dir.path(), &args);
    (dir, sipp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_kamailio_spreads_300_calls_over_three_nodes_routes_around_a_killed_one_and_drains_one()
 {
    if !require("sipp") || !require("kamailio") {
        return;
    }
    let Some(url) = postgres::database() else {
        return;
    };
    let mut nodes: Vec<Host> = ["n1", "n2", "n3"].iter().map(|id| node(&url, id)).collect();
    let kport = free_port();
    let ports: Vec<u16> = nodes.iter().map(|n| n.sip_port).collect();
    let kam = Kamailio::dispatcher(kport, &ports).await;
    // A probe round marks every node up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 300 short calls, 10 a second, through kamailio.
    let (dir, mut sipp) = run_calls(kport, 300, 1000, "10", "sipp-dispatch").await;
    let code = sipp.wait(Duration::from_secs(120)).await;
    assert_eq!(
        code,
        Some(0),
        "SIPp: {}\nkamailio: {}",
        sipp_errors(dir.path()),
        kam.log()
    );
    assert_eq!(sipp_outcome(dir.path()), (300, 0));
    // Every call recorded once, and ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while postgres::psql(&url, "SELECT COUNT(*) FROM calls WHERE state = 'active'") != "0" {
        assert!(std::time::Instant::now() < deadline, "calls left active");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        postgres::psql(
            &url,
            "SELECT COUNT(*) || ' ' || COUNT(DISTINCT id) FROM calls"
        ),
        "300 300"
    );
    let spread = calls_per_node(&url);
    eprintln!("300 calls through kamailio, per node: {spread:?}");
    assert_eq!(spread.len(), 3, "{spread:?}");
    for (node, n) in &spread {
        assert!((90..=110).contains(n), "{node} took {n} of 300: {spread:?}");
    }

    // kill -9 n3 a few seconds into 90 more calls: the calls it carried are lost, every call
    // after is sent to n1 and n2 (the INVITE that finds n3 dead fails over after 2 s; the
    // next probe takes n3 out within a second).
    let (dir, mut sipp) = run_calls(kport, 90, 500, "10", "sipp-dispatch-kill").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = switchboard::store::now_ms();
    let _ = nodes[2].process.child.kill();
    let _ = nodes[2].process.child.wait();
    let code = sipp.wait(Duration::from_secs(120)).await;
    assert!(
        code.is_some(),
        "SIPp did not finish: {}",
        sipp_errors(dir.path())
    );
    let (ok, failed) = sipp_outcome(dir.path());
    eprintln!("90 calls with n3 killed after 3 s: {ok} successful, {failed} failed");
    assert_eq!(ok + failed, 90, "{}", sipp_errors(dir.path()));
    // At 10 calls a second of half a second each, n3 carried about two when it died.
    assert!(
        failed <= 3,
        "{failed} calls failed: {}",
        sipp_errors(dir.path())
    );
    let after = postgres::psql(
        &url,
        &format!(
            "SELECT COUNT(*) FROM calls WHERE node = 'n3' AND started_at_ms > {}",
            killed_at
        ),
    );
    assert_eq!(after, "0");
    let spread = calls_per_node(&url);
    let total: u64 = spread.iter().map(|(_, n)| n).sum();
    assert!(total >= 300 + ok, "{spread:?}");

    // SIGTERM n2 two seconds into 60 calls held 2 s: it drains (OPTIONS and new INVITEs get
    // 503, kamailio sends them to n1), cuts none of its running calls, and exits 0.
    let (dir, mut sipp) = run_calls(kport, 60, 2000, "10", "sipp-dispatch-drain").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drained_at = switchboard::store::now_ms();
    nodes[1].process.signal(libc::SIGTERM);
    let code = sipp.wait(Duration::from_secs(120)).await;
    let (ok, failed) = sipp_outcome(dir.path());
    eprintln!("60 calls with n2 drained after 2 s: {ok} successful, {failed} failed");
    assert_eq!(code, Some(0), "SIPp: {}", sipp_errors(dir.path()));
    assert_eq!((ok, failed), (60, 0));
    assert_eq!(
        nodes[1].process.wait(Duration::from_secs(30)).await,
        Some(0)
    );
    let on_drained = postgres::psql(
        &url,
        &format!("SELECT COUNT(*) FROM calls WHERE node = 'n2' AND started_at_ms > {drained_at}"),
    );
    assert_eq!(on_drained, "0", "a call landed on the draining node");
    // It had calls when the SIGTERM came, and they ended well.
    let carried = postgres::psql(
        &url,
        &format!(
            "SELECT COUNT(*) FROM calls WHERE node = 'n2' AND state = 'ended' \
             AND started_at_ms BETWEEN {} AND {drained_at}",
            drained_at - 2500
        ),
    );
    assert_ne!(carried, "0", "n2 had no call to carry through its drain");
}
