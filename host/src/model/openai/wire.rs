//! The wire format: the client events this host sends (session configuration, verbatim
//! speech) and the serde types of the server events it reads, usage included.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::config::OpenAiConfig;
use crate::model::{
    AudioFormat, Eagerness, ErrorKind, ProviderError, Role, SessionSettings, SessionUpdate,
    ToolSpec, TurnDetection, Usage, say_exactly_prompt,
};

use super::NAME;

fn format_json(format: AudioFormat) -> Value {
    match format {
        AudioFormat::Pcmu8k => json!({"type": "audio/pcmu"}),
        AudioFormat::Pcma8k => json!({"type": "audio/pcma"}),
        AudioFormat::Pcm16 { rate } => json!({"type": "audio/pcm", "rate": rate}),
    }
}

fn turn_detection_json(td: TurnDetection) -> Value {
    match td {
        TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
        } => json!({
            "type": "server_vad",
            "threshold": threshold,
            "prefix_padding_ms": prefix_padding_ms,
            "silence_duration_ms": silence_duration_ms,
            "create_response": true,
            "interrupt_response": true,
        }),
        TurnDetection::SemanticVad { eagerness } => json!({
            "type": "semantic_vad",
            "eagerness": match eagerness {
                Eagerness::Low => "low",
                Eagerness::Medium => "medium",
                Eagerness::High => "high",
                Eagerness::Auto => "auto",
            },
            "create_response": true,
            "interrupt_response": true,
        }),
    }
}

/// The `session.update` that applies `settings` (GA shape: `type` required, nested `audio`).
pub(super) fn session_update(settings: &SessionSettings, config: &OpenAiConfig) -> Value {
    json!({
        "type": "session.update",
        "event_id": "sb_setup",
        "session": session(settings, config),
    })
}

/// The `session.update` a running session takes for a new agent: instructions and tools only
/// (voice and model stay; see `OpenAiProvider::updates_live`).
pub(super) fn session_update_live(update: &SessionUpdate) -> Value {
    json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": update.instructions,
            "tools": tools_json(&update.tools),
            "tool_choice": "auto",
        },
    })
}

/// The session configuration that accepts a SIP call (`POST /realtime/calls/{id}/accept`): as
/// for a socket, with the model (a socket names it in its URL) and without the audio formats,
/// which SIP negotiates.
pub(super) fn call_session(settings: &SessionSettings, config: &OpenAiConfig) -> Value {
    let mut session = session(settings, config);
    session["model"] = json!(settings.model.as_deref().unwrap_or(&config.model));
    for direction in ["input", "output"] {
        if let Some(audio) = session["audio"][direction].as_object_mut() {
            audio.remove("format");
        }
    }
    session
}

/// The realtime session object for `settings`.
fn session(settings: &SessionSettings, config: &OpenAiConfig) -> Value {
    let transcription = if settings.input_transcription {
        let mut t = json!({"model": config.transcription_model});
        if let Some(lang) = &settings.language {
            // The transcriber wants ISO-639-1 (`en`), not a BCP-47 tag (`en-US`).
            let primary = lang.split(['-', '_']).next().unwrap_or(lang);
            t["language"] = json!(primary.to_ascii_lowercase());
        }
        t
    } else {
        Value::Null
    };
    let tools = tools_json(&settings.tools);
    json!({
        "type": "realtime",
        "instructions": settings.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": format_json(settings.input_format),
                "transcription": transcription,
                "turn_detection": turn_detection_json(settings.turn_detection),
            },
            "output": {
                "format": format_json(settings.output_format),
                "voice": settings.voice.as_deref().unwrap_or(&config.voice),
            },
        },
        "tools": tools,
        "tool_choice": "auto",
    })
}

fn tools_json(tools: &[ToolSpec]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                   "parameters": t.parameters})
        })
        .collect()
}

/// The conversation so far as `conversation.item.create` events, oldest first: the caller's
/// turns as `input_text`, the agent's as `output_text` (the GA message content types; see
/// `RealtimeResponseInputMessageAssistantContent` in Azure's realtime reference,
/// https://learn.microsoft.com/javascript/api/@azure/ai-projects/realtimeresponseinputmessageassistantcontent).
pub(super) fn history_items(history: &[(Role, String)]) -> Vec<Value> {
    history
        .iter()
        .map(|(role, text)| {
            let (role, kind) = match role {
                Role::Caller => ("user", "input_text"),
                Role::Agent => ("assistant", "output_text"),
            };
            json!({"type": "conversation.item.create", "item": {"type": "message",
                "role": role, "content": [{"type": kind, "text": text}]}})
        })
        .collect()
}

/// `response.create` body that speaks `text` verbatim, with tools off so it cannot wander.
pub(super) fn say_response(text: &str) -> Value {
    json!({"instructions": say_exactly_prompt(text), "tool_choice": "none"})
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireError {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) code: Option<String>,
    pub(super) message: String,
    /// The client event this error answers, when there is one.
    pub(super) event_id: Option<String>,
}

impl WireError {
    pub(super) fn into_error(self) -> ProviderError {
        let kind = match (self.kind.as_deref(), self.code.as_deref()) {
            (_, Some(c)) if c.contains("rate_limit") || c.contains("quota") => {
                ErrorKind::RateLimited
            }
            (_, Some(c)) if c.contains("api_key") || c.contains("auth") => ErrorKind::Auth,
            (Some(t), _) if t.contains("auth") || t.contains("permission") => ErrorKind::Auth,
            (Some("server_error"), _) => ErrorKind::Server,
            (Some(t), _) if t.contains("rate_limit") => ErrorKind::RateLimited,
            _ => ErrorKind::InvalidRequest,
        };
        ProviderError::new(kind, self.code, self.message)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireTokenDetails {
    text_tokens: Option<u64>,
    audio_tokens: Option<u64>,
}

/// Image tokens are not read: calls send the model no images.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireInputTokenDetails {
    text_tokens: Option<u64>,
    audio_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cached_tokens_details: Option<WireTokenDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    input_token_details: Option<WireInputTokenDetails>,
    output_token_details: Option<WireTokenDetails>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let input = u.input_token_details.unwrap_or_default();
        let output = u.output_token_details.unwrap_or_default();
        let cached = input.cached_tokens_details.unwrap_or_default();
        Usage {
            provider: NAME,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            input_audio_tokens: input.audio_tokens,
            input_text_tokens: input.text_tokens,
            output_audio_tokens: output.audio_tokens,
            output_text_tokens: output.text_tokens,
            input_cached_tokens: input.cached_tokens,
            input_cached_audio_tokens: cached.audio_tokens,
            input_cached_text_tokens: cached.text_tokens,
            thoughts_tokens: None,
            tool_use_prompt_tokens: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct WireResponse {
    pub(super) status: String,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
}

/// The server events this client acts on; beta names are accepted as aliases (Azure).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
pub(super) enum ServerEvent {
    #[serde(rename = "response.created")]
    ResponseCreated,
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    AudioDelta { item_id: String, delta: String },
    #[serde(
        rename = "response.output_audio_transcript.delta",
        alias = "response.audio_transcript.delta",
        alias = "response.output_text.delta",
        alias = "response.text.delta"
    )]
    AgentTranscriptDelta { item_id: String, delta: String },
    #[serde(
        rename = "response.output_audio_transcript.done",
        alias = "response.audio_transcript.done"
    )]
    AgentTranscriptDone { item_id: String, transcript: String },
    #[serde(rename = "response.output_text.done", alias = "response.text.done")]
    AgentTextDone { item_id: String, text: String },
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    CallerTranscriptDelta {
        item_id: String,
        #[serde(default)]
        delta: String,
    },
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    CallerTranscriptDone { item_id: String, transcript: String },
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    CallerTranscriptFailed { error: WireError },
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted { audio_start_ms: Option<u64> },
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped { audio_end_ms: Option<u64> },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.done")]
    ResponseDone { response: WireResponse },
    /// SIP and WebRTC calls only: the provider started playing agent audio.
    #[serde(rename = "output_audio_buffer.started")]
    AudioBufferStarted,
    /// SIP and WebRTC calls only: the provider's output buffer drained after `response.done`
    /// (`stopped`) or was cut by the caller's speech or a client `clear` (`cleared`).
    #[serde(
        rename = "output_audio_buffer.stopped",
        alias = "output_audio_buffer.cleared"
    )]
    AudioBufferStopped,
    /// SIP calls only: a keypad press (`0`–`9`, `*`, `#`, `A`–`D`).
    #[serde(rename = "input_audio_buffer.dtmf_event_received")]
    Dtmf { event: String },
    #[serde(rename = "error")]
    Error { error: WireError },
    #[serde(other)]
    Other,
}
