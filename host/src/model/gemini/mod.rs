//! Gemini Live (Developer API) over a WebSocket.
//!
//! Input is 16 kHz PCM16, output 24 kHz PCM16. The server sends JSON in binary frames and
//! reports errors as WebSocket close codes. Gemini has no item ids and no truncate message:
//! turns get local ids (`gemini_turn_N`), barge-in arrives as `serverContent.interrupted`
//! (reported as [`ModelEvent::SpeechStarted`]) and the server decides what the caller heard.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::config::GeminiConfig;
use super::ws::{self, Socket};
use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, Command, ConnectError, ErrorKind, FormatSupport,
    ModelEvent, ModelProvider, ModelSession, ProviderError, ResponseStatus, Role, SessionSettings,
    TurnDetection, Usage, check_formats, say_exactly_prompt,
};

const NAME: &str = "gemini";
const INPUT: AudioFormat = AudioFormat::Pcm16 { rate: 16_000 };
const OUTPUT: AudioFormat = AudioFormat::Pcm16 { rate: 24_000 };

/// Gemini Live provider.
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    config: GeminiConfig,
}

impl GeminiProvider {
    pub fn new(config: GeminiConfig) -> Self {
        Self { config }
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let deadline = Instant::now() + timeout;
        let headers = [("x-goog-api-key", self.config.api_key.expose())];
        let mut socket = ws::connect(
            NAME,
            &self.config.base_url,
            &headers,
            self.config.ca_file.as_deref(),
            timeout,
        )
        .await?;
        let setup = setup_message(&settings, &self.config);
        socket
            .send(Message::text(setup.to_string()))
            .await
            .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        tokio::time::timeout_at(deadline, wait_for_setup_complete(&mut socket))
            .await
            .map_err(|_| ConnectError::Timeout {
                provider: NAME,
                timeout_ms: self.config.connect_timeout_ms,
            })??;

        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut actor = Actor {
            socket,
            events: ev_tx,
            response_timeout: Duration::from_millis(self.config.response_timeout_ms),
            awaiting_response: None,
            turn: 0,
            turn_open: false,
            agent_text: String::new(),
            input_turn: 0,
            caller_text: String::new(),
            calls: HashMap::new(),
        };
        if let Some(greeting) = &settings.greeting {
            actor
                .say(greeting)
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        tracing::debug!(model = %setup["setup"]["model"], "gemini live session open");
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(actor.run(cmd_rx).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: INPUT,
            output_format: OUTPUT,
            loopback: false,
        })
    }
}

impl ModelProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> FormatSupport {
        FormatSupport {
            input: vec![INPUT],
            output: vec![OUTPUT],
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

/// The first client message: everything about the session (it cannot change later).
fn setup_message(settings: &SessionSettings, config: &GeminiConfig) -> Value {
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

/// Read until `setupComplete`; a close frame during setup carries the refusal.
async fn wait_for_setup_complete(socket: &mut Socket) -> Result<(), ConnectError> {
    loop {
        let bytes = match socket.next().await {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Close(frame))) => {
                return Err(match ws::close_reason(frame.as_ref()) {
                    CloseReason::Error(error) => ConnectError::Rejected {
                        provider: NAME,
                        error,
                    },
                    _ => ConnectError::ClosedDuringSetup { provider: NAME },
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(ConnectError::ClosedDuringSetup { provider: NAME }),
        };
        let message: ServerMessage = serde_json::from_slice(&bytes).unwrap_or_default();
        if message.setup_complete.is_some() {
            return Ok(());
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ServerMessage {
    setup_complete: Option<Value>,
    server_content: Option<ServerContent>,
    tool_call: Option<ToolCall>,
    tool_call_cancellation: Option<ToolCallCancellation>,
    usage_metadata: Option<UsageMetadata>,
    go_away: Option<GoAway>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ServerContent {
    model_turn: Option<Content>,
    turn_complete: bool,
    interrupted: bool,
    input_transcription: Option<Transcription>,
    output_transcription: Option<Transcription>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Content {
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Part {
    inline_data: Option<Blob>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Transcription {
    text: String,
    finished: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ToolCall {
    function_calls: Vec<FunctionCall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FunctionCall {
    id: String,
    name: String,
    args: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCallCancellation {
    ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ModalityCount {
    modality: String,
    token_count: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct UsageMetadata {
    prompt_token_count: u64,
    response_token_count: u64,
    prompt_tokens_details: Vec<ModalityCount>,
    response_tokens_details: Vec<ModalityCount>,
    cached_content_token_count: Option<u64>,
    cache_tokens_details: Vec<ModalityCount>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
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
struct GoAway {
    time_left: Option<String>,
}

/// Parse a proto-JSON Duration (`"30s"`, `"1.5s"`) into milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let seconds: f64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// Sample rate from a mime type like `audio/pcm;rate=24000` (24 kHz when not stated).
fn mime_rate(mime: &str) -> u32 {
    mime.split(';')
        .filter_map(|p| p.trim().strip_prefix("rate="))
        .find_map(|r| r.parse().ok())
        .unwrap_or(24_000)
}

struct Actor {
    socket: Socket,
    events: mpsc::Sender<ModelEvent>,
    response_timeout: Duration,
    awaiting_response: Option<Instant>,
    turn: u64,
    turn_open: bool,
    /// Agent transcript of the open turn so far.
    agent_text: String,
    input_turn: u64,
    /// Caller transcript since the last final one.
    caller_text: String,
    /// Tool calls awaiting a result: call id → function name (the response must name it).
    calls: HashMap<String, String>,
}

enum Stop {
    Closed(CloseReason),
    Abandoned,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let stop = loop {
            let deadline = self.awaiting_response;
            let step = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => Err(Stop::Abandoned),
                },
                msg = self.socket.next() => self.on_socket(msg).await,
                () = sleep_until_opt(deadline) => {
                    self.awaiting_response = None;
                    let error = ProviderError::new(ErrorKind::Timeout, None, format!(
                        "no response started within {} ms", self.response_timeout.as_millis()));
                    self.emit(ModelEvent::Error(error)).await
                }
            };
            if let Err(stop) = step {
                break stop;
            }
        };
        match stop {
            Stop::Closed(reason) => {
                if reason != CloseReason::Dropped {
                    let _ = self.socket.close(None).await;
                }
                tracing::debug!(?reason, "gemini live session closed");
                let _ = self.events.send(ModelEvent::Closed(reason)).await;
            }
            Stop::Abandoned => {
                let _ = self.socket.close(None).await;
            }
        }
    }

    async fn emit(&mut self, event: ModelEvent) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop::Abandoned)
    }

    async fn send_raw(&mut self, text: String) -> Result<(), Stop> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| Stop::Closed(ws::read_error_reason(&e)))
    }

    async fn say(&mut self, text: &str) -> Result<(), Stop> {
        self.awaiting_response = Some(Instant::now() + self.response_timeout);
        let msg = json!({"clientContent": {
            "turns": [{"role": "user", "parts": [{"text": say_exactly_prompt(text)}]}],
            "turnComplete": true}});
        self.send_raw(msg.to_string()).await
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), Stop> {
        match cmd {
            Command::Audio(frame) => {
                let text = format!(
                    "{{\"realtimeInput\":{{\"audio\":{{\"mimeType\":\"audio/pcm;rate=16000\",\"data\":\"{}\"}}}}}}",
                    B64.encode(&frame)
                );
                self.send_raw(text).await
            }
            Command::Say(text) => self.say(&text).await,
            Command::ToolResult { call_id, output } => {
                let Some(name) = self.calls.remove(&call_id) else {
                    let error = ProviderError::new(
                        ErrorKind::InvalidRequest,
                        None,
                        format!("no pending tool call with id {call_id:?}"),
                    );
                    return self.emit(ModelEvent::Error(error)).await;
                };
                // The response must be an object; a non-JSON output travels as a string.
                let result =
                    serde_json::from_str::<Value>(&output).unwrap_or(Value::String(output));
                let msg = json!({"toolResponse": {"functionResponses": [
                    {"id": call_id, "name": name, "response": {"result": result}}]}});
                self.awaiting_response = Some(Instant::now() + self.response_timeout);
                self.send_raw(msg.to_string()).await
            }
            // Gemini keeps or drops unheard audio itself and has no cancel message: nothing
            // to send.
            Command::Truncate { .. } | Command::CancelResponse => Ok(()),
            Command::UpdateInstructions(_) => {
                let error = ProviderError::new(
                    ErrorKind::Unsupported,
                    None,
                    "Gemini Live fixes instructions at setup; they cannot change mid-session",
                );
                self.emit(ModelEvent::Error(error)).await
            }
            Command::Close => Err(Stop::Closed(CloseReason::Normal)),
        }
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let message: Result<ServerMessage, _> = match msg {
            None => return Err(Stop::Closed(CloseReason::Dropped)),
            Some(Err(e)) => return Err(Stop::Closed(ws::read_error_reason(&e))),
            Some(Ok(Message::Binary(b))) => serde_json::from_slice(&b),
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t),
            Some(Ok(Message::Close(frame))) => {
                return Err(Stop::Closed(ws::close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => return Ok(()),
        };
        match message {
            Ok(m) => self.on_message(m).await,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable gemini live message");
                let error = ProviderError::new(ErrorKind::Protocol, None, e.to_string());
                self.emit(ModelEvent::Error(error)).await
            }
        }
    }

    fn turn_id(&self) -> String {
        format!("gemini_turn_{}", self.turn)
    }

    /// The model started (or continued) speaking: open a turn if none is open.
    async fn model_active(&mut self) -> Result<(), Stop> {
        self.awaiting_response = None;
        if !self.turn_open {
            self.flush_caller().await?;
            self.turn += 1;
            self.turn_open = true;
        }
        Ok(())
    }

    async fn flush_caller(&mut self) -> Result<(), Stop> {
        if self.caller_text.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.caller_text);
        let item_id = format!("gemini_input_{}", self.input_turn);
        self.input_turn += 1;
        self.emit(ModelEvent::Transcript {
            role: Role::Caller,
            item_id,
            text,
            is_final: true,
        })
        .await
    }

    async fn end_turn(&mut self, status: ResponseStatus) -> Result<(), Stop> {
        if !self.turn_open {
            return Ok(());
        }
        self.turn_open = false;
        let text = std::mem::take(&mut self.agent_text);
        if !text.is_empty() {
            let item_id = self.turn_id();
            self.emit(ModelEvent::Transcript {
                role: Role::Agent,
                item_id,
                text,
                is_final: true,
            })
            .await?;
        }
        self.emit(ModelEvent::ResponseDone { status }).await
    }

    async fn on_message(&mut self, m: ServerMessage) -> Result<(), Stop> {
        // Usage rides on the turnComplete message; report it before the turn's ResponseDone.
        if let Some(usage) = m.usage_metadata {
            self.emit(ModelEvent::Usage(usage.into())).await?;
        }
        if let Some(content) = m.server_content {
            if let Some(t) = content.input_transcription {
                let item_id = format!("gemini_input_{}", self.input_turn);
                self.caller_text.push_str(&t.text);
                if !t.text.is_empty() {
                    self.emit(ModelEvent::Transcript {
                        role: Role::Caller,
                        item_id,
                        text: t.text,
                        is_final: false,
                    })
                    .await?;
                }
                if t.finished {
                    self.flush_caller().await?;
                }
            }
            if let Some(turn) = content.model_turn {
                for part in turn.parts {
                    let Some(blob) = part.inline_data else {
                        continue; // text and thought parts are not spoken
                    };
                    if !blob.mime_type.starts_with("audio/pcm") {
                        continue;
                    }
                    self.model_active().await?;
                    let data = match B64.decode(blob.data.as_bytes()) {
                        Ok(d) => d,
                        Err(e) => {
                            let msg = format!("audio part is not base64: {e}");
                            let error = ProviderError::new(ErrorKind::Protocol, None, msg);
                            self.emit(ModelEvent::Error(error)).await?;
                            continue;
                        }
                    };
                    let format = AudioFormat::Pcm16 {
                        rate: mime_rate(&blob.mime_type),
                    };
                    let item_id = self.turn_id();
                    self.emit(ModelEvent::Audio {
                        item_id,
                        data,
                        format,
                    })
                    .await?;
                }
            }
            if let Some(t) = content.output_transcription
                && !t.text.is_empty()
            {
                self.model_active().await?;
                self.agent_text.push_str(&t.text);
                let item_id = self.turn_id();
                self.emit(ModelEvent::Transcript {
                    role: Role::Agent,
                    item_id,
                    text: t.text,
                    is_final: false,
                })
                .await?;
            }
            if content.interrupted {
                // The caller spoke over the model: playback must stop even when the turn had
                // already finished generating.
                self.emit(ModelEvent::SpeechStarted {
                    audio_start_ms: None,
                })
                .await?;
                self.end_turn(ResponseStatus::Cancelled).await?;
            }
            if content.turn_complete {
                self.awaiting_response = None;
                self.end_turn(ResponseStatus::Completed).await?;
            }
        }
        if let Some(call) = m.tool_call {
            self.awaiting_response = None;
            // The caller's turn is over once the model acts on it.
            self.flush_caller().await?;
            for f in call.function_calls {
                self.calls.insert(f.id.clone(), f.name.clone());
                let arguments = if f.args.is_null() {
                    "{}".to_string()
                } else {
                    f.args.to_string()
                };
                self.emit(ModelEvent::ToolCall {
                    call_id: f.id,
                    name: f.name,
                    arguments,
                })
                .await?;
            }
        }
        if let Some(cancel) = m.tool_call_cancellation {
            for id in cancel.ids {
                tracing::debug!(call_id = %id, "gemini cancelled a tool call");
                self.calls.remove(&id);
            }
        }
        if let Some(go_away) = m.go_away {
            let time_left_ms = go_away.time_left.as_deref().and_then(duration_ms);
            self.emit(ModelEvent::GoingAway { time_left_ms }).await?;
        }
        Ok(())
    }
}

/// Sleep until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Secret, ToolSpec};

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
}
