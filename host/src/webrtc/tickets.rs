//! Call tickets: what lets a public web page start a web call without holding an API token.
//! The operator's backend mints one with the API for one number, a lifetime and a number of
//! calls; the page hands it to the public offer endpoint. A ticket is signed (HMAC-SHA256 with
//! the host's ticket secret), so it needs no storage to check; what it has been used for is
//! counted here until it expires, so a used-up ticket is refused.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The version prefix of the ticket format.
const PREFIX: &str = "wt1";

/// Why a ticket does not open a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("the ticket is not valid")]
    Invalid,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket is for another number")]
    OtherNumber,
    #[error("the ticket has been used for all its calls")]
    UsedUp,
    #[error("the ticket's calls are all in progress")]
    Busy,
}

/// What a ticket grants: `calls` calls to `number` until `expires_ms` (Unix ms), at most
/// `concurrent` at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub number: String,
    pub expires_ms: u64,
    pub calls: u32,
    pub concurrent: u32,
    /// Tells two tickets with the same terms apart.
    pub nonce: String,
}

/// Use of one ticket so far.
#[derive(Debug, Default)]
struct Use {
    started: u32,
    active: u32,
    expires_ms: u64,
}

/// Mints and checks tickets with one secret.
pub struct Tickets {
    key: hmac::Key,
    used: Mutex<HashMap<String, Use>>,
}

/// A call a ticket admitted; [`Tickets::release`] it when the call ends.
#[derive(Debug)]
pub struct Admitted {
    nonce: String,
}

impl Tickets {
    pub fn new(secret: &[u8]) -> Tickets {
        Tickets {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The ticket for `grant`.
    pub fn mint(&self, grant: &Grant) -> String {
        let payload = B64.encode(serde_json::to_vec(grant).expect("a grant serializes"));
        let sig = B64.encode(hmac::sign(&self.key, payload.as_bytes()));
        format!("{PREFIX}.{payload}.{sig}")
    }

    /// Check `ticket` for a call to `number` at `now_ms` and count the call.
    pub fn admit(&self, ticket: &str, number: &str, now_ms: u64) -> Result<Admitted, TicketError> {
        let grant = self.verify(ticket)?;
        if now_ms >= grant.expires_ms {
            return Err(TicketError::Expired);
        }
        if grant.number != number {
            return Err(TicketError::OtherNumber);
        }
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.retain(|_, u| u.expires_ms > now_ms);
        let usage = used.entry(grant.nonce.clone()).or_default();
        usage.expires_ms = grant.expires_ms;
        if usage.started >= grant.calls {
            return Err(TicketError::UsedUp);
        }
        if usage.active >= grant.concurrent {
            return Err(TicketError::Busy);
        }
        usage.started += 1;
        usage.active += 1;
        Ok(Admitted { nonce: grant.nonce })
    }

    /// The call `admitted` let in has ended.
    pub fn release(&self, admitted: Admitted) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(&admitted.nonce) {
            u.active = u.active.saturating_sub(1);
        }
    }

    /// Give back a call that never started (the offer failed after the ticket was checked).
    pub fn refund(&self, admitted: Admitted) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(&admitted.nonce) {
            u.active = u.active.saturating_sub(1);
            u.started = u.started.saturating_sub(1);
        }
    }

    fn verify(&self, ticket: &str) -> Result<Grant, TicketError> {
        let mut parts = ticket.split('.');
        let (Some(PREFIX), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Invalid);
        };
        let sig = B64.decode(sig).map_err(|_| TicketError::Invalid)?;
        hmac::verify(&self.key, payload.as_bytes(), &sig).map_err(|_| TicketError::Invalid)?;
        let json = B64.decode(payload).map_err(|_| TicketError::Invalid)?;
        serde_json::from_slice(&json).map_err(|_| TicketError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(calls: u32, concurrent: u32) -> Grant {
        Grant {
            number: "1000".into(),
            expires_ms: 10_000,
            calls,
            concurrent,
            nonce: "n1".into(),
        }
    }

    #[test]
    fn a_ticket_admits_its_calls_to_its_number_until_it_expires() {
        let tickets = Tickets::new(b"secret");
        let t = tickets.mint(&grant(2, 1));
        assert_eq!(
            tickets.admit(&t, "2000", 1).unwrap_err(),
            TicketError::OtherNumber
        );
        assert_eq!(
            tickets.admit(&t, "1000", 10_000).unwrap_err(),
            TicketError::Expired
        );
        let first = tickets.admit(&t, "1000", 1).unwrap();
        assert_eq!(tickets.admit(&t, "1000", 2).unwrap_err(), TicketError::Busy);
        tickets.release(first);
        let second = tickets.admit(&t, "1000", 3).unwrap();
        tickets.release(second);
        assert_eq!(
            tickets.admit(&t, "1000", 4).unwrap_err(),
            TicketError::UsedUp
        );
    }

    #[test]
    fn a_refunded_call_does_not_count() {
        let tickets = Tickets::new(b"secret");
        let t = tickets.mint(&grant(1, 1));
        let admitted = tickets.admit(&t, "1000", 1).unwrap();
        tickets.refund(admitted);
        assert!(tickets.admit(&t, "1000", 2).is_ok());
    }

    #[test]
    fn forged_and_foreign_tickets_are_refused() {
        let tickets = Tickets::new(b"secret");
        let t = tickets.mint(&grant(1, 1));
        let other = Tickets::new(b"another secret");
        assert_eq!(
            other.admit(&t, "1000", 1).unwrap_err(),
            TicketError::Invalid
        );
        // The payload changed to another number, the signature kept.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_payload = B64.encode(
            serde_json::to_vec(&Grant {
                number: "2000".into(),
                ..grant(1, 1)
            })
            .unwrap(),
        );
        parts[1] = &forged_payload;
        assert_eq!(
            tickets.admit(&parts.join("."), "2000", 1).unwrap_err(),
            TicketError::Invalid
        );
        for garbage in ["", "wt1", "wt1..", "x.y.z", "wt1.!!.??"] {
            assert_eq!(
                tickets.admit(garbage, "1000", 1).unwrap_err(),
                TicketError::Invalid
            );
        }
    }
}
