//! The sideband socket (`wss://…/v1/realtime?call_id=…`) as the call's model session. The
//! OpenAI Realtime provider runs the socket (same events as any realtime session, minus audio);
//! this relay sits between it and the call to keep the call going over a dropped socket: it
//! reattaches once, and when the socket cannot come back it ends the call on the leg (as a
//! caller hang-up when OpenAI reports the call gone) rather than as a model failure, since the
//! provider, not the host, would play any apology. It also checks the greeting: the API has no
//! verbatim speech, so a greeting spoken otherwise is recorded.

use tokio::sync::mpsc;
use tracing::Instrument;

use super::leg::CallLink;
use crate::call::events::Recorder;
use crate::call::leg::LegEvent;
use crate::domain::Role;
use crate::domain::events::EventKind;
use crate::model::openai::OpenAiProvider;
use crate::model::{CHANNEL_CAPACITY, Command, ConnectError, ModelEvent, ModelSession};

/// Whether attaching failed because OpenAI no longer knows the call (it ended): the upgrade
/// was refused with 404.
pub fn call_gone(error: &ConnectError) -> bool {
    matches!(error, ConnectError::Rejected { error, .. } if error.code.as_deref() == Some("404"))
}

/// Words compared loosely: case, punctuation and spacing aside.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// What the relay needs besides the first session.
pub struct Relay {
    pub provider: OpenAiProvider,
    /// OpenAI's id of the call.
    pub call_id: String,
    pub link: CallLink,
    pub recorder: Recorder,
    /// The greeting asked for, checked against the first thing the agent says.
    pub greeting: Option<String>,
}

impl Relay {
    /// The call's model session over `first`, relayed.
    pub fn start(self, first: ModelSession) -> ModelSession {
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let session = ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: first.input_format,
            output_format: first.output_format,
            loopback: false,
        };
        tokio::spawn(self.run(first, cmd_rx, ev_tx).in_current_span());
        session
    }

    async fn run(
        mut self,
        mut inner: ModelSession,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<ModelEvent>,
    ) {
        let mut reattached = false;
        loop {
            let event = tokio::select! {
                command = commands.recv() => {
                    match command {
                        Some(Command::Close) | None => {
                            let _ = inner.commands.send(Command::Close).await;
                            return;
                        }
                        // A closed socket shows up as its Closed event.
                        Some(command) => {
                            let _ = inner.commands.send(command).await;
                        }
                    }
                    continue;
                }
                event = inner.events.recv() => event,
            };
            let reason = match event {
                Some(ModelEvent::Closed(reason)) => format!("{reason:?}"),
                None => "gone".to_string(),
                Some(event) => {
                    self.check_greeting(&event);
                    if events.send(event).await.is_err() {
                        let _ = inner.commands.send(Command::Close).await;
                        return;
                    }
                    continue;
                }
            };
            match self.reattach(&reason, reattached).await {
                Some(session) => {
                    inner = session;
                    reattached = true;
                }
                None => return,
            }
        }
    }

    /// After the socket closed for `reason`: a new session, or `None` once the leg was told
    /// how the call ends.
    async fn reattach(&mut self, reason: &str, reattached: bool) -> Option<ModelSession> {
        if self.link.is_ended() {
            return None;
        }
        let why = if reattached {
            format!("the sideband socket closed again ({reason})")
        } else {
            tracing::warn!(%reason, "sideband socket closed; reattaching once");
            match self.provider.attach(&self.call_id, None).await {
                Ok(session) => {
                    self.recorder.record(EventKind::ModelError {
                        message: format!("sideband socket closed ({reason}); reattached"),
                    });
                    return Some(session);
                }
                Err(e) if call_gone(&e) => {
                    self.link.far_end_gone();
                    return None;
                }
                Err(e) => format!("the sideband socket closed ({reason}) and did not reopen: {e}"),
            }
        };
        if !self.link.is_ended() {
            let _ = self.link.events.send(LegEvent::Lost(why));
        }
        None
    }

    /// The first final agent transcript against the greeting asked for.
    fn check_greeting(&mut self, event: &ModelEvent) {
        let ModelEvent::Transcript {
            role: Role::Agent,
            text,
            is_final: true,
            ..
        } = event
        else {
            return;
        };
        let Some(greeting) = self.greeting.take() else {
            return;
        };
        if words(text) != words(&greeting) {
            tracing::info!(%greeting, spoken = %text, "the greeting was not spoken verbatim");
            self.recorder.record(EventKind::GreetingReworded {
                asked: greeting,
                spoken: text.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_upgrade_with_404_means_the_call_is_gone() {
        use crate::model::{ErrorKind, ProviderError};
        let refused = |code: &str| ConnectError::Rejected {
            provider: "openai",
            error: ProviderError::new(ErrorKind::InvalidRequest, Some(code.into()), "x"),
        };
        assert!(call_gone(&refused("404")));
        assert!(!call_gone(&refused("401")));
        assert!(!call_gone(&ConnectError::ClosedDuringSetup {
            provider: "openai"
        }));
    }

    #[test]
    fn greetings_compare_by_words() {
        assert_eq!(
            words("Thank you for calling, Acme!"),
            words("thank you  for calling Acme")
        );
        assert_ne!(words("Hello there"), words("Hello"));
    }
}
