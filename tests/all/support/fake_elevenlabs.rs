//! A protocol-faithful fake of ElevenLabs' single-context text-to-speech WebSocket,
//! `/v1/text-to-speech/{voice_id}/stream-input`, on 127.0.0.1 (protocols.md §5.5; the shapes
//! below checked against the service's AsyncAPI description of `stream-input`, its Python
//! SDK's `realtime_tts.py` and LiveKit's ElevenLabs plugin):
//!
//! - Query `model_id` and `output_format` (here one of `pcm_8000|16000|22050|24000|44100`,
//!   the raw PCM formats; the others are compressed and not made here); key in the
//!   `xi-api-key` header or `xi-api-key` / `xi_api_key` in the first message.
//! - First message `{"text": " ", voice_settings?, generation_config?}`; then
//!   `{"text": "<words> ", "flush"?}` (text should end with a space: the fake records any that
//!   does not); `{"text": ""}` ends the input. `voice_settings` and `generation_config` may
//!   only come first: later, changed, the service closes with 1008 and the message quoted
//!   below (as users' logs report it).
//! - Text waits in a buffer until it reaches the chunk schedule (120, 160, 250, 290 characters
//!   by default, or `generation_config.chunk_length_schedule`), a `"flush": true` packet, or
//!   the end; then its audio goes out as `{"audio": "<base64>", "isFinal": null,
//!   "normalizedAlignment": null, "alignment": null}` frames, faster than real time; after
//!   the end, `{"isFinal": true}` and a normal close.
//! - Refusals close with 1008 (policy violation) and a reason, as the service does (a bad
//!   key, a bad first message, a changed setting).
//!
//! Scripted modes: close with a given code and reason at the first text, or stall (send
//! nothing after the handshake, stay open). The fake records each socket's path, query,
//! headers and packets, and when the client closed it before the final frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::support::fake_server::{self, Listening, handshake_headers, query_value};
use crate::support::model_audio::spoken_tone;

const PCM_RATES: [u32; 5] = [8_000, 16_000, 22_050, 24_000, 44_100];
const DEFAULT_SCHEDULE: [usize; 4] = [120, 160, 250, 290];
const SETTINGS_CHANGED: &str = "voice_settings field must be provided in the first message and then either be not provided or not change.";

#[derive(Debug, Clone)]
pub enum Mode {
    Speak,
    /// Close with this code and reason when the first text arrives.
    Close {
        code: u16,
        reason: String,
    },
    /// Say nothing after the handshake; keep the socket open.
    Stall,
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
            api_key: "xi-test-key".into(),
            mode: Mode::Speak,
            chunk_ms: 100,
            chunk_interval: Duration::from_millis(2),
        }
    }
}

/// One socket (one utterance) as the fake saw it.
#[derive(Debug, Clone, Default)]
pub struct Utterance {
    pub path: String,
    pub query: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub packets: Vec<Value>,
    /// Text packets whose text did not end with a space.
    pub unspaced: usize,
    pub final_sent: bool,
    /// When the client closed the socket before the final frame.
    pub closed_early: Option<Instant>,
}

impl Utterance {
    pub fn header(&self, name: &str) -> Option<&str> {
        fake_server::header(&self.headers, name)
    }
}

pub struct FakeElevenLabs {
    /// `ws://127.0.0.1:<port>/v1/text-to-speech`
    pub url: String,
    utterances: Arc<Mutex<Vec<Utterance>>>,
    _listening: Listening,
}

impl FakeElevenLabs {
    pub async fn start(script: Script) -> FakeElevenLabs {
        let utterances = Arc::new(Mutex::new(Vec::new()));
        let listening = Listening::start(utterances.clone(), script, serve).await;
        FakeElevenLabs {
            url: format!("ws://127.0.0.1:{}/v1/text-to-speech", listening.port),
            utterances,
            _listening: listening,
        }
    }

    pub fn utterances(&self) -> Vec<Utterance> {
        self.utterances.lock().unwrap().clone()
    }
}

type Ws = WebSocketStream<TcpStream>;

/// The socket's state: its record's index and the audio still to send.
struct Conn {
    index: usize,
    utterances: Arc<Mutex<Vec<Utterance>>>,
    rate: u32,
    schedule: Vec<usize>,
    /// Generations made so far (which step of the schedule applies).
    generations: usize,
    buffer: String,
    first: Option<Value>,
    chunks: VecDeque<Vec<u8>>,
    ended: bool,
}

impl Conn {
    fn record(&self, f: impl FnOnce(&mut Utterance)) {
        f(&mut self.utterances.lock().unwrap()[self.index]);
    }

    /// Synthesise the buffer into chunks of `chunk_ms`.
    fn generate(&mut self, chunk_ms: u32) {
        let audio = spoken_tone(&std::mem::take(&mut self.buffer), self.rate);
        let chunk = (self.rate * 2 * chunk_ms / 1000) as usize;
        self.chunks
            .extend(audio.chunks(chunk.max(2)).map(<[u8]>::to_vec));
        self.generations += 1;
    }

    fn threshold(&self) -> usize {
        let step = self.generations.min(self.schedule.len() - 1);
        self.schedule[step]
    }
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, utterances: Arc<Mutex<Vec<Utterance>>>, script: Arc<Script>) {
    let mut seen = Utterance::default();
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        seen.path = req.uri().path().to_string();
        seen.query = req.uri().query().unwrap_or("").to_string();
        seen.headers = handshake_headers(req);
        let parts: Vec<&str> = seen.path.split('/').collect();
        if !matches!(parts.as_slice(), ["", "v1", "text-to-speech", voice, "stream-input"] if !voice.is_empty())
        {
            let mut r = ErrorResponse::new(Some("{\"detail\":\"Not Found\"}".into()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return Err(r);
        }
        Ok(resp)
    };
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let index = {
        let mut all = utterances.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let rate = query_value(&seen.query, "output_format")
        .and_then(|f| f.strip_prefix("pcm_"))
        .and_then(|r| r.parse().ok())
        .filter(|r| PCM_RATES.contains(r));
    let mut conn = Conn {
        index,
        utterances,
        rate: rate.unwrap_or(0),
        schedule: DEFAULT_SCHEDULE.to_vec(),
        generations: 0,
        buffer: String::new(),
        first: None,
        chunks: VecDeque::new(),
        ended: false,
    };
    if rate.is_none() || query_value(&seen.query, "model_id").is_none() {
        let _ = close(
            &mut ws,
            1008,
            "Invalid model_id or output_format for this fake",
        )
        .await;
        return;
    }
    let header_key = seen.header("xi-api-key").map(str::to_string);
    let mut tick = tokio::time::interval(script.chunk_interval);
    loop {
        tokio::select! {
            message = ws.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        conn.record(|u| if !u.final_sent { u.closed_early = Some(Instant::now()) });
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                let packet: Value = serde_json::from_str(&text).unwrap_or(json!({"<not json>": text}));
                conn.record(|u| u.packets.push(packet.clone()));
                if let Some((code, reason)) = on_packet(&mut conn, packet, header_key.as_deref(), &script) {
                    let _ = close(&mut ws, code, &reason).await;
                    return;
                }
            }
            _ = tick.tick(), if !matches!(script.mode, Mode::Stall) && (!conn.chunks.is_empty() || conn.ended) => {
                let frame = match conn.chunks.pop_front() {
                    Some(chunk) => json!({
                        "audio": B64.encode(chunk),
                        "isFinal": null,
                        "normalizedAlignment": null,
                        "alignment": null,
                    }),
                    None => json!({"isFinal": true}),
                };
                let last = frame["isFinal"] == json!(true);
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    return;
                }
                if last {
                    conn.record(|u| u.final_sent = true);
                    let _ = close(&mut ws, 1000, "").await;
                    return;
                }
            }
        }
    }
}

/// Take one client packet; a close code and reason when the service would close on it.
fn on_packet(
    conn: &mut Conn,
    packet: Value,
    header_key: Option<&str>,
    script: &Script,
) -> Option<(u16, String)> {
    let Some(text) = packet["text"].as_str() else {
        return Some((1008, "Every message must have a 'text' field".into()));
    };
    if conn.first.is_none() {
        let key = header_key
            .or(packet["xi-api-key"].as_str())
            .or(packet["xi_api_key"].as_str());
        if key != Some(script.api_key.as_str()) {
            return Some((1008, "Invalid API key".into()));
        }
        if text != " " {
            return Some((
                1008,
                "The first message must have a single space as text".into(),
            ));
        }
        if let Some(schedule) = packet["generation_config"]["chunk_length_schedule"].as_array() {
            conn.schedule = schedule
                .iter()
                .filter_map(|n| n.as_f64().map(|n| n as usize))
                .collect();
        }
        conn.first = Some(packet);
        return None;
    }
    let first = conn.first.as_ref().expect("set above");
    for setting in ["voice_settings", "generation_config"] {
        if !packet[setting].is_null() && packet[setting] != first[setting] {
            return Some((1008, SETTINGS_CHANGED.into()));
        }
    }
    if conn.ended {
        return Some((1008, "Text sent after the end of input".into()));
    }
    if let Mode::Close { code, reason } = &script.mode {
        return Some((*code, reason.clone()));
    }
    if text.is_empty() {
        conn.ended = true;
        if !conn.buffer.trim().is_empty() {
            conn.generate(script.chunk_ms);
        }
        return None;
    }
    if !text.ends_with(' ') {
        conn.record(|u| u.unspaced += 1);
    }
    conn.buffer.push_str(text);
    if packet["flush"] == json!(true) || conn.buffer.chars().count() >= conn.threshold() {
        conn.generate(script.chunk_ms);
    }
    None
}

async fn close(
    ws: &mut Ws,
    code: u16,
    reason: &str,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.close(Some(CloseFrame {
        code: code.into(),
        reason: reason.to_string().into(),
    }))
    .await
}
