//! Raw SIP over UDP or TCP: hand-written requests and a client that reads the responses, for
//! malformed-input and policy probes and for liveness checks of peers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Raw SIP over UDP or TCP for malformed-input and policy probes.
pub struct RawClient {
    udp: Option<tokio::net::UdpSocket>,
    tcp: Option<tokio::net::TcpStream>,
    pub local: SocketAddr,
    target: SocketAddr,
    buf: Vec<u8>,
    /// The last response `response_for` matched (for diagnostics).
    pub last_response: Option<String>,
}

impl RawClient {
    pub async fn udp(target: SocketAddr) -> RawClient {
        Self::udp_from("127.0.0.1:0", target).await
    }

    /// A UDP client bound to `bind` (e.g. `127.0.0.2:0` to be another source address).
    pub async fn udp_from(bind: &str, target: SocketAddr) -> RawClient {
        let s = tokio::net::UdpSocket::bind(bind).await.unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            udp: Some(s),
            tcp: None,
            local,
            target,
            buf: Vec::new(),
            last_response: None,
        }
    }

    pub async fn tcp(target: SocketAddr) -> RawClient {
        let s = tokio::net::TcpStream::connect(target).await.unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            udp: None,
            tcp: Some(s),
            local,
            target,
            buf: Vec::new(),
            last_response: None,
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.udp.is_some() { "UDP" } else { "TCP" }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        if let Some(u) = &self.udp {
            u.send_to(bytes, self.target).await.ok();
        } else if let Some(t) = &mut self.tcp {
            t.write_all(bytes).await.ok();
        }
    }

    /// Next message (UDP datagram or TCP frame by Content-Length), within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(u) = &self.udp {
            let mut b = vec![0u8; 65536];
            let (n, _) = tokio::time::timeout_at(deadline, u.recv_from(&mut b))
                .await
                .ok()?
                .ok()?;
            return Some(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        let t = self.tcp.as_mut()?;
        loop {
            if let Some(msg) = take_frame(&mut self.buf) {
                return Some(msg);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, t.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for a response whose Call-ID is `call_id`; returns its status code.
    pub async fn response_for(&mut self, call_id: &str, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let msg = self
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await?;
            // Final responses only.
            if !msg.starts_with("SIP/2.0 ") || msg.starts_with("SIP/2.0 1") {
                continue;
            }
            if call_id.is_empty() || msg.contains(call_id) {
                let code = msg.get(8..11)?.parse().ok();
                self.last_response = Some(msg);
                return code;
            }
        }
        None
    }

    /// Sends an OPTIONS and returns its final status (liveness probe).
    pub async fn options(&mut self) -> Option<u16> {
        let call_id = format!("alive-{}", fastrand_u64());
        let msg = request("OPTIONS", &call_id, self.local, self.transport(), "", "");
        self.send(msg.as_bytes()).await;
        self.response_for(&call_id, Duration::from_secs(3)).await
    }
}

/// The first whole SIP message in a stream's bytes (CRLF keep-alives skipped), framed by its
/// Content-Length, taken out of `buf`; `None` until one has arrived in full.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<String> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let cl = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case("content-length") || k.trim() == "l")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if buf.len() < end + cl {
        return None;
    }
    let msg: Vec<u8> = buf.drain(..end + cl).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

pub fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A well-formed out-of-dialog request; `extra` headers end with CRLF, `body` is the SDP.
pub fn request(
    method: &str,
    call_id: &str,
    local: SocketAddr,
    transport: &str,
    extra: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{method} sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{}\r\n\
         From: <sip:probe@{local}>;tag=p{}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:probe@{local}>\r\nMax-Forwards: 70\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        fastrand_u64(),
        fastrand_u64(),
        body.len()
    )
}
