//! Our messages carry our identity, not the SIP library's defaults: every message the endpoint
//! sends in an outbound call (INVITE, ACK, BYE), a registration (REGISTER, un-REGISTER) and
//! the responses to an inbound call, captured on a raw UDP socket acting as the peer, contain
//! no `restsend` (the stack's default Call-ID domain) nor `rsipstack` (its default User-Agent),
//! carry our User-Agent, and a Call-ID that names no domain.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::raw_sip::{RawClient, fastrand_u64, request};
use switchboard::sip::{
    AccountConfig, CallOutcome, OutboundCall, SipConfig, SipEndpoint, Transport,
};
use tokio::net::UdpSocket;

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The checks every message we send must pass.
fn assert_ours(what: &str, msg: &str) {
    let lower = msg.to_ascii_lowercase();
    for default in ["restsend", "rsipstack"] {
        assert!(
            !lower.contains(default),
            "{what} carries the library's `{default}`:\n{msg}"
        );
    }
    let ours = SipConfig::default().user_agent;
    let agent = header(msg, "User-Agent").or_else(|| header(msg, "Server"));
    assert_eq!(
        agent,
        Some(ours.as_str()),
        "{what} User-Agent/Server:\n{msg}"
    );
    let call_id = header(msg, "Call-ID").unwrap_or_else(|| panic!("{what} Call-ID:\n{msg}"));
    assert!(!call_id.is_empty(), "{what}:\n{msg}");
}

/// Same, and the Call-ID is ours (a request we started): a random token without a domain.
fn assert_our_request(what: &str, msg: &str) {
    assert_ours(what, msg);
    let call_id = header(msg, "Call-ID").unwrap();
    assert!(
        !call_id.contains('@'),
        "{what} Call-ID names a domain: {call_id}"
    );
}

async fn recv(sock: &UdpSocket) -> (String, SocketAddr) {
    let mut b = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut b))
        .await
        .expect("message in time")
        .unwrap();
    (String::from_utf8_lossy(&b[..n]).into_owned(), from)
}

/// Next request with `method`, skipping retransmissions of others; each is checked on the way.
async fn recv_method(sock: &UdpSocket, method: &str) -> (String, SocketAddr) {
    loop {
        let (m, from) = recv(sock).await;
        assert_ours("a message to the peer", &m);
        if m.starts_with(&format!("{method} ")) {
            return (m, from);
        }
    }
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
    let to = header(req, "To").unwrap();
    let to = if to.contains("tag=") {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    r.push_str(&format!(
        "From: {}\r\nTo: {to}\r\n",
        header(req, "From").unwrap()
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

#[tokio::test]
async fn hardening_outbound_invite_ack_bye_carry_our_ids() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (ep, mut events) = SipEndpoint::start(test_config()).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut call = ep
        .place_call(OutboundCall {
            to: format!("sip:callee@{peer_addr}"),
            sdp_offer: canned_sdp("sendrecv"),
            ..Default::default()
        })
        .await
        .unwrap();
    let (invite, from) = recv_method(&peer, "INVITE").await;
    assert_our_request("INVITE", &invite);
    let contact = format!("Contact: <sip:callee@{peer_addr}>\r\n");
    peer.send_to(
        response(
            &invite,
            "200 OK",
            "peer1",
            &contact,
            &canned_sdp("sendrecv"),
        )
        .as_bytes(),
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
    let (ack, _) = recv_method(&peer, "ACK").await;
    assert_our_request("ACK", &ack);
    let hangup = tokio::spawn(async move { dialog.hangup().await });
    let (bye, from) = recv_method(&peer, "BYE").await;
    assert_our_request("BYE", &bye);
    assert_eq!(header(&bye, "Call-ID"), header(&invite, "Call-ID"));
    peer.send_to(response(&bye, "200 OK", "peer1", "", "").as_bytes(), from)
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), hangup).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "hangup: {done:?}");
    ep.shutdown().await;
}

#[tokio::test]
async fn hardening_register_carries_our_ids() {
    let registrar = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = test_config();
    cfg.accounts = vec![AccountConfig {
        name: "pbx".into(),
        registrar: registrar.local_addr().unwrap(),
        aor: "sip:agent@127.0.0.1".into(),
        auth_user: None,
        password: None,
        transport: Transport::Udp,
        expires: 60,
        backoff_base_secs: 2,
        backoff_max_secs: 60,
        keepalive_secs: 0,
        timeout_secs: 8,
    }];
    let (ep, mut events) = SipEndpoint::start(cfg).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let (register, from) = recv_method(&registrar, "REGISTER").await;
    assert_our_request("REGISTER", &register);
    let contact = format!(
        "Contact: {};expires=60\r\n",
        header(&register, "Contact").unwrap()
    );
    registrar
        .send_to(
            response(&register, "200 OK", "reg1", &contact, "").as_bytes(),
            from,
        )
        .await
        .unwrap();
    // Shutting down unregisters (Expires: 0): that REGISTER is ours too.
    let shutdown = tokio::spawn(async move { ep.shutdown().await });
    let (unregister, from) = recv_method(&registrar, "REGISTER").await;
    assert_our_request("un-REGISTER", &unregister);
    registrar
        .send_to(
            response(&unregister, "200 OK", "reg1", "", "").as_bytes(),
            from,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown in time")
        .unwrap();
}

#[tokio::test]
async fn hardening_responses_to_an_inbound_call_carry_our_ids() {
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let _log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let mut peer = RawClient::udp(target).await;
    let call_id = format!("inbound-{}@peer.test", fastrand_u64());
    let invite = request(
        "INVITE",
        &call_id,
        peer.local,
        "UDP",
        "",
        &canned_sdp("sendrecv"),
    );
    peer.send(invite.as_bytes()).await;
    // Every response up to the 200 OK (100, 180, 200).
    let mut seen = Vec::new();
    let ok = loop {
        let msg = peer
            .recv(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no 200 OK; seen {seen:#?}"));
        assert_ours("a response to our INVITE", &msg);
        let status = msg.get(..12).unwrap_or_default().to_string();
        seen.push(status);
        if msg.starts_with("SIP/2.0 200") {
            break msg;
        }
    };
    assert!(seen.iter().any(|s| s.starts_with("SIP/2.0 18")), "{seen:?}");
    // ACK and BYE in the dialog; the BYE's 200 is ours as well.
    let to = header(&ok, "To").unwrap();
    let from = header(&ok, "From").unwrap();
    let local = peer.local;
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:1000@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            fastrand_u64()
        )
    };
    peer.send(in_dialog("ACK", 1).as_bytes()).await;
    peer.send(in_dialog("BYE", 2).as_bytes()).await;
    let bye_ok = loop {
        let msg = peer
            .recv(Duration::from_secs(10))
            .await
            .expect("BYE answered");
        assert_ours("a message to the caller", &msg);
        if msg.starts_with("SIP/2.0 200") && msg.contains("BYE") {
            break msg;
        }
    };
    assert_eq!(header(&bye_ok, "Call-ID"), Some(call_id.as_str()));
    ep.shutdown().await;
}
