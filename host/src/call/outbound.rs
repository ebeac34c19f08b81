//! Outbound calls on any leg, in the steps every entry path shares: check the request and pick
//! the agent ([`check`]), record the call and run the agent's on-start (direction outbound, the
//! requester's metadata: [`start`]), ring the far end through the leg's [`Dialing`]
//! ([`Calling::ring`]), then run the same call as inbound ([`Calling::run`]). Busy, no answer,
//! rejection and failure end the call with a `not-answered` event. SIP places its INVITE in
//! `sip_outbound`.
//!
//! Everything that is the requester's mistake (unknown agent or trunk, bad number or URI,
//! oversized metadata) is found before anything is recorded or sent.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use super::events::{self, Recorder};
use super::leg::{Dialing, Leg, Progress, Unanswered};
use super::{
    Accepted, Answered, CallCommand, CallDeps, CallSummary, Started, connect_for, created,
    run_answered, start_agent,
};
use crate::call::LegFormat;
use crate::domain::agent_event::{CallProgress, Notification};
use crate::domain::events::EventKind;
use crate::domain::{Action, CallInfo, Direction, EndReason};
use crate::model::ModelSession;
use crate::plugins::AgentVersion;
use crate::plugins::routing::normalize;
use crate::plugins::session::caps::MAX_METADATA;
use crate::sip::SipError;

/// A call to place.
#[derive(Debug, Clone, Default)]
pub struct PlaceRequest {
    /// A full `sip:`/`sips:` URI, or a number (then `trunk` is required). The API accepts
    /// only these forms (a `tel:` URI arrives as its number), within the sizes it documents,
    /// and resolves `trunk` (`via`, or the trunk marked default) before calling `place`.
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
    /// Run answering-machine detection once answered: the verdict and the voicemail beep are
    /// recorded (`machine-detection`, `voicemail-beep`) and reach the agent as events; the
    /// greeting never waits for them.
    pub detect_machine: bool,
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
    /// The caller id is not one the leg may call from.
    #[error("`{0}` is not a caller id of this account")]
    CallerId(String),
    #[error("the agent declined the call: {code} {reason}")]
    AgentDeclined { code: u16, reason: String },
    #[error("the agent failed in on-start (see the call's agent-fault event)")]
    AgentFailed,
    #[error("no media port available: {0}")]
    NoMediaPort(String),
    #[error("the INVITE could not be sent: {0}")]
    Signalling(SipError),
    /// A carrier refused to place the call.
    #[error("the carrier did not place the call: {0}")]
    Carrier(String),
}

/// A request that passed the checks: the agent to run and the metadata it gets.
pub struct Checked {
    agent: Arc<AgentVersion>,
    metadata: Option<Value>,
    /// The metadata as the agent reads it (JSON text, empty for none).
    metadata_text: String,
    detect_machine: bool,
}

/// Check what the requester asked, before anything is recorded: the agent and the metadata.
pub fn check(deps: &CallDeps, request: &PlaceRequest) -> Result<Checked, PlaceError> {
    let agent = choose_agent(deps, request)?;
    let metadata_text = match &request.metadata {
        Some(v) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA {
                return Err(PlaceError::MetadataTooLarge(text.len()));
            }
            text
        }
        None => String::new(),
    };
    Ok(Checked {
        agent,
        metadata: request.metadata.clone(),
        metadata_text,
        detect_machine: request.detect_machine,
    })
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

/// Who calls whom, as the leg names them.
pub struct Parties {
    /// Our caller id.
    pub caller: String,
    /// The far end (a number or URI), as recorded.
    pub callee: String,
    /// "udp", "tcp", "twilio", ...
    pub transport: String,
}

/// An outbound call the agent accepted, from placing it to its end.
pub struct Calling {
    deps: Arc<CallDeps>,
    recorder: Recorder,
    call_id: String,
    /// The far end, as recorded.
    callee: String,
    accepted: Accepted,
    commands: mpsc::Receiver<CallCommand>,
    detect_machine: bool,
}

/// Record the call and run the agent's on-start. An agent that declines or fails refuses the
/// call (placing a call only to apologise helps no one); its record is then closed.
pub async fn start(
    deps: &Arc<CallDeps>,
    call_id: String,
    checked: Checked,
    parties: Parties,
) -> Result<Calling, PlaceError> {
    let recorder = deps.events.recorder(&call_id);
    let agent = checked.agent;
    recorder.record(created(
        "outbound",
        &parties.caller,
        &parties.callee,
        &parties.transport,
        Some(&agent),
        checked.metadata,
    ));
    let commands = deps.register(CallSummary {
        id: call_id.clone(),
        sip_call_id: String::new(),
        direction: "outbound".into(),
        caller: parties.caller.clone(),
        callee: parties.callee.clone(),
        transport: parties.transport.clone(),
        agent: Some(agent.name().to_string()),
        started_at_ms: events::now_ms(),
    });
    let info = CallInfo {
        call_id: call_id.clone(),
        direction: Direction::Outbound,
        caller: parties.caller,
        callee: parties.callee.clone(),
        transport: parties.transport,
        headers: Vec::new(),
        metadata: checked.metadata_text,
    };
    let fail = |reason: String| {
        recorder.record(EventKind::Ended {
            reason,
            abnormal: false,
            outcome: None,
        });
        deps.forget(&call_id);
    };
    match start_agent(deps, &recorder, &agent, &call_id, &info).await {
        Started::Run(accepted) if accepted.fallback => {
            fail("failed: agent failed in on-start".into());
            Err(PlaceError::AgentFailed)
        }
        Started::Run(accepted) => Ok(Calling {
            deps: deps.clone(),
            recorder,
            call_id,
            callee: parties.callee,
            accepted: *accepted,
            commands,
            detect_machine: checked.detect_machine,
        }),
        Started::Reject(code, reason) => {
            recorder.record(EventKind::Rejected {
                code,
                reason: reason.clone(),
            });
            fail(format!("rejected {code}"));
            Err(PlaceError::AgentDeclined { code, reason })
        }
    }
}

impl Calling {
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn callee(&self) -> &str {
        &self.callee
    }

    /// The call could not be placed or could not go on: close its record.
    pub fn fail(self, reason: String, abnormal: bool) {
        self.recorder.record(EventKind::Ended {
            reason,
            abnormal,
            outcome: None,
        });
        self.deps.forget(&self.call_id);
    }

    /// Record the far end's progress until it answers or not; the API may hang up meanwhile.
    pub async fn ring<D: Dialing>(&mut self, dialing: &mut D) -> Progress<D::Answer> {
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
                    Some(
                        CallCommand::Hangup | CallCommand::Goodbye(_) | CallCommand::Cancelled,
                    )
                    | None => dialing.cancel(),
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

    /// The model for the answered leg's format, or the local apology when it cannot be reached.
    pub async fn connect_model(
        &mut self,
        leg: impl Into<LegFormat>,
    ) -> (ModelSession, Option<String>) {
        connect_for(
            &self.deps,
            &self.recorder,
            self.accepted.fallback,
            &self.accepted.config,
            self.accepted.provider.as_ref(),
            leg.into(),
        )
        .await
    }

    /// Run the answered call to its end on `leg`.
    pub async fn run<L: Leg>(self, leg: L, model: ModelSession, failure: Option<String>) {
        run_answered(
            &self.deps,
            Answered {
                recorder: self.recorder,
                call_id: self.call_id,
                accepted: self.accepted,
                leg,
                model,
                failure,
                commands: self.commands,
                outbound: true,
                detect_machine: self.detect_machine,
            },
        )
        .await;
    }

    /// The far end did not answer: tell the agent, close the record.
    pub async fn not_answered(mut self, outcome: Unanswered, code: Option<u16>, reason: String) {
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
        self.deps.forget(&self.call_id);
    }
}
