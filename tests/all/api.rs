//! The HTTP control plane against the running binary (real SQLite file, real HTTP): outbound
//! calls to SIPp callees with their records and SSE, hang-up and transfer, busy callees,
//! every bad-input class, health/ready/metrics/OpenAPI/agents/usage, secrets masked.

use std::time::Duration;

use crate::support::api::{Api, metric};
use crate::support::host::Host;
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee, sipp_errors};
use crate::support::tempdir;
use serde_json::{Value, json};

const TOKEN: &str = "tok-Api-7f3c9e";

fn host() -> Host {
    Host::builder()
        .examples(&["menu"])
        .http(&format!("tokens = [\"{TOKEN}\"]"))
        .start()
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match e["kind"].as_str().unwrap() {
            "state" => format!("state:{}", e["data"]["state"].as_str().unwrap()),
            "progress" => format!("progress:{}", e["data"]["status"].as_str().unwrap()),
            k => k.to_string(),
        })
        .collect()
}

/// `want` occurs in `got` in this order (other items may come between).
fn in_order(got: &[String], want: &[&str]) -> bool {
    let mut it = got.iter();
    want.iter().all(|w| it.any(|g| g == w))
}

fn ended(detail: &Value) -> bool {
    detail["call"]["state"] != "active" && kinds(detail).contains(&"ended".to_string())
}

#[tokio::test]
async fn outbound_call_reaches_sipp_and_its_record_and_sse_follow_in_order() {
    if !require("sipp") {
        return;
    }
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));
    let metrics_before = api.get("/metrics").await.text;
    let mut sse = api.events().await;
    let (mut sipp, dir, port) = sipp_callee(None);

    let id = api
        .place_call(
            &json!({"to": format!("sip:callee@127.0.0.1:{port}"), "agent": "menu",
                    "from": "4000", "metadata": {"crm_id": 7, "campaign": "spring"}}),
        )
        .await;

    // Answered and live: listed among active calls. An event on the stream is already stored,
    // so the record read the moment it arrives shows it.
    let mut streamed = sse
        .collect_until(Duration::from_secs(20), |name, data| {
            name == "state" && data["call_id"] == id.as_str() && data["state"] == "active"
        })
        .await;
    let detail = api.get(&format!("/v1/calls/{id}")).await.json;
    assert!(
        kinds(&detail).contains(&"state:active".to_string()),
        "state:active streamed before stored: {detail}"
    );
    assert_eq!(detail["live"], true);
    assert_eq!(detail["call"]["direction"], "outbound");
    assert_eq!(detail["call"]["agent"], "menu");
    assert_eq!(detail["call"]["caller"], "4000");
    assert_eq!(
        detail["call"]["metadata"],
        json!({"crm_id": 7, "campaign": "spring"})
    );
    let active = api.get("/v1/calls?active=true").await;
    assert_eq!(active.status, 200, "{}", active.text);
    let listed = active.json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not among active calls: {}", active.text));
    assert_eq!(listed["live"], true);
    let live_metrics = api.get("/metrics").await.text;
    assert!(metric(&live_metrics, "switchboard_calls_active") >= 1.0);

    let hung = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(hung.status, 202, "{}", hung.text);
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp did not get our BYE: {}",
        sipp_errors(dir.path())
    );

    // Likewise the end.
    streamed.extend(
        sse.collect_until(Duration::from_secs(10), |name, data| {
            name == "state" && data["call_id"] == id.as_str() && data["state"] == "ended"
        })
        .await,
    );
    let detail = api.get(&format!("/v1/calls/{id}")).await;
    assert!(
        ended(&detail.json),
        "ended streamed before stored: {}",
        detail.text
    );
    let detail = detail.json;
    let got = kinds(&detail);
    assert!(
        in_order(
            &got,
            &[
                "created",
                "state:starting",
                "progress:ringing",
                "answered",
                "state:active",
                "state:ending",
                "media-stats",
                "ended",
                "state:ended"
            ]
        ),
        "events out of order: {got:?}"
    );
    let seqs: Vec<u64> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(detail["live"], false);
    assert_eq!(detail["call"]["state"], "ended");
    assert_eq!(detail["call"]["end_reason"], "hangup-requested");
    assert!(detail["call"]["answered_at_ms"].is_i64());
    assert_eq!(detail["recording_url"], Value::Null);

    // The same state changes arrived live, in the same order.
    let mine: Vec<String> = streamed
        .iter()
        .filter(|(name, d)| name != "log" && d["call_id"] == id.as_str())
        .map(|(name, d)| match name.as_str() {
            "state" => format!("state:{}", d["state"].as_str().unwrap()),
            "progress" => format!("progress:{}", d["status"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect();
    assert!(
        in_order(
            &mine,
            &[
                "created",
                "state:starting",
                "progress:ringing",
                "answered",
                "state:active",
                "state:ending",
                "ended",
                "state:ended"
            ]
        ),
        "SSE out of order: {mine:?}"
    );
    // Call events carry a per-call sequence number (log lines of the call carry its id too).
    let streamed_seqs: Vec<u64> = streamed
        .iter()
        .filter(|(name, d)| name != "log" && d["call_id"] == id.as_str())
        .map(|(_, d)| d["seq"].as_u64().unwrap())
        .collect();
    assert!(streamed_seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(
        streamed
            .iter()
            .any(|(name, d)| name == "log" && d["line"].is_string()),
        "no log lines on the stream"
    );

    // Finished calls list it as not live; metrics moved.
    let done = api.get("/v1/calls?active=false&agent=menu").await;
    assert!(
        done.json["calls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str() && c["live"] == false),
        "{}",
        done.text
    );
    let after = api.get("/metrics").await.text;
    let series = "switchboard_calls_total{direction=\"outbound\",outcome=\"hangup-requested\"}";
    assert_eq!(
        metric(&after, series),
        metric(&metrics_before, series) + 1.0
    );
    assert_eq!(
        metric(&after, "switchboard_call_setup_seconds_count"),
        metric(&metrics_before, "switchboard_call_setup_seconds_count") + 1.0
    );
    assert_eq!(metric(&after, "switchboard_calls_active"), 0.0);
}

#[tokio::test]
async fn transfer_sends_refer_to_the_callee() {
    if !require("sipp") {
        return;
    }
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));
    let (mut sipp, dir, port) = sipp_callee(Some("uas_refer.xml"));
    let id = api
        .place_call(&json!({"to": format!("sip:transferee@127.0.0.1:{port}"), "number": "1000"}))
        .await;
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
        kinds(d).contains(&"state:active".to_string())
    })
    .await;
    let target = "sip:desk@127.0.0.1:5999";
    let r = api
        .post(&format!("/v1/calls/{id}/transfer"), &json!({"to": target}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // SIPp's scenario only completes when it received the REFER, accepted it, notified the
    // outcome and got our BYE.
    assert_eq!(
        sipp.wait(Duration::from_secs(20)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(dir.path())
    );
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), ended)
        .await;
    assert_eq!(
        detail["call"]["end_reason"],
        format!("transferred to {target}")
    );
    let transfers: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "transfer")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(transfers.first(), Some(&"requested"), "{transfers:?}");
    assert_eq!(transfers.last(), Some(&"completed"), "{transfers:?}");
    assert!(in_order(
        &kinds(&detail),
        &["state:active", "state:transferring", "ended"]
    ));
    // A finished call takes no more commands.
    let again = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.json["error"], "call_not_active");
}

#[tokio::test]
async fn busy_callee_ends_the_call_as_not_answered() {
    if !require("sipp") {
        return;
    }
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));
    let (mut sipp, dir, port) = sipp_callee(Some("uas_early_busy.xml"));
    let id = api
        .place_call(&json!({"to": format!("sip:busy@127.0.0.1:{port}"), "from": "1000"}))
        .await;
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), ended)
        .await;
    assert!(
        in_order(
            &kinds(&detail),
            &[
                "created",
                "state:starting",
                "progress:early-media",
                "not-answered",
                "ended"
            ]
        ),
        "{:?}",
        kinds(&detail)
    );
    let not_answered = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "not-answered")
        .unwrap();
    assert_eq!(not_answered["data"]["outcome"], "busy");
    assert_eq!(detail["call"]["end_reason"], "busy");
    // Routed by its caller id: 1000 is the menu's number.
    assert_eq!(detail["call"]["agent"], "menu");
    assert_eq!(
        sipp.wait(Duration::from_secs(10)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(dir.path())
    );
    let m = api.get("/metrics").await.text;
    assert_eq!(
        metric(
            &m,
            "switchboard_calls_total{direction=\"outbound\",outcome=\"busy\"}"
        ),
        1.0
    );
}

/// Asserts a JSON error with this status and code.
#[track_caller]
fn is_error(r: &crate::support::api::Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/json"),
        "not JSON: {} {}",
        r.content_type,
        r.text
    );
    assert_eq!(r.json["error"], code, "{}", r.text);
    assert!(!r.json["detail"].is_null(), "{}", r.text);
}

#[tokio::test]
async fn bad_requests_get_json_4xx() {
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));

    // Authentication: missing and wrong tokens; /health and /ready stay open.
    let anonymous = api.with_token(None);
    is_error(&anonymous.get("/v1/calls").await, 401, "unauthorized");
    is_error(&anonymous.get("/metrics").await, 401, "unauthorized");
    let wrong = api.with_token(Some("tok-Api-7f3c9X"));
    is_error(&wrong.get("/v1/agents").await, 401, "unauthorized");
    is_error(
        &wrong
            .post("/v1/calls", &json!({"to": "sip:a@127.0.0.1"}))
            .await,
        401,
        "unauthorized",
    );
    assert_eq!(anonymous.get("/health").await.status, 200);
    assert_eq!(anonymous.get("/ready").await.status, 200);

    // Bodies.
    is_error(
        &api.post_raw("/v1/calls", "application/json", "{\"to\": ")
            .await,
        400,
        "bad_json",
    );
    is_error(
        &api.post_raw("/v1/calls", "text/plain", "{}").await,
        415,
        "bad_json",
    );
    is_error(
        &api.post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "colour": "red"}),
        )
        .await,
        422,
        "bad_json",
    );
    is_error(&api.post("/v1/calls", &json!({})).await, 422, "bad_json");

    // Requests the call layer refuses before anything is sent.
    is_error(
        &api.post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "agent": "nobody"}),
        )
        .await,
        422,
        "unknown_agent",
    );
    is_error(
        &api.post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "number": " -() "}),
        )
        .await,
        422,
        "bad_number",
    );
    is_error(
        &api.post("/v1/calls", &json!({"to": "sip:a@127.0.0.1"}))
            .await,
        422,
        "no_route",
    );
    is_error(
        &api.post("/v1/calls", &json!({"to": "+1 555 0100", "agent": "menu"}))
            .await,
        400,
        "bad_target",
    );
    is_error(
        &api.post("/v1/calls", &json!({"to": "sip:", "agent": "menu"}))
            .await,
        400,
        "bad_target",
    );
    is_error(
        &api.post(
            "/v1/calls",
            &json!({"to": "5550100", "trunk": "nope", "number": "1000"}),
        )
        .await,
        422,
        "unknown_trunk",
    );
    let big = "x".repeat(20_000);
    is_error(
        &api.post(
            "/v1/calls",
            &json!({"to": "sip:a@127.0.0.1", "agent": "menu", "metadata": {"blob": big}}),
        )
        .await,
        400,
        "field_too_large",
    );
    // None of those became a call.
    let all = api.get("/v1/calls").await;
    assert_eq!(all.json["calls"], json!([]), "{}", all.text);

    // Unknown ids and bad targets.
    is_error(&api.get("/v1/calls/c-nope").await, 404, "call_not_found");
    is_error(
        &api.get("/v1/calls/c-nope/recording").await,
        404,
        "call_not_found",
    );
    is_error(
        &api.post("/v1/calls/c-nope/hangup", &json!({})).await,
        404,
        "call_not_found",
    );
    is_error(
        &api.post(
            "/v1/calls/c-nope/transfer",
            &json!({"to": "sip:desk@127.0.0.1"}),
        )
        .await,
        404,
        "call_not_found",
    );
    is_error(
        &api.post("/v1/calls/c-nope/transfer", &json!({"to": "desk"}))
            .await,
        400,
        "bad_target",
    );

    // Queries and routes.
    is_error(&api.get("/v1/calls?limit=lots").await, 400, "bad_query");
    is_error(
        &api.get("/v1/calls?cursor=garbage").await,
        400,
        "bad_cursor",
    );
    is_error(&api.get("/v1/calls?colour=red").await, 400, "bad_query");
    is_error(
        &api.get("/v1/usage?from_ms=10&to_ms=5").await,
        400,
        "bad_query",
    );
    is_error(&api.get("/v1/nothing-here").await, 404, "not_found");
    is_error(
        &api.post("/v1/agents", &json!({})).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn health_ready_metrics_openapi_agents_registrations_usage() {
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));
    let health = api.with_token(None).get("/health").await;
    assert_eq!(
        (health.status, health.json["status"].clone()),
        (200, json!("ok"))
    );
    let ready = api.with_token(None).get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["agents"], 1);
    // 2000 and 3000 route to agents this test did not deploy.
    assert_eq!(
        ready.json["routed_agents_not_loaded"],
        json!(["appointments", "receptionist"])
    );

    let m = api.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    for name in [
        "switchboard_calls_active",
        "switchboard_calls_total",
        "switchboard_call_setup_seconds",
        "switchboard_turn_latency_seconds",
        "switchboard_rtp_packets_lost_total",
        "switchboard_rtp_jitter_seconds",
        "switchboard_agent_faults_total",
        "switchboard_agent_reloads_total",
        "switchboard_model_errors_total",
        "switchboard_tokens_total",
    ] {
        assert!(
            m.text.contains(&format!("# TYPE {name} ")),
            "{name} missing"
        );
    }
    assert_eq!(metric(&m.text, "switchboard_calls_active"), 0.0);
    assert_eq!(
        metric(
            &m.text,
            "switchboard_agent_reloads_total{result=\"loaded\"}"
        ),
        1.0
    );

    let doc = api.get("/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.json["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/v1/calls", &["post", "get"][..]),
        ("/v1/calls/{id}", &["get"]),
        ("/v1/calls/{id}/recording", &["get"]),
        ("/v1/calls/{id}/hangup", &["post"]),
        ("/v1/calls/{id}/transfer", &["post"]),
        ("/v1/agents", &["get"]),
        ("/v1/agents/reload", &["post"]),
        ("/v1/registrations", &["get"]),
        ("/v1/admin/drain", &["post"]),
        ("/v1/usage", &["get"]),
        ("/v1/events", &["get"]),
        ("/v1/config", &["get"]),
        ("/v1/config/effective", &["get"]),
        ("/v1/config/audit", &["get"]),
        ("/v1/config/routes/{pattern}", &["put", "delete"]),
        ("/v1/config/default-agent", &["put"]),
        (
            "/v1/config/agents/{name}/settings/{key}",
            &["put", "delete"],
        ),
        ("/v1/config/agents/{name}/secrets/{key}", &["put", "delete"]),
        ("/v1/config/accounts/{name}", &["put", "delete"]),
        ("/v1/webrtc/tickets", &["post"]),
        ("/v1/webrtc/{number}", &["post"]),
        ("/v1/config/trunks/{name}", &["put", "delete"]),
        ("/v1/config/webhooks/{name}", &["put", "delete"]),
        ("/v1/config/live", &["get", "put"]),
        ("/v1/config/model/{key}", &["put", "delete"]),
        ("/v1/webhooks/{name}/deliveries", &["get"]),
        ("/v1/webhooks/dead-letters", &["get"]),
        ("/v1/webhooks/deliveries/{id}/resend", &["post"]),
        ("/v1/campaigns", &["post", "get"]),
        ("/v1/campaigns/{id}", &["get"]),
        ("/v1/campaigns/{id}/contacts", &["get"]),
        ("/v1/campaigns/{id}/results.csv", &["get"]),
        ("/v1/campaigns/{id}/{action}", &["post"]),
        ("/v1/dnc", &["get", "post"]),
        ("/v1/dnc/{number}", &["delete"]),
        ("/v1/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/health", &["get"]),
        ("/ready", &["get"]),
    ] {
        for m in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(*m)).is_some(),
                "{m} {path} not in the OpenAPI document"
            );
        }
    }
    assert_eq!(paths.len(), 39, "{:?}", paths.keys().collect::<Vec<_>>());
    // Every $ref points at a schema that exists.
    let schemas = doc.json["components"]["schemas"].as_object().unwrap();
    for r in doc.text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }

    let agents = api.get("/v1/agents").await;
    assert_eq!(agents.status, 200);
    let menu = &agents.json["agents"][0];
    assert_eq!(menu["name"], "menu");
    assert!(menu["version"].is_string() && menu["hash"].as_str().unwrap().len() == 64);
    // The test configuration names no default agent.
    assert_eq!(agents.json["default_agent"], Value::Null);
    let route_1000 = agents.json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pattern"] == "1000")
        .unwrap();
    assert_eq!(route_1000["agent"], "menu");
    assert_eq!(route_1000["version"], menu["version"]);
    let route_2000 = agents.json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pattern"] == "2000")
        .unwrap();
    assert_eq!(route_2000["version"], Value::Null);
    assert_eq!(agents.json["history"][0]["kind"], "loaded");

    // A broken build is refused on reload and reported; the live version stays.
    host.agents.write("broken.wasm", b"not wasm");
    host.agents.write("broken.toml", b"name = \"broken\"\n");
    let reload = api.post("/v1/agents/reload", &json!({})).await;
    assert_eq!(reload.status, 200, "{}", reload.text);
    let errors = reload.json["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().unwrap().contains("broken")),
        "{}",
        reload.text
    );
    assert!(
        reload.json["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["agent"] == "broken" && h["kind"] == "failed" && h["error"].is_string())
    );
    assert_eq!(reload.json["agents"][0]["name"], "menu");

    let regs = api.get("/v1/registrations").await;
    assert_eq!(regs.status, 200);
    assert_eq!(regs.json["registrations"], json!([]));

    let usage = api.get("/v1/usage").await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    assert_eq!(usage.json["days"], json!([]));
    assert_eq!(usage.json["total"]["input_tokens"], 0);
}

#[tokio::test]
async fn config_masks_secrets_and_the_log_never_shows_them() {
    let secrets = [
        TOKEN,
        "agent-secret-4b1d",
        "trunk-password-9a2e",
        "digest-password-c3f0",
    ];
    let trunk_port = free_port();
    let mut host = Host::builder()
        .examples(&["menu"])
        .http(&format!("tokens = [\"{TOKEN}\"]"))
        .config(&format!(
            "[agent.menu.secrets]\ncrm-key = \"{}\"\n\
             [[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{trunk_port}\"\n\
             password = \"{}\"\n\
             [sip.inbound.digest]\nrealm = \"switchboard\"\nuser = \"pbx\"\npassword = \"{}\"\n",
            secrets[1], secrets[2], secrets[3]
        ))
        .start();
    let api = Api::new(host.http, Some(TOKEN));
    let config = api.get("/v1/config").await;
    assert_eq!(config.status, 200, "{}", config.text);
    for s in secrets {
        assert!(!config.text.contains(s), "{s} shown in /v1/config");
    }
    assert_eq!(config.json["http"]["tokens"], json!(["***"]));
    assert_eq!(config.json["agent"]["menu"]["secrets"]["crm-key"], "***");
    assert_eq!(config.json["sip"]["trunks"][0]["password"], "***");
    assert_eq!(config.json["sip"]["trunks"][0]["name"], "carrier");
    assert_eq!(config.json["sip"]["inbound"]["digest"]["password"], "***");
    assert_eq!(config.json["sip"]["inbound"]["digest"]["user"], "pbx");
    assert_eq!(config.json["http"]["listen"], "127.0.0.1:0");

    // Exercise authentication both ways, then read everything the host logged.
    let _ = api.with_token(Some("wrong")).get("/v1/calls").await;
    let _ = api.get("/v1/calls").await;
    host.log.drain(Duration::ZERO);
    assert!(!host.log.seen.is_empty());
    for line in &host.log.seen {
        for s in secrets {
            assert!(!line.contains(s), "secret in the log: {line}");
        }
    }
}

#[tokio::test]
async fn refuses_an_unauthenticated_api_beyond_loopback() {
    use crate::support::agents::switchboard_bin;
    use crate::support::process::Proc;
    let data = tempdir("api-exposed");
    let sip = free_port();
    let cfg = data.path().join("switchboard.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir = {:?}\n[sip]\nudp-listen = \"127.0.0.1:{sip}\"\ntcp-listen = \"127.0.0.1:{sip}\"\n\
             [http]\nlisten = \"0.0.0.0:0\"\n[agents]\ndir = {:?}\n",
            data.path().display().to_string(),
            data.path().display().to_string(),
        ),
    )
    .unwrap();
    let mut child = Proc::spawn(
        "switchboard",
        std::process::Command::new(switchboard_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the host kept running with an open API on 0.0.0.0"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("tokens"),
        "unclear error: {stderr}"
    );
}

#[tokio::test]
async fn hangup_while_ringing_cancels_the_invite() {
    if !require("sipp") {
        return;
    }
    let host = host();
    let api = Api::new(host.http, Some(TOKEN));
    let (mut sipp, dir, port) = sipp_callee(Some("uas_ring_cancel.xml"));
    let id = api
        .place_call(&json!({"to": format!("sip:later@127.0.0.1:{port}"), "agent": "menu"}))
        .await;
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
        kinds(d).contains(&"progress:ringing".to_string())
    })
    .await;
    let r = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    // The scenario completes only on our CANCEL (and the ACK of its 487).
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp: {}",
        sipp_errors(dir.path())
    );
    let detail = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), ended)
        .await;
    assert_eq!(detail["call"]["end_reason"], "cancelled");
    assert!(!kinds(&detail).contains(&"answered".to_string()));
}

#[tokio::test]
async fn ready_is_503_with_a_reason_until_an_agent_is_loaded() {
    let host = Host::builder()
        .http(&format!("tokens = [\"{TOKEN}\"]"))
        .start();
    let ready = Api::new(host.http, None).get("/ready").await;
    is_error(&ready, 503, "not_ready");
    assert!(
        ready.json["detail"].as_str().unwrap().contains("no agent"),
        "{}",
        ready.text
    );
    assert_eq!(Api::new(host.http, None).get("/health").await.status, 200);
}
