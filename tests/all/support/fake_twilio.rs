//! A protocol-faithful fake of Twilio on 127.0.0.1: it places calls at the host's voice webhook
//! and plays the media stream as a phone would, and it serves the REST call update the host
//! uses to hang up and transfer. Written from reference/protocols.md §0.3 and §4 (Twilio's
//! published webhook, TwiML, Media Streams and REST references); each message says where it
//! comes from.
//!
//! - Webhook (§4.1, §4.2): form POST with `CallSid`, `AccountSid`, `From`, `To`, `CallStatus`,
//!   `Direction`, `ApiVersion`, signed with `X-Twilio-Signature` = base64(HMAC-SHA1(auth token,
//!   URL + sorted name/value pairs)). The fake signs on its own (ring's HMAC), not with the host's
//!   code.
//! - TwiML (§4.3): `<Connect><Stream url>` with `<Parameter>`s, which come back in `start`.
//! - Stream (§0.3, §4.4): the upgrade is signed over the `wss` URL with nothing appended; text
//!   frames only: `connected`, `start` (sequenceNumber "1"), `media` every 20 ms (160 bytes of
//!   μ-law), `dtmf`, `stop`; counters are strings. Server audio plays at 8 bytes a ms into a
//!   speaker; a `mark` is echoed when the audio before it has played; `clear` drops the queued
//!   audio and returns the pending marks at once.
//! - REST (§4.6): `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with HTTP Basic;
//!   `Status=completed` ends the call (the stream gets `stop`), `Twiml=<Response><Dial>…` moves it
//!   (the stream gets `stop`), `Status=canceled` ends a call still ringing; an unknown call gets
//!   404 with code 20404. `POST …/Calls.json` (`To`, `From`, `Twiml`, `StatusCallback`,
//!   repeated `StatusCallbackEvent`) answers 201 with the new `sid` and `status: queued`, then
//!   plays the callee a test scripted: the subscribed status callbacks (signed form POSTs with
//!   `CallSid`, `AccountSid`, `From`, `To`, `Direction=outbound-api`, `CallStatus`: `queued`
//!   for `initiated`, `ringing`, `in-progress` for `answered`, and the final `completed`,
//!   `busy`, `no-answer`, `failed` or `canceled`), and on answer the TwiML's stream. Status
//!   values: Twilio's API definition (`call_enum_status`, `call_enum_event` in twilio-oai, as
//!   generated into docs.rs/twilio-openapi).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::model_audio::ulaw_encode;
use crate::support::rest_fake;
use crate::support::speaker::Speaker;
use crate::support::twilio_wire::{StreamMessages, encode_form, form, hmac_sha1_b64, sid};
pub use crate::support::twilio_wire::{signature, stream_of};

/// One REST request the host made.
#[derive(Debug, Clone)]
pub struct RestCall {
    pub path: String,
    pub form: Vec<(String, String)>,
}

impl RestCall {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the REST side tells a call in progress.
#[derive(Debug, Clone)]
enum Control {
    Completed,
    Canceled,
    Redirected(String),
}

/// What the callee of a call the host places does.
#[derive(Debug, Clone)]
pub enum Callee {
    /// Rings, answers, and plays the script.
    Answers(CallScript),
    Busy,
    NoAnswer,
    Fails,
    /// Rings until the host cancels.
    RingsOn,
}

/// What the fake's tasks share.
struct State {
    account_sid: String,
    auth_token: String,
    rest: Mutex<Vec<RestCall>>,
    /// Calls in progress: CallSid → what the REST side tells them.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// What the callees of the next calls the host places do, in order.
    callees: Mutex<VecDeque<Callee>>,
    /// The outcome of each call the host placed.
    placed: mpsc::UnboundedSender<Placed>,
    /// Trust for a public listener with TLS (`None`: plain HTTP).
    tls: Option<Arc<rustls::ClientConfig>>,
    http: reqwest::Client,
}

/// A call the host placed, as the callee saw it.
#[derive(Debug)]
pub struct Placed {
    pub to: String,
    pub from: String,
    /// The status callbacks sent, in order.
    pub statuses: Vec<String>,
    /// The call, when the callee answered.
    pub call: Option<CallResult>,
}

pub struct FakeTwilio {
    pub account_sid: String,
    pub auth_token: String,
    /// `http://127.0.0.1:<port>`, for `[bridges.twilio] api-base`.
    pub api_base: String,
    state: Arc<State>,
    placed: tokio::sync::Mutex<mpsc::UnboundedReceiver<Placed>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The caller's side of one call.
#[derive(Debug, Clone)]
pub struct CallScript {
    pub from: String,
    pub to: String,
    /// What the caller says: 8 kHz samples streamed from `start` on; silence after them.
    pub speech: Vec<i16>,
    /// Keypad digits at times since `start`.
    pub digits: Vec<(Duration, char)>,
    /// The caller hangs up (the stream gets `stop`) this long after `start`.
    pub hangup_after: Option<Duration>,
    /// The whole call may not last longer.
    pub limit: Duration,
    /// Sign the stream's upgrade (a real Twilio does).
    pub sign_upgrade: bool,
    /// Media frames sent each 20 ms (1 is real time; more is a flood).
    pub frames_per_tick: usize,
    /// Malformed frames sent at a time since `start` (bad input tests).
    pub garbage: Option<(Duration, usize)>,
}

impl Default for CallScript {
    fn default() -> Self {
        CallScript {
            from: "+14155550100".into(),
            to: "2000".into(),
            speech: Vec::new(),
            digits: Vec::new(),
            hangup_after: None,
            limit: Duration::from_secs(30),
            sign_upgrade: true,
            frames_per_tick: 1,
            garbage: None,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The host closed the stream.
    HostClosed,
    /// The caller hung up (`hangup_after`).
    CallerHungUp,
    /// The host hung up through REST.
    RestCompleted,
    /// The host moved the call through REST (the new TwiML).
    RestRedirected(String),
    /// The call hit the script's limit.
    Limit,
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub call_sid: String,
    /// The webhook's answer.
    pub twiml: String,
    /// What the caller heard, 8 kHz, one sample per 1/8 ms since `start` (silence where
    /// nothing played).
    pub heard: Vec<i16>,
    pub media_received: usize,
    pub marks_echoed: usize,
    pub clears: usize,
    /// Frames from the host that broke the protocol.
    pub violations: Vec<String>,
    pub ending: Ending,
    /// The close frame's code and reason, when the host sent one.
    pub close: Option<(u16, String)>,
}

impl CallResult {
    fn new(call_sid: &str, twiml: &str) -> CallResult {
        CallResult {
            call_sid: call_sid.to_string(),
            twiml: twiml.to_string(),
            heard: Vec::new(),
            media_received: 0,
            marks_echoed: 0,
            clears: 0,
            violations: Vec::new(),
            ending: Ending::HostClosed,
            close: None,
        }
    }
}

impl FakeTwilio {
    pub async fn start() -> FakeTwilio {
        FakeTwilio::start_with(None).await
    }

    /// A fake that reaches a public listener with TLS, trusting `tls`'s roots only.
    pub async fn start_trusting(tls: rustls::ClientConfig) -> FakeTwilio {
        FakeTwilio::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<rustls::ClientConfig>) -> FakeTwilio {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}", listener.local_addr().unwrap());
        let account_sid = format!("AC{:032x}", std::process::id());
        let auth_token = "fake-twilio-auth-token".to_string();
        let (placed_tx, placed) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            account_sid: account_sid.clone(),
            auth_token: auth_token.clone(),
            rest: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            callees: Mutex::new(VecDeque::new()),
            placed: placed_tx,
            http: match &tls {
                Some(config) => reqwest::Client::builder()
                    .use_preconfigured_tls(config.clone())
                    .build()
                    .unwrap(),
                None => reqwest::Client::new(),
            },
            tls: tls.map(Arc::new),
        });
        // The REST API (§4.6): create a call, update a call.
        let answer = state.clone();
        let task = tokio::spawn(rest_fake::serve(
            listener,
            Arc::new(move |request: rest_fake::Request| answer.answer(request)),
        ));
        FakeTwilio {
            account_sid,
            auth_token,
            api_base,
            state,
            placed: tokio::sync::Mutex::new(placed),
            task,
        }
    }

    /// REST requests the host made, in order.
    pub fn rest_calls(&self) -> Vec<RestCall> {
        self.state.rest.lock().unwrap().clone()
    }

    /// What the callee of the next call the host places will do.
    pub fn expect_call(&self, callee: Callee) {
        self.state.callees.lock().unwrap().push_back(callee);
    }

    /// The next call the host placed, once it is over.
    pub async fn placed(&self) -> Placed {
        tokio::time::timeout(Duration::from_secs(60), self.placed.lock().await.recv())
            .await
            .expect("the host places a call")
            .expect("the fake runs")
    }

    /// POST a voice webhook (§4.1) signed with `token`; (status, body).
    pub async fn post_voice(
        &self,
        url: &str,
        params: &[(String, String)],
        token: Option<&str>,
    ) -> (u16, String) {
        let mut request = self
            .state
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "TwilioProxy/1.1")
            .body(encode_form(params));
        if let Some(token) = token {
            request = request.header("x-twilio-signature", signature(token, url, params));
        }
        let response = request.send().await.expect("the webhook answers");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// The form of an inbound call's webhook.
    pub fn voice_params(&self, call_sid: &str, from: &str, to: &str) -> Vec<(String, String)> {
        crate::support::twilio_wire::voice_params(&self.account_sid, call_sid, from, to)
    }

    /// Place an inbound call at `public_url` and play it to its end.
    pub async fn call(&self, public_url: &str, script: CallScript) -> CallResult {
        let call_sid = sid("CA");
        let url = format!("{public_url}/twilio/voice");
        let params = self.voice_params(&call_sid, &script.from, &script.to);
        let (status, twiml) = self.post_voice(&url, &params, Some(&self.auth_token)).await;
        assert_eq!(status, 200, "the voice webhook: {twiml}");
        let mut result = CallResult::new(&call_sid, &twiml);
        let Some((stream_url, parameters)) = stream_of(&twiml) else {
            return result;
        };
        let (control_tx, control) = mpsc::unbounded_channel();
        self.state
            .calls
            .lock()
            .unwrap()
            .insert(call_sid.clone(), control_tx);
        self.state
            .stream(
                &stream_url,
                &parameters,
                &call_sid,
                script,
                control,
                &mut result,
            )
            .await;
        self.state.calls.lock().unwrap().remove(&call_sid);
        result
    }
}

impl State {
    /// Open the media stream and play the call (§0.3).
    async fn stream(
        &self,
        url: &str,
        parameters: &[(String, String)],
        call_sid: &str,
        script: CallScript,
        control: mpsc::UnboundedReceiver<Control>,
        result: &mut CallResult,
    ) {
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("user-agent", "Twilio.TmeWs/1.0".parse().unwrap());
        if script.sign_upgrade {
            let sig = hmac_sha1_b64(&self.auth_token, url);
            request
                .headers_mut()
                .insert("x-twilio-signature", sig.parse().unwrap());
        }
        match &self.tls {
            None => {
                let (ws, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .expect("the media stream opens");
                self.play(ws, parameters, call_sid, script, control, result)
                    .await
            }
            Some(config) => {
                let port = request.uri().port_u16().unwrap_or(443);
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let name = rustls::pki_types::ServerName::IpAddress(
                    std::net::IpAddr::from([127, 0, 0, 1]).into(),
                );
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .expect("TLS to the public listener");
                let (ws, _) = tokio_tungstenite::client_async(request, tls)
                    .await
                    .expect("the media stream opens");
                self.play(ws, parameters, call_sid, script, control, result)
                    .await
            }
        }
    }

    /// Play the call on its open stream.
    async fn play<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut ws: tokio_tungstenite::WebSocketStream<S>,
        parameters: &[(String, String)],
        call_sid: &str,
        mut script: CallScript,
        mut control: mpsc::UnboundedReceiver<Control>,
        result: &mut CallResult,
    ) {
        let mut msgs = StreamMessages::new(&self.account_sid, call_sid);
        ws.send(Message::text(msgs.connected())).await.unwrap();
        ws.send(Message::text(msgs.start(parameters)))
            .await
            .unwrap();

        let started = Instant::now();
        let mut speaker = Speaker::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut chunk = 0u64;
        let mut digits: VecDeque<(Duration, char)> = script.digits.iter().copied().collect();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = started.elapsed();
                    // 20 ms of the caller, as Twilio sends it.
                    let mut gone = false;
                    for _ in 0..script.frames_per_tick {
                        let from = chunk as usize * 160;
                        let frame: Vec<u8> = (from..from + 160)
                            .map(|i| ulaw_encode(script.speech.get(i).copied().unwrap_or(0)))
                            .collect();
                        chunk += 1;
                        let media = msgs.media(chunk, &frame);
                        gone |= ws.send(Message::text(media)).await.is_err();
                    }
                    if gone {
                        break;
                    }
                    if let Some((_, n)) = script.garbage.filter(|(at, _)| now >= *at) {
                        script.garbage = None;
                        for i in 0..n {
                            let bad = if i % 2 == 0 {
                                "{not json".to_string()
                            } else {
                                json!({"event": "media", "streamSid": msgs.stream_sid,
                                       "media": {"payload": "***not base64***"}}).to_string()
                            };
                            let _ = ws.send(Message::text(bad)).await;
                        }
                    }
                    // 20 ms of the speaker; marks passed are echoed.
                    for name in speaker.play(160, &mut result.heard) {
                        result.marks_echoed += 1;
                        let _ = ws.send(Message::text(msgs.mark(&name))).await;
                    }
                    while digits.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, digit) = digits.pop_front().unwrap();
                        let _ = ws.send(Message::text(msgs.dtmf(digit))).await;
                    }
                    if script.hangup_after.is_some_and(|h| now >= h) {
                        let _ = ws.send(Message::text(msgs.stop())).await;
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
                    Some(Ok(Message::Text(text))) => {
                        for name in on_server_frame(&text, &msgs.stream_sid, &mut speaker, result) {
                            result.marks_echoed += 1;
                            let _ = ws.send(Message::text(msgs.mark(&name))).await;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        result.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        result.ending = closed(&mut control);
                        break;
                    }
                    Some(Ok(Message::Binary(_))) => result.violations.push("a binary frame".into()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        result.ending = closed(&mut control);
                        break;
                    }
                },
                Some(c) = control.recv() => {
                    let _ = ws.send(Message::text(msgs.stop())).await;
                    let _ = ws.close(None).await;
                    result.ending = c.ending();
                    break;
                }
            }
        }
    }
}

impl Control {
    fn ending(self) -> Ending {
        match self {
            Control::Completed | Control::Canceled => Ending::RestCompleted,
            Control::Redirected(twiml) => Ending::RestRedirected(twiml),
        }
    }
}

/// The ending of a stream the host closed: what its REST request said, when one came first
/// (the host closes once Twilio has answered it, and both may be waiting at once).
fn closed(control: &mut mpsc::UnboundedReceiver<Control>) -> Ending {
    control
        .try_recv()
        .map_or(Ending::HostClosed, Control::ending)
}

/// One frame from the host (§4.4, "our server → Twilio"); marks to echo at once.
fn on_server_frame(
    text: &str,
    stream_sid: &str,
    speaker: &mut Speaker,
    result: &mut CallResult,
) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        result.violations.push(format!("not JSON: {text}"));
        return Vec::new();
    };
    if v["streamSid"] != stream_sid {
        result.violations.push(format!("wrong streamSid: {text}"));
    }
    match v["event"].as_str() {
        Some("media") => {
            result.media_received += 1;
            match v["media"]["payload"].as_str().map(|p| B64.decode(p)) {
                Some(Ok(audio)) if !audio.is_empty() && !audio.starts_with(b"RIFF") => {
                    speaker.audio(audio);
                }
                _ => result.violations.push(format!("bad media payload: {text}")),
            }
            Vec::new()
        }
        Some("mark") => {
            match v["mark"]["name"].as_str() {
                Some(name) => speaker.mark(name),
                None => result
                    .violations
                    .push(format!("mark without a name: {text}")),
            }
            Vec::new()
        }
        Some("clear") => {
            result.clears += 1;
            speaker.clear()
        }
        _ => {
            result.violations.push(format!("unknown event: {text}"));
            Vec::new()
        }
    }
}

impl State {
    fn answer(self: &Arc<Self>, request: rest_fake::Request) -> (&'static str, Value) {
        let call = RestCall {
            path: request.path.clone(),
            form: url::form_urlencoded::parse(&request.body)
                .into_owned()
                .collect(),
        };
        self.rest.lock().unwrap().push(call.clone());
        let basic = format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.account_sid, self.auth_token))
        );
        if request.authorization != basic {
            return (
                "401 Unauthorized",
                json!({"code": 20003, "message": "Authenticate"}),
            );
        }
        let calls = format!("/2010-04-01/Accounts/{}/Calls", self.account_sid);
        let Some(rest) = request.path.strip_prefix(&calls) else {
            return not_found();
        };
        if rest == ".json" {
            return self.create(&call);
        }
        let Some(call_sid) = rest.strip_prefix('/').and_then(|p| p.strip_suffix(".json")) else {
            return not_found();
        };
        let Some(tx) = self.calls.lock().unwrap().get(call_sid).cloned() else {
            return not_found();
        };
        let control = match (call.param("Status"), call.param("Twiml")) {
            (Some("completed"), _) => Control::Completed,
            (Some("canceled"), _) => Control::Canceled,
            (_, Some(twiml)) => Control::Redirected(twiml.to_string()),
            _ => {
                return (
                    "400 Bad Request",
                    json!({"code": 21218, "message": "Invalid call update"}),
                );
            }
        };
        let _ = tx.send(control);
        ("200 OK", json!({"sid": call_sid, "status": "in-progress"}))
    }

    /// `POST …/Calls.json`: queue the call and play its callee.
    fn create(self: &Arc<Self>, call: &RestCall) -> (&'static str, Value) {
        let (Some(to), Some(from), Some(_)) =
            (call.param("To"), call.param("From"), call.param("Twiml"))
        else {
            return (
                "400 Bad Request",
                json!({"code": 21201, "message": "To, From and Twiml are required here"}),
            );
        };
        let sid = sid("CA");
        let reply = json!({
            "sid": sid, "status": "queued", "direction": "outbound-api", "to": to, "from": from,
            "uri": format!("/2010-04-01/Accounts/{}/Calls/{sid}.json", self.account_sid),
        });
        let callee = self
            .callees
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Callee::NoAnswer);
        let (control_tx, control) = mpsc::unbounded_channel();
        self.calls.lock().unwrap().insert(sid.clone(), control_tx);
        tokio::spawn(self.clone().play_callee(sid, call.clone(), callee, control));
        ("201 Created", reply)
    }

    /// The callee of a call the host placed, with the status callbacks it subscribed to.
    async fn play_callee(
        self: Arc<Self>,
        sid: String,
        call: RestCall,
        callee: Callee,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut placed = Placed {
            to: call.param("To").unwrap_or_default().to_string(),
            from: call.param("From").unwrap_or_default().to_string(),
            statuses: Vec::new(),
            call: None,
        };
        let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
        self.status(&call, &sid, "initiated", "queued", &mut placed)
            .await;
        pause(100).await;
        self.status(&call, &sid, "ringing", "ringing", &mut placed)
            .await;
        let last = match callee {
            Callee::Busy => "busy",
            Callee::NoAnswer => "no-answer",
            Callee::Fails => "failed",
            Callee::RingsOn => {
                match tokio::time::timeout(Duration::from_secs(30), control.recv()).await {
                    Ok(Some(Control::Canceled | Control::Completed)) => "canceled",
                    _ => "no-answer",
                }
            }
            Callee::Answers(script) => {
                pause(200).await;
                self.status(&call, &sid, "answered", "in-progress", &mut placed)
                    .await;
                let twiml = call.param("Twiml").unwrap_or_default();
                let (url, parameters) = stream_of(twiml).expect("the TwiML connects a stream");
                let mut result = CallResult::new(&sid, twiml);
                self.stream(&url, &parameters, &sid, script, control, &mut result)
                    .await;
                placed.call = Some(result);
                "completed"
            }
        };
        self.status(&call, &sid, "completed", last, &mut placed)
            .await;
        self.calls.lock().unwrap().remove(&sid);
        let _ = self.placed.send(placed);
    }

    /// A signed status callback, if the call subscribed to `event`.
    async fn status(
        &self,
        call: &RestCall,
        sid: &str,
        event: &str,
        status: &str,
        placed: &mut Placed,
    ) {
        let subscribed = call
            .form
            .iter()
            .any(|(n, v)| n == "StatusCallbackEvent" && v == event);
        let Some(url) = call.param("StatusCallback").filter(|_| subscribed) else {
            return;
        };
        placed.statuses.push(status.to_string());
        let params = form(&[
            ("AccountSid", &self.account_sid),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", sid),
            ("CallStatus", status),
            ("CallbackSource", "call-progress-events"),
            ("Direction", "outbound-api"),
            ("From", call.param("From").unwrap_or_default()),
            ("SequenceNumber", &placed.statuses.len().to_string()),
            ("To", call.param("To").unwrap_or_default()),
        ]);
        let _ = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "x-twilio-signature",
                signature(&self.auth_token, url, &params),
            )
            .body(encode_form(&params))
            .send()
            .await;
    }
}

fn not_found() -> (&'static str, Value) {
    (
        "404 Not Found",
        json!({"code": 20404, "message": "The requested resource was not found"}),
    )
}
