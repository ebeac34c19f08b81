//! The `switchboard` binary as a test peer: a config on free ports, agents deployed into a
//! temporary folder, and its log read line by line.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agents::{
    AgentsDir, Child, Lines, example_agents, example_manifest, switchboard_bin,
    switchboard_release_bin,
};
use crate::sip::free_port;

pub struct Host {
    pub launch: Launch,
    pub sip_port: u16,
    /// Where the HTTP API listens (a free port chosen by the host).
    pub http: std::net::SocketAddr,
    pub agents: AgentsDir,
    pub log: Lines,
    pub process: Child,
    /// Data folder (agent kv, compiled cache, calls.db) and the config file.
    pub data: tempfile::TempDir,
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
        Host::start_as(Launch::test(), agents_and_manifests, http, extra)
    }

    /// Like [`start_with_manifests`](Self::start_with_manifests), run as `launch` says.
    pub fn start_as(
        launch: Launch,
        agents_and_manifests: &[(&str, String)],
        http: &str,
        extra: &str,
    ) -> Host {
        let agents = AgentsDir::new();
        for (name, manifest) in agents_and_manifests {
            agents.install(
                name,
                &example_agents().join(format!("{name}.wasm")),
                manifest,
            );
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
            ),
        )
        .unwrap();
        let (process, log, http) = launch.spawn(&cfg);
        Host {
            launch,
            sip_port,
            http,
            agents,
            log,
            process,
            data,
        }
    }

    /// kill -9 the host (no clean shutdown), then start it again on the same config and data.
    pub fn crash_and_restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        let cfg = self.data.path().join("switchboard.toml");
        let (process, log, http) = self.launch.spawn(&cfg);
        self.process = process;
        self.log = log;
        self.http = http;
    }

    /// A log line (seen before or arriving within `secs`) containing every needle.
    pub fn expect(&mut self, needles: &[&str], secs: u64) -> String {
        self.log.expect(needles, secs)
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// Which build of the binary runs, and how.
pub struct Launch {
    pub bin: std::path::PathBuf,
    pub log_filter: String,
    /// Extra environment, e.g. `SWITCHBOARD__AGENTS__MAX_INSTANCES` overrides.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// The debug build with call events in the log (tests wait for them).
    pub fn test() -> Launch {
        Launch {
            bin: switchboard_bin(),
            log_filter: "info,rsipstack=warn,switchboard::call=debug".into(),
            env: Vec::new(),
        }
    }

    /// The release build without per-call log lines: for benchmarks.
    pub fn bench(env: &[(&str, &str)]) -> Launch {
        Launch {
            bin: switchboard_release_bin(),
            log_filter: "info,rsipstack=warn,switchboard::sip=warn,switchboard::media=warn,\
                         switchboard::call=warn"
                .into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn spawn(&self, cfg: &std::path::Path) -> (Child, Lines, std::net::SocketAddr) {
        let mut process = Child::spawn(
            Command::new(&self.bin)
                .args(["run", "--config"])
                .arg(cfg)
                .env("RUST_LOG", &self.log_filter)
                .env("NO_COLOR", "1")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
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
}
