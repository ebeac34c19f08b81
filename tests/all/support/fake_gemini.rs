//! A protocol-faithful fake of the Gemini Live WebSocket server, on 127.0.0.1.
//!
//! Follows `reference/protocols.md` §0.2 and §3: the BidiGenerateContent path with the key in
//! `?key=` or `x-goog-api-key`; `setup` must come first (else close 1007); `setupComplete`;
//! every server message is UTF-8 JSON in a **binary** frame; client keys in camelCase or
//! snake_case; 24 kHz PCM output faster than real time; energy VAD on 16 kHz input that sends
//! `interrupted` during model output; tool calls block the turn until a matching
//! `toolResponse`; `usageMetadata` at turn end; `goAway`; errors as close codes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::support::model_audio::{pcm16_samples, pcm16_tone, rms, voice_chunk};

pub const PATH: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

/// What the fake does for one model turn.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Speak the quoted text of the last user text turn (exact-words prompts).
    Echo,
    Speech {
        transcript: String,
        audio_ms: u32,
    },
    /// Call a function and block until its `toolResponse`; then the next reply follows.
    ToolCall {
        name: String,
        args: Value,
    },
    /// Send `goAway` with this `timeLeft`, then go on to the next reply.
    GoAway {
        time_left: String,
    },
    /// Close with this code and reason.
    Close {
        code: u16,
        reason: String,
    },
    /// Drop the TCP connection without a close frame.
    DropSocket,
    /// Never answer.
    Silence,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub api_key: String,
    /// Replies, consumed one per model turn; afterwards [`Reply::Echo`].
    pub replies: Vec<Reply>,
    /// Audio per `modelTurn` message and the time between them.
    pub chunk_ms: u32,
    pub chunk_interval: Duration,
    pub vad_rms: f64,
    /// Silence that ends a caller turn.
    pub silence_ms: u64,
    pub caller_transcript: String,
    /// Usage at turn end: (prompt text, prompt audio, response audio).
    pub usage: (u64, u64, u64),
    /// 24 kHz samples spoken instead of the 300 Hz tone, each turn going on where the last
    /// stopped (wrapping).
    pub voice: Option<Vec<i16>>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            api_key: "gm-test".into(),
            replies: Vec::new(),
            chunk_ms: 100,
            chunk_interval: Duration::from_millis(2),
            vad_rms: 1000.0,
            silence_ms: 400,
            caller_transcript: "What are your opening hours?".into(),
            usage: (380, 120, 96),
            voice: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    /// The message with keys normalised to camelCase.
    pub message: Value,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    queries: Mutex<Vec<String>>,
}

pub struct FakeGemini {
    /// `ws://127.0.0.1:<port>/ws/…BidiGenerateContent`
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGemini {
    pub async fn start(script: Script) -> FakeGemini {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let script = Arc::new(script);
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (shared, script) = (s2.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, shared, script).await;
                });
            }
        });
        FakeGemini {
            url: format!("ws://127.0.0.1:{port}{PATH}"),
            shared,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Received messages whose top-level field is `field` (camelCase).
    pub fn received_of(&self, field: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter_map(|r| r.message.get(field).cloned())
            .collect()
    }
}

type Ws = WebSocketStream<TcpStream>;
type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// snake_case → camelCase for object keys (proto-JSON accepts both).
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn normalise(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (camel(&k), normalise(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        other => other,
    }
}

async fn send(ws: &mut Ws, v: Value) -> WsResult {
    // The real server sends JSON in binary frames.
    ws.send(Message::binary(v.to_string().into_bytes())).await
}

async fn close(ws: &mut Ws, code: u16, reason: &str) -> WsResult {
    ws.close(Some(CloseFrame {
        code: code.into(),
        reason: reason.to_string().into(),
    }))
    .await
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: TcpStream,
    shared: Arc<Shared>,
    script: Arc<Script>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut key_ok = false;
    let key = script.api_key.clone();
    let shared_cb = shared.clone();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != PATH {
            let mut r = ErrorResponse::new(Some("not found".into()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Err(r);
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let header = req
            .headers()
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok());
        key_ok =
            header == Some(key.as_str()) || query.split('&').any(|kv| kv == format!("key={key}"));
        shared_cb.queries.lock().unwrap().push(query);
        Ok(resp)
    };
    tcp.set_nodelay(true)?;
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(socket_config()))
            .await?;
    let mut conn = Conn {
        script: script.clone(),
        shared: shared.clone(),
        replies: script.replies.iter().cloned().collect(),
        last_text: String::new(),
        chunks: VecDeque::new(),
        waiting_tool: None,
        speaking: false,
        silence_ms: 0,
        next_call: 0,
        voice_pos: 0,
    };
    // Setup first.
    let first = conn.next_message(&mut ws).await;
    let Some(first) = first else { return Ok(()) };
    if !key_ok {
        close(
            &mut ws,
            1008,
            "API key not valid. Please pass a valid API key.",
        )
        .await?;
        return Ok(());
    }
    if first.get("setup").is_none() || first.as_object().is_some_and(|m| m.len() != 1) {
        close(
            &mut ws,
            1007,
            "Request contains an invalid argument: setup must be the first message",
        )
        .await?;
        return Ok(());
    }
    if first["setup"]["model"]
        .as_str()
        .is_none_or(|m| !m.starts_with("models/"))
    {
        close(&mut ws, 1008, "models/ prefix required: model not found").await?;
        return Ok(());
    }
    send(&mut ws, json!({"setupComplete": {}})).await?;
    let mut tick = tokio::time::interval(script.chunk_interval);
    // Ticks missed while idle must not burst out the next turn at once.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = conn.next_message(&mut ws) => {
                let Some(msg) = msg else { return Ok(()) };
                if !conn.on_message(&mut ws, msg).await? {
                    return Ok(());
                }
            }
            _ = tick.tick(), if !conn.chunks.is_empty() => {
                if !conn.emit_chunk(&mut ws).await? {
                    return Ok(());
                }
            }
        }
    }
}

enum Chunk {
    Audio { text: String, audio: Vec<u8> },
    TurnEnd,
}

struct Conn {
    script: Arc<Script>,
    shared: Arc<Shared>,
    replies: VecDeque<Reply>,
    last_text: String,
    chunks: VecDeque<Chunk>,
    waiting_tool: Option<String>,
    speaking: bool,
    silence_ms: u64,
    next_call: u64,
    /// Samples of the script's voice spoken so far.
    voice_pos: usize,
}

impl Conn {
    /// Next client message (normalised, recorded); `None` when the socket ends.
    async fn next_message(&mut self, ws: &mut Ws) -> Option<Value> {
        loop {
            let text = match ws.next().await? {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Message::Close(_)) => {
                    self.record(json!({"<close>": {}}));
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            };
            let v = normalise(serde_json::from_str(&text).unwrap_or(json!({"<not json>": text})));
            self.record(v.clone());
            return Some(v);
        }
    }

    fn record(&self, message: Value) {
        self.shared
            .received
            .lock()
            .unwrap()
            .push(Received { message });
    }

    /// Returns false when the connection should end.
    async fn on_message(
        &mut self,
        ws: &mut Ws,
        msg: Value,
    ) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
        let fields = msg.as_object().map(|m| m.len()).unwrap_or(0);
        if fields != 1 {
            close(
                ws,
                1007,
                "exactly one of setup, clientContent, realtimeInput, toolResponse",
            )
            .await?;
            return Ok(false);
        }
        if msg.get("setup").is_some() {
            close(ws, 1007, "setup may only be sent once").await?;
            return Ok(false);
        }
        if let Some(cc) = msg.get("clientContent") {
            for turn in cc["turns"].as_array().into_iter().flatten() {
                for part in turn["parts"].as_array().into_iter().flatten() {
                    if let Some(t) = part["text"].as_str() {
                        self.last_text = t.to_string();
                    }
                }
            }
            if cc["turnComplete"] == true {
                return self.model_turn(ws).await;
            }
        } else if let Some(ri) = msg.get("realtimeInput") {
            if let Some(data) = ri["audio"]["data"].as_str() {
                let mime = ri["audio"]["mimeType"].as_str().unwrap_or("");
                if !mime.starts_with("audio/pcm") {
                    close(ws, 1007, "unsupported audio mime type").await?;
                    return Ok(false);
                }
                let Ok(bytes) = B64.decode(data) else {
                    close(ws, 1007, "invalid base64 audio").await?;
                    return Ok(false);
                };
                return self.vad(ws, &bytes).await;
            }
        } else if let Some(tr) = msg.get("toolResponse") {
            let ids: Vec<&str> = tr["functionResponses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str())
                .collect();
            match &self.waiting_tool {
                Some(id) if ids.contains(&id.as_str()) => {
                    self.waiting_tool = None;
                    return self.model_turn(ws).await;
                }
                _ => {
                    close(ws, 1007, "toolResponse for an unknown function call id").await?;
                    return Ok(false);
                }
            }
        } else {
            close(ws, 1007, "unknown client message").await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn vad(
        &mut self,
        ws: &mut Ws,
        bytes: &[u8],
    ) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
        let ms = (bytes.len() / 32) as u64;
        let loud = rms(&pcm16_samples(bytes)) > self.script.vad_rms;
        if loud {
            self.silence_ms = 0;
            if !self.speaking {
                self.speaking = true;
                if !self.chunks.is_empty() {
                    // Barge-in: stop generating; the turn ends interrupted.
                    self.chunks.clear();
                    send(ws, json!({"serverContent": {"interrupted": true}})).await?;
                }
            }
        } else if self.speaking {
            self.silence_ms += ms;
            if self.silence_ms >= self.script.silence_ms {
                self.speaking = false;
                let t = self.script.caller_transcript.clone();
                send(
                    ws,
                    json!({"serverContent": {"inputTranscription": {"text": t}}}),
                )
                .await?;
                if self.waiting_tool.is_none() {
                    return self.model_turn(ws).await;
                }
            }
        }
        Ok(true)
    }

    /// Start the next scripted model turn.
    async fn model_turn(
        &mut self,
        ws: &mut Ws,
    ) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
        loop {
            let reply = self.replies.pop_front().unwrap_or(Reply::Echo);
            let (transcript, audio_ms) = match reply {
                Reply::Silence => return Ok(true),
                Reply::DropSocket => return Ok(false),
                Reply::Close { code, reason } => {
                    close(ws, code, &reason).await?;
                    return Ok(false);
                }
                Reply::GoAway { time_left } => {
                    send(ws, json!({"goAway": {"timeLeft": time_left}})).await?;
                    continue;
                }
                Reply::ToolCall { name, args } => {
                    self.next_call += 1;
                    let id = format!("fc_{:03}", self.next_call);
                    self.waiting_tool = Some(id.clone());
                    send(ws, json!({"toolCall": {"functionCalls": [{"id": id, "name": name, "args": args}]}})).await?;
                    return Ok(true);
                }
                Reply::Speech {
                    transcript,
                    audio_ms,
                } => (transcript, audio_ms),
                Reply::Echo => {
                    let t = &self.last_text;
                    let quoted = match (t.find('"'), t.rfind('"')) {
                        (Some(a), Some(b)) if b > a => t[a + 1..b].to_string(),
                        _ => "I am the fake Gemini.".to_string(),
                    };
                    let ms = 300 * quoted.split_whitespace().count().max(1) as u32;
                    (quoted, ms)
                }
            };
            let n = audio_ms.div_ceil(self.script.chunk_ms).max(1) as usize;
            let words: Vec<&str> = transcript.split_inclusive(' ').collect();
            for i in 0..n {
                let ms = self
                    .script
                    .chunk_ms
                    .min(audio_ms - i as u32 * self.script.chunk_ms);
                let text = words[i * words.len() / n..(i + 1) * words.len() / n].concat();
                let audio = match &self.script.voice {
                    Some(v) => voice_chunk(v, &mut self.voice_pos, ms as usize * 24),
                    None => pcm16_tone(24000, ms, 300.0, 6000),
                };
                self.chunks.push_back(Chunk::Audio { text, audio });
            }
            self.chunks.push_back(Chunk::TurnEnd);
            return Ok(true);
        }
    }

    async fn emit_chunk(
        &mut self,
        ws: &mut Ws,
    ) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
        match self.chunks.pop_front() {
            Some(Chunk::Audio { text, audio }) => {
                send(
                    ws,
                    json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {
                    "mimeType": "audio/pcm;rate=24000", "data": B64.encode(&audio)}}]}}}),
                )
                .await?;
                if !text.is_empty() {
                    send(
                        ws,
                        json!({"serverContent": {"outputTranscription": {"text": text}}}),
                    )
                    .await?;
                }
            }
            Some(Chunk::TurnEnd) => {
                let (pt, pa, ra) = self.script.usage;
                send(ws, json!({"serverContent": {"generationComplete": true}})).await?;
                send(ws, json!({"serverContent": {"turnComplete": true}, "usageMetadata": {
                    "promptTokenCount": pt + pa, "responseTokenCount": ra, "totalTokenCount": pt + pa + ra,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": pt}, {"modality": "AUDIO", "tokenCount": pa}],
                    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": ra}]}})).await?;
            }
            None => {}
        }
        Ok(true)
    }
}

/// A small read buffer: tungstenite zero-fills the whole buffer on every read, and the 128 KiB
/// default costs more CPU than everything else in a busy fake.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}
