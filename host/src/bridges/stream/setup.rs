//! Setting an inbound call up on a carrier's media stream, the steps every carrier takes
//! alike: once the agent accepted the call and the carrier was told where to stream, the call
//! waits under a one-time token ([`PendingCalls`](crate::bridges::pending::PendingCalls))
//! until a stream presents it; the stream is read up to its `start` ([`read_start`]); then come
//! the model, the leg and the call ([`answer`]).

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Carrier, Framing, StreamLeg};
use crate::bridges::websocket::{self, ServerSocket};
use crate::call::LegFormat;
use crate::call::inbound::Ringing;
use crate::call::leg::LegFacts;

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

/// Connect the model for `format` and run the accepted call on its stream. Without a model (and
/// with `on-start = "reject"`) the call is refused, the carrier hangs up and the stream closes.
pub async fn answer<C: Carrier, F: Framing + Clone>(
    mut ringing: Ringing,
    socket: ServerSocket,
    framing: F,
    carrier: C,
    facts: LegFacts,
    format: LegFormat,
    media_timeout: Duration,
) {
    let Some((model, failure)) = ringing.connect_model(format).await else {
        ringing.refuse(503, "model unavailable");
        if let Err(e) = carrier.hangup().await {
            tracing::warn!(error = %e, carrier = %facts.transport, "hanging up through the carrier failed");
        }
        return websocket::refuse(socket, &facts.transport, "model unavailable").await;
    };
    let rate = model.input_format.sample_rate();
    let leg = StreamLeg::start(socket, framing, carrier, facts, rate, media_timeout);
    ringing.run(leg, model, failure).await;
}
