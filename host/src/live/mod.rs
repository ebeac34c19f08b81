//! Live configuration: routes, the default agent, per-agent settings and secrets and the SIP
//! registration accounts changed through the API while calls run. The file's values (with environment overrides) are the
//! base, the store keeps the live overlay over them ([`overlay`]), and every change is
//! validated with the start-up rules, stored with its audit record, applied to the registry
//! at once (accounts through [`LiveConfig::accounts`], which the host hands to the SIP
//! endpoint) and announced to subscribers. Writes are serialised and need the ETag of the
//! effective configuration they were based on.

pub mod overlay;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, broadcast, watch};

use crate::config::Config;
use crate::plugins::routing::{RouteError, RouteSource};
use crate::plugins::runtime::secret_variable;
use crate::plugins::{AgentSettings, Registry};
use crate::sip::{ACCOUNT_FIELDS, AccountConfig, SipError, TrunkConfig, check_accounts};
use crate::store::{AuditRecord, CallStore, ConfigChange, OverlayEntry, StoreError, now_ms};
pub use overlay::{Layers, Source, Sourced, Target};

/// Longest value a setting or secret may have.
pub const MAX_VALUE: usize = 4096;

/// Why a change was refused (nothing changed then).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("If-Match is missing: send the ETag of GET /v1/config/effective")]
    PreconditionRequired,
    #[error("the configuration changed since ETag {given}; the current one is {current}")]
    Stale { given: String, current: String },
    /// A value the start-up rules refuse; `field` is the request field at fault.
    #[error("{message}")]
    Invalid {
        field: &'static str,
        code: &'static str,
        message: String,
    },
    #[error("{what} is set by the environment variable {variable}; change it there")]
    FromEnvironment { what: String, variable: String },
    #[error("{0} is not set")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LiveError {
    fn invalid(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        LiveError::Invalid {
            field,
            code,
            message: message.into(),
        }
    }
}

/// One requested change: `value` None deletes.
#[derive(Debug, Clone)]
pub struct Change {
    pub target: Target,
    pub value: Option<String>,
}

/// The live configuration of one host.
pub struct LiveConfig {
    /// The file's values with environment overrides.
    base: Layers,
    /// `[agent.<name>]` as in the file (for `record`, which the API does not change).
    file_settings: BTreeMap<String, AgentSettings>,
    /// `[[sip.trunks]]`, whose names accounts may not take.
    trunks: Vec<TrunkConfig>,
    /// The effective registration accounts.
    accounts: watch::Sender<Vec<AccountConfig>>,
    store: Arc<dyn CallStore>,
    registry: Arc<Registry>,
    /// The overlay as stored; the lock serialises changes.
    overlay: Mutex<Vec<OverlayEntry>>,
    changes: broadcast::Sender<AuditRecord>,
}

impl LiveConfig {
    /// Read the overlay from the store and apply it over the file's values. A stored route
    /// that no longer fits (an agent's manifest now claims its number) is logged and the
    /// file's routes stay; so do the file's accounts when a stored one no longer fits (a trunk
    /// in the file took its name).
    pub async fn start(
        config: &Config,
        store: Arc<dyn CallStore>,
        registry: Arc<Registry>,
    ) -> Result<Arc<LiveConfig>, StoreError> {
        let live = LiveConfig {
            base: base_layers(config, &registry),
            file_settings: config.agent.clone(),
            trunks: config.sip.trunks.clone(),
            accounts: watch::channel(config.sip.accounts.clone()).0,
            overlay: Mutex::new(store.config_overlay().await?),
            store,
            registry,
            changes: broadcast::channel(64).0,
        };
        let overlay = live.overlay.lock().await.clone();
        if !overlay.is_empty() {
            let layers = live.base.with_overlay(&overlay);
            if let Err(e) = live.apply_routes(&layers).await {
                tracing::error!(error = %e, "the stored live routes do not fit; the file's routes stay");
            }
            live.registry.set_settings(live.settings_of(&layers)).await;
            let accounts = accounts_of(&layers);
            match check_accounts(&accounts, &live.trunks) {
                Ok(()) => {
                    live.accounts.send_replace(accounts);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stored live accounts do not fit; the file's accounts stay");
                }
            }
            tracing::info!(entries = overlay.len(), "live configuration applied");
        }
        Ok(Arc::new(live))
    }

    /// The effective configuration as JSON (secrets masked) and its ETag.
    pub async fn effective(&self) -> (Value, String) {
        let overlay = self.overlay.lock().await;
        let body = self.base.with_overlay(&overlay).to_json();
        let etag = etag_of(&body);
        (body, etag)
    }

    /// The effective registration accounts, now and after each change, for the SIP endpoint
    /// to register.
    pub fn accounts(&self) -> watch::Receiver<Vec<AccountConfig>> {
        self.accounts.subscribe()
    }

    /// Every change as it is made.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditRecord> {
        self.changes.subscribe()
    }

    /// The latest changes, newest first.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.config_audit(limit).await
    }

    /// Validate, store (with its audit record by `who`) and apply `change`, if `if_match` is
    /// the current ETag.
    pub async fn change(
        &self,
        who: &str,
        if_match: Option<&str>,
        change: Change,
    ) -> Result<AuditRecord, LiveError> {
        let mut overlay = self.overlay.lock().await;
        let now = self.base.with_overlay(&overlay);
        let given = if_match.ok_or(LiveError::PreconditionRequired)?;
        let current = etag_of(&now.to_json());
        if given.trim() != current {
            return Err(LiveError::Stale {
                given: given.into(),
                current,
            });
        }
        let target = &change.target;
        self.check_editable(target)?;
        let before = now.get(target).cloned();
        let change = match (target, change.value) {
            (Target::Account(name), Some(body)) => Change {
                value: Some(account_json(name, &body, before.as_ref())?),
                target: change.target,
            },
            (_, value) => Change {
                target: change.target,
                value,
            },
        };
        let target = &change.target;
        if change.value.is_none() && before.is_none() {
            return Err(LiveError::NotFound(target.path()));
        }
        let (entry, forget) =
            overlay::entry_for(&self.base, target, change.value.as_deref(), now_ms());
        let next_overlay = overlay::updated(&overlay, &entry, forget);
        let next = self.base.with_overlay(&next_overlay);
        self.validate(&change, &next)?;
        let shown = |s: Option<&Sourced>| s.map_or(Value::Null, |s| target.shown(&s.value));
        let record = self
            .store
            .record_config_change(ConfigChange {
                entry,
                forget,
                who: who.into(),
                action: if change.value.is_some() {
                    "set"
                } else {
                    "delete"
                }
                .into(),
                target: target.path(),
                before: shown(before.as_ref()),
                after: shown(next.get(target)),
            })
            .await?;
        match target {
            Target::Route(_) | Target::DefaultAgent => {
                if let Err(e) = self.apply_routes(&next).await {
                    // Only an agent reloaded since the check can get here.
                    tracing::error!(error = %e, "a stored route change could not be applied");
                }
            }
            Target::Setting { .. } | Target::Secret { .. } => {
                self.registry.set_settings(self.settings_of(&next)).await;
            }
            Target::Account(_) => {
                self.accounts.send_replace(accounts_of(&next));
            }
        }
        *overlay = next_overlay;
        tracing::info!(who, target = %record.target, action = %record.action, "configuration changed");
        let _ = self.changes.send(record.clone());
        Ok(record)
    }

    /// Values set by the environment are not editable here.
    fn check_editable(&self, target: &Target) -> Result<(), LiveError> {
        let from_env = self
            .base
            .get(target)
            .filter(|s| s.source == Source::Environment);
        let variable = match (from_env, target) {
            (Some(s), _) => s.variable.clone(),
            (None, Target::Secret { agent, key }) => {
                let var = secret_variable(agent, key);
                std::env::var(&var).ok().map(|_| var)
            }
            _ => None,
        };
        match variable {
            Some(variable) => Err(LiveError::FromEnvironment {
                what: target.path(),
                variable,
            }),
            None => Ok(()),
        }
    }

    /// The start-up rules, for the layers a change would give.
    fn validate(&self, change: &Change, next: &Layers) -> Result<(), LiveError> {
        let snap = self.registry.snapshot();
        let loaded = |agent: &str, field: &'static str| {
            snap.agents.get(agent).cloned().ok_or_else(|| {
                let known: Vec<&str> = snap.agents.keys().map(String::as_str).collect();
                LiveError::invalid(
                    field,
                    "unknown_agent",
                    format!(
                        "no agent `{agent}` is loaded (loaded: {})",
                        known.join(", ")
                    ),
                )
            })
        };
        match (&change.target, &change.value) {
            (Target::Route(_) | Target::DefaultAgent, Some(agent)) => {
                loaded(agent, "agent")?;
            }
            (Target::Setting { agent, key }, value) | (Target::Secret { agent, key }, value) => {
                let version = loaded(agent, "name")?;
                let caps = &version.manifest().capabilities;
                let (declared, table) = match change.target {
                    Target::Secret { .. } => (&caps.secrets, "secrets"),
                    _ => (&caps.config, "config"),
                };
                if !declared.contains(key) {
                    return Err(LiveError::invalid(
                        "key",
                        "unknown_key",
                        format!(
                            "`{agent}` does not declare `{key}` in its manifest's [capabilities] \
                             {table} (declared: {})",
                            declared.join(", ")
                        ),
                    ));
                }
                if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
                    return Err(LiveError::invalid(
                        "value",
                        "field_too_large",
                        format!("the value is over {MAX_VALUE} bytes"),
                    ));
                }
            }
            (Target::Account(_), _) => {
                check_accounts(&accounts_of(next), &self.trunks).map_err(|e| match e {
                    SipError::Account { field, .. } => {
                        LiveError::invalid(field, "bad_account", e.to_string())
                    }
                    other => LiveError::invalid("account", "bad_account", other.to_string()),
                })?;
            }
            _ => {}
        }
        if matches!(change.target, Target::Route(_) | Target::DefaultAgent) {
            let (routes, default) = route_list(next);
            self.registry
                .check_routes(&routes, default)
                .map_err(|e| match e {
                    RouteError::BadNumber(_) => {
                        LiveError::invalid("pattern", "bad_pattern", e.to_string())
                    }
                    RouteError::Conflict { .. } => {
                        LiveError::invalid("pattern", "route_conflict", e.to_string())
                    }
                })?;
        }
        Ok(())
    }

    async fn apply_routes(&self, layers: &Layers) -> Result<(), RouteError> {
        let (routes, default) = route_list(layers);
        self.registry.set_routes(&routes, default).await
    }

    /// `[agent.<name>]` with the effective settings and secrets.
    fn settings_of(&self, layers: &Layers) -> BTreeMap<String, AgentSettings> {
        let mut out = self.file_settings.clone();
        for s in out.values_mut() {
            s.config.clear();
            s.secrets.clear();
        }
        for (name, values) in &layers.agents {
            let s = out.entry(name.clone()).or_default();
            let plain = |m: &BTreeMap<String, Sourced>| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect()
            };
            s.config = plain(&values.settings);
            s.secrets = plain(&values.secrets);
        }
        out
    }
}

/// The registration accounts of `layers`. Stored ones were checked when written; one that no
/// longer reads is logged and left out.
fn accounts_of(layers: &Layers) -> Vec<AccountConfig> {
    layers
        .accounts
        .iter()
        .filter_map(|(name, s)| match serde_json::from_str(&s.value) {
            Ok(account) => Some(account),
            Err(e) => {
                tracing::error!(account = %name, error = %e, "a stored account does not read; left out");
                None
            }
        })
        .collect()
}

/// The account a PUT body (JSON, the file's field names) describes, as stored: `name` from
/// the path, the password kept from `before` when the body leaves it out. A refused body
/// names the field at fault.
fn account_json(name: &str, body: &str, before: Option<&Sourced>) -> Result<String, LiveError> {
    let refused =
        |field: &'static str, message: String| LiveError::invalid(field, "bad_account", message);
    let mut value: Value = serde_json::from_str(body)
        .map_err(|e| refused("account", format!("the account is not JSON: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(refused("account", "the account is a JSON object".into()));
    };
    if fields.get("name").is_some_and(|n| *n != name) {
        return Err(refused(
            "name",
            format!("the body names another account than `{name}`"),
        ));
    }
    fields.insert("name".into(), json!(name));
    if !fields.contains_key("password") {
        let kept = before
            .and_then(|b| serde_json::from_str::<Value>(&b.value).ok())
            .and_then(|old| old.get("password").cloned());
        if let Some(password) = kept {
            fields.insert("password".into(), password);
        }
    }
    let account: AccountConfig = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing field has no path; its name is in the message.
        let field = ACCOUNT_FIELDS
            .into_iter()
            .find(|f| *f == path || message.starts_with(&format!("missing field `{f}`")))
            .unwrap_or("account");
        refused(field, format!("{field}: {message}"))
    })?;
    serde_json::to_string(&account).map_err(|e| refused("account", e.to_string()))
}

/// The routes and default agent as the registry takes them.
fn route_list(layers: &Layers) -> (Vec<(String, String, RouteSource)>, Option<String>) {
    let routes = layers
        .routes
        .iter()
        .map(|(pattern, s)| {
            let source = match s.source {
                Source::Live => RouteSource::Live,
                Source::File | Source::Environment => RouteSource::Config,
            };
            (pattern.clone(), s.value.clone(), source)
        })
        .collect();
    let default = layers.default_agent.as_ref().map(|s| s.value.clone());
    (routes, default)
}

/// A strong ETag over the effective configuration's JSON.
fn etag_of(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// The file's values with their sources: environment-set ones name their variable; secrets
/// set by `SWITCHBOARD_SECRET_<AGENT>_<KEY>` count for the loaded agents' declared secrets.
fn base_layers(config: &Config, registry: &Registry) -> Layers {
    let sourced = |path: &[&str], value: &str| {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        match config.from_environment.get(&key) {
            Some(var) => Sourced::environment(value, var),
            None => Sourced::file(value),
        }
    };
    let mut layers = Layers::default();
    for (pattern, agent) in &config.routes {
        // Bad patterns fail the start before this runs.
        let key = overlay::canonical_pattern(pattern).unwrap_or_else(|| pattern.clone());
        layers
            .routes
            .insert(key, sourced(&["routes", pattern], agent));
    }
    layers.default_agent = config
        .agents
        .default
        .as_deref()
        .map(|a| sourced(&["agents", "default"], a));
    for (name, settings) in &config.agent {
        let values = layers.agents.entry(name.clone()).or_default();
        for (k, v) in &settings.config {
            values
                .settings
                .insert(k.clone(), sourced(&["agent", name, "config", k], v));
        }
        for (k, v) in &settings.secrets {
            values
                .secrets
                .insert(k.clone(), sourced(&["agent", name, "secrets", k], v));
        }
    }
    for account in &config.sip.accounts {
        if let Ok(text) = serde_json::to_string(account) {
            layers
                .accounts
                .insert(account.name.clone(), Sourced::file(&text));
        }
    }
    for (name, version) in &registry.snapshot().agents {
        for key in &version.manifest().capabilities.secrets {
            let var = secret_variable(name, key);
            if let Ok(value) = std::env::var(&var) {
                let values = layers.agents.entry(name.clone()).or_default();
                values
                    .secrets
                    .insert(key.clone(), Sourced::environment(&value, &var));
            }
        }
    }
    layers
}

#[cfg(test)]
mod tests;
