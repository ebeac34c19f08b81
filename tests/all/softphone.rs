//! `switchboard call`, the command-line caller, against real peers: the `switchboard run` host
//! with the menu agent on the offline provider (PCMU and Opus: greeting heard, a key changes
//! what the agent says, hang-up by BYE; keys by SIP INFO on PCMA; a digest trunk over TCP; an
//! unrouted number, 404), SIPp ringing forever (ring timeout and Ctrl-C both CANCEL, 487),
//! SIPp answering (Ctrl-C sends BYE), SIPp pressing a key by INFO, holding, then hanging up,
//! and SIPp echoing our RTP, and the host's echo line (the played WAV comes back).

use std::path::Path;

use crate::support::host::Host;
use crate::support::media::{best_correlation, read_raw_i16, run, window_rms};
use crate::support::process::require;
use crate::support::sipp::{sipp_callee, sipp_callee_with, sipp_completes};
use crate::support::softphone::Softphone;
use crate::support::tempdir;

fn step<'a>(steps: &'a [String], needles: &[&str]) -> &'a str {
    steps
        .iter()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no step with {needles:?}: {steps:#?}"))
}

/// Calls 1000 (menu) offering only `codec`, presses 1 after 4 s, hangs up after 10 s.
fn call_the_menu(codec: &str, codec_name: &str) {
    if !require("espeak-ng") {
        return;
    }
    let mut host = Host::builder().examples(&["menu"]).start();
    let dir = tempdir("softphone-menu");
    let rec = dir.path().join("call.wav");
    let phone = Softphone::start(&[
        &format!("sip:1000@127.0.0.1:{}", host.sip_port),
        "--codec",
        codec,
        "--record",
        rec.to_str().unwrap(),
        "--dtmf",
        "1@4",
        "--hangup-after",
        "10",
    ]);
    let (code, steps) = phone.finish(60);
    assert_eq!(code, 0, "{steps:#?}");
    step(&steps, &["event=answered", &format!("codec={codec_name}")]);
    step(&steps, &["event=dtmf-sent", "digits=1", "method=rfc4733"]);
    step(
        &steps,
        &["event=ended", "reason=local-hangup", "by=hangup-after"],
    );
    // The key reached the agent's on-dtmf: it answered with the opening hours.
    host.expect(&["Actions", "We are open"], 10);
    // Our BYE ended the call at the host.
    host.expect(&["call ended", "CallerHangup"], 10);

    // The far end (left channel) spoke: the greeting before the key, then the answer.
    let rms = window_rms(&std::fs::read(&rec).unwrap());
    assert!(
        rms.len() >= 450,
        "about 10 s recorded, got {} windows",
        rms.len()
    );
    let loud = |windows: &[f64]| windows.iter().filter(|&&r| r > 300.0).count();
    let greeting = loud(&rms[..200]);
    assert!(
        greeting > 50,
        "greeting speech in the first 4 s: {greeting} of 200 windows"
    );
    assert!(
        loud(&rms) * 4 > rms.len(),
        "speech in at least a quarter of the call: {} of {}",
        loud(&rms),
        rms.len()
    );
    assert!(host.is_running());
}

#[test]
fn calls_the_menu_agent_on_pcmu() {
    call_the_menu("pcmu", "PCMU");
}

#[test]
fn calls_the_menu_agent_on_opus() {
    call_the_menu("opus", "opus");
}

#[test]
fn info_keys_reach_the_agent_on_pcma() {
    if !require("espeak-ng") {
        return;
    }
    let mut host = Host::builder().examples(&["menu"]).start();
    let phone = Softphone::start(&[
        &format!("sip:1000@127.0.0.1:{}", host.sip_port),
        "--codec",
        "pcma",
        "--dtmf",
        "2@1.5",
        "--dtmf-info",
        "--hangup-after",
        "5",
    ]);
    let (code, steps) = phone.finish(40);
    assert_eq!(code, 0, "{steps:#?}");
    step(&steps, &["event=answered", "codec=PCMA"]);
    step(&steps, &["event=dtmf-sent", "digits=2", "method=info"]);
    // Key 2 is the address branch of the menu.
    host.expect(&["Actions", "You will find us at"], 10);
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[test]
fn trunk_with_digest_over_tcp_and_a_number_without_an_agent_gets_404() {
    // The host challenges every INVITE; its routes cover 1000-3000 and there is no default agent.
    let mut host = Host::builder()
        .examples(&["menu"])
        .config(
            "[sip.inbound]\ndigest = { realm = \"switchboard\", user = \"alice\", password = \"secret\" }\n",
        )
        .start();
    let dir = tempdir("softphone-trunk");
    let config = dir.path().join("phone.toml");
    std::fs::write(
        &config,
        format!(
            "[[sip.trunks]]\nname = \"host\"\noutbound-proxy = \"127.0.0.1:{}\"\n\
             transport = \"tcp\"\nfrom-user = \"alice\"\npassword = \"secret\"\n",
            host.sip_port
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let trunk = ["--config", config, "--trunk", "host"];

    let phone = Softphone::start(&[&trunk[..], &["1000", "--hangup-after", "2"]].concat());
    let (code, steps) = phone.finish(40);
    assert_eq!(code, 0, "answered through the trunk: {steps:#?}");
    step(&steps, &["event=trying", "to=1000"]);
    step(&steps, &["event=ended", "reason=local-hangup"]);
    host.expect(&["Created", "caller: \"alice\"", "transport: \"tcp\""], 5);

    let phone = Softphone::start(&[&trunk[..], &["9999"]].concat());
    let (code, steps) = phone.finish(30);
    assert_eq!(code, 6, "rejected: {steps:#?}");
    step(&steps, &["event=ended", "reason=rejected", "status=404"]);

    // Without the trunk's credentials the challenge is not answered.
    let phone = Softphone::start(&[&format!("sip:1000@127.0.0.1:{}", host.sip_port)]);
    let (code, steps) = phone.finish(30);
    assert_eq!(code, 6, "{steps:#?}");
    step(&steps, &["event=ended", "reason=rejected", "status=401"]);
}

#[tokio::test]
async fn ring_timeout_cancels_and_exits_with_no_answer() {
    if !require("sipp") {
        return;
    }
    let (mut sipp, dir, port) = sipp_callee(Some("uas_ring_cancel.xml"));
    let phone = Softphone::start(&[
        &format!("sip:ring@127.0.0.1:{port}"),
        "--ring-timeout",
        "1.5",
    ]);
    let (code, steps) = phone.finish(20);
    assert_eq!(code, 4, "no answer: {steps:#?}");
    step(&steps, &["event=ringing"]);
    step(&steps, &["event=ended", "reason=no-answer"]);
    // SIPp got the CANCEL, answered 487 and got its ACK.
    sipp_completes(&mut sipp, dir.path()).await;
}

#[tokio::test]
async fn ctrl_c_while_ringing_cancels() {
    if !require("sipp") {
        return;
    }
    let (mut sipp, dir, port) = sipp_callee(Some("uas_ring_cancel.xml"));
    let mut phone = Softphone::start(&[&format!("sip:ring@127.0.0.1:{port}")]);
    phone.steps.expect(&["event=ringing"], 10);
    phone.interrupt();
    let (code, steps) = phone.finish(20);
    assert_eq!(code, 5, "interrupted before answer: {steps:#?}");
    step(&steps, &["event=cancelling"]);
    step(&steps, &["event=ended", "reason=cancelled"]);
    sipp_completes(&mut sipp, dir.path()).await;
}

#[tokio::test]
async fn ctrl_c_after_the_answer_hangs_up() {
    if !require("sipp") {
        return;
    }
    // SIPp's stock uas answers and waits for our BYE.
    let (mut sipp, dir, port) = sipp_callee(None);
    let mut phone = Softphone::start(&[&format!("sip:uas@127.0.0.1:{port}")]);
    phone.steps.expect(&["event=answered"], 10);
    phone.interrupt();
    let (code, steps) = phone.finish(20);
    assert_eq!(code, 0, "{steps:#?}");
    step(
        &steps,
        &["event=ended", "reason=local-hangup", "by=interrupted"],
    );
    sipp_completes(&mut sipp, dir.path()).await;
}

#[tokio::test]
async fn far_end_info_digit_hold_and_bye_are_reported() {
    if !require("sipp") {
        return;
    }
    let (mut sipp, dir, port) = sipp_callee(Some("uas_info_hold_bye.xml"));
    let phone = Softphone::start(&[&format!("sip:info@127.0.0.1:{port}")]);
    let (code, steps) = phone.finish(20);
    assert_eq!(code, 0, "{steps:#?}");
    step(
        &steps,
        &["event=dtmf-received", "digit=5", "method=info", "ms=160"],
    );
    step(&steps, &["event=reinvite", "hold=true"]);
    step(&steps, &["event=ended", "reason=remote-hangup"]);
    sipp_completes(&mut sipp, dir.path()).await;
}

/// Speaks `text` into `dir/speech.wav` (espeak-ng writes 22.05 kHz: the softphone resamples
/// it to the codec rate).
fn speech(dir: &Path, text: &str) -> std::path::PathBuf {
    let speech = dir.join("speech.wav");
    run("espeak-ng", &["-w", speech.to_str().unwrap(), text]);
    speech
}

/// The first channel of `wav` at 8 kHz, resampled by sox (independently of our resampler).
fn left_8k(wav: &Path) -> Vec<i16> {
    let raw = wav.with_extension("8k.raw");
    run(
        "sox",
        &[
            wav.to_str().unwrap(),
            "-r",
            "8000",
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            raw.to_str().unwrap(),
            "remix",
            "1",
        ],
    );
    read_raw_i16(&raw)
}

/// What was played against what came back, allowing up to 400 ms of round trip.
fn assert_echoed(played: &Path, recorded: &Path, at_least: f64) {
    let (played, heard) = (left_8k(played), left_8k(recorded));
    let (correlation, lag) = best_correlation(&heard, &played, 3200);
    eprintln!("echo correlation {correlation:.4} at lag {lag} samples");
    assert!(
        correlation >= at_least,
        "echo correlates {correlation:.3} at lag {lag} (played {} samples, heard {})",
        played.len(),
        heard.len()
    );
}

#[tokio::test]
async fn played_wav_comes_back_from_sipp_rtp_echo() {
    if !require("sipp") || !require("espeak-ng") || !require("sox") {
        return;
    }
    let dir = tempdir("softphone-echo");
    let speech = speech(
        dir.path(),
        "Thank you for calling. This sentence travels to the far end and comes back.",
    );
    let (mut sipp, sipp_dir, port) = sipp_callee_with(None, &["-rtp_echo"]);
    let rec = dir.path().join("call.wav");
    let phone = Softphone::start(&[
        &format!("sip:echo@127.0.0.1:{port}"),
        "--codec",
        "pcmu",
        "--play",
        speech.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--hangup-after",
        "7",
        // SIPp's answer has no telephone-event: the key is refused, the call goes on.
        "--dtmf",
        "1@1",
    ]);
    let (code, steps) = phone.finish(30);
    assert_eq!(code, 0, "{steps:#?}");
    step(&steps, &["event=playing"]);
    step(&steps, &["event=dtmf-failed", "digits=1", "method=rfc4733"]);
    step(&steps, &["event=ended", "reason=local-hangup"]);
    sipp_completes(&mut sipp, sipp_dir.path()).await;
    assert_echoed(&speech, &rec, 0.9);
}

/// Our own echo line (`provider = "echo"`, which loops the caller's audio back inside the
/// media task) answers 1000: what the softphone plays comes back.
fn the_echo_line_plays_the_caller_back(codec: &str, at_least: f64) {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .model("provider = \"echo\"")
        .start();
    let dir = tempdir("softphone-echo-line");
    let speech = speech(
        dir.path(),
        "You have reached the echo line. Everything you say comes straight back to you.",
    );
    let rec = dir.path().join("call.wav");
    let phone = Softphone::start(&[
        &format!("sip:1000@127.0.0.1:{}", host.sip_port),
        "--codec",
        codec,
        "--play",
        speech.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--hangup-after",
        "7",
    ]);
    let (code, steps) = phone.finish(30);
    assert_eq!(code, 0, "{steps:#?}");
    step(&steps, &["event=playing"]);
    step(&steps, &["event=ended", "reason=local-hangup"]);
    host.expect(&["call ended", "CallerHangup"], 10);
    assert_echoed(&speech, &rec, at_least);
}

#[test]
fn the_echo_line_plays_the_caller_back_on_pcmu() {
    the_echo_line_plays_the_caller_back("pcmu", 0.9);
}

#[test]
fn the_echo_line_plays_the_caller_back_on_opus() {
    // Speech crosses two Opus encodings in tandem (the softphone's, then ours): 0.885 measured,
    // as without the loopback.
    the_echo_line_plays_the_caller_back("opus", 0.8);
}
