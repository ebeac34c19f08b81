//! Legs that are not SIP + RTP, and the public listener that carriers reach them on. A bridge
//! sits on top like `api`: it takes a call in through [`crate::call::inbound`] and runs it on a
//! leg of its own behind [`crate::call::leg::Leg`]; the call logic is the same.
//!
//! The public listener (`[http.public]`) serves only what carriers must reach — signed webhooks
//! and media sockets — on its own address, never the control API.

pub mod openai_sip;
pub mod pending;
pub mod placing;
pub mod stream;
pub mod telnyx;
pub mod tls;
pub mod twilio;
pub mod vonage;
pub mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::call::{CallDeps, PlaceError, PlaceRequest};
use crate::http_server;
use crate::sip::SipError;
use openai_sip::{OpenAiSipBridge, OpenAiSipConfig};
pub use pending::one_time_token;
use telnyx::{TelnyxBridge, TelnyxConfig};
use tls::{TlsFiles, TlsListener};
use twilio::{TwilioBridge, TwilioConfig};
use vonage::{VonageBridge, VonageConfig};

/// `[http.public]`: where carriers reach the bridges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublicConfig {
    pub listen: SocketAddr,
    /// The address carriers use, as they sign their requests (`https://agents.example.com`,
    /// with a path prefix if a reverse proxy adds one).
    pub public_url: String,
    /// TLS on the listener itself (PEM files, reloaded when they change or on SIGHUP); without
    /// them the listener speaks plain HTTP, for a reverse proxy that ends TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections open at once (a media stream holds one for its call); one more is closed
    /// at once.
    #[serde(default = "default_public_connections")]
    pub max_connections: usize,
}

fn default_public_connections() -> usize {
    4096
}

impl PublicConfig {
    fn tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => anyhow::bail!("[http.public] tls-cert and tls-key go together"),
        }
    }
}

/// `[bridges]`: a carrier without credentials is off. (OpenAI's SIP connector has a table of
/// its own, `[openai-sip]`, as its users know it from OpenAI's side.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BridgesConfig {
    pub twilio: Option<TwilioConfig>,
    pub telnyx: Option<TelnyxConfig>,
    pub vonage: Option<VonageConfig>,
}

impl BridgesConfig {
    /// The carriers with credentials, by table name (`bridges.twilio`, ...).
    pub fn configured(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.twilio.is_some() {
            names.push("bridges.twilio");
        }
        if self.telnyx.is_some() {
            names.push("bridges.telnyx");
        }
        if self.vonage.is_some() {
            names.push("bridges.vonage");
        }
        names
    }
}

/// Largest webhook body we read (Twilio's forms and Vonage's JSON are a few KiB).
pub(super) const MAX_BODY: usize = 64 * 1024;

/// How long a carrier's REST request may take before the action counts as failed.
pub(crate) const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// A carrier's REST answer: its JSON body on 2xx (null when it has none), else its status and
/// the start of its body.
pub(crate) async fn rest_outcome(
    carrier: &str,
    response: reqwest::Response,
) -> Result<serde_json::Value, String> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(serde_json::from_str(&text).unwrap_or_default());
    }
    Err(format!(
        "{carrier} REST answered {status}: {}",
        text.chars().take(300).collect::<String>()
    ))
}

/// The value of the first field `name` of a webhook.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The WebSocket URL at `path` under the public URL (`wss://` for `https://`), where carriers
/// open media sockets.
pub(crate) fn socket_url(public_url: &str, path: &str) -> String {
    let base = public_url
        .trim_end_matches('/')
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{base}{path}")
}

/// The SIP headers a carrier forwards from a SIP-originated call (`SipHeader_X-…`, as Twilio
/// and Vonage both name them), for the agent.
pub(crate) fn headers_for_agent(params: &[(String, String)]) -> Vec<(String, String)> {
    agent_headers(
        params
            .iter()
            .filter_map(|(n, v)| Some((n.strip_prefix("SipHeader_")?.to_string(), v.clone()))),
    )
}

/// The headers of a call that reach the agent: `X-` headers only, at most 64.
pub(crate) fn agent_headers(
    headers: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-"))
        .take(64)
        .collect()
}

/// The running public listener.
pub struct PublicServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PublicServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_public_url(url: &str) -> anyhow::Result<()> {
    let parsed =
        url::Url::parse(url).with_context(|| format!("[http.public] public-url = {url:?}"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "https" | "http") && parsed.host().is_some(),
        "[http.public] public-url = {url:?}: an http(s) URL with a host is required"
    );
    anyhow::ensure!(
        parsed.query().is_none() && parsed.fragment().is_none(),
        "[http.public] public-url = {url:?}: no query or fragment"
    );
    Ok(())
}

/// The configured bridges.
pub struct Bridges {
    pub twilio: Option<Arc<TwilioBridge>>,
    pub telnyx: Option<Arc<TelnyxBridge>>,
    pub vonage: Option<Arc<VonageBridge>>,
    pub openai_sip: Option<Arc<OpenAiSipBridge>>,
}

impl Bridges {
    /// The bridges with credentials (the carriers in `config`, and OpenAI's SIP connector when
    /// `openai_sip` is set); none without `[http.public]` (the configuration refuses a bridge
    /// without it). Fails when a bridge's credentials cannot be loaded.
    pub fn new(
        public: Option<&PublicConfig>,
        config: &BridgesConfig,
        openai_sip: Option<&OpenAiSipConfig>,
        calls: Arc<CallDeps>,
    ) -> anyhow::Result<Bridges> {
        let Some(public) = public else {
            return Ok(Bridges {
                twilio: None,
                telnyx: None,
                vonage: None,
                openai_sip: None,
            });
        };
        let twilio = match &config.twilio {
            Some(config) => {
                tracing::info!("Twilio bridge on at {}/twilio/voice", public.public_url);
                Some(TwilioBridge::new(config, &public.public_url, calls.clone()))
            }
            None => {
                tracing::info!("Twilio bridge off: no [bridges.twilio] credentials");
                None
            }
        };
        let telnyx = match &config.telnyx {
            Some(config) => {
                tracing::info!("Telnyx bridge on at {}/telnyx/webhook", public.public_url);
                Some(TelnyxBridge::new(config, &public.public_url, calls.clone()))
            }
            None => {
                tracing::info!("Telnyx bridge off: no [bridges.telnyx] credentials");
                None
            }
        };
        let vonage = match &config.vonage {
            Some(config) => {
                tracing::info!("Vonage bridge on at {}/vonage/answer", public.public_url);
                Some(VonageBridge::new(
                    config,
                    &public.public_url,
                    calls.clone(),
                )?)
            }
            None => {
                tracing::info!("Vonage bridge off: no [bridges.vonage] credentials");
                None
            }
        };
        let openai_sip = match openai_sip {
            Some(config) => {
                let trunk = config.project_id.as_deref().map_or_else(
                    || "the project's SIP address".to_string(),
                    |p| format!("sip:{p}@sip.api.openai.com;transport=tls"),
                );
                tracing::info!(
                    "OpenAI SIP connector on at {}/openai/webhook (point the trunk at {trunk})",
                    public.public_url
                );
                Some(OpenAiSipBridge::new(config, calls)?)
            }
            None => {
                tracing::info!("OpenAI SIP connector off: no [openai-sip] credentials");
                None
            }
        };
        Ok(Bridges {
            twilio,
            telnyx,
            vonage,
            openai_sip,
        })
    }

    /// Whether `via` names a bridge rather than a SIP trunk (one namespace for both).
    pub fn has(&self, via: &str) -> bool {
        self.caller_ids(via).is_some()
    }

    /// The caller ids calls through the bridge `via` may use, when it is one that is on.
    pub fn caller_ids(&self, via: &str) -> Option<&[String]> {
        match via {
            "twilio" => self.twilio.as_ref().map(|b| b.numbers()),
            "telnyx" => self.telnyx.as_ref().map(|b| b.numbers()),
            "vonage" => self.vonage.as_ref().map(|b| b.numbers()),
            _ => None,
        }
    }

    /// Place a call through the bridge `via` (one [`Bridges::has`]).
    pub async fn place(&self, via: &str, request: PlaceRequest) -> Result<String, PlaceError> {
        match via {
            "twilio" if let Some(twilio) = &self.twilio => twilio.place(request).await,
            "telnyx" if let Some(telnyx) = &self.telnyx => telnyx.place(request).await,
            "vonage" if let Some(vonage) = &self.vonage => vonage.place(request).await,
            _ => Err(PlaceError::Target(SipError::UnknownTrunk(via.to_string()))),
        }
    }

    /// The routes of every bridge that is on.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        if let Some(twilio) = &self.twilio {
            router = router.merge(twilio.routes());
        }
        if let Some(telnyx) = &self.telnyx {
            router = router.merge(telnyx.routes());
        }
        if let Some(vonage) = &self.vonage {
            router = router.merge(vonage.routes());
        }
        if let Some(openai_sip) = &self.openai_sip {
            router = router.merge(openai_sip.routes());
        }
        router
    }
}

/// Media frames are small and due now: none waits for Nagle's algorithm.
pub(crate) fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a carrier connection");
    }
}

/// Start the public listener with `routes`: the bridges' ([`Bridges::router`]) and whatever
/// else pages and carriers must reach (web calls), never the control API.
pub async fn serve(public: &PublicConfig, routes: Router) -> anyhow::Result<PublicServer> {
    check_public_url(&public.public_url)?;
    let tls = public.tls()?;
    let listener = tokio::net::TcpListener::bind(public.listen)
        .await
        .with_context(|| format!("cannot listen for carriers on {}", public.listen))?;
    let addr = listener.local_addr()?;
    let app = routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") });
    let limits = http_server::Limits {
        connections: public.max_connections,
        ..http_server::Limits::default()
    };
    let task = match &tls {
        Some(files) => {
            let listener = TlsListener::new(listener, files.clone())
                .context("[http.public] tls-cert / tls-key")?;
            tokio::spawn(http_server::serve(listener, app, limits))
        }
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, no_delay);
            tokio::spawn(http_server::serve(listener, app, limits))
        }
    };
    tracing::info!(%addr, public_url = %public.public_url, tls = tls.is_some(), "public listener for carriers");
    Ok(PublicServer { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        assert!(check_public_url("https://agents.example.com").is_ok());
        assert!(check_public_url("http://127.0.0.1:8443/switchboard").is_ok());
        assert!(check_public_url("wss://agents.example.com").is_err());
        assert!(check_public_url("https://agents.example.com/?a=1").is_err());
        assert!(check_public_url("agents.example.com").is_err());
    }

    #[test]
    fn only_x_headers_reach_the_agent() {
        let headers = [("X-Tenant", "acme"), ("Via", "x"), ("x-lower", "1")]
            .map(|(n, v)| (n.to_string(), v.to_string()));
        let kept = agent_headers(headers);
        assert_eq!(
            kept,
            [("X-Tenant", "acme"), ("x-lower", "1")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let many = (0..100).map(|i| (format!("X-{i}"), String::new()));
        assert_eq!(agent_headers(many).len(), 64);
    }

    #[test]
    fn socket_urls() {
        assert_eq!(
            socket_url("https://agents.example.com/", "/telnyx/media"),
            "wss://agents.example.com/telnyx/media"
        );
        assert_eq!(
            socket_url("http://127.0.0.1:8443/sb", "/twilio/media"),
            "ws://127.0.0.1:8443/sb/twilio/media"
        );
    }
}
