//! The layering itself, pure: the file's values (with environment overrides) as a base, the
//! live overlay from the store over them, and what one change does to the overlay.
//! Precedence: file < live change; values set by the environment are not editable.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::plugins::routing::Pattern;
use crate::store::{OverlayEntry, OverlayKind};

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    File,
    Environment,
    Live,
}

/// A value and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    pub value: String,
    pub source: Source,
    /// The variable that set it, for [`Source::Environment`].
    pub variable: Option<String>,
}

impl Sourced {
    pub fn file(value: &str) -> Self {
        Sourced {
            value: value.into(),
            source: Source::File,
            variable: None,
        }
    }

    pub fn environment(value: &str, variable: &str) -> Self {
        Sourced {
            value: value.into(),
            source: Source::Environment,
            variable: Some(variable.into()),
        }
    }

    fn live(value: &str) -> Self {
        Sourced {
            value: value.into(),
            source: Source::Live,
            variable: None,
        }
    }
}

/// One agent's settings and secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentValues {
    pub settings: BTreeMap<String, Sourced>,
    pub secrets: BTreeMap<String, Sourced>,
}

/// The editable part of the configuration: routes (by canonical pattern), the default agent,
/// per-agent settings and secrets, and registration accounts, each with its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    pub routes: BTreeMap<String, Sourced>,
    pub default_agent: Option<Sourced>,
    pub agents: BTreeMap<String, AgentValues>,
    /// `[[sip.accounts]]` by name; each value is the account as JSON, password included.
    pub accounts: BTreeMap<String, Sourced>,
}

/// What a change is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A canonical pattern (see [`canonical_pattern`]).
    Route(String),
    DefaultAgent,
    Setting {
        agent: String,
        key: String,
    },
    Secret {
        agent: String,
        key: String,
    },
    /// A registration account, by name.
    Account(String),
}

impl Target {
    /// The path below /v1/config naming it, in the audit.
    pub fn path(&self) -> String {
        match self {
            Target::Route(p) => format!("routes/{p}"),
            Target::DefaultAgent => "default-agent".into(),
            Target::Setting { agent, key } => format!("agents/{agent}/settings/{key}"),
            Target::Secret { agent, key } => format!("agents/{agent}/secrets/{key}"),
            Target::Account(name) => format!("accounts/{name}"),
        }
    }

    fn entry_key(&self) -> (OverlayKind, &str, &str) {
        match self {
            Target::Route(p) => (OverlayKind::Route, "", p),
            Target::DefaultAgent => (OverlayKind::DefaultAgent, "", ""),
            Target::Setting { agent, key } => (OverlayKind::Setting, agent, key),
            Target::Secret { agent, key } => (OverlayKind::Secret, agent, key),
            Target::Account(name) => (OverlayKind::Account, "", name),
        }
    }

    fn of(entry: &OverlayEntry) -> Target {
        let (agent, key) = (entry.agent.clone(), entry.key.clone());
        match entry.kind {
            OverlayKind::Route => Target::Route(key),
            OverlayKind::DefaultAgent => Target::DefaultAgent,
            OverlayKind::Setting => Target::Setting { agent, key },
            OverlayKind::Secret => Target::Secret { agent, key },
            OverlayKind::Account => Target::Account(key),
        }
    }

    /// A value of this target as the API and the audit show it: secrets as `***`, an account
    /// as its object with the password as `***`.
    pub fn shown(&self, value: &str) -> Value {
        match self {
            Target::Secret { .. } => json!("***"),
            Target::Account(_) => masked_account(value),
            _ => json!(value),
        }
    }
}

/// An account's JSON with its password (when set) as `***`.
fn masked_account(text: &str) -> Value {
    let mut account: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if let Some(password) = account.get_mut("password").filter(|p| !p.is_null()) {
        *password = json!("***");
    }
    account
}

/// The canonical form of a route pattern (`+49 30*` → `4930*`), so `1000` and `+1000` are one
/// key; None when it is no pattern.
pub fn canonical_pattern(text: &str) -> Option<String> {
    Pattern::parse(text).ok().map(|p| p.to_string())
}

impl Layers {
    pub fn get(&self, target: &Target) -> Option<&Sourced> {
        match target {
            Target::Route(p) => self.routes.get(p),
            Target::DefaultAgent => self.default_agent.as_ref(),
            Target::Setting { agent, key } => self.agents.get(agent)?.settings.get(key),
            Target::Secret { agent, key } => self.agents.get(agent)?.secrets.get(key),
            Target::Account(name) => self.accounts.get(name),
        }
    }

    fn set(&mut self, target: &Target, value: Option<Sourced>) {
        let slot = |map: &mut BTreeMap<String, Sourced>, key: &str| match &value {
            Some(v) => {
                map.insert(key.to_string(), v.clone());
            }
            None => {
                map.remove(key);
            }
        };
        match target {
            Target::Route(p) => slot(&mut self.routes, p),
            Target::DefaultAgent => self.default_agent = value.clone(),
            Target::Setting { agent, key } => slot(
                &mut self.agents.entry(agent.clone()).or_default().settings,
                key,
            ),
            Target::Secret { agent, key } => slot(
                &mut self.agents.entry(agent.clone()).or_default().secrets,
                key,
            ),
            Target::Account(name) => slot(&mut self.accounts, name),
        }
        self.agents
            .retain(|_, a| !a.settings.is_empty() || !a.secrets.is_empty());
    }

    /// These layers with `overlay` applied over them.
    pub fn with_overlay(&self, overlay: &[OverlayEntry]) -> Layers {
        let mut out = self.clone();
        for entry in overlay {
            out.set(
                &Target::of(entry),
                entry.value.as_deref().map(Sourced::live),
            );
        }
        out
    }

    /// The JSON of `GET /v1/config/effective`: secrets and passwords as `***`, each value with
    /// its source.
    pub fn to_json(&self) -> Value {
        let shown = |s: &Sourced, secret: bool| {
            let mut v = json!({
                "value": if secret { "***" } else { s.value.as_str() },
                "source": s.source,
            });
            if let Some(var) = &s.variable {
                v["variable"] = json!(var);
            }
            v
        };
        let map = |m: &BTreeMap<String, Sourced>, secret: bool| -> Value {
            m.iter()
                .map(|(k, s)| (k.clone(), shown(s, secret)))
                .collect()
        };
        let route = |s: &Sourced| {
            let mut v = json!({"agent": s.value, "source": s.source});
            if let Some(var) = &s.variable {
                v["variable"] = json!(var);
            }
            v
        };
        json!({
            "routes": self.routes.iter().map(|(p, s)| (p.clone(), route(s))).collect::<serde_json::Map<_, _>>(),
            "default_agent": self.default_agent.as_ref().map(|s| shown(s, false)),
            "agents": self.agents.iter().map(|(name, a)| (name.clone(), json!({
                "settings": map(&a.settings, false),
                "secrets": map(&a.secrets, true),
            }))).collect::<serde_json::Map<_, _>>(),
            "accounts": self.accounts.iter().map(|(name, s)| (name.clone(), json!({
                "value": masked_account(&s.value),
                "source": s.source,
            }))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// What storing `value` (None: deleting) at `target` does to the overlay: the entry to store,
/// or to forget when the target is live-only and deleted (no tombstone needed). `base` is the
/// file's layers, `now` the layers with the current overlay.
pub fn entry_for(
    base: &Layers,
    target: &Target,
    value: Option<&str>,
    at_ms: i64,
) -> (OverlayEntry, bool) {
    let (kind, agent, key) = target.entry_key();
    let entry = OverlayEntry {
        kind,
        agent: agent.to_string(),
        key: key.to_string(),
        value: value.map(str::to_string),
        at_ms,
    };
    // Deleting what the file does not have: drop the entry instead of hiding nothing.
    let forget = value.is_none() && base.get(target).is_none();
    (entry, forget)
}

/// `overlay` with `entry` stored (or forgotten).
pub fn updated(overlay: &[OverlayEntry], entry: &OverlayEntry, forget: bool) -> Vec<OverlayEntry> {
    let same =
        |e: &OverlayEntry| e.kind == entry.kind && e.agent == entry.agent && e.key == entry.key;
    let mut out: Vec<OverlayEntry> = overlay.iter().filter(|e| !same(e)).cloned().collect();
    if !forget {
        out.push(entry.clone());
    }
    out.sort_by(|a, b| (a.kind, &a.agent, &a.key).cmp(&(b.kind, &b.agent, &b.key)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Layers {
        let mut b = Layers::default();
        b.routes.insert("1000".into(), Sourced::file("menu"));
        b.routes.insert(
            "2000".into(),
            Sourced::environment("receptionist", "SWITCHBOARD__ROUTES__2000"),
        );
        b.default_agent = Some(Sourced::file("menu"));
        let menu = b.agents.entry("menu".into()).or_default();
        menu.settings
            .insert("address".into(), Sourced::file("Main St 1"));
        menu.secrets
            .insert("crm".into(), Sourced::file("file-secret"));
        b
    }

    fn route(p: &str) -> Target {
        Target::Route(p.into())
    }

    #[test]
    fn live_changes_win_over_the_file_and_deletes_hide_it() {
        let base = base();
        let mut overlay = Vec::new();
        for (target, value) in [
            (route("1000"), Some("receptionist")),
            (route("3000"), Some("appointments")),
            (
                Target::Secret {
                    agent: "menu".into(),
                    key: "crm".into(),
                },
                Some("live-secret"),
            ),
            (
                Target::Setting {
                    agent: "menu".into(),
                    key: "address".into(),
                },
                None,
            ),
        ] {
            let (entry, forget) = entry_for(&base, &target, value, 1);
            assert!(!forget);
            overlay = updated(&overlay, &entry, forget);
        }
        let eff = base.with_overlay(&overlay);
        assert_eq!(eff.routes["1000"].value, "receptionist");
        assert_eq!(eff.routes["1000"].source, Source::Live);
        assert_eq!(eff.routes["2000"].source, Source::Environment);
        assert_eq!(eff.routes["3000"].source, Source::Live);
        assert_eq!(eff.default_agent.as_ref().unwrap().source, Source::File);
        assert!(!eff.agents["menu"].settings.contains_key("address"));
        assert_eq!(eff.agents["menu"].secrets["crm"].value, "live-secret");

        // Deleting a live-only route forgets its entry: nothing is left behind.
        let (entry, forget) = entry_for(&base, &route("3000"), None, 2);
        assert!(forget);
        overlay = updated(&overlay, &entry, forget);
        assert!(!base.with_overlay(&overlay).routes.contains_key("3000"));
        assert_eq!(overlay.len(), 3);
        // Deleting a file route leaves a tombstone.
        let (entry, forget) = entry_for(&base, &route("1000"), None, 3);
        assert!(!forget && entry.value.is_none());
        overlay = updated(&overlay, &entry, forget);
        assert!(!base.with_overlay(&overlay).routes.contains_key("1000"));
    }

    #[test]
    fn the_json_masks_secrets_and_names_sources() {
        let v = base().to_json();
        let text = v.to_string();
        assert!(!text.contains("file-secret"), "{text}");
        assert_eq!(v["agents"]["menu"]["secrets"]["crm"]["value"], "***");
        assert_eq!(
            v["routes"]["1000"],
            json!({"agent": "menu", "source": "file"})
        );
        assert_eq!(v["routes"]["2000"]["variable"], "SWITCHBOARD__ROUTES__2000");
        assert_eq!(v["default_agent"]["value"], "menu");
        assert_eq!(canonical_pattern("+49 30*").as_deref(), Some("4930*"));
        assert_eq!(canonical_pattern("12a!"), None);
    }
}
