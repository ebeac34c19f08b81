//! `switchboard call` as a test peer: the binary run with arguments, its `event=` step lines
//! read as they come, and its exit code.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::agents::switchboard_bin;
use crate::support::ports::ports;
use crate::support::process::{Lines, Proc};

pub struct Softphone {
    pub process: Proc,
    /// The step lines printed on stdout.
    pub steps: Lines,
}

impl Softphone {
    /// Starts `switchboard call <args>` with RTP on reserved ports (the bundled config's range
    /// is overridden); its log (stderr) goes to the test's output.
    pub fn start(args: &[&str]) -> Softphone {
        let rtp = ports(20);
        let mut process = Proc::spawn(
            "switchboard call",
            Command::new(switchboard_bin())
                .arg("call")
                .args(args)
                .env("SWITCHBOARD__CALLS__RTP_PORT_MIN", rtp.first().to_string())
                .env("SWITCHBOARD__CALLS__RTP_PORT_MAX", rtp.last().to_string())
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        process.hold(rtp);
        let steps = Lines::new(process.child.stdout.take().expect("piped stdout"));
        Softphone { process, steps }
    }

    /// Ctrl-C, as a user at the terminal would press it.
    pub fn interrupt(&self) {
        self.process.signal(libc::SIGINT);
    }

    /// Waits (bounded) for the exit; returns the exit code and every step line. On timeout the
    /// process is killed (by the drop of `process`) and the test fails.
    pub fn finish(mut self, secs: u64) -> (i32, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.process.child.try_wait().expect("wait for softphone") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "switchboard call still running after {secs} s: {:#?}",
                self.steps.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.steps.drain(Duration::from_secs(5));
        let code = status.code().expect("exited, not killed by a signal");
        (code, std::mem::take(&mut self.steps.seen))
    }
}
