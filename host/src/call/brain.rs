//! The call's brain: which audio formats the model hears and speaks for the call's codec, the
//! session settings from the agent's configuration, and connecting the model or, when it fails,
//! the local apology speech.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::CallDeps;
use super::events::Recorder;
use crate::domain::events::EventKind;
use crate::domain::{Role, SessionConfig};
use crate::media::Codec;
use crate::model::{
    AudioFormat, ModelProvider, ModelSession, SessionSettings, SessionUpdate, ToolSpec,
};

/// The audio a leg carries, as the model is offered it: a codec of the media layer (SIP, and
/// Twilio's μ-law), or linear PCM at a rate (a carrier's L16 stream, as Vonage's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegFormat {
    Codec(Codec),
    Pcm(u32),
}

impl From<Codec> for LegFormat {
    fn from(codec: Codec) -> LegFormat {
        LegFormat::Codec(codec)
    }
}

impl LegFormat {
    /// As a leg names its audio in its facts (`PCMU`, `opus`, `L16/16000`).
    pub fn parse(name: &str) -> Option<LegFormat> {
        if let Ok(codec) = name.parse::<Codec>() {
            return Some(codec.into());
        }
        let rate = name.strip_prefix("L16/")?.parse().ok()?;
        Some(LegFormat::Pcm(rate))
    }

    /// The name [`LegFormat::parse`] reads.
    pub fn name(self) -> String {
        match self {
            LegFormat::Codec(codec) => codec.encoding_name().to_string(),
            LegFormat::Pcm(rate) => format!("L16/{rate}"),
        }
    }

    fn rate(self) -> u32 {
        match self {
            LegFormat::Codec(codec) => codec.sample_rate(),
            LegFormat::Pcm(rate) => rate,
        }
    }
}

/// Audio formats for `model` of the provider, given the leg's audio: G.711 straight through
/// when the provider takes it, else PCM at the leg's rate when the provider takes that (nothing
/// to resample), else PCM at the highest rate the provider accepts.
pub(crate) fn model_formats(
    provider: &dyn ModelProvider,
    model: Option<&str>,
    leg: LegFormat,
) -> (AudioFormat, AudioFormat) {
    let support = provider.formats_for(model);
    let g711 = match leg {
        LegFormat::Codec(Codec::Pcmu) => Some(AudioFormat::Pcmu8k),
        LegFormat::Codec(Codec::Pcma) => Some(AudioFormat::Pcma8k),
        LegFormat::Codec(Codec::G722 | Codec::Opus) | LegFormat::Pcm(_) => None,
    };
    let at_codec_rate = AudioFormat::Pcm16 { rate: leg.rate() };
    let pick = |list: &[AudioFormat]| {
        let direct = g711
            .filter(|f| list.contains(f))
            .or_else(|| list.contains(&at_codec_rate).then_some(at_codec_rate));
        direct.unwrap_or_else(|| {
            list.iter()
                .copied()
                .filter(|f| matches!(f, AudioFormat::Pcm16 { .. }))
                .max_by_key(|f| f.sample_rate())
                .or_else(|| list.first().copied())
                .unwrap_or(AudioFormat::Pcm16 { rate: 16000 })
        })
    };
    (pick(&support.input), pick(&support.output))
}

/// The model session settings for an agent's session configuration.
pub(crate) fn settings_for(
    config: &SessionConfig,
    formats: (AudioFormat, AudioFormat),
) -> SessionSettings {
    SessionSettings {
        model: config.model.clone(),
        instructions: config.instructions.clone(),
        voice: config.voice.clone(),
        language: config.language.clone(),
        tools: config
            .tools
            .iter()
            .map(|t| ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: serde_json::from_str(&t.parameters)
                    .unwrap_or_else(|_| serde_json::json!({"type": "object"})),
            })
            .collect(),
        greeting: config.greeting.clone(),
        input_format: formats.0,
        output_format: formats.1,
        turn_detection: Default::default(),
        input_transcription: true,
        history: Vec::new(),
    }
}

/// Connect to the configured model. A failure (refused, unreachable, or no session within the
/// provider's connect timeout) is recorded as a model error and gives `None`.
pub(crate) async fn connect_model(
    provider: &dyn ModelProvider,
    recorder: &Recorder,
    config: &SessionConfig,
    leg: LegFormat,
) -> Option<ModelSession> {
    let formats = model_formats(provider, config.model.as_deref(), leg);
    match provider.connect(settings_for(config, formats)).await {
        Ok(session) => Some(session),
        Err(e) => {
            tracing::error!(error = %e, "model connection failed");
            recorder.record(EventKind::ModelError {
                message: e.to_string(),
            });
            None
        }
    }
}

/// The model side of a running call, as far as a replacement session needs it: the provider
/// the call started with, the running agent's session config and the leg's audio.
pub(crate) struct Brain {
    pub provider: Arc<dyn ModelProvider>,
    pub config: SessionConfig,
    pub leg: LegFormat,
}

/// How the model follows a hand-off to another agent.
pub(crate) enum Switch {
    /// The running session takes the new instructions and tools; the greeting is to be said.
    Update(SessionUpdate),
    /// A new session (with the conversation so far) replaces the running one and greets.
    Replace(ModelSession),
}

impl Brain {
    fn settings(&self, config: &SessionConfig) -> SessionSettings {
        let formats = model_formats(self.provider.as_ref(), config.model.as_deref(), self.leg);
        settings_for(config, formats)
    }

    /// A model session that takes over the call with the conversation so far (its greeting is
    /// not spoken again).
    pub async fn reconnect(&self, history: Vec<(Role, String)>) -> Result<ModelSession, String> {
        let settings = SessionSettings {
            greeting: None,
            history,
            ..self.settings(&self.config)
        };
        self.provider
            .connect(settings)
            .await
            .map_err(|e| e.to_string())
    }

    /// Move the model to the next agent's `config`: in place when the provider can, else a new
    /// session that hears the conversation so far and speaks the new greeting. From then on
    /// `config` is the running one.
    pub async fn hand_over(
        &mut self,
        config: SessionConfig,
        history: Vec<(Role, String)>,
    ) -> Result<Switch, String> {
        let running = self.settings(&self.config);
        let next = self.settings(&config);
        let switch = if self.provider.updates_live(&running, &next) {
            Switch::Update(SessionUpdate::of(&next))
        } else {
            let settings = SessionSettings { history, ..next };
            let session = self.provider.connect(settings).await;
            Switch::Replace(session.map_err(|e| e.to_string())?)
        };
        self.config = config;
        Ok(switch)
    }
}

pub(crate) async fn connect_fallback(deps: &CallDeps, leg: LegFormat) -> ModelSession {
    let apology = deps.registry.runtime().config().fallback.apology.clone();
    let config = SessionConfig {
        instructions: String::new(),
        greeting: Some(apology),
        voice: None,
        language: None,
        tools: Vec::new(),
        model: None,
    };
    let formats = model_formats(deps.fallback_provider.as_ref(), None, leg);
    match deps
        .fallback_provider
        .connect(settings_for(&config, formats))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // Without even local synthesis, an empty session keeps the call logic uniform: the
            // call hangs up at once.
            tracing::error!(error = %e, "fallback speech unavailable");
            let (commands, _rx) = mpsc::channel(1);
            let (_tx, events) = mpsc::channel(1);
            ModelSession {
                commands,
                events,
                input_format: formats.0,
                output_format: formats.1,
                loopback: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{OfflineConfig, OpenAiConfig, Secret};
    use crate::model::offline::OfflineProvider;
    use crate::model::openai::OpenAiProvider;

    #[test]
    fn model_formats_avoid_resampling_where_the_provider_allows() {
        let openai = OpenAiProvider::new(OpenAiConfig::new(Secret::new("k")));
        assert_eq!(
            model_formats(&openai, None, Codec::Pcmu.into()),
            (AudioFormat::Pcmu8k, AudioFormat::Pcmu8k)
        );
        let pcm24 = AudioFormat::Pcm16 { rate: 24000 };
        assert_eq!(
            model_formats(&openai, None, Codec::Opus.into()),
            (pcm24, pcm24)
        );
        // A 16 kHz L16 stream: OpenAI takes only 24 kHz PCM.
        assert_eq!(
            model_formats(&openai, None, LegFormat::Pcm(16000)),
            (pcm24, pcm24)
        );
        // Offline: caller audio and speech at the codec's rate, both ways.
        let offline = OfflineProvider::new(OfflineConfig::default());
        let pcm8 = AudioFormat::Pcm16 { rate: 8000 };
        assert_eq!(
            model_formats(&offline, None, Codec::Pcma.into()),
            (pcm8, pcm8)
        );
        let pcm16 = AudioFormat::Pcm16 { rate: 16000 };
        assert_eq!(
            model_formats(&offline, None, LegFormat::Pcm(16000)),
            (pcm16, pcm16)
        );
        let pcm48 = AudioFormat::Pcm16 { rate: 48000 };
        assert_eq!(
            model_formats(&offline, None, Codec::Opus.into()),
            (pcm48, pcm48)
        );
        // G.722: the model hears and speaks 16 kHz, never the 8000 of its RTP clock.
        assert_eq!(
            model_formats(&offline, None, Codec::G722.into()),
            (pcm16, pcm16)
        );
        assert_eq!(
            model_formats(&openai, None, Codec::G722.into()),
            (pcm24, pcm24)
        );
    }

    #[test]
    fn leg_formats_by_name() {
        assert_eq!(LegFormat::parse("PCMU"), Some(Codec::Pcmu.into()));
        assert_eq!(LegFormat::parse("L16/16000"), Some(LegFormat::Pcm(16000)));
        assert_eq!(LegFormat::parse("L16/x"), None);
        assert_eq!(LegFormat::Pcm(16000).name(), "L16/16000");
        assert_eq!(LegFormat::from(Codec::Opus).name(), "opus");
        assert_eq!(LegFormat::parse("G722"), Some(Codec::G722.into()));
    }
}
