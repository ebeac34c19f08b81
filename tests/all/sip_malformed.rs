//! Malformed-input battery over UDP and TCP: after every case an OPTIONS still gets 200,
//! and each case that deserves an answer gets the right status.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::raw_sip::{RawClient, fastrand_u64};
use switchboard::sip::SipEndpoint;

/// Acceptable outcomes of one case.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly one of these final statuses.
    Code(&'static [u16]),
    /// No SIP response at all (nothing to answer to, or not answerable).
    Silence,
    /// One of these statuses, or silence (e.g. TCP closes on unparseable framing).
    CodeOrSilence(&'static [u16]),
}

struct Case {
    name: &'static str,
    udp: Expect,
    tcp: Expect,
    build: fn(&Ctx) -> Vec<u8>,
}

struct Ctx {
    local: SocketAddr,
    transport: &'static str,
    token: String,
}

impl Ctx {
    fn via(&self) -> String {
        format!(
            "Via: SIP/2.0/{} {};branch=z9hG4bK{};rport\r\n",
            self.transport, self.local, self.token
        )
    }
    fn from(&self) -> String {
        format!("From: <sip:probe@{}>;tag=f{}\r\n", self.local, self.token)
    }
    fn to(&self) -> &'static str {
        "To: <sip:1000@127.0.0.1>\r\n"
    }
    fn call_id(&self) -> String {
        format!("Call-ID: {}\r\n", self.token)
    }
    /// A request assembled from parts, each either the default header or an override.
    fn req(&self, start: &str, skip: &[&str], extra: &str, body: &str) -> Vec<u8> {
        let method = start.split_whitespace().next().unwrap_or("OPTIONS");
        let mut m = format!("{start}\r\n");
        let parts = [
            ("via", self.via()),
            ("from", self.from()),
            ("to", self.to().to_string()),
            ("call-id", self.call_id()),
            ("cseq", format!("CSeq: 1 {method}\r\n")),
            ("max-forwards", "Max-Forwards: 70\r\n".to_string()),
            (
                "contact",
                format!("Contact: <sip:probe@{}>\r\n", self.local),
            ),
        ];
        for (k, v) in parts {
            if !skip.contains(&k) {
                m.push_str(&v);
            }
        }
        m.push_str(extra);
        if !skip.contains(&"content-length") {
            m.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        m.push_str("\r\n");
        m.push_str(body);
        m.into_bytes()
    }
}

const OPT: &str = "OPTIONS sip:1000@127.0.0.1 SIP/2.0";
const INV: &str = "INVITE sip:1000@127.0.0.1 SIP/2.0";
const SDP_CT: &str = "Content-Type: application/sdp\r\n";

fn good_sdp() -> String {
    canned_sdp("sendrecv")
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "garbage text",
            udp: Silence,
            tcp: Silence,
            build: |_| b"hello world, this is not SIP\r\n\r\n".to_vec(),
        },
        Case {
            name: "binary noise",
            udp: Silence,
            tcp: Silence,
            build: |_| (0..300u32).map(|i| (i * 7919 % 251) as u8).collect(),
        },
        Case {
            name: "missing Call-ID",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["call-id"], "", ""),
        },
        Case {
            name: "missing Via",
            udp: Silence,
            tcp: CodeOrSilence(&[400]),
            build: |c| c.req(OPT, &["via"], "", ""),
        },
        Case {
            name: "missing CSeq",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["cseq"], "", ""),
        },
        Case {
            name: "missing From",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["from"], "", ""),
        },
        Case {
            name: "missing To",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["to"], "", ""),
        },
        Case {
            name: "CSeq method mismatch",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["cseq"], "CSeq: 1 INVITE\r\n", ""),
        },
        Case {
            name: "CSeq negative",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["cseq"], "CSeq: -1 OPTIONS\r\n", ""),
        },
        Case {
            name: "CSeq huge",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["cseq"], "CSeq: 99999999999 OPTIONS\r\n", ""),
        },
        Case {
            name: "CSeq not a number",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(OPT, &["cseq"], "CSeq: abc OPTIONS\r\n", ""),
        },
        Case {
            name: "Max-Forwards 0 (UA answers)",
            udp: Code(&[200, 483]),
            tcp: Code(&[200, 483]),
            build: |c| c.req(OPT, &["max-forwards"], "Max-Forwards: 0\r\n", ""),
        },
        Case {
            name: "unknown method",
            udp: Code(&[501, 405]),
            tcp: CodeOrSilence(&[501, 405]),
            build: |c| {
                c.req(
                    "FOOBAR sip:1000@127.0.0.1 SIP/2.0",
                    &["cseq"],
                    "CSeq: 1 FOOBAR\r\n",
                    "",
                )
            },
        },
        Case {
            name: "SIP/7.0",
            udp: Code(&[505]),
            tcp: CodeOrSilence(&[505, 400]),
            build: |c| c.req("OPTIONS sip:1000@127.0.0.1 SIP/7.0", &[], "", ""),
        },
        Case {
            name: "bad Request-URI",
            udp: Code(&[400, 416]),
            tcp: CodeOrSilence(&[400, 416]),
            build: |c| c.req("OPTIONS <<<>>> SIP/2.0", &[], "", ""),
        },
        Case {
            name: "Content-Length larger than body",
            udp: Code(&[400]),
            tcp: Silence,
            build: |c| c.req(OPT, &["content-length"], "Content-Length: 500\r\n", ""),
        },
        Case {
            name: "Content-Length negative",
            udp: Code(&[400]),
            tcp: CodeOrSilence(&[400]),
            build: |c| c.req(OPT, &["content-length"], "Content-Length: -5\r\n", ""),
        },
        Case {
            name: "Content-Length not a number",
            udp: Code(&[400]),
            tcp: CodeOrSilence(&[400]),
            build: |c| c.req(OPT, &["content-length"], "Content-Length: lots\r\n", ""),
        },
        Case {
            name: "header without colon",
            udp: Code(&[400, 200]),
            tcp: CodeOrSilence(&[400, 200]),
            build: |c| c.req(OPT, &[], "This line has no colon\r\n", ""),
        },
        Case {
            name: "8 KB header",
            udp: Code(&[513]),
            tcp: Code(&[200, 400, 513]),
            build: |c| c.req(OPT, &[], &format!("X-Junk: {}\r\n", "a".repeat(8192)), ""),
        },
        Case {
            name: "500 headers",
            udp: Code(&[200, 513]),
            tcp: Code(&[200, 400, 513]),
            build: |c| c.req(OPT, &[], &"X-H: 1\r\n".repeat(500), ""),
        },
        Case {
            name: "70 Vias",
            udp: Code(&[200, 513]),
            tcp: Code(&[200, 400, 513]),
            build: |c| {
                c.req(
                    OPT,
                    &[],
                    &"Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKextra\r\n".repeat(70),
                    "",
                )
            },
        },
        Case {
            name: "NUL bytes in header",
            udp: Code(&[400]),
            tcp: CodeOrSilence(&[400]),
            build: |c| c.req(OPT, &[], "X-Nul: a\0b\0c\r\n", ""),
        },
        Case {
            name: "high-bit bytes",
            udp: Code(&[200, 400]),
            tcp: CodeOrSilence(&[200, 400]),
            build: |c| {
                let mut m = c.req(OPT, &[], "X-Bin: PLACEHOLDER\r\n", "");
                let pos = m.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
                m.splice(pos..pos + 11, [0xff, 0xfe, 0xc3, 0x28, 0x80]);
                m
            },
        },
        Case {
            name: "LF-only line ends",
            udp: Code(&[200, 400]),
            tcp: CodeOrSilence(&[200, 400]),
            build: |c| {
                String::from_utf8(c.req(OPT, &[], "", ""))
                    .unwrap()
                    .replace("\r\n", "\n")
                    .into_bytes()
            },
        },
        Case {
            name: "compact headers (control)",
            udp: Code(&[200]),
            tcp: Code(&[200]),
            build: |c| {
                format!("{OPT}\r\nv: SIP/2.0/{} {};branch=z9hG4bK{}\r\nf: <sip:p@h>;tag=1\r\nt: <sip:1000@127.0.0.1>\r\ni: {}\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n", c.transport, c.local, c.token, c.token).into_bytes()
            },
        },
        Case {
            name: "folded header (control)",
            udp: Code(&[200]),
            tcp: Code(&[200]),
            build: |c| c.req(OPT, &[], "Subject: first part\r\n  second part\r\n", ""),
        },
        Case {
            name: "INVITE without SDP (late offer reaches consumer)",
            udp: Code(&[488]),
            tcp: Code(&[488]),
            build: |c| c.req(INV, &[], "", ""),
        },
        Case {
            name: "INVITE broken SDP",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(INV, &[], SDP_CT, "this is not an SDP body\r\n"),
        },
        Case {
            name: "INVITE SDP truncated",
            udp: Code(&[400]),
            tcp: Code(&[400]),
            build: |c| c.req(INV, &[], SDP_CT, "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"),
        },
        Case {
            name: "INVITE wrong Content-Type",
            udp: Code(&[415]),
            tcp: Code(&[415]),
            build: |c| c.req(INV, &[], "Content-Type: text/plain\r\n", "hello"),
        },
        Case {
            name: "INVITE no common codec (consumer 488)",
            udp: Code(&[488]),
            tcp: Code(&[488]),
            build: |c| {
                c.req(
                    INV,
                    &[],
                    SDP_CT,
                    &good_sdp().replace("RTP/AVP 0 101", "RTP/AVP 99"),
                )
            },
        },
        Case {
            name: "INVITE good SDP (consumer 488)",
            udp: Code(&[488]),
            tcp: Code(&[488]),
            build: |c| c.req(INV, &[], SDP_CT, &good_sdp()),
        },
        Case {
            name: "BYE outside dialog",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| c.req("BYE sip:1000@127.0.0.1 SIP/2.0", &[], "", ""),
        },
        Case {
            name: "BYE for unknown dialog",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| {
                c.req(
                    "BYE sip:1000@127.0.0.1 SIP/2.0",
                    &["to"],
                    "To: <sip:1000@127.0.0.1>;tag=nosuchdialog\r\n",
                    "",
                )
            },
        },
        Case {
            name: "ACK outside dialog",
            udp: Silence,
            tcp: Silence,
            build: |c| {
                c.req(
                    "ACK sip:1000@127.0.0.1 SIP/2.0",
                    &["cseq"],
                    "CSeq: 1 ACK\r\n",
                    "",
                )
            },
        },
        Case {
            name: "CANCEL unknown",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| c.req("CANCEL sip:1000@127.0.0.1 SIP/2.0", &[], "", ""),
        },
        Case {
            name: "REFER outside dialog",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| {
                c.req(
                    "REFER sip:1000@127.0.0.1 SIP/2.0",
                    &[],
                    "Refer-To: <sip:x@y>\r\n",
                    "",
                )
            },
        },
        Case {
            name: "NOTIFY outside dialog",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| {
                c.req(
                    "NOTIFY sip:1000@127.0.0.1 SIP/2.0",
                    &[],
                    "Event: refer\r\n",
                    "",
                )
            },
        },
        Case {
            name: "INFO outside dialog",
            udp: Code(&[481]),
            tcp: Code(&[481]),
            build: |c| c.req("INFO sip:1000@127.0.0.1 SIP/2.0", &[], "", ""),
        },
        Case {
            name: "REGISTER (not a registrar)",
            udp: Code(&[405]),
            tcp: Code(&[405]),
            build: |c| c.req("REGISTER sip:127.0.0.1 SIP/2.0", &[], "", ""),
        },
        Case {
            name: "stray response",
            udp: Silence,
            tcp: Silence,
            build: |c| {
                format!("SIP/2.0 200 OK\r\n{}{}To: <sip:x@y>;tag=1\r\n{}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", c.via(), c.from(), c.call_id()).into_bytes()
            },
        },
        Case {
            name: "60 KB datagram",
            udp: Code(&[513]),
            tcp: CodeOrSilence(&[513, 400, 200]),
            build: |c| c.req(OPT, &[], "", &"x".repeat(60 * 1024)),
        },
        Case {
            name: "CRLF keep-alive",
            udp: Silence,
            tcp: Silence,
            build: |_| b"\r\n\r\n".to_vec(),
        },
    ]
}

async fn run_battery(transport: &'static str) {
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let _log = spawn_consumer(ep.clone(), events, Mode::Reject(488));
    let target = if transport == "UDP" {
        ep.local_addrs().udp.unwrap()
    } else {
        ep.local_addrs().tcp.unwrap()
    };
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut c = if transport == "UDP" {
            RawClient::udp(target).await
        } else {
            RawClient::tcp(target).await
        };
        let ctx = Ctx {
            local: c.local,
            transport,
            token: format!("mal{i}x{}", fastrand_u64()),
        };
        let bytes = (case.build)(&ctx);
        c.send(&bytes).await;
        let expect = if transport == "UDP" {
            case.udp
        } else {
            case.tcp
        };
        let wait = if matches!(expect, Expect::Code(_)) {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(600)
        };
        let got = c.response_for(&ctx.token, wait).await;
        let ok = match (expect, got) {
            (Expect::Code(codes), Some(code)) | (Expect::CodeOrSilence(codes), Some(code)) => {
                codes.contains(&code)
            }
            (Expect::Silence, None) | (Expect::CodeOrSilence(_), None) => true,
            _ => false,
        };
        if got.is_some_and(|c| (400..700).contains(&c)) && case.name.starts_with("INVITE") {
            // Complete the INVITE transaction like a UAC would (stops 4xx retransmissions).
            let ack = String::from_utf8_lossy(&bytes)
                .replacen("INVITE sip", "ACK sip", 1)
                .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
            let head = ack
                .split("\r\n\r\n")
                .next()
                .unwrap_or("")
                .replace("Content-Type: application/sdp\r\n", "")
                .replace("Content-Type: text/plain\r\n", "");
            let head: String = head
                .lines()
                .filter(|l| !l.starts_with("Content-Length"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            c.send(format!("{head}Content-Length: 0\r\n\r\n").as_bytes())
                .await;
        }
        // Liveness on a fresh connection (TCP cases may legitimately close theirs).
        let mut probe = if transport == "UDP" {
            RawClient::udp(target).await
        } else {
            RawClient::tcp(target).await
        };
        let alive = probe.options().await;
        println!(
            "{transport} case {i:2} {:<45} expect {expect:?} got {got:?} alive {alive:?}",
            case.name
        );
        if !ok {
            failures.push(format!(
                "{}: expected {expect:?}, got {got:?}\n{}",
                case.name,
                c.last_response.clone().unwrap_or_default()
            ));
        }
        if alive != Some(200) {
            failures.push(format!(
                "{}: endpoint not alive afterwards ({alive:?})",
                case.name
            ));
        }
    }
    ep.shutdown().await;
    assert!(
        failures.is_empty(),
        "{transport} failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn malformed_battery_udp() {
    run_battery("UDP").await;
}

#[tokio::test]
async fn malformed_battery_tcp() {
    run_battery("TCP").await;
}
