//! The live overlay as one document, for export and import (`GET`/`PUT /v1/config/live`): the
//! values changed live, by kind, and the paths whose file value is removed live. Secrets and
//! passwords show as `***`; given back so, they mean "keep the current one".

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::overlay::{MASK, Target, canonical_pattern};
use super::{Change, LiveError};
use crate::store::OverlayEntry;

/// The whole live overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OverlayDocument {
    /// The default agent, when changed live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_agent: Option<String>,
    /// Paths below /v1/config removed live (`routes/2000`, `accounts/pbx`).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Pattern → agent.
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentDocument>,
    /// Name → the account as the file spells it.
    #[serde(default)]
    pub accounts: BTreeMap<String, Value>,
    /// Name → the trunk as the file spells it.
    #[serde(default)]
    pub trunks: BTreeMap<String, Value>,
    /// Name → the webhook as the file spells it (its secret as `***`).
    #[serde(default)]
    pub webhooks: BTreeMap<String, Value>,
    /// `[model]` keys (`provider`, `model`, `voice`, `api-key`).
    #[serde(default)]
    pub model: BTreeMap<String, String>,
}

/// One agent's live settings and secrets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentDocument {
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

impl OverlayDocument {
    /// The document of a stored overlay, secrets masked.
    pub fn of(overlay: &[OverlayEntry]) -> OverlayDocument {
        let mut doc = OverlayDocument::default();
        for entry in overlay {
            let target = Target::of(entry);
            let secret = target.is_secret();
            let Some(value) = entry.value.clone() else {
                doc.removed.push(target.path());
                continue;
            };
            match target {
                Target::Route(pattern) => {
                    doc.routes.insert(pattern, value);
                }
                Target::DefaultAgent => doc.default_agent = Some(value),
                Target::Model(key) => {
                    doc.model
                        .insert(key, if secret { MASK.into() } else { value });
                }
                Target::Setting { agent, key } => {
                    doc.agents
                        .entry(agent)
                        .or_default()
                        .settings
                        .insert(key, value);
                }
                Target::Secret { agent, key } => {
                    doc.agents
                        .entry(agent)
                        .or_default()
                        .secrets
                        .insert(key, MASK.into());
                }
                Target::Account(ref name) | Target::Trunk(ref name) | Target::Webhook(ref name) => {
                    let mut object = target.shown(&value);
                    without_nulls(&mut object);
                    let section = match target {
                        Target::Account(_) => &mut doc.accounts,
                        Target::Webhook(_) => &mut doc.webhooks,
                        _ => &mut doc.trunks,
                    };
                    section.insert(name.clone(), object);
                }
            }
        }
        doc
    }

    /// The changes that make this document the overlay: one per value, `None` for a removed
    /// path. A pattern or path that names nothing, or a target given twice, is refused.
    pub fn changes(&self) -> Result<Vec<Change>, LiveError> {
        let mut out: Vec<(Target, Option<String>, &'static str)> = Vec::new();
        for (pattern, agent) in &self.routes {
            let target = canonical_pattern(pattern)
                .map(Target::Route)
                .ok_or_else(|| {
                    LiveError::invalid("routes", "bad_pattern", format!("bad pattern `{pattern}`"))
                })?;
            out.push((target, Some(agent.clone()), "routes"));
        }
        if let Some(agent) = &self.default_agent {
            out.push((Target::DefaultAgent, Some(agent.clone()), "default-agent"));
        }
        for (agent, values) in &self.agents {
            for (key, value) in &values.settings {
                let target = Target::Setting {
                    agent: agent.clone(),
                    key: key.clone(),
                };
                out.push((target, Some(value.clone()), "agents"));
            }
            for (key, value) in &values.secrets {
                let target = Target::Secret {
                    agent: agent.clone(),
                    key: key.clone(),
                };
                out.push((target, Some(value.clone()), "agents"));
            }
        }
        for (name, account) in &self.accounts {
            let target = Target::Account(name.clone());
            out.push((target, Some(account.to_string()), "accounts"));
        }
        for (name, trunk) in &self.trunks {
            let target = Target::Trunk(name.clone());
            out.push((target, Some(trunk.to_string()), "trunks"));
        }
        for (name, webhook) in &self.webhooks {
            let target = Target::Webhook(name.clone());
            out.push((target, Some(webhook.to_string()), "webhooks"));
        }
        for (key, value) in &self.model {
            let target = Target::Model(key.clone());
            out.push((target, Some(value.clone()), "model"));
        }
        for path in &self.removed {
            let target = Target::of_path(path).ok_or_else(|| {
                LiveError::invalid(
                    "removed",
                    "bad_path",
                    format!("`{path}` names nothing to remove (e.g. routes/2000, trunks/carrier)"),
                )
            })?;
            out.push((target, None, "removed"));
        }
        let mut seen = BTreeSet::new();
        for (target, _, field) in &out {
            if !seen.insert(target.path()) {
                return Err(LiveError::invalid(
                    field,
                    "duplicate_target",
                    format!("`{}` is given twice", target.path()),
                ));
            }
        }
        Ok(out
            .into_iter()
            .map(|(target, value, _)| Change { target, value })
            .collect())
    }
}

/// `value` without its unset fields, at any depth: TOML has no null.
fn without_nulls(value: &mut Value) {
    if let Some(fields) = value.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
        fields.values_mut().for_each(without_nulls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OverlayKind;

    fn entry(kind: OverlayKind, agent: &str, key: &str, value: Option<&str>) -> OverlayEntry {
        OverlayEntry {
            kind,
            agent: agent.into(),
            key: key.into(),
            value: value.map(str::to_string),
            at_ms: 1,
        }
    }

    #[test]
    fn a_document_masks_secrets_and_gives_back_its_changes() {
        let trunk = r#"{"name":"carrier","outbound-proxy":"127.0.0.1:5080","password":"pw",
                        "domain":null,"inbound":{"digest":null}}"#;
        let overlay = [
            entry(OverlayKind::Route, "", "1000", Some("receptionist")),
            entry(OverlayKind::Route, "", "2000", None),
            entry(OverlayKind::Secret, "menu", "crm", Some("s3cret")),
            entry(OverlayKind::Trunk, "", "carrier", Some(trunk)),
        ];
        let doc = OverlayDocument::of(&overlay);
        let text = toml::to_string(&doc).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("\"pw\""),
            "{text}"
        );
        assert_eq!(toml::from_str::<OverlayDocument>(&text).unwrap(), doc);
        assert_eq!(doc.removed, ["routes/2000"]);
        assert_eq!(doc.trunks["carrier"]["password"], MASK);
        assert!(doc.trunks["carrier"].get("domain").is_none());

        let changes = doc.changes().unwrap();
        let paths: Vec<_> = changes.iter().map(|c| c.target.path()).collect();
        assert_eq!(
            paths,
            [
                "routes/1000",
                "agents/menu/secrets/crm",
                "trunks/carrier",
                "routes/2000"
            ]
        );
        assert_eq!(changes[1].value.as_deref(), Some(MASK));
        assert_eq!(changes[3].value, None);

        let twice = OverlayDocument {
            routes: [("+1000".to_string(), "menu".to_string())].into(),
            removed: vec!["routes/1000".into()],
            ..OverlayDocument::default()
        };
        assert!(matches!(
            twice.changes(),
            Err(LiveError::Invalid {
                field: "removed",
                code: "duplicate_target",
                ..
            })
        ));
        let bad = OverlayDocument {
            removed: vec!["nothing/1".into()],
            ..OverlayDocument::default()
        };
        assert!(matches!(
            bad.changes(),
            Err(LiveError::Invalid {
                field: "removed",
                ..
            })
        ));
    }
}
