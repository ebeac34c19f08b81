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

mod response;
mod session;

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

/// The greeting, then the model ends the call with the host's `end_call` tool and says a 2 s
/// goodbye.
pub fn goodbye_replies() -> Vec<Reply> {
    vec![
        Reply::Echo,
        Reply::ToolCall {
            name: "end_call".into(),
            arguments: r#"{"reason":"the caller said goodbye"}"#.into(),
        },
        Reply::Speech {
            transcript: "Thank you for calling, goodbye!".into(),
            audio_ms: 2000,
        },
    ]
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
    /// End each session this long after it opened, as the service does at its maximum session
    /// duration (60 minutes): an `error` event `session_expired` ("Your session hit the maximum
    /// duration of 60 minutes.", as reported in
    /// https://community.openai.com/t/realtime-api-session-expired/975036), then a close.
    pub max_session: Option<Duration>,
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
            max_session: None,
        }
    }
}

/// One client event as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    /// When it arrived.
    pub at: Instant,
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

    /// Audio bytes appended on each connection, in the order they were opened.
    pub fn appended_by_connection(&self) -> Vec<usize> {
        self.shared.appended.lock().unwrap().clone()
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
    let expiry = script.max_session.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            () = async { tokio::time::sleep_until(expiry.expect("checked")).await }, if expiry.is_some() => {
                let error = json!({"type": "error", "event_id": "event_expired", "error": {
                    "type": "invalid_request_error", "code": "session_expired",
                    "message": "Your session hit the maximum duration of 60 minutes.",
                    "param": null, "event_id": null}});
                session.send(&mut ws, error).await?;
                let _ = SinkExt::close(&mut ws).await;
                return Ok(());
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                if matches!(msg, Message::Close(_)) {
                    record(&shared, &msg, true);
                    // The closing handshake's answer (RFC 6455 §5.5.1), as a real server sends.
                    // (The sink's close flushes tungstenite's queued reply; the stream's own
                    // `close` would try to send a second Close.)
                    let _ = SinkExt::close(&mut ws).await;
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
                at: Instant::now(),
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
        at: Instant::now(),
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
