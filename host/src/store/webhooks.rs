//! The outgoing webhooks' delivery queue: one row per (webhook, event), durable, claimed with a
//! lease so that on a cluster exactly one node delivers each row. The store keeps rows and
//! enforces order and the lease; `crate::outbox` decides what to send and when to retry.
//!
//! Order: a row is claimable only when no earlier pending row of the same webhook shares its
//! `sequence_key` (a call's id), so a call's events reach one receiver in order and the next
//! waits while one is retried. A dead row no longer holds the ones after it back.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::Result;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt (or in flight under a lease).
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// Out of attempts (or refused with 410): kept for a resend.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Dead,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One event for one webhook, as the feed queues it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDelivery {
    pub webhook: String,
    /// The `webhook-id`: the same for every attempt and resend of this event.
    pub message_id: String,
    /// The event type (`call.ended`, ...).
    pub kind: String,
    /// Rows of one webhook with the same key are delivered in order (the call's id).
    pub sequence_key: String,
    /// The body sent, as is (JSON text).
    pub payload: String,
    pub created_at_ms: i64,
    /// Pending rows this webhook may have; beyond it the row is not queued.
    pub queue_limit: u32,
}

/// One attempt's result, kept in the row's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at_ms: i64,
    /// The HTTP status, when the receiver answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Why it failed (none for a 2xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A queued, delivered or dead delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook: String,
    pub message_id: String,
    pub kind: String,
    pub sequence_key: String,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The last attempts, oldest first (at most [`HISTORY`]).
    pub history: Vec<DeliveryAttempt>,
}

/// Attempts kept per delivery.
pub const HISTORY: usize = 20;

/// What an attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    RetryAt(i64),
    Dead,
}

/// The delivery queue. Every write is durable when it resolves. A Postgres back end claims
/// with `SELECT … FOR UPDATE SKIP LOCKED` over the same conditions as [`WebhookQueue::claim`].
#[async_trait]
pub trait WebhookQueue: Send + Sync {
    /// Queue `deliveries` in order; one answer each: true if queued, false if its webhook
    /// already had `queue_limit` pending rows (dropped) or the event was queued before.
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<bool>>;
    /// Take up to `limit` rows due at `now_ms` for `node` until `now_ms + lease_ms`: pending,
    /// not leased by a live lease, and first of their webhook and sequence key.
    async fn claim(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>>;
    /// Record an attempt of a row `node` holds and what follows; false when the lease was
    /// lost (another node owns the row now and the result is not kept).
    async fn record_attempt(
        &self,
        id: i64,
        node: &str,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool>;
    /// The latest `limit` deliveries of `webhook`, newest first.
    async fn deliveries(&self, webhook: &str, limit: u32) -> Result<Vec<Delivery>>;
    /// The latest `limit` dead deliveries of every webhook, newest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<Delivery>>;
    /// Queue a delivered or dead row again, due now with fresh attempts (same `webhook-id`).
    async fn resend(&self, id: i64, now_ms: i64) -> Result<Delivery>;
}
