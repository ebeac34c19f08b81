//! Building agents (examples and test fixtures) and deploying them into agents folders.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A `cargo` command as a shell would run it: without the variables cargo sets for the running
/// test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Build scripts such as ring's watch them, so
/// passing them on made every nested build and the next outer build recompile everything above
/// ring.
fn cargo() -> Command {
    as_from_a_shell(Command::new(env!("CARGO")))
}

/// `cmd` without the variables cargo sets for the running test (see [`cargo`]): for commands
/// that run cargo themselves, such as `switchboard test`.
pub fn as_from_a_shell(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_crate = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if per_crate {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

/// The one target folder every guest build of the tests shares (the example agents', whose
/// profile and lock the fixtures repeat): the SDK and its dependencies compile once.
pub fn guest_target() -> PathBuf {
    repo_root().join("plugins/target")
}

/// Build packages of a wasm32-wasip2 workspace into [`guest_target`] (cargo's own lock makes
/// parallel callers safe) and return its release output folder.
fn build_workspace(dir: &Path, env: &[(&str, &str)], packages: &[&str]) -> PathBuf {
    let target_dir = guest_target();
    let mut cmd = cargo();
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build (coverage, sanitizers) must not reach the guests.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for p in packages {
        cmd.args(["-p", p]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("run cargo");
    assert!(
        status.success(),
        "building agents in {} failed",
        dir.display()
    );
    target_dir.join("wasm32-wasip2/release")
}

/// The example agents in plugins/, built; returns the folder holding `<name>.wasm`.
pub fn example_agents() -> PathBuf {
    build_workspace(&repo_root().join("plugins"), &[], &[])
}

/// A test fixture agent from tests/fixtures (file name uses `_` for `-`).
pub fn fixture(package: &str) -> PathBuf {
    let out = build_workspace(&repo_root().join("tests/fixtures"), &[], &[package]);
    out.join(format!("{}.wasm", package.replace('-', "_")))
}

/// The `greeter` fixture built as version `version` (a distinct file per version).
pub fn greeter(version: &str) -> PathBuf {
    greeter_on(version, None)
}

/// The greeter built as `version`, asking for `model` when one is given.
pub fn greeter_on(version: &str, model: Option<&str>) -> PathBuf {
    // A version rebuilds only the greeter (cargo tracks the variable); each version's component
    // is copied out under its own name while a lock keeps other test processes from building
    // another version over it.
    let versions = guest_target().join("greeter");
    std::fs::create_dir_all(&versions).expect("greeter versions folder");
    let lock = std::fs::File::create(versions.join(".build.lock")).expect("greeter build lock");
    lock.lock().expect("the greeter build lock");
    let built = build_workspace(
        &repo_root().join("tests/fixtures"),
        &[
            ("GREETER_VERSION", version),
            ("GREETER_MODEL", model.unwrap_or_default()),
        ],
        &["greeter"],
    )
    .join("greeter.wasm");
    let out = versions.join(format!("greeter-v{version}.wasm"));
    std::fs::copy(&built, &out).expect("copy the greeter");
    out
}

/// The compiled-component cache every test runtime shares (under the workspace target/), so
/// an interpreter component is compiled by the first test only.
pub fn agent_cache() -> PathBuf {
    repo_root().join("target/agent-cache")
}

/// The manifest of an example agent.
pub fn example_manifest(name: &str) -> PathBuf {
    repo_root().join("plugins").join(name).join("agent.toml")
}

/// A temporary agents folder to deploy into.
pub struct AgentsDir {
    pub dir: tempfile::TempDir,
}

impl AgentsDir {
    pub fn new() -> AgentsDir {
        AgentsDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Deploy like operators should: write temp files, then rename them into place
    /// (manifest first, then the wasm).
    pub fn install(&self, name: &str, wasm: &Path, manifest: &str) {
        self.write(&format!("{name}.toml"), manifest.as_bytes());
        self.write(
            &format!("{name}.wasm"),
            &std::fs::read(wasm).expect("read wasm"),
        );
    }

    /// Atomically replace one file of the folder.
    pub fn write(&self, file: &str, bytes: &[u8]) {
        let tmp = self.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, bytes).expect("write temp");
        std::fs::rename(&tmp, self.path().join(file)).expect("rename");
    }
}

impl Default for AgentsDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Compile WebAssembly text (a component or a core module) for bad-input tests.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid wat")
}

/// The `switchboard` binary (debug build of this workspace), built on first use.
pub fn switchboard_bin() -> PathBuf {
    build_bin("switchboard", "switchboard", false)
}

/// The optimised `switchboard` binary, for benchmarks: the one `SWITCHBOARD_BENCH_BIN` names
/// (another commit's build, to compare two in one sitting), else this workspace's.
pub fn switchboard_release_bin() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_bin("switchboard", "switchboard", true),
    }
}

/// Binary `bin` of workspace package `package`, built on first use.
pub fn build_bin(package: &str, bin: &str, release: bool) -> PathBuf {
    let root = repo_root();
    let mut cargo = cargo();
    cargo
        .current_dir(&root)
        .args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "building the {bin} binary failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target
        .join(if release { "release" } else { "debug" })
        .join(bin)
}

/// A Python or JavaScript agent folder (an example in plugins/ or a fixture) built as
/// `switchboard deploy` builds it (its componentizer with the language's helper library);
/// returns its component. One build at a time per folder (locks under its target/); none while
/// the component is newer than the agent's files, the helper library and the contract.
pub fn interpreted_agent(dir: &Path) -> PathBuf {
    use switchboard::plugins::Language;
    let manifest = switchboard::plugins::manifest::Manifest::load(&dir.join("agent.toml"))
        .expect("the agent's manifest");
    let target = dir.join("target");
    std::fs::create_dir_all(&target).expect("the agent's target folder");
    // Not the build's own lock (deploy::build takes that one): this one spans the freshness
    // check too, so tests that need the same agent build it once.
    let lock = std::fs::File::create(target.join(".test-build.lock")).expect("test build lock");
    lock.lock().expect("the test build lock");
    let wasm = target.join(format!("{}.wasm", manifest.name));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let root = repo_root();
    let library = match manifest.language {
        Language::Python => root.join("guest-py/switchboard_agent"),
        Language::Js => root.join("guest-js"),
        Language::Rust => panic!("{} is a Rust agent: build it with cargo", dir.display()),
    };
    let sources = [dir, &library]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).expect("source folder"))
        .map(|e| e.expect("folder entry").path())
        .filter(|p| p.is_file())
        .chain([root.join("wit/agent.wit")]);
    let newest = sources.filter_map(|p| modified(&p)).max();
    if modified(&wasm).is_some_and(|built| Some(built) > newest) {
        return wasm;
    }
    let built = switchboard::plugins::deploy::build(dir).expect("the agent builds");
    assert_eq!(built, wasm);
    wasm
}

/// The example agent `name` (plugins/<name>) built for its manifest's language.
pub fn example_agent(name: &str) -> PathBuf {
    use switchboard::plugins::Language;
    let manifest = switchboard::plugins::manifest::Manifest::load(&example_manifest(name))
        .expect("the example's manifest");
    match manifest.language {
        Language::Rust => example_agents().join(format!("{name}.wasm")),
        _ => interpreted_agent(&repo_root().join("plugins").join(name)),
    }
}
