//! What the agent did during a scripted call, in order: gathered from the call's events (says,
//! digit collection, tool results, faults, refusals, the end), from the script leg (transfers,
//! hang-ups, digits out) and from the agent's requests (outcome, expected input). All of them
//! happen on the call task, so the log keeps the call's own order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::call::agent::CallAgent;
use crate::call::events::CallSink;
use crate::call::logic::{Hook, HookResult, McpRoute};
use crate::domain::agent_event::{AgentRequest, Expectation};
use crate::domain::events::{CallEvent, EventKind};
use crate::domain::{Action, AgentFault, DigitRequest, EndReason};
use crate::plugins::AgentSession;

/// One thing the agent did, as a script's expectations see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Spoke (the greeting, a `say`, a digit prompt).
    Said(String),
    ToolResult {
        name: String,
        result: Result<String, String>,
    },
    Transferred(String),
    HungUp,
    SentDigits(String),
    CollectsDigits(DigitRequest),
    Expects(Expectation),
    Outcome(String),
    /// Asked for the caller's number to go on the do-not-call list.
    DoNotCall,
    /// The call refused an action (the leg cannot do it).
    Refused {
        action: String,
        reason: String,
    },
    /// on-start refused the call with this SIP status.
    Rejected {
        code: u16,
        reason: String,
    },
    Fault(String),
    Ended(String),
}

/// The shared, ordered log of a scripted call.
pub type Log = Arc<Mutex<Vec<Observed>>>;

pub(crate) fn push(log: &Log, observed: Observed) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(observed);
}

/// A hint as printed, and as `expect-hint` matches it.
pub fn hint_text(hint: &Expectation) -> String {
    match hint {
        Expectation::Anything => "anything".into(),
        Expectation::Digits { min, max } => format!("digits {min}-{max}"),
        Expectation::YesNo => "yes-no".into(),
        Expectation::Phrases(p) => format!("phrases: {}", p.join(", ")),
        Expectation::PhoneNumber => "phone-number".into(),
        Expectation::Email => "email".into(),
        Expectation::Spelling => "spelling".into(),
    }
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Say(t) => format!("say {t:?}"),
        Action::Play(a) => format!("play {a}"),
        Action::SendDtmf(d) => format!("send digits {d}"),
        Action::Transfer(t) => format!("transfer to {t}"),
        Action::Hangup => "hang up".into(),
        Action::CollectDigits(_) => "collect digits".into(),
    }
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Said(text) => write!(f, "says {text:?}"),
            Observed::ToolResult {
                name,
                result: Ok(r),
            } => write!(f, "tool {name} returns {r}"),
            Observed::ToolResult {
                name,
                result: Err(e),
            } => write!(f, "tool {name} fails: {e}"),
            Observed::Transferred(t) => write!(f, "transfers to {t}"),
            Observed::HungUp => f.write_str("hangs up"),
            Observed::SentDigits(d) => write!(f, "sends digits {d}"),
            Observed::CollectsDigits(r) => {
                write!(f, "collects up to {} digits", r.max_digits)?;
                if let Some(t) = &r.terminator {
                    write!(f, " ending with {t}")?;
                }
                write!(f, " within {} ms", r.timeout_ms)
            }
            Observed::Expects(hint) => write!(f, "expects {}", hint_text(hint)),
            Observed::Outcome(o) => write!(f, "sets outcome {o:?}"),
            Observed::DoNotCall => f.write_str("puts the caller on the do-not-call list"),
            Observed::Refused { action, reason } => write!(f, "is refused {action}: {reason}"),
            Observed::Rejected { code, reason } => write!(f, "rejects the call: {code} {reason}"),
            Observed::Fault(message) => write!(f, "faults: {message}"),
            Observed::Ended(reason) => write!(f, "call ends: {reason}"),
        }
    }
}

/// The call's event sink: keeps what the agent did, drops the rest.
pub(crate) struct Sink {
    log: Log,
    /// Tool names by call id, to name each result.
    tools: Mutex<HashMap<String, String>>,
}

impl Sink {
    pub fn new(log: Log) -> Sink {
        Sink {
            log,
            tools: Mutex::default(),
        }
    }
}

impl CallSink for Sink {
    fn record(&self, event: CallEvent) {
        let mut tools = self.tools.lock().unwrap_or_else(|p| p.into_inner());
        match event.kind {
            EventKind::Actions { actions, .. } => {
                for action in actions {
                    match action {
                        Action::Say(text) => push(&self.log, Observed::Said(text)),
                        Action::CollectDigits(request) => {
                            if let Some(prompt) = &request.prompt {
                                push(&self.log, Observed::Said(prompt.clone()));
                            }
                            push(&self.log, Observed::CollectsDigits(request));
                        }
                        // Transfers, hang-ups and digits are logged as the leg carries them out.
                        _ => {}
                    }
                }
            }
            EventKind::ToolCall { call_id, name, .. } => {
                tools.insert(call_id, name);
            }
            EventKind::ToolResult {
                call_id,
                ok,
                output,
            } => {
                let name = tools.remove(&call_id).unwrap_or(call_id);
                let result = if ok { Ok(output) } else { Err(output) };
                push(&self.log, Observed::ToolResult { name, result });
            }
            EventKind::AgentFault { fault } => push(&self.log, Observed::Fault(fault.to_string())),
            EventKind::ActionRefused { action, reason } => push(
                &self.log,
                Observed::Refused {
                    action: action_text(&action),
                    reason,
                },
            ),
            EventKind::Ended { reason, .. } => push(&self.log, Observed::Ended(reason)),
            _ => {}
        }
    }
}

/// The real agent session, with its requests (outcome, expected input) logged as it makes them.
pub(crate) struct ObservedAgent {
    pub session: AgentSession,
    pub log: Log,
}

impl CallAgent for ObservedAgent {
    async fn hook(&mut self, hook: Hook) -> HookResult {
        CallAgent::hook(&mut self.session, hook).await
    }

    fn take_requests(&mut self) -> Vec<AgentRequest> {
        let requests = CallAgent::take_requests(&mut self.session);
        for request in &requests {
            let observed = match request {
                AgentRequest::SetOutcome(o) => Observed::Outcome(o.clone()),
                AgentRequest::Expect(hint) => Observed::Expects(hint.clone()),
                AgentRequest::DoNotCall => Observed::DoNotCall,
                // The scripts run without the call's clock (no limits, no fillers).
                AgentRequest::TurnLimits(_) => continue,
            };
            push(&self.log, observed);
        }
        requests
    }

    async fn end(&mut self, reason: &EndReason) -> Result<(), AgentFault> {
        CallAgent::end(&mut self.session, reason).await
    }

    fn call_mcp(
        &self,
        route: &McpRoute,
        arguments: &str,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>> {
        CallAgent::call_mcp(&self.session, route, arguments)
    }
}
