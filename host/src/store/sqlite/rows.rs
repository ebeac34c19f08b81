//! Mapping between the record types and their columns: the call row.

use rusqlite::Row;
use serde_json::Value;

use crate::store::CallRecord;
use crate::store::names::{parse_direction, parse_state};

pub(super) const CALL_COLUMNS: &str =
    "id, direction, caller, callee, agent, agent_version, started_at_ms,
    answered_at_ms, ended_at_ms, state, end_reason, outcome, recording, input_tokens,
    output_tokens, metadata, transport, node, pk";

/// Where `pk` is in [`CALL_COLUMNS`].
pub(super) const PK_COLUMN: usize = 18;

pub(super) fn conversion(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.into())
}

pub(super) fn json_column(row: &Row, col: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(col)?;
    serde_json::from_str(&text).map_err(|e| conversion(col, e.to_string()))
}

/// A row selected with [`CALL_COLUMNS`].
pub(super) fn call_from_row(row: &Row) -> rusqlite::Result<CallRecord> {
    let direction: String = row.get(1)?;
    let state: String = row.get(9)?;
    Ok(CallRecord {
        id: row.get(0)?,
        direction: parse_direction(&direction)
            .ok_or_else(|| conversion(1, format!("unknown direction {direction:?}")))?,
        caller: row.get(2)?,
        callee: row.get(3)?,
        agent: row.get(4)?,
        agent_version: row.get(5)?,
        started_at_ms: row.get(6)?,
        answered_at_ms: row.get(7)?,
        ended_at_ms: row.get(8)?,
        state: parse_state(&state)
            .ok_or_else(|| conversion(9, format!("unknown state {state:?}")))?,
        end_reason: row.get(10)?,
        outcome: row.get(11)?,
        recording: row.get(12)?,
        input_tokens: row.get(13)?,
        output_tokens: row.get(14)?,
        metadata: json_column(row, 15)?,
        transport: row.get(16)?,
        node: row.get(17)?,
    })
}
