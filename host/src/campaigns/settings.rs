//! A campaign's settings as the API takes them (and the store keeps them): who calls, through
//! what, how fast, when, how often, and why the operator may call at all (consent basis).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::window::{CallingWindow, WindowError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSettings {
    pub name: String,
    /// The agent that runs each call; else `number` routes as if dialled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The trunk or bridge the calls go through (as `POST /v1/calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Our caller id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub pacing: Pacing,
    #[serde(default)]
    pub window: WindowSettings,
    /// The zone of contacts whose row and number give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_time_zone: Option<String>,
    /// Calls to one contact per local day, at most.
    #[serde(default = "default_attempts_per_day")]
    pub max_attempts_per_day: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Why these people may be called (prior express consent, existing relationship, ...):
    /// shown in exports. AI voices count as artificial voices under the TCPA.
    pub consent_basis: String,
    /// Answering-machine detection on answered calls: `off`; `detect` (a machine is hung up on,
    /// outcome `machine`); `detect-and-leave-message` (the agent hears the verdict and the beep
    /// and may leave a message; outcome `machine`).
    #[serde(default)]
    pub amd: AmdMode,
    /// A key the callee presses to be put on the do-not-call list (besides saying so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_key: Option<char>,
    /// After this time (RFC 3339) contacts still waiting end as `window-closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// What a campaign does about answering machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmdMode {
    #[default]
    Off,
    Detect,
    DetectAndLeaveMessage,
}

impl AmdMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AmdMode::Off => "off",
            AmdMode::Detect => "detect",
            AmdMode::DetectAndLeaveMessage => "detect-and-leave-message",
        }
    }
}

fn default_attempts_per_day() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    /// Campaign calls up at once.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// New calls started per second, at most.
    #[serde(default = "default_calls_per_second")]
    pub calls_per_second: f64,
}

fn default_max_concurrent() -> u32 {
    1
}

fn default_calls_per_second() -> f64 {
    1.0
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            max_concurrent: default_max_concurrent(),
            calls_per_second: default_calls_per_second(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSettings {
    #[serde(default = "default_days")]
    pub days: Vec<String>,
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_end")]
    pub end: String,
    #[serde(default)]
    pub holidays: Vec<String>,
}

fn default_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

fn default_start() -> String {
    "09:00".into()
}

fn default_end() -> String {
    "20:00".into()
}

impl Default for WindowSettings {
    fn default() -> WindowSettings {
        WindowSettings {
            days: default_days(),
            start: default_start(),
            end: default_end(),
            holidays: Vec::new(),
        }
    }
}

impl WindowSettings {
    pub fn window(&self) -> Result<CallingWindow, WindowError> {
        CallingWindow::new(&self.days, &self.start, &self.end, &self.holidays)
    }
}

/// Retry after an attempt ending so, `delay_s` later, while the contact has had fewer than
/// `max_attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub delay_s: u64,
    pub max_attempts: u32,
}

impl Retry {
    const fn new(delay_s: u64, max_attempts: u32) -> Retry {
        Retry {
            delay_s,
            max_attempts,
        }
    }

    /// The wait before the next attempt, when the contact gets one after `attempts`.
    pub fn after(self, attempts: u32) -> Option<Duration> {
        (attempts < self.max_attempts).then(|| Duration::from_secs(self.delay_s))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "default_busy")]
    pub busy: Retry,
    #[serde(default = "default_no_answer")]
    pub no_answer: Retry,
    #[serde(default = "default_failed")]
    pub failed: Retry,
    #[serde(default = "default_machine")]
    pub machine: Retry,
}

fn default_busy() -> Retry {
    Retry::new(600, 3)
}

fn default_no_answer() -> Retry {
    Retry::new(3600, 3)
}

fn default_failed() -> Retry {
    Retry::new(1800, 2)
}

fn default_machine() -> Retry {
    Retry::new(14_400, 1)
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            busy: default_busy(),
            no_answer: default_no_answer(),
            failed: default_failed(),
            machine: default_machine(),
        }
    }
}

impl RetryPolicy {
    /// The retry rule for an attempt's outcome; `None` for final outcomes (answered).
    pub fn for_outcome(&self, outcome: &str) -> Option<Retry> {
        match outcome {
            "busy" => Some(self.busy),
            "no-answer" => Some(self.no_answer),
            "failed" => Some(self.failed),
            "machine" => Some(self.machine),
            _ => None,
        }
    }
}

/// Pacing values out of range, a missing consent basis, an impossible window: each with the
/// field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SettingsError {
    pub field: &'static str,
    pub why: String,
}

/// Most calls per second a campaign may ask for.
pub const MAX_CALLS_PER_SECOND: f64 = 100.0;
/// Most campaign calls up at once.
pub const MAX_CONCURRENT: u32 = 1000;

impl CampaignSettings {
    /// What can be checked without the host: ranges, the window, the zone, the consent basis.
    pub fn check(&self) -> Result<CallingWindow, SettingsError> {
        let bad = |field, why: String| Err(SettingsError { field, why });
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return bad("name", "give a name of 1 to 200 characters".into());
        }
        if self.consent_basis.trim().is_empty() {
            return bad(
                "consent_basis",
                "say why these people may be called (it is shown in exports)".into(),
            );
        }
        if !(1..=MAX_CONCURRENT).contains(&self.pacing.max_concurrent) {
            return bad(
                "pacing.max_concurrent",
                format!("must be 1 to {MAX_CONCURRENT}"),
            );
        }
        let cps = self.pacing.calls_per_second;
        if !(cps > 0.0 && cps <= MAX_CALLS_PER_SECOND) {
            return bad(
                "pacing.calls_per_second",
                format!("must be above 0 and at most {MAX_CALLS_PER_SECOND}"),
            );
        }
        if self.max_attempts_per_day == 0 {
            return bad("max_attempts_per_day", "must be at least 1".into());
        }
        for (field, retry) in [
            ("retry.busy", self.retry.busy),
            ("retry.no_answer", self.retry.no_answer),
            ("retry.failed", self.retry.failed),
            ("retry.machine", self.retry.machine),
        ] {
            if retry.max_attempts == 0 {
                return bad(field, "max_attempts must be at least 1".into());
            }
        }
        if let Some(key) = self.opt_out_key
            && !matches!(key, '0'..='9' | '*' | '#')
        {
            return bad("opt_out_key", format!("`{key}` is not a keypad key"));
        }
        if let Some(zone) = &self.default_time_zone {
            super::window::zone(zone).map_err(|e| SettingsError {
                field: "default_time_zone",
                why: e.to_string(),
            })?;
        }
        if let Some(until) = &self.until {
            until
                .parse::<jiff::Timestamp>()
                .map_err(|e| SettingsError {
                    field: "until",
                    why: format!("not an RFC 3339 time: {e}"),
                })?;
        }
        self.window.window().map_err(|e| SettingsError {
            field: "window",
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> CampaignSettings {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let s = settings(serde_json::json!({"name": "r", "consent_basis": "patients"}));
        assert_eq!(s.pacing, Pacing::default());
        assert_eq!(s.window.days.len(), 5);
        assert_eq!(s.max_attempts_per_day, 2);
        assert!(s.check().is_ok());
        // Busy: three attempts, ten minutes apart.
        assert_eq!(s.retry.busy.after(1), Some(Duration::from_secs(600)));
        assert_eq!(s.retry.busy.after(3), None);
        assert_eq!(s.retry.for_outcome("answered"), None);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |json| settings(json).check().unwrap_err().field;
        assert_eq!(
            field(serde_json::json!({"name": "r", "consent_basis": " "})),
            "consent_basis"
        );
        assert_eq!(
            field(serde_json::json!({"name": "r", "consent_basis": "c",
                "pacing": {"calls_per_second": 0}})),
            "pacing.calls_per_second"
        );
        assert_eq!(
            field(serde_json::json!({"name": "r", "consent_basis": "c",
                "window": {"start": "20:00", "end": "08:00"}})),
            "window"
        );
        assert_eq!(
            field(serde_json::json!({"name": "r", "consent_basis": "c",
                "default_time_zone": "Nowhere/Land"})),
            "default_time_zone"
        );
        let unknown = serde_json::from_value::<CampaignSettings>(
            serde_json::json!({"name": "r", "consent_basis": "c", "speed": 3}),
        );
        assert!(unknown.is_err());
    }
}
