//! The OpenAI Realtime provider against the protocol-faithful fake (support/fake_openai).

use std::time::Duration;

use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::model_audio::ulaw_tone;
use crate::support::model_events::{is_done, next, until};
use serde_json::json;
use switchboard::model::openai::OpenAiProvider;
use switchboard::model::{
    AudioFormat, CloseReason, Command, ConnectError, ErrorKind, ModelEvent, ModelProvider,
    ModelSession, OpenAiAuth, OpenAiConfig, ResponseStatus, Role, Secret, SessionSettings,
    SessionUpdate, ToolSpec, TurnDetection,
};

const WAIT: Duration = Duration::from_secs(10);

fn provider(fake: &FakeOpenAi) -> OpenAiProvider {
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = fake.url.clone();
    config.connect_timeout_ms = 3_000;
    OpenAiProvider::new(config)
}

fn settings(greeting: Option<&str>) -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: "You are Acme's phone agent. Be brief.".into(),
        voice: Some("cedar".into()),
        language: Some("en-US".into()),
        tools: vec![ToolSpec {
            name: "lookup_order".into(),
            description: "Look up an order by id.".into(),
            parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}},
                               "required": ["order_id"]}),
        }],
        greeting: greeting.map(str::to_string),
        input_format: AudioFormat::Pcmu8k,
        output_format: AudioFormat::Pcmu8k,
        turn_detection: TurnDetection::ServerVad {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        },
        input_transcription: true,
        history: Vec::new(),
    }
}

/// 20 ms μ-law frames: `speech_ms` of loud tone then `silence_ms` of silence.
async fn speak(session: &ModelSession, speech_ms: u32, silence_ms: u32) {
    let tone = ulaw_tone(speech_ms, 440.0, 8000);
    for frame in tone.chunks(160) {
        session.send(Command::Audio(frame.to_vec())).await.unwrap();
    }
    for _ in 0..silence_ms / 20 {
        session.send(Command::Audio(vec![0xFF; 160])).await.unwrap();
    }
}

#[tokio::test]
async fn greeting_is_spoken_with_exact_words_and_session_is_configured() {
    let fake = FakeOpenAi::start(Script::default()).await;
    let greeting = "Thanks for calling Acme, how can I help?";
    let mut session = provider(&fake)
        .connect(settings(Some(greeting)))
        .await
        .unwrap();
    assert_eq!(session.output_format, AudioFormat::Pcmu8k);

    let events = until(&mut session, WAIT, is_done).await;
    let audio: usize = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::Audio { data, format, .. } => {
                assert_eq!(*format, AudioFormat::Pcmu8k);
                Some(data.len())
            }
            _ => None,
        })
        .sum();
    assert!(audio > 800, "greeting audio bytes {audio}");
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::Transcript {
                role: Role::Agent,
                text,
                is_final: true,
                ..
            } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finals, vec![greeting.to_string()]);
    let usage = events.iter().find_map(|e| match e {
        ModelEvent::Usage(u) => Some(*u),
        _ => None,
    });
    let usage = usage.expect("usage from response.done");
    assert_eq!((usage.input_tokens, usage.output_tokens), (301, 111));
    assert_eq!(usage.input_text_tokens, Some(301));
    assert_eq!(
        (usage.output_text_tokens, usage.output_audio_tokens),
        (Some(21), Some(90))
    );
    assert!(events.contains(&ModelEvent::ResponseDone {
        status: ResponseStatus::Completed
    }));

    // What went over the wire: GA handshake, GA session shape, the exact-words response.
    let up = &fake.upgrades()[0];
    assert_eq!(
        up.headers.get("authorization").map(String::as_str),
        Some("Bearer sk-test")
    );
    assert!(!up.headers.contains_key("openai-beta"));
    assert_eq!(up.query, "model=gpt-realtime");
    let update = &fake.received_of("session.update")[0]["session"];
    assert_eq!(update["type"], "realtime");
    assert_eq!(
        update["instructions"],
        "You are Acme's phone agent. Be brief."
    );
    assert_eq!(
        update["audio"]["input"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(
        update["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(update["audio"]["output"]["voice"], "cedar");
    assert_eq!(
        update["audio"]["input"]["turn_detection"]["type"],
        "server_vad"
    );
    assert_eq!(
        update["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        500
    );
    assert_eq!(update["audio"]["input"]["transcription"]["language"], "en");
    assert_eq!(update["tools"][0]["name"], "lookup_order");
    let create = &fake.received_of("response.create")[0];
    let instructions = create["response"]["instructions"].as_str().unwrap();
    assert!(instructions.contains(greeting), "{instructions}");
    assert_eq!(create["response"]["tool_choice"], "none");
    let kinds: Vec<String> = fake
        .received()
        .iter()
        .map(|r| r.event["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(&kinds[..2], ["session.update", "response.create"]);

    session.send(Command::Close).await.unwrap();
    assert_eq!(
        next(&mut session, WAIT).await,
        ModelEvent::Closed(CloseReason::Normal)
    );
    assert!(
        fake.wait_for(WAIT, |r| r.iter().any(|r| r.event["type"] == "<close>"))
            .await
    );
}

#[tokio::test]
async fn caller_audio_goes_in_and_turn_events_come_out() {
    let script = Script {
        replies: vec![Reply::Speech {
            transcript: "It ships Thursday.".into(),
            audio_ms: 600,
        }],
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake).connect(settings(None)).await.unwrap();
    speak(&session, 600, 700).await;
    let events = until(&mut session, WAIT, is_done).await;
    let pos = |f: &dyn Fn(&ModelEvent) -> bool| events.iter().position(f).expect("event present");
    let started = pos(&|e| matches!(e, ModelEvent::SpeechStarted { .. }));
    let stopped = pos(&|e| matches!(e, ModelEvent::SpeechStopped { .. }));
    let caller = pos(
        &|e| matches!(e, ModelEvent::Transcript { role: Role::Caller, is_final: true, text, .. } if text == "Where is my order?"),
    );
    let agent = pos(
        &|e| matches!(e, ModelEvent::Transcript { role: Role::Agent, is_final: true, text, .. } if text == "It ships Thursday."),
    );
    assert!(
        started < stopped && stopped < caller && caller < agent,
        "{events:?}"
    );
    assert!(matches!(
        events[started],
        ModelEvent::SpeechStarted {
            audio_start_ms: Some(0)
        }
    ));
    // Every byte went through unchanged in size (G.711 straight through).
    assert_eq!(fake.appended_bytes(), 600 * 8 + 700 * 8);
}

#[tokio::test]
async fn tool_call_round_trip() {
    let script = Script {
        replies: vec![
            Reply::ToolCall {
                name: "lookup_order".into(),
                arguments: r#"{"order_id":"A1234"}"#.into(),
            },
            Reply::Speech {
                transcript: "Your order shipped.".into(),
                audio_ms: 300,
            },
        ],
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake).connect(settings(None)).await.unwrap();
    speak(&session, 400, 600).await;
    let events = until(&mut session, WAIT, is_done).await;
    let (call_id, name, arguments) = events
        .iter()
        .find_map(|e| match e {
            ModelEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => Some((call_id.clone(), name.clone(), arguments.clone())),
            _ => None,
        })
        .expect("tool call event");
    assert_eq!(name, "lookup_order");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&arguments).unwrap(),
        json!({"order_id": "A1234"})
    );

    let output = r#"{"status":"shipped","eta":"Thursday"}"#;
    session
        .send(Command::ToolResult {
            call_id: call_id.clone(),
            output: output.into(),
        })
        .await
        .unwrap();
    let events = until(&mut session, WAIT, is_done).await;
    assert!(events.iter().any(|e| matches!(e, ModelEvent::Transcript { role: Role::Agent, is_final: true, text, .. } if text == "Your order shipped.")));
    let creates = fake.received_of("conversation.item.create");
    assert_eq!(
        creates[0]["item"],
        json!({"type": "function_call_output", "call_id": call_id, "output": output})
    );
    // The function output alone does not trigger a response: the client asked for one after it.
    let kinds: Vec<String> = fake
        .received()
        .iter()
        .map(|r| r.event["type"].as_str().unwrap().to_string())
        .collect();
    let at = kinds
        .iter()
        .position(|k| k == "conversation.item.create")
        .unwrap();
    assert_eq!(kinds[at + 1], "response.create");
    assert!(
        !events.iter().any(|e| matches!(e, ModelEvent::Error(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn barge_in_truncates_at_the_played_position() {
    // A 6 s answer streamed at 5x real time, so the caller can interrupt it mid-way.
    let script = Script {
        replies: vec![Reply::Speech {
            transcript: "Let me tell you a long story about our shipping policy and more.".into(),
            audio_ms: 6000,
        }],
        delta_interval: Duration::from_millis(20),
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake).connect(settings(None)).await.unwrap();
    session
        .send(Command::Say("unused: the script answers".into()))
        .await
        .unwrap();
    // Wait for some agent audio, then the caller talks over it.
    let mut item = None;
    let mut received = 0usize;
    while received < 8 * 1000 {
        if let ModelEvent::Audio { item_id, data, .. } = next(&mut session, WAIT).await {
            received += data.len();
            item = Some(item_id);
        }
    }
    let item_id = item.unwrap();
    speak(&session, 200, 0).await;
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ResponseDone { .. })
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ModelEvent::SpeechStarted { .. })),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Cancelled
        })
    );
    let generated: usize = received
        + events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::Audio { data, .. } => Some(data.len()),
                _ => None,
            })
            .sum::<usize>();

    // The phone played 740 ms of it.
    session
        .send(Command::Truncate {
            item_id: item_id.clone(),
            audio_end_ms: 740,
        })
        .await
        .unwrap();
    // A playback clock past the generated audio is clamped, so the server never rejects it.
    session
        .send(Command::Truncate {
            item_id: item_id.clone(),
            audio_end_ms: 60_000,
        })
        .await
        .unwrap();
    assert!(
        fake.wait_for(WAIT, |r| r
            .iter()
            .filter(|r| r.event["type"] == "conversation.item.truncate")
            .count()
            == 2)
            .await
    );
    let truncates = fake.received_of("conversation.item.truncate");
    assert_eq!(truncates[0]["item_id"], item_id.as_str());
    assert_eq!(truncates[0]["audio_end_ms"], 740);
    assert_eq!(truncates[0]["content_index"], 0);
    assert_eq!(truncates[1]["audio_end_ms"], (generated / 8) as u64);
    // Neither truncate produced an error (the fake rejects audio_end_ms beyond the audio).
    session.send(Command::Close).await.unwrap();
    let rest = until(&mut session, WAIT, |e| matches!(e, ModelEvent::Closed(_))).await;
    assert!(
        !rest.iter().any(|e| matches!(e, ModelEvent::Error(_))),
        "{rest:?}"
    );
}

#[tokio::test]
async fn error_events_are_typed_and_the_session_goes_on() {
    let script = Script {
        replies: vec![Reply::Error {
            kind: "server_error".into(),
            code: "server_error".into(),
            message: "The server had an error while processing your request.".into(),
        }],
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake).connect(settings(None)).await.unwrap();
    session.send(Command::Say("first".into())).await.unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => {
            assert_eq!(e.kind, ErrorKind::Server);
            assert_eq!(e.code.as_deref(), Some("server_error"));
            assert!(e.message.contains("server had an error"));
        }
        other => panic!("expected error, got {other:?}"),
    }
    // No response is coming for the failed request: said so, so nobody waits for it.
    assert_eq!(
        next(&mut session, WAIT).await,
        ModelEvent::ResponseDone {
            status: ResponseStatus::Failed
        }
    );
    // Still alive: an update (instructions and tools, as a hand-off sends) and a spoken line
    // work.
    let tool = ToolSpec {
        name: "confirm".into(),
        description: "Confirm".into(),
        parameters: json!({"type": "object"}),
    };
    session
        .send(Command::Update(SessionUpdate {
            instructions: "Now be terse.".into(),
            tools: vec![tool],
        }))
        .await
        .unwrap();
    session.send(Command::CancelResponse).await.unwrap(); // nothing active: not sent
    session
        .send(Command::Say("Second try".into()))
        .await
        .unwrap();
    let events = until(&mut session, WAIT, is_done).await;
    assert!(events.iter().any(|e| matches!(e, ModelEvent::Transcript { is_final: true, text, .. } if text == "Second try")), "{events:?}");
    assert!(
        !events.iter().any(|e| matches!(e, ModelEvent::Error(_))),
        "{events:?}"
    );
    let updates = fake.received_of("session.update");
    assert_eq!(
        updates[1]["session"],
        json!({"type": "realtime", "instructions": "Now be terse.", "tool_choice": "auto",
               "tools": [{"type": "function", "name": "confirm", "description": "Confirm",
                          "parameters": {"type": "object"}}]})
    );
    assert!(fake.received_of("response.cancel").is_empty());

    // A truncate the server rejects (unknown item) comes back as a typed error event.
    session
        .send(Command::Truncate {
            item_id: "item_nope".into(),
            audio_end_ms: 10,
        })
        .await
        .unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => assert_eq!(
            (e.kind, e.code.as_deref()),
            (ErrorKind::InvalidRequest, Some("invalid_value"))
        ),
        other => panic!("expected error, got {other:?}"),
    }
}

#[tokio::test]
async fn dropped_socket_is_reported() {
    let script = Script {
        replies: vec![Reply::DropSocket],
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake)
        .connect(settings(Some("Hello")))
        .await
        .unwrap();
    let events = until(&mut session, WAIT, |e| matches!(e, ModelEvent::Closed(_))).await;
    assert_eq!(
        events.last(),
        Some(&ModelEvent::Closed(CloseReason::Dropped))
    );
    assert!(session.recv().await.is_none());
    assert!(session.send(Command::Say("x".into())).await.is_err());
}

#[tokio::test]
async fn silent_server_times_out() {
    // Never sends session.created: connect fails with a timeout.
    let fake = FakeOpenAi::start(Script {
        never_answer: true,
        ..Script::default()
    })
    .await;
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = fake.url.clone();
    config.connect_timeout_ms = 300;
    let err = OpenAiProvider::new(config)
        .connect(settings(None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Timeout {
                provider: "openai",
                timeout_ms: 300
            }
        ),
        "{err}"
    );

    // Accepts the session but never answers a response: a typed timeout event.
    let fake = FakeOpenAi::start(Script {
        replies: vec![Reply::Silence],
        ..Script::default()
    })
    .await;
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = fake.url.clone();
    config.response_timeout_ms = 300;
    let mut session = OpenAiProvider::new(config)
        .connect(settings(Some("Hello")))
        .await
        .unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => assert_eq!(e.kind, ErrorKind::Timeout),
        other => panic!("expected timeout error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_key_and_bad_format_are_rejected() {
    let fake = FakeOpenAi::start(Script::default()).await;
    let mut config = OpenAiConfig::new(Secret::new("sk-wrong"));
    config.base_url = fake.url.clone();
    let err = OpenAiProvider::new(config)
        .connect(settings(None))
        .await
        .unwrap_err();
    match err {
        ConnectError::Rejected { error, .. } => {
            assert_eq!(
                (error.kind, error.code.as_deref()),
                (ErrorKind::Auth, Some("401"))
            );
            assert!(error.message.contains("invalid_api_key"));
        }
        other => panic!("{other}"),
    }
    let mut s = settings(None);
    s.input_format = AudioFormat::Pcm16 { rate: 16_000 };
    let err = provider(&fake).connect(s).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::UnsupportedFormat {
                direction: "input",
                ..
            }
        ),
        "{err}"
    );
    assert!(!format!("{:?}", provider(&fake)).contains("sk-test"));
}

#[tokio::test]
async fn azure_style_api_key_header_and_pcm24k() {
    let fake = FakeOpenAi::start(Script::default()).await;
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = format!("{}?api-version=2025-08-28", fake.url);
    config.auth = OpenAiAuth::ApiKeyHeader;
    config.model = "my-deployment".into();
    let mut s = settings(Some("Hi there"));
    s.input_format = AudioFormat::Pcm16 { rate: 24_000 };
    s.output_format = AudioFormat::Pcm16 { rate: 24_000 };
    s.turn_detection = TurnDetection::SemanticVad {
        eagerness: switchboard::model::Eagerness::Low,
    };
    let mut session = OpenAiProvider::new(config).connect(s).await.unwrap();
    let events = until(&mut session, WAIT, is_done).await;
    assert!(events.iter().any(|e| matches!(e, ModelEvent::Audio { format: AudioFormat::Pcm16 { rate: 24_000 }, data, .. } if data.len() % 2 == 0)));
    let up = &fake.upgrades()[0];
    assert_eq!(
        up.headers.get("api-key").map(String::as_str),
        Some("sk-test")
    );
    assert!(!up.headers.contains_key("authorization"));
    assert_eq!(up.query, "api-version=2025-08-28&model=my-deployment");
    let update = &fake.received_of("session.update")[0]["session"];
    assert_eq!(
        update["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(
        update["audio"]["input"]["turn_detection"],
        json!({"type": "semantic_vad", "eagerness": "low", "create_response": true, "interrupt_response": true})
    );
}

/// The fake itself keeps the server's rules (so provider tests against it mean something).
#[tokio::test]
async fn fake_enforces_server_rules() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let fake = FakeOpenAi::start(Script::default()).await;
    let mut req = format!("{}?model=gpt-realtime", fake.url)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer sk-test".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let first = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            break serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
    };
    assert_eq!(first["type"], "session.created");
    let send = |v: serde_json::Value| Message::text(v.to_string());
    ws.send(send(
        json!({"type": "session.update", "event_id": "c1", "session": {"instructions": "x"}}),
    ))
    .await
    .unwrap();
    ws.send(send(json!({"type": "response.cancel", "event_id": "c2"})))
        .await
        .unwrap();
    ws.send(send(
        json!({"type": "input_audio_buffer.commit", "event_id": "c3"}),
    ))
    .await
    .unwrap();
    ws.send(send(json!({"type": "no.such.event", "event_id": "c4"})))
        .await
        .unwrap();
    ws.send(send(json!({"type": "response.create", "event_id": "c5", "response": {"instructions": "Say \"one two\""}}))).await.unwrap();
    let mut errors = Vec::new();
    let mut item = String::new();
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "error" => errors.push((v["error"]["event_id"].clone(), v["error"]["code"].clone())),
            "response.output_item.added" => item = v["item"]["id"].as_str().unwrap().to_string(),
            "response.done" => break,
            _ => {}
        }
    }
    assert_eq!(
        errors,
        vec![
            (json!("c1"), json!("missing_required_parameter")),
            (json!("c2"), json!("response_cancel_not_active")),
            (json!("c3"), json!("input_audio_buffer_commit_empty")),
            (json!("c4"), json!("invalid_event")),
        ]
    );
    // "one two" = 600 ms of audio generated: 601 ms is refused, 600 ms accepted.
    ws.send(send(json!({"type": "conversation.item.truncate", "event_id": "c6", "item_id": item, "content_index": 0, "audio_end_ms": 601}))).await.unwrap();
    ws.send(send(json!({"type": "conversation.item.truncate", "event_id": "c7", "item_id": item, "content_index": 0, "audio_end_ms": 600}))).await.unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("socket ended")
        };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        replies.push(
            v["type"].as_str().unwrap().to_string()
                + ":"
                + v["error"]["event_id"].as_str().unwrap_or(""),
        );
    }
    assert_eq!(replies, ["error:c6", "conversation.item.truncated:"]);
}

#[tokio::test]
async fn malformed_server_events_are_errors_not_panics() {
    let script = Script {
        replies: vec![Reply::Raw(vec![
            "not json at all".into(),
            r#"{"type":"response.output_audio.delta","item_id":"i","delta":"@@not base64@@"}"#
                .into(),
            r#"{"type":"response.done"}"#.into(),
            r#"{"type":"some.future.event","x":1}"#.into(),
        ])],
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let mut session = provider(&fake).connect(settings(None)).await.unwrap();
    session.send(Command::Say("x".into())).await.unwrap();
    for _ in 0..3 {
        match next(&mut session, WAIT).await {
            ModelEvent::Error(e) => assert_eq!(e.kind, ErrorKind::Protocol, "{e}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
    // The unknown event is ignored and the session still works.
    session.send(Command::Close).await.unwrap();
    assert_eq!(
        next(&mut session, WAIT).await,
        ModelEvent::Closed(CloseReason::Normal)
    );
}

/// Real TLS (rustls with ring) to a compatible endpoint behind a private CA: trusted only when
/// the CA file is configured.
#[tokio::test]
async fn wss_endpoint_with_private_ca() {
    use crate::support::model_tls::{TlsFront, have_openssl};
    if !have_openssl() {
        return;
    }
    let fake = FakeOpenAi::start(Script::default()).await;
    let plain_port: u16 = fake
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let front = TlsFront::start(plain_port).await;
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = format!("wss://127.0.0.1:{}/v1/realtime", front.port);
    config.connect_timeout_ms = 5_000;

    // Public roots only: the private CA is not trusted.
    let err = OpenAiProvider::new(config.clone())
        .connect(settings(None))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Transport { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    config.ca_file = Some(front.ca_file.clone());
    let mut session = OpenAiProvider::new(config)
        .connect(settings(Some("Secure hello")))
        .await
        .unwrap();
    let events = until(&mut session, WAIT, is_done).await;
    assert!(events.iter().any(|e| matches!(e, ModelEvent::Transcript { is_final: true, text, .. } if text == "Secure hello")));
}
