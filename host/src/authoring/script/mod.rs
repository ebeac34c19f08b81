//! `switchboard test`: scripted conversations against an agent in the real runtime and the
//! real call core, with no phone, network or voice model. The agent is built with
//! [`deploy::build`] (whatever its language), loaded with its manifest, and each conversation
//! of each script is one call: the agent's `on-start`, then the call task and logic between an
//! in-memory leg and a script model that says what it is asked to and calls the tools the
//! script names. Every conversation gets a fresh runtime, so its key-value store starts empty.
//!
//! - [`format`]: the TOML script file.
//! - `leg`, `observe`: the in-memory leg and what the agent did, in order.
//! - [`matcher`]: expectations against what the agent did.
//! - `runner`: one conversation as a call.
//! - [`report`]: the results, as text or JSON.

pub mod format;
mod leg;
pub mod matcher;
mod observe;
pub mod report;
mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use format::{Script, ScriptError};
pub use observe::Observed;
pub use report::Report;

use crate::plugins::deploy::{self, DeployError};
use crate::plugins::runtime::InterpreterPool;
use crate::plugins::{AgentSettings, AgentsConfig, LoadError, Runtime};

/// Why the scripts could not run at all (as against a conversation failing).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("{0}: no scripts to run; put *.toml scripts in its tests/ folder or name them")]
    NoScripts(String),
    #[error(transparent)]
    Build(#[from] DeployError),
    #[error("the agent does not load: {0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Io(String),
}

/// The scripts to run: `named` if any, else every `*.toml` in `agent_dir/tests`, by name.
pub fn scripts_for(agent_dir: &Path, named: &[PathBuf]) -> Result<Vec<PathBuf>, TestError> {
    if !named.is_empty() {
        return Ok(named.to_vec());
    }
    let dir = agent_dir.join("tests");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        return Err(TestError::NoScripts(agent_dir.display().to_string()));
    }
    Ok(found)
}

/// Build the agent in `agent_dir`, then run every conversation of `scripts` against it under
/// the limits of `agents` (the host's `[agents]`). Scripts are read first, so a bad script is
/// reported before the build.
pub async fn run(
    agent_dir: &Path,
    scripts: &[PathBuf],
    agents: &AgentsConfig,
) -> Result<Report, TestError> {
    let scripts = scripts
        .iter()
        .map(|p| Script::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = agent_dir.to_path_buf();
    let wasm = tokio::task::spawn_blocking(move || deploy::build(&dir))
        .await
        .map_err(|e| TestError::Io(format!("the build task failed: {e}")))??;
    let data = tempfile::tempdir().map_err(|e| TestError::Io(e.to_string()))?;
    let dist = data.path().join("agent");
    let name = deploy::install(agent_dir, &wasm, &dist)?;
    // One call at a time, whatever the language.
    let one_call = |pool: InterpreterPool| InterpreterPool {
        max_instances: 1,
        ..pool
    };
    let config = AgentsConfig {
        max_instances: 1,
        python: one_call(agents.python),
        js: one_call(agents.js),
        ..agents.clone()
    };
    let mut reports = Vec::new();
    for script in &scripts {
        for conversation in &script.conversations {
            // Compiled code is kept between runtimes; the key-value store is not.
            let kv = data.path().join("kv");
            if kv.exists() {
                std::fs::remove_dir_all(&kv).map_err(|e| TestError::Io(e.to_string()))?;
            }
            let settings = BTreeMap::from([(
                name.clone(),
                AgentSettings {
                    config: conversation.config.clone(),
                    ..AgentSettings::default()
                },
            )]);
            let runtime = Runtime::new(config.clone(), settings, data.path())
                .map_err(|e| TestError::Io(format!("{e:#}")))?;
            let version = runtime
                .load(
                    &dist.join(format!("{name}.wasm")),
                    &dist.join(format!("{name}.toml")),
                )
                .await?;
            let declared = &version.manifest().capabilities.config;
            if let Some(key) = conversation.config.keys().find(|k| !declared.contains(k)) {
                return Err(ScriptError {
                    path: format!("{}:{}", script.path, conversation.line),
                    message: format!(
                        "config key `{key}` is not among the agent's [capabilities] config keys"
                    ),
                }
                .into());
            }
            let version = Arc::new(version);
            reports.push(runner::run(&runtime, &version, &script.path, conversation).await);
        }
    }
    Ok(Report::new(reports))
}
