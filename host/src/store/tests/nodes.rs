//! Several nodes on one store: a node restarting closes only its own open calls (and those of
//! the one node before nodes were recorded), a peer closes a node's calls only once its lease
//! has expired, one node holds a registration account at a time, and on Postgres a node id is
//! held by one process at a time.

use super::*;

const OTHER: &str = "node-2";

/// `id` started on `node` at `at`.
fn call_on(node: &str, id: &str, at: i64) -> NewCall {
    NewCall {
        node: node.into(),
        ..new_call(id, "1", "2", "menu", at)
    }
}

async fn state(store: &Arc<dyn Store>, id: &str) -> (CallState, Option<String>) {
    let call = store.get_call(id).await.unwrap().call;
    (call.state, call.end_reason)
}

async fn a_restarting_node_closes_only_its_own_calls(db: Db) {
    // A call from before nodes were recorded: the one node of then left it open.
    db.at_version(
        7,
        &format!(
            "INSERT INTO calls (id, direction, caller, callee, caller_key, callee_key,
                 started_at_ms, state, metadata)
             VALUES ('before', 'inbound', '1', '2', '1', '2', {T0}, 'active', 'null');"
        ),
    )
    .await;
    let store = db.open().await;
    assert_eq!(store.get_call("before").await.unwrap().call.node, None);
    store.create_call(call_on(NODE, "mine", T0)).await.unwrap();
    store
        .create_call(call_on(OTHER, "theirs", T0))
        .await
        .unwrap();
    store
        .append_event("mine", T0 + 40, "k", json!(1))
        .await
        .unwrap();
    let mine = store.get_call("mine").await.unwrap().call;
    assert_eq!(mine.node.as_deref(), Some(NODE));

    assert_eq!(store.close_abandoned_calls(NODE).await.unwrap(), 2);
    let mine = store.get_call("mine").await.unwrap().call;
    assert_eq!(
        (mine.state, mine.ended_at_ms, mine.end_reason.as_deref()),
        (
            CallState::EndedAbnormally,
            Some(T0 + 40),
            Some("host restarted")
        )
    );
    assert_eq!(state(&store, "before").await.0, CallState::EndedAbnormally);
    assert_eq!(
        state(&store, "theirs").await,
        (CallState::Active, None),
        "another node's call is its own to close"
    );
}

async fn a_peer_closes_a_nodes_calls_only_once_its_lease_expired(db: Db) {
    let store = db.open().await;
    store.renew_node_lease(NODE, T0 + 60_000).await.unwrap();
    store.renew_node_lease(OTHER, T0 + 10_000).await.unwrap();
    store.create_call(call_on(NODE, "mine", T0)).await.unwrap();
    store
        .create_call(call_on(OTHER, "theirs", T0))
        .await
        .unwrap();
    store
        .create_call(call_on(OTHER, "theirs-ended", T0))
        .await
        .unwrap();
    store.end_call("theirs-ended", ended(T0 + 5)).await.unwrap();
    store
        .append_transcript("theirs", T0 + 900, Role::Caller, "hello?")
        .await
        .unwrap();

    // The lease still runs (up to its last millisecond): nothing is closed.
    for now in [T0 + 5_000, T0 + 10_000] {
        assert_eq!(
            store.close_calls_of_lapsed_nodes(NODE, now).await.unwrap(),
            0
        );
    }
    // Renewed in time: still nothing at the old expiry.
    store.renew_node_lease(OTHER, T0 + 20_000).await.unwrap();
    assert_eq!(
        store
            .close_calls_of_lapsed_nodes(NODE, T0 + 15_000)
            .await
            .unwrap(),
        0
    );
    // Expired: the peer closes the open call, at its last sign of life; its own call stays.
    assert_eq!(
        store
            .close_calls_of_lapsed_nodes(NODE, T0 + 20_001)
            .await
            .unwrap(),
        1
    );
    let theirs = store.get_call("theirs").await.unwrap().call;
    assert_eq!(
        (
            theirs.state,
            theirs.ended_at_ms,
            theirs.end_reason.as_deref()
        ),
        (
            CallState::EndedAbnormally,
            Some(T0 + 900),
            Some("node lost")
        )
    );
    assert_eq!(
        state(&store, "theirs-ended").await,
        (CallState::Ended, Some("caller hung up".into()))
    );
    assert_eq!(state(&store, "mine").await, (CallState::Active, None));
    // A node never sweeps itself, even with its lease run out.
    assert_eq!(
        store
            .close_calls_of_lapsed_nodes(NODE, T0 + 90_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(state(&store, "mine").await.0, CallState::Active);

    // A released lease is no lease: a call left open by that node is closed at once.
    store.renew_node_lease("node-3", T0 + 60_000).await.unwrap();
    store
        .create_call(call_on("node-3", "left", T0))
        .await
        .unwrap();
    store.release_node_lease("node-3").await.unwrap();
    assert_eq!(
        store
            .close_calls_of_lapsed_nodes(NODE, T0 + 30_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(&store, "left").await.0, CallState::EndedAbnormally);
}

async fn one_node_holds_a_registration_account_at_a_time(db: Db) {
    let store = db.open().await;
    let hold = |node: &'static str, now: i64| {
        let store = store.clone();
        async move {
            store
                .hold_account("pbx", node, now, now + 10_000)
                .await
                .unwrap()
        }
    };
    assert!(hold(NODE, T0).await, "free: taken");
    assert!(!hold(OTHER, T0 + 1_000).await, "held by another");
    assert!(
        hold(NODE, T0 + 5_000).await,
        "renewed by its holder, until T0 + 15 s"
    );
    assert!(!hold(OTHER, T0 + 12_000).await, "the renewal counts");
    assert!(
        store
            .hold_account("other-account", OTHER, T0, T0 + 10_000)
            .await
            .unwrap(),
        "accounts are held one by one"
    );
    // The holder stops renewing: once its lease has expired the peer takes over.
    assert!(!hold(OTHER, T0 + 15_000).await);
    assert!(hold(OTHER, T0 + 15_001).await);
    assert!(!hold(NODE, T0 + 16_000).await, "and keeps it");
    // Released (a drain): free at once, with the peer's other accounts gone too.
    store.release_accounts(OTHER).await.unwrap();
    assert!(hold(NODE, T0 + 16_000).await);
    assert!(
        store
            .hold_account("other-account", NODE, T0 + 16_000, T0 + 26_000)
            .await
            .unwrap()
    );
}

on_both!(
    a_restarting_node_closes_only_its_own_calls,
    a_peer_closes_a_nodes_calls_only_once_its_lease_expired,
    one_node_holds_a_registration_account_at_a_time,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_is_held_by_one_store_at_a_time_on_postgres() {
    let Some(db) = Db::postgres() else {
        return;
    };
    let first = db.open().await;
    first.claim_node(NODE).await.unwrap();
    // Claiming again from the holder is a no-op.
    first.claim_node(NODE).await.unwrap();
    let second = db.open().await;
    let refused = second.claim_node(NODE).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::NodeTaken { node } if node == NODE),
        "{refused}"
    );
    assert!(refused.to_string().contains("[node] id"), "{refused}");
    second.claim_node(OTHER).await.unwrap();

    // The lock goes with its connection: once the first store is gone, the id is free.
    drop(first);
    let third = db.open().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = third.claim_node(NODE).await {
        assert!(std::time::Instant::now() < deadline, "never freed: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn claiming_a_node_id_on_sqlite_leaves_it_to_the_data_folder_lock() {
    let db = Db::sqlite();
    let first = db.open().await;
    first.claim_node(NODE).await.unwrap();
    db.open().await.claim_node(NODE).await.unwrap();
}
