//! One running campaign: takes due contacts in order, decides each ([`plan::next`]), commits an
//! attempt before placing its call, paces the calls (at most `max_concurrent` up, at most
//! `calls_per_second` started), and when a call ends reads its record for the outcome and
//! schedules the retry the policy allows. Pausing stops new calls (running ones finish);
//! cancelling also closes the contacts still waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;
use super::plan::{self, Facts, Next};
use super::settings::{AmdMode, CampaignSettings};
use super::window::{CallingWindow, zone};
use crate::call::PlaceRequest;
use crate::domain::agent_event::MachineVerdict;
use crate::domain::events::EventKind;
use crate::store::StoreError;
use crate::store::campaigns::{AttemptEnd, CampaignState, ContactRecord};

/// How often a running campaign looks for due contacts when nothing else wakes it.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// A placed call of this campaign, by call id.
struct Active {
    contact: u32,
    attempt: u32,
    attempts: u32,
}

pub(super) struct Runner {
    pub id: String,
    pub settings: CampaignSettings,
    pub window: CallingWindow,
    pub until: Option<jiff::Timestamp>,
    pub inner: Arc<Inner>,
    pub state: watch::Receiver<CampaignState>,
}

impl Runner {
    pub async fn run(mut self) {
        let mut events = self.inner.bus.subscribe();
        let mut active: HashMap<String, Active> = HashMap::new();
        self.recover(&mut active).await;
        let gap = Duration::from_secs_f64(1.0 / self.settings.pacing.calls_per_second);
        let mut next_dial = Instant::now();
        // Whether to look for due contacts: not on every call event of the host, only when the
        // pace allows, the state changed or an attempt ended.
        let mut look = true;
        loop {
            let state = *self.state.borrow_and_update();
            match state {
                CampaignState::Running => {
                    if look {
                        self.dial_due(&mut active, &mut next_dial, gap).await;
                        if active.is_empty() && self.all_done().await {
                            self.set_state(CampaignState::Finished).await;
                            tracing::info!(campaign = %self.id, "campaign finished");
                            return;
                        }
                    }
                }
                CampaignState::Cancelled => {
                    let closed = self
                        .inner
                        .store
                        .close_pending(&self.id, plan::CANCELLED, self.inner.clock.now_ms())
                        .await;
                    match closed {
                        Ok(0) => {}
                        Ok(_) => self.inner.publish(&self.id).await,
                        Err(e) => {
                            tracing::error!(campaign = %self.id, error = %e, "closing a cancelled campaign");
                        }
                    }
                    if active.is_empty() {
                        return;
                    }
                }
                CampaignState::Paused | CampaignState::Ready | CampaignState::Finished => {
                    if active.is_empty() && state != CampaignState::Paused {
                        return;
                    }
                }
            }
            let wake = if state == CampaignState::Running {
                next_dial
                    .max(Instant::now())
                    .min(Instant::now() + IDLE_TICK)
            } else {
                Instant::now() + IDLE_TICK * 4
            };
            look = tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&mut active, &event.call_id, &event.kind).await,
                    // Events were missed: ask the store about every call still up.
                    Err(RecvError::Lagged(_)) => {
                        self.reconcile(&mut active).await;
                        true
                    }
                    Err(RecvError::Closed) => return,
                },
                changed = self.state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                () = tokio::time::sleep_until(wake) => true,
            };
        }
    }

    async fn set_state(&self, state: CampaignState) {
        let now = self.inner.clock.now_ms();
        if let Err(e) = self
            .inner
            .store
            .set_campaign_state(&self.id, state, None, now)
            .await
        {
            tracing::error!(campaign = %self.id, error = %e, "storing the campaign's state");
        }
    }

    async fn all_done(&self) -> bool {
        self.inner
            .store
            .campaign(&self.id)
            .await
            .is_ok_and(|p| p.pending == 0 && p.dialing == 0)
    }

    /// Attempts an earlier run left dialling: a placed call is watched (or its outcome read);
    /// an attempt whose call was never placed, or left no record, ends as failed, and counts.
    async fn recover(&self, active: &mut HashMap<String, Active>) {
        let dialing = match self.inner.store.dialing_contacts(&self.id).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(campaign = %self.id, error = %e, "reading attempts in flight");
                return;
            }
        };
        for (contact, attempt) in dialing {
            // A call killed before its record was written left nothing to read.
            let lost = match &attempt.call_id {
                Some(id) => matches!(
                    self.inner.calls.get_call(id).await,
                    Err(StoreError::NotFound { .. })
                ),
                None => true,
            };
            match attempt.call_id.filter(|_| !lost) {
                Some(call_id) => {
                    active.insert(
                        call_id.clone(),
                        Active {
                            contact: contact.index,
                            attempt: attempt.attempt,
                            attempts: contact.attempts,
                        },
                    );
                    self.check_call(active, &call_id).await;
                }
                None => {
                    self.end_attempt(&contact, attempt.attempt, "failed", None)
                        .await;
                }
            }
        }
    }

    /// Start calls while there is room and pace allows.
    async fn dial_due(
        &self,
        active: &mut HashMap<String, Active>,
        next_dial: &mut Instant,
        gap: Duration,
    ) {
        if let Some(via) = &self.settings.via
            && !self.inner.dialer.reaches(via)
        {
            let why = format!("`{via}` is no longer a trunk or bridge of this host");
            super::Campaigns::pause(&self.inner, &self.id, &why).await;
            return;
        }
        let max = self.settings.pacing.max_concurrent as usize;
        while active.len() < max && Instant::now() >= *next_dial {
            // A full trunk (inbound calls take its channels too): nobody is dialled, and no
            // attempt is spent, until a channel is free.
            if !self.inner.dialer.has_room(self.settings.via.as_deref()) {
                return;
            }
            let now = self.inner.clock.now();
            let due = self
                .inner
                .store
                .due_contacts(&self.id, now.as_millisecond(), 1)
                .await;
            let contact = match due {
                Ok(mut list) if !list.is_empty() => list.remove(0),
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(campaign = %self.id, error = %e, "finding due contacts");
                    return;
                }
            };
            let zones: Vec<_> = contact.zones.iter().filter_map(|z| zone(z).ok()).collect();
            // Unknown is not "allowed": the contact waits for the next look.
            let on_dnc_list = match self.inner.store.dnc_contains(&contact.number).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::error!(campaign = %self.id, error = %e, "checking the do-not-call list");
                    return;
                }
            };
            let facts = Facts {
                now,
                zones: &zones,
                on_dnc_list,
            };
            let at_ms = now.as_millisecond();
            let written = match plan::next(
                &contact,
                &self.settings,
                &self.window,
                self.until,
                &facts,
            ) {
                Next::Leave(outcome) => {
                    tracing::info!(campaign = %self.id, contact = contact.index, outcome, "contact left");
                    let skipped = self
                        .inner
                        .store
                        .skip_contact(&self.id, contact.index, outcome, at_ms)
                        .await;
                    self.inner.publish(&self.id).await;
                    skipped
                }
                Next::Wait(until) => {
                    self.inner
                        .store
                        .defer_contact(&self.id, contact.index, until.as_millisecond())
                        .await
                }
                Next::Dial { day } => {
                    *next_dial = Instant::now() + gap;
                    self.dial(active, contact, &day).await;
                    Ok(())
                }
            };
            if let Err(e) = written {
                tracing::error!(campaign = %self.id, error = %e, "updating a contact");
                return;
            }
        }
    }

    /// Commit the attempt, then place its call.
    async fn dial(&self, active: &mut HashMap<String, Active>, contact: ContactRecord, day: &str) {
        let now = self.inner.clock.now_ms();
        let attempt = match self
            .inner
            .store
            .begin_attempt(&self.id, contact.index, now, day)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(campaign = %self.id, contact = contact.index, error = %e, "committing an attempt");
                return;
            }
        };
        let request = PlaceRequest {
            to: contact.number.clone(),
            trunk: self.settings.via.clone(),
            from: self.settings.from.clone(),
            agent: self.settings.agent.clone(),
            number: self.settings.number.clone(),
            metadata: Some(self.metadata(&contact, attempt)),
            detect_machine: self.settings.amd != AmdMode::Off,
        };
        let attempts = contact.attempts + 1;
        match self.inner.dialer.dial(request).await {
            Ok(call_id) => {
                tracing::info!(campaign = %self.id, contact = contact.index, attempt, call_id, "calling");
                if let Err(e) = self
                    .inner
                    .store
                    .set_attempt_call(&self.id, contact.index, attempt, &call_id)
                    .await
                {
                    tracing::error!(campaign = %self.id, error = %e, "noting an attempt's call");
                }
                active.insert(
                    call_id,
                    Active {
                        contact: contact.index,
                        attempt,
                        attempts,
                    },
                );
            }
            Err(why) => {
                tracing::warn!(campaign = %self.id, contact = contact.index, why, "call not placed");
                let contact = ContactRecord {
                    attempts,
                    ..contact
                };
                self.end_attempt(&contact, attempt, "failed", None).await;
            }
        }
    }

    /// The metadata the agent reads: the contact's columns, its name, and where it comes from.
    fn metadata(&self, contact: &ContactRecord, attempt: u32) -> Value {
        let mut metadata = match &contact.metadata {
            Value::Object(map) => map.clone(),
            _ => Default::default(),
        };
        if !contact.name.is_empty() {
            metadata.insert("name".into(), contact.name.clone().into());
        }
        metadata.insert(
            "campaign".into(),
            json!({
                "id": self.id,
                "name": self.settings.name,
                "contact": contact.index,
                "attempt": attempt,
                "number": contact.number,
                "opt_out_key": self.settings.opt_out_key,
                "amd": self.settings.amd.as_str(),
            }),
        );
        Value::Object(metadata)
    }

    /// A call event: when it ends one of this campaign's calls, that attempt's outcome.
    /// Whether an attempt ended (a slot is free).
    async fn on_event(
        &self,
        active: &mut HashMap<String, Active>,
        call_id: &str,
        kind: &EventKind,
    ) -> bool {
        if !active.contains_key(call_id) {
            return false;
        }
        match kind {
            EventKind::Ended { .. } => {
                self.check_call(active, call_id).await;
                !active.contains_key(call_id)
            }
            // Detect only: a machine is not talked to (its outcome comes from the record).
            EventKind::MachineDetection {
                verdict: MachineVerdict::Machine,
                ..
            } if self.settings.amd == AmdMode::Detect => {
                tracing::info!(campaign = %self.id, call_id, "a machine answered: hanging up");
                self.inner.dialer.hang_up(call_id);
                false
            }
            _ => false,
        }
    }

    async fn reconcile(&self, active: &mut HashMap<String, Active>) {
        let ids: Vec<String> = active.keys().cloned().collect();
        for id in ids {
            self.check_call(active, &id).await;
        }
    }

    /// When the call has ended: its attempt's outcome, and the contact's next step.
    async fn check_call(&self, active: &mut HashMap<String, Active>, call_id: &str) {
        let detail = match self.inner.calls.get_call(call_id).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(campaign = %self.id, call_id, error = %e, "reading an attempt's call");
                return;
            }
        };
        let Some((outcome, agent_outcome)) = plan::call_outcome(&detail) else {
            return;
        };
        let Some(a) = active.remove(call_id) else {
            return;
        };
        let now = self.inner.clock.now();
        let end = AttemptEnd {
            outcome: outcome.to_string(),
            agent_outcome,
            at_ms: now.as_millisecond(),
            retry_at_ms: plan::retry_at(&self.settings, outcome, a.attempts, now)
                .map(|t| t.as_millisecond()),
        };
        tracing::info!(campaign = %self.id, contact = a.contact, call_id, outcome, "attempt ended");
        if let Err(e) = self
            .inner
            .store
            .end_attempt(&self.id, a.contact, a.attempt, end)
            .await
        {
            tracing::error!(campaign = %self.id, error = %e, "storing an attempt's end");
        }
        self.inner.publish(&self.id).await;
    }

    /// End an attempt that placed no call (or whose call the store never saw).
    async fn end_attempt(
        &self,
        contact: &ContactRecord,
        attempt: u32,
        outcome: &str,
        agent_outcome: Option<String>,
    ) {
        let now = self.inner.clock.now();
        let end = AttemptEnd {
            outcome: outcome.to_string(),
            agent_outcome,
            at_ms: now.as_millisecond(),
            retry_at_ms: plan::retry_at(&self.settings, outcome, contact.attempts, now)
                .map(|t| t.as_millisecond()),
        };
        if let Err(e) = self
            .inner
            .store
            .end_attempt(&self.id, contact.index, attempt, end)
            .await
        {
            tracing::error!(campaign = %self.id, error = %e, "storing an attempt's end");
        }
        self.inner.publish(&self.id).await;
    }
}
