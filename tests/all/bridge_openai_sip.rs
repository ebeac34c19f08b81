//! Calls through OpenAI's SIP connector, played by the protocol-faithful fake
//! (support/fake_openai_sip.rs): OpenAI owns SIP and the audio, the host gets a signed
//! `realtime.call.incoming` webhook, accepts or rejects with the agent's configuration, and
//! steers the call over the sideband socket (tools, transcripts, usage, actions) and REST
//! (`refer`, `hangup`). Bad webhooks are refused without a call; a duplicate delivery makes no
//! second call. An agent failing in `on-start` gets the configured fallback: a 503 `reject`, or
//! an accept whose only speech is the apology. The dashboard, in headless Chromium, follows a
//! connector call live with its leg shown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agents::{fixture, greeter};
use crate::support::api::{Api, agent_lines, events_of, find, only_call_record};
use crate::support::browser::Browser;
use crate::support::fake_openai_sip::{FakeOpenAiSip, Reply, Script, Step};
use crate::support::host::{Host, HostBuilder};
use crate::support::ports::Ports;
use crate::support::process::require;

/// What the host says when an agent fails (the bundled `[agents.fallback] apology`).
const APOLOGY: &str = "Sorry, something went wrong on our side. Please call again later.";

/// The host with the example agents (and the `probe`, which rejects calls to `reject` and
/// fails in on-start on calls to `trap`), the connector pointed at `fake`, on a public listener
/// of its own: the host and the webhook URL.
fn start_host(fake: &FakeOpenAiSip) -> (Host, String, Ports) {
    let (builder, webhook, port) = connector_host(fake);
    (builder.start(), webhook, port)
}

/// [`start_host`] before it starts, for more settings.
fn connector_host(fake: &FakeOpenAiSip) -> (HostBuilder, String, Ports) {
    fake.connect(
        Host::builder()
            .examples(&["receptionist", "appointments"])
            .agent(
                "probe",
                fixture("probe"),
                "name = \"probe\"\nnumbers = [\"reject\", \"trap\"]\n[capabilities]\n\
                 kv-quota-bytes = 64\nhttp = [\"127.0.0.1:9\"]\n"
                    .into(),
            ),
    )
}

/// The record of the `n`th call (from 1) to have ended, once it has.
async fn record_of(api: &Api, n: usize) -> Value {
    let list = api
        .poll("/v1/calls?active=false", Duration::from_secs(15), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() >= n)
        })
        .await;
    let calls = list["calls"].as_array().unwrap();
    // Newest first.
    let id = calls[calls.len() - n]["id"].as_str().unwrap().to_string();
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(15), |d| {
        d["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "ended"))
    })
    .await
}

fn ended_reason(record: &Value) -> String {
    let events = events_of(record);
    let ended = find(&events, "ended");
    ended[0]["reason"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_call_is_accepted_with_the_agents_config_and_runs_a_tool() {
    let fake = FakeOpenAiSip::start(Script {
        steps: vec![Step::Caller("When are you open?".into()), Step::HangUp],
        replies: vec![
            Reply::ToolCall {
                name: "opening_hours".into(),
                arguments: "{}".into(),
            },
            Reply::Speech("We are open Monday to Friday.".into()),
        ],
        ..Script::default()
    })
    .await;
    let (mut host, webhook, _port) = start_host(&fake);
    host.expect(&["OpenAI SIP connector on", "proj_test"], 5);

    let status = fake
        .call(
            &webhook,
            "rtc_call0001",
            "sip:2000@sip.api.openai.com",
            &[("X-Tenant", "acme")],
        )
        .await;
    assert_eq!(status, 200);
    fake.wait(20, "the call to end at OpenAI", |f| f.ended("rtc_call0001"))
        .await;
    host.expect(&["call ended", "CallerHangup"], 10);

    // Accepted with the receptionist's on-start: instructions, tools, voice; no audio format.
    let accepts = fake.requests_of("accept");
    assert_eq!(accepts.len(), 1, "{accepts:?}");
    let session = &accepts[0].body;
    assert_eq!(session["type"], "realtime");
    assert_eq!(session["model"], "gpt-realtime");
    assert!(
        session["instructions"]
            .as_str()
            .unwrap()
            .starts_with("You are the friendly receptionist of Switchboard Demo."),
        "{session}"
    );
    let tools: Vec<&str> = session["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        ["opening_hours", "take_message", "transfer_to_person"]
    );
    assert_eq!(session["audio"]["output"]["voice"], "marin");
    assert!(
        session["audio"]["input"].get("format").is_none(),
        "{session}"
    );
    assert!(
        session["audio"]["output"].get("format").is_none(),
        "{session}"
    );

    // The sideband: greeting first, quoting its words; the tool's result back, then a response.
    let creates = fake.received_of("rtc_call0001", "response.create");
    assert!(
        creates[0]["response"]["instructions"]
            .as_str()
            .unwrap()
            .contains("Thank you for calling Switchboard Demo. How can I help you today?"),
        "{creates:?}"
    );
    let outputs = fake.received_of("rtc_call0001", "conversation.item.create");
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0]["item"]["type"], "function_call_output");
    assert!(
        outputs[0]["item"]["output"]
            .as_str()
            .unwrap()
            .contains("Monday to Friday 9:00-17:00"),
        "{outputs:?}"
    );
    assert_eq!(
        creates.len(),
        2,
        "the greeting and the answer after the tool"
    );
    assert!(
        fake.received_of("rtc_call0001", "input_audio_buffer.append")
            .is_empty()
    );
    assert!(fake.requests_of("hangup").is_empty(), "the caller hung up");

    // The record: an ordinary call with transcript, tool, usage and the caller's hang-up.
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let created = find(&events, "created");
    assert_eq!(created[0]["transport"], "openai-sip", "{created:?}");
    assert_eq!(created[0]["callee"], "2000");
    assert_eq!(created[0]["agent"], "receptionist");
    assert_eq!(find(&events, "tool-call")[0]["name"], "opening_hours");
    let transcript = record["transcript"].as_array().unwrap();
    let lines: Vec<(&str, &str)> = transcript
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert!(
        lines.contains(&("caller", "When are you open?")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("agent", "We are open Monday to Friday.")),
        "{lines:?}"
    );
    assert!(!record["usage"].as_array().unwrap().is_empty(), "{record}");
    // Per-turn latency from the caller's end of speech to OpenAI starting to play the answer.
    assert!(
        !record["latencies"].as_array().unwrap().is_empty(),
        "{record}"
    );
    assert_eq!(ended_reason(&record), "caller-hangup");
    // The greeting was spoken as asked: no note of a different one.
    assert!(find(&events, "greeting-reworded").is_empty(), "{events:?}");
    assert!(find(&events, "model-error").is_empty(), "{events:?}");

    // The configuration shows the connector with its secrets masked.
    let config = Api::new(host.http, None).get("/v1/config").await.json;
    let section = &config["openai-sip"];
    assert_eq!(section["api-key"], "***", "{section}");
    assert_eq!(section["webhook-secret"], "***", "{section}");
    assert_eq!(section["project-id"], "proj_test", "{section}");
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greeting_spoken_in_other_words_is_recorded_and_the_call_goes_on() {
    const ASKED: &str = "Thank you for calling Switchboard Demo. How can I help you today?";
    const SPOKEN: &str = "Hi, this is Switchboard Demo. What can I do for you?";
    let fake = FakeOpenAiSip::start(Script {
        greeting_as: Some(SPOKEN.into()),
        steps: vec![Step::Caller("When are you open?".into()), Step::HangUp],
        replies: vec![Reply::Speech("Nine to five.".into())],
        ..Script::default()
    })
    .await;
    let (host, webhook, _port) = start_host(&fake);
    fake.call(&webhook, "rtc_reworded", "sip:2000@sip.api.openai.com", &[])
        .await;
    fake.wait(20, "the call to end", |f| f.ended("rtc_reworded"))
        .await;

    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let reworded = find(&events, "greeting-reworded");
    assert_eq!(reworded.len(), 1, "{events:?}");
    assert_eq!(reworded[0]["asked"], ASKED);
    assert_eq!(reworded[0]["spoken"], SPOKEN);
    assert!(find(&events, "model-error").is_empty(), "{events:?}");
    // The call went on: the caller was answered, and hung up.
    let said: Vec<(&str, &str)> = record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("agent", SPOKEN),
            ("caller", "When are you open?"),
            ("agent", "Nine to five.")
        ]
    );
    assert_eq!(ended_reason(&record), "caller-hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_refers_reject_rejects_and_the_api_hangs_up() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (mut host, webhook, _port) = start_host(&fake);
    let api = Api::new(host.http, None);

    // The receptionist hears a caller who wants a person: `refer` to the front desk, and the
    // call ends as transferred without a hang-up that would cut the transfer.
    fake.plan(
        "rtc_transfer",
        vec![Step::Caller("Can I speak to a person please?".into())],
        vec![Reply::Speech("Sure.".into())],
    );
    assert_eq!(
        fake.call(&webhook, "rtc_transfer", "sip:2000@sip.api.openai.com", &[])
            .await,
        200
    );
    let record = record_of(&api, 1).await;
    let refers = fake.requests_of("refer");
    assert_eq!(refers.len(), 1, "{refers:?}");
    assert_eq!(refers[0].call_id, "rtc_transfer");
    assert_eq!(refers[0].body["target_uri"], "sip:front-desk@127.0.0.1");
    assert_eq!(
        ended_reason(&record),
        "transferred to sip:front-desk@127.0.0.1"
    );
    let events = events_of(&record);
    let transfers = find(&events, "transfer");
    assert!(
        transfers.iter().any(
            |t| t["status"] == "completed" && t["detail"] == "200 REFER relayed to the carrier"
        ),
        "{transfers:?}"
    );
    assert!(fake.requests_of("hangup").is_empty());

    // `appointments` hears key 0 (a keypad press the connector reports on the sideband) and
    // transfers to the operator.
    fake.plan("rtc_operator", vec![Step::Digit('0')], vec![]);
    fake.call(&webhook, "rtc_operator", "sip:3000@sip.api.openai.com", &[])
        .await;
    let record = record_of(&api, 2).await;
    let refers = fake.requests_of("refer");
    assert_eq!(refers.len(), 2, "{refers:?}");
    assert_eq!(refers[1].call_id, "rtc_operator");
    assert_eq!(refers[1].body["target_uri"], "sip:operator@127.0.0.1");
    assert_eq!(find(&events_of(&record), "dtmf")[0]["digits"], "0");
    assert_eq!(
        ended_reason(&record),
        "transferred to sip:operator@127.0.0.1"
    );

    // A rejecting agent: `reject` with its code, and no accept.
    assert_eq!(
        fake.call(&webhook, "rtc_reject", "sip:reject@sip.api.openai.com", &[])
            .await,
        200
    );
    let record = record_of(&api, 3).await;
    assert_eq!(ended_reason(&record), "rejected 486");
    let rejects = fake.requests_of("reject");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].body["status_code"], 486);
    // A number no agent serves: 404.
    fake.call(&webhook, "rtc_nobody", "sip:5555@sip.api.openai.com", &[])
        .await;
    fake.wait(10, "the second reject", |f| {
        f.requests_of("reject").len() == 2
    })
    .await;
    assert_eq!(fake.requests_of("reject")[1].body["status_code"], 404);
    assert!(
        fake.requests_of("accept")
            .iter()
            .all(|a| a.call_id == "rtc_transfer" || a.call_id == "rtc_operator")
    );

    // The API hangs a running call up: `hangup` at OpenAI.
    fake.plan("rtc_hangup", vec![], vec![]);
    fake.call(&webhook, "rtc_hangup", "sip:2000@sip.api.openai.com", &[])
        .await;
    let live = api
        .poll("/v1/calls?active=true", Duration::from_secs(10), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();
    fake.wait(10, "the sideband socket", |f| f.sockets("rtc_hangup") == 1)
        .await;
    let reply = api
        .post(&format!("/v1/calls/{id}/hangup"), &Value::Null)
        .await;
    assert!(reply.status < 300, "{}", reply.status);
    fake.wait(10, "the hang-up", |f| !f.requests_of("hangup").is_empty())
        .await;
    let record = record_of(&api, 5).await;
    assert_eq!(fake.requests_of("hangup")[0].call_id, "rtc_hangup");
    assert_eq!(ended_reason(&record), "hangup-requested");
    assert!(host.is_running());
    host.expect(&["call ended"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_a_duplicate_makes_no_second_call() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (mut host, webhook, _port) = start_host(&fake);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = FakeOpenAiSip::incoming_event("rtc_bad", "sip:+1@x", "sip:2000@x", &[]);

    // Unsigned, stale, signed by someone else, signed for another body: 400 each.
    let (status, text) = fake.post(&webhook, &[], &body).await;
    assert_eq!(status, 400, "{text}");
    let stale = fake.signed_headers("wh_stale", now - 600, &body);
    assert_eq!(fake.post(&webhook, &stale, &body).await.0, 400);
    let future = fake.signed_headers("wh_future", now + 600, &body);
    assert_eq!(fake.post(&webhook, &future, &body).await.0, 400);
    let mut forged = fake.signed_headers("wh_forged", now, &body);
    forged[2].1 = "v1,bm90IHRoZSBzaWduYXR1cmUgb2YgdGhpcyBib2R5IQ==".into();
    assert_eq!(fake.post(&webhook, &forged, &body).await.0, 400);
    let other = fake.signed_headers("wh_other", now, &body.replace("2000", "3000"));
    assert_eq!(fake.post(&webhook, &other, &body).await.0, 400);
    // Signed but malformed: 400; signed, of a type the connector does not act on: 200.
    let garbage = "{not json";
    let signed = fake.signed_headers("wh_garbage", now, garbage);
    assert_eq!(fake.post(&webhook, &signed, garbage).await.0, 400);
    let no_call = r#"{"object":"event","id":"evt_x","type":"realtime.call.incoming","created_at":1,"data":{}}"#;
    let signed = fake.signed_headers("wh_nocall", now, no_call);
    assert_eq!(fake.post(&webhook, &signed, no_call).await.0, 400);
    let live = r#"{"object":"event","id":"evt_live","type":"live.call.incoming","created_at":1,"data":{"session_id":"rtc_live"}}"#;
    let signed = fake.signed_headers("wh_live", now, live);
    assert_eq!(fake.post(&webhook, &signed, live).await.0, 200);
    host.expect(&["does not act on", "live.call.incoming"], 5);

    // A good delivery, then the same delivery again and the same call under a new id.
    fake.plan("rtc_dup", vec![Step::HangUp], vec![]);
    let body = FakeOpenAiSip::incoming_event("rtc_dup", "sip:+1@x", "sip:2000@x", &[]);
    let first = fake.signed_headers("wh_dup", now, &body);
    let again = first.clone();
    let renamed = fake.signed_headers("wh_dup_2", now, &body);
    let (a, b, c) = tokio::join!(
        fake.post(&webhook, &first, &body),
        fake.post(&webhook, &again, &body),
        fake.post(&webhook, &renamed, &body)
    );
    assert_eq!((a.0, b.0, c.0), (200, 200, 200));
    fake.wait(20, "the call to end", |f| f.ended("rtc_dup"))
        .await;
    let record = only_call_record(host.http).await;
    assert_eq!(ended_reason(&record), "caller-hangup");
    assert_eq!(fake.requests_of("accept").len(), 1);
    assert!(
        fake.requests().iter().all(|r| r.call_id == "rtc_dup"),
        "no request for a refused webhook: {:?}",
        fake.requests()
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sideband_reattaches_once_and_garbage_is_survived() {
    let fake = FakeOpenAiSip::start(Script {
        steps: vec![
            Step::Raw("this is not an event".into()),
            Step::Raw(r#"{"type":"response.done"}"#.into()),
            Step::DropSocket,
            Step::Caller("When are you open?".into()),
            Step::HangUp,
        ],
        replies: vec![
            Reply::ToolCall {
                name: "opening_hours".into(),
                arguments: "{}".into(),
            },
            Reply::Speech("Nine to five.".into()),
        ],
        ..Script::default()
    })
    .await;
    let (mut host, webhook, _port) = start_host(&fake);
    fake.call(&webhook, "rtc_drop", "sip:2000@sip.api.openai.com", &[])
        .await;
    fake.wait(20, "the call to end", |f| f.ended("rtc_drop"))
        .await;
    assert_eq!(fake.sockets("rtc_drop"), 2, "reattached once");
    let outputs = fake.received_of("rtc_drop", "conversation.item.create");
    assert_eq!(outputs.len(), 1, "the tool ran over the new socket");
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let errors = find(&events, "model-error");
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("reattached")),
        "{errors:?}"
    );
    assert_eq!(ended_reason(&record), "caller-hangup");
    assert!(host.is_running());
}

/// Place `call` to 2000, whose accept fails: once the host has tried to hang it up, the reason
/// its record was refused with. The call was never answered, and no sideband socket opened.
async fn refused_accept(fake: &FakeOpenAiSip, host: &Host, webhook: &str, call: &str) -> String {
    assert_eq!(
        fake.call(webhook, call, "sip:2000@sip.api.openai.com", &[])
            .await,
        200,
        "the webhook is answered at once, before the accept"
    );
    fake.wait(10, "the hang-up attempt", |f| {
        f.requests_of("hangup").iter().any(|r| r.call_id == call)
    })
    .await;
    assert_eq!(fake.sockets(call), 0, "no sideband socket");
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    assert!(find(&events, "answered").is_empty(), "{events:?}");
    find(&events, "rejected")[0]["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_accept_ends_the_record_with_the_reason() {
    let fake = FakeOpenAiSip::start(Script {
        accept_status: Some(500),
        ..Script::default()
    })
    .await;
    let (host, webhook, _port) = start_host(&fake);
    let reason = refused_accept(&fake, &host, &webhook, "rtc_fail").await;
    assert!(
        reason.contains("the accept failed: OpenAI accept REST answered 500"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_unanswered_in_time_ends_the_record_and_is_hung_up() {
    // OpenAI takes the accept and does not answer it for longer than the test lasts.
    let fake = FakeOpenAiSip::start(Script {
        accept_after: Some(Duration::from_secs(60)),
        ..Script::default()
    })
    .await;
    let (builder, webhook, _port) = connector_host(&fake);
    let host = builder
        .env("SWITCHBOARD__OPENAI_SIP__ACCEPT_TIMEOUT_MS", "300")
        .start();
    let sent = std::time::Instant::now();
    let reason = refused_accept(&fake, &host, &webhook, "rtc_stuck").await;
    assert!(
        reason.contains("the accept failed: OpenAI did not answer the accept within 300 ms"),
        "{reason}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "gave up after {:?}, not after the configured 300 ms",
        sent.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_connector_call_keeps_its_agent_version_across_a_reload() {
    const MANIFEST: &str = "name = \"greeter\"\nnumbers = [\"4000\"]\n";
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (builder, webhook, _port) =
        fake.connect(Host::builder().agent("greeter", greeter("1"), MANIFEST.into()));
    let mut host = builder.start();
    let api = Api::new(host.http, None);
    let greeting = |call: &str| {
        fake.received_of(call, "response.create")[0]["response"]["instructions"]
            .as_str()
            .unwrap()
            .to_string()
    };

    fake.call(&webhook, "rtc_v1", "sip:4000@sip.api.openai.com", &[])
        .await;
    fake.wait(10, "v1's sideband", |f| {
        !f.received_of("rtc_v1", "response.create").is_empty()
    })
    .await;
    // v2 is deployed while the v1 call runs.
    host.agents.install("greeter", &greeter("2"), MANIFEST);
    host.log
        .wait_for(&["agent version live", "greeter"], Duration::from_secs(60))
        .expect("v2 loaded");
    fake.call(&webhook, "rtc_v2", "sip:4000@sip.api.openai.com", &[])
        .await;
    fake.wait(10, "v2's sideband", |f| {
        !f.received_of("rtc_v2", "response.create").is_empty()
    })
    .await;
    assert!(greeting("rtc_v1").contains("hello from v1"));
    assert!(greeting("rtc_v2").contains("hello from v2"));

    // The v1 call runs on after the reload; the caller hangs up, then the other caller.
    let live = api.get("/v1/calls?active=true").await.json;
    assert_eq!(live["calls"].as_array().unwrap().len(), 2, "{live}");
    fake.hang_up("rtc_v1").await;
    fake.hang_up("rtc_v2").await;
    let (first, second) = (record_of(&api, 1).await, record_of(&api, 2).await);
    let hash = |record: &Value| {
        find(&events_of(record), "created")[0]["agent_hash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(hash(&first), hash(&second));
    assert_eq!(ended_reason(&first), "caller-hangup");
    assert_eq!(ended_reason(&second), "caller-hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_in_on_start_gets_the_apology_from_openai_then_a_hang_up() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (host, webhook, _port) = start_host(&fake);
    assert_eq!(
        fake.call(&webhook, "rtc_apology", "sip:trap@sip.api.openai.com", &[])
            .await,
        200
    );
    fake.wait(20, "the hang-up after the apology", |f| {
        !f.requests_of("hangup").is_empty()
    })
    .await;

    // Accepted without the agent's configuration (it has none), and no rejection.
    let accepts = fake.requests_of("accept");
    assert_eq!(accepts.len(), 1, "{accepts:?}");
    assert_eq!(accepts[0].call_id, "rtc_apology");
    assert_eq!(accepts[0].body["type"], "realtime");
    assert!(
        accepts[0].body["tools"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{:?}",
        accepts[0].body
    );
    assert!(fake.requests_of("reject").is_empty());
    // The only response asked for quotes the apology; then the call is hung up at OpenAI.
    let creates = fake.received_of("rtc_apology", "response.create");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(
        creates[0]["response"]["instructions"]
            .as_str()
            .unwrap()
            .contains(&format!("\"{APOLOGY}\"")),
        "{creates:?}"
    );
    // Not before the caller heard the end of it.
    let hangups = fake.requests_of("hangup");
    let hangup = &hangups[0];
    assert_eq!(hangup.call_id, "rtc_apology");
    let played = fake
        .played_at("rtc_apology")
        .expect("the apology was played");
    assert!(hangup.at >= played, "hung up before the apology was heard");

    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    assert!(!find(&events, "agent-fault").is_empty(), "{events:?}");
    assert_eq!(find(&events, "answered")[0]["model"], "fallback");
    let said = agent_lines(&record);
    assert_eq!(said, [APOLOGY]);
    assert_eq!(ended_reason(&record), "failed: agent failed");
}

/// The end-call tool on the connector: OpenAI plays the audio, so the host hangs up once
/// `output_audio_buffer.stopped` says the goodbye was played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_ends_a_connector_call_with_end_call_after_the_goodbye_is_played() {
    let fake = FakeOpenAiSip::start(Script {
        steps: vec![Step::Caller("That is all, thank you.".into())],
        replies: vec![
            Reply::ToolCall {
                name: "end_call".into(),
                arguments: r#"{"reason":"the caller is done"}"#.into(),
            },
            Reply::Speech("Thank you for calling, goodbye!".into()),
        ],
        ..Script::default()
    })
    .await;
    let (builder, webhook, _port) = connector_host(&fake);
    let host = builder
        .config("[agent.receptionist]\nend-call = true")
        .start();
    assert_eq!(
        fake.call(&webhook, "rtc_bye", "sip:2000@sip.api.openai.com", &[])
            .await,
        200
    );
    fake.wait(20, "the hang-up", |f| !f.requests_of("hangup").is_empty())
        .await;

    let accepts = fake.requests_of("accept");
    let tools: Vec<&str> = accepts[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tools.contains(&"end_call"), "{tools:?}");
    let hangups = fake.requests_of("hangup");
    assert_eq!(hangups.len(), 1, "{hangups:?}");
    assert_eq!(hangups[0].call_id, "rtc_bye");
    let played = fake.played_at("rtc_bye").expect("the goodbye was played");
    assert!(
        hangups[0].at >= played,
        "hung up before the goodbye was played"
    );

    let record = only_call_record(host.http).await;
    let said = agent_lines(&record);
    assert_eq!(
        said.last().map(String::as_str),
        Some("Thank you for calling, goodbye!"),
        "{said:?}"
    );
    assert_eq!(ended_reason(&record), "agent-hangup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_failing_in_on_start_is_rejected_with_503_when_so_configured() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (builder, webhook, _port) = connector_host(&fake);
    let host = builder
        .env("SWITCHBOARD__AGENTS__FALLBACK__ON_START", "reject")
        .start();
    assert_eq!(
        fake.call(&webhook, "rtc_refused", "sip:trap@sip.api.openai.com", &[])
            .await,
        200
    );
    fake.wait(20, "the rejection", |f| !f.requests_of("reject").is_empty())
        .await;
    let rejects = fake.requests_of("reject");
    assert_eq!(rejects[0].call_id, "rtc_refused");
    assert_eq!(rejects[0].body["status_code"], 503);

    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    assert!(!find(&events, "agent-fault").is_empty(), "{events:?}");
    assert_eq!(ended_reason(&record), "rejected 503");
    assert!(fake.requests_of("accept").is_empty());
    assert_eq!(fake.sockets("rtc_refused"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_connector_call_live_with_its_leg() {
    if !require("chromium") {
        return;
    }
    // OpenAI words the greeting its own way; the caller asks, the tool answers, and the call
    // stays up until the caller hangs up.
    let fake = FakeOpenAiSip::start(Script {
        greeting_as: Some("Hello from Switchboard Demo, how can I help?".into()),
        steps: vec![Step::Caller("When are you open?".into())],
        replies: vec![
            Reply::ToolCall {
                name: "opening_hours".into(),
                arguments: "{}".into(),
            },
            Reply::Speech("We are open Monday to Friday.".into()),
        ],
        ..Script::default()
    })
    .await;
    let (mut host, webhook, _port) = start_host(&fake);
    let wait = Duration::from_secs(20);
    let mut browser = Browser::launch().await;
    browser.navigate(&format!("http://{}/", host.http)).await;
    browser
        .wait_for(
            "the calls view with a live event stream",
            "!!document.querySelector('#history') && \
             document.querySelector('#stream-status').textContent === 'live'",
            wait,
        )
        .await;

    fake.call(&webhook, "rtc_dash", "sip:2000@sip.api.openai.com", &[])
        .await;
    let live = Api::new(host.http, None)
        .poll("/v1/calls?active=true", wait, |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();
    // Among the active calls without a reload, its leg shown.
    let row = format!("#active-calls tr[data-id={}]", json!(id));
    browser
        .wait_for(
            "the connector call among the active calls",
            &format!(
                "document.querySelector({})?.querySelector('td.leg')?.textContent === 'openai-sip'",
                json!(row)
            ),
            wait,
        )
        .await;
    browser.click(&format!("{row} td:nth-child(4)")).await;

    // Its detail follows it: the greeting as spoken, the caller's question and the answer after
    // the tool; the timeline tells how the greeting was reworded.
    browser
        .wait_for(
            "the conversation in the live detail",
            "(() => { \
               const lines = [...document.querySelectorAll('#transcript .line')]; \
               const said = (role, words) => lines.some(l => \
                 l.classList.contains(role) && l.textContent.includes(words)); \
               return document.querySelector('#call-state')?.textContent === 'live' && \
                 said('agent', 'Hello from Switchboard Demo') && \
                 said('caller', 'When are you open?') && \
                 said('agent', 'We are open Monday to Friday.') && \
                 !!document.querySelector('#timeline tr[data-kind=\"greeting-reworded\"]') && \
                 !!document.querySelector('#timeline tr[data-kind=\"tool-call\"]'); })()",
            wait,
        )
        .await;
    let reworded = browser
        .text("#timeline tr[data-kind=\"greeting-reworded\"]")
        .await;
    assert!(
        reworded.contains(
            "asked \"Thank you for calling Switchboard Demo. How can I help you today?\", \
             spoken \"Hello from Switchboard Demo, how can I help?\""
        ),
        "{reworded}"
    );
    let facts = browser.text("dl.facts").await;
    assert!(
        facts.contains("openai-sip") && facts.contains("receptionist"),
        "{facts}"
    );

    // The caller hangs up at OpenAI: the page shows the call ended.
    fake.hang_up("rtc_dash").await;
    browser
        .wait_for(
            "the detail to show the call ended",
            "document.querySelector('#call-state')?.textContent === 'ended' && \
             document.querySelector('dl.facts').innerText.includes('caller-hangup')",
            wait,
        )
        .await;
    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_to_another_agent_is_not_allowed_on_the_connector() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (mut host, webhook, _port) = start_host(&fake);
    let api = Api::new(host.http, None);

    // The receptionist hands callers who press 2 to `agent:appointments`; here OpenAI runs the
    // model, so the call core refuses it, the agent hears why (and offers a message), and no
    // `refer` leaves the host.
    fake.plan("rtc_handoff", vec![Step::Digit('2')], vec![]);
    fake.call(&webhook, "rtc_handoff", "sip:2000@sip.api.openai.com", &[])
        .await;
    // The refusal comes once the agent's words were heard; then the API hangs up.
    let live = api
        .poll("/v1/calls?active=true", Duration::from_secs(15), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(15), |d| {
        d["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "action-refused"))
    })
    .await;
    let r = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let record = record_of(&api, 1).await;
    let events = events_of(&record);
    let refused = find(&events, "action-refused");
    assert_eq!(refused.len(), 1, "{events:?}");
    assert_eq!(refused[0]["action"]["transfer"], "agent:appointments");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not-allowed: this call cannot be handed to another agent"),
        "{reason}"
    );
    assert!(find(&events, "handoff").is_empty(), "{events:?}");
    assert!(fake.requests_of("refer").is_empty());
    assert_eq!(record["call"]["agent"], "receptionist");
    assert_eq!(ended_reason(&record), "hangup-requested");
    assert!(host.is_running());
}
