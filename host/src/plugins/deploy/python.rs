//! Python agents: `componentize-py` turns the agent's `app.py` (class `Agent`) into a component
//! that embeds CPython, with the helper library `switchboard_agent` (guest-py/) and the
//! contract (wit/agent.wit) on its module path. Both are compiled into this binary and written
//! under the agent's target/ folder at build time, so an agent folder holds only the author's
//! code and agent.toml, and a deployed binary needs no checkout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::DeployError;
use crate::plugins::manifest::{Language, Manifest};

/// The componentizer release the helper library and the host's linker are tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// Overrides the `componentize-py` found on PATH.
pub const TOOL_ENV: &str = "SWITCHBOARD_COMPONENTIZE_PY";
/// The module componentize-py imports; it must define the exported class `Agent`.
const ENTRY_MODULE: &str = "app";
/// The world of wit/agent.wit the component implements.
const WORLD: &str = "agent-plugin";

/// The contract and the helper library, as files under the staging folder.
const SDK_FILES: &[(&str, &str)] = &[
    ("wit/agent.wit", include_str!("../../../../wit/agent.wit")),
    (
        "lib/switchboard_agent/__init__.py",
        include_str!("../../../../guest-py/switchboard_agent/__init__.py"),
    ),
    (
        "lib/switchboard_agent/_errors.py",
        include_str!("../../../../guest-py/switchboard_agent/_errors.py"),
    ),
    (
        "lib/switchboard_agent/actions.py",
        include_str!("../../../../guest-py/switchboard_agent/actions.py"),
    ),
    (
        "lib/switchboard_agent/call.py",
        include_str!("../../../../guest-py/switchboard_agent/call.py"),
    ),
    (
        "lib/switchboard_agent/config.py",
        include_str!("../../../../guest-py/switchboard_agent/config.py"),
    ),
    (
        "lib/switchboard_agent/http.py",
        include_str!("../../../../guest-py/switchboard_agent/http.py"),
    ),
    (
        "lib/switchboard_agent/kv.py",
        include_str!("../../../../guest-py/switchboard_agent/kv.py"),
    ),
    (
        "lib/switchboard_agent/log.py",
        include_str!("../../../../guest-py/switchboard_agent/log.py"),
    ),
    (
        "lib/switchboard_agent/mcp.py",
        include_str!("../../../../guest-py/switchboard_agent/mcp.py"),
    ),
];

/// Build the Python agent in `agent_dir` into `<agent_dir>/target/<name>.wasm`.
/// The componentizer's output goes to this process's stderr.
pub(super) fn build(agent_dir: &Path, manifest: &Manifest) -> Result<PathBuf, DeployError> {
    if !agent_dir.join(format!("{ENTRY_MODULE}.py")).is_file() {
        return Err(DeployError::NoSource {
            dir: agent_dir.display().to_string(),
            file: "app.py",
            language: Language::Python,
        });
    }
    // The componentizer runs in the agent's folder: every path it is given must be absolute.
    let agent_dir = &std::path::absolute(agent_dir).map_err(|source| DeployError::Install {
        dir: agent_dir.display().to_string(),
        source,
    })?;
    let target = agent_dir.join("target");
    let sdk = target.join("switchboard-py");
    write_sdk(&sdk).map_err(|source| DeployError::Install {
        dir: sdk.display().to_string(),
        source,
    })?;
    let out = target.join(format!("{}.wasm", manifest.name));
    let tool = std::env::var_os(TOOL_ENV).unwrap_or_else(|| "componentize-py".into());
    let status = command(&tool, agent_dir, &sdk, &out)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => DeployError::Toolchain(format!(
                "{} not found: install it with `python3 -m pip install \
                 componentize-py=={COMPONENTIZE_PY_VERSION}` or set {TOOL_ENV}",
                tool.to_string_lossy()
            )),
            _ => DeployError::Tool {
                tool: tool.to_string_lossy().into_owned(),
                source,
            },
        })?;
    if !status.success() {
        return Err(DeployError::BuildFailed(agent_dir.display().to_string()));
    }
    Ok(out)
}

/// Write the contract and the helper library under `sdk` (rewritten every build, so a new
/// switchboard binary brings its own library).
fn write_sdk(sdk: &Path) -> std::io::Result<()> {
    for (path, text) in SDK_FILES {
        let file = sdk.join(path);
        std::fs::create_dir_all(file.parent().expect("SDK files are in folders"))?;
        std::fs::write(file, text)?;
    }
    Ok(())
}

/// `componentize-py -d <wit> -w agent-plugin componentize app -p <agent> -p <lib> -o <out>`.
fn command(tool: &OsString, agent_dir: &Path, sdk: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.current_dir(agent_dir)
        .arg("-d")
        .arg(sdk.join("wit"))
        .args(["-w", WORLD, "componentize", ENTRY_MODULE])
        .arg("-p")
        .arg(agent_dir)
        .arg("-p")
        .arg(sdk.join("lib"))
        .arg("-o")
        .arg(out);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_componentize_py_on_app_with_the_helper_library_on_the_path() {
        let cmd = command(
            &"componentize-py".into(),
            Path::new("/agents/desk"),
            Path::new("/agents/desk/target/switchboard-py"),
            Path::new("/agents/desk/target/desk.wasm"),
        );
        assert_eq!(cmd.get_program(), "componentize-py");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/agents/desk")));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-d",
                "/agents/desk/target/switchboard-py/wit",
                "-w",
                "agent-plugin",
                "componentize",
                "app",
                "-p",
                "/agents/desk",
                "-p",
                "/agents/desk/target/switchboard-py/lib",
                "-o",
                "/agents/desk/target/desk.wasm",
            ]
        );
    }

    #[test]
    fn stages_every_file_of_the_helper_library() {
        let dir = tempfile::tempdir().unwrap();
        write_sdk(dir.path()).unwrap();
        assert!(dir.path().join("wit/agent.wit").is_file());
        let shipped: std::collections::BTreeSet<_> = std::fs::read_dir(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-py/switchboard_agent"),
        )
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".py"))
        .collect();
        for name in &shipped {
            let staged = dir.path().join("lib/switchboard_agent").join(name);
            assert!(staged.is_file(), "{name} is not compiled into the binary");
        }
    }

    #[test]
    fn a_folder_without_app_py_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = Manifest::parse("name = \"p\"\nlanguage = \"python\"", "p.toml").unwrap();
        let err = build(dir.path(), &manifest).unwrap_err();
        assert!(err.to_string().contains("app.py"), "{err}");
    }

    #[test]
    fn a_missing_componentizer_names_the_install_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "").unwrap();
        let manifest = Manifest::parse("name = \"p\"\nlanguage = \"python\"", "p.toml").unwrap();
        // SAFETY: only this test reads TOOL_ENV, and it sets it before building.
        unsafe { std::env::set_var(TOOL_ENV, "/nonexistent/componentize-py") };
        let err = build(dir.path(), &manifest).unwrap_err();
        assert!(
            err.to_string()
                .contains("python3 -m pip install componentize-py==0.25.1"),
            "{err}"
        );
    }
}
