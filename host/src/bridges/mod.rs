//! Legs that are not SIP + RTP, and the public listener that carriers reach them on. A bridge
//! sits on top like `api`: it takes a call in through [`crate::call::inbound`] and runs it on a
//! leg of its own behind [`crate::call::leg::Leg`]; the call logic is the same.
//!
//! The public listener (`[http.public]`) serves only what carriers must reach — signed webhooks
//! and media sockets — on its own address, never the control API.

pub mod stream;
pub mod telnyx;
pub mod tls;
pub mod twilio;
pub mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::call::{CallDeps, PlaceError, PlaceRequest};
use crate::sip::SipError;
use telnyx::{TelnyxBridge, TelnyxConfig};
use tls::{TlsFiles, TlsListener};
use twilio::{TwilioBridge, TwilioConfig};

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

/// `[bridges]`: a carrier without credentials is off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BridgesConfig {
    pub twilio: Option<TwilioConfig>,
    pub telnyx: Option<TelnyxConfig>,
}

impl BridgesConfig {
    /// The carriers configured, by section name.
    pub fn configured(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.twilio.is_some() {
            names.push("twilio");
        }
        if self.telnyx.is_some() {
            names.push("telnyx");
        }
        names
    }
}

/// Largest webhook body we read (Twilio's forms are a few KiB).
pub(super) const MAX_BODY: usize = 64 * 1024;

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

/// The WebSocket URL of `path` on the public listener: `wss://` for an `https://` public URL,
/// `ws://` behind plain HTTP.
fn socket_url(public_url: &str, path: &str) -> String {
    let base = public_url
        .trim_end_matches('/')
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    format!("{base}{path}")
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
}

impl Bridges {
    /// The bridges with credentials; none without `[http.public]` (the configuration refuses a
    /// bridge without it).
    pub fn new(
        public: Option<&PublicConfig>,
        config: &BridgesConfig,
        calls: Arc<CallDeps>,
    ) -> Bridges {
        let Some(public) = public else {
            return Bridges {
                twilio: None,
                telnyx: None,
            };
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
                Some(TelnyxBridge::new(config, &public.public_url, calls))
            }
            None => {
                tracing::info!("Telnyx bridge off: no [bridges.telnyx] credentials");
                None
            }
        };
        Bridges { twilio, telnyx }
    }

    /// Whether `via` names a bridge rather than a SIP trunk (one namespace for both).
    pub fn has(&self, via: &str) -> bool {
        via == "twilio" && self.twilio.is_some()
    }

    /// Place a call through the bridge `via` (one [`Bridges::has`]).
    pub async fn place(&self, via: &str, request: PlaceRequest) -> Result<String, PlaceError> {
        match (via, &self.twilio) {
            ("twilio", Some(twilio)) => twilio.place(request).await,
            _ => Err(PlaceError::Target(SipError::UnknownTrunk(via.to_string()))),
        }
    }

    /// The routes of every bridge that is on.
    fn router(&self) -> Router {
        let mut router = Router::new();
        if let Some(twilio) = &self.twilio {
            router = router.merge(twilio.routes());
        }
        if let Some(telnyx) = &self.telnyx {
            router = router.merge(telnyx.routes());
        }
        router
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
    }
}

/// Start the public listener for `bridges`.
pub async fn serve(public: &PublicConfig, bridges: &Bridges) -> anyhow::Result<PublicServer> {
    check_public_url(&public.public_url)?;
    let tls = public.tls()?;
    let listener = tokio::net::TcpListener::bind(public.listen)
        .await
        .with_context(|| format!("cannot listen for carriers on {}", public.listen))?;
    let addr = listener.local_addr()?;
    let app = bridges.router();
    let task = match &tls {
        Some(files) => {
            let listener = TlsListener::new(listener, files.clone())
                .context("[http.public] tls-cert / tls-key")?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "public listener stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "public listener stopped");
            }
        }),
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
