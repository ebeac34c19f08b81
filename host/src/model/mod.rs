//! AI voice model providers behind one trait.
//!
//! This module knows nothing of SIP, RTP, agents or calls: a [`ModelSession`] takes audio frames
//! and [`Command`]s in and gives audio frames and [`ModelEvent`]s out. Providers:
//! [`openai::OpenAiProvider`] (OpenAI Realtime, GA protocol; also Azure and compatible
//! endpoints), [`gemini::GeminiProvider`] (Gemini Live) and [`offline::OfflineProvider`]
//! (local espeak-ng speech, voice-activity detection and speech recognition, no network) and
//! [`echo::EchoProvider`] (the caller's audio straight back: a line test).
//!
//! Resampling and transcoding are not done here: each provider states which [`AudioFormat`]s it
//! accepts ([`ModelProvider::formats`]) and the caller converts to one of them. (The offline
//! provider takes caller audio at every call rate and brings it to its detector's rate itself,
//! on a lower-priority runtime, see `offline`.)
//!
//! Barge-in: on [`ModelEvent::SpeechStarted`] stop playback, then send [`Command::Truncate`]
//! with the agent item being played and how much of it the caller actually heard (OpenAI
//! trims its context to that; Gemini and offline decide themselves and ignore it).
//!
//! ```no_run
//! use switchboard::model::{Command, ModelConfig, ModelEvent, SessionSettings, TurnDetection};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = ModelConfig::default().build()?; // offline: no key, no network
//! let formats = provider.formats();
//! let mut session = provider
//!     .connect(SessionSettings {
//!         model: None,
//!         instructions: "You are a helpful receptionist.".into(),
//!         voice: None,
//!         language: Some("en-US".into()),
//!         tools: vec![],
//!         greeting: Some("Thanks for calling.".into()),
//!         input_format: formats.input[0],
//!         output_format: formats.output[0],
//!         turn_detection: TurnDetection::default(),
//!         input_transcription: true,
//!         history: Vec::new(),
//!     })
//!     .await?;
//! session.send(Command::Audio(vec![0; 640])).await?; // 20 ms of 16 kHz PCM16 silence
//! while let Some(event) = session.recv().await {
//!     match event {
//!         ModelEvent::Audio { data: _, format: _, .. } => { /* resample from `format`, play */ }
//!         ModelEvent::Closed(_reason) => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod cascade;
pub mod config;
pub mod echo;
mod espeak;
pub mod gemini;
mod listen;
pub mod offline;
pub mod openai;
mod routing;
pub mod speech_cache;
pub mod sphinx;
mod vad;
mod ws;

/// Who spoke: the host's one role type, part of this module's events.
pub use crate::domain::Role;
pub use crate::domain::agent_event::Expectation;
pub use crate::domain::events::StageLatency;
use crate::domain::usage::{self, UsageItem};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;

pub use config::{
    GeminiConfig, ModelConfig, OfflineConfig, OpenAiAuth, OpenAiConfig, ProviderConfig, Secret,
};

/// Audio encoding of frames crossing the model boundary (mono in every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// G.711 μ-law, 8 kHz: RTP payload bytes passed straight through.
    Pcmu8k,
    /// G.711 A-law, 8 kHz: RTP payload bytes passed straight through.
    Pcma8k,
    /// 16-bit signed little-endian PCM at `rate` Hz.
    Pcm16 { rate: u32 },
}

impl AudioFormat {
    /// Bytes of audio per millisecond in this format.
    pub fn bytes_per_ms(self) -> f64 {
        match self {
            AudioFormat::Pcmu8k | AudioFormat::Pcma8k => 8.0,
            AudioFormat::Pcm16 { rate } => f64::from(rate) * 2.0 / 1000.0,
        }
    }

    /// Duration in whole milliseconds of `bytes` bytes of this format.
    pub fn duration_ms(self, bytes: usize) -> u64 {
        (bytes as f64 / self.bytes_per_ms()) as u64
    }

    /// Sample rate in Hz.
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioFormat::Pcmu8k | AudioFormat::Pcma8k => 8000,
            AudioFormat::Pcm16 { rate } => rate,
        }
    }
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AudioFormat::Pcmu8k => f.write_str("pcmu/8000"),
            AudioFormat::Pcma8k => f.write_str("pcma/8000"),
            AudioFormat::Pcm16 { rate } => write!(f, "pcm16/{rate}"),
        }
    }
}

/// The audio formats a provider accepts for input (caller → model) and can produce for output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSupport {
    pub input: Vec<AudioFormat>,
    pub output: Vec<AudioFormat>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// How eagerly a semantic turn detector ends the caller's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eagerness {
    Low,
    Medium,
    High,
    #[default]
    Auto,
}

/// Turn detection (end-of-turn and barge-in detection) wanted for the session.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TurnDetection {
    /// Energy/NN voice activity detection with explicit timings.
    ServerVad {
        /// 0.0–1.0 activation threshold.
        threshold: f32,
        prefix_padding_ms: u32,
        silence_duration_ms: u32,
    },
    /// Model-judged end of turn (OpenAI `semantic_vad`; other providers use their default VAD).
    SemanticVad { eagerness: Eagerness },
}

impl Default for TurnDetection {
    fn default() -> Self {
        TurnDetection::ServerVad {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// Everything needed to open one model session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    /// Model name; `None` uses the provider's configured default.
    pub model: Option<String>,
    pub instructions: String,
    /// Voice name; `None` uses the provider's configured default.
    pub voice: Option<String>,
    /// BCP-47 / ISO-639-1 language hint (e.g. `en-US`, `en`).
    pub language: Option<String>,
    pub tools: Vec<ToolSpec>,
    /// Exact words spoken first, before any caller audio.
    pub greeting: Option<String>,
    pub input_format: AudioFormat,
    pub output_format: AudioFormat,
    pub turn_detection: TurnDetection,
    /// Transcribe the caller's speech (where the provider can).
    pub input_transcription: bool,
    /// The conversation so far, oldest first, when this session takes over a call from one
    /// that ended (the model closed while the call was on hold): given to the model as
    /// context, not spoken.
    pub history: Vec<(Role, String)>,
}

/// Commands into a session.
/// What a running session can take in place: the agent's instructions and tools.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUpdate {
    pub instructions: String,
    pub tools: Vec<ToolSpec>,
}

impl SessionUpdate {
    /// The part of `settings` a running session can take.
    pub fn of(settings: &SessionSettings) -> SessionUpdate {
        SessionUpdate {
            instructions: settings.instructions.clone(),
            tools: settings.tools.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// One frame of caller audio in the session's input format.
    Audio(Vec<u8>),
    /// Speak these exact words now.
    Say(String),
    /// Result of a tool call (`output` is a JSON string); the model then continues.
    ToolResult { call_id: String, output: String },
    /// Barge-in bookkeeping: the caller heard only `audio_end_ms` of agent item `item_id`.
    /// Values beyond what the model generated are clamped.
    Truncate { item_id: String, audio_end_ms: u64 },
    /// Stop the response being generated (manual barge-in).
    CancelResponse,
    /// Replace the instructions and tools for the rest of the session (a hand-off to another
    /// agent whose voice and model the session keeps: see [`ModelProvider::updates_live`]).
    Update(SessionUpdate),
    /// What the caller is expected to say next (from the agent): a provider with a local
    /// recogniser listens for it; the others have nothing to tune and ignore it.
    Expect(Expectation),
    /// Close the session; a final [`ModelEvent::Closed`] follows.
    Close,
}

/// Token usage of one response (or one usage report), as given by the provider: its totals and
/// each part of them it broke out (`None`: not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Who reported it ([`ModelProvider::name`]).
    pub provider: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub input_audio_tokens: Option<u64>,
    pub input_text_tokens: Option<u64>,
    pub output_audio_tokens: Option<u64>,
    pub output_text_tokens: Option<u64>,
    /// The part of `input_tokens` served from the provider's prompt cache (billed lower).
    pub input_cached_tokens: Option<u64>,
    pub input_cached_audio_tokens: Option<u64>,
    pub input_cached_text_tokens: Option<u64>,
    /// Tokens the model spent thinking, counted apart from `output_tokens` (Gemini).
    pub thoughts_tokens: Option<u64>,
    /// Tokens of tool results read back as prompt, counted apart from `input_tokens` (Gemini).
    pub tool_use_prompt_tokens: Option<u64>,
}

impl Usage {
    /// The report as speech-to-speech usage items, one per number the provider reported:
    /// a reported zero is kept, an unreported part is left out.
    pub fn items(&self) -> Vec<UsageItem> {
        let reported = [
            (usage::INPUT, Some(self.input_tokens)),
            ("input-text", self.input_text_tokens),
            ("input-audio", self.input_audio_tokens),
            ("input-cached", self.input_cached_tokens),
            ("input-cached-text", self.input_cached_text_tokens),
            ("input-cached-audio", self.input_cached_audio_tokens),
            (usage::OUTPUT, Some(self.output_tokens)),
            ("output-text", self.output_text_tokens),
            ("output-audio", self.output_audio_tokens),
            ("thoughts", self.thoughts_tokens),
            ("tool-use-prompt", self.tool_use_prompt_tokens),
        ];
        reported
            .into_iter()
            .filter_map(|(kind, tokens)| {
                Some(UsageItem {
                    provider: self.provider.into(),
                    stage: usage::SPEECH_TO_SPEECH.into(),
                    kind: kind.into(),
                    unit: usage::TOKENS.into(),
                    amount: tokens? as f64,
                })
            })
            .collect()
    }
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    Completed,
    /// Cut short by barge-in or a cancel command.
    Cancelled,
    /// Stopped early (token limit, content filter).
    Incomplete,
    Failed,
}

/// Category of a provider error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or configuration was rejected as invalid.
    InvalidRequest,
    /// Bad or missing credentials, or a policy refusal.
    Auth,
    /// Quota or rate limit.
    RateLimited,
    /// Internal error on the provider side.
    Server,
    /// The provider did not answer in time.
    Timeout,
    /// The provider sent something this client cannot understand.
    Protocol,
    /// The provider cannot do what was asked (e.g. change instructions mid-session).
    Unsupported,
    /// Local failure (e.g. the speech synthesiser failed).
    Local,
}

/// A typed provider error with the provider's own code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// Provider error code (OpenAI `error.code`, WebSocket close code for Gemini).
    pub code: Option<String>,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Closed on request, or the provider closed cleanly.
    Normal,
    /// The connection was lost without a closing handshake.
    Dropped,
    /// The provider ended the session with an error.
    Error(ProviderError),
}

/// Events out of a session.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    /// Agent audio for item `item_id` (used in [`Command::Truncate`]); generated faster than
    /// real time, so the caller must pace playback and track what was actually played.
    Audio {
        item_id: String,
        data: Vec<u8>,
        format: AudioFormat,
    },
    /// The caller started speaking: stop agent playback now (barge-in).
    /// `audio_start_ms` counts from the start of input audio when the provider gives it.
    SpeechStarted {
        audio_start_ms: Option<u64>,
    },
    /// The caller stopped speaking.
    SpeechStopped {
        audio_end_ms: Option<u64>,
    },
    /// Transcript text. Non-final events are fragments to append; a final event carries the
    /// whole text of that turn.
    Transcript {
        role: Role,
        item_id: String,
        text: String,
        is_final: bool,
    },
    /// The model wants a tool called; answer with [`Command::ToolResult`].
    ToolCall {
        call_id: String,
        name: String,
        /// JSON object as a string.
        arguments: String,
    },
    Usage(Usage),
    /// What a cascade's stages used (STT seconds, LLM tokens, TTS characters), as items.
    UsageItems(Vec<UsageItem>),
    /// How long each stage of a cascade took for the answer whose audio comes next.
    StageLatency(StageLatency),
    /// A provider that carries the call's audio itself started playing agent audio to the
    /// caller (OpenAI's SIP connector: `output_audio_buffer.started`).
    AudioStarted,
    /// Such a provider has played all of it, or cut it on barge-in
    /// (`output_audio_buffer.stopped` / `.cleared`): the caller heard what there was to hear.
    AudioStopped,
    /// A keypad digit the caller pressed, reported by a provider that carries the call's audio
    /// itself (OpenAI's SIP connector).
    Digit(char),
    ResponseDone {
        status: ResponseStatus,
    },
    /// The provider announced it will close the connection soon.
    GoingAway {
        time_left_ms: Option<u64>,
    },
    /// A non-fatal error; the session goes on.
    Error(ProviderError),
    /// The session ended; no events follow.
    Closed(CloseReason),
}

/// Failure to open a session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{provider} does not accept {direction} audio format {format}")]
    UnsupportedFormat {
        provider: &'static str,
        direction: &'static str,
        format: AudioFormat,
    },
    #[error("cannot use CA file {path:?}: {reason}")]
    InvalidCaFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("invalid provider URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("connecting to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("{provider} did not complete session setup within {timeout_ms} ms")]
    Timeout {
        provider: &'static str,
        timeout_ms: u64,
    },
    #[error("{provider} rejected the session: {error}")]
    Rejected {
        provider: &'static str,
        error: ProviderError,
    },
    #[error("{provider} closed the connection during setup")]
    ClosedDuringSetup { provider: &'static str },
    #[error("the agent's model {model:?} names no profile under [model.cascade.profiles]")]
    UnknownProfile { model: String },
    #[error("offline speech synthesis unavailable ({program}): {reason}")]
    SynthesizerUnavailable { program: String, reason: String },
}

/// An open session: send [`Command`]s, receive [`ModelEvent`]s. The last event is always
/// [`ModelEvent::Closed`]. Dropping the session closes it.
///
/// Both channels are bounded (backpressure instead of unbounded memory): keep receiving events
/// while sending commands (e.g. from separate tasks, or `try_send` in a `select!` loop), since
/// a session blocked on a full event channel stops reading commands.
#[derive(Debug)]
pub struct ModelSession {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<ModelEvent>,
    /// Format of audio to send in [`Command::Audio`].
    pub input_format: AudioFormat,
    /// Format of [`ModelEvent::Audio`] data.
    pub output_format: AudioFormat,
    /// The reply to caller audio is that audio, unchanged (the echo line): the call may loop
    /// it back in the media layer instead of sending it here frame by frame.
    pub loopback: bool,
}

impl ModelSession {
    /// Send a command; fails only once the session has ended.
    pub async fn send(&self, command: Command) -> Result<(), SessionEnded> {
        self.commands.send(command).await.map_err(|_| SessionEnded)
    }

    /// Next event; `None` after [`ModelEvent::Closed`] was delivered.
    pub async fn recv(&mut self) -> Option<ModelEvent> {
        self.events.recv().await
    }
}

/// The session's task has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("model session has ended")]
pub struct SessionEnded;

/// A source of model sessions.
pub trait ModelProvider: Send + Sync {
    /// Short provider name for logs and errors (`openai`, `gemini`, `offline`).
    fn name(&self) -> &'static str;

    /// Audio formats this provider accepts in and produces out.
    fn formats(&self) -> FormatSupport;

    /// Audio formats of the sessions for `model` ([`SessionSettings::model`]): the same for
    /// every model, except where the model names another provider (`cascade:<profile>`).
    fn formats_for(&self, model: Option<&str>) -> FormatSupport {
        let _ = model;
        self.formats()
    }

    /// Whether a session opened with `running` can take `next` in place through
    /// [`Command::Update`] (instructions and tools); `false` when `next` needs a new session
    /// (another voice or model, or a provider that fixes its settings at setup).
    fn updates_live(&self, running: &SessionSettings, next: &SessionSettings) -> bool;

    /// Open a session: connects, applies `settings`, starts the greeting (if any), and returns
    /// once the provider has accepted the configuration.
    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>>;
}

/// Reject formats the provider does not accept.
fn check_formats(
    provider: &dyn ModelProvider,
    settings: &SessionSettings,
) -> Result<(), ConnectError> {
    let support = provider.formats();
    if !support.input.contains(&settings.input_format) {
        return Err(ConnectError::UnsupportedFormat {
            provider: provider.name(),
            direction: "input",
            format: settings.input_format,
        });
    }
    if !support.output.contains(&settings.output_format) {
        return Err(ConnectError::UnsupportedFormat {
            provider: provider.name(),
            direction: "output",
            format: settings.output_format,
        });
    }
    Ok(())
}

/// The sample rates calls carry (G.711, G.722, 24 kHz carriers' streams, Opus): a provider
/// that takes and makes audio at each spares the media path a resampling.
pub(crate) const CALL_RATES: [u32; 4] = [8_000, 16_000, 24_000, 48_000];

/// Capacity of the command and event channels of a session: a few seconds of 20 ms frames.
pub const CHANNEL_CAPACITY: usize = 256;

/// Wording that makes a generative model speak `text` verbatim.
fn say_exactly_prompt(text: &str) -> String {
    format!(
        "Say exactly the following words, word for word, and nothing else: \"{}\"",
        text.replace('"', "'")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_per_format() {
        assert_eq!(AudioFormat::Pcmu8k.duration_ms(1600), 200);
        assert_eq!(AudioFormat::Pcma8k.duration_ms(160), 20);
        assert_eq!(AudioFormat::Pcm16 { rate: 24000 }.duration_ms(960), 20);
        assert_eq!(AudioFormat::Pcm16 { rate: 16000 }.duration_ms(640), 20);
        assert_eq!(AudioFormat::Pcm16 { rate: 24000 }.sample_rate(), 24000);
    }

    #[test]
    fn turn_detection_deserializes() {
        let td: TurnDetection =
            serde_json::from_str(r#"{"type":"semantic_vad","eagerness":"high"}"#).unwrap();
        assert_eq!(
            td,
            TurnDetection::SemanticVad {
                eagerness: Eagerness::High
            }
        );
        let bad = serde_json::from_str::<TurnDetection>(r#"{"type":"server_vad","threshold":0.5}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn provider_error_display() {
        let e = ProviderError::new(ErrorKind::Auth, Some("1008".into()), "bad key");
        assert_eq!(e.to_string(), "Auth (1008): bad key");
    }

    #[test]
    fn say_prompt_quotes_text() {
        let p = say_exactly_prompt("Hi \"there\"");
        assert!(p.ends_with("\"Hi 'there'\""));
    }
}
