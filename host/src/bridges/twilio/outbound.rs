//! Outbound calls through Twilio: the REST create (`POST …/Calls.json`) with TwiML that
//! connects the media stream once the callee answers, and a status callback subscribed to
//! `initiated`, `ringing`, `answered` and `completed`. The callbacks and the stream drive the
//! call's [`Dialing`]: ringing, then the stream's `start` as the answer, or the final
//! `CallStatus` (`busy`, `no-answer`, `failed`, `canceled`, `completed`) as why not.

use std::sync::Arc;

use super::frames::Start;
use super::rest::CallControl;
use super::{TwilioBridge, twiml};
use crate::bridges::placing;
use crate::bridges::websocket::ServerSocket;
use crate::call::leg::{Progress, Unanswered};
use crate::call::outbound::{PlaceError, PlaceRequest};

/// How long Twilio lets the callee's phone ring.
const RING_SECS: &str = "30";

/// What the answer of a call placed through Twilio brings: its stream.
pub(super) type Answer = (ServerSocket, Start);

/// The step a status callback's `CallStatus` (and SIP response code, when Twilio gives one) is
/// for the call being placed; `None` for the ones that change nothing.
pub(super) fn step(status: &str, code: Option<u16>) -> Option<Progress<Answer>> {
    let outcome = match status {
        "ringing" => return Some(Progress::Ringing),
        // Answered: the stream's `start` is the answer that counts.
        "queued" | "initiated" | "in-progress" => return None,
        "busy" => Unanswered::Busy,
        "no-answer" => Unanswered::NoAnswer,
        "canceled" => Unanswered::Cancelled,
        // Completed before the stream came: answered and hung up at once, or the stream
        // failed (its status callback says which).
        _ => Unanswered::Failed,
    };
    Some(Progress::NotAnswered {
        outcome,
        code,
        reason: format!("Twilio CallStatus {status}"),
    })
}

impl TwilioBridge {
    /// Place a call through Twilio and return its id once Twilio has it; the rest runs on its
    /// own task. `from` must be one of the account's numbers (`[bridges.twilio] numbers`).
    pub async fn place(self: &Arc<Self>, request: PlaceRequest) -> Result<String, PlaceError> {
        let placed = placing::prepare(
            &self.calls,
            &self.placing,
            &self.numbers,
            &request,
            "twilio",
        )
        .await?;
        let token = placed.token.as_str();
        let base = &self.public_url;
        let twiml = twiml::connect_stream(
            &self.stream_url(),
            &[("token", token)],
            &format!("{base}/twilio/stream-status"),
        );
        let status_url = format!("{base}/twilio/call-status/{token}");
        let form = [
            ("To", placed.to.as_str()),
            ("From", placed.from.as_str()),
            ("Twiml", twiml.as_str()),
            ("Timeout", RING_SECS),
            ("StatusCallback", status_url.as_str()),
            ("StatusCallbackMethod", "POST"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ];
        let call_sid = match self.create_call(&form).await {
            Ok(sid) => sid,
            Err(e) => return Err(placed.refused(e)),
        };
        tracing::info!(parent: &placed.span, twilio_call_sid = %call_sid, to = %placed.to, "outbound call placed through Twilio");
        let control = Arc::new(CallControl {
            account: self.account.clone(),
            call_sid,
            http: self.http.clone(),
        });
        // Twilio answers with the `canceled` callback, which ends the ringing.
        let cancel = {
            let control = control.clone();
            async move { control.update(&[("Status", "canceled")]).await }
        };
        let bridge = self.clone();
        Ok(
            placed.ring(cancel, move |calling, (socket, start)| async move {
                bridge.run_answered(calling, socket, start, control).await
            }),
        )
    }

    /// `POST /Accounts/{AccountSid}/Calls.json`; the new call's SID.
    async fn create_call(&self, form: &[(&str, &str)]) -> Result<String, String> {
        let created = self.account.post(&self.http, "Calls.json", form).await?;
        created["sid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("Twilio created a call without a sid: {created}"))
    }
}
