//! The `switchboard` binary: `run` loads and watches agents, prints the routing table and keeps
//! serving through bad deploys; `agents` lists what is live; `routes`, `accounts` and `trunks`
//! change a running host through its API.

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

/// `switchboard <args>` against `api` with `token` in the environment: exit code, stdout,
/// stderr.
fn client(api: std::net::SocketAddr, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(switchboard_bin())
        .args(args)
        .env("SWITCHBOARD_API", format!("http://{api}"))
        .env("SWITCHBOARD_TOKEN", token)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_accounts_commands_change_a_running_host() {
    let tokens = "[[http.api-tokens]]\nname = \"ops\"\ntoken = \"ops-token\"\nscope = \"write\"\n\
                  [[http.api-tokens]]\nname = \"viewer\"\ntoken = \"view-token\"\nscope = \"read\"\n";
    let menu = std::fs::read_to_string(example_manifest("menu"))
        .unwrap()
        .replace("numbers = [\"1000\"]", "");
    let host = crate::support::host::Host::builder()
        .example_with_manifest("menu", menu)
        .examples(&["receptionist"])
        .http(tokens)
        .start();
    let api = crate::support::api::Api::new(host.http, Some("ops-token"));
    let http = host.http;

    let (code, out, err) = client(
        http,
        "ops-token",
        &["routes", "set", "+1 555 0100", "receptionist"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "set routes/15550100");
    let effective = api.get("/v1/config/effective").await;
    assert_eq!(
        effective.json["routes"]["15550100"]["agent"],
        "receptionist"
    );
    let (code, out, err) = client(http, "view-token", &["routes", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == "15550100\treceptionist\tlive"),
        "{out}"
    );

    // Refusals: the API's status, code, field and message, and a non-zero exit.
    let (code, _, err) = client(http, "ops-token", &["routes", "set", "2000", "nobody"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("400 Bad Request unknown_agent, field agent"),
        "{err}"
    );
    assert!(err.contains("no agent `nobody` is loaded"), "{err}");
    let (code, _, err) = client(http, "view-token", &["routes", "rm", "15550100"]);
    assert_ne!(code, 0);
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = client(
        http,
        "ops-token",
        &[
            "accounts",
            "set",
            "pbx",
            "--registrar",
            "pbx.example.com",
            "--aor",
            "sip:a@b",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("field registrar"), "{err}");
    assert_eq!(api.get("/v1/config/effective").await.text, effective.text);

    // An account: the password goes write-only (from the environment), the list masks it.
    let registrar = "127.0.0.1:9"; // discard: nothing answers, the account keeps retrying
    let out = Command::new(switchboard_bin())
        .args(["accounts", "set", "pbx", "--registrar", registrar])
        .args(["--aor", "sip:agent@127.0.0.1", "--expires", "60"])
        .env("SWITCHBOARD_API", format!("http://{http}"))
        .env("SWITCHBOARD_TOKEN", "ops-token")
        .env("SWITCHBOARD_ACCOUNT_PASSWORD", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "set accounts/pbx"
    );
    let (code, out, err) = client(http, "view-token", &["accounts", "list"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("pbx\t")).expect(&out);
    assert!(
        line.starts_with(&format!(
            "pbx\tsip:agent@127.0.0.1\t{registrar}\tudp\tlive\t"
        )),
        "{line}"
    );
    assert!(!out.contains("cli-secret"), "{out}");
    let audit = api.get("/v1/config/audit").await;
    assert_eq!(audit.json["changes"][0]["who"], "ops");
    assert_eq!(audit.json["changes"][0]["after"]["password"], "***");
    assert_eq!(audit.json["changes"][0]["after"]["expires"], 60);

    let (code, out, err) = client(http, "ops-token", &["accounts", "rm", "pbx"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "delete accounts/pbx");
    let (code, out, _) = client(http, "ops-token", &["routes", "rm", "15550100"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "delete routes/15550100");
    let (code, out, _) = client(http, "ops-token", &["accounts", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_command_changes_a_running_host() {
    let tokens = "[[http.api-tokens]]\nname = \"ops\"\ntoken = \"ops-token\"\nscope = \"write\"\n";
    let host = crate::support::host::Host::builder()
        .http(tokens)
        .config("[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:5080\"\n")
        .start();
    let api = crate::support::api::Api::new(host.http, Some("ops-token"));
    let http = host.http;

    // The password goes write-only, from the environment.
    let out = Command::new(switchboard_bin())
        .args(["trunks", "set", "lab", "--outbound-proxy", "127.0.0.1:5090"])
        .args([
            "--from-user",
            "agent",
            "--default",
            "--allowed-prefix",
            "+1555",
        ])
        .env("SWITCHBOARD_API", format!("http://{http}"))
        .env("SWITCHBOARD_TOKEN", "ops-token")
        .env("SWITCHBOARD_TRUNK_PASSWORD", "cli-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "set trunks/lab"
    );
    let effective = api.get("/v1/config/effective").await;
    let lab = &effective.json["trunks"]["lab"]["value"];
    assert_eq!(lab["outbound-proxy"], "127.0.0.1:5090");
    assert_eq!(lab["from-user"], "agent");
    assert_eq!(lab["default"], true);
    assert_eq!(lab["allowed-prefixes"], serde_json::json!(["+1555"]));
    assert_eq!(lab["password"], "***");

    let (code, out, err) = client(http, "ops-token", &["trunks", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l == "carrier\t127.0.0.1:5080\tudp\t-\tfile"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "lab\t127.0.0.1:5090\tudp\tdefault\tlive"),
        "{out}"
    );
    assert!(!out.contains("cli-secret"), "{out}");

    // Set again without the password: it is kept.
    let (code, out, err) = client(
        http,
        "ops-token",
        &["trunks", "set", "lab", "--outbound-proxy", "127.0.0.1:5091"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let audit = api.get("/v1/config/audit").await;
    assert_eq!(audit.json["changes"][0]["who"], "ops");
    assert_eq!(audit.json["changes"][0]["after"]["password"], "***");
    assert_eq!(
        audit.json["changes"][0]["after"]["outbound-proxy"],
        "127.0.0.1:5091"
    );

    // A refusal: the API's code and field, a non-zero exit, nothing changed.
    let before = api.get("/v1/config/effective").await;
    let (code, _, err) = client(
        http,
        "ops-token",
        &["trunks", "set", "lab", "--outbound-proxy", "lab.example"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("400 Bad Request bad_trunk, field outbound-proxy"),
        "{err}"
    );
    assert_eq!(api.get("/v1/config/effective").await.text, before.text);

    let (code, out, err) = client(http, "ops-token", &["trunks", "rm", "lab"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "delete trunks/lab");
    let (code, out, _) = client(http, "ops-token", &["trunks", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out, "carrier\t127.0.0.1:5080\tudp\t-\tfile\n");
}
