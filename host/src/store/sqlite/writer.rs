//! The writer thread: owns the only write connection, takes whatever is queued into one
//! transaction, commits, then answers every job of the batch.

use std::collections::HashMap;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::writes::apply;
use crate::store::queued::{Done, Job, MAX_BATCH, Op};
use crate::store::{Result, StoreError};

/// Per call: its `pk` and the last `seq` handed out. Only the writer assigns `seq`, so this map
/// is the truth for the calls it holds and spares a calls-row update per event. Filled on
/// create (or on first use after a restart), dropped on end; cleared whenever a batch fails
/// (its entries may describe rows that were rolled back) and on purge.
pub(super) type Seqs = HashMap<String, (i64, u64)>;

/// Bound on [`Seqs`] for calls that keep getting entries after they ended.
const MAX_CACHED_CALLS: usize = 20_000;

pub(super) fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
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
