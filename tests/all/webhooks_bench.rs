//! Webhook delivery throughput (issue 31): the host's whole outbox path in this process, on
//! the runtime's two worker threads — call events recorded on the event bus, stored by the call
//! store's sink, queued by the feed (one SQLite write per batch), claimed, signed, posted over
//! HTTP/1.1 to a receiver on 127.0.0.1 that answers 204 at once, and recorded delivered.
//! Ignored by default; run with
//! `cargo test --release -p switchboard-tests --test all -- --ignored --nocapture webhooks_bench::`.
//! `WEBHOOKS_BENCH_CALLS` (default 2000, three events each) bounds the count; the run stops
//! after `WEBHOOKS_BENCH_SECS` (default 120) whatever is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard::call::events::EventBus;
use switchboard::domain::events::EventKind;
use switchboard::model::Secret;
use switchboard::outbox::{EventType, Outbox, WebhookConfig};
use switchboard::recording::StoreSink;
use switchboard::store::webhooks::{DeliveryStatus, WebhookQueue};
use switchboard::store::{SqliteStore, StoreConfig};
use tokio::net::TcpListener;

use crate::support::load::env_or;
use crate::support::rest_fake;
use crate::support::webhook_receiver::SECRET;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn webhooks_bench_delivery_throughput_to_a_204_receiver() {
    let calls = env_or("WEBHOOKS_BENCH_CALLS", 2000u64);
    let limit = Duration::from_secs(env_or("WEBHOOKS_BENCH_SECS", 120u64));
    let events = calls * 3;

    let received = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = received.clone();
    tokio::spawn(rest_fake::serve(
        listener,
        Arc::new(move |_req: rest_fake::Request| {
            counter.fetch_add(1, Ordering::Relaxed);
            ("204 No Content", Value::Null)
        }),
    ));

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&StoreConfig {
            path: dir.path().join("calls.db"),
            ..StoreConfig::default()
        })
        .unwrap(),
    );
    let bus = EventBus::new(|live| StoreSink::start(store.clone(), "bench".into(), live));
    let hook = WebhookConfig {
        allow_local: true,
        queue_limit: u32::try_from(events).unwrap() + 1,
        ..WebhookConfig::new(
            "bench",
            &format!("http://127.0.0.1:{port}/hooks"),
            vec![
                EventType::CallStarted,
                EventType::CallAnswered,
                EventType::CallEnded,
            ],
            Secret::new(SECRET),
        )
    };
    let _outbox = Outbox::start(&[hook], store.clone(), store.clone(), &bus).unwrap();

    let start = Instant::now();
    for n in 0..calls {
        let call = bus.recorder(&format!("bench-{n}"));
        call.record(EventKind::Created {
            direction: "inbound".into(),
            caller: "sip:caller@127.0.0.1".into(),
            callee: "1000".into(),
            transport: "udp".into(),
            agent: Some("menu".into()),
            agent_version: Some("1.0.0".into()),
            agent_hash: None,
            metadata: None,
        });
        call.record(EventKind::Answered {
            codec: "pcmu".into(),
            model: "offline".into(),
        });
        call.record(EventKind::Ended {
            reason: "caller-hangup".into(),
            abnormal: false,
            outcome: None,
        });
    }
    let recorded = start.elapsed();
    while received.load(Ordering::Relaxed) < events && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let got = received.load(Ordering::Relaxed);
    // The receiver's count is what the sender posted; the store's is what it recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = store
        .deliveries("bench", u32::try_from(events).unwrap())
        .await
        .unwrap();
    let delivered = rows
        .iter()
        .filter(|d| d.status == DeliveryStatus::Delivered)
        .count();
    eprintln!(
        "webhooks: {events} events of {calls} calls recorded in {:.0} ms; the receiver got {got} \
         in {:.2} s: {:.0} events/s end to end ({delivered} recorded delivered)",
        recorded.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(got, events, "every event posted within {limit:?}");
    assert_eq!(delivered as u64, events);
}
