//! The Postgres store (`[store] url = "postgres://…"`), for a store shared beyond one file.
//!
//! Same shape as the SQLite store (see `store::queued`): one writer task owns one connection
//! and commits whatever is queued in one transaction before answering its jobs; reads take a
//! connection from a small pool and never wait for the writer. A job Postgres refuses with an
//! error aborts the whole transaction there (SQLite keeps it going), so the writer rolls back,
//! sets that job aside with its error and replays the rest; expected refusals (a duplicate
//! call, an unknown call) are found without an SQL error, so a replay is the exception.
//!
//! Durability is the server's: with Postgres' defaults (`synchronous_commit = on`) a
//! committed batch is on the server's disk before its writes are acknowledged.
//!
//! Plain TCP only for now: a URL asking for TLS (`sslmode=require`) is refused at start-up.

mod campaigns;
pub(super) mod migrate;
mod overlay;
mod reads;
mod search;
mod webhooks;
mod writer;
mod writes;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};

use super::campaigns::{AttemptRecord, CampaignProgress, ContactRecord, DncEntry};
use super::queued::{QueuedStore, Reads, Writer, queue};
use super::webhooks::Delivery;
use super::{
    AuditRecord, CallDetail, CallFilter, CallPage, DailyUsage, OverlayEntry, Result, StoreConfig,
    StoreError,
};

/// [`super::CallStore`] (and the other store traits) on a Postgres database. Cheap to share
/// behind an `Arc`.
pub type PostgresStore = QueuedStore<PostgresReads>;

/// The Postgres store's reads: a pool of connections; and the connection holding the node's
/// advisory lock, once claimed.
pub struct PostgresReads {
    pool: Pool,
    node_lock: tokio::sync::Mutex<Option<deadpool_postgres::ClientWrapper>>,
}

impl QueuedStore<PostgresReads> {
    /// Connect to the database at `url`, migrate the schema and start the writer. Fails with
    /// [`StoreError::Open`] naming the address (never the password) when the URL is bad or
    /// the server cannot be reached within `connect-timeout-seconds`.
    pub async fn open(url: &str, config: &StoreConfig) -> Result<PostgresStore> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            path: "the Postgres URL in [store] url".into(),
            source: Box::new(e),
        })?;
        let address = address(&pg);
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: address.clone(),
            source,
        };
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(open_err(
                "TLS to Postgres is not supported yet (use sslmode=disable or prefer)".into(),
            ));
        }
        let timeout = Duration::from_secs(u64::from(config.connect_timeout_seconds.max(1)));
        // A server that stops answering fails the statement after `timeout` instead of
        // holding the writer (or a read) for good.
        pg.ssl_mode(SslMode::Disable)
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(timeout);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // The writer holds one connection for good, the node lock another; the readers share
        // the rest.
        let size = config.read_connections.max(1) as usize + 2;
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(timeout))
            .wait_timeout(Some(timeout))
            .build()
            .map_err(|e| open_err(e.into()))?;
        let mut client = pool.get().await.map_err(|e| open_err(e.into()))?;
        migrate::migrate(&mut client).await.map_err(|e| match e {
            e @ StoreError::SchemaTooNew { .. } => e,
            e => open_err(e.into()),
        })?;
        tracing::info!(address, "call store on Postgres");
        let (jobs, rx) = queue();
        let writer = tokio::spawn(writer::writer_loop(pool.clone(), client, rx));
        Ok(QueuedStore::new(
            jobs,
            PostgresReads {
                pool,
                node_lock: tokio::sync::Mutex::new(None),
            },
            Writer::Task(writer),
        ))
    }
}

/// `user@host:port/database` of a connection config: what errors and logs name.
fn address(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        pg.get_user().unwrap_or(""),
        pg.get_dbname().unwrap_or("")
    )
}

/// Wraps a Postgres error with what the store was doing.
fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { context, source }
}

/// Parameters of a statement.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs `sql` (prepared once per connection); the rows it changed.
async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
    context: &'static str,
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(pg(context))?;
    c.execute(&stmt, params).await.map_err(pg(context))
}

/// Runs `sql` (prepared once per connection); the rows it returned.
async fn rows<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
    context: &'static str,
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg(context))?;
    c.query(&stmt, params).await.map_err(pg(context))
}

/// Runs `sql` (prepared once per connection); its one row, if any.
async fn row<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
    context: &'static str,
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(pg(context))?;
    c.query_opt(&stmt, params).await.map_err(pg(context))
}

/// Column `i` of `row`, or an error naming what was read.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(pg("reading a row"))
}

/// A stored count or number as the record's unsigned type (stored values are never negative).
fn unsigned<T: TryFrom<i64> + Default>(value: i64) -> T {
    T::try_from(value).unwrap_or_default()
}

fn unreadable(what: String) -> StoreError {
    StoreError::Worker(format!("unreadable stored row: {what}"))
}

impl PostgresReads {
    async fn client(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Worker(format!("no Postgres connection: {e}")))
    }
}

#[async_trait]
impl Reads for PostgresReads {
    async fn get_call(&self, call_id: String) -> Result<CallDetail> {
        reads::read_call(&mut self.client().await?, &call_id).await
    }

    async fn list_calls(&self, filter: &CallFilter) -> Result<CallPage> {
        let query = reads::ListQuery::new(filter)?;
        query.run(&self.client().await?).await
    }

    async fn usage_per_day(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DailyUsage>> {
        reads::usage_per_day(&self.client().await?, from_ms, to_ms).await
    }

    async fn config_overlay(&self) -> Result<Vec<OverlayEntry>> {
        overlay::read_overlay(&self.client().await?).await
    }

    async fn config_audit(&self, limit: u32) -> Result<Vec<AuditRecord>> {
        overlay::read_audit(&self.client().await?, limit).await
    }

    async fn latest_deliveries(
        &self,
        webhook: Option<String>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        webhooks::read_latest(&self.client().await?, webhook.as_deref(), limit).await
    }

    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>> {
        campaigns::list(&self.client().await?).await
    }

    async fn campaign(&self, id: String) -> Result<CampaignProgress> {
        campaigns::get(&self.client().await?, &id).await
    }

    async fn campaign_contacts(
        &self,
        id: String,
    ) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
        campaigns::contacts(&self.client().await?, &id).await
    }

    async fn due_contacts(
        &self,
        id: String,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ContactRecord>> {
        campaigns::due(&self.client().await?, &id, now_ms, limit).await
    }

    async fn dialing_contacts(&self, id: String) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
        campaigns::dialing(&self.client().await?, &id).await
    }

    async fn dnc_contains(&self, number: String) -> Result<bool> {
        campaigns::dnc_contains(&self.client().await?, &number).await
    }

    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>> {
        campaigns::dnc_list(&self.client().await?, limit).await
    }

    /// A session advisory lock on a connection taken out of the pool and kept with the store:
    /// Postgres releases it when that connection ends, so a killed process leaves no stale lock.
    /// The key is the first 64 bits of the node id's MD5: the same on every build and machine.
    async fn claim_node(&self, node: String) -> Result<()> {
        let mut held = self.node_lock.lock().await;
        if held.is_some() {
            return Ok(());
        }
        let client = Object::take(self.client().await?);
        let locked = client
            .query_one(
                "SELECT pg_try_advisory_lock(
                     ('x' || substr(md5('switchboard-node:' || $1), 1, 16))::bit(64)::bigint)",
                &[&node],
            )
            .await
            .map_err(pg("locking the node id"))?;
        if !col::<bool>(&locked, 0)? {
            return Err(StoreError::NodeTaken { node });
        }
        *held = Some(client);
        Ok(())
    }
}
