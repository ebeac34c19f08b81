//! Call events into the call store: the adapter between `call` (which emits events) and
//! `store` (which keeps records), so neither knows the other. Writes keep the order of each
//! call's events; each is committed within milliseconds, so a crash loses at most those.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::call::events::{CallEvent, CallSink, EventKind};
use crate::plugins::types::Role;
use crate::store::{self, CallEnd, CallStore, NewCall, TurnLatency, UsageRecord};

/// A [`CallSink`] that writes to a [`CallStore`] on its own task.
pub struct StoreSink {
    tx: mpsc::UnboundedSender<CallEvent>,
}

impl StoreSink {
    pub fn start(store: Arc<dyn CallStore>) -> Arc<StoreSink> {
        let (tx, mut rx) = mpsc::unbounded_channel::<CallEvent>();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                if let Err(e) = write(store.as_ref(), &event).await {
                    tracing::error!(call_id = %event.call_id, error = %e, "storing a call event failed");
                }
            }
        });
        Arc::new(StoreSink { tx })
    }
}

impl CallSink for StoreSink {
    fn record(&self, event: &CallEvent) {
        let _ = self.tx.send(event.clone());
    }
}

async fn write(store: &dyn CallStore, e: &CallEvent) -> store::Result<()> {
    let at = e.at_ms as i64;
    let id = e.call_id.as_str();
    // The structured tables first, so the event row never points at a missing call.
    match &e.kind {
        EventKind::Created {
            direction,
            caller,
            callee,
            agent,
            agent_version,
            metadata,
            ..
        } => {
            store
                .create_call(NewCall {
                    id: id.to_string(),
                    direction: if direction == "outbound" {
                        store::Direction::Outbound
                    } else {
                        store::Direction::Inbound
                    },
                    caller: caller.clone(),
                    callee: callee.clone(),
                    agent: agent.clone(),
                    agent_version: agent_version.clone(),
                    started_at_ms: at,
                    metadata: metadata.clone().unwrap_or(Value::Null),
                })
                .await?
        }
        EventKind::Answered { .. } => store.set_answered(id, at).await?,
        EventKind::Recording { path } => store.set_recording(id, path).await?,
        EventKind::Transcript { role, text } => {
            let role = match role {
                Role::Caller => store::Role::Caller,
                Role::Agent => store::Role::Agent,
            };
            store.append_transcript(id, at, role, text).await?;
            return Ok(());
        }
        EventKind::Usage {
            input_tokens,
            output_tokens,
        } => {
            store
                .add_usage(UsageRecord {
                    call_id: id.to_string(),
                    at_ms: at,
                    input_tokens: *input_tokens,
                    output_tokens: *output_tokens,
                    input_audio_tokens: None,
                    input_text_tokens: None,
                    output_audio_tokens: None,
                    output_text_tokens: None,
                })
                .await?
        }
        EventKind::TurnLatency {
            turn,
            host_in_ms,
            model_ms,
            host_out_ms,
            total_ms,
        } => {
            store
                .record_latency(TurnLatency {
                    call_id: id.to_string(),
                    turn: *turn,
                    host_in_ms: *host_in_ms,
                    model_ms: *model_ms,
                    host_out_ms: *host_out_ms,
                    total_ms: *total_ms,
                })
                .await?
        }
        _ => {}
    }
    let mut data = serde_json::to_value(&e.kind).unwrap_or(Value::Null);
    let kind = data
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .and_then(|t| t.as_str().map(String::from))
        .unwrap_or_else(|| "event".into());
    store.append_event(id, at, &kind, data).await?;
    if let EventKind::Ended { reason, abnormal } = &e.kind {
        store
            .end_call(
                id,
                CallEnd {
                    at_ms: at,
                    reason: reason.clone(),
                    abnormal: *abnormal,
                    outcome: None,
                },
            )
            .await?;
    }
    Ok(())
}
