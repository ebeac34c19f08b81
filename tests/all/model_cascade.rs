//! The cascade provider against its fakes, one session at a time, without SIP: espeak-ng
//! speech in (the local voice detector ends the turns), the events out. Faults of each stage:
//! the session retries what a retry can mend, and otherwise ends with an error naming the
//! stage, which the call turns into its apology; a stalled stage fails on its own timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::calls::espeak_at;
use crate::support::fake_chat::{FakeChat, Reply};
use crate::support::fake_speech::{self, FakeSpeech};
use crate::support::fake_transcription::{self, Answer, FakeTranscription, Outcome};
use crate::support::model_events::until;
use crate::support::process::require;
use switchboard::config::Config;
use switchboard::model::{
    AudioFormat, CloseReason, Command, ErrorKind, ModelEvent, ModelProvider, ModelSession, Role,
    SessionSettings, ToolSpec, TurnDetection,
};

const WAIT: Duration = Duration::from_secs(15);
const PCM8: AudioFormat = AudioFormat::Pcm16 { rate: 8000 };

struct Fakes {
    stt: FakeTranscription,
    chat: FakeChat,
    speech: FakeSpeech,
}

impl Fakes {
    async fn start(stt: fake_transcription::Script, speech: fake_speech::Script) -> Fakes {
        Fakes {
            stt: FakeTranscription::start(stt).await,
            chat: FakeChat::start().await,
            speech: FakeSpeech::start(speech).await,
        }
    }

    /// The cascade over these fakes; `extra` goes into the language model's table.
    fn provider(&self, llm_extra: &str, tts_extra: &str) -> Arc<dyn ModelProvider> {
        let toml = format!(
            "[model]\nprovider = \"cascade\"\n\
             [model.cascade]\nstt = \"openai\"\nllm = \"fake\"\ntts = \"openai\"\n\
             [model.cascade.llms.fake]\nbase-url = \"{}\"\n{llm_extra}\n\
             [model.cascade.openai-stt]\nbase-url = \"{}\"\n\
             [model.cascade.openai-tts]\nbase-url = \"{}\"\napi-key = \"{}\"\n{tts_extra}\n",
            self.chat.url(),
            self.stt.base_url,
            self.speech.base_url,
            fake_speech::Script::default().api_key,
        );
        let config = Config::parse(&toml, "test", []).unwrap();
        config.model.build().unwrap()
    }
}

fn settings(greeting: Option<&str>) -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: "You are a receptionist.".into(),
        voice: None,
        language: Some("en-US".into()),
        tools: vec![ToolSpec {
            name: "opening_hours".into(),
            description: "Opening hours".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }],
        greeting: greeting.map(str::to_string),
        input_format: PCM8,
        output_format: PCM8,
        turn_detection: TurnDetection::default(),
        input_transcription: true,
        history: Vec::new(),
    }
}

/// A caller turn: espeak-ng speech with silence around it, 20 ms frames at four times real
/// time (the voice detector counts frames, not wall time); it stops early if the session ends.
async fn speak(session: &ModelSession, text: &str) {
    let mut samples = vec![0i16; 4000];
    samples.extend(espeak_at(text, 8000));
    samples.extend(vec![0i16; 8000]);
    for frame in samples.chunks(160) {
        let bytes = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
        if session.send(Command::Audio(bytes)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ready() -> bool {
    require("espeak-ng") && require("sox")
}

/// The session's last events: an error naming `stage`, then the close with it.
fn failed_at(events: &[ModelEvent], stage: &str) -> ErrorKind {
    let Some(ModelEvent::Closed(CloseReason::Error(error))) = events.last() else {
        panic!("the session did not close with an error: {events:?}");
    };
    assert!(
        error.message.starts_with(&format!("{stage} (")),
        "the error names the stage {stage}: {error:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ModelEvent::Error(e) if e == error)),
        "the error is also reported before the close: {events:?}"
    );
    error.kind
}

fn closed(event: &ModelEvent) -> bool {
    matches!(event, ModelEvent::Closed(_))
}

fn agent_said(event: &ModelEvent, text: &str) -> bool {
    matches!(event, ModelEvent::Transcript { role: Role::Agent, text: t, is_final: true, .. } if t == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_stream_is_asked_again_once_then_fails_the_stage() {
    if !ready() {
        return;
    }
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("", "");
    // The first turn: broken, then mended by the retry.
    fakes.chat.push(Reply::malformed());
    fakes.chat.push(Reply::text(&["Fine, thanks."]));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "How are you?").await;
    let events = until(&mut session, WAIT, |e| agent_said(e, "Fine, thanks.")).await;
    let retried = events.iter().find_map(|e| match e {
        ModelEvent::Error(error) => Some(error.clone()),
        _ => None,
    });
    let retried = retried.unwrap_or_else(|| panic!("the broken stream is reported: {events:?}"));
    assert!(retried.message.starts_with("llm (fake)"), "{retried:?}");
    assert_eq!(retried.kind, ErrorKind::Protocol);
    // The second turn: broken twice, the stage has failed.
    fakes.chat.push(Reply::malformed());
    fakes.chat.push(Reply::malformed());
    speak(&session, "And the weather?").await;
    let events = until(&mut session, WAIT, closed).await;
    assert_eq!(failed_at(&events, "llm"), ErrorKind::Protocol);
    assert_eq!(fakes.chat.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_arguments_that_are_no_json_go_back_to_the_model_not_to_the_agent() {
    if !ready() {
        return;
    }
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("", "");
    fakes.chat.push(Reply::tool_calls(vec![(
        "call_bad",
        "opening_hours",
        vec!["{\"day\": "],
    )]));
    fakes.chat.push(Reply::tool_calls(vec![(
        "call_good",
        "opening_hours",
        vec!["{}"],
    )]));
    fakes.chat.push(Reply::text(&["We open at nine."]));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "When do you open?").await;
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ToolCall { .. })
    })
    .await;
    let Some(ModelEvent::ToolCall {
        call_id, arguments, ..
    }) = events.last()
    else {
        unreachable!()
    };
    assert_eq!((call_id.as_str(), arguments.as_str()), ("call_good", "{}"));
    session
        .send(Command::ToolResult {
            call_id: "call_good".into(),
            output: "{\"hours\": \"9-17\"}".into(),
        })
        .await
        .unwrap();
    until(&mut session, WAIT, |e| agent_said(e, "We open at nine.")).await;
    // The model was told of its mistake in the conversation, as a tool result.
    let requests: Vec<Value> = fakes.chat.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 3);
    let told = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_bad")
        .unwrap_or_else(|| panic!("the bad call's error: {:#}", requests[1]));
    assert!(
        told["content"]
            .as_str()
            .unwrap()
            .contains("not a valid JSON object"),
        "{told}"
    );
    let last = requests[2]["messages"].as_array().unwrap();
    assert!(
        last.iter()
            .any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_good"),
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transcription_fails_the_stage_named_stt() {
    if !ready() {
        return;
    }
    let stt = fake_transcription::Script {
        answers: vec![Answer {
            outcome: Outcome::Fail {
                status: 500,
                code: Some("server_error".into()),
                message: "The server had an error".into(),
            },
            delay: Duration::ZERO,
        }],
        ..Default::default()
    };
    let fakes = Fakes::start(stt, Default::default()).await;
    let mut session = fakes
        .provider("", "")
        .connect(settings(None))
        .await
        .unwrap();
    speak(&session, "Hello there.").await;
    let events = until(&mut session, WAIT, closed).await;
    assert_eq!(failed_at(&events, "stt"), ErrorKind::Server);
    assert!(
        fakes.chat.requests().is_empty(),
        "no turn reached the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stages_time_out_on_their_own_limits() {
    if !ready() {
        return;
    }
    // Speech that stalls after its first chunk: the greeting fails on the speech stage's
    // stall limit.
    let stalling = fake_speech::Script {
        mode: fake_speech::Mode::Stall,
        ..Default::default()
    };
    let fakes = Fakes::start(Default::default(), stalling).await;
    let provider = fakes.provider("", "stall-timeout-ms = 400");
    let started = Instant::now();
    let mut session = provider.connect(settings(Some("Hello."))).await.unwrap();
    let events = until(&mut session, WAIT, closed).await;
    assert_eq!(failed_at(&events, "tts"), ErrorKind::Timeout);
    // On the 400 ms stall limit, not the 10 s limit of the whole request (a wide margin: the
    // machine may be loaded).
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "failed after {took:?}");

    // A language model that stalls mid-answer: asked again once, then failed, each on its
    // stall limit.
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("stall-timeout-ms = 500", "");
    fakes.chat.push(Reply::stall_after(0));
    fakes.chat.push(Reply::stall_after(0));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "Hello there.").await;
    let asked = Instant::now();
    let events = until(&mut session, WAIT, closed).await;
    assert_eq!(failed_at(&events, "llm"), ErrorKind::Timeout);
    // Twice the 500 ms stall limit, not the 10 s connect limit.
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(8), "failed after {took:?}");
    assert_eq!(fakes.chat.requests().len(), 2);
    // Both stalled streams were dropped (the fake notices the close a moment later).
    let deadline = Instant::now() + Duration::from_secs(5);
    while fakes.chat.cancelled() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fakes.chat.cancelled(),
        2,
        "both stalled streams were dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_leaves_only_the_words_heard_in_the_conversation() {
    if !ready() {
        return;
    }
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("", "");
    let long = "One two three four five six seven eight nine ten eleven twelve.";
    fakes.chat.push(Reply::text(&[long]));
    fakes.chat.push(Reply::text(&["Sure."]));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "Count for me.").await;
    let events = until(&mut session, WAIT, |e| agent_said(e, long)).await;
    let item = events
        .iter()
        .find_map(|e| match e {
            ModelEvent::Audio { item_id, .. } => Some(item_id.clone()),
            _ => None,
        })
        .expect("the answer's audio");
    // The call played 1 s of its 3.15 s (63 characters at the fakes' 50 ms each) when the
    // caller cut in: 20 characters, "One two three four" the last whole words.
    session
        .send(Command::Truncate {
            item_id: item,
            audio_end_ms: 1000,
        })
        .await
        .unwrap();
    speak(&session, "Stop.").await;
    until(&mut session, WAIT, |e| agent_said(e, "Sure.")).await;
    let requests: Vec<Value> = fakes.chat.requests().into_iter().map(|r| r.body).collect();
    let messages = requests[1]["messages"].as_array().unwrap();
    let said: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(said, ["One two three four"], "{messages:#?}");
}

/// The caller speaks again before the agent answered a tool call: the call is closed in the
/// conversation as overtaken, so the next request is one the API accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_overtaken_by_the_caller_is_closed_in_the_conversation() {
    if !ready() {
        return;
    }
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("", "");
    fakes.chat.push(Reply::tool_calls(vec![(
        "call_slow",
        "opening_hours",
        vec!["{}"],
    )]));
    fakes.chat.push(Reply::text(&["Sorry, go on."]));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "When do you open?").await;
    until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ToolCall { .. })
    })
    .await;
    // No tool result: the caller goes on.
    speak(&session, "Actually, never mind.").await;
    until(&mut session, WAIT, |e| agent_said(e, "Sorry, go on.")).await;
    // The fake, like the API, answers 400 to a tool call left without its result; this
    // request was accepted and carries the closing result.
    let requests: Vec<Value> = fakes.chat.requests().into_iter().map(|r| r.body).collect();
    let messages = requests[1]["messages"].as_array().unwrap();
    let closed = messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == "call_slow")
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert!(
        closed["content"].as_str().unwrap().contains("spoke again"),
        "{closed}"
    );
}

/// A filler said while the agent's tool runs (issue 32): the caller hears it, the tool's
/// result stays right after the call in the language model's conversation (as a chat API
/// wants it), and the answer to the tool follows the filler when the result came in meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filler_said_while_a_tool_runs_keeps_the_result_by_its_call_and_the_answer_follows() {
    if !ready() {
        return;
    }
    let fakes = Fakes::start(Default::default(), Default::default()).await;
    let provider = fakes.provider("", "");
    fakes.chat.push(Reply::tool_calls(vec![(
        "call_1",
        "opening_hours",
        vec!["{}"],
    )]));
    fakes.chat.push(Reply::text(&["We open at nine."]));
    let mut session = provider.connect(settings(None)).await.unwrap();
    speak(&session, "When do you open?").await;
    until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ToolCall { .. })
    })
    .await;
    session
        .send(Command::Say("One moment please.".into()))
        .await
        .unwrap();
    session
        .send(Command::ToolResult {
            call_id: "call_1".into(),
            output: "{\"hours\": \"9-17\"}".into(),
        })
        .await
        .unwrap();
    let events = until(&mut session, WAIT, |e| agent_said(e, "We open at nine.")).await;
    assert!(
        events.iter().any(|e| agent_said(e, "One moment please.")),
        "the filler was said first: {events:?}"
    );
    let requests: Vec<Value> = fakes.chat.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let messages = requests[1]["messages"].as_array().unwrap();
    let call = messages
        .iter()
        .position(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert_eq!(messages[call + 1]["role"], "tool", "{messages:#?}");
}
