//! Cartesia streaming text to speech over its WebSocket, `{url}?cartesia_version=…` with the
//! `X-API-Key` and `Cartesia-Version` headers (protocols.md §5.6; message shapes checked against
//! Cartesia's WebSocket reference and its contexts guide, and LiveKit's Cartesia plugin).
//!
//! Each utterance is a context (`context_id`): every piece goes as a generation request with
//! `"continue": true` (transcripts are joined verbatim, so each ends with a space), End as
//! `"transcript": ""` with `"continue": false`; all other fields stay the same within a
//! context, as the service requires. `"max_buffer_delay_ms": 0` because the pieces are whole
//! sentences already: nothing is gained by the service waiting for more text. Server frames
//! carry the `context_id`: `chunk` (base64 `data`), `timestamps`, `flush_done`, `done`, and
//! `error` (`done: true`, with `error`/`message`, `status_code`). Dropping the stream sends
//! `{"context_id", "cancel": true}`.
//!
//! One socket per provider carries every utterance's context, opened at the first utterance
//! and reopened after it closes: Cartesia recommends many generations over one socket, a
//! context each, and it spares each answer a TLS and WebSocket handshake before its first
//! audio. The price: when that socket breaks, the utterances on it fail (typed, at once) and
//! the next one reconnects.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::socket_utterance::{self, Heard, UtteranceSocket, decode_audio};
use super::{TextToSpeech, TtsStream, pcm_formats, pcm_rate};
use crate::model::ws::{self, Socket};
use crate::model::{AudioFormat, ErrorKind, ProviderError, Secret};

const NAME: &str = "cartesia";

/// Raw `pcm_s16le` rates, preferred first.
const RATES: [u32; 6] = [24_000, 16_000, 8_000, 22_050, 44_100, 48_000];

fn default_url() -> String {
    "wss://api.cartesia.ai/tts/websocket".into()
}
fn default_version() -> String {
    "2025-04-16".into()
}
fn default_model() -> String {
    "sonic-2".into()
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_stall_timeout_ms() -> u64 {
    5_000
}

/// Cartesia streaming text to speech.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CartesiaConfig {
    #[serde(default = "default_url")]
    pub url: String,
    pub api_key: Secret,
    /// API version (`Cartesia-Version`).
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Voice when the utterance names none.
    pub voice_id: String,
    /// Extra trusted root certificates (PEM), for a private endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The WebSocket handshake.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence while audio is due (after the first piece, or after End).
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

impl CartesiaConfig {
    /// Defaults for everything but the key and the voice.
    pub fn new(api_key: Secret, voice_id: impl Into<String>) -> Self {
        Self {
            url: default_url(),
            api_key,
            version: default_version(),
            model: default_model(),
            voice_id: voice_id.into(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            stall_timeout_ms: default_stall_timeout_ms(),
        }
    }
}

/// Text to speech over Cartesia's WebSocket, one shared socket, a context per utterance.
#[derive(Debug)]
pub struct CartesiaTts {
    config: CartesiaConfig,
    socket: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl CartesiaTts {
    pub fn new(config: CartesiaConfig) -> Self {
        Self {
            config,
            socket: Default::default(),
        }
    }

    /// A context on the shared socket, opening the socket if there is none alive.
    async fn open_context(
        &self,
        context_id: &str,
    ) -> Result<(Arc<Connection>, mpsc::UnboundedReceiver<Incoming>), ProviderError> {
        let mut socket = self.socket.lock().await;
        if let Some(routes) = socket.as_ref().and_then(|c| c.register(context_id)) {
            return Ok((socket.clone().expect("checked above"), routes));
        }
        let join = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{join}cartesia_version={}",
            self.config.url, self.config.version
        );
        let connected = ws::connect(
            NAME,
            &url,
            &[
                ("x-api-key", self.config.api_key.expose()),
                ("cartesia-version", &self.config.version),
            ],
            self.config.ca_file.as_deref(),
            Duration::from_millis(self.config.connect_timeout_ms),
        )
        .await
        .map_err(ws::connect_failed)?;
        tracing::debug!(service = NAME, "socket open");
        let connection = Connection::start(connected);
        let routes = connection
            .register(context_id)
            .expect("a new connection takes contexts");
        *socket = Some(connection.clone());
        Ok((connection, routes))
    }

    /// The fields every request of an utterance repeats unchanged.
    fn request_base(&self, voice: String, rate: u32, language: Option<String>) -> Value {
        let mut base = json!({
            "model_id": self.config.model,
            "voice": {"mode": "id", "id": voice},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": rate},
            "max_buffer_delay_ms": 0,
        });
        // ISO 639-1, the BCP-47 tag's primary subtag.
        if let Some(code) = language.as_deref().and_then(|l| l.split('-').next()) {
            base["language"] = json!(code);
        }
        base
    }
}

impl TextToSpeech for CartesiaTts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> Vec<AudioFormat> {
        pcm_formats(&RATES)
    }

    fn open(
        &self,
        format: AudioFormat,
        voice: Option<String>,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<TtsStream, ProviderError>> {
        Box::pin(async move {
            let rate = pcm_rate(NAME, &RATES, format)?;
            let context_id = format!("sb-{:016x}", fastrand::u64(..));
            let (connection, routes) = self.open_context(&context_id).await?;
            let voice = voice.unwrap_or_else(|| self.config.voice_id.clone());
            // The context id on every log line of the utterance, its failure included.
            let span = tracing::info_span!("speech", context = %context_id);
            let context = Context {
                connection,
                id: context_id,
                base: self.request_base(voice, rate, language),
                routes,
            };
            let stall = Duration::from_millis(self.config.stall_timeout_ms);
            Ok(span.in_scope(|| socket_utterance::start(context, stall)))
        })
    }
}

/// What the socket's reader hands a context.
#[derive(Debug)]
enum Incoming {
    Frame(Value),
    /// The socket is gone.
    Closed(ProviderError),
}

/// Where the socket's reader sends each context's frames; None once the socket is gone, so
/// no context may join it.
type Routes = Arc<Mutex<Option<HashMap<String, mpsc::UnboundedSender<Incoming>>>>>;

/// The shared socket: a task owns it, writing what `outgoing` brings and routing what it
/// reads to the contexts by `context_id`.
#[derive(Debug)]
struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    routes: Routes,
}

impl Connection {
    fn start(socket: Socket) -> Arc<Connection> {
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let routes = Arc::new(Mutex::new(Some(HashMap::new())));
        tokio::spawn(serve(socket, outgoing_rx, routes.clone()));
        Arc::new(Connection { outgoing, routes })
    }

    /// Route frames of `context_id` to the returned receiver; `None` if the socket is gone.
    fn register(&self, context_id: &str) -> Option<mpsc::UnboundedReceiver<Incoming>> {
        let mut routes = self.routes.lock().expect("routes lock");
        let (tx, rx) = mpsc::unbounded_channel();
        routes.as_mut()?.insert(context_id.to_string(), tx);
        Some(rx)
    }

    fn unregister(&self, context_id: &str) {
        if let Some(routes) = self.routes.lock().expect("routes lock").as_mut() {
            routes.remove(context_id);
        }
    }

    fn send(&self, packet: Value) -> Result<(), ProviderError> {
        self.outgoing
            .send(Message::text(packet.to_string()))
            .map_err(|_| ProviderError::new(ErrorKind::Server, None, "the socket is closed"))
    }
}

async fn serve(mut socket: Socket, mut outgoing: mpsc::UnboundedReceiver<Message>, routes: Routes) {
    let error = loop {
        tokio::select! {
            packet = outgoing.recv() => match packet {
                Some(packet) => if let Err(e) = socket.send(packet).await {
                    break ProviderError::new(ErrorKind::Server, None, e.to_string());
                },
                // Provider and utterances all gone.
                None => {
                    let _ = socket.close(None).await;
                    return;
                }
            },
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                        break ProviderError::new(
                            ErrorKind::Server,
                            None,
                            format!("the service closed the socket ({})", reason.unwrap_or_default()),
                        );
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break ProviderError::new(ErrorKind::Server, None, e.to_string()),
                    None => break ProviderError::new(ErrorKind::Server, None, "the socket ended"),
                };
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    tracing::warn!(service = NAME, frame = %text, "not JSON");
                    continue;
                };
                let routes = routes.lock().expect("routes lock");
                let routes = routes.as_ref().expect("only this task empties the routes");
                match frame["context_id"].as_str() {
                    Some(id) => {
                        if let Some(route) = routes.get(id) {
                            let _ = route.send(Incoming::Frame(frame));
                        }
                    }
                    // An error of no context concerns them all.
                    None => {
                        for route in routes.values() {
                            let _ = route.send(Incoming::Frame(frame.clone()));
                        }
                    }
                }
            }
        }
    };
    let gone = routes
        .lock()
        .expect("routes lock")
        .take()
        .unwrap_or_default();
    if gone.is_empty() {
        // The service closes idle sockets; the next utterance opens another.
        tracing::debug!(service = NAME, %error, "idle socket closed");
    } else {
        tracing::warn!(service = NAME, %error, utterances = gone.len(), "socket lost");
    }
    for route in gone.into_values() {
        let _ = route.send(Incoming::Closed(error.clone()));
    }
}

/// One utterance's context on the shared socket; leaves the routes when dropped.
struct Context {
    connection: Arc<Connection>,
    id: String,
    base: Value,
    /// This context's frames.
    routes: mpsc::UnboundedReceiver<Incoming>,
}

impl Context {
    fn request(&self, transcript: String, more: bool) -> Value {
        let mut request = self.base.clone();
        request["context_id"] = json!(self.id);
        request["transcript"] = json!(transcript);
        request["continue"] = json!(more);
        request
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        self.connection.unregister(&self.id);
    }
}

impl UtteranceSocket for Context {
    const SERVICE: &'static str = NAME;

    async fn send_piece(&mut self, text: &str, _first: bool) -> Result<(), ProviderError> {
        self.connection.send(self.request(format!("{text} "), true))
    }

    async fn send_end(&mut self) -> Result<(), ProviderError> {
        self.connection.send(self.request(String::new(), false))
    }

    async fn next_frame(&mut self) -> Heard {
        let frame = match self.routes.recv().await {
            Some(Incoming::Frame(frame)) => frame,
            Some(Incoming::Closed(error)) => return Heard::failed(error),
            None => {
                return Heard::failed(ProviderError::new(
                    ErrorKind::Server,
                    None,
                    "the socket is gone",
                ));
            }
        };
        match frame["type"].as_str() {
            Some("chunk") => match frame["data"].as_str().map(decode_audio) {
                Some(Ok(bytes)) => Heard {
                    audio: Some(bytes),
                    end: None,
                },
                Some(Err(error)) => Heard::failed(error),
                None => Heard::failed(ProviderError::new(
                    ErrorKind::Protocol,
                    None,
                    "chunk without data",
                )),
            },
            Some("done") => Heard {
                audio: None,
                end: Some(Ok(())),
            },
            Some("error") => Heard::failed(service_error(&frame)),
            // timestamps, flush_done: nothing the cascade uses.
            _ => Heard::default(),
        }
    }

    /// Unless it completed, whatever the service still makes for it is of no use.
    async fn finish(self, completed: bool) {
        if !completed {
            let _ = self
                .connection
                .send(json!({"context_id": self.id, "cancel": true}));
        }
    }
}

/// An `error` frame: `{"type": "error", "error" | "message", "title", "error_code",
/// "status_code"}`; the status code classifies it and is the error's code.
fn service_error(frame: &Value) -> ProviderError {
    let status = frame["status_code"].as_u64().map(|s| s as u16);
    let mut message = frame["message"]
        .as_str()
        .or(frame["error"].as_str())
        .or(frame["title"].as_str())
        .unwrap_or("error without a message")
        .to_string();
    if let Some(error_code) = frame["error_code"].as_str() {
        message = format!("{error_code}: {message}");
    }
    let kind = status.map_or(ErrorKind::Server, ws::kind_for_http_status);
    ProviderError::new(kind, status.map(|s| s.to_string()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_repeat_the_base_and_add_the_piece() {
        let tts = CartesiaTts::new(CartesiaConfig::new(Secret::new("k"), "voice-1"));
        let base = tts.request_base("voice-2".into(), 16_000, Some("de-DE".into()));
        assert_eq!(base["voice"], json!({"mode": "id", "id": "voice-2"}));
        assert_eq!(base["language"], "de");
        assert_eq!(
            base["output_format"],
            json!({"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000})
        );
    }

    #[test]
    fn error_frames_are_classified_by_status() {
        let e = service_error(&json!({
            "type": "error", "done": true, "title": "Invalid model",
            "message": "The model is not valid", "error_code": "model_not_found",
            "status_code": 400, "context_id": "c"
        }));
        assert_eq!(
            (e.kind, e.code.as_deref(), e.message.as_str()),
            (
                ErrorKind::InvalidRequest,
                Some("400"),
                "model_not_found: The model is not valid"
            )
        );
        let e = service_error(&json!({"type": "error", "error": "busy", "status_code": 429}));
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (ErrorKind::RateLimited, Some("429"))
        );
    }
}
