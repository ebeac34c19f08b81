//! The `appointments` agent on 3000 with a real phone (baresip, calling as patient 1001) and
//! the offline provider: 1 confirms and the agent hangs up; on a second call 2 asks for another
//! time and 0 transfers the caller by REFER to the front desk (a SIPp uas), which baresip
//! calls; the NOTIFY outcome reaches the host and the call ends as transferred.

use std::time::Duration;

use crate::support::agents::example_manifest;
use crate::support::baresip::Baresip;
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::sipp_callee;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_1_2_0_confirm_reschedule_and_transfer_to_the_front_desk() {
    if !require("baresip") || !require("sipp") || !require("espeak-ng") {
        return;
    }
    let (_desk, _desk_dir, desk_port) = sipp_callee(None);
    let desk = format!("sip:frontdesk@127.0.0.1:{desk_port}");
    // Grant exactly the front desk as transfer target, and point the agent at it.
    let manifest = std::fs::read_to_string(example_manifest("appointments"))
        .unwrap()
        .replace(
            "transfer = [\"sip:operator@127.0.0.1\"]",
            &format!("transfer = [\"{desk}\"]"),
        );
    assert!(manifest.contains(&desk), "the manifest grant was rewritten");
    let mut host = Host::builder()
        .example_with_manifest("appointments", manifest)
        .calls("codecs = [\"pcmu\"]")
        .config(&format!(
            "[agent.appointments.config]\noperator = \"{desk}\"\n"
        ))
        .start();
    let phone = Baresip::start("<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu").await;
    let mut ctrl = phone.ctrl().await;
    let number = format!("sip:3000@127.0.0.1:{}", host.sip_port);

    // Call 1: the greeting names Jordan's appointment; 1 confirms, the agent says goodbye and
    // hangs up.
    ctrl.dial(&number, &phone).await;
    host.expect(&["Transcript", "Hello Jordan"], 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctrl.command("sndcode", "1").await;
    host.expect(&["Actions", "is confirmed. Goodbye"], 20);
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(40))
            .await
            .is_some(),
        "the agent hung up: {}",
        phone.log()
    );
    host.expect(&["call ended", "AgentHangup"], 10);

    // Call 2: 2 asks for another time (the call goes on), 0 transfers to the front desk.
    ctrl.dial(&number, &phone).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctrl.command("sndcode", "2").await;
    host.expect(&["Actions", "Which day and time"], 20);
    ctrl.command("sndcode", "0").await;
    host.expect(&["Transfer", &desk, "requested"], 40);
    host.expect(&["Transfer", &desk, "completed", "200"], 20);
    host.expect(&["call ended", "Transferred"], 10);
    assert!(host.is_running());
}
