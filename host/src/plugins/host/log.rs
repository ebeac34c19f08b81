//! `switchboard:agent/log`: the agent's log lines, tagged with agent, version and call id.

use super::HostCtx;
use crate::plugins::bindings::v0_1::switchboard::agent::log as log_v0_1;
use crate::plugins::bindings::v0_2::switchboard::agent::log;
use crate::plugins::types::LogLevel;
use crate::plugins::validate::caps;

impl log::Host for HostCtx {
    async fn log(&mut self, level: LogLevel, mut message: String) -> wasmtime::Result<()> {
        if message.len() > caps::MAX_LOG {
            let mut cut = caps::MAX_LOG;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (call_id, agent, version) = (&self.call_id, &self.ctx.name, &self.ctx.version);
        match level {
            LogLevel::Trace => tracing::trace!(%call_id, %agent, %version, "{message}"),
            LogLevel::Debug => tracing::debug!(%call_id, %agent, %version, "{message}"),
            LogLevel::Info => tracing::info!(%call_id, %agent, %version, "{message}"),
            LogLevel::Warn => tracing::warn!(%call_id, %agent, %version, "{message}"),
            LogLevel::Error => tracing::error!(%call_id, %agent, %version, "{message}"),
        }
        Ok(())
    }
}

/// 0.1.0 agents: the same implementation.
impl log_v0_1::Host for HostCtx {
    async fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        log::Host::log(self, level, message).await
    }
}
