//! RTP media for phone calls: SDP offer/answer, RTP/RTCP sessions, codecs (G.711, G.722, Opus),
//! jitter buffering with loss concealment, resampling (with [`crate::resample`]), RFC 4733 DTMF, paced playout with
//! barge-in, media timeouts and call recording.
//!
//! This module knows nothing of SIP, agents or models: it moves audio frames and DTMF events.
//! Each session's stream runs in `engine`, a sans-IO core (no socket, no clock) that its
//! `shell` drives on a media thread (`reactor`); the session is the call layer's handle on it.
//! The call layer uses it in this order:
//!
//! 1. [`PendingMedia::bind`] leases an RTP/RTCP port pair from a [`PortPool`];
//! 2. [`sdp::answer_offer`] (inbound) or [`sdp::create_offer`] + [`sdp::process_answer`]
//!    (outbound) with a [`sdp::LocalMedia`] naming that port give a [`NegotiatedMedia`]
//!    (or an [`SdpError`] whose `sip_status()` is 488 when nothing is common);
//! 3. [`PendingMedia::start`] returns the running [`MediaSession`]: read [`MediaEvent`]s with
//!    `recv()`, queue outbound audio with `queue_audio`, barge in with `flush_playout`, send
//!    digits with `send_dtmf`, apply re-INVITEs with `update`, record with `start_recording`,
//!    end with `close` (or drop).
//!
//! For a model that takes G.711 directly, ask for 8 kHz inbound frames and encode them with
//! [`g711::ulaw_encode`]: decoding then re-encoding G.711 is lossless (but for μ-law's two codes
//! for zero), so the model gets the caller's bytes.

pub mod amd;
#[cfg(test)]
mod bench;
pub mod codec;
pub mod dtmf;
mod engine;
pub mod g711;
pub mod g722;
pub mod jitter;
mod opus;
pub mod playout;
pub mod ports;
mod reactor;
pub mod recording;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
mod shell;
pub mod srtp;
pub mod stats;
#[cfg(test)]
mod test_support;

pub use codec::Codec;
pub use dtmf::{DtmfEvent, DtmfSource};
pub use playout::FlushReport;
pub use ports::PortPool;
pub use sdp::{Direction, LocalMedia, NegotiatedMedia, SdpError};
pub use session::{
    AudioFrame, AudioSink, MediaConfig, MediaError, MediaEvent, MediaSession, PendingMedia,
    SilenceMode, media_threads,
};
pub use stats::MediaStats;
