//! The control plane over HTTP (axum): calls (place, list, detail, recording, hang up,
//! transfer), agents (live versions, routes, reload history, reload), registrations, usage,
//! the running configuration with secrets masked, server-sent events, `/health`, `/ready`,
//! Prometheus `/metrics`, the OpenAPI document, and the dashboard page at `/`. Sits on top: it
//! drives `call` and reads `store`, `plugins` and `sip`; nothing below imports it.
//!
//! Every `/v1` route and `/metrics` need `Authorization: Bearer <token>` when `[http] tokens`
//! or `[[http.api-tokens]]` are set (the dashboard's static files do not: they hold no data);
//! without tokens the server refuses to listen anywhere but loopback. Configuration writes
//! (`/v1/config/...`, see `crate::live`) also need write scope and stay within the caller's
//! write limit (`auth`).

mod agents;
mod auth;
mod calls;
mod campaigns;
mod config_live;
mod dashboard;
mod error;
pub mod metrics;
mod openapi;
mod status;
mod stream;
mod validate;
mod webhooks;
mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::call::CallDeps;
use crate::http_server;
pub use crate::logs::LogFeed;
use crate::plugins::Registry;
use crate::sip::{RegistrationStatus, SipEndpoint};
use crate::store::CallStore;
pub use auth::{ApiToken, Caller, Scope};
pub use calls::Placer;
pub use error::ApiError;
pub use metrics::Metrics;
pub use status::masked_config;

/// The `[http]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpConfig {
    /// Where the API listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bearer tokens accepted by the API, with full rights. With no tokens here nor in
    /// `api-tokens`: no authentication, loopback only.
    pub tokens: Vec<String>,
    /// `[[http.api-tokens]]`: named tokens with a scope (`read` or `write`).
    pub api_tokens: Vec<ApiToken>,
    /// Development switch: without tokens, let loopback clients change the configuration.
    pub allow_loopback_writes: bool,
    /// Configuration writes one caller (a token, or loopback) may make per minute, in bursts of
    /// up to as many; beyond it 429 with `Retry-After`. 0 turns the limit off.
    pub config_writes_per_minute: u32,
    /// `[http.public]`: the carriers' listener (webhooks and media streams), never the API.
    pub public: Option<crate::bridges::PublicConfig>,
    /// API connections open at once (SSE clients included); one more is closed at once.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            tokens: Vec::new(),
            api_tokens: Vec::new(),
            allow_loopback_writes: false,
            config_writes_per_minute: default_config_writes_per_minute(),
            public: None,
            max_connections: http_server::Limits::default().connections,
        }
    }
}

fn default_config_writes_per_minute() -> u32 {
    60
}

impl HttpConfig {
    /// Whether any bearer token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty() || !self.api_tokens.is_empty()
    }
}

/// Why the API did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "[http] listen = {0} is not a loopback address and no [http] tokens are set: set \
         tokens = [\"...\"] (sent as Authorization: Bearer) or listen on 127.0.0.1"
    )]
    NoTokens(SocketAddr),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the handlers read and drive.
pub struct ApiContext {
    pub calls: Arc<CallDeps>,
    pub sip: Arc<SipEndpoint>,
    pub store: Arc<dyn CallStore>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub logs: LogFeed,
    /// Registration state changes as the SIP endpoint reports them.
    pub registrations: broadcast::Sender<RegistrationStatus>,
    /// Places outbound calls (through a trunk or a carrier's bridge).
    pub placer: Arc<calls::Placer>,
    /// Outbound campaigns.
    pub campaigns: crate::campaigns::Campaigns,
    /// Browser calls, when `[webrtc]` turns them on.
    pub webrtc: Option<Arc<crate::webrtc::WebCalls>>,
    /// The running configuration, secrets already masked.
    pub config: Value,
    /// Routes and agent settings changed live, over the file's values.
    pub live: Arc<crate::live::LiveConfig>,
    /// The outgoing webhooks and their counters.
    pub outbox: Arc<crate::outbox::Outbox>,
    /// The webhooks' deliveries.
    pub queue: Arc<dyn crate::store::webhooks::WebhookQueue>,
    /// The node's drain: `/ready` reports it, `POST /v1/admin/drain` starts it.
    pub drain: crate::node::Drain,
    /// This node's id (`[node] id`).
    pub node: String,
}

/// The handlers' state: the context plus what the API keeps of its own.
pub struct Shared {
    api: ApiContext,
    /// Configuration writes per caller.
    write_limit: auth::WriteLimit,
}

impl std::ops::Deref for Shared {
    type Target = ApiContext;
    fn deref(&self) -> &ApiContext {
        &self.api
    }
}

type Ctx = Arc<Shared>;

/// The running server.
pub struct ApiServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// The bound address (the real port when the configuration asked for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(&self) {
        self.task.abort();
    }
}

/// Bind `config.listen` and serve the API on its own task.
pub async fn serve(config: &HttpConfig, ctx: ApiContext) -> Result<ApiServer, StartError> {
    check_exposure(config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared = Shared {
        write_limit: auth::WriteLimit::new(config.config_writes_per_minute),
        api: ctx,
    };
    let credentials = auth::Credentials::new(
        &config.tokens,
        &config.api_tokens,
        config.allow_loopback_writes,
    );
    let app = router(Arc::new(shared), Arc::new(credentials));
    let limits = http_server::Limits {
        connections: config.max_connections,
        ..http_server::Limits::default()
    };
    let task = tokio::spawn(http_server::serve(listener, app, limits));
    tracing::info!(%addr, "HTTP API listening");
    Ok(ApiServer { addr, task })
}

/// Refuses an unauthenticated API on a non-loopback address.
pub fn check_exposure(config: &HttpConfig) -> Result<(), StartError> {
    if !config.has_tokens() && !config.listen.ip().is_loopback() {
        return Err(StartError::NoTokens(config.listen));
    }
    Ok(())
}

/// A campaign's contact list or a do-not-call file may be large (100 000 rows of CSV).
const MAX_CAMPAIGN_BODY: usize = 16 << 20;

fn router(ctx: Ctx, credentials: Arc<auth::Credentials>) -> Router {
    let protected = Router::new()
        .route("/v1/calls", post(calls::place).get(calls::list))
        .route("/v1/calls/{id}", get(calls::detail))
        .route("/v1/calls/{id}/recording", get(calls::recording))
        .route("/v1/calls/{id}/hangup", post(calls::hangup))
        .route("/v1/calls/{id}/transfer", post(calls::transfer))
        .route(
            "/v1/campaigns",
            post(campaigns::create)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_CAMPAIGN_BODY))
                .get(campaigns::list),
        )
        .route("/v1/campaigns/{id}", get(campaigns::detail))
        .route("/v1/campaigns/{id}/contacts", get(campaigns::contacts))
        .route("/v1/campaigns/{id}/results.csv", get(campaigns::export))
        .route("/v1/campaigns/{id}/{action}", post(campaigns::control))
        .route(
            "/v1/dnc",
            get(campaigns::dnc_list)
                .post(campaigns::dnc_add)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_CAMPAIGN_BODY)),
        )
        .route("/v1/dnc/{number}", delete(campaigns::dnc_remove))
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/reload", post(agents::reload))
        .route("/v1/registrations", get(status::registrations))
        .route("/v1/admin/drain", post(status::drain))
        .route("/v1/usage", get(status::usage))
        .route("/v1/config", get(status::config))
        .route("/v1/config/effective", get(config_live::effective))
        .route("/v1/config/audit", get(config_live::audit))
        .route(
            "/v1/config/routes/{pattern}",
            put(config_live::put_route).delete(config_live::delete_route),
        )
        .route(
            "/v1/config/default-agent",
            put(config_live::put_default_agent),
        )
        .route(
            // `settings` or `secrets`.
            "/v1/config/agents/{name}/{kind}/{key}",
            put(config_live::put_agent_value).delete(config_live::delete_agent_value),
        )
        .route(
            // `accounts`, `trunks` or `webhooks`.
            "/v1/config/{table}/{name}",
            put(config_live::put_sip_entry).delete(config_live::delete_sip_entry),
        )
        .route(
            "/v1/config/model/{key}",
            put(config_live::put_model_value).delete(config_live::delete_model_value),
        )
        .route(
            "/v1/config/live",
            get(config_live::export).put(config_live::import),
        )
        .route("/v1/webrtc/tickets", post(webrtc::mint_ticket))
        .route("/v1/webrtc/{number}", post(webrtc::offer))
        .route("/v1/webhooks/dead-letters", get(webhooks::dead_letters))
        .route("/v1/webhooks/{name}/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/webhooks/deliveries/{id}/resend",
            post(webhooks::resend),
        )
        .route("/v1/events", get(stream::events))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::render))
        .route_layer(axum::middleware::from_fn_with_state(
            credentials,
            auth::authorize,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(validate::MAX_BODY));
    Router::new()
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .merge(dashboard::routes())
        .merge(crate::webrtc::http::widget_route())
        .merge(protected)
        .fallback(|| async {
            ApiError::NotFound {
                what: "route",
                id: "no such endpoint (see /v1/openapi.json)".into(),
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError::Malformed {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                detail: "method not allowed on this path (see /v1/openapi.json)".into(),
            }
        })
        .with_state(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tokens_only_on_loopback() {
        let open = |listen: &str| HttpConfig {
            listen: listen.parse().unwrap(),
            ..HttpConfig::default()
        };
        assert!(check_exposure(&open("127.0.0.1:8080")).is_ok());
        assert!(check_exposure(&open("[::1]:8080")).is_ok());
        let err = check_exposure(&open("0.0.0.0:8080"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokens") && err.contains("0.0.0.0:8080"),
            "{err}"
        );
        let guarded = HttpConfig {
            tokens: vec!["t".into()],
            ..open("0.0.0.0:8080")
        };
        assert!(check_exposure(&guarded).is_ok());
        let named = HttpConfig {
            api_tokens: vec![ApiToken::new("ops", "t", Scope::Read)],
            ..open("0.0.0.0:8080")
        };
        assert!(check_exposure(&named).is_ok());
    }
}
