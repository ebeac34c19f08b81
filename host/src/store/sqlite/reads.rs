//! Reads: the pool of read-only connections (WAL snapshots, never waiting for the writer) and
//! reading one call with all its rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::Semaphore;

use super::BUSY_TIMEOUT;
use super::rows::{CALL_COLUMNS, PK_COLUMN, call_from_row, conversion, json_column};
use crate::domain::events::StageLatency;
use crate::store::names::parse_role;
use crate::store::queued::not_found;
use crate::store::{
    CallDetail, ConversationCounts, EventRecord, Result, StoreError, TranscriptLine, TurnLatency,
    UsageItem, sql,
};

pub(super) struct ReadPool {
    pub(super) path: PathBuf,
    pub(super) max: usize,
    /// One permit per connection the pool may hold.
    pub(super) permits: Semaphore,
    pub(super) idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// Run `f` on an idle read connection (opened on first need) on a blocking thread.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = pool.idle.lock().ok().and_then(|mut v| v.pop());
            let conn = match idle {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let out = f(&conn);
            // A read whose caller gave up still finishes here while its permit is already
            // back, so a spare connection may have been opened meanwhile: keep at most `max`.
            if let Ok(mut v) = pool.idle.lock()
                && v.len() < pool.max
            {
                v.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql("setting the busy timeout"))?;
    Ok(conn)
}

pub(super) fn read_call(conn: &Connection, call_id: &str) -> Result<CallDetail> {
    // One read transaction: a consistent snapshot of the call and its rows.
    let tx = conn
        .unchecked_transaction()
        .map_err(sql("starting a read"))?;
    let (call, pk) = tx
        .prepare_cached(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([call_id], |r| {
                Ok((call_from_row(r)?, r.get::<_, i64>(PK_COLUMN)?))
            })
            .optional()
        })
        .map_err(sql("reading a call"))?
        .ok_or_else(|| not_found(call_id))?;
    let id = call.id.clone();
    let events: Vec<EventRecord> = tx
        .prepare_cached("SELECT seq, at_ms, kind, data FROM events WHERE call = ?1 ORDER BY seq")
        .and_then(|mut s| {
            s.query_map([pk], |r| {
                Ok(EventRecord {
                    call_id: id.clone(),
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    data: json_column(r, 3)?,
                })
            })?
            .collect()
        })
        .map_err(sql("reading call events"))?;
    let transcript = tx
        .prepare_cached(
            "SELECT seq, at_ms, role, text FROM transcripts WHERE call = ?1 ORDER BY seq",
        )
        .and_then(|mut s| {
            s.query_map([pk], |r| {
                let role: String = r.get(2)?;
                Ok(TranscriptLine {
                    call_id: id.clone(),
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    role: parse_role(&role)
                        .ok_or_else(|| conversion(2, format!("unknown role {role:?}")))?,
                    text: r.get(3)?,
                })
            })?
            .collect()
        })
        .map_err(sql("reading the transcript"))?;
    let usage = tx
        .prepare_cached(
            "SELECT provider, stage, kind, unit, TOTAL(amount) FROM usage_items WHERE call = ?1
             GROUP BY provider, stage, kind, unit ORDER BY MIN(id)",
        )
        .and_then(|mut s| {
            s.query_map([pk], |r| {
                Ok(UsageItem {
                    provider: r.get(0)?,
                    stage: r.get(1)?,
                    kind: r.get(2)?,
                    unit: r.get(3)?,
                    amount: r.get(4)?,
                })
            })?
            .collect()
        })
        .map_err(sql("reading usage"))?;
    let latencies = tx
        .prepare_cached(
            "SELECT turn, host_in_ms, model_ms, host_out_ms, total_ms, stt_ms, llm_ms, tts_ms
             FROM latencies WHERE call = ?1 ORDER BY turn",
        )
        .and_then(|mut s| {
            s.query_map([pk], |r| {
                Ok(TurnLatency {
                    call_id: id.clone(),
                    turn: r.get(0)?,
                    host_in_ms: r.get(1)?,
                    model_ms: r.get(2)?,
                    host_out_ms: r.get(3)?,
                    total_ms: r.get(4)?,
                    stages: match (r.get(5)?, r.get(6)?, r.get(7)?) {
                        (Some(stt_ms), Some(llm_ms), Some(tts_ms)) => Some(StageLatency {
                            stt_ms,
                            llm_ms,
                            tts_ms,
                        }),
                        _ => None,
                    },
                })
            })?
            .collect()
        })
        .map_err(sql("reading latencies"))?;
    Ok(CallDetail {
        conversation: ConversationCounts::of(&events),
        call,
        events,
        transcript,
        usage,
        latencies,
    })
}
