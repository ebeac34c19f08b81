//! Outgoing webhooks (issue 31) from the `switchboard` binary to a receiver on 127.0.0.1 that
//! verifies every signature (`support::webhook_receiver`): a SIPp call's events arrive signed,
//! in order, once each after dedup on `webhook-id`; a receiver that is down and then failing
//! gets everything once it is back; one that never answers dead-letters (the API lists it, a
//! resend delivers it) without touching the calls; a full queue drops with a count on
//! `/metrics`; queued events outlive a crash of the host; the dashboard (Chromium) shows a
//! dead letter whose button resends it; and webhooks set, changed and removed live by the CLI
//! and the API take effect at once, their secret never shown.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agents::{fixture, switchboard_bin};
use crate::support::api::Api;
use crate::support::browser::Browser;
use crate::support::host::{Host, HostBuilder};
use crate::support::load::{CallerAudio, media_load_args, media_load_dir};
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, scenario, uac_args};
use crate::support::tempdir;
use crate::support::webhook_receiver::{Got, Mode, Receiver, SECRET};

/// A `[[webhooks]]` entry for `receiver`, with `extra` settings (TOML lines).
fn webhook(name: &str, receiver: &Receiver, events: &[&str], extra: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{}\"\nevents = {}\nsecret = \"{SECRET}\"\n\
         allow-local = true\n{extra}\n",
        receiver.url(),
        json!(events),
    )
}

const CALL_EVENTS: [&str; 3] = ["call.started", "call.answered", "call.ended"];

/// The types of `got` for one call, in order.
fn kinds_of(got: &[Got], call_id: &str) -> Vec<String> {
    got.iter()
        .filter(|g| g.call_id() == call_id)
        .map(|g| g.kind().to_string())
        .collect()
}

/// The ids of the calls the host recorded, oldest first.
async fn call_ids(api: &Api) -> Vec<String> {
    let list = api.get("/v1/calls").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let mut ids: Vec<String> = list.json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    ids
}

/// SIPp calls the `menu` on 1000 `calls` times, each held `hold_ms`.
async fn sipp_calls_menu(host: &Host, calls: u32, hold_ms: u32) {
    let dir = tempdir("sipp-webhooks");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let args = uac_args("1000", calls, hold_ms, &[], &target);
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "SIPp uac failed: {errors}");
}

/// The `menu` on 1000 with the webhook `name` to `receiver` for the call events.
fn menu_host(name: &str, receiver: &Receiver, extra: &str) -> HostBuilder {
    Host::builder()
        .examples(&["menu"])
        .rtp_ports(40)
        .config(&webhook(name, receiver, &CALL_EVENTS, extra))
}

fn contract_host() -> HostBuilder {
    Host::builder()
        .agent(
            "contract",
            fixture("contract"),
            "name = \"contract\"\nnumbers = [\"9001\"]\n".into(),
        )
        .rtp_ports(40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_calls_events_arrive_signed_in_order_once_each() {
    if !require("sipp") {
        return;
    }
    // The first attempt of each event is taken but answered past the sender's timeout: the
    // event comes again with the same id, as at-least-once allows.
    let receiver = Receiver::start(Mode::AcceptLateOnce(Duration::from_millis(1500))).await;
    let all = [
        "call.started",
        "call.answered",
        "call.ended",
        "call.transferred",
        "call.outcome",
        "recording.ready",
        "campaign.progress",
    ];
    let mut host = contract_host()
        .calls("record = true")
        .config(&webhook(
            "crm",
            &receiver,
            &all,
            "timeout-ms = 500\nretry-ms = 100",
        ))
        .start();
    let api = Api::new(host.http, None);
    // The contract agent sets the outcome `confirmed` on key 1 (SIP INFO), then SIPp hangs up.
    let dir = tempdir("sipp-webhooks-info");
    let scen = scenario("uac_dtmf_info.xml");
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-s",
            "9001",
            "-m",
            "1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            &format!("127.0.0.1:{}", host.sip_port),
        ],
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    host.expect(&["call ended", "CallerHangup"], 10);
    let want = [
        "call.started",
        "call.answered",
        "call.ended",
        "call.outcome",
        "recording.ready",
    ];
    // Done when every event was taken and sent again after its slow first answer.
    receiver
        .wait(Duration::from_secs(30), |got| {
            let accepted = receiver.accepted();
            accepted.len() >= want.len()
                && accepted
                    .iter()
                    .all(|a| got.iter().filter(|g| g.id == a.id).count() >= 2)
        })
        .await;
    let got = receiver.got();
    let accepted = receiver.accepted();
    let ids = call_ids(&api).await;
    assert_eq!(ids.len(), 1);
    let call_id = &ids[0];
    assert_eq!(
        kinds_of(&accepted, call_id),
        want,
        "every event of the call, in order: {got:#?}"
    );
    assert!(
        got.iter().all(|g| g.signed),
        "every delivery signed: {got:#?}"
    );
    // Each event came more than once, always with its id; the dedup leaves one each.
    for a in &accepted {
        let attempts: Vec<&Got> = got.iter().filter(|g| g.id == a.id).collect();
        assert!(attempts.len() >= 2, "{} was retried: {got:#?}", a.id);
        assert!(attempts.iter().all(|g| g.body == a.body));
    }
    let ids: std::collections::HashSet<&str> = accepted.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), want.len());

    let detail = api.get(&format!("/v1/calls/{call_id}")).await.json;
    let by_kind: HashMap<&str, &Got> = accepted.iter().map(|g| (g.kind(), g)).collect();
    for g in &accepted {
        let ts = g.body["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == 24,
            "RFC 3339 timestamp {ts}"
        );
    }
    let started = &by_kind["call.started"].body["data"];
    assert_eq!(started["direction"], "inbound");
    assert_eq!(started["agent"], "contract");
    assert!(started["callee"].as_str().unwrap().contains("9001"));
    assert!(by_kind["call.answered"].body["data"]["codec"].is_string());
    let ended = &by_kind["call.ended"].body["data"];
    assert_eq!(ended["outcome"], "confirmed");
    assert_eq!(ended["abnormal"], false);
    let texts = |lines: &Value| -> Vec<String> {
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&ended["transcript"]), texts(&detail["transcript"]));
    assert!(
        texts(&ended["transcript"])
            .iter()
            .any(|t| t.contains("outcome")),
        "the agent's answer to key 1 is in the transcript: {ended}"
    );
    assert_eq!(
        ended["usage"]["input_tokens"],
        detail["call"]["input_tokens"]
    );
    assert_eq!(ended["usage"]["items"], detail["usage"]);
    assert_eq!(by_kind["call.outcome"].body["data"]["outcome"], "confirmed");
    let recording = by_kind["recording.ready"].body["data"]["recording"]
        .as_str()
        .unwrap();
    assert_eq!(recording, format!("/v1/calls/{call_id}/recording"));
    assert_eq!(api.get(recording).await.status, 200);

    // The API shows each delivery: delivered, its attempts and their codes.
    let listed = api.get("/v1/webhooks/crm/deliveries").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let rows = listed.json["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), want.len(), "{}", listed.text);
    for row in rows {
        assert_eq!(row["status"], "delivered", "{row}");
        assert!(row["attempts"].as_u64().unwrap() >= 2, "{row}");
        assert_eq!(row["last_code"], 204, "{row}");
        assert_eq!(
            row["codes"][0],
            Value::Null,
            "the first attempt timed out: {row}"
        );
        assert!(
            row["history"][0]["error"]
                .as_str()
                .unwrap()
                .contains("no answer")
        );
    }
    assert_eq!(api.get("/v1/webhooks/nope/deliveries").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_receiver_down_then_failing_gets_everything_in_order_when_back() {
    if !require("sipp") {
        return;
    }
    // Not listening: connections are refused.
    let mut receiver = Receiver::reserve(Mode::Fail("500 Internal Server Error"));
    let mut host = menu_host("crm", &receiver, "retry-ms = 200\nmax-attempts = 50").start();
    let api = Api::new(host.http, None);
    sipp_calls_menu(&host, 2, 1000).await;
    host.wait_calls_ended(0, 2, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.got().is_empty());
    // Up, but answering 500 for a while, then well again.
    receiver.listen().await;
    receiver
        .wait(Duration::from_secs(20), |got| got.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.set_mode(Mode::Accept);
    let calls = call_ids(&api).await;
    assert_eq!(calls.len(), 2);
    receiver
        .wait(Duration::from_secs(40), |_| receiver.accepted().len() >= 6)
        .await;
    let got = receiver.got();
    let accepted = receiver.accepted();
    for call_id in &calls {
        assert_eq!(
            kinds_of(&accepted, call_id),
            CALL_EVENTS,
            "call {call_id}, in order: {got:#?}"
        );
    }
    assert_eq!(accepted.len(), 6, "{got:#?}");
    assert!(got.iter().all(|g| g.signed), "{got:#?}");
    // Failed attempts came with the id the delivery kept, signed at their own time.
    let failed: Vec<&Got> = got.iter().filter(|g| !g.taken()).collect();
    assert!(!failed.is_empty());
    for f in &failed {
        assert!(
            accepted.iter().any(|a| a.id == f.id && a.body == f.body),
            "{f:?}"
        );
    }
    let retried = accepted.iter().find(|a| {
        failed
            .iter()
            .any(|f| f.id == a.id && f.timestamp != a.timestamp)
    });
    assert!(
        retried.is_some(),
        "a retry is signed with its own timestamp: {got:#?}"
    );
    // While one event of a call was failing, the call's next one was not sent.
    for call_id in &calls {
        let order: Vec<&str> = got
            .iter()
            .filter(|g| g.call_id() == call_id)
            .map(|g| g.kind())
            .collect();
        let first_of = |kind: &str| order.iter().position(|k| *k == kind).unwrap();
        let last_of = |kind: &str| order.iter().rposition(|k| *k == kind).unwrap();
        assert!(
            last_of("call.started") < first_of("call.answered"),
            "{order:?}"
        );
        assert!(
            last_of("call.answered") < first_of("call.ended"),
            "{order:?}"
        );
    }
}

/// Per call of `api`'s host: INVITE to answer (ms), and the RTP its media got and lost (from
/// its `media-stats` event, waited for: it is stored a moment after the call ends).
async fn call_media(api: &Api) -> Vec<(i64, u64, u64)> {
    let mut out = Vec::new();
    for id in call_ids(api).await {
        let detail = api
            .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
                d["events"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e["kind"] == "media-stats"))
            })
            .await;
        let call = &detail["call"];
        let setup =
            call["answered_at_ms"].as_i64().unwrap() - call["started_at_ms"].as_i64().unwrap();
        let stats = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "media-stats")
            .map(|e| e["data"].clone())
            .expect("a media-stats event");
        out.push((
            setup,
            stats["packets_received"].as_u64().unwrap(),
            stats["packets_lost"].as_u64().unwrap(),
        ));
    }
    out
}

/// Three SIPp callers streaming 7 s of audio each to the menu, at once.
async fn three_streaming_calls(host: &mut Host) {
    let dir = media_load_dir("webhooks-media");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let (args, _media) = media_load_args(CallerAudio::RtpStream, 3, 10, &target, dir.path());
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    host.wait_calls_ended(0, 3, Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_receiver_that_never_answers_dead_letters_and_the_calls_do_not_notice() {
    if !require("sipp") {
        return;
    }
    // The same calls on a host without webhooks, for comparison.
    let mut plain = Host::builder().examples(&["menu"]).rtp_ports(40).start();
    three_streaming_calls(&mut plain).await;
    let baseline = call_media(&Api::new(plain.http, None)).await;
    drop(plain);

    let receiver = Receiver::start(Mode::Hang).await;
    // Each attempt waits 2 s for the hanging receiver: a call that waited for even one
    // delivery would be answered seconds late.
    let mut host = menu_host(
        "slow",
        &receiver,
        "timeout-ms = 2000\nretry-ms = 100\nmax-attempts = 2",
    )
    .start();
    let api = Api::new(host.http, None);
    three_streaming_calls(&mut host).await;
    let hooked = call_media(&api).await;
    eprintln!(
        "without webhooks (setup ms, packets, lost): {baseline:?}\nwith a hanging receiver: {hooked:?}"
    );
    assert_eq!(hooked.len(), 3);
    let max_setup = |v: &[(i64, u64, u64)]| v.iter().map(|c| c.0).max().unwrap();
    // Within the noise of a shared machine, far from one attempt's 2 s.
    assert!(
        max_setup(&hooked) <= max_setup(&baseline) + 1000,
        "answer times: {hooked:?} against {baseline:?}"
    );
    let packets = |v: &[(i64, u64, u64)]| v.iter().map(|c| c.1).min().unwrap();
    assert!(
        packets(&hooked) * 100 >= packets(&baseline) * 98,
        "RTP received: {hooked:?} against {baseline:?}"
    );
    assert!(hooked.iter().all(|c| c.2 <= 2), "RTP lost: {hooked:?}");

    // Nine events, two attempts each at 2 s: dead letters, visible in the API.
    let mut dead = Value::Null;
    for _ in 0..250 {
        dead = api.get("/v1/webhooks/dead-letters").await.json;
        if dead["deliveries"].as_array().map_or(0, Vec::len) >= 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = dead["deliveries"].as_array().expect("a list");
    assert_eq!(rows.len(), 9, "{dead}");
    for row in rows {
        assert_eq!(row["status"], "dead");
        assert_eq!(row["attempts"], 2);
        assert_eq!(row["codes"], json!([null, null]));
        assert_eq!(row["last_error"], "no answer within 2000 ms", "{row}");
    }
    assert_eq!(receiver.got().len(), 18);

    // Fixed, and one resent: it arrives, with the id it had.
    receiver.set_mode(Mode::Accept);
    let oldest = rows.last().unwrap();
    let resent = api
        .post(
            &format!("/v1/webhooks/deliveries/{}/resend", oldest["id"]),
            &json!({}),
        )
        .await;
    assert_eq!(resent.status, 200, "{}", resent.text);
    assert_eq!(resent.json["status"], "pending");
    let got = receiver
        .wait(Duration::from_secs(10), |_| !receiver.accepted().is_empty())
        .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1, "{got:#?}");
    assert_eq!(accepted[0].id, oldest["webhook_id"].as_str().unwrap());
    assert_eq!(accepted[0].kind(), "call.started");
    assert!(accepted[0].signed);
    let after = api.get("/v1/webhooks/dead-letters").await.json;
    assert_eq!(after["deliveries"].as_array().unwrap().len(), 8);
    let again = api
        .post(
            &format!("/v1/webhooks/deliveries/{}/resend", 999_999),
            &json!({}),
        )
        .await;
    assert_eq!(again.status, 404, "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_a_hanging_receiver_over_its_queue_limit_drops_with_a_count() {
    if !require("sipp") {
        return;
    }
    let receiver = Receiver::start(Mode::Hang).await;
    let mut host = menu_host("slow", &receiver, "timeout-ms = 60000\nqueue-limit = 2").start();
    let api = Api::new(host.http, None);
    sipp_calls_menu(&host, 2, 500).await;
    host.wait_calls_ended(0, 2, Duration::from_secs(20));
    // Two queued (the calls' first events, in flight and hanging); the other four dropped.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = api.get("/metrics").await.text;
        if metrics.contains("switchboard_webhook_events_dropped_total{webhook=\"slow\"} 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("switchboard_webhook_events_dropped_total{webhook=\"slow\"} 4"),
        "{metrics}"
    );
    host.expect(&["webhook queue full: event dropped", "slow"], 5);
    let rows = api.get("/v1/webhooks/slow/deliveries").await.json;
    assert_eq!(rows["deliveries"].as_array().unwrap().len(), 2, "{rows}");
    // In flight, hanging: the head of each call's queue that made it in (one or two calls').
    let got = receiver.got();
    assert!(
        (1..=2).contains(&got.len()) && got.iter().all(|g| g.kind() == "call.started"),
        "{got:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_queued_events_are_delivered_after_the_host_is_killed_and_restarted() {
    if !require("sipp") {
        return;
    }
    let mut receiver = Receiver::reserve(Mode::Accept);
    let mut host = menu_host(
        "crm",
        &receiver,
        "retry-ms = 200\nmax-attempts = 100\nconnect-timeout-ms = 500\ntimeout-ms = 500",
    )
    .start();
    let api = Api::new(host.http, None);
    sipp_calls_menu(&host, 1, 500).await;
    host.wait_calls_ended(0, 1, Duration::from_secs(20));
    // Queued and failing (connection refused), not delivered.
    let mut rows = Value::Null;
    for _ in 0..50 {
        rows = api.get("/v1/webhooks/crm/deliveries").await.json;
        if rows["deliveries"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = rows["deliveries"].as_array().expect("a list");
    assert_eq!(listed.len(), 3, "{rows}");
    assert!(listed.iter().all(|r| r["status"] == "pending"), "{rows}");
    let call_id = call_ids(&api).await.remove(0);

    host.crash_and_restart();
    host.expect(&["HTTP API listening"], 20);
    receiver.listen().await;
    let got = receiver
        .wait(Duration::from_secs(30), |_| receiver.accepted().len() >= 3)
        .await;
    assert_eq!(
        kinds_of(&receiver.accepted(), &call_id),
        CALL_EVENTS,
        "{got:#?}"
    );
    assert!(got.iter().all(|g| g.signed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_the_dashboard_resends_a_dead_letter_and_adds_a_webhook() {
    if !require("sipp") || !require("chromium") {
        return;
    }
    // Refused at once, one attempt each: every event of the call is dead within moments.
    let receiver = Receiver::start(Mode::Fail("410 Gone")).await;
    let mut host = Host::builder()
        .examples(&["menu"])
        .rtp_ports(40)
        .http("allow-loopback-writes = true")
        .config(&webhook("crm", &receiver, &CALL_EVENTS, ""))
        .start();
    let api = Api::new(host.http, None);
    sipp_calls_menu(&host, 1, 500).await;
    host.wait_calls_ended(0, 1, Duration::from_secs(20));
    receiver
        .wait(Duration::from_secs(10), |got| got.len() >= 3)
        .await;
    let call_id = call_ids(&api).await.remove(0);

    let wait = Duration::from_secs(20);
    let mut browser = Browser::launch().await;
    browser
        .navigate(&format!("http://{}/#/webhooks", host.http))
        .await;
    browser
        .wait_for(
            "three dead letters with resend buttons",
            "document.querySelectorAll('#dead-letters button[data-resend]').length === 3",
            wait,
        )
        .await;
    let dead_text = browser.text("#dead-letters").await;
    assert!(dead_text.contains("410 Gone"), "{dead_text}");
    assert!(dead_text.contains(&call_id), "{dead_text}");
    let crm_text = browser.text("#deliveries-crm").await;
    assert!(
        crm_text.contains("dead") && crm_text.contains("410"),
        "{crm_text}"
    );

    // The oldest dead letter is the call's `call.started`: resend it with its button.
    receiver.set_mode(Mode::Accept);
    browser
        .click("#dead-letters tbody tr:last-child button[data-resend]")
        .await;
    browser
        .wait_for(
            "the resend notice and two dead letters left",
            "(document.querySelector('#webhooks-notice')?.textContent ?? '').includes('queued again') && \
             document.querySelectorAll('#dead-letters button[data-resend]').length === 2",
            wait,
        )
        .await;
    let got = receiver
        .wait(Duration::from_secs(10), |_| !receiver.accepted().is_empty())
        .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1, "{got:#?}");
    assert_eq!(accepted[0].kind(), "call.started");
    assert_eq!(accepted[0].call_id(), call_id);
    assert!(accepted[0].signed);
    // Reloaded, the view shows it delivered.
    browser.eval("location.reload()").await;
    browser
        .wait_for(
            "the delivery shown as delivered",
            "[...document.querySelectorAll('#deliveries-crm tbody tr')].some((r) => \
             r.textContent.includes('call.started') && r.textContent.includes('delivered'))",
            wait,
        )
        .await;

    // The Config view adds a second webhook; its secret goes in write-only.
    browser.eval("location.hash = '#/config'").await;
    browser
        .wait_for(
            "the webhook editor",
            "!!document.querySelector('#webhook-form') && \
             document.querySelector('#config-webhooks tr[data-name=\"crm\"]') !== null",
            wait,
        )
        .await;
    let url = receiver.url();
    for (name, text) in [
        ("name", "audit"),
        ("url", url.as_str()),
        ("events", "call.ended, call.outcome"),
        ("secret", SECRET),
        ("allow-local", "true"),
        ("max-attempts", "3"),
    ] {
        browser
            .fill(&format!("#webhook-form [name=\"{name}\"]"), text)
            .await;
    }
    browser.submit("#webhook-form").await;
    browser
        .wait_for(
            "the added webhook listed",
            "(document.querySelector('#config-webhooks tr[data-name=\"audit\"]')?.textContent ?? '')\
             .includes('call.ended, call.outcome')",
            wait,
        )
        .await;
    let effective = api.get("/v1/config/effective").await;
    let audit = &effective.json["webhooks"]["audit"];
    assert_eq!(audit["source"], "live");
    assert_eq!(
        audit["value"]["events"],
        json!(["call.ended", "call.outcome"])
    );
    assert_eq!(audit["value"]["allow-local"], true);
    assert_eq!(audit["value"]["max-attempts"], 3);
    assert_eq!(audit["value"]["secret"], "***");
    let shown = browser.text("#view").await;
    assert!(!shown.contains(SECRET), "the secret is never shown");
}

/// `switchboard <args>` against the host's API with the write token: exit code, stdout, stderr.
fn cli(host: &Host, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(switchboard_bin())
        .args(args)
        .env("SWITCHBOARD_API", format!("http://{}", host.http))
        .env("SWITCHBOARD_TOKEN", "ops-token")
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_set_live_by_the_cli_and_the_api_deliver_at_once_with_the_secret_masked() {
    if !require("sipp") {
        return;
    }
    let receiver = Receiver::start(Mode::Accept).await;
    let tokens = "[[http.api-tokens]]\nname = \"ops\"\ntoken = \"ops-token\"\nscope = \"write\"\n";
    let mut host = Host::builder()
        .examples(&["menu"])
        .rtp_ports(40)
        .http(tokens)
        .start();
    let api = Api::new(host.http, Some("ops-token"));
    let etag = |r: &crate::support::api::Reply| r.etag.clone().expect("ETag");

    // Refused: a loopback URL without allow-local, named by its field; nothing changes.
    let before = api.get("/v1/config/effective").await;
    let refused = api
        .put(
            "/v1/config/webhooks/crm",
            &json!({"url": receiver.url(), "events": ["call.ended"], "secret": SECRET}),
            Some(&etag(&before)),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json["error"], "bad_webhook");
    assert_eq!(refused.json["field"], "url");
    assert!(refused.text.contains("allow-local"), "{}", refused.text);
    assert_eq!(api.get("/v1/config/effective").await.text, before.text);

    // Set by the CLI, the secret from the environment.
    let url = receiver.url();
    let (code, out, err) = cli(
        &host,
        &[
            "webhooks",
            "set",
            "crm",
            "--url",
            &url,
            "--event",
            "call.started",
            "--event",
            "call.ended",
            "--allow-local",
            "--retry-ms",
            "200",
        ],
        &[("SWITCHBOARD_WEBHOOK_SECRET", SECRET)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "set webhooks/crm");
    let effective = api.get("/v1/config/effective").await;
    let crm = &effective.json["webhooks"]["crm"];
    assert_eq!(crm["source"], "live");
    assert_eq!(crm["value"]["url"], url.as_str());
    assert_eq!(crm["value"]["secret"], "***");
    assert!(!effective.text.contains(SECRET));
    let (code, out, _) = cli(&host, &["webhooks", "list"], &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("crm\t{url}\tcall.started,call.ended\tlive")
    );
    let audit = api.get("/v1/config/audit").await;
    assert!(audit.text.contains("webhooks/crm"), "{}", audit.text);
    assert!(
        !audit.text.contains(SECRET),
        "the audit masks the secret: {}",
        audit.text
    );

    // In effect for the next call at once, signed with the secret the CLI gave.
    sipp_calls_menu(&host, 1, 500).await;
    host.wait_calls_ended(0, 1, Duration::from_secs(20));
    receiver
        .wait(Duration::from_secs(10), |_| receiver.accepted().len() >= 2)
        .await;
    let call_id = call_ids(&api).await.remove(0);
    assert_eq!(
        kinds_of(&receiver.accepted(), &call_id),
        ["call.started", "call.ended"]
    );
    assert!(receiver.got().iter().all(|g| g.signed));

    // Changed through the API with the secret given as *** (kept): answered calls too now.
    let now = api.get("/v1/config/effective").await;
    let mut body = now.json["webhooks"]["crm"]["value"].clone();
    body["events"] = json!(["call.answered"]);
    let changed = api
        .put("/v1/config/webhooks/crm", &body, Some(&etag(&now)))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json["change"]["after"]["secret"], "***");
    sipp_calls_menu(&host, 1, 500).await;
    host.wait_calls_ended(1, 1, Duration::from_secs(20));
    receiver
        .wait(Duration::from_secs(10), |_| receiver.accepted().len() >= 3)
        .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3, "{accepted:#?}");
    assert_eq!(accepted[2].kind(), "call.answered");
    assert!(accepted[2].signed, "the kept secret still signs");

    // Removed: nothing more is queued.
    let (code, out, err) = cli(&host, &["webhooks", "rm", "crm"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    sipp_calls_menu(&host, 1, 500).await;
    host.wait_calls_ended(2, 1, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.got().len(), 3);
}
