//! OpenAI-compatible transcription (`POST {base-url}/audio/transcriptions`, multipart): one
//! request per caller turn. Works with OpenAI and with local whisper servers that copy its API.
//!
//! The service transcribes whole files, so the turn's bounds come from the cascade's voice
//! detector: audio is kept from ~300 ms before [`SttInput::SpeechStarted`] (so the first word is
//! whole) to [`SttInput::SpeechStopped`], wrapped as a WAV at the rate it came in (no
//! resampling) and sent. Requests of consecutive turns may overlap; each turn's events are
//! passed on only after the previous turn's, so finals come out in turn order.
//!
//! A failed request ends the stream with [`SttEvent::Failed`] (the interface's rule): the
//! turns after it are not transcribed; the cascade reports the failure and may open a new
//! stream. Dropping the input transcribes a turn still open, then ends the stream.
//!
//! Wire (openai-python `resources/audio/transcriptions.py`, `types/audio/transcription.py`,
//! `transcription_text_delta_event.py`, `transcription_text_done_event.py`; protocols.md §5.2):
//! fields `file`, `model`, `language` (ISO-639-1), `prompt`, `response_format`, `stream`
//! (sent only when true, as the SDK omits it otherwise); the JSON reply is
//! `{"text", "usage": {"type": "duration", "seconds"} | {"type": "tokens", …}}`; the SSE reply
//! is `data: {"type":"transcript.text.delta","delta"}` events then
//! `{"type":"transcript.text.done","text","usage"}`. Errors are
//! `{"error":{"message","type","param","code"}}` with the HTTP status.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{SpeechToText, SttEvent, SttInput, SttStream};
use crate::model::cascade::http::{self, SseEvent, SseReader};
use crate::model::{AudioFormat, CHANNEL_CAPACITY, ErrorKind, OpenAiAuth, ProviderError, Secret};

const NAME: &str = "openai";

/// Caller audio kept from before the detector's speech start, so the first word is whole.
const PRE_ROLL_MS: u64 = 300;

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-4o-mini-transcribe".into()
}
fn default_stream() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// Settings of an OpenAI-compatible transcription endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenAiSttConfig {
    /// API root; the request goes to `{base-url}/audio/transcriptions`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// None sends no credentials (local whisper servers).
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub auth: OpenAiAuth,
    /// Extra trusted root certificates (PEM), for self-hosted endpoints with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Words to steer recognition (names, jargon), sent as `prompt`.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Ask for SSE deltas (interim text); `whisper-1` cannot stream, set false for it.
    #[serde(default = "default_stream")]
    pub stream: bool,
    /// Longest a turn's whole request may take, from sending to the last byte of the reply.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for OpenAiSttConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            model: default_model(),
            api_key: None,
            auth: OpenAiAuth::default(),
            ca_file: None,
            prompt: None,
            stream: default_stream(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// OpenAI-compatible transcription service: one request per caller turn.
#[derive(Debug, Clone)]
pub struct OpenAiStt {
    config: OpenAiSttConfig,
    http: reqwest::Client,
}

impl OpenAiStt {
    /// A client over the public roots plus `ca-file`; fails only on an unreadable `ca-file`.
    pub fn new(config: OpenAiSttConfig) -> Result<Self, ProviderError> {
        let http = http::client(
            config.ca_file.as_deref(),
            Duration::from_millis(config.timeout_ms),
        )?;
        Ok(Self { config, http })
    }
}

impl SpeechToText for OpenAiStt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> Vec<AudioFormat> {
        [16000, 8000, 24000, 48000]
            .into_iter()
            .map(|rate| AudioFormat::Pcm16 { rate })
            .collect()
    }

    fn open(
        &self,
        format: AudioFormat,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<SttStream, ProviderError>> {
        Box::pin(async move {
            let AudioFormat::Pcm16 { rate } = format else {
                return Err(ProviderError::new(
                    ErrorKind::Unsupported,
                    None,
                    format!("{NAME} transcription takes PCM16, not {format}"),
                ));
            };
            let (input, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
            let (events_tx, events) = mpsc::channel(CHANNEL_CAPACITY);
            let (turns_tx, turns_rx) = mpsc::unbounded_channel();
            let request = Request {
                http: self.http.clone(),
                config: self.config.clone(),
                language: language.as_deref().map(iso_639_1),
                rate,
            };
            tokio::spawn(collect_turns(input_rx, turns_tx, request));
            tokio::spawn(forward_in_order(turns_rx, events_tx));
            Ok(SttStream { input, events })
        })
    }
}

/// The primary language subtag of a BCP-47 tag (`en-US` → `en`), as the endpoint wants it.
fn iso_639_1(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
}

/// What one turn's request needs besides its audio.
#[derive(Clone)]
struct Request {
    http: reqwest::Client,
    config: OpenAiSttConfig,
    language: Option<String>,
    rate: u32,
}

/// Cut the input into turns (pre-roll + speech) and start each turn's request as it ends; its
/// events go to a channel of their own, queued on `turns` in turn order. A turn's channel is
/// unbounded so that a turn waiting behind a slower one never stalls its own request (and
/// runs into its timeout): it holds a few interims and a final.
async fn collect_turns(
    mut input: mpsc::Receiver<SttInput>,
    turns: mpsc::UnboundedSender<mpsc::UnboundedReceiver<SttEvent>>,
    request: Request,
) {
    let format = AudioFormat::Pcm16 { rate: request.rate };
    // Whole samples: a frame boundary never splits one.
    let pre_roll_bytes = (format.bytes_per_ms() * PRE_ROLL_MS as f64) as usize & !1;
    let mut pre_roll: VecDeque<u8> = VecDeque::with_capacity(pre_roll_bytes * 2);
    let mut turn: Option<Vec<u8>> = None;
    loop {
        let message = input.recv().await;
        match message {
            Some(SttInput::Audio(frame)) => match turn.as_mut() {
                Some(audio) => audio.extend_from_slice(&frame),
                None => {
                    pre_roll.extend(frame);
                    let excess = pre_roll.len().saturating_sub(pre_roll_bytes);
                    pre_roll.drain(..excess);
                }
            },
            Some(SttInput::SpeechStarted) => {
                if turn.is_none() {
                    turn = Some(pre_roll.drain(..).collect());
                }
            }
            Some(SttInput::SpeechStopped) | None => {
                if let Some(audio) = turn.take() {
                    let (tx, rx) = mpsc::unbounded_channel();
                    if turns.send(rx).is_err() {
                        return; // the stream failed or its reader left
                    }
                    tokio::spawn(transcribe_turn(request.clone(), audio, tx));
                }
                if message.is_none() {
                    return;
                }
            }
        }
    }
}

/// Pass each turn's events on, turn after turn; stop after a failure.
async fn forward_in_order(
    mut turns: mpsc::UnboundedReceiver<mpsc::UnboundedReceiver<SttEvent>>,
    events: mpsc::Sender<SttEvent>,
) {
    while let Some(mut turn) = turns.recv().await {
        while let Some(event) = turn.recv().await {
            let failed = matches!(event, SttEvent::Failed(_));
            if events.send(event).await.is_err() || failed {
                return;
            }
        }
    }
}

/// One turn's request; gives up when nobody waits for its events any more.
async fn transcribe_turn(
    request: Request,
    audio: Vec<u8>,
    events: mpsc::UnboundedSender<SttEvent>,
) {
    let seconds = audio.len() as f64 / 2.0 / f64::from(request.rate);
    let timeout = Duration::from_millis(request.config.timeout_ms);
    let run = tokio::time::timeout(timeout, request.send(audio, seconds, &events));
    let outcome = tokio::select! {
        () = events.closed() => return,
        outcome = run => outcome,
    };
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error,
        Err(_) => http::timed_out("no transcription", timeout),
    };
    warn!(stt = NAME, kind = ?error.kind, code = ?error.code, message = %error.message, "transcription failed");
    let _ = events.send(SttEvent::Failed(error));
}

/// The reply's `usage`, when it is billed by duration.
#[derive(Deserialize)]
struct Usage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seconds: Option<f64>,
}

impl Usage {
    fn seconds(usage: Option<Usage>, audio_seconds: f64) -> f64 {
        usage
            .filter(|u| u.kind == "duration")
            .and_then(|u| u.seconds)
            .unwrap_or(audio_seconds)
    }
}

/// Non-streamed reply.
#[derive(Deserialize)]
struct Transcription {
    text: String,
    #[serde(default)]
    usage: Option<Usage>,
}

/// One SSE event of a streamed reply.
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

impl Request {
    async fn send(
        &self,
        audio: Vec<u8>,
        seconds: f64,
        events: &mpsc::UnboundedSender<SttEvent>,
    ) -> Result<(), ProviderError> {
        let config = &self.config;
        let wav = wav(self.rate, &audio);
        let file = reqwest::multipart::Part::bytes(wav)
            .file_name("turn.wav")
            .mime_str("audio/wav")
            .expect("a valid MIME type");
        let mut form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", config.model.clone())
            .text("response_format", "json");
        if let Some(language) = &self.language {
            form = form.text("language", language.clone());
        }
        if let Some(prompt) = &config.prompt {
            form = form.text("prompt", prompt.clone());
        }
        if config.stream {
            form = form.text("stream", "true");
        }
        let url = format!(
            "{}/audio/transcriptions",
            config.base_url.trim_end_matches('/')
        );
        let post = http::authorized(
            self.http.post(&url).multipart(form),
            config.api_key.as_ref(),
            config.auth,
        );
        debug!(stt = NAME, seconds, "sending a turn");
        let response = post.send().await.map_err(http::transport_error)?;
        if !response.status().is_success() {
            // The turn's whole request is bounded by `timeout-ms` already.
            let wait = Duration::from_millis(config.timeout_ms);
            return Err(http::error_answer(response, wait).await);
        }
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        // A server may answer JSON though a stream was asked for (whisper-1, local servers).
        let (text, usage) = if is_sse {
            read_sse(response, events).await?
        } else {
            let body = response.bytes().await.map_err(http::transport_error)?;
            let reply: Transcription = serde_json::from_slice(&body).map_err(protocol_error)?;
            (reply.text, reply.usage)
        };
        let final_text = SttEvent::Final {
            text: text.trim().to_string(),
            confidence: None,
        };
        let usage = SttEvent::Usage {
            seconds: Usage::seconds(usage, seconds),
        };
        for event in [final_text, usage] {
            let _ = events.send(event);
        }
        Ok(())
    }
}

/// Read SSE events: each delta as [`SttEvent::Interim`] (the text so far), until `done`.
async fn read_sse(
    response: reqwest::Response,
    events: &mpsc::UnboundedSender<SttEvent>,
) -> Result<(String, Option<Usage>), ProviderError> {
    let mut body = response.bytes_stream();
    let mut sse = SseReader::default();
    let mut so_far = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http::transport_error)?;
        for event in sse.push(&chunk) {
            // `transcript.text.done` ends the reply; a `[DONE]` some servers add says no more.
            let SseEvent::Data(data) = event else {
                continue;
            };
            let event: StreamEvent = serde_json::from_str(&data).map_err(protocol_error)?;
            match event.kind.as_str() {
                "transcript.text.delta" => {
                    so_far.push_str(event.delta.as_deref().unwrap_or_default());
                    let _ = events.send(SttEvent::Interim(so_far.trim().to_string()));
                }
                "transcript.text.done" => {
                    return Ok((event.text.unwrap_or(so_far), event.usage));
                }
                other => debug!(stt = NAME, event = other, "ignored transcription event"),
            }
        }
    }
    Err(ProviderError::new(
        ErrorKind::Protocol,
        None,
        "the transcription stream ended before transcript.text.done",
    ))
}

/// Mono PCM16 little-endian `pcm` at `rate` as a WAV file.
fn wav(rate: u32, pcm: &[u8]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + pcm.len()));
    let mut writer = hound::WavWriter::new(&mut out, spec).expect("WAV header into memory");
    for sample in pcm.chunks_exact(2) {
        writer
            .write_sample(i16::from_le_bytes([sample[0], sample[1]]))
            .expect("WAV samples into memory");
    }
    writer.finalize().expect("WAV into memory");
    out.into_inner()
}

fn protocol_error(error: serde_json::Error) -> ProviderError {
    ProviderError::new(ErrorKind::Protocol, None, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_is_the_primary_subtag() {
        assert_eq!(iso_639_1("en-US"), "en");
        assert_eq!(iso_639_1("pt_BR"), "pt");
        assert_eq!(iso_639_1("DE"), "de");
    }

    #[test]
    fn wav_wraps_pcm_at_its_rate() {
        let pcm: Vec<u8> = [1i16, -2, 300]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let wav = wav(8000, &pcm);
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples, [1, -2, 300]);
    }

    #[test]
    fn config_defaults_and_kebab_case() {
        let c: OpenAiSttConfig =
            serde_json::from_str(r#"{"base-url":"http://h/v1","stream":false,"timeout-ms":5}"#)
                .unwrap();
        assert_eq!(c.model, "gpt-4o-mini-transcribe");
        assert!(!c.stream);
        assert_eq!(c.timeout_ms, 5);
        assert!(serde_json::from_str::<OpenAiSttConfig>(r#"{"modle":"x"}"#).is_err());
    }
}
