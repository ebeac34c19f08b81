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
    let mut cmd = Command::new(env!("CARGO"));
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

/// Build a wasm32-wasip2 workspace (cargo's own lock makes parallel callers safe) and return
/// its release output folder.
fn build_workspace(
    dir: &Path,
    target_dir: &Path,
    env: &[(&str, &str)],
    packages: &[&str],
) -> PathBuf {
    let mut cmd = cargo();
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir)
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
    let dir = repo_root().join("plugins");
    build_workspace(&dir, &dir.join("target"), &[], &[])
}

/// A test fixture agent from tests/fixtures (file name uses `_` for `-`).
pub fn fixture(package: &str) -> PathBuf {
    let dir = repo_root().join("tests/fixtures");
    let out = build_workspace(&dir, &dir.join("target"), &[], &[package]);
    out.join(format!("{}.wasm", package.replace('-', "_")))
}

/// The `greeter` fixture built as version `version` (a distinct file per version).
pub fn greeter(version: &str) -> PathBuf {
    let dir = repo_root().join("tests/fixtures");
    let target = dir.join(format!("target/greeter-v{version}"));
    build_workspace(&dir, &target, &[("GREETER_VERSION", version)], &["greeter"])
        .join("greeter.wasm")
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
    build_switchboard(false)
}

/// The optimised `switchboard` binary (release build), for benchmarks; built on first use.
pub fn switchboard_release_bin() -> PathBuf {
    build_switchboard(true)
}

fn build_switchboard(release: bool) -> PathBuf {
    let root = repo_root();
    let mut cmd = cargo();
    cmd.current_dir(&root).args([
        "build",
        "--quiet",
        "-p",
        "switchboard",
        "--bin",
        "switchboard",
    ]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "building the switchboard binary failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target
        .join(if release { "release" } else { "debug" })
        .join("switchboard")
}

/// A child process killed (with its process group) when dropped, even if the test fails.
pub struct Child {
    pub child: std::process::Child,
}

impl Child {
    pub fn spawn(cmd: &mut Command) -> Child {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Child {
            child: cmd.spawn().expect("spawn child process"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // The whole process group: peers may have spawned helpers of their own.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines from a child's pipe, collected on a thread so reads never block the test.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Collect lines until the pipe closes (the child exited) or `timeout` passes.
    pub fn drain(&mut self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        while let Ok(line) = self.rx.recv_timeout(left()) {
            self.seen.push(line);
        }
    }

    /// A line (seen before, or arriving within `secs`) containing every needle; panics with
    /// all lines seen when there is none.
    pub fn expect(&mut self, needles: &[&str], secs: u64) -> String {
        let has = |line: &String| needles.iter().all(|n| line.contains(n));
        if let Some(line) = self.seen.iter().find(|l| has(l)) {
            return line.clone();
        }
        self.wait_for(needles, std::time::Duration::from_secs(secs))
            .unwrap_or_else(|| panic!("no line with {needles:?}: {:#?}", self.seen))
    }

    /// Wait up to `timeout` for a line containing every one of `needles`.
    pub fn wait_for(&mut self, needles: &[&str], timeout: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}
