//! Telnyx: a phone call to a Telnyx number reaches an agent through Call Control. Telnyx posts
//! the signed `call.initiated` webhook; we route the `to` number and run the agent's `on-start`,
//! then reject the call or answer it with a bidirectional media stream in RTP mode (PCMU both
//! ways). The stream brings the answer's one-time token back in its `start`, and the call runs
//! on it as a [`StreamLeg`](super::stream::StreamLeg). Hang-up and transfer are Call Control
//! commands.

pub mod frames;
mod outbound;
mod reorder;
mod rest;
pub mod signature;
mod transfers;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use tracing::Instrument;

use super::pending::{Pending, PendingCalls};
use super::placing::PlacingCalls;
use super::stream::{Carrier, StreamLeg, setup};
use super::websocket::{self, ServerSocket};
use crate::call::CallDeps;
use crate::call::inbound::{self, Offer};
use crate::call::leg::{LegFacts, Progress};
use crate::media::Codec;
use crate::model::ModelSession;
use frames::{Inbound, TelnyxFraming};
use rest::{Account, CallControl};
use signature::PublicKey;
use transfers::Transfers;

/// The `[bridges.telnyx]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TelnyxConfig {
    /// Authenticates our Call Control commands.
    pub api_key: String,
    /// The account's Ed25519 public key (base64), which signs the webhooks.
    pub public_key: PublicKey,
    /// The Call Control App whose calls the bridge takes.
    pub connection_id: String,
    /// Telnyx's REST API (a fake in tests).
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// The account's numbers outbound calls may come from (E.164); the first is the default.
    #[serde(default)]
    pub numbers: Vec<String>,
}

fn default_api_base() -> String {
    "https://api.telnyx.com".into()
}

/// How long an answered call waits for Telnyx to open its stream.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// How long an opened stream may take to send its `start`.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct TelnyxBridge {
    account: Account,
    public_key: PublicKey,
    connection_id: String,
    /// Where Telnyx reaches us (`https://host[:port][/prefix]`).
    public_url: String,
    calls: Arc<CallDeps>,
    /// Calls answered whose stream has not connected yet.
    pending: Arc<PendingCalls>,
    /// Calls we dialled, until they are answered or not.
    placing: Arc<PlacingCalls<outbound::Answer>>,
    /// Transfers waiting for the new leg's outcome.
    transfers: Arc<Transfers>,
    numbers: Vec<String>,
    http: reqwest::Client,
}

impl TelnyxBridge {
    /// The account's numbers calls may come from; the first is the default.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }

    pub fn new(config: &TelnyxConfig, public_url: &str, calls: Arc<CallDeps>) -> Arc<TelnyxBridge> {
        Arc::new(TelnyxBridge {
            account: Account {
                api_base: config.api_base.clone(),
                api_key: config.api_key.clone(),
            },
            public_key: config.public_key.clone(),
            connection_id: config.connection_id.clone(),
            public_url: public_url.trim_end_matches('/').to_string(),
            calls,
            pending: Arc::default(),
            placing: Arc::default(),
            transfers: Arc::default(),
            numbers: config.numbers.clone(),
            http: reqwest::Client::new(),
        })
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/telnyx/webhook", post(webhook))
            .route("/telnyx/media", get(media))
            .with_state(self.clone())
    }

    /// Where Telnyx opens media streams (`wss://` for an `https://` public URL).
    fn stream_url(&self) -> String {
        super::socket_url(&self.public_url, "/telnyx/media")
    }

    fn control(&self, call_control_id: String) -> CallControl {
        CallControl {
            account: self.account.clone(),
            call_control_id,
            http: self.http.clone(),
            transfers: self.transfers.clone(),
        }
    }

    /// Route an incoming call and run its agent's `on-start`; then reject the call or answer it
    /// with a stream that presents a new token.
    async fn offer(self: Arc<Self>, call_id: String, offer: Offer, control: CallControl) {
        let caller = offer.caller.clone();
        let started = match inbound::offer(&self.calls, call_id, offer) {
            Ok(routed) => routed.start().await,
            Err(refused) => Err(refused),
        };
        let ringing = match started {
            Ok(ringing) => ringing,
            Err(refused) => {
                if let Err(e) = control.reject(refused.code).await {
                    tracing::warn!(error = %e, "rejecting the call through Telnyx failed");
                }
                return;
            }
        };
        let pending = Pending {
            ringing,
            leg_call_id: control.call_control_id.clone(),
            caller,
        };
        let expired = control.clone();
        let token = self.pending.hold_then(
            pending,
            STREAM_WAIT,
            "Telnyx did not open the media stream",
            // Answered, the caller would hear silence: end the call.
            async move {
                if let Err(e) = expired.hangup().await {
                    tracing::warn!(error = %e, "hanging up through Telnyx failed");
                }
            },
        );
        if let Err(e) = control.answer(&self.stream_url(), &token).await {
            tracing::warn!(error = %e, "answering the call through Telnyx failed");
            if let Some(p) = self.pending.take(&token) {
                p.ringing
                    .refuse(502, &format!("Telnyx did not take the answer: {e}"));
            }
        }
    }

    async fn run_stream(self: Arc<Self>, mut socket: ServerSocket) {
        let start = setup::read_start(&mut socket, START_WAIT, |frame| {
            match frames::parse(frame)? {
                // Frames are not ordered: audio may overtake the start (it is not the
                // caller's yet).
                Inbound::Connected | Inbound::Media { .. } => Ok(None),
                Inbound::Start {
                    sequence_number,
                    stream_id,
                    start,
                } => Ok(Some((
                    frames::sequence(&sequence_number)?,
                    stream_id,
                    start,
                ))),
                other => Err(format!("expected connected or start, got {other:?}")),
            }
        })
        .await;
        let (sequence, stream_id, start) = match start {
            Ok(start) => start,
            Err(why) => return websocket::refuse(socket, "telnyx", &why).await,
        };
        let token = start
            .client_state
            .as_deref()
            .and_then(decode_client_state)
            .unwrap_or_default();
        if self.placing.is_placing(&token) {
            // A call we dialled: the answer its ringing waits for.
            let answer = outbound::Answer {
                socket,
                sequence,
                stream_id,
                start,
            };
            self.placing.step(&token, Progress::Answered(answer));
            return;
        }
        let Some(pending) = self.pending.take(&token) else {
            return websocket::refuse(socket, "telnyx", "no call waits for this stream's token")
                .await;
        };
        let span = tracing::info_span!(
            "call",
            call_id = %pending.ringing.call_id(),
            telnyx_call_control_id = %pending.leg_call_id,
            telnyx_stream_id = %stream_id,
        );
        self.answer(socket, sequence, start, pending)
            .instrument(span)
            .await;
    }

    /// Connect the model and run the call on its stream.
    async fn answer(
        &self,
        socket: ServerSocket,
        sequence: u64,
        start: frames::Start,
        pending: Pending,
    ) {
        let control = self.control(pending.leg_call_id);
        if let Err(why) = self.check_stream(&start, &control) {
            pending.ringing.refuse(488, why);
            if let Err(e) = control.hangup().await {
                tracing::warn!(error = %e, "hanging up through Telnyx failed");
            }
            return websocket::refuse(socket, "telnyx", why).await;
        }
        setup::answer(
            pending.ringing,
            socket,
            TelnyxFraming::after(sequence),
            control,
            self.facts(pending.caller),
            Codec::Pcmu.into(),
            self.calls.config.media_timeout(),
        )
        .await;
    }

    /// A stream fits the call it names when it is the call's, in PCMU at 8 kHz.
    fn check_stream(
        &self,
        start: &frames::Start,
        control: &CallControl,
    ) -> Result<(), &'static str> {
        if start.call_control_id != control.call_control_id {
            Err("the stream belongs to another call")
        } else if !start.media_format.is_pcmu_8k() {
            Err("the stream is not PCMU at 8 kHz")
        } else {
            Ok(())
        }
    }

    fn facts(&self, remote: String) -> LegFacts {
        LegFacts {
            transport: "telnyx".into(),
            codec: Some(Codec::Pcmu.encoding_name().to_string()),
            remote,
        }
    }

    /// The leg of an answered outbound call, for `model`.
    fn leg(
        &self,
        socket: ServerSocket,
        sequence: u64,
        control: CallControl,
        remote: String,
        model: &ModelSession,
    ) -> StreamLeg<CallControl, TelnyxFraming> {
        StreamLeg::start(
            socket,
            TelnyxFraming::after(sequence),
            control,
            self.facts(remote),
            model.input_format.sample_rate(),
            self.calls.config.media_timeout(),
        )
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refused(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// `POST /telnyx/webhook`: a Call Control event.
async fn webhook(
    State(bridge): State<Arc<TelnyxBridge>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signed = signature::verify(
        &bridge.public_key,
        header(&headers, "telnyx-signature-ed25519"),
        header(&headers, "telnyx-timestamp"),
        &body,
        now,
    );
    if let Err(why) = signed {
        tracing::warn!(%why, "refused a Telnyx webhook");
        return refused(StatusCode::FORBIDDEN, why);
    }
    let event = match serde_json::from_slice::<webhook::Webhook>(&body) {
        Ok(webhook) => webhook.data,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("not a Telnyx webhook: {e}"),
            );
        }
    };
    let payload = &event.payload;
    let sip_code = payload["sip_hangup_cause"]
        .as_str()
        .and_then(|c| c.parse().ok());
    let cause = payload["hangup_cause"].as_str();
    let token = payload["client_state"]
        .as_str()
        .and_then(decode_client_state);
    if let Some(token) = token.as_deref()
        && bridge
            .transfers
            .settle(token, &event.event_type, cause, sip_code)
    {
        return StatusCode::OK.into_response();
    }
    if let Some(token) = token.filter(|t| bridge.placing.is_placing(t)) {
        tracing::debug!(event_type = %event.event_type, ?cause, ?sip_code, "Telnyx event of a call we dialled");
        if event.event_type == "streaming.failed"
            && let Some(id) = payload["call_control_id"].as_str()
        {
            // Answered, but no audio will come: the call is still up at Telnyx.
            let control = bridge.control(id.to_string());
            tokio::spawn(async move { control.hangup().await });
        }
        if let Some(step) = outbound::step(&event.event_type, cause, sip_code) {
            bridge.placing.step(&token, step);
        }
        return StatusCode::OK.into_response();
    }
    if event.event_type != "call.initiated" {
        tracing::debug!(event_type = %event.event_type, "a Telnyx event the bridge does not act on");
        return StatusCode::OK.into_response();
    }
    let payload = match serde_json::from_value::<webhook::Payload>(event.payload) {
        Ok(payload) => payload,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("not a call.initiated: {e}"),
            );
        }
    };
    if payload.direction.as_deref() != Some("incoming") {
        // Calls we place are not taken here.
        tracing::debug!(direction = ?payload.direction, "a call.initiated the bridge does not act on");
        return StatusCode::OK.into_response();
    }
    if payload.connection_id.as_deref() != Some(bridge.connection_id.as_str()) {
        tracing::warn!(connection_id = ?payload.connection_id, "refused a call for another Call Control App");
        return refused(StatusCode::FORBIDDEN, "not this connection");
    }
    let id = payload
        .call_control_id
        .filter(|id| webhook::is_call_control_id(id));
    let (Some(id), Some(to)) = (id, payload.to) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "a call_control_id and a to are required",
        );
    };
    let call_id = bridge.calls.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id, telnyx_call_control_id = %id);
    let offer = Offer {
        caller: payload.from.unwrap_or_default(),
        callee: to,
        transport: "telnyx".into(),
        headers: super::agent_headers(
            payload
                .custom_headers
                .unwrap_or_default()
                .into_iter()
                .map(|h| (h.name, h.value)),
        ),
        leg_call_id: id.clone(),
        metadata: String::new(),
    };
    // Telnyx wants its webhook answered at once; the call goes on with commands of our own.
    let control = bridge.control(id);
    tokio::spawn(
        bridge
            .clone()
            .offer(call_id, offer, control)
            .instrument(span),
    );
    StatusCode::OK.into_response()
}

/// Our token back from a `client_state` (base64, as we gave it).
fn decode_client_state(state: &str) -> Option<String> {
    B64.decode(state)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// `GET /telnyx/media`: the media stream of a call we answered. The stream proves itself by the
/// token in its `start`.
async fn media(State(bridge): State<Arc<TelnyxBridge>>, request: Request) -> Response {
    websocket::upgrade(request, move |socket| bridge.run_stream(socket))
}
