//! Trunks changed live through the API (issue 30), with SIPp as the carrier: an added trunk
//! carries the next call through the API at once (SIPp's message trace shows the INVITE to the
//! trunk's number URI and From user); a removed one refuses new calls naming it while a call
//! running through it goes on to its end; a refused trunk names its field and changes nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee_with, sipp_errors};

async fn etag(api: &Api) -> String {
    let r = api.get("/v1/config/effective").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.etag.expect("ETag")
}

/// SIPp's `-trace_msg` log in `dir`: every message it sent and received.
fn sipp_messages(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Waits until the call's record shows `state`.
async fn wait_state(api: &Api, id: &str, state: &str) -> Value {
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |b| {
        b["call"]["state"] == state
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_trunk_carries_calls_at_once_and_once_removed_lets_running_calls_finish() {
    if !require("sipp") {
        return;
    }
    let host = Host::builder()
        .examples(&["menu"])
        .http("allow-loopback-writes = true")
        .start();
    let api = Api::new(host.http, None);
    let (mut sipp, dir, port) = sipp_callee_with(None, &["-trace_msg"]);

    // Added: the next call through it goes to SIPp with the trunk's From user.
    let trunk = json!({"outbound-proxy": format!("127.0.0.1:{port}"), "from-user": "live-trunk",
                       "password": "trunk-secret", "allowed-prefixes": ["+1555"]});
    let etag0 = etag(&api).await;
    let added = api.put("/v1/config/trunks/lab", &trunk, Some(&etag0)).await;
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(added.json["change"]["target"], "trunks/lab");
    assert_eq!(added.json["change"]["after"]["password"], "***");
    assert!(!added.text.contains("trunk-secret"), "{}", added.text);
    let effective = api.get("/v1/config/effective").await;
    assert_eq!(effective.json["trunks"]["lab"]["source"], "live");
    assert_eq!(effective.json["trunks"]["lab"]["value"]["password"], "***");

    // Its allowed prefixes apply at once too.
    let elsewhere = api
        .post(
            "/v1/calls",
            &json!({"to": "+4930 1234", "via": "lab", "agent": "menu"}),
        )
        .await;
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.text);
    assert!(elsewhere.text.contains("+1555"), "{}", elsewhere.text);

    let id = api
        .place_call(&json!({"to": "+1 555 0100", "via": "lab", "agent": "menu"}))
        .await;
    wait_state(&api, &id, "active").await;
    let trace = sipp_messages(dir.path());
    assert!(
        trace.contains(&format!("INVITE sip:+15550100@127.0.0.1:{port} SIP/2.0")),
        "{trace}"
    );
    assert!(trace.contains("sip:live-trunk@"), "{trace}");

    // Removed: new calls through it are refused, naming it; the running one goes on.
    let removed = api
        .delete("/v1/config/trunks/lab", Some(&etag(&api).await))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(removed.json["change"]["after"], Value::Null);
    let refused = api
        .post(
            "/v1/calls",
            &json!({"to": "+1 555 0101", "via": "lab", "agent": "menu"}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.json["error"], "unknown_trunk", "{}", refused.text);
    assert_eq!(refused.json["field"], "via", "{}", refused.text);
    assert!(refused.text.contains("lab"), "{}", refused.text);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(running.json["call"]["state"], "active", "{}", running.text);
    assert_eq!(running.json["live"], true, "{}", running.text);

    // It ends normally: our BYE reaches SIPp, which answers it.
    let hung = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(hung.status, 202, "{}", hung.text);
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(dir.path())
    );
    wait_state(&api, &id, "ended").await;
    assert_eq!(
        sipp_messages(dir.path()).matches("INVITE sip:").count(),
        1,
        "only the first call reached the trunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_trunk_refused_names_the_field_and_changes_nothing() {
    let host = Host::builder()
        .http("allow-loopback-writes = true")
        .config(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:5080\"\ndefault = true\n\
             [[sip.accounts]]\nname = \"pbx\"\nregistrar = \"127.0.0.1:9\"\naor = \"sip:a@127.0.0.1\"\n",
        )
        .start();
    let api = Api::new(host.http, None);
    let before = api.get("/v1/config/effective").await;
    assert_eq!(before.json["trunks"]["carrier"]["source"], "file");
    let etag = before.etag.clone().unwrap();
    for (name, body, field) in [
        ("lab", json!({"domain": "lab.example"}), "outbound-proxy"),
        (
            "lab",
            json!({"outbound-proxy": "lab.example:5060"}),
            "outbound-proxy",
        ),
        (
            "lab",
            json!({"outbound-proxy": "127.0.0.1:5090", "domain": "lab example"}),
            "domain",
        ),
        (
            "lab",
            json!({"outbound-proxy": "127.0.0.1:5090", "default": true}),
            "default",
        ),
        (
            "lab",
            json!({"outbound-proxy": "127.0.0.1:5090", "transport": "sctp"}),
            "transport",
        ),
        ("pbx", json!({"outbound-proxy": "127.0.0.1:5090"}), "name"),
    ] {
        let r = api
            .put(&format!("/v1/config/trunks/{name}"), &body, Some(&etag))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"], "bad_trunk", "{}", r.text);
        assert_eq!(r.json["field"], field, "{body}: {}", r.text);
    }
    let missing = api.delete("/v1/config/trunks/lab", Some(&etag)).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    let other = api
        .put("/v1/config/nothing/lab", &json!({}), Some(&etag))
        .await;
    assert_eq!(other.status, 404, "{}", other.text);
    let after = api.get("/v1/config/effective").await;
    assert_eq!(after.text, before.text);
    assert_eq!(after.etag, before.etag);
}
