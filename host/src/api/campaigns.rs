//! `/v1/campaigns` (create with contacts as JSON or CSV, list, progress, contacts with their
//! attempts, CSV export of results, start/pause/resume/cancel) and `/v1/dnc` (the do-not-call
//! list: list, add, import, remove).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::validate::{self, Invalid};
use super::{ApiError, Ctx};
use crate::campaigns::contacts::{ContactInput, Rejected, Row, from_csv};
use crate::campaigns::{CampaignSettings, Control};

/// Takes `contacts` (a JSON list) or `contacts_csv` (CSV text with a header row) beside the
/// campaign's settings.
fn split_contacts(
    mut body: Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<Row>), ApiError> {
    let bad = |field: &'static str, why: String| {
        ApiError::Invalid(Invalid::BadValue {
            field,
            value: String::new(),
            why,
        })
    };
    let rows = match (body.remove("contacts"), body.remove("contacts_csv")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "contacts",
                "give `contacts` or `contacts_csv`, not both".into(),
            ));
        }
        (Some(Value::Array(list)), None) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let row = serde_json::from_value::<ContactInput>(v).map_err(|e| e.to_string());
                (i, row)
            })
            .collect(),
        (Some(_), None) => return Err(bad("contacts", "must be a list of contacts".into())),
        (None, Some(Value::String(csv))) => {
            from_csv(&csv).map_err(|why| bad("contacts_csv", why))?
        }
        (None, Some(_)) => return Err(bad("contacts_csv", "must be CSV text".into())),
        (None, None) => {
            return Err(bad(
                "contacts",
                "a campaign needs `contacts` or `contacts_csv`".into(),
            ));
        }
    };
    Ok((body, rows))
}

/// What only the running host can say: the agent or route, the trunk or bridge, the caller id.
fn check_with_host(ctx: &Ctx, s: &CampaignSettings) -> Result<(), ApiError> {
    let bad = |field: &'static str, value: &str, why: String| {
        ApiError::Invalid(Invalid::BadValue {
            field,
            value: value.to_string(),
            why,
        })
    };
    match (&s.agent, &s.number) {
        (Some(agent), _) if !ctx.registry.snapshot().agents.contains_key(agent) => {
            return Err(bad(
                "agent",
                agent,
                "no agent of that name is loaded".into(),
            ));
        }
        (None, Some(number)) if ctx.registry.resolve(number).is_none() => {
            return Err(bad("number", number, "no agent serves that number".into()));
        }
        (None, None) => {
            return Err(bad(
                "agent",
                "",
                "name the `agent` that runs the calls, or a `number` that routes to one".into(),
            ));
        }
        _ => {}
    }
    if let Some(via) = &s.via
        && !ctx.placer.knows_via(via)
    {
        return Err(bad("via", via, "no trunk or bridge of that name".into()));
    }
    if let Some(from) = &s.from {
        validate::check_from(from)?;
        let allowed = s
            .via
            .as_deref()
            .and_then(|v| ctx.placer.bridges.caller_ids(v));
        if let Some(numbers) = allowed
            && !numbers.contains(from)
        {
            return Err(bad(
                "from",
                from,
                format!("not a number of this account ({})", numbers.join(", ")),
            ));
        }
    }
    Ok(())
}

/// POST /v1/campaigns → 201 `{"id", "imported", "rejected": [{"line", "why"}]}`; nothing is
/// stored when the settings are wrong or no contact can be called.
pub async fn create(
    State(ctx): State<Ctx>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let (settings, rows) = split_contacts(body)?;
    let settings: CampaignSettings =
        serde_json::from_value(Value::Object(settings)).map_err(|e| ApiError::Malformed {
            status: StatusCode::BAD_REQUEST,
            code: "bad_campaign",
            detail: e.to_string(),
        })?;
    check_with_host(&ctx, &settings)?;
    let created = ctx.campaigns.create(settings, rows).await?;
    let location = format!("/v1/campaigns/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(json!(created)),
    )
        .into_response())
}

/// GET /v1/campaigns → `{"campaigns": [progress]}`, newest first.
pub async fn list(State(ctx): State<Ctx>) -> Result<Json<Value>, ApiError> {
    let campaigns = ctx.campaigns.store().list_campaigns().await?;
    Ok(Json(json!({ "campaigns": campaigns })))
}

/// GET /v1/campaigns/{id} → its settings, state and progress counts.
pub async fn detail(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(ctx.campaigns.store().campaign(&id).await?)))
}

/// GET /v1/campaigns/{id}/contacts → every contact with its attempts (outcome, call id).
pub async fn contacts(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let contacts = ctx.campaigns.store().campaign_contacts(&id).await?;
    let contacts: Vec<Value> = contacts
        .into_iter()
        .map(|(contact, attempts)| {
            let mut v = json!(contact);
            v["attempts_made"] = v["attempts"].take();
            v["attempts"] = json!(attempts);
            v
        })
        .collect();
    Ok(Json(json!({ "contacts": contacts })))
}

/// GET /v1/campaigns/{id}/results.csv → one row per contact, with the consent basis.
pub async fn export(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = ctx.campaigns.store();
    let progress = store.campaign(&id).await?;
    let consent = progress.campaign.settings["consent_basis"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "number",
        "name",
        "time_zone",
        "zones",
        "state",
        "attempts",
        "outcome",
        "agent_outcome",
        "last_call_id",
        "consent_basis",
    ];
    let csv_error = |e: csv::Error| ApiError::Internal(format!("writing CSV: {e}"));
    out.write_record(header).map_err(csv_error)?;
    for (c, attempts) in store.campaign_contacts(&id).await? {
        let last_call = attempts
            .iter()
            .rev()
            .find_map(|a| a.call_id.clone())
            .unwrap_or_default();
        out.write_record([
            c.number,
            c.name,
            c.time_zone.unwrap_or_default(),
            c.zones.join(" "),
            json!(c.state).as_str().unwrap_or_default().to_string(),
            c.attempts.to_string(),
            c.outcome.unwrap_or_default(),
            c.agent_outcome.unwrap_or_default(),
            last_call,
            consent.clone(),
        ])
        .map_err(csv_error)?;
    }
    let body = out
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// POST /v1/campaigns/{id}/{start|pause|resume|cancel} → the campaign's progress.
pub async fn control(
    State(ctx): State<Ctx>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let control = match action.as_str() {
        "start" => Control::Start,
        "pause" => Control::Pause,
        "resume" => Control::Resume,
        "cancel" => Control::Cancel,
        _ => {
            return Err(ApiError::NotFound {
                what: "campaign action",
                id: format!("{action} (start, pause, resume, cancel)"),
            });
        }
    };
    Ok(Json(json!(ctx.campaigns.control(&id, control).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DncQuery {
    limit: Option<u32>,
}

/// GET /v1/dnc → `{"numbers": [{"number", "source", "added_at_ms"}]}`, newest first.
pub async fn dnc_list(
    State(ctx): State<Ctx>,
    query: Result<Query<DncQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let numbers = ctx.campaigns.store().dnc_list(limit).await?;
    Ok(Json(json!({ "numbers": numbers })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DncBody {
    /// Numbers in E.164.
    #[serde(default)]
    numbers: Vec<String>,
    /// A file's text: the first column of each line (a header line is skipped).
    #[serde(default)]
    csv: Option<String>,
}

/// POST /v1/dnc → `{"added", "rejected": [{"line", "why"}]}`.
pub async fn dnc_add(
    State(ctx): State<Ctx>,
    body: Result<Json<DncBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let mut numbers = body.numbers;
    let source = if body.csv.is_some() { "import" } else { "api" };
    if let Some(text) = body.csv {
        numbers.extend(
            text.lines()
                .filter_map(|l| l.split(',').next())
                .map(|n| n.trim().trim_matches('"').to_string())
                .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("number")),
        );
    }
    let (added, rejected): (u32, Vec<Rejected>) = ctx.campaigns.add_dnc(&numbers, source).await?;
    Ok(Json(json!({ "added": added, "rejected": rejected })))
}

/// DELETE /v1/dnc/{number} → 204, or 404 when it was not on the list.
pub async fn dnc_remove(
    State(ctx): State<Ctx>,
    Path(number): Path<String>,
) -> Result<StatusCode, ApiError> {
    let normalised = crate::campaigns::contacts::e164(&number).unwrap_or(number);
    if ctx.campaigns.store().dnc_remove(&normalised).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "number on the do-not-call list",
            id: normalised,
        })
    }
}

/// The OpenAPI schemas of these endpoints.
pub(super) fn openapi_schemas() -> Value {
    let retry = json!({"type": "object", "required": ["delay_s", "max_attempts"], "properties": {
        "delay_s": {"type": "integer", "minimum": 0}, "max_attempts": {"type": "integer", "minimum": 1}}});
    json!({
        "CampaignSettings": {"type": "object", "required": ["name", "consent_basis"], "properties": {
            "name": {"type": "string"},
            "agent": {"type": "string", "description": "The agent that runs each call (or give number)"},
            "number": {"type": "string", "description": "Route as if this number were dialled in"},
            "via": {"type": "string", "description": "A trunk or a bridge, as in POST /v1/calls; the campaign pauses if it is removed"},
            "from": {"type": "string", "description": "Caller id (a bridge's: one of its numbers)"},
            "pacing": {"type": "object", "properties": {
                "max_concurrent": {"type": "integer", "minimum": 1, "maximum": crate::campaigns::settings::MAX_CONCURRENT, "default": 1},
                "calls_per_second": {"type": "number", "exclusiveMinimum": 0, "maximum": crate::campaigns::settings::MAX_CALLS_PER_SECOND, "default": 1}}},
            "window": {"type": "object", "description": "In each contact's local time; a number in several zones is called when the window holds in all", "properties": {
                "days": {"type": "array", "items": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}, "default": ["mon", "tue", "wed", "thu", "fri"]},
                "start": {"type": "string", "default": "09:00"}, "end": {"type": "string", "default": "20:00", "description": "Not included"},
                "holidays": {"type": "array", "items": {"type": "string", "format": "date"}}}},
            "default_time_zone": {"type": "string", "description": "IANA zone of contacts whose row and number give none"},
            "max_attempts_per_day": {"type": "integer", "minimum": 1, "default": 2},
            "retry": {"type": "object", "properties": {"busy": retry, "no_answer": retry, "failed": retry, "machine": retry}},
            "consent_basis": {"type": "string", "description": "Why these people may be called; in exports"},
            "amd": {"enum": ["off", "detect", "detect-and-leave-message"], "default": "off",
                "description": "Answering-machine detection: detect hangs up on a machine; detect-and-leave-message lets the agent leave one after the beep. Outcome machine either way"},
            "opt_out_key": {"type": "string", "maxLength": 1, "description": "A key that puts the callee on the do-not-call list"},
            "until": {"type": "string", "format": "date-time", "description": "Contacts still waiting then end as window-closed"},
            "contacts": {"type": "array", "items": {"type": "object", "required": ["number"], "properties": {
                "number": {"type": "string", "description": "E.164"}, "name": {"type": "string"},
                "time_zone": {"type": "string"}, "metadata": {"type": "object"}}}},
            "contacts_csv": {"type": "string", "description": "CSV with a header: number, name, time_zone; other columns go to metadata"}}},
        "CampaignProgress": {"type": "object", "properties": {
            "campaign": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "state": {"enum": ["ready", "running", "paused", "cancelled", "finished"]},
                "state_reason": {"type": ["string", "null"], "description": "Why the host changed the state by itself (paused: its trunk was removed)"},
                "settings": {"$ref": "#/components/schemas/CampaignSettings"},
                "created_at_ms": {"type": "integer"}, "updated_at_ms": {"type": "integer"}}},
            "contacts": {"type": "integer"}, "pending": {"type": "integer"}, "dialing": {"type": "integer"},
            "done": {"type": "integer"}, "attempts": {"type": "integer"},
            "outcomes": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}}},
        "Rejected": {"type": "object", "properties": {"line": {"type": "integer"}, "why": {"type": "string"}}},
    })
}

/// The OpenAPI paths of these endpoints.
pub(super) fn openapi_paths() -> Value {
    use super::openapi::{error_response, id_param, ok_json, query};
    let unauthorized = error_response("Missing or wrong bearer token");
    let not_found = error_response("campaign_not_found");
    let progress = json!({"$ref": "#/components/schemas/CampaignProgress"});
    let rejected = json!({"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}});
    json!({
        "/v1/campaigns": {
            "post": {"summary": "Create a campaign (state ready) with its contacts", "operationId": "createCampaign",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CampaignSettings"}}}},
                "responses": {
                    "201": ok_json("Created; contacts that cannot be called are listed by line (CSV) or index (JSON)",
                        json!({"type": "object", "properties": {"id": {"type": "string"}, "imported": {"type": "integer"}, "rejected": rejected}})),
                    "400": error_response("bad_campaign or bad_value (field named), no_callable_contacts (detail.rejected), too_many_contacts; nothing created"),
                    "401": unauthorized.clone()}},
            "get": {"summary": "Every campaign with its progress, newest first", "operationId": "listCampaigns",
                "responses": {"200": ok_json("Campaigns", json!({"type": "object", "properties": {"campaigns": {"type": "array", "items": progress}}})),
                    "401": unauthorized.clone()}}},
        "/v1/campaigns/{id}": {"get": {"summary": "A campaign's settings, state and progress", "operationId": "getCampaign",
            "parameters": [id_param()],
            "responses": {"200": ok_json("Progress", progress.clone()), "401": unauthorized.clone(), "404": not_found.clone()}}},
        "/v1/campaigns/{id}/contacts": {"get": {"summary": "Every contact with its attempts (outcome, call id)", "operationId": "campaignContacts",
            "parameters": [id_param()],
            "responses": {"200": ok_json("Contacts", json!({"type": "object"})), "401": unauthorized.clone(), "404": not_found.clone()}}},
        "/v1/campaigns/{id}/results.csv": {"get": {"summary": "Results as CSV, one row per contact, with the consent basis", "operationId": "campaignResults",
            "parameters": [id_param()],
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}, "401": unauthorized.clone(), "404": not_found.clone()}}},
        "/v1/campaigns/{id}/{action}": {"post": {"summary": "start (ready), pause (running), resume (paused) or cancel (contacts still waiting end as cancelled)", "operationId": "controlCampaign",
            "parameters": [id_param(), {"name": "action", "in": "path", "required": true, "schema": {"enum": ["start", "pause", "resume", "cancel"]}}],
            "responses": {"200": ok_json("Progress after the change", progress), "401": unauthorized.clone(), "404": not_found,
                "409": error_response("campaign_state: not allowed in the campaign's state")}}},
        "/v1/dnc": {
            "get": {"summary": "The do-not-call list, newest first", "operationId": "listDnc",
                "parameters": [query("limit", json!({"type": "integer", "minimum": 1, "maximum": 100000}), "Default 1000")],
                "responses": {"200": ok_json("Numbers", json!({"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "object", "properties": {
                    "number": {"type": "string"}, "source": {"type": "string", "description": "api, import, or call:<id> (an in-call opt-out)"}, "added_at_ms": {"type": "integer"}}}}}})),
                    "401": unauthorized.clone()}},
            "post": {"summary": "Add numbers (E.164), or import a file's first column (csv)", "operationId": "addDnc",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "numbers": {"type": "array", "items": {"type": "string"}}, "csv": {"type": "string"}}}}}},
                "responses": {"200": ok_json("Added", json!({"type": "object", "properties": {"added": {"type": "integer"}, "rejected": rejected}})),
                    "401": unauthorized.clone()}}},
        "/v1/dnc/{number}": {"delete": {"summary": "Remove a number from the do-not-call list", "operationId": "removeDnc",
            "parameters": [{"name": "number", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "Removed"}, "401": unauthorized, "404": error_response("Not on the list")}}},
    })
}
