//! Unit tests of the wire format: the setup message and server messages, usage included.

use super::wire::*;
use super::*;
use serde_json::json;

use crate::model::{Secret, ToolSpec, TurnDetection, Usage};

#[test]
fn setup_message_shape() {
    let settings = SessionSettings {
        model: Some("gemini-live-x".into()),
        instructions: "Be brief.".into(),
        voice: Some("Puck".into()),
        language: Some("en-US".into()),
        tools: vec![ToolSpec {
            name: "lookup".into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
        }],
        greeting: None,
        input_format: INPUT,
        output_format: OUTPUT,
        turn_detection: TurnDetection::default(),
        input_transcription: true,
        history: Vec::new(),
    };
    let m = setup_message(&settings, &GeminiConfig::new(Secret::new("k")));
    let s = &m["setup"];
    assert_eq!(s["model"], "models/gemini-live-x");
    assert_eq!(
        s["generationConfig"]["responseModalities"],
        json!(["AUDIO"])
    );
    assert_eq!(
        s["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"],
        "Puck"
    );
    assert_eq!(s["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(s["tools"][0]["functionDeclarations"][0]["name"], "lookup");
    assert_eq!(s["inputAudioTranscription"], json!({}));
    assert_eq!(
        s["realtimeInputConfig"]["automaticActivityDetection"]["silenceDurationMs"],
        500
    );
}

#[test]
fn helpers() {
    assert_eq!(duration_ms("30s"), Some(30_000));
    assert_eq!(duration_ms("1.5s"), Some(1_500));
    assert_eq!(duration_ms("soon"), None);
    assert_eq!(mime_rate("audio/pcm;rate=24000"), 24_000);
    assert_eq!(mime_rate("audio/pcm; rate=16000"), 16_000);
    assert_eq!(mime_rate("audio/pcm"), 24_000);
}

#[test]
fn usage_by_modality() {
    let m: ServerMessage = serde_json::from_str(
        r#"{"usageMetadata":{"promptTokenCount":380,"responseTokenCount":96,"totalTokenCount":476,"promptTokensDetails":[{"modality":"TEXT","tokenCount":380}],"responseTokensDetails":[{"modality":"AUDIO","tokenCount":96}]}}"#,
    )
    .unwrap();
    let u: Usage = m.usage_metadata.unwrap().into();
    assert_eq!(u.input_tokens, 380);
    assert_eq!(u.input_text_tokens, Some(380));
    assert_eq!(u.input_audio_tokens, None);
    assert_eq!(u.output_audio_tokens, Some(96));
}

#[test]
fn usage_items_keep_every_modality_and_the_cache() {
    let m: ServerMessage = serde_json::from_str(
        r#"{"usageMetadata":{"promptTokenCount":500,"cachedContentTokenCount":200,"responseTokenCount":96,"thoughtsTokenCount":12,"totalTokenCount":608,"promptTokensDetails":[{"modality":"TEXT","tokenCount":380},{"modality":"AUDIO","tokenCount":120}],"cacheTokensDetails":[{"modality":"TEXT","tokenCount":200}],"responseTokensDetails":[{"modality":"AUDIO","tokenCount":96}]}}"#,
    )
    .unwrap();
    let u: Usage = m.usage_metadata.unwrap().into();
    let got: Vec<(String, String, String, String, f64)> = u
        .items()
        .into_iter()
        .map(|i| (i.provider, i.stage, i.kind, i.unit, i.amount))
        .collect();
    let want = [
        ("input", 500.0),
        ("input-text", 380.0),
        ("input-audio", 120.0),
        ("input-cached", 200.0),
        ("input-cached-text", 200.0),
        ("output", 96.0),
        ("output-audio", 96.0),
        ("thoughts", 12.0),
    ]
    .map(|(kind, n)| {
        let s = |s: &str| s.to_string();
        (s("gemini"), s("speech-to-speech"), s(kind), s("tokens"), n)
    });
    assert_eq!(got, want);
}
