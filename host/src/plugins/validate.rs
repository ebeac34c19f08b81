//! What crosses the boundary: the size caps of the contract (documented in wit/agent.wit) and
//! the checks of everything the host hands an agent or takes back from it. A check returns the
//! broken rule as text; the sandbox turns it into a [`FaultKind::Limit`] fault.
//!
//! [`FaultKind::Limit`]: crate::domain::FaultKind::Limit

use super::types::AgentInfo;
use crate::domain::agent_event::Expectation;
use crate::domain::{Action, CallInfo, SessionConfig};

/// Caps on what crosses the boundary (documented in wit/agent.wit).
pub mod caps {
    pub const MAX_ACTIONS: usize = 32;
    pub const MAX_TEXT: usize = 4 << 10;
    pub const MAX_INSTRUCTIONS: usize = 32 << 10;
    pub const MAX_TOOLS: usize = 64;
    pub const MAX_TOOL_NAME: usize = 64;
    pub const MAX_TOOL_DESCRIPTION: usize = 1 << 10;
    pub const MAX_TOOL_PARAMETERS: usize = 16 << 10;
    pub const MAX_TOOL_IO: usize = 64 << 10;
    pub const MAX_DTMF: usize = 64;
    pub const MAX_LOG: usize = 4 << 10;
    pub const MAX_INFO_FIELD: usize = 4 << 10;
    /// Call metadata (JSON text) handed to on-start.
    pub const MAX_METADATA: usize = 16 << 10;
    pub const MAX_NUMBERS: usize = 256;
    pub const MAX_HEADERS: usize = 64;
    pub const MAX_REJECT_REASON: usize = 256;
    /// `call.set-outcome` text.
    pub const MAX_OUTCOME: usize = 256;
    /// `call.set-turn-options` filler phrases (each at most `MAX_TEXT`).
    pub const MAX_FILLERS: usize = 32;
    /// `call.expect` phrases: how many, and bytes each.
    pub const MAX_PHRASES: usize = 64;
    pub const MAX_PHRASE: usize = 128;
}

pub(crate) fn over(field: &str, len: usize, cap: usize) -> Result<(), String> {
    if len > cap {
        return Err(format!("{field} is {len} bytes (cap {cap})"));
    }
    Ok(())
}

pub(crate) fn valid_dtmf(digits: &str) -> bool {
    !digits.is_empty()
        && digits.len() <= caps::MAX_DTMF
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D' | ','))
}

pub(crate) fn check_info(info: &AgentInfo) -> Result<(), String> {
    over("name", info.name.len(), 64)?;
    over("version", info.version.len(), 64)?;
    over("description", info.description.len(), 1 << 10)?;
    if info.numbers.len() > caps::MAX_NUMBERS {
        return Err(format!(
            "{} numbers (cap {})",
            info.numbers.len(),
            caps::MAX_NUMBERS
        ));
    }
    Ok(())
}

pub(crate) fn check_action(action: &Action) -> Result<(), String> {
    match action {
        Action::Say(t) | Action::Play(t) | Action::Transfer(t) => {
            over("action text", t.len(), caps::MAX_TEXT)
        }
        Action::SendDtmf(d) if !valid_dtmf(d) => Err(format!("`{d}` is not a DTMF string")),
        Action::CollectDigits(r) => {
            if !(1..=32).contains(&r.max_digits) {
                return Err(format!(
                    "collect-digits max-digits {} is not in 1..=32",
                    r.max_digits
                ));
            }
            over(
                "collect-digits prompt",
                r.prompt.as_deref().map_or(0, str::len),
                caps::MAX_TEXT,
            )
        }
        Action::SendDtmf(_) | Action::Hangup => Ok(()),
    }
}

/// A tool name the model providers take: 1-64 of `[a-zA-Z0-9_-]`.
pub(crate) fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= caps::MAX_TOOL_NAME
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("tool name `{name}` must be 1-64 of [a-zA-Z0-9_-]"))
    }
}

pub(crate) fn check_config(c: &SessionConfig) -> Result<(), String> {
    over("instructions", c.instructions.len(), caps::MAX_INSTRUCTIONS)?;
    over(
        "greeting",
        c.greeting.as_deref().map_or(0, str::len),
        caps::MAX_TEXT,
    )?;
    for field in [&c.voice, &c.language, &c.model].into_iter().flatten() {
        over("voice/language/model", field.len(), 128)?;
    }
    if c.tools.len() > caps::MAX_TOOLS {
        return Err(format!("{} tools (cap {})", c.tools.len(), caps::MAX_TOOLS));
    }
    for tool in &c.tools {
        check_tool_name(&tool.name)?;
        over(
            "tool description",
            tool.description.len(),
            caps::MAX_TOOL_DESCRIPTION,
        )?;
        over(
            "tool parameters",
            tool.parameters.len(),
            caps::MAX_TOOL_PARAMETERS,
        )?;
        match serde_json::from_str::<serde_json::Value>(&tool.parameters) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(format!(
                    "tool `{}` parameters are not a JSON Schema object",
                    tool.name
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn check_call_info(info: &CallInfo) -> Result<(), String> {
    for (field, value) in [
        ("call-id", &info.call_id),
        ("caller", &info.caller),
        ("callee", &info.callee),
        ("transport", &info.transport),
    ] {
        over(field, value.len(), caps::MAX_INFO_FIELD)?;
    }
    over("metadata", info.metadata.len(), caps::MAX_METADATA)?;
    if info.headers.len() > caps::MAX_HEADERS {
        return Err(format!(
            "{} headers (cap {})",
            info.headers.len(),
            caps::MAX_HEADERS
        ));
    }
    Ok(())
}

pub(crate) fn check_outcome(outcome: &str) -> Result<(), String> {
    if outcome.is_empty() || outcome.chars().any(char::is_control) {
        return Err("an outcome is 1 or more characters, none of them control characters".into());
    }
    over("outcome", outcome.len(), caps::MAX_OUTCOME)
}

pub(crate) fn check_expectation(expectation: &Expectation) -> Result<(), String> {
    match expectation {
        Expectation::Digits { min, max } if !(1 <= *min && min <= max && *max <= 32) => Err(
            format!("expected digits {min}..={max} are not within 1..=32 with min <= max"),
        ),
        Expectation::Phrases(phrases) => {
            if phrases.is_empty() || phrases.len() > caps::MAX_PHRASES {
                return Err(format!(
                    "{} expected phrases (1 to {})",
                    phrases.len(),
                    caps::MAX_PHRASES
                ));
            }
            phrases
                .iter()
                .try_for_each(|p| over("expected phrase", p.len(), caps::MAX_PHRASE))
        }
        _ => Ok(()),
    }
}
