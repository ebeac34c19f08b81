//! The embedded SQLite store.
//!
//! Durability: WAL with `synchronous = NORMAL`. A committed transaction survives a crash or kill
//! of the process (the WAL is in the OS page cache); an OS crash or power loss may lose the last
//! transactions (never corrupt the file), because NORMAL fsyncs only at checkpoints. That trade
//! buys commits in microseconds instead of one fsync each.
//!
//! Writes (the queue is `store::queued`'s): one writer thread owns the only write connection,
//! takes whatever is queued into one transaction and commits as soon as the queue is empty,
//! then answers every job of the batch. Reads run on a small pool of read-only connections on
//! blocking threads and never wait for the writer (WAL snapshots).

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
use tokio::sync::Semaphore;

use super::campaigns::{AttemptRecord, CampaignProgress, ContactRecord, DncEntry};
use super::queued::{QueuedStore, Reads, Writer, queue};
use super::webhooks::Delivery;
use super::{
    AuditRecord, CallDetail, CallFilter, CallPage, DailyUsage, OverlayEntry, Result, StoreConfig,
    StoreError, schema, sql,
};
use crate::domain::usage;
use list::ListQuery;
#[cfg(test)]
pub(super) use list::explain_list;
use reads::{ReadPool, read_call};
use writer::writer_loop;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// [`super::CallStore`] (and the other store traits) on one SQLite file. Cheap to share behind
/// an `Arc`.
pub type SqliteStore = QueuedStore<SqliteReads>;

/// The SQLite store's reads: a pool of read-only connections on blocking threads.
pub struct SqliteReads {
    pool: Arc<ReadPool>,
}

impl QueuedStore<SqliteReads> {
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

        let (jobs, rx) = queue();
        let writer = std::thread::Builder::new()
            .name("call-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| open_err(e.into()))?;
        let readers = config.read_connections.max(1) as usize;
        let reads = SqliteReads {
            pool: Arc::new(ReadPool {
                path,
                max: readers,
                permits: Semaphore::new(readers),
                idle: Mutex::new(Vec::with_capacity(readers)),
            }),
        };
        Ok(QueuedStore::new(jobs, reads, Writer::Thread(writer)))
    }
}
#[async_trait]
impl Reads for SqliteReads {
    async fn get_call(&self, call_id: String) -> Result<CallDetail> {
        self.pool.run(move |conn| read_call(conn, &call_id)).await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage> {
        let query = ListQuery::new(filter)?;
        self.pool.run(move |conn| query.run(conn)).await
    }

    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>> {
        self.pool
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

    async fn config_overlay(&self) -> Result<Vec<OverlayEntry>> {
        self.pool.run(overlay::read_overlay).await
    }

    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        self.pool
            .run(move |conn| overlay::read_audit(conn, limit))
            .await
    }

    async fn latest_deliveries(
        &self,
        webhook: Option<String>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.pool
            .run(move |conn| webhooks::read_latest(conn, webhook.as_deref(), limit))
            .await
    }

    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>> {
        self.pool.run(campaigns::list).await
    }

    async fn campaign(&self, id: String) -> Result<CampaignProgress> {
        self.pool.run(move |conn| campaigns::get(conn, &id)).await
    }

    async fn campaign_contacts(
        &self,
        id: String,
    ) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
        self.pool
            .run(move |conn| campaigns::contacts(conn, &id))
            .await
    }

    async fn due_contacts(
        &self,
        id: String,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        self.pool
            .run(move |conn| campaigns::due(conn, &id, now_ms, limit))
            .await
    }

    async fn dialing_contacts(&self, id: String) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
        self.pool
            .run(move |conn| campaigns::dialing(conn, &id))
            .await
    }

    async fn dnc_contains(&self, number: String) -> Result<bool> {
        self.pool
            .run(move |conn| campaigns::dnc_contains(conn, &number))
            .await
    }

    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>> {
        self.pool
            .run(move |conn| campaigns::dnc_list(conn, limit))
            .await
    }

    /// Nothing to take: the data folder's lock (`crate::app`) already keeps a second process
    /// off this file.
    async fn claim_node(&self, _node: String) -> Result<()> {
        Ok(())
    }
}
