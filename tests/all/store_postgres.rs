//! The host on a Postgres store (`[store] url`, a real server): a SIPp call to the menu agent is
//! recorded in that database, and its record, events and transcript come back through the API.

use std::time::Duration;

use serde_json::Value;

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::postgres;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, uac_args};
use crate::support::tempdir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_postgres_store_has_its_record_events_and_transcript_in_the_api() {
    if !require("sipp") {
        return;
    }
    let Some(url) = postgres::database() else {
        return;
    };
    let host = Host::builder()
        .examples(&["menu"])
        .config(&format!("[store]\nurl = {url:?}"))
        .start();
    let api = Api::new(host.http, None);
    let dir = tempdir("sipp-postgres");
    let target = format!("127.0.0.1:{}", host.sip_port);
    let (code, errors) = run_sipp(
        dir.path(),
        &uac_args("1000", 1, 3000, &[], &target),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "SIPp: {errors}");

    let listed = api
        .poll("/v1/calls?agent=menu", Duration::from_secs(20), |b| {
            b["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = listed["calls"][0]["id"].as_str().unwrap().to_string();
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
            d["call"]["state"] == "ended"
                && d["transcript"].as_array().is_some_and(|t| !t.is_empty())
        })
        .await;
    let call = &detail["call"];
    assert_eq!(call["direction"], "inbound", "{detail}");
    assert_eq!(call["agent"], "menu");
    assert_eq!(call["transport"], "udp");
    assert!(call["answered_at_ms"].as_i64().is_some(), "{detail}");
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind);
    assert!(
        position("created") < position("answered") && position("answered") < position("ended"),
        "created, answered, ended in order: {kinds:?}"
    );
    let seqs: Vec<i64> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(detail["transcript"].as_array().unwrap())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "events and transcript share one seq"
    );
    let first_line: &Value = &detail["transcript"][0];
    assert_eq!(first_line["role"], "agent");
    assert!(
        first_line["text"]
            .as_str()
            .unwrap()
            .starts_with("Welcome to"),
        "{detail}"
    );
    // A transcript search on Postgres finds it.
    let found = api.get("/v1/calls?text=welcome").await;
    assert_eq!(found.json["calls"][0]["id"], id.as_str(), "{}", found.text);

    // The rows are in Postgres, not in a SQLite file under the data folder.
    assert!(!host.data.path().join("calls.db").exists());
    assert_eq!(postgres::psql(&url, "SELECT COUNT(*) FROM calls"), "1");
    assert_eq!(
        postgres::psql(&url, "SELECT COUNT(*) FROM events"),
        kinds.len().to_string()
    );
}
