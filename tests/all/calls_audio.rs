//! Audio both ways between a real phone (baresip) and the `switchboard` binary, per codec:
//! what baresip's microphone sends is in the caller channel of the host's call recording,
//! and what the agent says (the `menu` greeting, offline synthesis) is in baresip's own
//! recording of what it received. Each direction must correlate ≥ 0.9. Keypad digits sent by
//! baresip over RFC 4733 on the same call reach the agent. G.722 (baresip's g722 module, on
//! spandsp) keeps the wideband: the greeting baresip heard matches what the agent said at
//! 16 kHz, energy above 4 kHz included.

use crate::support::baresip::Baresip;
use crate::support::calls::{AudioCheck, audio_both_ways as check};
use crate::support::host::Host;
use crate::support::media::{Wav, only_file, onset_correlation, resample, wideband_share};
use crate::support::process::require;

/// Starts a host and a phone for `codec`, runs [`check`]; returns both for a closer look.
async fn audio_both_ways(codec: &str) -> Option<(Host, Baresip)> {
    if !require("baresip") || !require("espeak-ng") {
        return None;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls(&format!("codecs = [\"{codec}\"]\nrecord = true"))
        .start();
    let run = AudioCheck::new(codec);
    // G.722 carries 16 kHz: the microphone is made at that rate so that what baresip sends is
    // the track itself.
    let mic_rate = if codec == "g722" { 16000 } else { 8000 };
    let phone = Baresip::start_with_mic_at(
        &format!("<sip:caller@127.0.0.1>;regint=0;audio_codecs={codec}"),
        "module sndfile.so\nmodule opus.so\nopus_bitrate 64000\nmodule g722.so\n",
        &resample(&run.mic, 8000, mic_rate),
        mic_rate,
    )
    .await;
    let uri = format!("sip:1000@127.0.0.1:{}", host.sip_port);
    check(&mut host, &phone, &uri, &run).await;
    Some((host, phone))
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

/// G.722: audio both ways as for the other codecs (at 8 kHz), then the greeting at its full
/// 16 kHz: what baresip decoded correlates ≥ 0.9 with what the agent sent (the host's
/// recording, at the codec's 16 kHz), and keeps at least half of its share of energy above
/// 4 kHz, which 8 kHz anywhere between the model and the phone would have removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g722_both_ways_wideband() {
    let Some((host, phone)) = audio_both_ways("g722").await else {
        return;
    };
    let sent = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    let heard = Wav::read(&only_file(&phone.dir.path().join("rec"), "-dec.wav"));
    assert_eq!((sent.rate, heard.rate), (16000, 16000), "both at 16 kHz");
    let (sent, heard) = (sent.channel(1), heard.channel(0));
    let wide = onset_correlation(&sent, &heard, 4 * 16000);
    // The greeting: its first 4 s, from where each recording's speech starts.
    let share = |s: &[i16]| {
        let from = crate::support::media::onset(s, 500.0).unwrap_or(0);
        wideband_share(&s[from..(from + 4 * 16000).min(s.len())], 16000)
    };
    let (sent_share, heard_share) = (share(&sent), share(&heard));
    eprintln!(
        "g722 at 16 kHz: agent → baresip {wide:.3}; energy above 4 kHz: sent {:.2} %, heard {:.2} %",
        100.0 * sent_share,
        100.0 * heard_share
    );
    assert!(wide >= 0.9, "wideband greeting at baresip: {wide:.3}");
    assert!(
        sent_share > 0.005,
        "the agent speaks wideband (the model path is at 16 kHz): {sent_share:.4}"
    );
    assert!(
        heard_share >= 0.5 * sent_share,
        "the upper band reaches the phone: {heard_share:.4} of {sent_share:.4}"
    );
}
