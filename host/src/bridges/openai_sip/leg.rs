//! The connector's leg: events only. OpenAI owns SIP and the audio, and plays and truncates
//! the agent's speech itself, so nothing is queued here; transfer is a REST `refer`, hang-up a
//! REST `hangup`, and keypad digits cannot be sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::rest::CallControl;
use crate::call::leg::{
    Capabilities, Capability, Leg, LegAudio, LegError, LegEvent, LegFacts, NoPlayout, Playout,
};
use crate::media::MediaStats;

/// What the bridge tells a running call, and what the call tells the bridge.
#[derive(Clone)]
pub struct CallLink {
    pub events: mpsc::UnboundedSender<LegEvent>,
    /// OpenAI reported the call ended (`realtime.call.ended`, or the call is gone).
    pub ended: Arc<AtomicBool>,
}

impl CallLink {
    pub fn new() -> (CallLink, mpsc::UnboundedReceiver<LegEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let link = CallLink {
            events,
            ended: Arc::default(),
        };
        (link, rx)
    }

    /// The far end is gone: the call ends as hung up by the caller.
    pub fn far_end_gone(&self) {
        self.ended.store(true, Ordering::Relaxed);
        let _ = self.events.send(LegEvent::Hangup);
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

pub struct ConnectorLeg {
    pub facts: LegFacts,
    pub control: CallControl,
    pub link: CallLink,
    pub events: mpsc::UnboundedReceiver<LegEvent>,
    /// A REFER went out: the carrier now moves the caller, and our hang-up would cut it.
    pub referred: bool,
    pub playout: NoPlayout,
}

impl Leg for ConnectorLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Transfer])
    }

    async fn next_event(&mut self) -> LegEvent {
        match self.events.recv().await {
            Some(event) => event,
            // The link's sender lives in the leg itself: never reached.
            None => std::future::pending().await,
        }
    }

    async fn hangup(&mut self) {
        if self.referred || self.link.is_ended() {
            return;
        }
        if let Err(e) = self.control.hangup().await {
            tracing::warn!(error = %e, "hanging up through OpenAI failed");
        }
    }

    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        self.control.refer(target).await.map_err(LegError::Failed)?;
        self.referred = true;
        // OpenAI reports no more than the relay: the agent hears that, not that the target
        // answered (a carrier may still refuse, e.g. a `tel:` target).
        let _ = self.link.events.send(LegEvent::TransferOutcome {
            code: 200,
            reason: "REFER relayed to the carrier".into(),
            success: true,
        });
        Ok(())
    }

    fn send_digits(&mut self, _digits: &str) -> Result<(), LegError> {
        Err(LegError::NotAllowed(Capability::SendDigits))
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
