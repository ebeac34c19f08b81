//! Hand-off between agents inside one call, on a real phone (baresip, calling as patient 1001)
//! with the OpenAI fake as the model: the `receptionist` on 2000 hands the caller to
//! `appointments` (keypad 2, or `POST /v1/calls/{id}/transfer` with `agent:appointments`), whose
//! on-start reads `call.context().handoff`. The fake sees the new agent's instructions (with the
//! conversation so far) in a live `session.update` and its greeting asked for; the record has
//! the hand-off and follows the new agent; the call ends normally.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::{Api, events_of, find, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{dial, mic};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::process::require;

/// What the caller says in their first turn (the fake's transcript of it).
const CALLER_SAYS: &str = "Hi, this is Jordan, I need to see the doctor next week.";

async fn fake() -> FakeOpenAi {
    FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            Reply::Speech {
                transcript: "Let me help you with that.".into(),
                audio_ms: 1000,
            },
        ],
        caller_transcript: CALLER_SAYS.into(),
        ..Script::default()
    })
    .await
}

fn start_host(fake: &FakeOpenAi) -> Host {
    start_host_with(fake, "")
}

fn start_host_with(fake: &FakeOpenAi, config: &str) -> Host {
    Host::builder()
        .examples(&["receptionist", "appointments"])
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config(config)
        .start()
}

/// The phone, whose user speaks (a tone the fake hears as [`CALLER_SAYS`]) at 4 s.
async fn phone() -> Baresip {
    Baresip::start_with_mic(
        "<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(40.0, &[(4.0, 0.8)]),
    )
    .await
}

/// What the fake saw of the hand-off: the live `session.update` with the appointments agent's
/// instructions and tools, and its greeting asked for.
fn assert_the_model_followed(fake: &FakeOpenAi) {
    assert_eq!(fake.upgrades().len(), 1, "one session all along");
    let updates = fake.received_of("session.update");
    assert_eq!(updates.len(), 2, "setup and hand-off: {updates:?}");
    let live = &updates[1]["session"];
    assert_the_new_agent(live);
    // Voice and model stay: only instructions and tools change live.
    assert!(live["audio"].is_null(), "{live}");
    assert_the_greeting_asked(fake);
}

/// The appointments agent's session: its instructions carry `call.context().handoff` (from the
/// receptionist, with what the caller said), and its tools.
fn assert_the_new_agent(session: &Value) {
    let instructions = session["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("Jordan's appointment")
            && instructions.contains("The receptionist passed this caller on")
            && instructions.contains(&format!("caller: {CALLER_SAYS}")),
        "{instructions}"
    );
    let tools: Vec<&str> = session["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"confirm_appointment"), "{tools:?}");
}

fn assert_the_greeting_asked(fake: &FakeOpenAi) {
    let greetings: Vec<Value> = fake
        .received_of("response.create")
        .into_iter()
        .filter(|r| {
            r["response"]["instructions"]
                .as_str()
                .is_some_and(|i| i.contains("I have your details from reception"))
        })
        .collect();
    assert_eq!(greetings.len(), 1, "the new greeting asked for once");
}

/// The record: the hand-off events in order, the greeting's gap, the call now the
/// appointments agent's, ended by the caller. Returns the gap in ms.
fn assert_the_record(record: &Value) -> u64 {
    let events = events_of(record);
    let handoffs = find(&events, "handoff");
    let statuses: Vec<&str> = handoffs
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["requested", "handed-off", "greeting-heard"],
        "{handoffs:?}"
    );
    for h in &handoffs {
        assert_eq!(h["from"], "receptionist");
        assert_eq!(h["to"], "appointments");
    }
    assert_eq!(
        record["call"]["agent"], "appointments",
        "{}",
        record["call"]
    );
    assert_eq!(find(&events, "ended")[0]["reason"], "caller-hangup");
    assert!(find(&events, "agent-fault").is_empty(), "{events:?}");
    handoffs[2]["gap_ms"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keypad_2_hands_the_caller_from_the_receptionist_to_appointments() {
    if !require("baresip") {
        return;
    }
    let fake = fake().await;
    let mut host = start_host(&fake);
    let phone = phone().await;
    press_2_and_hang_up(&mut host, &phone).await;

    assert_the_model_followed(&fake);
    let gap = assert_the_record(&only_call_record(host.http).await);
    eprintln!("hand-off gap (request to first greeting audio out): {gap} ms");
    assert!(host.is_running());
}

/// Presses 2 once the caller's first turn was answered; returns when the new agent's greeting
/// went out, then hangs up.
async fn press_2_and_hang_up(host: &mut Host, phone: &Baresip) {
    let mut ctrl = dial(phone, "2000", host.sip_port).await;
    host.expect(&["Transcript", "Caller", CALLER_SAYS], 20);
    host.expect(&["Transcript", "Agent", "Let me help you"], 10);
    ctrl.command("sndcode", "2").await;
    host.expect(
        &[
            "Transcript",
            "Agent",
            "passing you to our appointments desk",
        ],
        10,
    );
    host.expect(&["Handoff", "handed-off"], 20);
    host.expect(
        &["Transcript", "Agent", "I have your details from reception"],
        10,
    );
    host.expect(&["Handoff", "greeting-heard"], 20);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_voice_opens_a_new_model_session_with_the_conversation() {
    if !require("baresip") {
        return;
    }
    let fake = fake().await;
    let mut host = start_host_with(&fake, "[agent.appointments.config]\nvoice = \"sage\"\n");
    let phone = phone().await;
    press_2_and_hang_up(&mut host, &phone).await;

    // OpenAI refuses a voice change once audio has played: a second session, set up with the
    // new agent's voice, instructions and tools, and the conversation so far as items.
    assert_eq!(fake.upgrades().len(), 2, "a second session");
    let updates = fake.received_of("session.update");
    assert_eq!(updates.len(), 2, "one setup per session: {updates:?}");
    let second = &updates[1]["session"];
    assert_eq!(second["audio"]["output"]["voice"], "sage", "{second}");
    assert_the_new_agent(second);
    let said: Vec<String> = fake
        .received_of("conversation.item.create")
        .iter()
        .filter(|e| e["item"]["type"] == "message")
        .map(|e| {
            e["item"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(said.iter().any(|t| t == CALLER_SAYS), "{said:?}");
    assert_the_greeting_asked(&fake);
    // The caller's audio goes to the new session.
    let appended = fake.appended_by_connection();
    assert!(appended[1] > 0, "{appended:?}");

    let gap = assert_the_record(&only_call_record(host.http).await);
    eprintln!("hand-off gap with a new model session: {gap} ms");
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_hands_a_live_call_to_another_agent() {
    if !require("baresip") {
        return;
    }
    let fake = fake().await;
    let mut host = start_host(&fake);
    let api = Api::new(host.http, None);
    let phone = phone().await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["Transcript", "Agent", "Let me help you"], 20);
    let live = api
        .poll("/v1/calls?active=true", Duration::from_secs(10), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();
    let transfer = |to: &str| {
        let (api, path) = (&api, format!("/v1/calls/{id}/transfer"));
        let body = json!({ "to": to });
        async move { api.post(&path, &body).await }
    };

    // An agent that is not loaded: a 400 naming it, and the call goes on untouched.
    let r = transfer("agent:nobody").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["field"], "to", "{}", r.text);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .contains("no agent named `nobody`"),
        "{}",
        r.text
    );
    // The receptionist grants `agent:appointments`: handed over at once.
    let r = transfer("agent:appointments").await;
    assert_eq!(r.status, 202, "{}", r.text);
    host.expect(&["Handoff", "handed-off"], 20);
    host.expect(
        &["Transcript", "Agent", "I have your details from reception"],
        10,
    );
    host.expect(&["Handoff", "greeting-heard"], 20);
    // The live call is listed with the agent that runs it now.
    api.poll("/v1/calls?active=true", Duration::from_secs(5), |l| {
        l["calls"][0]["agent"] == "appointments"
    })
    .await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    assert_the_model_followed(&fake);
    assert_the_record(&only_call_record(host.http).await);
    assert!(host.is_running());
}
