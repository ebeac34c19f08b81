//! `switchboard:agent/call`: effects on the current call, queued in order and carried out after
//! the hook returns (before the actions the hook returns), and since 0.2.0 the call's context
//! and requests that are not actions (outcome, expectation hints).

use super::{HostCtx, not_yet};
use crate::domain::agent_event::{AgentRequest, Expectation};
use crate::domain::conversation::TurnLimits;
use crate::domain::{Action, CallInfo, Direction};
use crate::plugins::bindings::v0_1::switchboard::agent::call as call_v0_1;
use crate::plugins::bindings::v0_2::switchboard::agent::call;
use crate::plugins::bindings::v0_2::switchboard::agent::types::{
    CallContext, ExpectHint, Handoff, TurnOptions,
};
use crate::plugins::types::Error as GuestError;
use crate::plugins::validate::{caps, check_expectation, check_outcome, valid_dtmf};

type Answer = wasmtime::Result<Result<(), GuestError>>;

impl HostCtx {
    fn queue(&mut self, action: Action) -> Result<(), GuestError> {
        if self.effects.len() >= caps::MAX_ACTIONS {
            return Err(GuestError::Invalid(format!(
                "more than {} effects in one hook",
                caps::MAX_ACTIONS
            )));
        }
        self.effects.push(action);
        Ok(())
    }

    fn request(&mut self, request: AgentRequest) -> Result<(), GuestError> {
        if self.requests.len() >= caps::MAX_ACTIONS {
            return Err(GuestError::Invalid(format!(
                "more than {} requests in one hook",
                caps::MAX_ACTIONS
            )));
        }
        self.requests.push(request);
        Ok(())
    }

    fn check_text(text: &str) -> Result<(), GuestError> {
        if text.len() > caps::MAX_TEXT {
            return Err(GuestError::Invalid(format!(
                "text is over {} bytes",
                caps::MAX_TEXT
            )));
        }
        Ok(())
    }

    /// The call's info; before `on-start` (in `describe`) only the call id is known.
    fn call_info(&self) -> CallInfo {
        self.info.clone().unwrap_or_else(|| CallInfo {
            call_id: self.call_id.clone(),
            direction: Direction::Inbound,
            caller: String::new(),
            callee: String::new(),
            transport: String::new(),
            headers: Vec::new(),
            metadata: String::new(),
        })
    }
}

impl call::Host for HostCtx {
    async fn say(&mut self, text: String) -> Answer {
        Ok(Self::check_text(&text).and_then(|_| self.queue(Action::Say(text))))
    }

    async fn play(&mut self, name: String) -> Answer {
        Ok(Self::check_text(&name).and_then(|_| self.queue(Action::Play(name))))
    }

    async fn hangup(&mut self) -> wasmtime::Result<()> {
        // Over the cap the hang-up is still honoured: it replaces the last queued effect.
        if self.queue(Action::Hangup).is_err() {
            *self.effects.last_mut().expect("queue is full") = Action::Hangup;
        }
        Ok(())
    }

    async fn transfer(&mut self, target: String) -> Answer {
        if !self.ctx.manifest.allows_transfer(&target) {
            return Ok(Err(GuestError::NotAllowed(format!(
                "transfer target `{target}` is not in the manifest's [capabilities] transfer list"
            ))));
        }
        Ok(self.queue(Action::Transfer(target)))
    }

    async fn send_dtmf(&mut self, digits: String) -> Answer {
        if !valid_dtmf(&digits) {
            return Ok(Err(GuestError::Invalid(format!(
                "`{digits}` is not a DTMF string (0-9 * # A-D and `,`, at most {})",
                caps::MAX_DTMF
            ))));
        }
        Ok(self.queue(Action::SendDtmf(digits)))
    }

    async fn set_outcome(&mut self, outcome: String) -> Answer {
        Ok(check_outcome(&outcome)
            .map_err(GuestError::Invalid)
            .and_then(|_| self.request(AgentRequest::SetOutcome(outcome))))
    }

    async fn context(&mut self) -> wasmtime::Result<CallContext> {
        Ok(CallContext {
            info: (&self.call_info()).into(),
            handoff: self.handoff.as_ref().map(|h| Handoff {
                from_agent: h.from_agent.clone(),
                summary: h.summary.clone(),
                metadata: h.metadata.clone(),
            }),
        })
    }

    async fn headers(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.call_info().headers)
    }

    async fn expect(&mut self, hint: ExpectHint) -> Answer {
        let expectation = Expectation::from(hint);
        Ok(check_expectation(&expectation)
            .map_err(GuestError::Invalid)
            .and_then(|_| self.request(AgentRequest::Expect(expectation))))
    }

    async fn set_header(&mut self, _name: String, _value: String) -> Answer {
        Ok(Err(not_yet("call.set-header", 33)))
    }

    async fn warm_transfer(&mut self, _target: String, _briefing: String) -> Answer {
        Ok(Err(not_yet("call.warm-transfer", 33)))
    }

    async fn set_recording(&mut self, _on: bool) -> Answer {
        Ok(Err(not_yet("call.set-recording", 33)))
    }

    async fn set_sensitive(&mut self, _on: bool) -> Answer {
        Ok(Err(not_yet("call.set-sensitive", 33)))
    }

    async fn do_not_call(&mut self) -> Answer {
        Ok(self.request(AgentRequest::DoNotCall))
    }

    /// Fillers, reprompt, hang-up and maximum length take effect; the turn-taking settings
    /// (end of turn, interruptions, backchannels) are for a later release and are ignored.
    async fn set_turn_options(&mut self, options: TurnOptions) -> Answer {
        if options.end_of_turn_ms.is_some()
            || options.min_interruption_ms.is_some()
            || options.backchannels.is_some()
        {
            tracing::warn!(
                "call.set-turn-options: end-of-turn-ms, min-interruption-ms and backchannels are not implemented yet; ignored"
            );
        }
        if let Some(fillers) = &options.fillers {
            if fillers.len() > caps::MAX_FILLERS {
                return Ok(Err(GuestError::Invalid(format!(
                    "more than {} fillers",
                    caps::MAX_FILLERS
                ))));
            }
            if let Some(e) = fillers.iter().find_map(|f| Self::check_text(f).err()) {
                return Ok(Err(e));
            }
        }
        Ok(self.request(AgentRequest::TurnLimits(TurnLimits {
            fillers: options.fillers,
            reprompt_after_ms: options.reprompt_after_ms,
            hangup_after_ms: options.hangup_after_ms,
            max_call_ms: options.max_call_ms,
        })))
    }
}

/// 0.1.0 agents: the same functions, the same implementation.
impl call_v0_1::Host for HostCtx {
    async fn say(&mut self, text: String) -> Answer {
        call::Host::say(self, text).await
    }

    async fn play(&mut self, name: String) -> Answer {
        call::Host::play(self, name).await
    }

    async fn hangup(&mut self) -> wasmtime::Result<()> {
        call::Host::hangup(self).await
    }

    async fn transfer(&mut self, target: String) -> Answer {
        call::Host::transfer(self, target).await
    }

    async fn send_dtmf(&mut self, digits: String) -> Answer {
        call::Host::send_dtmf(self, digits).await
    }
}
