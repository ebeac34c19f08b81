//! Building an agent (with cargo, or its language's componentizer) and installing it into an
//! agents folder the way the watcher expects: manifest first, then the wasm, each written to a
//! temporary file and renamed into place so the watcher never sees half a file.

mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};

use super::manifest::{Language, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}: not an agent crate (no Cargo.toml); pass the folder of an agent crate")]
    NotACrate(String),
    #[error("{0}")]
    Toolchain(String),
    #[error("cannot run cargo: {0}")]
    Cargo(std::io::Error),
    #[error("cannot run {tool}: {source}")]
    Tool {
        tool: String,
        source: std::io::Error,
    },
    #[error("{dir}: no {file}; a {language} agent's folder holds its {file} and agent.toml")]
    NoSource {
        dir: String,
        file: &'static str,
        language: Language,
    },
    #[error("building {0} failed; the running version stays live")]
    BuildFailed(String),
    #[error("cargo built no .wasm for {0}: is it a cdylib (`crate-type = [\"cdylib\"]`)?")]
    NoArtifact(String),
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
    #[error("cannot install into {dir}: {source}")]
    Install { dir: String, source: std::io::Error },
}

/// Build the agent in `agent_dir` for its manifest's language; returns the built component.
/// Compiler output goes to this process's stderr.
pub fn build(agent_dir: &Path) -> Result<PathBuf, DeployError> {
    let manifest = Manifest::load(&agent_dir.join("agent.toml"))?;
    match manifest.language {
        // cargo locks its own build folder.
        Language::Rust => rust::build(agent_dir),
        Language::Python => {
            let _lock = lock_target(agent_dir)?;
            python::build(agent_dir, &manifest)
        }
        Language::Js => {
            let _lock = lock_target(agent_dir)?;
            js::build(agent_dir, &manifest.name)
        }
    }
}

/// Hold `<agent_dir>/target/.build.lock` for one componentizer build: the builds stage files
/// under target/, so two at once (the `dev` watcher and a `switchboard deploy` or `test`) would
/// delete each other's. Released when the file is dropped.
fn lock_target(agent_dir: &Path) -> Result<std::fs::File, DeployError> {
    let target = agent_dir.join("target");
    let io = |source| DeployError::Install {
        dir: target.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&target).map_err(io)?;
    let lock = std::fs::File::create(target.join(".build.lock")).map_err(io)?;
    lock.lock().map_err(io)?;
    Ok(lock)
}

/// Install a built agent (its `agent.toml` and `wasm`) into `agents_dir`; returns its name.
pub fn install(crate_dir: &Path, wasm: &Path, agents_dir: &Path) -> Result<String, DeployError> {
    let manifest = Manifest::load(&crate_dir.join("agent.toml"))?;
    let io = |source| DeployError::Install {
        dir: agents_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(agents_dir).map_err(io)?;
    let manifest_text = std::fs::read(crate_dir.join("agent.toml")).map_err(io)?;
    let wasm_bytes = std::fs::read(wasm).map_err(io)?;
    for (ext, bytes) in [("toml", &manifest_text), ("wasm", &wasm_bytes)] {
        let target = agents_dir.join(format!("{}.{ext}", manifest.name));
        let tmp = agents_dir.join(format!(".{}.{ext}.partial", manifest.name));
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &target).map_err(io)?;
    }
    Ok(manifest.name)
}

/// Build and install; the usual `switchboard deploy` path.
pub fn deploy(crate_dir: &Path, agents_dir: &Path) -> Result<String, DeployError> {
    let wasm = build(crate_dir)?;
    install(crate_dir, &wasm, agents_dir)
}

/// Build and install on a blocking thread, logging the outcome (the `dev` loop's step).
pub async fn rebuild(crate_dir: &Path, agents_dir: &Path) -> Option<String> {
    let (c, a) = (crate_dir.to_path_buf(), agents_dir.to_path_buf());
    match tokio::task::spawn_blocking(move || deploy(&c, &a)).await {
        Ok(Ok(name)) => {
            tracing::info!(
                agent = name,
                "rebuilt and installed; the watcher reloads it"
            );
            Some(name)
        }
        Ok(Err(e)) => {
            tracing::error!("{e}");
            None
        }
        Err(e) => {
            tracing::error!("build task failed: {e}");
            None
        }
    }
}

/// Whether `path` is written by builds rather than by the author: the agent's own `target/`,
/// and npm's `node_modules/` and Python's `__pycache__/` anywhere below the agent.
fn is_build_output(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    relative.starts_with("target")
        || relative
            .components()
            .any(|c| c.as_os_str() == "node_modules" || c.as_os_str() == "__pycache__")
}

/// Keeps `switchboard dev` watching an agent crate; dropping it stops.
pub struct CrateWatch {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CrateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rebuild and install the agent whenever its sources, Cargo.toml or agent.toml change
/// (changes to build output, see [`is_build_output`], are ignored). Builds run one at a time; changes that
/// arrive during a build cause one more build.
pub fn watch_crate(crate_dir: PathBuf, agents_dir: PathBuf) -> anyhow::Result<CrateWatch> {
    use notify::{EventKind, RecursiveMode};
    use notify_debouncer_full::{DebounceEventResult, new_debouncer};

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let root = crate_dir.canonicalize()?;
    let mut debouncer = new_debouncer(
        std::time::Duration::from_millis(200),
        None,
        move |r: DebounceEventResult| {
            let relevant = r.is_ok_and(|events| {
                events.iter().any(|e| {
                    matches!(
                        e.kind,
                        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                    ) && e.paths.iter().any(|p| !is_build_output(&root, p))
                })
            });
            if relevant {
                let _ = tx.send(());
            }
        },
    )?;
    debouncer.watch(&crate_dir, RecursiveMode::Recursive)?;
    tracing::info!(crate_dir = %crate_dir.display(), "dev mode: rebuilding on source changes");
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            while rx.try_recv().is_ok() {}
            rebuild(&crate_dir, &agents_dir).await;
        }
    });
    Ok(CrateWatch {
        _debouncer: debouncer,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_is_target_node_modules_and_pycache() {
        let root = Path::new("/agents/a");
        for p in [
            "/agents/a/target/js/agent.js",
            "/agents/a/node_modules/x/index.js",
            "/agents/a/lib/__pycache__/m.pyc",
        ] {
            assert!(is_build_output(root, Path::new(p)), "{p}");
        }
        for p in [
            "/agents/a/agent.js",
            "/agents/a/agent.toml",
            "/agents/a/lib/targets.py",
        ] {
            assert!(!is_build_output(root, Path::new(p)), "{p}");
        }
    }
}
