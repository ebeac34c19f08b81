//! What goes in and out of the call logic: its configuration, its inputs, the effects it asks
//! for, and how a call ends.

use std::collections::HashMap;
use std::time::Duration;

use super::conversation::Limit;
use crate::call::CallCommand;
use crate::call::leg::{Capabilities, DigitSource, SessionTimerNote};
use crate::domain::agent_event::Notification;
use crate::domain::conversation::ConversationConfig;
use crate::domain::events::EventKind;
use crate::domain::usage::UsageItem;
use crate::domain::{Action, AgentFault, EndReason, Role};
use crate::media::amd::AmdEvent;
use crate::model::{Command, StageLatency};
use crate::plugins::ToolOutcome;

/// What the logic needs to know of its call from the start.
#[derive(Debug, Clone)]
pub struct LogicConfig {
    /// How long a hang-up or transfer waits for queued speech to finish.
    pub drain_limit: Duration,
    /// How long it waits after the last packet went out, for the far end's jitter buffer to
    /// play it.
    pub final_tail: Duration,
    /// Where a failed agent or model hands the caller, after the apology; `None` hangs up.
    pub fallback_transfer: Option<String>,
    /// The actions that replace a failed agent (the apology, then transfer or hang-up).
    pub fallback_actions: Vec<Action>,
    pub capabilities: Capabilities,
    /// We placed the call: the agent hears that it was answered.
    pub outbound: bool,
    /// The model was offered the host's [`END_CALL_TOOL`](super::END_CALL_TOOL).
    pub end_call: bool,
    /// The agent that runs the call at first (another may take over: `agent:NAME`).
    pub agent: String,
    /// The MCP tools offered to the model, by the name it calls them: fixed at the start of
    /// the call (and of each agent it is handed to).
    pub mcp_tools: McpRoutes,
    /// The model speaks first: the session's greeting (a call started on the fallback speaks
    /// its apology first either way).
    pub greeting: bool,
    /// Caller silence, the call's maximum length, fillers while tools run.
    pub conversation: ConversationConfig,
}

/// Where the model's MCP tools go, by the name the model calls them.
pub type McpRoutes = HashMap<String, McpRoute>;

/// One MCP tool on its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRoute {
    pub server: String,
    pub tool: String,
}

/// Everything that can happen to a call.
#[derive(Debug)]
pub enum Input {
    /// The call is answered: run the actions of `on-start`, or, when the agent or model already
    /// failed (`failure` says which), only the apology.
    Start {
        actions: Vec<Action>,
        failure: Option<String>,
    },
    FarEndHangup,
    Digit {
        digit: char,
        source: DigitSource,
    },
    TransferProgress {
        code: u16,
        reason: String,
    },
    TransferOutcome {
        code: u16,
        reason: String,
        success: bool,
    },
    /// The first agent audio after a pause reached the caller at call time `at`.
    PlayoutStarted {
        at: Duration,
    },
    /// A provider that plays the audio itself started speaking to the caller: the model's
    /// first audio and the caller hearing it are one moment.
    ProviderAudioStarted,
    /// That provider played all of it (or cut it): nothing more is left for the caller to hear.
    ProviderAudioStopped,
    MediaTimeout,
    /// The far end put the call on hold (`true`) or resumed it (`false`).
    Hold(bool),
    /// A step of the leg's session timer, to record.
    SessionTimer(SessionTimerNote),
    /// The leg went away under the call.
    LegLost(String),
    /// The answer to [`Effect::Transfer`].
    TransferStarted(Result<(), String>),
    /// The answer to [`Effect::StartAgent`].
    HandedOff(Result<HandedOff, HandoffFailed>),
    SpeechStarted,
    SpeechStopped,
    /// Answering-machine detection found something (times are after the answer).
    Machine(AmdEvent),
    Transcript {
        role: Role,
        text: String,
        is_final: bool,
    },
    ToolCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    /// The answer to [`Effect::McpCall`]: the tool's text, or why it failed.
    McpDone {
        call_id: String,
        route: McpRoute,
        result: Result<String, String>,
    },
    /// What the brain used, as usage items.
    Usage(Vec<UsageItem>),
    /// A cascade brain's time per stage for the answer whose audio comes next.
    StageLatency(StageLatency),
    ResponseDone,
    ModelError(String),
    /// The model session closed (the text says why); no more model events follow.
    ModelClosed(String),
    /// The model's event stream ended without a close.
    ModelGone,
    /// The answer to [`Effect::Hook`].
    Hook(HookResult),
    /// A request from the API; `None` once nobody can send any more.
    Command(Option<CallCommand>),
    /// A deadline from [`CallLogic::deadline`] passed, or the playout drained.
    Tick,
}

/// An agent hook the logic wants run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Dtmf(String),
    Transcript(Role, String),
    ToolCall {
        name: String,
        arguments: String,
    },
    TransferResult {
        target: String,
        result: Result<(), String>,
    },
    /// Tell the agent what happened (`on-event`); what it returns is carried out.
    Event(Notification),
    /// Tell the agent the model called an MCP tool (`on-event(mcp-call)`), which it may veto.
    McpCall(Notification),
}

/// What an agent hook gave back.
#[derive(Debug)]
pub enum HookResult {
    Actions(Result<Vec<Action>, AgentFault>),
    Tool(Result<ToolOutcome, AgentFault>),
    /// The actions `on-event(mcp-call)` returned, and the agent's veto if it refused the call.
    Mcp(Result<(Vec<Action>, Option<String>), AgentFault>),
}

/// Something the call task must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Record(EventKind),
    /// Start the call's recording, if the configuration wants one.
    StartRecording,
    Model(Command),
    /// Run this hook and answer with [`Input::Hook`].
    Hook(Hook),
    /// Call an MCP tool without holding up the call; answer with [`Input::McpDone`].
    McpCall {
        call_id: String,
        route: McpRoute,
        arguments: String,
    },
    SendDigits(String),
    /// Send the caller's audio to the model (`true`), or nowhere (`false`, while on hold).
    CallerAudio(bool),
    /// Start a transfer on the leg and answer with [`Input::TransferStarted`].
    Transfer(String),
    /// The running agent's part of the call is over (`on-end` with this reason): another agent
    /// takes over.
    EndAgent(EndReason),
    /// Start the agent the call is handed to, move the model to its session config, and
    /// answer with [`Input::HandedOff`].
    StartAgent(HandoffRequest),
    Hangup,
    /// Replace the model with the local apology speech.
    ConnectFallback,
    /// Open a new model session that takes over with the conversation so far (the last one
    /// closed while the call was on hold); when that fails, answer with
    /// [`Input::ModelClosed`].
    Reconnect(Vec<(Role, String)>),
    /// The call is over; nothing follows.
    End(Ending),
}

/// A hand-off to another agent, as the logic asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct HandoffRequest {
    pub from: String,
    pub to: String,
    /// What the next agent reads in `call.context().handoff`.
    pub summary: String,
    /// The conversation so far, for a model session that takes over.
    pub history: Vec<(Role, String)>,
}

/// The agent a call was handed to runs it.
#[derive(Debug)]
pub struct HandedOff {
    /// Its version, for the call record.
    pub version: String,
    /// Effects queued in its `on-start`.
    pub actions: Vec<Action>,
    /// Its greeting.
    pub greeting: Option<String>,
    /// A new model session replaced the running one and speaks the greeting itself; otherwise
    /// the running session took the new settings and the greeting is still to be said.
    pub new_session: bool,
    /// The model was offered the host's end-call tool.
    pub end_call: bool,
    /// The new agent's MCP tools, as offered to the model.
    pub mcp_tools: McpRoutes,
    /// The new agent's conversation settings: they replace the last agent's (the call's
    /// maximum length still counts from its answer).
    pub conversation: ConversationConfig,
}

/// Why a hand-off did not happen; the call goes on with the fallback.
#[derive(Debug, thiserror::Error)]
pub enum HandoffFailed {
    #[error("agent `{0}` is not loaded")]
    Unknown(String),
    #[error("agent rejected the call: {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("agent failed in on-start: {}", .0.message)]
    Fault(AgentFault),
    #[error("the model could not follow: {0}")]
    Model(String),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub reason: EndReason,
    pub abnormal: bool,
    /// Hung up on request from the API, not by the agent.
    pub requested: bool,
    /// Hung up by the call's own clock (the agent hears `timeout`).
    pub limit: Option<Limit>,
}

impl Ending {
    pub(super) fn new(reason: EndReason, abnormal: bool) -> Ending {
        Ending {
            reason,
            abnormal,
            requested: false,
            limit: None,
        }
    }

    /// The call's own clock hung up: the caller was silent, or the call reached its maximum
    /// length.
    pub(super) fn limit(limit: Limit) -> Ending {
        Ending {
            limit: Some(limit),
            ..Ending::new(EndReason::Timeout, false)
        }
    }

    /// How a call ends when it hangs up itself: a failure (agent or model) or the agent's wish.
    pub(super) fn hanging_up(failure: Option<String>) -> Ending {
        match failure {
            Some(why) => Ending::new(EndReason::Failed(why), true),
            None => Ending::new(EndReason::AgentHangup, false),
        }
    }

    /// The call record's words for it.
    pub fn describe(&self) -> String {
        if let Some(limit) = self.limit {
            return limit.as_str().to_string();
        }
        match &self.reason {
            EndReason::CallerHangup => "caller-hangup".to_string(),
            EndReason::AgentHangup if self.requested => "hangup-requested".to_string(),
            EndReason::AgentHangup => "agent-hangup".to_string(),
            EndReason::Transferred(t) => format!("transferred to {t}"),
            EndReason::Timeout => "timeout".to_string(),
            EndReason::Failed(why) => format!("failed: {why}"),
        }
    }
}
