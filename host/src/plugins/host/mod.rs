//! The host side of the agent contract's imports: one file per WIT interface (`call`, `kv`,
//! `http`, `config`, `log`, `mcp`), each implemented on [`HostCtx`], the small per-call context
//! those imports need. The sandbox owns the store around it; nothing here knows about wasmtime
//! stores or budgets.
//!
//! Each file implements the interface once, for the current contract (0.2.0); the 0.1.0 trait
//! of the same interface delegates to it function by function, so both versions share one
//! implementation.

mod call;
mod config;
mod http;
mod kv;
mod log;
mod mcp;

use std::collections::HashMap;
use std::sync::Arc;

use super::bindings::v0_2::switchboard::agent::types;
use super::runtime::AgentContext;
use super::types::Error as GuestError;
use crate::domain::agent_event::AgentRequest;
use crate::domain::{Action, CallInfo, Handoff};

/// What the host imports of one call need: the agent's shared context, the call's info for logs
/// and `call.context`, and what the current hook asked for.
pub(crate) struct HostCtx {
    pub ctx: Arc<AgentContext>,
    pub call_id: String,
    /// The call's info once `on-start` has been given it.
    pub info: Option<CallInfo>,
    /// Who handed the call to this agent, when another agent did.
    pub handoff: Option<Handoff>,
    /// Effects requested through the `call` interface during the current hook.
    pub effects: Vec<Action>,
    /// Requests other than actions made during the current hook.
    pub requests: Vec<AgentRequest>,
    /// The hook running (`on-start`, `on-event`, ...).
    pub hook: &'static str,
    /// The current hook is `on-event(mcp-call)`: `mcp.veto` may refuse that call.
    pub in_mcp_call: bool,
    /// Why the agent refused the MCP call, when it did (`mcp.veto`).
    pub veto: Option<String>,
    /// MCP tools renamed in on-start (`mcp.rename`): the model's name to the catalog's.
    pub mcp_renames: HashMap<String, String>,
}

impl HostCtx {
    pub fn new(ctx: Arc<AgentContext>, call_id: String) -> Self {
        HostCtx {
            ctx,
            call_id,
            info: None,
            handoff: None,
            effects: Vec::new(),
            requests: Vec::new(),
            hook: "",
            in_mcp_call: false,
            veto: None,
            mcp_renames: HashMap::new(),
        }
    }

    /// Reset for a new hook.
    pub fn begin_hook(&mut self, hook: &'static str) {
        self.hook = hook;
        self.effects.clear();
        self.requests.clear();
        self.veto = None;
    }
}

/// The answer of a function the contract declares for a later issue that this host does not
/// implement yet: the agent sees `unavailable` and may carry on without it.
fn not_yet(function: &str, issue: u32) -> GuestError {
    GuestError::Unavailable(format!(
        "{function} is declared by switchboard:agent@0.2.0 but this host implements it only \
         from issue {issue} on"
    ))
}

impl types::Host for HostCtx {}
