//! The `switchboard` binary as a test peer: a config on free ports, agents deployed into a
//! temporary folder, and its log read line by line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agents::{AgentsDir, Child, Lines, example_agents, example_manifest, switchboard_bin};
use crate::sip::free_port;

pub struct Host {
    pub sip_port: u16,
    /// Where the HTTP API listens (a free port chosen by the host).
    pub http: std::net::SocketAddr,
    pub agents: AgentsDir,
    pub log: Lines,
    pub process: Child,
    /// Data folder (agent kv, compiled cache, calls.db) and the config file.
    pub data: tempfile::TempDir,
    bin: PathBuf,
    rust_log: String,
    env: Vec<(String, String)>,
}

/// How to start a [`Host`].
pub struct HostOptions {
    /// The binary; `None` is the debug build of this workspace.
    pub bin: Option<PathBuf>,
    /// Agents to deploy: name, component file, manifest text.
    pub agents: Vec<(String, PathBuf, String)>,
    /// Added to the `[http]` table.
    pub http: String,
    /// TOML appended to the config.
    pub extra: String,
    /// `RUST_LOG` of the host (the default shows each call event at debug level).
    pub rust_log: String,
    /// More environment, e.g. `SWITCHBOARD__AGENTS__MAX_INSTANCES` overrides.
    pub env: Vec<(String, String)>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            bin: None,
            agents: Vec::new(),
            http: String::new(),
            extra: String::new(),
            rust_log: "info,rsipstack=warn,switchboard::call=debug".into(),
            env: Vec::new(),
        }
    }
}

impl Host {
    /// Start the binary with the example agents `examples` deployed, SIP and HTTP on free
    /// ports, the `[routes]` 1000/2000/3000 of the bundled config, and `extra` TOML appended.
    pub fn start(examples: &[&str], extra: &str) -> Host {
        Host::start_with_http(examples, "", extra)
    }

    /// Like [`start`](Self::start), with `http` added to the `[http]` table (e.g. tokens).
    pub fn start_with_http(examples: &[&str], http: &str, extra: &str) -> Host {
        let agents: Vec<_> = examples
            .iter()
            .map(|name| {
                (
                    *name,
                    std::fs::read_to_string(example_manifest(name)).unwrap(),
                )
            })
            .collect();
        Host::start_with_manifests(&agents, http, extra)
    }

    /// Like [`start_with_http`](Self::start_with_http), each example agent deployed with the
    /// given manifest text (to grant what a test needs, e.g. a transfer target on a free port).
    pub fn start_with_manifests(
        agents_and_manifests: &[(&str, String)],
        http: &str,
        extra: &str,
    ) -> Host {
        let examples = example_agents();
        Host::start_opts(HostOptions {
            agents: agents_and_manifests
                .iter()
                .map(|(name, manifest)| {
                    (
                        name.to_string(),
                        examples.join(format!("{name}.wasm")),
                        manifest.clone(),
                    )
                })
                .collect(),
            http: http.into(),
            extra: extra.into(),
            ..HostOptions::default()
        })
    }

    /// Start the host as `options` say.
    pub fn start_opts(options: HostOptions) -> Host {
        let agents = AgentsDir::new();
        for (name, wasm, manifest) in &options.agents {
            agents.install(name, wasm, manifest);
        }
        let data = tempfile::tempdir().unwrap();
        let sip_port = free_port();
        let cfg = data.path().join("switchboard.toml");
        std::fs::write(
            &cfg,
            format!(
                "data-dir = {data:?}\n[sip]\nudp-listen = \"127.0.0.1:{sip_port}\"\n\
                 tcp-listen = \"127.0.0.1:{sip_port}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{http}\n\
                 [agents]\ndir = {dir:?}\nmax-instances = 64\n\
                 [routes]\n\"1000\" = \"menu\"\n\"2000\" = \"receptionist\"\n\"3000\" = \"appointments\"\n{extra}\n",
                data = data.path().display().to_string(),
                dir = agents.path().display().to_string(),
                http = options.http,
                extra = options.extra,
            ),
        )
        .unwrap();
        let bin = options.bin.unwrap_or_else(switchboard_bin);
        let (process, log, http) = launch(&bin, &cfg, &options.rust_log, &options.env);
        Host {
            sip_port,
            http,
            agents,
            log,
            process,
            data,
            bin,
            rust_log: options.rust_log,
            env: options.env,
        }
    }

    /// kill -9 the host (no clean shutdown), then start it again on the same config and data.
    pub fn crash_and_restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        let cfg = self.data.path().join("switchboard.toml");
        let (process, log, http) = launch(&self.bin, &cfg, &self.rust_log, &self.env);
        self.process = process;
        self.log = log;
        self.http = http;
    }

    /// A log line (seen before or arriving within `secs`) containing every needle.
    pub fn expect(&mut self, needles: &[&str], secs: u64) -> String {
        self.log.expect(needles, secs)
    }

    /// The keypad digits recorded as call events so far (in order, all calls), waiting up to
    /// `secs` for at least `count` of them.
    pub fn dtmf_digits(&mut self, count: usize, secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let digits: String = self
                .log
                .seen
                .iter()
                .filter(|l| l.contains("call event"))
                .filter_map(|l| l.split("Dtmf { digits: \"").nth(1)?.chars().next())
                .collect();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if digits.len() >= count || left.is_zero() {
                return digits;
            }
            self.log.wait_for(&["call event", "Dtmf {"], left);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

fn launch(
    bin: &Path,
    cfg: &Path,
    rust_log: &str,
    env: &[(String, String)],
) -> (Child, Lines, std::net::SocketAddr) {
    let mut process = Child::spawn(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(process.child.stderr.take().unwrap());
    let running = log
        .wait_for(&["switchboard running"], Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the host did not start: {:?}", log.seen));
    let http = running
        .split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no http= address in {running:?}"));
    (process, log, http)
}
