//! Store tests by area, on both back ends: each `async fn(db: Db)` listed in [`on_both!`] runs
//! as `<name>::sqlite` (a real file in a temporary folder) and `<name>::postgres` (a database
//! of its own on a real server, see [`postgres_server`]). Tests of what only one back end has
//! (the SQLite file, its migrations from old versions) stay single. The shared fixtures are
//! here.

/// Runs each named `async fn(db: Db)` of the module on both back ends, as `<name>::sqlite` and
/// `<name>::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Db::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::Db::postgres() {
                    super::$name(db).await;
                }
            }
        }
    )*};
}

mod bad_input;
mod calls;
mod campaigns;
mod durability;
mod listing;
mod nodes;
mod overlay;
pub(crate) mod postgres_server;
mod retention;
mod usage;
mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use tempfile::TempDir;

use super::*;
use crate::model::Secret;

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
/// The node [`new_call`]'s calls run on.
const NODE: &str = "node-1";

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.join("nested/calls.db"),
        ..StoreConfig::default()
    }
}

/// Where a test's store lives: a SQLite file in a temporary folder, or a fresh database on the
/// test Postgres server (the folder then only holds what the test puts there).
struct Db {
    dir: TempDir,
    url: Option<String>,
}

impl Db {
    fn sqlite() -> Db {
        Db {
            dir: tempfile::tempdir().unwrap(),
            url: None,
        }
    }

    /// None when Postgres is not installed (outside CI): the test is skipped.
    fn postgres() -> Option<Db> {
        Some(Db {
            dir: tempfile::tempdir().unwrap(),
            url: Some(postgres_server::database()?),
        })
    }

    fn config(&self) -> StoreConfig {
        StoreConfig {
            url: self.url.clone().map(Secret::new),
            ..config(self.dir.path())
        }
    }

    /// Opens the store (again: a reopened store sees everything acknowledged before).
    async fn open(&self) -> Arc<dyn Store> {
        open(&self.config()).await.unwrap()
    }

    /// Creates the schema up to `version` (an old database), then runs `sql` on it (plain SQL
    /// both dialects read alike).
    async fn at_version(&self, version: i64, sql: &str) {
        match &self.url {
            None => {
                let path = self.config().path;
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                schema::migrate_to(&mut conn, version).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Some(url) => {
                let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                postgres::migrate::migrate_to(&mut client, version)
                    .await
                    .unwrap();
                client.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// Whether the store has a table `name`.
    fn has_table(&self, name: &str) -> bool {
        match &self.url {
            None => {
                let conn = rusqlite::Connection::open(&self.config().path).unwrap();
                conn.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                    [name],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    > 0
            }
            Some(url) => {
                postgres_server::psql(url, &format!("SELECT to_regclass('{name}') IS NOT NULL"))
                    == "t"
            }
        }
    }

    /// Records schema `version` as applied, as a newer build would.
    fn add_schema_version(&self, version: i64) {
        let sql =
            format!("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ({version}, 0)");
        match &self.url {
            None => {
                let conn = rusqlite::Connection::open(&self.config().path).unwrap();
                conn.execute(&sql, []).unwrap();
            }
            Some(url) => {
                postgres_server::psql(url, &sql);
            }
        }
    }
}

fn new_call(id: &str, caller: &str, callee: &str, agent: &str, at: i64) -> NewCall {
    NewCall {
        id: id.into(),
        direction: Direction::Inbound,
        caller: caller.into(),
        callee: callee.into(),
        agent: Some(agent.into()),
        agent_version: Some("1.0.0".into()),
        transport: "udp".into(),
        started_at_ms: at,
        metadata: json!({"transport": "udp"}),
        node: NODE.into(),
    }
}

fn ended(at_ms: i64) -> CallEnd {
    CallEnd {
        at_ms,
        reason: "caller hung up".into(),
        abnormal: false,
        outcome: None,
    }
}

fn item(provider: &str, stage: &str, kind: &str, unit: &str, amount: f64) -> UsageItem {
    UsageItem {
        provider: provider.into(),
        stage: stage.into(),
        kind: kind.into(),
        unit: unit.into(),
        amount,
    }
}

fn tokens(kind: &str, amount: u64) -> UsageItem {
    item("openai", "speech-to-speech", kind, "tokens", amount as f64)
}

/// A speech-to-speech report: the totals, and a split like the providers give.
fn usage(call_id: &str, at_ms: i64, input: u64, output: u64) -> UsageRecord {
    UsageRecord {
        call_id: call_id.into(),
        at_ms,
        items: vec![
            tokens("input", input),
            tokens("input-audio", input / 2),
            tokens("output", output),
            tokens("output-audio", output),
            tokens("output-text", 0),
        ],
    }
}

fn ids(page: &CallPage) -> Vec<&str> {
    page.calls.iter().map(|c| c.id.as_str()).collect()
}

fn config_at(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.into(),
        ..StoreConfig::default()
    }
}
