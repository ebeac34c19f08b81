//! The script leg: the caller's side of a scripted call, in memory. It carries no audio; the
//! script feeds it hang-ups and keypad digits, it logs the transfers, hang-ups and digits the
//! call asks of it, and every transfer succeeds at once (as a far end accepting the REFER).
//!
//! A probe sent through it is answered only when the call task next waits for the leg, that is
//! once everything fed before it has been handled: the runner's "the call is settled" check.

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot};

use super::observe::{Log, Observed, push};
use crate::call::leg::{
    Capabilities, Capability, Leg, LegAudio, LegError, LegEvent, LegFacts, NoPlayout, Playout,
};
use crate::media::MediaStats;

/// What the runner sends the leg.
pub(crate) enum ToLeg {
    Event(LegEvent),
    /// Answer once the call task waits for the leg again.
    Probe(oneshot::Sender<()>),
}

pub(crate) struct ScriptLeg {
    facts: LegFacts,
    inbox: mpsc::UnboundedReceiver<ToLeg>,
    /// Events the leg raises itself (a transfer's outcome): they come before the inbox, so a
    /// probe is answered only after them.
    own: VecDeque<LegEvent>,
    log: Log,
    playout: NoPlayout,
    /// A transfer went through: the hang-up that follows is the leg leaving, not the agent's.
    transferred: bool,
}

impl ScriptLeg {
    pub fn new(transport: &str, inbox: mpsc::UnboundedReceiver<ToLeg>, log: Log) -> ScriptLeg {
        ScriptLeg {
            facts: LegFacts {
                transport: transport.into(),
                codec: None,
                remote: "script".into(),
            },
            inbox,
            own: VecDeque::new(),
            log,
            playout: NoPlayout,
            transferred: false,
        }
    }
}

impl Leg for ScriptLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::SendDigits, Capability::Transfer])
    }

    async fn next_event(&mut self) -> LegEvent {
        loop {
            if let Some(event) = self.own.pop_front() {
                return event;
            }
            match self.inbox.recv().await {
                Some(ToLeg::Event(event)) => return event,
                Some(ToLeg::Probe(answer)) => {
                    let _ = answer.send(());
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    async fn hangup(&mut self) {
        if !self.transferred {
            push(&self.log, Observed::HungUp);
        }
    }

    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        push(&self.log, Observed::Transferred(target.into()));
        self.transferred = true;
        self.own.push_back(LegEvent::TransferOutcome {
            code: 200,
            reason: "OK".into(),
            success: true,
        });
        Ok(())
    }

    fn send_digits(&mut self, digits: &str) -> Result<(), LegError> {
        push(&self.log, Observed::SentDigits(digits.into()));
        Ok(())
    }

    fn playout(&mut self) -> &mut dyn Playout {
        &mut self.playout
    }

    fn audio(&mut self) -> Option<&mut dyn LegAudio> {
        None
    }

    async fn close(self) -> Option<MediaStats> {
        None
    }
}
