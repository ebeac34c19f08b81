//! A protocol-faithful fake of OpenAI's side of the SIP connector, on 127.0.0.1: it plays the
//! calls OpenAI would receive from a carrier (reference/protocols.md §0.4, §2).
//!
//! - Webhooks: `realtime.call.incoming` / `realtime.call.ended` events
//!   (`{object:"event", id, type, created_at, data:{call_id, sip_headers:[{name,value}]}}`),
//!   signed the Standard Webhooks way by code of its own here (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.ts.body>`, key = the
//!   base64 after `whsec_`), with OpenAI's `user-agent`; a non-2xx answer is retried with the
//!   same `webhook-id` (delivery is at least once).
//! - REST with `Authorization: Bearer`: `POST /v1/realtime/calls/{call_id}/accept` (400
//!   without `type: "realtime"`), `/reject` (`status_code`, 603 by default), `/refer`
//!   (`target_uri` required), `/hangup`; 200 with an empty body; 404 for an unknown or ended call
//!   and for an accept after a reject or hang-up.
//! - The sideband socket `GET /v1/realtime?call_id=…` (no `model`): only for an accepted call;
//!   `session.created` reflects the accepted configuration; no audio crosses it. The caller is
//!   scripted: each turn is `speech_started` → `speech_stopped` → `committed` → the user item →
//!   its transcription, then an automatic response (speech, or a function call that waits for
//!   its `function_call_output` and a `response.create`). A `response.create` whose instructions
//!   quote words speaks them (or, for the greeting, words of the script's own: a model may word
//!   what it is asked to say). Spoken audio is played by OpenAI, so a response's playout is
//!   bracketed by `output_audio_buffer.started` and `output_audio_buffer.stopped` (SIP and
//!   WebRTC only), which comes [`PLAYOUT`] after `response.done`: the caller is still hearing
//!   the end of the words when the generation is done. A caller hang-up sends
//!   `realtime.call.ended` and drops the socket without a close frame.
//!
//! Sources: OpenAI's "Realtime API with SIP" guide (developers.openai.com/api/docs/guides/
//! realtime-sip: the SIP URI, the webhook's headers, user agent and body) and API reference
//! (developers.openai.com/api/docs/api-reference/realtime-calls: `reject` with an optional
//! `status_code`, 603 by default; `refer` with the `target_uri` for `Refer-To`, `tel:` or
//! `sip:`), the Realtime server events as OpenAI's OpenAPI document describes them (read in
//! its generated docs.rs client `openai-client-base`, `RealtimeServerEventOutputAudioBuffer
//! Stopped`, and Azure's mirror `RealtimeServerEventOutputAudioBufferCleared`):
//! `output_audio_buffer.stopped` is "WebRTC/SIP Only ... emitted after the full response data
//! has been sent to the client (`response.done`)", `.cleared` when the caller interrupted),
//! openai-python `lib/_webhooks.py` and `resources/realtime/calls.py`, the Standard Webhooks
//! specification (standardwebhooks.com), as summarised in reference/protocols.md §2.
//! `realtime.call.ended` is named by the issue and by third-party integrations; OpenAI's pages
//! found here do not show its body, so it carries the same `data.call_id` as the incoming event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::support::host::HostBuilder;
use crate::support::ports::{Ports, ports};
use crate::support::rest_fake::{self, Reply as RestReply, Request as RestRequest};

/// What the caller does once the call is up (after the greeting).
#[derive(Debug, Clone)]
pub enum Step {
    /// The caller says `text`; the model answers with the next [`Reply`].
    Caller(String),
    /// The caller hangs up: `realtime.call.ended`, then the socket drops.
    HangUp,
    /// The socket drops without a close frame while the call goes on.
    DropSocket,
    /// A text frame sent as is (garbage).
    Raw(String),
    /// The caller presses a key (`input_audio_buffer.dtmf_event_received`).
    Digit(char),
}

/// How the model answers a caller turn or a `response.create` without quoted words.
#[derive(Debug, Clone)]
pub enum Reply {
    Speech(String),
    ToolCall { name: String, arguments: String },
}

#[derive(Debug, Clone, Default)]
pub struct Script {
    pub steps: Vec<Step>,
    pub replies: Vec<Reply>,
    /// The accept answers this status instead of 200.
    pub accept_status: Option<u16>,
    /// The accept is answered only this long after it came (an OpenAI that is slow, or stuck).
    pub accept_after: Option<Duration>,
    /// The model words the greeting so instead of speaking the quoted words (the API has no
    /// verbatim speech).
    pub greeting_as: Option<String>,
}

/// How long the caller still hears a response after its `response.done`.
pub const PLAYOUT: Duration = Duration::from_millis(300);

/// One REST request the host made.
#[derive(Debug, Clone)]
pub struct RestCall {
    pub action: String,
    pub call_id: String,
    pub body: Value,
    pub at: std::time::Instant,
}

#[derive(Default)]
struct Call {
    accepted: Option<Value>,
    rejected: Option<u16>,
    ended: bool,
    steps: VecDeque<Step>,
    replies: VecDeque<Reply>,
    /// Drops the open sideband socket.
    close: Option<mpsc::UnboundedSender<()>>,
    sockets: usize,
}

struct Shared {
    api_key: String,
    key: Vec<u8>,
    script: Script,
    calls: Mutex<HashMap<String, Call>>,
    requests: Mutex<Vec<RestCall>>,
    /// Client events on the sideband sockets, by call.
    received: Mutex<Vec<(String, Value)>>,
    /// Where webhooks go (set by the first call).
    webhook_url: Mutex<String>,
    /// When each call's incoming webhook went out and its accept came in.
    sent_at: Mutex<HashMap<String, std::time::Instant>>,
    accepted_at: Mutex<HashMap<String, std::time::Instant>>,
    /// When each call's last spoken response finished playing (`output_audio_buffer.stopped`).
    played_at: Mutex<HashMap<String, std::time::Instant>>,
    http: reqwest::Client,
}

/// The running fake; stops when dropped.
pub struct FakeOpenAiSip {
    /// `http://127.0.0.1:<port>/v1`
    pub base_url: String,
    pub api_key: String,
    /// The webhook signing secret (`whsec_…`).
    pub secret: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeOpenAiSip {
    fn drop(&mut self) {
        self.task.abort();
        for call in self.shared.calls.lock().unwrap().values_mut() {
            call.close.take();
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The signature of a delivery, computed here without the host's code.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let message = format!("{id}.{timestamp}.{body}");
    format!(
        "v1,{}",
        B64.encode(ring::hmac::sign(&key, message.as_bytes()).as_ref())
    )
}

impl FakeOpenAiSip {
    pub async fn start(script: Script) -> FakeOpenAiSip {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let port = listener.local_addr().unwrap().port();
        let key = b"fake-signing-key-for-tests-000000".to_vec();
        let shared = Arc::new(Shared {
            api_key: "sk-sip-test".into(),
            key: key.clone(),
            script,
            calls: Mutex::default(),
            requests: Mutex::default(),
            received: Mutex::default(),
            webhook_url: Mutex::default(),
            sent_at: Mutex::default(),
            accepted_at: Mutex::default(),
            played_at: Mutex::default(),
            http: reqwest::Client::new(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(connection(tcp, s.clone()));
            }
        });
        FakeOpenAiSip {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: shared.api_key.clone(),
            secret: format!("whsec_{}", B64.encode(&key)),
            shared,
            task,
        }
    }

    /// `host` with the connector pointed at this fake (project `proj_test`), on a public
    /// listener of its own: the builder, the webhook URL, and the listener's port, reserved
    /// while it is held.
    pub fn connect(&self, host: HostBuilder) -> (HostBuilder, String, Ports) {
        let port = ports(1);
        let public_url = format!("http://127.0.0.1:{}", port.first());
        let host = host
            .http(&format!(
                "[http.public]\nlisten = \"127.0.0.1:{}\"\npublic-url = \"{public_url}\"",
                port.first()
            ))
            .config(&format!(
                "[openai-sip]\napi-key = \"{}\"\nwebhook-secret = \"{}\"\n\
                 project-id = \"proj_test\"\nbase-url = \"{}\"",
                self.api_key, self.secret, self.base_url
            ));
        (host, format!("{public_url}/openai/webhook"), port)
    }

    /// The headers of a signed delivery of `body`.
    pub fn signed_headers(&self, id: &str, timestamp: u64, body: &str) -> Vec<(String, String)> {
        vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            (
                "webhook-signature".into(),
                sign(&self.shared.key, id, timestamp, body),
            ),
        ]
    }

    /// POST `body` to `url` with `headers` (and OpenAI's user agent): the status and body.
    /// Later events (`realtime.call.ended`) go to `url` too.
    pub async fn post(&self, url: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
        *self.shared.webhook_url.lock().unwrap() = url.to_string();
        post(&self.shared.http, url, headers, body).await
    }

    /// A `realtime.call.incoming` event for `call_id` from `from` to `to`, with `extra` SIP
    /// headers.
    pub fn incoming_event(call_id: &str, from: &str, to: &str, extra: &[(&str, &str)]) -> String {
        let mut headers = vec![
            json!({"name": "From", "value": from}),
            json!({"name": "To", "value": to}),
            json!({"name": "Call-ID", "value": format!("{call_id}@carrier.example.com")}),
        ];
        headers.extend(extra.iter().map(|(n, v)| json!({"name": n, "value": v})));
        json!({"object": "event", "id": format!("evt_{call_id}"),
               "type": "realtime.call.incoming", "created_at": now(),
               "data": {"call_id": call_id, "sip_headers": headers}})
        .to_string()
    }

    /// Start a call: `realtime.call.incoming` for `call_id` to `webhook_url`, delivered until
    /// answered 2xx (three tries). The status of the last try.
    pub async fn call(
        &self,
        webhook_url: &str,
        call_id: &str,
        to: &str,
        extra: &[(&str, &str)],
    ) -> u16 {
        *self.shared.webhook_url.lock().unwrap() = webhook_url.to_string();
        let script = &self.shared.script;
        self.shared
            .calls
            .lock()
            .unwrap()
            .entry(call_id.to_string())
            .or_insert_with(|| Call {
                steps: script.steps.iter().cloned().collect(),
                replies: script.replies.iter().cloned().collect(),
                ..Call::default()
            });
        let body = Self::incoming_event(call_id, "sip:+14155550100@carrier.example.com", to, extra);
        let sent = std::time::Instant::now();
        self.shared
            .sent_at
            .lock()
            .unwrap()
            .insert(call_id.to_string(), sent);
        deliver(&self.shared, webhook_url, &format!("wh_{call_id}"), &body).await
    }

    /// What the caller of `call_id` does and the model answers, instead of the script's.
    pub fn plan(&self, call_id: &str, steps: Vec<Step>, replies: Vec<Reply>) {
        self.shared.calls.lock().unwrap().insert(
            call_id.to_string(),
            Call {
                steps: steps.into(),
                replies: replies.into(),
                ..Call::default()
            },
        );
    }

    /// The caller hangs up `call_id` now.
    pub async fn hang_up(&self, call_id: &str) {
        end_call(&self.shared, call_id).await;
    }

    pub fn requests(&self) -> Vec<RestCall> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The host's REST requests of `action`.
    pub fn requests_of(&self, action: &str) -> Vec<RestCall> {
        self.requests()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }

    /// Sideband client events of `call_id` with `type` = `kind`.
    pub fn received_of(&self, call_id: &str, kind: &str) -> Vec<Value> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, e)| c == call_id && e["type"] == kind)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// How many sideband sockets `call_id` has had.
    pub fn sockets(&self, call_id: &str) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap()
            .get(call_id)
            .map_or(0, |c| c.sockets)
    }

    /// For each accepted call whose id starts with `prefix`, the time from its incoming
    /// webhook going out to its accept coming in (host time plus two loopback hops).
    pub fn accept_latencies(&self, prefix: &str) -> Vec<Duration> {
        let sent = self.shared.sent_at.lock().unwrap();
        let accepted = self.shared.accepted_at.lock().unwrap();
        accepted
            .iter()
            .filter(|(call, _)| call.starts_with(prefix))
            .filter_map(|(call, at)| Some(at.duration_since(*sent.get(call)?)))
            .collect()
    }

    /// When the last spoken response of `call_id` finished playing to the caller.
    pub fn played_at(&self, call_id: &str) -> Option<std::time::Instant> {
        self.shared.played_at.lock().unwrap().get(call_id).copied()
    }

    /// Whether `call_id` has ended at OpenAI.
    pub fn ended(&self, call_id: &str) -> bool {
        self.shared
            .calls
            .lock()
            .unwrap()
            .get(call_id)
            .is_some_and(|c| c.ended)
    }

    /// Wait until `check` holds, up to `secs`.
    pub async fn wait(&self, secs: u64, what: &str, check: impl Fn(&FakeOpenAiSip) -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < end {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}; requests {:?}",
            self.requests()
        );
    }
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    let mut request = http
        .post(url)
        .header(
            "user-agent",
            "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        )
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Deliver `body` signed, retrying a non-2xx with the same id (three tries).
async fn deliver(shared: &Shared, url: &str, id: &str, body: &str) -> u16 {
    let mut status = 0;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ts = now();
        let headers = vec![
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            (
                "webhook-signature".to_string(),
                sign(&shared.key, id, ts, body),
            ),
        ];
        status = post(&shared.http, url, &headers, body).await.0;
        if (200..300).contains(&status) {
            break;
        }
    }
    status
}

/// The call is over at OpenAI: `realtime.call.ended`, and its socket drops.
async fn end_call(shared: &Shared, call_id: &str) {
    let close = {
        let mut calls = shared.calls.lock().unwrap();
        let Some(call) = calls.get_mut(call_id) else {
            return;
        };
        if call.ended {
            return;
        }
        call.ended = true;
        call.close.take()
    };
    let url = shared.webhook_url.lock().unwrap().clone();
    let body = json!({"object": "event", "id": format!("evt_end_{call_id}"),
        "type": "realtime.call.ended", "created_at": now(),
        "data": {"call_id": call_id, "sip_headers": []}})
    .to_string();
    deliver(shared, &url, &format!("wh_end_{call_id}"), &body).await;
    if let Some(close) = close {
        let _ = close.send(());
    }
}

/// One connection: the sideband socket when it opens with a GET, else REST.
async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    let mut first = [0u8; 4];
    if tcp.peek(&mut first).await.is_err() {
        return;
    }
    if &first == b"GET " {
        sideband(tcp, shared).await;
        return;
    }
    let answer = move |request: RestRequest| {
        let accept = request.path.ends_with("/accept");
        let mut reply = RestReply::from(rest(&shared, request));
        if accept {
            reply.after = shared.script.accept_after;
        }
        reply
    };
    rest_fake::serve_connection(tcp, Arc::new(answer)).await;
}

fn rest(shared: &Arc<Shared>, request: RestRequest) -> (&'static str, Value) {
    let error =
        |message: &str| json!({"error": {"message": message, "type": "invalid_request_error"}});
    if request.authorization != format!("Bearer {}", shared.api_key) {
        return ("401 Unauthorized", error("Incorrect API key provided."));
    }
    let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let ["v1", "realtime", "calls", call_id, action] = parts[..] else {
        return ("404 Not Found", error("unknown path"));
    };
    if request.method != "POST" {
        return ("405 Method Not Allowed", error("POST only"));
    }
    let body: Value = if request.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(_) => return ("400 Bad Request", error("the body is not JSON")),
        }
    };
    shared.requests.lock().unwrap().push(RestCall {
        action: action.to_string(),
        call_id: call_id.to_string(),
        body: body.clone(),
        at: std::time::Instant::now(),
    });
    let mut calls = shared.calls.lock().unwrap();
    let Some(call) = calls.get_mut(call_id).filter(|c| !c.ended) else {
        return ("404 Not Found", error("no such call"));
    };
    let ok = ("200 OK", Value::Null);
    match action {
        "accept" => {
            if call.rejected.is_some() || call.accepted.is_some() {
                return ("404 Not Found", error("the call is no longer pending"));
            }
            if body["type"] != "realtime" {
                return (
                    "400 Bad Request",
                    error("Missing required parameter: 'session.type'."),
                );
            }
            match shared.script.accept_status {
                Some(500) => ("500 Internal Server Error", error("server error")),
                Some(_) => ("400 Bad Request", error("refused by the script")),
                None => {
                    call.accepted = Some(body);
                    let now = std::time::Instant::now();
                    shared
                        .accepted_at
                        .lock()
                        .unwrap()
                        .insert(call_id.to_string(), now);
                    ok
                }
            }
        }
        "reject" => {
            if call.accepted.is_some() || call.rejected.is_some() {
                return ("404 Not Found", error("the call is no longer pending"));
            }
            call.rejected = Some(body["status_code"].as_u64().unwrap_or(603) as u16);
            call.ended = true;
            ok
        }
        "refer" => {
            if !body["target_uri"].is_string() {
                return (
                    "400 Bad Request",
                    error("Missing required parameter: 'target_uri'."),
                );
            }
            ok
        }
        "hangup" => {
            call.ended = true;
            if let Some(close) = call.close.take() {
                let _ = close.send(());
            }
            ok
        }
        _ => ("404 Not Found", error("unknown action")),
    }
}

type Ws = WebSocketStream<TcpStream>;

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn sideband(tcp: TcpStream, shared: Arc<Shared>) {
    let found: Arc<Mutex<Option<String>>> = Arc::default();
    let (cb_shared, cb_found) = (shared.clone(), found.clone());
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let refuse = |status: StatusCode, msg: &str| {
            let mut r = ErrorResponse::new(Some(msg.to_string()));
            *r.status_mut() = status;
            Err(r)
        };
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {}", cb_shared.api_key)) {
            return refuse(StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
        }
        let query = req.uri().query().unwrap_or("");
        let call_id = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("call_id="))
            .map(str::to_string);
        let calls = cb_shared.calls.lock().unwrap();
        let live = call_id
            .as_ref()
            .and_then(|id| calls.get(id))
            .is_some_and(|c| c.accepted.is_some() && !c.ended);
        if req.uri().path() != "/v1/realtime" || query.contains("model=") || !live {
            return refuse(StatusCode::NOT_FOUND, "no such call");
        }
        *cb_found.lock().unwrap() = call_id;
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let call_id = found.lock().unwrap().clone().expect("checked");
    let (close_tx, close_rx) = mpsc::unbounded_channel();
    let session = {
        let mut calls = shared.calls.lock().unwrap();
        let call = calls.get_mut(&call_id).expect("checked");
        call.close = Some(close_tx);
        call.sockets += 1;
        call.accepted.clone().unwrap_or_default()
    };
    let _ = Session {
        shared,
        call_id,
        next: 0,
        pending_call: None,
    }
    .run(ws, session, close_rx)
    .await;
}

struct Session {
    shared: Arc<Shared>,
    call_id: String,
    next: u64,
    /// A function call waiting for its output.
    pending_call: Option<String>,
}

type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

impl Session {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{:03}", self.next)
    }

    async fn send(&mut self, ws: &mut Ws, mut event: Value) -> WsResult {
        event["event_id"] = json!(self.id("event"));
        ws.send(Message::text(event.to_string())).await
    }

    async fn run(
        mut self,
        mut ws: Ws,
        mut session: Value,
        mut close: mpsc::UnboundedReceiver<()>,
    ) -> WsResult {
        session["object"] = json!("realtime.session");
        session["id"] = json!("sess_sip001");
        self.send(
            &mut ws,
            json!({"type": "session.created", "session": session}),
        )
        .await?;
        // The caller's first step waits for the greeting (or a quiet moment without one).
        let mut idle_since = Some(tokio::time::Instant::now() + Duration::from_millis(300));
        let mut greeted = false;
        loop {
            let wake = idle_since.filter(|_| self.pending_call.is_none());
            tokio::select! {
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { return Ok(()) };
                    let Message::Text(text) = msg else {
                        if matches!(msg, Message::Close(_)) { return Ok(()); }
                        continue;
                    };
                    let event: Value = serde_json::from_str(&text).unwrap_or(json!({"type": "<not json>"}));
                    self.shared.received.lock().unwrap().push((self.call_id.clone(), event.clone()));
                    match event["type"].as_str().unwrap_or("") {
                        "response.create" => {
                            let instructions = event["response"]["instructions"].as_str().unwrap_or("");
                            let quoted = match (instructions.find('"'), instructions.rfind('"')) {
                                (Some(a), Some(b)) if b > a => Some(instructions[a + 1..b].to_string()),
                                _ => None,
                            };
                            let reworded = self.shared.script.greeting_as.clone().filter(|_| !greeted);
                            match reworded.or(quoted) {
                                Some(words) => self.speak(&mut ws, &words).await?,
                                None => self.reply(&mut ws).await?,
                            }
                            if !greeted {
                                greeted = true;
                                idle_since = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                            } else if idle_since.is_none() && self.pending_call.is_none() {
                                idle_since = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                            }
                        }
                        "conversation.item.create" if event["item"]["type"] == "function_call_output" => {
                            if self.pending_call.as_deref() == event["item"]["call_id"].as_str() {
                                self.pending_call = None;
                                let item = json!({"id": self.id("item"), "type": "function_call_output",
                                    "call_id": event["item"]["call_id"], "output": event["item"]["output"]});
                                self.send(&mut ws, json!({"type": "conversation.item.added", "item": item})).await?;
                            } else {
                                let id = event["event_id"].clone();
                                self.send(&mut ws, json!({"type": "error", "error": {"type": "invalid_request_error",
                                    "code": "invalid_call_id", "message": "no such function call", "event_id": id}})).await?;
                            }
                        }
                        "session.update" => {
                            let s = json!({"type": "realtime", "object": "realtime.session"});
                            self.send(&mut ws, json!({"type": "session.updated", "session": s})).await?;
                        }
                        _ => {}
                    }
                }
                _ = close.recv() => return Ok(()),
                () = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let step = {
                        let mut calls = self.shared.calls.lock().unwrap();
                        calls.get_mut(&self.call_id).and_then(|c| c.steps.pop_front())
                    };
                    idle_since = None;
                    match step {
                        None => {}
                        Some(Step::Caller(text)) => {
                            self.caller_turn(&mut ws, &text).await?;
                            self.reply(&mut ws).await?;
                        }
                        Some(Step::Raw(text)) => ws.send(Message::text(text)).await?,
                        Some(Step::Digit(key)) => {
                            let event = json!({"type": "input_audio_buffer.dtmf_event_received",
                                "event": key.to_string(), "received_at": now()});
                            self.send(&mut ws, event).await?;
                        }
                        Some(Step::DropSocket) => return Ok(()),
                        Some(Step::HangUp) => {
                            end_call(&self.shared, &self.call_id).await;
                            return Ok(());
                        }
                    }
                    if self.pending_call.is_none() {
                        idle_since = Some(tokio::time::Instant::now() + Duration::from_millis(100));
                    }
                }
            }
        }
    }

    /// The caller speaks `text`: VAD events, the user item and its transcription.
    async fn caller_turn(&mut self, ws: &mut Ws, text: &str) -> WsResult {
        let item_id = self.id("item_user");
        self.send(ws, json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": item_id}))
            .await?;
        self.send(ws, json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2000, "item_id": item_id}))
            .await?;
        self.send(ws, json!({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": null}))
            .await?;
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "user", "content": [{"type": "input_audio", "transcript": null}]});
        self.send(
            ws,
            json!({"type": "conversation.item.added", "item": item.clone()}),
        )
        .await?;
        self.send(ws, json!({"type": "conversation.item.done", "item": item}))
            .await?;
        self.send(
            ws,
            json!({"type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id, "content_index": 0, "transcript": text}),
        )
        .await
    }

    /// The next scripted reply (speech when the script has none left).
    async fn reply(&mut self, ws: &mut Ws) -> WsResult {
        let reply = {
            let mut calls = self.shared.calls.lock().unwrap();
            calls
                .get_mut(&self.call_id)
                .and_then(|c| c.replies.pop_front())
        };
        match reply.unwrap_or(Reply::Speech("I am the fake model.".into())) {
            Reply::Speech(text) => self.speak(ws, &text).await,
            Reply::ToolCall { name, arguments } => self.function_call(ws, &name, &arguments).await,
        }
    }

    fn usage() -> Value {
        json!({"total_tokens": 142, "input_tokens": 101, "output_tokens": 41,
            "input_token_details": {"text_tokens": 90, "audio_tokens": 11, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 11, "audio_tokens": 30}})
    }

    /// A spoken response: its lifecycle with the transcript; the audio goes over SIP.
    async fn speak(&mut self, ws: &mut Ws, text: &str) -> WsResult {
        let resp = self.id("resp");
        let item_id = self.id("item_agent");
        let item = json!({"id": item_id, "object": "realtime.item", "type": "message",
            "status": "in_progress", "role": "assistant", "content": []});
        self.send(ws, json!({"type": "response.created", "response": {"id": resp, "object": "realtime.response",
            "status": "in_progress", "output": []}}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp, "output_index": 0, "item": item}))
            .await?;
        self.send(ws, json!({"type": "conversation.item.added", "item": item}))
            .await?;
        self.send(
            ws,
            json!({"type": "output_audio_buffer.started", "response_id": resp}),
        )
        .await?;
        self.send(
            ws,
            json!({"type": "response.output_audio_transcript.delta", "response_id": resp,
            "item_id": item_id, "output_index": 0, "content_index": 0, "delta": text}),
        )
        .await?;
        self.send(
            ws,
            json!({"type": "response.output_audio_transcript.done", "response_id": resp,
            "item_id": item_id, "output_index": 0, "content_index": 0, "transcript": text}),
        )
        .await?;
        let done_item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed",
            "role": "assistant", "content": [{"type": "output_audio", "transcript": text}]});
        self.send(ws, json!({"type": "response.output_item.done", "response_id": resp, "output_index": 0, "item": done_item}))
            .await?;
        self.send(
            ws,
            json!({"type": "response.done", "response": {"id": resp, "object": "realtime.response",
            "status": "completed", "output": [done_item], "usage": Self::usage()}}),
        )
        .await?;
        tokio::time::sleep(PLAYOUT).await;
        self.shared
            .played_at
            .lock()
            .unwrap()
            .insert(self.call_id.clone(), std::time::Instant::now());
        self.send(
            ws,
            json!({"type": "output_audio_buffer.stopped", "response_id": resp}),
        )
        .await
    }

    /// A response that calls a function and waits for its output.
    async fn function_call(&mut self, ws: &mut Ws, name: &str, arguments: &str) -> WsResult {
        let resp = self.id("resp");
        let item_id = self.id("item_fc");
        let call_id = self.id("call");
        let item = json!({"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "in_progress", "name": name, "call_id": call_id, "arguments": ""});
        self.send(ws, json!({"type": "response.created", "response": {"id": resp, "object": "realtime.response",
            "status": "in_progress", "output": []}}))
            .await?;
        self.send(ws, json!({"type": "response.output_item.added", "response_id": resp, "output_index": 0, "item": item}))
            .await?;
        self.send(
            ws,
            json!({"type": "response.function_call_arguments.delta", "response_id": resp,
            "item_id": item_id, "output_index": 0, "call_id": call_id, "delta": arguments}),
        )
        .await?;
        self.send(ws, json!({"type": "response.function_call_arguments.done", "response_id": resp,
            "item_id": item_id, "output_index": 0, "call_id": call_id, "name": name, "arguments": arguments}))
            .await?;
        let done_item = json!({"id": item_id, "object": "realtime.item", "type": "function_call",
            "status": "completed", "name": name, "call_id": call_id, "arguments": arguments});
        self.send(ws, json!({"type": "response.output_item.done", "response_id": resp, "output_index": 0, "item": done_item}))
            .await?;
        self.pending_call = Some(call_id);
        self.send(
            ws,
            json!({"type": "response.done", "response": {"id": resp, "object": "realtime.response",
            "status": "completed", "output": [done_item], "usage": Self::usage()}}),
        )
        .await
    }
}
