//! Live configuration: routes, the default agent and per-agent settings and secrets changed
//! through the API while calls run. The file's values (with environment overrides) are the
//! base, the store keeps the live overlay over them ([`overlay`]), and every change is
//! validated with the start-up rules, stored with its audit record, applied to the registry
//! at once and announced to subscribers. Writes are serialised and need the ETag of the
//! effective configuration they were based on.

pub mod overlay;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, broadcast};

use crate::config::Config;
use crate::plugins::routing::{RouteError, RouteSource};
use crate::plugins::runtime::secret_variable;
use crate::plugins::{AgentSettings, Registry};
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
    store: Arc<dyn CallStore>,
    registry: Arc<Registry>,
    /// The overlay as stored; the lock serialises changes.
    overlay: Mutex<Vec<OverlayEntry>>,
    changes: broadcast::Sender<AuditRecord>,
}

impl LiveConfig {
    /// Read the overlay from the store and apply it over the file's values. A stored route
    /// that no longer fits (an agent's manifest now claims its number) is logged and the
    /// file's routes stay.
    pub async fn start(
        config: &Config,
        store: Arc<dyn CallStore>,
        registry: Arc<Registry>,
    ) -> Result<Arc<LiveConfig>, StoreError> {
        let live = LiveConfig {
            base: base_layers(config, &registry),
            file_settings: config.agent.clone(),
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
        if change.value.is_none() && before.is_none() {
            return Err(LiveError::NotFound(target.path()));
        }
        let (entry, forget) =
            overlay::entry_for(&self.base, target, change.value.as_deref(), now_ms());
        let next_overlay = overlay::updated(&overlay, &entry, forget);
        let next = self.base.with_overlay(&next_overlay);
        self.validate(&change, &next)?;
        let shown = |s: Option<&Sourced>| match s {
            Some(_) if target.is_secret() => json!("***"),
            Some(s) => json!(s.value),
            None => Value::Null,
        };
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
