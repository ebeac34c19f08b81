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
use wire::{WireError, call_session, history_items, say_response, session_update};

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
        self.url_with("model", model)
    }

    /// Endpoint URL with the query parameter `key` set to `value` (other parameters kept).
    fn url_with(&self, key: &str, value: &str) -> Result<String, ConnectError> {
        let mut url =
            url::Url::parse(&self.config.base_url).map_err(|e| ConnectError::InvalidUrl {
                url: self.config.base_url.clone(),
                reason: e.to_string(),
            })?;
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != key)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair(key, value);
        Ok(url.into())
    }

    /// The socket at `url`, authenticated, once the server's `session.created` arrived; and
    /// the deadline of the whole setup.
    async fn handshake(&self, url: &str) -> Result<(Socket, Instant), ConnectError> {
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
            url,
            &[header],
            self.config.ca_file.as_deref(),
            timeout,
        )
        .await?;
        // The server speaks first with session.created; only then is configuration accepted.
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.created"))
            .await
            .map_err(|_| self.timed_out())??;
        Ok((socket, deadline))
    }

    fn timed_out(&self) -> ConnectError {
        ConnectError::Timeout {
            provider: NAME,
            timeout_ms: self.config.connect_timeout_ms,
        }
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let model = settings.model.as_deref().unwrap_or(&self.config.model);
        let url = self.url(model)?;
        let (mut socket, deadline) = self.handshake(&url).await?;
        let update = session_update(&settings, &self.config);
        send_json(&mut socket, &update)
            .await
            .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        tokio::time::timeout_at(deadline, wait_for(&mut socket, "session.updated"))
            .await
            .map_err(|_| self.timed_out())??;
        for item in history_items(&settings.history) {
            send_json(&mut socket, &item)
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        let session = self
            .run(socket, settings.greeting.as_deref(), settings.output_format)
            .await?;
        tracing::debug!(model, url = %url.split('?').next().unwrap_or(""), "openai realtime session open");
        Ok(ModelSession {
            input_format: settings.input_format,
            ..session
        })
    }

    /// The session configuration that accepts a SIP call through OpenAI's SIP connector
    /// (`POST /v1/realtime/calls/{call_id}/accept`): `settings` without audio formats, which
    /// SIP negotiates.
    pub fn call_session(&self, settings: &SessionSettings) -> Value {
        call_session(settings, &self.config)
    }

    /// Attach to the session of an accepted SIP call (the connector's sideband socket,
    /// `?call_id=`): the call was configured when accepted, so no `session.update` is sent;
    /// `greeting`, when given, is asked for at once. No audio crosses this socket (SIP carries
    /// it), so the session's formats only name what the provider would take.
    pub async fn attach(
        &self,
        call_id: &str,
        greeting: Option<&str>,
    ) -> Result<ModelSession, ConnectError> {
        let url = self.url_with("call_id", call_id)?;
        let (socket, _) = self.handshake(&url).await?;
        let session = self.run(socket, greeting, AudioFormat::Pcmu8k).await?;
        tracing::debug!(call_id, "openai realtime call session attached");
        Ok(session)
    }

    /// Run the session actor on `socket`, greeting first when there is one.
    async fn run(
        &self,
        socket: Socket,
        greeting: Option<&str>,
        output_format: AudioFormat,
    ) -> Result<ModelSession, ConnectError> {
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let mut actor = Actor {
            socket,
            events: ev_tx,
            output_format,
            response_timeout: Duration::from_millis(self.config.response_timeout_ms),
            item_audio: VecDeque::new(),
            response_active: false,
            queued_responses: VecDeque::new(),
            awaiting_response: None,
            awaiting_event_id: String::new(),
            pending_calls: HashSet::new(),
            next_event_id: 0,
        };
        if let Some(greeting) = greeting {
            actor
                .request_response(say_response(greeting))
                .await
                .map_err(|_| ConnectError::ClosedDuringSetup { provider: NAME })?;
        }
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(actor.run(cmd_rx).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: output_format,
            output_format,
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

    /// The model is fixed by the socket's URL, and the voice cannot change once the session
    /// has spoken (the server refuses it), so only instructions and tools change live.
    fn updates_live(&self, running: &SessionSettings, next: &SessionSettings) -> bool {
        running.model == next.model && running.voice == next.voice
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
