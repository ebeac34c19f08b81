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

/// The first line of the answer to `GET path` on a connection of its own, or `None` when the
/// host closes the connection without answering.
async fn status_line(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(request.as_bytes()).await;
    let mut got = Vec::new();
    // A reset is a close too: what was read before it counts.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the host answers or closes");
    let text = String::from_utf8_lossy(&got);
    text.lines().next().map(str::to_string)
}

/// Abusive clients get limits, never a 5xx or a stuck server: bad and deeply nested JSON get
/// 400 or 422; event-stream clients beyond `max-connections` are closed at once while those admitted
/// keep their streams; the API answers as before once they go.
#[tokio::test]
async fn abusive_clients_get_limits_and_the_api_stays_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CONNECTIONS: usize = 8;
    let mut host = Host::builder()
        .examples(&["menu"])
        .http(&format!("max-connections = {CONNECTIONS}"))
        .start();
    {
        let api = Api::new(host.http, None);
        for body in [
            "{\"to\": ".to_string(),
            "not json".to_string(),
            format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            format!(
                "{{\"to\": {}1{}}}",
                "{\"a\":".repeat(5_000),
                "}".repeat(5_000)
            ),
        ] {
            // 400 for what is not JSON, 422 for JSON of the wrong shape; never a 5xx.
            let r = api.post_raw("/v1/calls", "application/json", &body).await;
            assert!(
                matches!(r.status, 400 | 422) && r.json["error"] == "bad_json",
                "{} {} for {:.40}…",
                r.status,
                r.text,
                body
            );
        }
        // Its pooled connection closes with it.
    }
    let ok = Some("HTTP/1.1 200 OK".to_string());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status_line(host.http, "/v1/calls").await != ok {
        assert!(
            std::time::Instant::now() < deadline,
            "no room after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Event-stream clients up to the limit, each with its stream's head.
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(host.http).await.unwrap();
        s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        streams.push(s);
    }
    // One more: closed without an answer, the streams still open.
    assert_eq!(status_line(host.http, "/v1/calls").await, None);
    for s in &mut streams {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_millis(100), s.read(&mut byte));
        assert!(
            !matches!(read.await, Ok(Ok(0))),
            "an admitted stream was closed"
        );
    }
    // They go: the API answers again.
    drop(streams);
    while status_line(host.http, "/v1/calls").await != ok {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(5),
            "the API did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = Api::new(host.http, None).get("/metrics").await.text;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_http_connections_refused_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused-connection count: {metrics}"));
    assert!(refused >= 1, "{refused}");
    assert!(host.is_running());
}
