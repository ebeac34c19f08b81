//! OpenTelemetry export of the log: the binary started with `[log] otlp-endpoint` pointed at a
//! fake OTLP/HTTP collector on 127.0.0.1 sends its log records there as OTLP JSON, with the
//! service name, severities, and the call id on the lines of a call (here a SIPp call to 1000).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::host::Host;
use crate::support::process::require;
use crate::support::sipp::{run_sipp, uac_args};
use crate::support::tempdir;

/// A collector that takes `POST /v1/logs` (HTTP/1.1, keep-alive) and keeps the JSON bodies.
async fn collector() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(request_line.starts_with("POST /v1/logs "), "{request_line}");
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    kept.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).expect("OTLP JSON"));
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, bodies)
}

/// Every log record received so far, with its resource's attributes.
fn records(bodies: &Mutex<Vec<Value>>) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for body in bodies.lock().unwrap().iter() {
        for rl in body["resourceLogs"].as_array().unwrap() {
            for sl in rl["scopeLogs"].as_array().unwrap() {
                for r in sl["logRecords"].as_array().unwrap() {
                    out.push((rl["resource"].clone(), r.clone()));
                }
            }
        }
    }
    out
}

fn attribute<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

async fn wait_for_record(
    bodies: &Mutex<Vec<Value>>,
    what: &str,
    matches: impl Fn(&Value, &Value) -> bool,
) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = records(bodies).into_iter().find(|(res, r)| matches(res, r)) {
            return found;
        }
        assert!(Instant::now() < deadline, "no exported record: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_reach_the_collector_with_the_call_id() {
    if !require("sipp") {
        return;
    }
    let (port, bodies) = collector().await;
    let host = Host::builder()
        .examples(&["menu"])
        .config(&format!(
            "[log]\notlp-endpoint = \"http://127.0.0.1:{port}\"\n"
        ))
        .start();
    let (resource, started) = wait_for_record(&bodies, "the start-up line", |_, r| {
        r["body"]["stringValue"]
            .as_str()
            .is_some_and(|b| b.contains("switchboard running"))
    })
    .await;
    assert_eq!(
        resource["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "switchboard"}})
    );
    assert_eq!(started["severityText"], "INFO");
    assert_eq!(started["severityNumber"], 9);
    assert_eq!(attribute(&started, "log.target"), Some("switchboard"));
    let nanos: u128 = started["timeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(nanos > 1_700_000_000_000_000_000, "{nanos}");

    let dir = tempdir("sipp-otlp");
    let args = uac_args(
        "1000",
        1,
        1000,
        &[],
        &format!("127.0.0.1:{}", host.sip_port),
    );
    let (code, errors) = run_sipp(dir.path(), &args, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "SIPp: {errors}");
    let (_, answered) = wait_for_record(&bodies, "a line of the call", |_, r| {
        r["body"]["stringValue"]
            .as_str()
            .is_some_and(|b| b.contains("call answered"))
    })
    .await;
    let call_id = attribute(&answered, "call_id").expect("the call's line carries its id");
    assert!(call_id.starts_with('c'), "{call_id}");
}
