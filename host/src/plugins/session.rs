//! One agent instance for one call, as the call sees it: the hooks it drives, in order, each
//! run in the call's [`Sandbox`] and checked on the way out.
//!
//! A hook that traps, overruns its budget or breaks a size cap poisons the session: it returns
//! an [`AgentFault`] and no further hook is entered. Other sessions are never affected.

use std::collections::HashMap;
use std::sync::Arc;

use super::bindings::v0_2::switchboard::agent::types::CallEvent;
use super::contract::{Agent, call_hook};
use super::runtime::{AgentVersion, PoolSlot};
use super::sandbox::Sandbox;
use super::validate::{check_call_info, check_config, over};
use crate::domain::agent_event::{AgentRequest, Notification};
use crate::domain::{
    Action, AgentFault, CallInfo, EndReason, FaultKind, Handoff, RejectReason, Role, SessionConfig,
};

/// The caps stay reachable where the call layer has always found them.
pub use super::validate::caps;

/// How `on-start` went.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// Run the session with this configuration; `actions` are effects queued during on-start.
    Accept {
        config: SessionConfig,
        actions: Vec<Action>,
    },
    /// Refuse the call with this SIP status.
    Reject(RejectReason),
}

/// Result of a tool call: what goes back to the model, and effects queued meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub result: Result<String, String>,
    pub actions: Vec<Action>,
}

/// An agent instance serving one call. Hooks run one at a time; after a fault every hook
/// returns [`FaultKind::Poisoned`] and the call should apply the runtime's fallback.
pub struct AgentSession {
    sandbox: Sandbox,
    version: Arc<AgentVersion>,
    ended: bool,
    _slot: PoolSlot,
}

impl AgentSession {
    pub(crate) fn new(sandbox: Sandbox, version: Arc<AgentVersion>, slot: PoolSlot) -> Self {
        AgentSession {
            sandbox,
            version,
            ended: false,
            _slot: slot,
        }
    }

    /// The version this call runs, fixed for the whole call.
    pub fn version(&self) -> &Arc<AgentVersion> {
        &self.version
    }

    pub fn call_id(&self) -> &str {
        &self.sandbox.state().host.call_id
    }

    /// The fault that ended the agent's part of the call, if any.
    pub fn fault(&self) -> Option<&AgentFault> {
        self.sandbox.fault.as_ref()
    }

    /// Run `on-start` for a call another agent handed over: `call.context()` carries
    /// `handoff` from then on.
    pub async fn start_handed_off(
        &mut self,
        info: &CallInfo,
        handoff: Handoff,
    ) -> Result<StartOutcome, AgentFault> {
        self.sandbox.store.data_mut().host.handoff = Some(handoff);
        self.start(info).await
    }

    pub async fn start(&mut self, info: &CallInfo) -> Result<StartOutcome, AgentFault> {
        check_call_info(info).map_err(|m| AgentFault {
            kind: FaultKind::Limit,
            hook: "on-start",
            message: format!("host call-info: {m}"),
        })?;
        let sb = &mut self.sandbox;
        sb.begin("on-start")?;
        sb.store.data_mut().host.info = Some(info.clone());
        let info = info.into();
        let r = call_hook!(sb, call_on_start(&info));
        let (result, effects) = sb.finish("on-start", r)?;
        match result {
            Ok(config) => {
                let config = SessionConfig::from(config);
                check_config(&config).map_err(|m| sb.limit("on-start", m))?;
                let actions = sb.merge("on-start", effects, Vec::new())?;
                Ok(StartOutcome::Accept { config, actions })
            }
            Err(reject) => {
                if !(400..=699).contains(&reject.code) {
                    return Err(sb.limit(
                        "on-start",
                        format!("reject code {} is not in 400..=699", reject.code),
                    ));
                }
                over(
                    "reject reason",
                    reject.reason.len(),
                    caps::MAX_REJECT_REASON,
                )
                .map_err(|m| sb.limit("on-start", m))?;
                Ok(StartOutcome::Reject(reject.into()))
            }
        }
    }

    pub async fn dtmf(&mut self, digits: &str) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-dtmf")?;
        let r = call_hook!(sb, call_on_dtmf(digits));
        let (returned, effects) = sb.finish("on-dtmf", r)?;
        sb.merge("on-dtmf", effects, returned)
    }

    pub async fn transcript(
        &mut self,
        role: Role,
        text: &str,
        is_final: bool,
    ) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-transcript")?;
        let r = call_hook!(sb, call_on_transcript(role.into(), text, is_final));
        let (returned, effects) = sb.finish("on-transcript", r)?;
        sb.merge("on-transcript", effects, returned)
    }

    pub async fn tool_call(
        &mut self,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutcome, AgentFault> {
        let sb = &mut self.sandbox;
        if arguments.len() > caps::MAX_TOOL_IO {
            return Ok(ToolOutcome {
                result: Err(format!("arguments are over {} bytes", caps::MAX_TOOL_IO)),
                actions: Vec::new(),
            });
        }
        sb.begin("on-tool-call")?;
        let r = call_hook!(sb, call_on_tool_call(name, arguments));
        let (result, effects) = sb.finish("on-tool-call", r)?;
        let len = match &result {
            Ok(s) | Err(s) => s.len(),
        };
        over("tool result", len, caps::MAX_TOOL_IO).map_err(|m| sb.limit("on-tool-call", m))?;
        let actions = sb.merge("on-tool-call", effects, Vec::new())?;
        Ok(ToolOutcome { result, actions })
    }

    pub async fn transfer_result(
        &mut self,
        target: &str,
        outcome: Result<(), String>,
    ) -> Result<Vec<Action>, AgentFault> {
        let sb = &mut self.sandbox;
        sb.begin("on-transfer-result")?;
        let outcome = outcome.as_ref().map(|_| ()).map_err(String::as_str);
        let r = call_hook!(sb, call_on_transfer_result(target, outcome));
        let (returned, effects) = sb.finish("on-transfer-result", r)?;
        sb.merge("on-transfer-result", effects, returned)
    }

    /// The last hook. Runs at most once; later calls, and calls after a fault, do nothing.
    pub async fn end(&mut self, reason: &EndReason) -> Result<(), AgentFault> {
        if std::mem::replace(&mut self.ended, true) || self.sandbox.fault.is_some() {
            return Ok(());
        }
        let sb = &mut self.sandbox;
        sb.begin("on-end")?;
        let reason = reason.into();
        let r = call_hook!(sb, call_on_end(&reason));
        sb.finish("on-end", r).map(|_| ())
    }

    /// Tell the agent something happened on the call (`on-event`, contract 0.2.0 and later).
    /// An agent built for 0.1.0 has no such hook: it is not entered, and no actions come back;
    /// neither after `on-end`, which the contract promises is the last hook.
    pub async fn notify(&mut self, notification: &Notification) -> Result<Vec<Action>, AgentFault> {
        if self.ended {
            return Ok(Vec::new());
        }
        let sb = &mut self.sandbox;
        let guest = match &sb.agent {
            Agent::V0_2(agent) => agent.switchboard_agent_agent().clone(),
            Agent::V0_1(_) => return Ok(Vec::new()),
        };
        sb.begin("on-event")?;
        let event = CallEvent::from(notification);
        let fut = guest.call_on_event(&mut sb.store, &event);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        let (returned, effects) = sb.finish("on-event", r)?;
        sb.merge("on-event", effects, returned)
    }

    /// Tell the agent the model called an MCP tool (`on-event(mcp-call)`): the actions it
    /// returned, and its reason when it refused the call with `mcp.veto`.
    pub async fn mcp_call(
        &mut self,
        call: &Notification,
    ) -> Result<(Vec<Action>, Option<String>), AgentFault> {
        self.sandbox.store.data_mut().host.in_mcp_call = true;
        let result = self.notify(call).await;
        let host = &mut self.sandbox.store.data_mut().host;
        host.in_mcp_call = false;
        let veto = host.veto.take();
        result.map(|actions| (actions, veto))
    }

    /// The MCP tools of this call's agent version (listed once per version).
    pub fn mcp(&self) -> &Arc<crate::mcp::Catalog> {
        &self.version.ctx.mcp
    }

    /// The MCP tools the agent renamed in on-start (`mcp.rename`): its name for each to the
    /// catalog's.
    pub fn mcp_renames(&self) -> HashMap<String, String> {
        self.sandbox.store.data().host.mcp_renames.clone()
    }

    /// The requests other than actions (outcome, expectation hints) the agent made, in order, in
    /// the hooks that completed since the last take. The call takes them after each hook; a
    /// failed hook's requests are dropped with its effects.
    pub fn take_requests(&mut self) -> Vec<AgentRequest> {
        std::mem::take(&mut self.sandbox.requests)
    }
}
