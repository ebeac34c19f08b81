//! What the media tests share: a session configuration and a negotiated stream.

use std::net::SocketAddr;
use std::time::Duration;

use super::codec::Codec;
use super::sdp::{Direction, DtmfFormat, NegotiatedMedia};
use super::session::MediaConfig;

pub(crate) fn config(timeout_ms: u64) -> MediaConfig {
    MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        media_timeout: Duration::from_millis(timeout_ms),
        call_id: "test".into(),
        ..MediaConfig::default()
    }
}

/// PCMU/PCMA/Opus with telephone-events at 101 (and 120 at 8 kHz received) to `peer`, RTCP to
/// `rtcp`.
pub(crate) fn negotiated(peer: SocketAddr, rtcp: SocketAddr, codec: Codec) -> NegotiatedMedia {
    let pt = codec.static_payload_type().unwrap_or(111);
    let dtmf = DtmfFormat {
        payload_type: 101,
        clock_rate: codec.clock_rate(),
    };
    NegotiatedMedia {
        codec,
        send_payload_type: pt,
        recv_payload_type: pt,
        dtmf_send: Some(dtmf),
        dtmf_recv: vec![
            dtmf,
            DtmfFormat {
                payload_type: 120,
                clock_rate: 8000,
            },
        ],
        remote_rtp: Some(peer),
        remote_rtcp: Some(rtcp),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}
