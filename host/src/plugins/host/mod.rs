//! The host side of the agent contract's imports: one file per WIT interface (`call`, `kv`,
//! `http`, `config`, `log`), each implemented on [`HostCtx`], the small per-call context those
//! imports need. The sandbox owns the store around it; nothing here knows about wasmtime stores,
//! budgets or hooks beyond the time it spends waiting.

mod call;
mod config;
mod http;
mod kv;
mod log;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::switchboard::agent::types;
use super::runtime::AgentContext;
use crate::domain::Action;

/// What the host imports of one call need: the agent's shared context, the call id for logs,
/// the effects queued during the current hook, and the time the hook spent waiting in the host
/// (which the CPU budget does not count).
pub(crate) struct HostCtx {
    pub ctx: Arc<AgentContext>,
    pub call_id: String,
    /// Effects requested through the `call` interface during the current hook.
    pub effects: Vec<Action>,
    /// Time spent in host imports during the current hook.
    pub in_host: Duration,
}

impl HostCtx {
    pub fn new(ctx: Arc<AgentContext>, call_id: String) -> Self {
        HostCtx {
            ctx,
            call_id,
            effects: Vec::new(),
            in_host: Duration::ZERO,
        }
    }

    /// Reset for a new hook.
    pub fn begin_hook(&mut self) {
        self.effects.clear();
        self.in_host = Duration::ZERO;
    }

    /// Count the time since `started` as spent in the host, not in the guest.
    fn waited_since(&mut self, started: Instant) {
        self.in_host += started.elapsed();
    }
}

impl types::Host for HostCtx {}
