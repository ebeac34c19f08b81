//! Answering-machine detection on a few generated phone-line recordings (`tests/amd/make_set.py`,
//! built into `target/amd-ci/`): persons are taken for persons, machines with a beep for
//! machines, with the beep where the generator put it; and end to end, an outbound call to SIPp
//! playing a machine's greeting. The full figures are `amd_bench`.

use std::time::Duration;

use crate::support::amd_set;
use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee_with, sipp_errors};
use crate::support::tempdir;
use serde_json::{Value, json};
use switchboard::media::amd::{AmdConfig, MachineVerdict};

#[test]
fn amd_tells_persons_from_machines_and_finds_the_beep() {
    let set = amd_set::build("amd-ci", "test", (4, 4));
    let config = AmdConfig::default();
    let mut machines_with_beep = 0;
    for l in &set {
        let d = amd_set::detect(&l.path, &config);
        let name = l.path.file_name().unwrap().to_string_lossy();
        let want = if l.machine {
            MachineVerdict::Machine
        } else {
            MachineVerdict::Human
        };
        assert_eq!(d.verdict, Some(want), "{name} ({}): {}", l.voice, l.text);
        // A verdict is never later than a person's greeting plus the silence that ends it.
        assert!(
            d.verdict_ms > l.speech_start_ms,
            "{name}: verdict before speech"
        );
        if let Some((start, end)) = l.beep_ms {
            machines_with_beep += 1;
            let (ds, de) = d
                .beep_ms
                .unwrap_or_else(|| panic!("{name}: beep not found"));
            assert!(
                start.abs_diff(ds) <= 40 && end.abs_diff(de) <= 40,
                "{name}: beep {start}-{end} ms found at {ds}-{de} ms"
            );
        } else {
            assert_eq!(d.beep_ms, None, "{name}: a beep where there is none");
        }
    }
    assert!(machines_with_beep >= 2, "the set has machines with a beep");
}

/// An outbound call that asked for detection, answered by SIPp playing a generated machine
/// greeting and its beep: the call record has the machine verdict and the beep where the
/// greeting has it (times after the answer).
#[tokio::test]
async fn amd_outbound_call_to_a_machine_records_the_verdict_and_the_beep() {
    if !require("sipp") {
        return;
    }
    let set = amd_set::build("amd-e2e", "test", (0, 3));
    // The longest greeting with a beep: the verdict comes from its speech, before the beep.
    let greeting = set
        .iter()
        .filter(|l| l.machine)
        .max_by_key(|l| l.beep_ms.map(|(at, _)| at))
        .filter(|l| l.beep_ms.is_some())
        .expect("a machine greeting with a beep");
    let (beep_at, beep_end) = greeting.beep_ms.unwrap();
    let dir = tempdir("amd-machine");
    let raw = dir.path().join("greeting.ul");
    let status = std::process::Command::new("sox")
        .arg(&greeting.path)
        .args(["-t", "ul"])
        .arg(&raw)
        .status()
        .expect("run sox");
    assert!(status.success());

    let host = Host::builder().examples(&["menu"]).start();
    let api = Api::new(host.http, None);
    let audio = format!("{},1,0", raw.display());
    let (mut sipp, sipp_dir, port) =
        sipp_callee_with(Some("uas_machine.xml"), &["-key", "audio", &audio]);
    let id = api
        .place_call(
            &json!({"to": format!("sip:machine@127.0.0.1:{port}"), "agent": "menu",
                            "from": "4000", "detect_machine": true}),
        )
        .await;
    // The agent (the menu) goes on talking to the greeting meanwhile; the test hangs up once
    // the beep is recorded, where an agent would leave its message.
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(30), |d| {
            d["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "voicemail-beep"))
        })
        .await;
    let hangup = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert!(hangup.status < 300, "{}", hangup.text);
    let event = |kind: &str| {
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event: {detail}"))
            .clone()
    };
    let verdict = event("machine-detection");
    assert_eq!(verdict["data"]["verdict"], "machine", "{verdict}");
    let beep = event("voicemail-beep");
    println!("recorded {verdict} and {beep}; the greeting's beep is at {beep_at}-{beep_end} ms");
    // The answer's moment differs by the ACK's trip and SIPp's start of streaming.
    let near = |got: &Value, want: u64| got.as_u64().is_some_and(|g| g.abs_diff(want) <= 300);
    assert!(
        near(&beep["data"]["at_ms"], beep_at) && near(&beep["data"]["end_ms"], beep_end),
        "beep {beep_at}-{beep_end} ms in the greeting, recorded {beep}"
    );
    assert!(
        verdict["data"]["at_ms"].as_u64().unwrap() < beep["data"]["at_ms"].as_u64().unwrap(),
        "the verdict waited for the beep"
    );
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(sipp_dir.path())
    );
}
