//! Outbound calls through Twilio: the REST create (`POST …/Calls.json`) with TwiML that
//! connects the media stream once the callee answers, and a status callback subscribed to
//! `initiated`, `ringing`, `answered` and `completed`. The callbacks and the stream drive the
//! call's [`Dialing`]: ringing, then the stream's `start` as the answer, or the final
//! `CallStatus` (`busy`, `no-answer`, `failed`, `canceled`, `completed`) as why not.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::frames::Start;
use super::rest::CallControl;
use super::{TwilioBridge, twiml};
use crate::bridges::one_time_token;
use crate::bridges::websocket::ServerSocket;
use crate::call::leg::{Dialing, Progress, Unanswered};
use crate::call::outbound::{self, Calling, Parties, PlaceError, PlaceRequest};
use crate::plugins::routing::display_number;

/// How long Twilio lets the callee's phone ring.
const RING_SECS: &str = "30";

/// What reaches a call being placed.
pub(super) enum Step {
    /// A status callback: `CallStatus` and the SIP response code when Twilio gives one.
    Status(String, Option<u16>),
    /// The callee answered and Twilio opened the stream.
    Stream(Box<(ServerSocket, Start)>),
}

/// A call being placed through Twilio.
struct TwilioDialing {
    steps: mpsc::UnboundedReceiver<Step>,
    control: Arc<CallControl>,
    cancelled: bool,
}

impl Dialing for TwilioDialing {
    type Answer = (ServerSocket, Start);

    async fn progress(&mut self) -> Progress<Self::Answer> {
        loop {
            let (status, code) = match self.steps.recv().await {
                Some(Step::Stream(answer)) => return Progress::Answered(*answer),
                Some(Step::Status(status, code)) => (status, code),
                None => {
                    return Progress::NotAnswered {
                        outcome: Unanswered::Failed,
                        code: None,
                        reason: "the bridge stopped".into(),
                    };
                }
            };
            let outcome = match status.as_str() {
                "ringing" => return Progress::Ringing,
                // Answered: the stream's `start` is the answer that counts.
                "queued" | "initiated" | "in-progress" => continue,
                "busy" => Unanswered::Busy,
                "no-answer" => Unanswered::NoAnswer,
                "canceled" => Unanswered::Cancelled,
                // Completed before the stream came: answered and hung up at once, or the
                // stream failed (its status callback says which).
                _ => Unanswered::Failed,
            };
            return Progress::NotAnswered {
                outcome,
                code,
                reason: format!("Twilio CallStatus {status}"),
            };
        }
    }

    fn cancel(&mut self) {
        if std::mem::replace(&mut self.cancelled, true) {
            return;
        }
        // Twilio answers with the `canceled` callback, which ends the ringing.
        let control = self.control.clone();
        tokio::spawn(async move {
            if let Err(e) = control.update(&[("Status", "canceled")]).await {
                tracing::warn!(error = %e, "cancelling the Twilio call failed");
            }
        });
    }
}

impl TwilioBridge {
    /// Place a call through Twilio and return its id once Twilio has it; the rest runs on its
    /// own task. `from` must be one of the account's numbers (`[bridges.twilio] numbers`).
    pub async fn place(self: &Arc<Self>, request: PlaceRequest) -> Result<String, PlaceError> {
        let checked = outbound::check(&self.calls, &request)?;
        let from = match &request.from {
            Some(from) => from.clone(),
            None => self.numbers.first().cloned().unwrap_or_default(),
        };
        if !self.numbers.contains(&from) {
            return Err(PlaceError::CallerId(from));
        }
        let to = request
            .to
            .trim()
            .strip_prefix("tel:")
            .unwrap_or(request.to.trim());
        let call_id = self.calls.new_call_id();
        let span = tracing::info_span!("call", call_id = %call_id);
        let parties = Parties {
            caller: from.clone(),
            callee: display_number(to),
            transport: "twilio".into(),
        };
        let calling = tracing::Instrument::instrument(
            outbound::start(&self.calls, call_id.clone(), checked, parties),
            span.clone(),
        )
        .await?;
        let token = one_time_token();
        let (steps_tx, steps) = mpsc::unbounded_channel();
        self.placing().insert(token.clone(), steps_tx);
        let base = &self.public_url;
        let twiml = twiml::connect_stream(
            &self.stream_url(),
            &[("token", &token)],
            &format!("{base}/twilio/stream-status"),
        );
        let status_url = format!("{base}/twilio/call-status/{token}");
        let form = [
            ("To", to),
            ("From", from.as_str()),
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
            Err(e) => {
                self.placing().remove(&token);
                calling.fail(format!("failed: {e}"), false);
                return Err(PlaceError::Carrier(e));
            }
        };
        tracing::info!(parent: &span, twilio_call_sid = %call_sid, to, "outbound call placed through Twilio");
        let control = Arc::new(CallControl {
            account: self.account.clone(),
            call_sid,
            http: self.http.clone(),
        });
        let bridge = self.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let dialing = TwilioDialing {
                    steps,
                    control: control.clone(),
                    cancelled: false,
                };
                bridge.ring(calling, dialing, control).await;
                bridge.placing().remove(&token);
            },
            span,
        ));
        Ok(call_id)
    }

    async fn ring(
        &self,
        mut calling: Calling,
        mut dialing: TwilioDialing,
        control: Arc<CallControl>,
    ) {
        match calling.ring(&mut dialing).await {
            Progress::Answered((socket, start)) => {
                self.run_answered(calling, socket, start, control).await;
            }
            Progress::NotAnswered {
                outcome,
                code,
                reason,
            } => calling.not_answered(outcome, code, reason).await,
            Progress::Ringing | Progress::EarlyMedia => unreachable!("ring returns a final step"),
        }
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
