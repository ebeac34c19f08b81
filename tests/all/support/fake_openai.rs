//! A protocol-faithful fake of the OpenAI Realtime WebSocket server (GA), on 127.0.0.1.
//!
//! Follows `reference/protocols.md` §0.1 and §1.6: `session.created` first; `session.update`
//! needs `session.type` and merges only present fields; audio appends are silent; energy-based
//! server VAD (speech_started → speech_stopped → committed → user item → auto response) with
//! barge-in cancelling the active response; the full response lifecycle with audio generated
//! faster than real time; function_call_output only for known call ids and no auto response;
//! truncation only of assistant items and never beyond the generated audio; errors echo the
//! client `event_id`. Replies are scripted per response; everything received is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::support::model_audio::{
    alaw_decode, pcm16_samples, pcm16_tone, rms, stamp, ulaw_decode, ulaw_encode, voice_chunk,
};

/// What the fake does for one response (one `response.create` or one VAD-created response).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Speak the text quoted in `response.instructions` (how exact-words prompts are written).
    Echo,
    /// Speak `transcript` with `audio_ms` of audio.
    Speech { transcript: String, audio_ms: u32 },
    /// Call a function.
    ToolCall { name: String, arguments: String },
    /// Send an `error` event instead of a response.
    Error {
        kind: String,
        code: String,
        message: String,
    },
    /// Send these text frames verbatim (malformed-input tests), then answer nothing else.
    Raw(Vec<String>),
    /// Drop the TCP connection without a close frame.
    DropSocket,
    /// Never answer.
    Silence,
}

/// The fake's behaviour.
#[derive(Debug, Clone)]
pub struct Script {
    /// Key required as `Authorization: Bearer <key>` or `api-key: <key>`.
    pub api_key: String,
    /// Refuse the retired beta header (GA mode).
    pub reject_beta_header: bool,
    /// Accept the socket but never send anything (not even `session.created`).
    pub never_answer: bool,
    /// Replies, consumed in order; afterwards every response is [`Reply::Echo`].
    pub replies: Vec<Reply>,
    /// Audio per `response.output_audio.delta`.
    pub delta_ms: u32,
    /// Time between deltas (real time would be `delta_ms`).
    pub delta_interval: Duration,
    /// RMS above which caller audio counts as speech (server VAD emulation); `None` turns the
    /// emulation off (for stamped benchmark frames, which are not speech).
    pub vad_rms: Option<f64>,
    /// Keep `input_audio_buffer.append` events in [`FakeOpenAi::received`] (benchmarks skip
    /// it; byte counts are kept either way).
    pub record_audio: bool,
    /// Caller transcript sent after each committed user turn when transcription is on.
    pub caller_transcript: String,
    /// Usage reported in `response.done`: (input text, input audio, output text, output audio).
    pub usage: (u64, u64, u64, u64),
    /// Stamp `epoch.elapsed()` into the start of every audio delta (latency bench).
    pub stamp_audio: bool,
    /// 24 kHz samples spoken instead of the 300 Hz tone when the output is `audio/pcm`, each
    /// response going on where the last stopped (wrapping).
    pub voice: Option<Vec<i16>>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            api_key: "sk-test".into(),
            reject_beta_header: true,
            never_answer: false,
            replies: Vec::new(),
            delta_ms: 100,
            delta_interval: Duration::from_millis(2),
            vad_rms: Some(1000.0),
            record_audio: true,
            caller_transcript: "Where is my order?".into(),
            usage: (301, 0, 21, 90),
            stamp_audio: false,
            voice: None,
        }
    }
}

/// One client event as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
}

/// One accepted upgrade request.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub query: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    upgrades: Mutex<Vec<Upgrade>>,
    /// Audio bytes appended per connection (index = connection number).
    appended: Mutex<Vec<usize>>,
    /// When stamping: latency of each append from the client's stamp to its arrival here.
    append_latency: Mutex<Vec<Duration>>,
}

/// The running fake server; stops when dropped.
pub struct FakeOpenAi {
    /// `ws://127.0.0.1:<port>/v1/realtime`
    pub url: String,
    /// Time base of audio stamps.
    pub epoch: Instant,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOpenAi {
    pub async fn start(script: Script) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let epoch = Instant::now();
        let script = Arc::new(script);
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (shared, script) = (s2.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, shared, script, epoch).await;
                });
            }
        });
        FakeOpenAi {
            url: format!("ws://127.0.0.1:{port}/v1/realtime"),
            epoch,
            shared,
            task,
        }
    }

    /// All client events received so far (all connections), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Received client events of one type.
    pub fn received_of(&self, kind: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.event["type"] == kind)
            .map(|r| r.event)
            .collect()
    }

    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.shared.upgrades.lock().unwrap().clone()
    }

    /// Total audio bytes appended over all connections.
    pub fn appended_bytes(&self) -> usize {
        self.shared.appended.lock().unwrap().iter().sum()
    }

    /// Latencies of stamped appends (client stamp → decoded here).
    pub fn append_latencies(&self) -> Vec<Duration> {
        self.shared.append_latency.lock().unwrap().clone()
    }

    /// Wait until `pred` holds for the received events, up to `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.shared.received.lock().unwrap()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

type Ws = WebSocketStream<TcpStream>;

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: TcpStream,
    shared: Arc<Shared>,
    script: Arc<Script>,
    epoch: Instant,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let key = script.api_key.clone();
    let reject_beta = script.reject_beta_header;
    let shared_cb = shared.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        shared_cb.upgrades.lock().unwrap().push(Upgrade {
            query: req.uri().query().unwrap_or("").to_string(),
            headers: headers.clone(),
        });
        let reject = |status: StatusCode, msg: &str| {
            let mut r = ErrorResponse::new(Some(msg.to_string()));
            *r.status_mut() = status;
            Err(r)
        };
        let query = req.uri().query().unwrap_or("");
        if !req.uri().path().ends_with("/realtime")
            || !(query.contains("model=") || query.contains("call_id="))
        {
            return reject(StatusCode::NOT_FOUND, "unknown path");
        }
        let bearer_ok = headers.get("authorization") == Some(&format!("Bearer {key}"));
        let api_key_ok = headers.get("api-key") == Some(&key);
        if !bearer_ok && !api_key_ok {
            return reject(
                StatusCode::UNAUTHORIZED,
                r#"{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided."}}"#,
            );
        }
        if reject_beta && headers.contains_key("openai-beta") {
            return reject(
                StatusCode::BAD_REQUEST,
                r#"{"error":{"code":"beta_api_shape_disabled"}}"#,
            );
        }
        Ok(resp)
    };
    tcp.set_nodelay(true)?;
    let mut ws =
        tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(socket_config()))
            .await?;
    let conn = {
        let mut a = shared.appended.lock().unwrap();
        a.push(0);
        a.len() - 1
    };
    if script.never_answer {
        while let Some(Ok(msg)) = ws.next().await {
            record(&shared, &msg, true);
        }
        return Ok(());
    }
    let model = shared.upgrades.lock().unwrap().last().and_then(|u| {
        u.query
            .split('&')
            .find_map(|kv| kv.strip_prefix("model=").map(str::to_string))
    });
    let mut session = Session::new(script.clone(), model.unwrap_or_default(), epoch);
    let created = json!({"type": "session.created", "session": session.config.clone()});
    session.send(&mut ws, created).await?;
    let mut tick = tokio::time::interval(script.delta_interval);
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                if matches!(msg, Message::Close(_)) {
                    record(&shared, &msg, true);
                    return Ok(());
                }
                let Some(event) = record(&shared, &msg, script.record_audio) else { continue };
                if event["type"] == "input_audio_buffer.append"
                    && let Some(bytes) = event["audio"].as_str().and_then(|a| B64.decode(a).ok())
                {
                    shared.appended.lock().unwrap()[conn] += bytes.len();
                    if script.stamp_audio && bytes.len() >= crate::support::model_audio::STAMP_LEN {
                        let lat = crate::support::model_audio::since_stamp(&bytes, epoch);
                        shared.append_latency.lock().unwrap().push(lat);
                    }
                }
                match session.on_client_event(&mut ws, event).await? {
                    Flow::Continue => {}
                    Flow::Drop => return Ok(()),
                }
            }
            _ = tick.tick(), if session.active.as_ref().is_some_and(|a| !a.chunks.is_empty()) => {
                session.emit_chunk(&mut ws).await?;
            }
        }
    }
}

/// Record a client text frame as JSON; returns it.
fn record(shared: &Shared, msg: &Message, audio: bool) -> Option<Value> {
    let text = match msg {
        Message::Text(t) => t.to_string(),
        Message::Close(_) => {
            shared.received.lock().unwrap().push(Received {
                event: json!({"type": "<close>"}),
            });
            return None;
        }
        _ => return None,
    };
    let event: Value = serde_json::from_str(&text).unwrap_or(json!({"type": "<not json>"}));
    if !audio && event["type"] == "input_audio_buffer.append" {
        return Some(event);
    }
    shared.received.lock().unwrap().push(Received {
        event: event.clone(),
    });
    Some(event)
}

enum Flow {
    Continue,
    Drop,
}

#[derive(Clone, Copy, PartialEq)]
enum Fmt {
    Pcm24k,
    Pcmu,
    Pcma,
}

impl Fmt {
    fn parse(v: &Value) -> Option<Fmt> {
        match v["type"].as_str()? {
            "audio/pcm" => (v.get("rate").is_none() || v["rate"] == 24000).then_some(Fmt::Pcm24k),
            "audio/pcmu" => Some(Fmt::Pcmu),
            "audio/pcma" => Some(Fmt::Pcma),
            _ => None,
        }
    }
    fn bytes_per_ms(self) -> usize {
        match self {
            Fmt::Pcm24k => 48,
            _ => 8,
        }
    }
    fn samples(self, bytes: &[u8]) -> Vec<i16> {
        match self {
            Fmt::Pcm24k => pcm16_samples(bytes),
            Fmt::Pcmu => bytes.iter().map(|&b| ulaw_decode(b)).collect(),
            Fmt::Pcma => bytes.iter().map(|&b| alaw_decode(b)).collect(),
        }
    }
    fn tone(self, ms: u32) -> Vec<u8> {
        match self {
            Fmt::Pcm24k => pcm16_tone(24000, ms, 300.0, 6000),
            // A-law output is only checked for length; μ-law bytes stand in for it.
            Fmt::Pcmu | Fmt::Pcma => pcm16_samples(&pcm16_tone(8000, ms, 300.0, 6000))
                .into_iter()
                .map(ulaw_encode)
                .collect(),
        }
    }
}

struct ActiveResponse {
    id: String,
    item: Value,
    /// (transcript delta, audio) still to send.
    chunks: VecDeque<(String, Vec<u8>)>,
    transcript: String,
}

struct Item {
    role: String,
    kind: String,
    audio_ms: u64,
}

struct Session {
    script: Arc<Script>,
    epoch: Instant,
    config: Value,
    next_event: u64,
    next_id: u64,
    replies: VecDeque<Reply>,
    input_bytes: usize,
    speaking_since_ms: Option<u64>,
    silence_ms: u64,
    user_item: Option<String>,
    last_item: Option<String>,
    items: HashMap<String, Item>,
    function_calls: Vec<String>,
    audio_out: bool,
    active: Option<ActiveResponse>,
    /// Samples of the script's voice spoken so far.
    voice_pos: usize,
}

impl Session {
    fn new(script: Arc<Script>, model: String, epoch: Instant) -> Self {
        let config = json!({
            "type": "realtime", "object": "realtime.session", "id": "sess_fake001",
            "model": model, "output_modalities": ["audio"], "instructions": "",
            "tools": [], "tool_choice": "auto", "max_output_tokens": "inf",
            "truncation": "auto", "tracing": null, "prompt": null, "expires_at": 0, "include": null,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": null,
                          "noise_reduction": null,
                          "turn_detection": {"type": "server_vad", "threshold": 0.5,
                              "prefix_padding_ms": 300, "silence_duration_ms": 500,
                              "idle_timeout_ms": null, "create_response": true,
                              "interrupt_response": true}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}
            }
        });
        Self {
            replies: script.replies.iter().cloned().collect(),
            script,
            epoch,
            config,
            next_event: 0,
            next_id: 0,
            input_bytes: 0,
            speaking_since_ms: None,
            silence_ms: 0,
            user_item: None,
            last_item: None,
            items: HashMap::new(),
            function_calls: Vec::new(),
            audio_out: false,
            active: None,
            voice_pos: 0,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:03}", self.next_id)
    }

    fn in_fmt(&self) -> Fmt {
        Fmt::parse(&self.config["audio"]["input"]["format"]).unwrap_or(Fmt::Pcm24k)
    }

    fn out_fmt(&self) -> Fmt {
        Fmt::parse(&self.config["audio"]["output"]["format"]).unwrap_or(Fmt::Pcm24k)
    }

    async fn send(
        &mut self,
        ws: &mut Ws,
        mut event: Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.next_event += 1;
        event["event_id"] = json!(format!("event_{:04}", self.next_event));
        ws.send(Message::text(event.to_string())).await
    }

    async fn error(
        &mut self,
        ws: &mut Ws,
        code: &str,
        message: &str,
        client_event_id: &Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.send(
            ws,
            json!({"type": "error", "error": {"type": "invalid_request_error",
            "code": code, "message": message, "param": null, "event_id": client_event_id}}),
        )
        .await
    }

    async fn on_client_event(
        &mut self,
        ws: &mut Ws,
        ev: Value,
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let eid = ev.get("event_id").cloned().unwrap_or(Value::Null);
        match ev["type"].as_str().unwrap_or("") {
            "session.update" => {
                let s = &ev["session"];
                if s["type"] != "realtime" {
                    self.error(
                        ws,
                        "missing_required_parameter",
                        "Missing required parameter: 'session.type'.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                let new_voice = &s["audio"]["output"]["voice"];
                if self.audio_out
                    && !new_voice.is_null()
                    && *new_voice != self.config["audio"]["output"]["voice"]
                {
                    self.error(
                        ws,
                        "cannot_update_voice",
                        "Cannot update a conversation's voice if assistant audio is present.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                for fmt in [
                    &s["audio"]["input"]["format"],
                    &s["audio"]["output"]["format"],
                ] {
                    if !fmt.is_null() && Fmt::parse(fmt).is_none() {
                        self.error(ws, "invalid_value", "Invalid audio format.", &eid)
                            .await?;
                        return Ok(Flow::Continue);
                    }
                }
                merge(&mut self.config, s);
                let updated = json!({"type": "session.updated", "session": self.config.clone()});
                self.send(ws, updated).await?;
            }
            "input_audio_buffer.append" => {
                let Some(bytes) = ev["audio"].as_str().and_then(|a| B64.decode(a).ok()) else {
                    self.error(ws, "invalid_value", "audio is not valid base64", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                };
                if bytes.len() > 15 * 1024 * 1024 {
                    self.error(ws, "invalid_value", "append larger than 15 MiB", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                }
                return self.vad(ws, &bytes).await;
            }
            "input_audio_buffer.commit" => {
                if self.input_bytes == 0 {
                    self.error(
                        ws,
                        "input_audio_buffer_commit_empty",
                        "buffer is empty",
                        &eid,
                    )
                    .await?;
                } else {
                    let item = self.id("item_U");
                    self.commit_user(ws, item).await?;
                }
            }
            "input_audio_buffer.clear" => {
                self.input_bytes = 0;
                self.send(ws, json!({"type": "input_audio_buffer.cleared"}))
                    .await?;
            }
            "conversation.item.create" => {
                let mut item = ev["item"].clone();
                if item["type"] == "function_call_output" {
                    let call = item["call_id"].as_str().unwrap_or("");
                    if !self.function_calls.iter().any(|c| c == call) {
                        self.error(
                            ws,
                            "invalid_value",
                            "No function call with this call_id.",
                            &eid,
                        )
                        .await?;
                        return Ok(Flow::Continue);
                    }
                }
                let id = self.id("item_C");
                item["id"] = json!(id);
                item["object"] = json!("realtime.item");
                item["status"] = json!("completed");
                self.items.insert(
                    id.clone(),
                    Item {
                        role: item["role"].as_str().unwrap_or("").into(),
                        kind: item["type"].as_str().unwrap_or("").into(),
                        audio_ms: 0,
                    },
                );
                let prev = self.last_item.replace(id);
                self.send(ws, json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item})).await?;
                self.send(ws, json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item})).await?;
            }
            "conversation.item.truncate" => {
                let item_id = ev["item_id"].as_str().unwrap_or("").to_string();
                let end = ev["audio_end_ms"].as_u64();
                let Some(item) = self.items.get(&item_id) else {
                    self.error(ws, "invalid_value", "Item not found.", &eid)
                        .await?;
                    return Ok(Flow::Continue);
                };
                if item.role != "assistant" || item.kind != "message" {
                    self.error(
                        ws,
                        "invalid_value",
                        "Only assistant messages can be truncated.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                match end {
                    Some(end) if end <= item.audio_ms => {
                        self.send(
                            ws,
                            json!({"type": "conversation.item.truncated", "item_id": item_id,
                            "content_index": 0, "audio_end_ms": end}),
                        )
                        .await?;
                    }
                    _ => {
                        let msg = format!(
                            "audio_end_ms must not exceed the audio length ({} ms)",
                            item.audio_ms
                        );
                        self.error(ws, "invalid_value", &msg, &eid).await?;
                    }
                }
            }
            "response.create" => {
                if self.active.is_some() {
                    self.error(
                        ws,
                        "conversation_already_has_active_response",
                        "Conversation already has an active response.",
                        &eid,
                    )
                    .await?;
                    return Ok(Flow::Continue);
                }
                let instructions = ev["response"]["instructions"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                return self.respond(ws, &instructions, &eid).await;
            }
            "response.cancel" => {
                if self.active.is_none() {
                    self.error(
                        ws,
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        &eid,
                    )
                    .await?;
                } else {
                    self.cancel(ws, "client_cancelled").await?;
                }
            }
            _ => {
                self.error(ws, "invalid_event", "Unknown event type.", &eid)
                    .await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Energy VAD over each appended chunk.
    async fn vad(
        &mut self,
        ws: &mut Ws,
        bytes: &[u8],
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let fmt = self.in_fmt();
        self.input_bytes += bytes.len();
        let td = self.config["audio"]["input"]["turn_detection"].clone();
        let Some(threshold) = self.script.vad_rms.filter(|_| !td.is_null()) else {
            return Ok(Flow::Continue);
        };
        let now_ms = (self.input_bytes / fmt.bytes_per_ms()) as u64;
        let chunk_ms = (bytes.len() / fmt.bytes_per_ms()) as u64;
        let loud = rms(&fmt.samples(bytes)) > threshold;
        match (self.speaking_since_ms, loud) {
            (None, true) => {
                let start = now_ms.saturating_sub(chunk_ms);
                let pad = td["prefix_padding_ms"].as_u64().unwrap_or(300);
                let item = self.id("item_U");
                self.user_item = Some(item.clone());
                self.speaking_since_ms = Some(start);
                self.silence_ms = 0;
                self.send(
                    ws,
                    json!({"type": "input_audio_buffer.speech_started",
                    "audio_start_ms": start.saturating_sub(pad), "item_id": item}),
                )
                .await?;
                if self.active.is_some() && td["interrupt_response"] != false {
                    self.cancel(ws, "turn_detected").await?;
                }
            }
            (Some(_), true) => self.silence_ms = 0,
            (Some(_), false) => {
                self.silence_ms += chunk_ms;
                let needed = td["silence_duration_ms"].as_u64().unwrap_or(500);
                if self.silence_ms >= needed {
                    self.speaking_since_ms = None;
                    let item = self.user_item.take().unwrap_or_default();
                    self.send(
                        ws,
                        json!({"type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": now_ms - self.silence_ms, "item_id": item}),
                    )
                    .await?;
                    self.commit_user(ws, item).await?;
                    if td["create_response"] != false {
                        return self.respond(ws, "", &Value::Null).await;
                    }
                }
            }
            (None, false) => {}
        }
        Ok(Flow::Continue)
    }

    async fn commit_user(
        &mut self,
        ws: &mut Ws,
        item_id: String,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.input_bytes = 0;
        let prev = self.last_item.replace(item_id.clone());
        self.send(ws, json!({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})).await?;
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": null}]});
        self.items.insert(
            item_id.clone(),
            Item {
                role: "user".into(),
                kind: "message".into(),
                audio_ms: 0,
            },
        );
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item}),
        )
        .await?;
        if !self.config["audio"]["input"]["transcription"].is_null() {
            let t = self.script.caller_transcript.clone();
            self.send(
                ws,
                json!({"type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id, "content_index": 0, "delta": t}),
            )
            .await?;
            self.send(ws, json!({"type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id, "content_index": 0, "transcript": t,
                "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 8, "total_tokens": 48}})).await?;
        }
        Ok(())
    }

    fn response_object(
        &self,
        id: &str,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        details: Value,
    ) -> Value {
        json!({"object": "realtime.response", "id": id, "status": status, "status_details": details,
            "output": output, "conversation_id": "conv_fake", "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": self.config["audio"]["output"]["format"], "voice": self.config["audio"]["output"]["voice"]}},
            "usage": usage, "metadata": null})
    }

    fn usage(&self) -> Value {
        let (it, ia, ot, oa) = self.script.usage;
        json!({"total_tokens": it + ia + ot + oa, "input_tokens": it + ia, "output_tokens": ot + oa,
            "input_token_details": {"text_tokens": it, "audio_tokens": ia, "image_tokens": 0, "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": ot, "audio_tokens": oa}})
    }

    async fn respond(
        &mut self,
        ws: &mut Ws,
        instructions: &str,
        client_event_id: &Value,
    ) -> Result<Flow, tokio_tungstenite::tungstenite::Error> {
        let reply = self.replies.pop_front().unwrap_or(Reply::Echo);
        let (transcript, audio_ms) = match reply {
            Reply::Silence => return Ok(Flow::Continue),
            Reply::Raw(frames) => {
                for f in frames {
                    ws.send(Message::text(f)).await?;
                }
                return Ok(Flow::Continue);
            }
            Reply::DropSocket => return Ok(Flow::Drop),
            Reply::Error {
                kind,
                code,
                message,
            } => {
                self.send(
                    ws,
                    json!({"type": "error", "error": {"type": kind, "code": code,
                    "message": message, "param": null, "event_id": client_event_id}}),
                )
                .await?;
                return Ok(Flow::Continue);
            }
            Reply::ToolCall { name, arguments } => {
                self.tool_call(ws, &name, &arguments).await?;
                return Ok(Flow::Continue);
            }
            Reply::Speech {
                transcript,
                audio_ms,
            } => (transcript, audio_ms),
            Reply::Echo => {
                let quoted = match (instructions.find('"'), instructions.rfind('"')) {
                    (Some(a), Some(b)) if b > a => instructions[a + 1..b].to_string(),
                    _ => "I am the fake model.".to_string(),
                };
                let ms = 60 * quoted.split_whitespace().count().max(1) as u32 * 5;
                (quoted, ms)
            }
        };
        let resp_id = self.id("resp");
        let item_id = self.id("item_A");
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []});
        let created =
            self.response_object(&resp_id, "in_progress", vec![], Value::Null, Value::Null);
        self.send(ws, json!({"type": "response.created", "response": created}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        let prev = self.last_item.replace(item_id.clone());
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        self.send(ws, json!({"type": "response.content_part.added", "response_id": resp_id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})).await?;
        self.items.insert(
            item_id.clone(),
            Item {
                role: "assistant".into(),
                kind: "message".into(),
                audio_ms: 0,
            },
        );
        // Split words over audio chunks: each delta carries delta_ms of audio and maybe a word.
        let n = audio_ms.div_ceil(self.script.delta_ms).max(1) as usize;
        let words: Vec<&str> = transcript.split_inclusive(' ').collect();
        let fmt = self.out_fmt();
        let mut chunks = VecDeque::new();
        for i in 0..n {
            let ms = self
                .script
                .delta_ms
                .min(audio_ms - (i as u32) * self.script.delta_ms);
            let from = i * words.len() / n;
            let to = (i + 1) * words.len() / n;
            let audio = match (&self.script.voice, fmt) {
                (Some(v), Fmt::Pcm24k) => voice_chunk(v, &mut self.voice_pos, ms as usize * 24),
                _ => fmt.tone(ms),
            };
            chunks.push_back((words[from..to].concat(), audio));
        }
        self.active = Some(ActiveResponse {
            id: resp_id,
            item,
            chunks,
            transcript,
        });
        Ok(Flow::Continue)
    }

    async fn emit_chunk(
        &mut self,
        ws: &mut Ws,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let Some((text, mut audio)) = active.chunks.pop_front() else {
            return Ok(());
        };
        let (resp_id, item_id) = (
            active.id.clone(),
            active.item["id"].as_str().unwrap_or("").to_string(),
        );
        let last = active.chunks.is_empty();
        let ids = json!({"response_id": resp_id, "item_id": item_id, "output_index": 0, "content_index": 0});
        if !text.is_empty() {
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio_transcript.delta");
            ev["delta"] = json!(text);
            self.send(ws, ev).await?;
        }
        let fmt = self.out_fmt();
        if let Some(item) = self.items.get_mut(&item_id) {
            item.audio_ms += (audio.len() / fmt.bytes_per_ms()) as u64;
        }
        self.audio_out = true;
        if self.script.stamp_audio && audio.len() >= crate::support::model_audio::STAMP_LEN {
            stamp(&mut audio, self.epoch);
        }
        let mut ev = ids.clone();
        ev["type"] = json!("response.output_audio.delta");
        ev["delta"] = json!(B64.encode(&audio));
        self.send(ws, ev).await?;
        if last {
            self.finish(ws, "completed", Value::Null).await?;
        }
        Ok(())
    }

    async fn finish(
        &mut self,
        ws: &mut Ws,
        status: &str,
        details: Value,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let item_id = active.item["id"].as_str().unwrap_or("").to_string();
        let ids = json!({"response_id": active.id, "item_id": item_id, "output_index": 0, "content_index": 0});
        let completed = status == "completed";
        let mut item = active.item.clone();
        item["status"] = json!(if completed { "completed" } else { "incomplete" });
        item["content"] = json!([{"type": "output_audio", "transcript": active.transcript}]);
        if completed {
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio.done");
            self.send(ws, ev).await?;
            let mut ev = ids.clone();
            ev["type"] = json!("response.output_audio_transcript.done");
            ev["transcript"] = json!(active.transcript);
            self.send(ws, ev).await?;
            let mut ev = ids.clone();
            ev["type"] = json!("response.content_part.done");
            ev["part"] = json!({"type": "audio", "transcript": active.transcript});
            self.send(ws, ev).await?;
        }
        self.send(ws, json!({"type": "response.output_item.done", "response_id": active.id, "output_index": 0, "item": item})).await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": null, "item": item}),
        )
        .await?;
        let resp = self.response_object(&active.id, status, vec![item], self.usage(), details);
        self.send(ws, json!({"type": "response.done", "response": resp}))
            .await
    }

    async fn cancel(
        &mut self,
        ws: &mut Ws,
        reason: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.finish(
            ws,
            "cancelled",
            json!({"type": "cancelled", "reason": reason}),
        )
        .await
    }

    async fn tool_call(
        &mut self,
        ws: &mut Ws,
        name: &str,
        arguments: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let resp_id = self.id("resp");
        let item_id = self.id("item_F");
        let call_id = self.id("call");
        self.function_calls.push(call_id.clone());
        let mut item = json!({"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "name": name, "call_id": call_id, "arguments": ""});
        let created =
            self.response_object(&resp_id, "in_progress", vec![], Value::Null, Value::Null);
        self.send(ws, json!({"type": "response.created", "response": created}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        let prev = self.last_item.replace(item_id.clone());
        self.send(
            ws,
            json!({"type": "conversation.item.added", "previous_item_id": prev, "item": item}),
        )
        .await?;
        let mid = arguments.len() / 2;
        let split = (0..=mid)
            .rev()
            .find(|&i| arguments.is_char_boundary(i))
            .unwrap_or(0);
        for delta in [&arguments[..split], &arguments[split..]] {
            self.send(
                ws,
                json!({"type": "response.function_call_arguments.delta", "response_id": resp_id,
                "item_id": item_id, "output_index": 0, "call_id": call_id, "delta": delta}),
            )
            .await?;
        }
        self.send(ws, json!({"type": "response.function_call_arguments.done", "response_id": resp_id,
            "item_id": item_id, "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments})).await?;
        item["status"] = json!("completed");
        item["arguments"] = json!(arguments);
        self.items.insert(
            item_id.clone(),
            Item {
                role: String::new(),
                kind: "function_call".into(),
                audio_ms: 0,
            },
        );
        self.send(ws, json!({"type": "response.output_item.done", "response_id": resp_id, "output_index": 0, "item": item})).await?;
        self.send(
            ws,
            json!({"type": "conversation.item.done", "previous_item_id": prev, "item": item}),
        )
        .await?;
        let resp =
            self.response_object(&resp_id, "completed", vec![item], self.usage(), Value::Null);
        self.send(ws, json!({"type": "response.done", "response": resp}))
            .await
    }
}

/// Merge only the fields present in `patch` (objects recursively; `null` clears).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    // Format, VAD and transcription objects are replaced whole, not merged.
                    Some(existing)
                        if existing.is_object()
                            && v.is_object()
                            && !matches!(
                                k.as_str(),
                                "format" | "turn_detection" | "transcription"
                            ) =>
                    {
                        merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A small read buffer: tungstenite zero-fills the whole buffer on every read, and the 128 KiB
/// default costs more CPU than everything else in a busy fake.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}
