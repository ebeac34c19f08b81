//! `switchboard new` as a new user runs it: the project it writes deploys with `switchboard
//! deploy` and answers a real call (baresip) with its greeting and its keypad branch, on the
//! offline provider. Prints the time from `new` to the greeting.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::agents::{as_from_a_shell, guest_target, switchboard_bin};
use crate::support::baresip::Baresip;
use crate::support::calls::dial;
use crate::support::host::Host;
use crate::support::process::require;

/// Run the `switchboard` binary with `args`; panics with its output unless it succeeds.
fn switchboard(args: &[&str]) -> String {
    let mut cmd = as_from_a_shell(Command::new(switchboard_bin()));
    cmd.args(args)
        // The new crate's dependencies are the example agents': built once, in the shared folder.
        .env("CARGO_TARGET_DIR", guest_target())
        .env_remove("RUSTFLAGS");
    let out = cmd.output().expect("run switchboard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "switchboard {args:?} failed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_agent_deploys_and_answers_its_first_call() {
    new_agent_answers_its_first_call("rust", "5055").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_agent_deploys_and_answers_its_first_call() {
    new_agent_answers_its_first_call("python", "5056").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_js_agent_deploys_and_answers_its_first_call() {
    new_agent_answers_its_first_call("js", "5057").await;
}

/// `switchboard new --lang <lang>`, its scripted conversations, `switchboard deploy`, and a
/// call: every language's template says and does the same.
async fn new_agent_answers_its_first_call(lang: &str, number: &str) {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("hello-new");
    let agents = work.path().join("agents");
    let config = work.path().join("deploy.toml");
    std::fs::write(
        &config,
        format!("[agents]\ndir = {:?}\n", agents.display().to_string()),
    )
    .unwrap();
    let started = Instant::now();

    let out = switchboard(&[
        "new",
        "hello-new",
        "--lang",
        lang,
        "--number",
        number,
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert!(out.contains("switchboard deploy"), "{out}");
    let out = switchboard(&[
        "deploy",
        project.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.contains("deployed hello-new"), "{out}");

    let manifest = std::fs::read_to_string(agents.join("hello-new.toml")).unwrap();
    let mut host = Host::builder()
        .agent("hello-new", agents.join("hello-new.wasm"), manifest)
        .calls("codecs = [\"pcmu\"]")
        .start();
    let phone = Baresip::start_with(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
    )
    .await;
    let mut ctrl = dial(&phone, number, host.sip_port).await;
    let greeting = host
        .log
        .wait_for(&["Hello, this is Hello New"], Duration::from_secs(30));
    assert!(greeting.is_some(), "the greeting: {:?}", host.log.seen);
    eprintln!(
        "{lang}: new → greeting {:.1} s",
        started.elapsed().as_secs_f64()
    );

    ctrl.command("sndcode", "#").await;
    assert!(
        host.log
            .wait_for(&["Actions", "Goodbye"], Duration::from_secs(20))
            .is_some(),
        "the keypad branch: {:?}",
        host.log.seen
    );
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the agent hung up: {}",
        phone.log()
    );
}
