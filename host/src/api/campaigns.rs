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
