//! Deepgram streaming speech to text (`wss://api.deepgram.com/v1/listen`), one socket per call.
//!
//! Deepgram ends turns itself (endpointing and `UtteranceEnd`), so this stream ignores the
//! cascade's [`SttInput::SpeechStarted`] / [`SttInput::SpeechStopped`]: all audio goes to the
//! service as it comes, and a turn is committed as [`SttEvent::Final`] on the first of
//! `speech_final` or `UtteranceEnd`, once. A turn Deepgram heard speech in (`SpeechStarted`)
//! but no words ends with an empty Final (noise, a cough), so the cascade is not left waiting.
//!
//! Wire (protocols.md §5.4; Deepgram docs "Audio Keep Alive", "Close Stream", "Finalize",
//! "Endpointing & Interim Results", "STT Troubleshooting WebSocket, NET, and DATA Errors";
//! deepgram-python-sdk `extensions/types/sockets/listen_v1_*_event.py`):
//! - query `model`, `encoding=linear16`, `sample_rate`, `channels=1`, `interim_results=true`
//!   (needed for `UtteranceEnd`), `endpointing` (ms), `utterance_end_ms`, `vad_events=true`
//!   (`SpeechStarted`), `smart_format`, `language`; header `Authorization: Token <key>`;
//!   a refused handshake is an HTTP 4xx/5xx.
//! - audio as binary frames; text frames `{"type":"KeepAlive"}` (the socket closes with
//!   `NET-0001` after 10 s without data) and `{"type":"CloseStream"}` (the server sends the
//!   remaining results and `Metadata`, then closes).
//! - `Results` `{is_final, speech_final, channel.alternatives[0].{transcript, confidence}}`,
//!   `SpeechStarted`, `UtteranceEnd {last_word_end}`, `Metadata {duration}`.
//! - errors mid-stream are close frames: 1008 `DATA-0000` (undecodable audio), 1011
//!   `NET-0000`/`NET-0001` (service error, no audio received in time).

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tracing::{debug, warn};

use super::{SpeechToText, SttEvent, SttInput, SttStream};
use crate::model::cascade::http;
use crate::model::ws::{self, Socket};
use crate::model::{AudioFormat, CHANNEL_CAPACITY, CloseReason, ErrorKind, ProviderError, Secret};

const NAME: &str = "deepgram";

fn default_url() -> String {
    "wss://api.deepgram.com/v1/listen".into()
}
fn default_model() -> String {
    "nova-3".into()
}
fn default_endpointing_ms() -> u32 {
    300
}
fn default_utterance_end_ms() -> u32 {
    1000
}
fn default_smart_format() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_keepalive_ms() -> u64 {
    5_000
}

/// Settings of Deepgram live transcription.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeepgramConfig {
    pub api_key: Secret,
    /// Endpoint without query; the stream's parameters are added to it.
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Silence after speech that ends a turn (`speech_final`).
    #[serde(default = "default_endpointing_ms")]
    pub endpointing_ms: u32,
    /// Gap after the last word that ends a turn even in noise (`UtteranceEnd`); Deepgram
    /// advises 1000 or more.
    #[serde(default = "default_utterance_end_ms")]
    pub utterance_end_ms: u32,
    /// Punctuation, numbers and dates written as text.
    #[serde(default = "default_smart_format")]
    pub smart_format: bool,
    /// Extra trusted root certificates (PEM), for self-hosted Deepgram.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The WebSocket handshake; also the longest a frame may wait to go out (the service
    /// stopped reading) and the wait for the last results after `CloseStream`.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `KeepAlive` is sent after this long without audio.
    #[serde(default = "default_keepalive_ms")]
    pub keepalive_ms: u64,
}

impl DeepgramConfig {
    /// Defaults for everything but the key.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            url: default_url(),
            model: default_model(),
            endpointing_ms: default_endpointing_ms(),
            utterance_end_ms: default_utterance_end_ms(),
            smart_format: default_smart_format(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            keepalive_ms: default_keepalive_ms(),
        }
    }
}

/// Deepgram streaming transcription service.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    config: DeepgramConfig,
}

impl DeepgramStt {
    pub fn new(config: DeepgramConfig) -> Self {
        Self { config }
    }

    /// The endpoint with this stream's query (other query parameters of `url` kept).
    fn url(&self, rate: u32, language: Option<&str>) -> Result<String, ProviderError> {
        let c = &self.config;
        let mut url = url::Url::parse(&c.url).map_err(|e| {
            ProviderError::new(
                ErrorKind::InvalidRequest,
                None,
                format!("invalid {NAME} URL {:?}: {e}", c.url),
            )
        })?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("model", &c.model)
                .append_pair("encoding", "linear16")
                .append_pair("sample_rate", &rate.to_string())
                .append_pair("channels", "1")
                .append_pair("interim_results", "true")
                .append_pair("endpointing", &c.endpointing_ms.to_string())
                .append_pair("utterance_end_ms", &c.utterance_end_ms.to_string())
                .append_pair("vad_events", "true")
                .append_pair("smart_format", &c.smart_format.to_string());
            if let Some(language) = language {
                query.append_pair("language", language);
            }
        }
        Ok(url.into())
    }
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> Vec<AudioFormat> {
        [8000, 16000, 24000, 48000]
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
                    format!("{NAME} is given PCM16 here, not {format}"),
                ));
            };
            let url = self.url(rate, language.as_deref())?;
            let authorization = format!("Token {}", self.config.api_key.expose());
            let socket = ws::connect(
                NAME,
                &url,
                &[("authorization", &authorization)],
                self.config.ca_file.as_deref(),
                Duration::from_millis(self.config.connect_timeout_ms),
            )
            .await
            .map_err(ws::connect_failed)?;
            let (input, input_rx) = mpsc::channel(CHANNEL_CAPACITY);
            let (events_tx, events) = mpsc::channel(CHANNEL_CAPACITY);
            let stream = Stream {
                socket,
                input: input_rx,
                events: events_tx,
                bytes_per_ms: format.bytes_per_ms(),
                keepalive: Duration::from_millis(self.config.keepalive_ms),
                io_timeout: Duration::from_millis(self.config.connect_timeout_ms),
                turn: Turn::default(),
                audio_bytes: 0,
                billed_seconds: None,
            };
            tokio::spawn(stream.run());
            Ok(SttStream { input, events })
        })
    }
}

/// The caller's turn as Deepgram has fixed it so far.
#[derive(Debug, Default)]
struct Turn {
    /// `is_final` transcripts since the last commit.
    finals: Vec<String>,
    confidences: Vec<f32>,
    /// Speech was heard (`SpeechStarted` or words) and not yet committed.
    open: bool,
}

impl Turn {
    /// The text so far with `interim` after it.
    fn with(&self, interim: &str) -> String {
        let mut parts: Vec<&str> = self.finals.iter().map(String::as_str).collect();
        parts.push(interim);
        parts.retain(|p| !p.is_empty());
        parts.join(" ")
    }

    /// The turn's Final, once: `None` when nothing was heard since the last one.
    fn commit(&mut self) -> Option<SttEvent> {
        if !self.open && self.finals.is_empty() {
            return None;
        }
        let turn = std::mem::take(self);
        let confidence = (!turn.confidences.is_empty())
            .then(|| turn.confidences.iter().sum::<f32>() / turn.confidences.len() as f32);
        Some(SttEvent::Final {
            text: turn.with(""),
            confidence,
        })
    }
}

/// One server message (the fields this client reads).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Results {
        #[serde(default)]
        is_final: bool,
        #[serde(default)]
        speech_final: bool,
        channel: Channel,
    },
    SpeechStarted {},
    UtteranceEnd {},
    Metadata {
        duration: f64,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Channel {
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Deserialize)]
struct Alternative {
    transcript: String,
    #[serde(default)]
    confidence: Option<f32>,
}

/// How the socket's reading ended.
enum End {
    /// Closed normally (after `CloseStream`, or by the service).
    Closed,
    /// Failed: the error to report.
    Failed(ProviderError),
}

struct Stream {
    socket: Socket,
    input: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
    bytes_per_ms: f64,
    keepalive: Duration,
    /// Longest wait for a frame to go out, and for the close after `CloseStream`.
    io_timeout: Duration,
    turn: Turn,
    audio_bytes: usize,
    /// `Metadata.duration`, when the service sent it.
    billed_seconds: Option<f64>,
}

impl Stream {
    async fn run(mut self) {
        let end = self.stream().await;
        // Words fixed but never committed (the call ended mid-turn) are still the caller's.
        let mut last = Vec::from_iter(self.turn.commit());
        let seconds = self
            .billed_seconds
            .unwrap_or(self.audio_bytes as f64 / self.bytes_per_ms / 1000.0);
        last.push(SttEvent::Usage { seconds });
        if let End::Failed(error) = end {
            warn!(stt = NAME, kind = ?error.kind, code = ?error.code, message = %error.message, "stream failed");
            last.push(SttEvent::Failed(error));
        }
        for event in last {
            if self.events.send(event).await.is_err() {
                break;
            }
        }
        let _ = self.socket.close(None).await;
    }

    /// Audio out and results in until the input is dropped (then `CloseStream` and the last
    /// results) or the socket ends.
    async fn stream(&mut self) -> End {
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                input = self.input.recv() => match input {
                    Some(SttInput::Audio(frame)) => {
                        self.audio_bytes += frame.len();
                        last_sent = Instant::now();
                        if let Err(e) = self.send(Message::binary(frame)).await {
                            return End::Failed(e);
                        }
                    }
                    // Deepgram ends turns itself.
                    Some(SttInput::SpeechStarted | SttInput::SpeechStopped) => {}
                    None => return self.close_stream().await,
                },
                () = tokio::time::sleep_until(last_sent + self.keepalive) => {
                    last_sent = Instant::now();
                    debug!(stt = NAME, "keepalive");
                    if let Err(e) = self.send(Message::text(r#"{"type":"KeepAlive"}"#)).await {
                        return End::Failed(e);
                    }
                }
                message = self.socket.next() => {
                    // Unasked, even a clean close leaves the call without transcripts.
                    return match self.on_socket(message).await {
                        None => continue,
                        Some(End::Closed) => End::Failed(ProviderError::new(
                            ErrorKind::Server,
                            None,
                            format!("{NAME} ended the stream unasked"),
                        )),
                        Some(failed) => failed,
                    };
                }
            }
        }
    }

    /// Ask for the remaining results and read them until the service closes.
    async fn close_stream(&mut self) -> End {
        let close = Message::text(r#"{"type":"CloseStream"}"#);
        if let Err(e) = self.send(close).await {
            return End::Failed(e);
        }
        let deadline = Instant::now() + self.io_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => {
                    warn!(stt = NAME, "no close after CloseStream in time");
                    return End::Closed;
                }
                Ok(message) => {
                    if let Some(end) = self.on_socket(message).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Send one frame, within the I/O timeout.
    async fn send(&mut self, message: Message) -> Result<(), ProviderError> {
        match tokio::time::timeout(self.io_timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProviderError::new(
                ErrorKind::Server,
                None,
                format!("sending to {NAME}: {e}"),
            )),
            Err(_) => Err(http::timed_out(
                &format!("{NAME} took no data"),
                self.io_timeout,
            )),
        }
    }

    /// Handle one socket read; `Some` when the socket is done.
    async fn on_socket(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Option<End> {
        match message {
            None => Some(End::Closed),
            Some(Err(e)) => Some(match ws::read_error_reason(&e) {
                CloseReason::Normal => End::Closed,
                _ => End::Failed(ProviderError::new(ErrorKind::Server, None, e.to_string())),
            }),
            Some(Ok(Message::Close(frame))) => Some(close_end(frame.as_ref())),
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(message) => self.on_message(message).await,
                    Err(e) => debug!(stt = NAME, error = %e, "unreadable message ignored"),
                }
                None
            }
            Some(Ok(_)) => None,
        }
    }

    async fn on_message(&mut self, message: ServerMessage) {
        let event = match message {
            ServerMessage::Results {
                is_final,
                speech_final,
                channel,
            } => {
                let Some(best) = channel.alternatives.into_iter().next() else {
                    return;
                };
                let transcript = best.transcript.trim().to_string();
                if !transcript.is_empty() {
                    self.turn.open = true;
                }
                if is_final {
                    if !transcript.is_empty() {
                        self.turn.finals.push(transcript);
                        self.turn.confidences.extend(best.confidence);
                    }
                    if speech_final {
                        self.turn.commit()
                    } else {
                        None
                    }
                } else if transcript.is_empty() {
                    None
                } else {
                    Some(SttEvent::Interim(self.turn.with(&transcript)))
                }
            }
            ServerMessage::SpeechStarted {} => {
                self.turn.open = true;
                None
            }
            ServerMessage::UtteranceEnd {} => self.turn.commit(),
            ServerMessage::Metadata { duration } => {
                self.billed_seconds = Some(duration);
                None
            }
            ServerMessage::Other => None,
        };
        if let Some(event) = event {
            let _ = self.events.send(event).await;
        }
    }
}

/// A close frame's meaning: normal, or the service's error (Deepgram's codes, see the module
/// doc; the reason carries `DATA-…`/`NET-…` and a message).
fn close_end(frame: Option<&CloseFrame>) -> End {
    let Some(frame) = frame else {
        return End::Closed;
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.to_string();
    let kind = match code {
        1000 | 1001 => return End::Closed,
        1008 => ErrorKind::InvalidRequest,
        _ if reason.contains("NET-0001") => ErrorKind::Timeout,
        _ => ErrorKind::Server,
    };
    End::Failed(ProviderError::new(kind, Some(code.to_string()), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_carries_the_stream_settings() {
        let mut config = DeepgramConfig::new(Secret::new("k"));
        config.url = "ws://127.0.0.1:1/v1/listen?tag=x".into();
        let url = DeepgramStt::new(config).url(8000, Some("en-US")).unwrap();
        assert_eq!(
            url,
            "ws://127.0.0.1:1/v1/listen?tag=x&model=nova-3&encoding=linear16&sample_rate=8000\
             &channels=1&interim_results=true&endpointing=300&utterance_end_ms=1000\
             &vad_events=true&smart_format=true&language=en-US"
        );
    }

    #[test]
    fn a_turn_commits_once() {
        let mut turn = Turn::default();
        assert_eq!(turn.commit(), None);
        turn.open = true;
        turn.finals = vec!["where is".into(), "my order".into()];
        turn.confidences = vec![0.5, 1.0];
        assert_eq!(turn.with("now"), "where is my order now");
        assert_eq!(
            turn.commit(),
            Some(SttEvent::Final {
                text: "where is my order".into(),
                confidence: Some(0.75)
            })
        );
        assert_eq!(turn.commit(), None);
    }

    #[test]
    fn close_codes() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        };
        assert!(matches!(close_end(Some(&frame(1000, ""))), End::Closed));
        let End::Failed(e) = close_end(Some(&frame(1011, "NET-0001"))) else {
            panic!()
        };
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (ErrorKind::Timeout, Some("1011"))
        );
        let End::Failed(e) = close_end(Some(&frame(1008, "DATA-0000"))) else {
            panic!()
        };
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
    }
}
