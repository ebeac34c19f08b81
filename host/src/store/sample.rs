//! A synthetic call history for benchmarks: many calls from a few thousand callers to twenty
//! numbers and ten agents, a tenth with a transcript line, 1% still active.

use std::time::Instant;

use futures_util::future::join_all;
use serde_json::json;

use super::{CallEnd, CallStore, Direction, NewCall, Role};

/// The caller of sample call `i`.
pub fn caller(i: usize) -> String {
    format!("sip:+1555{:07}@carrier.example", i % 5_000)
}

pub async fn populate(store: &dyn CallStore, calls: usize, from_ms: i64, span_ms: i64) {
    let started = Instant::now();
    const WORKERS: usize = 64;
    join_all((0..WORKERS).map(|w| async move {
        for i in (w..calls).step_by(WORKERS) {
            let id = format!("call-{i:06}");
            // Spread over the span, in start order.
            let at = from_ms + (i as i64) * (span_ms / calls as i64);
            let call = NewCall {
                id: id.clone(),
                direction: Direction::Inbound,
                caller: caller(i),
                callee: format!("+4930{:04}", i % 20),
                agent: Some(format!("agent{}", i % 10)),
                agent_version: Some("1.0.0".into()),
                transport: "udp".into(),
                started_at_ms: at,
                metadata: json!({"transport": "udp"}),
                node: "sample".into(),
            };
            store.create_call(call).await.unwrap();
            if i % 10 == 0 {
                let text = if i % 1000 == 0 {
                    "please cancel my subscription"
                } else {
                    "I would like to book an appointment"
                };
                store
                    .append_transcript(&id, at + 1000, Role::Caller, text)
                    .await
                    .unwrap();
            }
            // 1% still active.
            if i % 100 != 7 {
                let end = CallEnd {
                    at_ms: at + 60_000,
                    reason: "caller hung up".into(),
                    abnormal: false,
                    outcome: None,
                };
                store.end_call(&id, end).await.unwrap();
            }
        }
    }))
    .await;
    println!(
        "populated {calls} calls (+10% with a transcript line) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
