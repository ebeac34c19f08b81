//! `switchboard:agent/config`: the config and secret values the manifest declares.

use super::HostCtx;
use crate::plugins::bindings::switchboard::agent::config;

impl config::Host for HostCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.values.get(&key).cloned())
    }
}
