//! Wire fixes for two digest quirks of the pinned stack, applied at its message seam:
//! it only understands `algorithm=SHA256` (RFC 7616/8760 spell it `SHA-256`), and it
//! quotes `qop` in credentials (RFC 3261 §25 wants the bare token).

use rsipstack::sip::{Header, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

pub(crate) struct DigestCompat;

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

impl MessageInspector for DigestCompat {
    fn before_send(&self, mut msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Request(req) = &mut msg {
            apply(&mut req.headers, true);
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
}
