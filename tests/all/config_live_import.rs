//! The whole live overlay exported and imported (issue 30), JSON and TOML: importing an export
//! gives back the effective configuration byte for byte (passwords the export masks are kept
//! from the current ones), audited as one change; a bad import names the field and changes
//! nothing. Writes are rate-limited per caller (429 with Retry-After).

use serde_json::{Value, json};

use crate::support::api::Api;
use crate::support::host::Host;

async fn etag(api: &Api) -> String {
    let r = api.get("/v1/config/effective").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.etag.expect("ETag")
}

/// A write with the current ETag; must succeed.
async fn put(api: &Api, path: &str, body: Value) {
    let r = api.put(path, &body, Some(&etag(api).await)).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
}

async fn delete(api: &Api, path: &str) {
    let r = api.delete(path, Some(&etag(api).await)).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_import_of_an_export_restores_the_configuration_and_a_bad_one_changes_nothing()
{
    let host = Host::builder()
        .examples(&["menu", "receptionist"])
        .http("allow-loopback-writes = true")
        .start();
    let api = Api::new(host.http, None);
    put(
        &api,
        "/v1/config/routes/4000",
        json!({"agent": "receptionist"}),
    )
    .await;
    delete(&api, "/v1/config/routes/3000").await;
    let trunk = json!({"outbound-proxy": "127.0.0.1:5090", "password": "trunk-secret"});
    put(&api, "/v1/config/trunks/lab", trunk).await;

    let toml_export = api.get("/v1/config/live?format=toml").await;
    assert_eq!(toml_export.status, 200, "{}", toml_export.text);
    assert_eq!(toml_export.content_type, "application/toml");
    let json_export = api.get("/v1/config/live").await;
    assert_eq!(json_export.status, 200, "{}", json_export.text);
    assert_eq!(json_export.json["routes"]["4000"], "receptionist");
    assert_eq!(json_export.json["removed"], json!(["routes/3000"]));
    assert_eq!(json_export.json["trunks"]["lab"]["password"], "***");
    assert!(
        !toml_export.text.contains("trunk-secret"),
        "{}",
        toml_export.text
    );
    assert!(
        toml_export.text.contains("[trunks.lab]"),
        "{}",
        toml_export.text
    );
    let saved = api.get("/v1/config/effective").await;
    assert_eq!(json_export.etag, saved.etag);

    // Changed since: a route more, the trunk moved (its password kept), the removed route back.
    put(&api, "/v1/config/routes/5000", json!({"agent": "menu"})).await;
    let moved = json!({"outbound-proxy": "127.0.0.1:6000"});
    put(&api, "/v1/config/trunks/lab", moved).await;
    put(&api, "/v1/config/routes/3000", json!({"agent": "menu"})).await;
    let changed = api.get("/v1/config/effective").await;
    assert_ne!(changed.text, saved.text);
    let current = changed.etag.clone().unwrap();

    // Refused as a whole, naming the field: nothing changes.
    let bad_toml = format!(
        "{}\n[trunks.other]\noutbound-proxy = \"nowhere\"\n",
        toml_export.text
    );
    for (content_type, body, code, field) in [
        (
            "application/toml",
            bad_toml.as_str(),
            "bad_trunk",
            Some("outbound-proxy"),
        ),
        (
            "application/json",
            r#"{"routes": {"6000": "nobody"}}"#,
            "unknown_agent",
            Some("agent"),
        ),
        (
            "application/json",
            r#"{"removed": ["nothing/1"]}"#,
            "bad_path",
            Some("removed"),
        ),
        (
            "application/json",
            r#"{"trunks": {"new": {"outbound-proxy": "127.0.0.1:7000", "password": "***"}}}"#,
            "bad_trunk",
            Some("password"),
        ),
        ("application/json", r#"{"route": {}}"#, "bad_document", None),
        ("text/plain", "routes = {}", "unsupported_media_type", None),
    ] {
        let r = api
            .put_raw("/v1/config/live", content_type, body, Some(&current))
            .await;
        assert_eq!(r.json["error"], code, "{body}: {}", r.text);
        assert!(r.status == 400 || r.status == 415, "{}", r.text);
        if let Some(field) = field {
            assert_eq!(r.json["field"], field, "{body}: {}", r.text);
        }
    }
    let stale = api
        .put_raw(
            "/v1/config/live",
            "application/toml",
            &toml_export.text,
            Some("\"old\""),
        )
        .await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    let unchanged = api.get("/v1/config/effective").await;
    assert_eq!(unchanged.text, changed.text);

    // The export imported: the configuration as it was, byte for byte.
    let imported = api
        .put_raw(
            "/v1/config/live",
            "application/toml",
            &toml_export.text,
            Some(&current),
        )
        .await;
    assert_eq!(imported.status, 200, "{}", imported.text);
    let record = &imported.json["change"];
    assert_eq!(record["action"], "import");
    assert_eq!(record["target"], "live");
    assert_eq!(record["before"]["routes"]["5000"], "menu");
    assert_eq!(record["after"]["trunks"]["lab"]["password"], "***");
    assert!(!imported.text.contains("trunk-secret"), "{}", imported.text);
    let restored = api.get("/v1/config/effective").await;
    assert_eq!(restored.text, saved.text);
    assert_eq!(restored.etag, saved.etag);
    let audit = api.get("/v1/config/audit?limit=1").await;
    assert_eq!(audit.json["changes"][0]["action"], "import");

    // The JSON export imports the same.
    let again = api
        .put_raw(
            "/v1/config/live",
            "application/json",
            &json_export.text,
            restored.etag.as_deref(),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(api.get("/v1/config/effective").await.text, saved.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_writes_are_rate_limited_per_caller() {
    let tokens = "config-writes-per-minute = 3\n\
                  [[http.api-tokens]]\nname = \"ops\"\ntoken = \"ops-token\"\nscope = \"write\"\n\
                  [[http.api-tokens]]\nname = \"ci\"\ntoken = \"ci-token\"\nscope = \"write\"\n";
    let host = Host::builder().examples(&["menu"]).http(tokens).start();
    let ops = Api::new(host.http, Some("ops-token"));
    let ci = ops.with_token(Some("ci-token"));
    for n in 0..3 {
        put(
            &ops,
            &format!("/v1/config/routes/400{n}"),
            json!({"agent": "menu"}),
        )
        .await;
    }
    let before = ops.get("/v1/config/effective").await;
    // Raw, for the Retry-After header.
    let limited = reqwest::Client::new()
        .put(format!("{}/v1/config/routes/4009", ops.base))
        .bearer_auth("ops-token")
        .header("if-match", before.etag.clone().unwrap())
        .header("content-type", "application/json")
        .body(json!({"agent": "menu"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    let body: Value = serde_json::from_str(&limited.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(ops.get("/v1/config/effective").await.text, before.text);
    // Another caller has its own allowance.
    put(&ci, "/v1/config/routes/4009", json!({"agent": "menu"})).await;
}
