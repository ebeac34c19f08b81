//! Audio both ways between a real phone (baresip) and the `switchboard` binary, per codec:
//! what baresip's microphone sends is in the caller channel of the host's call recording,
//! and what the agent says (the `menu` greeting, offline synthesis) is in baresip's own
//! recording of what it received. Each direction must correlate ≥ 0.9. Keypad digits sent by
//! baresip over RFC 4733 on the same call reach the agent.

use std::time::Duration;

use crate::support::baresip::Baresip;
use crate::support::host::Host;
use crate::support::media::{Wav, only_file, onset_correlation, quiet_then_tones, to_8k};
use crate::support::process::require;
use switchboard::media::Codec;

const RATE: usize = 8000;
/// The microphone stays silent while the greeting plays, then sends this many seconds of tones.
const QUIET_SECS: usize = 11;
const TONE_SECS: usize = 4;

async fn audio_both_ways(codec: &str) {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls(&format!("codecs = [\"{codec}\"]\nrecord = true"))
        .start();
    let mic = quiet_then_tones(QUIET_SECS, TONE_SECS, 3);
    let phone = Baresip::start_with_mic(
        &format!("<sip:caller@127.0.0.1>;regint=0;audio_codecs={codec}"),
        "module sndfile.so\nmodule opus.so\nopus_bitrate 64000\n",
        &mic,
    )
    .await;
    let mut ctrl = phone.ctrl().await;
    ctrl.dial(&format!("sip:1000@127.0.0.1:{}", host.sip_port), &phone)
        .await;
    let negotiated = codec.parse::<Codec>().unwrap().encoding_name();
    host.expect(&["Answered", &format!("codec: \"{negotiated}\"")], 10);
    // The greeting, then the microphone's tones, then a key press on the same call.
    tokio::time::sleep(Duration::from_secs((QUIET_SECS + TONE_SECS + 1) as u64)).await;
    ctrl.command("sndcode", "1").await;
    host.expect(&["Actions", "We are open"], 20);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 20);
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10))
            .await
            .is_some()
    );

    let recording = only_file(&host.data.path().join("recordings"), ".wav");
    let wav = Wav::read(&recording);
    assert_eq!(wav.channels, 2, "stereo: caller left, agent right");
    let caller = to_8k(&wav.channel(0), wav.rate);
    let agent = to_8k(&wav.channel(1), wav.rate);
    assert!(
        caller.len() > (QUIET_SECS + TONE_SECS) * RATE,
        "the recording covers the call: {} samples",
        caller.len()
    );

    let tones = &mic[QUIET_SECS * RATE..];
    let up = onset_correlation(tones, &caller, (TONE_SECS - 1) * RATE);
    // baresip's sndfile module writes what it decoded into `<rec>/...-dec.wav`.
    let heard = Wav::read(&only_file(&phone.dir.path().join("rec"), "-dec.wav"));
    let heard = to_8k(&heard.channel(0), heard.rate);
    let down = onset_correlation(&agent, &heard, 4 * RATE);
    eprintln!("{codec}: baresip → host {up:.3}, agent → baresip {down:.3}");
    assert!(up >= 0.9, "{codec}: caller audio in the recording: {up:.3}");
    assert!(down >= 0.9, "{codec}: agent audio at baresip: {down:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_both_ways() {
    audio_both_ways("pcmu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_both_ways() {
    audio_both_ways("pcma").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_both_ways() {
    audio_both_ways("opus").await;
}
