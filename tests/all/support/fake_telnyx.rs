//! A protocol-faithful fake of Telnyx on 127.0.0.1: it places calls at the host's Call Control
//! webhook, serves the Call Control commands the host answers with, and plays the media stream
//! in RTP mode as a phone would. Written from Telnyx's published references; each message says
//! where it comes from.
//!
//! - Webhook signatures (developers.telnyx.com/docs/development/sdk/python/webhooks, and the
//!   SDK's `lib/webhook_verification.py` in team-telnyx/telnyx-python): a JSON POST signed with
//!   the account's Ed25519 key, `telnyx-signature-ed25519` = base64 of the 64-byte signature
//!   over `"{telnyx-timestamp}|{raw body}"`, `telnyx-timestamp` in Unix seconds, 5 minutes of
//!   tolerance; the public key is the base64 of its 32 bytes. The fake signs on its own key
//!   with ring's Ed25519, not with the host's code.
//! - `call.initiated` (Telnyx's API definition `CallInitiated`, as generated into
//!   team-telnyx/telnyx-python `types/call_initiated.py`): `{"data": {"event_type", "id",
//!   "occurred_at", "payload": {"call_control_id", "call_leg_id", "call_session_id",
//!   "connection_id", "direction": "incoming", "from", "to", "state": "parked",
//!   "client_state": null, "connection_codecs", "offered_codecs", "start_time"}, "record_type":
//!   "event"}, "meta": {"attempt", "delivered_to"}}`. When the call is over, `call.hangup`
//!   (`hangup_cause`, `hangup_source`), which the host only acknowledges.
//! - Call Control commands (the API definition's `ActionAnswerParams`, `ActionRejectParams`,
//!   `ActionHangupParams`, `ActionTransferParams`; the answer's streaming fields from "Media
//!   Streaming over WebSockets"): `POST /v2/calls/{call_control_id}/actions/{answer|reject|
//!   hangup|transfer}`, JSON, `Authorization: Bearer <API key>`; 200 with `{"data": {"result":
//!   "ok"}}`. Errors as Telnyx's API error codes page lists them, in `{"errors": [{"code",
//!   "title", "detail"}]}`: a wrong key 401 (10009), a body that is not JSON 400 (10015), a
//!   missing parameter 422 (10004), an unknown action 404 (10005); a call that is over 422 with
//!   90018 (reference/protocols.md §4.7). `answer` opens the stream at `stream_url`, whose
//!   `start` carries the answer's `client_state`; `reject` takes a `cause` of `CALL_REJECTED`,
//!   `NOT_FOUND`, `TEMPORARILY_UNAVAILABLE` or `USER_BUSY`; `hangup` ends the call (the stream
//!   gets `stop`); `transfer` takes `to`.
//! - A transfer's new leg ("Transfer call", developers.telnyx.com/api-reference/call-commands/
//!   transfer-call: expected webhooks `call.initiated`, `call.bridged`, `call.answered` or
//!   `call.hangup`; "If the transfer is unsuccessful, a `call.hangup` webhook for the other call
//!   (Leg B) will be sent ... The original call will remain active"): its webhooks carry the
//!   command's `target_leg_client_state` as `client_state` (`ActionTransferParams`, "state to
//!   every subsequent webhook for the new leg", team-telnyx/telnyx-ruby). The fake sends
//!   `call.initiated`, then `call.answered` and `call.bridged`, or a `call.hangup` with the
//!   script's `hangup_cause` and `sip_hangup_cause` while the caller's stream goes on.
//! - Dial ("Dial", developers.telnyx.com/api-reference/call-commands/dial): `POST /v2/calls`
//!   with `connection_id`, `to`, `from` required (422, 10004, without one) and the stream asked
//!   for as on answer; 200 with `{"data": {"call_control_id", "call_leg_id", "call_session_id",
//!   "client_state", "is_alive": false, "record_type": "call"}}`. Its webhooks (to `webhook_url`,
//!   each with the dial's `client_state`): `call.initiated` (`direction: "outgoing"`), then
//!   `call.answered` and the stream, or `call.hangup` (`CallHangup`: `hangup_cause` such as
//!   `user_busy`, `timeout`, `originator_cancel`, with `sip_hangup_cause` "486", "480", "487");
//!   a `hangup` command while it rings ends it as `originator_cancel`.
//! - Stream ("Media Streaming over WebSockets",
//!   developers.telnyx.com/docs/voice/programmable-voice/media-streaming, and the AsyncAPI page
//!   developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket): text
//!   frames, snake_case, counters as strings. `connected` (`version: "1.0.0"`), `start`
//!   (`sequence_number: "1"`, `stream_id`, `start.{user_id, call_control_id, call_session_id,
//!   from, to, tags, client_state, media_format: {encoding: "PCMU", sample_rate: 8000,
//!   channels: 1}}`), `media` every 20 ms (`media.{track: "inbound", chunk, timestamp,
//!   payload}`, the base64 RTP payload without its header), `dtmf` (`dtmf.digit`,
//!   `occurred_at`), echoed `mark`s, `stop` (`stop.{user_id, call_control_id}`). One
//!   `sequence_number` counts every frame after `connected`; as the order is not guaranteed,
//!   the fake sends every 25th media frame behind the next one. From the host, in RTP mode:
//!   `media` (`media.payload`, PCMU, 20 ms to 30 s of it), `mark` (echoed once the audio before
//!   it has played, at once when none is queued), `clear` (drops the queued audio and returns
//!   the pending marks).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::support::callee;
use crate::support::model_audio::ulaw_encode;
use crate::support::rest_fake;
use crate::support::speaker::Speaker;

/// One Call Control command the host sent.
#[derive(Debug, Clone)]
pub struct Command {
    pub call_control_id: String,
    /// `answer`, `reject`, `hangup`, `transfer`.
    pub action: String,
    pub body: Value,
}

/// What a command tells a call.
#[derive(Debug)]
enum Control {
    Answer(Value),
    Reject(String),
    Hangup,
    /// The command's body.
    Transfer(Value),
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
    /// What the target of a transfer does.
    pub transferee: Transferee,
}

/// The new leg Telnyx dials for a `transfer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transferee {
    /// Answers and is bridged to the caller.
    Answers,
    /// Hangs up before answering, with this `hangup_cause` and `sip_hangup_cause`.
    Fails {
        cause: &'static str,
        sip: &'static str,
    },
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
            transferee: Transferee::Answers,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The host rejected the call with this cause.
    Rejected(String),
    /// The host neither answered nor rejected.
    Unanswered,
    /// The host closed the stream.
    HostClosed,
    /// The caller hung up (`hangup_after`).
    CallerHungUp,
    /// The host hung up with the `hangup` command.
    HungUpByCommand,
    /// The call hit the script's limit.
    Limit,
}

/// What one call did.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub call_control_id: String,
    /// The body of the host's `answer` command.
    pub answer: Option<Value>,
    /// What the caller heard, 8 kHz, one sample per 1/8 ms since `start` (silence where
    /// nothing played).
    pub heard: Vec<i16>,
    pub media_received: usize,
    pub marks_echoed: usize,
    pub clears: usize,
    /// Media frames the fake sent behind the next one.
    pub reordered: usize,
    /// Where the host transferred the call.
    pub transferred_to: Option<String>,
    /// What the host did that breaks the protocol.
    pub violations: Vec<String>,
    pub ending: Ending,
    /// The close frame's code and reason, when the host sent one.
    pub close: Option<(u16, String)>,
}

/// What the callee of a call the host places does.
pub type Callee = callee::Callee<CallScript>;

/// A call the host dialled, played to its end.
#[derive(Debug)]
pub struct Dialled {
    /// The dial request's body.
    pub body: Value,
    /// The call, when the callee answered.
    pub call: Option<CallResult>,
    /// The `call.hangup` that ended it.
    pub hangup_cause: &'static str,
}

/// What a `call.hangup` says.
struct Hangup {
    cause: &'static str,
    source: &'static str,
    /// The SIP cause Telnyx gives, when there is one.
    sip: Option<&'static str>,
    client_state: Value,
}

/// A dial, with the command channel of its call.
struct Dial {
    call_control_id: String,
    body: Value,
    control: mpsc::UnboundedReceiver<Control>,
}

impl CallResult {
    fn new(call_control_id: &str) -> CallResult {
        CallResult {
            call_control_id: call_control_id.to_string(),
            answer: None,
            heard: Vec::new(),
            media_received: 0,
            marks_echoed: 0,
            clears: 0,
            reordered: 0,
            transferred_to: None,
            violations: Vec::new(),
            ending: Ending::Unanswered,
            close: None,
        }
    }
}

/// What the fake's tasks share.
struct State {
    api_key: String,
    /// Call control id → the call's command channel, while the call lasts.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    commands: Mutex<Vec<Command>>,
    /// Dials not yet played.
    dials: Mutex<VecDeque<Dial>>,
}

pub struct FakeTelnyx {
    /// For `[bridges.telnyx] api-key`.
    pub api_key: String,
    /// The account's public key, base64, for `[bridges.telnyx] public-key`.
    pub public_key: String,
    /// The Call Control App, for `[bridges.telnyx] connection-id`.
    pub connection_id: String,
    /// `http://127.0.0.1:<port>`, for `[bridges.telnyx] api-base`.
    pub api_base: String,
    keys: Ed25519KeyPair,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelnyx {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `secs` since the epoch as ISO 8601 (UTC), as Telnyx writes `occurred_at`.
fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000000Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A fresh id of the kind Telnyx uses (`v3:…` for call control ids, UUID-like otherwise).
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn error(status: &'static str, code: &str, title: &str, detail: &str) -> (&'static str, Value) {
    (
        status,
        json!({"errors": [{"code": code, "title": title, "detail": detail}]}),
    )
}

impl FakeTelnyx {
    pub async fn start() -> FakeTelnyx {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}", listener.local_addr().unwrap());
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).unwrap();
        let keys = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public_key = B64.encode(keys.public_key().as_ref());
        let api_key = format!("KEY{}", unique(""));
        let state = Arc::new(State {
            api_key: api_key.clone(),
            calls: Mutex::new(HashMap::new()),
            commands: Mutex::new(Vec::new()),
            dials: Mutex::new(VecDeque::new()),
        });
        let answer = state.clone();
        let task = tokio::spawn(rest_fake::serve(
            listener,
            Arc::new(move |request: rest_fake::Request| answer.command(request)),
        ));
        FakeTelnyx {
            api_key,
            public_key,
            connection_id: "1494404757140276705".into(),
            api_base,
            keys,
            state,
            task,
        }
    }

    /// Commands the host sent, in order.
    pub fn commands(&self) -> Vec<Command> {
        self.state.commands.lock().unwrap().clone()
    }

    /// `telnyx-signature-ed25519` for `body` delivered at `timestamp`.
    pub fn sign(&self, timestamp: u64, body: &str) -> String {
        B64.encode(self.keys.sign(format!("{timestamp}|{body}").as_bytes()))
    }

    /// POST `body` to `url` with the signature headers `signed` gives (timestamp, signature);
    /// (status, body).
    pub async fn post_webhook(
        &self,
        url: &str,
        body: &str,
        signed: Option<(String, String)>,
    ) -> (u16, String) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some((timestamp, signature)) = signed {
            request = request
                .header("telnyx-timestamp", timestamp)
                .header("telnyx-signature-ed25519", signature);
        }
        let response = request.send().await.expect("the webhook answers");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// POST `body` signed now, as Telnyx delivers.
    pub async fn deliver(&self, url: &str, body: &str) -> (u16, String) {
        let now = now_secs();
        let signed = (now.to_string(), self.sign(now, body));
        self.post_webhook(url, body, Some(signed)).await
    }

    /// The `call.initiated` webhook of an incoming call.
    pub fn call_initiated(&self, call_control_id: &str, from: &str, to: &str, url: &str) -> String {
        self.event(
            "call.initiated",
            json!({"call_control_id": call_control_id, "direction": "incoming", "from": from,
                   "to": to, "client_state": null}),
            url,
        )
    }

    /// A Call Control event of `event_type` delivered to `url`, with `fields` over the payload
    /// every call event has.
    fn event(&self, event_type: &str, fields: Value, url: &str) -> String {
        let now = iso8601(now_secs());
        let from = fields["from"].clone();
        let mut payload = json!({
            "call_leg_id": unique(""),
            "call_session_id": unique(""),
            "caller_id_name": from,
            "calling_party_type": "pstn",
            "connection_codecs": "PCMU,PCMA",
            "connection_id": self.connection_id,
            "offered_codecs": "PCMU",
            "start_time": now,
            "state": if event_type == "call.initiated" { "parked" } else { "answered" },
        });
        for (k, v) in fields.as_object().unwrap() {
            payload[k] = v.clone();
        }
        json!({
            "data": {
                "event_type": event_type,
                "id": unique(""),
                "occurred_at": now,
                "payload": payload,
                "record_type": "event",
            },
            "meta": {"attempt": 1, "delivered_to": url},
        })
        .to_string()
    }

    /// `call.hangup`, after a call ended.
    fn call_hangup(&self, call_control_id: &str, ending: Hangup, url: &str) -> String {
        self.event(
            "call.hangup",
            json!({"call_control_id": call_control_id, "client_state": ending.client_state,
                   "hangup_cause": ending.cause, "hangup_source": ending.source,
                   "sip_hangup_cause": ending.sip, "end_time": iso8601(now_secs())}),
            url,
        )
    }

    /// A fresh call control id.
    pub fn call_control_id() -> String {
        unique("v3:")
    }

    /// Place an incoming call at `public_url` and play it to its end.
    pub async fn call(&self, public_url: &str, script: CallScript) -> CallResult {
        let id = FakeTelnyx::call_control_id();
        let (tx, mut control) = mpsc::unbounded_channel();
        self.state.calls.lock().unwrap().insert(id.clone(), tx);
        let url = format!("{public_url}/telnyx/webhook");
        let body = self.call_initiated(&id, &script.from, &script.to, &url);
        let (status, reply) = self.deliver(&url, &body).await;
        assert_eq!(status, 200, "the webhook: {reply}");
        let mut result = CallResult::new(&id);
        let (cause, source) =
            match tokio::time::timeout(Duration::from_secs(20), control.recv()).await {
                Ok(Some(Control::Answer(answer))) => {
                    result.answer = Some(answer.clone());
                    self.stream(&url, &answer, &id, &script, &mut control, &mut result)
                        .await;
                    match result.ending {
                        Ending::CallerHungUp => ("normal_clearing", "caller"),
                        _ => ("normal_clearing", "callee"),
                    }
                }
                Ok(Some(Control::Reject(cause))) => {
                    result.ending = Ending::Rejected(cause);
                    ("call_rejected", "callee")
                }
                Ok(Some(other)) => {
                    result
                        .violations
                        .push(format!("{other:?} before an answer"));
                    ("normal_clearing", "callee")
                }
                _ => ("timeout", "caller"),
            };
        self.state.calls.lock().unwrap().remove(&id);
        let ending = Hangup {
            cause,
            source,
            sip: None,
            client_state: Value::Null,
        };
        let hangup = self.call_hangup(&id, ending, &url);
        let _ = self.deliver(&url, &hangup).await;
        result
    }

    /// The next call the host dialled (waiting for it up to 10 s), played as `callee` does.
    pub async fn dialled(&self, callee: Callee) -> Dialled {
        let deadline = Instant::now() + Duration::from_secs(10);
        let Dial {
            call_control_id: id,
            body,
            mut control,
        } = loop {
            if let Some(dial) = self.state.dials.lock().unwrap().pop_front() {
                break dial;
            }
            assert!(Instant::now() < deadline, "the host dialled no call");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let url = body["webhook_url"].as_str().unwrap_or_default().to_string();
        let client_state = body["client_state"].clone();
        let fields = |extra: Value| {
            let mut fields = json!({"call_control_id": id, "direction": "outgoing",
                "from": body["from"], "to": body["to"], "client_state": client_state});
            for (k, v) in extra.as_object().unwrap() {
                fields[k] = v.clone();
            }
            fields
        };
        let initiated = self.event("call.initiated", fields(json!({})), &url);
        let (status, reply) = self.deliver(&url, &initiated).await;
        assert_eq!(status, 200, "call.initiated: {reply}");
        let mut call = None;
        let (cause, source, sip) = match callee {
            Callee::Answers(script) => {
                let answered = self.event("call.answered", fields(json!({})), &url);
                self.deliver(&url, &answered).await;
                let mut result = CallResult::new(&id);
                self.stream(&url, &body, &id, &script, &mut control, &mut result)
                    .await;
                let source = match result.ending {
                    Ending::CallerHungUp => "callee",
                    _ => "caller",
                };
                call = Some(result);
                ("normal_clearing", source, Some("200"))
            }
            Callee::Busy => ("user_busy", "callee", Some("486")),
            Callee::NoAnswer => ("timeout", "callee", Some("480")),
            Callee::RingsOn => {
                match tokio::time::timeout(Duration::from_secs(20), control.recv()).await {
                    Ok(Some(Control::Hangup)) => ("originator_cancel", "caller", Some("487")),
                    other => panic!("expected a hang-up while it rang, got {other:?}"),
                }
            }
        };
        self.state.calls.lock().unwrap().remove(&id);
        let ending = Hangup {
            cause,
            source,
            sip,
            client_state: body["client_state"].clone(),
        };
        let hangup = self.call_hangup(&id, ending, &url);
        self.deliver(&url, &hangup).await;
        Dialled {
            body,
            call,
            hangup_cause: cause,
        }
    }

    /// The new leg of a `transfer`, told by webhooks that carry the command's
    /// `target_leg_client_state`: `call.initiated`, then `call.answered` and `call.bridged` (the
    /// host then ends its side of the stream), or `call.hangup` (the caller's leg stays up).
    async fn transfer_leg(&self, url: &str, transfer: &Value, transferee: Transferee) {
        let id = FakeTelnyx::call_control_id();
        let fields = json!({"call_control_id": id, "direction": "outgoing",
            "to": transfer["to"], "client_state": transfer["target_leg_client_state"]});
        self.deliver(url, &self.event("call.initiated", fields.clone(), url))
            .await;
        match transferee {
            Transferee::Answers => {
                for event_type in ["call.answered", "call.bridged"] {
                    self.deliver(url, &self.event(event_type, fields.clone(), url))
                        .await;
                }
            }
            Transferee::Fails { cause, sip } => {
                let ending = Hangup {
                    cause,
                    source: "callee",
                    sip: Some(sip),
                    client_state: transfer["target_leg_client_state"].clone(),
                };
                self.deliver(url, &self.call_hangup(&id, ending, url)).await;
            }
        }
    }

    /// Open the answer's stream and play the call like a phone.
    async fn stream(
        &self,
        webhook_url: &str,
        answer: &Value,
        id: &str,
        script: &CallScript,
        control: &mut mpsc::UnboundedReceiver<Control>,
        result: &mut CallResult,
    ) {
        if answer["stream_bidirectional_mode"] != "rtp"
            || answer["stream_bidirectional_codec"] != "PCMU"
        {
            result
                .violations
                .push(format!("not an RTP stream with PCMU both ways: {answer}"));
        }
        let Some(url) = answer["stream_url"].as_str() else {
            result.violations.push(format!("no stream_url: {answer}"));
            return;
        };
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the media stream opens");
        let stream_id = unique("");
        let user_id = unique("");
        let connected = json!({"event": "connected", "version": "1.0.0"});
        ws.send(Message::text(connected.to_string())).await.unwrap();
        let mut seq = 1u64;
        let start = json!({
            "event": "start", "sequence_number": seq.to_string(),
            "start": {
                "user_id": user_id, "call_control_id": id, "call_session_id": unique(""),
                "from": script.from, "to": script.to, "tags": [],
                "client_state": answer["client_state"],
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
            "stream_id": stream_id,
        });
        ws.send(Message::text(start.to_string())).await.unwrap();

        let started = Instant::now();
        let mut speaker = Speaker::default();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut chunk = 0u64;
        let mut behind: Option<String> = None;
        let mut digits: VecDeque<(Duration, char)> = script.digits.iter().copied().collect();
        let stop = |seq: u64| {
            json!({"event": "stop", "sequence_number": seq.to_string(),
                   "stop": {"user_id": user_id, "call_control_id": id},
                   "stream_id": stream_id})
            .to_string()
        };
        let mark = |seq: u64, name: &str| {
            json!({"event": "mark", "stream_id": stream_id, "sequence_number": seq.to_string(),
                   "mark": {"name": name}})
            .to_string()
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = started.elapsed();
                    // 20 ms of the caller.
                    let from = chunk as usize * 160;
                    let frame: Vec<u8> = (from..from + 160)
                        .map(|i| ulaw_encode(script.speech.get(i).copied().unwrap_or(0)))
                        .collect();
                    chunk += 1;
                    seq += 1;
                    let media = json!({
                        "event": "media", "sequence_number": seq.to_string(),
                        "media": {"track": "inbound", "chunk": chunk.to_string(),
                                  "timestamp": ((chunk - 1) * 20).to_string(),
                                  "payload": B64.encode(&frame)},
                        "stream_id": stream_id,
                    }).to_string();
                    if chunk.is_multiple_of(25) {
                        // This one goes out behind the next.
                        behind = Some(media);
                    } else {
                        if ws.send(Message::text(media)).await.is_err() {
                            // The host closed the stream between two reads of ours.
                            result.ending = Ending::HostClosed;
                            break;
                        }
                        if let Some(late) = behind.take() {
                            result.reordered += 1;
                            let _ = ws.send(Message::text(late)).await;
                        }
                    }
                    // 20 ms of the speaker; marks passed are echoed.
                    for name in speaker.play(160, &mut result.heard) {
                        seq += 1;
                        result.marks_echoed += 1;
                        let _ = ws.send(Message::text(mark(seq, &name))).await;
                    }
                    while digits.front().is_some_and(|(at, _)| *at <= now) {
                        let (_, digit) = digits.pop_front().unwrap();
                        seq += 1;
                        let dtmf = json!({"event": "dtmf", "stream_id": stream_id,
                                          "occurred_at": iso8601(now_secs()),
                                          "sequence_number": seq.to_string(),
                                          "dtmf": {"digit": digit.to_string()}});
                        let _ = ws.send(Message::text(dtmf.to_string())).await;
                    }
                    if script.hangup_after.is_some_and(|h| now >= h) {
                        seq += 1;
                        let _ = ws.send(Message::text(stop(seq))).await;
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
                        for name in on_host_frame(&text, &mut speaker, result) {
                            seq += 1;
                            result.marks_echoed += 1;
                            let _ = ws.send(Message::text(mark(seq, &name))).await;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        result.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                        result.ending = Ending::HostClosed;
                        break;
                    }
                    Some(Ok(Message::Binary(_))) => result.violations.push("a binary frame".into()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        result.ending = Ending::HostClosed;
                        break;
                    }
                },
                Some(c) = control.recv() => match c {
                    Control::Hangup => {
                        seq += 1;
                        let _ = ws.send(Message::text(stop(seq))).await;
                        let _ = ws.close(None).await;
                        result.ending = Ending::HungUpByCommand;
                        break;
                    }
                    Control::Transfer(transfer) => {
                        result.transferred_to = transfer["to"].as_str().map(str::to_string);
                        self.transfer_leg(webhook_url, &transfer, script.transferee).await;
                    }
                    other => result.violations.push(format!("{other:?} on an answered call")),
                }
            }
        }
    }
}

/// One frame from the host (bidirectional RTP mode); marks to echo at once.
fn on_host_frame(text: &str, speaker: &mut Speaker, result: &mut CallResult) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        result.violations.push(format!("not JSON: {text}"));
        return Vec::new();
    };
    match v["event"].as_str() {
        Some("media") => {
            result.media_received += 1;
            match v["media"]["payload"].as_str().map(|p| B64.decode(p)) {
                // PCMU at 8 bytes a ms: 20 ms to 30 s a message.
                Some(Ok(audio)) if (160..=240_000).contains(&audio.len()) => speaker.audio(audio),
                _ => result.violations.push(format!(
                    "bad media payload (not base64 PCMU of 20 ms to 30 s): {}",
                    &text[..text.len().min(200)]
                )),
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
            // Marks with nothing queued before them come back at once.
            speaker.play(0, &mut result.heard)
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
    /// `POST /v2/calls`: a new call to `to`, whose callee a test plays with
    /// [`FakeTelnyx::dialled`].
    fn dial(&self, request: &rest_fake::Request) -> (&'static str, Value) {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return error(
                "400 Bad Request",
                "10015",
                "Bad Request",
                "The request failed because it was not well-formed.",
            );
        };
        for name in ["connection_id", "to", "from"] {
            if !body[name].is_string() {
                return error(
                    "422 Unprocessable Entity",
                    "10004",
                    "Missing required parameter",
                    &format!("The '{name}' parameter is required."),
                );
            }
        }
        let id = FakeTelnyx::call_control_id();
        self.commands.lock().unwrap().push(Command {
            call_control_id: id.clone(),
            action: "dial".into(),
            body: body.clone(),
        });
        let (tx, control) = mpsc::unbounded_channel();
        self.calls.lock().unwrap().insert(id.clone(), tx);
        let reply = json!({"data": {"call_control_id": id, "call_leg_id": unique(""),
            "call_session_id": unique(""), "client_state": body["client_state"],
            "is_alive": false, "record_type": "call"}});
        self.dials.lock().unwrap().push_back(Dial {
            call_control_id: id,
            body,
            control,
        });
        ("200 OK", reply)
    }

    /// A Call Control command.
    fn command(&self, request: rest_fake::Request) -> (&'static str, Value) {
        if request.authorization != format!("Bearer {}", self.api_key) {
            return error(
                "401 Unauthorized",
                "10009",
                "Authentication failed",
                "The required authentication headers were either invalid or not included in the request.",
            );
        }
        if request.path == "/v2/calls" && request.method == "POST" {
            return self.dial(&request);
        }
        let parts: Option<(&str, &str)> = request
            .path
            .strip_prefix("/v2/calls/")
            .and_then(|rest| rest.split_once("/actions/"));
        let (Some((id, action)), "POST") = (parts, request.method.as_str()) else {
            return error(
                "404 Not Found",
                "10005",
                "Resource not found",
                "The requested resource or URL could not be found.",
            );
        };
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return error(
                "400 Bad Request",
                "10015",
                "Bad Request",
                "The request failed because it was not well-formed.",
            );
        };
        self.commands.lock().unwrap().push(Command {
            call_control_id: id.to_string(),
            action: action.to_string(),
            body: body.clone(),
        });
        let missing = |name: &str| {
            error(
                "422 Unprocessable Entity",
                "10004",
                "Missing required parameter",
                &format!("The '{name}' parameter is required."),
            )
        };
        let control = match action {
            "answer" => Control::Answer(body),
            "reject" => match body["cause"].as_str() {
                Some(
                    cause @ ("CALL_REJECTED"
                    | "NOT_FOUND"
                    | "TEMPORARILY_UNAVAILABLE"
                    | "USER_BUSY"),
                ) => Control::Reject(cause.to_string()),
                _ => return missing("cause"),
            },
            "hangup" => Control::Hangup,
            "transfer" => match body["to"].as_str() {
                Some(_) => Control::Transfer(body),
                None => return missing("to"),
            },
            _ => {
                return error(
                    "404 Not Found",
                    "10005",
                    "Resource not found",
                    "The requested resource or URL could not be found.",
                );
            }
        };
        let Some(call) = self.calls.lock().unwrap().get(id).cloned() else {
            return error(
                "422 Unprocessable Entity",
                "90018",
                "Call has already ended",
                "This call is no longer active and can't receive commands.",
            );
        };
        let _ = call.send(control);
        ("200 OK", json!({"data": {"result": "ok"}}))
    }
}
