//! Text to speech: the language model's answer in, as it streams sentence by sentence, audio
//! out as soon as the service makes it.

pub mod cartesia;
pub mod elevenlabs;
pub mod espeak;
pub mod openai;
mod socket_utterance;
mod whole_samples;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::model::{AudioFormat, ErrorKind, ProviderError};

/// Text for one utterance (one answer of the agent).
#[derive(Debug, Clone, PartialEq)]
pub enum TtsInput {
    /// The next piece of the answer, a whole sentence as a rule (ends with its own
    /// punctuation; the stream adds the space between pieces).
    Text(String),
    /// No more text: synthesise what is left, send it, then [`TtsEvent::Done`].
    End,
}

/// What an utterance's stream tells the cascade.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    /// Audio, in the format the utterance was opened with, as soon as the service sends it
    /// (faster than real time; the call paces it). Any length of whole samples.
    Audio(Vec<u8>),
    /// Characters of text the service bills for what was sent so far.
    Usage { characters: u64 },
    /// All the utterance's audio has been sent.
    Done,
    /// Synthesis failed; the utterance is over.
    Failed(ProviderError),
}

/// One utterance being synthesised. Dropping it cancels synthesis at once (barge-in): the
/// service is told to stop where it has a way (a context closed, a request aborted).
#[derive(Debug)]
pub struct TtsStream {
    pub input: mpsc::Sender<TtsInput>,
    pub events: mpsc::Receiver<TtsEvent>,
}

/// A text-to-speech service.
pub trait TextToSpeech: Send + Sync + std::fmt::Debug {
    /// Short name for logs, usage rows and the record (`openai`, `elevenlabs`, `cartesia`,
    /// `espeak`).
    fn name(&self) -> &'static str;

    /// Audio formats the service can produce, preferred first. The cascade asks for the
    /// session's output format when it is listed, else the first, and resamples.
    fn formats(&self) -> Vec<AudioFormat>;

    /// Start an utterance. `voice` overrides the configured voice; `language` is a BCP-47
    /// hint.
    fn open(
        &self,
        format: AudioFormat,
        voice: Option<String>,
        language: Option<String>,
    ) -> BoxFuture<'_, Result<TtsStream, ProviderError>>;
}

/// Raw 16-bit PCM at each of `rates`, for [`TextToSpeech::formats`].
fn pcm_formats(rates: &[u32]) -> Vec<AudioFormat> {
    rates
        .iter()
        .map(|&rate| AudioFormat::Pcm16 { rate })
        .collect()
}

/// The rate of `format` if it is raw 16-bit PCM at one of `rates`.
fn pcm_rate(service: &str, rates: &[u32], format: AudioFormat) -> Result<u32, ProviderError> {
    match format {
        AudioFormat::Pcm16 { rate } if rates.contains(&rate) => Ok(rate),
        other => Err(ProviderError::new(
            ErrorKind::Unsupported,
            None,
            format!("{service} has no raw PCM output as {other}"),
        )),
    }
}
