//! `switchboard test`: the example agents' scripts pass through the built binary (this is where
//! CI runs them: every plugins/<agent>/tests/ is found and run); a wrong expectation fails with
//! a diff naming the expected and the actual text and a non-zero exit; `--json` carries the
//! failure; a script with an unknown key is refused with its line before anything is built.
//! Fixtures show what the examples do not: faults and rejections in the diff (`probe`), the
//! outcome, hints and notifications (`contract`).

use std::path::Path;
use std::process::{Command, Output};

use switchboard::authoring::script::Script;

use crate::support::agents::{as_from_a_shell, guest_target, repo_root, switchboard_bin};

/// `switchboard test ARGS…` as an author would run it from the repository root.
fn switchboard_test(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = as_from_a_shell(Command::new(switchboard_bin()));
    cmd.current_dir(repo_root())
        .arg("test")
        // The guests build into the target folder the other tests' guest builds share.
        .env("CARGO_TARGET_DIR", guest_target())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run switchboard test")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Conversation names of a script, as written.
fn conversation_names(script: &Path) -> Vec<String> {
    let script = Script::load(script).expect("a valid script");
    script.conversations.into_iter().map(|c| c.name).collect()
}

#[test]
fn every_example_agents_scripts_pass() {
    let plugins = repo_root().join("plugins");
    let mut agents: Vec<_> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("tests").is_dir() && p.join("agent.toml").is_file())
        .collect();
    agents.sort();
    let names: Vec<_> = agents.iter().map(|a| a.file_name().unwrap()).collect();
    for example in [
        "menu",
        "receptionist",
        "appointments",
        "receptionist-py",
        "receptionist-js",
    ] {
        assert!(names.iter().any(|n| *n == example), "{example} has scripts");
    }
    for agent in &agents {
        // As a user in the checkout types it: a folder relative to the checkout.
        let relative = Path::new("plugins").join(agent.file_name().unwrap());
        let out = switchboard_test(&[&relative]);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {text}{}",
            agent.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut expected = 0;
        for script in std::fs::read_dir(agent.join("tests")).unwrap() {
            for name in conversation_names(&script.unwrap().path()) {
                assert!(
                    text.lines().any(|l| l == format!("PASS {name}")),
                    "{name}: {text}"
                );
                expected += 1;
            }
        }
        assert!(
            text.ends_with(&format!("{expected} passed, 0 failed\n")),
            "{text}"
        );
    }
}

const WRONG: &str = r#"
[[conversation]]
name = "hours"
[[conversation.step]]
caller-presses = "1"
[[conversation.step]]
expect-say = "We are open Monday to Friday"

[[conversation]]
name = "wrong greeting"
[[conversation.step]]
caller-presses = "2"
[[conversation.step]]
expect-say = "You will find us at 99 Nowhere Lane"
"#;

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("wrong.toml");
    std::fs::write(&script, WRONG).unwrap();
    let menu = repo_root().join("plugins/menu");

    let out = switchboard_test(&[&menu, &script]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = [
        "PASS hours".to_string(),
        "FAIL wrong greeting".to_string(),
        format!(
            "  step 2 ({}:13): expected the agent to say \"You will find us at 99 Nowhere Lane\"",
            script.display()
        ),
        "  but since the previous step the agent:".to_string(),
        "    says \"You will find us at 12 Example Street.\"".to_string(),
        "1 passed, 1 failed".to_string(),
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");

    let out = switchboard_test(&[&menu, &script, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let failed = &report["conversations"][1];
    assert_eq!(failed["name"], "wrong greeting");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["steps"].as_array().unwrap().len(), 2);
    assert_eq!(failed["failure"]["step"], 2);
    assert_eq!(failed["failure"]["line"], 13);
    assert_eq!(
        failed["failure"]["expected"],
        "the agent to say \"You will find us at 99 Nowhere Lane\""
    );
    assert_eq!(
        failed["failure"]["actual"],
        serde_json::json!(["says \"You will find us at 12 Example Street.\""])
    );
    assert_eq!(report["conversations"][0]["passed"], true);
}

#[test]
fn bad_scripts_and_agents_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.toml");
    std::fs::write(
        &script,
        "[[conversation]]\nname = \"x\"\n\n[[conversation.step]]\nexpect-sya = \"hi\"\n",
    )
    .unwrap();
    let out = switchboard_test(&[&repo_root().join("plugins/menu"), &script]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:5: unknown field `expect-sya`",
            script.display()
        )),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // Not an agent (no agent.toml): the build is refused, with the same exit.
    std::fs::write(
        dir.path().join("ok.toml"),
        "[[conversation]]\nname = \"x\"\n",
    )
    .unwrap();
    let out = switchboard_test(&[&dir.path(), &dir.path().join("ok.toml")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("agent.toml"), "{err}");
}

const PROBE: &str = r#"
[[conversation]]
name = "digits back, say and hang up"
[[conversation.step]]
expect-say = "probe answering 9000"
[[conversation.step]]
caller-presses = "6"
[[conversation.step]]
expect-dtmf = "14*#0AD"
[[conversation.step]]
caller-presses = "9"
[[conversation.step]]
expect-say = "effect first"
[[conversation.step]]
expect-say = "returned second"
[[conversation.step]]
expect-hangup = true

[[conversation]]
name = "a spinning tool faults"
[[conversation.step]]
tool = "spin"
expect-error = "the tool failed"
[[conversation.step]]
expect-no-fault = true

[[conversation]]
name = "a rejected call"
callee = "reject"
[[conversation.step]]
caller-presses = "1"
"#;

#[test]
fn faults_and_rejections_show_in_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("probe.toml");
    std::fs::write(&script, PROBE).unwrap();
    let probe = repo_root().join("tests/fixtures/probe");
    let out = switchboard_test(&[&probe, &script, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let c = &report["conversations"];
    assert_eq!(c[0]["passed"], true, "{report:#}");

    // The agent's CPU budget ends the tool; the caller hears the apology and the call ends.
    let failure = &c[1]["failure"];
    assert_eq!(failure["expected"], "no agent fault");
    let actual: Vec<&str> = failure["actual"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        actual[0].starts_with("faults: on-tool-call: CpuBudget"),
        "{actual:?}"
    );
    assert_eq!(actual[1], "tool spin fails: the tool failed");
    assert!(actual[2].starts_with("says \"Sorry"), "{actual:?}");
    assert_eq!(actual[3..], ["hangs up", "call ends: failed: agent failed"]);

    let failure = &c[2]["failure"];
    assert_eq!(
        failure["expected"],
        "the call running for: the caller presses 1"
    );
    assert_eq!(
        failure["actual"],
        serde_json::json!(["rejects the call: 486 busy here"])
    );
}

const CONTRACT: &str = r#"
[[conversation]]
name = "outcome, hint and events"
direction = "outbound"
[[conversation.step]]
expect-say = "hello +15550100001"
[[conversation.step]]
expect-say = "event CallEvent::Progress(CallProgress::Answered)"
[[conversation.step]]
caller-presses = "1"
[[conversation.step]]
expect-say = "outcome Ok(()) expect Ok(())"
[[conversation.step]]
expect-hint = "digits 4-6"
[[conversation.step]]
expect-outcome = "confirmed"
[[conversation.step]]
caller-says = "hello there"
[[conversation.step]]
expect-say = "event CallEvent::SpeechStarted"
[[conversation.step]]
expect-say = "event CallEvent::SpeechStopped"
[[conversation.step]]
expect-outcome = "confirmed"

[[conversation]]
name = "a wrong outcome"
[[conversation.step]]
caller-presses = "1"
[[conversation.step]]
expect-outcome = "booked"
"#;

#[test]
fn outcomes_hints_and_notifications_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("contract.toml");
    std::fs::write(&script, CONTRACT).unwrap();
    let contract = repo_root().join("tests/fixtures/contract");
    let out = switchboard_test(&[&contract, &script]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "PASS outcome, hint and events", "{text}");
    assert_eq!(lines[1], "FAIL a wrong outcome", "{text}");
    assert!(
        lines[2].ends_with("expected the outcome \"booked\""),
        "{text}"
    );
    assert!(lines.contains(&"    sets outcome \"confirmed\""), "{text}");
}
