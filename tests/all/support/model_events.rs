//! A model session's events as the provider tests read them: the next one within a limit, or
//! every one up to the first that matches.

use std::time::Duration;

use switchboard::model::{ModelEvent, ModelSession};

/// Next event, failing the test after `wait`.
pub async fn next(session: &mut ModelSession, wait: Duration) -> ModelEvent {
    tokio::time::timeout(wait, session.recv())
        .await
        .expect("event within timeout")
        .expect("session still open")
}

/// Collect events until one matches `stop` (inclusive), each within `wait`.
pub async fn until(
    session: &mut ModelSession,
    wait: Duration,
    stop: impl Fn(&ModelEvent) -> bool,
) -> Vec<ModelEvent> {
    let mut out = Vec::new();
    loop {
        let ev = next(session, wait).await;
        let done = stop(&ev);
        out.push(ev);
        if done {
            return out;
        }
    }
}

/// The end of a response.
pub fn is_done(ev: &ModelEvent) -> bool {
    matches!(ev, ModelEvent::ResponseDone { .. })
}
