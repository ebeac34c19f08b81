//! `switchboard:agent/mcp` (0.2.0): the tools of the MCP servers an agent's manifest names, and
//! the veto of one MCP call during `on-event(mcp-call)`.

use std::time::Instant;

use super::HostCtx;
use crate::plugins::bindings::v0_2::switchboard::agent::mcp;
use crate::plugins::bindings::v0_2::switchboard::agent::types::Tool;
use crate::plugins::types::Error as GuestError;
use crate::plugins::validate::caps;

impl mcp::Host for HostCtx {
    /// The version's MCP tools under their model-facing names; listing a server not listed yet
    /// is host time, not the hook's CPU budget.
    async fn tools(&mut self) -> wasmtime::Result<Vec<Tool>> {
        let t = Instant::now();
        let catalog = self.ctx.mcp.clone();
        let tools = catalog.tools().await;
        self.waited_since(t);
        Ok(tools
            .into_iter()
            .map(|t| Tool {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect())
    }

    async fn veto(&mut self, reason: String) -> wasmtime::Result<Result<(), GuestError>> {
        if !self.in_mcp_call {
            return Ok(Err(GuestError::NotAllowed(
                "mcp.veto works only during on-event(mcp-call)".into(),
            )));
        }
        if reason.len() > caps::MAX_TOOL_IO {
            return Ok(Err(GuestError::Invalid(format!(
                "the veto reason is over {} bytes",
                caps::MAX_TOOL_IO
            ))));
        }
        self.veto = Some(reason);
        Ok(Ok(()))
    }
}
