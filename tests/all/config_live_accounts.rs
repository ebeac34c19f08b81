//! Registration accounts changed live through the API (issue 30), against kamailio's
//! registrar with digest users: an added account registers, a changed one is unregistered
//! (Expires: 0) and registers with its new values, a password left out of a PUT is kept, the
//! live account registers again after a restart, a removed one un-REGISTERs; a refused
//! account names its field and changes nothing. kamailio's log (`REGISTERED <user> expires
//! <Expires header>`, written after the digest check) and its location table are the proof.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::process::require;

/// The `agent` account on kamailio with `password` (and quick retries).
fn account(kport: u16, password: Option<&str>, expires: u32) -> Value {
    let mut body = json!({
        "registrar": format!("127.0.0.1:{kport}"),
        "aor": format!("sip:agent@127.0.0.1:{kport}"),
        "expires": expires,
        "backoff-base-secs": 1,
        "backoff-max-secs": 2,
        "timeout-secs": 2,
    });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    body
}

async fn etag(api: &Api) -> String {
    let r = api.get("/v1/config/effective").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.etag.expect("ETag")
}

/// PUT the account with the current ETag; the reply's change record.
async fn put(api: &Api, body: &Value) -> Value {
    let etag = etag(api).await;
    let r = api.put("/v1/config/accounts/pbx", body, Some(&etag)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["change"].clone()
}

/// Waits until kamailio's log holds `line` `n` times.
async fn wait_log(kam: &Kamailio, line: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if kam.log().matches(line).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "kamailio logged `{line}` fewer than {n} times:\n{}",
        kam.log()
    );
}

/// Waits until `/v1/registrations` shows `pbx` in `state`; its status.
async fn wait_state(api: &Api, state: &str) -> Value {
    let body = api
        .poll("/v1/registrations", Duration::from_secs(15), |b| {
            b["registrations"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|s| s["account"] == "pbx" && s["state"] == state)
            })
        })
        .await;
    let all = body["registrations"].as_array().unwrap();
    all.iter().find(|s| s["account"] == "pbx").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_account_registers_changes_survives_restart_and_unregisters() {
    if !require("kamailio") || !require("kamcmd") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let mut host = Host::builder().http("allow-loopback-writes = true").start();
    let api = Api::new(host.http, None);

    // Added: kamailio takes the digest and binds the AOR.
    let added = put(&api, &account(kport, Some("agentpw"), 60)).await;
    assert_eq!(added["target"], "accounts/pbx");
    assert_eq!(added["before"], Value::Null);
    assert_eq!(added["after"]["password"], "***");
    wait_log(&kam, "REGISTERED agent expires 60", 1).await;
    assert!(
        kam.log().contains("CHALLENGE 401 REGISTER agent"),
        "{}",
        kam.log()
    );
    assert!(kam.ul_dump().contains("AoR: agent"), "{}", kam.ul_dump());
    let status = wait_state(&api, "registered").await;
    assert_eq!(status["expires_secs"], 60);
    let effective = api.get("/v1/config/effective").await;
    assert_eq!(effective.json["accounts"]["pbx"]["source"], "live");
    assert_eq!(
        effective.json["accounts"]["pbx"]["value"]["password"],
        "***"
    );
    assert!(!effective.text.contains("agentpw"), "{}", effective.text);

    // A new password: the old binding is taken down first, then the new one is refused.
    let changed = put(&api, &account(kport, Some("not-agentpw"), 60)).await;
    assert_eq!(changed["before"]["password"], "***");
    assert!(!changed.to_string().contains("pw\""), "{changed}");
    wait_log(&kam, "REGISTERED agent expires 0", 1).await;
    let failing = wait_state(&api, "failing").await;
    assert!(
        failing["last_error"].as_str().unwrap().starts_with("401"),
        "{failing}"
    );

    // Back to the right one, then a PUT without the password keeps it.
    put(&api, &account(kport, Some("agentpw"), 60)).await;
    wait_state(&api, "registered").await;
    put(&api, &account(kport, None, 90)).await;
    wait_log(&kam, "REGISTERED agent expires 90", 1).await;
    assert_eq!(wait_state(&api, "registered").await["expires_secs"], 90);

    // After a restart the live account registers again.
    let before = kam.log().matches("REGISTERED agent expires 90").count();
    host.crash_and_restart();
    let api = Api::new(host.http, None);
    wait_log(&kam, "REGISTERED agent expires 90", before + 1).await;
    wait_state(&api, "registered").await;

    // Removed: un-REGISTER (Expires: 0), gone from the location table and the list.
    let unregisters = kam.log().matches("REGISTERED agent expires 0").count();
    let etag = etag(&api).await;
    let removed = api.delete("/v1/config/accounts/pbx", Some(&etag)).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(removed.json["change"]["after"], Value::Null);
    wait_log(&kam, "REGISTERED agent expires 0", unregisters + 1).await;
    assert!(!kam.ul_dump().contains("AoR: agent"), "{}", kam.ul_dump());
    let regs = api.get("/v1/registrations").await;
    assert_eq!(regs.json["registrations"], json!([]), "{}", regs.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_live_account_refused_names_the_field_and_changes_nothing() {
    let host = Host::builder()
        .http("allow-loopback-writes = true")
        .config("[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:5080\"")
        .start();
    let api = Api::new(host.http, None);
    let before = api.get("/v1/config/effective").await;
    let etag = before.etag.clone().unwrap();
    for (name, body, field) in [
        (
            "pbx",
            json!({"registrar": "pbx.example.com", "aor": "sip:a@b"}),
            "registrar",
        ),
        (
            "pbx",
            json!({"registrar": "127.0.0.1:5090", "aor": "agent"}),
            "aor",
        ),
        (
            "pbx",
            json!({"registrar": "127.0.0.1:5090", "aor": "sip:b"}),
            "aor",
        ),
        ("pbx", json!({"registrar": "127.0.0.1:5090"}), "aor"),
        (
            "pbx",
            json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@b", "transport": "sctp"}),
            "transport",
        ),
        (
            "carrier",
            json!({"registrar": "127.0.0.1:5090", "aor": "sip:a@b"}),
            "name",
        ),
    ] {
        let r = api
            .put(&format!("/v1/config/accounts/{name}"), &body, Some(&etag))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["error"], "bad_account", "{}", r.text);
        assert_eq!(r.json["field"], field, "{body}: {}", r.text);
    }
    let missing = api.delete("/v1/config/accounts/pbx", Some(&etag)).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    let after = api.get("/v1/config/effective").await;
    assert_eq!(after.text, before.text);
    assert_eq!(after.etag, before.etag);
}
