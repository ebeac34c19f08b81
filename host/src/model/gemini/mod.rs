//! Gemini Live (Developer API) over a WebSocket.
//!
//! Input is 16 kHz PCM16, output 24 kHz PCM16. The server sends JSON in binary frames and
//! reports errors as WebSocket close codes. Gemini has no item ids and no truncate message:
//! turns get local ids (`gemini_turn_N`), barge-in arrives as `serverContent.interrupted`
//! (reported as [`ModelEvent::SpeechStarted`]) and the server decides what the caller heard.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::config::GeminiConfig;
use super::ws::{self, Socket};
use session::Actor;
use wire::{ServerMessage, setup_message};

use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, ConnectError, FormatSupport, ModelProvider,
    ModelSession, SessionSettings, check_formats,
};

mod session;
#[cfg(test)]
mod tests;
mod wire;

const NAME: &str = "gemini";
const INPUT: AudioFormat = AudioFormat::Pcm16 { rate: 16_000 };
const OUTPUT: AudioFormat = AudioFormat::Pcm16 { rate: 24_000 };

/// Gemini Live provider.
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    config: GeminiConfig,
}

impl GeminiProvider {
    pub fn new(config: GeminiConfig) -> Self {
        Self { config }
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let deadline = Instant::now() + timeout;
        let headers = [("x-goog-api-key", self.config.api_key.expose())];
        let mut socket = ws::connect(
            NAME,
            &self.config.base_url,
            &headers,
            self.config.ca_file.as_deref(),
            timeout,
        )
        .await?;
        let setup = setup_message(&settings, &self.config);
        socket
            .send(Message::text(setup.to_string()))
            .await
            .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        tokio::time::timeout_at(deadline, wait_for_setup_complete(&mut socket))
            .await
            .map_err(|_| ConnectError::Timeout {
                provider: NAME,
                timeout_ms: self.config.connect_timeout_ms,
            })??;

        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut actor = Actor {
            socket,
            events: ev_tx,
            response_timeout: Duration::from_millis(self.config.response_timeout_ms),
            awaiting_response: None,
            turn: 0,
            turn_open: false,
            agent_text: String::new(),
            input_turn: 0,
            caller_text: String::new(),
            calls: HashMap::new(),
        };
        if !settings.history.is_empty() {
            actor
                .context(&settings.history)
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        if let Some(greeting) = &settings.greeting {
            actor
                .say(greeting)
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        tracing::debug!(model = %setup["setup"]["model"], "gemini live session open");
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(actor.run(cmd_rx).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: INPUT,
            output_format: OUTPUT,
            loopback: false,
        })
    }
}

impl ModelProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Gemini Live fixes the whole configuration at setup: every change needs a new session.
    fn updates_live(&self, _running: &SessionSettings, _next: &SessionSettings) -> bool {
        false
    }

    fn formats(&self) -> FormatSupport {
        FormatSupport {
            input: vec![INPUT],
            output: vec![OUTPUT],
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

/// Read until `setupComplete`; a close frame during setup carries the refusal.
async fn wait_for_setup_complete(socket: &mut Socket) -> Result<(), ConnectError> {
    loop {
        let bytes = match socket.next().await {
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Close(frame))) => {
                return Err(match ws::close_reason(frame.as_ref()) {
                    CloseReason::Error(error) => ConnectError::Rejected {
                        provider: NAME,
                        error,
                    },
                    _ => ConnectError::ClosedDuringSetup { provider: NAME },
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(ConnectError::ClosedDuringSetup { provider: NAME }),
        };
        let message: ServerMessage = serde_json::from_slice(&bytes).unwrap_or_default();
        if message.setup_complete.is_some() {
            return Ok(());
        }
    }
}
