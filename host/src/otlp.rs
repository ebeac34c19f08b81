//! Optional OpenTelemetry export of the log: the lines of the [`LogFeed`] sent as OTLP/HTTP
//! JSON to a collector (`[log] otlp-endpoint`, e.g. `http://127.0.0.1:4318`; records go to its
//! `/v1/logs`). Batched once a second or every [`BATCH`] lines; when the collector is slow or
//! down, lines are dropped and counted rather than queued without bound — the phone calls come
//! first.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::logs::{LogFeed, LogLine};

/// Lines per request at most.
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running export; [`Exporter::finish`] sends what is pending.
pub struct Exporter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Flush the last lines (e.g. the shutdown's) and stop.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.task).await;
    }
}

/// Start exporting to `endpoint` (the collector's base URL) on a background task.
pub fn spawn_exporter(
    feed: &LogFeed,
    endpoint: &str,
    service_name: &str,
) -> anyhow::Result<Exporter> {
    let url = url::Url::parse(endpoint)
        .and_then(|base| base.join("v1/logs"))
        .map_err(|e| anyhow::anyhow!("[log] otlp-endpoint `{endpoint}`: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let resource = json!({
        "attributes": [attribute("service.name", service_name)],
    });
    let mut lines = feed.subscribe();
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut dropped = 0u64;
        let mut last_warning: Option<Instant> = None;
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            let (flush, closed) = tokio::select! {
                line = lines.recv() => match line {
                    Ok(line) => {
                        batch.push(record(&line));
                        (batch.len() >= BATCH, false)
                    }
                    Err(RecvError::Lagged(n)) => {
                        dropped += n;
                        (false, false)
                    }
                    Err(RecvError::Closed) => (true, true),
                },
                _ = tick.tick() => (true, false),
                _ = &mut stopped => {
                    while let Ok(line) = lines.try_recv() {
                        batch.push(record(&line));
                    }
                    (true, true)
                }
            };
            if flush && !batch.is_empty() {
                let lines_sent = batch.len() as u64;
                let body = json!({
                    "resourceLogs": [{
                        "resource": resource,
                        "scopeLogs": [{
                            "scope": {"name": "switchboard", "version": env!("CARGO_PKG_VERSION")},
                            "logRecords": std::mem::take(&mut batch),
                        }],
                    }],
                });
                let sent = client
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                if !sent.is_ok_and(|r| r.status().is_success()) {
                    dropped += lines_sent;
                }
            }
            // At most one warning a minute: the warning itself is exported too.
            if dropped > 0 && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(lines = dropped, collector = %url, "OTLP log export is failing or lagging; lines dropped");
                last_warning = Some(Instant::now());
                dropped = 0;
            }
            if closed {
                break;
            }
        }
    });
    Ok(Exporter { stop, task })
}

fn attribute(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// One OTLP log record (protobuf JSON mapping: 64-bit integers as strings).
fn record(line: &LogLine) -> Value {
    let severity = match line.level.as_str() {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        _ => 17,
    };
    let nanos = (line.at_ms as u128 * 1_000_000).to_string();
    let mut attributes = vec![attribute("log.target", &line.target)];
    if let Some(call_id) = &line.call_id {
        attributes.push(attribute("call_id", call_id));
    }
    json!({
        "timeUnixNano": nanos,
        "observedTimeUnixNano": nanos,
        "severityNumber": severity,
        "severityText": line.level,
        "body": {"stringValue": line.line},
        "attributes": attributes,
    })
}
