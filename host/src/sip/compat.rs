//! Wire fixes for quirks of the pinned stack, applied at its message seam: two in digest
//! credentials (it only understands `algorithm=SHA256`, which RFC 7616/8760 spell `SHA-256`,
//! and it quotes `qop`, where RFC 3261 §25 wants the bare token), and one in the Via of requests
//! sent over TLS: the stack advertises the address of a listener of its own, and our TLS
//! listener is not one (see `tls.rs`), so it wrote `SIP/2.0/TLS` with another listener's port
//! (UDP's) or a connection's own. RFC 3261 §18.1.1 wants the address a new connection for the
//! responses would reach: our TLS listener.

use std::net::SocketAddr;

use rsipstack::sip::{Header, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

pub(crate) struct StackCompat {
    /// The address our TLS listener advertises, when there is one.
    pub tls_via: Option<SocketAddr>,
}

/// `algorithm=SHA-256[-sess]` (quoted or not) → the stack's `SHA256[-sess]`.
fn inbound_fix(v: &str) -> Option<String> {
    let lower = v.to_ascii_lowercase();
    if !lower.contains("sha-256") && !lower.contains("sha-512") {
        return None;
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.to_ascii_lowercase().find("algorithm=") {
        let (head, tail) = rest.split_at(i + "algorithm=".len());
        out.push_str(head);
        let quoted = tail.starts_with('"');
        let tail = tail.trim_start_matches('"');
        let end = tail.find([',', '"', ' ']).unwrap_or(tail.len());
        let alg = tail[..end].replace("SHA-", "SHA").replace("sha-", "sha");
        if quoted {
            out.push('"');
        }
        out.push_str(&alg);
        rest = &tail[end..];
    }
    out.push_str(rest);
    Some(out)
}

/// The stack's `SHA256` back to `SHA-256`, and `qop="auth"` to `qop=auth`, in credentials.
fn outbound_fix(v: &str) -> Option<String> {
    let fixed = v
        .replace("algorithm=SHA256-sess", "algorithm=SHA-256-sess")
        .replace("algorithm=SHA256", "algorithm=SHA-256")
        .replace("algorithm=SHA512", "algorithm=SHA-512")
        .replace("qop=\"auth-int\"", "qop=auth-int")
        .replace("qop=\"auth\"", "qop=auth");
    (fixed != v).then_some(fixed)
}

fn apply(headers: &mut rsipstack::sip::Headers, creds_out: bool) {
    for h in headers.iter_mut() {
        let value = match h {
            Header::WwwAuthenticate(x) if !creds_out => &mut x.0,
            Header::ProxyAuthenticate(x) if !creds_out => &mut x.0,
            Header::Authorization(x) => &mut x.0,
            Header::ProxyAuthorization(x) => &mut x.0,
            _ => continue,
        };
        let fixed = if creds_out {
            outbound_fix(value)
        } else {
            inbound_fix(value)
        };
        if let Some(f) = fixed {
            *value = f;
        }
    }
}

/// The top Via of a request we send over TLS with `listener` as its sent-by; other Vias as
/// they are.
fn tls_via_fix(via: &str, listener: SocketAddr) -> Option<String> {
    let (protocol, rest) = via.trim_start().split_once(char::is_whitespace)?;
    if !protocol.eq_ignore_ascii_case("SIP/2.0/TLS") {
        return None;
    }
    let rest = rest.trim_start();
    let params = rest.find(';').map_or("", |i| &rest[i..]);
    let fixed = format!("{protocol} {listener}{params}");
    (fixed != via).then_some(fixed)
}

impl MessageInspector for StackCompat {
    fn before_send(&self, mut msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Request(req) = &mut msg {
            apply(&mut req.headers, true);
            if let Some(listener) = self.tls_via
                && let Some(Header::Via(via)) =
                    req.headers.iter_mut().find(|h| matches!(h, Header::Via(_)))
                && let Some(fixed) = tls_via_fix(&via.0, listener)
            {
                via.0 = fixed;
            }
        }
        msg
    }

    fn after_received(&self, mut msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        match &mut msg {
            SipMessage::Response(resp) => apply(&mut resp.headers, false),
            SipMessage::Request(req) => apply(&mut req.headers, false),
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_translated_both_ways() {
        assert_eq!(
            inbound_fix(r#"Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth""#).unwrap(),
            r#"Digest realm="r", nonce="n", algorithm=SHA256, qop="auth""#
        );
        assert_eq!(
            inbound_fix(r#"Digest algorithm="SHA-256-sess""#).unwrap(),
            r#"Digest algorithm="SHA256-sess""#
        );
        assert_eq!(inbound_fix("Digest algorithm=MD5"), None);
        assert_eq!(
            outbound_fix(r#"Digest username="u", algorithm=SHA256, qop="auth", nc=00000001"#)
                .unwrap(),
            r#"Digest username="u", algorithm=SHA-256, qop=auth, nc=00000001"#
        );
        assert_eq!(outbound_fix("Digest algorithm=MD5, qop=auth"), None);
    }

    #[test]
    fn tls_via_names_our_tls_listener() {
        let listener: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        assert_eq!(
            tls_via_fix(
                "SIP/2.0/TLS 127.0.0.1:5060;branch=z9hG4bKx;rport;alias",
                listener
            )
            .unwrap(),
            "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKx;rport;alias"
        );
        assert_eq!(
            tls_via_fix("SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKx", listener),
            None
        );
        assert_eq!(
            tls_via_fix("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx", listener),
            None
        );
        let v6: SocketAddr = "[::1]:5061".parse().unwrap();
        assert_eq!(
            tls_via_fix("SIP/2.0/TLS [::1]:5060", v6).unwrap(),
            "SIP/2.0/TLS [::1]:5061"
        );
    }
}
