//! Keypad digits between real peers and the `switchboard` binary, each checked key by key at
//! the agent (the `probe` fixture says "digit X" from its on-dtmf for every key it gets):
//! SIPp playing its RFC 4733 pcaps (telephone-event as PT 101), SIPp sending SIP INFO
//! (application/dtmf-relay), pjsua2 pressing keys with `dialDtmf` with telephone-event
//! negotiated as PT 120; and the other way, keys the agent sends (send-dtmf) reaching baresip.

use std::time::Duration;

use crate::support::agents::fixture;
use crate::support::baresip::Baresip;
use crate::support::host::Host;
use crate::support::pjsua;
use crate::support::ports::free_port;
use crate::support::process::{require, require_python};
use crate::support::sipp::{run_sipp, scenario, sipp_pcap_dir};
use crate::support::tempdir;

/// The number the probe answers in these tests.
const PROBE: &str = "4000";

/// The host with only the `probe` fixture deployed, on [`PROBE`].
fn probe_host() -> Host {
    Host::builder()
        .agent(
            "probe",
            fixture("probe"),
            // The probe imports kv and http (for its tools), so it loads only with both granted.
            format!(
                "name = \"probe\"\nnumbers = [\"{PROBE}\"]\n[capabilities]\n\
                 kv-quota-bytes = 64\nhttp = [\"127.0.0.1:9\"]\n"
            ),
        )
        .rtp_ports(100)
        .start()
}

/// Every key in `keys` reached the agent's on-dtmf, in order, and nothing else did.
fn assert_agent_got(host: &mut Host, keys: &str) {
    let recorded = host.dtmf_digits(keys.len(), 20);
    assert_eq!(recorded, keys, "digits recorded: {:#?}", host.log.seen);
    for key in keys.chars() {
        host.expect(&["Actions", &format!("Say(\"digit {key}\")")], 10);
    }
}

async fn sipp_presses(scenario_file: &str, pcaps: bool) -> Host {
    let mut host = probe_host();
    let dir = tempdir("sipp-dtmf");
    if pcaps {
        // SIPp looks for the pcaps a scenario names in its working folder.
        for entry in std::fs::read_dir(sipp_pcap_dir()).unwrap().flatten() {
            std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let scen = scenario(scenario_file);
    let (code, errors) = run_sipp(
        dir.path(),
        &[
            "-sf",
            scen.to_str().unwrap(),
            "-s",
            PROBE,
            "-m",
            "1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            &format!("127.0.0.1:{}", host.sip_port),
        ],
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(code, Some(0), "{scenario_file}: {errors}");
    host.expect(&["call ended", "CallerHangup"], 10);
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rfc4733_pcaps_at_pt_101_reach_the_agent() {
    if !require("sipp") || !require("espeak-ng") {
        return;
    }
    let mut host = sipp_presses("uac_dtmf_pcap.xml", true).await;
    host.expect(&["call event", "Answered"], 1);
    assert_agent_got(&mut host, "15*#0");
    assert!(
        host.log.seen.iter().all(|l| !l.contains("sip-info")),
        "every key came as RFC 4733"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_sip_info_digits_reach_the_agent() {
    if !require("sipp") || !require("espeak-ng") {
        return;
    }
    let mut host = sipp_presses("uac_dtmf_info.xml", false).await;
    assert_agent_got(&mut host, "15*#0A");
    let info = host
        .log
        .seen
        .iter()
        .filter(|l| l.contains("Dtmf {") && l.contains("sip-info"))
        .count();
    assert_eq!(info, 6, "every key came as SIP INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_dial_dtmf_at_pt_120_reaches_the_agent() {
    if !require("espeak-ng") || !require_python("pjsua2") {
        return;
    }
    let mut host = probe_host();
    let dir = tempdir("pjsua2");
    let keys = "15*#0";
    let uri = format!("sip:{PROBE}@127.0.0.1:{}", host.sip_port);
    let json = pjsua::call(
        "pj_dtmf.py",
        ["--call", &uri, "--event-pt", "120", "--dtmf", keys],
        dir.path(),
    )
    .await;
    assert_eq!(json["tx_event_pt"], 120, "{json}");
    assert_eq!(json["rx_event_pt"], 120, "{json}");
    assert_eq!(json["sent"], keys, "{json}");
    assert_eq!(json["disconnected"], true, "{json}");
    assert_agent_got(&mut host, keys);
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_agent_sends_reach_baresip() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let mut host = probe_host();
    let phone = Baresip::start("<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu").await;
    let mut ctrl = phone.ctrl().await;
    ctrl.command("dial", &format!("sip:{PROBE}@127.0.0.1:{}", host.sip_port))
        .await;
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
            .await
            .is_some(),
        "{}\n{:#?}",
        phone.log(),
        host.log.seen
    );
    // 6 makes the probe press its keys back (send-dtmf).
    ctrl.command("sndcode", "6").await;
    host.expect(&["Actions", "SendDtmf(\"14*#0AD\")"], 20);
    let mut heard = String::new();
    while heard.len() < "14*#0AD".len() {
        let Some(event) = ctrl
            .wait_event("CALL_DTMF_START", Duration::from_secs(10))
            .await
        else {
            break;
        };
        let json: serde_json::Value = serde_json::from_str(&event).unwrap();
        heard.push_str(json["param"].as_str().unwrap_or("?"));
    }
    assert_eq!(heard, "14*#0AD", "baresip log: {}", phone.log());
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 20);
}
