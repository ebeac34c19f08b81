//! A phone call through Twilio, played by the protocol-faithful fake (support/fake_twilio.rs):
//! the signed voice webhook, the TwiML stream, the media stream with marks and `clear`, and the
//! REST update for hang-up and transfer — on the `receptionist` agent with the fake OpenAI
//! model, through the same call logic as a SIP call. Bad input of every kind is refused without
//! a call.

use std::time::Duration;

use crate::support::api::{Api, answered_outbound, ended, events_of, find, only_call_record};
use crate::support::bridge_call::check_call;
use crate::support::calls::{AGENT_HZ, WINDOW, mic, tone_spans};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script, goodbye_replies};
use crate::support::fake_twilio::{CallScript, Callee, Ending, FakeTwilio, stream_of};
use crate::support::host::{Host, HostBuilder};
use crate::support::model_tls::{TestCerts, have_openssl};
use crate::support::ports::{Ports, ports};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The number of the fake account the host calls from.
const OUR_NUMBER: &str = "+14155550199";

/// The host with the receptionist on 2000, the OpenAI fake as its model and the Twilio bridge
/// on a public listener of its own; the listener's port is reserved while the host lives.
fn start_host(twilio: &FakeTwilio, model: &FakeOpenAi) -> (Host, String, Ports) {
    let (builder, public_url, port) = twilio_host(twilio, model);
    (builder.start(), public_url, port)
}

/// [`start_host`] before it starts, for more settings.
fn twilio_host(twilio: &FakeTwilio, model: &FakeOpenAi) -> (HostBuilder, String, Ports) {
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
            "[bridges.twilio]\naccount-sid = \"{}\"\nauth-token = \"{}\"\napi-base = \"{}\"\n\
             numbers = [\"{OUR_NUMBER}\"]",
            twilio.account_sid, twilio.auth_token, twilio.api_base
        ));
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
async fn a_twilio_call_runs_greeting_tool_digit_barge_in_and_caller_hangup() {
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
    let twilio = FakeTwilio::start().await;
    let (mut host, public_url, _port) = start_host(&twilio, &model);

    // The greeting plays first (3.6 s); a digit at 4 s; the question at 5 s; the caller cuts the
    // long answer at 9 s and hangs up at 13 s.
    let call = twilio.call(
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
    assert!(
        call.twiml
            .contains("<Connect><Stream url=\"ws://127.0.0.1:"),
        "{}",
        call.twiml
    );
    assert!(
        call.media_received > 100 && call.marks_echoed > 50,
        "{call:?}"
    );
    assert!(call.clears >= 1, "barge-in clears Twilio's queue");

    // The caller's audio reached the model, μ-law straight through.
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

    check_call(&call.heard, &model, host.http, "twilio", 8000).await;
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hangs_up_and_transfers_through_twilio_rest() {
    let model = FakeOpenAi::start(model_script(vec![Reply::Echo])).await;
    let twilio = FakeTwilio::start().await;
    let (mut host, public_url, _port) = start_host(&twilio, &model);

    // Key 0 asks the receptionist for the front desk: a `<Dial>` through the REST API; Twilio
    // then ends the stream and the call is transferred, not dropped.
    let call = twilio
        .call(
            &public_url,
            CallScript {
                digits: vec![(Duration::from_secs(1), '0')],
                ..CallScript::default()
            },
        )
        .await;
    let Ending::RestRedirected(twiml) = &call.ending else {
        panic!("{call:?}")
    };
    assert!(
        twiml.contains("<Dial><Sip>sip:front-desk@127.0.0.1</Sip></Dial>"),
        "{twiml}"
    );
    host.expect(&["call ended", "Transferred"], 10);
    let rest = twilio.rest_calls();
    assert_eq!(
        rest.len(),
        1,
        "one update, no hang-up after the transfer: {rest:?}"
    );
    assert_eq!(
        rest[0].path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{}.json",
            twilio.account_sid, call.call_sid
        )
    );
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let ended = find(&events, "ended");
    assert!(
        ended[0]["reason"].as_str().unwrap().contains("transferred"),
        "{ended:?}"
    );

    // The API hangs a call up: Twilio hears `Status=completed`.
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
    let call = twilio.call(&public_url, CallScript::default()).await;
    assert_eq!(call.ending, Ending::RestCompleted, "{call:?}");
    assert_eq!(hangup.await.unwrap().status, 202);
    let rest = twilio.rest_calls();
    assert_eq!(rest.last().unwrap().param("Status"), Some("completed"));
    host.expect(&["call ended", "AgentHangup"], 10);
}

/// The end-call tool on a media stream: the hang-up (REST `Status=completed`) waits until
/// Twilio has echoed the mark of the goodbye's last chunk, so the caller hears all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_ends_a_twilio_call_with_end_call_after_the_goodbye_is_heard() {
    let model = FakeOpenAi::start(Script {
        replies: goodbye_replies(),
        caller_transcript: "That is all, thanks.".into(),
        ..model_script(Vec::new())
    })
    .await;
    let twilio = FakeTwilio::start().await;
    let (builder, public_url, _port) = twilio_host(&twilio, &model);
    let mut host = builder
        .config("[agent.receptionist]\nend-call = true")
        .start();
    let call = twilio.call(
        &public_url,
        CallScript {
            speech: mic(20.0, &[(5.0, 0.8)]),
            ..CallScript::default()
        },
    );
    let call = tokio::time::timeout(Duration::from_secs(40), call)
        .await
        .expect("the call ends");
    host.expect(&["call ended", "AgentHangup"], 10);
    assert_eq!(call.ending, Ending::RestCompleted, "{call:?}");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    let tones = tone_spans(&call.heard, AGENT_HZ, WINDOW * 10);
    assert_eq!(tones.len(), 2, "greeting and goodbye: {tones:?}");
    let goodbye_ms = (tones[1].1 - tones[1].0) as f64 * 1000.0 / 8000.0;
    assert!(
        (goodbye_ms - 2000.0).abs() < 60.0,
        "the caller heard {goodbye_ms} ms of the 2 s goodbye"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_and_streams_are_refused_without_a_call() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let twilio = FakeTwilio::start().await;
    let (host, public_url, _port) = start_host(&twilio, &model);
    let voice = format!("{public_url}/twilio/voice");
    let params = twilio.voice_params("CA0000000000000000000000000000beef", "+14155550100", "2000");

    // Unsigned, signed with another token, signed over another URL: 403.
    let (status, _) = twilio.post_voice(&voice, &params, None).await;
    assert_eq!(status, 403);
    let (status, _) = twilio
        .post_voice(&voice, &params, Some("wrong-token"))
        .await;
    assert_eq!(status, 403);
    let elsewhere = voice.replace("/twilio/voice", "/twilio/voice?x=1");
    let mut request_params = params.clone();
    request_params.push(("Extra".into(), "1".into()));
    let (status, _) = twilio
        .post_voice(&elsewhere, &request_params, Some(&twilio.auth_token))
        .await;
    assert_eq!(status, 200, "a query string is part of the signed URL");
    // Another account's call, and a form without `To`.
    let mut other = params.clone();
    other[0].1 = "AC00000000000000000000000000000000".into();
    let (status, _) = twilio
        .post_voice(&voice, &other, Some(&twilio.auth_token))
        .await;
    assert_eq!(status, 403);
    let no_to: Vec<_> = params.iter().filter(|(k, _)| k != "To").cloned().collect();
    let (status, _) = twilio
        .post_voice(&voice, &no_to, Some(&twilio.auth_token))
        .await;
    assert_eq!(status, 400);
    // A number no agent serves: Twilio is told to reject.
    let nobody = twilio.voice_params("CA0000000000000000000000000000dead", "+1", "9999");
    let (status, twiml) = twilio
        .post_voice(&voice, &nobody, Some(&twilio.auth_token))
        .await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Reject reason=\"rejected\"/>"), "{twiml}");

    // The media socket: unsigned upgrades are refused; a signed one with a forged token is
    // closed with a reason.
    let (_, twiml) = twilio
        .post_voice(&voice, &params, Some(&twilio.auth_token))
        .await;
    let (stream_url, _) = stream_of(&twiml).expect("a stream");
    let unsigned = tokio_tungstenite::connect_async(stream_url.as_str()).await;
    assert!(unsigned.is_err(), "an unsigned upgrade is refused");
    let signed = || {
        let mut request = stream_url.as_str().into_client_request().unwrap();
        let sig = crate::support::fake_twilio::signature(&twilio.auth_token, &stream_url, &[]);
        request
            .headers_mut()
            .insert("x-twilio-signature", sig.parse().unwrap());
        request
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(signed()).await.unwrap();
    // A second stream says `connected` and then nothing: it is closed once the wait for its
    // `start` is over (checked at the end, the rest of the test runs meanwhile).
    let (mut silent, _) = tokio_tungstenite::connect_async(signed()).await.unwrap();
    use futures_util::SinkExt;
    let connected =
        serde_json::json!({"event": "connected", "protocol": "Call", "version": "1.0.0"});
    silent
        .send(tokio_tungstenite::tungstenite::Message::text(
            connected.to_string(),
        ))
        .await
        .unwrap();
    let start = serde_json::json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
        "start": {"streamSid": "MZ1", "accountSid": twilio.account_sid, "callSid": "CA1",
                  "tracks": ["inbound"], "customParameters": {"token": "forged"},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        start.to_string(),
    ))
    .await
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the host closes the stream");
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) = closed else {
        panic!("{closed:?}")
    };
    assert!(frame.reason.contains("token"), "{frame:?}");

    // The control API is not on the public listener.
    let public = reqwest::get(format!("{public_url}/v1/calls"))
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);

    // Only the accepted webhooks made calls: the one of the signed URL with a query, the one
    // for nobody (rejected) and the one whose stream was forged (still waiting).
    let api = Api::new(host.http, None);
    let calls = api
        .poll("/v1/calls", Duration::from_secs(5), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() >= 3)
        })
        .await;
    assert_eq!(calls["calls"].as_array().unwrap().len(), 3, "{calls}");

    let closed = tokio::time::timeout(Duration::from_secs(15), silent.next())
        .await
        .expect("the host closes a stream that never starts");
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) = closed else {
        panic!("{closed:?}")
    };
    assert!(frame.reason.contains("no start"), "{frame:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_through_twilio_answered_busy_unanswered_and_cancelled() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let twilio = FakeTwilio::start().await;
    let (host, _public_url, _port) = start_host(&twilio, &model);
    let api = Api::new(host.http, None);
    let place = |to: &str, from: &str| serde_json::json!({"to": to, "from": from, "via": "twilio", "agent": "receptionist"});

    // Answered: the agent greets the callee over the stream; the callee hangs up.
    twilio.expect_call(Callee::Answers(CallScript {
        hangup_after: Some(Duration::from_secs(5)),
        ..CallScript::default()
    }));
    let reply = api
        .post("/v1/calls", &place("+14155550123", OUR_NUMBER))
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json);
    let id = reply.json["id"].as_str().unwrap().to_string();
    let placed = twilio.placed().await;
    assert_eq!(
        (placed.to.as_str(), placed.from.as_str()),
        ("+14155550123", OUR_NUMBER)
    );
    assert_eq!(
        placed.statuses,
        ["queued", "ringing", "in-progress", "completed"],
        "the four subscribed events"
    );
    let call = placed.call.expect("answered");
    assert_eq!(call.ending, Ending::CallerHungUp, "{call:?}");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    let tones = tone_spans(&call.heard, AGENT_HZ, WINDOW * 10);
    assert!(!tones.is_empty(), "the callee heard the greeting");
    let events = answered_outbound(&api, &id, "twilio").await;
    assert!(
        find(&events, "progress")
            .iter()
            .any(|p| p["status"] == "ringing"),
        "{events:?}"
    );

    // Busy, no answer, failed: `not-answered` with Twilio's outcome.
    for (callee, outcome) in [
        (Callee::Busy, "busy"),
        (Callee::NoAnswer, "no-answer"),
        (Callee::Fails, "failed"),
    ] {
        twilio.expect_call(callee);
        let reply = api
            .post("/v1/calls", &place("+14155550124", OUR_NUMBER))
            .await;
        assert_eq!(reply.status, 201);
        let id = reply.json["id"].as_str().unwrap().to_string();
        let placed = twilio.placed().await;
        assert!(placed.call.is_none());
        let events = ended(&api, &id).await;
        assert_eq!(
            find(&events, "not-answered")[0]["outcome"],
            outcome,
            "{events:?}"
        );
    }

    // Hung up by the API while it rings: cancelled through REST (`Status=canceled`).
    twilio.expect_call(Callee::RingsOn);
    let reply = api
        .post("/v1/calls", &place("+14155550125", OUR_NUMBER))
        .await;
    let id = reply.json["id"].as_str().unwrap().to_string();
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
        d["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "progress"))
    })
    .await;
    let hangup = api
        .post(&format!("/v1/calls/{id}/hangup"), &serde_json::json!({}))
        .await;
    assert_eq!(hangup.status, 202);
    let placed = twilio.placed().await;
    assert_eq!(placed.statuses.last().map(String::as_str), Some("canceled"));
    assert!(
        twilio
            .rest_calls()
            .iter()
            .any(|r| r.param("Status") == Some("canceled")),
        "{:?}",
        twilio.rest_calls()
    );
    let events = ended(&api, &id).await;
    assert_eq!(find(&events, "not-answered")[0]["outcome"], "cancelled");

    // A caller id that is not the account's: 400, nothing placed.
    let before = twilio.rest_calls().len();
    let reply = api
        .post("/v1/calls", &place("+14155550126", "+19995550000"))
        .await;
    assert_eq!(reply.status, 400, "{:?}", reply.json);
    assert_eq!(reply.json["error"], "bad_caller_id", "{:?}", reply.json);
    assert_eq!(twilio.rest_calls().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_speaks_tls_and_takes_a_renewed_certificate_live() {
    if !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let model = FakeOpenAi::start(model_script(vec![Reply::Echo])).await;
    let twilio = FakeTwilio::start_trusting(certs.client_config()).await;
    let port = ports(1);
    let public_url = format!("https://127.0.0.1:{}", port.first());
    let host = Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            model.url
        ))
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"\n\
             tls-cert = {:?}\ntls-key = {:?}",
            port.first(),
            certs.cert.display().to_string(),
            certs.key.display().to_string(),
        ))
        .config(&format!(
            "[bridges.twilio]\naccount-sid = \"{}\"\nauth-token = \"{}\"\napi-base = \"{}\"",
            twilio.account_sid, twilio.auth_token, twilio.api_base
        ))
        .start();

    // A call over https and wss, the certificate checked against the test CA.
    let call = twilio
        .call(
            &public_url,
            CallScript {
                hangup_after: Some(Duration::from_secs(3)),
                ..CallScript::default()
            },
        )
        .await;
    assert!(
        call.twiml.contains("url=\"wss://127.0.0.1:"),
        "{}",
        call.twiml
    );
    assert_eq!(call.ending, Ending::CallerHungUp, "{call:?}");
    assert!(call.violations.is_empty(), "{:?}", call.violations);
    assert!(
        !tone_spans(&call.heard, AGENT_HZ, WINDOW * 10).is_empty(),
        "the greeting"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/twilio/voice", port.first())).await;
    assert!(plain.is_err(), "{plain:?}");

    // A renewed certificate serves the next handshake after SIGHUP, without a restart.
    certs
        .renew_and_reload(host.process.child.id(), port.first())
        .await;
    let mut host = host;
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_flooding_stream_ends_its_call_with_the_reason() {
    let model = FakeOpenAi::start(model_script(Vec::new())).await;
    let twilio = FakeTwilio::start().await;
    let (mut host, public_url, _port) = start_host(&twilio, &model);
    let api = Api::new(host.http, None);
    // The ended events of the first `n` calls, once there are `n`.
    let endings = |n: usize| {
        let api = api.with_token(None);
        async move {
            let list = api
                .poll("/v1/calls?active=false", Duration::from_secs(10), |l| {
                    l["calls"].as_array().is_some_and(|c| c.len() >= n)
                })
                .await;
            let mut endings = Vec::new();
            for call in list["calls"].as_array().unwrap() {
                let events = ended(&api, call["id"].as_str().unwrap()).await;
                endings.push(find(&events, "ended")[0].clone());
            }
            endings
        }
    };
    let ended_with = |endings: &[serde_json::Value], reason: &str| {
        endings.iter().any(|e| {
            e["abnormal"] == true && e["reason"].as_str().is_some_and(|r| r.contains(reason))
        })
    };

    // Malformed frames (not JSON, payloads not base64): the stream is closed as broken.
    let call = twilio
        .call(
            &public_url,
            CallScript {
                garbage: Some((Duration::from_secs(1), 25)),
                ..CallScript::default()
            },
        )
        .await;
    assert_eq!(call.ending, Ending::HostClosed, "{call:?}");
    let closed = endings(1).await;
    assert!(ended_with(&closed, "20 malformed frames"), "{closed:?}");

    // Audio fifty times faster than real time: a flood, closed within seconds.
    let call = twilio
        .call(
            &public_url,
            CallScript {
                frames_per_tick: 50,
                ..CallScript::default()
            },
        )
        .await;
    assert_eq!(call.ending, Ending::HostClosed, "{call:?}");
    let closed = endings(2).await;
    assert!(ended_with(&closed, "ms of audio in"), "{closed:?}");
    assert!(host.is_running());
    host.expect(&["call ended"], 1);
}
