//! An inbound call on any leg, in the three steps every entry path shares: route the dialled
//! number to an agent ([`offer`]), run the agent's `on-start` ([`Routed::start`]), then — once
//! the leg is up — connect the model and run the call ([`Ringing::run`]). SIP takes the steps
//! within one INVITE transaction; a media-stream bridge answers its webhook after the second
//! and gets its leg when the carrier opens the stream.
//!
//! Each step records its call events, and a call refused at any step is closed in the store
//! (`rejected`, then `ended`), so the entry path only tells its far end.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::brain::settings_for;
use super::events::Recorder;
use super::leg::Leg;
use super::{
    Accepted, Answered, CallCommand, CallDeps, CallSummary, LegFormat, Started, connect_inbound,
    created, events, run_answered, start_agent,
};
use crate::domain::events::{CallState, EventKind};
use crate::domain::{CallInfo, Direction};
use crate::model::{AudioFormat, ModelSession, SessionSettings};
use crate::plugins::AgentVersion;
use crate::plugins::routing::display_number;

/// An inbound call as its leg announces it.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The caller as the leg names them (a SIP URI, a phone number).
    pub caller: String,
    /// The dialled number or URI, routed to an agent.
    pub callee: String,
    /// "udp", "tcp", "twilio", ...
    pub transport: String,
    /// Headers handed to the agent (`X-` headers for SIP, custom parameters for a bridge).
    pub headers: Vec<(String, String)>,
    /// The leg's own id of the call (SIP Call-ID, Twilio CallSid).
    pub leg_call_id: String,
    /// What the caller's side passes to the agent (a web page's metadata); empty otherwise.
    pub metadata: String,
}

/// Why the call was refused, in SIP terms (bridges map the code to their own words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub reason: String,
}

/// A call routed to an agent version, before `on-start`.
pub struct Routed {
    deps: Arc<CallDeps>,
    recorder: Recorder,
    call_id: String,
    agent: Arc<AgentVersion>,
    info: CallInfo,
    commands: mpsc::Receiver<CallCommand>,
}

/// A call the agent accepted, waiting for its leg.
pub struct Ringing {
    routed: Routed,
    accepted: Accepted,
}

/// Record the call and route it: the agent version for the dialled number (pinned for the
/// call), or a refusal (404) when no agent serves it.
pub fn offer(deps: &Arc<CallDeps>, call_id: String, offer: Offer) -> Result<Routed, Refused> {
    let recorder = deps.events.recorder(&call_id);
    let caller = display_number(&offer.caller);
    let callee = display_number(&offer.callee);
    let resolved = deps.registry.resolve(&offer.callee);
    // What the caller's side passed, in the record as JSON when it is JSON.
    let metadata = (!offer.metadata.is_empty()).then(|| {
        serde_json::from_str(&offer.metadata)
            .unwrap_or_else(|_| serde_json::Value::String(offer.metadata.clone()))
    });
    recorder.record(created(
        "inbound",
        &caller,
        &callee,
        &offer.transport,
        resolved.as_ref().map(|r| &r.agent),
        metadata,
    ));
    let Some(resolved) = resolved else {
        return Err(refuse(&recorder, 404, "No agent serves this number"));
    };
    let commands = deps.register(CallSummary {
        id: call_id.clone(),
        sip_call_id: offer.leg_call_id,
        direction: "inbound".into(),
        caller: caller.clone(),
        callee: callee.clone(),
        transport: offer.transport.clone(),
        agent: Some(resolved.agent.name().to_string()),
        started_at_ms: events::now_ms(),
    });
    recorder.record(EventKind::State {
        state: CallState::Ringing,
    });
    Ok(Routed {
        deps: deps.clone(),
        recorder,
        agent: resolved.agent,
        info: CallInfo {
            call_id: call_id.clone(),
            direction: Direction::Inbound,
            caller,
            callee,
            transport: offer.transport,
            headers: offer.headers,
            metadata: offer.metadata,
        },
        call_id,
        commands,
    })
}

/// Close a refused call in the store.
fn refuse(recorder: &Recorder, code: u16, reason: &str) -> Refused {
    tracing::info!(code, reason, "rejecting the call");
    recorder.record(EventKind::Rejected {
        code,
        reason: reason.into(),
    });
    recorder.record(EventKind::Ended {
        reason: format!("rejected {code}"),
        abnormal: false,
        outcome: None,
    });
    Refused {
        code,
        reason: reason.into(),
    }
}

impl Routed {
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Refuse the call before the agent ran.
    pub fn refuse(self, code: u16, reason: &str) -> Refused {
        self.deps.forget(&self.call_id);
        refuse(&self.recorder, code, reason)
    }

    /// Run the agent's `on-start`; a rejection (or a failure under `on-start = "reject"`)
    /// refuses the call.
    pub async fn start(self) -> Result<Ringing, Refused> {
        let started = start_agent(
            &self.deps,
            &self.recorder,
            &self.agent,
            &self.call_id,
            &self.info,
        )
        .await;
        match started {
            Started::Run(accepted) => Ok(Ringing {
                routed: self,
                accepted: *accepted,
            }),
            Started::Reject(code, reason) => Err(self.refuse(code, &reason)),
        }
    }
}

impl Ringing {
    pub fn call_id(&self) -> &str {
        &self.routed.call_id
    }

    /// What the call records (for a leg that logs on its own).
    pub fn recorder(&self) -> &Recorder {
        &self.routed.recorder
    }

    /// Refuse the call after the agent accepted it (no media, no model, the leg never came).
    pub fn refuse(self, code: u16, reason: &str) -> Refused {
        self.routed.refuse(code, reason)
    }

    /// The model for the leg's audio (a codec, or a carrier's linear PCM): the agent's, or the
    /// local apology when the agent failed in `on-start` or the model cannot be reached (the
    /// second value says why). `None` when the model failed and `on-start = "reject"` wants the
    /// call refused (503) rather than answered with the apology.
    pub async fn connect_model(
        // `&mut`: the agent session is not `Sync`, so a shared borrow held across the await
        // would make the future not `Send`.
        &mut self,
        leg: impl Into<LegFormat>,
    ) -> Option<(ModelSession, Option<String>)> {
        let leg = leg.into();
        let r = &self.routed;
        connect_inbound(
            &r.deps,
            &r.recorder,
            self.accepted.fallback,
            &self.accepted.config,
            self.accepted.provider.as_ref(),
            leg,
        )
        .await
    }

    /// The model session settings from the agent's `on-start`, for a leg whose provider runs
    /// the model itself (OpenAI's SIP connector accepts the call with them; audio formats are
    /// the provider's business there). The second value says why the call runs on the fallback
    /// (the agent failed in `on-start`): then the provider only says the apology, as the
    /// greeting, since no local speech reaches a caller whose audio is not ours.
    pub fn session_settings(&self) -> (SessionSettings, Option<String>) {
        let formats = (AudioFormat::Pcmu8k, AudioFormat::Pcmu8k);
        let mut settings = settings_for(&self.accepted.config, formats);
        let failure = self.accepted.fallback.then(|| "agent failed".to_string());
        if failure.is_some() {
            let fallback = &self.routed.deps.registry.runtime().config().fallback;
            settings.greeting = Some(fallback.apology.clone());
        }
        (settings, failure)
    }

    /// Run the answered call to its end on `leg`.
    pub async fn run<L: Leg>(self, leg: L, model: ModelSession, failure: Option<String>) {
        let Routed {
            deps,
            recorder,
            call_id,
            commands,
            ..
        } = self.routed;
        run_answered(
            &deps,
            Answered {
                recorder,
                call_id,
                accepted: self.accepted,
                leg,
                model,
                failure,
                commands,
                outbound: false,
                detect_machine: false,
            },
        )
        .await;
    }
}
