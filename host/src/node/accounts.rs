//! Which registration accounts this node registers. Nodes sharing `[[sip.accounts]]` would
//! each register the same extension; instead each account is held by one node at a time
//! through a lease on the store. The holder renews it every third of `[node] lease-secs`;
//! the others try to take it at the same pace, so when the holder dies (its lease expires) or
//! drains (it releases them) another registers within a lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::sip::{AccountConfig, SipEndpoint};
use crate::store::{NodeStore, now_ms};

use super::NodeConfig;

/// Registers, of the accounts `accounts` names now and after each change, those this node
/// holds, until aborted.
pub fn spawn(
    store: Arc<dyn NodeStore>,
    config: &NodeConfig,
    mut accounts: watch::Receiver<Vec<AccountConfig>>,
    sip: Arc<SipEndpoint>,
) -> tokio::task::JoinHandle<()> {
    let node = config.id.clone();
    let lease_ms = i64::try_from(config.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000));
    tokio::spawn(async move {
        let mut registered: Option<Vec<AccountConfig>> = None;
        loop {
            let wanted = accounts.borrow_and_update().clone();
            let mut held = Vec::new();
            for account in wanted {
                let now = now_ms();
                match store
                    .hold_account(&account.name, &node, now, now + lease_ms)
                    .await
                {
                    Ok(true) => held.push(account),
                    Ok(false) => {}
                    Err(e) => {
                        // Kept as it was: the lease, if ours, runs a while yet.
                        tracing::warn!(account = %account.name, error = %e, "account lease not renewed");
                        let kept = registered.iter().flatten().find(|a| a.name == account.name);
                        held.extend(kept.cloned());
                    }
                }
            }
            if registered.as_ref() != Some(&held) {
                let names: Vec<&str> = held.iter().map(|a| a.name.as_str()).collect();
                tracing::info!(%node, accounts = ?names, "registration accounts held by this node");
                match sip.set_accounts(held.clone()).await {
                    Ok(()) => registered = Some(held),
                    // Checked when the change was made; only a shutdown gets here.
                    Err(e) => tracing::warn!(error = %e, "registration accounts not applied"),
                }
            }
            tokio::select! {
                changed = accounts.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}
