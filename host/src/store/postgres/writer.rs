//! The writer task: owns one connection, takes whatever is queued into one transaction,
//! commits, then answers every job of the batch.

use std::collections::HashMap;

use deadpool_postgres::{Object, Pool, Transaction};
use tokio::sync::mpsc;

use super::writes::{EventRows, apply};
use crate::store::queued::{Done, Job, MAX_BATCH, Op};
use crate::store::{Result, StoreError, Write};

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

/// Whether `e` is an error Postgres raised inside the transaction (which aborts it); any
/// other Postgres error means the connection is gone.
fn aborts(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres { source, .. } if source.as_db_error().is_some())
}

/// Why a batch attempt stopped before its commit.
enum Stop {
    /// Postgres refused this job (the transaction is aborted): replay without it.
    Refused(usize, StoreError),
    /// Postgres refused one of the events inserted together: replay inserting each alone.
    RefusedEvents,
    /// The connection failed: the whole batch fails.
    Failed(String),
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
    let mut one_by_one = false;
    let mut results = loop {
        let tx = match client.transaction().await {
            Ok(tx) => tx,
            Err(e) => {
                seqs.clear();
                return failed(e.to_string());
            }
        };
        match attempt(&tx, seqs, jobs, &refused, one_by_one).await {
            Ok(results) => {
                if let Err(e) = tx.commit().await {
                    seqs.clear();
                    return failed(e.to_string());
                }
                break results;
            }
            Err(stop) => {
                let _ = tx.rollback().await;
                seqs.clear();
                match stop {
                    Stop::Failed(reason) => return failed(reason),
                    Stop::Refused(job, e) => {
                        refused.insert(job, e);
                    }
                    Stop::RefusedEvents => one_by_one = true,
                }
            }
        }
    };
    for (i, e) in refused {
        results[i] = Err(e);
    }
    results
}

/// One pass over the batch in `tx`, skipping the `refused` jobs (answered with a placeholder).
/// Events are kept and inserted together, before any other kind of job (which may read or
/// delete them) and at the end; `one_by_one`, each as it comes (to find the one refused).
async fn attempt(
    tx: &Transaction<'_>,
    seqs: &mut Seqs,
    jobs: &[Job],
    refused: &HashMap<usize, StoreError>,
    one_by_one: bool,
) -> Result<Vec<Result<Done>>, Stop> {
    let events_refused = |events: &EventRows, e: StoreError| match (aborts(&e), &events.jobs[..]) {
        (false, _) => Stop::Failed(e.to_string()),
        (true, [job]) => Stop::Refused(*job, e),
        (true, _) => Stop::RefusedEvents,
    };
    let mut results = Vec::with_capacity(jobs.len());
    let mut events = EventRows::default();
    for (i, job) in jobs.iter().enumerate() {
        if refused.contains_key(&i) {
            results.push(Ok(Done::Unit));
            continue;
        }
        let result = match &job.op {
            Op::Write(Write::Event {
                call_id,
                at_ms,
                kind,
                data,
            }) => {
                let seq = events.add(tx, seqs, i, (call_id, *at_ms, kind, data)).await;
                if one_by_one && let Err(e) = events.insert(tx).await {
                    return Err(events_refused(&events, e));
                }
                seq.map(Done::Seq)
            }
            op => {
                if let Err(e) = events.insert(tx).await {
                    return Err(events_refused(&events, e));
                }
                apply(tx, seqs, op).await
            }
        };
        match result {
            Err(e @ StoreError::Postgres { .. }) if aborts(&e) => return Err(Stop::Refused(i, e)),
            Err(e @ StoreError::Postgres { .. }) => return Err(Stop::Failed(e.to_string())),
            Err(e) => {
                tracing::debug!(call_id = job.op.call_id(), error = %e, "call store write refused");
                results.push(Err(e));
            }
            Ok(done) => results.push(Ok(done)),
        }
    }
    if let Err(e) = events.insert(tx).await {
        return Err(events_refused(&events, e));
    }
    Ok(results)
}
