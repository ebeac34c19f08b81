//! A protocol-faithful fake of Cartesia's text-to-speech WebSocket, `/tts/websocket`, on
//! 127.0.0.1 (protocols.md §5.6; shapes checked against Cartesia's WebSocket reference and
//! contexts guide, and LiveKit's Cartesia plugin):
//!
//! - Handshake: `X-API-Key` header (or `api_key` query) and the API version as the
//!   `Cartesia-Version` header or `cartesia_version` query; a bad key gets HTTP 401, no
//!   version HTTP 400, before the upgrade.
//! - Generation requests `{"model_id", "transcript", "voice": {"mode": "id", "id"},
//!   "output_format": {"container": "raw", "encoding", "sample_rate"}, "context_id",
//!   "continue", "language"?, "max_buffer_delay_ms"?}`, many contexts on one socket. Inputs on
//!   one context must keep every field but `transcript`, `continue` (and `duration`) the same;
//!   none may follow `continue: false`. Violations and missing fields get
//!   `{"type": "error", "done": true, "error", "status_code": 400, "context_id"}`. Only
//!   `pcm_s16le` is made here.
//! - Each transcript is spoken as it comes (as with `max_buffer_delay_ms: 0`):
//!   `{"type": "chunk", "data": "<base64>", "done": false, "status_code": 206, "step_time",
//!   "context_id"}` frames, faster than real time; after the `continue: false` input's audio,
//!   `{"type": "done", "done": true, "status_code": 206, "context_id"}`.
//! - `{"context_id", "cancel": true}` stops that context: its audio still queued is dropped.
//!
//! Scripted modes: answer each context's first request with an `error` frame (a status code
//! and message), stall (accept everything, send nothing), or drop the first socket. The fake records the handshakes
//! (headers, query), every packet, and each cancel with its time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::support::fake_server::{self, Listening, handshake_headers, query_value};
use crate::support::model_audio::spoken_tone;

const PATH: &str = "/tts/websocket";
const RATES: [u64; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];

#[derive(Debug, Clone)]
pub enum Mode {
    Speak,
    /// Each context's first request gets an `error` frame with this status and message.
    Error {
        status_code: u16,
        message: String,
    },
    /// Send nothing; keep the socket open.
    Stall,
    /// Drop the first socket (TCP, no close frame) at its first request; speak on the others.
    DropFirstSocket,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub api_key: String,
    pub mode: Mode,
    pub chunk_ms: u32,
    pub chunk_interval: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            api_key: "sk_car_test".into(),
            mode: Mode::Speak,
            chunk_ms: 100,
            chunk_interval: Duration::from_millis(2),
        }
    }
}

/// A WebSocket handshake the fake accepted or refused.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub query: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        fake_server::header(&self.headers, name)
    }
}

#[derive(Default)]
struct Shared {
    handshakes: Mutex<Vec<Handshake>>,
    packets: Mutex<Vec<Value>>,
    cancels: Mutex<Vec<(String, Instant)>>,
}

pub struct FakeCartesia {
    /// `ws://127.0.0.1:<port>/tts/websocket`
    pub url: String,
    shared: Arc<Shared>,
    _listening: Listening,
}

impl FakeCartesia {
    pub async fn start(script: Script) -> FakeCartesia {
        let shared = Arc::new(Shared::default());
        let listening = Listening::start(shared.clone(), script, serve).await;
        FakeCartesia {
            url: format!("ws://127.0.0.1:{}{PATH}", listening.port),
            shared,
            _listening: listening,
        }
    }

    /// Every handshake, accepted or not: one per socket the client opened.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.shared.handshakes.lock().unwrap().clone()
    }

    pub fn packets(&self) -> Vec<Value> {
        self.shared.packets.lock().unwrap().clone()
    }

    /// Cancelled contexts, with when the cancel arrived.
    pub fn cancels(&self) -> Vec<(String, Instant)> {
        self.shared.cancels.lock().unwrap().clone()
    }
}

/// A context's fixed fields (all but transcript, continue, duration) and whether it ended.
struct Context {
    fields: Value,
    ended: bool,
}

/// What goes out next, in order.
enum Out {
    Chunk { context: String, data: Vec<u8> },
    Done { context: String },
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, shared: Arc<Shared>, script: Arc<Script>) {
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let query = req.uri().query().unwrap_or("").to_string();
        let headers = handshake_headers(req);
        let handshake = Handshake { query, headers };
        shared.handshakes.lock().unwrap().push(handshake.clone());
        let refuse = |status: StatusCode, body: &str| {
            let mut r = ErrorResponse::new(Some(body.to_string()));
            *r.status_mut() = status;
            Err(r)
        };
        if req.uri().path() != PATH {
            return refuse(StatusCode::NOT_FOUND, "Not Found");
        }
        let key = handshake
            .header("x-api-key")
            .or(query_value(&handshake.query, "api_key"));
        if key != Some(script.api_key.as_str()) {
            return refuse(StatusCode::UNAUTHORIZED, "Invalid API key");
        }
        if handshake.header("cartesia-version").is_none()
            && query_value(&handshake.query, "cartesia_version").is_none()
        {
            return refuse(StatusCode::BAD_REQUEST, "Missing Cartesia-Version");
        }
        Ok(resp)
    };
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let first_socket = shared.handshakes.lock().unwrap().len() == 1;
    let mut contexts: HashMap<String, Context> = HashMap::new();
    let mut out: VecDeque<Out> = VecDeque::new();
    let mut tick = tokio::time::interval(script.chunk_interval);
    loop {
        tokio::select! {
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let packet: Value = serde_json::from_str(&text).unwrap_or(json!({"<not json>": text}));
                shared.packets.lock().unwrap().push(packet.clone());
                if first_socket && matches!(script.mode, Mode::DropFirstSocket) {
                    return;
                }
                let reply = on_packet(&packet, &mut contexts, &mut out, &shared, &script);
                if let Some(reply) = reply
                    && ws.send(Message::text(reply.to_string())).await.is_err()
                {
                    return;
                }
            }
            _ = tick.tick(), if !out.is_empty() && !matches!(script.mode, Mode::Stall) => {
                let frame = match out.pop_front().expect("not empty") {
                    Out::Chunk { context, data } => json!({
                        "type": "chunk", "data": B64.encode(data), "done": false,
                        "status_code": 206, "step_time": 1.5, "context_id": context,
                    }),
                    Out::Done { context } => json!({
                        "type": "done", "done": true, "status_code": 206, "context_id": context,
                    }),
                };
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn error_frame(context: Option<&str>, status_code: u16, message: &str) -> Value {
    json!({"type": "error", "done": true, "error": message, "status_code": status_code, "context_id": context})
}

/// Take one client packet; the frame to answer at once, if any (errors).
fn on_packet(
    packet: &Value,
    contexts: &mut HashMap<String, Context>,
    out: &mut VecDeque<Out>,
    shared: &Shared,
    script: &Script,
) -> Option<Value> {
    let Some(id) = packet["context_id"].as_str() else {
        return Some(error_frame(None, 400, "context_id is required"));
    };
    if packet["cancel"] == json!(true) {
        shared
            .cancels
            .lock()
            .unwrap()
            .push((id.to_string(), Instant::now()));
        out.retain(
            |o| !matches!(o, Out::Chunk { context, .. } | Out::Done { context } if context == id),
        );
        contexts.entry(id.to_string()).or_insert(Context {
            fields: Value::Null,
            ended: true,
        });
        return None;
    }
    let Some(transcript) = packet["transcript"].as_str() else {
        return Some(error_frame(Some(id), 400, "transcript is required"));
    };
    let format = &packet["output_format"];
    let rate = format["sample_rate"].as_u64().filter(|r| RATES.contains(r));
    let valid = packet["model_id"].as_str().is_some()
        && packet["voice"]["mode"] == "id"
        && packet["voice"]["id"].as_str().is_some()
        && format["container"] == "raw"
        && format["encoding"] == "pcm_s16le"
        && rate.is_some();
    if !valid {
        let message = "model_id, voice {mode: id, id} and output_format {container: raw, encoding: pcm_s16le, sample_rate} are required";
        return Some(error_frame(Some(id), 400, message));
    }
    let mut fields = packet.clone();
    for changing in ["transcript", "continue", "duration"] {
        fields.as_object_mut().expect("an object").remove(changing);
    }
    let first = !contexts.contains_key(id);
    let context = contexts.entry(id.to_string()).or_insert(Context {
        fields: fields.clone(),
        ended: false,
    });
    if context.ended {
        return Some(error_frame(Some(id), 400, "this context has already ended"));
    }
    if context.fields != fields {
        let message = "inputs on the same context must keep all fields except transcript, continue and duration the same";
        return Some(error_frame(Some(id), 400, message));
    }
    if let (
        true,
        Mode::Error {
            status_code,
            message,
        },
    ) = (first, &script.mode)
    {
        context.ended = true;
        return Some(error_frame(Some(id), *status_code, message));
    }
    let rate = rate.expect("checked") as u32;
    let audio = spoken_tone(transcript, rate);
    let chunk = (rate * 2 * script.chunk_ms / 1000) as usize;
    out.extend(audio.chunks(chunk.max(2)).map(|data| Out::Chunk {
        context: id.to_string(),
        data: data.to_vec(),
    }));
    if packet["continue"] != json!(true) {
        context.ended = true;
        out.push_back(Out::Done {
            context: id.to_string(),
        });
    }
    None
}
