//! Outbound calls through Telnyx: Call Control's dial (`POST /v2/calls` with the connection id,
//! and the media stream asked for at once, RTP mode, PCMU both ways), whose `client_state`
//! carries the call's one-time token. Telnyx sends `call.initiated`, then `call.answered` or
//! `call.hangup`, each with that `client_state` (Telnyx's API definition, "Dial": expected
//! webhooks; `CallHangup`: `hangup_cause`, `sip_hangup_cause`); the stream opens once the
//! callee answers, and its `start` (with the same `client_state`) is the answer that counts.

use std::sync::Arc;

use serde_json::json;

use super::TelnyxBridge;
use super::frames::Start;
use super::rest::{self, CallControl};
use crate::bridges::placing;
use crate::bridges::stream::Carrier;
use crate::bridges::websocket::ServerSocket;
use crate::call::leg::{Progress, Unanswered};
use crate::call::outbound::{Calling, PlaceError, PlaceRequest};

/// How long Telnyx lets the callee's phone ring.
const RING_SECS: u32 = 30;

/// What the answer of a call placed through Telnyx brings: its stream, read up to its `start`
/// (the start's sequence number and stream id too).
pub(super) struct Answer {
    pub socket: ServerSocket,
    pub sequence: u64,
    pub stream_id: String,
    pub start: Start,
}

/// The step a Call Control event is for a call being placed; `None` for the ones that change
/// nothing (`call.initiated`, `call.answered`: the stream's `start` is the answer).
pub(super) fn step(
    event_type: &str,
    hangup_cause: Option<&str>,
    sip_code: Option<u16>,
) -> Option<Progress<Answer>> {
    let outcome = match event_type {
        "call.hangup" => match (hangup_cause, sip_code) {
            (Some("user_busy"), _) | (_, Some(486 | 600)) => Unanswered::Busy,
            (Some("timeout" | "no_answer"), _) | (_, Some(408 | 480)) => Unanswered::NoAnswer,
            (Some("originator_cancel"), _) | (_, Some(487)) => Unanswered::Cancelled,
            (Some("call_rejected"), _) | (_, Some(603)) => Unanswered::Rejected,
            _ => Unanswered::Failed,
        },
        // Answered, but no audio will come.
        "streaming.failed" => Unanswered::Failed,
        _ => return None,
    };
    let reason = match hangup_cause {
        Some(cause) => format!("Telnyx {event_type} ({cause})"),
        None => format!("Telnyx {event_type}"),
    };
    Some(Progress::NotAnswered {
        outcome,
        code: sip_code,
        reason,
    })
}

impl TelnyxBridge {
    /// Place a call through Telnyx and return its id once Telnyx has it; the rest runs on its
    /// own task. `from` must be one of the account's numbers (`[bridges.telnyx] numbers`).
    pub async fn place(self: &Arc<Self>, request: PlaceRequest) -> Result<String, PlaceError> {
        let placed = placing::prepare(
            &self.calls,
            &self.placing,
            &self.numbers,
            &request,
            "telnyx",
        )
        .await?;
        let token = placed.token.as_str();
        let mut dial = rest::stream_params(&self.stream_url(), token);
        dial["connection_id"] = json!(self.connection_id);
        dial["to"] = json!(placed.to);
        dial["from"] = json!(placed.from);
        dial["timeout_secs"] = json!(RING_SECS);
        dial["webhook_url"] = json!(format!("{}/telnyx/webhook", self.public_url));
        let call_control_id = match self.account.dial(&self.http, dial).await {
            Ok(id) => id,
            Err(e) => return Err(placed.refused(e)),
        };
        tracing::info!(parent: &placed.span, telnyx_call_control_id = %call_control_id, to = %placed.to, "outbound call placed through Telnyx");
        // Telnyx answers a hang-up while it rings with `call.hangup` (`originator_cancel`).
        let bridge = self.clone();
        Ok(placed.ring_until_hung_up(
            self.control(call_control_id),
            move |calling, answer, control| async move {
                bridge.run_answered(calling, answer, control).await
            },
        ))
    }

    /// An outbound call whose callee answered: the model, then the call on its stream.
    async fn run_answered(&self, mut calling: Calling, answer: Answer, control: CallControl) {
        if let Err(why) = self.check_stream(&answer.start, &control) {
            let _ = control.hangup().await;
            calling.fail(format!("failed: {why}"), true);
            return crate::bridges::websocket::refuse(answer.socket, "telnyx", why).await;
        }
        tracing::info!(telnyx_stream_id = %answer.stream_id, "the callee answered");
        let (model, failure) = calling.connect_model(crate::media::Codec::Pcmu).await;
        let remote = calling.callee().to_string();
        let leg = self.leg(answer.socket, answer.sequence, control, remote, &model);
        calling.run(leg, model, failure).await;
    }
}
