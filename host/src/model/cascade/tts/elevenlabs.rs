//! ElevenLabs streaming text to speech over its single-context WebSocket,
//! `{url}/{voice_id}/stream-input` (protocols.md §5.5; message shapes checked against the
//! service's AsyncAPI description of `stream-input` and its Python SDK's `realtime_tts.py`):
//! one socket per utterance, the key in the `xi-api-key` header.
//!
//! Client frames: `{"text": " "}` opens the stream; each piece goes as `{"text": "<piece> "}`
//! (text must end with a space); `{"text": ""}` ends it. The service holds text until its
//! buffer reaches the chunk schedule (120 characters first, by default) unless a packet says
//! `"flush": true`, which forces audio for everything buffered: the first piece is flushed so
//! the first sentence is heard without waiting for more. Server frames:
//! `{"audio": "<base64>", "normalizedAlignment": …, "alignment": …}`, then `{"isFinal": true}`.
//! Errors close the socket with code 1008 and a reason (e.g. "voice_settings field must be
//! provided in the first message…", "Have not received a new text input within the timeout…").
//! Dropping the stream closes the socket, which stops synthesis.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

use super::socket_utterance::{self, Heard, UtteranceSocket, decode_audio};
use super::{TextToSpeech, TtsStream, pcm_formats, pcm_rate};
use crate::model::ws::{self, Socket};
use crate::model::{AudioFormat, ErrorKind, ProviderError, Secret};

const NAME: &str = "elevenlabs";

/// The raw PCM rates of `output_format` (`pcm_<rate>`), preferred first.
const RATES: [u32; 5] = [24_000, 16_000, 8_000, 22_050, 44_100];

fn default_url() -> String {
    "wss://api.elevenlabs.io/v1/text-to-speech".into()
}
fn default_model() -> String {
    "eleven_flash_v2_5".into()
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_stall_timeout_ms() -> u64 {
    5_000
}

/// ElevenLabs streaming text to speech.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ElevenLabsConfig {
    /// Text-to-speech root; the socket is `{url}/{voice_id}/stream-input`.
    #[serde(default = "default_url")]
    pub url: String,
    pub api_key: Secret,
    /// Voice when the utterance names none.
    pub voice_id: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Extra trusted root certificates (PEM), for a private endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The WebSocket handshake.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence while audio is due (the flushed first piece, or everything after End).
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

impl ElevenLabsConfig {
    /// Defaults for everything but the key and the voice.
    pub fn new(api_key: Secret, voice_id: impl Into<String>) -> Self {
        Self {
            url: default_url(),
            api_key,
            voice_id: voice_id.into(),
            model: default_model(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            stall_timeout_ms: default_stall_timeout_ms(),
        }
    }
}

/// Text to speech over ElevenLabs' `stream-input` WebSocket.
#[derive(Debug)]
pub struct ElevenLabsTts {
    config: ElevenLabsConfig,
}

impl ElevenLabsTts {
    pub fn new(config: ElevenLabsConfig) -> Self {
        Self { config }
    }

    fn url(&self, voice: &str, rate: u32, language: Option<&str>) -> String {
        let mut url = format!(
            "{}/{voice}/stream-input?model_id={}&output_format=pcm_{rate}",
            self.config.url.trim_end_matches('/'),
            self.config.model,
        );
        // ISO 639-1, the BCP-47 tag's primary subtag.
        if let Some(code) = language.and_then(|l| l.split('-').next()) {
            url.push_str("&language_code=");
            url.push_str(code);
        }
        url
    }
}

impl TextToSpeech for ElevenLabsTts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> Vec<AudioFormat> {
        pcm_formats(&RATES)
    }

    fn open(
        &self,
        format: AudioFormat,
        voice: Option<String>,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<TtsStream, ProviderError>> {
        Box::pin(async move {
            let rate = pcm_rate(NAME, &RATES, format)?;
            let voice = voice.unwrap_or_else(|| self.config.voice_id.clone());
            let url = self.url(&voice, rate, language.as_deref());
            let socket = ws::connect(
                NAME,
                &url,
                &[("xi-api-key", self.config.api_key.expose())],
                self.config.ca_file.as_deref(),
                Duration::from_millis(self.config.connect_timeout_ms),
            )
            .await
            .map_err(ws::connect_failed)?;
            let mut socket = StreamInput(socket);
            socket.send(json!({"text": " "})).await?;
            let stall = Duration::from_millis(self.config.stall_timeout_ms);
            Ok(socket_utterance::start(socket, stall))
        })
    }
}

/// One utterance's `stream-input` socket.
struct StreamInput(Socket);

impl StreamInput {
    async fn send(&mut self, packet: Value) -> Result<(), ProviderError> {
        self.0
            .send(Message::text(packet.to_string()))
            .await
            .map_err(|e| ProviderError::new(ErrorKind::Server, None, e.to_string()))
    }
}

impl UtteranceSocket for StreamInput {
    const SERVICE: &'static str = NAME;

    async fn send_piece(&mut self, text: &str, first: bool) -> Result<(), ProviderError> {
        let mut packet = json!({"text": format!("{text} ")});
        if first {
            // Audio for the first sentence now, not once the buffer reaches the schedule.
            packet["flush"] = json!(true);
        }
        self.send(packet).await
    }

    async fn send_end(&mut self) -> Result<(), ProviderError> {
        self.send(json!({"text": ""})).await
    }

    async fn next_frame(&mut self) -> Heard {
        let frame = match self.0.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return Heard::failed(closed(frame.as_ref())),
            Some(Ok(_)) => return Heard::default(),
            Some(Err(e)) => {
                return Heard::failed(ProviderError::new(ErrorKind::Server, None, e.to_string()));
            }
            None => return Heard::failed(closed(None)),
        };
        let Ok(frame) = serde_json::from_str::<Value>(&frame) else {
            return Heard::failed(ProviderError::new(
                ErrorKind::Protocol,
                None,
                format!("not JSON: {frame}"),
            ));
        };
        let audio = match frame["audio"].as_str().map(decode_audio).transpose() {
            Ok(audio) => audio,
            Err(error) => return Heard::failed(error),
        };
        let end = if frame["isFinal"] == json!(true) {
            Some(Ok(()))
        } else {
            let message = frame["error"].as_str().or(frame["message"].as_str());
            message.map(|m| Err(ProviderError::new(ErrorKind::Server, None, m)))
        };
        Heard { audio, end }
    }

    /// Closing ends synthesis on the service's side too (barge-in).
    async fn finish(mut self, _completed: bool) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.0.close(None)).await;
    }
}

/// The socket closed before `isFinal`: the service's error, by close code and reason.
fn closed(frame: Option<&CloseFrame>) -> ProviderError {
    let Some(frame) = frame else {
        return ProviderError::new(ErrorKind::Server, None, "closed before the final audio");
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.to_string();
    let lower = reason.to_ascii_lowercase();
    // 1008 carries every refusal, from a bad key to a late message; the reason tells which.
    let kind = match code {
        1008 if lower.contains("api key") || lower.contains("unauthori") => ErrorKind::Auth,
        1008 if lower.contains("quota") || lower.contains("limit") => ErrorKind::RateLimited,
        1008 if lower.contains("timeout") => ErrorKind::Timeout,
        1008 | 1003 | 1007 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Server,
    };
    let message = if reason.is_empty() {
        "closed before the final audio".to_string()
    } else {
        reason
    };
    ProviderError::new(kind, Some(code.to_string()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_names_model_format_and_language() {
        let tts = ElevenLabsTts::new(ElevenLabsConfig::new(Secret::new("k"), "voice1"));
        assert_eq!(
            tts.url("v2", 16_000, Some("en-US")),
            "wss://api.elevenlabs.io/v1/text-to-speech/v2/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_16000&language_code=en"
        );
    }

    #[test]
    fn close_reasons_map_to_kinds() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        };
        let e = closed(Some(&frame(1008, "Invalid API key")));
        assert_eq!((e.kind, e.code.as_deref()), (ErrorKind::Auth, Some("1008")));
        let e = closed(Some(&frame(
            1008,
            "voice_settings field must be provided in the first message",
        )));
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert_eq!(
            closed(Some(&frame(1011, "internal"))).kind,
            ErrorKind::Server
        );
        assert_eq!(closed(None).kind, ErrorKind::Server);
    }
}
