//! The host's own words for a call: who started it, who spoke, what an agent asks for, why a
//! call ended, and what happened on it ([`events`]). Every part of the host speaks these types —
//! the call logic, the call store, the API — and the generated WIT types of each agent contract
//! version are converted to and from them at the plugin edge, so no other module depends on a
//! contract version.
//!
//! Serialised forms are the call store's event schema: kebab-case tags and names, like the
//! event types themselves.

pub mod agent_event;
pub mod conversation;
pub mod events;
pub mod usage;

use serde::{Deserialize, Serialize};

/// Who started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which side of the conversation spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Caller,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Agent => "agent",
        }
    }
}

/// What the host knows about a call when it starts (the agent's `on-start` argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    pub call_id: String,
    pub direction: Direction,
    pub caller: String,
    pub callee: String,
    /// "udp", "tcp", "tls", ...: how the call reached us.
    pub transport: String,
    /// Selected signalling headers (X-* and the like), never credentials.
    pub headers: Vec<(String, String)>,
    /// JSON text handed over by whoever placed the call, or "".
    pub metadata: String,
}

/// What an agent that handed the call over passes to the next one (`call.context().handoff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handoff {
    pub from_agent: String,
    /// The conversation so far, newest kept (cap [`Handoff::MAX_SUMMARY`]).
    pub summary: String,
    /// The call's metadata JSON, with the outcome when one was set, or "" (cap
    /// [`Handoff::MAX_METADATA`]).
    pub metadata: String,
}

impl Handoff {
    /// The contract's caps (`wit/agent.wit`, record `handoff`).
    pub const MAX_SUMMARY: usize = 4 << 10;
    pub const MAX_METADATA: usize = 16 << 10;
}

/// A function the voice model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object, as JSON text.
    pub parameters: String,
}

/// How the agent wants its call run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionConfig {
    pub instructions: String,
    /// Words spoken first, exactly as written; `None` waits for the caller.
    pub greeting: Option<String>,
    pub voice: Option<String>,
    pub language: Option<String>,
    pub tools: Vec<Tool>,
    pub model: Option<String>,
}

/// Collect keypad digits: up to `max_digits`, until `terminator`, or `timeout_ms` after the
/// last key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigitRequest {
    pub max_digits: u8,
    pub timeout_ms: u32,
    pub terminator: Option<String>,
    pub prompt: Option<String>,
}

/// What an agent asks the call to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Say(String),
    Play(String),
    SendDtmf(String),
    Transfer(String),
    Hangup,
    CollectDigits(DigitRequest),
}

/// Why a call ended, as the agent hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    CallerHangup,
    AgentHangup,
    /// Transferred to this target.
    Transferred(String),
    /// No media or no answer for too long.
    Timeout,
    /// Something failed; the text says what.
    Failed(String),
}

/// An agent's refusal of a call in `on-start`: the status the caller's side gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectReason {
    pub code: u16,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// The guest trapped (panic, unreachable, bad memory access...).
    Trap,
    /// The guest ran longer than its CPU budget for one hook.
    CpuBudget,
    /// The hook took longer than the wall-clock timeout (including host I/O).
    Timeout,
    /// The guest tried to grow its memory past the cap.
    Memory,
    /// The guest returned something over a size cap or malformed.
    Limit,
    /// A hook was called after an earlier fault.
    Poisoned,
}

/// Why an agent's part of a call ended. The call goes on with the configured fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{hook}: {kind:?}: {message}")]
pub struct AgentFault {
    pub kind: FaultKind,
    pub hook: &'static str,
    pub message: String,
}

/// Whether a call's media is encrypted with SRTP (keys exchanged in SDP, RFC 4568), as a
/// trunk or listener is configured: a word of the SIP configuration and of the media layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    /// Plain RTP; offers of SRTP only are refused.
    #[default]
    Off,
    /// Offer RTP/AVP with keys (best-effort SRTP); take SRTP or plain answers and offers.
    Optional,
    /// Offer RTP/SAVP; a plain offer or answer is refused (488).
    Required,
}
