//! Whether this node is draining: set once (SIGTERM or `POST /v1/admin/drain`), read by the
//! readiness probe and awaited by the process's main loop, which then winds the node down.

use tokio_util::sync::CancellationToken;

/// The node's drain flag. Clones share it; it is never cleared (a drained node exits).
#[derive(Debug, Clone, Default)]
pub struct Drain {
    requested: CancellationToken,
}

impl Drain {
    /// Starts the drain; true the first time, false when it had already started.
    pub fn start(&self) -> bool {
        let first = !self.requested.is_cancelled();
        self.requested.cancel();
        if first {
            tracing::info!("drain requested: new calls are refused, running calls go on");
        }
        first
    }

    pub fn is_draining(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// Returns once the drain has started.
    pub async fn requested(&self) {
        self.requested.cancelled().await
    }
}
