//! Listing calls: a validated [`CallFilter`] as SQL (filters, transcript search, cursor
//! paging) and its query plan for the benchmark.

#[cfg(test)]
use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;

#[cfg(test)]
use super::reads::open_reader;
use super::rows::{CALL_COLUMNS, PK_COLUMN, call_from_row};
use crate::store::queued::{DEFAULT_PAGE, MAX_PAGE};
use crate::store::{CallFilter, CallPage, CallRecord, Result, StoreError, number_key, sql};

/// Add a parameter; returns its placeholder.
fn bind(params: &mut Vec<SqlValue>, value: SqlValue) -> String {
    params.push(value);
    format!("?{}", params.len())
}

/// A validated [`CallFilter`] as SQL and parameters.
pub(super) struct ListQuery {
    sql: String,
    params: Vec<SqlValue>,
    limit: usize,
}

impl ListQuery {
    pub(super) fn new(filter: &CallFilter) -> Result<ListQuery> {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<SqlValue> = Vec::new();
        match filter.active {
            Some(true) => clauses.push("state = 'active'".into()),
            // Not an index term on purpose: nearly all calls are finished, so walking the
            // start-time index and skipping the few active ones beats sorting them all.
            Some(false) => clauses.push("state != 'active'".into()),
            None => {}
        }
        if let Some(agent) = &filter.agent {
            let p = bind(&mut params, SqlValue::Text(agent.clone()));
            clauses.push(format!("agent = {p}"));
        }
        if let Some(number) = &filter.number {
            let key = number_key(number);
            if key.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "{number:?} is not a number or user name"
                )));
            }
            let p = bind(&mut params, SqlValue::Text(key));
            clauses.push(format!("(caller_key = {p} OR callee_key = {p})"));
        }
        if let Some(from) = filter.from_ms {
            let p = bind(&mut params, SqlValue::Integer(from));
            clauses.push(format!("started_at_ms >= {p}"));
        }
        if let Some(to) = filter.to_ms {
            let p = bind(&mut params, SqlValue::Integer(to));
            clauses.push(format!("started_at_ms < {p}"));
        }
        if let Some(query) = filter.text.as_deref().and_then(fts_query) {
            let p = bind(&mut params, SqlValue::Text(query));
            clauses.push(format!(
                "pk IN (SELECT t.call FROM transcript_fts JOIN transcripts t
                        ON t.id = transcript_fts.rowid WHERE transcript_fts MATCH {p})"
            ));
        }
        if let Some(cursor) = &filter.cursor {
            let (at, pk) = parse_cursor(cursor)?;
            let at = bind(&mut params, SqlValue::Integer(at));
            let pk = bind(&mut params, SqlValue::Integer(pk));
            // The first term is an index range; the second breaks ties on the start time.
            clauses.push(format!(
                "started_at_ms <= {at} AND (started_at_ms < {at} OR pk < {pk})"
            ));
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

    pub(super) fn run(self, conn: &Connection) -> Result<CallPage> {
        let mut stmt = conn
            .prepare_cached(&self.sql)
            .map_err(sql("listing calls"))?;
        let mut rows: Vec<(CallRecord, i64)> = stmt
            .query_map(rusqlite::params_from_iter(self.params), |r| {
                Ok((call_from_row(r)?, r.get(PK_COLUMN)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(sql("listing calls"))?;
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let next_cursor = match rows.last() {
            Some((call, pk)) if more => Some(format!("{}_{pk}", call.started_at_ms)),
            _ => None,
        };
        Ok(CallPage {
            calls: rows.into_iter().map(|(call, _)| call).collect(),
            next_cursor,
        })
    }
}

/// The query plan of `list_calls(filter)`, one line per step (for the benchmark report).
#[cfg(test)]
pub(in crate::store) fn explain_list(path: &Path, filter: &CallFilter) -> Result<Vec<String>> {
    let query = ListQuery::new(filter)?;
    let conn = open_reader(path)?;
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", query.sql))
        .map_err(sql("explaining"))?;
    stmt.query_map(rusqlite::params_from_iter(query.params), |r| r.get(3))
        .and_then(|rows| rows.collect())
        .map_err(sql("explaining"))
}

fn parse_cursor(cursor: &str) -> Result<(i64, i64)> {
    cursor
        .split_once('_')
        .and_then(|(at, pk)| Some((at.parse().ok()?, pk.parse().ok()?)))
        .ok_or_else(|| StoreError::InvalidCursor(cursor.to_string()))
}

/// User words → an FTS5 query that cannot be a syntax error: every word quoted (quotes
/// doubled) and matched as a prefix, all required. None when there is no word to search.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}
