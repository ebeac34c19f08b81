//! The host paces the conversation (issue 32): a silent caller is reprompted, then hears a
//! goodbye whole before the hang-up; a call ends at its maximum length after a warning; a tool
//! that takes long gets fillers, which the caller can stop, and a fast tool none. Each on a SIP
//! phone (baresip) and on a carrier's media stream (the Twilio fake), with the offline brain
//! and the OpenAI fake; the record and /metrics count what happened.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::agents::fixture;
use crate::support::api::{Api, metric, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{
    AGENT_HZ, WINDOW, dial, espeak_at, loud_spans, mic, ms, recording, sounding_ms, spans_ms,
    tone_spans,
};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::fake_twilio::{CallResult, CallScript, Ending, FakeTwilio};
use crate::support::host::{Host, HostBuilder};
use crate::support::ports::{Ports, ports};
use crate::support::process::require;

/// Silence rules short enough for a test: a reprompt after 4 s, one only; the goodbye at 10 s.
const SILENCE_RULES: &str = "[calls.conversation]\nreprompt-after-secs = 4\nreprompts = 1\n\
    hangup-after-secs = 10\nreprompt = \"Are you still there?\"\n\
    silence-goodbye = \"Nobody is there, so goodbye now.\"\n";
const GOODBYE: &str = "Nobody is there, so goodbye now.";

/// The fake model speaks 300 ms per word of what it is asked to say.
fn fake_ms(text: &str) -> f64 {
    300.0 * text.split_whitespace().count() as f64
}

fn openai(model: &FakeOpenAi) -> String {
    format!(
        "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
        model.url
    )
}

fn fake_model(replies: Vec<Reply>) -> Script {
    Script {
        api_key: "test".into(),
        replies,
        ..Script::default()
    }
}

/// A host with the Twilio bridge on a public listener of its own (reserved while the host
/// lives), and its public URL.
fn twilio_host(twilio: &FakeTwilio, builder: HostBuilder) -> (HostBuilder, String, Ports) {
    let port = ports(1);
    let public_url = format!("http://127.0.0.1:{}", port.first());
    let builder = builder
        .http(&format!(
            "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"",
            port.first()
        ))
        .config(&format!(
            "[bridges.twilio]\naccount-sid = \"{}\"\nauth-token = \"{}\"\napi-base = \"{}\"\n\
             numbers = [\"+14155550199\"]",
            twilio.account_sid, twilio.auth_token, twilio.api_base
        ));
    (builder, public_url, port)
}

async fn twilio_call(twilio: &FakeTwilio, url: &str, script: CallScript) -> CallResult {
    let limit = script.limit + Duration::from_secs(10);
    tokio::time::timeout(limit, twilio.call(url, script))
        .await
        .expect("the call ends")
}

/// A Twilio caller who says nothing for up to `limit`: the host must end the call.
async fn silent_twilio_call(twilio: &FakeTwilio, url: &str, limit: Duration) -> CallResult {
    let script = CallScript {
        limit,
        ..CallScript::default()
    };
    let call = twilio_call(twilio, url, script).await;
    assert!(
        matches!(call.ending, Ending::RestCompleted | Ending::HostClosed),
        "{:?}",
        call.ending
    );
    call
}

/// The events of a record as (kind, at_ms, data).
fn timed_events(record: &Value) -> Vec<(String, i64, Value)> {
    record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["at_ms"].as_i64().unwrap(),
                e["data"].clone(),
            )
        })
        .collect()
}

fn of_kind<'a>(events: &'a [(String, i64, Value)], kind: &str) -> Vec<&'a (String, i64, Value)> {
    events.iter().filter(|(k, _, _)| k == kind).collect()
}

fn end_reason(events: &[(String, i64, Value)]) -> String {
    of_kind(events, "ended")[0].2["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn metrics(http: SocketAddr) -> String {
    let reply = Api::new(http, None).get("/metrics").await;
    reply.text
}

/// Spans of speech (espeak) in `samples`, pauses within a sentence joined.
fn speech_spans(samples: &[i16]) -> Vec<(usize, usize)> {
    loud_spans(samples, WINDOW * 30)
}

/// How long espeak takes to say `text`, its voiced part.
fn spoken_ms(text: &str) -> f64 {
    let spans = speech_spans(&espeak_at(text, 8000));
    ms(spans.last().unwrap().1 - spans[0].0)
}

/// The silent caller's record: one reprompt by the host, then the goodbye and hang-up for
/// silence.
fn check_silence_record(record: &Value) {
    let events = timed_events(record);
    let reprompts = of_kind(&events, "silence-reprompt");
    assert_eq!(reprompts.len(), 1, "{events:?}");
    assert_eq!(reprompts[0].2["by"], "host");
    assert_eq!(reprompts[0].2["count"], 1);
    let hangups = of_kind(&events, "silence-hangup");
    assert_eq!(hangups.len(), 1, "{events:?}");
    assert!(
        hangups[0].2["silent_ms"].as_u64().unwrap() >= 10_000,
        "{hangups:?}"
    );
    assert_eq!(end_reason(&events), "silence-timeout");
    assert_eq!(record["conversation"]["reprompts"], 1, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_a_silent_sip_caller_on_the_offline_brain_is_reprompted_then_hung_up() {
    if !require("baresip") || !require("espeak-ng") || !require("sox") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls(&format!("codecs = [\"pcmu\"]\n{SILENCE_RULES}"))
        .start();
    let phone = Baresip::start_with(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
    )
    .await;
    let mut ctrl = dial(&phone, "1000", host.sip_port).await;
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(60))
            .await
            .is_some(),
        "the host hung up: {}",
        phone.log()
    );
    host.expect(&["call ended"], 10);
    let record = only_call_record(host.http).await;
    check_silence_record(&record);

    // What the phone heard until the BYE: the greeting, the reprompt 4 s after it, the
    // goodbye whole.
    let heard = recording(&phone, "-dec.wav");
    let spans = speech_spans(&heard);
    eprintln!(
        "heard (ms): {:?} of {} ms",
        spans_ms(&spans),
        ms(heard.len())
    );
    assert_eq!(
        spans.len(),
        3,
        "greeting, reprompt, goodbye: {:?}",
        spans_ms(&spans)
    );
    let quiet = ms(spans[1].0 - spans[0].1);
    assert!(
        (3800.0..5500.0).contains(&quiet),
        "reprompt after {quiet} ms"
    );
    let goodbye = ms(spans[2].1 - spans[2].0);
    let whole = spoken_ms(GOODBYE);
    assert!(
        goodbye >= whole * 0.85,
        "the goodbye heard {goodbye} ms of {whole} ms"
    );
    assert!(spans[2].1 < heard.len(), "the BYE came after the goodbye");
    let text = metrics(host.http).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_calls_total{direction=\"inbound\",outcome=\"silence-timeout\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "switchboard_silence_reprompts_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_a_silent_twilio_caller_on_the_openai_fake_is_reprompted_then_hung_up() {
    let model = FakeOpenAi::start(fake_model(Vec::new())).await;
    let twilio = FakeTwilio::start().await;
    let (builder, url, _port) = twilio_host(
        &twilio,
        Host::builder()
            .examples(&["receptionist"])
            .calls(&format!("codecs = [\"pcmu\"]\n{SILENCE_RULES}"))
            .model(&openai(&model)),
    );
    let mut host = builder.start();
    let call = silent_twilio_call(&twilio, &url, Duration::from_secs(40)).await;
    host.expect(&["call ended"], 10);
    let record = only_call_record(host.http).await;
    check_silence_record(&record);

    let spans = tone_spans(&call.heard, AGENT_HZ, WINDOW * 10);
    eprintln!(
        "heard (ms): {:?} of {} ms",
        spans_ms(&spans),
        ms(call.heard.len())
    );
    assert_eq!(
        spans.len(),
        3,
        "greeting, reprompt, goodbye: {:?}",
        spans_ms(&spans)
    );
    let quiet = ms(spans[1].0 - spans[0].1);
    assert!(
        (3800.0..5000.0).contains(&quiet),
        "reprompt after {quiet} ms"
    );
    let fine = tone_spans(&call.heard, AGENT_HZ, WINDOW);
    let reprompt = sounding_ms(&fine, spans[1]);
    assert!((reprompt - fake_ms("Are you still there?")).abs() < 100.0);
    let goodbye = sounding_ms(&fine, spans[2]);
    assert!(
        (goodbye - fake_ms(GOODBYE)).abs() < 100.0,
        "the goodbye heard whole: {goodbye} ms"
    );
    // The model was asked to say both, in so many words.
    let asked: Vec<String> = model
        .received_of("response.create")
        .iter()
        .filter_map(|r| r["response"]["instructions"].as_str().map(String::from))
        .collect();
    assert!(
        asked.iter().any(|i| i.contains("Are you still there?")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|i| i.contains(GOODBYE)), "{asked:?}");
}

/// The call reaches its maximum length: the warning before, then the goodbye at the limit.
fn check_max_record(record: &Value, limit_ms: u64, warn_ms: u64) {
    let events = timed_events(record);
    let warnings = of_kind(&events, "max-duration-warning");
    assert_eq!(warnings.len(), 1, "{events:?}");
    let remaining = warnings[0].2["remaining_ms"].as_u64().unwrap();
    assert!(
        remaining <= warn_ms && remaining + 200 >= warn_ms,
        "{warnings:?}"
    );
    let max = of_kind(&events, "max-duration");
    assert_eq!(max.len(), 1, "{events:?}");
    let at = max[0].2["limit_ms"].as_u64().unwrap();
    assert!(at >= limit_ms && at < limit_ms + 200, "{max:?}");
    assert_eq!(end_reason(&events), "max-duration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_a_sip_call_on_the_openai_fake_ends_at_its_maximum_length() {
    if !require("baresip") {
        return;
    }
    let model = FakeOpenAi::start(fake_model(Vec::new())).await;
    let mut host = Host::builder()
        .examples(&["receptionist"])
        .calls(
            "codecs = [\"pcmu\"]\n[calls.conversation]\nmax-call-secs = 8\nwarn-before-secs = 4\n\
             max-call-warning = \"Four seconds left.\"\nmax-call-goodbye = \"Time is up, goodbye.\"\n",
        )
        .model(&openai(&model))
        .start();
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
        "the host hung up: {}",
        phone.log()
    );
    host.expect(&["call ended"], 10);
    let record = only_call_record(host.http).await;
    check_max_record(&record, 8_000, 4_000);

    let heard = recording(&phone, "-dec.wav");
    let spans = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    eprintln!(
        "heard (ms): {:?} of {} ms",
        spans_ms(&spans),
        ms(heard.len())
    );
    assert_eq!(
        spans.len(),
        3,
        "greeting, warning, goodbye: {:?}",
        spans_ms(&spans)
    );
    let (warning, goodbye) = (ms(spans[1].0), ms(spans[2].0));
    assert!(
        (3700.0..4800.0).contains(&warning),
        "warning at {warning} ms"
    );
    assert!(
        (7700.0..8800.0).contains(&goodbye),
        "goodbye at {goodbye} ms"
    );
    let fine = tone_spans(&heard, AGENT_HZ, WINDOW);
    let said = sounding_ms(&fine, spans[2]);
    assert!(
        (said - fake_ms("Time is up, goodbye.")).abs() < 100.0,
        "the goodbye heard whole: {said} ms"
    );
    assert!(
        ms(heard.len()) < 11_000.0,
        "the call lasted {} ms",
        ms(heard.len())
    );
    let text = metrics(host.http).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_calls_total{direction=\"inbound\",outcome=\"max-duration\"}"
        ),
        1.0,
        "{text}"
    );
}

/// The figure: a call of at most 60 s ends at 60 s, warned 10 s before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_a_twilio_call_on_the_offline_brain_ends_at_sixty_seconds() {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let twilio = FakeTwilio::start().await;
    let (builder, url, _port) = twilio_host(
        &twilio,
        Host::builder().examples(&["receptionist"]).calls(
            "codecs = [\"pcmu\"]\n[calls.conversation]\nmax-call-secs = 60\nwarn-before-secs = 10\n",
        ),
    );
    let mut host = builder.start();
    let call = silent_twilio_call(&twilio, &url, Duration::from_secs(80)).await;
    host.expect(&["call ended"], 10);
    let record = only_call_record(host.http).await;
    check_max_record(&record, 60_000, 10_000);
    let spans = speech_spans(&call.heard);
    eprintln!(
        "heard (ms): {:?} of {} ms",
        spans_ms(&spans),
        ms(call.heard.len())
    );
    assert_eq!(
        spans.len(),
        3,
        "greeting, warning, goodbye: {:?}",
        spans_ms(&spans)
    );
    let (warning, goodbye) = (ms(spans[1].0), ms(spans[2].0));
    assert!(
        (49_700.0..51_000.0).contains(&warning),
        "warning at {warning} ms"
    );
    assert!(
        (59_700.0..61_000.0).contains(&goodbye),
        "goodbye at {goodbye} ms"
    );
    let whole = spoken_ms("We have reached the time limit for this call. Goodbye.");
    let said = ms(spans[2].1 - spans[2].0);
    assert!(
        said >= whole * 0.85,
        "the goodbye heard {said} of {whole} ms"
    );
}

/// An HTTP server whose answer to `/slow` takes 6 s and to `/fast` 200 ms: the agent's tool.
async fn slow_service() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let delay = if request.starts_with("GET /slow") {
                    6000
                } else {
                    200
                };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

/// The `probe` agent on 4000, its `fetch` tool allowed to reach `service`.
fn with_probe(builder: HostBuilder, service: SocketAddr) -> HostBuilder {
    builder.agent(
        "probe",
        fixture("probe"),
        format!(
            "name = \"probe\"\nnumbers = [\"4000\"]\n[capabilities]\nkv-quota-bytes = 64\nhttp = [\"127.0.0.1:{}\"]\n",
            service.port()
        ),
    )
}

fn fetch(service: SocketAddr, path: &str) -> Reply {
    Reply::ToolCall {
        name: "fetch".into(),
        arguments: format!("http://{service}{path}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_a_slow_tool_gets_fillers_on_a_twilio_call_with_the_openai_fake() {
    let (service, _server) = slow_service().await;
    // The greeting; the caller's question calls the slow tool; the rest is said as asked.
    let model = FakeOpenAi::start(fake_model(vec![Reply::Echo, fetch(service, "/slow")])).await;
    let twilio = FakeTwilio::start().await;
    let (builder, url, _port) = twilio_host(
        &twilio,
        with_probe(Host::builder(), service)
            .calls(
                "codecs = [\"pcmu\"]\n[calls.conversation]\nfiller-after-ms = 1000\n\
                 filler-every-ms = 2000\nfillers = [\"One moment please.\", \"Still looking.\"]\n",
            )
            .model(&openai(&model)),
    );
    let mut host = builder.start();
    let call = twilio_call(
        &twilio,
        &url,
        CallScript {
            to: "4000".into(),
            speech: mic(20.0, &[(3.0, 0.8)]),
            hangup_after: Some(Duration::from_secs(16)),
            ..CallScript::default()
        },
    )
    .await;
    host.expect(&["call ended"], 10);
    assert_eq!(call.ending, Ending::CallerHungUp, "{:?}", host.log.seen);
    let record = only_call_record(host.http).await;
    let events = timed_events(&record);
    let tool = of_kind(&events, "tool-call");
    assert_eq!(tool.len(), 1, "{events:?}");
    let fillers = of_kind(&events, "filler");
    eprintln!("fillers: {fillers:?}");
    // 6 s of tool: fillers at 1, 3 and 5 s, in turn.
    assert_eq!(fillers.len(), 3, "{events:?}");
    let texts: Vec<&str> = fillers
        .iter()
        .map(|f| f.2["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["One moment please.", "Still looking.", "One moment please."]
    );
    assert!(
        fillers[0].1 - tool[0].1 <= 1_300,
        "first filler {fillers:?}"
    );
    let result = of_kind(&events, "tool-result");
    assert_eq!(result[0].2["output"], "200 ok", "{result:?}");
    assert_eq!(record["conversation"]["fillers"], 3, "{record}");

    // What the caller heard from the question to the answer: never 2 s without the agent.
    let spans = tone_spans(&call.heard, AGENT_HZ, WINDOW * 5);
    eprintln!("heard (ms): {:?}", spans_ms(&spans));
    let after: Vec<_> = spans.iter().filter(|s| ms(s.0) > 3_000.0).collect();
    // Three fillers and the answer, however close they came (the last filler and the answer
    // may meet).
    let fine = tone_spans(&call.heard, AGENT_HZ, WINDOW);
    let said: f64 = after.iter().map(|s| sounding_ms(&fine, **s)).sum();
    let expected = ["One moment please.", "Still looking.", "One moment please."]
        .iter()
        .map(|f| fake_ms(f))
        .sum::<f64>()
        + fake_ms("I am the fake model.");
    assert!(
        (said - expected).abs() < 200.0,
        "three fillers and the answer: {said} ms of {expected}: {:?}",
        spans_ms(&spans)
    );
    // The first filler within 1.5 s of the tool's start (the question ends at 3.8 s; the
    // model calls the tool once it has heard 500 ms of silence).
    let first = ms(after[0].0);
    assert!(
        first < 3_800.0 + 500.0 + 1_500.0 + 300.0,
        "first filler at {first} ms"
    );
    for pair in after.windows(2) {
        let gap = ms(pair[1].0 - pair[0].1);
        assert!(
            gap < 2_000.0,
            "a silent gap of {gap} ms: {:?}",
            spans_ms(&spans)
        );
    }
    // The result reached the model after the fillers it had been asked to say, and the
    // conversation holds them before the tool's output.
    let received = model.received();
    let kinds: Vec<String> = received
        .iter()
        .filter_map(|r| {
            let v = &r.event;
            match v["type"].as_str()? {
                "response.create" => v["response"]["instructions"]
                    .as_str()
                    .map(|i| format!("say {i}")),
                "conversation.item.create" => Some(format!("item {}", v["item"]["type"])),
                _ => None,
            }
        })
        .collect();
    let output = kinds
        .iter()
        .position(|k| k.contains("function_call_output"));
    let fillers_asked = kinds
        .iter()
        .filter(|k| k.contains("Still looking."))
        .count();
    assert_eq!(fillers_asked, 1, "{kinds:?}");
    assert!(output.is_some(), "{kinds:?}");
    let text = metrics(host.http).await;
    assert_eq!(metric(&text, "switchboard_fillers_total"), 3.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_the_sip_caller_stops_a_filler_and_a_fast_tool_gets_none() {
    if !require("baresip") {
        return;
    }
    let (service, _server) = slow_service().await;
    let model = FakeOpenAi::start(fake_model(vec![
        Reply::Echo,
        fetch(service, "/slow"),
        // The filler.
        Reply::Echo,
        // The model's own answer to "stop" while the tool runs: nothing.
        Reply::Silence,
        Reply::Speech {
            transcript: "Here it is.".into(),
            audio_ms: 1000,
        },
        fetch(service, "/fast"),
        Reply::Speech {
            transcript: "Done.".into(),
            audio_ms: 600,
        },
    ]))
    .await;
    let mut host = with_probe(Host::builder(), service)
        .calls(
            "codecs = [\"pcmu\"]\n[calls.conversation]\nfiller-after-ms = 1000\n\
             filler-every-ms = 2000\n\
             fillers = [\"One moment please, I am looking that up for you.\"]\n",
        )
        .model(&openai(&model))
        .start();
    // The question at 3 s; "stop" at 5.5 s, over the filler; the next question at 13 s.
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(3.0, 0.8), (5.5, 0.5), (13.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, "4000", host.sip_port).await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 15);
    let record = only_call_record(host.http).await;
    let events = timed_events(&record);
    eprintln!(
        "{:?}",
        events.iter().map(|e| (&e.0, e.1)).collect::<Vec<_>>()
    );
    // One filler only: the caller spoke over it, so none followed while the tool still ran.
    let fillers = of_kind(&events, "filler");
    assert_eq!(fillers.len(), 1, "{events:?}");
    assert!(!of_kind(&events, "barge-in").is_empty(), "{events:?}");
    let truncates = model.received_of("conversation.item.truncate");
    assert!(!truncates.is_empty(), "the filler was cut");
    // Both tools answered; the fast one with no filler.
    let results = of_kind(&events, "tool-result");
    assert_eq!(results.len(), 2, "{events:?}");
    assert!(
        results.iter().all(|r| r.2["output"] == "200 ok"),
        "{results:?}"
    );
    let tools = of_kind(&events, "tool-call");
    assert!(fillers[0].1 < tools[1].1, "{events:?}");
    assert!(record["conversation"]["interruptions"].as_u64().unwrap() >= 1);
    assert_eq!(record["conversation"]["fillers"], 1);

    // Nothing heard from the cut filler until the tool's answer.
    let heard = recording(&phone, "-dec.wav");
    let spans = tone_spans(&heard, AGENT_HZ, WINDOW * 5);
    eprintln!("heard (ms): {:?}", spans_ms(&spans));
    let silent = spans
        .iter()
        .filter(|s| ms(s.1) > 6_500.0 && ms(s.0) < 9_500.0)
        .count();
    assert_eq!(
        silent,
        0,
        "no agent audio after the stop: {:?}",
        spans_ms(&spans)
    );
    let text = metrics(host.http).await;
    assert!(
        metric(&text, "switchboard_interruptions_total") >= 1.0,
        "{text}"
    );
}
