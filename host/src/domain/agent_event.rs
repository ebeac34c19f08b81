//! What passes between a call and its agent besides hooks and actions: the notifications the
//! call sends an agent (`on-event` in the 0.2.0 contract) and the requests an agent makes that
//! are not actions (a business outcome, a hint of what the caller will say next).
//!
//! The contract declares every notification and request planned for wave 2 (wit/README.md); the
//! variants here are the ones the host implements, and grow as later issues implement more.

use serde::{Deserialize, Serialize};

use super::Action;
use super::conversation::TurnLimits;

/// Something happened on the call that the agent may react to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Notification {
    /// The caller started speaking.
    SpeechStarted,
    /// The caller stopped speaking.
    SpeechStopped,
    /// The caller interrupted the agent after this much of its reply had been heard.
    BargeIn { heard_ms: u32 },
    /// An outbound call made progress.
    Progress(CallProgress),
    /// The call could not carry out an action the agent asked for (the leg cannot do it, or
    /// policy forbids it); `reason` says why.
    Refused { action: Action, reason: String },
    /// The model called an MCP tool; the agent may veto the call.
    McpCall {
        server: String,
        tool: String,
        arguments: String,
    },
    /// An MCP tool call finished: its text, or why it failed.
    McpResult {
        server: String,
        tool: String,
        outcome: Result<String, String>,
    },
    /// Answering-machine detection on an outbound call reached its verdict.
    MachineDetected(MachineVerdict),
    /// A voicemail's beep just ended: a message left now is recorded whole.
    VoicemailBeep,
    /// The caller has been silent this long: what the agent says now is the reprompt.
    Silence { ms: u32 },
    /// The call reaches its maximum length in this long: what the agent says now is the
    /// warning.
    EndingSoon { ms: u32 },
}

/// Who answered an outbound call, as answering-machine detection heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineVerdict {
    Human,
    Machine,
    Unknown,
}

/// How an outbound call is doing before and at answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallProgress {
    Ringing,
    EarlyMedia,
    Answered,
}

/// What the agent expects the caller to say or key in next: a recogniser grammar and a reason
/// to wait longer at the end of a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// Free speech; clears an earlier hint.
    Anything,
    Digits {
        min: u8,
        max: u8,
    },
    YesNo,
    Phrases(Vec<String>),
    PhoneNumber,
    Email,
    Spelling,
}

/// A request an agent made during a hook that is not an action: the call layer takes these
/// after each hook ([`crate::plugins::AgentSession::take_requests`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentRequest {
    /// The business outcome of the call, for the call record (the last one wins).
    SetOutcome(String),
    /// What the caller is expected to say or key in next.
    Expect(Expectation),
    /// Put the far party's number on the do-not-call list (they asked not to be called).
    DoNotCall,
    /// The agent's own silence, maximum length and filler settings for the call.
    TurnLimits(TurnLimits),
}
