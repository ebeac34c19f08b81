//! The contract versions this host speaks, and an agent built against either: which one a
//! component exports is found at load ([`super::capabilities::check`]); the version keeps a
//! pre-instance of that version's bindings, each call an instance of it, and the hooks are
//! dispatched to whichever it is. Both versions' bindings share their data types (see
//! [`super::bindings`]), so a hook returns the same Rust types whatever the version.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{v0_1, v0_2};
use super::sandbox::SessionState;

/// The contract's WIT package.
pub const PACKAGE: &str = "switchboard:agent";

/// A version of `switchboard:agent` this host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    /// Wave 1 (wit/0.1.0/agent.wit), frozen.
    V0_1,
    /// The current contract (wit/agent.wit): adds imports and the `on-event` hook.
    V0_2,
}

impl Contract {
    /// Every version this host runs, oldest first.
    pub const ALL: [Contract; 2] = [Contract::V0_1, Contract::V0_2];
    /// What the SDK builds today.
    pub const CURRENT: Contract = Contract::V0_2;

    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// `switchboard:agent@<version>`, as messages name it.
    pub fn package(self) -> String {
        format!("{PACKAGE}@{}", self.version())
    }

    pub fn from_version(version: &str) -> Option<Contract> {
        Contract::ALL.into_iter().find(|c| c.version() == version)
    }
}

/// A linked, type-checked agent component of either version, ready to instantiate per call.
#[derive(Clone)]
pub(crate) enum AgentPre {
    V0_1(v0_1::AgentPluginPre<SessionState>),
    V0_2(v0_2::AgentPluginPre<SessionState>),
}

impl AgentPre {
    pub fn new(contract: Contract, pre: InstancePre<SessionState>) -> wasmtime::Result<AgentPre> {
        Ok(match contract {
            Contract::V0_1 => AgentPre::V0_1(v0_1::AgentPluginPre::new(pre)?),
            Contract::V0_2 => AgentPre::V0_2(v0_2::AgentPluginPre::new(pre)?),
        })
    }

    pub fn contract(&self) -> Contract {
        match self {
            AgentPre::V0_1(_) => Contract::V0_1,
            AgentPre::V0_2(_) => Contract::V0_2,
        }
    }

    pub async fn instantiate(&self, store: &mut Store<SessionState>) -> wasmtime::Result<Agent> {
        Ok(match self {
            AgentPre::V0_1(pre) => Agent::V0_1(pre.instantiate_async(store).await?),
            AgentPre::V0_2(pre) => Agent::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

/// One call's instance of an agent, of either version.
pub(crate) enum Agent {
    V0_1(v0_1::AgentPlugin),
    V0_2(v0_2::AgentPlugin),
}

/// Call a hook both versions export, with the sandbox's wall-clock timeout:
/// `call_hook!(sandbox, call_on_dtmf(digits))`. The arms differ only in the bindings' type,
/// which is why this is a macro and not a function.
macro_rules! call_hook {
    ($sandbox:expr, $hook:ident ( $($arg:expr),* )) => {{
        let sb = &mut *$sandbox;
        let timeout = sb.limits.hook_timeout;
        let cpu = sb.store.data().cpu.clone();
        match &sb.agent {
            $crate::plugins::contract::Agent::V0_1(a) => {
                let fut = a.switchboard_agent_agent().$hook(&mut sb.store $(, $arg)*);
                tokio::time::timeout(timeout, cpu.metered(fut)).await
            }
            $crate::plugins::contract::Agent::V0_2(a) => {
                let fut = a.switchboard_agent_agent().$hook(&mut sb.store $(, $arg)*);
                tokio::time::timeout(timeout, cpu.metered(fut)).await
            }
        }
    }};
}
pub(crate) use call_hook;
