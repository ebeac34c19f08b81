//! The session actor: owns the socket for one session, turns commands into client events and
//! server events into [`ModelEvent`]s, and tracks responses, tool calls and played audio.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::model::ws::{self, Socket};
use crate::model::{
    AudioFormat, CloseReason, Command, ErrorKind, ModelEvent, ProviderError, ResponseStatus, Role,
};

use super::TRACKED_ITEMS;
use super::wire::{ServerEvent, say_response, session_update_live};

/// Owns the socket for one session.
pub(super) struct Actor {
    pub(super) socket: Socket,
    pub(super) events: mpsc::Sender<ModelEvent>,
    pub(super) output_format: AudioFormat,
    pub(super) response_timeout: Duration,
    /// Generated audio bytes of recent agent items, oldest first.
    pub(super) item_audio: VecDeque<(String, usize)>,
    pub(super) response_active: bool,
    /// `response.create` bodies waiting for the active response to finish (one at a time).
    pub(super) queued_responses: VecDeque<Value>,
    /// Set when a response was requested and has not started yet.
    pub(super) awaiting_response: Option<Instant>,
    /// Client `event_id` of that `response.create` (errors echo it).
    pub(super) awaiting_event_id: String,
    /// Tool calls of the current turn still waiting for their result.
    pub(super) pending_calls: HashSet<String>,
    pub(super) next_event_id: u64,
}

/// Why the actor loop stopped.
pub(super) enum Stop {
    Closed(CloseReason),
    /// The session owner went away: nobody to tell.
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
                tracing::debug!(?reason, "openai realtime session closed");
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

    async fn send(&mut self, mut value: Value) -> Result<(), Stop> {
        self.next_event_id += 1;
        value["event_id"] = json!(format!("sb_{}", self.next_event_id));
        self.send_raw(value.to_string()).await
    }

    async fn send_raw(&mut self, text: String) -> Result<(), Stop> {
        self.socket
            .send(Message::text(text))
            .await
            .map_err(|e| Stop::Closed(ws::read_error_reason(&e)))
    }

    /// Ask for a response now, or after the active one ends (only one may run at a time).
    pub(super) async fn request_response(&mut self, body: Value) -> Result<(), Stop> {
        if self.response_active || self.awaiting_response.is_some() {
            self.queued_responses.push_back(body);
            return Ok(());
        }
        self.awaiting_response = Some(Instant::now() + self.response_timeout);
        self.send(json!({"type": "response.create", "response": body}))
            .await?;
        self.awaiting_event_id = format!("sb_{}", self.next_event_id);
        Ok(())
    }

    async fn on_command(&mut self, cmd: Command) -> Result<(), Stop> {
        match cmd {
            Command::Audio(frame) => {
                // Hot path: skip building a JSON tree for every 20 ms frame.
                let text = format!(
                    "{{\"type\":\"input_audio_buffer.append\",\"audio\":\"{}\"}}",
                    B64.encode(&frame)
                );
                self.send_raw(text).await
            }
            Command::Say(text) => self.request_response(say_response(&text)).await,
            Command::ToolResult { call_id, output } => {
                self.pending_calls.remove(&call_id);
                self.send(json!({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": call_id, "output": output}}))
                    .await?;
                if self.pending_calls.is_empty() {
                    self.request_response(json!({})).await?;
                }
                Ok(())
            }
            Command::Truncate {
                item_id,
                audio_end_ms,
            } => {
                // The server rejects audio_end_ms beyond what it generated; the caller's
                // playback clock can run a little past it.
                let generated = self
                    .item_audio
                    .iter()
                    .find(|(id, _)| *id == item_id)
                    .map(|(_, bytes)| self.output_format.duration_ms(*bytes));
                let audio_end_ms = generated.map_or(audio_end_ms, |g| audio_end_ms.min(g));
                self.send(
                    json!({"type": "conversation.item.truncate", "item_id": item_id,
                    "content_index": 0, "audio_end_ms": audio_end_ms}),
                )
                .await
            }
            Command::CancelResponse => {
                self.queued_responses.clear();
                if self.response_active {
                    self.send(json!({"type": "response.cancel"})).await
                } else {
                    Ok(())
                }
            }
            Command::Update(update) => self.send(session_update_live(&update)).await,
            // The model hears free speech; a hint has nothing to tune.
            Command::Expect(_) => Ok(()),
            Command::Close => Err(Stop::Closed(CloseReason::Normal)),
        }
    }

    async fn on_socket(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Stop> {
        let text = match msg {
            None => return Err(Stop::Closed(CloseReason::Dropped)),
            Some(Err(e)) => return Err(Stop::Closed(ws::read_error_reason(&e))),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return Err(Stop::Closed(ws::close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => return Ok(()),
        };
        let event = match serde_json::from_str::<ServerEvent>(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable openai realtime event");
                let error = ProviderError::new(ErrorKind::Protocol, None, e.to_string());
                return self.emit(ModelEvent::Error(error)).await;
            }
        };
        self.on_event(event).await
    }

    async fn on_event(&mut self, event: ServerEvent) -> Result<(), Stop> {
        match event {
            ServerEvent::ResponseCreated => {
                self.response_active = true;
                self.awaiting_response = None;
                Ok(())
            }
            ServerEvent::AudioDelta { item_id, delta } => {
                let data = match B64.decode(delta.as_bytes()) {
                    Ok(d) => d,
                    Err(e) => {
                        let msg = format!("audio delta is not base64: {e}");
                        let error = ProviderError::new(ErrorKind::Protocol, None, msg);
                        return self.emit(ModelEvent::Error(error)).await;
                    }
                };
                self.count_audio(&item_id, data.len());
                let format = self.output_format;
                self.emit(ModelEvent::Audio {
                    item_id,
                    data,
                    format,
                })
                .await
            }
            ServerEvent::AgentTranscriptDelta { item_id, delta } => {
                self.transcript(Role::Agent, item_id, delta, false).await
            }
            ServerEvent::AgentTranscriptDone {
                item_id,
                transcript: text,
            }
            | ServerEvent::AgentTextDone { item_id, text } => {
                self.transcript(Role::Agent, item_id, text, true).await
            }
            ServerEvent::CallerTranscriptDelta { item_id, delta } => {
                self.transcript(Role::Caller, item_id, delta, false).await
            }
            ServerEvent::CallerTranscriptDone {
                item_id,
                transcript,
            } => {
                self.transcript(Role::Caller, item_id, transcript, true)
                    .await
            }
            ServerEvent::CallerTranscriptFailed { error } => {
                self.emit(ModelEvent::Error(error.into_error())).await
            }
            ServerEvent::SpeechStarted { audio_start_ms } => {
                self.emit(ModelEvent::SpeechStarted { audio_start_ms })
                    .await
            }
            ServerEvent::SpeechStopped { audio_end_ms } => {
                self.emit(ModelEvent::SpeechStopped { audio_end_ms }).await
            }
            ServerEvent::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                self.pending_calls.insert(call_id.clone());
                self.emit(ModelEvent::ToolCall {
                    call_id,
                    name,
                    arguments,
                })
                .await
            }
            ServerEvent::ResponseDone { response } => {
                self.response_active = false;
                if let Some(usage) = response.usage {
                    self.emit(ModelEvent::Usage(usage.into())).await?;
                }
                let status = match response.status.as_str() {
                    "completed" => ResponseStatus::Completed,
                    "cancelled" => ResponseStatus::Cancelled,
                    "incomplete" => ResponseStatus::Incomplete,
                    _ => ResponseStatus::Failed,
                };
                self.emit(ModelEvent::ResponseDone { status }).await?;
                if let Some(next) = self.queued_responses.pop_front() {
                    self.request_response(next).await?;
                }
                Ok(())
            }
            ServerEvent::Error { error } => {
                // A failed response.create (its event_id echoed, or a server-side error with
                // none) means no response is coming: move on to the next queued one.
                let failed_request = self.awaiting_response.is_some()
                    && error
                        .event_id
                        .as_deref()
                        .is_none_or(|id| id == self.awaiting_event_id);
                let error = error.into_error();
                tracing::debug!(%error, "openai realtime error event");
                self.emit(ModelEvent::Error(error)).await?;
                if failed_request {
                    self.awaiting_response = None;
                    // Whoever waits for that response (to drain speech before a hang-up)
                    // must not wait for one that will never come.
                    self.emit(ModelEvent::ResponseDone {
                        status: ResponseStatus::Failed,
                    })
                    .await?;
                    if let Some(next) = self.queued_responses.pop_front() {
                        self.request_response(next).await?;
                    }
                }
                Ok(())
            }
            ServerEvent::AudioBufferStarted => self.emit(ModelEvent::AudioStarted).await,
            ServerEvent::AudioBufferStopped => self.emit(ModelEvent::AudioStopped).await,
            ServerEvent::Dtmf { event } => {
                for digit in event.chars().filter(|c| "0123456789*#ABCD".contains(*c)) {
                    self.emit(ModelEvent::Digit(digit)).await?;
                }
                Ok(())
            }
            ServerEvent::Other => Ok(()),
        }
    }

    async fn transcript(
        &mut self,
        role: Role,
        item_id: String,
        text: String,
        is_final: bool,
    ) -> Result<(), Stop> {
        self.emit(ModelEvent::Transcript {
            role,
            item_id,
            text,
            is_final,
        })
        .await
    }

    fn count_audio(&mut self, item_id: &str, bytes: usize) {
        if let Some((_, total)) = self.item_audio.iter_mut().find(|(id, _)| id == item_id) {
            *total += bytes;
            return;
        }
        if self.item_audio.len() == TRACKED_ITEMS {
            self.item_audio.pop_front();
        }
        self.item_audio.push_back((item_id.to_string(), bytes));
    }
}

/// Sleep until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
