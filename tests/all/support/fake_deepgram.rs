//! A fake of Deepgram's live transcription WebSocket (`/v1/listen`), on 127.0.0.1.
//!
//! Wire (protocols.md §5.4; Deepgram docs "Audio Keep Alive", "Close Stream", "Finalize",
//! "Endpointing & Interim Results", "Utterance End", "Speech Started", "STT Troubleshooting
//! WebSocket, NET, and DATA Errors"; deepgram-python-sdk
//! `extensions/types/sockets/listen_v1_{results,metadata,utterance_end,speech_started}_event.py`):
//! - the handshake needs `Authorization: Token <key>` (HTTP 401 otherwise) and the query
//!   `model`, `encoding`, `sample_rate`, `interim_results`, `endpointing`, `utterance_end_ms`
//!   (HTTP 400 when missing or not understood);
//! - binary frames are audio (`linear16`, mono, at `sample_rate`); text frames are
//!   `{"type":"KeepAlive"}` (no answer), `{"type":"Finalize"}` (the pending words as a final
//!   `Results` with `from_finalize: true`) and `{"type":"CloseStream"}` (pending words, then
//!   `Metadata`, then a normal close);
//! - speech is found by energy (RMS of 20 ms windows, on the audio's own clock):
//!   `SpeechStarted` (with `vad_events=true`), interim `Results` (`is_final: false`) every
//!   200 ms of speech revealing the next scripted transcript word by word, a final `Results`
//!   (`is_final: true`, `speech_final: true`, words with timings and confidence) after
//!   `endpointing` ms of silence, and `UtteranceEnd` `utterance_end_ms` after the last word;
//! - 10 s (configurable) without audio or KeepAlive closes with 1011 `NET-0001`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::model_audio::{pcm16_samples, rms};

/// Interim results are sent every this much speech.
const INTERIM_EVERY_MS: u32 = 200;
/// The window speech is detected in.
const WINDOW_MS: u32 = 20;

/// The fake's behaviour.
#[derive(Debug, Clone)]
pub struct Script {
    /// Key required as `Authorization: Token <key>`.
    pub api_key: String,
    /// Transcripts of successive utterances; then every utterance is "hello".
    pub transcripts: Vec<String>,
    /// Set `speech_final` on the final result after endpointing; false leaves turns to be
    /// ended by `UtteranceEnd` only (as in steady background noise).
    pub speech_final: bool,
    /// RMS of a 20 ms window above which it counts as speech.
    pub vad_rms: f64,
    /// Without audio or KeepAlive this long, close with 1011 `NET-0001`.
    pub idle_timeout: Duration,
    /// `Metadata.duration` reported at close; `None` reports the audio received.
    pub metadata_duration: Option<f64>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            api_key: "dg-test".into(),
            transcripts: Vec::new(),
            speech_final: true,
            vad_rms: 1000.0,
            idle_timeout: Duration::from_secs(10),
            metadata_duration: None,
        }
    }
}

/// One accepted or refused handshake.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct Shared {
    upgrades: Mutex<Vec<Upgrade>>,
    /// Text frames received (JSON), all connections, in order.
    received: Mutex<Vec<Value>>,
    /// Messages sent (JSON), all connections, in order.
    sent: Mutex<Vec<Value>>,
    audio_bytes: Mutex<usize>,
    transcripts: Mutex<VecDeque<String>>,
}

/// The running fake; stops when dropped.
pub struct FakeDeepgram {
    /// `ws://127.0.0.1:<port>/v1/listen`
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeDeepgram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDeepgram {
    pub async fn start(script: Script) -> FakeDeepgram {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            transcripts: Mutex::new(script.transcripts.clone().into()),
            ..Shared::default()
        });
        let script = Arc::new(script);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, s.clone(), script.clone()));
            }
        });
        FakeDeepgram {
            url: format!("ws://127.0.0.1:{port}/v1/listen"),
            shared,
            task,
        }
    }

    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.shared.upgrades.lock().unwrap().clone()
    }

    /// Control messages received, in order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Types of the control messages received, in order.
    pub fn received_types(&self) -> Vec<String> {
        types(&self.received())
    }

    /// Messages sent, in order.
    pub fn sent(&self) -> Vec<Value> {
        self.shared.sent.lock().unwrap().clone()
    }

    /// Audio bytes received over all connections.
    pub fn audio_bytes(&self) -> usize {
        *self.shared.audio_bytes.lock().unwrap()
    }

    /// Wait until `pred` holds for the messages sent, up to `timeout`.
    pub async fn wait_sent(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.shared.sent.lock().unwrap()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

/// The `type` of each message.
pub fn types(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Check the handshake; `Err` is the HTTP refusal.
fn check_upgrade(upgrade: &Upgrade, key: &str) -> Result<(), (StatusCode, String)> {
    let refuse = |status, code: &str, message: String| {
        let body = json!({"err_code": code, "err_msg": message, "request_id": "fake-request"});
        Err((status, body.to_string()))
    };
    if upgrade.path != "/v1/listen" {
        return refuse(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown path".into());
    }
    if upgrade.headers.get("authorization") != Some(&format!("Token {key}")) {
        let message = "Invalid credentials.".to_string();
        return refuse(StatusCode::UNAUTHORIZED, "INVALID_AUTH", message);
    }
    let q = &upgrade.query;
    let number = |name: &str| q.get(name).and_then(|v| v.parse::<u32>().ok());
    let bad = if q.get("encoding").map(String::as_str) != Some("linear16") {
        Some("encoding")
    } else if !matches!(number("sample_rate"), Some(8000 | 16000 | 24000 | 48000)) {
        Some("sample_rate")
    } else if q.get("model").is_none_or(String::is_empty) {
        Some("model")
    } else if q.get("interim_results").map(String::as_str) != Some("true") {
        Some("interim_results")
    } else if number("endpointing").is_none() {
        Some("endpointing")
    } else if number("utterance_end_ms").is_none() {
        Some("utterance_end_ms")
    } else {
        None
    };
    match bad {
        Some(name) => refuse(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            format!("missing or unsupported query parameter {name}"),
        ),
        None => Ok(()),
    }
}

type Ws = WebSocketStream<TcpStream>;

/// One connection's transcription state, on the audio's own clock.
struct Listener {
    shared: Arc<Shared>,
    script: Arc<Script>,
    rate: u32,
    endpointing_ms: u32,
    utterance_end_ms: u32,
    vad_events: bool,
    /// Samples not yet making a whole window.
    pending: Vec<i16>,
    /// Audio received, in ms.
    now_ms: u32,
    /// The utterance being heard: its start, its words, words revealed so far.
    utterance: Option<Utterance>,
    /// Time of the last word of the last final result, until `UtteranceEnd` is sent.
    last_word_end_ms: Option<u32>,
}

struct Utterance {
    start_ms: u32,
    last_speech_ms: u32,
    words: Vec<String>,
    speech_ms: u32,
}

impl Listener {
    fn next_transcript(&self) -> Vec<String> {
        let text = self
            .shared
            .transcripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| "hello".into());
        text.split_whitespace().map(str::to_string).collect()
    }

    /// Take audio; returns the messages it causes.
    fn audio(&mut self, bytes: &[u8]) -> Vec<Value> {
        self.pending.extend(pcm16_samples(bytes));
        let window = (self.rate * WINDOW_MS / 1000) as usize;
        let mut out = Vec::new();
        while self.pending.len() >= window {
            let samples: Vec<i16> = self.pending.drain(..window).collect();
            self.now_ms += WINDOW_MS;
            self.window(rms(&samples) > self.script.vad_rms, &mut out);
        }
        out
    }

    fn window(&mut self, speech: bool, out: &mut Vec<Value>) {
        let now = self.now_ms;
        if speech {
            if self.utterance.is_none() {
                if self.vad_events {
                    out.push(json!({"type": "SpeechStarted", "channel": [0],
                                    "timestamp": secs(now - WINDOW_MS)}));
                }
                let words = self.next_transcript();
                self.utterance = Some(Utterance {
                    start_ms: now - WINDOW_MS,
                    last_speech_ms: now,
                    words,
                    speech_ms: 0,
                });
            }
            self.last_word_end_ms = None;
            let u = self.utterance.as_mut().expect("set above");
            u.last_speech_ms = now;
            u.speech_ms += WINDOW_MS;
            if u.speech_ms.is_multiple_of(INTERIM_EVERY_MS) {
                let shown = (u.speech_ms / INTERIM_EVERY_MS) as usize;
                let words = u.words[..shown.min(u.words.len())].to_vec();
                let start = u.start_ms;
                out.push(self.results(&words, start, now, false, false, false));
            }
        } else if let Some(u) = &self.utterance
            && now - u.last_speech_ms >= self.endpointing_ms
        {
            out.extend(self.finish(self.script.speech_final, false));
        } else if let Some(last) = self.last_word_end_ms
            && now - last >= self.utterance_end_ms
        {
            out.push(json!({"type": "UtteranceEnd", "channel": [0, 1],
                            "last_word_end": secs(last)}));
            self.last_word_end_ms = None;
        }
    }

    /// The utterance heard so far as a final result.
    fn finish(&mut self, speech_final: bool, from_finalize: bool) -> Option<Value> {
        let u = self.utterance.take()?;
        self.last_word_end_ms = Some(u.last_speech_ms);
        Some(self.results(
            &u.words,
            u.start_ms,
            u.last_speech_ms,
            true,
            speech_final,
            from_finalize,
        ))
    }

    /// A `Results` message for `words` spoken evenly over `start_ms..end_ms`.
    fn results(
        &self,
        words: &[String],
        start_ms: u32,
        end_ms: u32,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Value {
        let step = (end_ms - start_ms) as f64 / 1000.0 / words.len().max(1) as f64;
        let timed: Vec<Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let start = start_ms as f64 / 1000.0 + step * i as f64;
                json!({"word": w.to_lowercase(), "start": start, "end": start + step,
                       "confidence": 0.98, "punctuated_word": w})
            })
            .collect();
        json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": secs(end_ms - start_ms),
            "start": secs(start_ms),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": words.join(" "),
                "confidence": if words.is_empty() { 0.0 } else { 0.98 },
                "words": timed,
            }]},
            "metadata": {"request_id": "fake-request",
                         "model_info": {"name": "general-nova-3", "version": "fake", "arch": "nova-3"},
                         "model_uuid": "00000000-0000-0000-0000-000000000000"},
        })
    }
}

fn secs(ms: u32) -> f64 {
    f64::from(ms) / 1000.0
}

async fn send(ws: &mut Ws, shared: &Shared, message: Value) -> bool {
    let text = message.to_string();
    shared.sent.lock().unwrap().push(message);
    ws.send(Message::text(text)).await.is_ok()
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, shared: Arc<Shared>, script: Arc<Script>) {
    let key = script.api_key.clone();
    let upgrades = shared.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let upgrade = Upgrade {
            path: req.uri().path().to_string(),
            query: url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        };
        let checked = check_upgrade(&upgrade, &key);
        upgrades.upgrades.lock().unwrap().push(upgrade);
        checked.map(|()| resp).map_err(|(status, body)| {
            let mut refusal = ErrorResponse::new(Some(body));
            *refusal.status_mut() = status;
            refusal
        })
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let query = shared
        .upgrades
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .query
        .clone();
    let number = |name: &str| query[name].parse::<u32>().unwrap();
    let mut listener = Listener {
        shared: shared.clone(),
        script: script.clone(),
        rate: number("sample_rate"),
        endpointing_ms: number("endpointing"),
        utterance_end_ms: number("utterance_end_ms"),
        vad_events: query.get("vad_events").is_some_and(|v| v == "true"),
        pending: Vec::new(),
        now_ms: 0,
        utterance: None,
        last_word_end_ms: None,
    };
    let mut last_data = tokio::time::Instant::now();
    loop {
        let idle = tokio::time::sleep_until(last_data + script.idle_timeout);
        let message = tokio::select! {
            () = idle => {
                // Deepgram's idle close (troubleshooting doc: NET-0001).
                let reason = "NET-0001: Deepgram did not receive audio data or a text message within the timeout window.";
                let frame = CloseFrame { code: CloseCode::Error, reason: reason.into() };
                let _ = ws.close(Some(frame)).await;
                return;
            }
            message = ws.next() => message,
        };
        let Some(Ok(message)) = message else { return };
        let replies = match message {
            Message::Binary(audio) => {
                last_data = tokio::time::Instant::now();
                *shared.audio_bytes.lock().unwrap() += audio.len();
                listener.audio(&audio)
            }
            Message::Text(text) => {
                let control: Value =
                    serde_json::from_str(&text).unwrap_or(json!({"type": "<not json>"}));
                shared.received.lock().unwrap().push(control.clone());
                match control["type"].as_str() {
                    Some("KeepAlive") => {
                        last_data = tokio::time::Instant::now();
                        Vec::new()
                    }
                    Some("Finalize") => Vec::from_iter(listener.finish(false, true)),
                    Some("CloseStream") => {
                        let mut last = Vec::from_iter(listener.finish(false, false));
                        let duration = script.metadata_duration.unwrap_or(secs(listener.now_ms));
                        last.push(json!({"type": "Metadata", "transaction_key": "deprecated",
                            "request_id": "fake-request",
                            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                            "created": "2026-01-01T00:00:00.000Z", "duration": duration,
                            "channels": 1}));
                        for message in last {
                            send(&mut ws, &shared, message).await;
                        }
                        let _ = ws.close(None).await;
                        // Read until the client's close answer ends the socket.
                        while let Some(Ok(_)) = ws.next().await {}
                        return;
                    }
                    _ => Vec::new(),
                }
            }
            Message::Close(_) => {
                let _ = SinkExt::close(&mut ws).await;
                return;
            }
            _ => Vec::new(),
        };
        for reply in replies {
            if !send(&mut ws, &shared, reply).await {
                return;
            }
        }
    }
}
