//! JavaScript agents: the componentize-js CLI (SpiderMonkey inside StarlingMonkey) turns the
//! author's `agent.js`, next to the helper library `guest-js/switchboard-agent.js`, into a
//! component. The build stages both in `<agent_dir>/target/js/` so the author's folder holds
//! only their code and `agent.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DeployError;
use crate::plugins::Language;

/// The helper library every agent imports as `switchboard-agent`; shipped inside the binary so
/// an installed `switchboard` builds agents without a checkout.
const HELPER: &str = include_str!("../../../../guest-js/switchboard-agent.js");
/// The contract the agent is built against (the SDK's current version).
const WIT: &str = include_str!("../../../../wit/agent.wit");
const WORLD: &str = "agent-plugin";
/// The module componentize-js starts from: it exports the author's default class as `agent`.
const ENTRY: &str = "switchboard-entry.js";
/// componentize-js features left out: wasi:http (the host refuses it; agents use
/// `switchboard:agent/http`), the fetch event loop that goes with it, and stdin/stdout.
const DISABLED_FEATURES: &[&str] = &["http", "fetch-event", "stdio"];
/// Overrides where the componentize-js CLI is found.
pub const TOOL_ENV: &str = "SWITCHBOARD_COMPONENTIZE_JS";
/// What to run when the tool is missing (the version `.ci/setup` pins).
pub const INSTALL: &str = "npm install -g @bytecodealliance/componentize-js@0.23.0";

/// Build `<agent_dir>/agent.js` into `<agent_dir>/target/<name>.wasm`.
pub(super) fn build(agent_dir: &Path, name: &str) -> Result<PathBuf, DeployError> {
    let source = agent_dir.join("agent.js");
    if !source.is_file() {
        return Err(DeployError::NoSource {
            dir: agent_dir.display().to_string(),
            file: "agent.js",
            language: Language::Js,
        });
    }
    // The tool runs in the staging folder: the paths it is given must not be relative.
    let absolute = |p: &Path| {
        std::path::absolute(p).map_err(|source| DeployError::Install {
            dir: p.display().to_string(),
            source,
        })
    };
    let tool = absolute(&find_tool()?)?;
    let agent_dir = &absolute(agent_dir)?;
    let staging = agent_dir.join("target/js");
    stage(agent_dir, name, &staging).map_err(|source| DeployError::Install {
        dir: staging.display().to_string(),
        source,
    })?;
    let out = agent_dir.join("target").join(format!("{name}.wasm"));
    tracing::info!(agent = name, tool = %tool.display(), "componentize-js: building");
    let status = command(&tool, &staging, &out)
        .status()
        .map_err(|source| DeployError::Tool {
            tool: tool.display().to_string(),
            source,
        })?;
    if !status.success() {
        return Err(DeployError::BuildFailed(agent_dir.display().to_string()));
    }
    Ok(out)
}

/// The componentize-js command line, run in the staging folder (module paths resolve there).
fn command(tool: &Path, staging: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.current_dir(staging)
        .arg(ENTRY)
        .args(["--wit", "wit", "--world-name", WORLD])
        .arg("--disable")
        .args(DISABLED_FEATURES)
        .arg("--out")
        .arg(out);
    cmd
}

/// Copy the author's modules (top-level `.js`/`.mjs` files) next to the helper library, the
/// entry module and the WIT; files of an earlier build are replaced.
fn stage(agent_dir: &Path, name: &str, staging: &Path) -> std::io::Result<()> {
    if staging.exists() {
        std::fs::remove_dir_all(staging)?;
    }
    std::fs::create_dir_all(staging.join("wit"))?;
    for entry in std::fs::read_dir(agent_dir)? {
        let path = entry?.path();
        let module = path.extension().is_some_and(|e| e == "js" || e == "mjs");
        if module && path.is_file() {
            std::fs::copy(&path, staging.join(path.file_name().expect("a file")))?;
        }
    }
    std::fs::write(staging.join("switchboard-agent.js"), HELPER)?;
    std::fs::write(staging.join(ENTRY), entry_source(name))?;
    std::fs::write(staging.join("wit/agent.wit"), WIT)
}

/// The entry module: the agent's `describe` reports the manifest's name.
fn entry_source(name: &str) -> String {
    let name = serde_json::to_string(name).expect("a string serializes");
    format!(
        "import Agent from \"./agent.js\";\n\
         import {{ serve }} from \"switchboard-agent\";\n\
         export const agent = serve(Agent, {{ name: {name} }});\n"
    )
}

/// `$SWITCHBOARD_COMPONENTIZE_JS`, else `componentize-js` on PATH, else the copy `.ci/setup`
/// installs into this checkout's `guest-js/node_modules`.
fn find_tool() -> Result<PathBuf, DeployError> {
    find_tool_in(std::env::var_os(TOOL_ENV), std::env::var_os("PATH"))
}

fn find_tool_in(
    overridden: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, DeployError> {
    if let Some(tool) = overridden {
        let tool = PathBuf::from(tool);
        return if tool.is_file() {
            Ok(tool)
        } else {
            Err(DeployError::Toolchain(format!(
                "{TOOL_ENV}={} is not a file; install the tool with `{INSTALL}`",
                tool.display()
            )))
        };
    }
    let on_path = path
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("componentize-js"));
    let checkout =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-js/node_modules/.bin/componentize-js");
    on_path
        .chain(std::iter::once(checkout))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            DeployError::Toolchain(format!(
                "componentize-js not found (PATH, {TOOL_ENV}); install it with `{INSTALL}`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_builds_the_entry_against_the_agent_world_without_wasi_http() {
        let cmd = command(
            Path::new("/opt/componentize-js"),
            Path::new("/a/target/js"),
            Path::new("/a/target/a.wasm"),
        );
        assert_eq!(cmd.get_program(), "/opt/componentize-js");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/a/target/js")));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "switchboard-entry.js",
                "--wit",
                "wit",
                "--world-name",
                "agent-plugin",
                "--disable",
                "http",
                "fetch-event",
                "stdio",
                "--out",
                "/a/target/a.wasm"
            ]
        );
    }

    #[test]
    fn staging_holds_the_author_modules_helper_entry_and_wit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.js"), "export default class {}").unwrap();
        std::fs::write(dir.path().join("prompts.mjs"), "export const p = 1;").unwrap();
        std::fs::write(dir.path().join("agent.toml"), "name = \"a\"").unwrap();
        let staging = dir.path().join("target/js");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("stale.js"), "").unwrap();
        stage(dir.path(), "a", &staging).unwrap();
        let mut files: Vec<String> = walk(&staging);
        files.sort();
        assert_eq!(
            files,
            [
                "agent.js",
                "prompts.mjs",
                "switchboard-agent.js",
                "switchboard-entry.js",
                "wit/agent.wit"
            ]
        );
        let entry = std::fs::read_to_string(staging.join(ENTRY)).unwrap();
        assert!(entry.contains(r#"serve(Agent, { name: "a" })"#), "{entry}");
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                out.extend(walk(&p).into_iter().map(|f| format!("{name}/{f}")));
            } else {
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn a_missing_tool_names_the_install_command() {
        let err = find_tool_in(Some("/nonexistent/componentize-js".into()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(INSTALL), "{err}");
    }
}
