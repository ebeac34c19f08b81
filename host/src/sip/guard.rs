//! The front door: every datagram and every parsed message passes here before the SIP
//! stack sees it. Refuses oversized, unparseable and incomplete requests with the right
//! 4xx (when the request names a Via to answer to), drops scanners cheaply, and never
//! lets bad input reach the transaction layer, which would drop it silently.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, Request, Response, SipMessage, StatusCode};
use rsipstack::transport::TransportEvent;
use tracing::debug;

use super::config::ScannerAction;
use super::wire;

/// The stack's UDP read buffer: anything larger would be truncated by it, so it is
/// refused here with 513 instead.
const STACK_UDP_BUF: usize = 8192;
/// Largest datagram we read at all (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Scanner settings shared by the UDP guard and the message inspector.
#[derive(Debug, Clone)]
pub struct ScannerRules {
    /// Case-insensitive User-Agent substrings that mark a scanner (empty ones match nothing).
    pub patterns: Vec<String>,
    /// Drop a scanner's requests silently, or refuse them with 403.
    pub action: ScannerAction,
}

/// A UDP socket wrapper that screens datagrams before the stack's parser sees them.
pub(crate) struct GuardedUdpSocket {
    socket: Arc<tokio::net::UdpSocket>,
    scratch: tokio::sync::Mutex<Vec<u8>>,
    scanners: ScannerRules,
}

/// What the UDP guard does with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatagramVerdict {
    /// Hand it to the SIP stack.
    Pass,
    /// Ignore it: a scanner, or nothing to answer to.
    Drop,
    /// Refuse it: send these bytes (a stateless SIP response) back to the source.
    Reply(Vec<u8>),
}

impl GuardedUdpSocket {
    pub fn new(socket: Arc<tokio::net::UdpSocket>, scanners: ScannerRules) -> Self {
        Self {
            socket,
            scratch: tokio::sync::Mutex::new(vec![0; MAX_DATAGRAM]),
            scanners,
        }
    }
}

/// The guard's decision on one datagram from `source`, before the SIP stack's parser sees it:
/// keep-alives and messages the stack can take pass, scanners are dropped or refused as
/// `scanners` says, and oversized (over `room`, the stack's read buffer, or its 8 KiB UDP
/// buffer), unparseable or incomplete requests are refused with the right 4xx/5xx when they
/// name a Via to answer to, dropped otherwise (fuzzed: fuzz/fuzz_targets/sip_guard.rs).
pub fn screen_datagram(
    packet: &[u8],
    source: SocketAddr,
    room: usize,
    scanners: &ScannerRules,
) -> DatagramVerdict {
    // Keep-alives and blank datagrams are the stack's business.
    if packet.iter().all(|b| b.is_ascii_whitespace()) {
        return DatagramVerdict::Pass;
    }
    let tag = || rsipstack::transaction::random_text(10);
    if packet.len() > room.min(STACK_UDP_BUF) {
        debug!(%source, len = packet.len(), "oversized datagram refused");
        return reply_or_drop(wire::salvage_response(
            packet,
            source,
            513,
            "Message Too Large",
            &tag(),
        ));
    }
    if wire::is_scanner(packet, &scanners.patterns) {
        debug!(%source, "scanner request");
        return match scanners.action {
            ScannerAction::Drop => DatagramVerdict::Drop,
            ScannerAction::Reject => reply_or_drop(wire::salvage_response(
                packet,
                source,
                403,
                "Forbidden",
                &tag(),
            )),
        };
    }
    if let Some(reason) = content_length_problem(packet) {
        debug!(%source, reason, "bad Content-Length");
        return reply_or_drop(wire::salvage_response(packet, source, 400, reason, &tag()));
    }
    match SipMessage::try_from(packet) {
        Ok(_) => DatagramVerdict::Pass,
        Err(e) => {
            debug!(%source, error = %e, "unparseable SIP message");
            let version_ok =
                wire::raw_request_version(packet).is_none_or(|v| v.eq_ignore_ascii_case("SIP/2.0"));
            let (code, reason) = if !version_ok {
                (505, "Version Not Supported")
            } else if wire::raw_method(packet).is_some_and(|m| m.parse::<Method>().is_err()) {
                // The stack's parser knows only the methods it implements.
                (501, "Not Implemented")
            } else {
                (400, "Bad Request")
            };
            reply_or_drop(wire::salvage_response(packet, source, code, reason, &tag()))
        }
    }
}

fn reply_or_drop(resp: Option<Vec<u8>>) -> DatagramVerdict {
    resp.map_or(DatagramVerdict::Drop, DatagramVerdict::Reply)
}

/// RFC 3261 §18.3: over UDP a Content-Length larger than the body, or one that is not a
/// number, makes the request bad.
fn content_length_problem(packet: &[u8]) -> Option<&'static str> {
    let (head_end, sep) = find_head_end(packet)?;
    let head = String::from_utf8_lossy(&packet[..head_end]);
    let body_len = packet.len() - head_end - sep;
    for line in head.lines().skip(1) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("l") {
            return match v.trim().parse::<usize>() {
                Ok(n) if n > body_len => Some("Content-Length Exceeds Body"),
                Ok(_) => None,
                Err(_) => Some("Bad Content-Length"),
            };
        }
    }
    None
}

fn find_head_end(packet: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = packet.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, 4));
    }
    packet.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2))
}

#[async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut scratch = self.scratch.lock().await;
        loop {
            let (len, source) = self.socket.recv_from(&mut scratch).await?;
            match screen_datagram(&scratch[..len], source, buf.len(), &self.scanners) {
                DatagramVerdict::Pass => {
                    buf[..len].copy_from_slice(&scratch[..len]);
                    return Ok((len, source));
                }
                DatagramVerdict::Drop => {}
                DatagramVerdict::Reply(bytes) => {
                    self.socket.send_to(&bytes, source).await.ok();
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// Why a parsed request cannot be processed, as a status code and reason.
pub(crate) fn check_request(req: &Request) -> Option<(u16, &'static str)> {
    if req.version != rsipstack::sip::Version::V2 {
        return Some((505, "Version Not Supported"));
    }
    if req.headers.iter().any(|h| h.value().contains('\0')) {
        return Some((400, "NUL In Header"));
    }
    if req.call_id_header().is_err() {
        return Some((400, "Missing Call-ID"));
    }
    if req.from_header().is_err() {
        return Some((400, "Missing From"));
    }
    if req.to_header().is_err() {
        return Some((400, "Missing To"));
    }
    let Ok(cseq) = req.cseq_header() else {
        return Some((400, "Missing CSeq"));
    };
    match (cseq.seq(), cseq.method()) {
        (Ok(seq), Ok(method)) => {
            if seq >= 1 << 31 {
                return Some((400, "Bad CSeq"));
            }
            if method != req.method && !(req.method == Method::Ack && method == Method::Invite) {
                return Some((400, "CSeq Method Mismatch"));
            }
        }
        _ => return Some((400, "Bad CSeq")),
    }
    None
}

/// Stateless response to a refused request, echoing the headers it has.
pub(crate) fn stateless_response(req: &Request, code: u16, user_agent: &str) -> Response {
    let mut headers: Vec<Header> = Vec::new();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let value = to.value();
                if value.to_ascii_lowercase().contains(";tag=") {
                    headers.push(h.clone());
                } else {
                    headers.push(Header::To(
                        format!("{value};tag={}", rsipstack::transaction::random_text(10)).into(),
                    ));
                }
            }
            _ => {}
        }
    }
    headers.push(Header::Server(user_agent.to_string().into()));
    headers.push(Header::ContentLength(0u32.into()));
    Response {
        status_code: StatusCode::from(code),
        wire_reason: None,
        version: rsipstack::sip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// Checks every parsed message (UDP and TCP) before the transaction layer.
pub(crate) struct SanityInspector {
    pub user_agent: String,
    pub scanners: ScannerRules,
}

#[async_trait]
impl rsipstack::transaction::endpoint::TransportEventInspector for SanityInspector {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(SipMessage::Request(req), conn, from) = &event else {
            return Some(event);
        };
        // Stream transports skip the datagram guard, so scanners are screened here too.
        let ua = req.headers.iter().find_map(|h| match h {
            Header::UserAgent(ua) => Some(ua.value().to_ascii_lowercase()),
            _ => None,
        });
        let scanner = ua.is_some_and(|ua| {
            self.scanners
                .patterns
                .iter()
                .any(|p| !p.is_empty() && ua.contains(&p.to_ascii_lowercase()))
        });
        let verdict = if scanner {
            match self.scanners.action {
                ScannerAction::Drop => return None,
                ScannerAction::Reject => Some((403, "Forbidden")),
            }
        } else {
            check_request(req)
        };
        let Some((code, reason)) = verdict else {
            return Some(event);
        };
        debug!(%from, code, reason, method = %req.method, "request refused before the transaction layer");
        if req.method != Method::Ack && req.via_header().is_ok() {
            let resp = stateless_response(req, code, &self.user_agent);
            conn.send(resp.into(), Some(from)).await.ok();
        }
        None
    }
}
