//! `/v1/config/...`: the effective configuration with each value's source and an ETag, live
//! changes to routes, the default agent, agent settings and secrets and registration accounts
//! (write scope and `If-Match` needed), and the audit of those changes. The layering lives in `crate::live`.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, Caller, Ctx};
use crate::live::overlay::canonical_pattern;
use crate::live::{Change, LiveError, Target};

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
    let if_match = match headers.get(IF_MATCH) {
        Some(v) => Some(v.to_str().map_err(|_| LiveError::PreconditionRequired)?),
        None => None,
    };
    let record = ctx.live.change(&caller.name, if_match, change).await?;
    let (_, etag) = ctx.live.effective().await;
    Ok(with_etag(json!({"change": record, "etag": etag}), &etag))
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
    caller.require_write()?;
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
    caller.require_write()?;
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
    caller.require_write()?;
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
    caller.require_write()?;
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
    caller.require_write()?;
    let change = Change {
        target: agent_value(agent, &kind, key)?,
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}

/// PUT /v1/config/accounts/{name}: the whole account as the file spells it (`registrar`,
/// `aor`, `auth-user`, `password`, `transport`, `expires`, ...). The password is write-only;
/// left out, the current one is kept.
pub async fn put_account(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let Json(body) = body?;
    let change = Change {
        target: Target::Account(name),
        value: Some(body.to_string()),
    };
    apply(&ctx, &caller, &headers, change).await
}

/// DELETE /v1/config/accounts/{name}: unregisters it.
pub async fn delete_account(
    State(ctx): State<Ctx>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let change = Change {
        target: Target::Account(name),
        value: None,
    };
    apply(&ctx, &caller, &headers, change).await
}
