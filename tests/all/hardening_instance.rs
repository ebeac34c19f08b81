//! One instance per data folder: a second `switchboard run` on the same data-dir during a live
//! call exits at once naming the first one's pid and the folder, and leaves the first one's
//! call alone (it ends normally, its record consistent). A second instance on busy ports with
//! a data folder of its own fails before it writes a call store.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::agents::switchboard_bin;
use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::process::{Lines, Proc, require};
use crate::support::sipp::{sipp_errors, spawn_sipp, uac_args};
use crate::support::tempdir;

/// Runs `switchboard run --config cfg`; returns its exit code (None when still running after
/// 20 s) and its stderr.
async fn run_second(cfg: &std::path::Path) -> (Option<i32>, String) {
    let mut second = Proc::spawn(
        "second switchboard",
        Command::new(switchboard_bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(second.child.stderr.take().unwrap());
    let code = second.wait(Duration::from_secs(20)).await;
    log.drain(Duration::from_secs(2));
    (code, log.seen.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_second_instance_on_the_same_data_dir_exits_and_leaves_the_live_call_alone() {
    if !require("sipp") {
        return;
    }
    let mut host = Host::builder().examples(&["menu"]).start();
    let api = Api::new(host.http, None);
    let dir = tempdir("sipp-instance");
    let target = format!("127.0.0.1:{}", host.sip_port);
    // One call, held 8 s, then SIPp hangs up.
    let mut sipp = spawn_sipp(dir.path(), &uac_args("1000", 1, 8000, &[], &target));
    host.expect(&["Answered"], 20);
    let live = api
        .poll("/v1/calls?active=true", Duration::from_secs(10), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = live["calls"][0]["id"].as_str().unwrap().to_string();

    let data = host.data.path();
    let (code, stderr) = run_second(&data.join("switchboard.toml")).await;
    assert!(
        matches!(code, Some(c) if c != 0),
        "the second instance must exit non-zero at once: {code:?}\n{stderr}"
    );
    let pid = format!("pid {}", host.process.pid());
    assert!(stderr.contains(&pid), "{pid} named: {stderr}");
    assert!(
        stderr.contains(&data.display().to_string()),
        "the folder named: {stderr}"
    );
    assert!(
        !stderr.contains("ended abnormally"),
        "the second instance closed calls: {stderr}"
    );

    // The first instance's call is still live and ends normally when SIPp hangs up.
    let detail = api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(detail.json["call"]["state"], "active", "{}", detail.text);
    assert_eq!(
        sipp.wait(Duration::from_secs(20)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(dir.path())
    );
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
            d["call"]["state"] != "active"
        })
        .await;
    assert_eq!(detail["call"]["state"], "ended", "{detail}");
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ended").count(),
        1,
        "one ended event: {kinds:?}"
    );
    assert!(
        !host.log.seen.iter().any(|l| l.contains("ended abnormally")),
        "no call of the first instance was closed as abandoned"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_busy_sip_port_fails_before_the_store_is_written() {
    let host = Host::builder().examples(&["menu"]).start();
    // The first instance's config on another data folder: its SIP port is taken.
    let other = tempdir("instance-other");
    let cfg = std::fs::read_to_string(host.data.path().join("switchboard.toml"))
        .unwrap()
        .replace(
            &format!("data-dir = {:?}", host.data.path().display().to_string()),
            &format!("data-dir = {:?}", other.path().display().to_string()),
        );
    assert!(cfg.contains(&other.path().display().to_string()), "{cfg}");
    let other_cfg = other.path().join("switchboard.toml");
    std::fs::write(&other_cfg, cfg).unwrap();
    let (code, stderr) = run_second(&other_cfg).await;
    assert!(
        matches!(code, Some(c) if c != 0),
        "exits non-zero: {code:?}\n{stderr}"
    );
    assert!(
        stderr.contains(&host.sip_port.to_string()),
        "the busy port named: {stderr}"
    );
    assert!(
        !other.path().join("calls.db").exists(),
        "no call store written: {stderr}"
    );
}
