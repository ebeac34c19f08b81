//! The SQL of campaigns, their contacts and attempts, and the do-not-call list. Writes run in
//! the writer's transaction like every other write; reads on the read pool.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use serde_json::Value;

use crate::store::campaigns::{
    AttemptEnd, AttemptRecord, CampaignProgress, CampaignRecord, CampaignState, ContactRecord,
    ContactState, DncEntry, NewContact,
};
use crate::store::queued::{CampaignOp, Done};
use crate::store::{Result, StoreError, sql};

fn no_campaign(id: &str) -> StoreError {
    StoreError::NoSuchCampaign(id.to_string())
}

fn no_contact(id: &str, contact: u32) -> StoreError {
    StoreError::InvalidInput(format!("campaign {id:?} has no contact {contact}"))
}

/// A changed-row count of zero means the campaign (or contact) was not there.
fn one(changed: usize, missing: impl FnOnce() -> StoreError) -> Result<()> {
    if changed == 0 { Err(missing()) } else { Ok(()) }
}

pub(super) fn apply(tx: &Transaction, op: &CampaignOp) -> Result<Done> {
    match op {
        CampaignOp::Create { campaign, contacts } => {
            create(tx, campaign, contacts).map(|()| Done::Unit)
        }
        CampaignOp::State {
            id,
            state,
            reason,
            at_ms,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE campaigns SET state = ?2, state_reason = ?3, updated_at_ms = ?4
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, state.as_str(), reason, at_ms]))
                .map_err(sql("changing a campaign's state"))?;
            one(n, || no_campaign(id)).map(|()| Done::Unit)
        }
        CampaignOp::BeginAttempt {
            id,
            contact,
            at_ms,
            day,
        } => begin_attempt(tx, id, *contact, *at_ms, day).map(|n| Done::Count(n.into())),
        CampaignOp::AttemptCall {
            id,
            contact,
            attempt,
            call_id,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE campaign_attempts SET call_id = ?4
                     WHERE campaign = ?1 AND contact = ?2 AND attempt = ?3",
                )
                .and_then(|mut s| s.execute(params![id, contact, attempt, call_id]))
                .map_err(sql("noting an attempt's call"))?;
            one(n, || no_contact(id, *contact)).map(|()| Done::Unit)
        }
        CampaignOp::EndAttempt {
            id,
            contact,
            attempt,
            end,
        } => end_attempt(tx, id, *contact, *attempt, end).map(|()| Done::Unit),
        CampaignOp::Skip {
            id,
            contact,
            outcome,
            at_ms,
        } => {
            // A skip is no call: an attempt row says why, the contact's attempts stay.
            let attempt = next_attempt(tx, id, *contact)?;
            tx.prepare_cached(
                "INSERT INTO campaign_attempts (campaign, contact, attempt, started_at_ms,
                     outcome, ended_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
            )
            .and_then(|mut s| s.execute(params![id, contact, attempt, at_ms, outcome]))
            .map_err(sql("skipping a contact"))?;
            let n = tx
                .prepare_cached(
                    "UPDATE campaign_contacts SET state = 'done', outcome = ?3, next_at_ms = ?4
                     WHERE campaign = ?1 AND idx = ?2 AND state = 'pending'",
                )
                .and_then(|mut s| s.execute(params![id, contact, outcome, at_ms]))
                .map_err(sql("skipping a contact"))?;
            one(n, || no_contact(id, *contact)).map(|()| Done::Unit)
        }
        CampaignOp::Defer {
            id,
            contact,
            next_at_ms,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE campaign_contacts SET next_at_ms = ?3
                     WHERE campaign = ?1 AND idx = ?2 AND state = 'pending'",
                )
                .and_then(|mut s| s.execute(params![id, contact, next_at_ms]))
                .map_err(sql("deferring a contact"))?;
            one(n, || no_contact(id, *contact)).map(|()| Done::Unit)
        }
        CampaignOp::ClosePending { id, outcome, at_ms } => {
            let n = tx
                .prepare_cached(
                    "UPDATE campaign_contacts SET state = 'done', outcome = ?2
                     WHERE campaign = ?1 AND state = 'pending'",
                )
                .and_then(|mut s| s.execute(params![id, outcome]))
                .map_err(sql("closing a campaign's contacts"))?;
            tx.prepare_cached("UPDATE campaigns SET updated_at_ms = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, at_ms]))
                .map_err(sql("closing a campaign's contacts"))?;
            Ok(Done::Count(n as u64))
        }
        CampaignOp::DncAdd {
            numbers,
            source,
            at_ms,
        } => {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO dnc (number, source, added_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (number) DO NOTHING",
                )
                .map_err(sql("adding to the do-not-call list"))?;
            let mut added = 0;
            for number in numbers {
                added += insert
                    .execute(params![number, source, at_ms])
                    .map_err(sql("adding to the do-not-call list"))?;
            }
            Ok(Done::Count(added as u64))
        }
        CampaignOp::DncRemove { number } => {
            let n = tx
                .prepare_cached("DELETE FROM dnc WHERE number = ?1")
                .and_then(|mut s| s.execute([number]))
                .map_err(sql("removing from the do-not-call list"))?;
            Ok(Done::Count(n as u64))
        }
    }
}

fn create(tx: &Transaction, c: &CampaignRecord, contacts: &[NewContact]) -> Result<()> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO campaigns (id, name, state, state_reason, settings, created_at_ms,
                 updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                c.id,
                c.name,
                c.state.as_str(),
                c.state_reason,
                c.settings.to_string(),
                c.created_at_ms,
                c.updated_at_ms
            ])
        })
        .map_err(sql("creating a campaign"))?;
    if inserted == 0 {
        return Err(StoreError::InvalidInput(format!(
            "a campaign with id {:?} already exists",
            c.id
        )));
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO campaign_contacts (campaign, idx, number, name, time_zone, zones,
                 metadata, state, next_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
        )
        .map_err(sql("adding a campaign's contacts"))?;
    for (idx, contact) in contacts.iter().enumerate() {
        insert
            .execute(params![
                c.id,
                idx as u32,
                contact.number,
                contact.name,
                contact.time_zone,
                contact.zones.join(","),
                contact.metadata.to_string(),
                contact.next_at_ms
            ])
            .map_err(sql("adding a campaign's contacts"))?;
    }
    Ok(())
}

fn begin_attempt(tx: &Transaction, id: &str, contact: u32, at_ms: i64, day: &str) -> Result<u32> {
    let _counted: u32 = tx
        .prepare_cached(
            "UPDATE campaign_contacts SET state = 'dialing', attempts = attempts + 1,
                 attempts_on_last_day = CASE WHEN last_day = ?3 THEN attempts_on_last_day + 1
                                             ELSE 1 END,
                 last_day = ?3
             WHERE campaign = ?1 AND idx = ?2 AND state = 'pending'
             RETURNING attempts",
        )
        .and_then(|mut s| {
            s.query_row(params![id, contact, day], |r| r.get(0))
                .optional()
        })
        .map_err(sql("beginning an attempt"))?
        .ok_or_else(|| {
            StoreError::InvalidInput(format!(
                "contact {contact} of campaign {id:?} is not pending"
            ))
        })?;
    let attempt = next_attempt(tx, id, contact)?;
    tx.prepare_cached(
        "INSERT INTO campaign_attempts (campaign, contact, attempt, started_at_ms)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![id, contact, attempt, at_ms]))
    .map_err(sql("recording an attempt"))?;
    Ok(attempt)
}

/// The number of a contact's next attempt row.
fn next_attempt(tx: &Transaction, id: &str, contact: u32) -> Result<u32> {
    tx.prepare_cached(
        "SELECT COALESCE(MAX(attempt), 0) + 1 FROM campaign_attempts
         WHERE campaign = ?1 AND contact = ?2",
    )
    .and_then(|mut s| s.query_row(params![id, contact], |r| r.get(0)))
    .map_err(sql("numbering an attempt"))
}

fn end_attempt(
    tx: &Transaction,
    id: &str,
    contact: u32,
    attempt: u32,
    end: &AttemptEnd,
) -> Result<()> {
    let n = tx
        .prepare_cached(
            "UPDATE campaign_attempts SET outcome = ?4, agent_outcome = ?5, ended_at_ms = ?6
             WHERE campaign = ?1 AND contact = ?2 AND attempt = ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                contact,
                attempt,
                end.outcome,
                end.agent_outcome,
                end.at_ms
            ])
        })
        .map_err(sql("ending an attempt"))?;
    one(n, || no_contact(id, contact))?;
    let (state, next) = match end.retry_at_ms {
        Some(at) => (ContactState::Pending, at),
        None => (ContactState::Done, end.at_ms),
    };
    tx.prepare_cached(
        "UPDATE campaign_contacts SET state = ?3, next_at_ms = ?4, outcome = ?5,
             agent_outcome = COALESCE(?6, agent_outcome)
         WHERE campaign = ?1 AND idx = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            contact,
            state.as_str(),
            next,
            end.outcome,
            end.agent_outcome
        ])
    })
    .map_err(sql("ending an attempt"))?;
    tx.prepare_cached("UPDATE campaigns SET updated_at_ms = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, end.at_ms]))
        .map_err(sql("ending an attempt"))?;
    Ok(())
}

fn json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn campaign_row(r: &Row) -> rusqlite::Result<CampaignRecord> {
    let state: String = r.get(2)?;
    Ok(CampaignRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        state: CampaignState::parse(&state).unwrap_or(CampaignState::Paused),
        state_reason: r.get(3)?,
        settings: json(r.get(4)?),
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
    })
}

const CAMPAIGN_COLUMNS: &str =
    "id, name, state, state_reason, settings, created_at_ms, updated_at_ms";

fn progress(conn: &Connection, campaign: CampaignRecord) -> Result<CampaignProgress> {
    let what = "counting a campaign's contacts";
    let mut p = CampaignProgress {
        campaign,
        contacts: 0,
        pending: 0,
        dialing: 0,
        done: 0,
        outcomes: Vec::new(),
        attempts: 0,
    };
    let mut by_state = conn
        .prepare_cached(
            "SELECT state, COUNT(*), SUM(attempts) FROM campaign_contacts WHERE campaign = ?1
             GROUP BY state",
        )
        .map_err(sql(what))?;
    let rows = by_state
        .query_map([&p.campaign.id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })
        .map_err(sql(what))?;
    for row in rows {
        let (state, n, attempts) = row.map_err(sql(what))?;
        p.contacts += n;
        p.attempts += attempts;
        match ContactState::parse(&state) {
            Some(ContactState::Pending) => p.pending += n,
            Some(ContactState::Dialing) => p.dialing += n,
            Some(ContactState::Done) | None => p.done += n,
        }
    }
    let mut by_outcome = conn
        .prepare_cached(
            "SELECT outcome, COUNT(*) FROM campaign_contacts
             WHERE campaign = ?1 AND state = 'done' GROUP BY outcome ORDER BY outcome",
        )
        .map_err(sql(what))?;
    p.outcomes = by_outcome
        .query_map([&p.campaign.id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
            ))
        })
        .and_then(Iterator::collect)
        .map_err(sql(what))?;
    Ok(p)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<CampaignProgress>> {
    let campaigns: Vec<CampaignRecord> = conn
        .prepare_cached(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at_ms DESC, id"
        ))
        .and_then(|mut s| s.query_map([], campaign_row)?.collect())
        .map_err(sql("listing campaigns"))?;
    campaigns.into_iter().map(|c| progress(conn, c)).collect()
}

pub(super) fn get(conn: &Connection, id: &str) -> Result<CampaignProgress> {
    let campaign = conn
        .prepare_cached(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?1"
        ))
        .and_then(|mut s| s.query_row([id], campaign_row).optional())
        .map_err(sql("reading a campaign"))?
        .ok_or_else(|| no_campaign(id))?;
    progress(conn, campaign)
}

const CONTACT_COLUMNS: &str = "campaign, idx, number, name, time_zone, zones, metadata, state,
     next_at_ms, attempts, last_day, attempts_on_last_day, outcome, agent_outcome";

fn contact_row(r: &Row) -> rusqlite::Result<ContactRecord> {
    let zones: String = r.get(5)?;
    let state: String = r.get(7)?;
    Ok(ContactRecord {
        campaign: r.get(0)?,
        index: r.get(1)?,
        number: r.get(2)?,
        name: r.get(3)?,
        time_zone: r.get(4)?,
        zones: zones
            .split(',')
            .filter(|z| !z.is_empty())
            .map(str::to_string)
            .collect(),
        metadata: json(r.get(6)?),
        state: ContactState::parse(&state).unwrap_or(ContactState::Pending),
        next_at_ms: r.get(8)?,
        attempts: r.get(9)?,
        last_day: r.get(10)?,
        attempts_on_last_day: r.get(11)?,
        outcome: r.get(12)?,
        agent_outcome: r.get(13)?,
    })
}

const ATTEMPT_COLUMNS: &str =
    "campaign, contact, attempt, started_at_ms, call_id, outcome, agent_outcome, ended_at_ms";

fn attempt_row(r: &Row) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        campaign: r.get(0)?,
        contact: r.get(1)?,
        attempt: r.get(2)?,
        started_at_ms: r.get(3)?,
        call_id: r.get(4)?,
        outcome: r.get(5)?,
        agent_outcome: r.get(6)?,
        ended_at_ms: r.get(7)?,
    })
}

pub(super) fn contacts(
    conn: &Connection,
    id: &str,
) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
    get(conn, id)?;
    let contacts: Vec<ContactRecord> = conn
        .prepare_cached(&format!(
            "SELECT {CONTACT_COLUMNS} FROM campaign_contacts WHERE campaign = ?1 ORDER BY idx"
        ))
        .and_then(|mut s| s.query_map([id], contact_row)?.collect())
        .map_err(sql("reading a campaign's contacts"))?;
    let attempts: Vec<AttemptRecord> = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM campaign_attempts WHERE campaign = ?1
             ORDER BY contact, attempt"
        ))
        .and_then(|mut s| s.query_map([id], attempt_row)?.collect())
        .map_err(sql("reading a campaign's attempts"))?;
    let mut out: Vec<(ContactRecord, Vec<AttemptRecord>)> =
        contacts.into_iter().map(|c| (c, Vec::new())).collect();
    for attempt in attempts {
        if let Some((_, list)) = out.get_mut(attempt.contact as usize) {
            list.push(attempt);
        }
    }
    Ok(out)
}

pub(super) fn due(
    conn: &Connection,
    id: &str,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<ContactRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {CONTACT_COLUMNS} FROM campaign_contacts
         WHERE campaign = ?1 AND state = 'pending' AND next_at_ms <= ?2
         ORDER BY next_at_ms, idx LIMIT ?3"
    ))
    .and_then(|mut s| {
        s.query_map(params![id, now_ms, limit], contact_row)?
            .collect()
    })
    .map_err(sql("finding due contacts"))
}

pub(super) fn dialing(conn: &Connection, id: &str) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
    let contacts: Vec<ContactRecord> = conn
        .prepare_cached(&format!(
            "SELECT {CONTACT_COLUMNS} FROM campaign_contacts
             WHERE campaign = ?1 AND state = 'dialing' ORDER BY idx"
        ))
        .and_then(|mut s| s.query_map([id], contact_row)?.collect())
        .map_err(sql("finding dialling contacts"))?;
    let mut last = conn
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM campaign_attempts WHERE campaign = ?1 AND contact = ?2
             ORDER BY attempt DESC LIMIT 1"
        ))
        .map_err(sql("finding dialling contacts"))?;
    let mut out = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let attempt = last
            .query_row(params![id, contact.index], attempt_row)
            .map_err(sql("finding dialling contacts"))?;
        out.push((contact, attempt));
    }
    Ok(out)
}

pub(super) fn dnc_contains(conn: &Connection, number: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM dnc WHERE number = ?1")
        .and_then(|mut s| s.exists([number]))
        .map_err(sql("checking the do-not-call list"))
}

pub(super) fn dnc_list(conn: &Connection, limit: u32) -> Result<Vec<DncEntry>> {
    conn.prepare_cached(
        "SELECT number, source, added_at_ms FROM dnc ORDER BY added_at_ms DESC, number LIMIT ?1",
    )
    .and_then(|mut s| {
        s.query_map([limit], |r| {
            Ok(DncEntry {
                number: r.get(0)?,
                source: r.get(1)?,
                added_at_ms: r.get(2)?,
            })
        })?
        .collect()
    })
    .map_err(sql("reading the do-not-call list"))
}
