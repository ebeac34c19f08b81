//! Registration, inbound and outbound calls through kamailio with digest auth, with baresip
//! as the phone on the other side.

use std::time::{Duration, Instant};

use crate::support::baresip::Baresip;
use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::process::require;
use switchboard::sip::{
    AccountConfig, CallOutcome, OutboundCall, RegistrationState, SipConfig, SipEndpoint, SipEvent,
    Transport, TrunkConfig,
};

fn account(kport: u16, expires: u32) -> AccountConfig {
    AccountConfig {
        name: "pbx".into(),
        registrar: ([127, 0, 0, 1], kport).into(),
        aor: format!("sip:agent@127.0.0.1:{kport}"),
        auth_user: None,
        password: Some("agentpw".into()),
        transport: Transport::Udp,
        expires,
        backoff_base_secs: 1,
        backoff_max_secs: 4,
        keepalive_secs: 1,
        timeout_secs: 1,
    }
}

async fn wait_registered(ep: &SipEndpoint, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ep
            .registrations()
            .iter()
            .any(|r| r.state == RegistrationState::Registered)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_ul(kam: &Kamailio, user: &str, present: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if kam.ul_dump().contains(&format!("AoR: {user}")) == present {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn registers_with_digest_baresip_calls_aor_and_unregister_shows_in_ul_dump() {
    if !require("kamailio") || !require("baresip") || !require("kamcmd") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let mut cfg = test_config();
    cfg.accounts = vec![account(kport, 300)];
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    assert!(
        wait_registered(&ep, Duration::from_secs(10)).await,
        "{:?}\n{}",
        ep.registrations(),
        kam.log()
    );
    assert!(
        wait_ul(&kam, "agent", true, Duration::from_secs(3)).await,
        "{}",
        kam.ul_dump()
    );
    let status = &ep.registrations()[0];
    assert_eq!(status.expires_secs, Some(300));
    assert!(status.next_attempt_secs.is_some_and(|s| s < 300));

    // alice dials the AOR; kamailio challenges her INVITE with 407 and forwards to us.
    let alice = Baresip::start(&format!(
        "<sip:alice@127.0.0.1:{kport}>;auth_pass=alicepw;regint=0;audio_codecs=pcmu"
    ))
    .await;
    let mut ctrl = alice.ctrl().await;
    ctrl.command("dial", &format!("sip:agent@127.0.0.1:{kport}"))
        .await;
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .await
            .is_some(),
        "baresip: {}\nkam: {}",
        alice.log(),
        kam.log()
    );
    assert!(
        log.wait_for("incoming:agent:udp", Duration::from_secs(2))
            .await,
        "{:?}",
        log.entries()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctrl.command("hangup", "").await;
    assert!(
        log.wait_for("ended:RemoteHangup", Duration::from_secs(5))
            .await,
        "{:?}",
        log.entries()
    );

    ep.shutdown().await;
    assert!(
        wait_ul(&kam, "agent", false, Duration::from_secs(5)).await,
        "still registered: {}",
        kam.ul_dump()
    );
    assert_eq!(ep.registrations()[0].state, RegistrationState::Unregistered);
}

#[tokio::test]
async fn outbound_call_through_kamailio_with_407_to_baresip() {
    if !require("kamailio") || !require("baresip") || !require("kamcmd") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    call_bob_through(&kam, kport, Transport::Udp, test_config()).await;
}

/// Registers baresip as bob on `kam` (over UDP), then places a call from an endpoint started
/// with `cfg`, through its trunk `kam` reaching the proxy at `proxy_port` over `transport`
/// with digest credentials, to bob: kamailio challenges it with 407, bob answers, and our BYE
/// follows the route set back through kamailio to bob.
pub(crate) async fn call_bob_through(
    kam: &Kamailio,
    proxy_port: u16,
    transport: Transport,
    mut cfg: SipConfig,
) {
    let kport = kam.port;
    let bob = Baresip::start(&format!(
        "<sip:bob@127.0.0.1:{kport}>;auth_pass=bobpw;regint=60;answermode=auto;audio_codecs=pcmu"
    ))
    .await;
    let mut ctrl = bob.ctrl().await;
    assert!(
        wait_ul(kam, "bob", true, Duration::from_secs(10)).await,
        "bob not registered: {}",
        bob.log()
    );

    cfg.trunks = vec![TrunkConfig {
        name: "kam".into(),
        outbound_proxy: ([127, 0, 0, 1], proxy_port).into(),
        domain: Some(format!("127.0.0.1:{kport}")),
        transport,
        tls_server_name: None,
        tls_client_cert: None,
        tls_client_key: None,
        srtp: Default::default(),
        from_user: Some("agent".into()),
        display_name: Some("Switchboard".into()),
        auth_user: None,
        password: Some("agentpw".into()),
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
            to: "bob".into(),
            trunk: Some("kam".into()),
            sdp_offer: canned_sdp("sendrecv"),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(15), call.outcome())
        .await
        .expect("outcome in time");
    let CallOutcome::Answered {
        remote_sdp,
        mut dialog,
    } = outcome
    else {
        panic!(
            "expected answer, got {outcome:?}\nkam: {}\nbob: {}",
            kam.log(),
            bob.log()
        );
    };
    assert!(remote_sdp.unwrap_or_default().contains("PCMU"));
    assert!(
        kam.log().contains("CHALLENGE 407 INVITE agent"),
        "no 407 challenge seen"
    );
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(5))
            .await
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    dialog.hangup().await.unwrap();
    // BYE followed the route set through kamailio and reached bob.
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(5))
            .await
            .is_some(),
        "bob: {}",
        bob.log()
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), dialog.recv())
        .await
        .ok()
        .flatten();
    assert!(
        matches!(
            ended,
            Some(switchboard::sip::DialogEvent::Ended(
                switchboard::sip::EndReason::LocalHangup
            ))
        ),
        "{ended:?}"
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn registration_backs_off_while_registrar_down_then_registers_and_refreshes() {
    if !require("kamailio") || !require("kamcmd") {
        return;
    }
    // Reserved ports are below the ephemeral range: nothing takes this one while kamailio is
    // down, so it can start again on it.
    let kport = free_port();
    let mut cfg = test_config();
    cfg.accounts = vec![account(kport, 4)];
    let (ep, mut events) = SipEndpoint::start(cfg).await.unwrap();

    // Registrar down: each failure is followed by a longer wait (1 s, 2 s, 4 s + 1 s timeout).
    let mut failures_at = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures_at.len() < 4 && Instant::now() < deadline {
        if let Ok(Some(SipEvent::Registration(s))) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            && s.state == RegistrationState::Failing
        {
            assert!(s.last_error.is_some());
            failures_at.push(Instant::now());
        }
    }
    assert_eq!(failures_at.len(), 4, "expected 4 failures");
    let gaps: Vec<Duration> = failures_at.windows(2).map(|w| w[1] - w[0]).collect();
    println!("gaps between failed attempts: {gaps:?}");
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "intervals must grow: {gaps:?}"
    );

    // Registrar up: registered at the next attempt.
    let kam = Kamailio::start(kport).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut successes = 0;
    while successes < 3 && Instant::now() < deadline {
        if let Ok(Some(SipEvent::Registration(s))) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            && s.state == RegistrationState::Registered
        {
            successes = s.successes;
        }
    }
    // Three successes with a 4 s binding: the refreshes came before expiry.
    assert!(
        successes >= 3,
        "registered {successes} times; {}",
        kam.log()
    );
    assert!(wait_ul(&kam, "agent", true, Duration::from_secs(2)).await);
    ep.shutdown().await;
}

#[tokio::test]
async fn tcp_registration_recovers_after_registrar_restart() {
    if !require("kamailio") || !require("kamcmd") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let mut cfg = test_config();
    let mut acc = account(kport, 4);
    acc.transport = Transport::Tcp;
    cfg.accounts = vec![acc];
    let (ep, mut events) = SipEndpoint::start(cfg).await.unwrap();
    assert!(
        wait_registered(&ep, Duration::from_secs(10)).await,
        "{:?}\n{}",
        ep.registrations(),
        kam.log()
    );
    assert!(wait_ul(&kam, "agent", true, Duration::from_secs(3)).await);
    assert!(
        kam.ul_dump().to_ascii_lowercase().contains("transport=tcp"),
        "{}",
        kam.ul_dump()
    );

    // Registrar goes away: the connection breaks and refreshes fail.
    drop(kam);
    let mut saw_failing = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !saw_failing && Instant::now() < deadline {
        if let Ok(Some(SipEvent::Registration(s))) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            saw_failing = s.state == RegistrationState::Failing;
        }
    }
    assert!(saw_failing, "{:?}", ep.registrations());

    // It comes back on the same port: a new connection, registered again.
    let kam = Kamailio::start(kport).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut registered = false;
    while !registered && Instant::now() < deadline {
        if let Ok(Some(SipEvent::Registration(s))) =
            tokio::time::timeout(Duration::from_secs(1), events.recv()).await
        {
            registered = s.state == RegistrationState::Registered;
        }
    }
    assert!(registered, "{:?}\n{}", ep.registrations(), kam.log());
    assert!(wait_ul(&kam, "agent", true, Duration::from_secs(3)).await);
    ep.shutdown().await;
}
