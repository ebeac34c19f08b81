//! SIP signalling: transports, inbound/outbound calls, dialogs, registration, REFER.
//!
//! This module knows nothing of media, agents or AI: SDP bodies cross its API as opaque
//! strings and routing decisions belong to the caller (the `call` layer). The SIP stack
//! (rsipstack, pinned) is an implementation detail: none of its types appear in this
//! module's public API, so replacing it stays a bounded job.
//!
//! Usage:
//! ```no_run
//! # async fn demo() -> Result<(), switchboard::sip::SipError> {
//! use switchboard::sip::{SipConfig, SipEndpoint, SipEvent};
//! let (endpoint, mut events) = SipEndpoint::start(SipConfig::default()).await?;
//! while let Some(ev) = events.recv().await {
//!     if let SipEvent::IncomingCall(call) = ev {
//!         call.ringing()?;
//!         let mut dialog = call.answer("v=0\r\n...")?;
//!         while let Some(ev) = dialog.recv().await { /* DialogEvent */ }
//!     }
//! }
//! endpoint.shutdown().await;
//! # Ok(()) }
//! ```

mod compat;
mod config;
mod dialog;
mod endpoint;
mod error;
pub(crate) mod guard;
mod inbound;
mod outbound;
mod policy;
mod register;
mod session_timer;
mod tls;
mod wire;

pub use config::{
    ACCOUNT_FIELDS, AccountConfig, DigestUser, InboundPolicy, ScannerAction, SipConfig, SrtpPolicy,
    TRUNK_FIELDS, Transport, TrunkConfig, check_trunks,
};
pub use dialog::{Dialog, DialogEvent, DialogHandle, EndReason, ReinviteRequest, TimerEvent};
pub use endpoint::{LocalAddrs, SipEndpoint, SipEvent};
pub use error::SipError;
pub use guard::{DatagramVerdict, ScannerRules, screen_datagram};
pub use inbound::IncomingCall;
pub use outbound::{CallOutcome, CallProgress, CallTarget, OutboundCall, OutgoingCall};
pub(crate) use policy::RateLimiter;
pub use register::{RegistrationState, RegistrationStatus, check_accounts};
pub use session_timer::{Negotiated, Refresher};
