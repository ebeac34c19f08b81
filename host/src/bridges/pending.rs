//! Inbound calls the agent accepted whose carrier has not opened the media stream yet. Each
//! waits under a one-time token that the carrier's stream brings back (Twilio's custom
//! parameter, Telnyx's client state, Vonage's socket header); a stream that never comes must not hold the agent, so
//! the call is refused once the wait is over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use crate::call::inbound::Ringing;

/// A call waiting for its stream.
pub struct Pending {
    pub ringing: Ringing,
    /// The carrier's id of the call (Twilio CallSid, Telnyx call_control_id, Vonage uuid).
    pub leg_call_id: String,
    pub caller: String,
}

/// The waiting calls by token.
#[derive(Default)]
pub struct PendingCalls {
    calls: Mutex<HashMap<String, Pending>>,
}

/// A one-time token for a stream: 128 random bits, hex.
pub fn one_time_token() -> String {
    let mut bytes = [0u8; 16];
    // The system's randomness failing leaves no safe token to make.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system randomness");
    hex::encode(bytes)
}

impl PendingCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold `pending` under a new token until its stream takes it, or refuse it (408, `why`)
    /// after `wait`.
    pub fn hold(self: &Arc<Self>, pending: Pending, wait: Duration, why: &'static str) -> String {
        self.hold_then(pending, wait, why, std::future::ready(()))
    }

    /// [`PendingCalls::hold`], and when the wait is over run `expired` too (a carrier that has
    /// answered the call already hangs it up there: the caller would hear silence).
    pub fn hold_then(
        self: &Arc<Self>,
        pending: Pending,
        wait: Duration,
        why: &'static str,
        expired: impl Future<Output = ()> + Send + 'static,
    ) -> String {
        let token = one_time_token();
        self.lock().insert(token.clone(), pending);
        let calls = self.clone();
        let expiring = token.clone();
        tokio::spawn(
            async move {
                tokio::time::sleep(wait).await;
                if let Some(p) = calls.take(&expiring) {
                    p.ringing.refuse(408, why);
                    expired.await;
                }
            }
            .in_current_span(),
        );
        token
    }

    /// The call waiting under `token`, taken: a token serves once.
    pub fn take(&self, token: &str) -> Option<Pending> {
        self.lock().remove(token)
    }

    /// The call the carrier knows as `leg_call_id`, taken (the carrier reports it gone).
    pub fn take_leg(&self, leg_call_id: &str) -> Option<Pending> {
        let mut calls = self.lock();
        let token = calls
            .iter()
            .find(|(_, p)| p.leg_call_id == leg_call_id)
            .map(|(t, _)| t.clone())?;
        calls.remove(&token)
    }
}
