//! Appointment confirmation: looks the patient's number up (kv, seeded from config) or, on a
//! campaign's call, reads the appointment from the contact's row (metadata `when`, `with`, and
//! `patient` or `name`), greets with it; keypad 1 confirms, 2 asks to reschedule, 0 transfers to
//! the operator. The voice model can do the same through the confirm / reschedule / cancel
//! tools. Each answer is also the call's outcome (`confirmed`, `reschedule-requested`,
//! `cancelled`), which a campaign's results show.
//!
//! Handed a call by another agent (the receptionist's keypad 2), it reads `call.context()`:
//! the greeting says it has the caller's details from reception, and the model's instructions
//! carry the conversation so far.
//!
//! A web caller (transport `webrtc`) has no caller ID: the agent asks who is calling and for the
//! number the appointment is booked under, typed on the page's keypad (or said, or found by the
//! voice model with `find_appointment`), and offers no transfer to the front desk's phone.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use switchboard_sdk::{
    Action, Agent, CallInfo, Direction, ExpectHint, Handoff, RejectReason, Role, SessionConfig,
    Tool, call, config, kv, log, speech,
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

impl Status {
    /// The call's outcome for an answer.
    fn outcome(self) -> &'static str {
        match self {
            Status::Booked => "booked",
            Status::Confirmed => "confirmed",
            Status::RescheduleRequested => "reschedule-requested",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The appointment a campaign's contact row carries in the call's metadata.
fn from_contact_row(metadata: &str) -> Option<Appointment> {
    let row: serde_json::Value = serde_json::from_str(metadata).ok()?;
    let field = |name: &str| row.get(name).and_then(|v| v.as_str()).map(String::from);
    Some(Appointment {
        patient: field("patient").or_else(|| field("name"))?,
        when: field("when")?,
        with: field("with")?,
        status: Status::Booked,
        note: None,
    })
}

#[derive(Default)]
struct Appointments {
    patient_number: String,
    appointment: Option<Appointment>,
    /// A web call's keypad entry of the patient's number until `#`; `None` once the patient is
    /// known, and on the phone.
    typed: Option<String>,
    web: bool,
}

/// The transport of a browser call.
const WEB: &str = "webrtc";
/// The longest number a caller types (E.164 has at most 15 digits).
const MAX_TYPED: usize = 15;

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
        if let Err(e) = call::set_outcome(status.outcome()) {
            log::warn(&format!("the outcome was not recorded: {e}"));
        }
        Ok(serde_json::json!({ "status": status, "when": appointment.when }).to_string())
    }

    fn confirm(&mut self) -> Result<String, String> {
        self.set_status(Status::Confirmed, None)
    }

    /// A phone call: the patient is whoever calls (or is called).
    fn phone_start(&mut self, info: CallInfo, clinic: &str) -> SessionConfig {
        self.patient_number = match info.direction {
            Direction::Outbound => info.callee,
            Direction::Inbound => info.caller,
        };
        self.appointment = from_contact_row(&info.metadata).or_else(|| {
            kv::get_string(&key_for(&self.patient_number))
                .and_then(|json| serde_json::from_str(&json).ok())
        });
        expect_answers();
        match &self.appointment {
            Some(a) => SessionConfig::new(format!(
                "You call on behalf of {clinic} to confirm {}'s appointment with {} on {}. \
                 Use the tools to confirm, reschedule or cancel. Be brief and polite.",
                a.patient, a.with, a.when
            ))
            .greeting(format!(
                "Hello {}, this is {clinic} about your appointment with {} on {}. {}",
                a.patient,
                a.with,
                a.when,
                self.prompt()
            )),
            None => SessionConfig::new(format!(
                "You answer for {clinic}. No appointment is on file for this caller; offer to \
                 transfer them to the front desk."
            ))
            .greeting(format!(
                "Hello, this is {clinic}. I could not find an appointment for your number. \
                 Press 0 to speak to the front desk."
            )),
        }
    }

    /// A web call: there is no caller ID, so the agent asks who is calling.
    fn web_start(&mut self, clinic: &str) -> SessionConfig {
        self.web = true;
        self.typed = Some(String::new());
        let _ = call::expect(&ExpectHint::PhoneNumber);
        SessionConfig::new(format!(
            "You answer {clinic}'s web calls. The caller's number is unknown: ask who is \
             calling and for the phone number their appointment is booked under, then call \
             `find_appointment`. Then use the tools to confirm, reschedule or cancel. Be brief \
             and polite."
        ))
        .greeting(format!(
            "Hello, this is {clinic}. Who am I speaking with? Please type the phone number \
             your appointment is booked under, then the hash key."
        ))
        .tool(Tool::new(
            "find_appointment",
            "Find the caller's appointment by the phone number it is booked under",
            r#"{"type":"object","properties":{"phone":{"type":"string"}},"required":["phone"]}"#,
        ))
    }

    /// The question about the appointment: the front desk is offered on the phone only.
    fn prompt(&self) -> &'static str {
        if self.web {
            "Press 1 to confirm or 2 to reschedule."
        } else {
            "Press 1 to confirm, 2 to reschedule, or 0 to speak to the front desk."
        }
    }

    /// The appointment booked under `number` as a caller gives it (digits, maybe with `+` and
    /// separators), its key tried as given and in E.164 form; once found it is this call's.
    fn find(&mut self, number: &str) -> Option<&Appointment> {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let e164 = format!("+{digits}");
        let (key, appointment) = [digits, e164].into_iter().find_map(|key| {
            let json = kv::get_string(&key_for(&key))?;
            Some((key, serde_json::from_str(&json).ok()?))
        })?;
        self.patient_number = key;
        self.typed = None;
        expect_answers();
        Some(self.appointment.insert(appointment))
    }

    /// A web caller's number is in: their appointment and the question, or another try.
    fn identify(&mut self, number: &str) -> Vec<Action> {
        let Some(a) = self.find(number) else {
            let spaced: Vec<String> = number.chars().map(String::from).collect();
            self.typed = Some(String::new());
            return vec![Action::Say(format!(
                "I could not find an appointment under {}. Please type the number again, then \
                 the hash key.",
                spaced.join(" ")
            ))];
        };
        let found = format!(
            "Thank you, {}. Your appointment with {} is on {}.",
            a.patient, a.with, a.when
        );
        vec![Action::Say(format!("{found} {}", self.prompt()))]
    }

    /// A key while a web caller types their number: digits gather, `#` ends the number.
    fn type_key(&mut self, key: &str) -> Vec<Action> {
        let typed = self.typed.get_or_insert_with(String::new);
        if key == "#" {
            let number = std::mem::take(typed);
            return self.identify(&number);
        }
        typed.extend(key.chars().filter(char::is_ascii_digit));
        if typed.len() > MAX_TYPED {
            typed.clear();
            return vec![Action::Say(
                "That number is too long. Please type it again, then the hash key.".into(),
            )];
        }
        Vec::new()
    }

    /// Web calls transfer only to another agent, and the front desk is a phone.
    fn operator_transfer(&self) -> Vec<Action> {
        if self.web {
            return vec![Action::Say(
                "The front desk takes phone calls only. Please call us, and we will help you there."
                    .into(),
            )];
        }
        let target = config::get("operator").unwrap_or_else(|| "sip:operator@127.0.0.1".into());
        let _ = call::say("Please hold while I connect you to the front desk.");
        vec![Action::Transfer(target)]
    }
}

/// A call another agent handed over: the greeting says the details came along, and the model
/// reads what was said before.
fn handed_over(mut config: SessionConfig, handoff: &Handoff) -> SessionConfig {
    log::info(&format!("handed over by {}", handoff.from_agent));
    config.greeting = config.greeting.map(|greeting| {
        format!("Hi, this is the appointments desk. I have your details from reception. {greeting}")
    });
    if !handoff.summary.is_empty() {
        config.instructions = format!(
            "{}\n\nThe {} passed this caller on to you. The conversation so far:\n{}",
            config.instructions, handoff.from_agent, handoff.summary
        );
    }
    config
}

/// The answers to the appointment question, for offline recognition.
fn expect_answers() {
    let _ = call::expect(&ExpectHint::Phrases(
        PHRASES.iter().map(|p| p.to_string()).collect(),
    ));
}

#[derive(Deserialize)]
struct FindArgs {
    phone: String,
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
        let clinic = config::get("clinic").unwrap_or_else(|| "the clinic".into());
        let config = if info.transport == WEB {
            self.web_start(&clinic)
        } else {
            self.phone_start(info, &clinic)
        };
        let config = match call::context().handoff {
            Some(handoff) => handed_over(config, &handoff),
            None => config,
        };
        // The desk's own voice, when configured (a hand-off then opens a new model session).
        let config = match config::get("voice") {
            Some(voice) => config.voice(voice),
            None => config,
        };
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
        Ok(tools.into_iter().fold(config, SessionConfig::tool))
    }

    /// Spoken answers take the same branches as keys; a web caller may say their number.
    fn on_transcript(&mut self, role: Role, text: String, is_final: bool) -> Vec<Action> {
        if role != Role::Caller || !is_final {
            return Vec::new();
        }
        if self.typed.is_some() {
            let number = speech::digits(&text);
            return if number.is_empty() {
                Vec::new()
            } else {
                self.identify(&number)
            };
        }
        let key = SPOKEN_KEYS
            .iter()
            .find(|(word, _)| speech::has_word(&text, word))
            .map(|(_, key)| key.to_string())
            .unwrap_or_else(|| speech::digits(&text));
        self.on_dtmf(key)
    }

    fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
        if self.typed.is_some() {
            return self.type_key(&digits);
        }
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
                Err(_) => self.operator_transfer(),
            },
            "2" => match self.set_status(Status::RescheduleRequested, None) {
                Ok(_) => vec![Action::Say(
                    "No problem. Which day and time would suit you better?".into(),
                )],
                Err(_) => self.operator_transfer(),
            },
            "0" => self.operator_transfer(),
            _ => vec![Action::Say(self.prompt().into())],
        }
    }

    fn on_tool_call(&mut self, name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "find_appointment" => {
                let args: FindArgs =
                    serde_json::from_str(&arguments).map_err(|e| format!("bad arguments: {e}"))?;
                let a = self
                    .find(&args.phone)
                    .ok_or("no appointment is booked under this number")?;
                Ok(serde_json::json!({
                    "patient": a.patient, "when": a.when, "with": a.with, "status": a.status,
                })
                .to_string())
            }
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
