//! Answering-machine detection on a few generated phone-line recordings (`tests/amd/make_set.py`,
//! built into `target/amd-ci/`): persons are taken for persons, machines with a beep for
//! machines, with the beep where the generator put it; and end to end, an outbound call to SIPp
//! playing a machine's greeting. The full figures are `amd_bench`.

use std::time::Duration;

use crate::support::agents::fixture;
use crate::support::amd_set;
use crate::support::api::Api;
use crate::support::host::{Host, HostBuilder};
use crate::support::pcap::Capture;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee_with, sipp_completes};
use crate::support::tempdir;
use serde_json::{Value, json};
use switchboard::media::amd::{AmdConfig, MachineVerdict};
use switchboard::media::g711::ulaw_decode;

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

/// A generated machine greeting with a beep: the longest of a few, so that the verdict comes
/// from its speech before the beep.
pub(crate) fn machine_greeting() -> amd_set::Labelled {
    let set = amd_set::build("amd-e2e", "test", (0, 3));
    set.into_iter()
        .filter(|l| l.machine)
        .max_by_key(|l| l.beep_ms.map(|(at, _)| at))
        .filter(|l| l.beep_ms.is_some())
        .expect("a machine greeting with a beep")
}

/// A generated person's greeting ("Hello, who is this?" and such, then silence): the first of
/// the set the detection test uses.
pub(crate) fn person_greeting() -> amd_set::Labelled {
    let set = amd_set::build("amd-ci", "test", (4, 4));
    set.into_iter()
        .find(|l| !l.machine)
        .expect("a person in the set")
}

/// The recording as raw mu-law in `dir`, and SIPp's value for it (`-key NAME VALUE`, played
/// once by `rtp_stream="[NAME]"`).
pub(crate) fn sipp_audio(l: &amd_set::Labelled, dir: &std::path::Path) -> String {
    let stem = l.path.file_stem().expect("a file name").to_string_lossy();
    let raw = dir.join(format!("{stem}.ul"));
    let status = std::process::Command::new("sox")
        .arg(&l.path)
        .args(["-t", "ul"])
        .arg(&raw)
        .status()
        .expect("run sox");
    assert!(status.success());
    format!("{},1,0", raw.display())
}

/// A folder of its own and SIPp's value for the recording in it.
fn audio_for_sipp(l: &amd_set::Labelled) -> (tempfile::TempDir, String) {
    let dir = tempdir("amd-greeting");
    let key = sipp_audio(l, dir.path());
    (dir, key)
}

/// PCMU packets one way, as (capture time, samples).
type Audio = Vec<(Duration, Vec<i16>)>;

/// The PCMU RTP of a capture, each way: what the callee sent us and what we sent it; ours are
/// the packets to or from `rtp_ports`.
fn pcmu_each_way(
    packets: &[crate::support::pcap::Packet],
    rtp_ports: (u16, u16),
) -> (Audio, Audio) {
    let ours = |p: u16| (rtp_ports.0..=rtp_ports.1).contains(&p);
    let rtp = |to_us: bool| -> Audio {
        packets
            .iter()
            .filter(|p| {
                if to_us {
                    ours(p.dst_port)
                } else {
                    ours(p.src_port)
                }
            })
            .filter(|p| p.payload.len() > 12 && p.payload[0] >> 6 == 2 && p.payload[1] & 0x7f == 0)
            .map(|p| {
                let header = 12 + 4 * usize::from(p.payload[0] & 0x0f);
                let pcm = p.payload[header..]
                    .iter()
                    .map(|&b| ulaw_decode(b))
                    .collect();
                (p.at, pcm)
            })
            .collect()
    };
    (rtp(true), rtp(false))
}

/// Speech rather than silence or comfort noise.
fn loud(samples: &[i16]) -> bool {
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    (energy / samples.len() as f64).sqrt() > 300.0
}

/// The call's events of `kind`, in order.
fn events(detail: &Value, kind: &str) -> Vec<Value> {
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

fn has_event(detail: &Value, kind: &str) -> bool {
    !events(detail, kind).is_empty()
}

/// An outbound call that asked for detection, answered by SIPp playing a generated machine
/// greeting and its beep: the call record has the machine verdict and the beep where the
/// greeting has it (times after the answer).
#[tokio::test]
async fn amd_outbound_call_to_a_machine_records_the_verdict_and_the_beep() {
    if !require("sipp") {
        return;
    }
    let greeting = machine_greeting();
    let (beep_at, beep_end) = greeting.beep_ms.unwrap();
    let DetectionCall {
        host: _host,
        api,
        id,
        mut sipp,
        sipp_dir,
        _dir: _audio,
        ..
    } = detection_call(
        &greeting,
        Host::builder().examples(&["menu"]),
        "menu",
        false,
    )
    .await;
    // The agent (the menu) goes on talking to the greeting meanwhile; the test hangs up once
    // the beep is recorded.
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(30), |d| {
            has_event(d, "voicemail-beep")
        })
        .await;
    let hangup = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert!(hangup.status < 300, "{}", hangup.text);
    let verdict = events(&detail, "machine-detection").remove(0);
    assert_eq!(verdict["data"]["verdict"], "machine", "{verdict}");
    let beep = events(&detail, "voicemail-beep").remove(0);
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
    sipp_completes(&mut sipp, sipp_dir.path()).await;
}

/// An outbound call with detection from `agent` on `host` to SIPp playing `greeting`; with
/// `capture`, both RTP directions are captured.
struct DetectionCall {
    host: Host,
    api: Api,
    id: String,
    capture: Option<Capture>,
    sipp: crate::support::process::Proc,
    sipp_dir: tempfile::TempDir,
    /// Holds the greeting SIPp plays and the capture.
    _dir: tempfile::TempDir,
}

async fn detection_call(
    greeting: &amd_set::Labelled,
    host: HostBuilder,
    agent: &str,
    capture: bool,
) -> DetectionCall {
    let (dir, audio) = audio_for_sipp(greeting);
    let host = host.calls("codecs = [\"pcmu\"]").start();
    let (rtp_min, rtp_max) = host.rtp_ports();
    let capture =
        capture.then(|| Capture::start(dir.path(), &format!("udp portrange {rtp_min}-{rtp_max}")));
    let api = Api::new(host.http, None);
    let (sipp, sipp_dir, port) =
        sipp_callee_with(Some("uas_machine.xml"), &["-key", "audio", &audio]);
    let id = api
        .place_call(
            &json!({"to": format!("sip:callee@127.0.0.1:{port}"), "agent": agent,
                    "from": "4100", "detect_machine": true}),
        )
        .await;
    DetectionCall {
        host,
        api,
        id,
        capture,
        sipp,
        sipp_dir,
        _dir: dir,
    }
}

/// A host with the `voicemail` fixture.
fn voicemail_host() -> HostBuilder {
    Host::builder().agent(
        "voicemail",
        fixture("voicemail"),
        "name = \"voicemail\"\nnumbers = [\"4100\"]\n".into(),
    )
}

/// The `voicemail` fixture leaves its message when it hears the beep and hangs up: on the wire
/// (a capture of both RTP directions), the message starts within 1 s after the beep ends, and
/// the call ends by the agent's hang-up once it has been played.
#[tokio::test]
async fn amd_a_message_is_left_after_the_beep() {
    if !require("sipp") || !require("tcpdump") {
        return;
    }
    let DetectionCall {
        host,
        api,
        id,
        capture,
        mut sipp,
        sipp_dir,
        _dir: _audio,
    } = detection_call(&machine_greeting(), voicemail_host(), "voicemail", true).await;
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(40), |d| {
            has_event(d, "ended")
        })
        .await;
    assert_eq!(detail["call"]["end_reason"], "agent-hangup", "{detail}");
    let seq = |kind: &str| events(&detail, kind)[0]["seq"].as_u64().unwrap();
    assert!(seq("voicemail-beep") < seq("actions"), "{detail}");
    sipp_completes(&mut sipp, sipp_dir.path()).await;

    let packets = capture.expect("captured").stop().await;
    let (callee, sent) = pcmu_each_way(&packets, host.rtp_ports());
    // The beep's end in the callee's packets (the detector finds it to within 10 ms: see
    // amd_bench), at the capture time of the packet that carries it.
    let callee_pcm: Vec<i16> = callee.iter().flat_map(|(_, s)| s.clone()).collect();
    let beep_end_ms = amd_set::detect_samples(8000, &callee_pcm, &AmdConfig::default())
        .beep_ms
        .expect("the beep on the wire")
        .1;
    let mut before = 0;
    let packet = callee
        .iter()
        .position(|(_, s)| {
            before += s.len() as u64;
            before * 1000 / 8000 >= beep_end_ms
        })
        .expect("the beep's packet");
    let beep_end = callee[packet].0;
    // Our first loud packet after the greeting ("Hello?", over long before the beep) starts
    // the message.
    let greeting_over = callee[0].0 + Duration::from_secs(2);
    let message: Vec<&(Duration, Vec<i16>)> = sent
        .iter()
        .filter(|(at, s)| *at > greeting_over && loud(s))
        .collect();
    let start = message.first().expect("the message on the wire").0;
    let gap_ms = start.as_millis() as i64 - beep_end.as_millis() as i64;
    println!(
        "the message starts {gap_ms} ms after the beep ends, {} loud packets",
        message.len()
    );
    assert!(
        (-30..=1000).contains(&gap_ms),
        "the message starts {gap_ms} ms after the beep's end"
    );
    // Played whole before the hang-up: a few seconds of speech.
    assert!(
        message.len() >= 100,
        "only {} ms of message: {detail}",
        message.len() * 20
    );
}

/// A person answers ("Hello, who is this?", then silence) a call that asked for detection:
/// on the wire, the agent's greeting is not held for the verdict, so the person hears the
/// agent within 1.5 s of their first words (here before them); the verdict is a person's, and
/// the agent's words for a person follow it.
#[tokio::test]
async fn amd_a_person_hears_the_agent_within_1_5_s_of_their_first_words() {
    if !require("sipp") || !require("tcpdump") {
        return;
    }
    let person = person_greeting();
    let DetectionCall {
        host,
        api,
        id,
        capture,
        mut sipp,
        sipp_dir,
        _dir: _audio,
    } = detection_call(&person, voicemail_host(), "voicemail", true).await;
    // The verdict, then the agent's words for a person, played.
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
            has_event(d, "actions")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hangup = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert!(hangup.status < 300, "{}", hangup.text);
    let verdict = events(&detail, "machine-detection").remove(0);
    assert_eq!(verdict["data"]["verdict"], "human", "{detail}");
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    let for_person = events(&detail, "actions").remove(0);
    assert!(seq(&verdict) < seq(&for_person), "{detail}");
    assert!(
        for_person.to_string().contains("This is the clinic."),
        "{for_person}"
    );
    sipp_completes(&mut sipp, sipp_dir.path()).await;

    let packets = capture.expect("captured").stop().await;
    let (callee, sent) = pcmu_each_way(&packets, host.rtp_ports());
    // The recording starts with the callee's first packet: their first words are
    // `speech_start_ms` into it.
    let words = callee[0].0 + Duration::from_millis(person.speech_start_ms);
    let heard = sent
        .iter()
        .find(|(_, s)| loud(s))
        .expect("the agent on the wire")
        .0;
    let first_ms = |at: Duration| at.as_millis() as i64 - callee[0].0.as_millis() as i64;
    println!(
        "the person speaks at {} ms, the agent is heard from {} ms (after the callee's first \
         packet), the verdict at {} ms of audio",
        first_ms(words),
        first_ms(heard),
        verdict["data"]["at_ms"]
    );
    assert!(
        heard <= words + Duration::from_millis(1500),
        "the agent was first heard {} ms after the person's first words",
        heard.as_millis() as i64 - words.as_millis() as i64
    );
}

/// `[calls.amd]` thresholds reach the detector: a person's greeting of about a second, taken
/// for a person with the defaults, is a machine's once `max-human-greeting-ms` is 500.
#[tokio::test]
async fn amd_thresholds_come_from_the_configuration() {
    if !require("sipp") {
        return;
    }
    let host = Host::builder()
        .examples(&["menu"])
        .config("[calls.amd]\nmax-human-greeting-ms = 500");
    let DetectionCall {
        host: _host,
        api,
        id,
        mut sipp,
        sipp_dir,
        _dir: _audio,
        ..
    } = detection_call(&person_greeting(), host, "menu", false).await;
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
            has_event(d, "machine-detection")
        })
        .await;
    api.post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    let verdict = events(&detail, "machine-detection").remove(0);
    assert_eq!(verdict["data"]["verdict"], "machine", "{verdict}");
    sipp_completes(&mut sipp, sipp_dir.path()).await;
}
