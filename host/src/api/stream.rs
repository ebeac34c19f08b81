//! GET /v1/events: server-sent events. One SSE event per call event (event name = its `type`,
//! data = the call event JSON), `agent-reload` per reload outcome, `registration` per
//! registration change, `log` per log line, `config-change` per live configuration change
//! (its audit record), `campaign` per change of a campaign's progress, and `lagged` when this
//! client fell behind and
//! missed events. Keep-alive comments every 15 s. A call event is sent once the call store
//! holds it, so GET /v1/calls/{id} after an event shows that event.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::Ctx;

/// The next item of a broadcast as an SSE event; None when the channel closed.
fn convert<T>(item: Result<T, RecvError>, to_event: impl Fn(&T) -> Event) -> Option<Event> {
    match item {
        Ok(v) => Some(to_event(&v)),
        Err(RecvError::Lagged(n)) => Some(
            Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
        ),
        Err(RecvError::Closed) => None,
    }
}

fn json_event(name: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

async fn next_or_pending<T: Clone>(
    rx: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

pub async fn events(State(ctx): State<Ctx>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut calls = Some(ctx.calls.events.subscribe());
    let mut reloads = Some(ctx.registry.subscribe());
    let mut registrations = Some(ctx.registrations.subscribe());
    let mut logs = Some(ctx.logs.subscribe());
    let mut changes = Some(ctx.live.subscribe());
    let mut campaigns = Some(ctx.campaigns.subscribe());
    let (tx, rx) = mpsc::channel::<Event>(256);
    // One forwarding task per client; it ends when the client goes away.
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = tx.closed() => break,
                item = next_or_pending(&mut calls) => match convert(item, |e| {
                    let data = serde_json::to_value(e).unwrap_or_default();
                    let name = data["type"].as_str().unwrap_or("call");
                    Event::default().event(name).data(data.to_string())
                }) {
                    Some(ev) => ev,
                    None => { calls = None; continue; }
                },
                item = next_or_pending(&mut reloads) => match convert(item, |e| json_event("agent-reload", e)) {
                    Some(ev) => ev,
                    None => { reloads = None; continue; }
                },
                item = next_or_pending(&mut registrations) => match convert(item, |e| json_event("registration", e)) {
                    Some(ev) => ev,
                    None => { registrations = None; continue; }
                },
                item = next_or_pending(&mut logs) => match convert(item, |e| json_event("log", e)) {
                    Some(ev) => ev,
                    None => { logs = None; continue; }
                },
                item = next_or_pending(&mut changes) => match convert(item, |e| json_event("config-change", e)) {
                    Some(ev) => ev,
                    None => { changes = None; continue; }
                },
                item = next_or_pending(&mut campaigns) => match convert(item, |e| json_event("campaign", e)) {
                    Some(ev) => ev,
                    None => { campaigns = None; continue; }
                },
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
