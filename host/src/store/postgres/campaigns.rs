//! The SQL of campaigns, their contacts and attempts, and the do-not-call list (the SQLite
//! store's, in Postgres' dialect; text is ordered byte-wise like SQLite's, `COLLATE "C"`).

use deadpool_postgres::{GenericClient, Object, Transaction};
use serde_json::Value;
use tokio_postgres::Row;

use super::{col, exec, row, rows, unsigned};
use crate::store::campaigns::{
    AttemptEnd, AttemptRecord, CampaignProgress, CampaignRecord, CampaignState, ContactRecord,
    ContactState, DncEntry, NewContact,
};
use crate::store::queued::{CampaignOp, Done};
use crate::store::{Result, StoreError};

fn no_campaign(id: &str) -> StoreError {
    StoreError::NoSuchCampaign(id.to_string())
}

fn no_contact(id: &str, contact: u32) -> StoreError {
    StoreError::InvalidInput(format!("campaign {id:?} has no contact {contact}"))
}

/// A changed-row count of zero means the campaign (or contact) was not there.
fn one(changed: u64, missing: impl FnOnce() -> StoreError) -> Result<()> {
    if changed == 0 { Err(missing()) } else { Ok(()) }
}

pub(super) async fn apply(tx: &Transaction<'_>, op: &CampaignOp) -> Result<Done> {
    match op {
        CampaignOp::Create { campaign, contacts } => {
            create(tx, campaign, contacts).await.map(|()| Done::Unit)
        }
        CampaignOp::State {
            id,
            state,
            reason,
            at_ms,
        } => {
            let n = exec(
                tx,
                "UPDATE campaigns SET state = $2, state_reason = $3, updated_at_ms = $4
                 WHERE id = $1",
                &[id, &state.as_str(), reason, at_ms],
                "changing a campaign's state",
            )
            .await?;
            one(n, || no_campaign(id)).map(|()| Done::Unit)
        }
        CampaignOp::BeginAttempt {
            id,
            contact,
            at_ms,
            day,
        } => begin_attempt(tx, id, *contact, *at_ms, day)
            .await
            .map(|n| Done::Count(n.into())),
        CampaignOp::AttemptCall {
            id,
            contact,
            attempt,
            call_id,
        } => {
            let n = exec(
                tx,
                "UPDATE campaign_attempts SET call_id = $4
                 WHERE campaign = $1 AND contact = $2 AND attempt = $3",
                &[id, &i64::from(*contact), &i64::from(*attempt), call_id],
                "noting an attempt's call",
            )
            .await?;
            one(n, || no_contact(id, *contact)).map(|()| Done::Unit)
        }
        CampaignOp::EndAttempt {
            id,
            contact,
            attempt,
            end,
        } => end_attempt(tx, id, *contact, *attempt, end)
            .await
            .map(|()| Done::Unit),
        CampaignOp::Skip {
            id,
            contact,
            outcome,
            at_ms,
        } => {
            // The contact first: a missing one is an answer here, where SQLite's foreign key
            // would refuse the attempt row.
            let n = exec(
                tx,
                "UPDATE campaign_contacts SET state = 'done', outcome = $3, next_at_ms = $4
                 WHERE campaign = $1 AND idx = $2 AND state = 'pending'",
                &[id, &i64::from(*contact), outcome, at_ms],
                "skipping a contact",
            )
            .await?;
            one(n, || no_contact(id, *contact))?;
            // A skip is no call: an attempt row says why, the contact's attempts stay.
            let attempt = next_attempt(tx, id, *contact).await?;
            exec(
                tx,
                "INSERT INTO campaign_attempts (campaign, contact, attempt, started_at_ms,
                     outcome, ended_at_ms) VALUES ($1, $2, $3, $4, $5, $4)",
                &[
                    id,
                    &i64::from(*contact),
                    &i64::from(attempt),
                    at_ms,
                    outcome,
                ],
                "skipping a contact",
            )
            .await?;
            Ok(Done::Unit)
        }
        CampaignOp::Defer {
            id,
            contact,
            next_at_ms,
        } => {
            let n = exec(
                tx,
                "UPDATE campaign_contacts SET next_at_ms = $3
                 WHERE campaign = $1 AND idx = $2 AND state = 'pending'",
                &[id, &i64::from(*contact), next_at_ms],
                "deferring a contact",
            )
            .await?;
            one(n, || no_contact(id, *contact)).map(|()| Done::Unit)
        }
        CampaignOp::ClosePending { id, outcome, at_ms } => {
            let n = exec(
                tx,
                "UPDATE campaign_contacts SET state = 'done', outcome = $2
                 WHERE campaign = $1 AND state = 'pending'",
                &[id, outcome],
                "closing a campaign's contacts",
            )
            .await?;
            exec(
                tx,
                "UPDATE campaigns SET updated_at_ms = $2 WHERE id = $1",
                &[id, at_ms],
                "closing a campaign's contacts",
            )
            .await?;
            Ok(Done::Count(n))
        }
        CampaignOp::DncAdd {
            numbers,
            source,
            at_ms,
        } => {
            let mut added = 0;
            for number in numbers {
                added += exec(
                    tx,
                    "INSERT INTO dnc (number, source, added_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (number) DO NOTHING",
                    &[number, source, at_ms],
                    "adding to the do-not-call list",
                )
                .await?;
            }
            Ok(Done::Count(added))
        }
        CampaignOp::DncRemove { number } => {
            let n = exec(
                tx,
                "DELETE FROM dnc WHERE number = $1",
                &[number],
                "removing from the do-not-call list",
            )
            .await?;
            Ok(Done::Count(n))
        }
    }
}

async fn create(tx: &Transaction<'_>, c: &CampaignRecord, contacts: &[NewContact]) -> Result<()> {
    let inserted = exec(
        tx,
        "INSERT INTO campaigns (id, name, state, state_reason, settings, created_at_ms,
             updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        &[
            &c.id,
            &c.name,
            &c.state.as_str(),
            &c.state_reason,
            &c.settings.to_string(),
            &c.created_at_ms,
            &c.updated_at_ms,
        ],
        "creating a campaign",
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::InvalidInput(format!(
            "a campaign with id {:?} already exists",
            c.id
        )));
    }
    for (idx, contact) in contacts.iter().enumerate() {
        exec(
            tx,
            "INSERT INTO campaign_contacts (campaign, idx, number, name, time_zone, zones,
                 metadata, state, next_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
            &[
                &c.id,
                &(idx as i64),
                &contact.number,
                &contact.name,
                &contact.time_zone,
                &contact.zones.join(","),
                &contact.metadata.to_string(),
                &contact.next_at_ms,
            ],
            "adding a campaign's contacts",
        )
        .await?;
    }
    Ok(())
}

async fn begin_attempt(
    tx: &Transaction<'_>,
    id: &str,
    contact: u32,
    at_ms: i64,
    day: &str,
) -> Result<u32> {
    row(
        tx,
        "UPDATE campaign_contacts SET state = 'dialing', attempts = attempts + 1,
             attempts_on_last_day = CASE WHEN last_day = $3 THEN attempts_on_last_day + 1
                                         ELSE 1 END,
             last_day = $3
         WHERE campaign = $1 AND idx = $2 AND state = 'pending'
         RETURNING attempts",
        &[&id, &i64::from(contact), &day],
        "beginning an attempt",
    )
    .await?
    .ok_or_else(|| {
        StoreError::InvalidInput(format!(
            "contact {contact} of campaign {id:?} is not pending"
        ))
    })?;
    let attempt = next_attempt(tx, id, contact).await?;
    exec(
        tx,
        "INSERT INTO campaign_attempts (campaign, contact, attempt, started_at_ms)
         VALUES ($1, $2, $3, $4)",
        &[&id, &i64::from(contact), &i64::from(attempt), &at_ms],
        "recording an attempt",
    )
    .await?;
    Ok(attempt)
}

/// The number of a contact's next attempt row.
async fn next_attempt(tx: &Transaction<'_>, id: &str, contact: u32) -> Result<u32> {
    let found = row(
        tx,
        "SELECT COALESCE(MAX(attempt), 0) + 1 FROM campaign_attempts
         WHERE campaign = $1 AND contact = $2",
        &[&id, &i64::from(contact)],
        "numbering an attempt",
    )
    .await?;
    match found {
        Some(r) => Ok(unsigned(col(&r, 0)?)),
        None => Ok(1),
    }
}

async fn end_attempt(
    tx: &Transaction<'_>,
    id: &str,
    contact: u32,
    attempt: u32,
    end: &AttemptEnd,
) -> Result<()> {
    let n = exec(
        tx,
        "UPDATE campaign_attempts SET outcome = $4, agent_outcome = $5, ended_at_ms = $6
         WHERE campaign = $1 AND contact = $2 AND attempt = $3",
        &[
            &id,
            &i64::from(contact),
            &i64::from(attempt),
            &end.outcome,
            &end.agent_outcome,
            &end.at_ms,
        ],
        "ending an attempt",
    )
    .await?;
    one(n, || no_contact(id, contact))?;
    let (state, next) = match end.retry_at_ms {
        Some(at) => (ContactState::Pending, at),
        None => (ContactState::Done, end.at_ms),
    };
    exec(
        tx,
        "UPDATE campaign_contacts SET state = $3, next_at_ms = $4, outcome = $5,
             agent_outcome = COALESCE($6, agent_outcome)
         WHERE campaign = $1 AND idx = $2",
        &[
            &id,
            &i64::from(contact),
            &state.as_str(),
            &next,
            &end.outcome,
            &end.agent_outcome,
        ],
        "ending an attempt",
    )
    .await?;
    exec(
        tx,
        "UPDATE campaigns SET updated_at_ms = $2 WHERE id = $1",
        &[&id, &end.at_ms],
        "ending an attempt",
    )
    .await?;
    Ok(())
}

fn json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn campaign_row(r: &Row) -> Result<CampaignRecord> {
    let state: String = col(r, 2)?;
    Ok(CampaignRecord {
        id: col(r, 0)?,
        name: col(r, 1)?,
        state: CampaignState::parse(&state).unwrap_or(CampaignState::Paused),
        state_reason: col(r, 3)?,
        settings: json(col(r, 4)?),
        created_at_ms: col(r, 5)?,
        updated_at_ms: col(r, 6)?,
    })
}

const CAMPAIGN_COLUMNS: &str =
    "id, name, state, state_reason, settings, created_at_ms, updated_at_ms";

async fn progress(
    client: &impl GenericClient,
    campaign: CampaignRecord,
) -> Result<CampaignProgress> {
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
    let by_state = rows(
        client,
        "SELECT state, COUNT(*), SUM(attempts)::BIGINT FROM campaign_contacts
         WHERE campaign = $1 GROUP BY state",
        &[&p.campaign.id],
        what,
    )
    .await?;
    for r in &by_state {
        let state: String = col(r, 0)?;
        let n: u32 = unsigned(col(r, 1)?);
        p.contacts += n;
        p.attempts += unsigned::<u32>(col(r, 2)?);
        match ContactState::parse(&state) {
            Some(ContactState::Pending) => p.pending += n,
            Some(ContactState::Dialing) => p.dialing += n,
            Some(ContactState::Done) | None => p.done += n,
        }
    }
    p.outcomes = rows(
        client,
        r#"SELECT outcome, COUNT(*) FROM campaign_contacts
           WHERE campaign = $1 AND state = 'done' GROUP BY outcome ORDER BY outcome COLLATE "C""#,
        &[&p.campaign.id],
        what,
    )
    .await?
    .iter()
    .map(|r| {
        Ok((
            col::<Option<String>>(r, 0)?.unwrap_or_default(),
            unsigned(col(r, 1)?),
        ))
    })
    .collect::<Result<_>>()?;
    Ok(p)
}

pub(super) async fn list(client: &Object) -> Result<Vec<CampaignProgress>> {
    let campaigns = rows(
        client,
        &format!(
            r#"SELECT {CAMPAIGN_COLUMNS} FROM campaigns
               ORDER BY created_at_ms DESC, id COLLATE "C""#
        ),
        &[],
        "listing campaigns",
    )
    .await?;
    let mut out = Vec::with_capacity(campaigns.len());
    for r in &campaigns {
        out.push(progress(client, campaign_row(r)?).await?);
    }
    Ok(out)
}

pub(super) async fn get(client: &Object, id: &str) -> Result<CampaignProgress> {
    let found = row(
        client,
        &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"),
        &[&id],
        "reading a campaign",
    )
    .await?
    .ok_or_else(|| no_campaign(id))?;
    progress(client, campaign_row(&found)?).await
}

const CONTACT_COLUMNS: &str = "campaign, idx, number, name, time_zone, zones, metadata, state,
     next_at_ms, attempts, last_day, attempts_on_last_day, outcome, agent_outcome";

fn contact_row(r: &Row) -> Result<ContactRecord> {
    let zones: String = col(r, 5)?;
    let state: String = col(r, 7)?;
    Ok(ContactRecord {
        campaign: col(r, 0)?,
        index: unsigned(col(r, 1)?),
        number: col(r, 2)?,
        name: col(r, 3)?,
        time_zone: col(r, 4)?,
        zones: zones
            .split(',')
            .filter(|z| !z.is_empty())
            .map(str::to_string)
            .collect(),
        metadata: json(col(r, 6)?),
        state: ContactState::parse(&state).unwrap_or(ContactState::Pending),
        next_at_ms: col(r, 8)?,
        attempts: unsigned(col(r, 9)?),
        last_day: col(r, 10)?,
        attempts_on_last_day: unsigned(col(r, 11)?),
        outcome: col(r, 12)?,
        agent_outcome: col(r, 13)?,
    })
}

const ATTEMPT_COLUMNS: &str =
    "campaign, contact, attempt, started_at_ms, call_id, outcome, agent_outcome, ended_at_ms";

fn attempt_row(r: &Row) -> Result<AttemptRecord> {
    Ok(AttemptRecord {
        campaign: col(r, 0)?,
        contact: unsigned(col(r, 1)?),
        attempt: unsigned(col(r, 2)?),
        started_at_ms: col(r, 3)?,
        call_id: col(r, 4)?,
        outcome: col(r, 5)?,
        agent_outcome: col(r, 6)?,
        ended_at_ms: col(r, 7)?,
    })
}

pub(super) async fn contacts(
    client: &Object,
    id: &str,
) -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>> {
    get(client, id).await?;
    let contacts = rows(
        client,
        &format!(
            "SELECT {CONTACT_COLUMNS} FROM campaign_contacts WHERE campaign = $1 ORDER BY idx"
        ),
        &[&id],
        "reading a campaign's contacts",
    )
    .await?
    .iter()
    .map(contact_row)
    .collect::<Result<Vec<_>>>()?;
    let attempts = rows(
        client,
        &format!(
            "SELECT {ATTEMPT_COLUMNS} FROM campaign_attempts WHERE campaign = $1
             ORDER BY contact, attempt"
        ),
        &[&id],
        "reading a campaign's attempts",
    )
    .await?
    .iter()
    .map(attempt_row)
    .collect::<Result<Vec<_>>>()?;
    let mut out: Vec<(ContactRecord, Vec<AttemptRecord>)> =
        contacts.into_iter().map(|c| (c, Vec::new())).collect();
    for attempt in attempts {
        if let Some((_, list)) = out.get_mut(attempt.contact as usize) {
            list.push(attempt);
        }
    }
    Ok(out)
}

pub(super) async fn due(
    client: &Object,
    id: &str,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<ContactRecord>> {
    rows(
        client,
        &format!(
            "SELECT {CONTACT_COLUMNS} FROM campaign_contacts
             WHERE campaign = $1 AND state = 'pending' AND next_at_ms <= $2
             ORDER BY next_at_ms, idx LIMIT $3"
        ),
        &[&id, &now_ms, &i64::from(limit)],
        "finding due contacts",
    )
    .await?
    .iter()
    .map(contact_row)
    .collect()
}

pub(super) async fn dialing(
    client: &Object,
    id: &str,
) -> Result<Vec<(ContactRecord, AttemptRecord)>> {
    let what = "finding dialling contacts";
    let contacts = rows(
        client,
        &format!(
            "SELECT {CONTACT_COLUMNS} FROM campaign_contacts
             WHERE campaign = $1 AND state = 'dialing' ORDER BY idx"
        ),
        &[&id],
        what,
    )
    .await?;
    let mut out = Vec::with_capacity(contacts.len());
    for r in &contacts {
        let contact = contact_row(r)?;
        let last = row(
            client,
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM campaign_attempts
                 WHERE campaign = $1 AND contact = $2 ORDER BY attempt DESC LIMIT 1"
            ),
            &[&id, &i64::from(contact.index)],
            what,
        )
        .await?
        .ok_or_else(|| {
            StoreError::Worker(format!("dialling contact {} has no attempt", contact.index))
        })?;
        out.push((contact, attempt_row(&last)?));
    }
    Ok(out)
}

pub(super) async fn dnc_contains(client: &Object, number: &str) -> Result<bool> {
    Ok(row(
        client,
        "SELECT 1 FROM dnc WHERE number = $1",
        &[&number],
        "checking the do-not-call list",
    )
    .await?
    .is_some())
}

pub(super) async fn dnc_list(client: &Object, limit: u32) -> Result<Vec<DncEntry>> {
    rows(
        client,
        r#"SELECT number, source, added_at_ms FROM dnc
           ORDER BY added_at_ms DESC, number COLLATE "C" LIMIT $1"#,
        &[&i64::from(limit)],
        "reading the do-not-call list",
    )
    .await?
    .iter()
    .map(|r| {
        Ok(DncEntry {
            number: col(r, 0)?,
            source: col(r, 1)?,
            added_at_ms: col(r, 2)?,
        })
    })
    .collect()
}
