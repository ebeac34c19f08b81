//! Store settings (`[store]` in `switchboard.toml`) and the periodic retention purge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinHandle;

use super::{CallStore, now_ms};
use crate::model::Secret;

/// Where calls are stored and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StoreConfig {
    /// `postgres://user[:password]@host[:port]/database`: the calls live in that Postgres
    /// database instead of the SQLite file (plain TCP: TLS, `sslmode` other than `disable` or
    /// `prefer`, is not supported yet). A secret: it may hold a password.
    pub url: Option<Secret>,
    /// The SQLite file (without `url`); its folder is created when missing.
    pub path: PathBuf,
    /// Finished calls older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// How often the retention purge runs.
    pub purge_interval_minutes: u32,
    /// Also delete the recording files of purged calls.
    pub purge_recordings: bool,
    /// Read connections (reads run in parallel with the one writer; on SQLite on blocking
    /// threads).
    pub read_connections: u32,
    /// Postgres: how long to wait for a connection before the store (at start-up) or a read
    /// gives up, and for the server to acknowledge what was sent (or a keepalive) before the
    /// connection counts as lost.
    pub connect_timeout_seconds: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            path: PathBuf::from(".switchboard/calls.db"),
            retention_days: 90,
            purge_interval_minutes: 60,
            purge_recordings: true,
            read_connections: 4,
            connect_timeout_seconds: 10,
        }
    }
}

/// Run the retention purge now and then every `purge_interval_minutes`, until the task is
/// aborted. Returns None when retention is off (`retention_days = 0`).
pub fn spawn_purge_task(store: Arc<dyn CallStore>, config: &StoreConfig) -> Option<JoinHandle<()>> {
    if config.retention_days == 0 {
        return None;
    }
    let retention_ms = i64::from(config.retention_days) * 86_400_000;
    let every = Duration::from_secs(u64::from(config.purge_interval_minutes.max(1)) * 60);
    let delete_files = config.purge_recordings;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.purge_older_than(now_ms() - retention_ms).await {
                Ok(purged) => {
                    if purged.calls > 0 || purged.deliveries > 0 {
                        tracing::info!(
                            calls = purged.calls,
                            webhook_deliveries = purged.deliveries,
                            "retention purge"
                        );
                    }
                    if delete_files {
                        for path in &purged.recordings {
                            if let Err(e) = tokio::fs::remove_file(path).await
                                && e.kind() != std::io::ErrorKind::NotFound
                            {
                                tracing::warn!(path, error = %e, "cannot delete purged recording");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
        }
    }))
}
