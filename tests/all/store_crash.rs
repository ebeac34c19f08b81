//! Call records survive a crash: kill -9 during a call, restart, and the call is in the store
//! with its events up to the kill, marked ended abnormally.

use std::time::Duration;

use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{spawn_sipp, uac_args};
use crate::support::tempdir;
use switchboard::store::{CallFilter, CallState, CallStore, SqliteStore, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_call_leaves_the_record_ended_abnormally() {
    if !require("sipp") {
        return;
    }
    let mut host = Host::builder().examples(&["menu"]).start();
    let dir = tempdir("sipp-crash");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let _sipp = spawn_sipp(dir.path(), &uac_args("1000", 1, 30000, &[], &target));
    host.expect(&["Answered"], 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.crash_and_restart();
    host.expect(&["ended abnormally"], 20);

    let store = SqliteStore::open(&StoreConfig {
        path: host.data.path().join("calls.db"),
        ..StoreConfig::default()
    })
    .unwrap();
    let page = store.list_calls(&CallFilter::default()).await.unwrap();
    assert_eq!(page.calls.len(), 1, "{page:?}");
    let call = &page.calls[0];
    assert_eq!(call.state, CallState::EndedAbnormally, "{call:?}");
    assert_eq!(call.agent.as_deref(), Some("menu"));
    let detail = store.get_call(&call.id).await.unwrap();
    let kinds: Vec<&str> = detail.events.iter().map(|e| e.kind.as_str()).collect();
    for expected in ["created", "state", "answered"] {
        assert!(kinds.contains(&expected), "{expected} in {kinds:?}");
    }
    assert!(
        detail.events.windows(2).all(|w| w[0].seq < w[1].seq),
        "events in order"
    );
}
