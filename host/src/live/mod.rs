//! Live configuration: routes, the default agent, per-agent settings and secrets, the SIP
//! registration accounts and trunks, the outgoing webhooks, and the model provider's keys
//! changed through the API
//! while calls run. The file's values (with environment overrides) are the base, the store
//! keeps the live overlay over them ([`overlay`]), and every change is validated with the
//! start-up rules, stored with its audit record, applied to the registry at once (accounts
//! and trunks through [`LiveConfig::accounts`] and [`LiveConfig::trunks`], which the host
//! hands to the SIP endpoint; the provider through [`LiveConfig::provider`], which it hands to
//! the calls) and announced to subscribers. The whole overlay is exported and imported as one
//! [`document`]. Writes are serialised and need the ETag of the effective configuration they
//! were based on.

pub mod document;
pub mod overlay;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, broadcast, watch};

use crate::config::Config;
use crate::model::{ModelConfig, ModelProvider, Secret};
use crate::outbox::WebhookConfig;
use crate::outbox::config::{WEBHOOK_FIELDS, secret_variable as webhook_secret_variable};
use crate::plugins::routing::{RouteError, RouteSource};
use crate::plugins::runtime::secret_variable;
use crate::plugins::{AgentSettings, Registry};
use crate::sip::{
    ACCOUNT_FIELDS, AccountConfig, SipError, TRUNK_FIELDS, TrunkConfig, check_accounts,
    check_trunks,
};
use crate::store::{
    AuditRecord, CallStore, ConfigChange, OverlayEntry, OverlayWrite, StoreError, now_ms,
};
pub use document::OverlayDocument;
use overlay::MASK;
pub use overlay::{Layers, MODEL_KEYS, Source, Sourced, Target};

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
    /// The effective registration accounts.
    accounts: watch::Sender<Vec<AccountConfig>>,
    /// The effective trunks.
    trunks: watch::Sender<Vec<TrunkConfig>>,
    /// The effective webhooks.
    webhooks: watch::Sender<Vec<WebhookConfig>>,
    /// `[model]` as loaded (file and environment), which the model keys change.
    file_model: toml::Table,
    /// The provider new calls connect to.
    provider: watch::Sender<Arc<dyn ModelProvider>>,
    store: Arc<dyn CallStore>,
    registry: Arc<Registry>,
    /// The overlay as stored; the lock serialises changes.
    overlay: Mutex<Vec<OverlayEntry>>,
    changes: broadcast::Sender<AuditRecord>,
}

impl LiveConfig {
    /// Read the overlay from the store and apply it over the file's values. A stored route
    /// that no longer fits (an agent's manifest now claims its number) is logged and the
    /// file's routes stay; so do the file's trunks and accounts when the stored ones no longer
    /// fit (a trunk in the file took an account's name).
    /// `provider` is the one `[model]` builds, in effect until a live change replaces it.
    pub async fn start(
        config: &Config,
        store: Arc<dyn CallStore>,
        registry: Arc<Registry>,
        provider: Arc<dyn ModelProvider>,
    ) -> Result<Arc<LiveConfig>, StoreError> {
        let file_model = match config.source.get("model") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        };
        let live = LiveConfig {
            file_model,
            provider: watch::channel(provider).0,
            base: base_layers(config, &registry),
            file_settings: config.agent.clone(),
            accounts: watch::channel(config.sip.accounts.clone()).0,
            trunks: watch::channel(config.sip.trunks.clone()).0,
            webhooks: watch::channel(config.webhooks.clone()).0,
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
            let (trunks, accounts) = (trunks_of(&layers), accounts_of(&layers));
            match check_trunks(&trunks).and_then(|()| check_accounts(&accounts, &trunks)) {
                Ok(()) => {
                    live.trunks.send_replace(trunks);
                    live.accounts.send_replace(accounts);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stored live trunks and accounts do not fit; the file's stay");
                }
            }
            let webhooks = webhooks_of(&layers);
            match crate::outbox::config::validate(&webhooks) {
                Ok(()) => {
                    live.webhooks.send_replace(webhooks);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stored live webhooks do not fit; the file's stay");
                }
            }
            if !layers.model.is_empty() {
                match live.provider_of(&layers) {
                    Ok(provider) => {
                        live.provider.send_replace(provider);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the stored live [model] keys do not fit; the file's model stays");
                    }
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

    /// The live overlay as one document (secrets masked) and the effective configuration's
    /// ETag, for an import based on it.
    pub async fn export(&self) -> (OverlayDocument, String) {
        let overlay = self.overlay.lock().await;
        let etag = etag_of(&self.base.with_overlay(&overlay).to_json());
        (OverlayDocument::of(&overlay), etag)
    }

    /// The effective registration accounts, now and after each change, for the SIP endpoint
    /// to register.
    pub fn accounts(&self) -> watch::Receiver<Vec<AccountConfig>> {
        self.accounts.subscribe()
    }

    /// The effective trunks, now and after each change, for the SIP endpoint and for the
    /// checks of outbound calls.
    pub fn trunks(&self) -> watch::Receiver<Vec<TrunkConfig>> {
        self.trunks.subscribe()
    }

    /// The effective webhooks, now and after each change, for the outbox.
    pub fn webhooks(&self) -> watch::Receiver<Vec<WebhookConfig>> {
        self.webhooks.subscribe()
    }

    /// The model provider new calls connect to, now and after each change.
    pub fn provider(&self) -> watch::Receiver<Arc<dyn ModelProvider>> {
        self.provider.subscribe()
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
        let now = self.current(&overlay, if_match)?;
        let before = now.get(&change.target).cloned();
        if change.value.is_none() && before.is_none() {
            return Err(LiveError::NotFound(change.target.path()));
        }
        let change = self.resolved(change, &now)?;
        let target = &change.target;
        let (entry, forget) =
            overlay::entry_for(&self.base, target, change.value.as_deref(), now_ms());
        let next_overlay = overlay::updated(&overlay, &entry, forget);
        let next = self.base.with_overlay(&next_overlay);
        self.validate(std::slice::from_ref(&change), &next, false)?;
        let shown = |s: Option<&Sourced>| s.map_or(Value::Null, |s| target.shown(&s.value));
        let record = self
            .store
            .record_config_change(ConfigChange {
                at_ms: entry.at_ms,
                write: OverlayWrite::One { entry, forget },
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
        self.apply(&now, &next).await;
        *overlay = next_overlay;
        tracing::info!(who, target = %record.target, action = %record.action, "configuration changed");
        let _ = self.changes.send(record.clone());
        Ok(record)
    }

    /// Replace the whole overlay with `document` (see [`OverlayDocument`]), if `if_match` is
    /// the current ETag: every value is checked as one change would be and the result as a
    /// whole, before anything is stored; stored and applied at once, audited as one change.
    pub async fn import(
        &self,
        who: &str,
        if_match: Option<&str>,
        document: &OverlayDocument,
    ) -> Result<AuditRecord, LiveError> {
        let mut overlay = self.overlay.lock().await;
        let now = self.current(&overlay, if_match)?;
        let at_ms = now_ms();
        let mut changes = Vec::new();
        let mut next_overlay = Vec::new();
        for change in document.changes()? {
            let change = self.resolved(change, &now)?;
            let (entry, forget) =
                overlay::entry_for(&self.base, &change.target, change.value.as_deref(), at_ms);
            next_overlay = overlay::updated(&next_overlay, &entry, forget);
            changes.push(change);
        }
        let next = self.base.with_overlay(&next_overlay);
        self.validate(&changes, &next, true)?;
        let json = |doc: OverlayDocument| serde_json::to_value(doc).unwrap_or(Value::Null);
        let record = self
            .store
            .record_config_change(ConfigChange {
                write: OverlayWrite::All(next_overlay.clone()),
                at_ms,
                who: who.into(),
                action: "import".into(),
                target: "live".into(),
                before: json(OverlayDocument::of(&overlay)),
                after: json(OverlayDocument::of(&next_overlay)),
            })
            .await?;
        self.apply(&now, &next).await;
        *overlay = next_overlay;
        tracing::info!(who, entries = overlay.len(), "live configuration imported");
        let _ = self.changes.send(record.clone());
        Ok(record)
    }

    /// The layers in effect, if `if_match` is their ETag.
    fn current(
        &self,
        overlay: &[OverlayEntry],
        if_match: Option<&str>,
    ) -> Result<Layers, LiveError> {
        let now = self.base.with_overlay(overlay);
        let given = if_match.ok_or(LiveError::PreconditionRequired)?;
        let current = etag_of(&now.to_json());
        if given.trim() != current {
            return Err(LiveError::Stale {
                given: given.into(),
                current,
            });
        }
        Ok(now)
    }

    /// `change` as it is stored: refused when the environment sets its value; an account or
    /// trunk body read with its passwords kept from `now`; a secret given as `***` kept.
    fn resolved(&self, change: Change, now: &Layers) -> Result<Change, LiveError> {
        self.check_editable(&change.target)?;
        let before = now.get(&change.target);
        let value = match (&change.target, change.value) {
            (Target::Account(name), Some(body)) => {
                Some(entry_json::<AccountConfig>(&ACCOUNTS, name, &body, before)?)
            }
            (Target::Trunk(name), Some(body)) => {
                Some(entry_json::<TrunkConfig>(&TRUNKS, name, &body, before)?)
            }
            (Target::Webhook(name), Some(body)) => {
                Some(entry_json::<WebhookConfig>(&WEBHOOKS, name, &body, before)?)
            }
            (target, Some(value)) if target.is_secret() && value == MASK => match before {
                Some(kept) => Some(kept.value.clone()),
                None => {
                    return Err(LiveError::invalid(
                        "value",
                        "secret_not_set",
                        format!(
                            "`{}` is given as {MASK} (keep the current one) and is not set",
                            change.target.path()
                        ),
                    ));
                }
            },
            (_, value) => value,
        };
        Ok(Change {
            target: change.target,
            value,
        })
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

    /// The start-up rules: each of `changes` on its own, then the tables they touch as a whole
    /// (routes; trunks and accounts), all of them for an import (`whole`).
    fn validate(&self, changes: &[Change], next: &Layers, whole: bool) -> Result<(), LiveError> {
        for change in changes {
            self.check_value(change)?;
        }
        let touches = |of: fn(&Target) -> bool| whole || changes.iter().any(|c| of(&c.target));
        if touches(|t| matches!(t, Target::Route(_) | Target::DefaultAgent)) {
            self.check_routes(next)?;
        }
        if touches(|t| matches!(t, Target::Trunk(_) | Target::Account(_))) {
            self.check_sip(changes, next)?;
        }
        if touches(|t| matches!(t, Target::Model(_))) {
            self.provider_of(next)?;
        }
        if touches(|t| matches!(t, Target::Webhook(_))) {
            crate::outbox::config::validate(&webhooks_of(next))
                .map_err(|e| LiveError::invalid(e.field, "bad_webhook", e.message))?;
        }
        Ok(())
    }

    /// The provider `[model]` builds with the model keys of `layers` over the file's; a
    /// refusal names the key at fault.
    fn provider_of(&self, layers: &Layers) -> Result<Arc<dyn ModelProvider>, LiveError> {
        let mut table = self.file_model.clone();
        for key in MODEL_KEYS {
            match layers.model.get(key) {
                Some(s) => table.insert(key.into(), toml::Value::String(s.value.clone())),
                None => table.remove(key),
            };
        }
        // As at start: without a provider, the offline one.
        if !table.contains_key("provider") {
            table.insert("provider".into(), "offline".into());
        }
        // The message names the key at fault first (`missing field `api-key``, `unknown
        // field `voice``); else it is the provider's.
        let field = |message: &str| {
            let named = message.split('`').nth(1).unwrap_or_default();
            MODEL_KEYS
                .into_iter()
                .find(|k| *k == named)
                .unwrap_or("provider")
        };
        let config: ModelConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let message = e.message().to_string();
                    LiveError::invalid(field(&message), "bad_model", format!("[model]: {message}"))
                })?;
        config
            .build()
            .map_err(|e| LiveError::invalid(field(&e), "bad_model", format!("[model]: {e}")))
    }

    /// The routes of `next` as the registry would take them.
    fn check_routes(&self, next: &Layers) -> Result<(), LiveError> {
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
        Ok(())
    }

    /// The trunks and accounts of `next` as the SIP endpoint would take them.
    fn check_sip(&self, changes: &[Change], next: &Layers) -> Result<(), LiveError> {
        // A trunk change refused for an account's name is the trunk's fault, and back.
        let code = match changes.first().map(|c| &c.target) {
            Some(Target::Trunk(_)) => "bad_trunk",
            _ => "bad_account",
        };
        let trunks = trunks_of(next);
        check_trunks(&trunks)
            .and_then(|()| check_accounts(&accounts_of(next), &trunks))
            .map_err(|e| match e {
                SipError::Trunk { field, .. } => {
                    LiveError::invalid(field, "bad_trunk", e.to_string())
                }
                SipError::Account { field, .. } => LiveError::invalid(field, code, e.to_string()),
                other => LiveError::invalid("name", code, other.to_string()),
            })
    }

    /// The rules of one value: the agent a route names is loaded; an agent's setting or
    /// secret is declared by its manifest and not too long; a trunk's client certificate and
    /// key read (the SIP endpoint reads them when it takes the trunk).
    fn check_value(&self, change: &Change) -> Result<(), LiveError> {
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
            (Target::Model(key), _) if !MODEL_KEYS.contains(&key.as_str()) => {
                return Err(LiveError::invalid(
                    "key",
                    "unknown_key",
                    format!(
                        "`{key}` is not a [model] key the API changes ({})",
                        MODEL_KEYS.join(", ")
                    ),
                ));
            }
            (Target::Trunk(_), Some(text)) => {
                let trunk: TrunkConfig = serde_json::from_str(text)
                    .map_err(|e| LiveError::invalid("name", "bad_trunk", e.to_string()))?;
                let files = [
                    ("tls-client-cert", &trunk.tls_client_cert),
                    ("tls-client-key", &trunk.tls_client_key),
                ];
                for (field, path) in files {
                    if let Some(path) = path
                        && let Err(e) = std::fs::File::open(path)
                    {
                        return Err(LiveError::invalid(
                            field,
                            "bad_trunk",
                            format!("trunk `{}`: {}: {e}", trunk.name, path.display()),
                        ));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Make `next` the configuration in effect, where it differs from `now`: new calls see it
    /// at once; trunks and accounts go to the SIP endpoint through their channels.
    async fn apply(&self, now: &Layers, next: &Layers) {
        if (&now.routes, &now.default_agent) != (&next.routes, &next.default_agent)
            && let Err(e) = self.apply_routes(next).await
        {
            // Only an agent reloaded since the check can get here.
            tracing::error!(error = %e, "a stored route change could not be applied");
        }
        if now.agents != next.agents {
            self.registry.set_settings(self.settings_of(next)).await;
        }
        if now.trunks != next.trunks {
            self.trunks.send_replace(trunks_of(next));
        }
        if now.accounts != next.accounts {
            self.accounts.send_replace(accounts_of(next));
        }
        if now.webhooks != next.webhooks {
            self.webhooks.send_replace(webhooks_of(next));
        }
        if now.model != next.model {
            match self.provider_of(next) {
                Ok(provider) => {
                    self.provider.send_replace(provider);
                }
                // Checked before it was stored; nothing reads differently since.
                Err(e) => {
                    tracing::error!(error = %e, "a stored [model] change could not be applied")
                }
            }
        }
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

/// The registration accounts of `layers`.
fn accounts_of(layers: &Layers) -> Vec<AccountConfig> {
    parsed(&layers.accounts, "account")
}

/// The trunks of `layers`.
fn trunks_of(layers: &Layers) -> Vec<TrunkConfig> {
    parsed(&layers.trunks, "trunk")
}

/// The webhooks of `layers`, each secret overridden by its environment variable when set.
fn webhooks_of(layers: &Layers) -> Vec<WebhookConfig> {
    let mut webhooks: Vec<WebhookConfig> = parsed(&layers.webhooks, "webhook");
    for w in &mut webhooks {
        if let Ok(secret) = std::env::var(webhook_secret_variable(&w.name)) {
            w.secret = Some(Secret::new(secret));
        }
    }
    webhooks
}

/// The stored JSON values of `entries` read back. Stored ones were checked when written; one
/// that no longer reads is logged and left out.
fn parsed<T: serde::de::DeserializeOwned>(
    entries: &BTreeMap<String, Sourced>,
    what: &'static str,
) -> Vec<T> {
    entries
        .iter()
        .filter_map(|(name, s)| match serde_json::from_str(&s.value) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::error!(what, %name, error = %e, "a stored value does not read; left out");
                None
            }
        })
        .collect()
}

/// Which table of named entries (SIP accounts and trunks, webhooks) an entry is of: its name in messages (and as the field blamed for a whole
/// refused body), its fields as the file spells them, and the code of a refusal.
struct SipTable {
    what: &'static str,
    fields: &'static [&'static str],
    code: &'static str,
}

const ACCOUNTS: SipTable = SipTable {
    what: "account",
    fields: &ACCOUNT_FIELDS,
    code: "bad_account",
};

const TRUNKS: SipTable = SipTable {
    what: "trunk",
    fields: &TRUNK_FIELDS,
    code: "bad_trunk",
};

const WEBHOOKS: SipTable = SipTable {
    what: "webhook",
    fields: &WEBHOOK_FIELDS,
    code: "bad_webhook",
};

/// The account or trunk a PUT body (JSON, the file's field names) describes, as stored: `name`
/// from the path, passwords left out or given as `***` kept from `before`. A refused body
/// names the field at fault.
fn entry_json<T: serde::de::DeserializeOwned + serde::Serialize>(
    table: &SipTable,
    name: &str,
    body: &str,
    before: Option<&Sourced>,
) -> Result<String, LiveError> {
    let SipTable { what, fields, code } = *table;
    let refused = |field: &'static str, message: String| LiveError::invalid(field, code, message);
    let mut value: Value = serde_json::from_str(body)
        .map_err(|e| refused(what, format!("the {what} is not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(refused(what, format!("the {what} is a JSON object")));
    };
    if object.get("name").is_some_and(|n| *n != name) {
        return Err(refused(
            "name",
            format!("the body names another {what} than `{name}`"),
        ));
    }
    object.insert("name".into(), json!(name));
    if let Some(old) = before.and_then(|b| serde_json::from_str::<Value>(&b.value).ok()) {
        overlay::keep_passwords(&mut value, &old);
    }
    let parsed: T = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // A missing field has no path; its name is in the message. A nested one (inbound's
        // digest) is named by its table.
        let field = fields
            .iter()
            .copied()
            .find(|f| {
                path == *f
                    || path.starts_with(&format!("{f}."))
                    || path.starts_with(&format!("{f}["))
                    || message.starts_with(&format!("missing field `{f}`"))
            })
            .unwrap_or(what);
        refused(field, format!("{what} `{name}`: {path}: {message}"))
    })?;
    let stored = serde_json::to_value(&parsed).map_err(|e| refused("name", e.to_string()))?;
    if has_masked_password(&stored) {
        let field = if what == "webhook" {
            "secret"
        } else {
            "password"
        };
        return Err(refused(
            field,
            format!("a {field} given as {MASK} keeps the current one, and `{name}` has none"),
        ));
    }
    Ok(stored.to_string())
}

/// Whether any password or secret of `value` is still `***` (nothing to keep it from).
fn has_masked_password(value: &Value) -> bool {
    value.as_object().is_some_and(|object| {
        object.iter().any(|(k, v)| {
            (overlay::SECRET_KEYS.contains(&k.as_str()) && *v == json!(MASK))
                || has_masked_password(v)
        })
    })
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
    for trunk in &config.sip.trunks {
        if let Ok(text) = serde_json::to_string(trunk) {
            layers
                .trunks
                .insert(trunk.name.clone(), Sourced::file(&text));
        }
    }
    for webhook in &config.webhooks {
        if let Ok(text) = serde_json::to_string(webhook) {
            layers
                .webhooks
                .insert(webhook.name.clone(), Sourced::file(&text));
        }
    }
    if let Some(toml::Value::Table(model)) = config.source.get("model") {
        for key in MODEL_KEYS {
            if let Some(toml::Value::String(value)) = model.get(key) {
                layers
                    .model
                    .insert(key.into(), sourced(&["model", key], value));
            }
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
