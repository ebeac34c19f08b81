//! `switchboard:agent/call`: effects on the current call, queued in order and carried out after
//! the hook returns (before the actions the hook returns).

use super::HostCtx;
use crate::domain::Action;
use crate::plugins::bindings::switchboard::agent::call;
use crate::plugins::types::Error as GuestError;
use crate::plugins::validate::{caps, valid_dtmf};

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

    fn check_text(text: &str) -> Result<(), GuestError> {
        if text.len() > caps::MAX_TEXT {
            return Err(GuestError::Invalid(format!(
                "text is over {} bytes",
                caps::MAX_TEXT
            )));
        }
        Ok(())
    }
}

impl call::Host for HostCtx {
    async fn say(&mut self, text: String) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(Self::check_text(&text).and_then(|_| self.queue(Action::Say(text))))
    }

    async fn play(&mut self, name: String) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(Self::check_text(&name).and_then(|_| self.queue(Action::Play(name))))
    }

    async fn hangup(&mut self) -> wasmtime::Result<()> {
        // Over the cap the hang-up is still honoured: it replaces the last queued effect.
        if self.queue(Action::Hangup).is_err() {
            *self.effects.last_mut().expect("queue is full") = Action::Hangup;
        }
        Ok(())
    }

    async fn transfer(&mut self, target: String) -> wasmtime::Result<Result<(), GuestError>> {
        if !self.ctx.manifest.allows_transfer(&target) {
            return Ok(Err(GuestError::NotAllowed(format!(
                "transfer target `{target}` is not in the manifest's [capabilities] transfer list"
            ))));
        }
        Ok(self.queue(Action::Transfer(target)))
    }

    async fn send_dtmf(&mut self, digits: String) -> wasmtime::Result<Result<(), GuestError>> {
        if !valid_dtmf(&digits) {
            return Ok(Err(GuestError::Invalid(format!(
                "`{digits}` is not a DTMF string (0-9 * # A-D and `,`, at most {})",
                caps::MAX_DTMF
            ))));
        }
        Ok(self.queue(Action::SendDtmf(digits)))
    }
}
