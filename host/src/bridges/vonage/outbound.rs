//! Outbound calls through Vonage: the Voice API's create call (`POST /v1/calls`, Vonage's API
//! reference "Create an outbound call": `to`, `from`, `ncco`, `event_url`, `event_method`,
//! `ringing_timer`; 201 with `uuid`, `status`, `direction`, `conversation_uuid`) with our NCCO
//! that connects the callee to the media socket once answered. The call's events reach
//! `event_url`, which carries the call's one-time token; their `status` (`started`, `ringing`,
//! `answered`, then `busy`, `timeout`, `unanswered`, `rejected`, `cancelled`, `failed` or
//! `completed`) drives the ringing, and the socket's `websocket:connected` (with the token in its
//! headers) is the answer that counts.

use std::sync::Arc;

use serde_json::json;

use super::frames::Connected;
use super::rest::CallControl;
use super::{VonageBridge, ncco};
use crate::bridges::placing;
use crate::bridges::stream::Carrier;
use crate::bridges::websocket::ServerSocket;
use crate::call::leg::{Progress, Unanswered};
use crate::call::outbound::{Calling, PlaceError, PlaceRequest};

/// How long Vonage lets the callee's phone ring.
const RING_SECS: u32 = 30;

/// What the answer of a call placed through Vonage brings: its socket and first message.
pub(super) type Answer = (ServerSocket, Connected);

/// The step an event's `status` is for a call being placed; `None` for the ones that change
/// nothing.
pub(super) fn step(status: &str) -> Option<Progress<Answer>> {
    let outcome = match status {
        "ringing" => return Some(Progress::Ringing),
        // Answered: the socket's first message is the answer that counts.
        "started" | "answered" => return None,
        "busy" => Unanswered::Busy,
        "timeout" | "unanswered" => Unanswered::NoAnswer,
        "rejected" => Unanswered::Rejected,
        "cancelled" => Unanswered::Cancelled,
        "failed" | "completed" => Unanswered::Failed,
        _ => return None,
    };
    Some(Progress::NotAnswered {
        outcome,
        code: None,
        reason: format!("Vonage status {status}"),
    })
}

/// A Vonage endpoint for `to`: a SIP URI as it is, a number as digits (Vonage writes E.164
/// numbers without the `+`).
fn endpoint(to: &str) -> serde_json::Value {
    if to.starts_with("sip:") || to.starts_with("sips:") {
        json!({"type": "sip", "uri": to})
    } else {
        json!({"type": "phone", "number": to.trim_start_matches('+')})
    }
}

impl VonageBridge {
    /// Place a call through Vonage and return its id once Vonage has it; the rest runs on its
    /// own task. `from` must be one of the account's numbers (`[bridges.vonage] numbers`).
    pub async fn place(self: &Arc<Self>, request: PlaceRequest) -> Result<String, PlaceError> {
        let placed = placing::prepare(
            &self.calls,
            &self.placing,
            &self.numbers,
            &request,
            "vonage",
        )
        .await?;
        let token = placed.token.as_str();
        let event_url = format!("{}/vonage/event?call={token}", self.public_url);
        let create = json!({
            "to": [endpoint(&placed.to)],
            "from": {"type": "phone", "number": placed.from.trim_start_matches('+')},
            "ncco": ncco::connect_socket(&self.socket_url(), token, &event_url),
            "event_url": [event_url],
            "event_method": "POST",
            "ringing_timer": RING_SECS,
        });
        let uuid = match self.app.create_call(&self.http, create).await {
            Ok(uuid) => uuid,
            Err(e) => return Err(placed.refused(e)),
        };
        tracing::info!(parent: &placed.span, vonage_uuid = %uuid, to = %placed.to, "outbound call placed through Vonage");
        // Vonage reports the call `cancelled` once it stops ringing.
        let bridge = self.clone();
        Ok(placed.ring_until_hung_up(
            self.control(uuid),
            move |calling, answer, control| async move {
                bridge.run_answered(calling, answer, control).await
            },
        ))
    }

    /// An outbound call whose callee answered: the model, then the call on its socket.
    async fn run_answered(&self, mut calling: Calling, answer: Answer, control: CallControl) {
        let (socket, connected) = answer;
        if let Err(why) = super::check_socket(&connected) {
            let _ = control.hangup().await;
            calling.fail(format!("failed: {why}"), true);
            return super::refuse_socket(socket, &why).await;
        }
        let (model, failure) = calling.connect_model(super::FORMAT).await;
        let remote = calling.callee().to_string();
        let leg = self.leg(socket, control, remote, &model);
        calling.run(leg, model, failure).await;
    }
}
