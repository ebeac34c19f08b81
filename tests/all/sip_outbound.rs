//! Outbound calls: SIPp as the callee (answer, early media + busy, ring timeout → CANCEL),
//! and a scripted UAS that checks digest answers (401 SHA-256, 407 MD5) and the route set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::consumer::{canned_sdp, test_config};
use crate::support::process::require;
use crate::support::sipp::{sipp_callee, sipp_completes, sipp_errors};
use md5::Digest as _;
use sha2::Digest as _;
use switchboard::sip::{
    CallOutcome, CallProgress, DialogEvent, EndReason, OutboundCall, SipEndpoint, Transport,
    TrunkConfig,
};
use tokio::net::UdpSocket;

async fn endpoint() -> SipEndpoint {
    let (ep, mut events) = SipEndpoint::start(test_config()).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    ep
}

fn call_to(uri: String) -> OutboundCall {
    OutboundCall {
        to: uri,
        sdp_offer: canned_sdp("sendrecv"),
        ..Default::default()
    }
}

#[tokio::test]
async fn sipp_uas_answers_outbound_call_and_gets_our_bye() {
    if !require("sipp") {
        return;
    }
    let ep = endpoint().await;
    let (mut sipp, dir, port) = sipp_callee(None);
    let mut call = ep
        .place_call(call_to(format!("sip:service@127.0.0.1:{port}")))
        .await
        .unwrap();
    let mut rang = false;
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), call.next())
            .await
            .expect("progress")
        {
            Some(CallProgress::Ringing) => rang = true,
            Some(CallProgress::Final(o)) => break o,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no outcome"),
        }
    };
    assert!(rang, "180 not surfaced");
    let CallOutcome::Answered {
        remote_sdp,
        mut dialog,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(remote_sdp.is_some_and(|s| s.contains("m=audio")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    dialog.hangup().await.unwrap();
    let code = sipp.wait(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "sipp: {}", sipp_errors(dir.path()));
    let ev = tokio::time::timeout(Duration::from_secs(3), dialog.recv())
        .await
        .unwrap();
    assert!(
        matches!(ev, Some(DialogEvent::Ended(EndReason::LocalHangup))),
        "{ev:?}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn early_media_is_surfaced_then_busy() {
    if !require("sipp") {
        return;
    }
    let ep = endpoint().await;
    let (mut sipp, dir, port) = sipp_callee(Some("uas_early_busy.xml"));
    let mut call = ep
        .place_call(call_to(format!("sip:busy@127.0.0.1:{port}")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), call.next())
        .await
        .unwrap();
    assert!(
        matches!(&first, Some(CallProgress::EarlyMedia { remote_sdp }) if remote_sdp.contains("PCMU")),
        "{first:?}"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .unwrap();
    assert!(matches!(outcome, CallOutcome::Busy), "{outcome:?}");
    sipp_completes(&mut sipp, dir.path()).await;
    ep.shutdown().await;
}

#[tokio::test]
async fn ring_timeout_sends_cancel_and_reports_no_answer() {
    if !require("sipp") {
        return;
    }
    let ep = endpoint().await;
    let (mut sipp, dir, port) = sipp_callee(Some("uas_ring_cancel.xml"));
    let mut c = call_to(format!("sip:ring@127.0.0.1:{port}"));
    c.ring_timeout = Some(Duration::from_secs(1));
    let mut call = ep.place_call(c).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .unwrap();
    assert!(matches!(outcome, CallOutcome::NoAnswer), "{outcome:?}");
    sipp_completes(&mut sipp, dir.path()).await;
    ep.shutdown().await;
}

#[tokio::test]
async fn caller_cancel_before_answer_reports_cancelled() {
    if !require("sipp") {
        return;
    }
    let ep = endpoint().await;
    let (mut sipp, dir, port) = sipp_callee(Some("uas_ring_cancel.xml"));
    let mut call = ep
        .place_call(call_to(format!("sip:ring@127.0.0.1:{port}")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), call.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(CallProgress::Ringing)), "{first:?}");
    call.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .unwrap();
    assert!(matches!(outcome, CallOutcome::Cancelled), "{outcome:?}");
    sipp_completes(&mut sipp, dir.path()).await;
    ep.shutdown().await;
}

/// Minimal scripted UAS on two sockets: `main` (where INVITEs arrive, and the Contact) and
/// `proxy` (the Record-Route target, where ACK and BYE must arrive).
struct FakeUas {
    main: UdpSocket,
    proxy: UdpSocket,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn response(req: &str, status: &str, to_tag: &str, extra: &str, body: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for l in req
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
    {
        r.push_str(l);
        r.push_str("\r\n");
    }
    r.push_str(&format!("From: {}\r\n", header(req, "From").unwrap()));
    r.push_str(&format!(
        "To: {};tag={to_tag}\r\n",
        header(req, "To").unwrap()
    ));
    r.push_str(&format!("Call-ID: {}\r\n", header(req, "Call-ID").unwrap()));
    r.push_str(&format!("CSeq: {}\r\n", header(req, "CSeq").unwrap()));
    r.push_str(extra);
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    r.push_str(&format!("{ct}Content-Length: {}\r\n\r\n{body}", body.len()));
    r
}

async fn recv(sock: &UdpSocket) -> (String, SocketAddr) {
    let mut b = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut b))
        .await
        .expect("message in time")
        .unwrap();
    (String::from_utf8_lossy(&b[..n]).into_owned(), from)
}

/// Next request with `method` (skipping retransmissions of others).
async fn recv_method(sock: &UdpSocket, method: &str) -> (String, SocketAddr) {
    loop {
        let (m, from) = recv(sock).await;
        if m.starts_with(&format!("{method} ")) {
            return (m, from);
        }
    }
}

fn auth_params(value: &str) -> HashMap<String, String> {
    let v = value.trim_start_matches("Digest").trim();
    let mut out = HashMap::new();
    for part in v.split(',') {
        if let Some((k, val)) = part.split_once('=') {
            out.insert(
                k.trim().to_ascii_lowercase(),
                val.trim().trim_matches('"').to_string(),
            );
        }
    }
    out
}

fn hash(alg: &str, s: &str) -> String {
    if alg.eq_ignore_ascii_case("SHA-256") {
        hex(&sha2::Sha256::digest(s.as_bytes()))
    } else {
        hex(&md5::Md5::digest(s.as_bytes()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Recomputes the digest response (RFC 7616, qop=auth) and compares.
fn verify(p: &HashMap<String, String>, method: &str, password: &str, alg: &str) {
    let ha1 = hash(alg, &format!("{}:{}:{password}", p["username"], p["realm"]));
    let ha2 = hash(alg, &format!("{method}:{}", p["uri"]));
    let expected = hash(
        alg,
        &format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            p["nonce"], p["nc"], p["cnonce"], p["qop"]
        ),
    );
    assert_eq!(p["response"], expected, "digest mismatch for {p:?}");
}

async fn digest_and_route_case(
    status: &str,
    challenge_header: &str,
    answer_header: &str,
    alg: &str,
) {
    let fake = FakeUas {
        main: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        proxy: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    };
    let main_addr = fake.main.local_addr().unwrap();
    let proxy_addr = fake.proxy.local_addr().unwrap();
    let mut cfg = test_config();
    cfg.trunks = vec![TrunkConfig {
        name: "carrier".into(),
        outbound_proxy: main_addr,
        domain: Some("carrier.test".into()),
        transport: Transport::Udp,
        tls_server_name: None,
        tls_client_cert: None,
        tls_client_key: None,
        srtp: Default::default(),
        from_user: Some("agent".into()),
        display_name: None,
        auth_user: Some("auth-id-7".into()),
        password: Some("s3cr3t".into()),
        inbound_sources: vec![],
        channels: None,
        default: false,
        allowed_prefixes: Vec::new(),
        inbound: Default::default(),
    }];
    let (ep, mut events) = SipEndpoint::start(cfg).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut call = ep
        .place_call(OutboundCall {
            to: "+1 555-0100".into(),
            trunk: Some("carrier".into()),
            sdp_offer: canned_sdp("sendrecv"),
            ..Default::default()
        })
        .await
        .unwrap();

    let (inv1, from) = recv_method(&fake.main, "INVITE").await;
    assert!(
        inv1.starts_with("INVITE sip:+15550100@carrier.test SIP/2.0"),
        "{inv1}"
    );
    let challenge = format!(
        "{challenge_header}: Digest realm=\"carrier.test\", nonce=\"abc123nonce\", algorithm={alg}, qop=\"auth\"\r\n"
    );
    fake.main
        .send_to(
            response(&inv1, status, "c1", &challenge, "").as_bytes(),
            from,
        )
        .await
        .unwrap();
    let _ack = recv_method(&fake.main, "ACK").await;
    let (inv2, from) = recv_method(&fake.main, "INVITE").await;
    assert!(
        header(&inv2, answer_header).is_some(),
        "credentials must go in {answer_header}: {inv2}"
    );
    let other = if answer_header == "Authorization" {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    assert!(
        header(&inv2, other).is_none(),
        "{other} must not be sent: {inv2}"
    );
    let cseq1: u32 = header(&inv1, "CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let cseq2: u32 = header(&inv2, "CSeq")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cseq2, cseq1 + 1, "retried INVITE must increment CSeq");
    assert_eq!(header(&inv1, "Call-ID"), header(&inv2, "Call-ID"));
    let p = auth_params(header(&inv2, answer_header).unwrap());
    assert_eq!(p["username"], "auth-id-7");
    assert_eq!(p["realm"], "carrier.test");
    assert!(
        p.get("algorithm")
            .is_none_or(|a| a.eq_ignore_ascii_case(alg)),
        "{p:?}"
    );
    verify(&p, "INVITE", "s3cr3t", alg);

    // Answer through a record-routing "proxy": ACK and BYE must go to it, with Route.
    let extra =
        format!("Contact: <sip:fake@{main_addr}>\r\nRecord-Route: <sip:{proxy_addr};lr>\r\n");
    fake.main
        .send_to(
            response(&inv2, "200 OK", "c2", &extra, &canned_sdp("sendrecv")).as_bytes(),
            from,
        )
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .unwrap();
    let CallOutcome::Answered { dialog, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let (ack, _) = recv_method(&fake.proxy, "ACK").await;
    assert!(
        ack.starts_with(&format!("ACK sip:fake@{main_addr}")),
        "ACK R-URI must be the Contact: {ack}"
    );
    assert!(
        header(&ack, "Route").is_some_and(|r| r.contains(&proxy_addr.to_string())),
        "{ack}"
    );
    // hangup() waits for the BYE's response, which the fake sends below.
    let hangup = tokio::spawn(async move { dialog.hangup().await });
    let (bye, bye_from) = recv_method(&fake.proxy, "BYE").await;
    assert!(
        bye.starts_with(&format!("BYE sip:fake@{main_addr}")),
        "{bye}"
    );
    assert!(
        header(&bye, "Route").is_some_and(|r| r.contains(&proxy_addr.to_string())),
        "{bye}"
    );
    fake.proxy
        .send_to(response(&bye, "200 OK", "c2", "", "").as_bytes(), bye_from)
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), hangup).await;
    assert!(
        matches!(done, Ok(Ok(Ok(())))),
        "hangup must complete once BYE is answered"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn digest_401_sha256_uses_authorization_and_route_set_is_followed() {
    digest_and_route_case(
        "401 Unauthorized",
        "WWW-Authenticate",
        "Authorization",
        "SHA-256",
    )
    .await;
}

#[tokio::test]
async fn digest_407_md5_uses_proxy_authorization_and_route_set_is_followed() {
    digest_and_route_case(
        "407 Proxy Authentication Required",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "MD5",
    )
    .await;
}

#[tokio::test]
async fn digest_401_md5_uses_authorization() {
    digest_and_route_case(
        "401 Unauthorized",
        "WWW-Authenticate",
        "Authorization",
        "MD5",
    )
    .await;
}
#[tokio::test]
async fn digest_407_sha256_uses_proxy_authorization() {
    digest_and_route_case(
        "407 Proxy Authentication Required",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "SHA-256",
    )
    .await;
}
