//! Unit tests of the wire format (session configuration, server events, usage, error kinds)
//! and of the endpoint URL.

use super::wire::{ServerEvent, WireError, WireUsage};
use super::*;
use serde_json::json;

use crate::model::{ErrorKind, Role, Secret, ToolSpec, TurnDetection, Usage};

fn settings() -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: "Be brief.".into(),
        voice: None,
        language: Some("en-US".into()),
        tools: vec![ToolSpec {
            name: "lookup_order".into(),
            description: "Look up an order".into(),
            parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
        }],
        greeting: Some("Hello".into()),
        input_format: AudioFormat::Pcmu8k,
        output_format: AudioFormat::Pcmu8k,
        turn_detection: TurnDetection::default(),
        input_transcription: true,
        history: Vec::new(),
    }
}

#[test]
fn session_update_has_ga_shape() {
    let config = OpenAiConfig::new(Secret::new("k"));
    let u = session_update(&settings(), &config);
    let s = &u["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["audio"]["input"]["format"], json!({"type": "audio/pcmu"}));
    assert_eq!(s["audio"]["output"]["voice"], "marin");
    assert_eq!(s["audio"]["input"]["transcription"]["language"], "en");
    assert_eq!(s["audio"]["input"]["turn_detection"]["type"], "server_vad");
    assert_eq!(s["tools"][0]["type"], "function");
    assert_eq!(s["tools"][0]["parameters"]["type"], "object");
    assert!(s.get("voice").is_none(), "beta flat field must not be sent");
}

#[test]
fn a_sip_call_is_accepted_without_audio_formats() {
    let p = OpenAiProvider::new(OpenAiConfig::new(Secret::new("k")));
    let mut s = settings();
    s.voice = Some("cedar".into());
    let body = p.call_session(&s);
    assert_eq!(body["type"], "realtime");
    assert_eq!(body["model"], "gpt-realtime");
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["audio"]["output"]["voice"], "cedar");
    assert!(body["audio"]["input"].get("format").is_none(), "{body}");
    assert!(body["audio"]["output"].get("format").is_none(), "{body}");
    assert_eq!(body["audio"]["input"]["transcription"]["language"], "en");
    assert_eq!(body["tools"][0]["name"], "lookup_order");
    // The socket's session.update names no model: the URL does.
    assert!(
        session_update(&s, &p.config)["session"]
            .get("model")
            .is_none()
    );
}

#[test]
fn attach_url_names_the_call() {
    let p = OpenAiProvider::new(OpenAiConfig::new(Secret::new("k")));
    assert_eq!(
        p.url_with("call_id", "rtc_123").unwrap(),
        "wss://api.openai.com/v1/realtime?call_id=rtc_123"
    );
}

#[test]
fn url_sets_model_and_keeps_other_query() {
    let mut config = OpenAiConfig::new(Secret::new("k"));
    config.base_url =
        "wss://x.openai.azure.com/openai/realtime?api-version=2025-08-28&model=old".into();
    let p = OpenAiProvider::new(config);
    assert_eq!(
        p.url("gpt-realtime").unwrap(),
        "wss://x.openai.azure.com/openai/realtime?api-version=2025-08-28&model=gpt-realtime"
    );
    let p = OpenAiProvider::new(OpenAiConfig::new(Secret::new("k")));
    assert_eq!(
        p.url("m").unwrap(),
        "wss://api.openai.com/v1/realtime?model=m"
    );
}

#[test]
fn server_events_parse_including_beta_aliases() {
    let e: ServerEvent = serde_json::from_str(
        r#"{"type":"response.audio.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}"#,
    )
    .unwrap();
    assert!(matches!(e, ServerEvent::AudioDelta { .. }));
    let e: ServerEvent =
        serde_json::from_str(r#"{"type":"rate_limits.updated","rate_limits":[]}"#).unwrap();
    assert!(matches!(e, ServerEvent::Other));
    let e: ServerEvent = serde_json::from_str(
        r#"{"type":"response.done","event_id":"e","response":{"id":"r","status":"completed","usage":{"total_tokens":412,"input_tokens":301,"output_tokens":111,"input_token_details":{"text_tokens":301,"audio_tokens":0},"output_token_details":{"text_tokens":21,"audio_tokens":90}}}}"#,
    )
    .unwrap();
    let ServerEvent::ResponseDone { response } = e else {
        panic!()
    };
    let usage: Usage = response.usage.unwrap().into();
    assert_eq!(usage.output_audio_tokens, Some(90));
    assert_eq!(usage.input_tokens, 301);
    // SIP calls: the output buffer played out, or was cut.
    for kind in ["output_audio_buffer.stopped", "output_audio_buffer.cleared"] {
        let e: ServerEvent = serde_json::from_str(&format!(
            r#"{{"type":"{kind}","event_id":"e","response_id":"r"}}"#
        ))
        .unwrap();
        assert!(matches!(e, ServerEvent::AudioBufferStopped), "{kind}");
    }
}

#[test]
fn usage_items_keep_the_audio_text_and_cached_split() {
    let e: ServerEvent = serde_json::from_str(
        r#"{"type":"response.done","response":{"status":"completed","usage":{"total_tokens":1412,"input_tokens":1301,"output_tokens":111,"input_token_details":{"text_tokens":301,"audio_tokens":1000,"image_tokens":0,"cached_tokens":1088,"cached_tokens_details":{"text_tokens":256,"audio_tokens":832,"image_tokens":0}},"output_token_details":{"text_tokens":21,"audio_tokens":90}}}}"#,
    )
    .unwrap();
    let ServerEvent::ResponseDone { response } = e else {
        panic!()
    };
    let usage: Usage = response.usage.unwrap().into();
    let got: Vec<(String, String, String, String, f64)> = usage
        .items()
        .into_iter()
        .map(|i| (i.provider, i.stage, i.kind, i.unit, i.amount))
        .collect();
    let want = [
        ("input", 1301.0),
        ("input-text", 301.0),
        ("input-audio", 1000.0),
        ("input-cached", 1088.0),
        ("input-cached-text", 256.0),
        ("input-cached-audio", 832.0),
        ("output", 111.0),
        ("output-text", 21.0),
        ("output-audio", 90.0),
    ]
    .map(|(kind, n)| {
        let s = |s: &str| s.to_string();
        (s("openai"), s("speech-to-speech"), s(kind), s("tokens"), n)
    });
    assert_eq!(got, want);

    // Without details only the totals are known: nothing is made up.
    let bare: WireUsage = serde_json::from_str(r#"{"input_tokens":5,"output_tokens":0}"#).unwrap();
    let kinds: Vec<String> = Usage::from(bare)
        .items()
        .into_iter()
        .map(|i| i.kind)
        .collect();
    assert_eq!(kinds, ["input", "output"]);
}

#[test]
fn error_kinds() {
    let w = |t: &str, c: &str| WireError {
        kind: Some(t.into()),
        code: Some(c.into()),
        message: "m".into(),
        event_id: None,
    };
    assert_eq!(
        w("invalid_request_error", "invalid_event")
            .into_error()
            .kind,
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        w("invalid_request_error", "invalid_api_key")
            .into_error()
            .kind,
        ErrorKind::Auth
    );
    assert_eq!(w("server_error", "x").into_error().kind, ErrorKind::Server);
    assert_eq!(
        w("rate_limit_exceeded", "x").into_error().kind,
        ErrorKind::RateLimited
    );
}

#[test]
fn sip_keypad_presses_are_read() {
    let event: ServerEvent = serde_json::from_value(json!({
        "type": "input_audio_buffer.dtmf_event_received", "event": "5", "received_at": 1750287078
    }))
    .unwrap();
    assert!(matches!(event, ServerEvent::Dtmf { event } if event == "5"));
}

#[test]
fn a_session_that_takes_over_gets_the_conversation_as_message_items() {
    let items = history_items(&[
        (Role::Caller, "Where is my order?".into()),
        (Role::Agent, "Let me check.".into()),
    ]);
    assert_eq!(
        items,
        vec![
            json!({"type": "conversation.item.create", "item": {"type": "message",
                "role": "user", "content": [{"type": "input_text", "text": "Where is my order?"}]}}),
            json!({"type": "conversation.item.create", "item": {"type": "message",
                "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]}}),
        ]
    );
}
