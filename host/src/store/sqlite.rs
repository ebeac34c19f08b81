//! The embedded SQLite store.
//!
//! Durability: WAL with `synchronous = NORMAL`. A committed transaction survives a crash or kill
//! of the process (the WAL is in the OS page cache); an OS crash or power loss may lose the last
//! transactions (never corrupt the file), because NORMAL fsyncs only at checkpoints. That trade
//! buys commits in microseconds instead of one fsync each.
//!
//! Writes: one writer thread owns the only write connection and is fed by a channel. It takes
//! whatever is queued (up to [`MAX_BATCH`]) into one transaction and commits as soon as the
//! queue is empty, then answers every job of the batch; so a lone event is durable within a
//! commit's time and a busy host gets large batches for free. Reads run on a small pool of
//! read-only connections on blocking threads and never wait for the writer (WAL snapshots).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, params};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    CallDetail, CallEnd, CallFilter, CallPage, CallRecord, CallState, CallStore, DailyUsage,
    Direction, EventRecord, NewCall, Purged, Result, Role, StoreConfig, StoreError, TranscriptLine,
    TurnLatency, UsageItem, UsageRecord, Write, number_key, schema, sql,
};
use crate::domain::usage;

/// Most jobs in one transaction: bounds how long one commit holds everyone's answers.
const MAX_BATCH: usize = 2048;
/// Jobs waiting for the writer before senders wait (backpressure).
const QUEUE: usize = 8192;
/// Calls deleted per purge transaction, so a large purge does not stall live writes.
const PURGE_CHUNK: u32 = 500;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`CallStore`] on one SQLite file. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reads: Arc<ReadPool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Op {
    Write(Write),
    CloseAbandoned,
    Purge {
        cutoff_ms: i64,
    },
    /// Commit what is queued before it, then stop the writer.
    Shutdown,
}

impl Op {
    fn call_id(&self) -> Option<&str> {
        match self {
            Op::Write(w) => Some(w.call_id()),
            Op::CloseAbandoned | Op::Purge { .. } | Op::Shutdown => None,
        }
    }
}

enum Done {
    Unit,
    Seq(u64),
    Count(u64),
    Purged(Purged),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

impl SqliteStore {
    /// Open (creating the file and its folder if needed) and migrate the schema.
    pub fn open(config: &StoreConfig) -> Result<SqliteStore> {
        let path = config.path.clone();
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.into()))?;
        }
        let mut conn = Connection::open(&path).map_err(|e| open_err(e.into()))?;
        // First, so that another process holding the file briefly does not fail the open.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting the busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(
                format!("journal mode is {mode}, WAL unavailable").into(),
            ));
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(sql("setting pragmas"))?;
        schema::migrate(&mut conn)?;

        let (jobs, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("call-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| open_err(e.into()))?;
        let readers = config.read_connections.max(1) as usize;
        Ok(SqliteStore {
            jobs,
            reads: Arc::new(ReadPool {
                path,
                max: readers,
                permits: Semaphore::new(readers),
                idle: Mutex::new(Vec::with_capacity(readers)),
            }),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Commit everything queued, stop the writer and wait for it. Later writes fail with
    /// [`StoreError::Closed`]; reads keep working.
    pub async fn shutdown(&self) -> Result<()> {
        match self.write(Op::Shutdown).await {
            Ok(_) | Err(StoreError::Closed) => {}
            Err(e) => return Err(e),
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))?
                .map_err(|_| StoreError::Worker("the writer thread panicked".into()))?;
        }
        Ok(())
    }

    /// Queues `op` for the writer; its answer comes once its batch is committed.
    async fn submit(&self, op: Op) -> Result<oneshot::Receiver<Result<Done>>> {
        if let Op::Write(w) = &op {
            check(w)?;
        }
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

    async fn write(&self, op: Op) -> Result<Done> {
        self.submit(op)
            .await?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Writes an event or transcript line; its `seq` within the call.
    async fn append(&self, write: Write, what: &str) -> Result<u64> {
        match self.write(Op::Write(write)).await? {
            Done::Seq(seq) => Ok(seq),
            _ => Err(unexpected(what)),
        }
    }
}

/// Checks made before queueing, so the writer never fails half-way through a write.
fn check(write: &Write) -> Result<()> {
    match write {
        Write::Create(c) if c.id.is_empty() => {
            Err(StoreError::InvalidInput("empty call id".into()))
        }
        Write::Usage(u) => {
            for item in &u.items {
                let names = [&item.provider, &item.stage, &item.kind, &item.unit];
                if names.iter().any(|n| n.is_empty()) {
                    return Err(StoreError::InvalidInput(format!(
                        "usage item {item:?} has an empty name"
                    )));
                }
                // NaN would be stored as NULL; a negative amount is no usage.
                if !(item.amount.is_finite() && item.amount >= 0.0) {
                    return Err(StoreError::InvalidInput(format!(
                        "usage {} {} of {}: {} is not a finite amount >= 0",
                        item.kind, item.unit, item.provider, item.amount
                    )));
                }
            }
            // The call's totals are integers.
            to_i64(usage::tokens(&u.items, usage::INPUT), "input tokens")?;
            to_i64(usage::tokens(&u.items, usage::OUTPUT), "output tokens")?;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Worker(format!("unexpected writer answer to {what}"))
}

fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput(format!("{what} {value} too large")))
}

#[async_trait]
impl CallStore for SqliteStore {
    async fn create_call(&self, call: NewCall) -> Result<()> {
        self.write(Op::Write(Write::Create(call))).await.map(|_| ())
    }

    async fn set_answered(&self, call_id: &str, at_ms: i64) -> Result<()> {
        let call_id = call_id.to_string();
        self.write(Op::Write(Write::Answered { call_id, at_ms }))
            .await
            .map(|_| ())
    }

    async fn append_event(
        &self,
        call_id: &str,
        at_ms: i64,
        kind: &str,
        data: Value,
    ) -> Result<u64> {
        let (call_id, kind) = (call_id.to_string(), kind.to_string());
        let write = Write::Event {
            call_id,
            at_ms,
            kind,
            data,
        };
        self.append(write, "append_event").await
    }

    async fn append_transcript(
        &self,
        call_id: &str,
        at_ms: i64,
        role: Role,
        text: &str,
    ) -> Result<u64> {
        let (call_id, text) = (call_id.to_string(), text.to_string());
        let write = Write::Transcript {
            call_id,
            at_ms,
            role,
            text,
        };
        self.append(write, "append_transcript").await
    }

    async fn add_usage(&self, usage: UsageRecord) -> Result<()> {
        self.write(Op::Write(Write::Usage(usage))).await.map(|_| ())
    }

    async fn record_latency(&self, latency: TurnLatency) -> Result<()> {
        self.write(Op::Write(Write::Latency(latency)))
            .await
            .map(|_| ())
    }

    async fn set_recording(&self, call_id: &str, path: &str) -> Result<()> {
        let (call_id, path) = (call_id.to_string(), path.to_string());
        self.write(Op::Write(Write::Recording { call_id, path }))
            .await
            .map(|_| ())
    }

    async fn end_call(&self, call_id: &str, end: CallEnd) -> Result<()> {
        let call_id = call_id.to_string();
        self.write(Op::Write(Write::End { call_id, end }))
            .await
            .map(|_| ())
    }

    async fn write_all(&self, writes: Vec<Write>) -> Vec<Result<()>> {
        // Everything is queued before any answer is awaited, so the writes share commits.
        let mut answers = Vec::with_capacity(writes.len());
        for w in writes {
            answers.push(self.submit(Op::Write(w)).await);
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            let result = match answer {
                Ok(answer) => match answer.await {
                    Ok(done) => done.map(|_| ()),
                    Err(_) => Err(StoreError::Closed),
                },
                Err(e) => Err(e),
            };
            results.push(result);
        }
        results
    }

    async fn get_call(&self, call_id: &str) -> Result<CallDetail> {
        let call_id = call_id.to_string();
        self.reads.run(move |conn| read_call(conn, &call_id)).await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage> {
        let query = ListQuery::new(filter)?;
        self.reads.run(move |conn| query.run(conn)).await
    }

    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>> {
        self.reads
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT date(at_ms / 1000, 'unixepoch') AS day,
                                CAST(TOTAL(amount) FILTER (WHERE kind = ?3) AS INTEGER),
                                CAST(TOTAL(amount) FILTER (WHERE kind = ?4) AS INTEGER)
                         FROM usage_items
                         WHERE at_ms >= ?1 AND at_ms < ?2 AND unit = ?5 AND kind IN (?3, ?4)
                         GROUP BY day ORDER BY day",
                    )
                    .map_err(sql("preparing usage per day"))?;
                let rows = stmt
                    .query_map(
                        params![from_ms, to_ms, usage::INPUT, usage::OUTPUT, usage::TOKENS],
                        |r| {
                            Ok(DailyUsage {
                                day: r.get(0)?,
                                input_tokens: r.get(1)?,
                                output_tokens: r.get(2)?,
                            })
                        },
                    )
                    .map_err(sql("reading usage per day"))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(sql("reading usage per day"))
            })
            .await
    }

    async fn close_abandoned_calls(&self) -> Result<u64> {
        match self.write(Op::CloseAbandoned).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected("close_abandoned_calls")),
        }
    }

    async fn purge_older_than(&self, cutoff_ms: i64) -> Result<Purged> {
        let mut total = Purged::default();
        // Chunks, each its own job, so live writes interleave with a large purge.
        loop {
            let Done::Purged(chunk) = self.write(Op::Purge { cutoff_ms }).await? else {
                return Err(unexpected("purge_older_than"));
            };
            total.calls += chunk.calls;
            total.recordings.extend(chunk.recordings);
            if chunk.calls < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

/// Per call: its `pk` and the last `seq` handed out. Only the writer assigns `seq`, so this map
/// is the truth for the calls it holds and spares a calls-row update per event. Filled on
/// create (or on first use after a restart), dropped on end; cleared whenever a batch fails
/// (its entries may describe rows that were rolled back) and on purge.
type Seqs = HashMap<String, (i64, u64)>;

/// Bound on [`Seqs`] for calls that keep getting entries after they ended.
const MAX_CACHED_CALLS: usize = 20_000;

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut seqs = Seqs::new();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping && let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if seqs.len() > MAX_CACHED_CALLS {
            seqs.clear();
        }
        let results = apply_batch(&mut conn, &mut seqs, &batch);
        for (job, result) in batch.drain(..).zip(results) {
            stopping |= matches!(job.op, Op::Shutdown);
            // The caller may have stopped waiting; the write stands either way.
            let _ = job.reply.send(result);
        }
    }
    tracing::debug!("call store writer stopped");
}

/// Apply every job in one transaction; a failed job leaves no trace and does not fail the
/// others, a failed commit fails them all.
fn apply_batch(conn: &mut Connection, seqs: &mut Seqs, jobs: &[Job]) -> Vec<Result<Done>> {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "call store cannot begin a transaction");
            return jobs
                .iter()
                .map(|_| Err(StoreError::Commit(e.to_string())))
                .collect();
        }
    };
    let mut results = Vec::with_capacity(jobs.len());
    let mut aborted: Option<String> = None;
    for job in jobs {
        if let Some(reason) = &aborted {
            results.push(Err(StoreError::Commit(reason.clone())));
            continue;
        }
        let result = apply(&tx, seqs, &job.op);
        if let Err(e) = &result {
            tracing::debug!(call_id = job.op.call_id(), error = %e, "call store write refused");
            // Some errors (disk full, I/O) make SQLite roll the whole transaction back; then
            // nothing before or after in this batch may be reported as written.
            if tx.is_autocommit() {
                aborted = Some(e.to_string());
            }
        }
        results.push(result);
    }
    let failure = match aborted {
        Some(reason) => Some(reason),
        None => tx.commit().err().map(|e| e.to_string()),
    };
    if let Some(reason) = failure {
        tracing::error!(error = %reason, jobs = jobs.len(), "call store batch not committed");
        seqs.clear();
        for r in &mut results {
            if r.is_ok() {
                *r = Err(StoreError::Commit(reason.clone()));
            }
        }
    }
    results
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn not_found(call_id: &str) -> StoreError {
    StoreError::NotFound {
        call_id: call_id.to_string(),
    }
}

/// The call's `pk` and its next `seq`.
fn next_seq(tx: &Transaction, seqs: &mut Seqs, call_id: &str) -> Result<(i64, u64)> {
    if let Some((pk, seq)) = seqs.get_mut(call_id) {
        *seq += 1;
        return Ok((*pk, *seq));
    }
    let (pk, last): (i64, u64) = tx
        .prepare_cached(
            "SELECT pk, MAX(
                 (SELECT COALESCE(MAX(seq), 0) FROM events WHERE call = pk),
                 (SELECT COALESCE(MAX(seq), 0) FROM transcripts WHERE call = pk))
             FROM calls WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([call_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql("numbering an entry"))?
        .ok_or_else(|| not_found(call_id))?;
    seqs.insert(call_id.to_string(), (pk, last + 1));
    Ok((pk, last + 1))
}

fn call_pk(tx: &Transaction, call_id: &str) -> Result<i64> {
    tx.prepare_cached("SELECT pk FROM calls WHERE id = ?1")
        .and_then(|mut s| s.query_row([call_id], |r| r.get(0)).optional())
        .map_err(sql("finding a call"))?
        .ok_or_else(|| not_found(call_id))
}

fn apply(tx: &Transaction, seqs: &mut Seqs, op: &Op) -> Result<Done> {
    match op {
        Op::Write(w) => apply_write(tx, seqs, w),
        Op::CloseAbandoned => {
            let n = tx
                .execute(
                    "UPDATE calls SET state = 'ended_abnormally', end_reason = 'host restarted',
                         ended_at_ms = MAX(started_at_ms, COALESCE(answered_at_ms, 0),
                             (SELECT COALESCE(MAX(at_ms), 0) FROM events WHERE call = pk),
                             (SELECT COALESCE(MAX(at_ms), 0) FROM transcripts WHERE call = pk),
                             (SELECT COALESCE(MAX(at_ms), 0) FROM usage_items WHERE call = pk))
                     WHERE state = 'active'",
                    [],
                )
                .map_err(sql("closing abandoned calls"))?;
            Ok(Done::Count(n as u64))
        }
        Op::Purge { cutoff_ms } => {
            let victims: Vec<(i64, Option<String>)> = tx
                .prepare_cached(
                    "SELECT pk, recording FROM calls
                     WHERE started_at_ms < ?1 AND state != 'active'
                     ORDER BY started_at_ms LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![cutoff_ms, PURGE_CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(sql("finding calls to purge"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM calls WHERE pk = ?1")
                .map_err(sql("purging calls"))?;
            // Deleted calls may still be cached (entries after their end).
            seqs.clear();
            let mut purged = Purged::default();
            for (pk, recording) in victims {
                delete.execute([pk]).map_err(sql("purging calls"))?;
                purged.calls += 1;
                purged.recordings.extend(recording);
            }
            Ok(Done::Purged(purged))
        }
        Op::Shutdown => Ok(Done::Unit),
    }
}

fn apply_write(tx: &Transaction, seqs: &mut Seqs, write: &Write) -> Result<Done> {
    match write {
        Write::Create(c) => {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO calls (id, direction, caller, callee, caller_key, callee_key,
                         agent, agent_version, started_at_ms, state, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        c.id,
                        direction_str(c.direction),
                        c.caller,
                        c.callee,
                        number_key(&c.caller),
                        number_key(&c.callee),
                        c.agent,
                        c.agent_version,
                        c.started_at_ms,
                        c.metadata.to_string(),
                    ])
                });
            match inserted {
                Ok(_) => {
                    seqs.insert(c.id.clone(), (tx.last_insert_rowid(), 0));
                    Ok(Done::Unit)
                }
                Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                    call_id: c.id.clone(),
                }),
                Err(e) => Err(sql("creating a call")(e)),
            }
        }
        Write::Answered { call_id, at_ms } => {
            let n = tx
                .prepare_cached("UPDATE calls SET answered_at_ms = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![call_id, at_ms]))
                .map_err(sql("marking a call answered"))?;
            if n == 0 {
                return Err(not_found(call_id));
            }
            Ok(Done::Unit)
        }
        Write::Event {
            call_id,
            at_ms,
            kind,
            data,
        } => {
            let (pk, seq) = next_seq(tx, seqs, call_id)?;
            tx.prepare_cached(
                "INSERT INTO events (call, seq, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![pk, seq, at_ms, kind, data.to_string()]))
            .map_err(sql("appending an event"))?;
            Ok(Done::Seq(seq))
        }
        Write::Transcript {
            call_id,
            at_ms,
            role,
            text,
        } => {
            let (pk, seq) = next_seq(tx, seqs, call_id)?;
            tx.prepare_cached(
                "INSERT INTO transcripts (call, seq, at_ms, role, text)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![pk, seq, at_ms, role_str(*role), text]))
            .map_err(sql("appending a transcript line"))?;
            Ok(Done::Seq(seq))
        }
        Write::Usage(u) => {
            // Totals and amounts were checked before queueing, so nothing below fails on them.
            let (input, output) = (
                usage::tokens(&u.items, usage::INPUT),
                usage::tokens(&u.items, usage::OUTPUT),
            );
            let pk: i64 = tx
                .prepare_cached(
                    "UPDATE calls SET input_tokens = input_tokens + ?2,
                         output_tokens = output_tokens + ?3
                     WHERE id = ?1 RETURNING pk",
                )
                .and_then(|mut s| {
                    s.query_row(params![u.call_id, input, output], |r| r.get(0))
                        .optional()
                })
                .map_err(sql("adding usage"))?
                .ok_or_else(|| not_found(&u.call_id))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO usage_items (call, at_ms, provider, stage, kind, unit, amount)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql("storing usage"))?;
            for i in &u.items {
                insert
                    .execute(params![
                        pk, u.at_ms, i.provider, i.stage, i.kind, i.unit, i.amount
                    ])
                    .map_err(sql("storing usage"))?;
            }
            Ok(Done::Unit)
        }
        Write::Latency(l) => {
            let pk = call_pk(tx, &l.call_id)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO latencies
                     (call, turn, host_in_ms, model_ms, host_out_ms, total_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    pk,
                    l.turn,
                    l.host_in_ms,
                    l.model_ms,
                    l.host_out_ms,
                    l.total_ms
                ])
            })
            .map_err(sql("storing a turn latency"))?;
            Ok(Done::Unit)
        }
        Write::Recording { call_id, path } => {
            let n = tx
                .prepare_cached("UPDATE calls SET recording = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![call_id, path]))
                .map_err(sql("indexing a recording"))?;
            if n == 0 {
                return Err(not_found(call_id));
            }
            Ok(Done::Unit)
        }
        Write::End { call_id, end } => {
            let state = if end.abnormal {
                CallState::EndedAbnormally
            } else {
                CallState::Ended
            };
            let n = tx
                .prepare_cached(
                    "UPDATE calls SET state = ?2, ended_at_ms = ?3, end_reason = ?4, outcome = ?5
                     WHERE id = ?1 AND state = 'active'",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        call_id,
                        state_str(state),
                        end.at_ms,
                        end.reason,
                        end.outcome
                    ])
                })
                .map_err(sql("ending a call"))?;
            if n == 0 {
                call_pk(tx, call_id)?;
                return Err(StoreError::AlreadyEnded {
                    call_id: call_id.clone(),
                });
            }
            seqs.remove(call_id);
            Ok(Done::Unit)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

struct ReadPool {
    path: PathBuf,
    max: usize,
    /// One permit per connection the pool may hold.
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// Run `f` on an idle read connection (opened on first need) on a blocking thread.
    async fn run<T: Send + 'static>(
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

fn open_reader(path: &Path) -> Result<Connection> {
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

const CALL_COLUMNS: &str = "id, direction, caller, callee, agent, agent_version, started_at_ms,
    answered_at_ms, ended_at_ms, state, end_reason, outcome, recording, input_tokens,
    output_tokens, metadata, pk";

fn conversion(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.into())
}

fn json_column(row: &Row, col: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(col)?;
    serde_json::from_str(&text).map_err(|e| conversion(col, e.to_string()))
}

/// A row selected with [`CALL_COLUMNS`].
fn call_from_row(row: &Row) -> rusqlite::Result<CallRecord> {
    let direction: String = row.get(1)?;
    let state: String = row.get(9)?;
    Ok(CallRecord {
        id: row.get(0)?,
        direction: match direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            other => return Err(conversion(1, format!("unknown direction {other:?}"))),
        },
        caller: row.get(2)?,
        callee: row.get(3)?,
        agent: row.get(4)?,
        agent_version: row.get(5)?,
        started_at_ms: row.get(6)?,
        answered_at_ms: row.get(7)?,
        ended_at_ms: row.get(8)?,
        state: match state.as_str() {
            "active" => CallState::Active,
            "ended" => CallState::Ended,
            "ended_abnormally" => CallState::EndedAbnormally,
            other => return Err(conversion(9, format!("unknown state {other:?}"))),
        },
        end_reason: row.get(10)?,
        outcome: row.get(11)?,
        recording: row.get(12)?,
        input_tokens: row.get(13)?,
        output_tokens: row.get(14)?,
        metadata: json_column(row, 15)?,
    })
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

fn state_str(s: CallState) -> &'static str {
    match s {
        CallState::Active => "active",
        CallState::Ended => "ended",
        CallState::EndedAbnormally => "ended_abnormally",
    }
}

fn role_str(r: Role) -> &'static str {
    match r {
        Role::Caller => "caller",
        Role::Agent => "agent",
    }
}

fn read_call(conn: &Connection, call_id: &str) -> Result<CallDetail> {
    // One read transaction: a consistent snapshot of the call and its rows.
    let tx = conn
        .unchecked_transaction()
        .map_err(sql("starting a read"))?;
    let (call, pk) = tx
        .prepare_cached(&format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([call_id], |r| Ok((call_from_row(r)?, r.get::<_, i64>(16)?)))
                .optional()
        })
        .map_err(sql("reading a call"))?
        .ok_or_else(|| not_found(call_id))?;
    let id = call.id.clone();
    let events = tx
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
                    role: match role.as_str() {
                        "caller" => Role::Caller,
                        "agent" => Role::Agent,
                        other => return Err(conversion(2, format!("unknown role {other:?}"))),
                    },
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
            "SELECT turn, host_in_ms, model_ms, host_out_ms, total_ms
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
                })
            })?
            .collect()
        })
        .map_err(sql("reading latencies"))?;
    Ok(CallDetail {
        call,
        events,
        transcript,
        usage,
        latencies,
    })
}

/// Add a parameter; returns its placeholder.
fn bind(params: &mut Vec<SqlValue>, value: SqlValue) -> String {
    params.push(value);
    format!("?{}", params.len())
}

/// A validated [`CallFilter`] as SQL and parameters.
struct ListQuery {
    sql: String,
    params: Vec<SqlValue>,
    limit: usize,
}

impl ListQuery {
    fn new(filter: &CallFilter) -> Result<ListQuery> {
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

    fn run(self, conn: &Connection) -> Result<CallPage> {
        let mut stmt = conn
            .prepare_cached(&self.sql)
            .map_err(sql("listing calls"))?;
        let mut rows: Vec<(CallRecord, i64)> = stmt
            .query_map(rusqlite::params_from_iter(self.params), |r| {
                Ok((call_from_row(r)?, r.get(16)?))
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
pub(super) fn explain_list(path: &Path, filter: &CallFilter) -> Result<Vec<String>> {
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
