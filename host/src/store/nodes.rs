//! Several nodes on one store: each node's claim on its id, and its lease, which it renews
//! while it lives. A node's open calls are closed by the node itself when it starts again, or
//! by a peer once the lease has expired (see `crate::node`).

use async_trait::async_trait;

use super::Result;

/// Node identity and leases, on the store all nodes share.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// Makes this process the only live holder of `node` on the store, for as long as the
    /// store is open: on Postgres a session advisory lock on a connection of its own (a second
    /// process gets [`super::StoreError::NodeTaken`]); on SQLite nothing, the data folder's
    /// lock already keeps a second process out.
    async fn claim_node(&self, node: &str) -> Result<()>;
    /// `node` is alive until `expires_at_ms` (created or extended).
    async fn renew_node_lease(&self, node: &str, expires_at_ms: i64) -> Result<()>;
    /// `node` leaves (a clean shutdown, its calls ended): its lease is dropped.
    async fn release_node_lease(&self, node: &str) -> Result<()>;
    /// Closes as ended abnormally ("node lost") the active calls of every node other than
    /// `alive` that holds no lease still running at `now_ms` (expired, or released), ended at
    /// their last recorded activity. Calls recorded without a node are left to
    /// [`close_abandoned_calls`](super::CallStore::close_abandoned_calls). Returns how many.
    async fn close_calls_of_lapsed_nodes(&self, alive: &str, now_ms: i64) -> Result<u64>;
    /// Takes or renews registration account `account` for `node` until `expires_at_ms`, in one
    /// statement: granted when no node holds it, `node` already does, or the holder's lease
    /// expired before `now_ms`. Whether `node` holds it now.
    async fn hold_account(
        &self,
        account: &str,
        node: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool>;
    /// `node` lets go of every account it holds (it drains or stops).
    async fn release_accounts(&self, node: &str) -> Result<()>;
}
