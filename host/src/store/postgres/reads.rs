//! Reads: one call with all its rows (in one snapshot), the call list (filters, transcript
//! search, cursor paging) and usage per day.

use deadpool_postgres::{GenericClient, Object};
use serde_json::Value;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::{col, pg, row, rows, search, unreadable, unsigned};
use crate::domain::events::StageLatency;
use crate::domain::usage;
use crate::store::names::{parse_direction, parse_role, parse_state};
use crate::store::queued::{DEFAULT_PAGE, MAX_PAGE, not_found};
use crate::store::{
    CallDetail, CallFilter, CallPage, CallRecord, ConversationCounts, DailyUsage, EventRecord,
    Result, StoreError, TranscriptLine, TurnLatency, UsageItem, number_key,
};

const CALL_COLUMNS: &str = "id, direction, caller, callee, agent, agent_version, started_at_ms,
    answered_at_ms, ended_at_ms, state, end_reason, outcome, recording, input_tokens,
    output_tokens, metadata, transport, node, pk";

/// Where `pk` is in [`CALL_COLUMNS`].
const PK_COLUMN: usize = 18;

pub(super) fn json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| unreadable(format!("JSON column: {e}")))
}

/// A row selected with [`CALL_COLUMNS`].
fn call_from_row(r: &tokio_postgres::Row) -> Result<CallRecord> {
    let direction: String = col(r, 1)?;
    let state: String = col(r, 9)?;
    Ok(CallRecord {
        id: col(r, 0)?,
        direction: parse_direction(&direction)
            .ok_or_else(|| unreadable(format!("unknown direction {direction:?}")))?,
        caller: col(r, 2)?,
        callee: col(r, 3)?,
        agent: col(r, 4)?,
        agent_version: col(r, 5)?,
        started_at_ms: col(r, 6)?,
        answered_at_ms: col(r, 7)?,
        ended_at_ms: col(r, 8)?,
        state: parse_state(&state).ok_or_else(|| unreadable(format!("unknown state {state:?}")))?,
        end_reason: col(r, 10)?,
        outcome: col(r, 11)?,
        recording: col(r, 12)?,
        input_tokens: unsigned(col(r, 13)?),
        output_tokens: unsigned(col(r, 14)?),
        metadata: json(&col::<String>(r, 15)?)?,
        transport: col(r, 16)?,
        node: col(r, 17)?,
    })
}

pub(super) async fn read_call(client: &mut Object, call_id: &str) -> Result<CallDetail> {
    // One read-only repeatable-read transaction: a consistent snapshot of the call and its rows.
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg("starting a read"))?;
    let found = row(
        &tx,
        &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1"),
        &[&call_id],
        "reading a call",
    )
    .await?
    .ok_or_else(|| not_found(call_id))?;
    let call = call_from_row(&found)?;
    let pk: i64 = col(&found, PK_COLUMN)?;
    let events: Vec<EventRecord> = rows(
        &tx,
        "SELECT seq, at_ms, kind, data FROM events WHERE call = $1 ORDER BY seq",
        &[&pk],
        "reading call events",
    )
    .await?
    .iter()
    .map(|r| {
        Ok(EventRecord {
            call_id: call.id.clone(),
            seq: unsigned(col(r, 0)?),
            at_ms: col(r, 1)?,
            kind: col(r, 2)?,
            data: json(&col::<String>(r, 3)?)?,
        })
    })
    .collect::<Result<_>>()?;
    let transcript = rows(
        &tx,
        "SELECT seq, at_ms, role, text FROM transcripts WHERE call = $1 ORDER BY seq",
        &[&pk],
        "reading the transcript",
    )
    .await?
    .iter()
    .map(|r| {
        let role: String = col(r, 2)?;
        Ok(TranscriptLine {
            call_id: call.id.clone(),
            seq: unsigned(col(r, 0)?),
            at_ms: col(r, 1)?,
            role: parse_role(&role).ok_or_else(|| unreadable(format!("unknown role {role:?}")))?,
            text: col(r, 3)?,
        })
    })
    .collect::<Result<_>>()?;
    let usage = rows(
        &tx,
        "SELECT provider, stage, kind, unit, SUM(amount) FROM usage_items WHERE call = $1
         GROUP BY provider, stage, kind, unit ORDER BY MIN(id)",
        &[&pk],
        "reading usage",
    )
    .await?
    .iter()
    .map(|r| {
        Ok(UsageItem {
            provider: col(r, 0)?,
            stage: col(r, 1)?,
            kind: col(r, 2)?,
            unit: col(r, 3)?,
            amount: col(r, 4)?,
        })
    })
    .collect::<Result<_>>()?;
    let latencies = rows(
        &tx,
        "SELECT turn, host_in_ms, model_ms, host_out_ms, total_ms, stt_ms, llm_ms, tts_ms
         FROM latencies WHERE call = $1 ORDER BY turn",
        &[&pk],
        "reading latencies",
    )
    .await?
    .iter()
    .map(|r| {
        let stages = match (col(r, 5)?, col(r, 6)?, col(r, 7)?) {
            (Some(stt_ms), Some(llm_ms), Some(tts_ms)) => Some(StageLatency {
                stt_ms,
                llm_ms,
                tts_ms,
            }),
            _ => None,
        };
        Ok(TurnLatency {
            call_id: call.id.clone(),
            turn: unsigned(col(r, 0)?),
            host_in_ms: col(r, 1)?,
            model_ms: col(r, 2)?,
            host_out_ms: col(r, 3)?,
            total_ms: col(r, 4)?,
            stages,
        })
    })
    .collect::<Result<_>>()?;
    tx.commit().await.map_err(pg("ending a read"))?;
    Ok(CallDetail {
        conversation: ConversationCounts::of(&events),
        call,
        events,
        transcript,
        usage,
        latencies,
    })
}

/// A parameter of the list query.
enum Param {
    Int(i64),
    Text(String),
}

impl Param {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Int(v) => v,
            Param::Text(v) => v,
        }
    }
}

/// A validated [`CallFilter`] as SQL and parameters (the SQLite store's, in Postgres' dialect).
pub(super) struct ListQuery {
    sql: String,
    params: Vec<Param>,
    limit: usize,
}

/// Add a parameter; returns its placeholder.
fn bind(params: &mut Vec<Param>, value: Param) -> String {
    params.push(value);
    format!("${}", params.len())
}

impl ListQuery {
    pub(super) fn new(filter: &CallFilter) -> Result<ListQuery> {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Param> = Vec::new();
        match filter.active {
            Some(true) => clauses.push("state = 'active'".into()),
            Some(false) => clauses.push("state != 'active'".into()),
            None => {}
        }
        if let Some(agent) = &filter.agent {
            let p = bind(&mut params, Param::Text(agent.clone()));
            clauses.push(format!("agent = {p}"));
        }
        if let Some(number) = &filter.number {
            let key = number_key(number);
            if key.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "{number:?} is not a number or user name"
                )));
            }
            let p = bind(&mut params, Param::Text(key));
            clauses.push(format!("(caller_key = {p} OR callee_key = {p})"));
        }
        if let Some(from) = filter.from_ms {
            let p = bind(&mut params, Param::Int(from));
            clauses.push(format!("started_at_ms >= {p}"));
        }
        if let Some(to) = filter.to_ms {
            let p = bind(&mut params, Param::Int(to));
            clauses.push(format!("started_at_ms < {p}"));
        }
        if let Some(query) = filter.text.as_deref().and_then(search::query) {
            let p = bind(&mut params, Param::Text(query));
            clauses.push(format!(
                "pk IN (SELECT call FROM transcripts WHERE words @@ {p}::TEXT::TSQUERY)"
            ));
        }
        if let Some(cursor) = &filter.cursor {
            let (at, pk) = parse_cursor(cursor)?;
            let at = bind(&mut params, Param::Int(at));
            let pk = bind(&mut params, Param::Int(pk));
            clauses.push(format!("(started_at_ms, pk) < ({at}, {pk})"));
        }
        let limit = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        let where_clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        Ok(ListQuery {
            sql: format!(
                "SELECT {CALL_COLUMNS} FROM calls {where_clause}
                 ORDER BY started_at_ms DESC, pk DESC LIMIT {}",
                limit + 1
            ),
            params,
            limit,
        })
    }

    pub(super) async fn run(self, client: &impl GenericClient) -> Result<CallPage> {
        let params: Vec<&(dyn ToSql + Sync)> = self.params.iter().map(Param::sql).collect();
        let found = rows(client, &self.sql, &params, "listing calls").await?;
        let mut calls: Vec<(CallRecord, i64)> = found
            .iter()
            .map(|r| Ok((call_from_row(r)?, col(r, PK_COLUMN)?)))
            .collect::<Result<_>>()?;
        let more = calls.len() > self.limit;
        calls.truncate(self.limit);
        let next_cursor = match calls.last() {
            Some((call, pk)) if more => Some(format!("{}_{pk}", call.started_at_ms)),
            _ => None,
        };
        Ok(CallPage {
            calls: calls.into_iter().map(|(call, _)| call).collect(),
            next_cursor,
        })
    }
}

fn parse_cursor(cursor: &str) -> Result<(i64, i64)> {
    cursor
        .split_once('_')
        .and_then(|(at, pk)| Some((at.parse().ok()?, pk.parse().ok()?)))
        .ok_or_else(|| StoreError::InvalidCursor(cursor.to_string()))
}

pub(super) async fn usage_per_day(
    client: &Object,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<DailyUsage>> {
    rows(
        client,
        "SELECT to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                COALESCE(SUM(amount) FILTER (WHERE kind = $3), 0)::BIGINT,
                COALESCE(SUM(amount) FILTER (WHERE kind = $4), 0)::BIGINT
         FROM usage_items
         WHERE at_ms >= $1 AND at_ms < $2 AND unit = $5 AND kind IN ($3, $4)
         GROUP BY day ORDER BY day",
        &[
            &from_ms,
            &to_ms,
            &usage::INPUT,
            &usage::OUTPUT,
            &usage::TOKENS,
        ],
        "reading usage per day",
    )
    .await?
    .iter()
    .map(|r| {
        Ok(DailyUsage {
            day: col(r, 0)?,
            input_tokens: unsigned(col(r, 1)?),
            output_tokens: unsigned(col(r, 2)?),
        })
    })
    .collect()
}
