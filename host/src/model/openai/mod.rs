//! OpenAI Realtime (GA protocol) over a WebSocket; also Azure OpenAI and compatible endpoints.
//!
//! G.711 audio passes straight through (`audio/pcmu`, `audio/pcma`); linear audio is 24 kHz
//! PCM16. The session actor owns the socket: commands become client events, server events
//! become [`ModelEvent`]s.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::config::{OpenAiAuth, OpenAiConfig};
use super::ws::{self, Socket};
use session::Actor;
use wire::{WireError, say_response, session_update};

use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, ConnectError, FormatSupport, ModelProvider,
    ModelSession, SessionSettings, check_formats,
};

mod session;
#[cfg(test)]
mod tests;
mod wire;

const NAME: &str = "openai";

/// How many recent agent items keep their generated-audio length (for truncate clamping).
const TRACKED_ITEMS: usize = 32;

/// OpenAI Realtime provider.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Self {
        Self { config }
    }

    /// Endpoint URL with the `model` query parameter set (other query parameters kept).
    fn url(&self, model: &str) -> Result<String, ConnectError> {
        let mut url =
            url::Url::parse(&self.config.base_url).map_err(|e| ConnectError::InvalidUrl {
                url: self.config.base_url.clone(),
                reason: e.to_string(),
            })?;
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "model")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("model", model);
        Ok(url.into())
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let model = settings.model.as_deref().unwrap_or(&self.config.model);
        let url = self.url(model)?;
        let key = self.config.api_key.expose();
        let bearer;
        let header = match self.config.auth {
            OpenAiAuth::Bearer => {
                bearer = format!("Bearer {key}");
                ("authorization", bearer.as_str())
            }
            OpenAiAuth::ApiKeyHeader => ("api-key", key),
        };
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut socket = ws::connect(
            NAME,
            &url,
            &[header],
            self.config.ca_file.as_deref(),
            timeout,
        )
        .await?;
        let timed_out = || ConnectError::Timeout {
            provider: NAME,
            timeout_ms: self.config.connect_timeout_ms,
        };

        // The server speaks first with session.created; only then is configuration accepted.
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.created"))
            .await
            .map_err(|_| timed_out())??;
        let update = session_update(&settings, &self.config);
        send_json(&mut socket, &update)
            .await
            .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.updated"))
            .await
            .map_err(|_| timed_out())??;

        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut actor = Actor {
            socket,
            events: ev_tx,
            output_format: settings.output_format,
            response_timeout: Duration::from_millis(self.config.response_timeout_ms),
            item_audio: VecDeque::new(),
            response_active: false,
            queued_responses: VecDeque::new(),
            awaiting_response: None,
            awaiting_event_id: String::new(),
            pending_calls: HashSet::new(),
            next_event_id: 0,
        };
        if let Some(greeting) = &settings.greeting {
            actor
                .request_response(say_response(greeting))
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        tracing::debug!(model, url = %url.split('?').next().unwrap_or(""), "openai realtime session open");
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(actor.run(cmd_rx).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: settings.input_format,
            output_format: settings.output_format,
            loopback: false,
        })
    }
}

impl ModelProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> FormatSupport {
        let all = vec![
            AudioFormat::Pcmu8k,
            AudioFormat::Pcma8k,
            AudioFormat::Pcm16 { rate: 24_000 },
        ];
        FormatSupport {
            input: all.clone(),
            output: all,
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

async fn send_json(socket: &mut Socket, value: &Value) -> Result<(), ()> {
    socket
        .send(Message::text(value.to_string()))
        .await
        .map_err(|e| tracing::debug!(error = %e, "openai socket write failed"))
}

/// Read until a server event of type `wanted`; an `error` event or a close ends setup.
async fn wait_for(socket: &mut Socket, wanted: &str) -> Result<(), ConnectError> {
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
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
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match value["type"].as_str() {
            Some(t) if t == wanted => return Ok(()),
            Some("error") => {
                let wire: WireError =
                    serde_json::from_value(value["error"].clone()).unwrap_or_default();
                return Err(ConnectError::Rejected {
                    provider: NAME,
                    error: wire.into_error(),
                });
            }
            _ => {}
        }
    }
}
