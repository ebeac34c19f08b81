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

mod campaigns;
mod list;
mod overlay;
mod reads;
mod rows;
mod webhooks;
mod writer;
mod writes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, params};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::campaigns::{
    AttemptEnd, AttemptRecord, CampaignProgress, CampaignRecord, CampaignState, CampaignStore,
    ContactRecord, DncEntry, NewContact,
};
use super::{
    AuditRecord, CallDetail, CallEnd, CallFilter, CallPage, CallStore, ConfigChange, DailyUsage,
    NewCall, OverlayEntry, Purged, Result, Role, StoreConfig, StoreError, TurnLatency, UsageRecord,
    Write, schema, sql,
};
use crate::domain::usage;
use crate::store::webhooks::{
    AttemptOutcome, Delivery, DeliveryAttempt, NewDelivery, WebhookQueue,
};
use campaigns::CampaignOp;
use list::ListQuery;
#[cfg(test)]
pub(super) use list::explain_list;
use reads::{ReadPool, read_call};
use webhooks::{QueueDone, QueueOp};
use writer::writer_loop;

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
    /// A live configuration change with its audit record.
    Config(Box<ConfigChange>),
    /// A change to the webhook delivery queue.
    Queue(webhooks::QueueOp),
    Campaign(Box<campaigns::CampaignOp>),
    /// Commit what is queued before it, then stop the writer.
    Shutdown,
}

impl Op {
    fn call_id(&self) -> Option<&str> {
        match self {
            Op::Write(w) => Some(w.call_id()),
            Op::CloseAbandoned
            | Op::Purge { .. }
            | Op::Config(_)
            | Op::Queue(_)
            | Op::Campaign(_)
            | Op::Shutdown => None,
        }
    }
}

enum Done {
    Unit,
    Seq(u64),
    Count(u64),
    Purged(Purged),
    Audit(AuditRecord),
    Queue(webhooks::QueueDone),
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

    async fn queue(&self, op: webhooks::QueueOp, what: &str) -> Result<webhooks::QueueDone> {
        match self.write(Op::Queue(op)).await? {
            Done::Queue(done) => Ok(done),
            _ => Err(unexpected(what)),
        }
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

fn not_found(call_id: &str) -> StoreError {
    StoreError::NotFound {
        call_id: call_id.to_string(),
    }
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

    async fn set_agent(&self, call_id: &str, agent: &str, agent_version: &str) -> Result<()> {
        let (call_id, agent, agent_version) = (call_id.into(), agent.into(), agent_version.into());
        self.write(Op::Write(Write::Agent {
            call_id,
            agent,
            agent_version,
        }))
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
            total.deliveries += chunk.deliveries;
            if chunk.calls < u64::from(PURGE_CHUNK) && chunk.deliveries < u64::from(PURGE_CHUNK) {
                return Ok(total);
            }
        }
    }

    async fn record_config_change(&self, change: ConfigChange) -> Result<AuditRecord> {
        match self.write(Op::Config(Box::new(change))).await? {
            Done::Audit(record) => Ok(record),
            _ => Err(unexpected("record_config_change")),
        }
    }

    async fn config_overlay(&self) -> Result<Vec<OverlayEntry>> {
        self.reads.run(overlay::read_overlay).await
    }

    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.reads
            .run(move |conn| overlay::read_audit(conn, limit))
            .await
    }
}

#[async_trait]
impl WebhookQueue for SqliteStore {
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<Vec<bool>> {
        match self.queue(QueueOp::Enqueue(deliveries), "enqueue").await? {
            QueueDone::Queued(queued) => Ok(queued),
            _ => Err(unexpected("enqueue")),
        }
    }

    async fn claim(
        &self,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let node = node.to_string();
        let op = QueueOp::Claim {
            node,
            now_ms,
            lease_ms,
            limit,
        };
        match self.queue(op, "claim").await? {
            QueueDone::Rows(rows) => Ok(rows),
            _ => Err(unexpected("claim")),
        }
    }

    async fn record_attempt(
        &self,
        id: i64,
        node: &str,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        let node = node.to_string();
        let op = QueueOp::Attempt {
            id,
            node,
            attempt,
            outcome,
        };
        match self.queue(op, "record_attempt").await? {
            QueueDone::Kept(kept) => Ok(kept),
            _ => Err(unexpected("record_attempt")),
        }
    }

    async fn deliveries(&self, webhook: &str, limit: u32) -> Result<Vec<Delivery>> {
        let webhook = webhook.to_string();
        self.reads
            .run(move |conn| webhooks::read_latest(conn, Some(&webhook), limit))
            .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<Delivery>> {
        self.reads
            .run(move |conn| webhooks::read_latest(conn, None, limit))
            .await
    }

    async fn resend(&self, id: i64, now_ms: i64) -> Result<Delivery> {
        match self.queue(QueueOp::Resend { id, now_ms }, "resend").await? {
            QueueDone::Row(row) => Ok(*row),
            _ => Err(unexpected("resend")),
        }
    }
}

impl SqliteStore {
    async fn campaign_write(&self, op: campaigns::CampaignOp) -> Result<Done> {
        self.write(Op::Campaign(Box::new(op))).await
    }

    /// A campaign write whose answer is a count.
    async fn campaign_count(&self, op: campaigns::CampaignOp, what: &str) -> Result<u64> {
        match self.campaign_write(op).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected(what)),
        }
    }
}

#[async_trait]
impl CampaignStore for SqliteStore {
    async fn create_campaign(
        &self,
        campaign: CampaignRecord,
        contacts: Vec<NewContact>,
    ) -> Result<()> {
        let op = CampaignOp::Create { campaign, contacts };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn set_campaign_state(
        &self,
        id: &str,
        state: CampaignState,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<()> {
        let (id, reason) = (id.to_string(), reason.map(String::from));
        let op = CampaignOp::State {
            id,
            state,
            reason,
            at_ms,
        };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>> {
        self.reads.run(campaigns::list).await
    }

    async fn campaign(&self, id: &str) -> Result<CampaignProgress> {
        let id = id.to_string();
        self.reads.run(move |conn| campaigns::get(conn, &id)).await
    }

    async fn campaign_contacts(
        &self,
        id: &str,
    ) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
        let id = id.to_string();
        self.reads
            .run(move |conn| campaigns::contacts(conn, &id))
            .await
    }

    async fn due_contacts(&self, id: &str, now_ms: i64, limit: u32) -> Result<Vec<ContactRecord>> {
        let id = id.to_string();
        self.reads
            .run(move |conn| campaigns::due(conn, &id, now_ms, limit))
            .await
    }

    async fn dialing_contacts(&self, id: &str) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
        let id = id.to_string();
        self.reads
            .run(move |conn| campaigns::dialing(conn, &id))
            .await
    }

    async fn begin_attempt(&self, id: &str, contact: u32, at_ms: i64, day: &str) -> Result<u32> {
        let (id, day) = (id.to_string(), day.to_string());
        let op = CampaignOp::BeginAttempt {
            id,
            contact,
            at_ms,
            day,
        };
        let n = self.campaign_count(op, "begin_attempt").await?;
        u32::try_from(n).map_err(|_| unexpected("begin_attempt"))
    }

    async fn set_attempt_call(
        &self,
        id: &str,
        contact: u32,
        attempt: u32,
        call_id: &str,
    ) -> Result<()> {
        let (id, call_id) = (id.to_string(), call_id.to_string());
        let op = CampaignOp::AttemptCall {
            id,
            contact,
            attempt,
            call_id,
        };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn end_attempt(
        &self,
        id: &str,
        contact: u32,
        attempt: u32,
        end: AttemptEnd,
    ) -> Result<()> {
        let id = id.to_string();
        let op = CampaignOp::EndAttempt {
            id,
            contact,
            attempt,
            end,
        };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn skip_contact(&self, id: &str, contact: u32, outcome: &str, at_ms: i64) -> Result<()> {
        let (id, outcome) = (id.to_string(), outcome.to_string());
        let op = CampaignOp::Skip {
            id,
            contact,
            outcome,
            at_ms,
        };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn defer_contact(&self, id: &str, contact: u32, next_at_ms: i64) -> Result<()> {
        let id = id.to_string();
        let op = CampaignOp::Defer {
            id,
            contact,
            next_at_ms,
        };
        self.campaign_write(op).await.map(|_| ())
    }

    async fn close_pending(&self, id: &str, outcome: &str, at_ms: i64) -> Result<u32> {
        let (id, outcome) = (id.to_string(), outcome.to_string());
        let op = CampaignOp::ClosePending { id, outcome, at_ms };
        let n = self.campaign_count(op, "close_pending").await?;
        Ok(n as u32)
    }

    async fn dnc_add(&self, numbers: Vec<String>, source: &str, at_ms: i64) -> Result<u32> {
        let source = source.to_string();
        let op = CampaignOp::DncAdd {
            numbers,
            source,
            at_ms,
        };
        let n = self.campaign_count(op, "dnc_add").await?;
        Ok(n as u32)
    }

    async fn dnc_remove(&self, number: &str) -> Result<bool> {
        let number = number.to_string();
        let n = self
            .campaign_count(CampaignOp::DncRemove { number }, "dnc_remove")
            .await?;
        Ok(n > 0)
    }

    async fn dnc_contains(&self, number: &str) -> Result<bool> {
        let number = number.to_string();
        self.reads
            .run(move |conn| campaigns::dnc_contains(conn, &number))
            .await
    }

    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>> {
        self.reads
            .run(move |conn| campaigns::dnc_list(conn, limit))
            .await
    }
}
