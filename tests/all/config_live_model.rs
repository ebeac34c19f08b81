//! The model provider changed live (issue 30): a call running when `[model] provider` changes
//! goes on with the provider it started with, the next call connects to the new one; a key the
//! provider does not take is refused naming it, and nothing changes.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::{Api, ended, find};
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, sipp_errors, spawn_sipp, uac_args};
use crate::support::tempdir;

/// The model named in call `id`'s answered event, once the call has ended.
async fn answered_model(api: &Api, id: &str) -> Value {
    let events = ended(api, id).await;
    find(&events, "answered")[0]["model"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_model_provider_applies_to_new_calls_only() {
    if !require("sipp") {
        return;
    }
    let host = Host::builder()
        .examples(&["menu"])
        .http("allow-loopback-writes = true")
        .start();
    let api = Api::new(host.http, None);
    let target = format!("127.0.0.1:{}", host.sip_port);

    // A call held 6 s, answered with the file's provider (none set: offline).
    let running_dir = tempdir("sipp-running");
    let mut running = spawn_sipp(running_dir.path(), &uac_args("1000", 1, 6000, &[], &target));
    let first = api
        .poll("/v1/calls?active=true", Duration::from_secs(20), |b| {
            b["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let first = first["calls"][0]["id"].as_str().unwrap().to_string();

    let effective = api.get("/v1/config/effective").await;
    let etag = effective.etag.clone().unwrap();
    let refused = api
        .put(
            "/v1/config/model/api-key",
            &json!({"value": "sk-test"}),
            Some(&etag),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.json["error"], "bad_model", "{}", refused.text);
    assert_eq!(refused.json["field"], "api-key", "{}", refused.text);
    assert_eq!(api.get("/v1/config/effective").await.text, effective.text);
    let changed = api
        .put(
            "/v1/config/model/provider",
            &json!({"value": "echo"}),
            Some(&etag),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json["change"]["target"], "model/provider");
    assert_eq!(changed.json["change"]["after"], "echo");

    // The next call gets the echo while the first goes on to its end.
    let next_dir = tempdir("sipp-next");
    let (code, errors) = run_sipp(
        next_dir.path(),
        &uac_args("1000", 1, 1000, &[], &target),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    assert_eq!(
        running.wait(Duration::from_secs(30)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(running_dir.path())
    );
    let all = api
        .poll("/v1/calls?active=false", Duration::from_secs(20), |b| {
            b["calls"].as_array().is_some_and(|c| c.len() == 2)
        })
        .await;
    let second = all["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .find(|id| *id != first)
        .unwrap();
    assert_eq!(answered_model(&api, &first).await, "offline");
    assert_eq!(answered_model(&api, &second).await, "echo");
    let first_end = ended(&api, &first).await;
    assert_eq!(
        find(&first_end, "ended")[0]["abnormal"],
        false,
        "{first_end:?}"
    );
}
