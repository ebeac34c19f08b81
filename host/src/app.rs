//! Wiring of the running host from its configuration: the agent runtime (load, watch, route),
//! the SIP endpoint, the call layer fed by it, and the HTTP API on top. This is the composition root; the modules it
//! wires know nothing of each other.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, ApiContext, ApiServer, LogFeed, Metrics};
use crate::bridges;
use crate::call::events::EventBus;
use crate::call::{self, CallDeps};
use crate::campaigns::{Campaigns, Clock};
use crate::config::Config;
use crate::live::LiveConfig;
use crate::model::OfflineConfig;
use crate::model::offline::OfflineProvider;
use crate::node::{self, Drain, Heartbeat};
use crate::outbox::Outbox;
use crate::plugins::watcher::{self, WatchHandle};
use crate::plugins::{Registry, Runtime};
use crate::recording::StoreSink;
use crate::sip::{SipConfig, SipEndpoint, SipEvent};
use crate::store::{Store, StoreConfig, StoreError, spawn_purge_task};
use crate::webrtc::{self, WebCalls};

/// The agent runtime of a host: loaded agents, routes and the folder watch.
pub struct Agents {
    pub config: Config,
    pub registry: Arc<Registry>,
    _watch: WatchHandle,
}

/// A running host: agents plus signalling and calls.
pub struct Host {
    pub agents: Agents,
    pub sip: Arc<SipEndpoint>,
    pub calls: Arc<CallDeps>,
    pub store: Arc<dyn Store>,
    pub api: ApiServer,
    /// The carriers' listener, when `[http.public]` is set.
    pub public: Option<bridges::PublicServer>,
    /// Set when the node starts draining (SIGTERM or the API); see [`Host::drain`].
    pub drain: Drain,
    /// Keeps this node's lease on the store.
    heartbeat: Heartbeat,
    dispatcher: tokio::task::JoinHandle<()>,
    /// Registers the live registration accounts this node holds.
    accounts: tokio::task::JoinHandle<()>,
    /// Hands the live webhooks to the outbox.
    webhooks: tokio::task::JoinHandle<()>,
    /// Held until the host is dropped (after `shutdown` has flushed the store).
    _lock: DataDirLock,
}

impl Host {
    /// Start everything: agents, SIP on the configured addresses, the call layer and the HTTP
    /// API. `logs` is the feed the process's log layer writes into (for the API's live events).
    pub async fn start(config: Config, logs: LogFeed) -> anyhow::Result<Host> {
        // Refuse an exposed, unauthenticated API before anything else starts.
        api::check_exposure(&config.http)?;
        config.node.check().map_err(anyhow::Error::msg)?;
        // One instance per data folder, before anything in it is read or written: a second
        // instance would otherwise close the first one's live calls as abandoned.
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let agents = Agents::start(config).await?;
        let config = &agents.config;
        // Ports are bound (HTTP probed) before the store is opened, so a busy port fails
        // the start without writing a record.
        probe_http(config.http.listen)?;
        if let Some(public) = &config.http.public {
            probe_http(public.listen)?;
        }
        // Accounts register once the live overlay over them is read (below).
        let sip_config = SipConfig {
            accounts: Vec::new(),
            ..config.sip.clone()
        };
        let (sip, mut sip_events) = SipEndpoint::start(sip_config)
            .await
            .context("starting SIP")?;
        let sip = Arc::new(sip);
        let store = match open_store(config).await {
            Ok(store) => store,
            Err(e) => {
                // Stop the transports before failing (accounts register only later).
                sip.shutdown().await;
                return Err(e);
            }
        };
        let heartbeat = Heartbeat::start(store.clone(), &config.node)
            .await
            .context("taking the node's lease on the store")?;
        spawn_purge_task(store.clone(), &store_config(config));
        // Before any call is dispatched, so the first call already sees the live routes.
        let provider = config
            .model
            .build()
            .map_err(|e| anyhow::anyhow!("[model]: {e}"))?;
        let live = LiveConfig::start(config, store.clone(), agents.registry.clone(), provider)
            .await
            .context("reading the live configuration")?;
        let accounts =
            node::accounts::spawn(store.clone(), &config.node, live.accounts(), sip.clone());
        sip.follow_trunks(live.trunks());
        let addrs = sip.local_addrs();
        let media_ip = config
            .sip
            .external_address
            .or(addrs.udp.map(|a| a.ip()))
            .or(addrs.tcp.map(|a| a.ip()))
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let node = config.node.id.clone();
        let events = EventBus::new(|live| StoreSink::start(store.clone(), node, live));
        // Subscribed before the first call so every call is counted (and every event sent).
        let metrics = Metrics::start(&events, &agents.registry);
        let outbox = Outbox::start(
            &live.webhooks().borrow(),
            store.clone(),
            store.clone(),
            &events,
        )?;
        let webhooks = spawn_webhook_applier(&live, outbox.clone());
        let calls = CallDeps::new(
            agents.registry.clone(),
            live.provider(),
            Arc::new(OfflineProvider::new(OfflineConfig::default())),
            call::CallConfig {
                recordings_dir: Some(
                    config
                        .calls
                        .recordings_dir
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join("recordings")),
                ),
                ..config.calls.clone()
            },
            media_ip,
            events,
        )?;
        let (registrations, _) = tokio::sync::broadcast::channel(64);
        let deps = calls.clone();
        let registration_tx = registrations.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(event) = sip_events.recv().await {
                match event {
                    SipEvent::IncomingCall(c) => call::spawn_incoming(deps.clone(), c),
                    SipEvent::CallCancelled { call_id } => deps.cancelled(&call_id),
                    SipEvent::Registration(status) => {
                        tracing::info!(?status, "registration state changed");
                        let _ = registration_tx.send(status);
                    }
                }
            }
        });
        let bridges = Arc::new(bridges::Bridges::new(
            config.http.public.as_ref(),
            &config.bridges,
            config.openai_sip.as_ref(),
            calls.clone(),
        )?);
        let webrtc = match &config.webrtc {
            Some(web) => Some(WebCalls::new(web, calls.clone())?),
            None => None,
        };
        let placer = Arc::new(api::Placer {
            calls: calls.clone(),
            sip: sip.clone(),
            bridges: bridges.clone(),
            live: live.clone(),
        });
        let campaigns = Campaigns::new(
            store.clone(),
            store.clone(),
            placer.clone(),
            calls.events.clone(),
            campaign_clock()?,
        );
        outbox.follow_campaigns(store.clone(), campaigns.subscribe());
        campaigns
            .start()
            .await
            .context("resuming the running campaigns")?;
        let drain = Drain::default();
        let api = api::serve(
            &config.http,
            ApiContext {
                calls: calls.clone(),
                sip: sip.clone(),
                store: store.clone(),
                registry: agents.registry.clone(),
                metrics,
                logs,
                registrations,
                placer,
                campaigns,
                webrtc: webrtc.clone(),
                config: api::masked_config(&config.source),
                live,
                outbox,
                queue: store.clone(),
                drain: drain.clone(),
                node: config.node.id.clone(),
            },
        )
        .await?;
        let public = match &config.http.public {
            Some(public) => {
                let mut routes = bridges.router();
                if let Some(web) = &webrtc {
                    routes = routes.merge(webrtc::http::public_routes(web.clone()));
                }
                Some(bridges::serve(public, routes).await?)
            }
            None => None,
        };
        Ok(Host {
            agents,
            sip,
            calls,
            store,
            api,
            public,
            drain,
            heartbeat,
            dispatcher,
            accounts,
            webhooks,
            _lock: lock,
        })
    }

    /// Takes the node out of service without cutting a call: new calls are refused (OPTIONS and
    /// INVITE get 503, `/ready` says draining), the registrations are released, and running
    /// calls go on until they end or `[node] drain-max-secs` has passed; then each remaining
    /// one hears the goodbye and is hung up. [`shutdown`](Self::shutdown) follows.
    pub async fn drain(&self) {
        self.drain.start();
        self.sip.drain();
        // Account changes must not register anything again.
        self.accounts.abort();
        if let Err(e) = self.sip.set_accounts(Vec::new()).await {
            tracing::warn!(error = %e, "registrations not released");
        }
        self.release_accounts().await;
        let node = &self.agents.config.node;
        let limit = Duration::from_secs(node.drain_max_secs);
        tracing::info!(
            calls = self.calls.active().len(),
            max_secs = node.drain_max_secs,
            "draining: waiting for the running calls to end"
        );
        if self.calls_ended_within(limit).await {
            return;
        }
        let left = self.calls.active();
        tracing::warn!(
            calls = left.len(),
            "drain time is up: the remaining calls hear the goodbye and are hung up"
        );
        for c in left {
            let goodbye = call::CallCommand::Goodbye(node.drain_goodbye.clone());
            self.calls.command(&c.id, goodbye);
        }
        if !self.calls_ended_within(GOODBYE_LIMIT).await {
            tracing::warn!(
                calls = self.calls.active().len(),
                "calls still up after their goodbye; hanging up"
            );
        }
    }

    /// Another node may register this node's accounts from now on.
    async fn release_accounts(&self) {
        if let Err(e) = self
            .store
            .release_accounts(&self.agents.config.node.id)
            .await
        {
            tracing::warn!(error = %e, "registration accounts not released; their lease expires");
        }
    }

    /// Whether every live call has ended within `limit`.
    async fn calls_ended_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.calls.active().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        true
    }

    /// Unregister, end live calls and stop listening.
    pub async fn shutdown(self) {
        for c in self.calls.active() {
            self.calls.command(&c.id, call::CallCommand::Hangup);
        }
        self.api.shutdown();
        self.accounts.abort();
        self.webhooks.abort();
        self.sip.shutdown().await;
        self.release_accounts().await;
        self.dispatcher.abort();
        // Give the ending calls' last events a moment to reach the store, then flush it.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        self.heartbeat.stop().await;
        if let Err(e) = self.store.shutdown().await {
            tracing::error!(error = %e, "flushing the call store failed");
        }
    }
}

/// How long a drained call's goodbye may take before the plain hang-up at shutdown.
const GOODBYE_LIMIT: Duration = Duration::from_secs(15);

/// How often a drain looks whether the running calls have ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Hands each live change of the webhooks to the outbox.
fn spawn_webhook_applier(live: &LiveConfig, outbox: Arc<Outbox>) -> tokio::task::JoinHandle<()> {
    let mut webhooks = live.webhooks();
    tokio::spawn(async move {
        while webhooks.changed().await.is_ok() {
            let list = webhooks.borrow_and_update().clone();
            if let Err(e) = outbox.set_webhooks(&list) {
                // Checked when the change was made.
                tracing::error!(error = %e, "webhooks not applied");
            }
        }
    })
}

/// The campaigns' wall clock: the system's, or for tests one that starts at
/// `SWITCHBOARD_TEST_CLOCK` (RFC 3339) and runs from there.
fn campaign_clock() -> anyhow::Result<Clock> {
    match std::env::var(TEST_CLOCK_ENV) {
        Ok(at) => {
            let at = at
                .parse()
                .with_context(|| format!("{TEST_CLOCK_ENV}={at} is not an RFC 3339 time"))?;
            tracing::warn!(%at, "campaigns run on a test clock");
            Ok(Clock::starting_at(at))
        }
        Err(_) => Ok(Clock::default()),
    }
}

/// Sets the campaigns' clock for tests.
pub const TEST_CLOCK_ENV: &str = "SWITCHBOARD_TEST_CLOCK";

/// The store's settings; the default path follows data-dir, an explicit one is kept.
fn store_config(config: &Config) -> StoreConfig {
    StoreConfig {
        path: if config.store.path == StoreConfig::default().path {
            config.data_dir.join("calls.db")
        } else {
            config.store.path.clone()
        },
        ..config.store.clone()
    }
}

/// Opens the call store, claims this node's id on it and closes the calls this node's crashed
/// run left open. Only called with the data folder's lock held, and the claim refuses a second
/// process with the same node id on a shared store: a live instance's calls are never taken
/// for abandoned. Other nodes' calls are left to their lease (see `crate::node`).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = crate::store::open(&store_config(config))
        .await
        .context("opening the call store")?;
    let node = &config.node.id;
    claim_node(store.as_ref(), node)
        .await
        .context("claiming the node id on the call store")?;
    let abandoned = store
        .close_abandoned_calls(node)
        .await
        .context("closing the calls a previous run left open")?;
    if abandoned > 0 {
        tracing::warn!(
            calls = abandoned,
            "calls left active by a previous run are marked ended abnormally"
        );
    }
    Ok(store)
}

/// Claims `node` on the store. The lock of a process with this id that just died goes with its
/// connection, which the server notices within moments: a refusal is retried that long.
async fn claim_node(store: &dyn Store, node: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
    loop {
        match store.claim_node(node).await {
            Err(StoreError::NodeTaken { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            done => return done,
        }
    }
}

/// How long a node id held by another process is waited for at start.
const CLAIM_PATIENCE: Duration = Duration::from_secs(3);

/// Checks that the HTTP address can be bound. The API binds it itself once the call layer
/// exists; this probe only keeps a busy port from failing the start after the store was
/// touched (port 0 always binds).
fn probe_http(addr: SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("the HTTP API cannot listen on {addr}"))
}

/// An exclusive lock on `<data-dir>/switchboard.lock` (flock), which holds the owner's pid.
/// The kernel drops it when the process ends, however it ends, so a crash leaves no stale lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub const FILE: &str = "switchboard.lock";

    /// Takes the lock without waiting; fails naming the holder's pid when another process has it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data folder {}", dir.display()))?;
        let path = dir.join(Self::FILE);
        // Not truncated on open: the pid in it is the holder's until we hold the lock.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "unknown pid".to_string(),
                    pid => format!("pid {pid}"),
                };
                anyhow::bail!(
                    "another switchboard ({holder}) is already running with the data folder {}; \
                     stop it first, or give this one another data-dir (lock file {})",
                    dir.display(),
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("writing our pid into {}", path.display()))?;
        Ok(DataDirLock { _file: file })
    }
}

impl Agents {
    /// Create the runtime, load every deployed agent and start watching for new versions.
    /// Agent problems are reported, never fatal; configuration problems are.
    pub async fn start(config: Config) -> anyhow::Result<Agents> {
        let runtime = Runtime::new(
            config.agents.clone(),
            config.agent.clone(),
            &config.data_dir,
        )?;
        let registry = Registry::new(runtime, config.routes.clone())
            .map_err(|e| anyhow::anyhow!("[routes]: {e}"))?;
        registry.load_all().await;
        let watch = watcher::watch(registry.clone());
        Ok(Agents {
            config,
            registry,
            _watch: watch,
        })
    }
}

/// The routing table and live agents as text, for `run` and `agents`.
pub fn describe_routes(registry: &Registry) -> String {
    let snap = registry.snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<16} {:<10} HASH",
        "NUMBER", "AGENT", "VERSION"
    );
    let version = |agent: &str| match snap.agents.get(agent) {
        Some(v) => (v.info.version.clone(), v.hash[..12].to_string()),
        None => ("-".into(), "(not loaded)".into()),
    };
    for (pattern, agent, _) in snap.routes.entries() {
        let (v, h) = version(agent);
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<10} {}",
            pattern.to_string(),
            agent,
            v,
            h
        );
    }
    match snap.routes.default_agent() {
        Some(agent) => {
            let (v, h) = version(agent);
            let _ = writeln!(out, "{:<16} {:<16} {:<10} {}", "(default)", agent, v, h);
        }
        None => {
            let _ = writeln!(out, "{:<16} (none: unrouted numbers get 404)", "(default)");
        }
    }
    for (name, v) in &snap.agents {
        let routed = snap.routes.entries().any(|(_, a, _)| a == name)
            || snap.routes.default_agent() == Some(name.as_str());
        if !routed {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<10} {}",
                "(no route)",
                name,
                v.info.version,
                &v.hash[..12]
            );
        }
    }
    out
}

/// Worker threads for the main runtime (SIP, calls, agents, API): the cores the media threads
/// leave, at least one, so that the process has one busy thread per core. With a worker per
/// core beside the media threads, the threads spent their time waking and parking each other
/// (1000 calls @ 100 cps on 2 cores: 20% more CPU on call set-up with two workers than with
/// one). `TOKIO_WORKER_THREADS` still overrides it.
pub fn main_worker_threads() -> usize {
    crate::runtimes::cores()
        .saturating_sub(crate::media::media_threads())
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::DataDirLock;

    #[test]
    fn a_data_folder_is_locked_once_and_the_refusal_names_holder_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data).unwrap();
        let pid = std::fs::read_to_string(data.join(DataDirLock::FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // flock conflicts between open files even within one process.
        let refused = DataDirLock::acquire(&data).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        assert!(refused.contains(&data.display().to_string()), "{refused}");
        // Released when dropped (and by the kernel when the process ends).
        drop(held);
        DataDirLock::acquire(&data).unwrap();
    }
}
