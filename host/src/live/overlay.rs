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
/// per-agent settings and secrets, registration accounts and trunks, each with its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    pub routes: BTreeMap<String, Sourced>,
    pub default_agent: Option<Sourced>,
    pub agents: BTreeMap<String, AgentValues>,
    /// `[[sip.accounts]]` by name; each value is the account as JSON, password included.
    pub accounts: BTreeMap<String, Sourced>,
    /// `[[sip.trunks]]` by name; each value is the trunk as JSON, passwords included.
    pub trunks: BTreeMap<String, Sourced>,
    /// The `[model]` keys of [`MODEL_KEYS`] that are set.
    pub model: BTreeMap<String, Sourced>,
    /// `[[webhooks]]` by name; each value is the webhook as JSON, secret included.
    pub webhooks: BTreeMap<String, Sourced>,
}

/// The `[model]` keys changed through the API: which provider new calls use, its model and
/// voice, and its API key (write-only).
pub const MODEL_KEYS: [&str; 4] = ["provider", "model", "voice", "api-key"];

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
    /// A trunk, by name.
    Trunk(String),
    /// A key of `[model]` (one of [`MODEL_KEYS`]).
    Model(String),
    /// An outgoing webhook, by name.
    Webhook(String),
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
            Target::Trunk(name) => format!("trunks/{name}"),
            Target::Model(key) => format!("model/{key}"),
            Target::Webhook(name) => format!("webhooks/{name}"),
        }
    }

    /// The target a [`path`](Self::path) names (a route's pattern made canonical); None when
    /// it names none.
    pub fn of_path(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.split('/').collect();
        let named = |name: &str| (!name.is_empty()).then(|| name.to_string());
        match parts.as_slice() {
            ["routes", pattern] => canonical_pattern(pattern).map(Target::Route),
            ["default-agent"] => Some(Target::DefaultAgent),
            ["agents", agent, table, key] if !agent.is_empty() && !key.is_empty() => {
                let (agent, key) = (agent.to_string(), key.to_string());
                match *table {
                    "settings" => Some(Target::Setting { agent, key }),
                    "secrets" => Some(Target::Secret { agent, key }),
                    _ => None,
                }
            }
            ["accounts", name] => named(name).map(Target::Account),
            ["trunks", name] => named(name).map(Target::Trunk),
            ["model", key] => named(key).map(Target::Model),
            ["webhooks", name] => named(name).map(Target::Webhook),
            _ => None,
        }
    }

    fn entry_key(&self) -> (OverlayKind, &str, &str) {
        match self {
            Target::Route(p) => (OverlayKind::Route, "", p),
            Target::DefaultAgent => (OverlayKind::DefaultAgent, "", ""),
            Target::Setting { agent, key } => (OverlayKind::Setting, agent, key),
            Target::Secret { agent, key } => (OverlayKind::Secret, agent, key),
            Target::Account(name) => (OverlayKind::Account, "", name),
            Target::Trunk(name) => (OverlayKind::Trunk, "", name),
            Target::Model(key) => (OverlayKind::Model, "", key),
            Target::Webhook(name) => (OverlayKind::Webhook, "", name),
        }
    }

    pub(super) fn of(entry: &OverlayEntry) -> Target {
        let (agent, key) = (entry.agent.clone(), entry.key.clone());
        match entry.kind {
            OverlayKind::Route => Target::Route(key),
            OverlayKind::DefaultAgent => Target::DefaultAgent,
            OverlayKind::Setting => Target::Setting { agent, key },
            OverlayKind::Secret => Target::Secret { agent, key },
            OverlayKind::Account => Target::Account(key),
            OverlayKind::Trunk => Target::Trunk(key),
            OverlayKind::Model => Target::Model(key),
            OverlayKind::Webhook => Target::Webhook(key),
        }
    }

    /// Whether its value is write-only: an agent's secret, the model's API key.
    pub fn is_secret(&self) -> bool {
        match self {
            Target::Secret { .. } => true,
            Target::Model(key) => key == "api-key",
            _ => false,
        }
    }

    /// A value of this target as the API and the audit show it: secrets as `***`, an account
    /// or a trunk as its object with its passwords as `***`.
    pub fn shown(&self, value: &str) -> Value {
        match self {
            _ if self.is_secret() => json!(MASK),
            Target::Account(_) | Target::Trunk(_) | Target::Webhook(_) => {
                let mut object = serde_json::from_str(value).unwrap_or(Value::Null);
                mask_passwords(&mut object);
                object
            }
            _ => json!(value),
        }
    }
}

/// How a secret is shown; given back in a PUT or an import it means "keep the current one".
pub const MASK: &str = "***";

/// The keys whose values are write-only in a stored entry: an account's or trunk's passwords,
/// a webhook's signing secret.
pub const SECRET_KEYS: [&str; 2] = ["password", "secret"];

/// Every password or secret set in `value` (an account, a trunk and its `inbound.digest`, a
/// webhook) as `***`.
fn mask_passwords(value: &mut Value) {
    if let Some(object) = value.as_object_mut() {
        for (key, v) in object.iter_mut() {
            if SECRET_KEYS.contains(&key.as_str()) && !v.is_null() {
                *v = json!(MASK);
            } else {
                mask_passwords(v);
            }
        }
    }
}

/// `body` with the passwords (and secrets) it leaves out or gives as `***` taken from `before`
/// at the same place, so a client never has to know a password to change the rest. One given as `***`
/// with none before stays `***`, for the caller's check to refuse.
pub fn keep_passwords(body: &mut Value, before: &Value) {
    let (Some(object), Some(old)) = (body.as_object_mut(), before.as_object()) else {
        return;
    };
    for secret in SECRET_KEYS {
        let kept = old.get(secret).filter(|p| !p.is_null());
        match (object.get(secret), kept) {
            (None, Some(p)) => {
                object.insert(secret.into(), p.clone());
            }
            (Some(given), Some(p)) if *given == json!(MASK) => {
                object.insert(secret.into(), p.clone());
            }
            _ => {}
        }
    }
    for (key, v) in object.iter_mut() {
        if let Some(old_v) = old.get(key) {
            keep_passwords(v, old_v);
        }
    }
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
            Target::Trunk(name) => self.trunks.get(name),
            Target::Model(key) => self.model.get(key),
            Target::Webhook(name) => self.webhooks.get(name),
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
            Target::Trunk(name) => slot(&mut self.trunks, name),
            Target::Model(key) => slot(&mut self.model, key),
            Target::Webhook(name) => slot(&mut self.webhooks, name),
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
                "value": if secret { MASK } else { s.value.as_str() },
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
                "value": Target::Account(name.clone()).shown(&s.value),
                "source": s.source,
            }))).collect::<serde_json::Map<_, _>>(),
            "trunks": self.trunks.iter().map(|(name, s)| (name.clone(), json!({
                "value": Target::Trunk(name.clone()).shown(&s.value),
                "source": s.source,
            }))).collect::<serde_json::Map<_, _>>(),
            "webhooks": self.webhooks.iter().map(|(name, s)| (name.clone(), json!({
                "value": Target::Webhook(name.clone()).shown(&s.value),
                "source": s.source,
            }))).collect::<serde_json::Map<_, _>>(),
            "model": self.model.iter().map(|(key, s)| {
                (key.clone(), shown(s, Target::Model(key.clone()).is_secret()))
            }).collect::<serde_json::Map<_, _>>(),
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

    #[test]
    fn passwords_are_masked_and_kept_where_left_out() {
        let stored = json!({"name": "t", "password": "pw",
                            "inbound": {"digest": {"realm": "r", "user": "u", "password": "in"}}});
        let shown = Target::Trunk("t".into()).shown(&stored.to_string());
        assert_eq!(shown["password"], MASK);
        assert_eq!(shown["inbound"]["digest"]["password"], MASK);
        assert!(!shown.to_string().contains("\"pw\""), "{shown}");

        let mut body = json!({"name": "t", "password": MASK,
                              "inbound": {"digest": {"realm": "r", "user": "u"}}});
        keep_passwords(&mut body, &stored);
        assert_eq!(body, stored);
        let mut new = json!({"password": "new"});
        keep_passwords(&mut new, &stored);
        assert_eq!(new["password"], "new");
        let mut none = json!({"password": MASK});
        keep_passwords(&mut none, &json!({}));
        assert_eq!(none["password"], MASK);
    }

    #[test]
    fn paths_name_their_targets() {
        for target in [
            Target::Route("4930*".into()),
            Target::DefaultAgent,
            Target::Setting {
                agent: "menu".into(),
                key: "address".into(),
            },
            Target::Secret {
                agent: "menu".into(),
                key: "crm".into(),
            },
            Target::Account("pbx".into()),
            Target::Trunk("carrier".into()),
            Target::Model("api-key".into()),
        ] {
            assert_eq!(Target::of_path(&target.path()), Some(target));
        }
        assert_eq!(
            Target::of_path("routes/+49 30*"),
            Some(Target::Route("4930*".into()))
        );
        for bad in ["routes", "trunks/", "agents/menu/other/k", "nothing/x", ""] {
            assert_eq!(Target::of_path(bad), None, "{bad}");
        }
    }
}
