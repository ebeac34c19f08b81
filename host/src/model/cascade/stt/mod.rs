//! Speech to text: the caller's audio in, transcripts of their turns out.
//!
//! The cascade runs the local voice detector on every call (barge-in must not wait for a
//! service) and tells the stream where it heard speech start and stop. A service that
//! transcribes whole turns uses those marks as the turn's bounds; a streaming service with
//! endpointing of its own ends turns itself and may ignore them.

pub mod deepgram;
pub mod openai;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::model::{AudioFormat, ProviderError};

/// What the cascade tells a speech-to-text stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SttInput {
    /// Caller audio, in the format the stream was opened with.
    Audio(Vec<u8>),
    /// The local voice detector heard the caller start speaking.
    SpeechStarted,
    /// The caller has been silent for the end-of-speech silence: the turn ends here, unless
    /// the service ends turns itself.
    SpeechStopped,
}

/// What a speech-to-text stream tells the cascade.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// Text of the turn so far, to be revised (shown live, not acted on).
    Interim(String),
    /// The caller's whole turn: what the language model is given. Empty when the turn had no
    /// words (noise, a cough).
    Final {
        text: String,
        confidence: Option<f32>,
    },
    /// Audio the service bills, in seconds (as it reports it, or as sent).
    Usage { seconds: f64 },
    /// The stream failed and is over; the cascade says so to the caller and the record.
    Failed(ProviderError),
}

/// An open stream. Dropping `input` ends it: the service is told (where it has a way) and
/// the remaining events, then the end of `events`, follow.
#[derive(Debug)]
pub struct SttStream {
    pub input: mpsc::Sender<SttInput>,
    pub events: mpsc::Receiver<SttEvent>,
}

/// A speech-to-text service.
pub trait SpeechToText: Send + Sync + std::fmt::Debug {
    /// Short name for logs, usage rows and the record (`openai`, `deepgram`, `local`).
    fn name(&self) -> &'static str;

    /// Caller audio formats the service takes, preferred first. The cascade sends the first
    /// one it can produce without resampling, else the first.
    fn formats(&self) -> Vec<AudioFormat>;

    /// Open a stream for one call. `language` is a BCP-47 hint (`en-US`).
    fn open(
        &self,
        format: AudioFormat,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<SttStream, ProviderError>>;
}
