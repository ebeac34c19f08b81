//! Vonage: a phone call to a Vonage number reaches an agent without SIP. Vonage asks the
//! answer webhook for an NCCO; we check its signature (a JWT carrying the payload's hash),
//! route the `to` number, run the agent's `on-start` and answer with an NCCO that connects the
//! call to our media socket (or a spoken refusal). The socket brings a one-time token back in
//! its first message, and the call runs on it as a [`StreamLeg`] of 16 kHz linear PCM.
//! Hang-up and transfer go through the Voice REST API with a JWT the application signs.
//!
//! Vonage does not sign the socket's upgrade; the one-time token from our NCCO is the check.

pub mod frames;
mod jwt;
mod ncco;
mod outbound;
mod rest;
pub mod signature;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::pending::{Pending, PendingCalls};
use super::placing::PlacingCalls;
use super::stream::{StreamLeg, setup};
use super::websocket::{self, ServerSocket};
use super::{headers_for_agent, param, socket_url};
use crate::call::inbound::{self, Offer};
use crate::call::leg::{LegFacts, Progress};
use crate::call::{CallDeps, LegFormat};
use crate::model::ModelSession;
use frames::{Connected, VonageFraming};
use rest::{Application, CallControl};
use signature::Refusal;

/// The `[bridges.vonage]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VonageConfig {
    pub application_id: String,
    /// The application's private key: the path of its PEM file (RS256 tokens for the REST API).
    pub private_key: PathBuf,
    /// Signs the webhooks Vonage sends.
    pub signature_secret: String,
    /// Vonage's REST API (a fake in tests).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The account's numbers outbound calls may come from (E.164); the first is the default.
    #[serde(default)]
    pub numbers: Vec<String>,
}

fn default_api_base() -> String {
    "https://api.nexmo.com".into()
}

/// How long a call the agent accepted waits for Vonage to open its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(30);
/// How long an opened socket may take to send `websocket:connected`.
const CONNECTED_WAIT: Duration = Duration::from_secs(10);
/// The event statuses after which a call waiting for its socket will not get one.
const ENDED: [&str; 8] = [
    "completed",
    "failed",
    "rejected",
    "unanswered",
    "busy",
    "timeout",
    "cancelled",
    "disconnected",
];

pub struct VonageBridge {
    app: Arc<Application>,
    signature_secret: String,
    /// Where Vonage reaches us (`https://host[:port][/prefix]`).
    public_url: String,
    calls: Arc<CallDeps>,
    /// Calls answered with our NCCO whose socket has not connected yet.
    pending: Arc<PendingCalls>,
    /// Calls we placed, until they are answered or not.
    placing: Arc<PlacingCalls<outbound::Answer>>,
    numbers: Vec<String>,
    http: reqwest::Client,
}

impl VonageBridge {
    /// The account's numbers calls may come from; the first is the default.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }

    /// The bridge for `config`; fails when the private key cannot be read or used.
    pub fn new(
        config: &VonageConfig,
        public_url: &str,
        calls: Arc<CallDeps>,
    ) -> anyhow::Result<Arc<VonageBridge>> {
        let path = &config.private_key;
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("[bridges.vonage] private-key = {path:?}"))?;
        let key = jwt::PrivateKey::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("[bridges.vonage] private-key = {path:?}: {e}"))?;
        Ok(Arc::new(VonageBridge {
            app: Arc::new(Application {
                api_base: config.api_base.clone(),
                application_id: config.application_id.clone(),
                key,
            }),
            signature_secret: config.signature_secret.clone(),
            public_url: public_url.trim_end_matches('/').to_string(),
            calls,
            pending: Arc::default(),
            placing: Arc::default(),
            numbers: config.numbers.clone(),
            http: reqwest::Client::new(),
        }))
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/vonage/answer", get(answer).post(answer))
            .route("/vonage/event", post(event))
            .route("/vonage/media", get(media))
            .with_state(self.clone())
    }

    /// Where Vonage opens media sockets (`wss://` for an `https://` public URL).
    fn socket_url(&self) -> String {
        socket_url(&self.public_url, "/vonage/media")
    }

    fn control(&self, uuid: String) -> CallControl {
        CallControl {
            app: self.app.clone(),
            uuid,
            http: self.http.clone(),
        }
    }

    fn facts(&self, remote: String) -> LegFacts {
        LegFacts {
            transport: "vonage".into(),
            codec: Some(FORMAT.name()),
            remote,
        }
    }

    /// The leg of an answered outbound call, for `model`.
    fn leg(
        &self,
        socket: ServerSocket,
        control: CallControl,
        remote: String,
        model: &ModelSession,
    ) -> StreamLeg<CallControl, VonageFraming> {
        StreamLeg::start(
            socket,
            VonageFraming,
            control,
            self.facts(remote),
            model.input_format.sample_rate(),
            self.calls.config.media_timeout(),
        )
    }

    /// Check a webhook's signature over `payload`: the answer to give when it fails.
    fn refusal(&self, headers: &HeaderMap, payload: &[u8]) -> Option<Response> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let now = i64::try_from(rest::unix_now()).unwrap_or(i64::MAX);
        match signature::verify(
            &self.signature_secret,
            &self.app.application_id,
            authorization,
            payload,
            now,
        ) {
            Ok(()) => None,
            Err(Refusal::Missing) => {
                tracing::warn!("refused an unsigned Vonage webhook");
                let why = "a signed webhook is required (Authorization: Bearer)\n";
                Some((StatusCode::UNAUTHORIZED, why).into_response())
            }
            Err(Refusal::Bad(why)) => {
                tracing::warn!(%why, "refused a Vonage webhook with a bad signature");
                Some((StatusCode::FORBIDDEN, "bad webhook signature\n").into_response())
            }
        }
    }
}

fn ncco(document: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, why).into_response()
}

/// A POST webhook's JSON fields (strings as they are, other values as JSON text).
fn json_fields(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the webhook body is not JSON: {e}\n"))?;
    let Value::Object(fields) = value else {
        return Err("the webhook body is not a JSON object\n".into());
    };
    Ok(fields
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(s) => (name, s),
            other => (name, other.to_string()),
        })
        .collect())
}

/// `GET` or `POST /vonage/answer`: an incoming call asks for its NCCO.
async fn answer(
    State(bridge): State<Arc<VonageBridge>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default();
    let payload = if method == Method::GET {
        signature::query_payload(query).into_bytes()
    } else {
        body.to_vec()
    };
    if let Some(refused) = bridge.refusal(&headers, &payload) {
        return refused;
    }
    let fields: Vec<(String, String)> = if method == Method::GET {
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    } else {
        match json_fields(&body) {
            Ok(fields) => fields,
            Err(why) => return bad_request(why),
        }
    };
    let (Some(uuid), Some(to)) = (param(&fields, "uuid"), param(&fields, "to")) else {
        return bad_request("uuid and to are required\n".into());
    };
    let call_id = bridge.calls.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id, vonage_uuid = %uuid);
    let caller = param(&fields, "from").unwrap_or_default().to_string();
    let offer = Offer {
        caller: caller.clone(),
        callee: to.to_string(),
        transport: "vonage".into(),
        headers: headers_for_agent(&fields),
        leg_call_id: uuid.to_string(),
        metadata: String::new(),
    };
    let uuid = uuid.to_string();
    async move {
        let started = match inbound::offer(&bridge.calls, call_id, offer) {
            Ok(routed) => routed.start().await,
            Err(refused) => Err(refused),
        };
        let ringing = match started {
            Ok(ringing) => ringing,
            // A busy agent says so; any other refusal says the number cannot take the call.
            Err(refused) => return ncco(ncco::refuse(matches!(refused.code, 486 | 600))),
        };
        let token = bridge.pending.hold(
            Pending {
                ringing,
                leg_call_id: uuid,
                caller,
            },
            SOCKET_WAIT,
            "Vonage did not open the media socket",
        );
        ncco(ncco::connect_socket(
            &bridge.socket_url(),
            &token,
            &format!("{}/vonage/event", bridge.public_url),
        ))
    }
    .instrument(span)
    .await
}

/// `POST /vonage/event`: Vonage reports on the call and on our socket's leg, signed like the
/// answer webhook. A call that ends, or a socket that fails, before the socket connected ends
/// the waiting call with Vonage's words; later events show in the socket itself.
async fn event(
    State(bridge): State<Arc<VonageBridge>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Some(refused) = bridge.refusal(&headers, &body) {
        return refused;
    }
    let event: Value = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return bad_request(format!("the event is not JSON: {e}\n")),
    };
    let status = event["status"].as_str().unwrap_or_default();
    tracing::debug!(status, uuid = %event["uuid"], "Vonage event");
    // A call we placed: its event URL names it.
    let placed = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "call")
        .map(|(_, token)| token.into_owned());
    if let Some(token) = placed {
        if let Some(step) = outbound::step(status) {
            bridge.placing.step(&token, step);
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    if ENDED.contains(&status) {
        // The socket leg's events carry our headers; the call's carry its uuid.
        let waiting = event["headers"]["token"]
            .as_str()
            .and_then(|token| bridge.pending.take(token))
            .or_else(|| {
                event["uuid"]
                    .as_str()
                    .and_then(|uuid| bridge.pending.take_leg(uuid))
            });
        if let Some(p) = waiting {
            tracing::warn!(
                status,
                "Vonage ended a call before its media socket connected"
            );
            p.ringing.refuse(
                502,
                &format!("Vonage reports {status} before the media socket connected"),
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /vonage/media`: the media socket of a call answered with our NCCO.
async fn media(State(bridge): State<Arc<VonageBridge>>, request: Request) -> Response {
    websocket::upgrade(request, move |socket| bridge.run_socket(socket))
}

/// Close a socket that cannot carry a call, saying why.
async fn refuse_socket(socket: ServerSocket, why: &str) {
    websocket::refuse(socket, "vonage", why).await;
}

impl VonageBridge {
    async fn run_socket(self: Arc<Self>, mut socket: ServerSocket) {
        // The socket's first message is its start.
        let connected = setup::read_start(&mut socket, CONNECTED_WAIT, |frame| {
            frames::connected(frame).map(Some)
        })
        .await;
        let connected = match connected {
            Ok(connected) => connected,
            Err(why) => return refuse_socket(socket, &why).await,
        };
        let token = connected.token.clone().unwrap_or_default();
        if self.placing.is_placing(&token) {
            // A call we placed: the answer its ringing waits for.
            self.placing
                .step(&token, Progress::Answered((socket, connected)));
            return;
        }
        let Some(pending) = self.pending.take(&token) else {
            return refuse_socket(socket, "no call waits for this socket's token").await;
        };
        let span = tracing::info_span!(
            "call",
            call_id = %pending.ringing.call_id(),
            vonage_uuid = %pending.leg_call_id
        );
        self.answer_call(socket, connected, pending)
            .instrument(span)
            .await;
    }

    /// Connect the model and run the call on its socket.
    async fn answer_call(&self, socket: ServerSocket, connected: Connected, pending: Pending) {
        if let Err(why) = check_socket(&connected) {
            pending.ringing.refuse(488, &why);
            return refuse_socket(socket, &why).await;
        }
        setup::answer(
            pending.ringing,
            socket,
            VonageFraming,
            self.control(pending.leg_call_id),
            self.facts(pending.caller),
            FORMAT,
            self.calls.config.media_timeout(),
        )
        .await;
    }
}

/// The socket's audio: 16 kHz linear PCM, as our NCCO asks.
const FORMAT: LegFormat = LegFormat::Pcm(frames::RATE);

/// A socket fits a call when it carries the audio our NCCO asked for.
fn check_socket(connected: &Connected) -> Result<(), String> {
    if frames::is_l16_16k(&connected.content_type) {
        Ok(())
    } else {
        Err(format!(
            "the socket carries {}, not {}",
            connected.content_type,
            frames::CONTENT_TYPE
        ))
    }
}
