//! `switchboard:agent/mcp` (0.2.0): the tools of the MCP servers an agent's manifest names,
//! their renaming in `on-start`, and the veto of one MCP call during `on-event(mcp-call)`.

use super::HostCtx;
use crate::plugins::bindings::v0_2::switchboard::agent::mcp;
use crate::plugins::bindings::v0_2::switchboard::agent::types::Tool;
use crate::plugins::types::Error as GuestError;
use crate::plugins::validate::{caps, check_tool_name};

impl mcp::Host for HostCtx {
    /// The version's MCP tools under their model-facing names; listing a server not listed yet
    /// is host time, not the hook's CPU budget.
    async fn tools(&mut self) -> wasmtime::Result<Vec<Tool>> {
        let catalog = self.ctx.mcp.clone();
        let tools = catalog.tools().await;
        Ok(tools
            .into_iter()
            .map(|t| Tool {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect())
    }

    async fn rename(
        &mut self,
        tool: String,
        name: String,
    ) -> wasmtime::Result<Result<Tool, GuestError>> {
        if self.hook != "on-start" {
            return Ok(Err(GuestError::NotAllowed(
                "mcp.rename works only during on-start".into(),
            )));
        }
        if let Err(message) = check_tool_name(&name) {
            return Ok(Err(GuestError::Invalid(message)));
        }
        let catalog = self.ctx.mcp.clone();
        let tools = catalog.tools().await;
        let Some(found) = tools.iter().find(|t| t.name == tool) else {
            return Ok(Err(GuestError::Invalid(format!(
                "no MCP tool `{tool}` (mcp.tools() lists them)"
            ))));
        };
        if name != tool && tools.iter().any(|t| t.name == name) {
            return Ok(Err(GuestError::Invalid(format!(
                "`{name}` already names an MCP tool"
            ))));
        }
        match self.mcp_renames.get(&name) {
            Some(other) if *other != tool => {
                return Ok(Err(GuestError::Invalid(format!(
                    "`{name}` already names MCP tool `{other}`"
                ))));
            }
            _ => {}
        }
        self.mcp_renames.insert(name.clone(), tool);
        Ok(Ok(Tool {
            name,
            description: found.description.clone(),
            parameters: found.parameters.clone(),
        }))
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
