//! Text-level helpers that need no SIP stack: DTMF INFO bodies, sipfrag, SDP sanity,
//! REFER target matching, and the salvage path that answers datagrams the parser refused.

/// A DTMF digit carried by SIP INFO, with its duration in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    pub digit: char,
    pub duration_ms: u32,
}

/// Default tone length when an INFO body gives none (a typical key press).
const DEFAULT_DTMF_MS: u32 = 160;

fn normalise_digit(s: &str) -> Option<char> {
    let s = s.trim();
    match s {
        "10" => return Some('*'),
        "11" => return Some('#'),
        _ => {}
    }
    let mut chars = s.chars();
    let c = chars.next()?.to_ascii_uppercase();
    if chars.next().is_some() {
        return None;
    }
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
}

/// Parses an INFO body of type `application/dtmf-relay` (`Signal=5\r\nDuration=160`)
/// or `application/dtmf` (just the digit). Returns `None` for other types or bad bodies.
pub fn parse_info_dtmf(content_type: &str, body: &str) -> Option<InfoDtmf> {
    let ct = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration_ms = DEFAULT_DTMF_MS;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = normalise_digit(v),
                    "duration" => duration_ms = v.trim().parse().unwrap_or(DEFAULT_DTMF_MS),
                    _ => {}
                }
            }
            digit.map(|digit| InfoDtmf { digit, duration_ms })
        }
        "application/dtmf" => {
            normalise_digit(body.lines().next().unwrap_or("")).map(|digit| InfoDtmf {
                digit,
                duration_ms: DEFAULT_DTMF_MS,
            })
        }
        _ => None,
    }
}

/// The `application/dtmf-relay` body announcing `digit` (the form `parse_info_dtmf` reads),
/// or `None` for a character that is not a DTMF key.
pub fn info_dtmf_body(digit: char, duration_ms: u32) -> Option<String> {
    let digit = normalise_digit(&digit.to_string())?;
    Some(format!("Signal={digit}\r\nDuration={duration_ms}\r\n"))
}

/// The status line of a `message/sipfrag` body: `SIP/2.0 200 OK` → `(200, "OK")`.
pub fn parse_sipfrag(body: &str) -> Option<(u16, String)> {
    let line = body.lines().find(|l| l.trim_start().starts_with("SIP/"))?;
    let mut parts = line.trim().splitn(3, ' ');
    parts.next()?;
    let code: u16 = parts.next()?.parse().ok()?;
    (100..700)
        .contains(&code)
        .then(|| (code, parts.next().unwrap_or("").trim().to_string()))
}

/// Minimal structural check of an SDP body: enough to refuse garbage with 400 before
/// the media layer sees it. Negotiation (codecs, ports) is the consumer's job.
pub fn sdp_looks_valid(body: &str) -> bool {
    let mut lines = body.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("v=0") {
        return false;
    }
    let (mut origin, mut media) = (false, false);
    for l in lines {
        let b = l.as_bytes();
        if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
            return false;
        }
        origin |= l.starts_with("o=");
        media |= l.starts_with("m=");
    }
    origin && media
}

/// Whether an SDP offer puts the other side on hold: `a=sendonly`, `a=inactive`
/// (session or media level) or the legacy `c=IN IP4 0.0.0.0`.
pub fn sdp_is_hold(body: &str) -> bool {
    body.lines()
        .map(str::trim)
        .any(|l| l == "a=sendonly" || l == "a=inactive" || l.starts_with("c=IN IP4 0.0.0.0"))
}

/// The URI inside a Refer-To (or similar name-addr) value, without display name,
/// angle brackets, header parameters (`?Replaces=...`) or header-level params.
pub fn name_addr_uri(value: &str) -> String {
    let v = value.trim();
    let inner = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    inner.split('?').next().unwrap_or(inner).trim().to_string()
}

/// Display name of a name-addr (`"Alice" <sip:a@h>` → `Alice`).
pub fn display_name(value: &str) -> Option<String> {
    let (before, _) = value.split_once('<')?;
    let name = before.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether a transfer target matches the allow list (exact, or prefix with trailing `*`).
pub fn refer_target_allowed(target: &str, allow: &[String]) -> bool {
    let target = target.to_ascii_lowercase();
    allow.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_suffix('*') {
            Some(prefix) => target.starts_with(prefix),
            None => target == p,
        }
    })
}

/// User part of a SIP/tel URI string (`sip:+1555@host;x` → `+1555`, `tel:+1555` → `+1555`).
pub fn uri_user(uri: &str) -> Option<String> {
    let uri = name_addr_uri(uri);
    let rest = uri.split_once(':').map(|(_, r)| r)?;
    if uri.to_ascii_lowercase().starts_with("tel:") {
        return Some(rest.split(';').next()?.to_string()).filter(|s| !s.is_empty());
    }
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next()?.split(':').next()?;
    (!user.is_empty()).then(|| user.to_string())
}

/// Value of the first header named one of `names` (full or compact form) in raw message text.
fn raw_header<'a>(head: &'a str, names: &[&str]) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        let k = k.trim();
        names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(k))
            .then(|| v.trim())
    })
}

/// Whether the raw message's User-Agent matches one of the scanner patterns.
pub fn is_scanner(packet: &[u8], patterns: &[String]) -> bool {
    let head_len = packet.len().min(4096);
    let head = String::from_utf8_lossy(&packet[..head_len]);
    let Some(ua) = raw_header(&head, &["User-Agent"]) else {
        return false;
    };
    let ua = ua.to_ascii_lowercase();
    patterns
        .iter()
        .any(|p| !p.is_empty() && ua.contains(&p.to_ascii_lowercase()))
}

/// Whether a raw datagram starts like a request that is not an ACK (ACKs are never answered).
pub fn raw_is_answerable_request(packet: &[u8]) -> bool {
    let first = packet.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(_), Some(v)) => {
            m != "ACK" && m.bytes().all(|b| b.is_ascii_alphabetic()) && v.starts_with("SIP/")
        }
        _ => false,
    }
}

/// The method token of a raw request line.
pub fn raw_method(packet: &[u8]) -> Option<String> {
    let first = packet.split(|b| *b == b'\n').next()?;
    let first = String::from_utf8_lossy(first);
    first.split_whitespace().next().map(str::to_string)
}

/// The SIP version a raw request line claims (`SIP/2.0`).
pub fn raw_request_version(packet: &[u8]) -> Option<String> {
    let first = packet.split(|b| *b == b'\n').next()?;
    let first = String::from_utf8_lossy(first);
    first
        .split_whitespace()
        .nth(2)
        .map(|v| v.trim().to_string())
}

/// Builds a stateless response to a request the parser refused, from its raw headers.
/// Needs a Via, From, To, Call-ID and CSeq to be answerable; otherwise `None` (drop).
/// The response goes back to the packet source, so `received`/`rport` are set on the Via.
pub fn salvage_response(
    packet: &[u8],
    source: std::net::SocketAddr,
    code: u16,
    reason: &str,
    tag: &str,
) -> Option<Vec<u8>> {
    if !raw_is_answerable_request(packet) {
        return None;
    }
    let head_len = packet.len().min(16 * 1024);
    let head = String::from_utf8_lossy(&packet[..head_len]).replace('\0', "");
    let head = head.split("\r\n\r\n").next().unwrap_or(&head);
    let via = raw_header(head, &["Via", "v"])?;
    // Echo what the request carried; a missing Call-ID or CSeq is exactly why it is refused.
    let optional = [
        ("From", raw_header(head, &["From", "f"])),
        ("To", raw_header(head, &["To", "t"])),
        ("Call-ID", raw_header(head, &["Call-ID", "i"])),
        ("CSeq", raw_header(head, &["CSeq"])),
    ];
    // Bound what we echo: a refused request may carry absurd header values.
    if via.len() > 1024
        || optional
            .iter()
            .any(|(_, v)| v.is_some_and(|v| v.len() > 1024))
    {
        return None;
    }
    let top_via = via.split(',').next()?.trim();
    let via_params: Vec<&str> = top_via
        .split(';')
        .filter(|p| {
            let p = p.trim().to_ascii_lowercase();
            p != "rport" && !p.starts_with("rport=") && !p.starts_with("received=")
        })
        .collect();
    let mut out = format!(
        "SIP/2.0 {code} {reason}\r\nVia: {};received={};rport={}\r\n",
        via_params.join(";"),
        source.ip(),
        source.port()
    );
    for (name, value) in optional {
        let Some(value) = value else { continue };
        if name == "To" && !value.to_ascii_lowercase().contains(";tag=") {
            out.push_str(&format!("To: {value};tag={tag}\r\n"));
        } else {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmf_info_bodies() {
        assert_eq!(
            parse_info_dtmf("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"),
            Some(InfoDtmf {
                digit: '5',
                duration_ms: 160
            })
        );
        assert_eq!(
            parse_info_dtmf("application/dtmf-relay", "Signal= #\nDuration=250")
                .unwrap()
                .digit,
            '#'
        );
        assert_eq!(
            parse_info_dtmf("application/dtmf-relay; charset=x", "Signal=11")
                .unwrap()
                .digit,
            '#'
        );
        assert_eq!(
            parse_info_dtmf("Application/DTMF", "7").unwrap(),
            InfoDtmf {
                digit: '7',
                duration_ms: 160
            }
        );
        assert_eq!(parse_info_dtmf("application/dtmf-relay", "Signal=Z"), None);
        for digit in ['0', '9', '*', '#', 'a'] {
            let body = info_dtmf_body(digit, 250).unwrap();
            assert_eq!(
                parse_info_dtmf("application/dtmf-relay", &body),
                Some(InfoDtmf {
                    digit: digit.to_ascii_uppercase(),
                    duration_ms: 250
                })
            );
        }
        assert_eq!(info_dtmf_body('x', 100), None);
        assert_eq!(parse_info_dtmf("text/plain", "5"), None);
    }

    #[test]
    fn sipfrag() {
        assert_eq!(
            parse_sipfrag("SIP/2.0 200 OK\r\n"),
            Some((200, "OK".into()))
        );
        assert_eq!(
            parse_sipfrag("SIP/2.0 486 Busy Here"),
            Some((486, "Busy Here".into()))
        );
        assert_eq!(parse_sipfrag("SIP/2.0 100"), Some((100, String::new())));
        assert_eq!(parse_sipfrag("garbage"), None);
        assert_eq!(parse_sipfrag("SIP/2.0 9999 x"), None);
    }

    #[test]
    fn sdp_sanity() {
        assert!(sdp_looks_valid(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        ));
        assert!(!sdp_looks_valid("this is not sdp"));
        assert!(!sdp_looks_valid("v=0\r\no=- 1 1 IN IP4 x\r\n"));
        assert!(!sdp_looks_valid(
            "v=0\r\no=x\r\nm=audio 1 RTP/AVP 0\r\nbroken line\r\n"
        ));
        assert!(sdp_is_hold("v=0\r\nm=audio 1 RTP/AVP 0\r\na=sendonly\r\n"));
        assert!(sdp_is_hold("v=0\r\nc=IN IP4 0.0.0.0\r\n"));
        assert!(!sdp_is_hold("v=0\r\na=sendrecv\r\n"));
    }

    #[test]
    fn uris_and_refer_targets() {
        assert_eq!(
            name_addr_uri("\"Bob\" <sip:bob@h;transport=tcp?Replaces=x>;p=1"),
            "sip:bob@h;transport=tcp"
        );
        assert_eq!(name_addr_uri("sip:bob@h;x=1"), "sip:bob@h");
        assert_eq!(
            uri_user("<sip:+1555@host:5060;user=phone>"),
            Some("+1555".into())
        );
        assert_eq!(uri_user("tel:+1555;phone-context=x"), Some("+1555".into()));
        assert_eq!(uri_user("sip:host"), None);
        assert_eq!(
            display_name("\"Alice B\" <sip:a@h>;tag=1"),
            Some("Alice B".into())
        );
        assert_eq!(display_name("<sip:a@h>"), None);
        let allow = vec!["sip:agent@pbx".to_string(), "sip:+1*".to_string()];
        assert!(refer_target_allowed("sip:agent@pbx", &allow));
        assert!(refer_target_allowed("sip:+1555@x", &allow));
        assert!(!refer_target_allowed("sip:evil@x", &allow));
        assert!(!refer_target_allowed("sip:agent@pbx", &[]));
    }

    #[test]
    fn scanner_detection() {
        let p = b"OPTIONS sip:100@1.2.3.4 SIP/2.0\r\nVia: SIP/2.0/UDP 1.1.1.1\r\nUser-Agent: friendly-scanner\r\n\r\n";
        assert!(is_scanner(p, &["Friendly-Scanner".into()]));
        assert!(!is_scanner(p, &["sipvicious".into()]));
    }

    #[test]
    fn salvage() {
        let src: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let p = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;rport\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nContent-Length: 999\r\n\r\n";
        let r =
            String::from_utf8(salvage_response(p, src, 400, "Bad Request", "t1").unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(r.contains("branch=z9hG4bKx;received=127.0.0.1;rport=4000"));
        assert!(r.contains("To: <sip:a@b>;tag=t1"));
        assert!(
            salvage_response(b"ACK sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", src, 400, "x", "t")
                .is_none()
        );
        assert!(salvage_response(b"SIP/2.0 200 OK\r\n\r\n", src, 400, "x", "t").is_none());
        assert!(salvage_response(b"\x00\x01garbage", src, 400, "x", "t").is_none());
        let no_callid = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let r =
            String::from_utf8(salvage_response(no_callid, src, 400, "Bad Request", "t").unwrap())
                .unwrap();
        assert!(r.contains("CSeq: 1 OPTIONS") && !r.contains("Call-ID"));
        assert!(
            salvage_response(
                b"OPTIONS sip:a@b SIP/2.0\r\nFrom: x\r\n\r\n",
                src,
                400,
                "x",
                "t"
            )
            .is_none()
        );
    }
}
