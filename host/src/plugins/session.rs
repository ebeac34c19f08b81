//! One agent instance for one call, as the call sees it: the hooks it drives, in order, each
//! run in the call's [`Sandbox`] and checked on the way out.
//!
//! A hook that traps, overruns its budget or breaks a size cap poisons the session: it returns
//! an [`AgentFault`] and no further hook is entered. Other sessions are never affected.

use std::sync::Arc;

use super::runtime::AgentVersion;
use super::sandbox::Sandbox;
use super::validate::{check_call_info, check_config, over};
use crate::domain::{
    Action, AgentFault, CallInfo, EndReason, FaultKind, RejectReason, Role, SessionConfig,
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
}

impl AgentSession {
    pub(crate) fn new(sandbox: Sandbox, version: Arc<AgentVersion>) -> Self {
        AgentSession {
            sandbox,
            version,
            ended: false,
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

    pub async fn start(&mut self, info: &CallInfo) -> Result<StartOutcome, AgentFault> {
        check_call_info(info).map_err(|m| AgentFault {
            kind: FaultKind::Limit,
            hook: "on-start",
            message: format!("host call-info: {m}"),
        })?;
        let sb = &mut self.sandbox;
        sb.begin("on-start")?;
        let info = info.into();
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_start(&mut sb.store, &info);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
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
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_dtmf(&mut sb.store, digits);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
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
        let fut = sb.agent.switchboard_agent_agent().call_on_transcript(
            &mut sb.store,
            role.into(),
            text,
            is_final,
        );
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
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
        let fut =
            sb.agent
                .switchboard_agent_agent()
                .call_on_tool_call(&mut sb.store, name, arguments);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
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
        let fut = sb.agent.switchboard_agent_agent().call_on_transfer_result(
            &mut sb.store,
            target,
            outcome.as_ref().map(|_| ()).map_err(String::as_str),
        );
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
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
        let fut = sb
            .agent
            .switchboard_agent_agent()
            .call_on_end(&mut sb.store, &reason);
        let r = tokio::time::timeout(sb.limits.hook_timeout, fut).await;
        sb.finish("on-end", r).map(|_| ())
    }
}
