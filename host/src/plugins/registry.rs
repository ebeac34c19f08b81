//! The live agents and routes. A snapshot (versions by name + route table) is swapped in whole,
//! so every number moves to a new version atomically; calls keep the `Arc<AgentVersion>` they
//! started with. Loads are serialised and never unload a working version before its successor
//! is compiled and validated.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::broadcast;

use super::routing::{Pattern, RouteError, RouteSource, RouteTable};
use super::runtime::{AgentVersion, LoadError, Runtime, content_hash};

/// How many reload events the registry remembers for the API.
const HISTORY: usize = 200;

/// The agents and routes live at one instant.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub agents: BTreeMap<String, Arc<AgentVersion>>,
    pub routes: RouteTable,
}

/// What a dialled number resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub agent: Arc<AgentVersion>,
    /// The route that matched; None for the default agent.
    pub pattern: Option<Pattern>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AgentEventKind {
    /// A new version is live.
    Loaded {
        version: String,
        hash: String,
        load_ms: u64,
    },
    /// A version was refused; the previous one (if any) stays live.
    Failed { error: String },
    /// The agent's files were removed; the loaded version keeps serving.
    Removed,
}

/// A reload outcome, for logs, the API and the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub agent: String,
    #[serde(flatten)]
    pub kind: AgentEventKind,
}

pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    state: ArcSwap<Snapshot>,
    events: broadcast::Sender<AgentEvent>,
    history: Mutex<VecDeque<AgentEvent>>,
    /// Serialises loads: two reloads never interleave their snapshot updates.
    load_lock: tokio::sync::Mutex<()>,
    /// Compilations attempted (unchanged content is skipped before this counts).
    load_attempts: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// A registry with the configured routes and no agents yet. Bad route patterns and
    /// conflicts among configured routes are errors here.
    pub fn new(
        runtime: Arc<Runtime>,
        routes: BTreeMap<String, String>,
    ) -> Result<Arc<Registry>, RouteError> {
        let mut table = RouteTable::new(runtime.config().default.clone());
        for (pattern, agent) in &routes {
            table.add(pattern, agent, RouteSource::Config)?;
        }
        let (events, _) = broadcast::channel(256);
        Ok(Arc::new(Registry {
            dir: runtime.config().dir.clone(),
            runtime,
            state: ArcSwap::from_pointee(Snapshot {
                agents: BTreeMap::new(),
                routes: table,
            }),
            events,
            history: Mutex::new(VecDeque::new()),
            load_lock: tokio::sync::Mutex::new(()),
            load_attempts: AtomicU64::new(0),
        }))
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The folder of deployed agents.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The agent version for a dialled number (exact, prefix, then default), pinned for a call.
    pub fn resolve(&self, dialled: &str) -> Option<Resolved> {
        let snap = self.state.load();
        let m = snap.routes.resolve(dialled)?;
        Some(Resolved {
            agent: snap.agents.get(m.agent)?.clone(),
            pattern: m.pattern,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    /// Recent reload events, oldest first.
    pub fn history(&self) -> Vec<AgentEvent> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Compilations attempted so far (for tests that the watcher does not loop).
    pub fn load_attempts(&self) -> u64 {
        self.load_attempts.load(Ordering::Relaxed)
    }

    fn report(&self, agent: &str, kind: AgentEventKind) {
        match &kind {
            AgentEventKind::Loaded {
                version,
                hash,
                load_ms,
            } => {
                tracing::info!(
                    agent,
                    version,
                    hash = &hash[..12],
                    load_ms,
                    "agent version live"
                )
            }
            AgentEventKind::Failed { error } => {
                tracing::error!(agent, "agent refused, previous version stays live: {error}")
            }
            AgentEventKind::Removed => tracing::warn!(
                agent,
                "agent files removed; the loaded version keeps serving until new files arrive"
            ),
        }
        let event = AgentEvent {
            at_ms: now_ms(),
            agent: agent.to_string(),
            kind,
        };
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        drop(history);
        let _ = self.events.send(event);
    }

    /// Load every agent in the folder. Problems are reported per file; the rest still load.
    /// Returns the errors (also logged and kept in the history).
    pub async fn load_all(&self) -> Vec<LoadError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                let err = LoadError::new(
                    &self.dir,
                    format!(
                        "cannot read the agents folder ({e}): create it, deploy agents into it \
                         (`switchboard deploy <agent crate>`), or set [agents] dir"
                    ),
                );
                tracing::error!("{err}");
                return vec![err];
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| agent_name_of(&e.path()))
            .collect();
        names.sort();
        names.dedup();
        let mut errors = Vec::new();
        for name in names {
            if let Err(e) = self.reload(&name).await {
                errors.push(e);
            }
        }
        let snap = self.snapshot();
        for (pattern, agent, _) in snap.routes.entries() {
            if !snap.agents.contains_key(agent) {
                tracing::warn!(%pattern, agent, "route to an agent that is not loaded; such calls are refused");
            }
        }
        if let Some(default) = snap.routes.default_agent()
            && !snap.agents.contains_key(default)
        {
            tracing::warn!(agent = default, "the default agent is not loaded");
        }
        errors
    }

    /// (Re)load the agent `name` from `<dir>/<name>.wasm` and `<dir>/<name>.toml`. Unchanged
    /// content is skipped; a failure leaves the live version in place and is reported.
    pub async fn reload(&self, name: &str) -> Result<(), LoadError> {
        let _serial = self.load_lock.lock().await;
        let wasm_path = self.dir.join(format!("{name}.wasm"));
        let manifest_path = self.dir.join(format!("{name}.toml"));
        if !wasm_path.exists() && !manifest_path.exists() {
            if self.snapshot().agents.contains_key(name) {
                self.report(name, AgentEventKind::Removed);
            }
            return Ok(());
        }
        // Skip unchanged content before compiling anything (our own reads of the files must
        // never turn into reload loops).
        if let (Ok(wasm), Ok(manifest)) = (std::fs::read(&wasm_path), std::fs::read(&manifest_path))
            && let Some(live) = self.snapshot().agents.get(name)
            && live.hash == content_hash(&wasm, &manifest)
        {
            tracing::debug!(agent = name, "unchanged; not reloading");
            return Ok(());
        }
        self.load_attempts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match self.runtime.load(&wasm_path, &manifest_path).await {
            Ok(version) => self.publish(version, started),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.report(
                name,
                AgentEventKind::Failed {
                    error: e.to_string(),
                },
            );
        }
        result
    }

    /// Swap in a validated version and its routes, unless its numbers conflict.
    fn publish(&self, version: AgentVersion, started: Instant) -> Result<(), LoadError> {
        let current = self.snapshot();
        let name = version.name().to_string();
        let mut routes = current.routes.clone();
        routes.remove_manifest_routes(&name);
        let source = RouteSource::Manifest(version.manifest_path.display().to_string());
        for number in &version.manifest().numbers {
            routes
                .add(number, &name, source.clone())
                .map_err(|e| LoadError::new(&version.manifest_path, e.to_string()))?;
        }
        let event = AgentEventKind::Loaded {
            version: version.info.version.clone(),
            hash: version.hash.clone(),
            load_ms: started.elapsed().as_millis() as u64,
        };
        let mut agents = current.agents.clone();
        agents.insert(name.clone(), Arc::new(version));
        self.state.store(Arc::new(Snapshot { agents, routes }));
        self.report(&name, event);
        Ok(())
    }

    /// The route table `routes` and `default` make with every loaded agent's manifest numbers:
    /// what [`Registry::set_routes`] would swap in. Errors: a bad pattern, a number claimed twice.
    pub fn check_routes(
        &self,
        routes: &[(String, String, RouteSource)],
        default: Option<String>,
    ) -> Result<RouteTable, RouteError> {
        let mut table = RouteTable::new(default);
        for (pattern, agent, source) in routes {
            table.add(pattern, agent, source.clone())?;
        }
        for version in self.snapshot().agents.values() {
            let source = RouteSource::Manifest(version.manifest_path.display().to_string());
            for number in &version.manifest().numbers {
                table.add(number, version.name(), source.clone())?;
            }
        }
        Ok(table)
    }

    /// Replace the configured routes and the default agent at once: new calls resolve through
    /// them, running calls keep the version they started with. On error nothing changes.
    pub async fn set_routes(
        &self,
        routes: &[(String, String, RouteSource)],
        default: Option<String>,
    ) -> Result<(), RouteError> {
        let _serial = self.load_lock.lock().await;
        let table = self.check_routes(routes, default)?;
        let agents = self.snapshot().agents.clone();
        self.state.store(Arc::new(Snapshot {
            agents,
            routes: table,
        }));
        Ok(())
    }

    /// Replace every agent's settings and rebuild the live versions whose config or secret
    /// values changed, so the next call's `config::get` sees them; running calls keep theirs.
    pub async fn set_settings(&self, settings: BTreeMap<String, super::AgentSettings>) {
        let _serial = self.load_lock.lock().await;
        self.runtime.set_settings(settings);
        let current = self.snapshot();
        let mut agents = current.agents.clone();
        for (name, version) in &current.agents {
            if let Some(rebuilt) = version.with_settings_of(&self.runtime) {
                tracing::info!(agent = %name, "agent settings changed; new calls read them");
                agents.insert(name.clone(), Arc::new(rebuilt));
            }
        }
        self.state.store(Arc::new(Snapshot {
            agents,
            routes: current.routes.clone(),
        }));
    }
}

/// The agent a file in the agents folder belongs to: `<name>.wasm` or `<name>.toml`.
pub fn agent_name_of(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    super::manifest::is_agent_name(stem).then(|| stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{AgentSettings, AgentsConfig};

    /// A registry with the wave-1 `menu` (it claims 1000) loaded from a temporary folder.
    async fn registry_with_menu(data: &Path) -> Arc<Registry> {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wave1");
        let dir = data.join("agents");
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["menu.wasm", "menu.toml"] {
            std::fs::copy(fixtures.join(file), dir.join(file)).unwrap();
        }
        let config = AgentsConfig {
            dir,
            ..AgentsConfig::default()
        };
        let runtime = Runtime::new(config, BTreeMap::new(), data).unwrap();
        let routes = BTreeMap::from([("2000".to_string(), "menu".to_string())]);
        let registry = Registry::new(runtime, routes).unwrap();
        assert!(registry.load_all().await.is_empty());
        registry
    }

    #[tokio::test]
    async fn settings_and_routes_swap_for_new_calls_only() {
        let data = tempfile::tempdir().unwrap();
        let registry = registry_with_menu(data.path()).await;
        let pinned = registry.resolve("1000").unwrap().agent;
        assert_eq!(pinned.ctx.values["business-name"], "Switchboard Demo");

        let settings = AgentSettings {
            config: BTreeMap::from([("business-name".into(), "Live Bakery".into())]),
            ..AgentSettings::default()
        };
        registry
            .set_settings(BTreeMap::from([("menu".to_string(), settings)]))
            .await;
        let next = registry.resolve("1000").unwrap().agent;
        assert_eq!(next.ctx.values["business-name"], "Live Bakery");
        assert_eq!(next.hash, pinned.hash);
        // The call that started before keeps what it started with.
        assert_eq!(pinned.ctx.values["business-name"], "Switchboard Demo");

        // A route to a number the manifest claims is a conflict; nothing changes.
        let live = |p: &str| (p.to_string(), "other".to_string(), RouteSource::Live);
        let err = registry
            .set_routes(&[live("1000")], None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("the manifest"), "{err}");
        assert_eq!(registry.resolve("2000").unwrap().agent.name(), "menu");
        // Replacing the configured routes drops 2000 and keeps the manifest's 1000.
        registry
            .set_routes(&[live("3000")], Some("menu".into()))
            .await
            .unwrap();
        let snap = registry.snapshot();
        let routes: Vec<_> = snap
            .routes
            .entries()
            .map(|(p, a, _)| (p.to_string(), a.to_string()))
            .collect();
        assert_eq!(
            routes,
            [
                ("1000".into(), "menu".into()),
                ("3000".into(), "other".into())
            ]
        );
        assert_eq!(snap.routes.default_agent(), Some("menu"));
    }
}
