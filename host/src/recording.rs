//! Call events into the call store: the adapter between `call` (which emits events) and
//! `store` (which keeps records), so neither knows the other. Writes keep the order of each
//! call's events and are committed in groups within [`LINGER`], so a crash loses at most those.
//! Events go live after their commit: an API client told of an event can read it back.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::call::events::{CallSink, LiveEvents};
use crate::domain::events::{CallEvent, EventKind, HANDED_OFF};
use crate::store::{self, CallEnd, CallStore, NewCall, TurnLatency, UsageRecord, Write};

/// Most call events in one [`CallStore::write_all`].
const MAX_EVENTS_PER_WRITE: usize = 512;
/// How long the first event of a write waits for others to share its commit. A commit costs
/// more than the rows it writes, and the calls of a commit share the pages it rewrites: at
/// 100 calls a second, 100 ms (about ten calls' set-ups and hang-ups per commit) took half the
/// store's CPU of 20 ms. A crash loses at most this much; events go live this much later.
const LINGER: Duration = Duration::from_millis(100);

/// A [`CallSink`] that writes to a [`CallStore`] on its own task, then publishes to `live`.
/// Each call it records is recorded as `node`'s (`[node] id`).
pub struct StoreSink {
    tx: mpsc::UnboundedSender<CallEvent>,
}

impl StoreSink {
    pub fn start(store: Arc<dyn CallStore>, node: String, live: LiveEvents) -> Arc<StoreSink> {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallEvent>();
        tokio::spawn(async move {
            let mut events = Vec::with_capacity(MAX_EVENTS_PER_WRITE);
            while rx.recv_many(&mut events, MAX_EVENTS_PER_WRITE).await > 0 {
                if events.len() < MAX_EVENTS_PER_WRITE {
                    tokio::time::sleep(LINGER).await;
                    while events.len() < MAX_EVENTS_PER_WRITE
                        && let Ok(e) = rx.try_recv()
                    {
                        events.push(e);
                    }
                }
                let writes: Vec<Write> = events.iter().flat_map(|e| writes_for(e, &node)).collect();
                let call_ids: Vec<String> = writes.iter().map(|w| w.call_id().into()).collect();
                for (call_id, result) in call_ids.iter().zip(store.write_all(writes).await) {
                    if let Err(e) = result {
                        tracing::error!(%call_id, error = %e, "storing a call event failed");
                    }
                }
                // A refused write is logged above; the event still happened.
                for event in events.drain(..) {
                    live.publish(event);
                }
            }
        });
        Arc::new(StoreSink { tx })
    }
}

impl CallSink for StoreSink {
    fn record(&self, event: CallEvent) {
        let _ = self.tx.send(event);
    }
}

/// What one call event changes in the store, in order: the structured tables first, so the
/// event row never points at a missing call; a transcript line is its own entry.
fn writes_for(e: &CallEvent, node: &str) -> Vec<Write> {
    let at_ms = e.at_ms as i64;
    let call_id = e.call_id.clone();
    let structured = match &e.kind {
        EventKind::Created {
            direction,
            caller,
            callee,
            agent,
            agent_version,
            transport,
            metadata,
            ..
        } => Some(Write::Create(NewCall {
            id: call_id.clone(),
            direction: if direction == "outbound" {
                store::Direction::Outbound
            } else {
                store::Direction::Inbound
            },
            caller: caller.clone(),
            callee: callee.clone(),
            agent: agent.clone(),
            agent_version: agent_version.clone(),
            transport: transport.clone(),
            started_at_ms: at_ms,
            metadata: metadata.clone().unwrap_or(Value::Null),
            node: node.to_string(),
        })),
        EventKind::Answered { .. } => Some(Write::Answered {
            call_id: call_id.clone(),
            at_ms,
        }),
        EventKind::Recording { path } => Some(Write::Recording {
            call_id: call_id.clone(),
            path: path.clone(),
        }),
        EventKind::Handoff {
            to, status, detail, ..
        } if status == HANDED_OFF => Some(Write::Agent {
            call_id: call_id.clone(),
            agent: to.clone(),
            agent_version: detail.clone(),
        }),
        EventKind::Transcript { role, text } => {
            let role = *role;
            let text = text.clone();
            return vec![Write::Transcript {
                call_id,
                at_ms,
                role,
                text,
            }];
        }
        EventKind::Usage { items, .. } => Some(Write::Usage(UsageRecord {
            call_id: call_id.clone(),
            at_ms,
            items: items.clone(),
        })),
        EventKind::TurnLatency {
            turn,
            host_in_ms,
            model_ms,
            host_out_ms,
            total_ms,
            stages,
        } => Some(Write::Latency(TurnLatency {
            call_id: call_id.clone(),
            turn: *turn,
            host_in_ms: *host_in_ms,
            model_ms: *model_ms,
            host_out_ms: *host_out_ms,
            total_ms: *total_ms,
            stages: *stages,
        })),
        _ => None,
    };
    let mut data = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
    let kind = data
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .and_then(|t| t.as_str().map(String::from))
        .unwrap_or_else(|| "event".into());
    let end = match &e.kind {
        EventKind::Ended {
            reason,
            abnormal,
            outcome,
        } => Some(Write::End {
            call_id: call_id.clone(),
            end: CallEnd {
                at_ms,
                reason: reason.clone(),
                abnormal: *abnormal,
                outcome: outcome.clone(),
            },
        }),
        _ => None,
    };
    let event = Write::Event {
        call_id,
        at_ms,
        kind,
        data,
    };
    structured.into_iter().chain([event]).chain(end).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::usage::UsageItem;

    /// The split a provider reported reaches the store as items, not just the totals.
    #[test]
    fn a_usage_event_stores_its_items() {
        let item = |kind: &str, amount: f64| UsageItem {
            provider: "gemini".into(),
            stage: "speech-to-speech".into(),
            kind: kind.into(),
            unit: "tokens".into(),
            amount,
        };
        let items = vec![
            item("input", 500.0),
            item("input-audio", 120.0),
            item("output", 96.0),
        ];
        let event = CallEvent {
            call_id: "c1".into(),
            seq: 4,
            at_ms: 1_000,
            kind: EventKind::usage(items.clone()),
        };
        let writes = writes_for(&event, "n1");
        assert_eq!(writes.len(), 2);
        assert_eq!(
            writes[0],
            Write::Usage(UsageRecord {
                call_id: "c1".into(),
                at_ms: 1_000,
                items,
            })
        );
        let Write::Event { kind, data, .. } = &writes[1] else {
            panic!("{:?}", writes[1])
        };
        assert_eq!(kind, "usage");
        assert_eq!(
            (&data["input_tokens"], &data["output_tokens"]),
            (&json!(500), &json!(96))
        );
        assert_eq!(data["items"][1]["kind"], "input-audio");
        // Logs show the totals as before (tests look for `input_tokens: 500`).
        let logged = format!("{:?}", event.kind);
        assert!(
            logged.starts_with("Usage { input_tokens: 500, output_tokens: 96,"),
            "{logged}"
        );
    }
}
