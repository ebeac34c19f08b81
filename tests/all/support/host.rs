//! The `switchboard` binary as a test peer: a config on reserved ports, agents deployed into a
//! temporary folder, and its log read line by line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::agents::{
    AgentsDir, agent_cache, example_agent, example_manifest, switchboard_bin,
    switchboard_release_bin,
};
use crate::support::ports::{Ports, ports};
use crate::support::process::{Lines, Proc};

pub struct Host {
    pub sip_port: u16,
    /// The SIP over TLS port (the one above `sip_port`), listening when the builder had `tls`.
    pub tls_port: u16,
    /// Where the HTTP API listens (a free port chosen by the host).
    pub http: std::net::SocketAddr,
    pub agents: AgentsDir,
    pub log: Lines,
    pub process: Proc,
    /// Data folder (agent kv, compiled cache, calls.db) and the config file.
    pub data: tempfile::TempDir,
    /// The SIP port (and the one above it) and the RTP range, reserved while the host lives.
    ports: Ports,
    bin: PathBuf,
    /// The config file, and the folder it runs in when not the test's.
    cfg: Box<Path>,
    cwd: Option<Box<Path>>,
    rust_log: String,
    env: Vec<(String, String)>,
}

/// How to start a [`Host`]: `Host::builder().examples(&["menu"]).calls("record = true").start()`.
/// The config puts SIP (UDP and TCP) and the RTP range on reserved ports, HTTP on a port the
/// host picks, the agents in a temporary folder, and routes 1000/2000/3000 as the bundled config
/// does.
pub struct HostBuilder {
    bin: Option<PathBuf>,
    /// Agents to deploy: name, component file, manifest text.
    agents: Vec<(String, PathBuf, String)>,
    http: String,
    sip: String,
    tls: Option<(PathBuf, PathBuf)>,
    calls: String,
    rtp_ports: u16,
    model: String,
    extra: String,
    rust_log: String,
    env: Vec<(String, String)>,
    /// A config file of the repository to run instead, and the folder to run it in.
    config_file: Option<(PathBuf, PathBuf)>,
}

/// Agent limits with compiled agents in the shared [`agent_cache`], for in-process runtimes.
pub fn shared_cache_config() -> switchboard::plugins::AgentsConfig {
    switchboard::plugins::AgentsConfig {
        cache_dir: Some(agent_cache()),
        ..Default::default()
    }
}

/// Compile the example agent `name` into the shared [`agent_cache`] in this process: a debug host
/// compiling an interpreter cold would outlast its start-up wait.
pub async fn warm_agent_cache(name: &str) {
    switchboard::plugins::harness::Harness::load_with(
        example_agent(name),
        example_manifest(name),
        shared_cache_config(),
        Default::default(),
    )
    .await
    .expect("the agent loads");
}

impl HostBuilder {
    /// Deploys the example agents `names` (plugins/) with their own manifests.
    pub fn examples(mut self, names: &[&str]) -> Self {
        for name in names {
            let manifest = std::fs::read_to_string(example_manifest(name)).unwrap();
            self = self.example_with_manifest(name, manifest);
        }
        self
    }

    /// Deploys the example agent `name` with `manifest` as its manifest (to grant what a test
    /// needs, e.g. a transfer target on a reserved port).
    pub fn example_with_manifest(self, name: &str, manifest: String) -> Self {
        self.agent(name, example_agent(name), manifest)
    }

    /// Deploys the component `wasm` as agent `name` with `manifest`.
    pub fn agent(mut self, name: &str, wasm: PathBuf, manifest: String) -> Self {
        self.agents.push((name.to_string(), wasm, manifest));
        self
    }

    /// Lines added to the `[http]` table (e.g. tokens).
    pub fn http(mut self, toml: &str) -> Self {
        self.http = toml.into();
        self
    }

    /// Lines added to the `[sip]` table (trunks go in `config`, as `[[sip.trunks]]`).
    pub fn sip(mut self, toml: &str) -> Self {
        self.sip = toml.into();
        self
    }

    /// SIP over TLS on `tls_port` with this certificate chain and key.
    pub fn tls(mut self, cert: &Path, key: &Path) -> Self {
        self.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Lines added to the `[calls]` table (codecs, recording; the RTP range is set here).
    pub fn calls(mut self, toml: &str) -> Self {
        self.calls = toml.into();
        self
    }

    /// How many RTP ports the host gets (2 a call; 200 unless set).
    pub fn rtp_ports(mut self, count: u16) -> Self {
        self.rtp_ports = count;
        self
    }

    /// The `[model]` table's lines (the bundled config's offline provider unless set).
    pub fn model(mut self, toml: &str) -> Self {
        self.model = toml.into();
        self
    }

    /// TOML appended to the config (other tables); each call adds to the last.
    pub fn config(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The optimised binary (built on first use), for benchmarks.
    pub fn release(mut self) -> Self {
        self.bin = Some(switchboard_release_bin());
        self
    }

    /// `RUST_LOG` of the host (the default shows each call event at debug level).
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// An environment variable of the host, e.g. `SWITCHBOARD__AGENTS__MAX_INSTANCES`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the config file `file` as it is, from `cwd` (where its relative paths point), with
    /// only what a test must change set by environment overrides: its SIP, TLS, HTTP and RTP
    /// ports, its data folder, and its agents folder (holding the agents deployed here).
    pub fn config_file(mut self, file: &Path, cwd: &Path) -> Self {
        self.config_file = Some((file.to_path_buf(), cwd.to_path_buf()));
        self
    }

    /// Starts the host and waits until it is running.
    pub fn start(mut self) -> Host {
        let agents = AgentsDir::new();
        for (name, wasm, manifest) in &self.agents {
            agents.install(name, wasm, manifest);
        }
        let data = tempfile::tempdir().unwrap();
        // SIP on the first (and TLS room on the second), RTP on the rest.
        let ports = ports(2 + self.rtp_ports);
        let sip_port = ports.first();
        let tls_port = ports.get(1);
        let tls = match &self.tls {
            Some((cert, key)) => format!(
                "tls-listen = \"127.0.0.1:{tls_port}\"\ntls-cert = {:?}\ntls-key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
            None => String::new(),
        };
        if let Some((file, cwd)) = self.config_file.take() {
            let overrides = [
                ("DATA_DIR", data.path().display().to_string()),
                ("SIP__UDP_LISTEN", format!("127.0.0.1:{sip_port}")),
                ("SIP__TCP_LISTEN", format!("127.0.0.1:{sip_port}")),
                ("SIP__TLS_LISTEN", format!("127.0.0.1:{tls_port}")),
                ("HTTP__LISTEN", "127.0.0.1:0".into()),
                ("CALLS__RTP_PORT_MIN", ports.get(2).to_string()),
                ("CALLS__RTP_PORT_MAX", ports.last().to_string()),
                ("AGENTS__DIR", agents.path().display().to_string()),
                ("AGENTS__CACHE_DIR", agent_cache().display().to_string()),
            ];
            self.env.extend(
                overrides
                    .into_iter()
                    .map(|(key, value)| (format!("SWITCHBOARD__{key}"), value)),
            );
            return self.launch(file, Some(cwd), agents, data, ports);
        }
        let model = match self.model.as_str() {
            "" => String::new(),
            model => format!("[model]\n{model}\n"),
        };
        let cache = format!("cache-dir = {:?}\n", agent_cache().display().to_string());
        let cfg = data.path().join("switchboard.toml");
        std::fs::write(
            &cfg,
            format!(
                "data-dir = {data:?}\n[sip]\nudp-listen = \"127.0.0.1:{sip_port}\"\n\
                 tcp-listen = \"127.0.0.1:{sip_port}\"\n{tls}{sip}\n[http]\nlisten = \"127.0.0.1:0\"\n{http}\n\
                 [calls]\nrtp-port-min = {rtp_min}\nrtp-port-max = {rtp_max}\n{calls}\n{model}\
                 [agents]\ndir = {dir:?}\nmax-instances = 64\n{cache}\
                 [routes]\n\"1000\" = \"menu\"\n\"2000\" = \"receptionist\"\n\"3000\" = \"appointments\"\n{extra}\n",
                data = data.path().display().to_string(),
                dir = agents.path().display().to_string(),
                http = self.http,
                sip = self.sip,
                rtp_min = ports.get(2),
                rtp_max = ports.last(),
                calls = self.calls,
                extra = self.extra,
            ),
        )
        .unwrap();
        self.launch(cfg, None, agents, data, ports)
    }

    fn launch(
        self,
        cfg: PathBuf,
        cwd: Option<PathBuf>,
        agents: AgentsDir,
        data: tempfile::TempDir,
        ports: Ports,
    ) -> Host {
        let bin = self.bin.unwrap_or_else(switchboard_bin);
        let (process, log, http) = launch(&bin, &cfg, cwd.as_deref(), &self.rust_log, &self.env);
        Host {
            sip_port: ports.first(),
            tls_port: ports.get(1),
            http,
            agents,
            log,
            process,
            data,
            ports,
            bin,
            cfg: cfg.into_boxed_path(),
            cwd: cwd.map(PathBuf::into_boxed_path),
            rust_log: self.rust_log,
            env: self.env,
        }
    }
}

impl Host {
    /// How to start one: see [`HostBuilder`].
    pub fn builder() -> HostBuilder {
        HostBuilder {
            bin: None,
            agents: Vec::new(),
            http: String::new(),
            sip: String::new(),
            tls: None,
            calls: String::new(),
            rtp_ports: 200,
            model: String::new(),
            extra: String::new(),
            rust_log: "info,rsipstack=warn,switchboard::call=debug".into(),
            env: Vec::new(),
            config_file: None,
        }
    }

    /// kill -9 the host (no clean shutdown), then start it again on the same config and data.
    pub fn crash_and_restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        let (process, log, http) = launch(
            &self.bin,
            &self.cfg,
            self.cwd.as_deref(),
            &self.rust_log,
            &self.env,
        );
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

    /// Calls the host has logged as ended so far.
    pub fn ended_calls(&self) -> usize {
        self.log
            .seen
            .iter()
            .filter(|l| l.contains("call ended"))
            .count()
    }

    /// Waits, at most `timeout`, until the host has logged `n` more ended calls than `before`
    /// (an [`ended_calls`](Self::ended_calls) count).
    pub fn wait_calls_ended(&mut self, before: usize, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.ended_calls() < before + n && std::time::Instant::now() < deadline {
            self.log
                .wait_for(&["call ended"], Duration::from_millis(500));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The host's RTP port range (first, last), reserved for it.
    pub fn rtp_ports(&self) -> (u16, u16) {
        (self.ports.get(2), self.ports.last())
    }
}

fn launch(
    bin: &Path,
    cfg: &Path,
    cwd: Option<&Path>,
    rust_log: &str,
    env: &[(String, String)],
) -> (Proc, Lines, std::net::SocketAddr) {
    let mut cmd = Command::new(bin);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut process = Proc::spawn(
        "switchboard",
        cmd.args(["run", "--config"])
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
