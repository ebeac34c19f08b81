//! Session timers (RFC 4028) against real peers over UDP: SIPp callers that never refresh a
//! 90 s session (we send BYE at 90 − min(32, 30) = 60 s) or that leave the refreshing to us
//! (we send UPDATE at 45 s), a SIPp callee that answers our INVITE with 422 and Min-SE 600
//! (we ask again for 600 s), and pjsua2 refreshing a 90 s session by itself while the call
//! outlives several intervals' worth of the timer. 90 s is the RFC's smallest Min-SE, so these
//! run in real time, bounded, beside the other tests.

use std::time::{Duration, Instant};

use crate::support::consumer::{canned_sdp, test_config};
use crate::support::host::Host;
use crate::support::pjsua;
use crate::support::ports::free_port;
use crate::support::process::{require, require_python};
use crate::support::sipp::{run_sipp, scenario, sipp_callee, sipp_completes};
use crate::support::tempdir;
use switchboard::sip::{
    CallOutcome, DialogEvent, Negotiated, OutboundCall, Refresher, SipConfig, SipEndpoint,
    TimerEvent,
};

/// The binary answering 1000 with the menu agent; no media timeout within the tests' calls
/// (SIPp sends no RTP).
fn host() -> Host {
    Host::builder()
        .examples(&["menu"])
        .calls("media-timeout-secs = 300")
        .start()
}

/// Runs a SIPp caller scenario against 1000; returns how long it ran.
async fn sipp_caller(host: &Host, file: &str) -> Duration {
    let dir = tempdir("sipp-timer");
    let scen = scenario(file);
    let started = Instant::now();
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-s",
            "1000",
            "-m",
            "1",
            "-p",
            &free_port().to_string(),
            &format!("127.0.0.1:{}", host.sip_port),
        ],
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(code, Some(0), "{file}: {errors}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_timers_a_caller_that_never_refreshes_gets_our_bye_at_expiry() {
    if !require("sipp") {
        return;
    }
    let mut host = host();
    let took = sipp_caller(&host, "uac_timer_no_refresh.xml").await;
    eprintln!("SIPp's call lasted {took:?}");
    // Our BYE at 60 s after the answer (SIPp waits for it, then ends).
    assert!(
        (Duration::from_secs(58)..Duration::from_secs(70)).contains(&took),
        "{took:?}"
    );
    host.expect(
        &[
            "SessionTimer",
            "\"agreed\"",
            "interval_secs: 90",
            "\"peer\"",
        ],
        5,
    );
    host.expect(&["SessionTimer", "\"expired\"", "interval_secs: 90"], 5);
    host.expect(&["Ended", "session expired without refresh"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_timers_we_refresh_by_update_at_half_the_interval() {
    if !require("sipp") {
        return;
    }
    let mut host = host();
    let took = sipp_caller(&host, "uac_timer_we_refresh.xml").await;
    eprintln!("SIPp's call lasted {took:?}");
    // Our UPDATE at 45 s, SIPp's BYE a second later.
    assert!(
        (Duration::from_secs(45)..Duration::from_secs(55)).contains(&took),
        "{took:?}"
    );
    host.expect(
        &["SessionTimer", "\"agreed\"", "interval_secs: 90", "\"us\""],
        5,
    );
    host.expect(
        &[
            "SessionTimer",
            "\"refreshed\"",
            "interval_secs: 90",
            "\"us\"",
        ],
        5,
    );
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_timers_a_422_is_asked_again_with_the_callee_min_se() {
    if !require("sipp") {
        return;
    }
    // We ask for 90 s; the callee wants at least 600.
    let config = SipConfig {
        session_expires: 90,
        ..test_config()
    };
    let (ep, mut events) = SipEndpoint::start(config).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let (mut sipp, dir, port) = sipp_callee(Some("uas_422.xml"));
    let mut call = ep
        .place_call(OutboundCall {
            to: format!("sip:service@127.0.0.1:{port}"),
            sdp_offer: canned_sdp("sendrecv"),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .expect("an outcome");
    let CallOutcome::Answered { mut dialog, .. } = outcome else {
        panic!("not answered: {outcome:?}");
    };
    let agreed = loop {
        match tokio::time::timeout(Duration::from_secs(5), dialog.recv()).await {
            Ok(Some(DialogEvent::SessionTimer(event))) => break event,
            Ok(Some(_)) => continue,
            other => panic!("no session timer event: {other:?}"),
        }
    };
    // 600 s as the callee asked, and its 2xx made us (the UAC) the refresher.
    assert_eq!(
        agreed,
        TimerEvent::Agreed(Negotiated {
            interval_secs: 600,
            refresher: Refresher::Us,
        })
    );
    dialog.hangup().await.unwrap();
    sipp_completes(&mut sipp, dir.path()).await;
    ep.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_timers_pjsua2_refreshes_a_90_s_session_and_the_call_outlives_it() {
    if !require("espeak-ng") || !require_python("pjsua2") {
        return;
    }
    let mut host = host();
    let dir = tempdir("pjsua2-timer");
    let uri = format!("sip:1000@127.0.0.1:{}", host.sip_port);
    let json = pjsua::call_within(
        "pj_timer.py",
        [
            "--call",
            &uri,
            "--session-expires",
            "90",
            "--min-se",
            "90",
            "--talk",
            "100",
        ],
        dir.path(),
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(json["ended_early"], false, "{json}");
    assert!(json["up_secs"].as_f64().unwrap_or(0.0) >= 99.0, "{json}");
    // We let pjsua2 (which supports timers and named no refresher) refresh; it did, at about
    // half the interval, twice in 100 s.
    host.expect(
        &[
            "SessionTimer",
            "\"agreed\"",
            "interval_secs: 90",
            "\"peer\"",
        ],
        5,
    );
    host.expect(&["call ended", "CallerHangup"], 10);
    let refreshed = host
        .log
        .seen
        .iter()
        .filter(|l| l.contains("SessionTimer") && l.contains("\"refreshed\""))
        .count();
    assert!(refreshed >= 2, "refreshes: {refreshed}");
    assert!(
        !host.log.seen.iter().any(|l| l.contains("\"expired\"")),
        "the session never expired"
    );
}
