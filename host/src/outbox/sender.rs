//! The sender: claims due deliveries, posts each one signed at this attempt's time, and records
//! the result. 2xx delivers; 410 Gone dead-letters at once (the receiver says it will never
//! take it; the webhook itself stays on); anything else (another status, no answer within
//! `timeout-ms`, no connection) retries after `retry-ms`, doubled each time up to an hour, ±25%,
//! until `max-attempts`, then dead-letters.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Outbox, Target};
use crate::store::now_ms;
use crate::store::webhooks::{AttemptOutcome, Delivery, DeliveryAttempt, WebhookQueue};

/// Attempts in flight at once, over all webhooks.
const IN_FLIGHT: usize = 64;
/// How often due retries (and rows other nodes queued) are looked for without a wake-up.
const POLL: Duration = Duration::from_millis(200);
/// A claim outlives the attempt by this much, so it is recorded before another node may take
/// the row.
const LEASE_MARGIN_MS: i64 = 5_000;
/// Longest wait between two attempts.
const MAX_RETRY_MS: u64 = 3_600_000;

pub(super) fn spawn(outbox: Arc<Outbox>, queue: Arc<dyn WebhookQueue>) {
    tokio::spawn(async move {
        let mut flying = JoinSet::new();
        loop {
            // Claimed in batches: a claim is a store write that looks at every sequence's head.
            let free = IN_FLIGHT - flying.len();
            if free >= IN_FLIGHT / 2 {
                let targets = outbox.targets();
                let longest = targets
                    .values()
                    .map(|t| t.config.connect_timeout_ms + t.config.timeout_ms)
                    .max()
                    .unwrap_or(0) as i64;
                match queue
                    .claim(
                        &outbox.node,
                        now_ms(),
                        longest + LEASE_MARGIN_MS,
                        free as u32,
                    )
                    .await
                {
                    Ok(rows) => {
                        for row in rows {
                            let target = targets.get(&row.webhook).cloned();
                            let (outbox, queue) = (outbox.clone(), queue.clone());
                            flying.spawn(async move {
                                deliver(&outbox, queue.as_ref(), target.as_deref(), row).await;
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            // Without webhooks nothing comes due by itself: only a wake-up (a change, a
            // resend) makes the next claim.
            let idle = flying.is_empty() && outbox.targets().is_empty();
            tokio::select! {
                Some(_) = flying.join_next(), if !flying.is_empty() => {}
                _ = outbox.wake.notified() => {}
                _ = tokio::time::sleep(POLL), if !idle => {}
            }
        }
    });
}

/// One attempt of `row` and its record.
async fn deliver(
    outbox: &Outbox,
    queue: &dyn WebhookQueue,
    target: Option<&Target>,
    row: Delivery,
) {
    let (attempt, outcome) = match target {
        Some(target) => post(target, &row).await,
        None => (
            DeliveryAttempt {
                at_ms: now_ms(),
                code: None,
                error: Some(format!("webhook `{}` is no longer configured", row.webhook)),
            },
            AttemptOutcome::Dead,
        ),
    };
    let result = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::RetryAt(_) => "retried",
        AttemptOutcome::Dead => "dead",
    };
    match outcome {
        AttemptOutcome::Delivered => tracing::debug!(webhook = %row.webhook,
            webhook_id = %row.message_id, kind = %row.kind, "webhook delivered"),
        AttemptOutcome::RetryAt(at) => tracing::info!(webhook = %row.webhook,
            webhook_id = %row.message_id, kind = %row.kind, attempts = row.attempts + 1,
            code = attempt.code, error = attempt.error.as_deref(), retry_in_ms = at - attempt.at_ms,
            "webhook attempt failed; retrying"),
        AttemptOutcome::Dead => tracing::warn!(webhook = %row.webhook,
            webhook_id = %row.message_id, kind = %row.kind, attempts = row.attempts + 1,
            code = attempt.code, error = attempt.error.as_deref(),
            "webhook delivery dead-lettered"),
    }
    match queue
        .record_attempt(row.id, &outbox.node, attempt, outcome)
        .await
    {
        Ok(true) => {
            *outbox
                .counters()
                .attempts
                .entry((row.webhook.clone(), result))
                .or_default() += 1;
        }
        Ok(false) => tracing::warn!(webhook = %row.webhook, webhook_id = %row.message_id,
            "webhook attempt outlived its lease: another node has the delivery"),
        Err(e) => tracing::error!(webhook = %row.webhook, webhook_id = %row.message_id,
            error = %e, "recording a webhook attempt failed; it is retried when the lease ends"),
    }
    outbox.wake.notify_one();
}

/// Posts `row` signed with this attempt's timestamp; what it leads to.
async fn post(target: &Target, row: &Delivery) -> (DeliveryAttempt, AttemptOutcome) {
    let timestamp = now_ms() / 1000;
    let signature = target
        .secret
        .sign(&row.message_id, timestamp as u64, row.payload.as_bytes());
    let sent = target
        .client
        .post(&target.config.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &row.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await;
    let at_ms = now_ms();
    let (code, error) = match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                let done = DeliveryAttempt {
                    at_ms,
                    code: Some(status.as_u16()),
                    error: None,
                };
                return (done, AttemptOutcome::Delivered);
            }
            (
                Some(status.as_u16()),
                format!("the receiver answered {status}"),
            )
        }
        Err(e) if e.is_timeout() => (
            None,
            format!("no answer within {} ms", target.config.timeout_ms),
        ),
        Err(e) => (None, describe(&e.without_url())),
    };
    let attempt = DeliveryAttempt {
        at_ms,
        code,
        error: Some(error),
    };
    let attempts = row.attempts + 1;
    let outcome = if code == Some(410) || attempts >= target.config.max_attempts {
        AttemptOutcome::Dead
    } else {
        AttemptOutcome::RetryAt(at_ms + backoff_ms(target.config.retry_ms, row.attempts) as i64)
    };
    (attempt, outcome)
}

/// An error with its causes (reqwest's own text says little: "error sending request").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The wait after failed attempt number `failed` (0 for the first): `retry_ms` doubled per
/// earlier failure, at most an hour, spread ±25% so that receivers coming back are not hit
/// by every delivery at once.
fn backoff_ms(retry_ms: u64, failed: u32) -> u64 {
    let base = retry_ms
        .saturating_mul(1u64 << failed.min(32))
        .min(MAX_RETRY_MS);
    let spread = base / 4;
    base - spread + fastrand::u64(0..=spread * 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        for _ in 0..100 {
            let first = backoff_ms(1000, 0);
            assert!((750..=1250).contains(&first), "{first}");
            let third = backoff_ms(1000, 2);
            assert!((3000..=5000).contains(&third), "{third}");
            let late = backoff_ms(1000, 40);
            assert!((2_700_000..=4_500_000).contains(&late), "{late}");
        }
    }
}
