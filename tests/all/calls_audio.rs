//! Audio both ways between a real phone (baresip) and the `switchboard` binary, per codec:
//! what baresip's microphone sends is in the caller channel of the host's call recording,
//! and what the agent says (the `menu` greeting, offline synthesis) is in baresip's own
//! recording of what it received. Each direction must correlate ≥ 0.9. Keypad digits sent by
//! baresip over RFC 4733 on the same call reach the agent.

use crate::support::baresip::Baresip;
use crate::support::calls::{AudioCheck, audio_both_ways as check};
use crate::support::host::Host;
use crate::support::process::require;

async fn audio_both_ways(codec: &str) {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls(&format!("codecs = [\"{codec}\"]\nrecord = true"))
        .start();
    let run = AudioCheck::new(codec);
    let phone = Baresip::start_with_mic(
        &format!("<sip:caller@127.0.0.1>;regint=0;audio_codecs={codec}"),
        "module sndfile.so\nmodule opus.so\nopus_bitrate 64000\n",
        &run.mic,
    )
    .await;
    let uri = format!("sip:1000@127.0.0.1:{}", host.sip_port);
    check(&mut host, &phone, &uri, &run).await;
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
