//! `/v1/webrtc`: web calls from the control API (the dashboard's Talk button) and the call
//! tickets that let a public page start one through the public listener.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Ctx};
use crate::call::events::now_ms;
use crate::webrtc::WebCalls;
use crate::webrtc::tickets::Grant;

/// The most calls one ticket may grant.
const MAX_TICKET_CALLS: u32 = 1000;

fn web_calls(ctx: &Ctx) -> Result<&Arc<WebCalls>, ApiError> {
    ctx.webrtc
        .as_ref()
        .ok_or_else(|| ApiError::NotReady("web calls are off: configure [webrtc]".into()))
}

fn invalid(detail: String) -> ApiError {
    ApiError::Malformed {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_ticket_request",
        detail,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TicketBody {
    number: String,
    #[serde(default = "default_ttl_secs")]
    ttl_secs: u64,
    #[serde(default = "one")]
    calls: u32,
    #[serde(default = "one")]
    concurrent: u32,
}

fn default_ttl_secs() -> u64 {
    300
}

fn one() -> u32 {
    1
}

/// POST /v1/webrtc/tickets → 201 `{"ticket", "number", "expires-at-ms", "calls", "concurrent"}`.
pub async fn mint_ticket(
    State(ctx): State<Ctx>,
    body: Result<Json<TicketBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let web = web_calls(&ctx)?;
    let Json(body) = body?;
    let max_secs = web.config().max_ticket_secs;
    if body.ttl_secs == 0 || body.ttl_secs > max_secs {
        return Err(invalid(format!(
            "ttl-secs must be 1..={max_secs} ([webrtc] max-ticket-secs)"
        )));
    }
    if body.calls == 0 || body.calls > MAX_TICKET_CALLS {
        return Err(invalid(format!("calls must be 1..={MAX_TICKET_CALLS}")));
    }
    if body.concurrent == 0 || body.concurrent > body.calls {
        return Err(invalid("concurrent must be 1..=calls".into()));
    }
    if ctx.registry.resolve(&body.number).is_none() {
        return Err(ApiError::NotFound {
            what: "agent for number",
            id: body.number,
        });
    }
    let grant = Grant {
        number: body.number,
        expires_ms: now_ms() + body.ttl_secs * 1000,
        calls: body.calls,
        concurrent: body.concurrent,
        nonce: crate::bridges::pending::one_time_token(),
    };
    let ticket = web.tickets().mint(&grant);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ticket": ticket,
            "number": grant.number,
            "expires-at-ms": grant.expires_ms,
            "calls": grant.calls,
            "concurrent": grant.concurrent,
        })),
    )
        .into_response())
}

/// POST /v1/webrtc/{number} with an SDP offer → 201 with the SDP answer.
pub async fn offer(
    State(ctx): State<Ctx>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let web = web_calls(&ctx)?;
    Ok(crate::webrtc::http::answer_offer(web, number, &headers, body, None).await)
}
