//! `switchboard:agent/mcp` (0.2.0): tools of the MCP servers an agent's manifest names. MCP
//! arrives with issue 31; until then an agent has no MCP tools and nothing to veto.

use super::{HostCtx, not_yet};
use crate::plugins::bindings::v0_2::switchboard::agent::mcp;
use crate::plugins::bindings::v0_2::switchboard::agent::types::Tool;
use crate::plugins::types::Error as GuestError;

impl mcp::Host for HostCtx {
    async fn tools(&mut self) -> wasmtime::Result<Vec<Tool>> {
        Ok(Vec::new())
    }

    async fn veto(&mut self, _reason: String) -> wasmtime::Result<Result<(), GuestError>> {
        Ok(Err(not_yet("mcp.veto", 31)))
    }
}
