//! A protocol-faithful fake of OpenAI's speech endpoint, `POST /v1/audio/speech`, on
//! 127.0.0.1 (protocols.md §5.3, from the openai-python SDK's `speech_create_params`):
//!
//! - `Authorization: Bearer <key>`; a wrong or missing key gets 401 with OpenAI's error body
//!   `{"error": {"message", "type": "invalid_request_error", "param": null, "code":
//!   "invalid_api_key"}}` (§5.1, errors before streaming).
//! - A JSON body (`content-type: application/json`) with `model`, `input` and `voice`
//!   required (400 `missing_required_parameter` naming the `param` otherwise).
//!   `response_format` must be `pcm` here: raw 24 kHz 16-bit LE mono, no header, is the only
//!   format this fake makes (the service defaults to mp3).
//! - The audio streams as a chunked body, in chunks cut anywhere (an odd byte count each, as a
//!   network cuts them), faster than real time: the 440 Hz tone of `model_audio::spoken_tone`.
//!
//! Scripted modes answer every request with an error status and body, or send the headers
//! and the first chunk and then nothing while keeping the connection open (a stall); the
//! answer for one input can be held back (a slow first byte). The fake
//! records every request and counts the requests whose client hung up before the body ended.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::support::fake_server::{self, Listening};
use crate::support::model_audio::spoken_tone;
use crate::support::rest_fake::{self, Request};

/// `pcm` is 24 kHz.
pub const RATE: u32 = 24_000;

#[derive(Debug, Clone)]
pub enum Mode {
    Speak,
    /// Every request gets this status line (`"429 Too Many Requests"`) and an OpenAI error
    /// body with this code and message.
    Fail {
        status: &'static str,
        code: &'static str,
        message: &'static str,
    },
    /// Headers and the first chunk, then silence with the connection open.
    Stall,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub api_key: String,
    pub mode: Mode,
    /// Bytes per body chunk (odd, so samples are split across chunks).
    pub chunk_bytes: usize,
    pub chunk_interval: Duration,
    /// The answer to the request for this input waits this long (a slow first byte).
    pub held: Option<(String, Duration)>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            api_key: "sk-speech-test".into(),
            mode: Mode::Speak,
            // 100 ms at 24 kHz and one byte.
            chunk_bytes: 4801,
            chunk_interval: Duration::from_millis(2),
            held: None,
        }
    }
}

/// A request the fake got.
#[derive(Debug, Clone)]
pub struct SpeechRequest {
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub received: Instant,
}

impl SpeechRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        fake_server::header(&self.headers, name)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<SpeechRequest>>,
    /// When each request's client hung up before its body ended.
    aborted: Mutex<Vec<Instant>>,
}

pub struct FakeSpeech {
    /// `http://127.0.0.1:<port>/v1`
    pub base_url: String,
    shared: Arc<Shared>,
    _listening: Listening,
}

impl FakeSpeech {
    pub async fn start(script: Script) -> FakeSpeech {
        let shared = Arc::new(Shared::default());
        let listening = Listening::start(shared.clone(), script, serve).await;
        FakeSpeech {
            base_url: format!("http://127.0.0.1:{}/v1", listening.port),
            shared,
            _listening: listening,
        }
    }

    pub fn requests(&self) -> Vec<SpeechRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// When clients hung up on unfinished bodies.
    pub fn aborted(&self) -> Vec<Instant> {
        self.shared.aborted.lock().unwrap().clone()
    }
}

fn error_body(message: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
}

/// What a request is answered with, if not audio.
fn check(request: &Request, script: &Script) -> Result<Value, (&'static str, Value)> {
    if request.method != "POST" || request.path != "/v1/audio/speech" {
        let message = format!("Invalid URL ({} {})", request.method, request.path);
        return Err(("404 Not Found", error_body(&message, None, None)));
    }
    let key = request.authorization.strip_prefix("Bearer ");
    if key != Some(script.api_key.as_str()) {
        let message = match key {
            None => "You didn't provide an API key.".to_string(),
            Some(key) => format!("Incorrect API key provided: {key}."),
        };
        return Err((
            "401 Unauthorized",
            error_body(&message, None, Some("invalid_api_key")),
        ));
    }
    let json_type = fake_server::header(&request.headers, "content-type")
        .is_some_and(|v| v.starts_with("application/json"));
    let body = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .filter(|_| json_type);
    let Some(body) = body else {
        let message = "We could not parse the JSON body of your request.";
        return Err(("400 Bad Request", error_body(message, None, None)));
    };
    for param in ["model", "input", "voice"] {
        if body[param].as_str().is_none_or(str::is_empty) {
            let message = format!("Missing required parameter: '{param}'.");
            return Err((
                "400 Bad Request",
                error_body(&message, Some(param), Some("missing_required_parameter")),
            ));
        }
    }
    if body["response_format"] != "pcm" {
        let message = "This fake makes response_format 'pcm' only.";
        return Err((
            "400 Bad Request",
            error_body(message, Some("response_format"), None),
        ));
    }
    if let Mode::Fail {
        status,
        code,
        message,
    } = script.mode
    {
        return Err((status, error_body(message, None, Some(code))));
    }
    Ok(body)
}

async fn serve(tcp: TcpStream, shared: Arc<Shared>, script: Arc<Script>) {
    let _ = tcp.set_nodelay(true);
    let (read, mut write) = tcp.into_split();
    let mut read = BufReader::new(read);
    while let Some(request) = rest_fake::read_request(&mut read).await {
        let body = check(&request, &script);
        shared.requests.lock().unwrap().push(SpeechRequest {
            path: request.path,
            headers: request.headers,
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
            received: Instant::now(),
        });
        let body = match body {
            Ok(body) => body,
            Err((status, error)) => {
                let error = error.to_string();
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{error}",
                    error.len()
                );
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let input = body["input"].as_str().unwrap_or("");
        if let Some((_, hold)) = script.held.as_ref().filter(|(held, _)| held == input) {
            tokio::time::sleep(*hold).await;
        }
        let audio = spoken_tone(input, RATE);
        let finished = tokio::select! {
            finished = stream_audio(&mut write, &audio, &script) => finished,
            // The client sends nothing while a body streams: a read returns only at hang-up.
            _ = read.read_u8() => false,
        };
        if !finished {
            shared.aborted.lock().unwrap().push(Instant::now());
            return;
        }
    }
}

/// Write `audio` as a chunked body; false if the client went away first.
async fn stream_audio(write: &mut OwnedWriteHalf, audio: &[u8], script: &Script) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    if write.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    for (i, chunk) in audio.chunks(script.chunk_bytes).enumerate() {
        if i == 1 && matches!(script.mode, Mode::Stall) {
            return std::future::pending().await;
        }
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        if write.write_all(&framed).await.is_err() {
            return false;
        }
        tokio::time::sleep(script.chunk_interval).await;
    }
    write.write_all(b"0\r\n\r\n").await.is_ok()
}
