//! Inbound calls driven by SIPp against the sip module with a canned-SDP consumer.

use std::time::Duration;

use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::raw_sip::{RawClient, request};
use crate::support::sipp::{run_sipp, scenario};
use crate::support::tempdir;
use switchboard::sip::SipEndpoint;

async fn sipp_call(transport: &str) {
    if !require("sipp") {
        return;
    }
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let dir = tempdir("sipp-hold");
    let port = free_port().to_string();
    let scen = scenario("uac_hold.xml");
    let t = if transport == "tcp" { "t1" } else { "u1" };
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-t",
            t,
            "-p",
            &port,
            "-m",
            "1",
            "-s",
            "1000",
            "-timeout",
            "20s",
            "-timeout_error",
            &target.to_string(),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        code,
        Some(0),
        "sipp failed: {errors}\nlog: {:?}",
        log.entries()
    );
    let tname = if transport == "tcp" {
        "incoming:1000:tcp"
    } else {
        "incoming:1000:udp"
    };
    assert!(
        log.wait_for(tname, Duration::from_secs(2)).await,
        "{:?}",
        log.entries()
    );
    for e in [
        "reinvite:hold",
        "dtmf:5:160",
        "reinvite:resume",
        "ended:RemoteHangup",
    ] {
        assert!(
            log.wait_for(e, Duration::from_secs(3)).await,
            "missing {e}: {:?}",
            log.entries()
        );
    }
    ep.shutdown().await;
}

#[tokio::test]
async fn sipp_uac_call_hold_info_bye_udp() {
    sipp_call("udp").await;
}

#[tokio::test]
async fn sipp_uac_call_hold_info_bye_tcp() {
    sipp_call("tcp").await;
}

#[tokio::test]
async fn sipp_cancel_before_answer_gets_487_and_event() {
    if !require("sipp") {
        return;
    }
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::RingOnly);
    let dir = tempdir("sipp-cancel");
    let port = free_port().to_string();
    let scen = scenario("uac_cancel.xml");
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-p",
            &port,
            "-m",
            "1",
            "-s",
            "1000",
            "-timeout",
            "15s",
            "-timeout_error",
            &target.to_string(),
        ],
        Duration::from_secs(25),
    )
    .await;
    assert_eq!(code, Some(0), "sipp failed: {errors}");
    assert!(
        log.wait_for("cancelled:", Duration::from_secs(3)).await,
        "{:?}",
        log.entries()
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn options_answered_with_allow() {
    let (ep, _events) = SipEndpoint::start(test_config()).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let mut c = RawClient::udp(target).await;
    let msg = request("OPTIONS", "opt-1", c.local, "UDP", "", "");
    c.send(msg.as_bytes()).await;
    let resp = c.recv(Duration::from_secs(3)).await.expect("response");
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    assert!(
        resp.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"),
        "{resp}"
    );
    let mut t = RawClient::tcp(ep.local_addrs().tcp.unwrap()).await;
    assert_eq!(t.options().await, Some(200));
    ep.shutdown().await;
}

#[tokio::test]
async fn early_media_then_dropped_call_is_refused_with_480() {
    use switchboard::sip::SipEvent;
    let (ep, mut events) = SipEndpoint::start(test_config()).await.unwrap();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let SipEvent::IncomingCall(call) = ev {
                call.early_media(&canned_sdp("sendrecv")).unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(call); // the consumer lost interest without deciding
            }
        }
    });
    let mut c = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
    c.send(
        request(
            "INVITE",
            "drop-1",
            c.local,
            "UDP",
            "",
            &canned_sdp("sendrecv"),
        )
        .as_bytes(),
    )
    .await;
    let mut saw_183 = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut final_code = None;
    while std::time::Instant::now() < deadline && final_code.is_none() {
        let Some(msg) = c.recv(Duration::from_secs(1)).await else {
            continue;
        };
        if msg.starts_with("SIP/2.0 183") {
            saw_183 = msg.contains("m=audio") && msg.contains("Content-Type: application/sdp");
        } else if msg.starts_with("SIP/2.0 4") {
            final_code = msg.get(8..11).map(str::to_string);
        }
    }
    assert!(saw_183, "183 with SDP expected");
    assert_eq!(final_code.as_deref(), Some("480"));
    ep.shutdown().await;
}

/// RFC 3261 §17.2.1 owes the caller a 100 Trying only when no response comes within 200 ms:
/// a consumer that rings at once sends 180 first; a slow one is preceded by the 100.
#[tokio::test]
async fn trying_only_when_the_consumer_is_slow_to_respond() {
    use switchboard::sip::SipEvent;
    for (delay, expected) in [(0, vec![180, 486]), (600, vec![100, 180, 486])] {
        let (ep, mut events) = SipEndpoint::start(test_config()).await.unwrap();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let SipEvent::IncomingCall(call) = ev {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    call.ringing().unwrap();
                    call.reject(486, "busy").unwrap();
                }
            }
        });
        let mut c = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
        let call_id = format!("trying-{delay}");
        let invite = request(
            "INVITE",
            &call_id,
            c.local,
            "UDP",
            "",
            &canned_sdp("sendrecv"),
        );
        c.send(invite.as_bytes()).await;
        let mut codes = Vec::new();
        while codes.last().is_none_or(|code| *code < 200) {
            let msg = c.recv(Duration::from_secs(3)).await.expect("a response");
            codes.push(msg[8..11].parse::<u16>().unwrap());
        }
        assert_eq!(codes, expected, "consumer responding after {delay} ms");
        ep.shutdown().await;
    }
}
