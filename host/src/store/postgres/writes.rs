//! What each job does inside the writer's transaction: the SQL of every [`Write`], closing
//! abandoned calls and purging a chunk of old ones (the SQLite store's, in Postgres' dialect).

use deadpool_postgres::Transaction;

use super::writer::Seqs;
use super::{col, exec, row, rows, search, unsigned};
use crate::domain::usage;
use crate::store::names::{direction_str, role_str, state_str};
use crate::store::queued::{Done, NodeOp, Op, PURGE_CHUNK, not_found, to_i64};
use crate::store::{CallState, Purged, Result, StoreError, Write, number_key};

/// Events numbered in a batch and not inserted yet: inserted together, one statement for the
/// lot (a busy host's batch is mostly events; one round trip each would bound the rate).
#[derive(Default)]
pub(super) struct EventRows {
    /// The jobs they answer, by index in the batch.
    pub(super) jobs: Vec<usize>,
    calls: Vec<i64>,
    seqs: Vec<i64>,
    at_ms: Vec<i64>,
    kinds: Vec<String>,
    data: Vec<String>,
}

impl EventRows {
    /// Numbers job `job`'s event and keeps it for [`EventRows::insert`]; its `seq`.
    pub(super) async fn add(
        &mut self,
        tx: &Transaction<'_>,
        seqs: &mut Seqs,
        job: usize,
        (call_id, at_ms, kind, data): (&str, i64, &str, &serde_json::Value),
    ) -> Result<u64> {
        let (pk, seq) = next_seq(tx, seqs, call_id).await?;
        self.jobs.push(job);
        self.calls.push(pk);
        self.seqs.push(to_i64(seq, "seq")?);
        self.at_ms.push(at_ms);
        self.kinds.push(kind.to_string());
        self.data.push(data.to_string());
        Ok(seq)
    }

    /// Inserts the kept events, if any, and forgets them (kept when the insert fails).
    pub(super) async fn insert(&mut self, tx: &Transaction<'_>) -> Result<()> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        exec(
            tx,
            "INSERT INTO events (call, seq, at_ms, kind, data)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[],
                 $5::TEXT[])",
            &[
                &self.calls,
                &self.seqs,
                &self.at_ms,
                &self.kinds,
                &self.data,
            ],
            "appending events",
        )
        .await?;
        *self = EventRows::default();
        Ok(())
    }
}

/// The call's `pk` and its next `seq`.
async fn next_seq(tx: &Transaction<'_>, seqs: &mut Seqs, call_id: &str) -> Result<(i64, u64)> {
    if let Some((pk, seq)) = seqs.get_mut(call_id) {
        *seq += 1;
        return Ok((*pk, *seq));
    }
    let found = row(
        tx,
        "SELECT pk, GREATEST(
             (SELECT COALESCE(MAX(seq), 0) FROM events WHERE call = pk),
             (SELECT COALESCE(MAX(seq), 0) FROM transcripts WHERE call = pk))
         FROM calls WHERE id = $1",
        &[&call_id],
        "numbering an entry",
    )
    .await?
    .ok_or_else(|| not_found(call_id))?;
    let (pk, last): (i64, i64) = (col(&found, 0)?, col(&found, 1)?);
    let next = unsigned::<u64>(last) + 1;
    seqs.insert(call_id.to_string(), (pk, next));
    Ok((pk, next))
}

async fn call_pk(tx: &Transaction<'_>, call_id: &str) -> Result<i64> {
    let found = row(
        tx,
        "SELECT pk FROM calls WHERE id = $1",
        &[&call_id],
        "finding a call",
    )
    .await?
    .ok_or_else(|| not_found(call_id))?;
    col(&found, 0)
}

/// A row count of zero means the call is not there.
fn found(changed: u64, call_id: &str) -> Result<Done> {
    if changed == 0 {
        Err(not_found(call_id))
    } else {
        Ok(Done::Unit)
    }
}

/// When a call left open was last heard of: its latest event, line or usage item.
const LAST_ACTIVITY: &str = "GREATEST(started_at_ms, COALESCE(answered_at_ms, 0),
    (SELECT COALESCE(MAX(at_ms), 0) FROM events WHERE call = pk),
    (SELECT COALESCE(MAX(at_ms), 0) FROM transcripts WHERE call = pk),
    (SELECT COALESCE(MAX(at_ms), 0) FROM usage_items WHERE call = pk))";

async fn apply_node(tx: &Transaction<'_>, op: &NodeOp) -> Result<Done> {
    match op {
        NodeOp::Renew {
            node,
            expires_at_ms,
        } => {
            exec(
                tx,
                "INSERT INTO node_leases (node, expires_at_ms) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
                &[node, expires_at_ms],
                "renewing a node lease",
            )
            .await?;
            Ok(Done::Unit)
        }
        NodeOp::Release { node } => {
            exec(
                tx,
                "DELETE FROM node_leases WHERE node = $1",
                &[node],
                "releasing a node lease",
            )
            .await?;
            Ok(Done::Unit)
        }
        NodeOp::CloseLapsed { alive, now_ms } => {
            let n = exec(
                tx,
                &format!(
                    "UPDATE calls SET state = 'ended_abnormally', end_reason = 'node lost',
                         ended_at_ms = {LAST_ACTIVITY}
                     WHERE state = 'active' AND node IS NOT NULL AND node != $1
                       AND NOT EXISTS (SELECT 1 FROM node_leases l
                                       WHERE l.node = calls.node AND l.expires_at_ms >= $2)"
                ),
                &[alive, now_ms],
                "closing the calls of lapsed nodes",
            )
            .await?;
            Ok(Done::Count(n))
        }
        NodeOp::HoldAccount {
            account,
            node,
            now_ms,
            expires_at_ms,
        } => {
            let n = exec(
                tx,
                "INSERT INTO account_leases (account, node, expires_at_ms) VALUES ($1, $2, $4)
                 ON CONFLICT (account) DO UPDATE
                     SET node = excluded.node, expires_at_ms = excluded.expires_at_ms
                     WHERE account_leases.node = excluded.node
                        OR account_leases.expires_at_ms < $3",
                &[account, node, now_ms, expires_at_ms],
                "holding a registration account",
            )
            .await?;
            Ok(Done::Count(n))
        }
        NodeOp::ReleaseAccounts { node } => {
            exec(
                tx,
                "DELETE FROM account_leases WHERE node = $1",
                &[node],
                "releasing registration accounts",
            )
            .await?;
            Ok(Done::Unit)
        }
    }
}

pub(super) async fn apply(tx: &Transaction<'_>, seqs: &mut Seqs, op: &Op) -> Result<Done> {
    match op {
        Op::Write(w) => apply_write(tx, seqs, w).await,
        Op::CloseAbandoned { node } => {
            let n = exec(
                tx,
                &format!(
                    "UPDATE calls SET state = 'ended_abnormally', end_reason = 'host restarted',
                         ended_at_ms = {LAST_ACTIVITY}
                     WHERE state = 'active' AND (node = $1 OR node IS NULL)"
                ),
                &[node],
                "closing abandoned calls",
            )
            .await?;
            Ok(Done::Count(n))
        }
        Op::Node(op) => apply_node(tx, op).await,
        Op::Purge { cutoff_ms } => {
            let victims = rows(
                tx,
                "DELETE FROM calls WHERE pk IN (
                     SELECT pk FROM calls WHERE started_at_ms < $1 AND state != 'active'
                     ORDER BY started_at_ms LIMIT $2)
                 RETURNING recording",
                &[cutoff_ms, &i64::from(PURGE_CHUNK)],
                "purging calls",
            )
            .await?;
            // Deleted calls may still be cached (entries after their end).
            seqs.clear();
            let mut purged = Purged {
                calls: victims.len() as u64,
                ..Purged::default()
            };
            for victim in &victims {
                purged.recordings.extend(col::<Option<String>>(victim, 0)?);
            }
            purged.deliveries =
                super::webhooks::purge_finished(tx, *cutoff_ms, PURGE_CHUNK).await?;
            Ok(Done::Purged(purged))
        }
        Op::Config(change) => super::overlay::apply_change(tx, change)
            .await
            .map(Done::Audit),
        Op::Queue(op) => super::webhooks::apply(tx, op).await.map(Done::Queue),
        Op::Campaign(op) => super::campaigns::apply(tx, op).await,
        Op::Shutdown => Ok(Done::Unit),
    }
}

async fn apply_write(tx: &Transaction<'_>, seqs: &mut Seqs, write: &Write) -> Result<Done> {
    match write {
        Write::Create(c) => {
            // ON CONFLICT: a duplicate is an answer, not an error that aborts the batch.
            let inserted = row(
                tx,
                "INSERT INTO calls (id, direction, caller, callee, caller_key, callee_key,
                     agent, agent_version, started_at_ms, state, metadata, transport, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $12)
                 ON CONFLICT (id) DO NOTHING RETURNING pk",
                &[
                    &c.id,
                    &direction_str(c.direction),
                    &c.caller,
                    &c.callee,
                    &number_key(&c.caller),
                    &number_key(&c.callee),
                    &c.agent,
                    &c.agent_version,
                    &c.started_at_ms,
                    &c.metadata.to_string(),
                    &c.transport,
                    &c.node,
                ],
                "creating a call",
            )
            .await?;
            let Some(inserted) = inserted else {
                return Err(StoreError::AlreadyExists {
                    call_id: c.id.clone(),
                });
            };
            seqs.insert(c.id.clone(), (col(&inserted, 0)?, 0));
            Ok(Done::Unit)
        }
        Write::Answered { call_id, at_ms } => {
            let n = exec(
                tx,
                "UPDATE calls SET answered_at_ms = $2 WHERE id = $1",
                &[call_id, at_ms],
                "marking a call answered",
            )
            .await?;
            found(n, call_id)
        }
        Write::Event {
            call_id,
            at_ms,
            kind,
            data,
        } => {
            // The writer keeps a batch's events and inserts them together itself; alone here.
            let mut one = EventRows::default();
            let seq = one.add(tx, seqs, 0, (call_id, *at_ms, kind, data)).await?;
            one.insert(tx).await?;
            Ok(Done::Seq(seq))
        }
        Write::Transcript {
            call_id,
            at_ms,
            role,
            text,
        } => {
            let (pk, seq) = next_seq(tx, seqs, call_id).await?;
            exec(
                tx,
                "INSERT INTO transcripts (call, seq, at_ms, role, text, words)
                 VALUES ($1, $2, $3, $4, $5, array_to_tsvector($6::TEXT[]))",
                &[
                    &pk,
                    &to_i64(seq, "seq")?,
                    at_ms,
                    &role_str(*role),
                    text,
                    &search::words(text),
                ],
                "appending a transcript line",
            )
            .await?;
            Ok(Done::Seq(seq))
        }
        Write::Usage(u) => {
            // Totals and amounts were checked before queueing, so nothing below fails on them.
            let input = to_i64(usage::tokens(&u.items, usage::INPUT), "input tokens")?;
            let output = to_i64(usage::tokens(&u.items, usage::OUTPUT), "output tokens")?;
            let updated = row(
                tx,
                "UPDATE calls SET input_tokens = input_tokens + $2,
                     output_tokens = output_tokens + $3
                 WHERE id = $1 RETURNING pk",
                &[&u.call_id, &input, &output],
                "adding usage",
            )
            .await?
            .ok_or_else(|| not_found(&u.call_id))?;
            let pk: i64 = col(&updated, 0)?;
            for i in &u.items {
                exec(
                    tx,
                    "INSERT INTO usage_items (call, at_ms, provider, stage, kind, unit, amount)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &pk,
                        &u.at_ms,
                        &i.provider,
                        &i.stage,
                        &i.kind,
                        &i.unit,
                        &i.amount,
                    ],
                    "storing usage",
                )
                .await?;
            }
            Ok(Done::Unit)
        }
        Write::Latency(l) => {
            let pk = call_pk(tx, &l.call_id).await?;
            exec(
                tx,
                "INSERT INTO latencies
                     (call, turn, host_in_ms, model_ms, host_out_ms, total_ms,
                      stt_ms, llm_ms, tts_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (call, turn) DO UPDATE SET host_in_ms = excluded.host_in_ms,
                     model_ms = excluded.model_ms, host_out_ms = excluded.host_out_ms,
                     total_ms = excluded.total_ms, stt_ms = excluded.stt_ms,
                     llm_ms = excluded.llm_ms, tts_ms = excluded.tts_ms",
                &[
                    &pk,
                    &i64::from(l.turn),
                    &l.host_in_ms,
                    &l.model_ms,
                    &l.host_out_ms,
                    &l.total_ms,
                    &l.stages.map(|s| s.stt_ms),
                    &l.stages.map(|s| s.llm_ms),
                    &l.stages.map(|s| s.tts_ms),
                ],
                "storing a turn latency",
            )
            .await?;
            Ok(Done::Unit)
        }
        Write::Recording { call_id, path } => {
            let n = exec(
                tx,
                "UPDATE calls SET recording = $2 WHERE id = $1",
                &[call_id, path],
                "indexing a recording",
            )
            .await?;
            found(n, call_id)
        }
        Write::Agent {
            call_id,
            agent,
            agent_version,
        } => {
            let n = exec(
                tx,
                "UPDATE calls SET agent = $2, agent_version = $3 WHERE id = $1",
                &[call_id, agent, agent_version],
                "changing a call's agent",
            )
            .await?;
            found(n, call_id)
        }
        Write::End { call_id, end } => {
            let state = if end.abnormal {
                CallState::EndedAbnormally
            } else {
                CallState::Ended
            };
            let n = exec(
                tx,
                "UPDATE calls SET state = $2, ended_at_ms = $3, end_reason = $4, outcome = $5
                 WHERE id = $1 AND state = 'active'",
                &[
                    call_id,
                    &state_str(state),
                    &end.at_ms,
                    &end.reason,
                    &end.outcome,
                ],
                "ending a call",
            )
            .await?;
            if n == 0 {
                call_pk(tx, call_id).await?;
                return Err(StoreError::AlreadyEnded {
                    call_id: call_id.clone(),
                });
            }
            seqs.remove(call_id);
            Ok(Done::Unit)
        }
    }
}
