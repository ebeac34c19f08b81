//! Appointment confirmation: looks the patient's number up (kv, seeded from config), greets with
//! the appointment; keypad 1 confirms, 2 asks to reschedule, 0 transfers to the operator. The
//! voice model can do the same through the confirm / reschedule / cancel tools.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchboard_sdk::{
    Action, Agent, CallInfo, Direction, ExpectHint, RejectReason, Role, SessionConfig, Tool, call,
    config, kv, log, speech,
};

/// Spoken answers, and the key each stands for ("yes" confirms, "no" asks for another time).
const SPOKEN_KEYS: [(&str, &str); 7] = [
    ("confirm", "1"),
    ("yes", "1"),
    ("reschedule", "2"),
    ("no", "2"),
    ("operator", "0"),
    ("desk", "0"),
    ("cancel", "0"),
];

/// What callers answer the appointment question with, for offline recognition.
const PHRASES: [&str; 17] = [
    "yes",
    "no",
    "confirm",
    "confirm my appointment",
    "I want to confirm my appointment",
    "reschedule",
    "reschedule please",
    "I need to reschedule",
    "I want to reschedule my appointment",
    "operator",
    "talk to an operator",
    "I want to talk to an operator",
    "front desk",
    "cancel",
    "one",
    "two",
    "zero",
];

#[derive(Serialize, Deserialize, Clone)]
struct Appointment {
    patient: String,
    when: String,
    with: String,
    #[serde(default)]
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Default, PartialEq, Debug)]
#[serde(rename_all = "snake_case")]
enum Status {
    #[default]
    Booked,
    Confirmed,
    RescheduleRequested,
    Cancelled,
}

#[derive(Default)]
struct Appointments {
    patient_number: String,
    appointment: Option<Appointment>,
}

const SEEDED_KEY: &str = "seeded";

fn key_for(number: &str) -> String {
    format!("appointment:{number}")
}

/// Copy the configured appointment book into kv once, so confirmations survive restarts.
fn seed_from_config() {
    if kv::get(SEEDED_KEY).is_some() {
        return;
    }
    let Some(book) = config::get("appointments") else {
        return;
    };
    match serde_json::from_str::<BTreeMap<String, Appointment>>(&book) {
        Ok(book) => {
            for (number, appointment) in book {
                let json = serde_json::to_string(&appointment).expect("serialisable");
                if let Err(e) = kv::set_string(&key_for(&number), &json) {
                    log::error(&format!("seeding {number} failed: {e}"));
                    return;
                }
            }
            let _ = kv::set_string(SEEDED_KEY, "1");
        }
        Err(e) => log::error(&format!("config `appointments` is not valid JSON: {e}")),
    }
}

impl Appointments {
    fn set_status(&mut self, status: Status, note: Option<String>) -> Result<String, String> {
        let appointment = self
            .appointment
            .as_mut()
            .ok_or("no appointment found for this caller")?;
        appointment.status = status;
        appointment.note = note;
        let json = serde_json::to_string(appointment).expect("serialisable");
        kv::set_string(&key_for(&self.patient_number), &json)
            .map_err(|e| format!("could not save: {e}"))?;
        Ok(serde_json::json!({ "status": status, "when": appointment.when }).to_string())
    }

    fn confirm(&mut self) -> Result<String, String> {
        self.set_status(Status::Confirmed, None)
    }

    fn operator_transfer() -> Vec<Action> {
        let target = config::get("operator").unwrap_or_else(|| "sip:operator@127.0.0.1".into());
        let _ = call::say("Please hold while I connect you to the front desk.");
        vec![Action::Transfer(target)]
    }
}

#[derive(Deserialize)]
struct RescheduleArgs {
    #[serde(default)]
    preferred_time: Option<String>,
}

#[derive(Deserialize)]
struct CancelArgs {
    #[serde(default)]
    reason: Option<String>,
}

impl Agent for Appointments {
    const DESCRIPTION: &'static str =
        "Appointment confirmation: 1 confirms, 2 reschedules, 0 operator";
    const NUMBERS: &'static [&'static str] = &["3000"];

    fn on_start(&mut self, info: CallInfo) -> Result<SessionConfig, RejectReason> {
        seed_from_config();
        self.patient_number = match info.direction {
            Direction::Outbound => info.callee,
            Direction::Inbound => info.caller,
        };
        self.appointment = kv::get_string(&key_for(&self.patient_number))
            .and_then(|json| serde_json::from_str(&json).ok());
        let clinic = config::get("clinic").unwrap_or_else(|| "the clinic".into());
        let _ = call::expect(&ExpectHint::Phrases(
            PHRASES.iter().map(|p| p.to_string()).collect(),
        ));
        let tools = [
            Tool::new(
                "confirm_appointment",
                "Confirm the appointment",
                r#"{"type":"object","properties":{}}"#,
            ),
            Tool::new(
                "reschedule_appointment",
                "The patient wants another time",
                r#"{"type":"object","properties":{"preferred_time":{"type":"string"}}}"#,
            ),
            Tool::new(
                "cancel_appointment",
                "Cancel the appointment",
                r#"{"type":"object","properties":{"reason":{"type":"string"}}}"#,
            ),
        ];
        let config = match &self.appointment {
            Some(a) => SessionConfig::new(format!(
                "You call on behalf of {clinic} to confirm {}'s appointment with {} on {}. \
                 Use the tools to confirm, reschedule or cancel. Be brief and polite.",
                a.patient, a.with, a.when
            ))
            .greeting(format!(
                "Hello {}, this is {clinic} about your appointment with {} on {}. \
                 Press 1 to confirm, 2 to reschedule, or 0 to speak to the front desk.",
                a.patient, a.with, a.when
            )),
            None => SessionConfig::new(format!(
                "You answer for {clinic}. No appointment is on file for this caller; offer to \
                 transfer them to the front desk."
            ))
            .greeting(format!(
                "Hello, this is {clinic}. I could not find an appointment for your number. \
                 Press 0 to speak to the front desk."
            )),
        };
        Ok(tools.into_iter().fold(config, SessionConfig::tool))
    }

    /// Spoken answers take the same branches as keys.
    fn on_transcript(&mut self, role: Role, text: String, is_final: bool) -> Vec<Action> {
        if role != Role::Caller || !is_final {
            return Vec::new();
        }
        let key = SPOKEN_KEYS
            .iter()
            .find(|(word, _)| speech::has_word(&text, word))
            .map(|(_, key)| key.to_string())
            .unwrap_or_else(|| speech::digits(&text));
        self.on_dtmf(key)
    }

    fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
        match digits.as_str() {
            "1" => match self.confirm() {
                Ok(_) => {
                    let when = self
                        .appointment
                        .as_ref()
                        .map(|a| a.when.clone())
                        .unwrap_or_default();
                    vec![
                        Action::Say(format!(
                            "Thank you, your appointment on {when} is confirmed. Goodbye."
                        )),
                        Action::Hangup,
                    ]
                }
                Err(_) => Self::operator_transfer(),
            },
            "2" => match self.set_status(Status::RescheduleRequested, None) {
                Ok(_) => vec![Action::Say(
                    "No problem. Which day and time would suit you better?".into(),
                )],
                Err(_) => Self::operator_transfer(),
            },
            "0" => Self::operator_transfer(),
            _ => vec![Action::Say(
                "Press 1 to confirm, 2 to reschedule, or 0 to speak to the front desk.".into(),
            )],
        }
    }

    fn on_tool_call(&mut self, name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "confirm_appointment" => self.confirm(),
            "reschedule_appointment" => {
                let args: RescheduleArgs =
                    serde_json::from_str(&arguments).map_err(|e| format!("bad arguments: {e}"))?;
                self.set_status(Status::RescheduleRequested, args.preferred_time)
            }
            "cancel_appointment" => {
                let args: CancelArgs =
                    serde_json::from_str(&arguments).map_err(|e| format!("bad arguments: {e}"))?;
                self.set_status(Status::Cancelled, args.reason)
            }
            other => Err(format!("unknown tool `{other}`")),
        }
    }
}

switchboard_sdk::export_agent!(Appointments);
