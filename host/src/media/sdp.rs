//! SDP offer/answer (RFC 3264) for telephony audio: PCMU, PCMA, Opus and telephone-event.
//!
//! Parsing is done by `sdp-types`; the negotiation and the SDP we write are our own, because
//! that is where telephony interop lives (static payload types without rtpmap, legacy hold with
//! `c=0.0.0.0`, direction mirroring, port-0 streams, dynamic DTMF payload types).
//!
//! One set of functions serves every case: [`create_offer`] + [`process_answer`] for outbound
//! calls (and our own re-INVITEs), [`answer_offer`] for inbound calls and peer re-INVITEs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::codec::Codec;

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
}

/// Builds our offer (new outbound call, or a re-INVITE for hold/resume).
pub fn create_offer(local: &LocalMedia) -> String {
    let mut formats = Vec::new();
    for codec in &local.codecs {
        let pt = codec.static_payload_type().unwrap_or(OPUS_PT);
        if !formats.iter().any(|(p, _)| *p == pt) {
            formats.push((pt, Format::Audio(*codec)));
        }
    }
    formats.push((DTMF_8K_PT, Format::Dtmf(8000)));
    if local.codecs.contains(&Codec::Opus) {
        formats.push((DTMF_48K_PT, Format::Dtmf(48000)));
    }
    let mut sdp = session_header(local);
    write_media(
        &mut sdp,
        local.port,
        "RTP/AVP",
        &formats,
        local.ptime_ms,
        local.direction,
    );
    sdp
}

/// Answers a peer's offer (inbound INVITE, or a re-INVITE such as hold/resume).
///
/// Returns our answer SDP and the negotiated media, or [`SdpError::NotAcceptable`] (→ 488) when
/// no audio stream has a codec in `local.codecs`. Every offered m-line gets an answer line;
/// the ones we do not take are answered with port 0.
pub fn answer_offer(
    offer: &str,
    local: &LocalMedia,
) -> Result<(String, NegotiatedMedia), SdpError> {
    let session = parse(offer)?;
    let mut chosen: Option<(usize, Accepted)> = None;
    let mut reasons = Vec::new();
    for (index, stream) in session.streams.iter().enumerate() {
        if chosen.is_some() {
            break;
        }
        match negotiate_stream(stream, local) {
            Ok(accepted) => chosen = Some((index, accepted)),
            Err(reason) => reasons.push(format!("m-line {index}: {reason}")),
        }
    }
    let Some((chosen_index, (media, formats))) = chosen else {
        return Err(SdpError::NotAcceptable(if reasons.is_empty() {
            "no m-line".to_string()
        } else {
            reasons.join("; ")
        }));
    };
    let mut sdp = session_header(local);
    for (index, stream) in session.streams.iter().enumerate() {
        if index == chosen_index {
            write_media(
                &mut sdp,
                local.port,
                &stream.proto,
                &formats,
                local.ptime_ms,
                media.direction,
            );
        } else {
            // Rejected stream: same media and proto, port 0, formats echoed (RFC 3264 §6).
            let _ = write!(
                sdp,
                "m={} 0 {} {}\r\n",
                stream.media, stream.proto, stream.fmt
            );
        }
    }
    Ok((sdp, media))
}

/// Our reply to a mid-call re-INVITE or UPDATE (hold, resume, a new address): the answer and
/// the new negotiation, with `local.session_version` bumped because our SDP changes (RFC 3264
/// §8; left as it was when the offer is refused). Without an offer the peer wants ours: our
/// current SDP goes back as an offer, and nothing is negotiated yet.
pub fn answer_reoffer(
    offer: Option<&str>,
    local: &mut LocalMedia,
) -> Result<(String, Option<NegotiatedMedia>), SdpError> {
    let Some(offer) = offer else {
        return Ok((create_offer(local), None));
    };
    local.session_version += 1;
    answer_offer(offer, local)
        .map(|(answer, media)| (answer, Some(media)))
        .inspect_err(|_| local.session_version -= 1)
}

/// Applies the peer's answer to our offer made from `local`.
pub fn process_answer(answer: &str, local: &LocalMedia) -> Result<NegotiatedMedia, SdpError> {
    let session = parse(answer)?;
    let stream = session
        .streams
        .iter()
        .find(|s| s.media.eq_ignore_ascii_case("audio"))
        .ok_or_else(|| SdpError::NotAcceptable("answer has no audio m-line".into()))?;
    if stream.port == 0 {
        return Err(SdpError::NotAcceptable(
            "peer rejected the audio stream (port 0)".into(),
        ));
    }
    // The answerer's first listed codec that we offered is the codec of the call.
    let (send_payload_type, codec) = stream
        .formats
        .iter()
        .find_map(|&pt| match stream.format(pt) {
            Some(Format::Audio(c)) if local.codecs.contains(&c) => Some((pt, c)),
            _ => None,
        })
        .ok_or_else(|| SdpError::NotAcceptable("answer has no codec we offered".into()))?;
    let recv_payload_type = codec.static_payload_type().unwrap_or(OPUS_PT);
    let dtmf_send = stream.dtmf_for(codec.clock_rate());
    let mut dtmf_recv = vec![DtmfFormat {
        payload_type: DTMF_8K_PT,
        clock_rate: 8000,
    }];
    if local.codecs.contains(&Codec::Opus) {
        dtmf_recv.push(DtmfFormat {
            payload_type: DTMF_48K_PT,
            clock_rate: 48000,
        });
    }
    Ok(NegotiatedMedia {
        codec,
        send_payload_type,
        recv_payload_type,
        dtmf_send,
        dtmf_recv,
        remote_rtp: stream.rtp_addr(),
        remote_rtcp: stream.rtcp_addr(),
        ptime_ms: stream.send_ptime(codec, local.ptime_ms),
        direction: local.direction.answer_to(stream.effective_direction()),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Audio(Codec),
    Dtmf(u32),
}

/// One m-line of a parsed SDP, with session-level defaults already applied.
struct Stream {
    media: String,
    port: u16,
    proto: String,
    /// The raw format list, echoed when the stream is rejected.
    fmt: String,
    formats: Vec<u8>,
    rtpmaps: HashMap<u8, (String, u32)>,
    connection: Option<IpAddr>,
    direction: Direction,
    ptime: Option<u32>,
    rtcp_port: Option<u16>,
    rtcp_addr: Option<IpAddr>,
}

struct ParsedSession {
    streams: Vec<Stream>,
}

impl Stream {
    fn format(&self, pt: u8) -> Option<Format> {
        match self.rtpmaps.get(&pt) {
            Some((name, clock)) if name.eq_ignore_ascii_case("telephone-event") => {
                Some(Format::Dtmf(*clock))
            }
            Some((name, clock)) => Codec::from_rtpmap(name, *clock).map(Format::Audio),
            None => Codec::from_static_payload_type(pt).map(Format::Audio),
        }
    }

    /// telephone-event at the codec's clock if offered, else any telephone-event (some peers
    /// offer only telephone-event/8000 on Opus calls).
    fn dtmf_for(&self, clock_rate: u32) -> Option<DtmfFormat> {
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
    fn is_legacy_hold(&self) -> bool {
        self.connection.is_some_and(|ip| ip.is_unspecified())
    }

    fn effective_direction(&self) -> Direction {
        if self.is_legacy_hold() {
            Direction::Inactive
        } else {
            self.direction
        }
    }

    fn rtp_addr(&self) -> Option<SocketAddr> {
        let ip = self.connection.filter(|ip| !ip.is_unspecified())?;
        Some(SocketAddr::new(ip, self.port))
    }

    fn rtcp_addr(&self) -> Option<SocketAddr> {
        let rtp = self.rtp_addr()?;
        let port = self.rtcp_port.unwrap_or(rtp.port().wrapping_add(1));
        Some(SocketAddr::new(self.rtcp_addr.unwrap_or(rtp.ip()), port))
    }

    /// The peer's `a=ptime` is what it wants to receive; use it when the codec can do it.
    fn send_ptime(&self, codec: Codec, local_ptime: u32) -> u32 {
        [self.ptime, Some(local_ptime), Some(DEFAULT_PTIME_MS)]
            .into_iter()
            .flatten()
            .find(|&p| codec.supports_ptime(p))
            .unwrap_or(DEFAULT_PTIME_MS)
    }
}

/// A stream we take: its negotiation and the formats our answer lists for it.
type Accepted = (NegotiatedMedia, Vec<(u8, Format)>);

fn negotiate_stream(stream: &Stream, local: &LocalMedia) -> Result<Accepted, String> {
    if !stream.media.eq_ignore_ascii_case("audio") {
        return Err(format!("media {} not supported", stream.media));
    }
    if stream.port == 0 {
        return Err("stream disabled (port 0)".into());
    }
    if !matches!(
        stream.proto.to_ascii_uppercase().as_str(),
        "RTP/AVP" | "RTP/AVPF"
    ) {
        return Err(format!("transport {} not supported", stream.proto));
    }
    let (payload_type, codec) = local
        .codecs
        .iter()
        .find_map(|&wanted| {
            stream
                .formats
                .iter()
                .find_map(|&pt| match stream.format(pt) {
                    Some(Format::Audio(c)) if c == wanted => Some((pt, c)),
                    _ => None,
                })
        })
        .ok_or_else(|| format!("no common codec in formats [{}]", stream.fmt))?;
    let dtmf = stream.dtmf_for(codec.clock_rate());
    let mut formats = vec![(payload_type, Format::Audio(codec))];
    if let Some(d) = dtmf {
        formats.push((d.payload_type, Format::Dtmf(d.clock_rate)));
    }
    let media = NegotiatedMedia {
        codec,
        send_payload_type: payload_type,
        recv_payload_type: payload_type,
        dtmf_send: dtmf,
        dtmf_recv: dtmf.into_iter().collect(),
        remote_rtp: stream.rtp_addr(),
        remote_rtcp: stream.rtcp_addr(),
        ptime_ms: stream.send_ptime(codec, local.ptime_ms),
        direction: local.direction.answer_to(stream.effective_direction()),
    };
    Ok((media, formats))
}

fn parse(text: &str) -> Result<ParsedSession, SdpError> {
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

fn session_header(local: &LocalMedia) -> String {
    let ip = ip_words(local.address);
    format!(
        "v=0\r\no=switchboard {} {} IN {ip}\r\ns=switchboard\r\nc=IN {ip}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    )
}

fn ip_words(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IP4 {v4}"),
        IpAddr::V6(v6) => format!("IP6 {v6}"),
    }
}

fn write_media(
    sdp: &mut String,
    port: u16,
    proto: &str,
    formats: &[(u8, Format)],
    ptime_ms: u32,
    direction: Direction,
) {
    let list: Vec<String> = formats.iter().map(|(pt, _)| pt.to_string()).collect();
    let _ = write!(sdp, "m=audio {port} {proto} {}\r\n", list.join(" "));
    for (pt, format) in formats {
        match format {
            Format::Audio(codec) => {
                let _ = write!(
                    sdp,
                    "a=rtpmap:{pt} {}/{}",
                    codec.encoding_name(),
                    codec.clock_rate()
                );
                if let Some(ch) = codec.rtpmap_channels() {
                    let _ = write!(sdp, "/{ch}");
                }
                sdp.push_str("\r\n");
                if *codec == Codec::Opus {
                    let _ = write!(sdp, "a=fmtp:{pt} minptime=10;useinbandfec=1\r\n");
                }
            }
            Format::Dtmf(clock) => {
                let _ = write!(
                    sdp,
                    "a=rtpmap:{pt} telephone-event/{clock}\r\na=fmtp:{pt} 0-16\r\n"
                );
            }
        }
    }
    let _ = write!(sdp, "a=ptime:{ptime_ms}\r\na={}\r\n", direction.as_str());
}

#[cfg(test)]
mod tests;
