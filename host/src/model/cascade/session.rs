//! One cascade session: the caller's audio through the local voice detector (turn taking and
//! barge-in) and a speech-to-text stream; each final transcript, with the conversation so far,
//! to the language model; its answer, sentence by sentence as it streams, to speech synthesis;
//! the audio out as [`ModelEvent::Audio`] in the session's format.
//!
//! Barge-in (the caller starts speaking while the agent answers) drops the language model's
//! stream and the synthesis at once. The call then says how much of the answer's audio the
//! caller heard ([`Command::Truncate`]); the history keeps only the words heard, found by
//! time: speech runs at an even pace of characters, so the characters heard are those of the
//! answer in proportion to the audio played when its synthesis had finished, or at the voice's
//! pace when it had not (the rest of the text had no audio yet): the pace measured on the
//! session's finished answers, [`DEFAULT_CHARS_PER_SECOND`] before the first; the cut falls
//! back to the last whole word.
//!
//! A failing stage is retried once where a retry can help (a language model request that
//! failed before saying anything); otherwise the session ends with an error naming the stage,
//! and the call plays its apology.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::history::History;
use super::llm::{ChatClient, FinishReason, LlmEvent, LlmUsage, ToolCall};
use super::sentences::SentenceSplitter;
use super::stt::{SttEvent, SttInput};
use super::tts::{TextToSpeech, TtsEvent, TtsInput, TtsStream};
use crate::domain::usage::{self, UsageItem};
use crate::model::listen::{BargeIn, Heard};
use crate::model::vad::VadEvent;
use crate::model::{
    AudioFormat, CloseReason, Command, ErrorKind, Expectation, ModelEvent, ProviderError,
    ResponseStatus, Role, StageLatency, ToolSpec,
};
use crate::resample::Pcm16Converter;

/// Answers kept after they end, for a late [`Command::Truncate`] (the call learns how much
/// was heard only when the caller interrupts, which may be after synthesis finished).
const SPOKEN_KEPT: usize = 4;
/// A language model answering with invalid tool arguments is told so and asked again this
/// many times per caller turn; then the stage has failed.
const TOOL_ARGUMENT_RETRIES: u32 = 2;
/// Speaking pace assumed before a session has measured its voice's: about 165 words a minute.
const DEFAULT_CHARS_PER_SECOND: f64 = 15.0;

/// The voice's pace: characters of the session's finished answers and their audio.
#[derive(Debug, Default, Clone, Copy)]
struct Pace {
    chars: u64,
    ms: u64,
}

impl Pace {
    fn add(&mut self, text: &str, ms: u64) {
        self.chars += text.chars().count() as u64;
        self.ms += ms;
    }

    fn chars_per_second(&self) -> f64 {
        if self.ms == 0 {
            return DEFAULT_CHARS_PER_SECOND;
        }
        self.chars as f64 * 1000.0 / self.ms as f64
    }
}

/// The services a session uses, chosen by its profile.
pub(super) struct Stages {
    /// Shown in usage items and errors: the stage's service (`deepgram`, `local`).
    pub stt_name: &'static str,
    /// The configured name of the language model (`groq`, `local-llama`).
    pub llm_name: String,
    pub llm: Arc<ChatClient>,
    pub tts: Arc<dyn TextToSpeech>,
}

/// What the session was opened with.
pub(super) struct Opened {
    pub stages: Stages,
    pub instructions: String,
    pub tools: Vec<ToolSpec>,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub output_format: AudioFormat,
    pub history: History,
    pub greeting: Option<String>,
    pub events: mpsc::Sender<ModelEvent>,
    /// Caller audio to the listening task (voice detection, and the local recogniser).
    pub detector: mpsc::Sender<Vec<u8>>,
    /// The caller audio's format.
    pub input_format: AudioFormat,
    pub expect: watch::Sender<Expectation>,
    /// Caller audio to a speech-to-text service, converted to its rate; `None` when the
    /// local recogniser listens.
    pub stt: Option<SttFeed>,
}

/// The way to a speech-to-text service.
pub(super) struct SttFeed {
    pub input: mpsc::Sender<SttInput>,
    pub converter: Option<Pcm16Converter>,
}

/// What the session hears from outside, apart from commands.
pub(super) struct Inputs {
    pub commands: mpsc::Receiver<Command>,
    pub heard: mpsc::Receiver<Heard>,
    /// `None` with the local recogniser (its words come as [`Heard::Words`]).
    pub stt: Option<mpsc::Receiver<SttEvent>>,
}

/// Times of one answer's stages, for [`StageLatency`].
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    /// The caller stopped speaking (the detector's end of speech).
    speech_stopped: Option<Instant>,
    /// The final transcript arrived.
    transcribed: Option<Instant>,
    asked: Option<Instant>,
    first_token: Option<Instant>,
    first_sentence: Option<Instant>,
}

impl Clock {
    fn latency(&self, first_audio: Instant) -> Option<StageLatency> {
        let ms =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
        Some(StageLatency {
            stt_ms: ms(self.speech_stopped?, self.transcribed?),
            llm_ms: ms(self.asked?, self.first_token?),
            tts_ms: ms(self.first_sentence?, first_audio),
        })
    }
}

/// An answer being made: words from the language model (or fixed words to say), their
/// synthesis, and their audio.
struct Answer {
    item_id: String,
    /// The language model's stream; `None` for fixed words and once it finished.
    llm: Option<mpsc::Receiver<LlmEvent>>,
    splitter: SentenceSplitter,
    /// The words given to synthesis so far.
    text: String,
    /// Opened with the first sentence.
    tts: Option<TtsStream>,
    tts_done: bool,
    converter: Option<Pcm16Converter>,
    /// Bytes of audio handed out (in the session's output format).
    audio_bytes: usize,
    tool_calls: Vec<ToolCall>,
    clock: Clock,
    /// A caller turn's answer (its stages are timed), not the greeting or a `Say`.
    generated: bool,
}

/// An answer that ended, kept for a late truncation.
struct Spoken {
    item_id: String,
    text: String,
    audio_ms: u64,
    /// Its audio is all the text's (synthesis finished).
    whole: bool,
}

pub(super) struct Session {
    stages: Stages,
    instructions: String,
    tools: Vec<ToolSpec>,
    voice: Option<String>,
    language: Option<String>,
    output_format: AudioFormat,
    /// The format asked of the synthesiser: the output format when it makes it, else its first.
    tts_format: AudioFormat,
    history: History,
    events: mpsc::Sender<ModelEvent>,
    detector: mpsc::Sender<Vec<u8>>,
    /// Which speech starts the detector reports are barge-ins.
    barge_in: BargeIn,
    expect: watch::Sender<Expectation>,
    stt: Option<SttFeed>,
    answer: Option<Answer>,
    spoken: VecDeque<Spoken>,
    pace: Pace,
    /// Words to say once the current answer ends.
    queued: VecDeque<String>,
    /// Tool calls handed to the agent and not answered yet.
    awaiting_tools: Vec<String>,
    /// The tools' results came in while words were being said (a filler): the model answers
    /// them once those are done.
    ask_after_say: bool,
    /// Tool arguments the model got wrong this caller turn.
    bad_arguments: u32,
    /// The language model failed this caller turn (it is retried once).
    llm_failed: bool,
    speech_stopped: Option<Instant>,
    /// The clock of the caller turn being answered (kept across tool rounds).
    turn_clock: Option<Clock>,
    next_item: u64,
    caller_turns: u64,
}

/// Whether the session goes on.
type Alive = bool;

enum AnswerEvent {
    Llm(Option<LlmEvent>),
    Tts(Option<TtsEvent>),
}

/// The next event of the answer's language model or synthesis; pending without an answer.
async fn next_answer_event(answer: &mut Option<Answer>) -> AnswerEvent {
    let Some(answer) = answer.as_mut() else {
        return std::future::pending().await;
    };
    let llm = async {
        match answer.llm.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    let tts = async {
        match answer.tts.as_mut() {
            Some(stream) if !answer.tts_done => stream.events.recv().await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        event = llm => AnswerEvent::Llm(event),
        event = tts => AnswerEvent::Tts(event),
    }
}

async fn next_stt_event(stt: &mut Option<mpsc::Receiver<SttEvent>>) -> Option<SttEvent> {
    match stt.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    pub(super) fn new(opened: Opened) -> Session {
        let tts_formats = opened.stages.tts.formats();
        let tts_format = if tts_formats.contains(&opened.output_format) {
            opened.output_format
        } else {
            tts_formats.first().copied().unwrap_or(opened.output_format)
        };
        let mut session = Session {
            stages: opened.stages,
            instructions: opened.instructions,
            tools: opened.tools,
            voice: opened.voice,
            language: opened.language,
            output_format: opened.output_format,
            tts_format,
            history: opened.history,
            events: opened.events,
            detector: opened.detector,
            barge_in: BargeIn::new(opened.input_format),
            expect: opened.expect,
            stt: opened.stt,
            answer: None,
            spoken: VecDeque::new(),
            pace: Pace::default(),
            queued: VecDeque::new(),
            awaiting_tools: Vec::new(),
            ask_after_say: false,
            bad_arguments: 0,
            llm_failed: false,
            speech_stopped: None,
            turn_clock: None,
            next_item: 0,
            caller_turns: 0,
        };
        if let Some(greeting) = opened.greeting {
            session.say(greeting);
        }
        session
    }

    pub(super) async fn run(mut self, mut inputs: Inputs) {
        loop {
            let alive = tokio::select! {
                command = inputs.commands.recv() => match command {
                    None => false,
                    Some(command) => self.on_command(command).await,
                },
                Some(heard) = inputs.heard.recv() => self.on_heard(heard).await,
                event = next_stt_event(&mut inputs.stt) => match event {
                    Some(event) => self.on_stt(event).await,
                    None => {
                        inputs.stt = None;
                        let error = ProviderError::new(
                            ErrorKind::Server,
                            None,
                            "the speech-to-text stream ended",
                        );
                        self.fail("stt", self.stages.stt_name, error).await
                    }
                },
                event = next_answer_event(&mut self.answer) => match event {
                    AnswerEvent::Llm(event) => self.on_llm(event).await,
                    AnswerEvent::Tts(event) => self.on_tts(event).await,
                },
            };
            if !alive {
                break;
            }
        }
    }

    /// Returns false once nobody listens to events any more.
    async fn emit(&self, event: ModelEvent) -> Alive {
        self.events.send(event).await.is_ok()
    }

    fn new_item(&mut self) -> String {
        self.next_item += 1;
        format!("cascade_{}", self.next_item)
    }

    /// Speak fixed words now, or after the current answer.
    fn say(&mut self, text: String) {
        if self.answer.is_some() {
            self.queued.push_back(text);
            return;
        }
        let item_id = self.new_item();
        let mut answer = self.answer_for(item_id, None, false);
        answer.text = text.clone();
        answer.tts = Some(self.open_tts(vec![TtsInput::Text(text), TtsInput::End]));
        self.barge_in.utterance_begins();
        self.answer = Some(answer);
    }

    fn answer_for(
        &self,
        item_id: String,
        llm: Option<mpsc::Receiver<LlmEvent>>,
        generated: bool,
    ) -> Answer {
        Answer {
            item_id,
            llm,
            splitter: SentenceSplitter::default(),
            text: String::new(),
            tts: None,
            tts_done: false,
            converter: super::converter(self.tts_format, self.output_format),
            audio_bytes: 0,
            tool_calls: Vec::new(),
            clock: self.turn_clock.unwrap_or_default(),
            generated,
        }
    }

    /// Start an utterance with the synthesiser, with `first` queued. The service is opened
    /// in the background so that its connection time never holds up the caller's audio; a
    /// failure to open comes back as the stream's [`TtsEvent::Failed`].
    fn open_tts(&self, first: Vec<TtsInput>) -> TtsStream {
        let (input, mut input_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        for piece in first {
            let _ = input.try_send(piece);
        }
        let tts = self.stages.tts.clone();
        let (format, voice, language) =
            (self.tts_format, self.voice.clone(), self.language.clone());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut stream = match tts.open(format, voice, language).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = events_tx.send(TtsEvent::Failed(e)).await;
                        return;
                    }
                };
                // Relay until either side goes away; dropping `stream` cancels synthesis.
                loop {
                    tokio::select! {
                        piece = input_rx.recv() => match piece {
                            Some(piece) => {
                                if stream.input.send(piece).await.is_err() {
                                    break;
                                }
                            }
                            None => break,
                        },
                        event = stream.events.recv() => match event {
                            Some(event) => {
                                if events_tx.send(event).await.is_err() {
                                    break;
                                }
                            }
                            None => break,
                        },
                    }
                }
            },
            tracing::Span::current(),
        ));
        TtsStream { input, events }
    }

    async fn on_command(&mut self, command: Command) -> Alive {
        match command {
            Command::Audio(frame) => {
                if let Some(stt) = self.stt.as_mut() {
                    let audio = match stt.converter.as_mut() {
                        Some(c) => c.convert(&frame, false).unwrap_or_default(),
                        None => frame.clone(),
                    };
                    // A service far behind loses audio rather than holding up the call.
                    let _ = stt.input.try_send(SttInput::Audio(audio));
                }
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
            Command::ToolResult { call_id, output } => self.on_tool_result(call_id, output).await,
            Command::Truncate {
                item_id,
                audio_end_ms,
            } => {
                self.truncate(&item_id, audio_end_ms);
                true
            }
            Command::CancelResponse => {
                self.barge_in.cut();
                self.cancel().await
            }
            Command::Update(update) => {
                self.instructions = update.instructions;
                self.tools = update.tools;
                true
            }
            Command::Expect(hint) => {
                self.expect.send_replace(hint);
                true
            }
            Command::Close => {
                self.answer = None;
                self.emit(ModelEvent::Closed(CloseReason::Normal)).await;
                false
            }
        }
    }

    async fn on_heard(&mut self, heard: Heard) -> Alive {
        match heard {
            Heard::Voice(VadEvent::Started { at_ms }) => {
                self.tell_stt(SttInput::SpeechStarted);
                if !self.barge_in.started(at_ms) {
                    return true;
                }
                // Barge-in: stop talking at once, as a speech-to-speech model does. The call
                // stops playing what it has of ours, too.
                self.barge_in.cut();
                self.emit(ModelEvent::SpeechStarted {
                    audio_start_ms: Some(at_ms),
                })
                .await
                    && self.cancel().await
            }
            Heard::Voice(VadEvent::Stopped { at_ms }) => {
                self.tell_stt(SttInput::SpeechStopped);
                self.speech_stopped = Some(Instant::now());
                if !self.barge_in.stopped() {
                    return true;
                }
                self.emit(ModelEvent::SpeechStopped {
                    audio_end_ms: Some(at_ms),
                })
                .await
            }
            Heard::Words(words) => self.on_caller_turn(words.text).await,
            // The language model is not asked about words nobody heard; the caller is asked
            // again by the model's own next turn, or by the agent.
            Heard::NotUnderstood => true,
        }
    }

    fn tell_stt(&self, input: SttInput) {
        if let Some(stt) = self.stt.as_ref() {
            let _ = stt.input.try_send(input);
        }
    }

    async fn on_stt(&mut self, event: SttEvent) -> Alive {
        match event {
            SttEvent::Interim(text) => {
                tracing::trace!(%text, "interim transcript");
                true
            }
            SttEvent::Final { text, .. } => self.on_caller_turn(text).await,
            SttEvent::Usage { seconds } => {
                let item = self.usage(
                    usage::STT,
                    self.stages.stt_name,
                    "input-audio",
                    usage::SECONDS,
                    seconds,
                );
                self.emit(ModelEvent::UsageItems(vec![item])).await
            }
            SttEvent::Failed(error) => self.fail("stt", self.stages.stt_name, error).await,
        }
    }

    fn usage(&self, stage: &str, provider: &str, kind: &str, unit: &str, amount: f64) -> UsageItem {
        UsageItem {
            provider: provider.into(),
            stage: stage.into(),
            kind: kind.into(),
            unit: unit.into(),
            amount,
        }
    }

    /// The caller finished a turn: what they said goes to the language model.
    async fn on_caller_turn(&mut self, text: String) -> Alive {
        let text = text.trim().to_string();
        if text.is_empty() {
            return true;
        }
        let transcribed = Instant::now();
        // An answer still running (the caller spoke over it without the detector cutting
        // it, or its tools are still out) gives way to the new turn.
        let alive = self.cancel().await;
        // A tool call must be followed by its result in the conversation (the API refuses it
        // otherwise): calls the agent has not answered yet are closed as overtaken.
        for id in std::mem::take(&mut self.awaiting_tools) {
            let output =
                serde_json::json!({"error": "the caller spoke again before this finished"});
            self.history.tool_result(&id, &output.to_string());
        }
        self.caller_turns += 1;
        let event = ModelEvent::Transcript {
            role: Role::Caller,
            item_id: format!("cascade_caller_{}", self.caller_turns),
            text: text.clone(),
            is_final: true,
        };
        if !(alive && self.emit(event).await) {
            return false;
        }
        self.history.caller(&text);
        self.bad_arguments = 0;
        self.llm_failed = false;
        self.turn_clock = Some(Clock {
            speech_stopped: self.speech_stopped.take(),
            transcribed: Some(transcribed),
            ..Clock::default()
        });
        self.ask();
        true
    }

    /// Ask the language model for the next answer, with the conversation so far.
    fn ask(&mut self) {
        self.ask_after_say = false;
        let messages = self.history.messages(&self.instructions);
        let stream = self.stages.llm.complete(messages, &self.tools);
        let item_id = self.new_item();
        let mut answer = self.answer_for(item_id, Some(stream), true);
        answer.clock.asked = Some(Instant::now());
        self.barge_in.utterance_begins();
        self.answer = Some(answer);
    }

    async fn on_llm(&mut self, event: Option<LlmEvent>) -> Alive {
        let Some(answer) = self.answer.as_mut() else {
            return true;
        };
        match event {
            Some(LlmEvent::Text(delta)) => {
                answer.clock.first_token.get_or_insert_with(Instant::now);
                let sentences = answer.splitter.push(&delta);
                for sentence in sentences {
                    self.speak(sentence);
                }
                true
            }
            Some(LlmEvent::ToolCall(call)) => {
                answer.tool_calls.push(call);
                true
            }
            Some(LlmEvent::Usage(used)) => {
                let items = self.llm_usage(&used);
                self.emit(ModelEvent::UsageItems(items)).await
            }
            Some(LlmEvent::Finished(reason)) => {
                answer.llm = None;
                if let Some(rest) = answer.splitter.finish() {
                    self.speak(rest);
                }
                if reason == FinishReason::Length {
                    tracing::warn!("the language model's answer was cut at its token limit");
                }
                self.end_of_words();
                self.maybe_finish().await
            }
            Some(LlmEvent::Failed(error)) => self.on_llm_failed(error).await,
            None => {
                let error = ProviderError::new(
                    ErrorKind::Protocol,
                    None,
                    "the language model's stream ended without finishing",
                );
                self.on_llm_failed(error).await
            }
        }
    }

    fn llm_usage(&self, used: &LlmUsage) -> Vec<UsageItem> {
        let name = self.stages.llm_name.as_str();
        let mut items = vec![
            self.usage(
                usage::LLM,
                name,
                usage::INPUT,
                usage::TOKENS,
                used.prompt_tokens as f64,
            ),
            self.usage(
                usage::LLM,
                name,
                usage::OUTPUT,
                usage::TOKENS,
                used.completion_tokens as f64,
            ),
        ];
        if let Some(cached) = used.cached_tokens {
            items.push(self.usage(
                usage::LLM,
                name,
                "input-cached",
                usage::TOKENS,
                cached as f64,
            ));
        }
        items
    }

    /// A failed request is asked again once if nothing of its answer was said yet; else the
    /// stage has failed.
    async fn on_llm_failed(&mut self, error: ProviderError) -> Alive {
        let said_nothing = self
            .answer
            .as_ref()
            .is_some_and(|a| a.text.is_empty() && a.tts.is_none());
        let retry = said_nothing
            && !self.llm_failed
            && matches!(
                error.kind,
                ErrorKind::Server
                    | ErrorKind::Timeout
                    | ErrorKind::Protocol
                    | ErrorKind::RateLimited
            );
        if retry {
            tracing::warn!(%error, "the language model failed; asking again");
            self.llm_failed = true;
            self.answer = None;
            let alive = self
                .emit(ModelEvent::Error(stage_error(
                    "llm",
                    &self.stages.llm_name,
                    &error,
                )))
                .await;
            self.ask();
            return alive;
        }
        let name = self.stages.llm_name.clone();
        self.fail("llm", &name, error).await
    }

    /// Give a sentence to the synthesiser, opening the utterance with the first one.
    fn speak(&mut self, sentence: String) {
        let sentence = sentence.trim().to_string();
        if sentence.is_empty() {
            return;
        }
        let tts = match self.answer.as_ref().map(|a| a.tts.is_some()) {
            Some(false) => Some(self.open_tts(Vec::new())),
            _ => None,
        };
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        if let Some(tts) = tts {
            answer.tts = Some(tts);
            answer.clock.first_sentence = Some(Instant::now());
        }
        if !answer.text.is_empty() {
            answer.text.push(' ');
        }
        answer.text.push_str(&sentence);
        if let Some(tts) = answer.tts.as_ref() {
            let _ = tts.input.try_send(TtsInput::Text(sentence));
        }
    }

    /// The language model finished: the synthesiser gets no more text.
    fn end_of_words(&mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        match answer.tts.as_ref() {
            Some(tts) => {
                let _ = tts.input.try_send(TtsInput::End);
            }
            // Only tool calls: nothing to say.
            None => answer.tts_done = true,
        }
    }

    async fn on_tts(&mut self, event: Option<TtsEvent>) -> Alive {
        let name = self.stages.tts.name();
        let Some(answer) = self.answer.as_mut() else {
            return true;
        };
        match event {
            Some(TtsEvent::Audio(data)) => {
                let data = match answer.converter.as_mut() {
                    Some(c) => c.convert(&data, false).unwrap_or_default(),
                    None => data,
                };
                if data.is_empty() {
                    return true;
                }
                let mut alive = true;
                if answer.audio_bytes == 0
                    && answer.generated
                    && let Some(latency) = answer.clock.latency(Instant::now())
                {
                    alive = self
                        .events
                        .send(ModelEvent::StageLatency(latency))
                        .await
                        .is_ok();
                }
                answer.audio_bytes += data.len();
                let event = ModelEvent::Audio {
                    item_id: answer.item_id.clone(),
                    data,
                    format: self.output_format,
                };
                alive && self.events.send(event).await.is_ok()
            }
            Some(TtsEvent::Usage { characters }) => {
                let item = self.usage(
                    usage::TTS,
                    name,
                    "input-text",
                    usage::CHARACTERS,
                    characters as f64,
                );
                self.emit(ModelEvent::UsageItems(vec![item])).await
            }
            Some(TtsEvent::Done) => {
                if let Some(tail) = answer
                    .converter
                    .as_mut()
                    .and_then(|c| c.convert(&[], true).ok())
                    .filter(|t| !t.is_empty())
                {
                    answer.audio_bytes += tail.len();
                    let event = ModelEvent::Audio {
                        item_id: answer.item_id.clone(),
                        data: tail,
                        format: self.output_format,
                    };
                    if self.events.send(event).await.is_err() {
                        return false;
                    }
                }
                if let Some(answer) = self.answer.as_mut() {
                    answer.tts_done = true;
                }
                self.maybe_finish().await
            }
            Some(TtsEvent::Failed(error)) => self.fail("tts", name, error).await,
            None => {
                let error = ProviderError::new(
                    ErrorKind::Server,
                    None,
                    "the speech synthesis stream ended before its audio did",
                );
                self.fail("tts", name, error).await
            }
        }
    }

    /// An answer whose words and audio are all out ends: into the history and the record;
    /// its tool calls go to the agent; then what was queued.
    async fn maybe_finish(&mut self) -> Alive {
        let done = self
            .answer
            .as_ref()
            .is_some_and(|a| a.llm.is_none() && a.tts_done);
        if !done {
            return true;
        }
        let answer = self.answer.take().expect("checked");
        self.barge_in
            .utterance_ends(self.output_format.duration_ms(answer.audio_bytes));
        if !answer.text.is_empty() {
            self.remember_said(&answer.item_id, &answer.text);
        }
        let mut alive = true;
        let mut tool_events = Vec::new();
        // All the calls go into the history first (one assistant message), then the errors
        // for the ones the agent is never handed: arguments it cannot read. The model is told
        // and asks again.
        let mut bad = Vec::new();
        for call in answer.tool_calls {
            match serde_json::from_str::<serde_json::Value>(&call.arguments) {
                Ok(serde_json::Value::Object(_)) => {
                    self.awaiting_tools.push(call.id.clone());
                    tool_events.push(ModelEvent::ToolCall {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    });
                }
                _ => {
                    tracing::warn!(tool = %call.name, arguments = %call.arguments,
                        "the language model called a tool with arguments that are no JSON object");
                    bad.push(call.id.clone());
                }
            }
            self.history.tool_call(call);
        }
        let told_of_bad_arguments = !bad.is_empty();
        self.bad_arguments += bad.len() as u32;
        for id in bad {
            let output = serde_json::json!({
                "error": "the arguments were not a valid JSON object; call the tool again with valid arguments"
            });
            self.history.tool_result(&id, &output.to_string());
        }
        if !answer.text.is_empty() {
            let transcript = ModelEvent::Transcript {
                role: Role::Agent,
                item_id: answer.item_id.clone(),
                text: answer.text.clone(),
                is_final: true,
            };
            alive = self.emit(transcript).await;
            let audio_ms = self.output_format.duration_ms(answer.audio_bytes);
            self.pace.add(&answer.text, audio_ms);
            self.keep_spoken(Spoken {
                item_id: answer.item_id,
                text: answer.text,
                audio_ms,
                whole: true,
            });
        }
        for event in tool_events {
            alive = alive && self.emit(event).await;
        }
        alive = alive
            && self
                .emit(ModelEvent::ResponseDone {
                    status: ResponseStatus::Completed,
                })
                .await;
        if !alive {
            return false;
        }
        if self.bad_arguments > TOOL_ARGUMENT_RETRIES {
            let error = ProviderError::new(
                ErrorKind::Protocol,
                None,
                "the language model kept calling tools with invalid arguments",
            );
            let name = self.stages.llm_name.clone();
            return self.fail("llm", &name, error).await;
        }
        if told_of_bad_arguments && self.awaiting_tools.is_empty() {
            // Only bad calls this round: the model was told; it answers that now.
            self.ask();
            return true;
        }
        if let Some(next) = self.queued.pop_front() {
            self.say(next);
        } else if std::mem::take(&mut self.ask_after_say) && self.awaiting_tools.is_empty() {
            self.ask();
        }
        true
    }

    /// What the agent said goes into the conversation, except words said while tools run (a
    /// filler): a chat API wants each tool's result right after the call that asked for it.
    fn remember_said(&mut self, item_id: &str, text: &str) {
        if self.awaiting_tools.is_empty() {
            self.history.agent(item_id, text);
        }
    }

    fn keep_spoken(&mut self, spoken: Spoken) {
        if self.spoken.len() == SPOKEN_KEPT {
            self.spoken.pop_front();
        }
        self.spoken.push_back(spoken);
    }

    async fn on_tool_result(&mut self, call_id: String, output: String) -> Alive {
        let Some(at) = self.awaiting_tools.iter().position(|id| *id == call_id) else {
            tracing::debug!(call_id, "a tool result for no open call");
            return true;
        };
        self.awaiting_tools.remove(at);
        self.history.tool_result(&call_id, &output);
        if self.awaiting_tools.is_empty() {
            if self.answer.is_none() {
                self.ask();
            } else {
                self.ask_after_say = true;
            }
        }
        true
    }

    /// The caller heard only `audio_end_ms` of answer `item_id`: the history keeps the words
    /// heard.
    fn truncate(&mut self, item_id: &str, audio_end_ms: u64) {
        let Some(spoken) = self.spoken.iter().find(|s| s.item_id == item_id) else {
            return;
        };
        let heard_ms = audio_end_ms.min(spoken.audio_ms);
        let pace = self.pace.chars_per_second();
        let heard = heard_words(
            &spoken.text,
            spoken.whole.then_some(spoken.audio_ms),
            heard_ms,
            pace,
        );
        let audio_ms = spoken.audio_ms;
        tracing::debug!(item_id, audio_end_ms, audio_ms, %heard, "answer cut short");
        self.history.heard(item_id, &heard);
    }

    /// Stop the answer being made (barge-in, a cancel, a new caller turn). The history keeps
    /// what of it had audio, until the call says how much was heard.
    async fn cancel(&mut self) -> Alive {
        let Some(answer) = self.answer.take() else {
            return true;
        };
        self.queued.clear();
        let audio_ms = self.output_format.duration_ms(answer.audio_bytes);
        self.barge_in.utterance_ends(audio_ms);
        let whole = answer.tts_done;
        let pace = self.pace.chars_per_second();
        let voiced = heard_words(&answer.text, whole.then_some(audio_ms), audio_ms, pace);
        if !voiced.is_empty() {
            self.remember_said(&answer.item_id, &voiced);
            self.keep_spoken(Spoken {
                item_id: answer.item_id,
                text: answer.text,
                audio_ms,
                whole,
            });
        }
        // Dropping the answer drops the language model's stream and the synthesis.
        self.emit(ModelEvent::ResponseDone {
            status: ResponseStatus::Cancelled,
        })
        .await
    }

    /// A stage failed for good: the session ends with an error naming it (the call plays its
    /// apology).
    async fn fail(&mut self, stage: &str, service: &str, error: ProviderError) -> Alive {
        tracing::error!(stage, service, %error, "cascade stage failed");
        self.answer = None;
        let error = stage_error(stage, service, &error);
        self.emit(ModelEvent::Error(error.clone())).await;
        self.emit(ModelEvent::Closed(CloseReason::Error(error)))
            .await;
        false
    }
}

/// The error with the stage and service it came from in its message.
pub(super) fn stage_error(stage: &str, service: &str, error: &ProviderError) -> ProviderError {
    ProviderError::new(
        error.kind,
        error.code.clone(),
        format!("{stage} ({service}): {}", error.message),
    )
}

/// The words of `text` the caller heard when `heard_ms` of its speech played: the characters
/// in proportion to the time when all of `text` made `whole_ms` of audio, else at
/// `chars_per_second`; cut back to the last whole word.
fn heard_words(text: &str, whole_ms: Option<u64>, heard_ms: u64, chars_per_second: f64) -> String {
    let chars = text.chars().count() as u64;
    let heard_chars = match whole_ms {
        Some(0) => 0,
        Some(whole_ms) => chars * heard_ms.min(whole_ms) / whole_ms,
        None => ((heard_ms as f64 * chars_per_second / 1000.0) as u64).min(chars),
    };
    if heard_chars == chars {
        return text.to_string();
    }
    let heard_chars = heard_chars as usize;
    let mut out = String::new();
    let mut count = 0;
    for word in text.split_whitespace() {
        let end = count + word.chars().count();
        if end > heard_chars {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        count = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_words_are_cut_in_proportion_to_time_at_a_word() {
        let text = "Your order shipped on Monday and arrives on Friday.";
        assert_eq!(heard_words(text, Some(4000), 4000, 15.0), text);
        assert_eq!(heard_words(text, Some(4000), 9000, 15.0), text);
        assert_eq!(heard_words(text, Some(4000), 0, 15.0), "");
        // 1000 of 4000 ms: 12 of 51 characters, "Your order" ends at 10.
        assert_eq!(heard_words(text, Some(4000), 1000, 15.0), "Your order");
        assert_eq!(
            heard_words(text, Some(4000), 2000, 15.0),
            "Your order shipped on"
        );
        assert_eq!(heard_words(text, Some(0), 100, 15.0), "");
        // Synthesis unfinished: at 15 characters a second, 1300 ms → 19 → "Your order shipped";
        // at 20, 1300 ms → 26 → "Your order shipped on".
        assert_eq!(heard_words(text, None, 1300, 15.0), "Your order shipped");
        assert_eq!(heard_words(text, None, 60_000, 15.0), text);
        assert_eq!(heard_words(text, None, 1300, 20.0), "Your order shipped on");
        let mut pace = Pace::default();
        assert_eq!(pace.chars_per_second(), DEFAULT_CHARS_PER_SECOND);
        pace.add("Thank you for calling.", 1100);
        assert_eq!(pace.chars_per_second(), 20.0);
    }
}
