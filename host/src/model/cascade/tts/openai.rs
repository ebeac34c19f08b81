//! OpenAI-compatible speech: `POST {base-url}/audio/speech` (protocols.md §5.3), one request
//! per piece of the answer with `response_format: "pcm"` (raw 24 kHz 16-bit little-endian mono,
//! no header), each body streamed out as it arrives. The next piece's request starts at once,
//! while the previous one still streams, so the service works ahead; audio leaves in the order
//! of the pieces.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::whole_samples::WholeSamples;
use super::{TextToSpeech, TtsEvent, TtsInput, TtsStream};
use crate::model::cascade::http;
use crate::model::{AudioFormat, CHANNEL_CAPACITY, ErrorKind, OpenAiAuth, ProviderError, Secret};

const NAME: &str = "openai";

/// `pcm` is 24 kHz and only that (protocols.md §5.3).
const FORMAT: AudioFormat = AudioFormat::Pcm16 { rate: 24_000 };

/// Body chunks of one piece held while an earlier piece still plays out.
const PIECE_CHUNKS: usize = 32;

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-4o-mini-tts".into()
}
fn default_voice() -> String {
    "marin".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_stall_timeout_ms() -> u64 {
    5_000
}

/// An OpenAI-compatible speech endpoint (OpenAI, Azure OpenAI, local servers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenAiTtsConfig {
    /// API root; requests go to `{base-url}/audio/speech`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Voice when the utterance names none.
    #[serde(default = "default_voice")]
    pub voice: String,
    /// None: no key header at all (local servers).
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub auth: OpenAiAuth,
    /// Extra trusted root certificates (PEM), for self-hosted endpoints with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How to speak (tone, pace), for models that take it (`gpt-4o-mini-tts`).
    #[serde(default)]
    pub instructions: Option<String>,
    /// 0.25–4.0; the service's default when unset.
    #[serde(default)]
    pub speed: Option<f32>,
    /// From sending a piece's request to the first byte of its audio.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest silence between two chunks of a body.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

impl Default for OpenAiTtsConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            model: default_model(),
            voice: default_voice(),
            api_key: None,
            auth: OpenAiAuth::default(),
            ca_file: None,
            instructions: None,
            speed: None,
            timeout_ms: default_timeout_ms(),
            stall_timeout_ms: default_stall_timeout_ms(),
        }
    }
}

/// Text to speech over an OpenAI-compatible speech endpoint.
#[derive(Debug)]
pub struct OpenAiTts {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: OpenAiTtsConfig,
    http: reqwest::Client,
}

impl OpenAiTts {
    /// A client over the public roots plus `ca-file`; fails only on an unusable `ca-file`.
    pub fn new(config: OpenAiTtsConfig) -> Result<Self, ProviderError> {
        let http = http::client(
            config.ca_file.as_deref(),
            Duration::from_millis(config.timeout_ms),
        )?;
        Ok(Self {
            shared: Arc::new(Shared { config, http }),
        })
    }
}

impl TextToSpeech for OpenAiTts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> Vec<AudioFormat> {
        vec![FORMAT]
    }

    fn open(
        &self,
        format: AudioFormat,
        voice: Option<String>,
        _language: Option<String>, // the endpoint takes none: the input text sets it
    ) -> BoxFuture<'_, Result<TtsStream, ProviderError>> {
        Box::pin(async move {
            if format != FORMAT {
                return Err(ProviderError::new(
                    ErrorKind::Unsupported,
                    None,
                    format!("{NAME} speech comes as {FORMAT} only, not {format}"),
                ));
            }
            let voice = voice.unwrap_or_else(|| self.shared.config.voice.clone());
            let (input_tx, input) = mpsc::channel(CHANNEL_CAPACITY);
            let (events, events_rx) = mpsc::channel(CHANNEL_CAPACITY);
            tokio::spawn(utterance(self.shared.clone(), voice, input, events));
            Ok(TtsStream {
                input: input_tx,
                events: events_rx,
            })
        })
    }
}

/// One piece's request, streaming into its own channel; aborted (and so its connection
/// closed) when dropped.
struct Piece {
    characters: u64,
    audio: mpsc::Receiver<Result<Vec<u8>, ProviderError>>,
    request: JoinHandle<()>,
}

impl Drop for Piece {
    fn drop(&mut self) {
        self.request.abort();
    }
}

/// Next body chunk of the oldest piece; `None` when it has ended; never with no piece.
async fn front_chunk(pieces: &mut VecDeque<Piece>) -> Option<Result<Vec<u8>, ProviderError>> {
    match pieces.front_mut() {
        Some(piece) => piece.audio.recv().await,
        None => std::future::pending().await,
    }
}

async fn utterance(
    shared: Arc<Shared>,
    voice: String,
    mut input: mpsc::Receiver<TtsInput>,
    events: mpsc::Sender<TtsEvent>,
) {
    let mut pieces = VecDeque::new();
    let mut samples = WholeSamples::default();
    let mut ended = false;
    // Returning drops `pieces`: requests still under way are aborted.
    loop {
        tokio::select! {
            // The stream was dropped (barge-in).
            _ = events.closed() => return,
            next = input.recv(), if !ended => match next {
                // The endpoint refuses an empty input; there is nothing to say anyway.
                Some(TtsInput::Text(text)) if text.trim().is_empty() => {}
                Some(TtsInput::Text(text)) => pieces.push_back(start_piece(&shared, &voice, text)),
                Some(TtsInput::End) => ended = true,
                None => return,
            },
            chunk = front_chunk(&mut pieces) => match chunk {
                Some(Ok(bytes)) => {
                    let audio = samples.take(&bytes);
                    if !audio.is_empty() && events.send(TtsEvent::Audio(audio)).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(service = NAME, %error, "speech request failed");
                    let _ = events.send(TtsEvent::Failed(error)).await;
                    return;
                }
                None => {
                    let characters = pieces.pop_front().map_or(0, |p| p.characters);
                    if events.send(TtsEvent::Usage { characters }).await.is_err() {
                        return;
                    }
                }
            },
        }
        if ended && pieces.is_empty() {
            let _ = events.send(TtsEvent::Done).await;
            return;
        }
    }
}

fn start_piece(shared: &Shared, voice: &str, text: String) -> Piece {
    let config = &shared.config;
    let characters = text.chars().count() as u64;
    tracing::debug!(service = NAME, characters, "speech request");
    let mut body = json!({
        "model": config.model,
        "input": text,
        "voice": voice,
        "response_format": "pcm",
    });
    if let Some(instructions) = &config.instructions {
        body["instructions"] = json!(instructions);
    }
    if let Some(speed) = config.speed {
        body["speed"] = json!(speed);
    }
    let url = format!("{}/audio/speech", config.base_url.trim_end_matches('/'));
    let request = http::authorized(
        shared
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string()),
        config.api_key.as_ref(),
        config.auth,
    );
    let (tx, audio) = mpsc::channel(PIECE_CHUNKS);
    let timeouts = (
        Duration::from_millis(config.timeout_ms),
        Duration::from_millis(config.stall_timeout_ms),
    );
    let request = tokio::spawn(async move {
        if let Err(error) = stream_body(request, timeouts, &tx).await {
            let _ = tx.send(Err(error)).await;
        }
    });
    Piece {
        characters,
        audio,
        request,
    }
}

/// Send the request and its body's chunks to `tx` as they come.
async fn stream_body(
    request: reqwest::RequestBuilder,
    (first_byte, stall): (Duration, Duration),
    tx: &mpsc::Sender<Result<Vec<u8>, ProviderError>>,
) -> Result<(), ProviderError> {
    let timed_out = |limit: Duration| http::timed_out("no audio", limit);
    let mut deadline = Instant::now() + first_byte;
    let mut response = tokio::time::timeout_at(deadline, request.send())
        .await
        .map_err(|_| timed_out(first_byte))?
        .map_err(http::transport_error)?;
    if !response.status().is_success() {
        return Err(http::error_answer(response, stall).await);
    }
    let mut limit = first_byte;
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| timed_out(limit))?
            .map_err(http::transport_error)?;
        let Some(chunk) = chunk else { return Ok(()) };
        if tx.send(Ok(chunk.to_vec())).await.is_err() {
            return Ok(());
        }
        (deadline, limit) = (Instant::now() + stall, stall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_kebab_keys() {
        let config: OpenAiTtsConfig = toml::from_str(
            r#"
            base-url = "http://127.0.0.1:8000/v1"
            instructions = "Speak warmly."
            speed = 1.2
            stall-timeout-ms = 700
            "#,
        )
        .unwrap();
        assert_eq!(config.model, "gpt-4o-mini-tts");
        assert_eq!(config.voice, "marin");
        assert!(config.api_key.is_none());
        assert_eq!((config.timeout_ms, config.stall_timeout_ms), (10_000, 700));
        assert!(toml::from_str::<OpenAiTtsConfig>("vioce = \"x\"").is_err());
    }
}
