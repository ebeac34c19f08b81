//! Cascade brains: the caller's speech to text (STT), the text and the conversation to a
//! language model's answer (LLM, any OpenAI-compatible chat completions endpoint), the answer to
//! speech (TTS), composed behind the same [`ModelProvider`] trait as the speech-to-speech
//! providers, so the call logic does not know it talks to a cascade.
//!
//! Each stage is an interface with several services behind it: [`stt::SpeechToText`],
//! [`tts::TextToSpeech`] and the chat client of [`llm`]. Turn taking is local for every
//! service: the offline provider's voice detector hears the caller start (barge-in) and stop
//! (the end of the turn, after `silence-ms`), so barge-in never waits for a network round
//! trip. [`session`] runs one call's cascade.

pub mod config;
pub mod history;
mod http;
pub mod llm;
pub mod sentences;
mod session;
pub mod stt;
pub mod tts;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use self::config::{CascadeConfig, Profile, SttService, TtsService};
use self::history::History;
use self::llm::ChatClient;
use self::session::{Inputs, Opened, Session, Stages, SttFeed};
use self::stt::SpeechToText;
use self::stt::deepgram::DeepgramStt;
use self::stt::openai::OpenAiStt;
use self::tts::TextToSpeech;
use self::tts::cartesia::CartesiaTts;
use self::tts::elevenlabs::ElevenLabsTts;
use self::tts::espeak::EspeakTts;
use self::tts::openai::OpenAiTts;
use super::espeak::Espeak;
use super::listen::{Recognition, listen};
use super::offline::DETECTOR_RUNTIME;
use super::sphinx::LazyRecogniser;
use super::vad::Vad;
use super::{
    AudioFormat, CALL_RATES, CHANNEL_CAPACITY, ConnectError, ErrorKind, Expectation, FormatSupport,
    ModelProvider, ModelSession, OfflineConfig, ProviderError, SessionSettings, check_formats,
};
use crate::resample::Pcm16Converter;

const NAME: &str = "cascade";

/// What the profiles of one `[model.cascade]` share: one client per configured service (its
/// connection pool), espeak-ng with its speech cache, the recogniser.
struct Shared {
    local: Arc<OfflineConfig>,
    llms: BTreeMap<String, Arc<ChatClient>>,
    openai_stt: Option<Arc<OpenAiStt>>,
    deepgram: Option<Arc<DeepgramStt>>,
    openai_tts: Option<Arc<OpenAiTts>>,
    elevenlabs: Option<Arc<ElevenLabsTts>>,
    cartesia: Option<Arc<CartesiaTts>>,
    espeak: Arc<Espeak>,
    recogniser: Arc<LazyRecogniser>,
}

/// The cascade of each profile of `config`: `""` for the default stages, then each named
/// profile.
pub fn build(config: &CascadeConfig) -> Result<BTreeMap<String, Arc<CascadeProvider>>, String> {
    config.validate()?;
    let mut llms = BTreeMap::new();
    for (name, llm) in &config.llms {
        let client = ChatClient::new(llm.clone())
            .map_err(|e| format!("[model.cascade.llms.{name}]: {e}"))?;
        llms.insert(name.clone(), Arc::new(client));
    }
    let local = &config.local;
    let shared = Arc::new(Shared {
        espeak: Arc::new(Espeak::new(
            local.espeak_program.clone(),
            local.words_per_minute,
            local.speech_cache_mb * 1024 * 1024,
        )),
        recogniser: Arc::new(LazyRecogniser::new(local.recogniser.clone())),
        openai_stt: match &config.openai_stt {
            Some(c) => Some(Arc::new(
                OpenAiStt::new(c.clone())
                    .map_err(|e| format!("[model.cascade.openai-stt]: {e}"))?,
            )),
            None => None,
        },
        deepgram: config
            .deepgram
            .as_ref()
            .map(|c| Arc::new(DeepgramStt::new(c.clone()))),
        openai_tts: match &config.openai_tts {
            Some(c) => Some(Arc::new(
                OpenAiTts::new(c.clone())
                    .map_err(|e| format!("[model.cascade.openai-tts]: {e}"))?,
            )),
            None => None,
        },
        elevenlabs: config
            .elevenlabs
            .as_ref()
            .map(|c| Arc::new(ElevenLabsTts::new(c.clone()))),
        cartesia: config
            .cartesia
            .as_ref()
            .map(|c| Arc::new(CartesiaTts::new(c.clone()))),
        local: Arc::new(local.clone()),
        llms,
    });
    let mut cascades = BTreeMap::new();
    let names = std::iter::once("").chain(config.profiles.keys().map(String::as_str));
    for name in names {
        let profile = config.profile(name).expect("a configured profile");
        let provider = CascadeProvider::new(profile, shared.clone());
        cascades.insert(name.to_string(), Arc::new(provider));
    }
    Ok(cascades)
}

/// Where a profile's caller speech is transcribed.
enum SttStage {
    /// By the local recogniser, on the listening task.
    Local,
    Service(Arc<dyn SpeechToText>),
}

/// One profile's cascade.
pub struct CascadeProvider {
    profile: Profile,
    shared: Arc<Shared>,
    stt: SttStage,
    llm: Arc<ChatClient>,
    tts: Arc<dyn TextToSpeech>,
}

impl CascadeProvider {
    fn new(profile: Profile, shared: Arc<Shared>) -> CascadeProvider {
        // The tables were checked to be there (`CascadeConfig::validate`).
        let service = |s: Option<Arc<dyn SpeechToText>>| SttStage::Service(s.expect("validated"));
        let stt = match profile.stt {
            SttService::Local => SttStage::Local,
            SttService::Openai => service(shared.openai_stt.clone().map(|s| s as _)),
            SttService::Deepgram => service(shared.deepgram.clone().map(|s| s as _)),
        };
        let voice = |t: Option<Arc<dyn TextToSpeech>>| t.expect("validated");
        let tts: Arc<dyn TextToSpeech> = match profile.tts {
            TtsService::Espeak => Arc::new(EspeakTts::new(
                shared.espeak.clone(),
                shared.local.voice.clone(),
            )),
            TtsService::Openai => voice(shared.openai_tts.clone().map(|t| t as _)),
            TtsService::Elevenlabs => voice(shared.elevenlabs.clone().map(|t| t as _)),
            TtsService::Cartesia => voice(shared.cartesia.clone().map(|t| t as _)),
        };
        let llm = shared.llms[&profile.llm].clone();
        CascadeProvider {
            profile,
            shared,
            stt,
            llm,
            tts,
        }
    }

    fn rejected(message: impl Into<String>) -> ConnectError {
        ConnectError::Rejected {
            provider: NAME,
            error: ProviderError::new(ErrorKind::Local, None, message),
        }
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        let local = &self.shared.local;
        let input_rate = settings.input_format.sample_rate();
        let vad = Vad::new(
            input_rate,
            local.vad_threshold,
            local.min_speech_ms,
            local.silence_ms,
        )
        .map_err(|_| ConnectError::UnsupportedFormat {
            provider: NAME,
            direction: "input",
            format: settings.input_format,
        })?;
        let (expect, expect_rx) = watch::channel(Expectation::Anything);
        let (recognition, stt, stt_events) = match &self.stt {
            SttStage::Local => {
                let recogniser = self.shared.recogniser.get().await.ok_or_else(|| {
                    Self::rejected("the local speech recogniser's model is not installed")
                })?;
                let recognition = Recognition {
                    recogniser,
                    expect: expect_rx,
                    min_confidence: local.min_confidence,
                };
                (Some(recognition), None, None)
            }
            SttStage::Service(stt) => {
                let formats = stt.formats();
                let format = if formats.contains(&settings.input_format) {
                    settings.input_format
                } else {
                    formats.first().copied().unwrap_or(settings.input_format)
                };
                let stream =
                    stt.open(format, settings.language.clone())
                        .await
                        .map_err(|error| ConnectError::Rejected {
                            provider: NAME,
                            error: session::stage_error("stt", stt.name(), &error),
                        })?;
                let feed = SttFeed {
                    input: stream.input,
                    converter: converter(settings.input_format, format),
                };
                (None, Some(feed), Some(stream.events))
            }
        };
        let (cmd_tx, commands) = mpsc::channel(CHANNEL_CAPACITY);
        let (events, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (detector, audio_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (heard_tx, heard) = mpsc::channel(CHANNEL_CAPACITY);
        // Detection and recognition are the bulk of the local work and may lag; speech must
        // keep up with the line.
        DETECTOR_RUNTIME.handle().spawn(
            listen(vad, input_rate, recognition, audio_rx, heard_tx)
                .instrument(tracing::Span::current()),
        );
        let mut history = History::new(self.llm.config().context_tokens);
        history.seed(&settings.history);
        let session = Session::new(Opened {
            stages: Stages {
                stt_name: self.stt_name(),
                llm_name: self.profile.llm.clone(),
                llm: self.llm.clone(),
                tts: self.tts.clone(),
            },
            instructions: settings.instructions,
            tools: settings.tools,
            voice: settings.voice,
            language: settings.language,
            output_format: settings.output_format,
            history,
            greeting: settings.greeting,
            events,
            detector,
            input_format: settings.input_format,
            expect,
            stt,
        });
        let inputs = Inputs {
            commands,
            heard,
            stt: stt_events,
        };
        tokio::spawn(session.run(inputs).instrument(tracing::Span::current()));
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: settings.input_format,
            output_format: settings.output_format,
            loopback: false,
        })
    }

    fn stt_name(&self) -> &'static str {
        match &self.stt {
            SttStage::Local => "local",
            SttStage::Service(stt) => stt.name(),
        }
    }
}

/// The converter from `from` to `to` (PCM16), `None` when they are the same.
pub(super) fn converter(from: AudioFormat, to: AudioFormat) -> Option<Pcm16Converter> {
    (from.sample_rate() != to.sample_rate())
        .then(|| Pcm16Converter::new(from.sample_rate(), to.sample_rate()).ok())
        .flatten()
}

impl ModelProvider for CascadeProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The language model takes new instructions and tools on its next turn; the profile
    /// (model), the voice and the language pick the services, fixed at setup.
    fn updates_live(&self, running: &SessionSettings, next: &SessionSettings) -> bool {
        running.model == next.model
            && running.voice == next.voice
            && running.language == next.language
    }

    /// PCM at every call rate both ways: the cascade converts for its services itself.
    fn formats(&self) -> FormatSupport {
        let pcm: Vec<AudioFormat> = CALL_RATES
            .iter()
            .map(|&rate| AudioFormat::Pcm16 { rate })
            .collect();
        FormatSupport {
            input: pcm.clone(),
            output: pcm,
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}
