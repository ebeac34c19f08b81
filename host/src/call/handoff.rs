//! What one agent passes to the next when it hands the call over (`agent:NAME`): a summary of
//! the conversation and the call's metadata, both cut to the contract's caps.

use crate::domain::{Handoff, Role};

/// The prefix of a transfer target that names an agent.
pub const AGENT_TARGET: &str = "agent:";

/// The conversation so far as `caller: …` / `agent: …` lines, oldest first: the newest lines
/// that fit in [`Handoff::MAX_SUMMARY`] (the newest one cut to fit on its own).
pub fn summary(history: &[(Role, String)]) -> String {
    let mut lines = Vec::new();
    let mut size = 0;
    for (role, text) in history.iter().rev() {
        let mut line = format!("{}: {}", role.as_str(), text.trim());
        let room = Handoff::MAX_SUMMARY - size - usize::from(!lines.is_empty());
        if line.len() > room {
            if !lines.is_empty() {
                break;
            }
            line.truncate(floor_char_boundary(&line, room));
        }
        size += line.len() + usize::from(!lines.is_empty());
        lines.push(line);
    }
    lines.reverse();
    lines.join("\n")
}

/// The call's metadata for the next agent, with the outcome the last agent set (as
/// `"outcome"` in a JSON object); the metadata alone when that would not fit the cap, and ""
/// when not even that fits.
pub fn metadata(call_metadata: &str, outcome: Option<&str>) -> String {
    let with_outcome = outcome.map(|outcome| {
        let mut object = match serde_json::from_str::<serde_json::Value>(call_metadata) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => serde_json::Map::from_iter([("metadata".to_string(), other)]),
            Err(_) if call_metadata.trim().is_empty() => serde_json::Map::new(),
            Err(_) => serde_json::Map::from_iter([(
                "metadata".to_string(),
                serde_json::Value::String(call_metadata.to_string()),
            )]),
        };
        object.insert("outcome".into(), outcome.into());
        serde_json::Value::Object(object).to_string()
    });
    [with_outcome, Some(call_metadata.to_string())]
        .into_iter()
        .flatten()
        .find(|m| m.len() <= Handoff::MAX_METADATA)
        .unwrap_or_default()
}

/// The largest index at most `at` that starts a character of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_the_newest_lines_within_the_cap() {
        let history = vec![
            (Role::Agent, "Hello, how can I help?".to_string()),
            (Role::Caller, " I need to book a check-up ".to_string()),
        ];
        assert_eq!(
            summary(&history),
            "agent: Hello, how can I help?\ncaller: I need to book a check-up"
        );
        let long = "é".repeat(Handoff::MAX_SUMMARY);
        let history = vec![
            (Role::Caller, "first".to_string()),
            (Role::Agent, long.clone()),
            (Role::Caller, "newest".to_string()),
        ];
        // The older line that does not fit ends the summary: nothing older follows.
        assert_eq!(summary(&history), "caller: newest");
        // One line longer than the cap is cut, not dropped.
        let s = summary(&[(Role::Caller, long)]);
        assert!(s.starts_with("caller: é") && s.len() <= Handoff::MAX_SUMMARY);
        assert_eq!(summary(&[]), "");
    }

    #[test]
    fn metadata_carries_the_outcome() {
        assert_eq!(metadata(r#"{"crm":7}"#, None), r#"{"crm":7}"#);
        assert_eq!(
            metadata(r#"{"crm":7}"#, Some("booking")),
            r#"{"crm":7,"outcome":"booking"}"#
        );
        assert_eq!(metadata("", Some("x")), r#"{"outcome":"x"}"#);
        assert_eq!(metadata("", None), "");
        assert_eq!(
            metadata("[1]", Some("x")),
            r#"{"metadata":[1],"outcome":"x"}"#
        );
        let big = format!(r#"{{"k":"{}"}}"#, "a".repeat(Handoff::MAX_METADATA - 8));
        assert_eq!(metadata(&big, Some("x")), big);
    }
}
