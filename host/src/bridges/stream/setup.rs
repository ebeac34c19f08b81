//! Setting an inbound call up on a carrier's media stream, the steps every carrier takes
//! alike: once the agent accepted the call and the carrier was told where to stream, the call
//! waits under a one-time token ([`Waiting`]) until a stream presents it; the stream is read up
//! to its `start` ([`read_start`]); then come the model, the leg and the call ([`answer`]). A
//! stream that cannot carry a call is closed with the reason ([`refuse`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use super::{Carrier, Framing, StreamLeg};
use crate::bridges::websocket::ServerSocket;
use crate::call::inbound::Ringing;
use crate::call::leg::LegFacts;
use crate::media::Codec;

/// A one-time token for a stream: 128 random bits, hex.
pub fn token() -> String {
    let mut bytes = [0u8; 16];
    // The system's randomness failing leaves no safe token to make.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness");
    hex::encode(bytes)
}

/// The headers of a call that reach the agent: `X-` headers only, at most 64.
pub fn agent_headers(headers: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-"))
        .take(64)
        .collect()
}

/// Calls waiting for their streams, each under its one-time token.
pub struct Waiting<P> {
    calls: Arc<Mutex<HashMap<String, P>>>,
}

impl<P: Send + 'static> Default for Waiting<P> {
    fn default() -> Self {
        Waiting {
            calls: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<P: Send + 'static> Waiting<P> {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, P>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `call` under a new token; a call no stream takes within `wait` goes to `expire`, so a
    /// stream that never comes does not hold the agent forever.
    pub fn hold<E, Fut>(&self, call: P, wait: Duration, expire: E) -> String
    where
        E: FnOnce(P) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let token = token();
        self.calls().insert(token.clone(), call);
        let calls = self.calls.clone();
        let expiring = token.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(wait).await;
                let call = calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&expiring);
                if let Some(call) = call {
                    expire(call).await;
                }
            }
            .in_current_span(),
        );
        token
    }

    /// The call waiting under `token`, taken.
    pub fn take(&self, token: &str) -> Option<P> {
        self.calls().remove(token)
    }

    /// The first waiting call `which` picks, taken.
    pub fn take_where(&self, which: impl Fn(&P) -> bool) -> Option<P> {
        let mut calls = self.calls();
        let token = calls
            .iter()
            .find(|(_, p)| which(p))
            .map(|(t, _)| t.clone())?;
        calls.remove(&token)
    }
}

/// Close a stream that cannot carry a call, saying why.
pub async fn refuse(mut socket: ServerSocket, why: &str) {
    tracing::warn!(why, "closing a media stream");
    let frame = CloseFrame {
        code: CloseCode::Policy,
        reason: close_reason(why).into(),
    };
    let _ = socket.close(Some(frame)).await;
}

/// `why` within the 123 bytes a close frame's reason may have (RFC 6455 §5.5), whole
/// characters only.
fn close_reason(why: &str) -> String {
    let mut end = why.len().min(123);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why[..end].to_string()
}

/// Read the stream up to its `start`, within `wait`: `start` reads each frame, `Ok(None)` for
/// one to pass over (`connected`), an error for one that has no place before the start.
pub async fn read_start<S>(
    socket: &mut ServerSocket,
    wait: Duration,
    mut start: impl FnMut(&Message) -> Result<Option<S>, String>,
) -> Result<S, String> {
    let read = async {
        loop {
            let frame = match socket.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(format!("the stream failed before its start: {e}")),
                None => return Err("the stream closed before its start".into()),
            };
            if frame.is_ping() || frame.is_pong() {
                continue;
            }
            if let Some(s) = start(&frame)? {
                return Ok(s);
            }
        }
    };
    tokio::time::timeout(wait, read)
        .await
        .unwrap_or_else(|_| Err(format!("no start within {} s", wait.as_secs())))
}

/// Connect the model for `codec` and run the accepted call on its stream. Without a model (and
/// with `on-start = "reject"`) the call is refused, the carrier hangs up and the stream closes.
pub async fn answer<C: Carrier, F: Framing + Clone>(
    mut ringing: Ringing,
    socket: ServerSocket,
    framing: F,
    carrier: C,
    facts: LegFacts,
    codec: Codec,
    media_timeout: Duration,
) {
    let Some((model, failure)) = ringing.connect_model(codec).await else {
        ringing.refuse(503, "model unavailable");
        if let Err(e) = carrier.hangup().await {
            tracing::warn!(error = %e, "hanging up through the carrier failed");
        }
        return refuse(socket, "model unavailable").await;
    };
    let rate = model.input_format.sample_rate();
    let leg = StreamLeg::start(socket, framing, carrier, facts, rate, media_timeout);
    ringing.run(leg, model, failure).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_x_headers_reach_the_agent() {
        let headers = [("X-Tenant", "acme"), ("Via", "x"), ("x-lower", "1")]
            .map(|(n, v)| (n.to_string(), v.to_string()));
        let kept = agent_headers(headers);
        assert_eq!(
            kept,
            [("X-Tenant", "acme"), ("x-lower", "1")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let many = (0..100).map(|i| (format!("X-{i}"), String::new()));
        assert_eq!(agent_headers(many).len(), 64);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(close_reason("no start"), "no start");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut), "{cut}");
    }

    #[tokio::test]
    async fn a_call_waits_under_its_token_until_taken_or_expired() {
        let waiting = Waiting::<u32>::default();
        let (expired_tx, mut expired) = tokio::sync::mpsc::unbounded_channel();
        let tx = expired_tx.clone();
        let a = waiting.hold(1, Duration::from_secs(60), move |n| async move {
            let _ = tx.send(n);
        });
        let b = waiting.hold(2, Duration::from_millis(10), move |n| async move {
            let _ = expired_tx.send(n);
        });
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(
            expired.recv().await,
            Some(2),
            "no stream came for the second"
        );
        assert_eq!(waiting.take(&b), None);
        assert_eq!(waiting.take_where(|n| *n == 3), None);
        assert_eq!(waiting.take_where(|n| *n == 1), Some(1));
        assert_eq!(waiting.take(&a), None, "a token works once");
    }
}
