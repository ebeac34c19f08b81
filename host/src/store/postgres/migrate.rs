//! Runs the shared migration list (`store::schema`) on Postgres: all pending versions in one
//! transaction (Postgres DDL is transactional), under an advisory lock so that nodes starting
//! together migrate once.

use super::pg;
use crate::store::schema::{MIGRATIONS, latest};
use crate::store::{Result, StoreError, now_ms};

/// The advisory lock key the migration holds ("sbschema" in ASCII).
const LOCK: i64 = 0x7362_7363_6865_6d61;

/// Bring the schema up to date; refuses a database written by a newer build.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    migrate_to(client, latest()).await
}

/// Apply the migrations up to version `target` (tests build old databases with it).
pub(in crate::store) async fn migrate_to(
    client: &mut tokio_postgres::Client,
    target: i64,
) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(pg("starting a migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(pg("locking the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .await
    .map_err(pg("creating schema_migrations"))?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await
        .map_err(pg("reading the schema version"))?
        .get(0);
    let known = latest();
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        tx.batch_execute(m.postgres)
            .await
            .map_err(pg("applying a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[&m.version, &now_ms()],
        )
        .await
        .map_err(pg("recording a migration"))?;
        tracing::info!(version = m.version, "call store schema migrated");
    }
    tx.commit().await.map_err(pg("committing the migrations"))
}
