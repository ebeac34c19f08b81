//! A phone call through Telnyx, played by the protocol-faithful fake (support/fake_telnyx.rs):
//! the signed `call.initiated` webhook, the Call Control `answer` with an RTP-mode stream, the
//! media stream with frames out of order, marks and `clear`, and the `hangup` and `transfer`
//! commands — on the `receptionist` agent with the fake OpenAI model, through the same call
//! logic as a SIP or Twilio call. Bad input of every kind is refused without a call.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::api::{Api, answered_outbound, ended, events_of, find, only_call_record};
use crate::support::bridge_call::check_call;
use crate::support::calls::{AGENT_HZ, WINDOW, mic, tone_spans};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::fake_telnyx::{CallResult, CallScript, Callee, Ending, FakeTelnyx, Transferee};
use crate::support::host::Host;
use crate::support::ports::{Ports, ports};

/// The account's number outbound calls come from.
const OUR_NUMBER: &str = "+14155550199";

/// The host with the receptionist on 2000, the OpenAI fake as its model and the Telnyx bridge
/// on a public listener of its own; the listener's port is reserved while the host lives.
fn start_host(telnyx: &FakeTelnyx, model: &FakeOpenAi) -> (Host, String, Ports) {
    let port = ports(1);
    let public_url = format!("http://127.0.0.1:{}", port.first());
    let host = Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]\nrecord = true")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"",
            port.first()
        ))
        .config(&format!(
            "[bridges.telnyx]\napi-key = \"{}\"\npublic-key = \"{}\"\nconnection-id = \"{}\"\n\
             api-base = \"{}\"\nnumbers = [\"{OUR_NUMBER}\"]",
            telnyx.api_key, telnyx.public_key, telnyx.connection_id, telnyx.api_base
        ))
        .start();
    (host, public_url, port)
}

fn model_script(replies: Vec<Reply>) -> Script {
    Script {
        api_key: "test".into(),
        replies,
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telnyx_call_runs_greeting_tool_digit_barge_in_and_caller_hangup() {
    let model = FakeOpenAi::start(model_script(vec![
        Reply::Echo,
        Reply::ToolCall {
            name: "opening_hours".into(),
            arguments: "{}".into(),
        },
        Reply::Speech {
            transcript: "We are open Monday to Friday, and let me tell you more.".into(),
            audio_ms: 10_000,
        },
        Reply::Speech {
            transcript: "Sure.".into(),
            audio_ms: 500,
        },
    ]))
    .await;
    let telnyx = FakeTelnyx::start().await;
    let (mut host, public_url, _port) = start_host(&telnyx, &model);

    // The greeting plays first (3.6 s); a digit at 4 s; the question at 5 s; the caller cuts the
    // long answer at 9 s and hangs up at 13 s.
    let call = telnyx.call(
        &public_url,
        CallScript {
            speech: mic(14.0, &[(5.0, 0.8), (9.0, 1.0)]),
            digits: vec![(Duration::from_secs(4), '5')],
            hangup_after: Some(Duration::from_secs(13)),
            ..CallScript::default()
        },
    );
    let call = tokio::time::timeout(Duration::from_secs(40), call)
        .await
        .expect("the call ends");
    host.expect(&["call ended", "CallerHangup"], 10);

    assert_eq!(call.ending, Ending::CallerHungUp);
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    // The host answered with an RTP-mode stream to the public listener.
    let answer = call.answer.as_ref().expect("answered");
    assert!(
        answer["stream_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("ws://127.0.0.1:") && u.ends_with("/telnyx/media")),
        "{answer}"
    );
    assert_eq!(answer["stream_track"], "inbound_track");
    let commands = telnyx.commands();
    assert_eq!(commands[0].action, "answer", "{commands:?}");
    assert_eq!(commands[0].call_control_id, call.call_control_id);
    assert!(
        call.media_received > 100 && call.marks_echoed > 50,
        "{call:?}"
    );
    assert!(call.reordered >= 20, "frames went out of order: {call:?}");
    assert!(call.clears >= 1, "barge-in clears Telnyx's queue");

    // The caller's audio reached the model, PCMU straight through.
    assert!(
        model.appended_bytes() > 8 * 8000,
        "{}",
        model.appended_bytes()
    );
    let updates = model.received_of("session.update");
    assert_eq!(
        updates[0]["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );
    // The agent ran the tool and its answer went back to the model.
    let outputs = model.received_of("conversation.item.create");
    assert!(
        outputs
            .iter()
            .any(|e| e["item"]["type"] == "function_call_output"),
        "{outputs:?}"
    );

    check_call(&call.heard, &model, host.http, "telnyx", 8000).await;
    assert!(host.is_running());
}

/// A call whose caller presses 0 at 1 s, for which the receptionist transfers to the front desk;
/// `script` says the rest. The call, played to its end, after checking it was transferred there.
async fn asks_for_the_front_desk(
    telnyx: &FakeTelnyx,
    public_url: &str,
    script: CallScript,
) -> CallResult {
    let call = telnyx
        .call(
            public_url,
            CallScript {
                digits: vec![(Duration::from_secs(1), '0')],
                ..script
            },
        )
        .await;
    assert_eq!(
        call.transferred_to.as_deref(),
        Some("sip:front-desk@127.0.0.1"),
        "{call:?}"
    );
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_transfers_and_the_api_hangs_up_through_call_control() {
    let model = FakeOpenAi::start(model_script(vec![Reply::Echo])).await;
    let telnyx = FakeTelnyx::start().await;
    let (mut host, public_url, _port) = start_host(&telnyx, &model);

    // Key 0 asks the receptionist for the front desk: a `transfer` command; once the new leg
    // answers, the call ends as transferred and no hang-up follows.
    let call = asks_for_the_front_desk(&telnyx, &public_url, CallScript::default()).await;
    assert_eq!(call.ending, Ending::HostClosed, "{call:?}");
    host.expect(&["call ended", "Transferred"], 10);
    let actions: Vec<String> = telnyx.commands().into_iter().map(|c| c.action).collect();
    assert_eq!(actions, ["answer", "transfer"]);
    let record = only_call_record(host.http).await;
    let ended = find(&events_of(&record), "ended")[0].clone();
    assert!(
        ended["reason"].as_str().unwrap().contains("transferred"),
        "{ended:?}"
    );
    // Completed once the new leg answered, as its webhook told.
    let events = events_of(&record);
    let transfers = find(&events, "transfer");
    assert!(
        transfers.iter().any(|t| t["status"] == "completed"
            && t["detail"] == "200 the target answered (Telnyx call.answered)"),
        "{transfers:?}"
    );

    // The API hangs a call up: Telnyx gets `hangup` and ends the stream.
    let api = Api::new(host.http, None);
    let hangup = {
        let api = api.with_token(None);
        tokio::spawn(async move {
            let list = api
                .poll("/v1/calls?active=true", Duration::from_secs(10), |l| {
                    l["calls"].as_array().is_some_and(|c| !c.is_empty())
                })
                .await;
            let id = list["calls"][0]["id"].as_str().unwrap().to_string();
            api.post(&format!("/v1/calls/{id}/hangup"), &serde_json::json!({}))
                .await
        })
    };
    let call = telnyx.call(&public_url, CallScript::default()).await;
    assert_eq!(hangup.await.unwrap().status, 202);
    assert!(
        matches!(call.ending, Ending::HungUpByCommand | Ending::HostClosed),
        "{call:?}"
    );
    let last = telnyx.commands().pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.call_control_id.as_str()),
        ("hangup", call.call_control_id.as_str())
    );
    host.expect(&["call ended", "AgentHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_target_does_not_answer_goes_back_to_the_agent() {
    let model = FakeOpenAi::start(model_script(vec![Reply::Echo])).await;
    let telnyx = FakeTelnyx::start().await;
    let (mut host, public_url, _port) = start_host(&telnyx, &model);

    // Key 0 asks for the front desk; Telnyx takes the `transfer` (200) but the desk is busy:
    // the new leg's `call.hangup` says so, the caller stays on and hangs up later.
    let script = CallScript {
        hangup_after: Some(Duration::from_secs(7)),
        transferee: Transferee::Fails {
            cause: "user_busy",
            sip: "486",
        },
        ..CallScript::default()
    };
    let call = asks_for_the_front_desk(&telnyx, &public_url, script).await;
    host.expect(&["call ended", "CallerHangup"], 10);
    assert_eq!(
        call.ending,
        Ending::CallerHungUp,
        "the call went on: {call:?}"
    );
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    let commands = telnyx.commands();
    let actions: Vec<&str> = commands.iter().map(|c| c.action.as_str()).collect();
    assert_eq!(actions, ["answer", "transfer"], "no hang-up");
    assert!(
        commands[1].body["target_leg_client_state"].is_string(),
        "the new leg is tagged: {:?}",
        commands[1].body
    );

    // The record: the transfer failed with Telnyx's cause; the agent heard of it and spoke.
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let transfers = find(&events, "transfer");
    assert!(
        transfers.iter().any(|t| t["status"] == "failed"
            && t["detail"] == "486 the target did not answer (Telnyx call.hangup, user_busy)"),
        "{transfers:?}"
    );
    assert!(
        !transfers.iter().any(|t| t["status"] == "completed"),
        "{transfers:?}"
    );
    // The receptionist's on-transfer-result offers to take a message.
    let actions = find(&events, "actions");
    assert!(
        actions
            .iter()
            .any(|a| a["actions"].to_string().contains("Nobody is free")),
        "{actions:?}"
    );
    assert!(
        model
            .received_of("response.create")
            .iter()
            .any(|r| r.to_string().contains("Nobody is free")),
        "the agent's words reached the model"
    );
    assert_eq!(
        find(&events, "ended")[0]["reason"],
        "caller-hangup",
        "{events:?}"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_and_streams_are_refused_without_a_call() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let telnyx = FakeTelnyx::start().await;
    let (host, public_url, _port) = start_host(&telnyx, &model);
    let url = format!("{public_url}/telnyx/webhook");
    let id = FakeTelnyx::call_control_id();
    let body = telnyx.call_initiated(&id, "+14155550100", "2000", &url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_at = |at: u64, body: &str| Some((at.to_string(), telnyx.sign(at, body)));

    // Unsigned, stale, signed over another body, signed with another account's key: 403.
    let (status, _) = telnyx.post_webhook(&url, &body, None).await;
    assert_eq!(status, 403);
    let (status, reply) = telnyx
        .post_webhook(&url, &body, signed_at(now - 600, &body))
        .await;
    assert_eq!(status, 403);
    assert!(reply.contains("5 minutes"), "{reply}");
    let tampered = body.replace("\"2000\"", "\"2001\"");
    let (status, _) = telnyx
        .post_webhook(&url, &tampered, signed_at(now, &body))
        .await;
    assert_eq!(status, 403);
    let other = FakeTelnyx::start().await;
    let forged = Some((now.to_string(), other.sign(now, &body)));
    let (status, _) = telnyx.post_webhook(&url, &body, forged).await;
    assert_eq!(status, 403);
    // Signed, but not JSON of a webhook: 400. Another Call Control App: 403. No `to`: 400.
    let (status, _) = telnyx.deliver(&url, "{\"data\":").await;
    assert_eq!(status, 400);
    let (status, _) = telnyx.deliver(&url, "{\"data\":{}}").await;
    assert_eq!(status, 400);
    let elsewhere = body.replace(&telnyx.connection_id, "999");
    let (status, _) = telnyx.deliver(&url, &elsewhere).await;
    assert_eq!(status, 403);
    let mut no_to: serde_json::Value = serde_json::from_str(&body).unwrap();
    no_to["data"]["payload"]
        .as_object_mut()
        .unwrap()
        .remove("to");
    let (status, _) = telnyx.deliver(&url, &no_to.to_string()).await;
    assert_eq!(status, 400);
    // Events the bridge does not act on: 200, nothing done.
    let outgoing = body.replace("\"incoming\"", "\"outgoing\"");
    let (status, _) = telnyx.deliver(&url, &outgoing).await;
    assert_eq!(status, 200);
    let hangup = body.replace("call.initiated", "call.hangup");
    let (status, _) = telnyx.deliver(&url, &hangup).await;
    assert_eq!(status, 200);

    // A number no agent serves: the call is rejected with `NOT_FOUND`.
    let nobody = telnyx
        .call(
            &public_url,
            CallScript {
                to: "9999".into(),
                ..CallScript::default()
            },
        )
        .await;
    assert_eq!(nobody.ending, Ending::Rejected("NOT_FOUND".into()));
    assert!(nobody.answer.is_none());

    // Streams: one without a call's token, one that sends garbage; each closed with a reason.
    let media = format!(
        "{}/telnyx/media",
        public_url.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(media.as_str())
        .await
        .unwrap();
    let start = serde_json::json!({"event": "start", "sequence_number": "1",
        "start": {"call_control_id": id, "client_state": "Zm9yZ2Vk",
                  "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}},
        "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"});
    let connected = serde_json::json!({"event": "connected", "version": "1.0.0"});
    ws.send(Message::text(connected.to_string())).await.unwrap();
    ws.send(Message::text(start.to_string())).await.unwrap();
    assert!(closed_with(&mut ws).await.contains("token"));
    let (mut ws, _) = tokio_tungstenite::connect_async(media.as_str())
        .await
        .unwrap();
    ws.send(Message::text("garbage".to_string())).await.unwrap();
    assert!(
        closed_with(&mut ws)
            .await
            .contains("not a media-streaming frame")
    );

    // The control API is not on the public listener.
    let public = reqwest::get(format!("{public_url}/v1/calls"))
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);

    // Only the webhook for 9999 made a call, and it was rejected; nothing else was answered.
    let api = Api::new(host.http, None);
    let calls = api
        .poll("/v1/calls", Duration::from_secs(5), |l| {
            l["calls"].as_array().is_some_and(|c| !c.is_empty())
        })
        .await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 1, "{calls}");
    let commands = telnyx.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].action, "reject");
    assert_eq!(commands[0].body["cause"], "NOT_FOUND");
}

/// The reason of the close frame the host ends a stream with.
async fn closed_with<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the host closes the stream");
    let Some(Ok(Message::Close(Some(frame)))) = closed else {
        panic!("{closed:?}")
    };
    frame.reason.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_through_telnyx_answered_busy_unanswered_and_cancelled() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let telnyx = FakeTelnyx::start().await;
    let (host, public_url, _port) = start_host(&telnyx, &model);
    let api = Api::new(host.http, None);
    let place = |to: &str| serde_json::json!({"to": to, "from": OUR_NUMBER, "via": "telnyx", "agent": "receptionist"});

    // Answered: the dial asks for the RTP stream with the token, the agent greets the callee
    // over it, and the callee hangs up.
    let reply = api.post("/v1/calls", &place("tel:+14155550123")).await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    let id = reply.json["id"].as_str().unwrap().to_string();
    let dialled = telnyx
        .dialled(Callee::Answers(CallScript {
            hangup_after: Some(Duration::from_secs(5)),
            ..CallScript::default()
        }))
        .await;
    let body = &dialled.body;
    assert_eq!(body["to"], "+14155550123");
    assert_eq!(body["from"], OUR_NUMBER);
    assert_eq!(body["connection_id"], telnyx.connection_id);
    assert_eq!(body["webhook_url"], format!("{public_url}/telnyx/webhook"));
    let call = dialled.call.expect("answered");
    assert_eq!(call.ending, Ending::CallerHungUp, "{call:?}");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    assert!(
        !tone_spans(&call.heard, AGENT_HZ, WINDOW * 10).is_empty(),
        "the callee heard the greeting"
    );
    answered_outbound(&api, &id, "telnyx").await;

    // Busy and no answer: `not-answered` with Telnyx's cause and SIP code.
    for (callee, outcome, code) in [
        (Callee::Busy, "busy", 486),
        (Callee::NoAnswer, "no-answer", 480),
    ] {
        let reply = api.post("/v1/calls", &place("+14155550124")).await;
        assert_eq!(reply.status, 201);
        let id = reply.json["id"].as_str().unwrap().to_string();
        assert!(telnyx.dialled(callee).await.call.is_none());
        let events = ended(&api, &id).await;
        let not_answered = find(&events, "not-answered");
        assert_eq!(not_answered[0]["outcome"], outcome, "{events:?}");
        assert_eq!(not_answered[0]["code"], code, "{events:?}");
    }

    // Hung up by the API while it rings: the `hangup` command, then `originator_cancel`.
    let reply = api.post("/v1/calls", &place("+14155550125")).await;
    let id = reply.json["id"].as_str().unwrap().to_string();
    let ringing = telnyx.dialled(Callee::RingsOn);
    let hangup = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.post(&format!("/v1/calls/{id}/hangup"), &serde_json::json!({}))
            .await
    };
    let (dialled, hangup) = tokio::join!(ringing, hangup);
    assert_eq!(hangup.status, 202);
    assert_eq!(dialled.hangup_cause, "originator_cancel");
    let events = ended(&api, &id).await;
    assert_eq!(
        find(&events, "not-answered")[0]["outcome"],
        "cancelled",
        "{events:?}"
    );

    // A caller id that is not the account's is refused at the API.
    let mut other = place("+14155550126");
    other["from"] = "+14155550000".into();
    let reply = api.post("/v1/calls", &other).await;
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    let dials = telnyx
        .commands()
        .into_iter()
        .filter(|c| c.action == "dial")
        .count();
    assert_eq!(dials, 4);
}
