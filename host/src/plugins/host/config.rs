//! `switchboard:agent/config`: the config and secret values the manifest declares.

use super::HostCtx;
use crate::plugins::bindings::v0_1::switchboard::agent::config as config_v0_1;
use crate::plugins::bindings::v0_2::switchboard::agent::config;

impl config::Host for HostCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.values.get(&key).cloned())
    }
}

/// 0.1.0 agents: the same implementation.
impl config_v0_1::Host for HostCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        config::Host::get(self, key).await
    }
}
