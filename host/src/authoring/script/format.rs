//! The script file: TOML, one or more `[[conversation]]`s, each a list of `[[conversation.step]]`
//! tables in order. A step is one thing the caller or the model does, or one expectation of the
//! agent; unknown keys are refused with their line (docs/agent-tests.md has the reference).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::domain::Direction;

/// A parsed script file.
#[derive(Debug, Clone)]
pub struct Script {
    /// Where it came from, as given.
    pub path: String,
    pub conversations: Vec<Conversation>,
}

/// One scripted call.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub name: String,
    pub line: usize,
    pub caller: String,
    /// `None`: the agent's first number.
    pub callee: Option<String>,
    pub direction: Direction,
    /// The leg's transport as the agent's `call-info` says it ("test" unless set).
    pub transport: String,
    /// JSON text for the agent's `call-info`.
    pub metadata: String,
    /// Values for the agent's config keys in this conversation (over the manifest defaults).
    pub config: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

/// A step with its line in the file.
#[derive(Debug, Clone)]
pub struct Step {
    pub line: usize,
    pub kind: StepKind,
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// The caller's final transcript.
    CallerSays(String),
    /// Keypad keys, one after the other.
    CallerPresses(String),
    CallerHangsUp,
    /// The model calls the agent's tool; the result is checked against `checks`.
    Tool {
        name: String,
        /// JSON text.
        arguments: String,
        checks: Vec<ResultCheck>,
    },
    /// Let the call run this many milliseconds (a digit collection's timeout, say).
    Wait(u64),
    Expect(Expect),
}

/// What a tool's result must be.
#[derive(Debug, Clone)]
pub enum ResultCheck {
    /// The result is exactly this text.
    Equals(String),
    /// The result contains this text.
    Contains(String),
    /// The result is JSON holding at least these members.
    Subset(serde_json::Value),
    /// The tool failed with an error containing this text.
    Error(String),
}

/// What the agent must have done since the previous caller or model step.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Spoke text containing this (the greeting, `say`, a digit prompt).
    Say(String),
    /// Spoke text matching this regular expression.
    SayMatches(Regex),
    Transfer(String),
    Hangup,
    /// Sent these keypad digits.
    SendDigits(String),
    /// Started collecting digits.
    CollectDigits,
    /// Told the host what the caller will say next; the text is contained in the hint as
    /// printed (`digits 1-6`, `phrases: yes, no`, `phone-number`).
    Hint(String),
    /// The outcome set last, so far in the call.
    Outcome(String),
    /// No agent fault so far in the call.
    NoFault,
}

/// A compiled regular expression that remembers its text.
#[derive(Debug, Clone)]
pub struct Regex {
    pub pattern: String,
    pub compiled: regex_automata::meta::Regex,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScriptError {
    pub path: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    conversation: Vec<Spanned<RawConversation>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConversation {
    name: String,
    #[serde(default = "default_caller")]
    caller: String,
    callee: Option<String>,
    direction: Option<Direction>,
    #[serde(default = "default_transport")]
    transport: String,
    metadata: Option<toml::Value>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
}

fn default_caller() -> String {
    "+15550100001".into()
}

fn default_transport() -> String {
    "test".into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStep {
    caller_says: Option<String>,
    caller_presses: Option<String>,
    caller_hangs_up: Option<bool>,
    tool: Option<String>,
    arguments: Option<toml::Value>,
    expect_result: Option<toml::Value>,
    expect_result_equals: Option<String>,
    expect_result_contains: Option<String>,
    expect_error: Option<String>,
    wait_ms: Option<u64>,
    expect_say: Option<String>,
    expect_say_matches: Option<String>,
    expect_transfer: Option<String>,
    expect_hangup: Option<bool>,
    expect_dtmf: Option<String>,
    expect_collect: Option<bool>,
    expect_hint: Option<String>,
    expect_outcome: Option<String>,
    expect_no_fault: Option<bool>,
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// JSON text of a TOML value: a string is taken as JSON text already.
fn json_text(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        other => serde_json::to_string(&other).map_err(|e| e.to_string()),
    }
}

impl RawStep {
    fn into_kind(self) -> Result<StepKind, String> {
        let tool_only = self.arguments.is_some()
            || self.expect_result.is_some()
            || self.expect_result_equals.is_some()
            || self.expect_result_contains.is_some()
            || self.expect_error.is_some();
        let mut kinds = Vec::new();
        if let Some(text) = self.caller_says {
            kinds.push(StepKind::CallerSays(text));
        }
        if let Some(keys) = self.caller_presses {
            if let Some(bad) = keys
                .chars()
                .find(|c| crate::call::leg::keypad_digit(&c.to_string()).is_none())
            {
                return Err(format!(
                    "caller-presses: `{bad}` is not a keypad key (0-9, *, #, A-D)"
                ));
            }
            kinds.push(StepKind::CallerPresses(keys));
        }
        if self.caller_hangs_up == Some(true) {
            kinds.push(StepKind::CallerHangsUp);
        }
        if let Some(ms) = self.wait_ms {
            kinds.push(StepKind::Wait(ms));
        }
        if let Some(name) = self.tool {
            let arguments = match self.arguments {
                Some(v) => json_text(v).map_err(|e| format!("arguments: {e}"))?,
                None => "{}".into(),
            };
            let mut checks = Vec::new();
            if let Some(v) = self.expect_result {
                let json = serde_json::to_value(&v).map_err(|e| format!("expect-result: {e}"))?;
                checks.push(ResultCheck::Subset(json));
            }
            checks.extend(self.expect_result_equals.map(ResultCheck::Equals));
            checks.extend(self.expect_result_contains.map(ResultCheck::Contains));
            checks.extend(self.expect_error.map(ResultCheck::Error));
            kinds.push(StepKind::Tool {
                name,
                arguments,
                checks,
            });
        } else if tool_only {
            return Err("arguments and expect-result… belong to a `tool` step".into());
        }
        let expects = [
            self.expect_say.map(Expect::Say),
            self.expect_transfer.map(Expect::Transfer),
            (self.expect_hangup == Some(true)).then_some(Expect::Hangup),
            self.expect_dtmf.map(Expect::SendDigits),
            (self.expect_collect == Some(true)).then_some(Expect::CollectDigits),
            self.expect_hint.map(Expect::Hint),
            self.expect_outcome.map(Expect::Outcome),
            (self.expect_no_fault == Some(true)).then_some(Expect::NoFault),
        ];
        kinds.extend(expects.into_iter().flatten().map(StepKind::Expect));
        if let Some(pattern) = self.expect_say_matches {
            let compiled = regex_automata::meta::Regex::new(&pattern)
                .map_err(|e| format!("expect-say-matches: {e}"))?;
            kinds.push(StepKind::Expect(Expect::SayMatches(Regex {
                pattern,
                compiled,
            })));
        }
        match kinds.len() {
            1 => Ok(kinds.pop().expect("one")),
            0 => Err(
                "an empty step: give one of caller-says, caller-presses, caller-hangs-up, \
                      tool, wait-ms or an expect-… key"
                    .into(),
            ),
            _ => Err("one thing per step: split this step in two".into()),
        }
    }
}

impl Script {
    pub fn load(path: &Path) -> Result<Script, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScriptError {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Script::parse(&text, &path.display().to_string())
    }

    /// Parse script `text`; `path` names it in errors, which carry the line.
    pub fn parse(text: &str, path: &str) -> Result<Script, ScriptError> {
        let error = |line: Option<usize>, message: String| ScriptError {
            path: match line {
                Some(line) => format!("{path}:{line}"),
                None => path.to_string(),
            },
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            error(line, e.message().to_string())
        })?;
        if raw.conversation.is_empty() {
            return Err(error(None, "no [[conversation]] in the file".into()));
        }
        let mut conversations = Vec::new();
        for c in raw.conversation {
            let line = line_of(text, c.span().start);
            let c = c.into_inner();
            let metadata = match c.metadata {
                Some(v) => json_text(v).map_err(|e| error(Some(line), format!("metadata: {e}")))?,
                None => String::new(),
            };
            let mut steps = Vec::new();
            for s in c.steps {
                let line = line_of(text, s.span().start);
                let kind = s
                    .into_inner()
                    .into_kind()
                    .map_err(|e| error(Some(line), e))?;
                steps.push(Step { line, kind });
            }
            conversations.push(Conversation {
                name: c.name,
                line,
                caller: c.caller,
                callee: c.callee,
                direction: c.direction.unwrap_or(Direction::Inbound),
                transport: c.transport,
                metadata,
                config: c.config,
                steps,
            });
        }
        Ok(Script {
            path: path.to_string(),
            conversations,
        })
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepKind::CallerSays(text) => write!(f, "the caller says {text:?}"),
            StepKind::CallerPresses(keys) => write!(f, "the caller presses {keys}"),
            StepKind::CallerHangsUp => f.write_str("the caller hangs up"),
            StepKind::Tool {
                name, arguments, ..
            } => write!(f, "the model calls tool {name} with {arguments}"),
            StepKind::Wait(ms) => write!(f, "wait {ms} ms"),
            StepKind::Expect(e) => write!(f, "expect {e}"),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Say(text) => write!(f, "the agent to say {text:?}"),
            Expect::SayMatches(re) => {
                write!(f, "the agent to say something matching /{}/", re.pattern)
            }
            Expect::Transfer(target) => write!(f, "the agent to transfer to {target}"),
            Expect::Hangup => f.write_str("the agent to hang up"),
            Expect::SendDigits(d) => write!(f, "the agent to send digits {d}"),
            Expect::CollectDigits => f.write_str("the agent to collect digits"),
            Expect::Hint(h) => write!(f, "the agent to expect {h:?}"),
            Expect::Outcome(o) => write!(f, "the outcome {o:?}"),
            Expect::NoFault => f.write_str("no agent fault"),
        }
    }
}

impl std::fmt::Display for ResultCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResultCheck::Equals(text) => write!(f, "a result equal to {text}"),
            ResultCheck::Contains(text) => write!(f, "a result containing {text:?}"),
            ResultCheck::Subset(json) => write!(f, "a result holding {json}"),
            ResultCheck::Error(text) => write!(f, "an error containing {text:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"
[[conversation]]
name = "hours"
caller = "+15550100002"
config = { business-name = "Acme" }
metadata = { source = "test" }

[[conversation.step]]
expect-say = "Acme"

[[conversation.step]]
tool = "opening_hours"
arguments = { day = "monday" }
expect-result = { hours = "9-5" }
expect-result-contains = "9"

[[conversation.step]]
caller-presses = "12#"

[[conversation.step]]
expect-say-matches = "^Order [0-9 ]+"

[[conversation.step]]
caller-hangs-up = true
"#;

    #[test]
    fn a_script_parses_with_lines() {
        let script = Script::parse(SCRIPT, "t.toml").unwrap();
        let c = &script.conversations[0];
        assert_eq!((c.name.as_str(), c.line), ("hours", 2));
        assert_eq!(c.caller, "+15550100002");
        assert_eq!(c.callee, None);
        assert_eq!(c.direction, Direction::Inbound);
        assert_eq!(c.config["business-name"], "Acme");
        assert_eq!(c.metadata, r#"{"source":"test"}"#);
        let lines: Vec<usize> = c.steps.iter().map(|s| s.line).collect();
        assert_eq!(lines, [8, 11, 17, 20, 23]);
        assert!(matches!(&c.steps[0].kind, StepKind::Expect(Expect::Say(t)) if t == "Acme"));
        let StepKind::Tool {
            name,
            arguments,
            checks,
        } = &c.steps[1].kind
        else {
            panic!("a tool step");
        };
        assert_eq!(
            (name.as_str(), arguments.as_str()),
            ("opening_hours", r#"{"day":"monday"}"#)
        );
        assert!(matches!(&checks[0], ResultCheck::Subset(v) if v["hours"] == "9-5"));
        assert!(matches!(&checks[1], ResultCheck::Contains(t) if t == "9"));
        assert!(matches!(&c.steps[2].kind, StepKind::CallerPresses(k) if k == "12#"));
        assert!(matches!(&c.steps[4].kind, StepKind::CallerHangsUp));
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let text = "[[conversation]]\nname = \"x\"\n\n[[conversation.step]]\nexpect-sya = \"hi\"\n";
        let e = Script::parse(text, "t.toml").unwrap_err();
        assert_eq!(e.path, "t.toml:5");
        assert!(
            e.message.contains("unknown field `expect-sya`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_step_does_one_thing() {
        let text = "[[conversation]]\nname = \"x\"\n[[conversation.step]]\ncaller-says = \"hi\"\nexpect-say = \"hello\"\n";
        let e = Script::parse(text, "t.toml").unwrap_err();
        assert_eq!(e.path, "t.toml:3");
        assert!(e.message.contains("one thing per step"), "{}", e.message);
        let text = "[[conversation]]\nname = \"x\"\n[[conversation.step]]\nexpect-result = 1\n";
        let e = Script::parse(text, "t.toml").unwrap_err();
        assert!(
            e.message.contains("belong to a `tool` step"),
            "{}",
            e.message
        );
        let text =
            "[[conversation]]\nname = \"x\"\n[[conversation.step]]\ncaller-presses = \"1x\"\n";
        let e = Script::parse(text, "t.toml").unwrap_err();
        assert!(
            e.message.contains("`x` is not a keypad key"),
            "{}",
            e.message
        );
        let text =
            "[[conversation]]\nname = \"x\"\n[[conversation.step]]\nexpect-say-matches = \"(\"\n";
        let e = Script::parse(text, "t.toml").unwrap_err();
        assert!(e.message.contains("expect-say-matches"), "{}", e.message);
    }

    #[test]
    fn a_file_without_conversations_is_refused() {
        let e = Script::parse("", "t.toml").unwrap_err();
        assert!(e.message.contains("no [[conversation]]"));
    }
}
