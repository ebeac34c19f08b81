//! Call records: calls, their events, transcripts, usage items, per-turn latency and the
//! recordings index, behind the [`CallStore`] trait (with campaigns and the webhook queue: the
//! [`Store`]).
//!
//! The store knows nothing of SIP, media, agents or models: it keeps what the call layer hands
//! it, in its own record types. [`SqliteStore`] is the embedded default (one file, WAL);
//! [`PostgresStore`] is the server back end (`[store] url`). Both are a [`QueuedStore`]: a
//! single writer batches whatever is queued into one transaction, and every write future
//! resolves only once its transaction has committed, so a crash of the process loses nothing a
//! caller saw acknowledged. Both run the same numbered migrations (`schema`).
//!
//! Times are milliseconds since the Unix epoch (UTC); see [`now_ms`].

pub mod campaigns;
mod config;
mod names;
pub mod nodes;
mod overlay;
mod postgres;
mod queued;
pub mod sample;
mod schema;
mod sqlite;
pub mod webhooks;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

pub use crate::domain::usage::UsageItem;
pub use crate::domain::{Direction, Role};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::events::StageLatency;

pub use campaigns::CampaignStore;
pub use config::{StoreConfig, spawn_purge_task};
pub use nodes::NodeStore;
pub use overlay::{AuditRecord, ConfigChange, OverlayEntry, OverlayKind, OverlayWrite};
pub use postgres::PostgresStore;
pub use queued::QueuedStore;
pub use sqlite::SqliteStore;

/// Lifecycle of a stored call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Active,
    Ended,
    /// Ended without a proper hang-up: the host crashed or was killed mid-call.
    EndedAbnormally,
}

/// One call as stored, with its running usage totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub direction: Direction,
    pub caller: String,
    pub callee: String,
    pub agent: Option<String>,
    pub agent_version: Option<String>,
    /// The leg: "udp", "tcp", "tls", "twilio", "openai-sip", ... (none for a call recorded
    /// before the store kept it and without a `created` event).
    pub transport: Option<String>,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub state: CallState,
    pub end_reason: Option<String>,
    pub outcome: Option<String>,
    /// Path of the call's recording, when one was made.
    pub recording: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Free-form JSON the call layer attached at creation.
    pub metadata: Value,
    /// The node that runs (or ran) the call; none for a call recorded before nodes were.
    pub node: Option<String>,
}

/// What the call layer knows when a call starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewCall {
    /// Unique call id (chosen by the call layer).
    pub id: String,
    pub direction: Direction,
    pub caller: String,
    pub callee: String,
    pub agent: Option<String>,
    pub agent_version: Option<String>,
    /// The leg, as the call layer names it ("udp", "twilio", "openai-sip", ...).
    pub transport: String,
    pub started_at_ms: i64,
    pub metadata: Value,
    /// The node running the call (`[node] id`): only it, or a peer after its lease expired,
    /// closes the call when it is left open.
    pub node: String,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnd {
    pub at_ms: i64,
    /// Human-readable reason, e.g. "caller hung up".
    pub reason: String,
    /// True when the call did not end properly (failure, crash): state `ended_abnormally`.
    pub abnormal: bool,
    /// Business outcome, e.g. "appointment booked".
    pub outcome: Option<String>,
}

/// One call event. `seq` is assigned by the store from one per-call counter shared with
/// transcript lines, so events and transcript interleave in the order they were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub call_id: String,
    pub seq: u64,
    pub at_ms: i64,
    pub kind: String,
    pub data: Value,
}

/// One transcript line (final text only: the call layer decides what is final).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub call_id: String,
    pub seq: u64,
    pub at_ms: i64,
    pub role: Role,
    pub text: String,
}

/// Usage reported once (e.g. per model response); the call's token totals add up its `input`
/// and `output` token items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub call_id: String,
    pub at_ms: i64,
    pub items: Vec<UsageItem>,
}

/// Latency of one conversational turn, split where the time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnLatency {
    pub call_id: String,
    pub turn: u32,
    /// Caller audio in → sent to the model.
    pub host_in_ms: f64,
    /// Sent to the model → first audio back.
    pub model_ms: f64,
    /// First audio back → out to the caller.
    pub host_out_ms: f64,
    pub total_ms: f64,
    /// A cascade brain's split of `model_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<StageLatency>,
}

/// One change to a call's record, for [`CallStore::write_all`]; each variant does what the
/// trait method of the same name does.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Create(NewCall),
    Answered {
        call_id: String,
        at_ms: i64,
    },
    Event {
        call_id: String,
        at_ms: i64,
        kind: String,
        data: Value,
    },
    Transcript {
        call_id: String,
        at_ms: i64,
        role: Role,
        text: String,
    },
    Usage(UsageRecord),
    Latency(TurnLatency),
    Recording {
        call_id: String,
        path: String,
    },
    Agent {
        call_id: String,
        agent: String,
        agent_version: String,
    },
    End {
        call_id: String,
        end: CallEnd,
    },
}

impl Write {
    /// The call the write is about.
    pub fn call_id(&self) -> &str {
        match self {
            Write::Create(c) => &c.id,
            Write::Answered { call_id, .. }
            | Write::Event { call_id, .. }
            | Write::Transcript { call_id, .. }
            | Write::Recording { call_id, .. }
            | Write::Agent { call_id, .. }
            | Write::End { call_id, .. } => call_id,
            Write::Usage(u) => &u.call_id,
            Write::Latency(l) => &l.call_id,
        }
    }
}

/// Everything stored about one call; events and transcript in `seq` order, latencies by turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallDetail {
    pub call: CallRecord,
    pub events: Vec<EventRecord>,
    pub transcript: Vec<TranscriptLine>,
    /// Amounts summed per (provider, stage, kind, unit), in the order first reported.
    pub usage: Vec<UsageItem>,
    pub latencies: Vec<TurnLatency>,
    /// Counted from `events`.
    #[serde(default)]
    pub conversation: ConversationCounts,
}

/// How the conversation went, counted from a call's events: the caller's barge-ins, the
/// reprompts of a silent caller, the fillers said while tools ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationCounts {
    pub interruptions: u64,
    pub reprompts: u64,
    pub fillers: u64,
}

impl ConversationCounts {
    pub fn of(events: &[EventRecord]) -> ConversationCounts {
        let mut counts = ConversationCounts::default();
        for event in events {
            match event.kind.as_str() {
                "barge-in" => counts.interruptions += 1,
                "silence-reprompt" => counts.reprompts += 1,
                "filler" => counts.fillers += 1,
                _ => {}
            }
        }
        counts
    }
}

/// Which calls to list. Every field narrows the result; `Default` lists everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallFilter {
    /// Some(true): only active calls; Some(false): only finished ones.
    pub active: Option<bool>,
    /// Exact agent name.
    pub agent: Option<String>,
    /// Matches caller or callee after [`number_key`] on both sides, so `+1 (555) 010-0001`
    /// finds `sip:+15550100001@pbx`.
    pub number: Option<String>,
    /// Calls started at or after this time.
    pub from_ms: Option<i64>,
    /// Calls started before this time.
    pub to_ms: Option<i64>,
    /// Words that must all occur in the call's transcript (each also matches as a prefix:
    /// `refund` finds "refunded").
    pub text: Option<String>,
    /// Page size; 0 means the default (50), larger than 1000 is capped at 1000.
    pub limit: u32,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of calls, newest first. Pass `next_cursor` back to get the next page; calls started
/// after the first page was read do not shift later pages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallPage {
    pub calls: Vec<CallRecord>,
    pub next_cursor: Option<String>,
}

/// Token usage summed over one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Purged {
    pub calls: u64,
    /// Recording paths of the removed calls: the files are the caller's to delete.
    pub recordings: Vec<String>,
    /// Webhook deliveries removed: delivered or dead ones last touched before the cutoff.
    pub deliveries: u64,
}

/// Errors of the call store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no call with id {call_id:?}")]
    NotFound { call_id: String },
    #[error("no campaign with id {0:?}")]
    NoSuchCampaign(String),
    #[error("a call with id {call_id:?} already exists")]
    AlreadyExists { call_id: String },
    #[error("call {call_id:?} has already ended")]
    AlreadyEnded { call_id: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("invalid paging cursor {0:?}")]
    InvalidCursor(String),
    #[error("cannot open the call store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the call store schema is version {found}, newer than this build knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("database error while {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("Postgres error while {context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The batch this write was in could not be committed (the write did not happen).
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("no webhook delivery with id {id}")]
    NoDelivery { id: i64 },
    #[error("the call store is closed")]
    Closed,
    /// Another live process holds this node id on the shared store.
    #[error(
        "node id {node:?} is held by another running switchboard on this store; \
         stop it first, or give this one another [node] id"
    )]
    NodeTaken { node: String },
    #[error("a call store worker failed: {0}")]
    Worker(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Call records behind one interface. Every write resolves once it is durable (committed);
/// writes to one call issued one after another are stored in that order.
#[async_trait]
pub trait CallStore: Send + Sync {
    /// Record a new active call. A duplicate id is [`StoreError::AlreadyExists`].
    async fn create_call(&self, call: NewCall) -> Result<()>;
    /// Note when the call was answered.
    async fn set_answered(&self, call_id: &str, at_ms: i64) -> Result<()>;
    /// Append an event; returns its `seq` within the call.
    async fn append_event(&self, call_id: &str, at_ms: i64, kind: &str, data: Value)
    -> Result<u64>;
    /// Append a transcript line; returns its `seq` (shared with events).
    async fn append_transcript(
        &self,
        call_id: &str,
        at_ms: i64,
        role: Role,
        text: &str,
    ) -> Result<u64>;
    /// Store one usage report's items and add its token totals to the call's.
    async fn add_usage(&self, usage: UsageRecord) -> Result<()>;
    /// Store one turn's latency; recording the same turn again replaces it.
    async fn record_latency(&self, latency: TurnLatency) -> Result<()>;
    /// Index the call's recording file.
    async fn set_recording(&self, call_id: &str, path: &str) -> Result<()>;
    /// Another agent runs the call from now on (a hand-off): the record names it.
    async fn set_agent(&self, call_id: &str, agent: &str, agent_version: &str) -> Result<()>;
    /// Close an active call ([`StoreError::AlreadyEnded`] if it is not active).
    async fn end_call(&self, call_id: &str, end: CallEnd) -> Result<()>;
    /// Applies `writes` in order, with the same effect as calling the methods one by one but
    /// in as few commits as the store can: a busy host's event feed uses it. One result per
    /// write; a refused write does not stop the ones after it.
    async fn write_all(&self, writes: Vec<Write>) -> Vec<Result<()>>;
    /// The call with everything stored about it.
    async fn get_call(&self, call_id: &str) -> Result<CallDetail>;
    /// A page of calls matching `filter`, newest first.
    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage>;
    /// Tokens per UTC day (the `input` and `output` items) reported in `[from_ms, to_ms)`,
    /// oldest day first.
    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>>;
    /// At start-up of `node`: mark the calls its previous run left active (and those recorded
    /// without a node) as ended abnormally ("host restarted"), ended at their last recorded
    /// activity; other nodes' calls are left alone. Returns how many.
    async fn close_abandoned_calls(&self, node: &str) -> Result<u64>;
    /// Delete finished calls started before `cutoff_ms`, with everything attached to them, and
    /// the webhook deliveries finished (delivered or dead) before it.
    async fn purge_older_than(&self, cutoff_ms: i64) -> Result<Purged>;
    /// Store a live configuration change and its audit record in one transaction; returns
    /// the audit record with its id.
    async fn record_config_change(&self, change: ConfigChange) -> Result<AuditRecord>;
    /// The live configuration overlay, ordered by kind name, agent and key.
    async fn config_overlay(&self) -> Result<Vec<OverlayEntry>>;
    /// The latest `limit` audited configuration changes, newest first.
    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>>;
}

/// The whole store as the host holds it: calls, campaigns and the webhook queue on one back end,
/// SQLite or Postgres (see [`open`]).
#[async_trait]
pub trait Store: CallStore + CampaignStore + webhooks::WebhookQueue + NodeStore {
    /// Commit everything queued and stop writing; later writes fail with
    /// [`StoreError::Closed`], reads keep working.
    async fn shutdown(&self) -> Result<()>;
}

/// Opens the back end `config` names: Postgres when `url` is set, else the SQLite file.
pub async fn open(config: &StoreConfig) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match &config.url {
        Some(url) => std::sync::Arc::new(PostgresStore::open(url.expose(), config).await?),
        None => std::sync::Arc::new(SqliteStore::open(config)?),
    })
}

/// Wraps a SQLite error with what the store was doing.
fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The search key of a phone number or SIP/tel URI: the digits of its user part, or the
/// lower-cased user part when it has no digits (`sip:Sales@pbx` → `sales`). Visual separators,
/// `+`, display names, hosts and URI parameters do not matter.
pub fn number_key(input: &str) -> String {
    let mut s = input.trim();
    if let (Some(open), Some(close)) = (s.find('<'), s.rfind('>'))
        && open < close
    {
        s = &s[open + 1..close];
    }
    for scheme in ["sips:", "sip:", "tel:"] {
        if s.len() >= scheme.len() && s[..scheme.len()].eq_ignore_ascii_case(scheme) {
            s = &s[scheme.len()..];
            break;
        }
    }
    let user = &s[..s.find(['@', ';', '?']).unwrap_or(s.len())];
    // A percent-encoded `+` must not leave its `2` among the digits.
    let user = user.replace("%2B", "").replace("%2b", "");
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        user.trim().to_lowercase()
    } else {
        digits
    }
}
