//! The SQL of the live configuration overlay and its audit trail.

use rusqlite::{Connection, Transaction, params};

use crate::store::{
    AuditRecord, ConfigChange, OverlayEntry, OverlayKind, OverlayWrite, Result, StoreError, sql,
};

/// Inside the writer's transaction: the overlay written and the audit row added.
pub(super) fn apply_change(tx: &Transaction, c: &ConfigChange) -> Result<AuditRecord> {
    match &c.write {
        OverlayWrite::One {
            entry,
            forget: true,
        } => {
            tx.prepare_cached(
                "DELETE FROM config_overlay WHERE kind = ?1 AND agent = ?2 AND key = ?3",
            )
            .and_then(|mut s| s.execute(params![entry.kind.as_str(), entry.agent, entry.key]))
            .map_err(sql("forgetting a live configuration value"))?;
        }
        OverlayWrite::One {
            entry,
            forget: false,
        } => store_entry(tx, entry)?,
        OverlayWrite::All(entries) => {
            tx.execute("DELETE FROM config_overlay", [])
                .map_err(sql("clearing the live configuration"))?;
            for entry in entries {
                store_entry(tx, entry)?;
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO config_audit (at_ms, who, action, target, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.at_ms,
            c.who,
            c.action,
            c.target,
            c.before.to_string(),
            c.after.to_string()
        ])
    })
    .map_err(sql("auditing a configuration change"))?;
    Ok(AuditRecord {
        id: tx.last_insert_rowid(),
        at_ms: c.at_ms,
        who: c.who.clone(),
        action: c.action.clone(),
        target: c.target.clone(),
        before: c.before.clone(),
        after: c.after.clone(),
    })
}

fn store_entry(tx: &Transaction, e: &OverlayEntry) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO config_overlay (kind, agent, key, value, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, agent, key) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
    )
    .and_then(|mut s| s.execute(params![e.kind.as_str(), e.agent, e.key, e.value, e.at_ms]))
    .map_err(sql("storing a live configuration value"))?;
    Ok(())
}

pub(super) fn read_overlay(conn: &Connection) -> Result<Vec<OverlayEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, agent, key, value, at_ms FROM config_overlay ORDER BY kind, agent, key",
        )
        .map_err(sql("reading the live configuration"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })
        .map_err(sql("reading the live configuration"))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, agent, key, value, at_ms) =
            row.map_err(sql("reading the live configuration"))?;
        let kind = OverlayKind::parse(&kind).ok_or_else(|| {
            StoreError::InvalidInput(format!("unknown live configuration kind {kind:?}"))
        })?;
        out.push(OverlayEntry {
            kind,
            agent,
            key,
            value,
            at_ms,
        });
    }
    Ok(out)
}

pub(super) fn read_audit(conn: &Connection, limit: u32) -> Result<Vec<AuditRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at_ms, who, action, target, before, after FROM config_audit
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(sql("reading the configuration audit"))?;
    let json = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let rows = stmt
        .query_map([limit], |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                who: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                before: json(r.get(5)?),
                after: json(r.get(6)?),
            })
        })
        .map_err(sql("reading the configuration audit"))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(sql("reading the configuration audit"))
}
