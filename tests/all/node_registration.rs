//! A registration account shared by several nodes on one Postgres store (issue 34): one node
//! registers it at a time (kamailio's registrar sees one REGISTER); when that node is killed
//! another takes it over once the lease has expired, and when the holder drains (SIGTERM) it
//! unregisters and a peer registers at its next beat.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::postgres;
use crate::support::process::require;

const REGISTERED: &str = "REGISTERED agent expires 60";
const UNREGISTERED: &str = "REGISTERED agent expires 0";

/// Node `id` on the store at `url` with the `pbx` account on kamailio at `kport`.
fn node(url: &str, id: &str, lease_secs: u64, kport: u16) -> Host {
    Host::builder()
        .examples(&["menu"])
        .config(&format!(
            "[store]\nurl = {url:?}\n[node]\nid = {id:?}\nlease-secs = {lease_secs}\n\
             [[sip.accounts]]\nname = \"pbx\"\nregistrar = \"127.0.0.1:{kport}\"\n\
             aor = \"sip:agent@127.0.0.1:{kport}\"\npassword = \"agentpw\"\nexpires = 60\n"
        ))
        .start()
}

/// Waits (up to `timeout`) until kamailio's log holds `line` `n` times; how long it took.
async fn wait_count(kam: &Kamailio, line: &str, n: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    while kam.log().matches(line).count() < n {
        assert!(
            started.elapsed() < timeout,
            "kamailio logged `{line}` fewer than {n} times:\n{}",
            kam.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// The accounts `/v1/registrations` of `host` lists, with their state.
async fn registrations(host: &Host) -> Vec<(String, String)> {
    let body = Api::new(host.http, None)
        .get("/v1/registrations")
        .await
        .json;
    body["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r: &Value| {
            (
                r["account"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registration_one_node_holds_a_shared_account_and_a_peer_takes_it_over() {
    if !require("kamailio") || !require("kamcmd") {
        return;
    }
    let Some(url) = postgres::database() else {
        return;
    };
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let lease = Duration::from_secs(3);
    let mut n1 = node(&url, "n1", lease.as_secs(), kport);
    wait_count(&kam, REGISTERED, 1, Duration::from_secs(10)).await;
    let mut n2 = node(&url, "n2", lease.as_secs(), kport);
    // n2 tries at every beat (a third of the lease) and is refused: one REGISTER only.
    tokio::time::sleep(lease).await;
    assert_eq!(kam.log().matches(REGISTERED).count(), 1, "{}", kam.log());
    assert_eq!(
        registrations(&n1).await,
        [("pbx".to_string(), "registered".to_string())]
    );
    assert_eq!(registrations(&n2).await, []);

    // The holder is killed: n2 registers once n1's hold has expired, within a lease and a beat.
    let _ = n1.process.child.kill();
    let _ = n1.process.child.wait();
    let took = wait_count(&kam, REGISTERED, 2, Duration::from_secs(15)).await;
    assert!(took >= lease / 2, "taken over {took:?} after the kill");
    assert!(
        took <= lease + lease / 3 + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(
        registrations(&n2).await,
        [("pbx".to_string(), "registered".to_string())]
    );

    // n1 back: n2 keeps the account.
    n1.crash_and_restart();
    tokio::time::sleep(lease).await;
    assert_eq!(kam.log().matches(REGISTERED).count(), 2, "{}", kam.log());
    assert_eq!(registrations(&n1).await, []);

    // n2 drains: it unregisters and releases the account; n1 registers at its next beat.
    n2.process.signal(libc::SIGTERM);
    wait_count(&kam, UNREGISTERED, 1, Duration::from_secs(10)).await;
    let took = wait_count(&kam, REGISTERED, 3, Duration::from_secs(10)).await;
    assert!(took <= lease / 3 + Duration::from_secs(2), "{took:?}");
    assert_eq!(n2.process.wait(Duration::from_secs(20)).await, Some(0));
    assert_eq!(
        registrations(&n1).await,
        [("pbx".to_string(), "registered".to_string())]
    );
}
