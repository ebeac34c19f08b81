//! The records of the live configuration overlay (changes made through the API over the
//! configuration file) and of its audit trail. The store keeps them; `crate::live` decides
//! what they mean.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an overlay entry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlayKind {
    /// `[routes]`: key is the pattern, value the agent.
    Route,
    /// `[agents] default`: key is empty.
    DefaultAgent,
    /// `[agent.<agent>.config]`.
    Setting,
    /// `[agent.<agent>.secrets]`.
    Secret,
    /// `[[sip.accounts]]`: key is the account's name, value the account as JSON (with its
    /// password, as the file has it).
    Account,
    /// `[[sip.trunks]]`: key is the trunk's name, value the trunk as JSON (with its
    /// passwords, as the file has them).
    Trunk,
    /// `[[webhooks]]`: key is the webhook's name, value the webhook as JSON (with its secret,
    /// as the file has it).
    Webhook,
    /// `[model]`: key is one of the keys the API changes (`provider`, `model`, `voice`,
    /// `api-key`).
    Model,
}

impl OverlayKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlayKind::Route => "route",
            OverlayKind::DefaultAgent => "default-agent",
            OverlayKind::Setting => "setting",
            OverlayKind::Secret => "secret",
            OverlayKind::Account => "account",
            OverlayKind::Trunk => "trunk",
            OverlayKind::Webhook => "webhook",
            OverlayKind::Model => "model",
        }
    }

    pub fn parse(text: &str) -> Option<OverlayKind> {
        [
            OverlayKind::Route,
            OverlayKind::DefaultAgent,
            OverlayKind::Setting,
            OverlayKind::Secret,
            OverlayKind::Account,
            OverlayKind::Trunk,
            OverlayKind::Webhook,
            OverlayKind::Model,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One live value. `value: None` removes the file's value (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayEntry {
    pub kind: OverlayKind,
    /// The agent of a setting or secret; empty otherwise.
    pub agent: String,
    pub key: String,
    pub value: Option<String>,
    pub at_ms: i64,
}

/// One audited change, as listed (newest first) and sent on the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: i64,
    /// The token's name, or "loopback".
    pub who: String,
    /// "set", "delete" or "import".
    pub action: String,
    /// What changed, as its API path below /v1/config (e.g. `routes/1000`; `live` for an
    /// import).
    pub target: String,
    /// The value before and after (null when absent; secrets as "***").
    pub before: Value,
    pub after: Value,
}

/// What a change does to the stored overlay.
#[derive(Debug, Clone, PartialEq)]
pub enum OverlayWrite {
    /// Store `entry`, or with `forget` drop it (the file's value, if any, shows again).
    One { entry: OverlayEntry, forget: bool },
    /// Replace the whole overlay with these entries (an import).
    All(Vec<OverlayEntry>),
}

/// A change to store in one transaction: what it does to the overlay and its audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub write: OverlayWrite,
    pub at_ms: i64,
    pub who: String,
    pub action: String,
    pub target: String,
    pub before: Value,
    pub after: Value,
}
