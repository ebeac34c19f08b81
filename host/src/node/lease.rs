//! The node's lease on the shared store: taken before the first call, renewed every third of
//! `[node] lease-secs`, dropped at a clean shutdown. The same beat looks for peers whose lease
//! has expired and closes their open calls, so a node that died is cleaned up by the others
//! (and only once it has been silent for a whole lease: a slow node is not robbed).

use std::sync::Arc;
use std::time::Duration;

use crate::store::{NodeStore, StoreError, now_ms};

use super::NodeConfig;

/// The task renewing this node's lease.
pub struct Heartbeat {
    store: Arc<dyn NodeStore>,
    node: String,
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Takes the lease (an error here fails the start) and starts renewing it.
    pub async fn start(
        store: Arc<dyn NodeStore>,
        config: &NodeConfig,
    ) -> Result<Heartbeat, StoreError> {
        let node = config.id.clone();
        let lease_ms = i64::try_from(config.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        store.renew_node_lease(&node, now_ms() + lease_ms).await?;
        let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000));
        let task = tokio::spawn(beat(store.clone(), node.clone(), lease_ms, every));
        tracing::info!(%node, lease_secs = config.lease_secs, "node lease taken");
        Ok(Heartbeat { store, node, task })
    }

    /// Stops renewing and drops the lease (the node's calls have ended).
    pub async fn stop(self) {
        self.task.abort();
        if let Err(e) = self.store.release_node_lease(&self.node).await {
            tracing::warn!(node = %self.node, error = %e, "node lease not released; it expires");
        }
    }
}

async fn beat(store: Arc<dyn NodeStore>, node: String, lease_ms: i64, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = store.renew_node_lease(&node, now_ms() + lease_ms).await {
            // Peers take this node for dead once the lease runs out.
            tracing::error!(%node, error = %e, "node lease not renewed");
        }
        match store.close_calls_of_lapsed_nodes(&node, now_ms()).await {
            Ok(0) => {}
            Ok(calls) => tracing::warn!(
                calls,
                "calls of a node whose lease expired are marked ended abnormally"
            ),
            Err(e) => tracing::warn!(error = %e, "looking for lapsed nodes failed"),
        }
    }
}
