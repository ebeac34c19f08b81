//! Provider configuration (the `[model]` part of the TOML file) and provider construction.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::ModelProvider;
use super::cascade::{self, config::CascadeConfig};
use super::echo::{EchoConfig, EchoProvider};
use super::gemini::GeminiProvider;
use super::offline::OfflineProvider;
use super::openai::OpenAiProvider;
use super::routing::Routed;

/// A secret string (API key). Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for putting on the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// How the OpenAI-compatible endpoint wants the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpenAiAuth {
    /// `Authorization: Bearer <key>` (OpenAI).
    #[default]
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKeyHeader,
}

fn default_openai_url() -> String {
    "wss://api.openai.com/v1/realtime".into()
}
fn default_openai_model() -> String {
    "gpt-realtime".into()
}
fn default_openai_voice() -> String {
    "marin".into()
}
fn default_transcription_model() -> String {
    "gpt-4o-mini-transcribe".into()
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_response_timeout_ms() -> u64 {
    15_000
}

/// OpenAI Realtime (GA) and compatible endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenAiConfig {
    pub api_key: Secret,
    /// WebSocket endpoint without the `model` query (`wss://…/v1/realtime`); other query
    /// parameters (Azure `api-version`, `deployment`) are kept.
    #[serde(default = "default_openai_url")]
    pub base_url: String,
    #[serde(default = "default_openai_model")]
    pub model: String,
    #[serde(default = "default_openai_voice")]
    pub voice: String,
    #[serde(default)]
    pub auth: OpenAiAuth,
    /// Model used for caller transcription when a session asks for it.
    #[serde(default = "default_transcription_model")]
    pub transcription_model: String,
    /// Extra trusted root certificates (PEM), for self-hosted endpoints with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Handshake plus session setup.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a response to start after asking for one; then an error event.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
}

impl OpenAiConfig {
    /// Defaults for everything but the key.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            base_url: default_openai_url(),
            model: default_openai_model(),
            voice: default_openai_voice(),
            auth: OpenAiAuth::default(),
            transcription_model: default_transcription_model(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
        }
    }
}

fn default_gemini_url() -> String {
    "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent".into()
}
fn default_gemini_model() -> String {
    "models/gemini-2.5-flash-native-audio-preview-12-2025".into()
}
fn default_gemini_voice() -> String {
    "Kore".into()
}

/// Gemini Live (Developer API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GeminiConfig {
    /// Sent as the `x-goog-api-key` header.
    pub api_key: Secret,
    #[serde(default = "default_gemini_url")]
    pub base_url: String,
    #[serde(default = "default_gemini_model")]
    pub model: String,
    #[serde(default = "default_gemini_voice")]
    pub voice: String,
    /// Extra trusted root certificates (PEM), for self-hosted endpoints with a private CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
}

impl GeminiConfig {
    /// Defaults for everything but the key.
    pub fn new(api_key: Secret) -> Self {
        Self {
            api_key,
            base_url: default_gemini_url(),
            model: default_gemini_model(),
            voice: default_gemini_voice(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
        }
    }
}

fn default_espeak() -> PathBuf {
    PathBuf::from("espeak-ng")
}
fn default_offline_voice() -> String {
    "en-us".into()
}
fn default_words_per_minute() -> u32 {
    165
}
fn default_vad_threshold() -> f32 {
    0.5
}
fn default_min_speech_ms() -> u32 {
    64
}
fn default_speech_cache_mb() -> usize {
    32
}

fn default_silence_ms() -> u32 {
    500
}
fn default_true() -> bool {
    true
}
fn default_min_confidence() -> f32 {
    DEFAULT_MIN_CONFIDENCE
}
fn default_reprompt() -> String {
    "Sorry, I did not catch that. Please say it again, or use the keypad.".into()
}

/// Recognised caller speech below this confidence (the recogniser's posterior probability,
/// 0–1) is not delivered as a transcript (see `offline`). Chosen on the espeak-ng phrase set of
/// `model::sphinx`'s tests: right answers spread from 0.06 to 1.0, so 0.2 keeps 22 of 25 of
/// them; 0.5 keeps 10 and still lets one wrong answer through.
pub const DEFAULT_MIN_CONFIDENCE: f32 = 0.2;

/// The offline provider: espeak-ng speech synthesis, local voice-activity detection and local
/// speech recognition (PocketSphinx).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OfflineConfig {
    /// espeak-ng program (looked up on `PATH` when not absolute).
    #[serde(default = "default_espeak")]
    pub espeak_program: PathBuf,
    /// espeak-ng voice when the session names none.
    #[serde(default = "default_offline_voice")]
    pub voice: String,
    #[serde(default = "default_words_per_minute")]
    pub words_per_minute: u32,
    /// Voice probability (0–1) above which a 16 ms frame counts as speech.
    #[serde(default = "default_vad_threshold")]
    pub vad_threshold: f32,
    /// Speech must last this long before `SpeechStarted` (filters clicks).
    #[serde(default = "default_min_speech_ms")]
    pub min_speech_ms: u32,
    /// Silence this long ends the caller's speech (`SpeechStopped`) and their turn: the
    /// utterance goes to the recogniser then. Keep it at 400 ms or more, or pauses inside an
    /// answer ("one two... three") split it.
    #[serde(default = "default_silence_ms")]
    pub silence_ms: u32,
    /// Recognise the caller's speech (PocketSphinx, `model::sphinx`) and deliver final
    /// transcripts. Without the model files the provider runs without it and says so in the log.
    #[serde(default = "default_true")]
    pub recognise_speech: bool,
    /// Transcripts below this confidence (0–1) are not delivered: the agent hears nothing
    /// rather than take a branch on a guess.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f32,
    /// Said when the caller answered while the agent listened for something (`call.expect`)
    /// and nothing was understood with confidence; empty says nothing.
    #[serde(default = "default_reprompt")]
    pub reprompt: String,
    /// Where the recogniser's model is, and how many decoders stay loaded between calls.
    #[serde(default)]
    pub recogniser: crate::model::sphinx::RecogniserConfig,
    /// Synthesised prompts kept for reuse across calls, in MiB (0 disables the cache).
    #[serde(default = "default_speech_cache_mb")]
    pub speech_cache_mb: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            espeak_program: default_espeak(),
            voice: default_offline_voice(),
            words_per_minute: default_words_per_minute(),
            vad_threshold: default_vad_threshold(),
            min_speech_ms: default_min_speech_ms(),
            silence_ms: default_silence_ms(),
            recognise_speech: true,
            min_confidence: DEFAULT_MIN_CONFIDENCE,
            reprompt: default_reprompt(),
            recogniser: Default::default(),
            speech_cache_mb: default_speech_cache_mb(),
        }
    }
}

/// Which provider to use, as written in the config file (kebab-case keys like the rest of
/// `switchboard.toml`): `provider = "openai"` with the [`OpenAiConfig`] fields
/// (`api-key`, `base-url`, …), `"gemini"`, `"offline"`, `"echo"` (the caller hears
/// themselves: a line test, and the model stand-in of the media benchmark) or `"cascade"`
/// (the stages of `[model.cascade]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum ProviderConfig {
    #[serde(rename = "openai")]
    OpenAi(OpenAiConfig),
    Gemini(GeminiConfig),
    Offline(OfflineConfig),
    Echo(EchoConfig),
    Cascade(CascadeChoice),
}

/// `provider = "cascade"` takes no other key: the stages are in `[model.cascade]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeChoice {}

/// `[model]`: the provider calls use, and the cascade brains (`[model.cascade]`) agents may
/// also pick by model name (`session-config.model = "cascade:<profile>"`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelConfig {
    #[serde(flatten)]
    pub provider: ProviderConfig,
    #[serde(default)]
    pub cascade: Option<CascadeConfig>,
}

impl ModelConfig {
    /// Build the configured provider; with a `[model.cascade]`, calls whose agent names a
    /// cascade profile get that cascade instead.
    pub fn build(&self) -> Result<Arc<dyn ModelProvider>, String> {
        let cascades = match &self.cascade {
            Some(c) => cascade::build(c)?,
            None => Default::default(),
        };
        let default: Arc<dyn ModelProvider> = match &self.provider {
            ProviderConfig::OpenAi(c) => Arc::new(OpenAiProvider::new(c.clone())),
            ProviderConfig::Gemini(c) => Arc::new(GeminiProvider::new(c.clone())),
            ProviderConfig::Offline(c) => Arc::new(OfflineProvider::new(c.clone())),
            ProviderConfig::Echo(_) => Arc::new(EchoProvider),
            ProviderConfig::Cascade(_) => match cascades.get("") {
                Some(c) => c.clone(),
                None => return Err("provider = \"cascade\" needs a [model.cascade] table".into()),
            },
        };
        if cascades.is_empty() {
            return Ok(default);
        }
        Ok(Arc::new(Routed::new(default, cascades)))
    }
}

impl Default for ProviderConfig {
    /// The offline provider: works with no key and no network.
    fn default() -> Self {
        ProviderConfig::Offline(OfflineConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AudioFormat;

    #[test]
    fn secret_is_never_printed() {
        let c = OpenAiConfig::new(Secret::new("sk-very-secret"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-very-secret"), "{dbg}");
        assert!(dbg.contains("***"));
        assert_eq!(c.api_key.expose(), "sk-very-secret");
    }

    #[test]
    fn provider_config_from_toml() {
        let c: ProviderConfig = toml::from_str(
            "provider = \"openai\"\napi-key = \"k\"\nauth = \"api-key-header\"\nbase-url = \"wss://x.openai.azure.com/openai/v1/realtime\"\n",
        )
        .unwrap();
        match c {
            ProviderConfig::OpenAi(o) => {
                assert_eq!(o.auth, OpenAiAuth::ApiKeyHeader);
                assert_eq!(o.model, "gpt-realtime");
            }
            other => panic!("{other:?}"),
        }
        let g: ProviderConfig =
            toml::from_str("provider = \"gemini\"\napi-key = \"g\"\nvoice = \"Puck\"\n").unwrap();
        assert!(matches!(g, ProviderConfig::Gemini(ref c) if c.voice == "Puck"));
        let o: ProviderConfig =
            toml::from_str("provider = \"offline\"\nwords-per-minute = 150\n").unwrap();
        assert!(matches!(o, ProviderConfig::Offline(_)));
        let e: ModelConfig = toml::from_str("provider = \"echo\"\n").unwrap();
        assert_eq!(e.build().unwrap().name(), "echo");
        assert!(toml::from_str::<ProviderConfig>("provider = \"echo\"\nvoice = \"x\"\n").is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<OpenAiConfig>("api-key = \"k\"\nmodle = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
        assert!(toml::from_str::<OfflineConfig>("voise = \"x\"\n").is_err());
    }

    #[test]
    fn cascade_profiles_sit_beside_any_provider() {
        let with_cascade = "provider = \"openai\"\napi-key = \"k\"\n[cascade]\nllm = \"local\"\n\
                            [cascade.llms.local]\nbase-url = \"http://127.0.0.1:9/v1\"\n\
                            [cascade.profiles.fast]\nllm = \"local\"\n";
        let c: ModelConfig = toml::from_str(with_cascade).unwrap();
        let provider = c.build().unwrap();
        assert_eq!(provider.name(), "openai");
        // The default's formats, unless the model names a cascade.
        let pcm8 = AudioFormat::Pcm16 { rate: 8000 };
        assert!(!provider.formats_for(None).input.contains(&pcm8));
        assert!(
            provider
                .formats_for(Some("cascade:fast"))
                .input
                .contains(&pcm8)
        );
        assert!(provider.formats_for(Some("cascade")).input.contains(&pcm8));

        let c: ModelConfig = toml::from_str("provider = \"cascade\"\n").unwrap();
        assert!(c.build().err().unwrap().contains("[model.cascade]"));
        // Typos are still caught beside the flattened provider table.
        assert!(toml::from_str::<ModelConfig>("provider = \"cascade\"\nllm = \"x\"\n").is_err());
        assert!(toml::from_str::<ModelConfig>("provider = \"offline\"\nvoise = \"x\"\n").is_err());
        let c: ModelConfig =
            toml::from_str(&with_cascade.replace("openai\"\napi-key = \"k", "cascade")).unwrap();
        assert_eq!(c.build().unwrap().name(), "cascade");
    }
}
