//! Wiring of the running host from its configuration. Until signalling lands this is the agent
//! runtime: load, watch and route.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::Config;
use crate::plugins::watcher::{self, WatchHandle};
use crate::plugins::{Registry, Runtime};

/// A running host.
pub struct Host {
    pub config: Config,
    pub registry: Arc<Registry>,
    _watch: WatchHandle,
}

impl Host {
    /// Create the runtime, load every deployed agent and start watching for new versions.
    /// Agent problems are reported, never fatal; configuration problems are.
    pub async fn start(config: Config) -> anyhow::Result<Host> {
        let runtime = Runtime::new(
            config.agents.clone(),
            config.agent.clone(),
            &config.data_dir,
        )?;
        let registry = Registry::new(runtime, config.routes.clone())
            .map_err(|e| anyhow::anyhow!("[routes]: {e}"))?;
        registry.load_all().await;
        let watch = watcher::watch(registry.clone());
        Ok(Host {
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
