//! Routes and agent settings changed live through the API (issue 30): running calls keep
//! their agent, the next call gets the new one, the change survives a restart; refused
//! changes leave the effective configuration byte-identical; writes need write rights and
//! the current ETag; every change is audited with secrets masked and streamed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agents::example_manifest;
use crate::support::api::{Api, Reply};
use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, spawn_sipp, uac_args};
use crate::support::tempdir;

/// The example `menu` without its manifest's number (so `[routes]` alone routes 1000 and a
/// live change may move it) and with a secret it may read.
fn menu_manifest(keep_numbers: bool) -> String {
    let text = std::fs::read_to_string(example_manifest("menu")).unwrap();
    let text = if keep_numbers {
        text
    } else {
        text.replace("numbers = [\"1000\"]", "")
    };
    text.replace("[capabilities]", "[capabilities]\nsecrets = [\"crm-key\"]")
}

fn receptionist_manifest() -> String {
    std::fs::read_to_string(example_manifest("receptionist")).unwrap()
}

/// Calls listed for `query` (e.g. `agent=menu`).
async fn calls(api: &Api, query: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/calls?{query}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["calls"].as_array().unwrap().clone()
}

/// Waits until `query` lists `n` calls; returns them.
async fn wait_calls(api: &Api, query: &str, n: usize) -> Vec<Value> {
    let path = format!("/v1/calls?{query}");
    let body = api
        .poll(&path, Duration::from_secs(20), |b| {
            b["calls"].as_array().is_some_and(|c| c.len() == n)
        })
        .await;
    body["calls"].as_array().unwrap().clone()
}

async fn effective(api: &Api) -> (String, String) {
    let r = api.get("/v1/config/effective").await;
    assert_eq!(r.status, 200, "{}", r.text);
    (r.text, r.etag.expect("ETag on /v1/config/effective"))
}

fn assert_refused(r: &Reply, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], code, "{}", r.text);
    if let Some(field) = field {
        assert_eq!(r.json["field"], field, "{}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_route_moves_new_calls_only_and_survives_a_restart() {
    if !require("sipp") {
        return;
    }
    let mut host = Host::builder()
        .example_with_manifest("menu", menu_manifest(false))
        .example_with_manifest("receptionist", receptionist_manifest())
        .http("allow-loopback-writes = true")
        .start();
    let api = Api::new(host.http, None);
    let target = format!("127.0.0.1:{}", host.sip_port);

    // Two calls to 1000 held 8 s: the menu answers them.
    let running_dir = tempdir("sipp-running");
    let mut running = spawn_sipp(
        running_dir.path(),
        &uac_args("1000", 2, 8000, &["-l", "2"], &target),
    );
    let before = wait_calls(&api, "active=true&agent=menu", 2).await;

    let (_, etag) = effective(&api).await;
    let moved = api
        .put(
            "/v1/config/routes/1000",
            &json!({"agent": "receptionist"}),
            Some(&etag),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.json["change"]["who"], "loopback");
    assert_eq!(moved.json["change"]["before"], "menu");
    assert_eq!(moved.json["change"]["after"], "receptionist");
    assert_ne!(moved.etag.as_deref(), Some(etag.as_str()));

    // The next call to 1000 gets the receptionist while the first two still run.
    let next_dir = tempdir("sipp-next");
    let (code, errors) = run_sipp(
        next_dir.path(),
        &uac_args("1000", 1, 1000, &[], &target),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    let moved_calls = wait_calls(&api, "agent=receptionist", 1).await;
    assert!(
        moved_calls[0]["callee"].as_str().unwrap().contains("1000"),
        "{moved_calls:?}"
    );
    let still = calls(&api, "active=true&agent=menu").await;
    assert_eq!(still.len(), 2, "the running calls kept the menu: {still:?}");

    // The running calls finish normally, on the menu.
    assert_eq!(
        running.wait(Duration::from_secs(30)).await,
        Some(0),
        "SIPp: {}",
        crate::support::sipp::sipp_errors(running_dir.path())
    );
    let ended = wait_calls(&api, "active=false&agent=menu", 2).await;
    for call in &ended {
        assert_eq!(call["state"], "ended", "{call}");
        assert!(before.iter().any(|b| b["id"] == call["id"]), "{call}");
    }

    // After a crash and restart the change is still there, and routes calls.
    host.crash_and_restart();
    let api = Api::new(host.http, None);
    let (body, _) = effective(&api).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["routes"]["1000"],
        json!({"agent": "receptionist", "source": "live"})
    );
    assert_eq!(body["routes"]["2000"]["source"], "file");
    let agents = api.get("/v1/agents").await.json;
    let route = agents["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pattern"] == "1000")
        .cloned()
        .unwrap();
    assert_eq!(route["agent"], "receptionist", "{route}");
    assert_eq!(route["source"], "a live change through the API");
    let again_dir = tempdir("sipp-again");
    let (code, errors) = run_sipp(
        again_dir.path(),
        &uac_args("1000", 1, 500, &[], &target),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    wait_calls(&api, "agent=receptionist", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_refused_changes_change_nothing_and_changes_are_audited() {
    let tokens = "[[http.api-tokens]]\nname = \"ops\"\ntoken = \"ops-token\"\nscope = \"write\"\n\
                  [[http.api-tokens]]\nname = \"viewer\"\ntoken = \"view-token\"\nscope = \"read\"\n";
    let mut host = Host::builder()
        .example_with_manifest("menu", menu_manifest(true))
        .example_with_manifest("receptionist", receptionist_manifest())
        .http(tokens)
        .env("SWITCHBOARD__ROUTES__3000", "menu")
        .start();
    let ops = Api::new(host.http, Some("ops-token"));
    let (before, etag) = effective(&ops).await;
    let parsed: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        parsed["routes"]["3000"],
        json!({"agent": "menu", "source": "environment", "variable": "SWITCHBOARD__ROUTES__3000"})
    );
    assert_eq!(parsed["default_agent"], Value::Null);

    let long = "x".repeat(5000);
    let invalid: [(&str, Value, &str, &str); 8] = [
        (
            "/v1/config/routes/12a!",
            json!({"agent": "menu"}),
            "bad_pattern",
            "pattern",
        ),
        // The receptionist's manifest claims 2000.
        (
            "/v1/config/routes/2000",
            json!({"agent": "menu"}),
            "route_conflict",
            "pattern",
        ),
        (
            "/v1/config/routes/%2B4930*",
            json!({"agent": "nobody"}),
            "unknown_agent",
            "agent",
        ),
        (
            "/v1/config/default-agent",
            json!({"agent": "nobody"}),
            "unknown_agent",
            "agent",
        ),
        (
            "/v1/config/agents/menu/settings/colour",
            json!({"value": "red"}),
            "unknown_key",
            "key",
        ),
        (
            "/v1/config/agents/nobody/settings/address",
            json!({"value": "x"}),
            "unknown_agent",
            "name",
        ),
        (
            "/v1/config/agents/menu/secrets/address",
            json!({"value": "x"}),
            "unknown_key",
            "key",
        ),
        (
            "/v1/config/agents/menu/settings/address",
            json!({"value": long}),
            "field_too_large",
            "value",
        ),
    ];
    for (path, body, code, field) in invalid {
        let r = ops.put(path, &body, Some(&etag)).await;
        assert_refused(&r, 400, code, Some(field));
        assert_eq!(
            effective(&ops).await,
            (before.clone(), etag.clone()),
            "{path}"
        );
    }
    let r = ops
        .put(
            "/v1/config/routes/3000",
            &json!({"agent": "receptionist"}),
            Some(&etag),
        )
        .await;
    assert_refused(&r, 409, "set_by_environment", None);
    assert!(r.text.contains("SWITCHBOARD__ROUTES__3000"), "{}", r.text);
    let r = ops.delete("/v1/config/routes/4000", Some(&etag)).await;
    assert_refused(&r, 404, "not_found", None);
    let r = ops
        .put("/v1/config/routes/4000", &json!({"agent": "menu"}), None)
        .await;
    assert_refused(&r, 428, "if_match_required", None);
    let r = ops
        .put(
            "/v1/config/routes/4000",
            &json!({"agent": "menu"}),
            Some("\"stale\""),
        )
        .await;
    assert_refused(&r, 409, "etag_mismatch", None);
    let viewer = ops.with_token(Some("view-token"));
    let r = viewer
        .put(
            "/v1/config/routes/4000",
            &json!({"agent": "menu"}),
            Some(&etag),
        )
        .await;
    assert_refused(&r, 403, "forbidden", None);
    assert_eq!(viewer.get("/v1/config/effective").await.status, 200);
    let r = ops
        .with_token(None)
        .put(
            "/v1/config/routes/4000",
            &json!({"agent": "menu"}),
            Some(&etag),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(effective(&ops).await, (before.clone(), etag.clone()));
    assert!(
        ops.get("/v1/config/audit").await.json["changes"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Valid changes: a secret, a setting, a route; each streamed as it is made.
    let mut sse = ops.events().await;
    let secret = ops
        .put(
            "/v1/config/agents/menu/secrets/crm-key",
            &json!({"value": "s3cret-live"}),
            Some(&etag),
        )
        .await;
    assert_eq!(secret.status, 200, "{}", secret.text);
    let etag = secret.etag.clone().unwrap();
    let streamed = sse
        .collect_until(Duration::from_secs(10), |name, _| name == "config-change")
        .await;
    let (_, change) = streamed.last().unwrap();
    assert_eq!(change["target"], "agents/menu/secrets/crm-key");
    assert_eq!(change["who"], "ops");
    assert_eq!(change["after"], "***");
    let named = ops
        .put(
            "/v1/config/agents/menu/settings/business-name",
            &json!({"value": "Live Bakery"}),
            Some(&etag),
        )
        .await;
    assert_eq!(named.status, 200, "{}", named.text);
    let etag = named.etag.clone().unwrap();
    let routed = ops
        .put(
            "/v1/config/routes/%2B4930*",
            &json!({"agent": "receptionist"}),
            Some(&etag),
        )
        .await;
    assert_eq!(routed.status, 200, "{}", routed.text);
    sse.collect_until(Duration::from_secs(10), |name, data| {
        name == "config-change" && data["target"] == "routes/4930*"
    })
    .await;

    let (after, _) = effective(&ops).await;
    assert!(!after.contains("s3cret-live"), "{after}");
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        after["agents"]["menu"]["secrets"]["crm-key"],
        json!({"value": "***", "source": "live"})
    );
    assert_eq!(
        after["agents"]["menu"]["settings"]["business-name"],
        json!({"value": "Live Bakery", "source": "live"})
    );
    assert_eq!(after["routes"]["4930*"]["source"], "live");
    let audit = ops.get("/v1/config/audit").await;
    assert!(!audit.text.contains("s3cret-live"), "{}", audit.text);
    let targets: Vec<&str> = audit.json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            "routes/4930*",
            "agents/menu/settings/business-name",
            "agents/menu/secrets/crm-key"
        ]
    );
    // The file had no business-name (the manifest's default is no configuration value).
    assert_eq!(audit.json["changes"][1]["before"], Value::Null);
    assert_eq!(audit.json["changes"][1]["after"], "Live Bakery");

    // The next call's agent reads the new setting.
    if require("sipp") {
        let dir = tempdir("sipp-setting");
        let target = format!("127.0.0.1:{}", host.sip_port);
        let (code, errors) = run_sipp(
            dir.path(),
            &uac_args("1000", 1, 3000, &[], &target),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(code, Some(0), "SIPp: {errors}");
        let call = wait_calls(&ops, "agent=menu", 1).await;
        let id = call[0]["id"].as_str().unwrap();
        let detail = ops
            .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
                d["transcript"].as_array().is_some_and(|t| !t.is_empty())
            })
            .await;
        assert!(
            detail["transcript"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Welcome to Live Bakery"),
            "{detail}"
        );
    }
    host.expect(&["configuration changed", "ops"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_without_tokens_refuses_writes() {
    let host = Host::builder().examples(&["menu"]).start();
    let api = Api::new(host.http, None);
    let (before, etag) = effective(&api).await;
    let r = api
        .put(
            "/v1/config/routes/4000",
            &json!({"agent": "menu"}),
            Some(&etag),
        )
        .await;
    assert_refused(&r, 403, "forbidden", None);
    assert!(r.text.contains("allow-loopback-writes"), "{}", r.text);
    assert_eq!(effective(&api).await, (before, etag));
}
