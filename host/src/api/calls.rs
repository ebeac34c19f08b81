//! `/v1/calls`: place, list, detail, recording, hang up, transfer.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::sync::Arc;

use super::validate::{self, Invalid};
use super::{ApiError, Ctx};
use crate::bridges::Bridges;
use crate::call::{self, CallCommand, CallDeps, CallSummary, PlaceRequest};
use crate::campaigns::Dialer;
use crate::live::LiveConfig;
use crate::sip::SipEndpoint;
use crate::store::{self, CallDetail, CallFilter, CallRecord, StoreError, number_key};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceBody {
    to: String,
    /// The trunk to call through; `trunk` is the older name of the same field.
    via: Option<String>,
    trunk: Option<String>,
    from: Option<String>,
    agent: Option<String>,
    number: Option<String>,
    metadata: Option<Value>,
    /// Answering-machine detection once answered (off unless asked).
    #[serde(default)]
    detect_machine: bool,
}

/// Places outbound calls after the API's checks, on the leg `via` names: a carrier's bridge,
/// else SIP (a trunk, or a URI). `POST /v1/calls` and campaigns both place through it.
pub struct Placer {
    pub calls: Arc<CallDeps>,
    pub sip: Arc<SipEndpoint>,
    pub bridges: Arc<Bridges>,
    pub live: Arc<LiveConfig>,
}

impl Placer {
    /// Check and place the call; its id.
    pub async fn place(&self, body: PlaceBody) -> Result<String, ApiError> {
        let target = self.check(&body)?;
        let bridge = target.trunk.clone().filter(|via| self.bridges.has(via));
        let request = PlaceRequest {
            to: target.to,
            trunk: target.trunk,
            from: body.from,
            agent: body.agent,
            number: body.number,
            metadata: body.metadata,
            detect_machine: body.detect_machine,
        };
        // `via` names a trunk or a bridge: one namespace.
        Ok(match bridge {
            Some(via) => {
                let request = PlaceRequest {
                    trunk: None,
                    ..request
                };
                self.bridges.place(&via, request).await?
            }
            None => call::place(&self.calls, &self.sip, request).await?,
        })
    }

    /// Whether `via` names a trunk in effect now or a bridge that is on.
    pub fn knows_via(&self, via: &str) -> bool {
        self.bridges.has(via) || self.live.trunks().borrow().iter().any(|t| t.name == via)
    }

    /// Every field within its documented maximum and `to` in an accepted form, before any
    /// agent runs.
    fn check(&self, body: &PlaceBody) -> Result<validate::CallTarget, ApiError> {
        let via = match (&body.via, &body.trunk) {
            (Some(via), Some(trunk)) if via != trunk => {
                return Err(Invalid::BadValue {
                    field: "via",
                    value: via.clone(),
                    why: format!("`trunk` ({trunk:?}) names another trunk; give one of the two"),
                }
                .into());
            }
            (via, trunk) => via.as_ref().or(trunk.as_ref()),
        };
        if body.via.is_none()
            && let Some(trunk) = &body.trunk
        {
            validate::check_str("trunk", trunk, validate::MAX_TRUNK)?;
        }
        if let Some(from) = &body.from {
            validate::check_from(from)?;
        }
        if let Some(agent) = &body.agent {
            validate::check_str("agent", agent, validate::MAX_AGENT)?;
        }
        if let Some(number) = &body.number {
            validate::check_str("number", number, validate::MAX_NUMBER)?;
        }
        if let Some(metadata) = &body.metadata {
            validate::check_metadata(metadata)?;
        }
        // The trunks in effect now, live changes included.
        let trunks: Vec<validate::TrunkRoute> = self
            .live
            .trunks()
            .borrow()
            .iter()
            .map(validate::TrunkRoute::from)
            .collect();
        Ok(validate::call_target(
            &body.to,
            via.map(String::as_str),
            &trunks,
        )?)
    }
}

#[async_trait::async_trait]
impl Dialer for Placer {
    async fn dial(&self, request: PlaceRequest) -> Result<String, String> {
        let body = PlaceBody {
            to: request.to,
            via: request.trunk,
            trunk: None,
            from: request.from,
            agent: request.agent,
            number: request.number,
            metadata: request.metadata,
            detect_machine: request.detect_machine,
        };
        self.place(body).await.map_err(|e| e.to_string())
    }

    fn reaches(&self, via: &str) -> bool {
        self.knows_via(via)
    }

    fn has_room(&self, via: Option<&str>) -> bool {
        let via = via.map(str::to_string).or_else(|| {
            let trunks = self.live.trunks();
            let default = trunks.borrow().iter().find(|t| t.default)?.name.clone();
            Some(default)
        });
        via.is_none_or(|via| self.bridges.has(&via) || self.sip.has_free_channel(&via))
    }

    fn hang_up(&self, call_id: &str) {
        self.calls.command(call_id, CallCommand::Hangup);
    }
}

/// POST /v1/calls → 201 `{"id": ...}`.
pub async fn place(
    State(ctx): State<Ctx>,
    body: Result<Json<PlaceBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let id = ctx.placer.place(body).await?;
    let location = format!("/v1/calls/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!({ "id": id })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    active: Option<bool>,
    agent: Option<String>,
    number: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    text: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A stored call plus whether its call task is running in this process.
#[derive(Debug, Serialize)]
pub struct CallItem {
    #[serde(flatten)]
    record: CallRecord,
    live: bool,
}

/// GET /v1/calls → `{"calls": [CallItem], "next_cursor": string|null}`, newest first.
pub async fn list(
    State(ctx): State<Ctx>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let filter = CallFilter {
        active: q.active,
        agent: q.agent,
        number: q.number,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        text: q.text,
        limit: q.limit.unwrap_or(0),
        cursor: q.cursor,
    };
    let page = ctx.store.list_calls(&filter).await?;
    let live = ctx.calls.active();
    let is_live = |id: &str| live.iter().any(|l| l.id == id);
    let mut calls: Vec<CallItem> = Vec::new();
    // A call's first event reaches the store within milliseconds; until then the live table
    // is the only place it shows, so the first page of active calls includes it from there.
    if filter.active == Some(true) && filter.cursor.is_none() && filter.text.is_none() {
        for summary in &live {
            let stored = page.calls.iter().any(|c| c.id == summary.id);
            if !stored && matches_live(&filter, summary) {
                calls.push(CallItem {
                    record: record_of_live(summary, &ctx.node),
                    live: true,
                });
            }
        }
    }
    calls.extend(page.calls.into_iter().map(|record| CallItem {
        live: is_live(&record.id),
        record,
    }));
    Ok(Json(
        json!({ "calls": calls, "next_cursor": page.next_cursor }),
    ))
}

fn matches_live(filter: &CallFilter, c: &CallSummary) -> bool {
    let agent_ok = filter
        .agent
        .as_ref()
        .is_none_or(|a| c.agent.as_deref() == Some(a.as_str()));
    let number_ok = filter.number.as_ref().is_none_or(|n| {
        let key = number_key(n);
        number_key(&c.caller) == key || number_key(&c.callee) == key
    });
    let time_ok = filter
        .from_ms
        .is_none_or(|from| c.started_at_ms as i64 >= from)
        && filter.to_ms.is_none_or(|to| (c.started_at_ms as i64) < to);
    agent_ok && number_ok && time_ok
}

/// A live call of this node (`node`) not yet in the store, in the store's record shape.
fn record_of_live(c: &CallSummary, node: &str) -> CallRecord {
    CallRecord {
        id: c.id.clone(),
        direction: if c.direction == "outbound" {
            store::Direction::Outbound
        } else {
            store::Direction::Inbound
        },
        caller: c.caller.clone(),
        callee: c.callee.clone(),
        agent: c.agent.clone(),
        agent_version: None,
        transport: Some(c.transport.clone()),
        started_at_ms: c.started_at_ms as i64,
        answered_at_ms: None,
        ended_at_ms: None,
        state: store::CallState::Active,
        end_reason: None,
        outcome: None,
        recording: None,
        input_tokens: 0,
        output_tokens: 0,
        metadata: Value::Null,
        node: Some(node.to_string()),
    }
}

/// GET /v1/calls/{id} → the stored detail, `live`, and `recording_url` when there is one.
pub async fn detail(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let live = ctx.calls.active().into_iter().find(|c| c.id == id);
    let detail = match ctx.store.get_call(&id).await {
        Ok(d) => d,
        Err(StoreError::NotFound { .. }) => match &live {
            Some(summary) => CallDetail {
                call: record_of_live(summary, &ctx.node),
                events: Vec::new(),
                transcript: Vec::new(),
                usage: Vec::new(),
                latencies: Vec::new(),
                conversation: Default::default(),
            },
            None => return Err(not_found(&id)),
        },
        Err(e) => return Err(e.into()),
    };
    let recording_url = detail
        .call
        .recording
        .as_ref()
        .map(|_| format!("/v1/calls/{id}/recording"));
    let mut body = serde_json::to_value(&detail).map_err(|e| ApiError::Internal(e.to_string()))?;
    body["live"] = json!(live.is_some());
    body["recording_url"] = json!(recording_url);
    Ok(Json(body))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        what: "call",
        id: id.to_string(),
    }
}

/// GET /v1/calls/{id}/recording → the WAV file.
pub async fn recording(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = ctx.store.get_call(&id).await?;
    let missing = || ApiError::NotFound {
        what: "recording",
        id: id.clone(),
    };
    let path = detail.call.recording.ok_or_else(missing)?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        tracing::warn!(call_id = %id, %path, error = %e, "recording file unreadable");
        missing()
    })?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response())
}

/// Send a command to a live call: 202, or 404 for an unknown id, 409 for a finished call.
async fn command(ctx: &Ctx, id: &str, command: CallCommand) -> Result<Response, ApiError> {
    let what = match &command {
        CallCommand::Transfer(_) => "transfer",
        _ => "hangup",
    };
    if ctx.calls.command(id, command) {
        tracing::info!(call_id = %id, command = what, "call command from the API");
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "command": what })),
        )
            .into_response());
    }
    Err(not_live(ctx, id).await)
}

/// Why a command cannot reach call `id`: it has ended (409), or there is no such call (404).
async fn not_live(ctx: &Ctx, id: &str) -> ApiError {
    match ctx.store.get_call(id).await {
        Ok(_) => ApiError::NotActive(id.to_string()),
        Err(StoreError::NotFound { .. }) => not_found(id),
        Err(e) => e.into(),
    }
}

/// POST /v1/calls/{id}/hangup → 202.
pub async fn hangup(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    command(&ctx, &id, CallCommand::Hangup).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    to: String,
}

/// POST /v1/calls/{id}/transfer `{"to": "sip:..."}` → 202 (the REFER follows; its outcome is a
/// `transfer` event); `{"to": "agent:NAME"}` hands the call to that agent (`handoff` events).
pub async fn transfer(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    // The call's agent grants `agent:NAME` targets; a call that is not live gets its 404/409.
    let live = ctx.calls.active().into_iter().find(|c| c.id == id);
    if live.is_none() && body.to.trim().starts_with("agent:") {
        validate::check_str("to", &body.to, validate::MAX_TARGET)?;
        return Err(not_live(&ctx, &id).await);
    }
    let call_agent = live.and_then(|c| c.agent);
    let target = validate::transfer_target(&body.to, call_agent.as_deref(), &ctx.registry)?;
    command(&ctx, &id, CallCommand::Transfer(target)).await
}
