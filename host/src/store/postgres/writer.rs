//! The writer task: owns one connection, takes whatever is queued into one transaction,
//! commits, then answers every job of the batch.

use std::collections::HashMap;

use deadpool_postgres::{Object, Pool};
use tokio::sync::mpsc;

use super::writes::apply;
use crate::store::queued::{Done, Job, MAX_BATCH, Op};
use crate::store::{Result, StoreError};

/// Per call: its `pk` and the last `seq` handed out (as on SQLite: only the writer assigns
/// `seq`). Cleared whenever a transaction is rolled back and on purge.
pub(super) type Seqs = HashMap<String, (i64, u64)>;

/// Bound on [`Seqs`] for calls that keep getting entries after they ended.
const MAX_CACHED_CALLS: usize = 20_000;

pub(super) async fn writer_loop(pool: Pool, client: Object, mut rx: mpsc::Receiver<Job>) {
    let mut client = Some(client);
    let mut seqs = Seqs::new();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping && let Some(first) = rx.recv().await {
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
        // A lost connection is replaced by the next batch; this one fails.
        let connection = match client.take() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => pool
                .get()
                .await
                .map_err(|e| format!("no Postgres connection: {e}")),
        };
        let results = match connection {
            Ok(mut c) => {
                let results = apply_batch(&mut c, &mut seqs, &batch).await;
                client = Some(c);
                results
            }
            Err(reason) => {
                tracing::error!(error = %reason, "call store batch not committed");
                batch
                    .iter()
                    .map(|_| Err(StoreError::Commit(reason.clone())))
                    .collect()
            }
        };
        for (job, result) in batch.drain(..).zip(results) {
            stopping |= matches!(job.op, Op::Shutdown);
            // The caller may have stopped waiting; the write stands either way.
            let _ = job.reply.send(result);
        }
    }
    tracing::debug!("call store writer stopped");
}

/// Whether `result` is an error Postgres raised inside the transaction (which aborts it).
fn aborts(result: &Result<Done>) -> bool {
    matches!(result, Err(StoreError::Postgres { source, .. }) if source.as_db_error().is_some())
}

/// Apply every job in one transaction; a job Postgres refuses is set aside with its error and
/// the others replayed without it; a failed commit fails them all.
async fn apply_batch(client: &mut Object, seqs: &mut Seqs, jobs: &[Job]) -> Vec<Result<Done>> {
    let mut refused: HashMap<usize, StoreError> = HashMap::new();
    let failed = |reason: String| -> Vec<Result<Done>> {
        tracing::error!(error = %reason, jobs = jobs.len(), "call store batch not committed");
        jobs.iter()
            .map(|_| Err(StoreError::Commit(reason.clone())))
            .collect()
    };
    let mut results = 'replay: loop {
        let tx = match client.transaction().await {
            Ok(tx) => tx,
            Err(e) => {
                seqs.clear();
                return failed(e.to_string());
            }
        };
        let mut results = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            if refused.contains_key(&i) {
                results.push(Ok(Done::Unit)); // replaced by its error below
                continue;
            }
            let result = apply(&tx, seqs, &job.op).await;
            if let Err(e) = &result {
                tracing::debug!(call_id = job.op.call_id(), error = %e, "call store write refused");
            }
            if aborts(&result) {
                let _ = tx.rollback().await;
                seqs.clear();
                if let Err(e) = result {
                    refused.insert(i, e);
                }
                continue 'replay;
            }
            if let Err(StoreError::Postgres { source, .. }) = &result {
                // Not the database's answer: the connection is gone.
                seqs.clear();
                return failed(source.to_string());
            }
            results.push(result);
        }
        if let Err(e) = tx.commit().await {
            seqs.clear();
            return failed(e.to_string());
        }
        break results;
    };
    for (i, e) in refused {
        results[i] = Err(e);
    }
    results
}
