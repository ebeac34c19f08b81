//! Graceful drain of a node (issue 34): on SIGTERM or `POST /v1/admin/drain` the host answers
//! OPTIONS and new INVITEs with 503 (kamailio's dispatcher, probing with OPTIONS, sends new calls
//! elsewhere), `/ready` says draining, its registration is released (kamailio's registrar logs
//! `expires 0`), running calls go on to their end (SIPp counts them successful), and the process
//! exits 0. Calls still up when `[node] drain-max-secs` has passed hear the goodbye and get a BYE.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::api::Api;
use crate::support::consumer::canned_sdp;
use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::raw_sip::{RawClient, fastrand_u64, request};
use crate::support::sipp::{sipp_errors, spawn_sipp, uac_args};
use crate::support::tempdir;

/// Waits until the host lists `n` active calls.
async fn wait_active(api: &Api, n: usize) {
    api.poll("/v1/calls?active=true", Duration::from_secs(20), |b| {
        b["calls"].as_array().is_some_and(|c| c.len() == n)
    })
    .await;
}

/// Waits until `/ready` answers 503; its body.
async fn not_ready(api: &Api) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = api.get("/ready").await;
        if r.status == 503 {
            return r.text;
        }
        assert!(Instant::now() < deadline, "still ready: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until kamailio's log holds `line`.
async fn wait_kamailio(kam: &Kamailio, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !kam.log().contains(line) {
        assert!(
            Instant::now() < deadline,
            "kamailio never logged `{line}`:\n{}",
            kam.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The final status of a new INVITE to 1000 sent to `target`.
async fn invite_status(target: std::net::SocketAddr) -> Option<u16> {
    let mut client = RawClient::udp(target).await;
    let call_id = format!("after-drain-{}", fastrand_u64());
    let invite = request(
        "INVITE",
        &call_id,
        client.local,
        "UDP",
        "",
        &canned_sdp("sendrecv"),
    );
    client.send(invite.as_bytes()).await;
    client.response_for(&call_id, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_on_sigterm_lets_running_calls_end_refuses_new_ones_and_exits_0() {
    if !require("sipp") || !require("kamailio") || !require("kamcmd") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let mut host = Host::builder()
        .examples(&["menu"])
        .config(&format!(
            "[[sip.accounts]]\nname = \"pbx\"\nregistrar = \"127.0.0.1:{kport}\"\n\
             aor = \"sip:agent@127.0.0.1:{kport}\"\npassword = \"agentpw\"\nexpires = 60\n"
        ))
        .start();
    let api = Api::new(host.http, None);
    wait_kamailio(&kam, "REGISTERED agent expires 60").await;
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", host.sip_port).parse().unwrap();
    let mut probe = RawClient::udp(target).await;
    assert_eq!(probe.options().await, Some(200));
    assert_eq!(api.get("/ready").await.status, 200);

    // Four calls held 8 s each, all up before the SIGTERM.
    let calls = 4;
    let dir = tempdir("sipp-drain");
    let mut sipp = spawn_sipp(
        dir.path(),
        &uac_args("1000", calls, 8000, &["-l", "4"], &target.to_string()),
    );
    wait_active(&api, calls as usize).await;
    host.process.signal(libc::SIGTERM);

    // Draining: not ready, OPTIONS and a new INVITE get 503, the registration is released.
    let ready = not_ready(&api).await;
    assert!(ready.contains("draining"), "{ready}");
    assert_eq!(probe.options().await, Some(503));
    assert_eq!(invite_status(target).await, Some(503));
    wait_kamailio(&kam, "REGISTERED agent expires 0").await;
    // The running calls are still up.
    let live = api.get("/v1/calls?active=true").await;
    assert_eq!(live.json["calls"].as_array().unwrap().len(), calls as usize);

    // SIPp's four calls all end well (its BYE after 8 s), then the host exits 0.
    let code = sipp.wait(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "SIPp: {}", sipp_errors(dir.path()));
    let exit = host.process.wait(Duration::from_secs(20)).await;
    // The log to its end (the pipe closed with the process).
    host.log.drain(Duration::from_secs(5));
    assert_eq!(exit, Some(0), "{:?}", host.log.seen);
    assert_eq!(host.ended_calls(), calls as usize, "{:?}", host.log.seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_drain_through_the_api_ends_overlong_calls_with_the_goodbye_and_exits_0() {
    if !require("sipp") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .config("[node]\ndrain-max-secs = 1\ndrain-goodbye = \"This line closes now, goodbye.\"")
        .start();
    let api = Api::new(host.http, None);
    let target = format!("127.0.0.1:{}", host.sip_port);
    // Two calls SIPp would hold 60 s: longer than the drain lets them run.
    let dir = tempdir("sipp-drain-goodbye");
    let mut sipp = spawn_sipp(
        dir.path(),
        &uac_args("1000", 2, 60_000, &["-l", "2"], &target),
    );
    wait_active(&api, 2).await;
    let listed = api.get("/v1/calls?active=true").await;
    let ids: Vec<String> = listed.json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();

    let started = Instant::now();
    let drain = api.post("/v1/admin/drain", &json!({})).await;
    assert_eq!(drain.status, 202, "{}", drain.text);
    assert_eq!(drain.json["started"], true);
    assert_eq!(drain.json["calls"], 2);
    let again = api.post("/v1/admin/drain", &json!({})).await;
    assert_eq!(again.json["started"], false, "{}", again.text);

    // After the second the drain allows, each call hears the goodbye and gets a BYE; the host
    // exits 0 well before SIPp would have hung up.
    let exit = host.process.wait(Duration::from_secs(40)).await;
    // The log to its end (the pipe closed with the process).
    host.log.drain(Duration::from_secs(5));
    assert_eq!(exit, Some(0), "{:?}", host.log.seen);
    assert!(started.elapsed() < Duration::from_secs(40));
    for id in &ids {
        let said = host
            .log
            .seen
            .iter()
            .any(|l| l.contains(id.as_str()) && l.contains("This line closes now, goodbye."));
        assert!(said, "call {id} never got the goodbye: {:?}", host.log.seen);
    }
    assert_eq!(host.ended_calls(), 2, "{:?}", host.log.seen);
    // SIPp took the host's BYEs as unexpected: its calls failed, not timed out.
    let code = sipp.wait(Duration::from_secs(10)).await;
    assert_ne!(
        code,
        None,
        "SIPp still waiting: {}",
        sipp_errors(dir.path())
    );
}
