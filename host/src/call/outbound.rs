//! Outbound calls: pick the agent, run its on-start (direction outbound, the requester's
//! metadata), offer SDP, place the INVITE, and on answer run the same call actor as inbound.
//! Busy, no answer, rejection and failure end the call with a `not-answered` event.
//!
//! Everything that is the requester's mistake (unknown agent or trunk, bad number or URI,
//! oversized metadata) is found before anything is recorded or sent.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::events::{self, Recorder};
use super::leg::{Dialing, Progress, Unanswered};
use super::sip_leg::{SipAnswer, SipLeg};
use super::{
    Accepted, Answered, CallCommand, CallDeps, CallSummary, Started, connect_for, created,
    media_config, run_answered, start_agent,
};
use crate::domain::agent_event::{CallProgress, Notification};
use crate::domain::events::EventKind;
use crate::domain::{Action, CallInfo, Direction, EndReason};
use crate::media::{PendingMedia, sdp};
use crate::plugins::AgentVersion;
use crate::plugins::routing::{display_number, normalize};
use crate::plugins::session::caps::MAX_METADATA;
use crate::sip::{OutboundCall, OutgoingCall, SipEndpoint, SipError};

/// A call to place.
#[derive(Debug, Clone, Default)]
pub struct PlaceRequest {
    /// A full `sip:`/`sips:` URI, or a number (then `trunk` is required). The API accepts
    /// only these forms (a `tel:` URI arrives as its number), within the sizes it documents,
    /// and resolves `trunk` (`via`, or the trunk marked default) before calling [`place`].
    pub to: String,
    /// Trunk from `[sip] trunks` to route through.
    pub trunk: Option<String>,
    /// Our caller id (user part); also routes the call to an agent when neither `agent` nor
    /// `number` is given.
    pub from: Option<String>,
    /// The agent to run, by name.
    pub agent: Option<String>,
    /// Route by this number as if it had been dialled in.
    pub number: Option<String>,
    /// Free-form JSON handed to the agent's on-start (`call-info.metadata`) and stored.
    pub metadata: Option<Value>,
}

/// Why a call was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("no agent named `{0}` is loaded")]
    UnknownAgent(String),
    #[error("`{0}` is not a routable number")]
    BadNumber(String),
    #[error("no agent serves `{0}` and there is no default agent")]
    NoRoute(String),
    #[error("metadata is {0} bytes of JSON; the cap is {MAX_METADATA}")]
    MetadataTooLarge(usize),
    /// Unknown trunk, or a number or URI that cannot be called.
    #[error(transparent)]
    Target(SipError),
    #[error("the agent declined the call: {code} {reason}")]
    AgentDeclined { code: u16, reason: String },
    #[error("the agent failed in on-start (see the call's agent-fault event)")]
    AgentFailed,
    #[error("no media port available: {0}")]
    NoMediaPort(String),
    #[error("the INVITE could not be sent: {0}")]
    Signalling(SipError),
}

/// Place a call and return its id once the INVITE is on its way; the rest of the call runs on
/// its own task, recorded as call events.
pub async fn place(
    deps: &Arc<CallDeps>,
    sip: &SipEndpoint,
    request: PlaceRequest,
) -> Result<String, PlaceError> {
    let agent = choose_agent(deps, &request)?;
    let metadata = match &request.metadata {
        Some(v) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA {
                return Err(PlaceError::MetadataTooLarge(text.len()));
            }
            text
        }
        None => String::new(),
    };
    let mut invite = OutboundCall {
        to: request.to.trim().to_string(),
        trunk: request.trunk.clone(),
        from: request.from.clone(),
        ..OutboundCall::default()
    };
    let target = sip.check_call(&invite).map_err(PlaceError::Target)?;

    let call_id = deps.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id);
    let recorder = deps.events.recorder(&call_id);
    let caller = target.from_user.clone();
    let callee = display_number(&target.uri);
    let transport = target.transport.to_string();
    recorder.record(created(
        "outbound",
        &caller,
        &callee,
        &transport,
        Some(&agent),
        request.metadata.clone(),
    ));
    let commands = deps.register(CallSummary {
        id: call_id.clone(),
        sip_call_id: String::new(),
        direction: "outbound".into(),
        caller: caller.clone(),
        callee: callee.clone(),
        agent: Some(agent.name().to_string()),
        started_at_ms: events::now_ms(),
    });
    let info = CallInfo {
        call_id: call_id.clone(),
        direction: Direction::Outbound,
        caller,
        callee,
        transport,
        headers: Vec::new(),
        metadata,
    };
    let fail = |recorder: &Recorder, reason: String| {
        recorder.record(EventKind::Ended {
            reason,
            abnormal: false,
            outcome: None,
        });
        deps.forget(&call_id);
    };
    let accepted = match start_agent(deps, &recorder, &agent, &call_id, &info)
        .instrument(span.clone())
        .await
    {
        // Placing a call only to apologise helps no one: an agent that failed in on-start
        // does not call out.
        Started::Run(accepted) if accepted.fallback => {
            fail(&recorder, "failed: agent failed in on-start".into());
            return Err(PlaceError::AgentFailed);
        }
        Started::Run(accepted) => accepted,
        Started::Reject(code, reason) => {
            recorder.record(EventKind::Rejected {
                code,
                reason: reason.clone(),
            });
            fail(&recorder, format!("rejected {code}"));
            return Err(PlaceError::AgentDeclined { code, reason });
        }
    };
    // The codec (and with it the rate the model hears) is known only from the answer.
    let pending = match PendingMedia::bind(&deps.ports, media_config(deps, &call_id, 8000)) {
        Ok(p) => p,
        Err(e) => {
            fail(&recorder, format!("failed: {e}"));
            return Err(PlaceError::NoMediaPort(e.to_string()));
        }
    };
    let local = sdp::LocalMedia::new(
        deps.media_ip,
        pending.port(),
        deps.codecs.clone(),
        events::now_ms(),
    );
    invite.sdp_offer = sdp::create_offer(&local);
    let outgoing = match sip.place_call(invite).instrument(span.clone()).await {
        Ok(o) => o,
        Err(e) => {
            fail(&recorder, format!("failed: {e}"));
            return Err(PlaceError::Signalling(e));
        }
    };
    tracing::info!(parent: &span, sip_call_id = outgoing.call_id(), to = %target.uri, "outbound call placed");
    let deps = deps.clone();
    let id = call_id.clone();
    tokio::spawn(
        async move {
            let ringing = Ringing {
                recorder,
                call_id: id,
                accepted: *accepted,
                pending,
                local,
                commands,
                transport: target.transport.to_string(),
                remote: target.uri.to_string(),
            };
            ringing.run(&deps, outgoing).await;
        }
        .instrument(span),
    );
    Ok(call_id)
}

/// The agent: by name, else routed by `number`, else by `from`, else the default agent.
fn choose_agent(deps: &CallDeps, request: &PlaceRequest) -> Result<Arc<AgentVersion>, PlaceError> {
    if let Some(name) = &request.agent {
        return deps
            .registry
            .snapshot()
            .agents
            .get(name)
            .cloned()
            .ok_or_else(|| PlaceError::UnknownAgent(name.clone()));
    }
    let key = match (&request.number, &request.from) {
        (Some(n), _) => {
            if normalize(n).is_none() {
                return Err(PlaceError::BadNumber(n.clone()));
            }
            n.clone()
        }
        (None, Some(from)) => from.clone(),
        (None, None) => String::new(),
    };
    deps.registry
        .resolve(&key)
        .map(|r| r.agent)
        .ok_or(PlaceError::NoRoute(key))
}

/// An accepted outbound call waiting for the callee.
struct Ringing {
    recorder: Recorder,
    call_id: String,
    accepted: Accepted,
    pending: PendingMedia,
    local: sdp::LocalMedia,
    commands: mpsc::Receiver<CallCommand>,
    /// The leg's facts once answered.
    transport: String,
    remote: String,
}

impl Ringing {
    async fn run(mut self, deps: &Arc<CallDeps>, mut outgoing: OutgoingCall) {
        let (outcome, code, reason) = match self.ring(&mut outgoing).await {
            Progress::Answered(SipAnswer { dialog, remote_sdp }) => {
                let answer = remote_sdp.unwrap_or_default();
                match sdp::process_answer(&answer, &self.local) {
                    Ok(negotiated) => {
                        self.connect(deps, negotiated, dialog).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unusable SDP answer; hanging up");
                        let _ = dialog.hangup().await;
                        (Unanswered::Failed, None, format!("SDP answer: {e}"))
                    }
                }
            }
            Progress::NotAnswered {
                outcome,
                code,
                reason,
            } => (outcome, code, reason),
            Progress::Ringing | Progress::EarlyMedia => unreachable!("ring returns a final step"),
        };
        self.not_answered(deps, outcome, code, reason).await;
    }

    /// Record the far end's progress until it answers or not; the API may hang up meanwhile.
    async fn ring<D: Dialing>(&mut self, dialing: &mut D) -> Progress<D::Answer> {
        loop {
            tokio::select! {
                progress = dialing.progress() => match progress {
                    Progress::Ringing => {
                        self.progress("ringing");
                        self.tell_agent(CallProgress::Ringing, dialing).await;
                    }
                    Progress::EarlyMedia => {
                        self.progress("early-media");
                        self.tell_agent(CallProgress::EarlyMedia, dialing).await;
                    }
                    last => return last,
                },
                command = self.commands.recv() => match command {
                    Some(CallCommand::Hangup | CallCommand::Cancelled) | None => dialing.cancel(),
                    Some(CallCommand::Transfer(target)) => {
                        tracing::warn!(%target, "transfer requested before answer; ignored");
                    }
                },
            }
        }
    }

    /// The agent hears how the call is going; before the answer, a hang-up is all it can do.
    async fn tell_agent(&mut self, progress: CallProgress, dialing: &mut impl Dialing) {
        match self
            .accepted
            .agent
            .notify(&Notification::Progress(progress))
            .await
        {
            Ok(actions) if actions.contains(&Action::Hangup) => dialing.cancel(),
            Ok(actions) if !actions.is_empty() => {
                tracing::debug!(?actions, "actions before the answer are not carried out");
            }
            Ok(_) => {}
            Err(fault) => self.recorder.record(EventKind::AgentFault { fault }),
        }
    }

    fn progress(&self, status: &str) {
        self.recorder.record(EventKind::Progress {
            status: status.into(),
        });
    }

    async fn connect(
        mut self,
        deps: &Arc<CallDeps>,
        negotiated: crate::media::NegotiatedMedia,
        dialog: crate::sip::Dialog,
    ) {
        let codec = negotiated.codec;
        let (model, failure) = connect_for(
            deps,
            &self.recorder,
            self.accepted.fallback,
            &self.accepted.config,
            codec,
        )
        .await;
        self.pending
            .set_inbound_rate(model.input_format.sample_rate());
        let media = match self.pending.start(&negotiated) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "starting media failed; hanging up");
                let _ = dialog.hangup().await;
                let reason = format!("media: {e}");
                self.recorder.record(EventKind::Ended {
                    reason: format!("failed: {reason}"),
                    abnormal: true,
                    outcome: None,
                });
                deps.forget(&self.call_id);
                return;
            }
        };
        let leg = SipLeg::new(
            dialog,
            media,
            self.local,
            codec,
            self.transport,
            self.remote,
        );
        run_answered(
            deps,
            Answered {
                recorder: self.recorder,
                call_id: self.call_id,
                accepted: self.accepted,
                leg,
                model,
                failure,
                commands: self.commands,
                outbound: true,
            },
        )
        .await;
    }

    async fn not_answered(
        mut self,
        deps: &CallDeps,
        outcome: Unanswered,
        code: Option<u16>,
        reason: String,
    ) {
        let outcome = outcome.as_str();
        tracing::info!(outcome, ?code, %reason, "outbound call not answered");
        self.recorder.record(EventKind::NotAnswered {
            outcome: outcome.into(),
            code,
            reason: reason.clone(),
        });
        let end = match outcome {
            "cancelled" => EndReason::AgentHangup,
            _ => EndReason::Failed(outcome.into()),
        };
        if let Err(fault) = self.accepted.agent.end(&end).await {
            self.recorder.record(EventKind::AgentFault { fault });
        }
        self.recorder.record(EventKind::Ended {
            reason: outcome.into(),
            abnormal: outcome == "failed",
            outcome: None,
        });
        deps.forget(&self.call_id);
    }
}
