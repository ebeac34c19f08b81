//! Voice model failures at the `switchboard` binary, with a real phone (baresip) calling 2000
//! (`receptionist`): the caller never hears silence. A provider that accepts the socket but
//! never sends `session.created` gets the apology and a hang-up; one that never answers the
//! WebSocket handshake, with `on-start = "reject"`, gets a 503 before answer; an `error` event
//! mid-call is recorded and the call goes on; a socket dropped mid-call, with a fallback transfer
//! configured, sends the caller to the front desk after the apology. Each outcome is read back
//! from the call's events in the API (the Gemini close with an error code is in
//! calls_gemini).

use std::time::Duration;

use crate::support::api::{events_of, find, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{WINDOW, dial, loud_spans, mic, ms, recording, spans_ms};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::sipp_callee;

/// The host with the receptionist on 2000 and `model` as its `[model]` table.
fn start_host(model: &str, extra: &str) -> Host {
    Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]")
        .model(model)
        .config(extra)
        .start()
}

/// The `[model]` table for the OpenAI fake at `fake` (key "test").
fn openai_model(fake: &FakeOpenAi) -> String {
    format!(
        "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
        fake.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_created_within_the_timeout_plays_the_apology() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        never_answer: true,
        ..Script::default()
    })
    .await;
    let mut host = start_host(
        &format!("{}\nconnect-timeout-ms = 1500", openai_model(&fake)),
        "",
    );
    let phone = Baresip::start_with(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the host hung up after the apology: {}",
        phone.log()
    );
    host.expect(&["call ended", "model unavailable"], 10);

    let events = events_of(&only_call_record(host.http).await);
    let errors = find(&events, "model-error");
    assert!(
        errors.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("did not complete session setup within 1500 ms")),
        "{errors:?}"
    );
    assert_eq!(
        find(&events, "answered")[0]["model"],
        "fallback",
        "{events:?}"
    );
    let ended = find(&events, "ended");
    assert_eq!(ended[0]["reason"], "failed: model unavailable", "{ended:?}");
    assert_eq!(ended[0]["abnormal"], true);
    // The socket was opened, and nothing was configured on it.
    assert_eq!(fake.upgrades().len(), 1);
    assert!(fake.received_of("session.update").is_empty());

    let heard = recording(&phone, "-dec.wav");
    let apology = loud_spans(&heard, WINDOW * 10);
    let loud_ms: f64 = apology.iter().map(|&(a, b)| ms(b - a)).sum();
    assert!(
        loud_ms > 1000.0,
        "the apology was heard: {:?}",
        spans_ms(&apology)
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_handshake_with_reject_configured_gives_503() {
    if !require("baresip") {
        return;
    }
    // The kernel accepts the TCP connection; nobody ever answers the HTTP upgrade.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "ws://{}{}",
        silent.local_addr().unwrap(),
        crate::support::fake_gemini::PATH
    );
    let mut host = start_host(
        &format!(
            "provider = \"gemini\"\nbase-url = \"{url}\"\napi-key = \"gm-test\"\nconnect-timeout-ms = 1500"
        ),
        "[agents.fallback]\non-start = \"reject\"\n",
    );
    let phone = Baresip::start("<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu").await;
    let mut ctrl = phone.ctrl().await;
    ctrl.command("dial", &format!("sip:2000@127.0.0.1:{}", host.sip_port))
        .await;
    let closed = ctrl
        .wait_event("CALL_CLOSED", Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("the call was refused: {}", phone.log()));
    assert!(closed.contains("503"), "{closed}");

    let events = events_of(&only_call_record(host.http).await);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!kinds.contains(&"answered"), "{kinds:?}");
    let errors = find(&events, "model-error");
    assert!(
        errors.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("gemini did not complete session setup within 1500 ms")),
        "{errors:?}"
    );
    assert_eq!(find(&events, "rejected")[0]["code"], 503, "{events:?}");
    assert!(host.is_running());
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_event_mid_call_is_recorded_and_the_call_goes_on() {
    if !require("baresip") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            // The answer to the first question fails; the second question is answered.
            Reply::Error {
                kind: "server_error".into(),
                code: "server_error".into(),
                message: "The server had an error while processing your request.".into(),
            },
            Reply::Speech {
                transcript: "Here I am again.".into(),
                audio_ms: 1000,
            },
        ],
        ..Script::default()
    })
    .await;
    let mut host = start_host(&openai_model(&fake), "");
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8), (8.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["ModelError", "server had an error"], 20);
    host.expect(&["Transcript", "Agent", "Here I am again."], 15);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    let detail = only_call_record(host.http).await;
    let events = events_of(&detail);
    let errors = find(&events, "model-error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("(server_error): The server had an error"),
        "{errors:?}"
    );
    assert_eq!(find(&events, "ended")[0]["reason"], "caller-hangup");
    // The error came between the two questions, and the second answer was spoken after it.
    let error_at = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "model-error")
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap();
    let answer_at = detail["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["text"] == "Here I am again.")
        .and_then(|t| t["at_ms"].as_i64());
    assert!(
        answer_at.is_some_and(|at| at >= error_at),
        "answer after the error: {detail}"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_socket_with_a_fallback_transfer_sends_the_caller_to_the_desk() {
    if !require("baresip") || !require("sipp") || !require("espeak-ng") {
        return;
    }
    let (_desk, _desk_dir, desk_port) = sipp_callee(None);
    let desk = format!("sip:frontdesk@127.0.0.1:{desk_port}");
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        // The greeting, then the caller's question makes the fake drop the socket.
        replies: vec![Reply::Echo, Reply::DropSocket],
        ..Script::default()
    })
    .await;
    let mut host = start_host(
        &openai_model(&fake),
        &format!("[agents.fallback]\ntransfer = \"{desk}\"\n"),
    );
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let _ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["ModelError", "model session closed"], 20);
    // The apology is spoken first, then the REFER goes out; baresip calls the desk.
    host.expect(&["Transfer", &desk, "requested"], 30);
    host.expect(&["Transfer", &desk, "completed", "200"], 20);
    host.expect(&["call ended", "Transferred"], 10);

    let events = events_of(&only_call_record(host.http).await);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let error_at = kinds.iter().position(|&k| k == "model-error");
    let transfer_at = kinds.iter().position(|&k| k == "transfer");
    assert!(
        error_at.is_some() && transfer_at > error_at,
        "the transfer follows the model error: {kinds:?}"
    );
    let transfers = find(&events, "transfer");
    assert_eq!(transfers[0]["target"], desk.as_str(), "{transfers:?}");
    assert_eq!(transfers.last().unwrap()["status"], "completed");
    let ended = find(&events, "ended");
    assert_eq!(
        ended[0]["reason"],
        format!("transferred to {desk}"),
        "{ended:?}"
    );

    // Between the greeting and the REFER the caller heard the apology (speech, not silence).
    let heard = recording(&phone, "-dec.wav");
    let loud = loud_spans(&heard, WINDOW * 10);
    let apology_ms: f64 = loud.iter().skip(1).map(|&(a, b)| ms(b - a)).sum();
    assert!(
        apology_ms > 1000.0,
        "the apology was heard after the greeting: {:?}",
        spans_ms(&loud)
    );
    assert!(host.is_running());
}
