//! The SQL of the webhook delivery queue (see `crate::store::webhooks`). Writes run in the
//! writer's transaction, so a claim and the rows it reads are one atomic step; on SQLite one
//! process writes, so a lease only matters across restarts and for other back ends.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use crate::store::queued::{QueueDone, QueueOp};
use crate::store::webhooks::{
    AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus, HISTORY, NewDelivery,
};
use crate::store::{Result, StoreError, sql};

const COLUMNS: &str = "id, webhook, message_id, kind, sequence_key, payload, status, attempts,
    next_attempt_at_ms, created_at_ms, updated_at_ms, history";

fn from_row(row: &Row) -> rusqlite::Result<Delivery> {
    let status: String = row.get(6)?;
    let history: String = row.get(11)?;
    Ok(Delivery {
        id: row.get(0)?,
        webhook: row.get(1)?,
        message_id: row.get(2)?,
        kind: row.get(3)?,
        sequence_key: row.get(4)?,
        payload: row.get(5)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| {
            super::rows::conversion(6, format!("unknown delivery status {status:?}"))
        })?,
        attempts: row.get(7)?,
        next_attempt_at_ms: row.get(8)?,
        created_at_ms: row.get(9)?,
        updated_at_ms: row.get(10)?,
        history: serde_json::from_str(&history)
            .map_err(|e| super::rows::conversion(11, e.to_string()))?,
    })
}

pub(super) fn apply(tx: &Transaction, op: &QueueOp) -> Result<QueueDone> {
    match op {
        QueueOp::Enqueue(rows) => rows
            .iter()
            .map(|d| enqueue(tx, d))
            .collect::<Result<_>>()
            .map(QueueDone::Queued),
        QueueOp::Claim {
            node,
            now_ms,
            lease_ms,
            limit,
        } => {
            // The head of each webhook's sequence first (one pass over the pending rows'
            // index), then which heads are due and not leased: a row behind a head is never
            // looked at, however many wait.
            let sql_text = format!(
                "UPDATE webhook_deliveries SET lease_owner = ?1, lease_until_ms = ?2 + ?3
                 WHERE id IN (
                     SELECT d.id FROM (
                         SELECT MIN(id) AS id FROM webhook_deliveries
                         WHERE status = 'pending' GROUP BY webhook, sequence_key) AS heads
                     JOIN webhook_deliveries d ON d.id = heads.id
                     WHERE d.next_attempt_at_ms <= ?2
                       AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= ?2)
                     ORDER BY d.next_attempt_at_ms, d.id LIMIT ?4)
                 RETURNING {COLUMNS}"
            );
            let mut rows: Vec<Delivery> = tx
                .prepare_cached(&sql_text)
                .and_then(|mut s| {
                    s.query_map(params![node, now_ms, lease_ms, limit], from_row)?
                        .collect()
                })
                .map_err(sql("claiming webhook deliveries"))?;
            rows.sort_by_key(|d| d.id);
            Ok(QueueDone::Rows(rows))
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
            let held: Option<String> = tx
                .prepare_cached(
                    "SELECT history FROM webhook_deliveries
                     WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
                )
                .and_then(|mut s| s.query_row(params![id, node], |r| r.get(0)).optional())
                .map_err(sql("recording a webhook attempt"))?;
            let Some(history) = held else {
                return Ok(QueueDone::Kept(false));
            };
            let mut history: Vec<DeliveryAttempt> =
                serde_json::from_str(&history).unwrap_or_default();
            history.push(attempt.clone());
            let excess = history.len().saturating_sub(HISTORY);
            history.drain(..excess);
            let history = serde_json::to_string(&history)
                .map_err(|e| StoreError::InvalidInput(e.to_string()))?;
            let n = tx
                .prepare_cached(
                    "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1,
                         next_attempt_at_ms = ?3, updated_at_ms = ?4, history = ?5,
                         lease_owner = NULL, lease_until_ms = NULL
                     WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        status.as_str(),
                        next_at,
                        attempt.at_ms,
                        history
                    ])
                })
                .map_err(sql("recording a webhook attempt"))?;
            Ok(QueueDone::Kept(n == 1))
        }
        QueueOp::Resend { id, now_ms } => {
            let sql_text = format!(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
                     next_attempt_at_ms = ?2, updated_at_ms = ?2,
                     lease_owner = NULL, lease_until_ms = NULL
                 WHERE id = ?1 AND status != 'pending'
                 RETURNING {COLUMNS}"
            );
            let row = tx
                .prepare_cached(&sql_text)
                .and_then(|mut s| s.query_row(params![id, now_ms], from_row).optional())
                .map_err(sql("resending a webhook delivery"))?;
            match row {
                Some(row) => Ok(QueueDone::Row(Box::new(row))),
                None => {
                    let pending: Option<String> = tx
                        .prepare_cached("SELECT status FROM webhook_deliveries WHERE id = ?1")
                        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
                        .map_err(sql("resending a webhook delivery"))?;
                    Err(match pending {
                        Some(_) => StoreError::InvalidInput(format!(
                            "delivery {id} is still pending: it is sent without a resend"
                        )),
                        None => StoreError::NoDelivery { id: *id },
                    })
                }
            }
        }
    }
}

/// Queues one row unless its webhook's queue is full or the row exists; whether it queued.
fn enqueue(tx: &Transaction, d: &NewDelivery) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries (webhook, message_id, kind, sequence_key,
                 payload, status, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms,
                 history)
             SELECT ?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?6, '[]'
             WHERE (SELECT COUNT(*) FROM webhook_deliveries
                    WHERE status = 'pending' AND webhook = ?1) < ?7",
        )
        .and_then(|mut s| {
            s.execute(params![
                d.webhook,
                d.message_id,
                d.kind,
                d.sequence_key,
                d.payload,
                d.created_at_ms,
                d.queue_limit
            ])
        })
        .map_err(sql("queueing a webhook delivery"))?;
    Ok(n == 1)
}

/// Deletes up to `limit` deliveries finished (delivered or dead) before `cutoff_ms`; how many.
pub(super) fn purge_finished(tx: &Transaction, cutoff_ms: i64, limit: u32) -> Result<u64> {
    let n = tx
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE status != 'pending' AND updated_at_ms < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![cutoff_ms, limit]))
        .map_err(sql("purging webhook deliveries"))?;
    Ok(n as u64)
}

/// The latest deliveries, newest first: of one webhook, or the dead ones of all.
pub(super) fn read_latest(
    conn: &Connection,
    webhook: Option<&str>,
    limit: u32,
) -> Result<Vec<Delivery>> {
    let filter = match webhook {
        Some(_) => "webhook = ?1",
        None => "status = 'dead' AND ?1 IS NULL",
    };
    let sql_text = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE {filter} ORDER BY id DESC LIMIT ?2"
    );
    conn.prepare_cached(&sql_text)
        .and_then(|mut s| s.query_map(params![webhook, limit], from_row)?.collect())
        .map_err(sql("reading webhook deliveries"))
}
