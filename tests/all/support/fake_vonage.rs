//! A protocol-faithful fake of Vonage's Voice API on 127.0.0.1: it places calls at the host's
//! answer webhook and plays the media socket as a phone would, and it serves the REST call
//! update the host uses to hang up and transfer. Signing and checking are its own code (ring's
//! HMAC, SHA-256 and RSA verification), not the host's. Where each message comes from:
//!
//! - Answer webhook (developer.vonage.com/en/voice/voice-api/webhook-reference, "Answer
//!   webhook"): `GET` by default (`POST` with a JSON body when the application says so) with
//!   `to`, `from`, `uuid`, `conversation_uuid`; the answer is an NCCO (JSON array).
//! - Signed webhooks (developer.vonage.com/en/messages/concepts/signed-webhooks, which the
//!   Voice webhook reference points to for signed callbacks): `Authorization: Bearer` with an
//!   HS256 JWT signed with the signature secret, claims `iat`, `jti`, `iss: "Vonage"`,
//!   `payload_hash` (hex SHA-256 of the payload), `api_key`, `application_id`. The payload of a
//!   GET is its query parameters as a JSON object in their order without whitespace (Vonage API
//!   Support article 19033783342876, "How do I verify that the Voice API Webhook request and
//!   its payload has not been tampered during transit?").
//! - NCCO `connect` to a `websocket` endpoint with `uri`, `content-type` and `headers` (≤ 512
//!   bytes) (developer.vonage.com/en/voice/voice-api/ncco-reference, "WebSocket"); the socket
//!   leg's events go to the action's `eventUrl` with the headers (Voice API "WebSockets",
//!   fallback options).
//! - Media socket (developer.vonage.com/en/voice/voice-api/concepts/websockets): Vonage is the
//!   client; the first message is text, `{"event":"websocket:connected","content-type":…}`
//!   with the NCCO's headers at the top level; then binary 16-bit little-endian PCM, 20 ms (640
//!   bytes at 16 kHz) per message, both ways; DTMF as text
//!   `{"event":"websocket:dtmf","digit":"5","duration":260}`. The controls, checked again
//!   for issue 24 against Vonage's guide "WebSockets in the Vonage Voice API"
//!   (developer.vonage.com/en/voice/voice-api/guides/websockets, the same page as
//!   …/concepts/websockets; it has the socket carry "text messages as control commands or
//!   events") and the AsyncAPI document generated from that page (api-evangelist/vonage
//!   `asyncapi/vonage-asyncapi.yml`, validated against it 2026-05-29; browsable at
//!   asyncapi.apis.io/asyncapis/vonage/vonage-asyncapi): `ClearCommand` `{"action":"clear"}`
//!   stops playback and drops the queued audio, acknowledged by `{"event":"websocket:cleared"}`;
//!   `NotifyCommand` `{"action":"notify","payload":{…}}` (`payload` required, an object echoed
//!   back) is answered by `{"event":"websocket:notify","payload":{…}}` once every audio frame
//!   queued before it has played; Vonage queues up to 3072 frames (about 60 s). Vonage's own
//!   Pipecat serializer (github.com/Vonage/pipecat, `serializers/vonage.py`) sends the same
//!   `clear`. The host's frames (host/src/bridges/vonage/frames.rs) are these shapes exactly.
//!   What happens to notifies still queued on `clear` is not documented: this fake drops them
//!   with the audio. When the caller hangs up, the socket is closed (there is no stop
//!   message).
//! - REST (Vonage's curl snippets `end-a-call.sh`, `transfer-call-inline-ncco.sh`):
//!   `PUT /v1/calls/{uuid}` with `{"action":"hangup"}` or `{"action":"transfer","destination":
//!   {"type":"ncco","ncco":[…]}}`, `Authorization: Bearer` with an RS256 JWT (developer.vonage.com
//!   "Authentication", JWTs: `alg` RS256, `typ` JWT; claims `application_id`, `iat`, `jti`
//!   required, `nbf`, `exp` optional) checked here against the application's public key. The
//!   fake answers 204 (the host takes any 2xx); an unknown call gets 404, a bad token 401.
//!
//! - Outbound (Vonage's API reference, "Create an outbound call"; the SDK's `OutboundCall` and
//!   `CreateCallResponse` types in @vonage/voice): `POST /v1/calls` with `to` (an array of
//!   endpoints: `{"type":"phone","number"}` or `{"type":"sip","uri"}`), `from`
//!   (`{"type":"phone","number"}`), `ncco` (or `answer_url`), `event_url`, `event_method`,
//!   `ringing_timer`, the same RS256 token; 201 with `uuid`, `status: "started"`, `direction:
//!   "outbound"`, `conversation_uuid`. The call's events go to `event_url` (signed like every
//!   webhook): `started`, `ringing`, then `answered` and the NCCO runs, or `busy`, `timeout`,
//!   or `cancelled` when the application hangs the ringing call up ("cancelled by the
//!   originator before it was answered": developer.vonage.com "Call Statuses", and the
//!   `CallStatus` enum of @vonage/voice).
//!
//! The application's key pair is made at run time with `openssl genpkey` (ring cannot generate
//! RSA keys); the public half, as DER `RSAPublicKey`, comes from `openssl rsa`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::support::callee;
use crate::support::rest_fake;

/// One REST request the host made.
#[derive(Debug, Clone)]
pub struct RestCall {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// Why its token was refused, if it was.
    pub refused: Option<String>,
}

/// What the REST side tells a call in progress.
#[derive(Debug, Clone)]
enum Control {
    Hangup,
    Transfer(Value),
}

/// What the callee of a call the host places does.
pub type Callee = callee::Callee<CallScript>;

/// A call the host placed, played to its end.
#[derive(Debug)]
pub struct Placed {
    /// The create request's body.
    pub body: Value,
    /// The call, when the callee answered.
    pub call: Option<CallResult>,
    /// The last status the fake reported.
    pub last_status: &'static str,
}

/// A created call, with what the REST side tells it.
struct Created {
    uuid: String,
    body: Value,
    control: mpsc::UnboundedReceiver<Control>,
}

/// What the fake's tasks share.
struct State {
    application_id: String,
    /// The application's public key, DER `RSAPublicKey`.
    public_key: Vec<u8>,
    rest: Mutex<Vec<RestCall>>,
    /// Calls in progress: uuid → what the REST side tells them.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// Calls the host created, not yet played.
    created: Mutex<VecDeque<Created>>,
}

pub struct FakeVonage {
    pub application_id: String,
    pub signature_secret: String,
    /// The application's private key (PEM), for `[bridges.vonage] private-key`.
    pub private_key: PathBuf,
    /// `http://127.0.0.1:<port>`, for `[bridges.vonage] api-base`.
    pub api_base: String,
    state: Arc<State>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVonage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the answer webhook is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMethod {
    Get,
    Post,
}

/// The caller's side of one call.
#[derive(Debug, Clone)]
pub struct CallScript {
    pub from: String,
    pub to: String,
    pub answer_method: AnswerMethod,
    /// What the caller says: 16 kHz samples streamed from `websocket:connected` on; silence
    /// after them.
    pub speech: Vec<i16>,
    /// Keypad digits at times since the socket connected.
    pub digits: Vec<(Duration, char)>,
    /// The caller hangs up (the socket closes) this long after it connected.
    pub hangup_after: Option<Duration>,
    /// The whole call may not last longer.
    pub limit: Duration,
}

impl Default for CallScript {
    fn default() -> Self {
        CallScript {
            from: "14155550100".into(),
            to: "2000".into(),
            answer_method: AnswerMethod::Get,
            speech: Vec::new(),
            digits: Vec::new(),
            hangup_after: None,
            limit: Duration::from_secs(30),
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The host closed the socket.
    HostClosed,
    /// The caller hung up (`hangup_after`).
    CallerHungUp,
    /// The host hung up through REST.
    RestHangup,
    /// The host moved the call through REST (the new NCCO).
    RestTransferred(Value),
    /// The call hit the script's limit.
    Limit,
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub uuid: String,
    /// The answer webhook's NCCO.
    pub ncco: Value,
    /// What the caller heard, 16 kHz, one sample per 1/16 ms since the socket connected
    /// (silence where nothing played).
    pub heard: Vec<i16>,
    pub media_received: usize,
    pub notifies_echoed: usize,
    pub clears: usize,
    /// Messages from the host that broke the protocol.
    pub violations: Vec<String>,
    pub ending: Ending,
    /// The close frame's code and reason, when the host sent one.
    pub close: Option<(u16, String)>,
}

impl CallResult {
    fn new(uuid: &str, ncco: Value) -> CallResult {
        CallResult {
            uuid: uuid.to_string(),
            ncco,
            heard: Vec::new(),
            media_received: 0,
            notifies_echoed: 0,
            clears: 0,
            violations: Vec::new(),
            ending: Ending::HostClosed,
            close: None,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A uuid-shaped id, unique enough for a test run.
fn uuid() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        ^ ((std::process::id() as u128) << 64);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The payload of a GET webhook as Vonage hashes it: its query parameters as a JSON object
/// in their order, without whitespace.
pub fn query_payload(params: &[(String, String)]) -> String {
    let fields: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// `Authorization` for a signed webhook: `Bearer` an HS256 JWT over `payload`, issued at
/// `iat`, signed with `secret`.
pub fn bearer(secret: &str, application_id: &str, payload: &[u8], iat: u64) -> String {
    let header = B64URL.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims = json!({
        "iat": iat, "jti": uuid(), "iss": "Vonage", "api_key": "a1b2c3d",
        "application_id": application_id,
        "payload_hash": hex(ring::digest::digest(&ring::digest::SHA256, payload).as_ref()),
    });
    let input = format!("{header}.{}", B64URL.encode(claims.to_string()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("Bearer {input}.{}", B64URL.encode(sig.as_ref()))
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (it makes the test's RSA key)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeVonage {
    pub async fn start() -> FakeVonage {
        let dir = crate::support::tempdir("fake-vonage-");
        let private_key = dir.path().join("private.key");
        let public_der = dir.path().join("public.der");
        let key = private_key.to_str().unwrap();
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key,
        ]);
        openssl(&[
            "rsa",
            "-in",
            key,
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            public_der.to_str().unwrap(),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}", listener.local_addr().unwrap());
        let application_id = uuid();
        let state = Arc::new(State {
            application_id: application_id.clone(),
            public_key: std::fs::read(&public_der).unwrap(),
            rest: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            created: Mutex::new(VecDeque::new()),
        });
        let answer = state.clone();
        let task = tokio::spawn(rest_fake::serve(
            listener,
            Arc::new(move |request: rest_fake::Request| answer.answer(request)),
        ));
        FakeVonage {
            application_id,
            signature_secret: "fake-vonage-signature-secret".into(),
            private_key,
            api_base,
            state,
            _dir: dir,
            task,
        }
    }

    /// REST requests the host made, in order.
    pub fn rest_calls(&self) -> Vec<RestCall> {
        self.state.rest.lock().unwrap().clone()
    }

    /// A valid `Authorization` for `payload`, as Vonage signs it now.
    pub fn sign(&self, payload: &[u8]) -> String {
        bearer(
            &self.signature_secret,
            &self.application_id,
            payload,
            unix_now(),
        )
    }

    /// The answer webhook's fields for a call.
    pub fn answer_params(&self, uuid: &str, from: &str, to: &str) -> Vec<(String, String)> {
        [
            ("to", to),
            ("from", from),
            ("uuid", uuid),
            ("conversation_uuid", &format!("CON-{uuid}")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `GET {public_url}/vonage/answer?…` with `authorization`; (status, body).
    pub async fn get_answer(
        &self,
        public_url: &str,
        params: &[(String, String)],
        authorization: Option<&str>,
    ) -> (u16, String) {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut request = reqwest::Client::new().get(format!("{public_url}/vonage/answer?{query}"));
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        reply(request).await
    }

    /// `POST {public_url}{path}` with a JSON `body` and `authorization`; (status, body).
    pub async fn post_json(
        &self,
        public_url: &str,
        path: &str,
        body: &str,
        authorization: Option<&str>,
    ) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(format!("{public_url}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        reply(request).await
    }

    /// Place an inbound call at `public_url` and play it to its end.
    pub async fn call(&self, public_url: &str, script: CallScript) -> CallResult {
        let uuid = uuid();
        let params = self.answer_params(&uuid, &script.from, &script.to);
        let (status, body) = match script.answer_method {
            AnswerMethod::Get => {
                let auth = self.sign(query_payload(&params).as_bytes());
                self.get_answer(public_url, &params, Some(&auth)).await
            }
            AnswerMethod::Post => {
                let fields: serde_json::Map<String, Value> = params
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect();
                let body = Value::Object(fields).to_string();
                let auth = self.sign(body.as_bytes());
                self.post_json(public_url, "/vonage/answer", &body, Some(&auth))
                    .await
            }
        };
        assert_eq!(status, 200, "the answer webhook: {body}");
        let ncco: Value = serde_json::from_str(&body).expect("the answer is an NCCO");
        let mut result = CallResult::new(&uuid, ncco.clone());
        let Some(endpoint) = socket_endpoint(&ncco) else {
            return result;
        };
        let (control_tx, control) = mpsc::unbounded_channel();
        self.state
            .calls
            .lock()
            .unwrap()
            .insert(uuid.clone(), control_tx);
        self.socket(&endpoint, script, control, &mut result).await;
        self.state.calls.lock().unwrap().remove(&uuid);
        if result.ending == Ending::CallerHungUp {
            // The call's end, on the application's event webhook.
            let event = json!({"from": params[1].1, "to": params[0].1, "uuid": uuid,
                               "conversation_uuid": params[3].1, "status": "completed",
                               "direction": "inbound", "timestamp": "2026-01-01T00:00:00.000Z"})
            .to_string();
            let auth = self.sign(event.as_bytes());
            let (status, _) = self
                .post_json(public_url, "/vonage/event", &event, Some(&auth))
                .await;
            assert!(status < 300, "the event webhook answers 2xx: {status}");
        }
        result
    }

    /// The next call the host created (waiting for it up to 10 s), played as `callee` does.
    pub async fn placed(&self, callee: Callee) -> Placed {
        let deadline = Instant::now() + Duration::from_secs(10);
        let Created {
            uuid,
            body,
            control,
        } = loop {
            if let Some(created) = self.state.created.lock().unwrap().pop_front() {
                break created;
            }
            assert!(Instant::now() < deadline, "the host created no call");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let event_url = body["event_url"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let post = |status: &'static str| {
            let event = json!({"from": body["from"]["number"], "to": body["to"][0]["number"],
                "uuid": uuid, "conversation_uuid": format!("CON-{uuid}"), "status": status,
                "direction": "outbound", "timestamp": "2026-01-01T00:00:00.000Z"})
            .to_string();
            let auth = self.sign(event.as_bytes());
            let url = event_url.clone();
            async move {
                let (code, reply) = self.post_json(&url, "", &event, Some(&auth)).await;
                assert!(code < 300, "the event webhook answers 2xx: {code} {reply}");
            }
        };
        post("started").await;
        post("ringing").await;
        let mut control = control;
        let (call, last_status) = match callee {
            Callee::Answers(script) => {
                post("answered").await;
                let mut result = CallResult::new(&uuid, body["ncco"].clone());
                let endpoint = socket_endpoint(&body["ncco"]).expect("a socket in the NCCO");
                self.socket(&endpoint, script, control, &mut result).await;
                post("completed").await;
                (Some(result), "completed")
            }
            Callee::Busy => (None, "busy"),
            Callee::NoAnswer => (None, "timeout"),
            Callee::RingsOn => {
                match tokio::time::timeout(Duration::from_secs(20), control.recv()).await {
                    Ok(Some(Control::Hangup)) => (None, "cancelled"),
                    other => panic!("expected a hang-up while it rang, got {other:?}"),
                }
            }
        };
        if call.is_none() {
            post(last_status).await;
        }
        self.state.calls.lock().unwrap().remove(&uuid);
        Placed {
            body,
            call,
            last_status,
        }
    }

    /// Open the media socket of `endpoint` and play the call.
    async fn socket(
        &self,
        endpoint: &Value,
        script: CallScript,
        mut control: mpsc::UnboundedReceiver<Control>,
        result: &mut CallResult,
    ) {
        let uri = endpoint["uri"].as_str().expect("the endpoint has a uri");
        let (mut ws, _) = tokio_tungstenite::connect_async(uri)
            .await
            .expect("the media socket opens");
        let mut first = json!({"event": "websocket:connected",
                               "content-type": endpoint["content-type"]});
        if let Some(headers) = endpoint["headers"].as_object() {
            assert!(
                Value::Object(headers.clone()).to_string().len() <= 512,
                "headers are at most 512 bytes"
            );
            for (k, v) in headers {
                first[k] = v.clone();
            }
        }
        ws.send(Message::text(first.to_string())).await.unwrap();

        let started = Instant::now();
        let mut speaker = Speaker::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut frame_no = 0usize;
        let mut digits: VecDeque<(Duration, char)> = script.digits.iter().copied().collect();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = started.elapsed();
                    // 20 ms of the caller: 320 samples, 640 bytes of L16.
                    let from = frame_no * 320;
                    let frame: Vec<u8> = (from..from + 320)
                        .flat_map(|i| script.speech.get(i).copied().unwrap_or(0).to_le_bytes())
                        .collect();
                    frame_no += 1;
                    if ws.send(Message::binary(frame)).await.is_err() {
                        break;
                    }
                    // 20 ms of the speaker; notifies passed are echoed.
                    for payload in speaker.play(640, &mut result.heard) {
                        result.notifies_echoed += 1;
                        let notify = json!({"event": "websocket:notify", "payload": payload});
                        let _ = ws.send(Message::text(notify.to_string())).await;
                    }
                    while digits.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, digit) = digits.pop_front().unwrap();
                        let dtmf = json!({"event": "websocket:dtmf", "digit": digit.to_string(),
                                          "duration": 260});
                        let _ = ws.send(Message::text(dtmf.to_string())).await;
                    }
                    if script.hangup_after.is_some_and(|h| now >= h) {
                        let _ = ws.close(None).await;
                        result.ending = Ending::CallerHungUp;
                        break;
                    }
                    if now >= script.limit {
                        result.ending = Ending::Limit;
                        break;
                    }
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Binary(audio))) => {
                        result.media_received += 1;
                        if audio.len() != 640 {
                            result.violations.push(format!("a binary message of {} bytes", audio.len()));
                        }
                        speaker.queue.push_back(Queued::Audio(audio.to_vec().into()));
                    }
                    Some(Ok(Message::Text(text))) => {
                        if on_control(&text, &mut speaker, result) {
                            let cleared = json!({"event": "websocket:cleared"});
                            let _ = ws.send(Message::text(cleared.to_string())).await;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        result.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        result.ending = Ending::HostClosed;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        result.ending = Ending::HostClosed;
                        break;
                    }
                },
                Some(c) = control.recv() => {
                    // The call left the socket's NCCO: Vonage drops the socket leg.
                    let _ = ws.close(None).await;
                    result.ending = match c {
                        Control::Hangup => Ending::RestHangup,
                        Control::Transfer(ncco) => Ending::RestTransferred(ncco),
                    };
                    break;
                }
            }
        }
    }
}

async fn reply(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("the webhook answers");
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// The `websocket` endpoint of an NCCO's `connect`, if it has one.
pub fn socket_endpoint(ncco: &Value) -> Option<Value> {
    ncco.as_array()?
        .iter()
        .filter(|a| a["action"] == "connect")
        .flat_map(|a| a["endpoint"].as_array().cloned().unwrap_or_default())
        .find(|e| e["type"] == "websocket")
}

/// The phone's speaker: audio the host sent, played at 32 bytes a ms, with its notifies.
#[derive(Default)]
struct Speaker {
    queue: VecDeque<Queued>,
}

enum Queued {
    Audio(VecDeque<u8>),
    Notify(Value),
}

impl Speaker {
    /// Play `n` bytes (silence when nothing is queued); the notify payloads passed, to echo.
    fn play(&mut self, n: usize, heard: &mut Vec<i16>) -> Vec<Value> {
        let mut passed = Vec::new();
        let mut left = n;
        while left > 0 {
            match self.queue.front_mut() {
                Some(Queued::Audio(audio)) => {
                    let take = left.min(audio.len()) & !1;
                    let bytes: Vec<u8> = audio.drain(..take).collect();
                    heard.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]])),
                    );
                    left -= take;
                    if audio.len() < 2 {
                        self.queue.pop_front();
                    }
                }
                Some(Queued::Notify(_)) => {
                    if let Some(Queued::Notify(payload)) = self.queue.pop_front() {
                        passed.push(payload);
                    }
                }
                None => {
                    heard.extend(std::iter::repeat_n(0, left / 2));
                    left = 0;
                }
            }
        }
        // A notify right behind the audio just played is due now, not 20 ms later.
        while let Some(Queued::Notify(_)) = self.queue.front() {
            if let Some(Queued::Notify(payload)) = self.queue.pop_front() {
                passed.push(payload);
            }
        }
        passed
    }
}

/// One text message from the host (`notify` or `clear`); whether it was a `clear`.
fn on_control(text: &str, speaker: &mut Speaker, result: &mut CallResult) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        result.violations.push(format!("not JSON: {text}"));
        return false;
    };
    match v["action"].as_str() {
        Some("notify") => {
            if v["payload"].is_object() {
                speaker
                    .queue
                    .push_back(Queued::Notify(v["payload"].clone()));
            } else {
                result
                    .violations
                    .push(format!("notify without a payload object: {text}"));
            }
            false
        }
        Some("clear") => {
            // The queued audio goes, and the notifies queued with it.
            result.clears += 1;
            speaker.queue.clear();
            true
        }
        _ => {
            result.violations.push(format!("unknown action: {text}"));
            false
        }
    }
}

fn error(status: &'static str, title: &str, detail: &str) -> (&'static str, Value) {
    (
        status,
        json!({"type": "https://developer.nexmo.com/api-errors", "title": title,
                "detail": detail}),
    )
}

impl State {
    /// Check the application's RS256 token: the signature by its private key, the header,
    /// and the required claims, fresh.
    fn check_token(&self, authorization: &str) -> Result<(), String> {
        let token = authorization
            .strip_prefix("Bearer ")
            .ok_or("no Bearer token")?;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, sig] = parts[..] else {
            return Err("not a compact JWT".into());
        };
        let decode = |part: &str| -> Result<Value, String> {
            let bytes = B64URL.decode(part).map_err(|e| e.to_string())?;
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let header = decode(header)?;
        if header["alg"] != "RS256" || header["typ"] != "JWT" {
            return Err(format!("header {header}"));
        }
        let sig = B64URL.decode(sig).map_err(|e| e.to_string())?;
        let input = format!("{}.{claims}", parts[0]);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &self.public_key,
        )
        .verify(input.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify".to_string())?;
        let claims = decode(claims)?;
        let now = unix_now() as i64;
        if claims["application_id"] != self.application_id.as_str() {
            return Err(format!("application_id {}", claims["application_id"]));
        }
        let iat = claims["iat"].as_i64().ok_or("no iat")?;
        if (iat - now).abs() > 300 {
            return Err(format!("iat {iat} is {} s from now", iat - now));
        }
        if !claims["jti"].is_string() {
            return Err("no jti".into());
        }
        if claims["exp"].as_i64().is_some_and(|exp| exp <= now) {
            return Err("expired".into());
        }
        Ok(())
    }

    /// `POST /v1/calls`: a new call, whose callee a test plays with [`FakeVonage::placed`].
    fn create(&self, body: Value) -> (&'static str, Value) {
        let endpoint = &body["to"][0];
        let valid = matches!(endpoint["type"].as_str(), Some("phone" | "sip"))
            && body["from"]["type"] == "phone"
            && body["from"]["number"].is_string()
            && (body["ncco"].is_array() || body["answer_url"].is_array());
        if !valid {
            return error(
                "400 Bad Request",
                "Bad Request",
                &format!("invalid call: {body}"),
            );
        }
        let uuid = uuid();
        let (tx, control) = mpsc::unbounded_channel();
        self.calls.lock().unwrap().insert(uuid.clone(), tx);
        let reply = json!({"uuid": uuid, "status": "started", "direction": "outbound",
                           "conversation_uuid": format!("CON-{uuid}")});
        self.created.lock().unwrap().push_back(Created {
            uuid,
            body,
            control,
        });
        ("201 Created", reply)
    }

    fn answer(&self, request: rest_fake::Request) -> (&'static str, Value) {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let refused = self.check_token(&request.authorization).err();
        self.rest.lock().unwrap().push(RestCall {
            method: request.method.clone(),
            path: request.path.clone(),
            body: body.clone(),
            refused: refused.clone(),
        });
        if let Some(why) = refused {
            return error("401 Unauthorized", "Unauthorized", &why);
        }
        if request.path == "/v1/calls" && request.method == "POST" {
            return self.create(body);
        }
        let Some(uuid) = request.path.strip_prefix("/v1/calls/") else {
            return error("404 Not Found", "Not Found", "no such resource");
        };
        if request.method != "PUT" {
            return error(
                "405 Method Not Allowed",
                "Method Not Allowed",
                &request.method,
            );
        }
        let Some(tx) = self.calls.lock().unwrap().get(uuid).cloned() else {
            return error("404 Not Found", "Not Found", "the call was not found");
        };
        let control = match body["action"].as_str() {
            Some("hangup") => Control::Hangup,
            Some("transfer")
                if body["destination"]["type"] == "ncco"
                    && body["destination"]["ncco"].is_array() =>
            {
                Control::Transfer(body["destination"]["ncco"].clone())
            }
            _ => return error("400 Bad Request", "Bad Request", "invalid call update"),
        };
        let _ = tx.send(control);
        ("204 No Content", Value::Null)
    }
}
