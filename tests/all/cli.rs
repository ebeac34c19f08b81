//! The `switchboard` binary: `run` loads and watches agents, prints the routing table and keeps
//! serving through bad deploys; `agents` lists what is live.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::agents::{
    AgentsDir, example_agents, example_manifest, greeter, switchboard_bin,
};
use crate::support::ports::{Ports, ports};
use crate::support::process::{Lines, Proc};

fn config(agents: &AgentsDir, data: &std::path::Path, rtp: &Ports) -> String {
    format!(
        "data-dir = {data:?}\n[sip]\nudp-listen = \"127.0.0.1:0\"\ntcp-listen = \"127.0.0.1:0\"\n[calls]\nrtp-port-min = {}\nrtp-port-max = {}\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [agents]\ndir = {dir:?}\ndefault = \"menu\"\nmax-instances = 16\n[routes]\n\"1000\" = \"menu\"\n\"4000\" = \"greeter\"\n",
        rtp.first(),
        rtp.last(),
        data = data.display().to_string(),
        dir = agents.path().display().to_string(),
    )
}

#[test]
fn run_prints_routes_reloads_and_survives_bad_deploys() {
    let bin = switchboard_bin();
    let agents = AgentsDir::new();
    let menu = example_agents().join("menu.wasm");
    agents.install(
        "menu",
        &menu,
        &std::fs::read_to_string(example_manifest("menu")).unwrap(),
    );
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("switchboard.toml");
    let rtp = ports(100);
    std::fs::write(&cfg, config(&agents, data.path(), &rtp)).unwrap();

    let listing = Command::new(&bin)
        .args(["agents", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("1000") && l.contains("menu") && l.contains("0.1.0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("4000") && l.contains("(not loaded)")),
        "{text}"
    );

    let mut child = Proc::spawn(
        "switchboard",
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut out = Lines::new(child.child.stdout.take().unwrap());
    let mut log = Lines::new(child.child.stderr.take().unwrap());
    assert!(
        out.wait_for(&["(default)", "menu"], Duration::from_secs(60))
            .is_some(),
        "{:?}",
        out.seen
    );

    agents.install("greeter", &greeter("1"), "name = \"greeter\"\n");
    assert!(
        log.wait_for(&["agent version live", "greeter"], Duration::from_secs(60))
            .is_some(),
        "{:?}",
        log.seen
    );

    agents.write("greeter.wasm", b"not wasm at all");
    let line = log.wait_for(
        &["greeter.wasm", "not a WebAssembly component"],
        Duration::from_secs(60),
    );
    assert!(line.is_some(), "{:?}", log.seen);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.is_running(),
        "the host keeps running after a bad deploy"
    );
}
