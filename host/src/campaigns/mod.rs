//! Outbound campaigns: a list of contacts called by an agent, paced, inside each contact's
//! calling window, never a number on the do-not-call list, retried per outcome, with every
//! attempt and outcome kept in the store. Campaigns sit above the call layer: they place calls
//! through a [`Dialer`] (the same path as `POST /v1/calls`) and learn how each ended from the
//! call's record. State is committed before each dial, so a restarted host resumes a running
//! campaign without calling anyone more often than its policy allows.

pub mod contacts;
mod opt_out;
mod plan;
mod runner;
pub mod settings;
pub mod window;
mod zones;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::call::PlaceRequest;
use crate::call::events::EventBus;
use crate::store::campaigns::{CampaignProgress, CampaignRecord, CampaignState, CampaignStore};
use crate::store::{CallStore, StoreError};
use contacts::{ContactChecker, MAX_CONTACTS, Rejected, Row, e164};
pub use plan::{CANCELLED, DNC_SKIPPED, WINDOW_CLOSED};
use runner::Runner;
pub use settings::{CampaignSettings, SettingsError};

/// Places one campaign call: the call's id, or why it was not placed.
#[async_trait]
pub trait Dialer: Send + Sync {
    async fn dial(&self, request: PlaceRequest) -> Result<String, String>;
    /// Whether the trunk or bridge `via` is there now (trunks change live).
    fn reaches(&self, via: &str) -> bool;
    /// Whether `via` (or, when None, the default trunk) can carry one more call now: a trunk's
    /// channels are shared with inbound calls on it.
    fn has_room(&self, via: Option<&str>) -> bool;
    /// Hang a placed call up (a machine answered).
    fn hang_up(&self, call_id: &str);
}

/// The wall clock campaigns read for calling windows and retries. Tests start it at a chosen
/// moment (`SWITCHBOARD_TEST_CLOCK`); it then runs at the real pace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// A clock that reads `at` now.
    pub fn starting_at(at: Timestamp) -> Clock {
        Clock {
            offset_ms: at.as_millisecond() - Timestamp::now().as_millisecond(),
        }
    }

    pub fn now(&self) -> Timestamp {
        let ms = Timestamp::now().as_millisecond() + self.offset_ms;
        Timestamp::from_millisecond(ms).unwrap_or_else(|_| Timestamp::now())
    }

    pub fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("no contact can be called ({} rejected)", .0.len())]
    NoContacts(Vec<Rejected>),
    #[error("{0} contacts; a campaign holds at most {MAX_CONTACTS}")]
    TooMany(usize),
    #[error("campaign {id} is {state}: it cannot {action}")]
    State {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change of a campaign's course.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Start,
    Pause,
    Resume,
    Cancel,
}

impl Control {
    fn verb(self) -> &'static str {
        match self {
            Control::Start => "start",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }

    /// The state this control leads to from `state`, if it may be used there.
    fn from(self, state: CampaignState) -> Option<CampaignState> {
        use CampaignState::*;
        match (self, state) {
            (Control::Start, Ready) => Some(Running),
            (Control::Pause, Running) => Some(Paused),
            (Control::Resume, Paused) => Some(Running),
            (Control::Cancel, Ready | Running | Paused) => Some(Cancelled),
            _ => None,
        }
    }
}

/// A campaign just created: its id, how many contacts it holds and which were left out.
#[derive(Debug, Serialize)]
pub struct Created {
    pub id: String,
    pub imported: usize,
    pub rejected: Vec<Rejected>,
}

pub(crate) struct Inner {
    store: Arc<dyn CampaignStore>,
    calls: Arc<dyn CallStore>,
    dialer: Arc<dyn Dialer>,
    bus: EventBus,
    clock: Clock,
    /// The state each started campaign's runner follows.
    runners: Mutex<HashMap<String, watch::Sender<CampaignState>>>,
    /// Each campaign's progress after every change (the API's `campaign` events).
    progress: broadcast::Sender<CampaignProgress>,
}

impl Inner {
    /// Tell subscribers where campaign `id` stands now.
    async fn publish(&self, id: &str) {
        match self.store.campaign(id).await {
            Ok(p) => {
                let _ = self.progress.send(p);
            }
            Err(e) => tracing::warn!(campaign = %id, error = %e, "reading a campaign's progress"),
        }
    }
}

/// The campaigns of this host.
#[derive(Clone)]
pub struct Campaigns(Arc<Inner>);

impl Campaigns {
    pub fn new(
        store: Arc<dyn CampaignStore>,
        calls: Arc<dyn CallStore>,
        dialer: Arc<dyn Dialer>,
        bus: EventBus,
        clock: Clock,
    ) -> Campaigns {
        Campaigns(Arc::new(Inner {
            store,
            calls,
            dialer,
            bus,
            clock,
            runners: Mutex::new(HashMap::new()),
            progress: broadcast::channel(256).0,
        }))
    }

    /// At start-up: listen for opt-outs, and resume the campaigns a previous run left running.
    pub async fn start(&self) -> Result<(), StoreError> {
        tokio::spawn(opt_out::listen(
            self.0.bus.subscribe(),
            self.0.store.clone(),
            self.0.clock,
        ));
        for p in self.0.store.list_campaigns().await? {
            if p.campaign.state == CampaignState::Running {
                tracing::info!(campaign = %p.campaign.id, "resuming a running campaign");
                self.run(&p.campaign, CampaignState::Running);
            }
        }
        Ok(())
    }

    /// Each campaign's progress after every change: a state change, a contact done or
    /// rescheduled.
    pub fn subscribe(&self) -> broadcast::Receiver<CampaignProgress> {
        self.0.progress.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn CampaignStore> {
        &self.0.store
    }

    pub fn clock(&self) -> Clock {
        self.0.clock
    }

    /// Store a new campaign (state `ready`) with the contacts that can be called; the others
    /// are reported by line. Settings the host must check (agent, trunk, caller id) are the
    /// caller's to check first.
    pub async fn create(
        &self,
        settings: CampaignSettings,
        rows: Vec<Row>,
    ) -> Result<Created, CampaignError> {
        let window = settings.check()?;
        if rows.len() > MAX_CONTACTS {
            return Err(CampaignError::TooMany(rows.len()));
        }
        let checker = ContactChecker {
            window: &window,
            default_zone: settings.default_time_zone.as_deref(),
            now: self.0.clock.now(),
        };
        let mut contacts = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for (line, row) in rows {
            match row.and_then(|input| checker.check(input)) {
                Ok(contact) => contacts.push(contact),
                Err(why) => rejected.push(Rejected { line, why }),
            }
        }
        if contacts.is_empty() {
            return Err(CampaignError::NoContacts(rejected));
        }
        let now = self.0.clock.now_ms();
        let id = format!("cmp_{:016x}", fastrand::u64(..));
        let record = CampaignRecord {
            id: id.clone(),
            name: settings.name.clone(),
            state: CampaignState::Ready,
            state_reason: None,
            settings: serde_json::to_value(&settings).expect("settings serialize"),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let imported = contacts.len();
        self.0.store.create_campaign(record, contacts).await?;
        tracing::info!(campaign = %id, imported, rejected = rejected.len(), "campaign created");
        Ok(Created {
            id,
            imported,
            rejected,
        })
    }

    /// Start, pause, resume or cancel a campaign; its progress after the change.
    pub async fn control(
        &self,
        id: &str,
        control: Control,
    ) -> Result<CampaignProgress, CampaignError> {
        let current = self.0.store.campaign(id).await?;
        let state = current.campaign.state;
        let Some(next) = control.from(state) else {
            return Err(CampaignError::State {
                id: id.to_string(),
                state: state.as_str(),
                action: control.verb(),
            });
        };
        self.0
            .store
            .set_campaign_state(id, next, None, self.0.clock.now_ms())
            .await?;
        tracing::info!(campaign = %id, state = next.as_str(), "campaign {}", control.verb());
        self.run(&current.campaign, next);
        self.0.publish(id).await;
        Ok(self.0.store.campaign(id).await?)
    }

    /// Pause a running campaign on its own (its trunk was removed): new calls wait for an
    /// operator's resume.
    pub(crate) async fn pause(inner: &Arc<Inner>, id: &str, why: &str) {
        tracing::warn!(campaign = %id, why, "campaign paused");
        let paused = inner
            .store
            .set_campaign_state(id, CampaignState::Paused, Some(why), inner.clock.now_ms())
            .await;
        if let Err(e) = paused {
            tracing::error!(campaign = %id, error = %e, "storing the campaign's state");
        }
        if let Some(tx) = inner.runners.lock().expect("runners lock").get(id) {
            let _ = tx.send(CampaignState::Paused);
        }
        inner.publish(id).await;
    }

    /// Tell the campaign's runner its new state, starting one if none runs.
    fn run(&self, campaign: &CampaignRecord, state: CampaignState) {
        let mut runners = self.0.runners.lock().expect("runners lock");
        if let Some(tx) = runners.get(&campaign.id)
            && tx.send(state).is_ok()
        {
            return;
        }
        if state != CampaignState::Running {
            return;
        }
        let settings: CampaignSettings = match serde_json::from_value(campaign.settings.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(campaign = %campaign.id, error = %e, "stored settings unreadable");
                return;
            }
        };
        let Ok(window) = settings.check() else {
            tracing::error!(campaign = %campaign.id, "stored settings no longer valid");
            return;
        };
        let until = settings.until.as_deref().and_then(|u| u.parse().ok());
        let (tx, rx) = watch::channel(state);
        runners.insert(campaign.id.clone(), tx);
        let runner = Runner {
            id: campaign.id.clone(),
            settings,
            window,
            until,
            inner: self.0.clone(),
            state: rx,
        };
        let span = tracing::info_span!("campaign", campaign = %campaign.id);
        tokio::spawn(tracing::Instrument::instrument(runner.run(), span));
    }

    /// Put numbers on the do-not-call list; the ones that are not E.164 are reported by index.
    pub async fn add_dnc(
        &self,
        numbers: &[String],
        source: &str,
    ) -> Result<(u32, Vec<Rejected>), StoreError> {
        let mut valid = Vec::with_capacity(numbers.len());
        let mut rejected = Vec::new();
        for (line, n) in numbers.iter().enumerate() {
            match e164(n) {
                Some(n) => valid.push(n),
                None => rejected.push(Rejected {
                    line,
                    why: format!("`{n}` is not an E.164 number"),
                }),
            }
        }
        let added = self
            .0
            .store
            .dnc_add(valid, source, self.0.clock.now_ms())
            .await?;
        Ok((added, rejected))
    }
}
