//! The agent runtime: one wasmtime `Engine` for the process (component model, pooling allocator,
//! epoch interruption on a 10 ms tick), compiling and validating agent versions, and creating
//! one sandboxed instance per call.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{v0_1, v0_2};
use super::capabilities;
use super::contract::{AgentPre, Contract};
use super::function_cache::FunctionCache;
use super::http::HttpClient;
use super::kv::KvStore;
use super::manifest::{Language, Manifest};
use super::sandbox::{Sandbox, SessionState};
use super::session::AgentSession;
use super::types::AgentInfo;
use crate::domain::conversation::ConversationConfig;
use crate::domain::{Action, AgentFault, CallInfo, Direction, FaultKind};
use crate::mcp::{Catalog, McpConfig, McpServer};
use crate::model::Secret;

/// How often the engine's epoch advances; the unit of every guest deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How much of a call's written linear memory (and table) an instance slot resets by copying
/// instead of handing the pages back to the kernel. The kernel reports which pages the call
/// wrote (`PAGEMAP_SCAN`), so only those are copied: about eight pages for a call of the
/// `menu` agent. Returning pages costs an `madvise`, whose TLB shootdown interrupts the media
/// threads, and the next call of the slot faults them in again.
const KEEP_RESIDENT: usize = 1 << 20;

/// The `[agents]` section of the host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AgentsConfig {
    /// Folder of deployed agents: `<name>.wasm` with its manifest `<name>.toml`.
    pub dir: PathBuf,
    /// Agent for numbers no route matches; none answers such calls with 404.
    pub default: Option<String>,
    /// Calls that can run agents at once (size of the instance pool).
    pub max_instances: u32,
    /// Linear memory cap per instance, in MiB.
    pub memory_mb: u32,
    /// Guest CPU time allowed per hook, in ms (time waiting in host imports is not counted).
    pub hook_budget_ms: u64,
    /// Wall-clock limit per hook including host I/O such as http fetches, in ms.
    pub hook_timeout_ms: u64,
    /// Quiet time after the last file event before a reload, in ms.
    pub debounce_ms: u64,
    /// What the caller hears when an agent fails mid-call.
    pub fallback: FallbackConfig,
    /// Instance pool of Python agents (`max-instances` and `memory-mb` above are Rust's).
    pub python: InterpreterPool,
    /// Instance pool of JavaScript agents.
    pub js: InterpreterPool,
    /// Where compiled agents are cached; unset: `<data-dir>/compiled`. Hosts on one machine may
    /// share it (entries are keyed by content and engine, written by rename).
    pub cache_dir: Option<PathBuf>,
    /// How long the host waits for the agents' MCP servers (`[agents.mcp]`).
    pub mcp: McpConfig,
}

/// The instance pool of one interpreted language. Its agents carry an interpreter: each call
/// needs more memory (the interpreter's heap is part of the agent's snapshot) and several core
/// instances, so they get a pool of their own and cannot starve the Rust agents' calls.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InterpreterPool {
    /// Calls that can run agents of this language at once.
    pub max_instances: u32,
    /// Linear memory cap per instance, in MiB.
    pub memory_mb: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            dir: PathBuf::from("plugins/dist"),
            default: None,
            max_instances: 1000,
            memory_mb: 32,
            hook_budget_ms: 100,
            hook_timeout_ms: 10_000,
            debounce_ms: 100,
            fallback: FallbackConfig::default(),
            python: InterpreterPool {
                max_instances: 100,
                memory_mb: 128,
            },
            // SpiderMonkey's heap starts at 9 MiB; a receptionist call keeps about 2.5 MiB
            // resident.
            js: InterpreterPool {
                max_instances: 100,
                memory_mb: 64,
            },
            cache_dir: None,
            mcp: McpConfig::default(),
        }
    }
}

impl AgentsConfig {
    /// The pool limits that apply to agents in `language`.
    pub fn pool(&self, language: Language) -> InterpreterPool {
        match language {
            Language::Rust => InterpreterPool {
                max_instances: self.max_instances,
                memory_mb: self.memory_mb,
            },
            Language::Python => self.python,
            Language::Js => self.js,
        }
    }
}

/// What happens when an agent traps, overruns its budget or breaks a limit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FallbackConfig {
    /// Spoken to the caller first.
    pub apology: String,
    /// Transfer here after the apology; none hangs up.
    pub transfer: Option<String>,
    /// When `on-start` fails, or an inbound call's model cannot be reached: "apology" answers
    /// and apologises (then, for an agent failure, the rule above); "reject" refuses the call
    /// with 503.
    pub on_start: StartFallback,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StartFallback {
    Apology,
    Reject,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            apology: "Sorry, something went wrong on our side. Please call again later.".into(),
            transfer: None,
            on_start: StartFallback::Apology,
        }
    }
}

/// Per-agent settings from `[agent.<name>]` in the host configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentSettings {
    /// Values for config keys the manifest declares (override the manifest defaults).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secret values; `SWITCHBOARD_SECRET_<AGENT>_<KEY>` in the environment overrides them.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Record this agent's calls to WAV; unset follows `[calls] record`.
    #[serde(default)]
    pub record: Option<bool>,
    /// Offer the model the host's `end_call` tool: it ends the call once the model's goodbye
    /// has been heard.
    #[serde(default)]
    pub end_call: bool,
    /// Caller silence, the maximum call length and fillers for this agent's calls: replaces
    /// `[calls.conversation]` whole (keys left out take the built-in defaults).
    #[serde(default)]
    pub conversation: Option<ConversationConfig>,
}

/// Why a version could not be loaded. The message names the file and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: String,
    pub message: String,
}

impl LoadError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        LoadError {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

/// Everything a call of one agent needs that outlives a single call.
pub(crate) struct AgentContext {
    pub name: String,
    pub version: String,
    pub manifest: Manifest,
    /// Resolved config and secret values the agent may read.
    pub values: HashMap<String, String>,
    pub kv: Option<Arc<KvStore>>,
    pub http: HttpClient,
    /// The tools of the manifest's MCP servers, listed once for the version.
    pub mcp: Arc<Catalog>,
}

/// A compiled, validated agent version, ready to instantiate. Calls hold an `Arc` to the
/// version they started with, so a reload never changes a running call.
pub struct AgentVersion {
    pub info: AgentInfo,
    /// SHA-256 of the wasm bytes and the manifest text.
    pub hash: String,
    pub wasm_path: PathBuf,
    pub manifest_path: PathBuf,
    pub loaded_at: SystemTime,
    pub(crate) pre: AgentPre,
    pub(crate) ctx: Arc<AgentContext>,
}

impl AgentVersion {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn manifest(&self) -> &Manifest {
        &self.ctx.manifest
    }

    /// The contract version the agent was built against.
    pub fn contract(&self) -> Contract {
        self.pre.contract()
    }

    /// This version with its config and secret values resolved again from `runtime`'s
    /// settings (same component, hash and kv): what new calls get after a settings change.
    /// None when the values did not change.
    pub(crate) fn with_settings_of(&self, runtime: &Runtime) -> Option<AgentVersion> {
        let values = runtime.resolve_values(&self.ctx.manifest);
        if values == self.ctx.values {
            return None;
        }
        // A new bearer token means new MCP sessions.
        let ctx = AgentContext {
            name: self.ctx.name.clone(),
            version: self.ctx.version.clone(),
            manifest: self.ctx.manifest.clone(),
            mcp: Arc::new(runtime.mcp_catalog(&self.ctx.manifest, &values)),
            values,
            kv: self.ctx.kv.clone(),
            http: self.ctx.http.clone(),
        };
        Some(AgentVersion {
            info: self.info.clone(),
            hash: self.hash.clone(),
            wasm_path: self.wasm_path.clone(),
            manifest_path: self.manifest_path.clone(),
            loaded_at: self.loaded_at,
            pre: self.pre.clone(),
            ctx: Arc::new(ctx),
        })
    }
}

impl std::fmt::Debug for AgentVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentVersion")
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Limits applied to every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    pub memory_bytes: usize,
    pub hook_budget: Duration,
    pub hook_timeout: Duration,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<SessionState>,
    cache_dir: PathBuf,
    kv_dir: PathBuf,
    config: AgentsConfig,
    /// Swapped whole when a live change arrives; read when a version is (re)built.
    settings: ArcSwap<BTreeMap<String, AgentSettings>>,
    kv: Mutex<HashMap<String, Arc<KvStore>>>,
    http: HttpClient,
    /// Live sessions per language (indexed by `Language as usize`), against each pool's
    /// `max-instances`.
    in_use: [Arc<AtomicU32>; 3],
}

/// A session's place in its language's pool, given back when the session is dropped.
pub(crate) struct PoolSlot(Arc<AtomicU32>);

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Pool resources one instance takes, with headroom over what the components hold. A Rust
/// wasip2 component (the receptionist) instantiates 3 core modules defining 1 memory and 2
/// tables. componentize-py 0.25.1's output instantiates 14 (CPython, libc and its other
/// shared libraries, the WASI adapter, glue), which define 1 memory and 2 tables between them:
/// the libraries import the main module's memory and table. componentize-js 0.23.0's
/// (StarlingMonkey) instantiates 4, defining 2 memories and 3 tables.
struct InstanceShape {
    core_instances: u32,
    memories: u32,
    tables: u32,
}

fn instance_shape(language: Language) -> InstanceShape {
    match language {
        Language::Rust => InstanceShape {
            core_instances: 8,
            memories: 2,
            tables: 8,
        },
        Language::Python => InstanceShape {
            core_instances: 16,
            memories: 2,
            tables: 4,
        },
        Language::Js => InstanceShape {
            core_instances: 8,
            memories: 4,
            tables: 8,
        },
    }
}

/// Instances per language beyond its pool, for the load-time checks of new versions.
const LOAD_CHECK_INSTANCES: u32 = 2;

fn engine_config(config: &AgentsConfig, functions: &Arc<FunctionCache>, pooling: bool) -> Config {
    let mut c = Config::new();
    c.enable_incremental_compilation(functions.clone())
        .expect("the engine has a compiler");
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.memory_init_cow(true);
    // Agents are wasip2 components called one hook at a time: without the component-model
    // async machinery a hook runs on a plain fiber, and a store carries no concurrent state.
    c.concurrency_support(false);
    if pooling {
        // One wasmtime pool holds every language's instances; `Runtime::session` keeps each
        // language within its own `max-instances`.
        let (mut instances, mut core, mut memories, mut tables, mut memory_mb) = (0, 0, 0, 0, 0);
        for language in Language::ALL {
            let pool = config.pool(language);
            let n = pool.max_instances + LOAD_CHECK_INSTANCES;
            let shape = instance_shape(language);
            instances += n;
            core += n * shape.core_instances;
            memories += n * shape.memories;
            tables += n * shape.tables;
            memory_mb = memory_mb.max(pool.memory_mb);
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(core)
            .total_memories(memories)
            .total_tables(tables)
            .total_stacks(instances)
            .max_memory_size(2 * memory_mb as usize * (1 << 20))
            // Every free slot may stay warm (its agent's copy-on-write image still mapped), so
            // a new call reuses one without mapping the image again; with a few hundred calls
            // live, the default of 100 left most slots cold.
            .max_unused_warm_slots(instances);
        // Without the scan, keeping memory resident would mean copying all of it each call.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT);
        }
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Build the engine, preferring the pooling allocator; hosts that refuse its virtual-memory
/// reservation fall back to on-demand allocation.
fn build_engine(config: &AgentsConfig, functions: &Arc<FunctionCache>) -> anyhow::Result<Engine> {
    match Engine::new(&engine_config(config, functions, true)) {
        Ok(engine) => Ok(engine),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            Ok(Engine::new(&engine_config(config, functions, false))?)
        }
    }
}

/// Advance the epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch thread");
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The environment variable that sets (and overrides) an agent's secret:
/// `SWITCHBOARD_SECRET_<AGENT>_<KEY>`.
pub fn secret_variable(agent: &str, key: &str) -> String {
    format!(
        "SWITCHBOARD_SECRET_{}_{}",
        agent.to_ascii_uppercase().replace('-', "_"),
        key.to_ascii_uppercase().replace('-', "_")
    )
}

/// Content hash of a deployed agent (wasm bytes + manifest text); unchanged files are skipped.
pub fn content_hash(wasm: &[u8], manifest: &[u8]) -> String {
    sha256_hex(&[wasm, manifest])
}

impl Runtime {
    /// `data_dir` holds the compiled cache and the agents' kv files.
    pub fn new(
        config: AgentsConfig,
        settings: BTreeMap<String, AgentSettings>,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<Runtime>> {
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("compiled"));
        let kv_dir = data_dir.join("kv");
        for dir in [&cache_dir, &kv_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let functions = Arc::new(
            FunctionCache::new(cache_dir.join("functions")).map_err(|e| {
                anyhow::anyhow!("cannot create {}/functions: {e}", cache_dir.display())
            })?,
        );
        let engine = build_engine(&config, &functions)?;
        start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Both contract versions in one linker: their interface names differ by version, and
        // one implementation (plugins::host) serves both.
        v0_1::AgentPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s: &mut SessionState| {
            &mut s.host
        })?;
        v0_2::AgentPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s: &mut SessionState| {
            &mut s.host
        })?;
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache_dir,
            kv_dir,
            config,
            settings: ArcSwap::from_pointee(settings),
            kv: Mutex::new(HashMap::new()),
            http: HttpClient::default(),
            in_use: Default::default(),
        }))
    }

    /// The `[agent.<name>]` settings of an agent (file and live changes), if there are any.
    pub fn settings(&self, agent: &str) -> Option<AgentSettings> {
        self.settings.load().get(agent).cloned()
    }

    /// Replace every agent's settings; versions built from now on read them (see
    /// [`super::Registry::set_settings`], which rebuilds the live ones).
    pub(crate) fn set_settings(&self, settings: BTreeMap<String, AgentSettings>) {
        self.settings.store(Arc::new(settings));
    }

    pub fn config(&self) -> &AgentsConfig {
        &self.config
    }

    pub(crate) fn limits(&self, language: Language) -> SessionLimits {
        SessionLimits {
            memory_bytes: self.config.pool(language).memory_mb as usize * (1 << 20),
            hook_budget: Duration::from_millis(self.config.hook_budget_ms),
            hook_timeout: Duration::from_millis(self.config.hook_timeout_ms),
        }
    }

    /// Compile (or take from the cache), check and validate an agent. Compilation runs on a
    /// blocking thread, off the call path.
    pub async fn load(
        self: &Arc<Self>,
        wasm_path: &Path,
        manifest_path: &Path,
    ) -> Result<AgentVersion, LoadError> {
        let this = self.clone();
        let (w, m) = (wasm_path.to_path_buf(), manifest_path.to_path_buf());
        let (pre, ctx, hash) = tokio::task::spawn_blocking(move || this.prepare(&w, &m))
            .await
            .map_err(|e| LoadError::new(wasm_path, format!("loader crashed: {e}")))??;
        let info = self.smoke_test(&pre, &ctx, wasm_path).await?;
        if info.name != ctx.name {
            return Err(LoadError::new(
                wasm_path,
                format!(
                    "describe() says the agent is `{}` but its manifest says `{}`: make them agree",
                    info.name, ctx.name
                ),
            ));
        }
        let ctx = Arc::new(AgentContext {
            version: info.version.clone(),
            ..Arc::into_inner(ctx).expect("the smoke test released the context")
        });
        if !ctx.mcp.is_empty() {
            // Listed now, off the call path: the first call finds the tools ready.
            let catalog = ctx.mcp.clone();
            tokio::spawn(async move { catalog.tools().await });
        }
        Ok(AgentVersion {
            info,
            hash,
            wasm_path: wasm_path.to_path_buf(),
            manifest_path: manifest_path.to_path_buf(),
            loaded_at: SystemTime::now(),
            pre,
            ctx,
        })
    }

    /// Read, compile, check imports and exports, and link (blocking).
    fn prepare(
        &self,
        wasm_path: &Path,
        manifest_path: &Path,
    ) -> Result<(AgentPre, Arc<AgentContext>, String), LoadError> {
        let manifest_text = std::fs::read(manifest_path).map_err(|e| {
            LoadError::new(
                manifest_path,
                format!(
                    "cannot read the manifest ({e}); every agent needs <name>.toml beside \
                     <name>.wasm"
                ),
            )
        })?;
        let manifest = Manifest::parse(
            &String::from_utf8_lossy(&manifest_text),
            &manifest_path.display().to_string(),
        )
        .map_err(|e| LoadError {
            path: e.path,
            message: e.message,
        })?;
        let file_stem = wasm_path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if manifest.name != file_stem {
            return Err(LoadError::new(
                manifest_path,
                format!(
                    "the manifest names the agent `{}` but the file is `{file_stem}.wasm`: name \
                     the files <name>.wasm and <name>.toml",
                    manifest.name
                ),
            ));
        }
        let wasm = std::fs::read(wasm_path)
            .map_err(|e| LoadError::new(wasm_path, format!("cannot read: {e}")))?;
        let hash = content_hash(&wasm, &manifest_text);
        let component = self.compile(&wasm, wasm_path)?;

        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let contract = capabilities::check(&imports, &exports, &manifest)
            .map_err(|message| LoadError::new(wasm_path, message))?;

        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(|pre| AgentPre::new(contract, pre))
            .map_err(|e| {
                LoadError::new(
                    wasm_path,
                    format!(
                        "does not match {} as this host implements it ({e:#}): rebuild the \
                         agent with a matching switchboard-sdk",
                        contract.package()
                    ),
                )
            })?;
        let kv = self
            .kv_for(&manifest)
            .map_err(|e| LoadError::new(wasm_path, e.to_string()))?;
        let values = self.resolve_values(&manifest);
        let ctx = Arc::new(AgentContext {
            name: manifest.name.clone(),
            version: String::new(),
            mcp: Arc::new(self.mcp_catalog(&manifest, &values)),
            values,
            kv,
            http: self.http.clone(),
            manifest,
        });
        Ok((pre, ctx, hash))
    }

    /// Compile through the on-disk cache keyed by the wasm's hash and the engine's
    /// compatibility hash. Only our own artifacts are ever deserialized.
    fn compile(&self, wasm: &[u8], path: &Path) -> Result<Component, LoadError> {
        match wasm.get(..8) {
            Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => {}
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
                return Err(LoadError::new(
                    path,
                    "is a core WebAssembly module, not a component: build the agent with \
                     `cargo build --release --target wasm32-wasip2`",
                ));
            }
            _ => {
                return Err(LoadError::new(
                    path,
                    "is not a WebAssembly component (bad header; truncated or not wasm): rebuild \
                     it with `cargo build --release --target wasm32-wasip2`",
                ));
            }
        }
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let key = format!("{}-{:016x}.cwasm", sha256_hex(&[wasm]), compat.finish());
        let cached = self.cache_dir.join(key);
        if cached.exists() {
            // SAFETY: files in the cache folder are written only by `serialize` below, for this
            // engine configuration (the key includes its compatibility hash).
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %cached.display(), error = %e, "discarding a bad compiled-cache entry")
                }
            }
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| LoadError::new(path, format!("does not compile: {e:#}")))?;
        match component.serialize() {
            Ok(bytes) => {
                let tmp = cached.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) =
                    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &cached))
                {
                    tracing::warn!(error = %e, "cannot write the compiled cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled agent"),
        }
        Ok(component)
    }

    /// Instantiate once and call `describe` under the usual limits: catches traps at start-up.
    async fn smoke_test(
        &self,
        pre: &AgentPre,
        ctx: &Arc<AgentContext>,
        path: &Path,
    ) -> Result<AgentInfo, LoadError> {
        let mut sandbox = Sandbox::new(
            &self.engine,
            pre,
            ctx.clone(),
            self.limits(ctx.manifest.language),
            "load-check".into(),
        )
        .await
        .map_err(|f| LoadError::new(path, format!("cannot be instantiated: {}", f.message)))?;
        sandbox
            .describe()
            .await
            .map_err(|f| LoadError::new(path, format!("describe() failed: {}", f.message)))
    }

    pub(crate) fn resolve_values(&self, manifest: &Manifest) -> HashMap<String, String> {
        let all = self.settings.load();
        let settings = all.get(&manifest.name);
        let mut values = HashMap::new();
        for key in &manifest.capabilities.config {
            let value = settings
                .and_then(|s| s.config.get(key))
                .or_else(|| manifest.config.get(key));
            if let Some(v) = value {
                values.insert(key.clone(), v.clone());
            }
        }
        for key in &manifest.capabilities.secrets {
            let value = std::env::var(secret_variable(&manifest.name, key))
                .ok()
                .or_else(|| settings.and_then(|s| s.secrets.get(key)).cloned());
            if let Some(v) = value {
                values.insert(key.clone(), v);
            }
        }
        values
    }

    /// The catalog of the manifest's MCP servers, their tokens taken from `values`.
    fn mcp_catalog(&self, manifest: &Manifest, values: &HashMap<String, String>) -> Catalog {
        let servers = manifest
            .capabilities
            .mcp
            .iter()
            .filter_map(|spec| {
                // The manifest was validated: the URL parses.
                let url = url::Url::parse(&spec.url).ok()?;
                let token = spec.authorization.as_ref().and_then(|key| {
                    let token = values.get(key).map(Secret::new);
                    if token.is_none() {
                        tracing::warn!(agent = %manifest.name, server = %spec.name, secret = %key, "the MCP server's authorization secret has no value");
                    }
                    token
                });
                Some(McpServer {
                    name: spec.name.clone(),
                    url,
                    token,
                })
            })
            .collect();
        Catalog::new(servers, self.config.mcp.clone())
    }

    fn kv_for(&self, manifest: &Manifest) -> Result<Option<Arc<KvStore>>, super::kv::KvError> {
        if manifest.capabilities.kv_quota_bytes == 0 {
            return Ok(None);
        }
        let mut stores = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&manifest.name) {
            return Ok(Some(store.clone()));
        }
        let store = Arc::new(KvStore::open(
            &self.kv_dir.join(format!("{}.json", manifest.name)),
        )?);
        stores.insert(manifest.name.clone(), store.clone());
        Ok(Some(store))
    }

    /// A fresh sandboxed instance of `version` for one call (≈10 µs with the pool for a Rust
    /// agent). Refused when the agent's language has `max-instances` sessions live.
    pub async fn session(
        &self,
        version: &Arc<AgentVersion>,
        call_id: &str,
    ) -> Result<AgentSession, AgentFault> {
        let language = version.manifest().language;
        let slot = self.take_slot(language)?;
        let sandbox = Sandbox::new(
            &self.engine,
            &version.pre,
            version.ctx.clone(),
            self.limits(language),
            call_id.to_string(),
        )
        .await?;
        Ok(AgentSession::new(sandbox, version.clone(), slot))
    }

    fn take_slot(&self, language: Language) -> Result<PoolSlot, AgentFault> {
        let max = self.config.pool(language).max_instances;
        let count = &self.in_use[language as usize];
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| AgentFault {
                kind: FaultKind::Limit,
                hook: "instantiate",
                message: format!(
                    "all {max} {language} agent instances are in use (`max-instances` of the \
                     {language} pool)"
                ),
            })?;
        Ok(PoolSlot(count.clone()))
    }

    /// The actions that replace a failed agent for the rest of the call.
    pub fn fallback_actions(&self) -> Vec<Action> {
        let f = &self.config.fallback;
        let mut actions = vec![Action::Say(f.apology.clone())];
        actions.push(match &f.transfer {
            Some(target) => Action::Transfer(target.clone()),
            None => Action::Hangup,
        });
        actions
    }
}

/// A `call-info` for tests, benchmarks and the harness.
pub fn test_call_info(call_id: &str, caller: &str, callee: &str) -> CallInfo {
    CallInfo {
        call_id: call_id.into(),
        direction: Direction::Inbound,
        caller: caller.into(),
        callee: callee.into(),
        transport: "test".into(),
        headers: Vec::new(),
        metadata: String::new(),
    }
}
