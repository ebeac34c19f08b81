//! Rust agents: `cargo build --release --target wasm32-wasip2`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::DeployError;

/// `cargo build --release --target wasm32-wasip2` in `crate_dir`; returns the built component.
/// Compiler output goes to this process's stderr.
pub(super) fn build(crate_dir: &Path) -> Result<PathBuf, DeployError> {
    let manifest_path = crate_dir.join("Cargo.toml");
    if !manifest_path.is_file() {
        return Err(DeployError::NotACrate(crate_dir.display().to_string()));
    }
    let manifest_path = manifest_path.canonicalize().map_err(DeployError::Cargo)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(crate_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(DeployError::Cargo)?;
    let mut wasm = None;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["manifest_path"].as_str().map(Path::new) == Some(manifest_path.as_path())
            && let Some(files) = msg["filenames"].as_array()
        {
            wasm = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(wasm);
        }
    }
    let status = child.wait().map_err(DeployError::Cargo)?;
    if !status.success() {
        return Err(DeployError::BuildFailed(crate_dir.display().to_string()));
    }
    wasm.ok_or_else(|| DeployError::NoArtifact(crate_dir.display().to_string()))
}
