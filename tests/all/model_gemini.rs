//! The Gemini Live provider against the protocol-faithful fake (support/fake_gemini.rs).

use std::time::Duration;

use crate::support::fake_gemini::{FakeGemini, Reply, Script};
use crate::support::model_audio::pcm16_tone;
use crate::support::model_events::{is_done, next, until};
use serde_json::json;
use switchboard::model::gemini::GeminiProvider;
use switchboard::model::{
    AudioFormat, CloseReason, Command, ConnectError, ErrorKind, GeminiConfig, ModelEvent,
    ModelProvider, ModelSession, ResponseStatus, Role, Secret, SessionSettings, SessionUpdate,
    ToolSpec, TurnDetection,
};

const WAIT: Duration = Duration::from_secs(10);

fn provider(fake: &FakeGemini, key: &str) -> GeminiProvider {
    let mut config = GeminiConfig::new(Secret::new(key));
    config.base_url = fake.url.clone();
    config.connect_timeout_ms = 3_000;
    GeminiProvider::new(config)
}

fn settings(greeting: Option<&str>) -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: "You are Acme's phone agent.".into(),
        voice: Some("Puck".into()),
        language: Some("en-US".into()),
        tools: vec![ToolSpec {
            name: "opening_hours".into(),
            description: "Opening hours of a store.".into(),
            parameters: json!({"type": "object", "properties": {"store": {"type": "string"}}}),
        }],
        greeting: greeting.map(str::to_string),
        input_format: AudioFormat::Pcm16 { rate: 16_000 },
        output_format: AudioFormat::Pcm16 { rate: 24_000 },
        turn_detection: TurnDetection::default(),
        input_transcription: true,
        history: Vec::new(),
    }
}

/// 20 ms frames of 16 kHz PCM: tone then silence.
async fn speak(session: &ModelSession, speech_ms: u32, silence_ms: u32) {
    for frame in pcm16_tone(16_000, speech_ms, 440.0, 8000).chunks(640) {
        session.send(Command::Audio(frame.to_vec())).await.unwrap();
    }
    for _ in 0..silence_ms / 20 {
        session.send(Command::Audio(vec![0; 640])).await.unwrap();
    }
}

fn final_text(events: &[ModelEvent], who: Role) -> Option<String> {
    events.iter().find_map(|e| match e {
        ModelEvent::Transcript {
            role,
            text,
            is_final: true,
            ..
        } if *role == who => Some(text.clone()),
        _ => None,
    })
}

#[tokio::test]
async fn full_session() {
    let script = Script {
        replies: vec![
            Reply::Echo,
            Reply::ToolCall {
                name: "opening_hours".into(),
                args: json!({"store": "Main St"}),
            },
            Reply::Speech {
                transcript: "We open at nine and close at five every day of the week.".into(),
                audio_ms: 8000,
            },
            Reply::GoAway {
                time_left: "50s".into(),
            },
            Reply::Close {
                code: 1011,
                reason: "Internal error encountered.".into(),
            },
        ],
        chunk_interval: Duration::from_millis(20),
        ..Script::default()
    };
    let fake = FakeGemini::start(script).await;
    let greeting = "Welcome to Acme, what can I do for you?";
    let mut session = provider(&fake, "gm-test")
        .connect(settings(Some(greeting)))
        .await
        .unwrap();
    assert_eq!(session.input_format, AudioFormat::Pcm16 { rate: 16_000 });

    // Greeting: exact words, 24 kHz audio, usage, completed.
    let events = until(&mut session, WAIT, is_done).await;
    assert_eq!(final_text(&events, Role::Agent).as_deref(), Some(greeting));
    let audio: usize = events
        .iter()
        .filter_map(|e| match e {
            ModelEvent::Audio { data, format, .. } => {
                assert_eq!(*format, AudioFormat::Pcm16 { rate: 24_000 });
                Some(data.len())
            }
            _ => None,
        })
        .sum();
    assert_eq!(audio, 300 * 9 * 48, "9 words × 300 ms of 24 kHz PCM16");
    let usage = events
        .iter()
        .find_map(|e| match e {
            ModelEvent::Usage(u) => Some(*u),
            _ => None,
        })
        .expect("usage");
    assert_eq!((usage.input_tokens, usage.output_tokens), (500, 96));
    assert_eq!(
        (
            usage.input_text_tokens,
            usage.input_audio_tokens,
            usage.output_audio_tokens
        ),
        (Some(380), Some(120), Some(96))
    );
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Completed
        })
    );

    // Setup as sent.
    let setup = &fake.received_of("setup")[0];
    assert_eq!(
        setup["model"],
        "models/gemini-2.5-flash-native-audio-preview-12-2025"
    );
    assert_eq!(
        setup["generationConfig"]["responseModalities"],
        json!(["AUDIO"])
    );
    assert_eq!(
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
        "Puck"
    );
    assert_eq!(
        setup["systemInstruction"]["parts"][0]["text"],
        "You are Acme's phone agent."
    );
    assert_eq!(
        setup["tools"][0]["functionDeclarations"][0]["name"],
        "opening_hours"
    );
    assert_eq!(setup["inputAudioTranscription"], json!({}));
    assert_eq!(setup["outputAudioTranscription"], json!({}));
    let greeting_turn = &fake.received_of("clientContent")[0];
    assert!(
        greeting_turn["turns"][0]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .contains(greeting)
    );
    assert_eq!(greeting_turn["turnComplete"], true);

    // Caller speaks: audio goes in as realtimeInput 16 kHz; transcript and a tool call come out.
    speak(&session, 400, 500).await;
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ToolCall { .. })
    })
    .await;
    assert!(events.iter().any(|e| matches!(
        e,
        ModelEvent::Transcript {
            role: Role::Caller,
            is_final: false,
            ..
        }
    )));
    // The caller's turn is final once the model acts on it (here: a tool call).
    assert_eq!(
        final_text(&events, Role::Caller).as_deref(),
        Some("What are your opening hours?")
    );
    let ModelEvent::ToolCall {
        call_id,
        name,
        arguments,
    } = events.last().unwrap().clone()
    else {
        unreachable!()
    };
    assert_eq!(name, "opening_hours");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&arguments).unwrap(),
        json!({"store": "Main St"})
    );
    let audio_in = fake.received_of("realtimeInput");
    assert_eq!(audio_in[0]["audio"]["mimeType"], "audio/pcm;rate=16000");

    session
        .send(Command::ToolResult {
            call_id: call_id.clone(),
            output: r#"{"open":"9-17"}"#.into(),
        })
        .await
        .unwrap();
    // The long answer starts; the caller barges in.
    let mut got = 0;
    let mut answer = Vec::new();
    while got < 5 {
        let ev = next(&mut session, WAIT).await;
        if let ModelEvent::Audio { .. } = ev {
            got += 1;
        }
        answer.push(ev);
    }
    assert!(answer.iter().any(|e| matches!(e, ModelEvent::Audio { .. })));
    speak(&session, 200, 0).await;
    let events = until(&mut session, WAIT, is_done).await;
    let started = events
        .iter()
        .position(|e| matches!(e, ModelEvent::SpeechStarted { .. }))
        .expect("barge-in event");
    assert!(started < events.len() - 1);
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Cancelled
        })
    );
    let response = &fake.received_of("toolResponse")[0]["functionResponses"][0];
    assert_eq!(response["id"], call_id.as_str());
    assert_eq!(response["name"], "opening_hours");
    assert_eq!(response["response"], json!({"result": {"open": "9-17"}}));

    // Caller finishes; the server announces it is going away, then fails with a close code.
    speak(&session, 0, 500).await;
    let events = until(&mut session, WAIT, |e| matches!(e, ModelEvent::Closed(_))).await;
    assert!(
        events.contains(&ModelEvent::GoingAway {
            time_left_ms: Some(50_000)
        }),
        "{events:?}"
    );
    match events.last().unwrap() {
        ModelEvent::Closed(CloseReason::Error(e)) => {
            assert_eq!(
                (e.kind, e.code.as_deref()),
                (ErrorKind::Server, Some("1011"))
            );
            assert_eq!(e.message, "Internal error encountered.");
        }
        other => panic!("{other:?}"),
    }
    // Every server message came as a binary frame and the client still understood it: the
    // fake sends nothing else.
}

#[tokio::test]
async fn bad_key_is_a_typed_rejection() {
    let fake = FakeGemini::start(Script::default()).await;
    let err = provider(&fake, "wrong")
        .connect(settings(None))
        .await
        .unwrap_err();
    match err {
        ConnectError::Rejected {
            provider: "gemini",
            error,
        } => {
            assert_eq!(
                (error.kind, error.code.as_deref()),
                (ErrorKind::Auth, Some("1008"))
            );
            assert!(error.message.contains("API key not valid"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn dropped_socket_and_unsupported_commands() {
    let script = Script {
        replies: vec![Reply::Echo, Reply::DropSocket],
        ..Script::default()
    };
    let fake = FakeGemini::start(script).await;
    let mut session = provider(&fake, "gm-test")
        .connect(settings(Some("Hi")))
        .await
        .unwrap();
    until(&mut session, WAIT, is_done).await;
    session
        .send(Command::Update(SessionUpdate {
            instructions: "new".into(),
            tools: Vec::new(),
        }))
        .await
        .unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => assert_eq!(e.kind, ErrorKind::Unsupported),
        other => panic!("{other:?}"),
    }
    session
        .send(Command::ToolResult {
            call_id: "nope".into(),
            output: "{}".into(),
        })
        .await
        .unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => assert_eq!(e.kind, ErrorKind::InvalidRequest),
        other => panic!("{other:?}"),
    }
    session.send(Command::Say("again".into())).await.unwrap();
    let events = until(&mut session, WAIT, |e| matches!(e, ModelEvent::Closed(_))).await;
    assert_eq!(
        events.last(),
        Some(&ModelEvent::Closed(CloseReason::Dropped))
    );
}

#[tokio::test]
async fn silent_model_and_wrong_format() {
    let fake = FakeGemini::start(Script {
        replies: vec![Reply::Silence],
        ..Script::default()
    })
    .await;
    let mut config = GeminiConfig::new(Secret::new("gm-test"));
    config.base_url = fake.url.clone();
    config.response_timeout_ms = 300;
    let mut session = GeminiProvider::new(config)
        .connect(settings(Some("Hi")))
        .await
        .unwrap();
    match next(&mut session, WAIT).await {
        ModelEvent::Error(e) => assert_eq!(e.kind, ErrorKind::Timeout),
        other => panic!("{other:?}"),
    }
    session.send(Command::Close).await.unwrap();
    assert_eq!(
        next(&mut session, WAIT).await,
        ModelEvent::Closed(CloseReason::Normal)
    );

    let mut s = settings(None);
    s.input_format = AudioFormat::Pcmu8k;
    let err = provider(&fake, "gm-test").connect(s).await.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::UnsupportedFormat {
                provider: "gemini",
                ..
            }
        ),
        "{err}"
    );
}

/// The fake itself keeps the server's rules: setup first, snake_case accepted, binary frames,
/// errors as close codes.
#[tokio::test]
async fn fake_enforces_server_rules() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let fake = FakeGemini::start(Script::default()).await;
    // Anything but setup first: closed with 1007.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?key=gm-test", fake.url))
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"realtimeInput":{"audioStreamEnd":true}}"#,
    ))
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1007),
        other => panic!("{other:?}"),
    }
    // snake_case setup with the key in the query: setupComplete arrives as a binary frame.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}?key=gm-test", fake.url))
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"setup":{"model":"models/x","generation_config":{"response_modalities":["AUDIO"]}}}"#,
    ))
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(b))) => assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
            json!({"setupComplete": {}})
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fake.received_of("setup")[0]["generationConfig"]["responseModalities"],
        json!(["AUDIO"])
    );
    ws.send(Message::text(r#"{"client_content":{"turns":[{"role":"user","parts":[{"text":"Say \"hi there\""}]}],"turn_complete":true}}"#)).await.unwrap();
    let mut transcript = String::new();
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Binary(b) = msg else {
            panic!("server sent a non-binary frame: {msg:?}")
        };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        if let Some(t) = v["serverContent"]["outputTranscription"]["text"].as_str() {
            transcript.push_str(t);
        }
        if v["serverContent"]["turnComplete"] == true {
            break;
        }
    }
    assert_eq!(transcript, "hi there");
    // A tool response for a call that was never made: closed with 1007.
    ws.send(Message::text(
        r#"{"tool_response":{"function_responses":[{"id":"fc_x","name":"n","response":{}}]}}"#,
    ))
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1007),
        other => panic!("{other:?}"),
    }
}
