//! Nodes sharing one Postgres store (issue 34), as separate processes: each call records its
//! node; a node killed and started again closes only its own open calls; a node killed for good
//! has its calls closed by a peer, but only once its lease has expired; a second process with
//! a node id already live on the store is refused at start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::agents::switchboard_bin;
use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::postgres;
use crate::support::process::{Lines, Proc, require};
use crate::support::sipp::{spawn_sipp, uac_args};
use crate::support::tempdir;

/// A host with the menu agent as node `id` on the store at `url`, its lease `lease_secs`.
fn node(url: &str, id: &str, lease_secs: u64) -> Host {
    Host::builder()
        .examples(&["menu"])
        .config(&format!(
            "[store]\nurl = {url:?}\n[node]\nid = {id:?}\nlease-secs = {lease_secs}\n"
        ))
        .start()
}

/// One call to `host` that SIPp holds 60 s (killed with the test); its call id once live.
async fn live_call(host: &Host) -> (Proc, tempfile::TempDir, String) {
    let dir = tempdir("sipp-node");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let sipp = spawn_sipp(dir.path(), &uac_args("1000", 1, 60_000, &[], &target));
    // The list holds the other nodes' active calls too (one store); `live`: this node's.
    let ours = |b: &serde_json::Value| {
        b["calls"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["live"] == true))
            .and_then(|c| c["id"].as_str())
            .map(String::from)
    };
    let listed = Api::new(host.http, None)
        .poll("/v1/calls?active=true", Duration::from_secs(20), |b| {
            ours(b).is_some()
        })
        .await;
    (sipp, dir, ours(&listed).unwrap())
}

/// `node, state, end_reason` of call `id` in the database.
fn stored(url: &str, id: &str) -> String {
    postgres::psql(
        url,
        &format!(
            "SELECT node || ' ' || state || ' ' || COALESCE(end_reason, '-') FROM calls \
             WHERE id = '{id}'"
        ),
    )
}

/// Waits (up to `timeout`) until call `id`'s row reads `want`; how long it took.
async fn wait_stored(url: &str, id: &str, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let row = stored(url, id);
        if row == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "call {id}: {row:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_recovery_a_restarted_node_closes_only_its_own_calls() {
    if !require("sipp") {
        return;
    }
    let Some(url) = postgres::database() else {
        return;
    };
    // Leases long enough that no peer sweeps while n1 is down.
    let mut n1 = node(&url, "n1", 60);
    let n2 = node(&url, "n2", 60);
    let (_s1, _d1, call1) = live_call(&n1).await;
    let (_s2, _d2, call2) = live_call(&n2).await;
    wait_stored(&url, &call1, "n1 active -", Duration::from_secs(5)).await;
    wait_stored(&url, &call2, "n2 active -", Duration::from_secs(5)).await;

    n1.crash_and_restart();
    assert_eq!(stored(&url, &call1), "n1 ended_abnormally host restarted");
    assert_eq!(stored(&url, &call2), "n2 active -", "n2's call is not n1's");
    // n2 still carries its call.
    let live = Api::new(n2.http, None)
        .get(&format!("/v1/calls/{call2}"))
        .await;
    assert_eq!(live.json["call"]["state"], "active", "{}", live.text);
    assert_eq!(live.json["call"]["node"], "n2", "{}", live.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_recovery_a_killed_nodes_calls_are_closed_by_a_peer_after_its_lease_expired() {
    if !require("sipp") {
        return;
    }
    let Some(url) = postgres::database() else {
        return;
    };
    let lease = Duration::from_secs(4);
    let mut n1 = node(&url, "n1", lease.as_secs());
    let _n2 = node(&url, "n2", lease.as_secs());
    let (_sipp, _dir, call) = live_call(&n1).await;
    wait_stored(&url, &call, "n1 active -", Duration::from_secs(5)).await;

    let _ = n1.process.child.kill();
    let _ = n1.process.child.wait();
    let killed = Instant::now();
    // n1 renewed its lease at most a third of it before dying: n2 waits out the rest.
    tokio::time::sleep(lease / 2).await;
    assert_eq!(
        stored(&url, &call),
        "n1 active -",
        "closed before the lease ran out"
    );
    wait_stored(
        &url,
        &call,
        "n1 ended_abnormally node lost",
        Duration::from_secs(10),
    )
    .await;
    let after = killed.elapsed();
    // Not before the lease could have run out; within a renewal period after it did.
    assert!(after >= lease * 2 / 3, "closed {after:?} after the kill");
    assert!(
        after <= lease + lease / 3 + Duration::from_secs(2),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_recovery_a_second_process_with_a_live_node_id_is_refused() {
    let Some(url) = postgres::database() else {
        return;
    };
    let n1 = node(&url, "n1", 15);
    // The same configuration (node id and store) in a data folder and on ports of its own.
    let data = tempdir("second-node");
    let config = std::fs::read_to_string(n1.data.path().join("switchboard.toml"))
        .unwrap()
        .replace(
            &n1.data.path().display().to_string(),
            &data.path().display().to_string(),
        )
        .replace(&format!("127.0.0.1:{}", n1.sip_port), "127.0.0.1:0");
    let cfg = data.path().join("switchboard.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut second = Proc::spawn(
        "second node n1",
        Command::new(switchboard_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(second.child.stderr.take().unwrap());
    let code = second.wait(Duration::from_secs(30)).await;
    log.drain(Duration::from_secs(2));
    let stderr = log.seen.join("\n");
    assert!(matches!(code, Some(c) if c != 0), "{code:?}\n{stderr}");
    assert!(
        stderr.contains("node id \"n1\" is held by another running switchboard"),
        "{stderr}"
    );
    assert!(!stderr.contains("ended abnormally"), "{stderr}");
    // The first is untouched and its lease still there.
    assert_eq!(Api::new(n1.http, None).get("/ready").await.status, 200);
    assert_eq!(
        postgres::psql(&url, "SELECT node FROM node_leases ORDER BY node"),
        "n1"
    );
}
