//! The API refuses bad call and transfer targets and oversized fields before any agent runs:
//! each gets a 400 (413 for a whole body over the limit) whose JSON names the field, and no
//! call is created (a call's record starts before its agent's on-start, so none means no hook
//! ran).

use serde_json::{Value, json};

use crate::support::api::{Api, Reply};
use crate::support::host::Host;
use crate::support::ports::free_port;

/// A host with `menu` (granting the hand-off to `receptionist`) and `receptionist`, and one
/// trunk, `carrier`, not the default, that may dial only +1 555 numbers; its proxy is a port
/// nobody answers on, so an accepted call rings until the test ends.
fn host() -> Host {
    let menu = std::fs::read_to_string(crate::support::agents::example_manifest("menu"))
        .unwrap()
        .replace(
            "transfer = [\"sip:operator@127.0.0.1\"]",
            "transfer = [\"sip:operator@127.0.0.1\", \"agent:receptionist\"]",
        );
    assert!(menu.contains("agent:receptionist"), "{menu}");
    Host::builder()
        .example_with_manifest("menu", menu)
        .examples(&["receptionist"])
        .config(&format!(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{}\"\n\
             allowed-prefixes = [\"+1 555\"]\n",
            free_port()
        ))
        .start()
}

/// Asserts a JSON error with this status, code and field.
#[track_caller]
fn refused(r: &Reply, status: u16, code: &str, field: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.json["error"], code, "{}", r.text);
    assert_eq!(r.json["field"], field, "{}", r.text);
    assert!(!r.json["detail"].is_null(), "{}", r.text);
}

async fn calls(api: &Api) -> Vec<Value> {
    let r = api.get("/v1/calls").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["calls"].as_array().unwrap().clone()
}

#[tokio::test]
async fn bad_targets_and_oversized_fields_are_refused_before_any_agent_runs() {
    let mut host = host();
    let api = Api::new(host.http, None);

    // Target forms we do not call, each a 400 listing the accepted ones.
    for (body, why) in [
        (json!({"to": "http://evil/", "agent": "menu"}), "scheme"),
        (
            json!({"to": "mailto:a@example.com", "agent": "menu"}),
            "scheme",
        ),
        (
            json!({"to": "bare garbage!", "agent": "menu"}),
            "not a number",
        ),
        (json!({"to": "sip:", "agent": "menu"}), "host"),
        (
            json!({"to": "+1 555 0100", "agent": "menu"}),
            "needs a trunk",
        ),
        (
            json!({"to": "tel:+15550100", "agent": "menu"}),
            "needs a trunk",
        ),
        (
            json!({"to": "+44 20 7946 0000", "via": "carrier", "agent": "menu"}),
            "only numbers starting with",
        ),
        (
            json!({"to": "sip:+4420@carrier.example", "trunk": "carrier", "agent": "menu"}),
            "only numbers starting with",
        ),
    ] {
        let r = api.post("/v1/calls", &body).await;
        refused(&r, 400, "bad_target", "to");
        let detail = r.json["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{body}: {detail}");
        for form in ["sip:", "sips:", "tel:", "via"] {
            assert!(detail.contains(form), "{body}: {form} not listed: {detail}");
        }
    }

    // Each string field just over its maximum, and metadata over its size and property count.
    let long = |n: usize| "9".repeat(n);
    for (body, field) in [
        (json!({"to": format!("sip:{}@a.example", long(600))}), "to"),
        (json!({"to": long(200_000), "agent": "menu"}), "to"),
        (json!({"to": "sip:a@127.0.0.1", "from": long(65)}), "from"),
        (
            json!({"to": "sip:a@127.0.0.1", "agent": "m".repeat(65)}),
            "agent",
        ),
        (
            json!({"to": "sip:a@127.0.0.1", "number": long(65)}),
            "number",
        ),
        (json!({"to": "5550100", "via": "c".repeat(65)}), "via"),
        (json!({"to": "5550100", "trunk": "c".repeat(65)}), "trunk"),
        (
            json!({"to": "sip:a@127.0.0.1", "agent": "menu", "metadata": {"blob": long(17_000)}}),
            "metadata",
        ),
        (
            json!({"to": "sip:a@127.0.0.1", "agent": "menu",
                   "metadata": (0..65).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()}),
            "metadata",
        ),
    ] {
        let r = api.post("/v1/calls", &body).await;
        refused(&r, 400, "field_too_large", field);
    }
    // Values that are not what the field holds.
    refused(
        &api.post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "from": "a\r\nX: y"}),
        )
        .await,
        400,
        "bad_value",
        "from",
    );
    refused(
        &api.post(
            "/v1/calls",
            &json!({"to": "5550100", "via": "carrier", "trunk": "other"}),
        )
        .await,
        400,
        "bad_value",
        "via",
    );
    // A whole body over the limit.
    let r = api
        .post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "metadata": long(300_000)}),
        )
        .await;
    refused(&r, 413, "body_too_large", "body");

    // None of that became a call, so no agent's on-start ran, and no 5xx was logged.
    assert_eq!(calls(&api).await, Vec::<Value>::new());
    host.log.drain(std::time::Duration::from_millis(500));
    assert!(
        !host.log.seen.iter().any(|l| l.contains("call event")),
        "a call event was recorded: {:?}",
        host.log.seen
    );
    assert!(
        !host
            .log
            .seen
            .iter()
            .any(|l| l.contains("API request failed")),
        "{:?}",
        host.log.seen
    );

    // The accepted form through the trunk: placed (it rings on a port nobody answers).
    let id = api
        .place_call(&json!({"to": "tel:+1-555-0100", "via": "carrier", "agent": "menu"}))
        .await;
    let detail = api.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    assert_eq!(
        detail.json["call"]["callee"], "+15550100",
        "{}",
        detail.text
    );
    assert_eq!(detail.json["live"], true, "{}", detail.text);

    // Transfer targets of that (live) call.
    let transfer = |to: &str| {
        let api = &api;
        let body = json!({ "to": to });
        let path = format!("/v1/calls/{id}/transfer");
        async move { api.post(&path, &body).await }
    };
    for (to, why) in [
        ("http://evil/", "not a URI"),
        ("mailto:desk@example.com", "not a URI"),
        ("5550100", "tel:NUMBER"),
        ("agent:nobody", "no agent named `nobody`"),
        ("agent:menu", "does not grant `agent:menu`"),
    ] {
        let r = transfer(to).await;
        refused(&r, 400, "bad_target", "to");
        let detail = r.json["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{to}: {detail}");
        assert!(detail.contains("agent:NAME"), "{to}: {detail}");
    }
    refused(
        &transfer(&format!("sip:{}@a.example", long(600))).await,
        400,
        "field_too_large",
        "to",
    );
    // The grant in menu's manifest makes `agent:receptionist` a valid target: it reaches the
    // (ringing) call, which ignores it before the answer, as a valid SIP target does.
    let r = transfer("agent:receptionist").await;
    assert_eq!(r.status, 202, "{}", r.text);
    // A valid SIP target reaches the (ringing) call, which ignores it before the answer.
    let r = transfer("sip:desk@127.0.0.1").await;
    assert_eq!(r.status, 202, "{}", r.text);
    // An unknown call is still a 404, whatever the target.
    let r = api
        .post(
            "/v1/calls/c-nope/transfer",
            &json!({"to": "agent:receptionist"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    host.expect(&["transfer requested before answer"], 10);
}
