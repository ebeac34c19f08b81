//! Transfers under way. Telnyx's `transfer` command answers 200 once it starts dialling the
//! target; whether the target answered comes later, in the webhooks of the new leg (Telnyx's
//! API reference, "Transfer call": "If the transfer is unsuccessful, a `call.hangup` webhook for
//! the other call (Leg B) will be sent ... The original call will remain active"; expected
//! webhooks `call.initiated`, `call.bridged`, `call.answered` or `call.hangup`). Those webhooks
//! carry the transfer's `target_leg_client_state` as their `client_state`, so each transfer
//! gets a token of its own there and waits here for its outcome: the new leg answered or was
//! bridged (success), or hung up first (failure, with its `hangup_cause` and
//! `sip_hangup_cause`).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::call::leg::LegEvent;

/// Transfers whose new leg has not told its outcome yet: token → where the call hears it.
#[derive(Default)]
pub struct Transfers(Mutex<HashMap<String, mpsc::UnboundedSender<LegEvent>>>);

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<LegEvent>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the outcome of the transfer tagged `token`, for the call listening on
    /// `outcome`. Transfers of calls that ended without an outcome are dropped here.
    pub fn watch(&self, token: String, outcome: mpsc::UnboundedSender<LegEvent>) {
        let mut transfers = self.lock();
        transfers.retain(|_, call| !call.is_closed());
        transfers.insert(token, outcome);
    }

    /// The transfer tagged `token` did not start.
    pub fn forget(&self, token: &str) {
        self.lock().remove(token);
    }

    /// A Call Control event whose `client_state` is `token`: when that tags a transfer under
    /// way, the event is its new leg's, and its outcome, if it tells one, goes to the call.
    /// Whether `token` tagged a transfer.
    pub fn settle(
        &self,
        token: &str,
        event_type: &str,
        hangup_cause: Option<&str>,
        sip_code: Option<u16>,
    ) -> bool {
        let mut transfers = self.lock();
        if !transfers.contains_key(token) {
            return false;
        }
        if let Some(event) = outcome(event_type, hangup_cause, sip_code)
            && let Some(call) = transfers.remove(token)
        {
            tracing::info!(%event_type, ?hangup_cause, ?sip_code, "Telnyx told a transfer's outcome");
            let _ = call.send(event);
        }
        true
    }
}

/// The outcome an event of a transfer's new leg tells; `None` for the ones on the way
/// (`call.initiated`, ...).
fn outcome(
    event_type: &str,
    hangup_cause: Option<&str>,
    sip_code: Option<u16>,
) -> Option<LegEvent> {
    match event_type {
        "call.answered" | "call.bridged" => Some(LegEvent::TransferOutcome {
            code: 200,
            reason: format!("the target answered (Telnyx {event_type})"),
            success: true,
        }),
        "call.hangup" => Some(LegEvent::TransferOutcome {
            // Telnyx names the SIP answer when the target's side gave one.
            code: sip_code.unwrap_or(500),
            reason: format!(
                "the target did not answer (Telnyx call.hangup, {})",
                hangup_cause.unwrap_or("no cause given")
            ),
            success: false,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_legs_events_tell_the_outcome() {
        assert_eq!(outcome("call.initiated", None, None), None);
        assert!(matches!(
            outcome("call.answered", None, None),
            Some(LegEvent::TransferOutcome {
                success: true,
                code: 200,
                ..
            })
        ));
        assert_eq!(
            outcome("call.hangup", Some("user_busy"), Some(486)),
            Some(LegEvent::TransferOutcome {
                code: 486,
                reason: "the target did not answer (Telnyx call.hangup, user_busy)".into(),
                success: false,
            })
        );
    }

    #[test]
    fn an_outcome_reaches_its_call_once() {
        let transfers = Transfers::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        transfers.watch("t1".into(), tx);
        assert!(transfers.settle("t1", "call.initiated", None, None));
        assert!(rx.try_recv().is_err(), "not an outcome yet");
        assert!(transfers.settle("t1", "call.hangup", Some("timeout"), Some(480)));
        assert!(matches!(
            rx.try_recv(),
            Ok(LegEvent::TransferOutcome {
                code: 480,
                success: false,
                ..
            })
        ));
        // Settled: later events of that leg are nothing of a transfer's.
        assert!(!transfers.settle("t1", "call.hangup", Some("timeout"), Some(480)));
        assert!(!transfers.settle("other", "call.answered", None, None));
    }

    #[test]
    fn transfers_of_ended_calls_are_dropped() {
        let transfers = Transfers::default();
        let (tx, rx) = mpsc::unbounded_channel();
        transfers.watch("gone".into(), tx);
        drop(rx);
        let (tx, _rx) = mpsc::unbounded_channel();
        transfers.watch("live".into(), tx);
        assert!(!transfers.settle("gone", "call.initiated", None, None));
        assert!(transfers.settle("live", "call.initiated", None, None));
    }
}
