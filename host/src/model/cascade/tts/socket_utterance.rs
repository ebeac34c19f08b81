//! What an utterance over a streaming socket does, whatever the service: each piece goes up as
//! it comes (its characters billed), base64 audio frames come down as whole samples, and a
//! stall timer runs while audio is due. The service's own part, what a frame looks like and
//! how to stop, is an [`UtteranceSocket`].

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::whole_samples::WholeSamples;
use super::{TtsEvent, TtsInput, TtsStream};
use crate::model::cascade::http;
use crate::model::{CHANNEL_CAPACITY, ErrorKind, ProviderError};

/// What one frame from the service brings: audio first, then perhaps the utterance's end.
#[derive(Debug, Default)]
pub(super) struct Heard {
    /// Raw 16-bit PCM, cut anywhere.
    pub audio: Option<Vec<u8>>,
    /// The utterance is over: all audio sent, or the service failed it.
    pub end: Option<Result<(), ProviderError>>,
}

impl Heard {
    pub(super) fn failed(error: ProviderError) -> Self {
        Self {
            audio: None,
            end: Some(Err(error)),
        }
    }
}

/// One utterance's way to a streaming service.
pub(super) trait UtteranceSocket: Send + 'static {
    /// The service's name, for logs.
    const SERVICE: &'static str;

    /// Send a piece of text; `first` is the utterance's first.
    fn send_piece(
        &mut self,
        text: &str,
        first: bool,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Tell the service no more text comes.
    fn send_end(&mut self) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The next frame; must be cancel-safe (it races the input).
    fn next_frame(&mut self) -> impl Future<Output = Heard> + Send;

    /// The utterance is over (`completed`: all its audio came); stop the service where it
    /// still works, before the stream hears the end.
    fn finish(self, completed: bool) -> impl Future<Output = ()> + Send;
}

/// Start an utterance on `socket`; `stall` is the longest silence while audio is due.
pub(super) fn start<S: UtteranceSocket>(socket: S, stall: Duration) -> TtsStream {
    let (input_tx, input) = mpsc::channel(CHANNEL_CAPACITY);
    let (events, events_rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(utterance(socket, stall, input, events).in_current_span());
    TtsStream {
        input: input_tx,
        events: events_rx,
    }
}

/// Decode a frame's base64 audio.
pub(super) fn decode_audio(base64: &str) -> Result<Vec<u8>, ProviderError> {
    B64.decode(base64)
        .map_err(|_| ProviderError::new(ErrorKind::Protocol, None, "audio is not base64"))
}

/// How an utterance's loop ends.
enum Outcome {
    Done,
    Failed(ProviderError),
    /// The stream was dropped (barge-in): stop the service, tell no one.
    Cancelled,
}

async fn utterance<S: UtteranceSocket>(
    mut socket: S,
    stall: Duration,
    input: mpsc::Receiver<TtsInput>,
    events: mpsc::Sender<TtsEvent>,
) {
    let outcome = run(&mut socket, stall, input, &events).await;
    let event = match outcome {
        Outcome::Done => Some(TtsEvent::Done),
        Outcome::Failed(error) => {
            tracing::warn!(service = S::SERVICE, %error, "speech failed");
            Some(TtsEvent::Failed(error))
        }
        Outcome::Cancelled => {
            tracing::debug!(service = S::SERVICE, "speech cancelled");
            None
        }
    };
    socket.finish(matches!(event, Some(TtsEvent::Done))).await;
    if let Some(event) = event {
        let _ = events.send(event).await;
    }
}

async fn run<S: UtteranceSocket>(
    socket: &mut S,
    stall: Duration,
    mut input: mpsc::Receiver<TtsInput>,
    events: &mpsc::Sender<TtsEvent>,
) -> Outcome {
    let mut samples = WholeSamples::default();
    let (mut sent_text, mut heard_audio, mut ended) = (false, false, false);
    let mut deadline = Instant::now() + stall;
    loop {
        // Audio is due from the first piece to its first audio, and until the end once End is.
        let audio_due = ended || (sent_text && !heard_audio);
        tokio::select! {
            _ = events.closed() => return Outcome::Cancelled,
            _ = tokio::time::sleep_until(deadline), if audio_due => {
                return Outcome::Failed(http::timed_out("no audio from the service", stall));
            }
            next = input.recv(), if !ended => {
                let sent = match next {
                    Some(TtsInput::Text(text)) => {
                        let characters = text.chars().count() as u64;
                        let first = !sent_text;
                        sent_text = true;
                        if events.send(TtsEvent::Usage { characters }).await.is_err() {
                            return Outcome::Cancelled;
                        }
                        socket.send_piece(&text, first).await
                    }
                    Some(TtsInput::End) => {
                        ended = true;
                        socket.send_end().await
                    }
                    None => return Outcome::Cancelled,
                };
                if let Err(error) = sent {
                    return Outcome::Failed(error);
                }
                deadline = Instant::now() + stall;
            }
            heard = socket.next_frame() => {
                deadline = Instant::now() + stall;
                if let Some(bytes) = heard.audio {
                    heard_audio = true;
                    let audio = samples.take(&bytes);
                    if !audio.is_empty() && events.send(TtsEvent::Audio(audio)).await.is_err() {
                        return Outcome::Cancelled;
                    }
                }
                match heard.end {
                    Some(Ok(())) => return Outcome::Done,
                    Some(Err(error)) => return Outcome::Failed(error),
                    None => {}
                }
            }
        }
    }
}
