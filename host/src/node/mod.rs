//! This process as one node among several behind a SIP load balancer: its settings (`[node]`)
//! and its graceful drain.

mod drain;

use serde::Deserialize;

pub use drain::Drain;

/// `[node]`: how this node leaves the cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// How long a drain lets running calls go on by themselves; then each hears
    /// `drain-goodbye` and is hung up.
    #[serde(default = "default_drain_max_secs")]
    pub drain_max_secs: u64,
    /// What the agent says to a call still running when the drain's time is up.
    #[serde(default = "default_drain_goodbye")]
    pub drain_goodbye: String,
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
            drain_max_secs: default_drain_max_secs(),
            drain_goodbye: default_drain_goodbye(),
        }
    }
}
