//! How a call's conversation is paced by the host: caller silence, the longest a call may
//! last and fillers while a tool runs. The settings come from the configuration and, per call,
//! from the agent (`call.set-turn-options`); the call logic keeps the clock.

use serde::{Deserialize, Serialize};

/// `[calls.conversation]`, or an agent's `[agent.<name>.conversation]` (which replaces it for
/// that agent's calls). A duration of 0 turns its rule off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ConversationConfig {
    /// Caller silence (the agent quiet, no tool running) before a reprompt. Off by default:
    /// a silent caller is hung up on only where the operator asks for it.
    pub reprompt_after_secs: u64,
    /// How many reprompts, at most, between two things the caller says.
    pub reprompts: u32,
    /// What the host says when the agent does not answer the `silence` event itself.
    pub reprompt: String,
    /// Caller silence, all of it since the caller last spoke, before the goodbye and hang-up.
    pub hangup_after_secs: u64,
    pub silence_goodbye: String,
    /// The longest a call may last (0: no limit).
    pub max_call_secs: u64,
    /// The warning comes this long before the limit (0: no warning).
    pub warn_before_secs: u64,
    /// What the host says when the agent does not answer the `ending-soon` event itself.
    pub max_call_warning: String,
    pub max_call_goodbye: String,
    /// A tool running this long gets a filler phrase (0: no fillers).
    pub filler_after_ms: u64,
    /// And another every this long while it still runs (0: only one).
    pub filler_every_ms: u64,
    /// Said in turn, one per filler; an agent's `call.set-turn-options` replaces them.
    pub fillers: Vec<String>,
}

fn default_reprompts() -> u32 {
    2
}

fn default_max_call_secs() -> u64 {
    3600
}

fn default_warn_before_secs() -> u64 {
    60
}

fn default_filler_after_ms() -> u64 {
    1500
}

fn default_filler_every_ms() -> u64 {
    3000
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            reprompt_after_secs: 0,
            reprompts: default_reprompts(),
            reprompt: "Are you still there?".into(),
            hangup_after_secs: 0,
            silence_goodbye: "I can't hear anything, so I will end the call now. Goodbye.".into(),
            max_call_secs: default_max_call_secs(),
            warn_before_secs: default_warn_before_secs(),
            max_call_warning: "We are almost out of time for this call.".into(),
            max_call_goodbye: "We have reached the time limit for this call. Goodbye.".into(),
            filler_after_ms: default_filler_after_ms(),
            filler_every_ms: default_filler_every_ms(),
            fillers: vec![
                "One moment, please.".into(),
                "Let me check that.".into(),
                "Still working on it.".into(),
            ],
        }
    }
}

impl ConversationConfig {
    /// No limits and no fillers: the call runs as the agent drives it (the authoring
    /// scripts, which check an agent's own logic).
    pub fn off() -> ConversationConfig {
        ConversationConfig {
            max_call_secs: 0,
            filler_after_ms: 0,
            ..ConversationConfig::default()
        }
    }
}

/// What an agent changed for its call (`call.set-turn-options`): each `Some` replaces the
/// configured value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TurnLimits {
    pub fillers: Option<Vec<String>>,
    pub reprompt_after_ms: Option<u32>,
    pub hangup_after_ms: Option<u32>,
    pub max_call_ms: Option<u32>,
}
