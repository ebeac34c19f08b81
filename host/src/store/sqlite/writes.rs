//! What each job does inside the writer's transaction: the SQL of every [`Write`], closing
//! abandoned calls, node leases and purging a chunk of old ones.

use rusqlite::{OptionalExtension, Transaction, params};

use super::writer::Seqs;
use crate::domain::usage;
use crate::store::names::{direction_str, role_str, state_str};
use crate::store::queued::{Done, NodeOp, Op, PURGE_CHUNK, not_found};
use crate::store::{CallState, Purged, Result, StoreError, Write, number_key, sql};

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// The call's `pk` and its next `seq`.
fn next_seq(tx: &Transaction, seqs: &mut Seqs, call_id: &str) -> Result<(i64, u64)> {
    if let Some((pk, seq)) = seqs.get_mut(call_id) {
        *seq += 1;
        return Ok((*pk, *seq));
    }
    let (pk, last): (i64, u64) = tx
        .prepare_cached(
            "SELECT pk, MAX(
                 (SELECT COALESCE(MAX(seq), 0) FROM events WHERE call = pk),
                 (SELECT COALESCE(MAX(seq), 0) FROM transcripts WHERE call = pk))
             FROM calls WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([call_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(sql("numbering an entry"))?
        .ok_or_else(|| not_found(call_id))?;
    seqs.insert(call_id.to_string(), (pk, last + 1));
    Ok((pk, last + 1))
}

fn call_pk(tx: &Transaction, call_id: &str) -> Result<i64> {
    tx.prepare_cached("SELECT pk FROM calls WHERE id = ?1")
        .and_then(|mut s| s.query_row([call_id], |r| r.get(0)).optional())
        .map_err(sql("finding a call"))?
        .ok_or_else(|| not_found(call_id))
}

/// When a call left open was last heard of: its latest event, line or usage item.
const LAST_ACTIVITY: &str = "MAX(started_at_ms, COALESCE(answered_at_ms, 0),
    (SELECT COALESCE(MAX(at_ms), 0) FROM events WHERE call = pk),
    (SELECT COALESCE(MAX(at_ms), 0) FROM transcripts WHERE call = pk),
    (SELECT COALESCE(MAX(at_ms), 0) FROM usage_items WHERE call = pk))";

fn apply_node(tx: &Transaction, op: &NodeOp) -> Result<Done> {
    match op {
        NodeOp::Renew {
            node,
            expires_at_ms,
        } => {
            tx.prepare_cached(
                "INSERT INTO node_leases (node, expires_at_ms) VALUES (?1, ?2)
                 ON CONFLICT (node) DO UPDATE SET expires_at_ms = excluded.expires_at_ms",
            )
            .and_then(|mut s| s.execute(params![node, expires_at_ms]))
            .map_err(sql("renewing a node lease"))?;
            Ok(Done::Unit)
        }
        NodeOp::Release { node } => {
            tx.prepare_cached("DELETE FROM node_leases WHERE node = ?1")
                .and_then(|mut s| s.execute([node]))
                .map_err(sql("releasing a node lease"))?;
            Ok(Done::Unit)
        }
        NodeOp::CloseLapsed { alive, now_ms } => {
            let n = tx
                .execute(
                    &format!(
                        "UPDATE calls SET state = 'ended_abnormally', end_reason = 'node lost',
                             ended_at_ms = {LAST_ACTIVITY}
                         WHERE state = 'active' AND node IS NOT NULL AND node != ?1
                           AND NOT EXISTS (SELECT 1 FROM node_leases l
                                           WHERE l.node = calls.node AND l.expires_at_ms >= ?2)"
                    ),
                    params![alive, now_ms],
                )
                .map_err(sql("closing the calls of lapsed nodes"))?;
            Ok(Done::Count(n as u64))
        }
        NodeOp::HoldAccount {
            account,
            node,
            now_ms,
            expires_at_ms,
        } => {
            let n = tx
                .prepare_cached(
                    "INSERT INTO account_leases (account, node, expires_at_ms) VALUES (?1, ?2, ?4)
                     ON CONFLICT (account) DO UPDATE
                         SET node = excluded.node, expires_at_ms = excluded.expires_at_ms
                         WHERE account_leases.node = excluded.node
                            OR account_leases.expires_at_ms < ?3",
                )
                .and_then(|mut s| s.execute(params![account, node, now_ms, expires_at_ms]))
                .map_err(sql("holding a registration account"))?;
            Ok(Done::Count(n as u64))
        }
        NodeOp::ReleaseAccounts { node } => {
            tx.prepare_cached("DELETE FROM account_leases WHERE node = ?1")
                .and_then(|mut s| s.execute([node]))
                .map_err(sql("releasing registration accounts"))?;
            Ok(Done::Unit)
        }
    }
}

pub(super) fn apply(tx: &Transaction, seqs: &mut Seqs, op: &Op) -> Result<Done> {
    match op {
        Op::Write(w) => apply_write(tx, seqs, w),
        Op::CloseAbandoned { node } => {
            let n = tx
                .execute(
                    &format!(
                        "UPDATE calls SET state = 'ended_abnormally', end_reason = 'host restarted',
                             ended_at_ms = {LAST_ACTIVITY}
                         WHERE state = 'active' AND (node = ?1 OR node IS NULL)"
                    ),
                    [node],
                )
                .map_err(sql("closing abandoned calls"))?;
            Ok(Done::Count(n as u64))
        }
        Op::Node(op) => apply_node(tx, op),
        Op::Purge { cutoff_ms } => {
            let victims: Vec<(i64, Option<String>)> = tx
                .prepare_cached(
                    "SELECT pk, recording FROM calls
                     WHERE started_at_ms < ?1 AND state != 'active'
                     ORDER BY started_at_ms LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![cutoff_ms, PURGE_CHUNK], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?
                    .collect()
                })
                .map_err(sql("finding calls to purge"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM calls WHERE pk = ?1")
                .map_err(sql("purging calls"))?;
            // Deleted calls may still be cached (entries after their end).
            seqs.clear();
            let mut purged = Purged::default();
            for (pk, recording) in victims {
                delete.execute([pk]).map_err(sql("purging calls"))?;
                purged.calls += 1;
                purged.recordings.extend(recording);
            }
            purged.deliveries = super::webhooks::purge_finished(tx, *cutoff_ms, PURGE_CHUNK)?;
            Ok(Done::Purged(purged))
        }
        Op::Config(change) => super::overlay::apply_change(tx, change).map(Done::Audit),
        Op::Queue(op) => super::webhooks::apply(tx, op).map(Done::Queue),
        Op::Campaign(op) => super::campaigns::apply(tx, op),
        Op::Shutdown => Ok(Done::Unit),
    }
}

fn apply_write(tx: &Transaction, seqs: &mut Seqs, write: &Write) -> Result<Done> {
    match write {
        Write::Create(c) => {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO calls (id, direction, caller, callee, caller_key, callee_key,
                         agent, agent_version, started_at_ms, state, metadata, transport, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10, ?11, ?12)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        c.id,
                        direction_str(c.direction),
                        c.caller,
                        c.callee,
                        number_key(&c.caller),
                        number_key(&c.callee),
                        c.agent,
                        c.agent_version,
                        c.started_at_ms,
                        c.metadata.to_string(),
                        c.transport,
                        c.node,
                    ])
                });
            match inserted {
                Ok(_) => {
                    seqs.insert(c.id.clone(), (tx.last_insert_rowid(), 0));
                    Ok(Done::Unit)
                }
                Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                    call_id: c.id.clone(),
                }),
                Err(e) => Err(sql("creating a call")(e)),
            }
        }
        Write::Answered { call_id, at_ms } => {
            let n = tx
                .prepare_cached("UPDATE calls SET answered_at_ms = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![call_id, at_ms]))
                .map_err(sql("marking a call answered"))?;
            if n == 0 {
                return Err(not_found(call_id));
            }
            Ok(Done::Unit)
        }
        Write::Event {
            call_id,
            at_ms,
            kind,
            data,
        } => {
            let (pk, seq) = next_seq(tx, seqs, call_id)?;
            tx.prepare_cached(
                "INSERT INTO events (call, seq, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![pk, seq, at_ms, kind, data.to_string()]))
            .map_err(sql("appending an event"))?;
            Ok(Done::Seq(seq))
        }
        Write::Transcript {
            call_id,
            at_ms,
            role,
            text,
        } => {
            let (pk, seq) = next_seq(tx, seqs, call_id)?;
            tx.prepare_cached(
                "INSERT INTO transcripts (call, seq, at_ms, role, text)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![pk, seq, at_ms, role_str(*role), text]))
            .map_err(sql("appending a transcript line"))?;
            Ok(Done::Seq(seq))
        }
        Write::Usage(u) => {
            // Totals and amounts were checked before queueing, so nothing below fails on them.
            let (input, output) = (
                usage::tokens(&u.items, usage::INPUT),
                usage::tokens(&u.items, usage::OUTPUT),
            );
            let pk: i64 = tx
                .prepare_cached(
                    "UPDATE calls SET input_tokens = input_tokens + ?2,
                         output_tokens = output_tokens + ?3
                     WHERE id = ?1 RETURNING pk",
                )
                .and_then(|mut s| {
                    s.query_row(params![u.call_id, input, output], |r| r.get(0))
                        .optional()
                })
                .map_err(sql("adding usage"))?
                .ok_or_else(|| not_found(&u.call_id))?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO usage_items (call, at_ms, provider, stage, kind, unit, amount)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql("storing usage"))?;
            for i in &u.items {
                insert
                    .execute(params![
                        pk, u.at_ms, i.provider, i.stage, i.kind, i.unit, i.amount
                    ])
                    .map_err(sql("storing usage"))?;
            }
            Ok(Done::Unit)
        }
        Write::Latency(l) => {
            let pk = call_pk(tx, &l.call_id)?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO latencies
                     (call, turn, host_in_ms, model_ms, host_out_ms, total_ms,
                      stt_ms, llm_ms, tts_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    pk,
                    l.turn,
                    l.host_in_ms,
                    l.model_ms,
                    l.host_out_ms,
                    l.total_ms,
                    l.stages.map(|s| s.stt_ms),
                    l.stages.map(|s| s.llm_ms),
                    l.stages.map(|s| s.tts_ms)
                ])
            })
            .map_err(sql("storing a turn latency"))?;
            Ok(Done::Unit)
        }
        Write::Recording { call_id, path } => {
            let n = tx
                .prepare_cached("UPDATE calls SET recording = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![call_id, path]))
                .map_err(sql("indexing a recording"))?;
            if n == 0 {
                return Err(not_found(call_id));
            }
            Ok(Done::Unit)
        }
        Write::Agent {
            call_id,
            agent,
            agent_version,
        } => {
            let n = tx
                .prepare_cached("UPDATE calls SET agent = ?2, agent_version = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![call_id, agent, agent_version]))
                .map_err(sql("changing a call's agent"))?;
            if n == 0 {
                return Err(not_found(call_id));
            }
            Ok(Done::Unit)
        }
        Write::End { call_id, end } => {
            let state = if end.abnormal {
                CallState::EndedAbnormally
            } else {
                CallState::Ended
            };
            let n = tx
                .prepare_cached(
                    "UPDATE calls SET state = ?2, ended_at_ms = ?3, end_reason = ?4, outcome = ?5
                     WHERE id = ?1 AND state = 'active'",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        call_id,
                        state_str(state),
                        end.at_ms,
                        end.reason,
                        end.outcome
                    ])
                })
                .map_err(sql("ending a call"))?;
            if n == 0 {
                call_pk(tx, call_id)?;
                return Err(StoreError::AlreadyEnded {
                    call_id: call_id.clone(),
                });
            }
            seqs.remove(call_id);
            Ok(Done::Unit)
        }
    }
}
