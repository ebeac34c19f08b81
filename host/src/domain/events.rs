//! What happened on a call, as timestamped events: the feed of the call store, the live event
//! stream of the API and the dashboard, and the logs.

use serde::Serialize;

use super::agent_event::MachineVerdict;
use super::usage::{self, UsageItem};
use super::{Action, AgentFault, Role};

/// The call's state machine: ringing → starting → active → (transferring) → ending → ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    Ringing,
    Starting,
    Active,
    Transferring,
    Ending,
    Ended,
}

impl CallState {
    /// Whether moving to `next` is allowed (anything may end; nothing leaves `Ended`).
    pub fn can_become(self, next: CallState) -> bool {
        use CallState::*;
        match (self, next) {
            (Ended, _) => false,
            (_, Ending | Ended) => true,
            (Ringing, Starting) | (Starting, Active) => true,
            (Active, Transferring) | (Transferring, Active) => true,
            _ => false,
        }
    }
}

/// The [`EventKind::Handoff`] status once the new agent runs the call (its detail is the
/// agent's version): the call record's agent follows it.
pub const HANDED_OFF: &str = "handed-off";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    Created {
        direction: String,
        caller: String,
        callee: String,
        transport: String,
        agent: Option<String>,
        agent_version: Option<String>,
        agent_hash: Option<String>,
        /// JSON the requester attached to an outbound call (also given to the agent).
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
    },
    State {
        state: CallState,
    },
    Rejected {
        code: u16,
        reason: String,
    },
    /// An outbound call's callee is alerted: `ringing` (180) or `early-media` (183 + SDP).
    Progress {
        status: String,
    },
    /// An outbound call ended before answer: `busy`, `no-answer`, `rejected`, `cancelled` or
    /// `failed`, with the SIP status when there was one.
    NotAnswered {
        outcome: String,
        code: Option<u16>,
        reason: String,
    },
    Answered {
        codec: String,
        model: String,
    },
    Actions {
        hook: String,
        actions: Vec<Action>,
    },
    AgentFault {
        fault: AgentFault,
    },
    /// An agent action the call's leg cannot carry out (e.g. a transfer on a leg without
    /// one); the agent hears `not-allowed`.
    ActionRefused {
        action: Action,
        reason: String,
    },
    Dtmf {
        digits: String,
        source: String,
    },
    Transcript {
        role: Role,
        text: String,
    },
    /// The far party asked not to be called again (`source`: `agent`, through
    /// `call.do-not-call`): their number goes on the do-not-call list.
    OptOut {
        source: String,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        call_id: String,
        ok: bool,
        output: String,
    },
    SpeechStarted,
    SpeechStopped,
    /// Answering-machine detection's verdict on an outbound call, `at_ms` after the answer.
    MachineDetection {
        verdict: MachineVerdict,
        at_ms: u64,
    },
    /// A voicemail's beep, from `at_ms` to `end_ms` after the answer, at about `hz`.
    VoicemailBeep {
        at_ms: u64,
        end_ms: u64,
        hz: u32,
    },
    BargeIn {
        played_ms: u64,
        discarded_ms: u64,
    },
    /// What the brain reported using, item by item; the token totals repeat the items'
    /// `input` and `output` totals for logs and metrics (see [`EventKind::usage`]).
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        items: Vec<UsageItem>,
    },
    TurnLatency {
        turn: u32,
        host_in_ms: f64,
        model_ms: f64,
        host_out_ms: f64,
        total_ms: f64,
        /// A cascade brain's part of `model_ms`, stage by stage.
        #[serde(skip_serializing_if = "Option::is_none")]
        stages: Option<StageLatency>,
    },
    Transfer {
        target: String,
        status: String,
        detail: String,
    },
    /// The call moved to another agent (`agent:NAME`): `requested`, [`HANDED_OFF`] (the new
    /// agent runs the call; detail: its version), `failed` (detail says why; the fallback
    /// follows) or
    /// `greeting-heard` (`gap_ms` from the request to the new agent's first audio out).
    Handoff {
        from: String,
        to: String,
        status: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        gap_ms: Option<u64>,
    },
    ModelError {
        message: String,
    },
    /// The caller was silent for `silent_ms` (the agent's speech not counted): the `count`th
    /// reprompt since they last spoke, said `by` the agent (answering its `silence` event) or
    /// the host (the configured words).
    SilenceReprompt {
        silent_ms: u64,
        count: u32,
        by: String,
    },
    /// The caller stayed silent too long: the host says goodbye and hangs up once it is heard.
    SilenceHangup {
        silent_ms: u64,
        reason: String,
    },
    /// The call reaches its maximum length in `remaining_ms`: warned `by` the agent or host.
    MaxDurationWarning {
        remaining_ms: u64,
        by: String,
    },
    /// The call reached its maximum length: the host says goodbye and hangs up once it is heard.
    MaxDuration {
        limit_ms: u64,
    },
    /// A tool ran `tool_ms` without an answer: the model says this filler meanwhile.
    Filler {
        text: String,
        tool_ms: u64,
    },
    /// The far end put the call on hold (`held`) or resumed it; on resume, how long it was
    /// held.
    Hold {
        held: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        held_ms: Option<u64>,
    },
    /// The session timer (SIP, RFC 4028): `agreed`, `refreshed`, `refresh-failed` or
    /// `expired`, with the interval and who refreshes (`us` or `peer`).
    SessionTimer {
        status: String,
        interval_secs: u32,
        refresher: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
    },
    /// The agent's greeting as the provider spoke it differs from the words asked for (a
    /// provider without verbatim speech, such as OpenAI's SIP connector, words it itself).
    GreetingReworded {
        asked: String,
        spoken: String,
    },
    /// The call is being recorded to this WAV file.
    Recording {
        path: String,
    },
    /// RTP totals of the call, recorded once when its media closes.
    MediaStats {
        packets_received: u64,
        packets_expected: u64,
        packets_lost: u64,
        jitter_ms: f64,
        concealed_ms: u64,
        /// SRTP/SRTCP packets dropped because their authentication tag did not match.
        srtp_auth_failures: u64,
        /// SRTP/SRTCP packets dropped as replayed or older than the replay window.
        srtp_replayed: u64,
    },
    Ended {
        reason: String,
        abnormal: bool,
        /// The business outcome the agent set (`call.set-outcome`), if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<String>,
    },
}

impl EventKind {
    /// A usage report, its token totals taken from the items.
    pub fn usage(items: Vec<UsageItem>) -> EventKind {
        EventKind::Usage {
            input_tokens: usage::tokens(&items, usage::INPUT),
            output_tokens: usage::tokens(&items, usage::OUTPUT),
            items,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CallEvent {
    pub call_id: String,
    /// Per-call sequence number, from 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A cascade brain's time per stage for one answer, in milliseconds: the caller's end of
/// speech to the final transcript (`stt_ms`), the request to the language model's first token
/// (`llm_ms`), the first sentence sent to speech synthesis to its first audio (`tts_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct StageLatency {
    pub stt_ms: f64,
    pub llm_ms: f64,
    pub tts_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_transitions() {
        use CallState::*;
        assert!(Ringing.can_become(Starting));
        assert!(Starting.can_become(Active));
        assert!(Active.can_become(Transferring));
        assert!(Transferring.can_become(Active));
        assert!(Active.can_become(Ending));
        assert!(Ringing.can_become(Ended));
        assert!(!Ended.can_become(Ending));
        assert!(!Ringing.can_become(Active));
        assert!(!Ending.can_become(Active));
    }
}
