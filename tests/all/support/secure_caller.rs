//! A caller over SIP over TLS with SDES-keyed SRTP or plain RTP, for the SRTP robustness test
//! (which sends the host tampered, replayed and re-keyed packets) and the `secure-load`
//! generator (hundreds of such calls in a process of its own).
//!
//! The SIP messages and SDP are written here, independent of the host's code, from RFC 3261
//! (§8.1.1 request headers; §13.2.2.4 and §12.2.1.1: the ACK of a 2xx and the BYE are requests
//! in the dialog, to the remote target, each with a new branch; §8.1.1.7 and §17.1.1.3: the ACK
//! of a failure response keeps the INVITE's branch and takes the response's To — checked against
//! the RFC text quoted on sip-implementors, mail-archive.com/sip-implementors@cs.columbia.edu/
//! msg03551.html) and RFC 4568 §9 (`a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:
//! length]`, lifetime `[2^]digits`, as the grammar at tech-invite.com/fo-abnf/
//! tinv-fo-abnf-sdpatt-12.html gives it), with `a=rtcp` of RFC 3605. The SRTP is the
//! project's own (`switchboard::media::srtp`), as the benchmark asks of its callers: its RFC 3711
//! vectors are checked in its unit tests, and baresip and pjsua2 (libsrtp) interoperate with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use switchboard::media::g711::ulaw_encode;
use switchboard::media::srtp::{MasterKey, SrtpError, SrtpKeys, SrtpSession, Suite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::raw_sip::{fastrand_u64, take_frame};

/// One SIP connection over TLS: messages out, whole messages in.
pub struct SipTls {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Our end of the connection (in Via and Contact).
    pub local: SocketAddr,
}

impl SipTls {
    /// Connects to `target` and verifies its certificate for the address dialled.
    pub async fn connect(
        target: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<SipTls> {
        let tcp = TcpStream::connect(target).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let name = ServerName::IpAddress(target.ip().into());
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        Ok(SipTls {
            stream,
            buf: Vec::new(),
            local,
        })
    }

    pub async fn send(&mut self, message: &str) -> std::io::Result<()> {
        self.stream.write_all(message.as_bytes()).await
    }

    /// The next message, or `None` when the connection closed. Cancel-safe (`read_buf` reads
    /// nothing unless it completes), so it can wait in a `select!` beside the media.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(message) = take_frame(&mut self.buf) {
                return Some(message);
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Answers a request the host sent us (an in-dialog BYE or OPTIONS) with 200 OK.
    pub async fn answer_ok(&mut self, request: &str) -> std::io::Result<()> {
        self.send(&ok_to(request)).await
    }
}

/// The value of the first header `name` (or its compact form) in `message`.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        _ => "",
    };
    head(message).lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let key = key.trim();
        (key.eq_ignore_ascii_case(name) || key.eq_ignore_ascii_case(compact)).then(|| value.trim())
    })
}

fn head(message: &str) -> &str {
    message.split("\r\n\r\n").next().unwrap_or(message)
}

/// The body of a message (after the blank line).
pub fn body(message: &str) -> &str {
    message.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The status code of a response; `None` for a request.
pub fn status(message: &str) -> Option<u16> {
    message.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// A 200 OK to `request` (its Vias, From, To, Call-ID and CSeq copied, RFC 3261 §8.2.6.2).
fn ok_to(request: &str) -> String {
    let mut response = String::from("SIP/2.0 200 OK\r\n");
    for line in head(request).lines().skip(1) {
        let key = line.split(':').next().unwrap_or("").trim();
        let copied = ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];
        if copied.iter().any(|c| key.eq_ignore_ascii_case(c)) {
            response.push_str(line);
            response.push_str("\r\n");
        }
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    response
}

/// Our side of one dialog: the requests we send in it.
#[derive(Clone)]
pub struct Dialog {
    pub call_id: String,
    local: SocketAddr,
    from_tag: String,
    /// The To header value of the established dialog (the host's tag in it).
    to: String,
    /// The Request-URI: the one dialled (e.g. `sip:1000@127.0.0.1:5061;transport=tls`), then
    /// the host's Contact for requests in the dialog.
    target: String,
    cseq: u32,
    /// The branch of the last INVITE: the ACK of a failure response is in its transaction.
    invite_branch: u64,
}

impl Dialog {
    pub fn new(uri: &str, local: SocketAddr) -> Dialog {
        let to = format!("<{}>", uri.split(';').next().unwrap_or(uri));
        Dialog {
            call_id: format!("secure-{:016x}@127.0.0.1", fastrand_u64()),
            local,
            from_tag: format!("{:x}", fastrand_u64()),
            to,
            target: uri.to_string(),
            cseq: 0,
            invite_branch: 0,
        }
    }

    fn request(&self, method: &str, branch: u64, sdp: &str) -> String {
        let content_type = if sdp.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{branch:x};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local};transport=tls>\r\n{content_type}\
             Content-Length: {len}\r\n\r\n{sdp}",
            uri = self.target,
            cseq = self.cseq,
            local = self.local,
            from_tag = self.from_tag,
            to = self.to,
            call_id = self.call_id,
            len = sdp.len(),
        )
    }

    /// The INVITE (the first, or a re-INVITE once the dialog is up) offering `sdp`.
    pub fn invite(&mut self, sdp: &str) -> String {
        self.cseq += 1;
        self.invite_branch = fastrand_u64();
        self.request("INVITE", self.invite_branch, sdp)
    }

    /// The ACK of the 2xx to the last INVITE (a transaction of its own).
    pub fn ack(&self) -> String {
        self.request("ACK", fastrand_u64(), "")
    }

    /// The ACK of a failure response to the last INVITE (RFC 3261 §17.1.1.3: its branch, and
    /// the To of the response).
    pub fn ack_failure(&self, response: &str) -> String {
        let mut ack = self.clone();
        if let Some(to) = header(response, "to") {
            ack.to = to.to_string();
        }
        ack.request("ACK", self.invite_branch, "")
    }

    pub fn bye(&mut self) -> String {
        self.cseq += 1;
        self.request("BYE", fastrand_u64(), "")
    }

    /// Whether `message` is a final response to our last request in this dialog.
    pub fn is_final_response(&self, message: &str) -> bool {
        status(message).is_some_and(|s| s >= 200)
            && header(message, "call-id") == Some(self.call_id.as_str())
            && header(message, "cseq")
                .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok())
                == Some(self.cseq)
    }

    /// Takes the dialog's remote tag and target from a 2xx to the INVITE.
    pub fn established(&mut self, ok: &str) {
        if let Some(to) = header(ok, "to") {
            self.to = to.to_string();
        }
        if let Some(contact) = header(ok, "contact") {
            let uri = match contact.split_once('<') {
                Some((_, rest)) => rest.split('>').next().unwrap_or(rest),
                None => contact.split(';').next().unwrap_or(contact),
            };
            self.target = uri.to_string();
        }
    }
}

/// Sends `request` and waits for its final response (answering what the host asks meanwhile).
pub async fn transact(
    sip: &mut SipTls,
    dialog: &Dialog,
    request: &str,
    timeout: Duration,
) -> Result<String, String> {
    sip.send(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let wait = async {
        loop {
            let Some(message) = sip.recv().await else {
                return Err("the connection closed".to_string());
            };
            if dialog.is_final_response(&message) {
                return Ok(message);
            }
            if status(&message).is_none() && !message.starts_with("ACK ") {
                sip.answer_ok(&message)
                    .await
                    .map_err(|e| format!("answering: {e}"))?;
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("no final response in {timeout:?}"))?
}

/// An `a=crypto` value offering `key` with `suite`; `params` follow the key (`|2^31`, an MKI
/// `|1:4`).
pub fn crypto_attribute(suite: Suite, key: &MasterKey, params: &str) -> String {
    format!("1 {} inline:{}{params}", suite.name(), key.inline())
}

/// An audio offer of PCMU (and telephone-event) from 127.0.0.1: RTP/SAVP with `crypto`, or
/// RTP/AVP without.
pub fn offer(rtp_port: u16, rtcp_port: u16, crypto: Option<&str>, version: u32) -> String {
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let crypto = crypto.map_or(String::new(), |c| format!("a=crypto:{c}\r\n"));
    format!(
        "v=0\r\no=caller 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp:{rtcp_port}\r\n\
         {crypto}a=ptime:20\r\na=sendrecv\r\n"
    )
}

/// What the host's answer says: where its RTP goes, and its key when it took SRTP.
#[derive(Debug)]
pub struct Answer {
    pub rtp: SocketAddr,
    pub proto: String,
    pub crypto: Option<(Suite, MasterKey)>,
}

pub fn parse_answer(sdp: &str) -> Option<Answer> {
    let (mut ip, mut port, mut proto, mut crypto) = (None, None, None, None);
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.trim().parse::<std::net::IpAddr>().ok();
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut words = m.split_whitespace();
            port = words.next()?.parse::<u16>().ok();
            proto = words.next().map(str::to_string);
        } else if let Some(value) = line.strip_prefix("a=crypto:") {
            let mut words = value.split_whitespace().skip(1);
            let suite = Suite::from_name(words.next()?)?;
            let key = words.next()?.strip_prefix("inline:")?.split('|').next()?;
            crypto = Some((suite, MasterKey::from_inline(key)?));
        }
    }
    Some(Answer {
        rtp: SocketAddr::new(ip?, port?),
        proto: proto?,
        crypto,
    })
}

/// 20 ms of a 400 Hz tone as PCMU (20 samples a period, so every packet is the same).
pub fn tone_frame() -> Vec<u8> {
    (0..160)
        .map(|i| {
            let phase = i as f64 * 2.0 * std::f64::consts::PI * 400.0 / 8000.0;
            ulaw_encode((phase.sin() * 8000.0) as i16)
        })
        .collect()
}

/// Our RTP stream of 20 ms PCMU packets, protected with SRTP when the call has keys, and the
/// check of what comes back.
pub struct RtpStream {
    ssrc: u32,
    pub seq: u16,
    timestamp: u32,
    pub srtp: Option<SrtpSession>,
}

impl RtpStream {
    /// `keys`: ours to send, the host's to receive.
    pub fn new(keys: Option<&SrtpKeys>, first_seq: u16) -> RtpStream {
        RtpStream {
            ssrc: fastrand_u64() as u32,
            seq: first_seq,
            timestamp: fastrand_u64() as u32,
            srtp: keys.map(SrtpSession::new),
        }
    }

    /// The next packet carrying `payload` into `out` (cleared first), protected when the
    /// stream has keys.
    pub fn next_packet(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        self.next_plain(payload, out);
        if let Some(srtp) = &mut self.srtp {
            srtp.protect_rtp(out, 0).expect("a whole RTP packet");
        }
    }

    /// The next packet carrying `payload` into `out` (cleared first), unprotected.
    pub fn next_plain(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0x80, 0]);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(160);
    }

    /// A datagram from the host: authenticated and decrypted (SRTP) or taken as it is, into
    /// `plain`; its payload is `plain[12..]` (the host sends no CSRCs or extensions).
    pub fn receive(&mut self, datagram: &[u8], plain: &mut Vec<u8>) -> Result<(), SrtpError> {
        match &mut self.srtp {
            Some(srtp) => srtp.unprotect_rtp(datagram, plain),
            None => {
                plain.clear();
                plain.extend_from_slice(datagram);
                Ok(())
            }
        }
    }
}
