//! OpenAI's SIP connector: a carrier sends the call to `sip:<project>@sip.api.openai.com`,
//! OpenAI answers SIP and owns the audio, and we only steer. OpenAI posts a signed
//! `realtime.call.incoming` webhook; we route the SIP `To` like any call, run the agent's
//! `on-start`, and accept the call with that session configuration (or reject it with the
//! agent's code), then attach to the call's session over the sideband socket, where the agent's
//! tools, transcripts, actions and usage flow as with any OpenAI Realtime session. The call runs
//! on an events-only leg ([`leg::ConnectorLeg`]): transfer is a REST `refer`, hang-up a REST
//! `hangup`; `realtime.call.ended` ends it.
//!
//! Deliveries are at least once: a delivery seen before (same `webhook-id`, or an incoming call
//! already taken) is answered 200 and not processed again. The webhook is answered at once, the
//! accept follows.

mod leg;
mod rest;
mod sideband;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tracing::Instrument;

use crate::call::CallDeps;
use crate::call::inbound::{self, Offer, Ringing};
use crate::call::leg::{LegEvent, LegFacts, NoPlayout};
use crate::model::openai::OpenAiProvider;
use crate::model::{OpenAiConfig, Secret};
use crate::webhooks::WebhookSecret;
use leg::{CallLink, ConnectorLeg};
use rest::{Account, CallControl};
use sideband::Relay;

/// The `[openai-sip]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenAiSipConfig {
    /// Authenticates the REST calls and the sideband socket.
    pub api_key: Secret,
    /// The project's webhook signing secret (`whsec_…`).
    pub webhook_secret: Secret,
    /// The project the SIP trunk points at (`proj_…`), for the log line that says where.
    #[serde(default)]
    pub project_id: Option<String>,
    /// OpenAI's API (a fake in tests); the sideband socket is `…/realtime` on it.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The model when the agent names none.
    #[serde(default = "default_model")]
    pub model: String,
    /// The voice when the agent names none.
    #[serde(default = "default_voice")]
    pub voice: String,
    /// How long OpenAI may take to answer an accept before the call is given up (and hung up):
    /// the caller hears nothing meanwhile.
    #[serde(default = "default_accept_timeout_ms")]
    pub accept_timeout_ms: u64,
}

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-realtime".into()
}
fn default_voice() -> String {
    "marin".into()
}
fn default_accept_timeout_ms() -> u64 {
    5_000
}

/// How many delivery and call ids are remembered for deduplication.
const REMEMBERED: usize = 10_000;

/// Ids seen, oldest forgotten first.
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    /// Whether `id` is new (and now remembered).
    fn first(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() == REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }
}

pub struct OpenAiSipBridge {
    secret: WebhookSecret,
    account: Account,
    /// Runs the sideband socket and builds the accept's session configuration.
    provider: OpenAiProvider,
    calls: Arc<CallDeps>,
    seen: Mutex<Seen>,
    /// Running calls by OpenAI's call id.
    live: Mutex<HashMap<String, CallLink>>,
}

/// An OpenAI call id goes into URL paths: letters, digits, `_` and `-` only.
fn valid_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl OpenAiSipBridge {
    pub fn new(config: &OpenAiSipConfig, calls: Arc<CallDeps>) -> anyhow::Result<Arc<Self>> {
        let secret = WebhookSecret::new(config.webhook_secret.expose())
            .map_err(|e| anyhow::anyhow!("[openai-sip] webhook-secret: {e}"))?;
        let base = config.base_url.trim_end_matches('/');
        anyhow::ensure!(
            url::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "https" | "http")),
            "[openai-sip] base-url = {base:?}: an http(s) URL is required"
        );
        let mut realtime = OpenAiConfig::new(config.api_key.clone());
        realtime.base_url = super::socket_url(base, "/realtime");
        realtime.model = config.model.clone();
        realtime.voice = config.voice.clone();
        Ok(Arc::new(OpenAiSipBridge {
            secret,
            account: Account {
                base_url: base.to_string(),
                api_key: config.api_key.clone(),
                http: reqwest::Client::new(),
                accept_timeout: Duration::from_millis(config.accept_timeout_ms),
            },
            provider: OpenAiProvider::new(realtime),
            calls,
            seen: Mutex::default(),
            live: Mutex::default(),
        }))
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/openai/webhook", post(webhook))
            .with_state(self.clone())
    }

    fn first(&self, id: String) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first(id)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallLink>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn control(&self, call_id: &str) -> CallControl {
        CallControl {
            account: self.account.clone(),
            call_id: call_id.to_string(),
        }
    }

    /// Route the call and run the agent's `on-start`, then accept or reject it at OpenAI.
    async fn incoming(self: Arc<Self>, call_id: String, offer: Offer, control: CallControl) {
        let started = match inbound::offer(&self.calls, call_id, offer) {
            Ok(routed) => routed.start().await,
            Err(refused) => Err(refused),
        };
        match started {
            Ok(ringing) => self.accept(ringing, control).await,
            Err(refused) => {
                if let Err(e) = control.reject(refused.code).await {
                    tracing::warn!(error = %e, "rejecting the call through OpenAI failed");
                }
            }
        }
    }

    /// Accept with the agent's configuration, attach the sideband and run the call.
    async fn accept(&self, ringing: Ringing, control: CallControl) {
        // Known from here on, so a `realtime.call.ended` racing the accept is not lost.
        let (link, events) = CallLink::new();
        let call_id = control.call_id.clone();
        self.live().insert(call_id.clone(), link.clone());
        self.run(ringing, control, link, events).await;
        self.live().remove(&call_id);
    }

    async fn run(
        &self,
        ringing: Ringing,
        control: CallControl,
        link: CallLink,
        events: tokio::sync::mpsc::UnboundedReceiver<LegEvent>,
    ) {
        let (settings, failure) = ringing.session_settings();
        if let Err(e) = control.accept(self.provider.call_session(&settings)).await {
            tracing::warn!(error = %e, "OpenAI did not take the accept");
            ringing.refuse(502, &format!("the accept failed: {e}"));
            // A late delivery's call is gone already; else do not leave it ringing.
            if let Err(e) = control.hangup().await {
                tracing::debug!(error = %e, "hanging up after a failed accept");
            }
            return;
        }
        // After a failed on-start the greeting is the apology.
        let greeting = settings.greeting;
        let first = match self
            .provider
            .attach(&control.call_id, greeting.as_deref())
            .await
        {
            Ok(session) => session,
            Err(e) => {
                let why = if link.is_ended() {
                    "the caller hung up before the sideband socket opened".to_string()
                } else {
                    format!("the sideband socket did not open: {e}")
                };
                tracing::warn!(%why, "the call cannot be steered");
                ringing.refuse(502, &why);
                if !link.is_ended()
                    && let Err(e) = control.hangup().await
                {
                    tracing::warn!(error = %e, "hanging up through OpenAI failed");
                }
                return;
            }
        };
        let model = Relay {
            provider: self.provider.clone(),
            call_id: control.call_id.clone(),
            link: link.clone(),
            recorder: ringing.recorder().clone(),
            greeting,
        }
        .start(first);
        let leg = ConnectorLeg {
            facts: LegFacts {
                transport: "openai-sip".into(),
                codec: None,
                remote: control.call_id.clone(),
            },
            control,
            link,
            events,
            referred: false,
            playout: NoPlayout,
        };
        ringing.run(leg, model, failure).await;
    }

    /// `realtime.call.ended`: the call is over at OpenAI.
    fn ended(&self, call_id: &str) {
        match self.live().get(call_id) {
            Some(link) => link.far_end_gone(),
            None => tracing::debug!(openai_call_id = %call_id, "ended: no running call"),
        }
    }
}

/// A webhook delivery.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

/// `data` of `realtime.call.incoming` and `realtime.call.ended`.
#[derive(Debug, Deserialize)]
struct CallData {
    call_id: String,
    #[serde(default)]
    sip_headers: Vec<SipHeader>,
}

#[derive(Debug, Deserialize)]
struct SipHeader {
    name: String,
    value: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refused(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// The first SIP header `name` (case-insensitive).
fn sip_header<'a>(headers: &'a [SipHeader], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// `POST /openai/webhook`: a signed event from OpenAI.
async fn webhook(
    State(bridge): State<Arc<OpenAiSipBridge>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let delivery = header(&headers, "webhook-id");
    let signed = bridge.secret.verify(
        delivery,
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
        &body,
        now,
    );
    if let Err(why) = signed {
        tracing::warn!(%why, "refused an OpenAI webhook");
        return refused(StatusCode::BAD_REQUEST, why);
    }
    let event = match serde_json::from_slice::<Event>(&body) {
        Ok(event) => event,
        Err(e) => return refused(StatusCode::BAD_REQUEST, format!("not an OpenAI event: {e}")),
    };
    let data = match event.kind.as_str() {
        "realtime.call.incoming" | "realtime.call.ended" => {
            match serde_json::from_value::<CallData>(event.data) {
                Ok(data) if valid_call_id(&data.call_id) => data,
                Ok(_) => return refused(StatusCode::BAD_REQUEST, "an invalid call_id"),
                Err(e) => {
                    return refused(StatusCode::BAD_REQUEST, format!("{}: {e}", event.kind));
                }
            }
        }
        other => {
            tracing::info!(event_type = %other, "an OpenAI event the connector does not act on");
            return StatusCode::OK.into_response();
        }
    };
    let delivery = delivery.unwrap_or_default();
    if !bridge.first(format!("delivery {delivery}")) {
        tracing::info!(webhook_id = %delivery, "a delivery seen before");
        return StatusCode::OK.into_response();
    }
    if event.kind == "realtime.call.ended" {
        bridge.ended(&data.call_id);
        return StatusCode::OK.into_response();
    }
    if !bridge.first(format!("call {}", data.call_id)) {
        tracing::info!(openai_call_id = %data.call_id, "an incoming call taken before");
        return StatusCode::OK.into_response();
    }
    let sip = &data.sip_headers;
    let offer = Offer {
        caller: sip_header(sip, "From").unwrap_or_default().to_string(),
        callee: sip_header(sip, "To").unwrap_or_default().to_string(),
        transport: "openai-sip".into(),
        headers: super::agent_headers(sip.iter().map(|h| (h.name.clone(), h.value.clone()))),
        leg_call_id: data.call_id.clone(),
        metadata: String::new(),
    };
    let call_id = bridge.calls.new_call_id();
    let span = tracing::info_span!("call", call_id = %call_id, openai_call_id = %data.call_id);
    let control = bridge.control(&data.call_id);
    // OpenAI connects nothing until the webhook is answered: answer now, accept after.
    tokio::spawn(
        bridge
            .clone()
            .incoming(call_id, offer, control)
            .instrument(span),
    );
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_remembered_then_forgotten_oldest_first() {
        let mut seen = Seen::default();
        assert!(seen.first("a".into()));
        assert!(!seen.first("a".into()));
        for i in 0..REMEMBERED {
            seen.first(i.to_string());
        }
        assert!(
            seen.first("a".into()),
            "forgotten after {REMEMBERED} others"
        );
        assert_eq!(seen.order.len(), REMEMBERED);
    }

    #[test]
    fn call_ids_are_path_safe() {
        assert!(valid_call_id("rtc_685343a1381c819085d44c354e1b330e"));
        assert!(!valid_call_id("rtc/../x"));
        assert!(!valid_call_id(""));
        assert!(!valid_call_id(&"a".repeat(129)));
    }

    #[test]
    fn sip_headers_by_name() {
        let headers = vec![
            SipHeader {
                name: "from".into(),
                value: "sip:+14155550100@sip.example.com".into(),
            },
            SipHeader {
                name: "X-Tenant".into(),
                value: "acme".into(),
            },
        ];
        assert_eq!(
            sip_header(&headers, "From"),
            Some("sip:+14155550100@sip.example.com")
        );
        assert_eq!(sip_header(&headers, "To"), None);
    }
}
