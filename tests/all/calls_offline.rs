//! A real phone (baresip) calls 1000 on the `switchboard` binary running the `menu` agent on
//! the offline provider: the spoken prompt reaches the phone, keypad digits lead to the right
//! branch, and the agent's hang-up ends the call cleanly.

use std::time::Duration;

use crate::support::baresip::Baresip;
use crate::support::calls::dial;
use crate::support::host::Host;
use crate::support::media::window_rms;
use crate::support::process::require;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_the_menu_on_the_offline_provider() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls("codecs = [\"pcmu\"]")
        .start();
    let sip_port = host.sip_port;
    let phone = Baresip::start_with(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
    )
    .await;
    let mut ctrl = dial(&phone, "1000", sip_port).await;
    // Let part of the greeting play, then press 1 (opening hours) over RFC 4733.
    tokio::time::sleep(Duration::from_secs(4)).await;
    ctrl.command("sndcode", "1").await;
    let opening = host
        .log
        .wait_for(&["Actions", "We are open"], Duration::from_secs(20));
    assert!(
        opening.is_some(),
        "digit 1 reached the agent: {:?}",
        host.log.seen
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctrl.command("sndcode", "#").await;
    assert!(
        host.log
            .wait_for(&["Actions", "Goodbye"], Duration::from_secs(20))
            .is_some(),
        "{:?}",
        host.log.seen
    );
    // The agent hangs up once "Goodbye" has been spoken.
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the agent hung up: {}",
        phone.log()
    );
    assert!(
        host.log
            .wait_for(&["call ended", "AgentHangup"], Duration::from_secs(10))
            .is_some(),
        "{:?}",
        host.log.seen
    );

    // What baresip heard: speech, not silence.
    let rec = std::fs::read_dir(phone.dir.path().join("rec"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip recorded the received audio");
    let rms = window_rms(&std::fs::read(&rec).unwrap());
    let loud = rms.iter().filter(|&&r| r > 300.0).count();
    assert!(
        rms.len() > 200,
        "at least 4 s recorded, got {} windows",
        rms.len()
    );
    assert!(
        loud * 4 > rms.len(),
        "speech in at least a quarter of the call: {loud} of {} windows",
        rms.len()
    );
    assert!(host.is_running());
}
