//! The wire format: the setup message this host sends and the serde types of the server
//! messages it reads, usage included.

use serde::Deserialize;
use serde_json::{Value, json};

use super::NAME;
use crate::model::config::GeminiConfig;
use crate::model::{SessionSettings, TurnDetection, Usage};

/// The first client message: everything about the session (it cannot change later).
pub(super) fn setup_message(settings: &SessionSettings, config: &GeminiConfig) -> Value {
    let model = settings.model.as_deref().unwrap_or(&config.model);
    let model = if model.starts_with("models/") {
        model.to_string()
    } else {
        format!("models/{model}")
    };
    let mut speech = json!({"voiceConfig": {"prebuiltVoiceConfig": {
        "voiceName": settings.voice.as_deref().unwrap_or(&config.voice)}}});
    if let Some(lang) = &settings.language {
        speech["languageCode"] = json!(lang);
    }
    let mut setup = json!({
        "model": model,
        "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
        "systemInstruction": {"parts": [{"text": settings.instructions}]},
        "outputAudioTranscription": {},
    });
    if !settings.tools.is_empty() {
        let declarations: Vec<Value> = settings
            .tools
            .iter()
            .map(|t| {
                // Our tool parameters are full JSON Schema, which Gemini takes in this field.
                json!({"name": t.name, "description": t.description,
                       "parametersJsonSchema": t.parameters})
            })
            .collect();
        setup["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    if let TurnDetection::ServerVad {
        prefix_padding_ms,
        silence_duration_ms,
        ..
    } = settings.turn_detection
    {
        setup["realtimeInputConfig"] = json!({"automaticActivityDetection": {
            "disabled": false,
            "prefixPaddingMs": prefix_padding_ms,
            "silenceDurationMs": silence_duration_ms,
        }});
    }
    if settings.input_transcription {
        setup["inputAudioTranscription"] = json!({});
    }
    json!({ "setup": setup })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ServerMessage {
    pub(super) setup_complete: Option<Value>,
    pub(super) server_content: Option<ServerContent>,
    pub(super) tool_call: Option<ToolCall>,
    pub(super) tool_call_cancellation: Option<ToolCallCancellation>,
    pub(super) usage_metadata: Option<UsageMetadata>,
    pub(super) go_away: Option<GoAway>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ServerContent {
    pub(super) model_turn: Option<Content>,
    pub(super) turn_complete: bool,
    pub(super) interrupted: bool,
    pub(super) input_transcription: Option<Transcription>,
    pub(super) output_transcription: Option<Transcription>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Content {
    pub(super) parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Part {
    pub(super) inline_data: Option<Blob>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Blob {
    pub(super) mime_type: String,
    pub(super) data: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Transcription {
    pub(super) text: String,
    pub(super) finished: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ToolCall {
    pub(super) function_calls: Vec<FunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct FunctionCall {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) args: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ToolCallCancellation {
    pub(super) ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct ModalityCount {
    pub(super) modality: String,
    pub(super) token_count: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct UsageMetadata {
    pub(super) prompt_token_count: u64,
    pub(super) response_token_count: u64,
    pub(super) prompt_tokens_details: Vec<ModalityCount>,
    pub(super) response_tokens_details: Vec<ModalityCount>,
    pub(super) cached_content_token_count: Option<u64>,
    pub(super) cache_tokens_details: Vec<ModalityCount>,
    pub(super) thoughts_token_count: Option<u64>,
    pub(super) tool_use_prompt_token_count: Option<u64>,
}

impl From<UsageMetadata> for Usage {
    fn from(u: UsageMetadata) -> Self {
        let sum = |details: &[ModalityCount], modality: &str| {
            let matching = details
                .iter()
                .filter(|d| d.modality.eq_ignore_ascii_case(modality));
            let mut any = false;
            let total = matching.map(|d| {
                any = true;
                d.token_count
            });
            let total: u64 = total.sum();
            any.then_some(total)
        };
        Usage {
            provider: NAME,
            input_tokens: u.prompt_token_count,
            output_tokens: u.response_token_count,
            input_audio_tokens: sum(&u.prompt_tokens_details, "AUDIO"),
            input_text_tokens: sum(&u.prompt_tokens_details, "TEXT"),
            output_audio_tokens: sum(&u.response_tokens_details, "AUDIO"),
            output_text_tokens: sum(&u.response_tokens_details, "TEXT"),
            input_cached_tokens: u.cached_content_token_count,
            input_cached_audio_tokens: sum(&u.cache_tokens_details, "AUDIO"),
            input_cached_text_tokens: sum(&u.cache_tokens_details, "TEXT"),
            thoughts_tokens: u.thoughts_token_count,
            tool_use_prompt_tokens: u.tool_use_prompt_token_count,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct GoAway {
    pub(super) time_left: Option<String>,
}

/// Parse a proto-JSON Duration (`"30s"`, `"1.5s"`) into milliseconds.
pub(super) fn duration_ms(text: &str) -> Option<u64> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// Sample rate from a mime type like `audio/pcm;rate=24000` (24 kHz when not stated).
pub(super) fn mime_rate(mime: &str) -> u32 {
    mime.split(';')
        .filter_map(|p| p.trim().strip_prefix("rate="))
        .find_map(|r| r.parse().ok())
        .unwrap_or(24_000)
}
