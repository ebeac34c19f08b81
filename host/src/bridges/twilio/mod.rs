//! Twilio: a phone call to a Twilio number reaches an agent without SIP. Twilio posts the
//! signed voice webhook; we route the `To` number, run the agent's `on-start` and answer with
//! TwiML that connects a bidirectional media stream (or `<Reject>`); the stream brings a
//! one-time token back in its `start`, and the call runs on it as a [`StreamLeg`]. Hang-up and
//! transfer go through Twilio's REST API.

pub mod frames;
mod outbound;
mod rest;
pub mod signature;
pub mod twiml;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tracing::Instrument;

use super::pending::{Pending, PendingCalls};
use super::placing::PlacingCalls;
use super::stream::StreamLeg;
use super::stream::setup;
use super::websocket::{self, ServerSocket};
use super::{headers_for_agent, param, socket_url};
use crate::call::CallDeps;
use crate::call::inbound::{self, Offer};
use crate::call::leg::{LegFacts, Progress};
use crate::call::outbound::Calling;
use crate::media::Codec;
use crate::model::ModelSession;
use frames::{Inbound, TwilioFraming};
use rest::{Account, CallControl};

/// The `[bridges.twilio]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TwilioConfig {
    pub account_sid: String,
    /// Signs the webhooks Twilio sends and authenticates our REST calls.
    pub auth_token: String,
    /// Twilio's REST API (a regional edge, or a fake in tests).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The account's numbers outbound calls may come from (E.164); the first is the default.
    #[serde(default)]
    pub numbers: Vec<String>,
}

fn default_api_base() -> String {
    "https://api.twilio.com".into()
}

/// How long a call the agent accepted waits for Twilio to open its stream.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// How long an opened stream may take to send its `start`.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct TwilioBridge {
    account: Account,
    /// Where Twilio reaches us (`https://host[:port][/prefix]`), as it signs its requests.
    public_url: String,
    calls: Arc<CallDeps>,
    /// Inbound calls answered with TwiML whose stream has not connected yet.
    pending: Arc<PendingCalls>,
    /// Stream token → the outbound call being placed (its status callbacks and its stream).
    placing: Arc<PlacingCalls<outbound::Answer>>,
    numbers: Vec<String>,
    http: reqwest::Client,
}

impl TwilioBridge {
    /// The account's numbers calls may come from; the first is the default.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }

    pub fn new(config: &TwilioConfig, public_url: &str, calls: Arc<CallDeps>) -> Arc<TwilioBridge> {
        Arc::new(TwilioBridge {
            account: Account {
                api_base: config.api_base.clone(),
                account_sid: config.account_sid.clone(),
                auth_token: config.auth_token.clone(),
            },
            public_url: public_url.trim_end_matches('/').to_string(),
            calls,
            pending: Arc::default(),
            placing: Arc::default(),
            numbers: config.numbers.clone(),
            http: reqwest::Client::new(),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/twilio/voice", post(voice))
            .route("/twilio/media", get(media))
            .route("/twilio/stream-status", post(stream_status))
            .route("/twilio/call-status/{token}", post(call_status))
            .with_state(self.clone())
    }

    /// Where Twilio opens media streams (`wss://` for an `https://` public URL).
    fn stream_url(&self) -> String {
        socket_url(&self.public_url, "/twilio/media")
    }

    /// The URL Twilio requested, as it signed it: the public URL, the path and the query.
    fn signed_url(&self, uri: &Uri) -> String {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        format!("{}{path_and_query}", self.public_url)
    }

    fn signed(&self, headers: &HeaderMap, url: &str, params: &[(String, String)]) -> bool {
        headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|sig| signature::verify(&self.account.auth_token, url, params, sig))
    }

    /// The parameters of a form Twilio posted, unless its signature does not hold.
    fn signed_form(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, BadSignature> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let url = self.signed_url(uri);
        if self.signed(headers, &url, &params) {
            return Ok(params);
        }
        tracing::warn!(%url, "refused a Twilio request with a missing or wrong signature");
        Err(BadSignature)
    }
}

/// The parameters of a form Twilio posted and signed; a request whose signature does not hold
/// is refused with 403 before a handler sees it.
struct SignedForm(Vec<(String, String)>);

impl axum::extract::FromRequest<Arc<TwilioBridge>> for SignedForm {
    type Rejection = Response;

    async fn from_request(request: Request, bridge: &Arc<TwilioBridge>) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, super::MAX_BODY)
            .await
            .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
        bridge
            .signed_form(&parts.headers, &parts.uri, &body)
            .map(SignedForm)
            .map_err(IntoResponse::into_response)
    }
}

/// A request whose `X-Twilio-Signature` does not hold: 403.
struct BadSignature;

impl IntoResponse for BadSignature {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, "bad X-Twilio-Signature\n").into_response()
    }
}

fn twiml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// `POST /twilio/voice`: an incoming call.
async fn voice(
    State(bridge): State<Arc<TwilioBridge>>,
    SignedForm(params): SignedForm,
) -> Response {
    if param(&params, "AccountSid") != Some(bridge.account.account_sid.as_str()) {
        tracing::warn!("refused a Twilio voice webhook for another account");
        return (StatusCode::FORBIDDEN, "not this account\n").into_response();
    }
    let (Some(call_sid), Some(to)) = (param(&params, "CallSid"), param(&params, "To")) else {
        return (StatusCode::BAD_REQUEST, "CallSid and To are required\n").into_response();
    };
    let call_id = bridge.calls.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id, twilio_call_sid = %call_sid);
    let caller = param(&params, "From").unwrap_or_default().to_string();
    let offer = Offer {
        caller: caller.clone(),
        callee: to.to_string(),
        transport: "twilio".into(),
        headers: headers_for_agent(&params),
        leg_call_id: call_sid.to_string(),
        metadata: String::new(),
    };
    let call_sid = call_sid.to_string();
    async move {
        let started = match inbound::offer(&bridge.calls, call_id, offer) {
            Ok(routed) => routed.start().await,
            Err(refused) => Err(refused),
        };
        let ringing = match started {
            Ok(ringing) => ringing,
            // A busy agent gets the busy signal; any other refusal the not-in-service tone.
            Err(refused) => return twiml(twiml::reject(matches!(refused.code, 486 | 600))),
        };
        let token = bridge.pending.hold(
            Pending {
                ringing,
                leg_call_id: call_sid,
                caller,
            },
            STREAM_WAIT,
            "Twilio did not open the media stream",
        );
        let base = &bridge.public_url;
        twiml(twiml::connect_stream(
            &bridge.stream_url(),
            &[("token", &token)],
            &format!("{base}/twilio/stream-status"),
        ))
    }
    .instrument(span)
    .await
}

/// `GET /twilio/media`: the media stream of a call answered with our TwiML.
async fn media(
    State(bridge): State<Arc<TwilioBridge>>,
    headers: HeaderMap,
    uri: Uri,
    request: Request,
) -> Response {
    // Signed over the stream URL we gave, nothing appended.
    let url = bridge.stream_url();
    if uri.query().is_some() || !bridge.signed(&headers, &url, &[]) {
        tracing::warn!(%url, "refused a media stream with a missing or wrong signature");
        return (StatusCode::FORBIDDEN, "bad X-Twilio-Signature\n").into_response();
    }
    websocket::upgrade(request, move |socket| bridge.run_stream(socket))
}

impl TwilioBridge {
    async fn run_stream(self: Arc<Self>, mut socket: ServerSocket) {
        let start = setup::read_start(&mut socket, START_WAIT, |frame| {
            match frames::parse(frame)? {
                Inbound::Connected => Ok(None),
                Inbound::Start { start } => Ok(Some(start)),
                other => Err(format!("expected connected or start, got {other:?}")),
            }
        })
        .await;
        let start = match start {
            Ok(start) => start,
            Err(why) => return websocket::refuse(socket, "twilio", &why).await,
        };
        let token = start
            .custom_parameters
            .get("token")
            .cloned()
            .unwrap_or_default();
        if start.account_sid != self.account.account_sid {
            return websocket::refuse(socket, "twilio", "the stream belongs to another account")
                .await;
        }
        if self.placing.is_placing(&token) {
            // An outbound call: the answer its ringing waits for.
            self.placing
                .step(&token, Progress::Answered((socket, start)));
            return;
        }
        let Some(pending) = self.pending.take(&token) else {
            return websocket::refuse(socket, "twilio", "no call waits for this stream's token")
                .await;
        };
        let span = tracing::info_span!(
            "call",
            call_id = %pending.ringing.call_id(),
            twilio_call_sid = %pending.leg_call_id
        );
        self.answer(socket, start, pending).instrument(span).await;
    }

    /// Connect the model and run the call on its stream.
    async fn answer(&self, socket: ServerSocket, start: frames::Start, pending: Pending) {
        let control = CallControl {
            account: self.account.clone(),
            call_sid: pending.leg_call_id.clone(),
            http: self.http.clone(),
        };
        let why = if start.call_sid != pending.leg_call_id {
            Some("the stream belongs to another call")
        } else if !start.media_format.is_ulaw_8k() {
            Some("the stream is not μ-law at 8 kHz")
        } else {
            None
        };
        if let Some(why) = why {
            pending.ringing.refuse(488, why);
            return websocket::refuse(socket, "twilio", why).await;
        }
        let framing = TwilioFraming {
            stream_sid: start.stream_sid,
        };
        let facts = self.facts(pending.caller);
        let timeout = self.calls.config.media_timeout();
        setup::answer(
            pending.ringing,
            socket,
            framing,
            control,
            facts,
            Codec::Pcmu.into(),
            timeout,
        )
        .await;
    }

    fn facts(&self, remote: String) -> LegFacts {
        LegFacts {
            transport: "twilio".into(),
            codec: Some(Codec::Pcmu.encoding_name().to_string()),
            remote,
        }
    }

    /// The leg of an answered call, either direction.
    fn leg(
        &self,
        socket: ServerSocket,
        start: frames::Start,
        control: CallControl,
        remote: String,
        model: &ModelSession,
    ) -> StreamLeg<CallControl, TwilioFraming> {
        StreamLeg::start(
            socket,
            TwilioFraming {
                stream_sid: start.stream_sid,
            },
            control,
            self.facts(remote),
            model.input_format.sample_rate(),
            self.calls.config.media_timeout(),
        )
    }

    /// An outbound call whose callee answered: the model, then the call on its stream.
    async fn run_answered(
        &self,
        mut calling: Calling,
        socket: ServerSocket,
        start: frames::Start,
        control: Arc<CallControl>,
    ) {
        if start.call_sid != control.call_sid || !start.media_format.is_ulaw_8k() {
            let why = "the stream does not fit the call (another call, or not μ-law at 8 kHz)";
            use crate::bridges::stream::Carrier as _;
            let _ = control.hangup().await;
            calling.fail(format!("failed: {why}"), true);
            return websocket::refuse(socket, "twilio", why).await;
        }
        let (model, failure) = calling.connect_model(Codec::Pcmu).await;
        let remote = calling.callee().to_string();
        let leg = self.leg(socket, start, (*control).clone(), remote, &model);
        calling.run(leg, model, failure).await;
    }
}

/// `POST /twilio/stream-status`: Twilio reports on a stream. An error before the stream
/// connected ends the waiting call with Twilio's words; later ones show in the stream itself.
async fn stream_status(
    State(bridge): State<Arc<TwilioBridge>>,
    SignedForm(params): SignedForm,
) -> Response {
    let event = param(&params, "StreamEvent").unwrap_or_default();
    let call_sid = param(&params, "CallSid").unwrap_or_default();
    if event == "stream-error" {
        let error = param(&params, "StreamError").unwrap_or("unknown");
        tracing::warn!(call_sid, error, "Twilio reports a media-stream error");
        if let Some(p) = bridge.pending.take_leg(call_sid) {
            p.ringing
                .refuse(502, &format!("Twilio media stream error: {error}"));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /twilio/call-status/{token}`: the progress of a call we placed.
async fn call_status(
    State(bridge): State<Arc<TwilioBridge>>,
    axum::extract::Path(token): axum::extract::Path<String>,
    SignedForm(params): SignedForm,
) -> Response {
    let Some(status) = param(&params, "CallStatus") else {
        return (StatusCode::BAD_REQUEST, "CallStatus is required\n").into_response();
    };
    let code = param(&params, "SipResponseCode").and_then(|c| c.parse().ok());
    tracing::debug!(status, ?code, "Twilio call status");
    if let Some(step) = outbound::step(status, code) {
        bridge.placing.step(&token, step);
    }
    StatusCode::NO_CONTENT.into_response()
}
