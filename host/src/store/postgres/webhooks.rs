//! The SQL of the webhook delivery queue (see `crate::store::webhooks`). Writes run in the
//! writer's transaction; a claim also locks the rows it takes (`FOR UPDATE SKIP LOCKED`), so
//! nodes sharing the database never take the same row.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::{col, exec, row, rows, unreadable, unsigned};
use crate::store::queued::{QueueDone, QueueOp};
use crate::store::webhooks::{
    AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus, HISTORY, NewDelivery,
};
use crate::store::{Result, StoreError};

const COLUMNS: &str = "id, webhook, message_id, kind, sequence_key, payload, status, attempts,
    next_attempt_at_ms, created_at_ms, updated_at_ms, history";

fn from_row(r: &Row) -> Result<Delivery> {
    let status: String = col(r, 6)?;
    let history: String = col(r, 11)?;
    Ok(Delivery {
        id: col(r, 0)?,
        webhook: col(r, 1)?,
        message_id: col(r, 2)?,
        kind: col(r, 3)?,
        sequence_key: col(r, 4)?,
        payload: col(r, 5)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| unreadable(format!("unknown delivery status {status:?}")))?,
        attempts: unsigned(col(r, 7)?),
        next_attempt_at_ms: col(r, 8)?,
        created_at_ms: col(r, 9)?,
        updated_at_ms: col(r, 10)?,
        history: serde_json::from_str(&history)
            .map_err(|e| unreadable(format!("delivery history: {e}")))?,
    })
}

pub(super) async fn apply(tx: &Transaction<'_>, op: &QueueOp) -> Result<QueueDone> {
    match op {
        QueueOp::Enqueue(deliveries) => {
            let mut queued = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                queued.push(enqueue(tx, d).await?);
            }
            Ok(QueueDone::Queued(queued))
        }
        QueueOp::Claim {
            node,
            now_ms,
            lease_ms,
            limit,
        } => {
            // As on SQLite: the head of each webhook's sequence, then the due, unleased heads.
            let sql_text = format!(
                "UPDATE webhook_deliveries SET lease_owner = $1, lease_until_ms = $2 + $3
                 WHERE id IN (
                     SELECT d.id FROM (
                         SELECT MIN(id) AS id FROM webhook_deliveries
                         WHERE status = 'pending' GROUP BY webhook, sequence_key) AS heads
                     JOIN webhook_deliveries d ON d.id = heads.id
                     WHERE d.next_attempt_at_ms <= $2
                       AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $2)
                     ORDER BY d.next_attempt_at_ms, d.id LIMIT $4
                     FOR UPDATE OF d SKIP LOCKED)
                 RETURNING {COLUMNS}"
            );
            let mut claimed = rows(
                tx,
                &sql_text,
                &[node, now_ms, lease_ms, &i64::from(*limit)],
                "claiming webhook deliveries",
            )
            .await?
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>>>()?;
            claimed.sort_by_key(|d| d.id);
            Ok(QueueDone::Rows(claimed))
        }
        QueueOp::Attempt {
            id,
            node,
            attempt,
            outcome,
        } => {
            let (status, next_at) = match outcome {
                AttemptOutcome::Delivered => (DeliveryStatus::Delivered, attempt.at_ms),
                AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, *at),
                AttemptOutcome::Dead => (DeliveryStatus::Dead, attempt.at_ms),
            };
            let held = row(
                tx,
                "SELECT history FROM webhook_deliveries
                 WHERE id = $1 AND lease_owner = $2 AND status = 'pending' FOR UPDATE",
                &[id, node],
                "recording a webhook attempt",
            )
            .await?;
            let Some(held) = held else {
                return Ok(QueueDone::Kept(false));
            };
            let mut history: Vec<DeliveryAttempt> =
                serde_json::from_str(&col::<String>(&held, 0)?).unwrap_or_default();
            history.push(attempt.clone());
            let excess = history.len().saturating_sub(HISTORY);
            history.drain(..excess);
            let history = serde_json::to_string(&history)
                .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
            let n = exec(
                tx,
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
                     next_attempt_at_ms = $3, updated_at_ms = $4, history = $5,
                     lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = $1",
                &[id, &status.as_str(), &next_at, &attempt.at_ms, &history],
                "recording a webhook attempt",
            )
            .await?;
            Ok(QueueDone::Kept(n == 1))
        }
        QueueOp::Resend { id, now_ms } => {
            let sql_text = format!(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
                     next_attempt_at_ms = $2, updated_at_ms = $2,
                     lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = $1 AND status != 'pending'
                 RETURNING {COLUMNS}"
            );
            let resent = row(tx, &sql_text, &[id, now_ms], "resending a webhook delivery").await?;
            if let Some(resent) = resent {
                return Ok(QueueDone::Row(Box::new(from_row(&resent)?)));
            }
            let exists = row(
                tx,
                "SELECT status FROM webhook_deliveries WHERE id = $1",
                &[id],
                "resending a webhook delivery",
            )
            .await?;
            Err(match exists {
                Some(_) => StoreError::InvalidInput(format!(
                    "delivery {id} is still pending: it is sent without a resend"
                )),
                None => StoreError::NoDelivery { id: *id },
            })
        }
    }
}

/// Queues one row unless its webhook's queue is full or the row exists; whether it queued.
async fn enqueue(tx: &Transaction<'_>, d: &NewDelivery) -> Result<bool> {
    let n = exec(
        tx,
        "INSERT INTO webhook_deliveries (webhook, message_id, kind, sequence_key,
             payload, status, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms,
             history)
         SELECT $1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, '[]'
         WHERE (SELECT COUNT(*) FROM webhook_deliveries
                WHERE status = 'pending' AND webhook = $1) < $7
         ON CONFLICT (webhook, message_id) DO NOTHING",
        &[
            &d.webhook,
            &d.message_id,
            &d.kind,
            &d.sequence_key,
            &d.payload,
            &d.created_at_ms,
            &i64::from(d.queue_limit),
        ],
        "queueing a webhook delivery",
    )
    .await?;
    Ok(n == 1)
}

/// Deletes up to `limit` deliveries finished (delivered or dead) before `cutoff_ms`; how many.
pub(super) async fn purge_finished(
    tx: &Transaction<'_>,
    cutoff_ms: i64,
    limit: u32,
) -> Result<u64> {
    exec(
        tx,
        "DELETE FROM webhook_deliveries WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE status != 'pending' AND updated_at_ms < $1 LIMIT $2)",
        &[&cutoff_ms, &i64::from(limit)],
        "purging webhook deliveries",
    )
    .await
}

/// The latest deliveries, newest first: of one webhook, or the dead ones of all.
pub(super) async fn read_latest(
    client: &Object,
    webhook: Option<&str>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    let filter = match webhook {
        Some(_) => "webhook = $1",
        None => "status = 'dead' AND $1::TEXT IS NULL",
    };
    let sql_text = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE {filter} ORDER BY id DESC LIMIT $2"
    );
    rows(
        client,
        &sql_text,
        &[&webhook, &i64::from(limit)],
        "reading webhook deliveries",
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}
