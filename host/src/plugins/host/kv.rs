//! `switchboard:agent/kv`: the agent's persistent key-value store, within its manifest quota.

use super::HostCtx;
use crate::plugins::bindings::v0_1::switchboard::agent::kv as kv_v0_1;
use crate::plugins::bindings::v0_2::switchboard::agent::kv;
use crate::plugins::kv::KvError;
use crate::plugins::types::Error as GuestError;

impl kv::Host for HostCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.ctx.kv.as_ref().and_then(|kv| kv.get(&key)))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        let Some(store) = self.ctx.kv.clone() else {
            return Ok(Err(GuestError::NotAllowed("no kv quota granted".into())));
        };
        let quota = self.ctx.manifest.capabilities.kv_quota_bytes;
        let result = store.set(&key, &value, quota);
        Ok(result.map_err(|e| match e {
            KvError::Quota { .. } => GuestError::NotAllowed(e.to_string()),
            KvError::BadKey | KvError::ValueTooLarge => GuestError::Invalid(e.to_string()),
            other => {
                tracing::error!(call_id = %self.call_id, agent = %self.ctx.name, error = %other, "kv write failed");
                GuestError::Unavailable("storage failed".into())
            }
        }))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if let Some(store) = self.ctx.kv.clone()
            && let Err(e) = store.delete(&key)
        {
            tracing::error!(call_id = %self.call_id, agent = %self.ctx.name, error = %e, "kv delete failed");
        }
        Ok(())
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .ctx
            .kv
            .as_ref()
            .map(|kv| kv.list_keys(&prefix))
            .unwrap_or_default())
    }
}

/// 0.1.0 agents: the same functions, the same implementation.
impl kv_v0_1::Host for HostCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        kv::Host::get(self, key).await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), GuestError>> {
        kv::Host::set(self, key, value).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        kv::Host::delete(self, key).await
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        kv::Host::list_keys(self, prefix).await
    }
}
