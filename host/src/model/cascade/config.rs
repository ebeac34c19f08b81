//! `[model.cascade]`: which service each stage of a cascade brain uses, the services'
//! settings, and named profiles an agent picks with `session-config.model =
//! "cascade:<profile>"`.
//!
//! ```toml
//! [model]
//! provider = "cascade"        # calls with no model of their own use the stages below
//!
//! [model.cascade]
//! stt = "local"               # local | openai ([model.cascade.openai-stt]) | deepgram
//! llm = "ollama"              # a name under [model.cascade.llms]
//! tts = "espeak"              # espeak | openai ([model.cascade.openai-tts]) | elevenlabs |
//!                             # cartesia
//!
//! [model.cascade.llms.ollama]
//! base-url = "http://127.0.0.1:11434/v1"
//! model = "llama3.2"
//!
//! [model.cascade.profiles.fast]   # session-config.model = "cascade:fast"
//! stt = "deepgram"
//! llm = "ollama"
//! tts = "cartesia"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::llm::LlmConfig;
use super::stt::deepgram::DeepgramConfig;
use super::stt::openai::OpenAiSttConfig;
use super::tts::cartesia::CartesiaConfig;
use super::tts::elevenlabs::ElevenLabsConfig;
use super::tts::openai::OpenAiTtsConfig;
use crate::model::OfflineConfig;

/// The speech-to-text services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SttService {
    /// The local recogniser (PocketSphinx) of the offline provider: no key, no network.
    #[default]
    Local,
    /// An OpenAI-compatible transcription endpoint (`[model.cascade.openai-stt]`), a request a
    /// turn.
    Openai,
    /// Deepgram streaming (`[model.cascade.deepgram]`).
    Deepgram,
}

impl SttService {
    /// The table of its settings, for errors.
    fn table(self) -> Option<&'static str> {
        match self {
            SttService::Local => None,
            SttService::Openai => Some("openai-stt"),
            SttService::Deepgram => Some("deepgram"),
        }
    }
}

/// The text-to-speech services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TtsService {
    /// The local espeak-ng program.
    #[default]
    Espeak,
    /// An OpenAI-compatible speech endpoint (`[model.cascade.openai-tts]`), a request a
    /// sentence.
    Openai,
    /// ElevenLabs streaming (`[model.cascade.elevenlabs]`).
    Elevenlabs,
    /// Cartesia streaming (`[model.cascade.cartesia]`).
    Cartesia,
}

impl TtsService {
    /// The table of its settings, for errors.
    fn table(self) -> Option<&'static str> {
        match self {
            TtsService::Espeak => None,
            TtsService::Openai => Some("openai-tts"),
            TtsService::Elevenlabs => Some("elevenlabs"),
            TtsService::Cartesia => Some("cartesia"),
        }
    }
}

/// The three stages of one cascade.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Profile {
    #[serde(default)]
    pub stt: SttService,
    /// A name under `[model.cascade.llms]`.
    pub llm: String,
    #[serde(default)]
    pub tts: TtsService,
}

fn default_llm() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CascadeConfig {
    /// The stages of `provider = "cascade"`, and of `cascade` without a profile.
    #[serde(default)]
    pub stt: SttService,
    #[serde(default = "default_llm")]
    pub llm: String,
    #[serde(default)]
    pub tts: TtsService,
    /// Language models by name: any OpenAI-compatible chat completions endpoint.
    #[serde(default)]
    pub llms: BTreeMap<String, LlmConfig>,
    /// Other stage choices by name, for `cascade:<name>`.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// The local services: voice detection (turn taking and barge-in, for every service),
    /// the local recogniser and espeak-ng, as the offline provider's settings.
    #[serde(default)]
    pub local: OfflineConfig,
    pub openai_stt: Option<OpenAiSttConfig>,
    pub deepgram: Option<DeepgramConfig>,
    pub openai_tts: Option<OpenAiTtsConfig>,
    pub elevenlabs: Option<ElevenLabsConfig>,
    pub cartesia: Option<CartesiaConfig>,
}

/// What `session-config.model` names a cascade with.
pub const MODEL_PREFIX: &str = "cascade";

impl CascadeConfig {
    /// The profile a session's model names: `cascade` is the default stages,
    /// `cascade:<name>` a named profile; `None` when the model is no cascade.
    pub fn profile_name(model: &str) -> Option<&str> {
        let rest = model.strip_prefix(MODEL_PREFIX)?;
        if rest.is_empty() {
            return Some("");
        }
        rest.strip_prefix(':')
    }

    /// The stages of profile `name` (`""`: the default stages).
    pub fn profile(&self, name: &str) -> Option<Profile> {
        if name.is_empty() {
            return Some(Profile {
                stt: self.stt,
                llm: self.llm.clone(),
                tts: self.tts,
            });
        }
        self.profiles.get(name).cloned()
    }

    /// Every profile names a configured language model, and services whose tables are there.
    pub fn validate(&self) -> Result<(), String> {
        let named = std::iter::once(("", self.profile("").expect("the default stages")))
            .chain(self.profiles.iter().map(|(n, p)| (n.as_str(), p.clone())));
        for (name, profile) in named {
            let which = if name.is_empty() {
                "[model.cascade]".to_string()
            } else {
                format!("[model.cascade.profiles.{name}]")
            };
            if !self.llms.contains_key(&profile.llm) {
                return Err(format!(
                    "{which} llm = {:?} names no [model.cascade.llms.{}] table",
                    profile.llm, profile.llm
                ));
            }
            let stt_configured = match profile.stt {
                SttService::Local => true,
                SttService::Openai => self.openai_stt.is_some(),
                SttService::Deepgram => self.deepgram.is_some(),
            };
            if let (false, Some(table)) = (stt_configured, profile.stt.table()) {
                return Err(format!("{which} stt needs a [model.cascade.{table}] table"));
            }
            let tts_configured = match profile.tts {
                TtsService::Espeak => true,
                TtsService::Openai => self.openai_tts.is_some(),
                TtsService::Elevenlabs => self.elevenlabs.is_some(),
                TtsService::Cartesia => self.cartesia.is_some(),
            };
            if let (false, Some(table)) = (tts_configured, profile.tts.table()) {
                return Err(format!("{which} tts needs a [model.cascade.{table}] table"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_by_model_name() {
        assert_eq!(CascadeConfig::profile_name("cascade"), Some(""));
        assert_eq!(CascadeConfig::profile_name("cascade:fast"), Some("fast"));
        assert_eq!(CascadeConfig::profile_name("cascaded"), None);
        assert_eq!(CascadeConfig::profile_name("gpt-realtime"), None);
        let c: CascadeConfig = toml::from_str(
            "llm = \"local\"\n[llms.local]\nbase-url = \"http://127.0.0.1:8081/v1\"\n\
             [profiles.fast]\nllm = \"local\"\n",
        )
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.profile("fast").unwrap().llm, "local");
        assert_eq!(c.profile("").unwrap().tts, TtsService::Espeak);
        assert!(c.profile("slow").is_none());
    }

    #[test]
    fn a_profile_naming_no_language_model_is_refused() {
        let c: CascadeConfig = toml::from_str("llm = \"nope\"\n").unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("[model.cascade] llm") && err.contains("nope"),
            "{err}"
        );
        let c: CascadeConfig =
            toml::from_str("llm = \"a\"\n[llms.a]\n[profiles.p]\nllm = \"b\"\n").unwrap();
        assert!(c.validate().unwrap_err().contains("profiles.p"));
        assert!(toml::from_str::<CascadeConfig>("stt = \"whisper\"\n").is_err());
        let c: CascadeConfig =
            toml::from_str("llm = \"a\"\nstt = \"deepgram\"\n[llms.a]\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("[model.cascade.deepgram]")
        );
        let c: CascadeConfig = toml::from_str(
            "llm = \"a\"\n[llms.a]\n[profiles.p]\nllm = \"a\"\ntts = \"cartesia\"\n",
        )
        .unwrap();
        let err = c.validate().unwrap_err();
        assert!(
            err.contains("profiles.p] tts") && err.contains("cartesia"),
            "{err}"
        );
    }
}
