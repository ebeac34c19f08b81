//! SDP offer/answer (RFC 3264) for telephony audio: PCMU, PCMA, Opus and telephone-event.
//!
//! Parsing is done by `sdp-types`; the negotiation and the SDP we write are our own, because
//! that is where telephony interop lives (static payload types without rtpmap, legacy hold with
//! `c=0.0.0.0`, direction mirroring, port-0 streams, dynamic DTMF payload types).
//!
//! One set of functions serves every case: [`create_offer`] + [`process_answer`] for outbound
//! calls (and our own re-INVITEs), [`answer_offer`] for inbound calls and peer re-INVITEs.

mod offer_answer;
mod parse;
#[cfg(test)]
mod tests;
mod write;

use std::net::{IpAddr, SocketAddr};

use super::codec::Codec;
use super::srtp::{MasterKey, SrtpKeys};
pub use crate::domain::SrtpPolicy;
pub use offer_answer::{answer_offer, answer_reoffer, create_offer, process_answer};

/// Packet duration used when the peer states none.
pub const DEFAULT_PTIME_MS: u32 = 20;
/// Dynamic payload type we offer for Opus.
const OPUS_PT: u8 = 111;
/// Dynamic payload type we offer for telephone-event/8000.
const DTMF_8K_PT: u8 = 101;
/// Dynamic payload type we offer for telephone-event/48000 (Opus calls).
const DTMF_48K_PT: u8 = 102;

/// Why an SDP body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    /// The body is not valid SDP.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// Valid SDP, but no audio stream we can take: SIP answers `488 Not Acceptable Here`.
    #[error("no acceptable audio stream: {0}")]
    NotAcceptable(String),
}

impl SdpError {
    /// The SIP status code for rejecting the request that carried this SDP.
    pub fn sip_status(&self) -> u16 {
        match self {
            SdpError::Malformed(_) => 400,
            SdpError::NotAcceptable(_) => 488,
        }
    }
}

/// Media direction attribute (RFC 3264 §5.1), always from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }

    fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Our direction given what we want (`self`) and what the peer declared (`remote`): we may
    /// send only if the peer receives, and receive only if the peer sends.
    pub fn answer_to(self, remote: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && remote.receives(),
            self.receives() && remote.sends(),
        )
    }
}

/// What we put in our SDP: where we receive, which codecs we prefer, how we want to be called.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    /// Address advertised in `c=` and `o=` (the public address when behind NAT).
    pub address: IpAddr,
    /// Our RTP port; RTCP is on `port + 1`.
    pub port: u16,
    /// Codecs in order of preference; the first one the peer also has wins.
    pub codecs: Vec<Codec>,
    /// Packet duration we want to receive (10–60 ms).
    pub ptime_ms: u32,
    /// What we want to do: `SendRecv` normally, `SendOnly` to put the peer on hold.
    pub direction: Direction,
    /// `o=` session id: constant for the whole call.
    pub session_id: u64,
    /// `o=` version: the caller increments it whenever our SDP changes (RFC 3264 §8).
    pub session_version: u64,
    /// Whether the stream is encrypted (SDES keys in `a=crypto`, RFC 4568).
    pub srtp: SrtpPolicy,
    /// Our SRTP master key, sent in our offer or answer when SRTP is on.
    pub srtp_key: MasterKey,
}

impl LocalMedia {
    /// Our usual media: `codecs` in preference order, 20 ms packets, send and receive,
    /// version 1 of session `session_id` (bump `session_version` for each later offer).
    pub fn new(address: IpAddr, port: u16, codecs: Vec<Codec>, session_id: u64) -> LocalMedia {
        LocalMedia {
            address,
            port,
            codecs,
            ptime_ms: DEFAULT_PTIME_MS,
            direction: Direction::SendRecv,
            session_id,
            session_version: 1,
            srtp: SrtpPolicy::Off,
            srtp_key: MasterKey::random(),
        }
    }
}

/// RFC 4733 telephone-event format negotiated for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfFormat {
    pub payload_type: u8,
    pub clock_rate: u32,
}

/// The result of a negotiation: everything an RTP session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedMedia {
    /// The one audio codec of the call.
    pub codec: Codec,
    /// Payload type for the codec in packets we send (the one the peer advertised).
    pub send_payload_type: u8,
    /// Payload type for the codec in packets we receive (the one we advertised).
    pub recv_payload_type: u8,
    /// telephone-event format for sending DTMF, if the peer takes it.
    pub dtmf_send: Option<DtmfFormat>,
    /// telephone-event formats we accept on receive.
    pub dtmf_recv: Vec<DtmfFormat>,
    /// Where to send RTP; `None` when the peer gave no usable address (legacy hold `0.0.0.0`).
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP.
    pub remote_rtcp: Option<SocketAddr>,
    /// Packet duration for packets we send.
    pub ptime_ms: u32,
    /// Our direction for the stream.
    pub direction: Direction,
    /// The SRTP keys when the stream is encrypted.
    pub srtp: Option<SrtpKeys>,
}
