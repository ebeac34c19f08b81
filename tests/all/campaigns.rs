//! Outbound campaigns against a real callee: SIPp behind a trunk answers as a person, is busy
//! or never answers, by the dialled number's last digit (tests/sipp/uas_campaign.xml). Every
//! contact ends with the right outcome, retries come after their delay and stop at their limit,
//! numbers on the do-not-call list never get an INVITE (counted in SIPp's own message log), the
//! calling window holds in each contact's zone, a `kill -9` mid-campaign calls nobody twice, and
//! bad input is refused with its reasons and nothing created.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::{Api, agent_lines};
use crate::support::host::{Host, HostBuilder};
use crate::support::ports::free_port;
use crate::support::process::{Proc, require};
use crate::support::sipp::{scenario, spawn_sipp, uac_args};
use crate::support::tempdir;
use crate::support::webhook_receiver::{Mode, Receiver, SECRET};

/// Monday 2026-12-07 10:00 in New York.
pub(crate) const MONDAY_10_NY: &str = "2026-12-07T15:00:00Z";

/// SIPp answering every campaign call on its own port, logging each message it sees.
pub(crate) fn callees() -> (Proc, tempfile::TempDir, u16) {
    let dir = tempdir("sipp-campaign");
    let port = free_port().to_string();
    let scenario = scenario("uas_campaign.xml").display().to_string();
    let args = [
        "-sf",
        scenario.as_str(),
        "-p",
        &port,
        "-trace_msg",
        "-m",
        "1000",
        "-timeout",
        "120s",
    ];
    let sipp = spawn_sipp(dir.path(), &args);
    // SIPp binds its port a moment after it starts.
    std::thread::sleep(Duration::from_millis(300));
    (sipp, dir, port.parse().unwrap())
}

/// INVITEs SIPp received, per dialled number (the request-URI's user part).
fn invites(dir: &std::path::Path) -> HashMap<String, usize> {
    let log: String = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let mut counts = HashMap::new();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("INVITE sip:") {
            let user = rest.split('@').next().unwrap_or_default().to_string();
            *counts.entry(user).or_insert(0) += 1;
        }
    }
    counts
}

/// The menu agent, a trunk to `port`, outbound calls given up after 2 s of ringing, and the
/// campaigns' clock at `clock`.
pub(crate) fn host_with_trunk(port: u16, clock: &str) -> HostBuilder {
    Host::builder()
        .examples(&["menu"])
        .sip("ring-timeout-secs = 2")
        .config(&format!(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{port}\""
        ))
        .env("SWITCHBOARD_TEST_CLOCK", clock)
}

pub(crate) fn campaign(contacts: Value) -> Value {
    json!({
        "name": "reminders",
        "agent": "menu",
        "via": "carrier",
        "from": "+15550100",
        "consent_basis": "patients who booked online and agreed to reminder calls",
        "pacing": {"max_concurrent": 3, "calls_per_second": 4},
        "max_attempts_per_day": 5,
        "retry": {
            "busy": {"delay_s": 1, "max_attempts": 2},
            "no_answer": {"delay_s": 1, "max_attempts": 2},
            "failed": {"delay_s": 1, "max_attempts": 1}
        },
        "contacts": contacts,
    })
}

async fn wait_finished(api: &Api, id: &str, secs: u64) -> Value {
    api.poll(
        &format!("/v1/campaigns/{id}"),
        Duration::from_secs(secs),
        |p| p["campaign"]["state"] == "finished",
    )
    .await
}

/// Each contact's outcome and attempts, by number.
async fn outcomes(api: &Api, id: &str) -> HashMap<String, (String, u64, Vec<Value>)> {
    let contacts = api.get(&format!("/v1/campaigns/{id}/contacts")).await;
    assert_eq!(contacts.status, 200, "{}", contacts.text);
    contacts.json["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["number"].as_str().unwrap().to_string(),
                (
                    c["outcome"].as_str().unwrap_or_default().to_string(),
                    c["attempts_made"].as_u64().unwrap(),
                    c["attempts"].as_array().unwrap().clone(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_ends_with_its_outcome_retries_wait_and_dnc_numbers_are_never_dialled() {
    if !require("sipp") {
        return;
    }
    let (_sipp, dir, port) = callees();
    let receiver = Receiver::start(Mode::Accept).await;
    let host = host_with_trunk(port, MONDAY_10_NY)
        .config(&format!(
            "[[webhooks]]\nname = \"crm\"\nurl = \"{}\"\nevents = [\"campaign.progress\"]\n\
             secret = \"{SECRET}\"\nallow-local = true",
            receiver.url()
        ))
        .start();
    let api = Api::new(host.http, None);
    // One number was on the list before; one is put there just after the start.
    let dnc = api
        .post(
            "/v1/dnc",
            &json!({"numbers": ["+1 212 555 0109", "not a number"]}),
        )
        .await;
    assert_eq!(dnc.status, 200, "{}", dnc.text);
    assert_eq!(dnc.json["added"], 1);
    assert_eq!(dnc.json["rejected"][0]["line"], 1);

    let numbers = [
        "+12125550101", // person
        "+12125550102", // busy
        "+12125550103", // no answer
        "+12125550109", // on the do-not-call list
        "+12125550111", // person
        "+12125550112", // busy
        "+12125550113", // no answer
        "+12125550121", // person
        "+12125550119", // put on the list after the start
    ];
    let contacts: Vec<Value> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"number": n, "name": format!("patient {i}"), "metadata": {"slot": i}}))
        .collect();
    let created = api.post("/v1/campaigns", &campaign(json!(contacts))).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["imported"], numbers.len());
    let id = created.json["id"].as_str().unwrap().to_string();
    let started = api
        .post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    assert_eq!(started.status, 200, "{}", started.text);
    let late = api
        .post("/v1/dnc", &json!({"numbers": ["+12125550119"]}))
        .await;
    assert_eq!(late.json["added"], 1);
    // Started twice: a conflict, nothing changes.
    let again = api
        .post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.text);

    let progress = wait_finished(&api, &id, 60).await;
    assert_eq!(progress["pending"], 0);
    assert_eq!(progress["dialing"], 0);
    let got = outcomes(&api, &id).await;
    let want = [
        ("+12125550101", "answered", 1),
        ("+12125550102", "busy", 2),
        ("+12125550103", "no-answer", 2),
        ("+12125550109", "dnc-skipped", 0),
        ("+12125550111", "answered", 1),
        ("+12125550112", "busy", 2),
        ("+12125550113", "no-answer", 2),
        ("+12125550121", "answered", 1),
        ("+12125550119", "dnc-skipped", 0),
    ];
    for (number, outcome, attempts) in want {
        let (got_outcome, got_attempts, rows) = &got[number];
        assert_eq!(
            (got_outcome.as_str(), *got_attempts),
            (outcome, attempts),
            "{number}: {rows:?}"
        );
        // A retry waits its delay (1 s) after the attempt before it ended.
        for pair in rows.windows(2) {
            let ended = pair[0]["ended_at_ms"].as_i64().unwrap();
            let next = pair[1]["started_at_ms"].as_i64().unwrap();
            assert!(
                next - ended >= 1000,
                "{number}: retried after {} ms",
                next - ended
            );
        }
        // Every placed call is in the record, with the contact's metadata for the agent.
        for attempt in rows.iter().filter(|a| a["call_id"].is_string()) {
            let call = api
                .get(&format!(
                    "/v1/calls/{}",
                    attempt["call_id"].as_str().unwrap()
                ))
                .await;
            let metadata = &call.json["call"]["metadata"];
            assert_eq!(metadata["campaign"]["id"], id.as_str(), "{metadata}");
            assert!(metadata["slot"].is_number(), "{metadata}");
        }
    }

    // On the peer's side: one INVITE per person, two per busy or unanswered number, none to a
    // number on the do-not-call list.
    let seen = invites(dir.path());
    for (number, _, attempts) in want {
        assert_eq!(
            seen.get(number).copied().unwrap_or(0),
            attempts as usize,
            "INVITEs to {number}: {seen:?}"
        );
    }

    // The export has every contact with the consent basis.
    let csv = api.get(&format!("/v1/campaigns/{id}/results.csv")).await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.text.lines().count(), 1 + numbers.len(), "{}", csv.text);
    assert!(
        csv.text
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("patients who booked online and agreed to reminder calls"),
        "{}",
        csv.text
    );
    let list = api.get("/v1/campaigns").await;
    assert_eq!(list.json["campaigns"][0]["campaign"]["id"], id.as_str());

    // The operator's system heard the campaign's progress, signed and in order, up to the end.
    let got = receiver
        .wait(Duration::from_secs(10), |got| {
            got.iter().any(|g| g.body["data"]["state"] == "finished")
        })
        .await;
    assert!(
        got.iter()
            .all(|g| g.signed && g.kind() == "campaign.progress")
    );
    let done: Vec<u64> = got
        .iter()
        .map(|g| g.body["data"]["done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let last = &got.last().unwrap().body["data"];
    assert_eq!(
        (last["campaign_id"].as_str(), last["done"].as_u64()),
        (Some(id.as_str()), Some(numbers.len() as u64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_waits_for_its_window_in_its_own_zone() {
    if !require("sipp") {
        return;
    }
    let (_sipp, dir, port) = callees();
    // 08:59:57 in New York: its window opens in 3 s; Chicago's an hour later.
    let host = host_with_trunk(port, "2026-12-07T13:59:57Z").start();
    let api = Api::new(host.http, None);
    let mut body = campaign(json!([
        {"number": "+12125550101", "time_zone": "America/New_York"},
        {"number": "+13125550111"},
    ]));
    body["window"] =
        json!({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"});
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    let mut events = api.events().await;
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    // Progress is pushed as it changes: started, then the New York contact done.
    let pushed = events
        .collect_until(Duration::from_secs(20), |name, p| {
            name == "campaign" && p["done"] == 1
        })
        .await;
    let states: Vec<&Value> = pushed
        .iter()
        .filter(|(name, _)| name == "campaign")
        .map(|(_, p)| &p["campaign"]["state"])
        .collect();
    assert_eq!(states.first(), Some(&&json!("running")), "{states:?}");
    assert_eq!(
        pushed.last().unwrap().1["outcomes"],
        json!([["answered", 1]])
    );
    let contacts = api
        .poll(
            &format!("/v1/campaigns/{id}/contacts"),
            Duration::from_secs(20),
            |c| c["contacts"][0]["outcome"] == "answered",
        )
        .await;
    let ny = &contacts["contacts"][0];
    let opened: i64 = 1_796_652_000_000; // 2026-12-07T14:00:00Z, 09:00 in New York
    let called = ny["attempts"][0]["started_at_ms"].as_i64().unwrap();
    assert!(
        (opened..opened + 2000).contains(&called),
        "called at {called}, the window opened at {opened}"
    );
    // The Chicago number (from its area code) waits for 09:00 in Chicago, uncalled.
    let chicago = &contacts["contacts"][1];
    assert_eq!(chicago["zones"], json!(["America/Chicago"]));
    assert_eq!(chicago["state"], "pending");
    assert_eq!(chicago["next_at_ms"], opened + 3_600_000);
    assert_eq!(invites(dir.path()).get("+13125550111"), None);

    // Cancelled: the waiting contact is closed, the campaign ends.
    let cancelled = api
        .post(&format!("/v1/campaigns/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.json["campaign"]["state"], "cancelled");
    let contacts = api
        .poll(
            &format!("/v1/campaigns/{id}/contacts"),
            Duration::from_secs(5),
            |c| c["contacts"][1]["state"] == "done",
        )
        .await;
    assert_eq!(contacts["contacts"][1]["outcome"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_resumes_its_campaign_and_calls_nobody_twice() {
    if !require("sipp") {
        return;
    }
    let (_sipp, dir, port) = callees();
    let mut host = host_with_trunk(port, MONDAY_10_NY).start();
    let api = Api::new(host.http, None);
    let numbers: Vec<String> = (0..8).map(|i| format!("+1212555{:02}1", 10 + i)).collect();
    let contacts: Vec<Value> = numbers.iter().map(|n| json!({"number": n})).collect();
    let mut body = campaign(json!(contacts));
    body["pacing"] = json!({"max_concurrent": 2, "calls_per_second": 2});
    let created = api.post("/v1/campaigns", &body).await;
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    // Killed while calls are up.
    api.poll(
        &format!("/v1/campaigns/{id}"),
        Duration::from_secs(20),
        |p| p["attempts"].as_u64().unwrap_or(0) >= 3,
    )
    .await;
    host.crash_and_restart();
    let api = Api::new(host.http, None);
    let progress = wait_finished(&api, &id, 60).await;
    assert_eq!(progress["contacts"], numbers.len());
    let got = outcomes(&api, &id).await;
    let seen = invites(dir.path());
    for number in &numbers {
        let (outcome, attempts, rows) = &got[number];
        // A person's call that the crash cut was answered, final; one killed before its record
        // was written failed, and `failed` allows one attempt. Either way: called once.
        assert!(
            matches!(outcome.as_str(), "answered" | "failed") && *attempts == 1,
            "{number}: {outcome} after {attempts}: {rows:?}"
        );
        assert!(
            seen.get(number.as_str()).copied().unwrap_or(0) <= 1,
            "{number}: {seen:?}"
        );
    }
    let answered = got.values().filter(|(o, _, _)| o == "answered").count();
    assert!(answered >= numbers.len() - 2, "{got:?}");
}

/// A trunk of one channel carrying an inbound call: its campaign dials nobody, and spends no
/// attempt, until the inbound call hangs up; then each contact is called once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_waits_for_a_channel_its_trunk_shares_with_inbound_calls() {
    if !require("sipp") {
        return;
    }
    let (_sipp, dir, port) = callees();
    let host = Host::builder()
        .examples(&["menu"])
        .sip("ring-timeout-secs = 2")
        .config(&format!(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{port}\"\n\
             inbound-sources = [\"127.0.0.1\"]\nchannels = 1"
        ))
        .env("SWITCHBOARD_TEST_CLOCK", MONDAY_10_NY)
        .start();
    let api = Api::new(host.http, None);
    // A caller from the trunk's address holds its one channel for 6 s.
    let caller_dir = tempdir("sipp-inbound");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let mut caller = spawn_sipp(caller_dir.path(), &uac_args("1000", 1, 6000, &[], &target));
    api.poll("/v1/calls?active=true", Duration::from_secs(10), |c| {
        c["calls"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;

    let numbers = ["+12125550301", "+12125550311"];
    let contacts: Vec<Value> = numbers.iter().map(|n| json!({"number": n})).collect();
    let mut body = campaign(json!(contacts));
    body["pacing"] = json!({"max_concurrent": 1, "calls_per_second": 5});
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = api.get(&format!("/v1/campaigns/{id}")).await.json;
    assert_eq!(waiting["campaign"]["state"], "running", "{waiting}");
    assert_eq!(waiting["attempts"], 0, "{waiting}");
    assert!(invites(dir.path()).is_empty(), "{:?}", invites(dir.path()));

    // The inbound call ends: the campaign goes on through the freed channel.
    assert_eq!(caller.wait(Duration::from_secs(15)).await, Some(0));
    wait_finished(&api, &id, 30).await;
    let got = outcomes(&api, &id).await;
    let seen = invites(dir.path());
    for number in numbers {
        let (outcome, attempts, rows) = &got[number];
        assert_eq!(
            (outcome.as_str(), *attempts),
            ("answered", 1),
            "{number}: {rows:?}"
        );
        assert_eq!(seen.get(number), Some(&1), "{number}: {seen:?}");
    }
}

#[tokio::test]
async fn bad_campaigns_are_refused_with_reasons_and_nothing_is_created() {
    let host = host_with_trunk(free_port(), MONDAY_10_NY).start();
    let api = Api::new(host.http, None);
    let refused = |r: &crate::support::api::Reply, field: &str| {
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.json["field"], field, "{}", r.text);
    };
    let one = json!([{"number": "+12125550101"}]);
    let mut body = campaign(one.clone());
    body["agent"] = json!("nobody");
    refused(&api.post("/v1/campaigns", &body).await, "agent");
    let mut body = campaign(one.clone());
    body["via"] = json!("nowhere");
    refused(&api.post("/v1/campaigns", &body).await, "via");
    let mut body = campaign(one.clone());
    body["window"] = json!({"start": "18:00", "end": "09:00"});
    refused(&api.post("/v1/campaigns", &body).await, "window");
    let mut body = campaign(one.clone());
    body["consent_basis"] = json!("");
    refused(&api.post("/v1/campaigns", &body).await, "consent_basis");
    let mut body = campaign(one);
    body["pacing"] = json!({"max_concurrent": 0});
    refused(
        &api.post("/v1/campaigns", &body).await,
        "pacing.max_concurrent",
    );

    // Not one callable contact: 400 with every row's reason.
    let body = campaign(json!([{"number": "12345"}, {"number": "+80012345678"}]));
    let none = api.post("/v1/campaigns", &body).await;
    assert_eq!(none.status, 400, "{}", none.text);
    assert_eq!(none.json["error"], "no_callable_contacts");
    let rejected = none.json["detail"]["rejected"].as_array().unwrap();
    assert!(
        rejected[0]["why"].as_str().unwrap().contains("E.164"),
        "{rejected:?}"
    );
    assert!(
        rejected[1]["why"]
            .as_str()
            .unwrap()
            .contains("no time zone"),
        "{rejected:?}"
    );
    let list = api.get("/v1/campaigns").await;
    assert_eq!(list.json["campaigns"], json!([]), "nothing half-created");

    // CSV: malformed rows reported by line, the rest imported.
    let mut body = campaign(Value::Null);
    body.as_object_mut().unwrap().remove("contacts");
    body["contacts_csv"] = json!(
        "number,name,patient_id\n+12125550101,Ann,p1\n+1 212 CALL,Bob,p2\n+12125550103,Cy\n+12125550104,Di,p4\n"
    );
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["imported"], 2);
    let lines: Vec<u64> = created.json["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4], "{}", created.text);
    let id = created.json["id"].as_str().unwrap();
    let contacts = api.get(&format!("/v1/campaigns/{id}/contacts")).await;
    assert_eq!(contacts.json["contacts"][1]["metadata"]["patient_id"], "p4");
    assert_eq!(contacts.json["contacts"][0]["state"], "pending");
    let unknown = api.get("/v1/campaigns/cmp_nope").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
}

/// The effective configuration's ETag, for a live change.
async fn etag(api: &Api) -> String {
    let r = api.get("/v1/config/effective").await;
    r.etag.expect("ETag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_pauses_when_its_trunk_is_removed_live_and_resumes_once_it_is_back() {
    if !require("sipp") {
        return;
    }
    let (_sipp, dir, port) = callees();
    let host = Host::builder()
        .examples(&["menu"])
        .http("allow-loopback-writes = true")
        .env("SWITCHBOARD_TEST_CLOCK", MONDAY_10_NY)
        .start();
    let api = Api::new(host.http, None);
    let trunk = json!({"outbound-proxy": format!("127.0.0.1:{port}")});
    let added = api
        .put("/v1/config/trunks/lab", &trunk, Some(&etag(&api).await))
        .await;
    assert_eq!(added.status, 200, "{}", added.text);
    let numbers: Vec<String> = (0..5).map(|i| format!("+1212555020{i}1")).collect();
    let contacts: Vec<Value> = numbers.iter().map(|n| json!({"number": n})).collect();
    let mut body = campaign(json!(contacts));
    body["via"] = json!("lab");
    body["pacing"] = json!({"max_concurrent": 1, "calls_per_second": 1});
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    api.poll(
        &format!("/v1/campaigns/{id}"),
        Duration::from_secs(10),
        |p| p["attempts"].as_u64().unwrap_or(0) >= 1,
    )
    .await;

    // The trunk goes: the campaign pauses by itself, the call up finishes, nobody else is called.
    let removed = api
        .delete("/v1/config/trunks/lab", Some(&etag(&api).await))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    let paused = api
        .poll(
            &format!("/v1/campaigns/{id}"),
            Duration::from_secs(5),
            |p| p["campaign"]["state"] == "paused" && p["dialing"] == 0,
        )
        .await;
    assert!(paused["pending"].as_u64().unwrap() >= 2, "{paused}");
    assert!(
        paused["campaign"]["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains("`lab` is no longer a trunk")),
        "{paused}"
    );
    let called: usize = invites(dir.path()).values().sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(invites(dir.path()).values().sum::<usize>(), called);

    // Back, and resumed by the operator: every contact is reached once.
    api.put("/v1/config/trunks/lab", &trunk, Some(&etag(&api).await))
        .await;
    let resumed = api
        .post(&format!("/v1/campaigns/{id}/resume"), &json!({}))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    assert_eq!(resumed.json["campaign"]["state_reason"], Value::Null);
    wait_finished(&api, &id, 30).await;
    let seen = invites(dir.path());
    for number in &numbers {
        assert_eq!(seen.get(number.as_str()), Some(&1), "{number}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_who_says_stop_calling_me_is_on_the_list_before_the_call_ends() {
    if !require("baresip") {
        return;
    }
    use crate::support::baresip::Baresip;
    use crate::support::calls::mic;
    use crate::support::fake_openai::{FakeOpenAi, Reply, Script};

    let model = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![Reply::Echo],
        caller_transcript: "Please stop calling me.".into(),
        ..Script::default()
    })
    .await;
    // The contact's phone answers at once and says its piece a second later.
    let number = "+12125550301";
    let phone = Baresip::start_with_mic(
        &format!("<sip:{number}@127.0.0.1>;regint=0;answermode=auto;audio_codecs=pcmu"),
        "",
        &mic(30.0, &[(1.0, 0.8)]),
    )
    .await;
    let host = host_with_trunk(phone.sip_port, MONDAY_10_NY)
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .start();
    let api = Api::new(host.http, None);
    let created = api
        .post("/v1/campaigns", &campaign(json!([{"number": number}])))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;

    // On the list while the call is still up.
    let listed = api
        .poll("/v1/dnc", Duration::from_secs(15), |l| {
            l["numbers"].as_array().is_some_and(|n| !n.is_empty())
        })
        .await;
    assert_eq!(listed["numbers"][0]["number"], number, "{listed}");
    let source = listed["numbers"][0]["source"].as_str().unwrap().to_string();
    let call_id = source.strip_prefix("call:").expect("the call it came from");
    let call = api.get(&format!("/v1/calls/{call_id}")).await;
    assert_eq!(call.json["call"]["state"], "active", "{}", call.text);
    assert_eq!(call.json["call"]["metadata"]["campaign"]["id"], id.as_str());
    api.post(&format!("/v1/calls/{call_id}/hangup"), &json!({}))
        .await;
    wait_finished(&api, &id, 15).await;

    // Never dialled again: the next campaign skips the number.
    let again = api
        .post("/v1/campaigns", &campaign(json!([{"number": number}])))
        .await;
    let next = again.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{next}/start"), &json!({}))
        .await;
    wait_finished(&api, &next, 15).await;
    let got = outcomes(&api, &next).await;
    assert_eq!(got[number].0, "dnc-skipped");
    assert_eq!(got[number].1, 0);
}

/// The confirmation campaign of the appointment desk, end to end: the contact's row reaches the
/// agent (it greets the patient by name with the appointment from the row), the patient presses
/// 1, and the campaign's results say `confirmed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appointments_agent_runs_a_confirmation_campaign() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    use crate::support::baresip::Baresip;

    let number = "+12125550401";
    let phone = Baresip::start_with(
        &format!("<sip:{number}@127.0.0.1>;regint=0;answermode=auto;audio_codecs=pcmu"),
        "",
    )
    .await;
    let mut ctrl = phone.ctrl().await;
    let host = Host::builder()
        .examples(&["appointments"])
        .calls("codecs = [\"pcmu\"]")
        .config(&format!(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{}\"",
            phone.sip_port
        ))
        .env("SWITCHBOARD_TEST_CLOCK", MONDAY_10_NY)
        .start();
    let api = Api::new(host.http, None);
    let mut body = campaign(json!([{"number": number, "name": "Ann",
        "metadata": {"when": "Tuesday at 10:30", "with": "Doctor Rivera"}}]));
    body["agent"] = json!("appointments");
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;

    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
            .await
            .is_some(),
        "{}",
        phone.log()
    );
    // Part of the greeting, then 1 to confirm.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctrl.command("sndcode", "1").await;
    let progress = wait_finished(&api, &id, 40).await;
    assert_eq!(progress["outcomes"], json!([["answered", 1]]), "{progress}");
    let contacts = api.get(&format!("/v1/campaigns/{id}/contacts")).await;
    let contact = &contacts.json["contacts"][0];
    assert_eq!(contact["agent_outcome"], "confirmed", "{contact}");
    let call_id = contact["attempts"][0]["call_id"].as_str().unwrap();
    let call = api.get(&format!("/v1/calls/{call_id}")).await;
    let said = agent_lines(&call.json);
    assert!(
        said[0].starts_with("Hello Ann, this is Riverside Clinic about your appointment with Doctor Rivera on Tuesday at 10:30."),
        "{said:?}"
    );
    assert!(said.iter().any(|s| s.contains("is confirmed")), "{said:?}");
    let csv = api.get(&format!("/v1/campaigns/{id}/results.csv")).await;
    assert!(csv.text.contains(",answered,confirmed,"), "{}", csv.text);
}

/// A campaign with machine detection on (`detect`): a contact whose answering machine picks up
/// is hung up on once the verdict is in, before the beep, and ends as `machine` (the default
/// policy gives a machine one attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_hung_up_on_and_counted_as_machine() {
    if !require("sipp") || !require("sox") {
        return;
    }
    use crate::support::sipp::sipp_callee_with;

    let (greeting, _dir, audio) = crate::amd::machine_greeting();
    let (beep_at, _) = greeting.beep_ms.unwrap();
    let (_sipp, _sipp_dir, port) =
        sipp_callee_with(Some("uas_machine.xml"), &["-key", "audio", &audio]);
    let host = host_with_trunk(port, MONDAY_10_NY).start();
    let api = Api::new(host.http, None);
    let mut body = campaign(json!([{"number": "+12125550501"}]));
    body["amd"] = json!("detect");
    body.as_object_mut().unwrap().remove("retry");
    let created = api.post("/v1/campaigns", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;
    let progress = wait_finished(&api, &id, 30).await;
    assert_eq!(progress["outcomes"], json!([["machine", 1]]), "{progress}");
    let got = outcomes(&api, &id).await;
    let (_, attempts, rows) = &got["+12125550501"];
    assert_eq!(*attempts, 1);
    let call_id = rows[0]["call_id"].as_str().unwrap();
    let call = api.get(&format!("/v1/calls/{call_id}")).await;
    let events = call.json["events"].as_array().unwrap();
    let verdict = events
        .iter()
        .find(|e| e["kind"] == "machine-detection")
        .expect("a verdict");
    assert_eq!(verdict["data"]["verdict"], "machine");
    assert!(
        verdict["data"]["at_ms"].as_u64().unwrap() < beep_at,
        "{verdict}"
    );
    assert_eq!(
        call.json["call"]["end_reason"], "hangup-requested",
        "{}",
        call.text
    );
    assert_eq!(call.json["call"]["metadata"]["campaign"]["amd"], "detect");
}
