//! A small client of the HTTP API over real HTTP: JSON requests with an optional bearer token,
//! a server-sent events reader, and Prometheus text parsing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    client: reqwest::Client,
}

/// Status and body of one response; the body as JSON when it parses, else as a string.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
    /// The `ETag` header, when there is one.
    pub etag: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Api {
        Api {
            base: format!("http://{addr}"),
            token: token.map(String::from),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    /// The same server with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            base: self.base.clone(),
            token: token.map(String::from),
            client: self.client.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = resp.text().await.expect("HTTP body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        Reply {
            status,
            content_type,
            text,
            json,
            etag,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// PUT `body` as JSON with `If-Match: if_match` when given.
    pub async fn put(&self, path: &str, body: &Value, if_match: Option<&str>) -> Reply {
        let mut rb = self
            .request(reqwest::Method::PUT, path)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(tag) = if_match {
            rb = rb.header(reqwest::header::IF_MATCH, tag);
        }
        Self::send(rb).await
    }

    /// PUT a raw body with a content type and `If-Match: if_match` when given.
    pub async fn put_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        if_match: Option<&str>,
    ) -> Reply {
        let mut rb = self
            .request(reqwest::Method::PUT, path)
            .header("content-type", content_type)
            .body(body.to_string());
        if let Some(tag) = if_match {
            rb = rb.header(reqwest::header::IF_MATCH, tag);
        }
        Self::send(rb).await
    }

    /// DELETE with `If-Match: if_match` when given.
    pub async fn delete(&self, path: &str, if_match: Option<&str>) -> Reply {
        let mut rb = self.request(reqwest::Method::DELETE, path);
        if let Some(tag) = if_match {
            rb = rb.header(reqwest::header::IF_MATCH, tag);
        }
        Self::send(rb).await
    }

    /// `POST /v1/calls` with `body`; asserts 201 Created and returns the call's id.
    pub async fn place_call(&self, body: &Value) -> String {
        let placed = self.post("/v1/calls", body).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        placed.json["id"].as_str().unwrap().to_string()
    }

    /// POST a raw body with a content type (for malformed-input tests).
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Reply {
        Self::send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body.to_string()),
        )
        .await
    }

    /// GET `path` until `done` holds for the JSON body (status 200), up to `timeout`.
    pub async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(path).await;
            if r.status == 200 && done(&r.json) {
                return r.json;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not reach the expected state: {} {}",
                r.status,
                r.text
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Open GET /v1/events; events arrive as (name, data) on the returned reader.
    pub async fn events(&self) -> Sse {
        let resp = self
            .client
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(self.token.clone().unwrap_or_default())
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("SSE request");
        assert_eq!(resp.status().as_u16(), 200, "SSE status");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                // Events end with a blank line.
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut name = String::from("message");
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if !data.is_empty() && tx.send((name, data)).is_err() {
                        return;
                    }
                }
            }
        });
        Sse { rx, task }
    }
}

/// A live server-sent events connection, closed when dropped.
pub struct Sse {
    rx: mpsc::UnboundedReceiver<(String, String)>,
    task: tokio::task::JoinHandle<()>,
}

impl Sse {
    /// Events (name, JSON data) up to the first one for which `stop` holds, within `timeout`.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        stop: impl Fn(&str, &Value) -> bool,
    ) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.rx.recv()).await;
            let Ok(Some((name, data))) = next else {
                let names: Vec<_> = seen
                    .iter()
                    .map(|(n, _): &(String, Value)| n.clone())
                    .collect();
                panic!("SSE: expected event not seen; got {names:?}");
            };
            let data: Value = serde_json::from_str(&data).expect("SSE data is JSON");
            let done = stop(&name, &data);
            seen.push((name, data));
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of a Prometheus sample `name{labels}` (labels exactly as rendered, or empty);
/// 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The record of the only call of the host whose API is at `http` (`GET /v1/calls/{id}`), once
/// it has ended.
pub async fn only_call_record(http: SocketAddr) -> Value {
    let api = Api::new(http, None);
    let list = api
        .poll("/v1/calls?active=false", Duration::from_secs(10), |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let id = list["calls"][0]["id"].as_str().unwrap().to_string();
    api.poll(&format!("/v1/calls/{id}"), Duration::from_secs(10), |d| {
        d["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "ended"))
    })
    .await
}

/// The events of call `id`'s record once it has ended.
pub async fn ended(api: &Api, id: &str) -> Vec<(String, Value)> {
    let record = api
        .poll(&format!("/v1/calls/{id}"), Duration::from_secs(20), |d| {
            d["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "ended"))
        })
        .await;
    events_of(&record)
}

/// The events of an outbound call through `transport` that was answered and that the callee
/// hung up, once its record has ended; for the carrier's own checks.
pub async fn answered_outbound(api: &Api, id: &str, transport: &str) -> Vec<(String, Value)> {
    let events = ended(api, id).await;
    let created = find(&events, "created");
    assert_eq!(created[0]["direction"], "outbound");
    assert_eq!(created[0]["transport"], transport);
    assert!(!find(&events, "answered").is_empty(), "{events:?}");
    assert_eq!(find(&events, "ended")[0]["reason"], "caller-hangup");
    events
}

/// The events of a call record as (kind, data).
pub fn events_of(record: &Value) -> Vec<(String, Value)> {
    record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect()
}

/// The data of the events of one kind.
pub fn find<'a>(events: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, d)| d)
        .collect()
}

/// What the agent said on a call, from its record.
pub fn agent_lines(record: &Value) -> Vec<String> {
    record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "agent")
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}
