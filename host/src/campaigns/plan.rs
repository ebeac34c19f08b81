//! What happens to a contact next, as pure functions of the contact, the campaign's settings and
//! the time: call now, wait, or leave it (do-not-call, the campaign's end); and after a call,
//! when the next attempt is due, if any.

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::settings::CampaignSettings;
use super::window::{CallingWindow, local_day};
use crate::store::campaigns::ContactRecord;
use crate::store::{CallDetail, CallState};

/// Outcomes the campaign layer writes, beside the call outcomes `busy`, `no-answer`, `failed`,
/// `answered` and `machine`.
pub const DNC_SKIPPED: &str = "dnc-skipped";
pub const WINDOW_CLOSED: &str = "window-closed";
pub const CANCELLED: &str = "cancelled";

/// What to do with a due contact now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Call it; the attempt counts for local day `day`.
    Dial { day: String },
    /// Not yet: due again at this time.
    Wait(Timestamp),
    /// Never: done with this outcome.
    Leave(&'static str),
}

/// The facts about a contact that are not in its record.
pub struct Facts<'a> {
    pub now: Timestamp,
    pub zones: &'a [TimeZone],
    pub on_dnc_list: bool,
}

pub fn next(
    contact: &ContactRecord,
    settings: &CampaignSettings,
    window: &CallingWindow,
    until: Option<Timestamp>,
    facts: &Facts,
) -> Next {
    if facts.on_dnc_list {
        return Next::Leave(DNC_SKIPPED);
    }
    let closed = |at: Timestamp| until.is_some_and(|u| at >= u);
    if closed(facts.now) {
        return Next::Leave(WINDOW_CLOSED);
    }
    let wait = |from: Timestamp| match window.next_open(from, facts.zones) {
        Some(at) if !closed(at) => Next::Wait(at),
        _ => Next::Leave(WINDOW_CLOSED),
    };
    if !window.is_open(facts.now, facts.zones) {
        return wait(facts.now);
    }
    let Some(home) = facts.zones.first() else {
        return Next::Leave(WINDOW_CLOSED);
    };
    let day = local_day(facts.now, home);
    let capped = contact.last_day.as_deref() == Some(day.as_str())
        && contact.attempts_on_last_day >= settings.max_attempts_per_day;
    if capped {
        return wait(start_of_next_day(facts.now, home));
    }
    Next::Dial { day }
}

/// Midnight after `at` in `zone`.
fn start_of_next_day(at: Timestamp, zone: &TimeZone) -> Timestamp {
    let local = at.to_zoned(zone.clone());
    local
        .date()
        .tomorrow()
        .ok()
        .and_then(|d| d.to_zoned(zone.clone()).ok())
        .map_or(at + Duration::from_secs(86_400), |z| z.timestamp())
}

/// How an attempt's call ended, from its record: `None` while it runs; `machine` when machine
/// detection heard one. The agent's own outcome
/// (`call.set-outcome`) comes with it.
pub fn call_outcome(detail: &CallDetail) -> Option<(&'static str, Option<String>)> {
    if detail.call.state == CallState::Active {
        return None;
    }
    let not_answered = detail
        .events
        .iter()
        .find(|e| e.kind == "not-answered")
        .and_then(|e| e.data["outcome"].as_str());
    let machine = detail
        .events
        .iter()
        .any(|e| e.kind == "machine-detection" && e.data["verdict"] == "machine");
    let outcome = match not_answered {
        _ if machine => "machine",
        Some("busy") => "busy",
        Some("no-answer") => "no-answer",
        Some(_) => "failed",
        None if detail.call.answered_at_ms.is_some() => "answered",
        None => "failed",
    };
    Some((outcome, detail.call.outcome.clone()))
}

/// When to call again after an attempt ended with `outcome`, the contact having had
/// `attempts`; `None` when the outcome is final or the retries are spent.
pub fn retry_at(
    settings: &CampaignSettings,
    outcome: &str,
    attempts: u32,
    now: Timestamp,
) -> Option<Timestamp> {
    let wait = settings.retry.for_outcome(outcome)?.after(attempts)?;
    Some(now + wait)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::campaigns::ContactState;

    fn settings() -> CampaignSettings {
        serde_json::from_value(json!({"name": "r", "consent_basis": "patients",
            "window": {"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "17:00"},
            "max_attempts_per_day": 2}))
        .unwrap()
    }

    fn contact(last_day: Option<&str>, today: u32) -> ContactRecord {
        ContactRecord {
            campaign: "c".into(),
            index: 0,
            number: "+12125550100".into(),
            name: String::new(),
            time_zone: None,
            zones: vec!["America/New_York".into()],
            metadata: json!({}),
            state: ContactState::Pending,
            next_at_ms: 0,
            attempts: today,
            last_day: last_day.map(String::from),
            attempts_on_last_day: today,
            outcome: None,
            agent_outcome: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_due_contact_is_called_waits_for_its_window_or_day_or_is_left() {
        let s = settings();
        let w = s.window.window().unwrap();
        let zones = [TimeZone::get("America/New_York").unwrap()];
        let facts = |now: &str, dnc: bool| Facts {
            now: at(now),
            zones: &zones,
            on_dnc_list: dnc,
        };
        // Monday 10:00 in New York.
        let open = facts("2026-12-07T15:00:00Z", false);
        assert_eq!(
            next(&contact(None, 0), &s, &w, None, &open),
            Next::Dial {
                day: "2026-12-07".into()
            }
        );
        // Two calls today already: tomorrow at 09:00.
        assert_eq!(
            next(&contact(Some("2026-12-07"), 2), &s, &w, None, &open),
            Next::Wait(at("2026-12-08T14:00:00Z"))
        );
        // One call yesterday does not count today.
        assert!(matches!(
            next(&contact(Some("2026-12-06"), 2), &s, &w, None, &open),
            Next::Dial { .. }
        ));
        // 07:00 in New York: wait for 09:00.
        let early = facts("2026-12-07T12:00:00Z", false);
        assert_eq!(
            next(&contact(None, 0), &s, &w, None, &early),
            Next::Wait(at("2026-12-07T14:00:00Z"))
        );
        // The campaign ends before the window opens: left as window-closed.
        let until = Some(at("2026-12-07T13:00:00Z"));
        assert_eq!(
            next(&contact(None, 0), &s, &w, until, &early),
            Next::Leave(WINDOW_CLOSED)
        );
        // On the do-not-call list: never called, whatever the time.
        assert_eq!(
            next(
                &contact(None, 0),
                &s,
                &w,
                None,
                &facts("2026-12-07T15:00:00Z", true)
            ),
            Next::Leave(DNC_SKIPPED)
        );
    }

    #[test]
    fn retries_follow_the_policy_per_outcome() {
        let s = settings();
        let now = at("2026-12-07T15:00:00Z");
        assert_eq!(
            retry_at(&s, "busy", 1, now),
            Some(now + Duration::from_secs(600))
        );
        assert_eq!(retry_at(&s, "busy", 3, now), None);
        assert_eq!(
            retry_at(&s, "no-answer", 2, now),
            Some(now + Duration::from_secs(3600))
        );
        assert_eq!(retry_at(&s, "machine", 1, now), None);
        assert_eq!(retry_at(&s, "answered", 1, now), None);
    }
}
