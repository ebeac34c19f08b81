//! The binary against SIPp and raw SIP: calls to 1000 are answered by the menu agent, held and
//! resumed, keypad INFO reaches the agent; unrouted numbers get 404.

use std::time::Duration;

use crate::support::consumer::canned_sdp;
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::raw_sip::{RawClient, fastrand_u64};
use crate::support::sipp::{run_sipp, scenario, uac_args};
use crate::support::tempdir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_1000_holds_five_seconds_and_hangs_up() {
    if !require("sipp") {
        return;
    }
    let mut host = Host::builder().examples(&["menu"]).start();
    let dir = tempdir("sipp-uac");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let args = uac_args("1000", 1, 5000, &[], &target);
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "SIPp uac failed: {errors}");
    assert!(
        host.log
            .wait_for(&["call ended", "CallerHangup"], Duration::from_secs(10))
            .is_some(),
        "{:?}",
        host.log.seen
    );

    // Hold and resume by re-INVITE, a keypad digit by SIP INFO, then BYE.
    let dir = tempdir("sipp-hold");
    let scen = scenario("uac_hold.xml");
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
            &crate::support::ports::free_port().to_string(),
            &target,
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "hold/resume scenario failed: {errors}");
    let digit = host
        .log
        .wait_for(&["Dtmf", "sip-info"], Duration::from_secs(10));
    assert!(
        digit.is_some(),
        "the INFO digit reached the call: {:?}",
        host.log.seen
    );
    assert!(host.process.is_running());
}

#[tokio::test]
async fn unrouted_numbers_get_404_and_the_host_stays_up() {
    let mut host = Host::builder().examples(&["menu"]).start();
    let target = format!("127.0.0.1:{}", host.sip_port).parse().unwrap();
    let mut client = RawClient::udp(target).await;
    let local = client.local;
    let call_id = format!("unrouted-{}", fastrand_u64());
    let invite = crate::support::raw_sip::request(
        "INVITE",
        &call_id,
        local,
        "UDP",
        "",
        &canned_sdp("sendrecv"),
    )
    .replacen("sip:1000@", "sip:9999@", 1)
    .replacen("<sip:1000@", "<sip:9999@", 1);
    client.send(invite.as_bytes()).await;
    assert_eq!(
        client.response_for(&call_id, Duration::from_secs(10)).await,
        Some(404)
    );
    assert_eq!(client.options().await, Some(200));
    assert!(host.process.is_running());
}
