//! The agent as the call task drives it: one hook at a time, by [`Hook`]. The WebAssembly agent
//! session implements it; tests drive calls with scripted agents.

use std::future::Future;

use futures_util::future::BoxFuture;

use super::logic::{Hook, HookResult, McpRoute};
use crate::domain::agent_event::AgentRequest;
use crate::domain::{AgentFault, EndReason};
use crate::mcp::McpError;
use crate::plugins::AgentSession;
use crate::plugins::session::caps::MAX_TOOL_IO;

pub(crate) trait CallAgent: Send {
    fn hook(&mut self, hook: Hook) -> impl Future<Output = HookResult> + Send;
    /// What the agent asked for during the hooks so far that is not an action.
    fn take_requests(&mut self) -> Vec<AgentRequest>;
    /// The last hook: the call ended for `reason`.
    fn end(&mut self, reason: &EndReason) -> impl Future<Output = Result<(), AgentFault>> + Send;
    /// Call an MCP tool of the agent's version, apart from the agent (it runs while the call
    /// goes on): the text for the model, or the error it gets.
    fn call_mcp(
        &self,
        route: &McpRoute,
        _arguments: &str,
    ) -> BoxFuture<'static, Result<String, String>> {
        let unknown = format!("tool unavailable: no MCP server `{}`", route.server);
        Box::pin(async move { Err(unknown) })
    }
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
            Hook::McpCall(call) => HookResult::Mcp(self.mcp_call(&call).await),
        }
    }

    fn take_requests(&mut self) -> Vec<AgentRequest> {
        AgentSession::take_requests(self)
    }

    async fn end(&mut self, reason: &EndReason) -> Result<(), AgentFault> {
        AgentSession::end(self, reason).await
    }

    fn call_mcp(
        &self,
        route: &McpRoute,
        arguments: &str,
    ) -> BoxFuture<'static, Result<String, String>> {
        let catalog = self.mcp().clone();
        let (route, arguments) = (route.clone(), arguments.to_string());
        Box::pin(async move {
            catalog
                .call(&route.server, &route.tool, &arguments)
                .await
                .map(within_tool_cap)
                .map_err(|e| match e {
                    // The tool ran and failed: its own words.
                    McpError::Tool(text) => text,
                    other => {
                        tracing::warn!(server = %route.server, tool = %route.tool, error = %other, code = ?other.code(), "MCP call failed");
                        format!("tool unavailable: {other}")
                    }
                })
        })
    }
}

/// An MCP result cut to the size an agent's own tool result may have (the model and the
/// agent's `on-event(mcp-result)` get it), marked as cut.
fn within_tool_cap(mut text: String) -> String {
    const CUT: &str = " [cut]";
    if text.len() > MAX_TOOL_IO {
        let mut end = MAX_TOOL_IO - CUT.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(CUT);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mcp_results_are_cut_to_the_tool_cap() {
        assert_eq!(within_tool_cap("short".into()), "short");
        let cut = within_tool_cap("é".repeat(MAX_TOOL_IO));
        assert!(
            cut.len() <= MAX_TOOL_IO && cut.ends_with(" [cut]"),
            "{}",
            cut.len()
        );
    }
}
