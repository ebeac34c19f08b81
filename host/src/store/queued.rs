//! The front end both back ends share: every write becomes an [`Op`] on one queue, read by the
//! back end's single writer, which takes whatever is queued (up to [`MAX_BATCH`]) into one
//! transaction, commits, then answers every job of the batch. So a write resolves only once
//! committed, a lone event is durable within a commit's time, and a busy host gets large
//! batches for free. Reads go to the back end's [`Reads`] directly, never through the queue.

use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::campaigns::{
    AttemptEnd, AttemptRecord, CampaignProgress, CampaignRecord, CampaignState, CampaignStore,
    ContactRecord, DncEntry, NewContact,
};
use super::nodes::NodeStore;
use super::webhooks::{AttemptOutcome, Delivery, DeliveryAttempt, NewDelivery, WebhookQueue};
use super::{
    AuditRecord, CallDetail, CallEnd, CallFilter, CallPage, CallStore, ConfigChange, DailyUsage,
    NewCall, OverlayEntry, Purged, Result, Role, Store, StoreError, TurnLatency, UsageRecord,
    Write,
};
use crate::domain::usage;

/// Most jobs in one transaction: bounds how long one commit holds everyone's answers.
pub(super) const MAX_BATCH: usize = 2048;
/// Jobs waiting for the writer before senders wait (backpressure).
const QUEUE: usize = 8192;
/// Calls deleted per purge transaction, so a large purge does not stall live writes.
pub(super) const PURGE_CHUNK: u32 = 500;
pub(super) const DEFAULT_PAGE: u32 = 50;
pub(super) const MAX_PAGE: u32 = 1000;

/// One job for the writer.
pub(super) enum Op {
    Write(Write),
    CloseAbandoned {
        node: String,
    },
    /// A node's lease, or the sweep of lapsed nodes' calls.
    Node(NodeOp),
    Purge {
        cutoff_ms: i64,
    },
    /// A live configuration change with its audit record.
    Config(Box<ConfigChange>),
    /// A change to the webhook delivery queue.
    Queue(QueueOp),
    Campaign(Box<CampaignOp>),
    /// Commit what is queued before it, then stop the writer.
    Shutdown,
}

impl Op {
    pub(super) fn call_id(&self) -> Option<&str> {
        match self {
            Op::Write(w) => Some(w.call_id()),
            Op::CloseAbandoned { .. }
            | Op::Node(_)
            | Op::Purge { .. }
            | Op::Config(_)
            | Op::Queue(_)
            | Op::Campaign(_)
            | Op::Shutdown => None,
        }
    }
}

/// A campaign write.
pub(super) enum CampaignOp {
    Create {
        campaign: CampaignRecord,
        contacts: Vec<NewContact>,
    },
    State {
        id: String,
        state: CampaignState,
        reason: Option<String>,
        at_ms: i64,
    },
    BeginAttempt {
        id: String,
        contact: u32,
        at_ms: i64,
        day: String,
    },
    AttemptCall {
        id: String,
        contact: u32,
        attempt: u32,
        call_id: String,
    },
    EndAttempt {
        id: String,
        contact: u32,
        attempt: u32,
        end: AttemptEnd,
    },
    Skip {
        id: String,
        contact: u32,
        outcome: String,
        at_ms: i64,
    },
    Defer {
        id: String,
        contact: u32,
        next_at_ms: i64,
    },
    ClosePending {
        id: String,
        outcome: String,
        at_ms: i64,
    },
    DncAdd {
        numbers: Vec<String>,
        source: String,
        at_ms: i64,
    },
    DncRemove {
        number: String,
    },
}

/// A write about the nodes sharing the store (see [`NodeStore`]).
pub(super) enum NodeOp {
    Renew {
        node: String,
        expires_at_ms: i64,
    },
    Release {
        node: String,
    },
    CloseLapsed {
        alive: String,
        now_ms: i64,
    },
    HoldAccount {
        account: String,
        node: String,
        now_ms: i64,
        expires_at_ms: i64,
    },
    ReleaseAccounts {
        node: String,
    },
}

/// A change to the webhook delivery queue.
pub(super) enum QueueOp {
    Enqueue(Vec<NewDelivery>),
    Claim {
        node: String,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    },
    Attempt {
        id: i64,
        node: String,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    },
    Resend {
        id: i64,
        now_ms: i64,
    },
}

/// What the writer answers to a [`QueueOp`].
pub(super) enum QueueDone {
    Queued(Vec<bool>),
    Rows(Vec<Delivery>),
    Kept(bool),
    Row(Box<Delivery>),
}

/// What the writer answers to an [`Op`].
pub(super) enum Done {
    Unit,
    Seq(u64),
    Count(u64),
    Purged(Purged),
    Audit(AuditRecord),
    Queue(QueueDone),
}

pub(super) struct Job {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Done>>,
}

/// What a back end serves itself, not through the writer's queue: the read halves of the
/// store traits, and the node claim.
#[async_trait]
pub trait Reads: Send + Sync + 'static {
    async fn get_call(&self, call_id: String) -> Result<CallDetail>;
    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage>;
    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>>;
    async fn config_overlay(&self) -> Result<Vec<OverlayEntry>>;
    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>>;
    /// The latest deliveries, newest first: of one webhook, or the dead ones of all.
    async fn latest_deliveries(&self, webhook: Option<String>, limit: u32)
    -> Result<Vec<Delivery>>;
    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>>;
    async fn campaign(&self, id: String) -> Result<CampaignProgress>;
    async fn campaign_contacts(
        &self,
        id: String,
    ) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>>;
    async fn due_contacts(&self, id: String, now_ms: i64, limit: u32)
    -> Result<Vec<ContactRecord>>;
    async fn dialing_contacts(&self, id: String) -> Result<Vec<(ContactRecord, AttemptRecord)>>;
    async fn dnc_contains(&self, number: String) -> Result<bool>;
    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>>;
    /// [`NodeStore::claim_node`]: not a write for the queue, a lock the back end holds.
    async fn claim_node(&self, node: String) -> Result<()>;
}

/// The back end's writer, to wait for at shutdown.
pub(super) enum Writer {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

/// A store whose writes go through one queue to its back end's writer and whose reads go to
/// `R`. Cheap to share behind an `Arc`.
pub struct QueuedStore<R> {
    jobs: mpsc::Sender<Job>,
    pub(super) reads: R,
    writer: Mutex<Option<Writer>>,
}

/// The queue a back end's writer reads, and the sender the store keeps.
pub(super) fn queue() -> (mpsc::Sender<Job>, mpsc::Receiver<Job>) {
    mpsc::channel(QUEUE)
}

impl<R: Reads> QueuedStore<R> {
    pub(super) fn new(jobs: mpsc::Sender<Job>, reads: R, writer: Writer) -> QueuedStore<R> {
        QueuedStore {
            jobs,
            reads,
            writer: Mutex::new(Some(writer)),
        }
    }

    /// Commit everything queued, stop the writer and wait for it. Later writes fail with
    /// [`StoreError::Closed`]; reads keep working.
    pub async fn shutdown(&self) -> Result<()> {
        match self.write(Op::Shutdown).await {
            Ok(_) | Err(StoreError::Closed) => {}
            Err(e) => return Err(e),
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        let panicked = || StoreError::Worker("the writer panicked".into());
        match writer {
            Some(Writer::Thread(handle)) => tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))?
                .map_err(|_| panicked()),
            Some(Writer::Task(handle)) => handle.await.map_err(|_| panicked()),
            None => Ok(()),
        }
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

    async fn unit(&self, op: Op) -> Result<()> {
        self.write(op).await.map(|_| ())
    }

    async fn count(&self, op: Op, what: &str) -> Result<u64> {
        match self.write(op).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected(what)),
        }
    }

    async fn queue(&self, op: QueueOp, what: &str) -> Result<QueueDone> {
        match self.write(Op::Queue(op)).await? {
            Done::Queue(done) => Ok(done),
            _ => Err(unexpected(what)),
        }
    }

    /// Writes an event or transcript line; its `seq` within the call.
    async fn append(&self, write: Write, what: &str) -> Result<u64> {
        match self.write(Op::Write(write)).await? {
            Done::Seq(seq) => Ok(seq),
            _ => Err(unexpected(what)),
        }
    }

    fn campaign(op: CampaignOp) -> Op {
        Op::Campaign(Box::new(op))
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

pub(super) fn not_found(call_id: &str) -> StoreError {
    StoreError::NotFound {
        call_id: call_id.to_string(),
    }
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput(format!("{what} {value} too large")))
}

#[async_trait]
impl<R: Reads> Store for QueuedStore<R> {
    async fn shutdown(&self) -> Result<()> {
        QueuedStore::shutdown(self).await
    }
}

#[async_trait]
impl<R: Reads> CallStore for QueuedStore<R> {
    async fn create_call(&self, call: NewCall) -> Result<()> {
        self.unit(Op::Write(Write::Create(call))).await
    }

    async fn set_answered(&self, call_id: &str, at_ms: i64) -> Result<()> {
        let call_id = call_id.to_string();
        self.unit(Op::Write(Write::Answered { call_id, at_ms }))
            .await
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
        self.unit(Op::Write(Write::Usage(usage))).await
    }

    async fn record_latency(&self, latency: TurnLatency) -> Result<()> {
        self.unit(Op::Write(Write::Latency(latency))).await
    }

    async fn set_recording(&self, call_id: &str, path: &str) -> Result<()> {
        let (call_id, path) = (call_id.to_string(), path.to_string());
        self.unit(Op::Write(Write::Recording { call_id, path }))
            .await
    }

    async fn set_agent(&self, call_id: &str, agent: &str, agent_version: &str) -> Result<()> {
        let (call_id, agent, agent_version) = (call_id.into(), agent.into(), agent_version.into());
        self.unit(Op::Write(Write::Agent {
            call_id,
            agent,
            agent_version,
        }))
        .await
    }

    async fn end_call(&self, call_id: &str, end: CallEnd) -> Result<()> {
        let call_id = call_id.to_string();
        self.unit(Op::Write(Write::End { call_id, end })).await
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
        self.reads.get_call(call_id.to_string()).await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage> {
        self.reads.list_calls(filter).await
    }

    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>> {
        self.reads.usage_per_day(from_ms, to_ms).await
    }

    async fn close_abandoned_calls(&self, node: &str) -> Result<u64> {
        let node = node.to_string();
        self.count(Op::CloseAbandoned { node }, "close_abandoned_calls")
            .await
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
        self.reads.config_overlay().await
    }

    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.reads.config_audit(limit).await
    }
}

#[async_trait]
impl<R: Reads> NodeStore for QueuedStore<R> {
    async fn claim_node(&self, node: &str) -> Result<()> {
        self.reads.claim_node(node.to_string()).await
    }

    async fn renew_node_lease(&self, node: &str, expires_at_ms: i64) -> Result<()> {
        let node = node.to_string();
        self.unit(Op::Node(NodeOp::Renew {
            node,
            expires_at_ms,
        }))
        .await
    }

    async fn release_node_lease(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.unit(Op::Node(NodeOp::Release { node })).await
    }

    async fn close_calls_of_lapsed_nodes(&self, alive: &str, now_ms: i64) -> Result<u64> {
        let alive = alive.to_string();
        let op = Op::Node(NodeOp::CloseLapsed { alive, now_ms });
        self.count(op, "close_calls_of_lapsed_nodes").await
    }

    async fn hold_account(
        &self,
        account: &str,
        node: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool> {
        let op = Op::Node(NodeOp::HoldAccount {
            account: account.to_string(),
            node: node.to_string(),
            now_ms,
            expires_at_ms,
        });
        Ok(self.count(op, "hold_account").await? == 1)
    }

    async fn release_accounts(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.unit(Op::Node(NodeOp::ReleaseAccounts { node })).await
    }
}

#[async_trait]
impl<R: Reads> WebhookQueue for QueuedStore<R> {
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
        self.reads
            .latest_deliveries(Some(webhook.to_string()), limit)
            .await
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<Delivery>> {
        self.reads.latest_deliveries(None, limit).await
    }

    async fn resend(&self, id: i64, now_ms: i64) -> Result<Delivery> {
        match self.queue(QueueOp::Resend { id, now_ms }, "resend").await? {
            QueueDone::Row(row) => Ok(*row),
            _ => Err(unexpected("resend")),
        }
    }
}

#[async_trait]
impl<R: Reads> CampaignStore for QueuedStore<R> {
    async fn create_campaign(
        &self,
        campaign: CampaignRecord,
        contacts: Vec<NewContact>,
    ) -> Result<()> {
        let op = CampaignOp::Create { campaign, contacts };
        self.unit(Self::campaign(op)).await
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
        self.unit(Self::campaign(op)).await
    }

    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>> {
        self.reads.list_campaigns().await
    }

    async fn campaign(&self, id: &str) -> Result<CampaignProgress> {
        self.reads.campaign(id.to_string()).await
    }

    async fn campaign_contacts(
        &self,
        id: &str,
    ) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
        self.reads.campaign_contacts(id.to_string()).await
    }

    async fn due_contacts(&self, id: &str, now_ms: i64, limit: u32) -> Result<Vec<ContactRecord>> {
        self.reads.due_contacts(id.to_string(), now_ms, limit).await
    }

    async fn dialing_contacts(&self, id: &str) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
        self.reads.dialing_contacts(id.to_string()).await
    }

    async fn begin_attempt(&self, id: &str, contact: u32, at_ms: i64, day: &str) -> Result<u32> {
        let (id, day) = (id.to_string(), day.to_string());
        let op = CampaignOp::BeginAttempt {
            id,
            contact,
            at_ms,
            day,
        };
        let n = self.count(Self::campaign(op), "begin_attempt").await?;
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
        self.unit(Self::campaign(op)).await
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
        self.unit(Self::campaign(op)).await
    }

    async fn skip_contact(&self, id: &str, contact: u32, outcome: &str, at_ms: i64) -> Result<()> {
        let (id, outcome) = (id.to_string(), outcome.to_string());
        let op = CampaignOp::Skip {
            id,
            contact,
            outcome,
            at_ms,
        };
        self.unit(Self::campaign(op)).await
    }

    async fn defer_contact(&self, id: &str, contact: u32, next_at_ms: i64) -> Result<()> {
        let id = id.to_string();
        let op = CampaignOp::Defer {
            id,
            contact,
            next_at_ms,
        };
        self.unit(Self::campaign(op)).await
    }

    async fn close_pending(&self, id: &str, outcome: &str, at_ms: i64) -> Result<u32> {
        let (id, outcome) = (id.to_string(), outcome.to_string());
        let op = CampaignOp::ClosePending { id, outcome, at_ms };
        let n = self.count(Self::campaign(op), "close_pending").await?;
        Ok(n as u32)
    }

    async fn dnc_add(&self, numbers: Vec<String>, source: &str, at_ms: i64) -> Result<u32> {
        let source = source.to_string();
        let op = CampaignOp::DncAdd {
            numbers,
            source,
            at_ms,
        };
        let n = self.count(Self::campaign(op), "dnc_add").await?;
        Ok(n as u32)
    }

    async fn dnc_remove(&self, number: &str) -> Result<bool> {
        let number = number.to_string();
        let op = CampaignOp::DncRemove { number };
        let n = self.count(Self::campaign(op), "dnc_remove").await?;
        Ok(n > 0)
    }

    async fn dnc_contains(&self, number: &str) -> Result<bool> {
        self.reads.dnc_contains(number.to_string()).await
    }

    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>> {
        self.reads.dnc_list(limit).await
    }
}
