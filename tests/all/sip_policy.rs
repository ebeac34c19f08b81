//! Inbound policy: source allowlists, digest challenge, per-source rate limit, concurrency
//! cap, scanner handling, and the external (NAT) address in Contact.

use std::time::Duration;

use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::process::require;
use crate::support::raw_sip::{RawClient, request};
use crate::support::sipp::{sipp_callee, sipp_completes};
use md5::Digest as _;
use switchboard::sip::{
    CallOutcome, DigestUser, InboundPolicy, OutboundCall, ScannerAction, SipEndpoint, SipError,
    Transport, TrunkConfig,
};

fn invite(c: &RawClient, call_id: &str, extra: &str) -> String {
    request(
        "INVITE",
        call_id,
        c.local,
        "UDP",
        extra,
        &canned_sdp("sendrecv"),
    )
}

fn trunk(sources: &[&str], inbound: InboundPolicy) -> TrunkConfig {
    TrunkConfig {
        name: "pbx".into(),
        outbound_proxy: "127.0.0.2:5060".parse().unwrap(),
        channels: None,
        domain: None,
        transport: Transport::Udp,
        tls_server_name: None,
        tls_client_cert: None,
        tls_client_key: None,
        srtp: Default::default(),
        from_user: None,
        display_name: None,
        auth_user: None,
        password: None,
        inbound_sources: sources.iter().map(|s| s.to_string()).collect(),
        default: false,
        allowed_prefixes: Vec::new(),
        inbound,
    }
}

#[tokio::test]
async fn allowlist_admits_trunk_sources_and_refuses_others() {
    let mut cfg = test_config();
    cfg.allow_unknown_sources = false;
    cfg.trunks = vec![trunk(&["127.0.0.2/32"], InboundPolicy::default())];
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Reject(486));
    let target = ep.local_addrs().udp.unwrap();

    let mut stranger = RawClient::udp(target).await;
    stranger
        .send(invite(&stranger, "pol-a1", "").as_bytes())
        .await;
    assert_eq!(
        stranger
            .response_for("pol-a1", Duration::from_secs(3))
            .await,
        Some(403)
    );

    let mut pbx = RawClient::udp_from("127.0.0.2:0", target).await;
    pbx.send(invite(&pbx, "pol-a2", "").as_bytes()).await;
    assert_eq!(
        pbx.response_for("pol-a2", Duration::from_secs(3)).await,
        Some(486)
    );
    assert!(log.has("incoming:1000:udp"));
    // Out-of-dialog OPTIONS are still answered for anyone (trunk health probes).
    assert_eq!(stranger.options().await, Some(200));
    ep.shutdown().await;
}

#[tokio::test]
async fn a_trunk_followed_live_admits_its_source_at_once_and_removed_refuses_it() {
    let mut cfg = test_config();
    cfg.allow_unknown_sources = false;
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Reject(486));
    let target = ep.local_addrs().udp.unwrap();
    let (trunks, source) = tokio::sync::watch::channel(Vec::new());
    ep.follow_trunks(source);
    let mut pbx = RawClient::udp_from("127.0.0.2:0", target).await;
    pbx.send(invite(&pbx, "pol-l1", "").as_bytes()).await;
    assert_eq!(
        pbx.response_for("pol-l1", Duration::from_secs(3)).await,
        Some(403)
    );

    // Added: the next INVITE from its source is the trunk's, no wait needed.
    trunks.send_replace(vec![trunk(&["127.0.0.2/32"], InboundPolicy::default())]);
    pbx.send(invite(&pbx, "pol-l2", "").as_bytes()).await;
    assert_eq!(
        pbx.response_for("pol-l2", Duration::from_secs(3)).await,
        Some(486)
    );
    assert_eq!(
        ep.live_inbound_calls()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["pbx", "unknown"]
    );
    // A list the start would refuse changes nothing.
    let mut bad = trunk(&["127.0.0.2/32"], InboundPolicy::default());
    bad.inbound_sources = vec!["nowhere".into()];
    trunks.send_replace(vec![bad]);
    pbx.send(invite(&pbx, "pol-l3", "").as_bytes()).await;
    assert_eq!(
        pbx.response_for("pol-l3", Duration::from_secs(3)).await,
        Some(486)
    );

    // Removed: refused again.
    trunks.send_replace(Vec::new());
    pbx.send(invite(&pbx, "pol-l4", "").as_bytes()).await;
    assert_eq!(
        pbx.response_for("pol-l4", Duration::from_secs(3)).await,
        Some(403)
    );
    assert!(log.has("incoming:1000:udp"));
    ep.shutdown().await;
}

fn md5_hex(s: &str) -> String {
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn param(hdr: &str, name: &str) -> String {
    hdr.split(',')
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .trim_start_matches("Digest")
                .trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn inbound_invites_are_digest_challenged() {
    let mut cfg = test_config();
    cfg.inbound = InboundPolicy {
        digest: Some(DigestUser {
            realm: "switchboard".into(),
            user: "carrier".into(),
            password: "pw".into(),
        }),
        ..Default::default()
    };
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Reject(486));
    let target = ep.local_addrs().udp.unwrap();
    let mut c = RawClient::udp(target).await;
    c.send(invite(&c, "pol-d1", "").as_bytes()).await;
    assert_eq!(
        c.response_for("pol-d1", Duration::from_secs(3)).await,
        Some(401)
    );
    let challenge = c.last_response.clone().unwrap();
    let www = challenge
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .expect("challenge header");
    let nonce = param(www, "nonce");
    assert!(!nonce.is_empty());

    let answer = |password: &str| {
        let uri = "sip:1000@127.0.0.1";
        let ha1 = md5_hex(&format!("carrier:switchboard:{password}"));
        let ha2 = md5_hex(&format!("INVITE:{uri}"));
        let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:abcdef:auth:{ha2}"));
        format!(
            "Authorization: Digest username=\"carrier\", realm=\"switchboard\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abcdef\"\r\n"
        )
    };
    c.send(invite(&c, "pol-d2", &answer("wrong")).as_bytes())
        .await;
    assert_eq!(
        c.response_for("pol-d2", Duration::from_secs(3)).await,
        Some(401)
    );
    assert!(!log.has("incoming:"));
    c.send(invite(&c, "pol-d3", &answer("pw")).as_bytes()).await;
    assert_eq!(
        c.response_for("pol-d3", Duration::from_secs(3)).await,
        Some(486)
    );
    assert!(log.has("incoming:1000"));
    ep.shutdown().await;
}

#[tokio::test]
async fn per_source_rate_limit_answers_503() {
    let mut cfg = test_config();
    cfg.inbound = InboundPolicy {
        rate_limit_per_source: Some(0.5),
        ..Default::default()
    };
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let _log = spawn_consumer(ep.clone(), events, Mode::Reject(486));
    let mut c = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        let id = format!("pol-r{i}");
        c.send(invite(&c, &id, "").as_bytes()).await;
        codes.push(c.response_for(&id, Duration::from_secs(3)).await);
    }
    // Burst of one at 0.5/s: the first passes, the next two are refused.
    assert_eq!(codes, vec![Some(486), Some(503), Some(503)]);
    // Another source has its own bucket.
    let mut other = RawClient::udp_from("127.0.0.3:0", ep.local_addrs().udp.unwrap()).await;
    other.send(invite(&other, "pol-r9", "").as_bytes()).await;
    assert_eq!(
        other.response_for("pol-r9", Duration::from_secs(3)).await,
        Some(486)
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn concurrent_call_cap_answers_503_and_frees_slots() {
    let mut cfg = test_config();
    cfg.trunks = vec![trunk(
        &["127.0.0.0/8"],
        InboundPolicy {
            max_concurrent_calls: Some(1),
            ..Default::default()
        },
    )];
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::RingOnly);
    let target = ep.local_addrs().udp.unwrap();
    let mut c = RawClient::udp(target).await;
    let inv1 = invite(&c, "pol-c1", "");
    c.send(inv1.as_bytes()).await;
    assert!(log.wait_for("incoming:1000", Duration::from_secs(3)).await);
    let mut c2 = RawClient::udp(target).await;
    c2.send(invite(&c2, "pol-c2", "").as_bytes()).await;
    assert_eq!(
        c2.response_for("pol-c2", Duration::from_secs(3)).await,
        Some(503)
    );
    let live = |ep: &SipEndpoint| {
        ep.live_inbound_calls()
            .iter()
            .find(|(n, _)| n == "pbx")
            .map(|(_, n)| *n)
    };
    assert_eq!(live(&ep), Some(1));

    // CANCEL the first call (same branch as its INVITE): 200, 487, and the slot is freed.
    let via = inv1.lines().find(|l| l.starts_with("Via:")).unwrap();
    let from = inv1.lines().find(|l| l.starts_with("From:")).unwrap();
    let cancel = format!(
        "CANCEL sip:1000@127.0.0.1 SIP/2.0\r\n{via}\r\n{from}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: pol-c1\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    c.send(cancel.as_bytes()).await;
    let mut codes = Vec::new();
    for _ in 0..2 {
        codes.push(c.response_for("pol-c1", Duration::from_secs(3)).await);
    }
    codes.sort();
    assert_eq!(codes, vec![Some(200), Some(487)]);
    assert!(
        log.wait_for("cancelled:pol-c1", Duration::from_secs(3))
            .await
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while live(&ep) != Some(0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live(&ep), Some(0));
    ep.shutdown().await;
}

/// A trunk of 2 channels: an answered outbound call (to SIPp) and a ringing inbound one fill
/// it; a third call either way is refused (outbound before any INVITE, inbound with 503), and
/// the outbound call's hang-up frees its channel.
#[tokio::test]
async fn a_trunks_channels_are_shared_by_inbound_and_outbound_calls() {
    if !require("sipp") {
        return;
    }
    let (mut sipp, sipp_dir, sipp_port) = sipp_callee(None);
    let mut cfg = test_config();
    let mut pbx = trunk(&["127.0.0.0/8"], InboundPolicy::default());
    pbx.outbound_proxy = format!("127.0.0.1:{sipp_port}").parse().unwrap();
    pbx.channels = Some(2);
    cfg.trunks = vec![pbx];
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::RingOnly);
    let target = ep.local_addrs().udp.unwrap();
    let outbound = || OutboundCall {
        to: "100".into(),
        trunk: Some("pbx".into()),
        sdp_offer: canned_sdp("sendrecv"),
        ..Default::default()
    };

    let mut first = ep.place_call(outbound()).await.unwrap();
    let CallOutcome::Answered { dialog, .. } = first.outcome().await else {
        panic!("SIPp did not answer");
    };
    assert!(ep.has_free_channel("pbx"));
    let mut c = RawClient::udp(target).await;
    c.send(invite(&c, "pol-ch1", "").as_bytes()).await;
    assert!(log.wait_for("incoming:1000", Duration::from_secs(3)).await);
    assert!(!ep.has_free_channel("pbx"));

    let refused = |r: Result<_, SipError>| matches!(r, Err(SipError::NoChannel { ref trunk, channels: 2 }) if trunk == "pbx");
    assert!(refused(ep.check_call(&outbound()).map(|_| ())));
    assert!(refused(ep.place_call(outbound()).await.map(|_| ())));
    let mut c2 = RawClient::udp(target).await;
    c2.send(invite(&c2, "pol-ch2", "").as_bytes()).await;
    assert_eq!(
        c2.response_for("pol-ch2", Duration::from_secs(3)).await,
        Some(503)
    );

    dialog.hangup().await.unwrap();
    drop(dialog);
    assert!(ep.has_free_channel("pbx"));
    // SIPp (one call, -m 1) saw one INVITE and its BYE: the refused call never reached it.
    sipp_completes(&mut sipp, sipp_dir.path()).await;
    ep.shutdown().await;
}

#[tokio::test]
async fn scanners_are_dropped_or_refused() {
    let scanner_options = |c: &RawClient, id: &str| {
        request(
            "OPTIONS",
            id,
            c.local,
            c.transport(),
            "User-Agent: friendly-scanner\r\n",
            "",
        )
    };
    let (ep, _events) = SipEndpoint::start(test_config()).await.unwrap();
    let mut u = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
    u.send(scanner_options(&u, "scan-1").as_bytes()).await;
    assert_eq!(
        u.response_for("scan-1", Duration::from_millis(700)).await,
        None
    );
    let mut t = RawClient::tcp(ep.local_addrs().tcp.unwrap()).await;
    t.send(scanner_options(&t, "scan-2").as_bytes()).await;
    assert_eq!(
        t.response_for("scan-2", Duration::from_millis(700)).await,
        None
    );
    assert_eq!(u.options().await, Some(200));
    ep.shutdown().await;

    let mut cfg = test_config();
    cfg.scanner_action = ScannerAction::Reject;
    let (ep, _events) = SipEndpoint::start(cfg).await.unwrap();
    let mut u = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
    u.send(scanner_options(&u, "scan-3").as_bytes()).await;
    assert_eq!(
        u.response_for("scan-3", Duration::from_secs(3)).await,
        Some(403)
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn external_address_is_advertised_in_contact() {
    let mut cfg = test_config();
    cfg.external_address = Some("203.0.113.9".parse().unwrap());
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let _log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let port = ep.local_addrs().udp.unwrap().port();
    let mut c = RawClient::udp(ep.local_addrs().udp.unwrap()).await;
    c.send(invite(&c, "nat-1", "").as_bytes()).await;
    assert_eq!(
        c.response_for("nat-1", Duration::from_secs(3)).await,
        Some(200)
    );
    let ok = c.last_response.clone().unwrap();
    let contact = ok
        .lines()
        .find(|l| l.starts_with("Contact:"))
        .expect("Contact in 200");
    assert!(
        contact.contains(&format!("203.0.113.9:{port}")),
        "{contact}"
    );
    ep.shutdown().await;
}
