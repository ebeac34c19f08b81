//! Blind transfer both ways (REFER + NOTIFY sipfrag) against SIPp peers.

use std::time::Duration;

use crate::support::consumer::{Mode, canned_sdp, spawn_consumer, test_config};
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, scenario, sipp_callee, sipp_completes, spawn_sipp};
use crate::support::tempdir;
use switchboard::sip::{CallOutcome, DialogEvent, OutboundCall, SipEndpoint};

#[tokio::test]
async fn we_transfer_the_callee_and_follow_notify_to_the_outcome() {
    if !require("sipp") {
        return;
    }
    let (ep, mut events) = SipEndpoint::start(test_config()).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let (mut sipp, dir, port) = sipp_callee(Some("uas_refer.xml"));
    let mut call = ep
        .place_call(OutboundCall {
            to: format!("sip:transferee@127.0.0.1:{port}"),
            sdp_offer: canned_sdp("sendrecv"),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call.outcome())
        .await
        .unwrap();
    let CallOutcome::Answered { mut dialog, .. } = outcome else {
        panic!("{outcome:?}")
    };
    dialog
        .refer("sip:operator@127.0.0.1:5999")
        .await
        .expect("REFER accepted");
    let mut seen = Vec::new();
    let final_outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), dialog.recv())
            .await
            .expect("transfer events")
        {
            Some(DialogEvent::TransferProgress { code, .. }) => seen.push(code),
            Some(DialogEvent::TransferOutcome { code, success, .. }) => break (code, success),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(seen, vec![100]);
    assert_eq!(final_outcome, (200, true));
    dialog.hangup().await.unwrap();
    sipp_completes(&mut sipp, dir.path()).await;
    ep.shutdown().await;
}

#[tokio::test]
async fn far_end_transfers_us_to_an_allowed_target() {
    if !require("sipp") {
        return;
    }
    let target_dir = tempdir("sipp-target");
    let tport = free_port();
    let _target = spawn_sipp(
        target_dir.path(),
        &[
            "-sn",
            "uas",
            "-p",
            &tport.to_string(),
            "-m",
            "1",
            "-timeout",
            "30s",
        ],
    );
    let mut cfg = test_config();
    cfg.refer_allow = vec![format!("sip:service@127.0.0.1:*")];
    let (ep, events) = SipEndpoint::start(cfg).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let dir = tempdir("sipp-uac-refer");
    let port = free_port().to_string();
    let scen = scenario("uac_refer.xml");
    let refer_target = format!("sip:service@127.0.0.1:{tport}");
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
            "-key",
            "refer_target",
            &refer_target,
            "-timeout",
            "20s",
            "-timeout_error",
            &target.to_string(),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "sipp: {errors}\nlog: {:?}", log.entries());
    assert!(
        log.has(&format!("transfer-requested:{refer_target}")),
        "{:?}",
        log.entries()
    );
    assert!(log.has("transfer-target-answered"), "{:?}", log.entries());
    assert!(
        log.wait_for("ended:RemoteHangup", Duration::from_secs(3))
            .await,
        "{:?}",
        log.entries()
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn refer_to_a_target_not_allowed_gets_403() {
    if !require("sipp") {
        return;
    }
    let (ep, events) = SipEndpoint::start(test_config()).await.unwrap();
    let target = ep.local_addrs().udp.unwrap();
    let log = spawn_consumer(ep.clone(), events, Mode::Answer);
    let dir = tempdir("sipp-uac-refer-denied");
    let port = free_port().to_string();
    let scen = scenario("uac_refer_denied.xml");
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
            "-key",
            "refer_target",
            "sip:premium@198.51.100.1",
            "-timeout",
            "20s",
            "-timeout_error",
            &target.to_string(),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "sipp: {errors}\nlog: {:?}", log.entries());
    assert!(!log.has("transfer-requested"), "{:?}", log.entries());
    ep.shutdown().await;
}
