//! The webhook delivery queue: order per call, leases, the queue limit, dead letters, resend,
//! and rows surviving a reopen.

use super::*;
use crate::store::webhooks::{AttemptOutcome, DeliveryAttempt, DeliveryStatus, NewDelivery};

fn row(webhook: &str, call: &str, n: u32, limit: u32) -> NewDelivery {
    NewDelivery {
        webhook: webhook.into(),
        message_id: format!("msg_{call}_{n}"),
        kind: "call.started".into(),
        sequence_key: call.into(),
        payload: format!("{{\"n\":{n}}}"),
        created_at_ms: T0,
        queue_limit: limit,
    }
}

fn failed(at_ms: i64, code: u16) -> DeliveryAttempt {
    DeliveryAttempt {
        at_ms,
        code: Some(code),
        error: Some(format!("HTTP {code}")),
    }
}

fn ok(at_ms: i64) -> DeliveryAttempt {
    DeliveryAttempt {
        at_ms,
        code: Some(204),
        error: None,
    }
}

async fn a_calls_deliveries_go_one_at_a_time_in_order_and_a_retry_holds_the_next_back(db: Db) {
    let store = db.open().await;
    let rows = vec![
        row("crm", "c1", 0, 100),
        row("crm", "c1", 1, 100),
        row("crm", "c2", 0, 100),
        row("audit", "c1", 0, 100),
    ];
    assert_eq!(store.enqueue(rows.clone()).await.unwrap(), [true; 4]);
    // The same event again is not queued twice.
    assert_eq!(store.enqueue(rows[..1].to_vec()).await.unwrap(), [false]);

    let claimed = store.claim("a", T0, 60_000, 10).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["msg_c1_0", "msg_c2_0", "msg_c1_0"]);
    assert_eq!(claimed[2].webhook, "audit");
    // Leased rows are not claimed again; c1's second event waits behind its first.
    assert!(
        store
            .claim("b", T0 + 1, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let first = &claimed[0];
    let retry_at = T0 + 5_000;
    assert!(
        store
            .record_attempt(
                first.id,
                "a",
                failed(T0 + 10, 500),
                AttemptOutcome::RetryAt(retry_at)
            )
            .await
            .unwrap()
    );
    // Still first in line: nothing of c1 for crm until it is due, then it again.
    assert!(
        store
            .claim("a", T0 + 20, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim("a", retry_at, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (first.id, 1));
    assert_eq!(again[0].history, [failed(T0 + 10, 500)]);
    // Another node cannot record over a lease it does not hold.
    let stolen = store
        .record_attempt(first.id, "b", ok(retry_at), AttemptOutcome::Delivered)
        .await
        .unwrap();
    assert!(!stolen);
    store
        .record_attempt(first.id, "a", ok(retry_at + 1), AttemptOutcome::Delivered)
        .await
        .unwrap();
    let next = store.claim("a", retry_at + 2, 60_000, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message_id, "msg_c1_1");

    let listed = store.deliveries("crm", 10).await.unwrap();
    let statuses: Vec<(&str, DeliveryStatus)> = listed
        .iter()
        .map(|d| (d.message_id.as_str(), d.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("msg_c2_0", DeliveryStatus::Pending),
            ("msg_c1_1", DeliveryStatus::Pending),
            ("msg_c1_0", DeliveryStatus::Delivered),
        ]
    );
    assert_eq!(listed[2].attempts, 2);
}

async fn an_expired_lease_lets_another_node_take_the_row(db: Db) {
    let store = db.open().await;
    store.enqueue(vec![row("crm", "c1", 0, 10)]).await.unwrap();
    let a = store.claim("a", T0, 1_000, 10).await.unwrap();
    assert_eq!(a.len(), 1);
    assert!(
        store
            .claim("b", T0 + 999, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let b = store.claim("b", T0 + 1_000, 1_000, 10).await.unwrap();
    assert_eq!(b[0].id, a[0].id);
    // The first node's late result is not kept.
    let late = store
        .record_attempt(a[0].id, "a", ok(T0 + 1_001), AttemptOutcome::Delivered)
        .await
        .unwrap();
    assert!(!late);
}

async fn a_full_queue_drops_new_rows_and_dead_rows_free_it_and_resend_requeues(db: Db) {
    let store = db.open().await;
    let queued = store
        .enqueue(vec![
            row("crm", "c1", 0, 2),
            row("crm", "c1", 1, 2),
            row("crm", "c1", 2, 2),
            row("other", "c1", 0, 2),
        ])
        .await
        .unwrap();
    assert_eq!(queued, [true, true, false, true]);
    let head = store.claim("a", T0, 60_000, 10).await.unwrap();
    assert_eq!(head.len(), 2);
    store
        .record_attempt(head[0].id, "a", failed(T0, 410), AttemptOutcome::Dead)
        .await
        .unwrap();
    // A dead row no longer holds the call's next event back.
    let next = store.claim("a", T0 + 1, 60_000, 10).await.unwrap();
    assert_eq!(next[0].message_id, "msg_c1_1");
    assert_eq!(
        store.enqueue(vec![row("crm", "c1", 3, 2)]).await.unwrap(),
        [true]
    );

    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].history[0].code, Some(410));
    let resent = store.resend(dead[0].id, T0 + 50).await.unwrap();
    assert_eq!(
        (resent.status, resent.attempts, resent.next_attempt_at_ms),
        (DeliveryStatus::Pending, 0, T0 + 50)
    );
    assert_eq!(resent.message_id, "msg_c1_0");
    assert!(store.dead_letters(10).await.unwrap().is_empty());
    assert!(matches!(
        store.resend(resent.id, T0 + 60).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.resend(9_999, T0).await,
        Err(StoreError::NoDelivery { id: 9_999 })
    ));
    let pending = |rows: Vec<crate::store::webhooks::Delivery>| {
        rows.iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .count()
    };
    assert_eq!(pending(store.deliveries("crm", 10).await.unwrap()), 3);
    assert_eq!(pending(store.deliveries("other", 10).await.unwrap()), 1);

    // Durable: a reopened store has the rows.
    store.shutdown().await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.deliveries("crm", 10).await.unwrap().len(), 3);
}

async fn the_history_keeps_the_last_attempts(db: Db) {
    let store = db.open().await;
    store.enqueue(vec![row("crm", "c1", 0, 10)]).await.unwrap();
    let total = crate::store::webhooks::HISTORY as i64 + 5;
    for i in 0..total {
        let d = store.claim("a", T0 + i * 10, 60_000, 1).await.unwrap();
        store
            .record_attempt(
                d[0].id,
                "a",
                failed(T0 + i * 10, 500),
                AttemptOutcome::RetryAt(T0 + (i + 1) * 10),
            )
            .await
            .unwrap();
    }
    let d = &store.deliveries("crm", 1).await.unwrap()[0];
    assert_eq!(d.attempts as i64, total);
    assert_eq!(d.history.len(), crate::store::webhooks::HISTORY);
    assert_eq!(d.history.last().unwrap().at_ms, T0 + (total - 1) * 10);
}

async fn the_retention_purge_removes_finished_deliveries_only(db: Db) {
    let store = db.open().await;
    store
        .enqueue(vec![row("crm", "c1", 0, 10), row("crm", "c2", 0, 10)])
        .await
        .unwrap();
    let claimed = store.claim("a", T0, 60_000, 10).await.unwrap();
    store
        .record_attempt(claimed[0].id, "a", ok(T0), AttemptOutcome::Delivered)
        .await
        .unwrap();
    store
        .record_attempt(
            claimed[1].id,
            "a",
            failed(T0, 500),
            AttemptOutcome::RetryAt(T0 + DAY),
        )
        .await
        .unwrap();
    let purged = store.purge_older_than(T0 + 1).await.unwrap();
    assert_eq!(purged.deliveries, 1);
    let left = store.deliveries("crm", 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].status, DeliveryStatus::Pending);
}

on_both!(
    a_calls_deliveries_go_one_at_a_time_in_order_and_a_retry_holds_the_next_back,
    an_expired_lease_lets_another_node_take_the_row,
    a_full_queue_drops_new_rows_and_dead_rows_free_it_and_resend_requeues,
    the_history_keeps_the_last_attempts,
    the_retention_purge_removes_finished_deliveries_only,
);
