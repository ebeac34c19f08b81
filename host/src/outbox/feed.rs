//! The feed: call events from the bus into the delivery queue, one row per message and
//! interested webhook. A relay takes every event off the bus at once into memory (so a burst
//! does not overrun the bus while the store is busy); the feed takes them from there in
//! batches, one store write each. While the store is slow events wait here, never in the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::Outbox;
use super::config::EventType;
use super::payload::{self, Message};
use crate::domain::events::CallEvent;
use crate::store::CallStore;
use crate::store::campaigns::CampaignProgress;
use crate::store::webhooks::{NewDelivery, WebhookQueue};

/// Most events turned into one store write.
const BATCH: usize = 512;
/// Tries of a failing queue write before its rows are given up (logged).
const WRITE_TRIES: u32 = 10;
const WRITE_RETRY: Duration = Duration::from_millis(500);

pub(super) fn spawn(
    outbox: Arc<Outbox>,
    calls: Arc<dyn CallStore>,
    queue: Arc<dyn WebhookQueue>,
    mut events: broadcast::Receiver<CallEvent>,
) {
    let (relay, mut queued) = mpsc::unbounded_channel::<CallEvent>();
    let lagging = outbox.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if relay.send(e).is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => lagged(&lagging, n),
                Err(RecvError::Closed) => break,
            }
        }
    });
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        while queued.recv_many(&mut batch, BATCH).await > 0 {
            // Nothing is built, and no call record read, for events no webhook wants.
            let targets = outbox.targets();
            if targets.is_empty() {
                batch.clear();
                continue;
            }
            let wants = |t: EventType| {
                targets
                    .values()
                    .any(|target| target.config.events.contains(&t))
            };
            let wants_end = [
                EventType::CallEnded,
                EventType::CallOutcome,
                EventType::RecordingReady,
            ]
            .into_iter()
            .any(wants);
            let mut messages = Vec::new();
            for event in batch.drain(..) {
                if let Some(m) = payload::direct(&event) {
                    messages.push(m);
                } else if wants_end && payload::is_ended(&event) {
                    // Events go live after their commit, so the record has the whole call.
                    let detail = match calls.get_call(&event.call_id).await {
                        Ok(d) => Some(d),
                        Err(e) => {
                            tracing::warn!(call_id = %event.call_id, error = %e,
                                "call.ended goes without transcript and usage: the call record is unreadable");
                            None
                        }
                    };
                    messages.extend(payload::ended(&event, detail.as_ref()));
                }
            }
            let rows = rows_for(&outbox, &messages);
            if !rows.is_empty() {
                enqueue(&outbox, queue.as_ref(), rows).await;
            }
        }
    });
}

/// Campaigns' progress into the queue as `campaign.progress`, for the webhooks that want it.
pub(super) fn spawn_campaigns(
    outbox: Arc<Outbox>,
    queue: Arc<dyn WebhookQueue>,
    mut progress: broadcast::Receiver<CampaignProgress>,
) {
    tokio::spawn(async move {
        loop {
            match progress.recv().await {
                Ok(p) => {
                    let rows = rows_for(&outbox, &[payload::Message::campaign(&p)]);
                    if !rows.is_empty() {
                        enqueue(&outbox, queue.as_ref(), rows).await;
                    }
                }
                // A later progress message says where the campaign stands; none is owed.
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "campaign.progress: the feed fell behind")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

fn lagged(outbox: &Outbox, n: u64) {
    outbox.counters().lagged += n;
    tracing::error!(
        missed = n,
        "the webhook feed fell behind the call events: those events are not sent"
    );
}

/// One row per message and webhook that wants its type.
fn rows_for(outbox: &Outbox, messages: &[Message]) -> Vec<NewDelivery> {
    let targets = outbox.targets();
    let now = crate::store::now_ms();
    let mut rows = Vec::new();
    for m in messages {
        let body = m.body();
        for target in targets.values() {
            let c = &target.config;
            if c.events.contains(&m.event_type) {
                rows.push(NewDelivery {
                    webhook: c.name.clone(),
                    message_id: m.id.clone(),
                    kind: m.event_type.as_str().into(),
                    sequence_key: m.call_id.clone(),
                    payload: body.clone(),
                    created_at_ms: now,
                    queue_limit: c.queue_limit,
                });
            }
        }
    }
    rows
}

async fn enqueue(outbox: &Outbox, queue: &dyn WebhookQueue, rows: Vec<NewDelivery>) {
    for attempt in 1..=WRITE_TRIES {
        match queue.enqueue(rows.clone()).await {
            Ok(queued) => {
                for (row, queued) in rows.iter().zip(queued) {
                    if !queued {
                        *outbox
                            .counters()
                            .dropped
                            .entry(row.webhook.clone())
                            .or_default() += 1;
                        tracing::warn!(webhook = %row.webhook, webhook_id = %row.message_id,
                            kind = %row.kind, queue_limit = row.queue_limit,
                            "webhook queue full: event dropped");
                    }
                }
                outbox.wake.notify_one();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, rows = rows.len(), "queueing webhook deliveries failed");
                tokio::time::sleep(WRITE_RETRY).await;
            }
        }
    }
    tracing::error!(
        rows = rows.len(),
        "webhook deliveries not queued: the store refused them {WRITE_TRIES} times"
    );
}
