//! linphone (linphonec, the console client of liblinphone 5.1) calls 1000 on the `switchboard`
//! binary running the `menu` agent on the offline provider, with its default offer (Opus
//! first). The call is answered with Opus; what linphone's microphone sends is in the caller
//! channel of the host's call recording; what linphone records of the call holds the spoken
//! menu prompt; linphone hangs up and the host ends the call as a caller hang-up.
//!
//! Why the microphone check asks for 0.8 here and 0.9 for baresip (calls_audio.rs): the host's
//! answer asks for in-band FEC (`useinbandfec=1`), and mediastreamer2's Opus encoder always plans
//! for 10 % loss, so libopus codes linphone's audio in hybrid mode (TOC config 15): the band
//! under 8 kHz, where the test tones are, is SILK, a speech coder that does not keep the
//! waveform. The figure is deterministic: 0.835 at linphone's default 34 kbit/s and at
//! 80 kbit/s alike. With an answer without `useinbandfec` (a patched host, measured once)
//! linphone sends CELT and the same check gives 0.92 at the default rate and 0.99 at 80 kbit/s.

use std::time::{Duration, Instant};

use crate::support::host::Host;
use crate::support::linphone::Linphone;
use crate::support::media::{
    Wav, only_file, onset_correlation, quiet_then_tones, to_8k, window_rms,
};
use crate::support::process::require;

const RATE: usize = 8000;
/// The microphone stays silent while the greeting plays, then sends this many seconds of tones.
const QUIET_SECS: usize = 11;
const TONE_SECS: usize = 4;

#[test]
fn linphone_calls_the_menu_with_opus_audio_both_ways() {
    if !require("linphonec") || !require("espeak-ng") {
        return;
    }
    let started = Instant::now();
    // The host prefers Opus when the caller offers it (its default order puts PCMU first).
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls("codecs = [\"opus\", \"pcmu\", \"pcma\"]\nrecord = true")
        .start();
    let mic = quiet_then_tones(QUIET_SECS, TONE_SECS, 3);
    let mut phone = Linphone::start(&mic);

    phone.command(&format!("call sip:1000@127.0.0.1:{}", host.sip_port));
    phone.expect(&["Call 1 with", "connected."], 20);
    host.expect(&["Answered", "codec: \"opus\""], 10);
    host.expect(
        &[
            "media started",
            "codec=Opus",
            &format!("remote=Some(127.0.0.1:{})", phone.rtp_port),
        ],
        10,
    );
    phone.expect(&["Media streams established", "call 1 (audio)"], 10);
    // The greeting plays while the microphone is quiet, then the microphone sends its tones.
    std::thread::sleep(Duration::from_secs((QUIET_SECS + TONE_SECS + 1) as u64));
    phone.command("terminate");
    phone.expect(&["Call 1 with", "ended"], 10);
    host.expect(&["call ended", "CallerHangup"], 20);
    // linphone completes its recording when it exits.
    phone.quit(10);
    assert!(host.is_running());

    // linphone → host: the tones in the caller channel of the host's recording.
    let recording = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    assert_eq!(recording.channels, 2, "stereo: caller left, agent right");
    let caller = to_8k(&recording.channel(0), recording.rate);
    let agent = to_8k(&recording.channel(1), recording.rate);
    assert!(
        caller.len() > (QUIET_SECS + TONE_SECS) * RATE,
        "the recording covers the call: {} samples",
        caller.len()
    );
    let up = onset_correlation(&mic[QUIET_SECS * RATE..], &caller, (TONE_SECS - 1) * RATE);

    // host → linphone: the spoken prompt in what linphone heard (48 kHz on Opus).
    let heard_file = std::fs::read(phone.recording()).expect("linphone recorded the call");
    let rms = window_rms(&heard_file);
    let loud = rms.iter().filter(|&&r| r > 300.0).count();
    let heard = Wav::parse(&heard_file);
    // For the log only: linphone's playout shifts by about 100 ms within the first second of
    // the call (its jitter buffer settling), which the onset method cannot follow; half-second
    // windows after that correlate 0.94–0.97.
    let down = onset_correlation(&agent, &to_8k(&heard.channel(0), heard.rate), 4 * RATE);
    eprintln!(
        "linphone → host {up:.3}, agent → linphone {down:.3}; linphone heard {loud} of {} \
         windows loud; {:.1} s",
        rms.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(up >= 0.8, "linphone's microphone in the recording: {up:.3}");
    assert!(
        rms.len() > 200,
        "at least 4 s recorded by linphone, got {} windows",
        rms.len()
    );
    assert!(
        loud * 4 > rms.len(),
        "speech in at least a quarter of what linphone heard: {loud} of {} windows",
        rms.len()
    );
}
