//! The SQL of the live configuration overlay and its audit trail.

use deadpool_postgres::{Object, Transaction};

use super::reads::json;
use super::{col, exec, row, rows, unreadable};
use crate::store::{
    AuditRecord, ConfigChange, OverlayEntry, OverlayKind, OverlayWrite, Result, StoreError,
};

/// Inside the writer's transaction: the overlay written and the audit row added.
pub(super) async fn apply_change(tx: &Transaction<'_>, c: &ConfigChange) -> Result<AuditRecord> {
    match &c.write {
        OverlayWrite::One {
            entry,
            forget: true,
        } => {
            exec(
                tx,
                "DELETE FROM config_overlay WHERE kind = $1 AND agent = $2 AND key = $3",
                &[&entry.kind.as_str(), &entry.agent, &entry.key],
                "forgetting a live configuration value",
            )
            .await?;
        }
        OverlayWrite::One {
            entry,
            forget: false,
        } => store_entry(tx, entry).await?,
        OverlayWrite::All(entries) => {
            exec(
                tx,
                "DELETE FROM config_overlay",
                &[],
                "clearing the live configuration",
            )
            .await?;
            for entry in entries {
                store_entry(tx, entry).await?;
            }
        }
    }
    let audit = row(
        tx,
        "INSERT INTO config_audit (at_ms, who, action, target, before, after)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            &c.at_ms,
            &c.who,
            &c.action,
            &c.target,
            &c.before.to_string(),
            &c.after.to_string(),
        ],
        "auditing a configuration change",
    )
    .await?
    .ok_or_else(|| unreadable("no audit id returned".into()))?;
    Ok(AuditRecord {
        id: col(&audit, 0)?,
        at_ms: c.at_ms,
        who: c.who.clone(),
        action: c.action.clone(),
        target: c.target.clone(),
        before: c.before.clone(),
        after: c.after.clone(),
    })
}

async fn store_entry(tx: &Transaction<'_>, e: &OverlayEntry) -> Result<()> {
    exec(
        tx,
        "INSERT INTO config_overlay (kind, agent, key, value, at_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, agent, key) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
        &[&e.kind.as_str(), &e.agent, &e.key, &e.value, &e.at_ms],
        "storing a live configuration value",
    )
    .await?;
    Ok(())
}

pub(super) async fn read_overlay(client: &Object) -> Result<Vec<OverlayEntry>> {
    // Byte order, as SQLite sorts text, whatever the database's collation.
    rows(
        client,
        r#"SELECT kind, agent, key, value, at_ms FROM config_overlay
           ORDER BY kind COLLATE "C", agent COLLATE "C", key COLLATE "C""#,
        &[],
        "reading the live configuration",
    )
    .await?
    .iter()
    .map(|r| {
        let kind: String = col(r, 0)?;
        Ok(OverlayEntry {
            kind: OverlayKind::parse(&kind).ok_or_else(|| {
                StoreError::InvalidInput(format!("unknown live configuration kind {kind:?}"))
            })?,
            agent: col(r, 1)?,
            key: col(r, 2)?,
            value: col(r, 3)?,
            at_ms: col(r, 4)?,
        })
    })
    .collect()
}

pub(super) async fn read_audit(client: &Object, limit: u32) -> Result<Vec<AuditRecord>> {
    rows(
        client,
        "SELECT id, at_ms, who, action, target, before, after FROM config_audit
         ORDER BY id DESC LIMIT $1",
        &[&i64::from(limit)],
        "reading the configuration audit",
    )
    .await?
    .iter()
    .map(|r| {
        Ok(AuditRecord {
            id: col(r, 0)?,
            at_ms: col(r, 1)?,
            who: col(r, 2)?,
            action: col(r, 3)?,
            target: col(r, 4)?,
            before: json(&col::<String>(r, 5)?).unwrap_or_default(),
            after: json(&col::<String>(r, 6)?).unwrap_or_default(),
        })
    })
    .collect()
}
