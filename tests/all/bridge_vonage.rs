//! A phone call through Vonage, played by the protocol-faithful fake (support/fake_vonage.rs):
//! the signed answer webhook, the NCCO that connects the media socket, 16 kHz L16 audio both
//! ways with `notify` and `clear`, DTMF on the socket, and the REST call update for hang-up and
//! transfer — on the `receptionist` agent with the fake OpenAI model, through the same call
//! logic as a SIP or Twilio call. Bad input of every kind is refused without a call.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::api::{Api, answered_outbound, ended, events_of, find, only_call_record};
use crate::support::bridge_call::check_call;
use crate::support::calls::{AGENT_HZ, WINDOW, mic, tone_spans};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::fake_vonage::{
    AnswerMethod, CallScript, Callee, Ending, FakeVonage, bearer, query_payload, socket_endpoint,
};
use crate::support::host::Host;
use crate::support::media::to_8k;
use crate::support::ports::{Ports, ports};

/// The account's number outbound calls come from.
const OUR_NUMBER: &str = "+14155550199";

/// The host with the receptionist on 2000, the OpenAI fake as its model and the Vonage bridge
/// on a public listener of its own; the listener's port is reserved while the host lives.
fn start_host(vonage: &FakeVonage, model: &FakeOpenAi) -> (Host, String, Ports) {
    let port = ports(1);
    let public_url = format!("http://127.0.0.1:{}", port.first());
    let host = Host::builder()
        .examples(&["receptionist"])
        .calls("record = true")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"",
            port.first()
        ))
        .config(&format!(
            "[bridges.vonage]\napplication-id = \"{}\"\nprivate-key = \"{}\"\n\
             signature-secret = \"{}\"\napi-base = \"{}\"\nnumbers = [\"{OUR_NUMBER}\"]",
            vonage.application_id,
            vonage.private_key.display(),
            vonage.signature_secret,
            vonage.api_base
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

/// An 8 kHz track at 16 kHz (each sample twice: the tone stays where it was).
fn to_16k(samples: &[i16]) -> Vec<i16> {
    samples.iter().flat_map(|&s| [s, s]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vonage_call_runs_greeting_tool_digit_barge_in_and_caller_hangup() {
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
    let vonage = FakeVonage::start().await;
    let (mut host, public_url, _port) = start_host(&vonage, &model);

    // The greeting plays first (3.6 s); a digit at 4 s; the question at 5 s; the caller cuts the
    // long answer at 9 s and hangs up at 13 s.
    let call = vonage.call(
        &public_url,
        CallScript {
            speech: to_16k(&mic(14.0, &[(5.0, 0.8), (9.0, 1.0)])),
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
    let endpoint = socket_endpoint(&call.ncco).expect("a socket connect");
    assert!(
        endpoint["uri"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1:"),
        "{}",
        call.ncco
    );
    assert_eq!(endpoint["content-type"], "audio/l16;rate=16000");
    assert!(
        call.media_received > 200 && call.notifies_echoed > 50,
        "{call:?}"
    );
    assert!(call.clears >= 1, "barge-in clears Vonage's queue");

    // The caller's audio reached the model, resampled to the 24 kHz PCM OpenAI takes.
    assert!(
        model.appended_bytes() > 8 * 48_000,
        "{}",
        model.appended_bytes()
    );
    let updates = model.received_of("session.update");
    let input = &updates[0]["session"]["audio"]["input"]["format"];
    assert_eq!(
        (input["type"].as_str(), input["rate"].as_u64()),
        (Some("audio/pcm"), Some(24000))
    );
    // The agent ran the tool and its answer went back to the model.
    let outputs = model.received_of("conversation.item.create");
    assert!(
        outputs
            .iter()
            .any(|e| e["item"]["type"] == "function_call_output"),
        "{outputs:?}"
    );

    let heard = to_8k(&call.heard, 16000);
    check_call(&heard, &model, host.http, "vonage", 16000).await;
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hangs_up_and_transfers_through_vonage_rest() {
    let model = FakeOpenAi::start(model_script(vec![Reply::Echo])).await;
    let vonage = FakeVonage::start().await;
    let (mut host, public_url, _port) = start_host(&vonage, &model);

    // Key 0 asks the receptionist for the front desk: the call moves to an NCCO that connects
    // the SIP URI; Vonage drops the socket and the call is transferred, not dropped. The answer
    // webhook is a POST this time.
    let call = vonage
        .call(
            &public_url,
            CallScript {
                answer_method: AnswerMethod::Post,
                digits: vec![(Duration::from_secs(1), '0')],
                ..CallScript::default()
            },
        )
        .await;
    let Ending::RestTransferred(ncco) = &call.ending else {
        panic!("{call:?}")
    };
    assert_eq!(
        ncco,
        &json!([{"action": "connect",
                 "endpoint": [{"type": "sip", "uri": "sip:front-desk@127.0.0.1"}]}])
    );
    host.expect(&["call ended", "Transferred"], 10);
    let rest = vonage.rest_calls();
    assert_eq!(
        rest.len(),
        1,
        "one update, no hang-up after the transfer: {rest:?}"
    );
    assert_eq!(
        (rest[0].method.as_str(), rest[0].path.clone()),
        ("PUT", format!("/v1/calls/{}", call.uuid))
    );
    assert_eq!(rest[0].refused, None, "the host's JWT verifies");
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let ended = find(&events, "ended");
    assert!(
        ended[0]["reason"].as_str().unwrap().contains("transferred"),
        "{ended:?}"
    );

    // The API hangs a call up: Vonage hears `{"action":"hangup"}`.
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
            api.post(&format!("/v1/calls/{id}/hangup"), &json!({}))
                .await
        })
    };
    let call = vonage.call(&public_url, CallScript::default()).await;
    assert_eq!(call.ending, Ending::RestHangup, "{call:?}");
    assert_eq!(hangup.await.unwrap().status, 202);
    let last = vonage.rest_calls().pop().unwrap();
    assert_eq!(last.body, json!({"action": "hangup"}));
    assert_eq!(last.refused, None);
    host.expect(&["call ended", "AgentHangup"], 10);
}

/// Read until the host closes `ws`; the close frame's reason.
async fn close_reason<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the host closes the socket");
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => return frame.reason.to_string(),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_and_sockets_are_refused_without_a_call() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let vonage = FakeVonage::start().await;
    let (host, public_url, _port) = start_host(&vonage, &model);
    let params = vonage.answer_params(
        "00000000-0000-0000-0000-00000000beef",
        "14155550100",
        "2000",
    );
    let payload = query_payload(&params);

    // Unsigned: 401. Signed with another secret, for another application, long ago, or over
    // other parameters: 403.
    let (status, _) = vonage.get_answer(&public_url, &params, None).await;
    assert_eq!(status, 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for auth in [
        bearer(
            "another-secret",
            &vonage.application_id,
            payload.as_bytes(),
            now,
        ),
        bearer(
            &vonage.signature_secret,
            "another-app",
            payload.as_bytes(),
            now,
        ),
        bearer(
            &vonage.signature_secret,
            &vonage.application_id,
            payload.as_bytes(),
            now - 3600,
        ),
    ] {
        let (status, _) = vonage.get_answer(&public_url, &params, Some(&auth)).await;
        assert_eq!(status, 403, "{auth}");
    }
    let mut tampered = params.clone();
    tampered[0].1 = "2001".into();
    let auth = vonage.sign(payload.as_bytes());
    let (status, _) = vonage.get_answer(&public_url, &tampered, Some(&auth)).await;
    assert_eq!(status, 403, "the payload hash covers the parameters");
    // Signed but without `to`; a POST whose body is not JSON; an unsigned event.
    let no_to: Vec<_> = params.iter().filter(|(k, _)| k != "to").cloned().collect();
    let auth = vonage.sign(query_payload(&no_to).as_bytes());
    let (status, _) = vonage.get_answer(&public_url, &no_to, Some(&auth)).await;
    assert_eq!(status, 400);
    let auth = vonage.sign(b"not json");
    let (status, _) = vonage
        .post_json(&public_url, "/vonage/answer", "not json", Some(&auth))
        .await;
    assert_eq!(status, 400);
    let (status, _) = vonage
        .post_json(
            &public_url,
            "/vonage/event",
            r#"{"status":"completed"}"#,
            None,
        )
        .await;
    assert_eq!(status, 401);

    // A number no agent serves: the caller is told, and the NCCO connects nothing.
    let nobody = vonage.answer_params("00000000-0000-0000-0000-00000000dead", "1", "9999");
    let auth = vonage.sign(query_payload(&nobody).as_bytes());
    let (status, ncco) = vonage.get_answer(&public_url, &nobody, Some(&auth)).await;
    assert_eq!(status, 200);
    let ncco: Value = serde_json::from_str(&ncco).unwrap();
    assert_eq!(ncco[0]["action"], "talk", "{ncco}");
    assert!(socket_endpoint(&ncco).is_none());

    // The media socket: a forged token, garbage first, audio first — each closed with a reason.
    let auth = vonage.sign(payload.as_bytes());
    let (status, ncco) = vonage.get_answer(&public_url, &params, Some(&auth)).await;
    assert_eq!(status, 200);
    let endpoint = socket_endpoint(&serde_json::from_str(&ncco).unwrap()).expect("a socket");
    let uri = endpoint["uri"].as_str().unwrap().to_string();
    let connected = |token: &str| {
        Message::text(
            json!({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                   "token": token})
            .to_string(),
        )
    };
    for (first, expected) in [
        (connected("forged"), "token"),
        (Message::text("garbage".to_string()), "not JSON"),
        (Message::binary(vec![0u8; 640]), "websocket:connected"),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(uri.as_str())
            .await
            .unwrap();
        ws.send(first).await.unwrap();
        let reason = close_reason(&mut ws).await;
        assert!(reason.contains(expected), "{reason}");
    }
    // The real token, then binary messages that are not 16-bit PCM: the call ends saying so.
    let (mut ws, _) = tokio_tungstenite::connect_async(uri.as_str())
        .await
        .unwrap();
    let token = endpoint["headers"]["token"].as_str().unwrap();
    ws.send(connected(token)).await.unwrap();
    for _ in 0..20 {
        ws.send(Message::binary(vec![1u8; 641])).await.unwrap();
    }
    close_reason(&mut ws).await;

    // The control API is not on the public listener.
    let public = reqwest::get(format!("{public_url}/v1/calls"))
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);

    // Only the accepted webhooks made calls: the one for nobody (rejected) and the one whose
    // socket sent garbage (ended, saying why).
    let api = Api::new(host.http, None);
    let calls = api
        .poll("/v1/calls", Duration::from_secs(5), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() >= 2)
        })
        .await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 2, "{calls}");
    let garbage = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["callee"] == "2000")
        .expect("the call whose socket sent garbage");
    let id = garbage["id"].as_str().unwrap();
    let record = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
            d["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "ended"))
        })
        .await;
    let ended = find(&events_of(&record), "ended")[0].clone();
    assert_eq!(ended["abnormal"], true, "{ended}");
    assert!(record.to_string().contains("16-bit PCM"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_through_vonage_answered_busy_unanswered_and_cancelled() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let vonage = FakeVonage::start().await;
    let (host, public_url, _port) = start_host(&vonage, &model);
    let api = Api::new(host.http, None);
    let place =
        |to: &str| json!({"to": to, "from": OUR_NUMBER, "via": "vonage", "agent": "receptionist"});

    // Answered: our NCCO connects the callee to the socket, the agent greets over it, and the
    // callee hangs up.
    let reply = api.post("/v1/calls", &place("+14155550123")).await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    let id = reply.json["id"].as_str().unwrap().to_string();
    let placed = vonage
        .placed(Callee::Answers(CallScript {
            hangup_after: Some(Duration::from_secs(5)),
            ..CallScript::default()
        }))
        .await;
    let body = &placed.body;
    assert_eq!(
        body["to"][0],
        json!({"type": "phone", "number": "14155550123"})
    );
    assert_eq!(
        body["from"],
        json!({"type": "phone", "number": "14155550199"})
    );
    assert!(
        body["event_url"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{public_url}/vonage/event?call=")),
        "{body}"
    );
    let call = placed.call.expect("answered");
    assert_eq!(call.ending, Ending::CallerHungUp, "{call:?}");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    assert!(
        !tone_spans(&to_8k(&call.heard, 16000), AGENT_HZ, WINDOW * 10).is_empty(),
        "the callee heard the greeting"
    );
    let events = answered_outbound(&api, &id, "vonage").await;
    assert!(
        find(&events, "progress")
            .iter()
            .any(|p| p["status"] == "ringing"),
        "{events:?}"
    );

    // Busy and no answer: `not-answered` with Vonage's status.
    for (callee, outcome) in [(Callee::Busy, "busy"), (Callee::NoAnswer, "no-answer")] {
        let reply = api.post("/v1/calls", &place("+14155550124")).await;
        assert_eq!(reply.status, 201);
        let id = reply.json["id"].as_str().unwrap().to_string();
        assert!(vonage.placed(callee).await.call.is_none());
        let events = ended(&api, &id).await;
        assert_eq!(
            find(&events, "not-answered")[0]["outcome"],
            outcome,
            "{events:?}"
        );
    }

    // Hung up by the API while it rings: the REST hang-up, then `cancelled`.
    let reply = api.post("/v1/calls", &place("+14155550125")).await;
    let id = reply.json["id"].as_str().unwrap().to_string();
    let ringing = vonage.placed(Callee::RingsOn);
    let hangup = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.post(&format!("/v1/calls/{id}/hangup"), &json!({}))
            .await
    };
    let (placed, hangup) = tokio::join!(ringing, hangup);
    assert_eq!(hangup.status, 202);
    assert_eq!(placed.last_status, "cancelled");
    let events = ended(&api, &id).await;
    assert_eq!(
        find(&events, "not-answered")[0]["outcome"],
        "cancelled",
        "{events:?}"
    );
    let rest = vonage.rest_calls();
    assert!(rest.iter().all(|r| r.refused.is_none()), "{rest:?}");
    assert_eq!(rest.iter().filter(|r| r.method == "POST").count(), 4);
}
