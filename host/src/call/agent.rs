//! The agent as the call task drives it: one hook at a time, by [`Hook`]. The WebAssembly agent
//! session implements it; tests drive calls with scripted agents.

use std::future::Future;

use super::logic::{Hook, HookResult};
use crate::domain::agent_event::AgentRequest;
use crate::domain::{AgentFault, EndReason};
use crate::plugins::AgentSession;

pub(crate) trait CallAgent: Send {
    fn hook(&mut self, hook: Hook) -> impl Future<Output = HookResult> + Send;
    /// What the agent asked for during the hooks so far that is not an action.
    fn take_requests(&mut self) -> Vec<AgentRequest>;
    /// The last hook: the call ended for `reason`.
    fn end(&mut self, reason: &EndReason) -> impl Future<Output = Result<(), AgentFault>> + Send;
}

impl CallAgent for AgentSession {
    async fn hook(&mut self, hook: Hook) -> HookResult {
        match hook {
            Hook::Dtmf(digits) => HookResult::Actions(self.dtmf(&digits).await),
            Hook::Transcript(role, text) => {
                HookResult::Actions(self.transcript(role, &text, true).await)
            }
            Hook::ToolCall { name, arguments } => {
                HookResult::Tool(self.tool_call(&name, &arguments).await)
            }
            Hook::TransferResult { target, result } => {
                HookResult::Actions(self.transfer_result(&target, result).await)
            }
            Hook::Event(notification) => HookResult::Actions(self.notify(&notification).await),
        }
    }

    fn take_requests(&mut self) -> Vec<AgentRequest> {
        AgentSession::take_requests(self)
    }

    async fn end(&mut self, reason: &EndReason) -> Result<(), AgentFault> {
        AgentSession::end(self, reason).await
    }
}
