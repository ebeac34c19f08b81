//! Reading SDP: the parsed session and its streams (session-level defaults applied), with the
//! attributes telephony needs (rtpmap, rtcp, direction, ptime).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::media::codec::Codec;
use crate::media::srtp::{MasterKey, Suite};

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Audio(Codec),
    Dtmf(u32),
}

/// telephone-event clocks we take: those of telephony audio, narrowband to Opus.
const TELEPHONE_EVENT_CLOCKS: std::ops::RangeInclusive<u32> = 8000..=48_000;

/// One m-line of a parsed SDP, with session-level defaults already applied.
pub(super) struct Stream {
    pub(super) media: String,
    pub(super) port: u16,
    pub(super) proto: String,
    /// The raw format list, echoed when the stream is rejected.
    pub(super) fmt: String,
    pub(super) formats: Vec<u8>,
    pub(super) rtpmaps: HashMap<u8, (String, u32)>,
    pub(super) connection: Option<IpAddr>,
    pub(super) direction: Direction,
    pub(super) ptime: Option<u32>,
    pub(super) rtcp_port: Option<u16>,
    pub(super) rtcp_addr: Option<IpAddr>,
    /// The `a=crypto` lines we can use, in the order given.
    pub(super) crypto: Vec<Crypto>,
}

/// One usable `a=crypto` line (RFC 4568 §9.1): a suite we have, an inline key, no MKI.
#[derive(Debug, Clone)]
pub(super) struct Crypto {
    pub(super) tag: u32,
    pub(super) suite: Suite,
    pub(super) key: MasterKey,
}

impl Crypto {
    /// `<tag> <suite> inline:<key||salt>[|<lifetime>][|<MKI>:<length>] [session params]`;
    /// `None` for a suite we lack, a key that is not 30 bytes, or an MKI (which we do not do).
    fn parse(value: &str) -> Option<Crypto> {
        let mut words = value.split_ascii_whitespace();
        let tag = words.next()?.parse().ok()?;
        let suite = Suite::from_name(words.next()?)?;
        let inline = words
            .next()?
            .split(';')
            .find_map(|p| p.strip_prefix("inline:"))?;
        let mut parts = inline.split('|');
        let key = MasterKey::from_inline(parts.next()?)?;
        // A lifetime (`2^31` or a number) is fine; an MKI (`1:4`) is not.
        if parts.any(|p| p.contains(':')) {
            return None;
        }
        Some(Crypto { tag, suite, key })
    }
}

pub(super) struct ParsedSession {
    pub(super) streams: Vec<Stream>,
}

impl Stream {
    pub(super) fn format(&self, pt: u8) -> Option<Format> {
        match self.rtpmaps.get(&pt) {
            Some((name, clock)) if name.eq_ignore_ascii_case("telephone-event") => {
                // DTMF timing divides and multiplies by the clock: 0 or an absurd one is
                // unusable, so that telephone-event is not taken.
                TELEPHONE_EVENT_CLOCKS
                    .contains(clock)
                    .then_some(Format::Dtmf(*clock))
            }
            Some((name, clock)) => Codec::from_rtpmap(name, *clock).map(Format::Audio),
            None => Codec::from_static_payload_type(pt).map(Format::Audio),
        }
    }

    /// telephone-event at the codec's clock if offered, else any telephone-event (some peers
    /// offer only telephone-event/8000 on Opus calls).
    pub(super) fn dtmf_for(&self, clock_rate: u32) -> Option<DtmfFormat> {
        let all: Vec<DtmfFormat> = self
            .formats
            .iter()
            .filter_map(|&pt| match self.format(pt) {
                Some(Format::Dtmf(clock)) => Some(DtmfFormat {
                    payload_type: pt,
                    clock_rate: clock,
                }),
                _ => None,
            })
            .collect();
        all.iter()
            .find(|d| d.clock_rate == clock_rate)
            .or(all.first())
            .copied()
    }

    /// Legacy hold (RFC 2543 `c=0.0.0.0`) means the peer wants no media sent to it.
    pub(super) fn is_legacy_hold(&self) -> bool {
        self.connection.is_some_and(|ip| ip.is_unspecified())
    }

    pub(super) fn effective_direction(&self) -> Direction {
        if self.is_legacy_hold() {
            Direction::Inactive
        } else {
            self.direction
        }
    }

    pub(super) fn rtp_addr(&self) -> Option<SocketAddr> {
        let ip = self.connection.filter(|ip| !ip.is_unspecified())?;
        Some(SocketAddr::new(ip, self.port))
    }

    pub(super) fn rtcp_addr(&self) -> Option<SocketAddr> {
        let rtp = self.rtp_addr()?;
        let port = self.rtcp_port.unwrap_or(rtp.port().wrapping_add(1));
        Some(SocketAddr::new(self.rtcp_addr.unwrap_or(rtp.ip()), port))
    }

    /// The peer's `a=ptime` is what it wants to receive; use it when the codec can do it.
    pub(super) fn send_ptime(&self, codec: Codec, local_ptime: u32) -> u32 {
        [self.ptime, Some(local_ptime), Some(DEFAULT_PTIME_MS)]
            .into_iter()
            .flatten()
            .find(|&p| codec.supports_ptime(p))
            .unwrap_or(DEFAULT_PTIME_MS)
    }
}

pub(super) fn parse(text: &str) -> Result<ParsedSession, SdpError> {
    let session = sdp_types::Session::parse(text.trim_start().as_bytes())
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    let session_conn = session.connection.as_ref().map(connection_ip).transpose()?;
    let session_dir = direction_of(&session.attributes).unwrap_or_default();
    let mut streams = Vec::new();
    for m in &session.medias {
        let formats = m
            .fmt
            .split_ascii_whitespace()
            .filter_map(|f| f.parse::<u8>().ok())
            .collect();
        let mut rtpmaps = HashMap::new();
        for attr in m
            .attributes
            .iter()
            .filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap"))
        {
            if let Some((pt, name, clock)) = attr.value.as_deref().and_then(parse_rtpmap) {
                rtpmaps.insert(pt, (name, clock));
            }
        }
        let connection = match m.connections.first() {
            Some(c) => Some(connection_ip(c)?),
            None => session_conn,
        };
        let ptime = attribute(&m.attributes, "ptime")
            .and_then(|v| v.trim().parse::<f32>().ok())
            .map(|p| p as u32);
        let (rtcp_port, rtcp_addr) = attribute(&m.attributes, "rtcp")
            .map(parse_rtcp_attr)
            .unwrap_or((None, None));
        let crypto = m
            .attributes
            .iter()
            .filter(|a| a.attribute.eq_ignore_ascii_case("crypto"))
            .filter_map(|a| Crypto::parse(a.value.as_deref()?))
            .collect();
        streams.push(Stream {
            media: m.media.clone(),
            port: m.port,
            proto: m.proto.clone(),
            fmt: m.fmt.clone(),
            formats,
            rtpmaps,
            connection,
            direction: direction_of(&m.attributes).unwrap_or(session_dir),
            ptime,
            rtcp_port,
            rtcp_addr,
            crypto,
        });
    }
    Ok(ParsedSession { streams })
}

fn connection_ip(c: &sdp_types::Connection) -> Result<IpAddr, SdpError> {
    c.try_address()
        .map(|a| a.ip)
        .map_err(|e| SdpError::Malformed(e.to_string()))
}

fn attribute<'a>(attrs: &'a [sdp_types::Attribute], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|a| a.attribute.eq_ignore_ascii_case(name))
        .and_then(|a| a.value.as_deref())
}

fn direction_of(attrs: &[sdp_types::Attribute]) -> Option<Direction> {
    attrs.iter().find_map(|a| Direction::parse(&a.attribute))
}

/// `<pt> <name>/<clock>[/<channels>]`
fn parse_rtpmap(value: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_string();
    let clock = parts.next()?.trim().parse().ok()?;
    Some((pt.parse().ok()?, name, clock))
}

/// `<port> [IN IP4 <addr>]` (RFC 3605)
fn parse_rtcp_attr(value: &str) -> (Option<u16>, Option<IpAddr>) {
    let mut parts = value.split_ascii_whitespace();
    let port = parts.next().and_then(|p| p.parse().ok());
    let addr = parts.nth(2).and_then(|a| a.parse().ok());
    (port, addr)
}
