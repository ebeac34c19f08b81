//! Peer programs: whether one is installed, and a guard that kills it (and whatever it
//! started) when dropped, even when the test fails.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ports::Ports;

/// Whether a peer binary exists. Under `CI=true` a missing binary fails the test;
/// elsewhere the test is skipped with a message.
pub fn require(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin} || test -x /usr/sbin/{bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    present_or_skip(&format!("peer `{bin}`"), found)
}

/// Whether `python3` can import `module` (e.g. `pjsua2`, from the pip package
/// `pjsua2-python`); missing is handled like [`require`].
pub fn require_python(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    present_or_skip(&format!("python module `{module}`"), found)
}

/// Whether `what` was found; missing is handled like [`require`].
pub fn present_or_skip(what: &str, found: bool) -> bool {
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required {what} is not installed (CI=true)");
        }
        eprintln!("SKIP: {what} not installed");
    }
    found
}

/// A child process, in its own process group, killed with all its descendants (kamailio
/// forks workers; tshark runs dumpcap; chromium its renderers) and reaped when dropped, so it
/// never outlives its test, even one that fails. Every program a test starts runs in one.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    /// Ports reserved for it, given back after it is dead.
    ports: Vec<Ports>,
}

impl Proc {
    /// Starts `cmd` (its stdio as the caller set it) in a process group of its own.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            ports: Vec::new(),
        }
    }

    /// Keeps `ports` reserved while the process lives.
    pub fn hold(&mut self, ports: Ports) {
        self.ports.push(ports);
    }

    /// Waits for exit up to `timeout`; kills it and returns None on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                self.kill_group();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it now and hands back the ports it held (to start another on them).
    pub fn take_ports(mut self) -> Vec<Ports> {
        self.kill_group();
        std::mem::take(&mut self.ports)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) has no memory effects.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "kill {signal} {}", self.name);
    }

    /// SIGKILL to the whole process group (the child is its leader), then reap.
    fn kill_group(&mut self) {
        // SAFETY: kill(2) has no memory effects; a negative pid names the process group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Even an exited leader may have left workers in its group.
        self.kill_group();
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
