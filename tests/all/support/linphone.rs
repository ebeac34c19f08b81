//! linphone (`linphonec`, the console client of liblinphone) as a test peer: a config written
//! into a temporary folder, commands on its stdin and its call state lines read from stdout.
//!
//! What linphonec 5.1 needs to run headless here:
//! - `$HOME/.local/share/linphone` must exist. liblinphone keeps its database there and does not
//!   create the folder; when the database cannot be opened, the core never finishes starting,
//!   so no SIP socket is ever opened (`ports` says `sip port = 0`) and calls go nowhere.
//! - `[sip] bind_address` and `[rtp] bind_address` keep its sockets on 127.0.0.1 (the default
//!   is every interface), `sip_tcp_port=0`/`sip_tls_port=0` turn off TCP (5060 by default) and
//!   TLS, and `guess_hostname=0` keeps the From/Contact host as configured (not the address of
//!   the machine's first interface).
//! - `soundcard use files` replaces the (missing) sound card: `play FILE` is the microphone,
//!   `record FILE` receives what the call plays (a WAV at the codec's rate: 48 kHz for Opus).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::media::write_wav;
use crate::support::ports::ports;
use crate::support::process::{Lines, Proc};
use crate::support::tempdir;

pub struct Linphone {
    pub rtp_port: u16,
    /// HOME, config, microphone, recording and log.
    pub dir: tempfile::TempDir,
    /// Lines linphonec printed on stdout (prompts, command answers, call states).
    pub out: Lines,
    stdin: ChildStdin,
    process: Proc,
}

impl Linphone {
    /// Starts linphonec on free ports of 127.0.0.1 with its default codecs (Opus first),
    /// `mic` (8 kHz mono) as its microphone and its recording of each call in
    /// [`recording`](Self::recording); returns once its SIP socket is open.
    pub fn start(mic: &[i16]) -> Linphone {
        // SIP (and a spare), then RTP and RTCP.
        let ports = ports(4);
        let (sip_port, rtp_port) = (ports.first(), ports.get(2));
        let dir = tempdir("linphone");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
        let rc = dir.path().join("linphonerc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\nsip_port={sip_port}\nsip_tcp_port=0\nsip_tls_port=0\nbind_address=127.0.0.1\n\
                 use_ipv6=0\nguess_hostname=0\ncontact=sip:linphone@127.0.0.1:{sip_port}\n\
                 [rtp]\naudio_rtp_port={rtp_port}\nbind_address=127.0.0.1\n\
                 [sound]\nechocancellation=0\n"
            ),
        )
        .unwrap();
        let mic_path = dir.path().join("mic.wav");
        write_wav(&mic_path, 8000, mic);
        let mut process = Proc::spawn(
            "linphonec",
            Command::new("linphonec")
                .arg("-c")
                .arg(&rc)
                .arg("-l")
                .arg(dir.path().join("linphone.log"))
                .args(["-d", "4"])
                .env("HOME", &home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        process.hold(ports);
        let stdin = process.child.stdin.take().unwrap();
        let out = Lines::new(process.child.stdout.take().unwrap());
        let mut phone = Linphone {
            rtp_port,
            dir,
            out,
            stdin,
            process,
        };
        phone.command("soundcard use files");
        phone.expect(&["Using wav files instead of soundcard"], 10);
        phone.command(&format!("play {}", mic_path.display()));
        phone.command(&format!("record {}", phone.recording().display()));
        // The core opens its SIP socket once it has started: poll `ports` until it says so.
        let deadline = Instant::now() + Duration::from_secs(10);
        let open = format!("sip port = {sip_port}");
        loop {
            phone.command("ports");
            let answer = phone.out.wait_for(&["sip port = "], Duration::from_secs(2));
            if answer.is_some_and(|line| line.contains(&open)) {
                return phone;
            }
            assert!(
                Instant::now() < deadline,
                "linphonec did not open its SIP port: {:#?}\n{}",
                phone.out.seen,
                phone.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One line on linphonec's stdin.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("linphonec stdin ({line}): {e}\n{}", self.log()));
    }

    /// A stdout line (seen before or arriving within `secs`) containing every needle; panics
    /// with linphonec's output and log otherwise.
    pub fn expect(&mut self, needles: &[&str], secs: u64) -> String {
        let has = |line: &String| needles.iter().all(|n| line.contains(n));
        if let Some(line) = self.out.seen.iter().find(|l| has(l)) {
            return line.clone();
        }
        match self.out.wait_for(needles, Duration::from_secs(secs)) {
            Some(line) => line,
            None => panic!(
                "linphonec printed no line with {needles:?} in {secs} s: {:#?}\n{}",
                self.out.seen,
                self.log()
            ),
        }
    }

    /// Where linphonec records what it hears (written when the call ends).
    pub fn recording(&self) -> PathBuf {
        self.dir.path().join("heard.wav")
    }

    /// `quit`, then waits (bounded) for linphonec to exit, so its recording is complete.
    pub fn quit(&mut self, secs: u64) {
        self.command("quit");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.process.is_running() {
            assert!(
                Instant::now() < deadline,
                "linphonec still running {secs} s after quit: {:#?}",
                self.out.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 60 lines of liblinphone's log (for failure messages).
    pub fn log(&self) -> String {
        tail(&self.dir.path().join("linphone.log"), 60)
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
