//! The offline provider: no key, no network. Speech comes from the local espeak-ng program
//! (the greeting and [`Command::Say`]); the caller's audio runs through a local voice-activity
//! detector so barge-in works, and, when the PocketSphinx model is installed, through a local
//! recogniser (`listen`, `sphinx`) whose final transcripts of each caller turn reach the agent.
//! There is no language model, so the agent's own logic is the brain: no tool calls.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::CALL_RATES;
use super::config::OfflineConfig;
use super::espeak::{self, Espeak};
use super::listen::{BargeIn, Heard, Recognition, listen};
use super::sphinx::{LazyRecogniser, Recogniser};
use super::vad::{Vad, VadEvent};
use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, Command, ConnectError, ErrorKind, Expectation,
    FormatSupport, ModelEvent, ModelProvider, ModelSession, ProviderError, ResponseStatus, Role,
    SessionSettings, check_formats,
};
use crate::runtimes::DedicatedRuntime;

const NAME: &str = "offline";
/// Caller audio rates accepted: the call rates, so the media path never resamples for us (the
/// detector resamples to its own rate on the local model runtime).
const INPUT_RATES: [u32; 4] = CALL_RATES;
/// Rates speech is offered at.
const OUTPUT_RATES: [u32; 5] = espeak::RATES;
/// The voice detector's runtime. Its threads run behind the rest of the process, so when the
/// CPU is overloaded the detector (the bulk of the provider's work) falls behind before SIP
/// signalling, RTP pacing and the agent's speech do.
pub(crate) static DETECTOR_RUNTIME: DedicatedRuntime = DedicatedRuntime::new("local-model", 10, 1);

/// Local speech synthesis and voice-activity detection.
#[derive(Debug)]
pub struct OfflineProvider {
    config: Arc<OfflineConfig>,
    /// Shared by every session of this provider, with its speech cache.
    espeak: Arc<Espeak>,
    /// The speech recogniser, loaded on first connect.
    recogniser: LazyRecogniser,
}

impl OfflineProvider {
    pub fn new(config: OfflineConfig) -> Self {
        Self {
            espeak: Arc::new(Espeak::new(
                config.espeak_program.clone(),
                config.words_per_minute,
                config.speech_cache_mb * 1024 * 1024,
            )),
            recogniser: LazyRecogniser::new(config.recogniser.clone()),
            config: Arc::new(config),
        }
    }

    /// The shared recogniser, when recognition is on and its model loads.
    async fn recogniser(&self) -> Option<Arc<Recogniser>> {
        if !self.config.recognise_speech {
            return None;
        }
        self.recogniser.get().await
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        self.espeak
            .available()
            .await
            .map_err(|reason| ConnectError::SynthesizerUnavailable {
                program: self.espeak.program().display().to_string(),
                reason,
            })?;
        let voice = settings
            .language
            .as_deref()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| self.config.voice.clone());
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (done_tx, done_rx) = mpsc::channel(4);
        let vad = Vad::new(
            settings.input_format.sample_rate(),
            self.config.vad_threshold,
            self.config.min_speech_ms,
            self.config.silence_ms,
        )
        .map_err(|_| ConnectError::UnsupportedFormat {
            provider: NAME,
            direction: "input",
            format: settings.input_format,
        })?;
        let (audio_tx, audio_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (voice_tx, voice_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (expect_tx, expect_rx) = watch::channel(Expectation::Anything);
        let recognition = self.recogniser().await.map(|recogniser| Recognition {
            recogniser,
            expect: expect_rx,
            min_confidence: self.config.min_confidence,
        });
        // Detection and recognition are the bulk of the work and may lag; speech must keep up
        // with the line.
        DETECTOR_RUNTIME.handle().spawn(
            listen(
                vad,
                settings.input_format.sample_rate(),
                recognition,
                audio_rx,
                voice_tx,
            )
            .instrument(tracing::Span::current()),
        );
        let mut actor = Actor {
            espeak: self.espeak.clone(),
            reprompt: self.config.reprompt.clone(),
            speech_out: SpeechOut {
                voice,
                format: settings.output_format,
            },
            events: ev_tx,
            detector: audio_tx,
            barge_in: BargeIn::new(settings.input_format),
            expect: expect_tx,
            caller_turns: 0,
            speaking: None,
            queued: VecDeque::new(),
            next_item: 0,
            done_tx,
        };
        if let Some(greeting) = settings.greeting {
            actor.say(greeting);
        }
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(
            actor
                .run(cmd_rx, done_rx, voice_rx)
                .instrument(tracing::Span::current()),
        );
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: settings.input_format,
            output_format: settings.output_format,
            loopback: false,
        })
    }
}

impl ModelProvider for OfflineProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The synthesiser's voice follows the language; nothing else is the session's.
    fn updates_live(&self, running: &SessionSettings, next: &SessionSettings) -> bool {
        running.language == next.language
    }

    fn formats(&self) -> FormatSupport {
        FormatSupport {
            input: INPUT_RATES
                .iter()
                .map(|&rate| AudioFormat::Pcm16 { rate })
                .collect(),
            output: OUTPUT_RATES
                .iter()
                .map(|&rate| AudioFormat::Pcm16 { rate })
                .collect(),
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

/// How a session speaks: the espeak-ng voice, and the format its audio is handed out in
/// (16-bit PCM at one of [`OUTPUT_RATES`]).
#[derive(Debug, Clone)]
struct SpeechOut {
    voice: String,
    format: AudioFormat,
}

/// One utterance being synthesised and streamed out.
struct Utterance {
    item_id: String,
    text: String,
    task: JoinHandle<()>,
}

/// Sent by a synthesis task when it has emitted all its audio (or failed).
struct SynthDone {
    item_id: String,
    /// How much audio it emitted.
    audio_bytes: usize,
    result: Result<(), String>,
}

struct Actor {
    espeak: Arc<Espeak>,
    /// Said when a turn was not understood.
    reprompt: String,
    speech_out: SpeechOut,
    events: mpsc::Sender<ModelEvent>,
    /// Caller audio to the listening task.
    detector: mpsc::Sender<Vec<u8>>,
    /// Which speech starts the listening task reports are barge-ins.
    barge_in: BargeIn,
    /// The agent's latest hint, for the listening task.
    expect: watch::Sender<Expectation>,
    /// Caller turns transcribed so far (their item ids).
    caller_turns: u64,
    speaking: Option<Utterance>,
    queued: VecDeque<String>,
    next_item: u64,
    done_tx: mpsc::Sender<SynthDone>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::Receiver<SynthDone>,
        mut voice: mpsc::Receiver<Heard>,
    ) {
        loop {
            let alive = tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.on_command(cmd).await,
                },
                Some(finished) = done.recv() => self.on_synth_done(finished).await,
                Some(heard) = voice.recv() => match heard {
                    Heard::Voice(change) => self.on_voice(change).await,
                    Heard::NotUnderstood => {
                        // Asked again, unless something is being said already.
                        if self.speaking.is_none() && !self.reprompt.is_empty() {
                            self.say(self.reprompt.clone());
                        }
                        true
                    }
                    Heard::Words(words) => {
                        self.caller_turns += 1;
                        self.emit(ModelEvent::Transcript {
                            role: Role::Caller,
                            item_id: format!("offline_caller_{}", self.caller_turns),
                            text: words.text,
                            is_final: true,
                        })
                        .await
                    }
                },
            };
            if !alive {
                break;
            }
        }
        self.stop_speaking();
    }

    /// Start speaking `text`, or queue it behind the current utterance.
    fn say(&mut self, text: String) {
        if self.speaking.is_some() {
            self.queued.push_back(text);
            return;
        }
        self.next_item += 1;
        let item_id = format!("offline_{}", self.next_item);
        self.barge_in.utterance_begins();
        let synth = synthesize(
            self.espeak.clone(),
            self.speech_out.clone(),
            text.clone(),
            item_id.clone(),
            self.events.clone(),
            self.done_tx.clone(),
        );
        let task = tokio::spawn(synth.instrument(tracing::Span::current()));
        self.speaking = Some(Utterance {
            item_id,
            text,
            task,
        });
    }

    fn stop_speaking(&mut self) -> bool {
        self.queued.clear();
        match self.speaking.take() {
            Some(u) => {
                // Aborting drops the child process handle, which kills espeak-ng.
                u.task.abort();
                true
            }
            None => false,
        }
    }

    /// Returns false once nobody listens to events any more.
    async fn emit(&self, event: ModelEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    async fn cancel(&mut self) -> bool {
        // The call stops playing what it has of ours, too.
        self.barge_in.cut();
        if self.stop_speaking() {
            self.emit(ModelEvent::ResponseDone {
                status: ResponseStatus::Cancelled,
            })
            .await
        } else {
            true
        }
    }

    /// A change of the caller's speaking state, from the detector.
    async fn on_voice(&mut self, change: VadEvent) -> bool {
        match change {
            VadEvent::Started { at_ms } if !self.barge_in.started(at_ms) => true,
            VadEvent::Stopped { .. } if !self.barge_in.stopped() => true,
            VadEvent::Started { at_ms } => {
                // Barge-in: like a remote model with interrupt_response, stop talking.
                self.emit(ModelEvent::SpeechStarted {
                    audio_start_ms: Some(at_ms),
                })
                .await
                    && self.cancel().await
            }
            VadEvent::Stopped { at_ms } => {
                self.emit(ModelEvent::SpeechStopped {
                    audio_end_ms: Some(at_ms),
                })
                .await
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Audio(frame) => {
                // A detector far behind loses frames rather than holding up the call.
                let bytes = frame.len();
                if self.detector.try_send(frame).is_ok() {
                    self.barge_in.fed(bytes);
                }
                true
            }
            Command::Say(text) => {
                self.say(text);
                true
            }
            Command::CancelResponse => self.cancel().await,
            // No server-side conversation to trim, no model to call tools or follow
            // instructions: these are accepted and have nothing to act on.
            Command::Truncate { .. } | Command::Update(_) => true,
            Command::Expect(hint) => {
                self.expect.send_replace(hint);
                true
            }
            Command::ToolResult { call_id, .. } => {
                tracing::debug!(
                    call_id,
                    "offline provider ignores a tool result it never asked for"
                );
                true
            }
            Command::Close => {
                self.stop_speaking();
                self.emit(ModelEvent::Closed(CloseReason::Normal)).await;
                false
            }
        }
    }

    async fn on_synth_done(&mut self, done: SynthDone) -> bool {
        // A late message from an aborted utterance is stale.
        let Some(current) = self.speaking.take_if(|u| u.item_id == done.item_id) else {
            return true;
        };
        self.barge_in
            .utterance_ends(self.speech_out.format.duration_ms(done.audio_bytes));
        let alive = match done.result {
            Ok(()) => {
                self.emit(ModelEvent::Transcript {
                    role: Role::Agent,
                    item_id: current.item_id,
                    text: current.text,
                    is_final: true,
                })
                .await
                    && self
                        .emit(ModelEvent::ResponseDone {
                            status: ResponseStatus::Completed,
                        })
                        .await
            }
            Err(message) => {
                tracing::warn!(error = %message, "offline speech synthesis failed");
                let error = ProviderError::new(ErrorKind::Local, None, message);
                self.emit(ModelEvent::Error(error)).await
                    && self
                        .emit(ModelEvent::ResponseDone {
                            status: ResponseStatus::Failed,
                        })
                        .await
            }
        };
        if let Some(next) = self.queued.pop_front() {
            self.say(next);
        }
        alive
    }
}

/// Speak `text` as [`ModelEvent::Audio`] chunks, then say it is done.
async fn synthesize(
    espeak: Arc<Espeak>,
    out: SpeechOut,
    text: String,
    item_id: String,
    events: mpsc::Sender<ModelEvent>,
    done: mpsc::Sender<SynthDone>,
) {
    let format = out.format;
    let mut audio_bytes = 0;
    let result = espeak
        .speak(&out.voice, format, &text, |data| {
            audio_bytes += data.len();
            let event = ModelEvent::Audio {
                item_id: item_id.clone(),
                data,
                format,
            };
            let events = events.clone();
            async move { events.send(event).await.is_ok() }
        })
        .await;
    let _ = done
        .send(SynthDone {
            item_id,
            audio_bytes,
            result,
        })
        .await;
}
