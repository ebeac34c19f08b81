//! OpenAI Realtime (GA protocol) over a WebSocket; also Azure OpenAI and compatible endpoints.
//!
//! G.711 audio passes straight through (`audio/pcmu`, `audio/pcma`); linear audio is 24 kHz
//! PCM16. The session actor owns the socket: commands become client events, server events
//! become [`ModelEvent`]s.

use std::collections::{HashSet, VecDeque};
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

use super::config::{OpenAiAuth, OpenAiConfig};
use super::ws::{self, Socket};
use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, Command, ConnectError, Eagerness, ErrorKind,
    FormatSupport, ModelEvent, ModelProvider, ModelSession, ProviderError, ResponseStatus, Role,
    SessionSettings, TurnDetection, Usage, check_formats, say_exactly_prompt,
};

const NAME: &str = "openai";

/// How many recent agent items keep their generated-audio length (for truncate clamping).
const TRACKED_ITEMS: usize = 32;

/// OpenAI Realtime provider.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Self {
        Self { config }
    }

    /// Endpoint URL with the `model` query parameter set (other query parameters kept).
    fn url(&self, model: &str) -> Result<String, ConnectError> {
        let mut url =
            url::Url::parse(&self.config.base_url).map_err(|e| ConnectError::InvalidUrl {
                url: self.config.base_url.clone(),
                reason: e.to_string(),
            })?;
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "model")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("model", model);
        Ok(url.into())
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let model = settings.model.as_deref().unwrap_or(&self.config.model);
        let url = self.url(model)?;
        let key = self.config.api_key.expose();
        let bearer;
        let header = match self.config.auth {
            OpenAiAuth::Bearer => {
                bearer = format!("Bearer {key}");
                ("authorization", bearer.as_str())
            }
            OpenAiAuth::ApiKeyHeader => ("api-key", key),
        };
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut socket = ws::connect(
            NAME,
            &url,
            &[header],
            self.config.ca_file.as_deref(),
            timeout,
        )
        .await?;
        let timed_out = || ConnectError::Timeout {
            provider: NAME,
            timeout_ms: self.config.connect_timeout_ms,
        };

        // The server speaks first with session.created; only then is configuration accepted.
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.created"))
            .await
            .map_err(|_| timed_out())??;
        let update = session_update(&settings, &self.config);
        send_json(&mut socket, &update)
            .await
            .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.updated"))
            .await
            .map_err(|_| timed_out())??;

        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut actor = Actor {
            socket,
            events: ev_tx,
            output_format: settings.output_format,
            response_timeout: Duration::from_millis(self.config.response_timeout_ms),
            item_audio: VecDeque::new(),
            response_active: false,
            queued_responses: VecDeque::new(),
            awaiting_response: None,
            awaiting_event_id: String::new(),
            pending_calls: HashSet::new(),
            next_event_id: 0,
        };
        if let Some(greeting) = &settings.greeting {
            actor
                .request_response(say_response(greeting))
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        tracing::debug!(model, url = %url.split('?').next().unwrap_or(""), "openai realtime session open");
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(actor.run(cmd_rx).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: settings.input_format,
            output_format: settings.output_format,
            loopback: false,
        })
    }
}

impl ModelProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> FormatSupport {
        let all = vec![
            AudioFormat::Pcmu8k,
            AudioFormat::Pcma8k,
            AudioFormat::Pcm16 { rate: 24_000 },
        ];
        FormatSupport {
            input: all.clone(),
            output: all,
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

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
fn session_update(settings: &SessionSettings, config: &OpenAiConfig) -> Value {
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
    let tools: Vec<Value> = settings
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description,
                   "parameters": t.parameters})
        })
        .collect();
    json!({
        "type": "session.update",
        "event_id": "sb_setup",
        "session": {
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
        }
    })
}

/// `response.create` body that speaks `text` verbatim, with tools off so it cannot wander.
fn say_response(text: &str) -> Value {
    json!({"instructions": say_exactly_prompt(text), "tool_choice": "none"})
}

async fn send_json(socket: &mut Socket, value: &Value) -> Result<(), ()> {
    socket
        .send(Message::text(value.to_string()))
        .await
        .map_err(|e| tracing::debug!(error = %e, "openai socket write failed"))
}

/// Read until a server event of type `wanted`; an `error` event or a close ends setup.
async fn wait_for(socket: &mut Socket, wanted: &str) -> Result<(), ConnectError> {
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
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
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match value["type"].as_str() {
            Some(t) if t == wanted => return Ok(()),
            Some("error") => {
                let wire: WireError =
                    serde_json::from_value(value["error"].clone()).unwrap_or_default();
                return Err(ConnectError::Rejected {
                    provider: NAME,
                    error: wire.into_error(),
                });
            }
            _ => {}
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    message: String,
    /// The client event this error answers, when there is one.
    event_id: Option<String>,
}

impl WireError {
    fn into_error(self) -> ProviderError {
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
struct WireUsage {
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
struct WireResponse {
    status: String,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The server events this client acts on; beta names are accepted as aliases (Azure).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ServerEvent {
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
    #[serde(rename = "error")]
    Error { error: WireError },
    #[serde(other)]
    Other,
}

/// Owns the socket for one session.
struct Actor {
    socket: Socket,
    events: mpsc::Sender<ModelEvent>,
    output_format: AudioFormat,
    response_timeout: Duration,
    /// Generated audio bytes of recent agent items, oldest first.
    item_audio: VecDeque<(String, usize)>,
    response_active: bool,
    /// `response.create` bodies waiting for the active response to finish (one at a time).
    queued_responses: VecDeque<Value>,
    /// Set when a response was requested and has not started yet.
    awaiting_response: Option<Instant>,
    /// Client `event_id` of that `response.create` (errors echo it).
    awaiting_event_id: String,
    /// Tool calls of the current turn still waiting for their result.
    pending_calls: HashSet<String>,
    next_event_id: u64,
}

/// Why the actor loop stopped.
enum Stop {
    Closed(CloseReason),
    /// The session owner went away: nobody to tell.
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
                tracing::debug!(?reason, "openai realtime session closed");
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

    async fn send(&mut self, mut value: Value) -> Result<(), Stop> {
        self.next_event_id += 1;
        value["event_id"] = json!(format!("sb_{}", self.next_event_id));
        self.send_raw(value.to_string()).await
    }

    async fn send_raw(&mut self, text: String) -> Result<(), Stop> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| Stop::Closed(ws::read_error_reason(&e)))
    }

    /// Ask for a response now, or after the active one ends (only one may run at a time).
    async fn request_response(&mut self, body: Value) -> Result<(), Stop> {
        if self.response_active || self.awaiting_response.is_some() {
            self.queued_responses.push_back(body);
            return Ok(());
        }
        self.awaiting_response = Some(Instant::now() + self.response_timeout);
        self.send(json!({"type": "response.create", "response": body}))
            .await?;
        self.awaiting_event_id = format!("sb_{}", self.next_event_id);
        Ok(())
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), Stop> {
        match cmd {
            Command::Audio(frame) => {
                // Hot path: skip building a JSON tree for every 20 ms frame.
                let text = format!(
                    "{{\"type\":\"input_audio_buffer.append\",\"audio\":\"{}\"}}",
                    B64.encode(&frame)
                );
                self.send_raw(text).await
            }
            Command::Say(text) => self.request_response(say_response(&text)).await,
            Command::ToolResult { call_id, output } => {
                self.pending_calls.remove(&call_id);
                self.send(json!({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": call_id, "output": output}}))
                    .await?;
                if self.pending_calls.is_empty() {
                    self.request_response(json!({})).await?;
                }
                Ok(())
            }
            Command::Truncate {
                item_id,
                audio_end_ms,
            } => {
                // The server rejects audio_end_ms beyond what it generated; the caller's
                // playback clock can run a little past it.
                let generated = self
                    .item_audio
                    .iter()
                    .find(|(id, _)| *id == item_id)
                    .map(|(_, bytes)| self.output_format.duration_ms(*bytes));
                let audio_end_ms = generated.map_or(audio_end_ms, |g| audio_end_ms.min(g));
                self.send(
                    json!({"type": "conversation.item.truncate", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": audio_end_ms}),
                )
                .await
            }
            Command::CancelResponse => {
                self.queued_responses.clear();
                if self.response_active {
                    self.send(json!({"type": "response.cancel"})).await
                } else {
                    Ok(())
                }
            }
            Command::UpdateInstructions(instructions) => {
                self.send(json!({"type": "session.update", "session": {
                    "type": "realtime", "instructions": instructions}}))
                    .await
            }
            Command::Close => Err(Stop::Closed(CloseReason::Normal)),
        }
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let text = match msg {
            None => return Err(Stop::Closed(CloseReason::Dropped)),
            Some(Err(e)) => return Err(Stop::Closed(ws::read_error_reason(&e))),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(Stop::Closed(ws::close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => return Ok(()),
        };
        let event = match serde_json::from_str::<ServerEvent>(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable openai realtime event");
                let error = ProviderError::new(ErrorKind::Protocol, None, e.to_string());
                return self.emit(ModelEvent::Error(error)).await;
            }
        };
        self.on_event(event).await
    }

    async fn on_event(&mut self, event: ServerEvent) -> Result<(), Stop> {
        match event {
            ServerEvent::ResponseCreated => {
                self.response_active = true;
                self.awaiting_response = None;
                Ok(())
            }
            ServerEvent::AudioDelta { item_id, delta } => {
                let data = match B64.decode(delta.as_bytes()) {
                    Ok(d) => d,
                    Err(e) => {
                        let msg = format!("audio delta is not base64: {e}");
                        let error = ProviderError::new(ErrorKind::Protocol, None, msg);
                        return self.emit(ModelEvent::Error(error)).await;
                    }
                };
                self.count_audio(&item_id, data.len());
                let format = self.output_format;
                self.emit(ModelEvent::Audio {
                    item_id,
                    data,
                    format,
                })
                .await
            }
            ServerEvent::AgentTranscriptDelta { item_id, delta } => {
                self.transcript(Role::Agent, item_id, delta, false).await
            }
            ServerEvent::AgentTranscriptDone {
                item_id,
                transcript: text,
            }
            | ServerEvent::AgentTextDone { item_id, text } => {
                self.transcript(Role::Agent, item_id, text, true).await
            }
            ServerEvent::CallerTranscriptDelta { item_id, delta } => {
                self.transcript(Role::Caller, item_id, delta, false).await
            }
            ServerEvent::CallerTranscriptDone {
                item_id,
                transcript,
            } => {
                self.transcript(Role::Caller, item_id, transcript, true)
                    .await
            }
            ServerEvent::CallerTranscriptFailed { error } => {
                self.emit(ModelEvent::Error(error.into_error())).await
            }
            ServerEvent::SpeechStarted { audio_start_ms } => {
                self.emit(ModelEvent::SpeechStarted { audio_start_ms })
                    .await
            }
            ServerEvent::SpeechStopped { audio_end_ms } => {
                self.emit(ModelEvent::SpeechStopped { audio_end_ms }).await
            }
            ServerEvent::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                self.pending_calls.insert(call_id.clone());
                self.emit(ModelEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                })
                .await
            }
            ServerEvent::ResponseDone { response } => {
                self.response_active = false;
                if let Some(usage) = response.usage {
                    self.emit(ModelEvent::Usage(usage.into())).await?;
                }
                let status = match response.status.as_str() {
                    "completed" => ResponseStatus::Completed,
                    "cancelled" => ResponseStatus::Cancelled,
                    "incomplete" => ResponseStatus::Incomplete,
                    _ => ResponseStatus::Failed,
                };
                self.emit(ModelEvent::ResponseDone { status }).await?;
                if let Some(next) = self.queued_responses.pop_front() {
                    self.request_response(next).await?;
                }
                Ok(())
            }
            ServerEvent::Error { error } => {
                // A failed response.create (its event_id echoed, or a server-side error with
                // none) means no response is coming: move on to the next queued one.
                let failed_request = self.awaiting_response.is_some()
                    && error
                        .event_id
                        .as_deref()
                        .is_none_or(|id| id == self.awaiting_event_id);
                let error = error.into_error();
                tracing::debug!(%error, "openai realtime error event");
                self.emit(ModelEvent::Error(error)).await?;
                if failed_request {
                    self.awaiting_response = None;
                    // Whoever waits for that response (to drain speech before a hang-up)
                    // must not wait for one that will never come.
                    self.emit(ModelEvent::ResponseDone {
                        status: ResponseStatus::Failed,
                    })
                    .await?;
                    if let Some(next) = self.queued_responses.pop_front() {
                        self.request_response(next).await?;
                    }
                }
                Ok(())
            }
            ServerEvent::Other => Ok(()),
        }
    }

    async fn transcript(
        &mut self,
        role: Role,
        item_id: String,
        text: String,
        is_final: bool,
    ) -> Result<(), Stop> {
        self.emit(ModelEvent::Transcript {
            role,
            item_id,
            text,
            is_final,
        })
        .await
    }

    fn count_audio(&mut self, item_id: &str, bytes: usize) {
        if let Some((_, total)) = self.item_audio.iter_mut().find(|(id, _)| id == item_id) {
            *total += bytes;
            return;
        }
        if self.item_audio.len() == TRACKED_ITEMS {
            self.item_audio.pop_front();
        }
        self.item_audio.push_back((item_id.to_string(), bytes));
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
        let bare: WireUsage =
            serde_json::from_str(r#"{"input_tokens":5,"output_tokens":0}"#).unwrap();
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
}
