//! `/v1/config/...`: the effective configuration with each value's source and an ETag, live
//! changes to routes, the default agent, agent settings and secrets, registration accounts,
//! trunks and the model provider's settings, the whole live overlay exported and imported (JSON or TOML), and the audit of those
//! changes. Writes need write scope, `If-Match` and stay within the caller's write limit. The
//! layering lives in `crate::live`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Caller, Ctx};
use crate::live::overlay::canonical_pattern;
use crate::live::{Change, LiveError, OverlayDocument, Target};

/// Most audit records one request lists.
const MAX_AUDIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    agent: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueBody {
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

fn with_etag(body: serde_json::Value, etag: &str) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// GET /v1/config/effective.
pub async fn effective(State(ctx): State<Ctx>) -> Response {
    let (body, etag) = ctx.live.effective().await;
    with_etag(body, &etag)
}

/// GET /v1/config/audit: the latest changes, newest first.
pub async fn audit(
    State(ctx): State<Ctx>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_AUDIT);
    let changes = ctx.live.audit(limit).await?;
    Ok(Json(json!({ "changes": changes })))
}

/// Apply one change for `caller` (whose write scope the handler checked first, before reading
/// anything else); answers the audit record and the new ETag.
async fn apply(
    ctx: &Ctx,
    caller: &Caller,
    headers: &HeaderMap,
    change: Change,
) -> Result<Response, ApiError> {
    let record = ctx
        .live
        .change(&caller.name, if_match(headers)?, change)
        .await?;
    let (_, etag) = ctx.live.effective().await;
    Ok(with_etag(json!({"change": record, "etag": etag}), &etag))
}

/// The request's `If-Match`, when it has a readable one.
fn if_match(headers: &HeaderMap) -> Result<Option<&str>, LiveError> {
    match headers.get(IF_MATCH) {
        Some(v) => Ok(Some(
            v.to_str().map_err(|_| LiveError::PreconditionRequired)?,
        )),
        None => Ok(None),
    }
}

fn route(pattern: &str) -> Result<Target, ApiError> {
    canonical_pattern(pattern)
        .map(Target::Route)
        .ok_or_else(|| {
            LiveError::Invalid {
                field: "pattern",
                code: "bad_pattern",
                message: format!(
                    "bad pattern `{pattern}`: use digits with an optional leading + (separators \
                 allowed), an extension name of letters/digits/_/-, or a prefix pattern ending \
                 in * such as +4930*"
                ),
            }
            .into()
        })
}

/// PUT /v1/config/routes/{pattern} `{"agent": "..."}`.
pub async fn put_route(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(pattern): Path<String>,
    headers: HeaderMap,
    body: Result<Json<AgentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let Json(body) = body?;
    let change = Change {
        target: route(&pattern)?,
        value: Some(body.agent),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// DELETE /v1/config/routes/{pattern}.
pub async fn delete_route(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(pattern): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let change = Change {
        target: route(&pattern)?,
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}

/// PUT /v1/config/default-agent `{"agent": "..."}`.
pub async fn put_default_agent(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<AgentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let Json(body) = body?;
    let change = Change {
        target: Target::DefaultAgent,
        value: Some(body.agent),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// An agent's setting or secret: `kind` is the path's `settings` or `secrets`.
fn agent_value(agent: String, kind: &str, key: String) -> Result<Target, ApiError> {
    match kind {
        "settings" => Ok(Target::Setting { agent, key }),
        "secrets" => Ok(Target::Secret { agent, key }),
        other => Err(ApiError::NotFound {
            what: "configuration table",
            id: other.to_string(),
        }),
    }
}

/// PUT /v1/config/agents/{name}/settings/{key} and .../secrets/{key} `{"value": "..."}`; a
/// secret is write-only, never read back.
pub async fn put_agent_value(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((agent, kind, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<ValueBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let target = agent_value(agent, &kind, key)?;
    let Json(body) = body?;
    let change = Change {
        target,
        value: Some(body.value),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// DELETE /v1/config/agents/{name}/settings/{key} and .../secrets/{key}.
pub async fn delete_agent_value(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((agent, kind, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let change = Change {
        target: agent_value(agent, &kind, key)?,
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}

/// PUT /v1/config/model/{key} `{"value": "..."}`: `provider`, `model`, `voice` or `api-key`
/// (write-only) of `[model]`, for calls that start from now on.
pub async fn put_model_value(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ValueBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let Json(body) = body?;
    let change = Change {
        target: Target::Model(key),
        value: Some(body.value),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// DELETE /v1/config/model/{key}: the key as the file has it, or unset.
pub async fn delete_model_value(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let change = Change {
        target: Target::Model(key),
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}

/// An entry of a table of named entries: `table` is the path's `accounts`, `trunks` or
/// `webhooks`.
fn sip_entry(table: &str, name: String) -> Result<Target, ApiError> {
    match table {
        "accounts" => Ok(Target::Account(name)),
        "trunks" => Ok(Target::Trunk(name)),
        "webhooks" => Ok(Target::Webhook(name)),
        other => Err(ApiError::NotFound {
            what: "configuration table",
            id: other.to_string(),
        }),
    }
}

/// PUT /v1/config/accounts/{name}, /v1/config/trunks/{name} and /v1/config/webhooks/{name}:
/// the whole entry as the file spells it (an account's `registrar`, `aor`, `password`, ...; a
/// trunk's `outbound-proxy`, `domain`, `password`, `inbound`, ...; a webhook's `url`,
/// `events`, `secret`, ...). Passwords and secrets are write-only: left out or given as
/// `***`, the current ones are kept.
pub async fn put_sip_entry(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((table, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let target = sip_entry(&table, name)?;
    let Json(body) = body?;
    let change = Change {
        target,
        value: Some(body.to_string()),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// DELETE /v1/config/accounts/{name} (it unregisters), /v1/config/trunks/{name} (new calls
/// through it are refused; running ones finish) and /v1/config/webhooks/{name} (its queued
/// deliveries are dead-lettered when they come due).
pub async fn delete_sip_entry(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path((table, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let change = Change {
        target: sip_entry(&table, name)?,
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}

/// The formats of the whole live overlay.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Toml,
}

const TOML_TYPE: &str = "application/toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    format: Format,
}

/// GET /v1/config/live?format=json|toml: the live overlay as one document (secrets `***`),
/// with the ETag an import based on it sends.
pub async fn export(
    State(ctx): State<Ctx>,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let (document, etag) = ctx.live.export().await;
    let mut response = match query.format {
        Format::Json => Json(document).into_response(),
        Format::Toml => {
            let text = toml::to_string(&document)
                .map_err(|e| ApiError::Internal(format!("the overlay as TOML: {e}")))?;
            ([(CONTENT_TYPE, TOML_TYPE)], text).into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(ETAG, value);
    }
    Ok(response)
}

/// PUT /v1/config/live: replace the whole live overlay with a document as exported, JSON or
/// TOML by `Content-Type`; checked as a whole before anything applies, audited as one change.
pub async fn import(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    ctx.write_limit.admit(&caller)?;
    let body = body.map_err(|r| ApiError::Malformed {
        status: r.status(),
        code: if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        },
        detail: r.body_text(),
    })?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = match content_type.split(';').next().unwrap_or_default().trim() {
        "application/json" => Format::Json,
        TOML_TYPE => Format::Toml,
        other => {
            return Err(ApiError::Malformed {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                detail: format!("Content-Type `{other}`: send application/json or {TOML_TYPE}"),
            });
        }
    };
    let text = std::str::from_utf8(&body).map_err(|e| bad_document(e.to_string()))?;
    let document: OverlayDocument = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| bad_document(e.to_string()))?,
        Format::Toml => toml::from_str(text).map_err(|e| bad_document(e.to_string()))?,
    };
    let if_match = if_match(&headers)?;
    let record = ctx.live.import(&caller.name, if_match, &document).await?;
    let (_, etag) = ctx.live.effective().await;
    Ok(with_etag(json!({"change": record, "etag": etag}), &etag))
}

fn bad_document(detail: String) -> ApiError {
    ApiError::Malformed {
        status: StatusCode::BAD_REQUEST,
        code: "bad_document",
        detail: format!("the live configuration document does not read: {detail}"),
    }
}
