//! A fake of OpenAI's transcription endpoint, `POST /v1/audio/transcriptions`, on 127.0.0.1.
//!
//! Wire (openai-python `resources/audio/transcriptions.py` and `types/audio/`; protocols.md
//! §5.2): a multipart/form-data body with `file` (here it must be a mono 16-bit PCM WAV),
//! `model` (required), `language`, `prompt`, `response_format`, `stream`. The JSON reply is
//! `{"text", "usage"}` with `usage` `{"type":"duration","seconds"}` for `whisper-1` and
//! `{"type":"tokens","input_tokens","output_tokens","total_tokens"}` for the gpt-4o models
//! (`transcription.py`); `stream=true` answers `text/event-stream` with
//! `{"type":"transcript.text.delta","delta"}` events and a last
//! `{"type":"transcript.text.done","text","usage"}` (`transcription_text_delta_event.py`,
//! `transcription_text_done_event.py`), which `whisper-1` refuses. Errors are
//! `{"error":{"message","type","param","code"}}` (protocols.md §5.1), 401 `invalid_api_key`
//! for a wrong key.
//!
//! The body must be parsed here (multipart boundary, streamed reply), which the JSON-only
//! `rest_fake` does not do; each connection takes one request and closes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::media::Wav;

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Transcribe as this text.
    Text(String),
    /// Answer with this HTTP status and an error body.
    Fail {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

/// One scripted answer: what, and how long to hold it back first.
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: Outcome,
    pub delay: Duration,
}

impl Answer {
    pub fn text(text: &str) -> Answer {
        Answer {
            outcome: Outcome::Text(text.into()),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

/// The fake's behaviour.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Required as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Answers, one per request in arrival order; then every request is transcribed "hello".
    pub answers: Vec<Answer>,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub authorization: Option<String>,
    /// Text fields by name.
    pub fields: BTreeMap<String, String>,
    /// The `file` part's WAV rate and duration, when it was a valid WAV.
    pub wav_rate: Option<u32>,
    pub wav_ms: Option<f64>,
}

#[derive(Default)]
struct Shared {
    answers: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
}

/// The running fake; stops when dropped.
pub struct FakeTranscription {
    /// `http://127.0.0.1:<port>/v1`: the base URL to configure.
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeTranscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTranscription {
    pub async fn start(script: Script) -> FakeTranscription {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            answers: Mutex::new(script.answers.into()),
            received: Mutex::default(),
        });
        let key = Arc::new(script.api_key);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, s.clone(), key.clone()));
            }
        });
        FakeTranscription {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            shared,
            task,
        }
    }

    /// Requests received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

/// The request head and body as sent.
struct HttpRequest {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(tcp: &mut TcpStream) -> Option<HttpRequest> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split_whitespace();
    let (method, path) = (request_line.next()?.into(), request_line.next()?.into());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// One part of a multipart/form-data body.
struct Part {
    name: String,
    content: Vec<u8>,
}

/// Split a multipart/form-data body (RFC 7578) at `--boundary` lines.
fn multipart(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + d.len() <= body.len() {
        if &body[i..i + d.len()] == d {
            starts.push(i);
            i += d.len();
        } else {
            i += 1;
        }
    }
    let mut parts = Vec::new();
    for pair in starts.windows(2) {
        // Each part: CRLF after the delimiter, headers, a blank line, content, CRLF.
        let part = body.get(pair[0] + d.len() + 2..pair[1].checked_sub(2)?)?;
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&part[..split]);
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let name = disposition
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))?
            .trim_matches('"')
            .to_string();
        parts.push(Part {
            name,
            content: part[split + 4..].to_vec(),
        });
    }
    let last = *starts.last()?;
    (body.get(last + d.len()..last + d.len() + 2) == Some(b"--")).then_some(parts)
}

/// Rate and duration of a mono 16-bit PCM WAV; an error message for anything else.
fn check_wav(file: &[u8]) -> Result<(u32, f64), String> {
    if file.len() < 44 || &file[0..4] != b"RIFF" || &file[8..16] != b"WAVEfmt " {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([file[i], file[i + 1]]);
    let (tag, channels, bits) = (u16_at(20), u16_at(22), u16_at(34));
    if (tag, channels, bits) != (1, 1, 16) {
        return Err(format!(
            "not mono PCM16 (tag {tag}, {channels} channels, {bits} bits)"
        ));
    }
    let riff_len = u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
    if riff_len + 8 != file.len() {
        return Err(format!(
            "RIFF length {riff_len} + 8 is not the file's {}",
            file.len()
        ));
    }
    let wav = Wav::parse(file);
    Ok((
        wav.rate,
        wav.samples.len() as f64 * 1000.0 / f64::from(wav.rate),
    ))
}

fn error_body(kind: &str, param: Option<&str>, code: Option<&str>, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

async fn respond(tcp: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body).await;
}

async fn respond_error(tcp: &mut TcpStream, status: u16, error: Value) {
    respond(
        tcp,
        status,
        "application/json",
        error.to_string().as_bytes(),
    )
    .await;
}

async fn serve(mut tcp: TcpStream, shared: Arc<Shared>, key: Arc<Option<String>>) {
    let Some(request) = read_request(&mut tcp).await else {
        return;
    };
    if request.method != "POST" || request.path != "/v1/audio/transcriptions" {
        let error = error_body("invalid_request_error", None, None, "Unknown request URL");
        return respond_error(&mut tcp, 404, error).await;
    }
    let authorization = request.headers.get("authorization").cloned();
    let boundary = request
        .headers
        .get("content-type")
        .and_then(|t| t.strip_prefix("multipart/form-data"))
        .and_then(|t| {
            t.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
        })
        .map(|b| b.trim_matches('"').to_string());
    let parts = boundary.and_then(|b| multipart(&request.body, &b));
    let mut received = Received {
        authorization: authorization.clone(),
        fields: BTreeMap::new(),
        wav_rate: None,
        wav_ms: None,
    };
    let mut wav = Err("no file part".to_string());
    for part in parts.iter().flatten() {
        if part.name == "file" {
            wav = check_wav(&part.content);
        } else {
            let value = String::from_utf8_lossy(&part.content).into_owned();
            received.fields.insert(part.name.clone(), value);
        }
    }
    if let Ok((rate, ms)) = wav {
        (received.wav_rate, received.wav_ms) = (Some(rate), Some(ms));
    }
    shared.received.lock().unwrap().push(received.clone());

    if let Some(key) = key.as_ref()
        && authorization.as_deref() != Some(&format!("Bearer {key}"))
    {
        let message = "Incorrect API key provided.";
        let error = error_body(
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
            message,
        );
        return respond_error(&mut tcp, 401, error).await;
    }
    if parts.is_none() {
        let message = "Could not parse multipart form";
        let error = error_body("invalid_request_error", None, None, message);
        return respond_error(&mut tcp, 400, error).await;
    }
    let model = received.fields.get("model").cloned().unwrap_or_default();
    if model.is_empty() {
        let message = "you must provide a model parameter";
        let error = error_body("invalid_request_error", Some("model"), None, message);
        return respond_error(&mut tcp, 400, error).await;
    }
    let (_, wav_ms) = match wav {
        Ok(wav) => wav,
        Err(reason) => {
            let message = format!("Invalid file format: {reason}");
            let error = error_body("invalid_request_error", Some("file"), None, &message);
            return respond_error(&mut tcp, 400, error).await;
        }
    };
    let stream = received.fields.get("stream").is_some_and(|s| s == "true");
    if stream && model == "whisper-1" {
        let message = "Streaming is not supported for the whisper-1 model.";
        let error = error_body("invalid_request_error", Some("stream"), None, message);
        return respond_error(&mut tcp, 400, error).await;
    }

    let answer = shared
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Answer::text("hello"));
    tokio::time::sleep(answer.delay).await;
    let text = match answer.outcome {
        Outcome::Text(text) => text,
        Outcome::Fail {
            status,
            code,
            message,
        } => {
            let kind = if status >= 500 {
                "server_error"
            } else {
                "invalid_request_error"
            };
            let error = error_body(kind, None, code.as_deref(), &message);
            return respond_error(&mut tcp, status, error).await;
        }
    };
    let usage = if model == "whisper-1" {
        json!({"type": "duration", "seconds": (wav_ms / 1000.0).ceil()})
    } else {
        let input = (wav_ms / 100.0) as u64;
        let output = text.split_whitespace().count() as u64;
        json!({"type": "tokens", "input_tokens": input, "output_tokens": output,
               "total_tokens": input + output,
               "input_token_details": {"audio_tokens": input, "text_tokens": 0}})
    };
    if !stream {
        let body = json!({"text": text, "usage": usage}).to_string();
        return respond(&mut tcp, 200, "application/json", body.as_bytes()).await;
    }
    // SSE, one delta per word, written as the service streams them.
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
    if tcp.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    for word in words {
        let event = json!({"type": "transcript.text.delta", "delta": word, "logprobs": null});
        if tcp
            .write_all(format!("data: {event}\n\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done =
        json!({"type": "transcript.text.done", "text": text, "logprobs": null, "usage": usage});
    let _ = tcp.write_all(format!("data: {done}\n\n").as_bytes()).await;
    let _ = tcp.shutdown().await;
}
