//! The session actor: owns the socket for one session, turns commands into client messages and
//! server messages into [`ModelEvent`]s, with local turn ids and tool calls.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::wire::*;
use crate::model::ws::{self, Socket};
use crate::model::{
    AudioFormat, CloseReason, Command, ErrorKind, ModelEvent, ProviderError, ResponseStatus, Role,
    say_exactly_prompt,
};

pub(super) struct Actor {
    pub(super) socket: Socket,
    pub(super) events: mpsc::Sender<ModelEvent>,
    pub(super) response_timeout: Duration,
    pub(super) awaiting_response: Option<Instant>,
    pub(super) turn: u64,
    pub(super) turn_open: bool,
    /// Agent transcript of the open turn so far.
    pub(super) agent_text: String,
    pub(super) input_turn: u64,
    /// Caller transcript since the last final one.
    pub(super) caller_text: String,
    /// Tool calls awaiting a result: call id → function name (the response must name it).
    pub(super) calls: HashMap<String, String>,
}

pub(super) enum Stop {
    Closed(CloseReason),
    Abandoned,
}

impl Actor {
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let stop = loop {
            let deadline = self.awaiting_response;
            let step = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => Err(Stop::Abandoned),
                },
                msg = self.socket.next() => self.on_socket(msg).await,
                () = sleep_until_opt(deadline) => {
                    self.awaiting_response = None;
                    let error = ProviderError::new(ErrorKind::Timeout, None, format!(
                        "no response started within {} ms", self.response_timeout.as_millis()));
                    self.emit(ModelEvent::Error(error)).await
                }
            };
            if let Err(stop) = step {
                break stop;
            }
        };
        match stop {
            Stop::Closed(reason) => {
                if reason != CloseReason::Dropped {
                    let _ = self.socket.close(None).await;
                }
                tracing::debug!(?reason, "gemini live session closed");
                let _ = self.events.send(ModelEvent::Closed(reason)).await;
            }
            Stop::Abandoned => {
                let _ = self.socket.close(None).await;
            }
        }
    }

    async fn emit(&mut self, event: ModelEvent) -> Result<(), Stop> {
        self.events.send(event).await.map_err(|_| Stop::Abandoned)
    }

    async fn send_raw(&mut self, text: String) -> Result<(), Stop> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| Stop::Closed(ws::read_error_reason(&e)))
    }

    /// The conversation so far as context: earlier turns with `turnComplete` false, so the
    /// model does not answer them (`BidiGenerateContentClientContent`).
    pub(super) async fn context(&mut self, history: &[(Role, String)]) -> Result<(), Stop> {
        let turns: Vec<Value> = history
            .iter()
            .map(|(role, text)| {
                let role = match role {
                    Role::Caller => "user",
                    Role::Agent => "model",
                };
                json!({"role": role, "parts": [{"text": text}]})
            })
            .collect();
        let msg = json!({"clientContent": {"turns": turns, "turnComplete": false}});
        self.send_raw(msg.to_string()).await
    }

    pub(super) async fn say(&mut self, text: &str) -> Result<(), Stop> {
        self.awaiting_response = Some(Instant::now() + self.response_timeout);
        let msg = json!({"clientContent": {
            "turns": [{"role": "user", "parts": [{"text": say_exactly_prompt(text)}]}],
            "turnComplete": true}});
        self.send_raw(msg.to_string()).await
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), Stop> {
        match cmd {
            Command::Audio(frame) => {
                let text = format!(
                    "{{\"realtimeInput\":{{\"audio\":{{\"mimeType\":\"audio/pcm;rate=16000\",\"data\":\"{}\"}}}}}}",
                    B64.encode(&frame)
                );
                self.send_raw(text).await
            }
            Command::Say(text) => self.say(&text).await,
            Command::ToolResult { call_id, output } => {
                let Some(name) = self.calls.remove(&call_id) else {
                    let error = ProviderError::new(
                        ErrorKind::InvalidRequest,
                        None,
                        format!("no pending tool call with id {call_id:?}"),
                    );
                    return self.emit(ModelEvent::Error(error)).await;
                };
                // The response must be an object; a non-JSON output travels as a string.
                let result =
                    serde_json::from_str::<Value>(&output).unwrap_or(Value::String(output));
                let msg = json!({"toolResponse": {"functionResponses": [
                    {"id": call_id, "name": name, "response": {"result": result}}]}});
                self.awaiting_response = Some(Instant::now() + self.response_timeout);
                self.send_raw(msg.to_string()).await
            }
            // Gemini keeps or drops unheard audio itself and has no cancel message: nothing
            // to send.
            Command::Truncate { .. } | Command::CancelResponse => Ok(()),
            // Gemini recognises free speech; a hint has nothing to tune.
            Command::Expect(_) => Ok(()),
            Command::Update(_) => {
                let error = ProviderError::new(
                    ErrorKind::Unsupported,
                    None,
                    "Gemini Live fixes instructions at setup; they cannot change mid-session",
                );
                self.emit(ModelEvent::Error(error)).await
            }
            Command::Close => Err(Stop::Closed(CloseReason::Normal)),
        }
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let message: Result<ServerMessage, _> = match msg {
            None => return Err(Stop::Closed(CloseReason::Dropped)),
            Some(Err(e)) => return Err(Stop::Closed(ws::read_error_reason(&e))),
            Some(Ok(Message::Binary(b))) => serde_json::from_slice(&b),
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t),
            Some(Ok(Message::Close(frame))) => {
                return Err(Stop::Closed(ws::close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => return Ok(()),
        };
        match message {
            Ok(m) => self.on_message(m).await,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable gemini live message");
                let error = ProviderError::new(ErrorKind::Protocol, None, e.to_string());
                self.emit(ModelEvent::Error(error)).await
            }
        }
    }

    fn turn_id(&self) -> String {
        format!("gemini_turn_{}", self.turn)
    }

    /// The model started (or continued) speaking: open a turn if none is open.
    async fn model_active(&mut self) -> Result<(), Stop> {
        self.awaiting_response = None;
        if !self.turn_open {
            self.flush_caller().await?;
            self.turn += 1;
            self.turn_open = true;
        }
        Ok(())
    }

    async fn flush_caller(&mut self) -> Result<(), Stop> {
        if self.caller_text.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.caller_text);
        let item_id = format!("gemini_input_{}", self.input_turn);
        self.input_turn += 1;
        self.emit(ModelEvent::Transcript {
            role: Role::Caller,
            item_id,
            text,
            is_final: true,
        })
        .await
    }

    async fn end_turn(&mut self, status: ResponseStatus) -> Result<(), Stop> {
        if !self.turn_open {
            return Ok(());
        }
        self.turn_open = false;
        let text = std::mem::take(&mut self.agent_text);
        if !text.is_empty() {
            let item_id = self.turn_id();
            self.emit(ModelEvent::Transcript {
                role: Role::Agent,
                item_id,
                text,
                is_final: true,
            })
            .await?;
        }
        self.emit(ModelEvent::ResponseDone { status }).await
    }

    async fn on_message(&mut self, m: ServerMessage) -> Result<(), Stop> {
        // Usage rides on the turnComplete message; report it before the turn's ResponseDone.
        if let Some(usage) = m.usage_metadata {
            self.emit(ModelEvent::Usage(usage.into())).await?;
        }
        if let Some(content) = m.server_content {
            if let Some(t) = content.input_transcription {
                let item_id = format!("gemini_input_{}", self.input_turn);
                self.caller_text.push_str(&t.text);
                if !t.text.is_empty() {
                    self.emit(ModelEvent::Transcript {
                        role: Role::Caller,
                        item_id,
                        text: t.text,
                        is_final: false,
                    })
                    .await?;
                }
                if t.finished {
                    self.flush_caller().await?;
                }
            }
            if let Some(turn) = content.model_turn {
                for part in turn.parts {
                    let Some(blob) = part.inline_data else {
                        continue; // text and thought parts are not spoken
                    };
                    if !blob.mime_type.starts_with("audio/pcm") {
                        continue;
                    }
                    self.model_active().await?;
                    let data = match B64.decode(blob.data.as_bytes()) {
                        Ok(d) => d,
                        Err(e) => {
                            let msg = format!("audio part is not base64: {e}");
                            let error = ProviderError::new(ErrorKind::Protocol, None, msg);
                            self.emit(ModelEvent::Error(error)).await?;
                            continue;
                        }
                    };
                    let format = AudioFormat::Pcm16 {
                        rate: mime_rate(&blob.mime_type),
                    };
                    let item_id = self.turn_id();
                    self.emit(ModelEvent::Audio {
                        item_id,
                        data,
                        format,
                    })
                    .await?;
                }
            }
            if let Some(t) = content.output_transcription
                && !t.text.is_empty()
            {
                self.model_active().await?;
                self.agent_text.push_str(&t.text);
                let item_id = self.turn_id();
                self.emit(ModelEvent::Transcript {
                    role: Role::Agent,
                    item_id,
                    text: t.text,
                    is_final: false,
                })
                .await?;
            }
            if content.interrupted {
                // The caller spoke over the model: playback must stop even when the turn had
                // already finished generating.
                self.emit(ModelEvent::SpeechStarted {
                    audio_start_ms: None,
                })
                .await?;
                self.end_turn(ResponseStatus::Cancelled).await?;
            }
            if content.turn_complete {
                self.awaiting_response = None;
                self.end_turn(ResponseStatus::Completed).await?;
            }
        }
        if let Some(call) = m.tool_call {
            self.awaiting_response = None;
            // The caller's turn is over once the model acts on it.
            self.flush_caller().await?;
            for f in call.function_calls {
                self.calls.insert(f.id.clone(), f.name.clone());
                let arguments = if f.args.is_null() {
                    "{}".to_string()
                } else {
                    f.args.to_string()
                };
                self.emit(ModelEvent::ToolCall {
                    call_id: f.id,
                    name: f.name,
                    arguments,
                })
                .await?;
            }
        }
        if let Some(cancel) = m.tool_call_cancellation {
            for id in cancel.ids {
                tracing::debug!(call_id = %id, "gemini cancelled a tool call");
                self.calls.remove(&id);
            }
        }
        if let Some(go_away) = m.go_away {
            let time_left_ms = go_away.time_left.as_deref().and_then(duration_ms);
            self.emit(ModelEvent::GoingAway { time_left_ms }).await?;
        }
        Ok(())
    }
}

/// Sleep until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
