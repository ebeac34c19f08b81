//! `/v1/webhooks`: each webhook's recent deliveries, the dead letters of all, and resending one
//! (like hanging up a call, an operation, not a configuration write).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiError, Ctx};
use crate::store::webhooks::{Delivery, DeliveryAttempt, DeliveryStatus};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// A delivery as the API shows it.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    id: i64,
    webhook: String,
    /// The `webhook-id` header: the same on every attempt and resend.
    webhook_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: DeliveryStatus,
    attempts: u32,
    /// The last attempt's HTTP status, if the receiver answered.
    last_code: Option<u16>,
    last_error: Option<String>,
    /// The HTTP status of each kept attempt, oldest first (null: no answer).
    codes: Vec<Option<u16>>,
    history: Vec<DeliveryAttempt>,
    next_attempt_at_ms: Option<i64>,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// The body sent.
    payload: Value,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        let last = d.history.last();
        DeliveryView {
            id: d.id,
            webhook: d.webhook,
            webhook_id: d.message_id,
            kind: d.kind,
            status: d.status,
            attempts: d.attempts,
            last_code: last.and_then(|a| a.code),
            last_error: last.and_then(|a| a.error.clone()),
            codes: d.history.iter().map(|a| a.code).collect(),
            next_attempt_at_ms: (d.status == DeliveryStatus::Pending)
                .then_some(d.next_attempt_at_ms),
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            payload: serde_json::from_str(&d.payload).unwrap_or(Value::String(d.payload)),
            history: d.history,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
}

fn list(rows: Vec<Delivery>) -> Json<DeliveryList> {
    Json(DeliveryList {
        deliveries: rows.into_iter().map(DeliveryView::from).collect(),
    })
}

/// GET /v1/webhooks/{name}/deliveries?limit=N: newest first.
pub async fn deliveries(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(query) = query?;
    let rows = ctx.queue.deliveries(&name, query.limit()).await?;
    // A webhook removed from the configuration still shows what it had.
    if rows.is_empty() && !ctx.outbox.has(&name) {
        return Err(ApiError::NotFound {
            what: "webhook",
            id: name,
        });
    }
    Ok(list(rows))
}

/// GET /v1/webhooks/dead-letters?limit=N: newest first.
pub async fn dead_letters(
    State(ctx): State<Ctx>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    let Query(query) = query?;
    Ok(list(ctx.queue.dead_letters(query.limit()).await?))
}

/// POST /v1/webhooks/deliveries/{id}/resend: a delivered or dead delivery is queued again,
/// due now, with its attempts reset and the same `webhook-id`.
pub async fn resend(
    State(ctx): State<Ctx>,
    Path(id): Path<i64>,
) -> Result<Json<DeliveryView>, ApiError> {
    let row = ctx.queue.resend(id, crate::store::now_ms()).await?;
    tracing::info!(webhook = %row.webhook, webhook_id = %row.message_id, id, "webhook delivery resent");
    ctx.outbox.wake();
    Ok(Json(row.into()))
}
