//! This process as one node among several behind a SIP load balancer, on one shared store: its
//! settings (`[node]`), its lease on the store, the registration accounts it holds, and its
//! graceful drain.

pub mod accounts;
mod drain;
mod lease;

use serde::Deserialize;

pub use drain::Drain;
pub use lease::Heartbeat;

/// `[node]`: who this node is on the shared store, and how it leaves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// The node's name on the store: its calls carry it, its lease and its lock are taken
    /// under it. Unique among the nodes, and the same across restarts (the host name unless
    /// set), so a restarted node finds the calls it left open.
    #[serde(default = "hostname")]
    pub id: String,
    /// How long the node's lease (and its hold on registration accounts) lasts unrenewed: a
    /// peer closes the open calls of a node whose lease has expired, and takes over its
    /// accounts. The node renews them every third of this.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// How long a drain lets running calls go on by themselves; then each hears
    /// `drain-goodbye` and is hung up.
    #[serde(default = "default_drain_max_secs")]
    pub drain_max_secs: u64,
    /// What the agent says to a call still running when the drain's time is up.
    #[serde(default = "default_drain_goodbye")]
    pub drain_goodbye: String,
}

/// This machine's host name ("host" when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

fn default_lease_secs() -> u64 {
    15
}

fn default_drain_max_secs() -> u64 {
    300
}

fn default_drain_goodbye() -> String {
    "I am sorry, I have to end this call now. Please call again. Goodbye.".into()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: hostname(),
            lease_secs: default_lease_secs(),
            drain_max_secs: default_drain_max_secs(),
            drain_goodbye: default_drain_goodbye(),
        }
    }
}

impl NodeConfig {
    /// The settings a node cannot run with.
    pub fn check(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("[node] id is empty".into());
        }
        if self.lease_secs < 3 {
            return Err(format!(
                "[node] lease-secs = {} is too short (at least 3: it is renewed every third)",
                self.lease_secs
            ));
        }
        Ok(())
    }
}
