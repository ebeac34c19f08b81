//! Outbound campaigns as stored: the campaign (its settings as the campaign layer wrote them),
//! its contacts with their progress, every attempt, and the do-not-call list. The store keeps
//! what it is handed; what a setting means is the campaign layer's business.
//!
//! Durability is the point: an attempt is committed (the contact `dialing`, its attempt counted)
//! before the call is placed, so after a crash no contact is called more often than counted.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Result;

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Created, not started.
    Ready,
    Running,
    Paused,
    Cancelled,
    /// Every contact has its final outcome.
    Finished,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Ready => "ready",
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<CampaignState> {
        Some(match s {
            "ready" => CampaignState::Ready,
            "running" => CampaignState::Running,
            "paused" => CampaignState::Paused,
            "cancelled" => CampaignState::Cancelled,
            "finished" => CampaignState::Finished,
            _ => return None,
        })
    }
}

/// A contact's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Waiting for `next_at_ms` (its first call, or a retry).
    Pending,
    /// An attempt is committed and its call placed (or about to be).
    Dialing,
    /// Final: `outcome` says how.
    Done,
}

impl ContactState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactState::Pending => "pending",
            ContactState::Dialing => "dialing",
            ContactState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<ContactState> {
        Some(match s {
            "pending" => ContactState::Pending,
            "dialing" => ContactState::Dialing,
            "done" => ContactState::Done,
            _ => return None,
        })
    }
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub id: String,
    pub name: String,
    pub state: CampaignState,
    /// Why the host itself changed the state (e.g. paused: its trunk was removed); none when an
    /// operator did.
    pub state_reason: Option<String>,
    /// The campaign layer's settings, as it wrote them.
    pub settings: Value,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A contact to store with a new campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewContact {
    /// E.164, `+` and digits.
    pub number: String,
    pub name: String,
    /// The zone the contact row gave, if any.
    pub time_zone: Option<String>,
    /// The zones its calling window is checked in (from the row, else from the number).
    pub zones: Vec<String>,
    pub metadata: Value,
    /// When it may first be called.
    pub next_at_ms: i64,
}

/// A contact as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub campaign: String,
    /// Its position in the list, from 0.
    pub index: u32,
    pub number: String,
    pub name: String,
    pub time_zone: Option<String>,
    pub zones: Vec<String>,
    pub metadata: Value,
    pub state: ContactState,
    pub next_at_ms: i64,
    /// Attempts so far (calls placed or tried).
    pub attempts: u32,
    /// The local day (`YYYY-MM-DD` in its first zone) of the last attempt, and how many were
    /// made that day: the per-day cap counts these.
    pub last_day: Option<String>,
    pub attempts_on_last_day: u32,
    /// The last attempt's outcome (final once the contact is done).
    pub outcome: Option<String>,
    /// The outcome the agent set on the last answered call.
    pub agent_outcome: Option<String>,
}

/// One attempt at a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub campaign: String,
    pub contact: u32,
    /// From 1.
    pub attempt: u32,
    pub started_at_ms: i64,
    pub call_id: Option<String>,
    pub outcome: Option<String>,
    pub agent_outcome: Option<String>,
    pub ended_at_ms: Option<i64>,
}

/// How an attempt ended and what the contact does next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptEnd {
    pub outcome: String,
    pub agent_outcome: Option<String>,
    pub at_ms: i64,
    /// Call again at this time; `None`: the contact is done with this outcome.
    pub retry_at_ms: Option<i64>,
}

/// A campaign with its contacts counted by state and by outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignProgress {
    pub campaign: CampaignRecord,
    pub contacts: u32,
    pub pending: u32,
    pub dialing: u32,
    pub done: u32,
    /// Final outcomes of the done contacts, `(outcome, count)`, by outcome.
    pub outcomes: Vec<(String, u32)>,
    pub attempts: u32,
}

/// One number on the do-not-call list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DncEntry {
    /// E.164, `+` and digits.
    pub number: String,
    /// Who put it there: `api`, `import`, `call:<id>` (an in-call opt-out).
    pub source: String,
    pub added_at_ms: i64,
}

/// Campaigns and the do-not-call list behind one interface. Every write resolves once
/// committed.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// The campaign and all its contacts, in one transaction (nothing half-created).
    async fn create_campaign(
        &self,
        campaign: CampaignRecord,
        contacts: Vec<NewContact>,
    ) -> Result<()>;
    /// The campaign's new state, and why when the host changed it by itself.
    async fn set_campaign_state(
        &self,
        id: &str,
        state: CampaignState,
        reason: Option<&str>,
        at_ms: i64,
    ) -> Result<()>;
    /// Every campaign with its progress, newest first.
    async fn list_campaigns(&self) -> Result<Vec<CampaignProgress>>;
    async fn campaign(&self, id: &str) -> Result<CampaignProgress>;
    /// The campaign's contacts in list order, each with its attempts.
    async fn campaign_contacts(&self, id: &str)
    -> Result<Vec<(ContactRecord, Vec<AttemptRecord>)>>;
    /// Up to `limit` pending contacts due at `now_ms`, earliest first.
    async fn due_contacts(&self, id: &str, now_ms: i64, limit: u32) -> Result<Vec<ContactRecord>>;
    /// Contacts left `dialing` (by a run that stopped), with their last attempt.
    async fn dialing_contacts(&self, id: &str) -> Result<Vec<(ContactRecord, AttemptRecord)>>;
    /// Commit an attempt before its call is placed: the contact `dialing`, attempts and the
    /// attempts of local day `day` counted. Returns the attempt's number.
    async fn begin_attempt(&self, id: &str, contact: u32, at_ms: i64, day: &str) -> Result<u32>;
    /// The placed call of an attempt.
    async fn set_attempt_call(
        &self,
        id: &str,
        contact: u32,
        attempt: u32,
        call_id: &str,
    ) -> Result<()>;
    /// An attempt's end: the contact pending again (a retry) or done.
    async fn end_attempt(
        &self,
        id: &str,
        contact: u32,
        attempt: u32,
        end: AttemptEnd,
    ) -> Result<()>;
    /// A contact not called now: done with `outcome` (a do-not-call skip), recorded as an
    /// attempt without a call.
    async fn skip_contact(&self, id: &str, contact: u32, outcome: &str, at_ms: i64) -> Result<()>;
    /// A pending contact waits until `next_at_ms` (its window is closed, or its day's cap met).
    async fn defer_contact(&self, id: &str, contact: u32, next_at_ms: i64) -> Result<()>;
    /// Pending contacts of a cancelled campaign become done with `outcome`.
    async fn close_pending(&self, id: &str, outcome: &str, at_ms: i64) -> Result<u32>;
    /// Add numbers to the do-not-call list (present ones keep their first entry); returns how
    /// many were new.
    async fn dnc_add(&self, numbers: Vec<String>, source: &str, at_ms: i64) -> Result<u32>;
    /// Remove a number; whether it was there.
    async fn dnc_remove(&self, number: &str) -> Result<bool>;
    async fn dnc_contains(&self, number: &str) -> Result<bool>;
    /// The list, newest first, up to `limit`.
    async fn dnc_list(&self, limit: u32) -> Result<Vec<DncEntry>>;
}
