//! What a call consumed, as items a bill is made of: who provided it (`openai`), at which stage
//! of the brain (`speech-to-speech`; a cascade brain adds `stt`, `llm`, `tts`, `mcp`), what was
//! counted (`input-audio`) and in which unit (`tokens`; later `seconds`, `characters`,
//! `calls`). A new brain brings new words, not new fields: the call store keeps items as rows.
//!
//! Kinds overlap: `input` and `output` are a report's totals, the other kinds are the parts the
//! provider broke them into (`input-audio`, `input-cached`, ...). Items add up per kind, never
//! across kinds.

use serde::{Deserialize, Serialize};

/// The stage of a speech-to-speech model: caller audio in, agent audio out, one provider.
pub const SPEECH_TO_SPEECH: &str = "speech-to-speech";
/// The stages of a cascade brain: speech to text, language model, text to speech.
pub const STT: &str = "stt";
pub const LLM: &str = "llm";
pub const TTS: &str = "tts";
pub const TOKENS: &str = "tokens";
/// Audio transcribed (speech to text).
pub const SECONDS: &str = "seconds";
/// Text synthesised (text to speech).
pub const CHARACTERS: &str = "characters";
/// Tool calls the host made to an MCP server (the provider is the server's name).
pub const MCP: &str = "mcp";
pub const TOOL: &str = "tool";
pub const CALLS: &str = "calls";
/// A report's total input tokens, as the provider counted them.
pub const INPUT: &str = "input";
/// A report's total output tokens, as the provider counted them.
pub const OUTPUT: &str = "output";

/// One number a provider reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageItem {
    pub provider: String,
    pub stage: String,
    pub kind: String,
    pub unit: String,
    /// Fractional for units like seconds; whole for tokens, characters and calls.
    pub amount: f64,
}

/// The tokens of `kind` among `items`: the [`INPUT`] or [`OUTPUT`] total of a report.
pub fn tokens(items: &[UsageItem], kind: &str) -> u64 {
    let sum: f64 = items
        .iter()
        .filter(|i| i.kind == kind && i.unit == TOKENS)
        .map(|i| i.amount)
        .sum();
    sum as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &str, unit: &str, amount: f64) -> UsageItem {
        UsageItem {
            provider: "openai".into(),
            stage: SPEECH_TO_SPEECH.into(),
            kind: kind.into(),
            unit: unit.into(),
            amount,
        }
    }

    #[test]
    fn token_totals_count_only_their_kind_in_tokens() {
        let items = [
            item(INPUT, TOKENS, 300.0),
            item("input-audio", TOKENS, 200.0),
            item(INPUT, "seconds", 1.5),
            item(INPUT, TOKENS, 1.0),
            item(OUTPUT, TOKENS, 96.0),
        ];
        assert_eq!(tokens(&items, INPUT), 301);
        assert_eq!(tokens(&items, OUTPUT), 96);
        assert_eq!(tokens(&[], INPUT), 0);
    }
}
