//! A front-desk receptionist on a voice model: greets, answers opening-hours questions with a
//! tool, takes messages (stored in kv), transfers to a person when the caller asks, and hands
//! the call to the `appointments` agent (keypad 2, or a caller who mentions an appointment),
//! which hears what was said so far.

use serde::Deserialize;
use switchboard_sdk::{
    Action, Agent, CallInfo, RejectReason, Role, SessionConfig, Tool, call, config, kv, log,
};

#[derive(Default)]
struct Receptionist {
    caller: String,
    transferring: bool,
}

#[derive(Deserialize)]
struct Message {
    name: String,
    #[serde(default)]
    callback_number: Option<String>,
    message: String,
}

fn setting(key: &str) -> String {
    config::get(key).unwrap_or_default()
}

/// Phrases after which the caller clearly wants a person, even if the model misses it.
const ASK_FOR_PERSON: &[&str] = &[
    "speak to a person",
    "talk to a person",
    "real person",
    "human",
];

/// The agent that handles appointments: a hand-off inside the call, not a SIP transfer.
const APPOINTMENTS: &str = "agent:appointments";

impl Receptionist {
    /// Hand the caller to the appointments agent, after a short word.
    fn hand_to_appointments(&mut self) {
        if self.transferring {
            return;
        }
        let _ = call::say("Of course, I am passing you to our appointments desk.");
        match call::transfer(APPOINTMENTS) {
            Ok(()) => self.transferring = true,
            Err(e) => log::warn(&format!("hand-off refused: {e}")),
        }
    }

    fn transfer_to_front_desk(&mut self) -> Result<String, String> {
        if self.transferring {
            return Ok("A transfer is already under way.".into());
        }
        let target = setting("front-desk");
        call::say("One moment, I am putting you through.").map_err(|e| e.to_string())?;
        call::transfer(&target).map_err(|e| e.to_string())?;
        self.transferring = true;
        Ok("Transferring the caller to the front desk.".into())
    }

    fn take_message(&mut self, arguments: &str) -> Result<String, String> {
        let msg: Message =
            serde_json::from_str(arguments).map_err(|e| format!("bad arguments: {e}"))?;
        if msg.message.trim().is_empty() {
            return Err("the message is empty; ask the caller what to pass on".into());
        }
        let number = msg.callback_number.unwrap_or_else(|| self.caller.clone());
        let id = kv::list_keys("message:").len() + 1;
        let record = serde_json::json!({
            "name": msg.name, "callback_number": number, "message": msg.message,
        });
        kv::set_string(&format!("message:{id:06}"), &record.to_string())
            .map_err(|e| format!("could not store the message: {e}"))?;
        log::info(&format!("message {id} taken for {}", msg.name));
        Ok(format!(
            "Message {id} saved. Tell the caller we will call back."
        ))
    }
}

impl Agent for Receptionist {
    const DESCRIPTION: &'static str = "Receptionist: opening hours, messages, transfer to a person";
    const NUMBERS: &'static [&'static str] = &["2000"];

    fn on_start(&mut self, info: CallInfo) -> Result<SessionConfig, RejectReason> {
        self.caller = info.caller;
        let business = setting("business-name");
        Ok(SessionConfig::new(format!(
            "You are the friendly receptionist of {business}. Keep answers short: this is a \
             phone call. Use `opening_hours` for opening times. If the caller wants to leave a \
             message, collect their name, callback number and message, then call \
             `take_message`. If the caller asks for a person, call `transfer_to_person`. \
             Appointments are handled by the appointments desk: callers press 2 or mention \
             their appointment to be passed on."
        ))
        .greeting(format!("Thank you for calling {business}. How can I help you today?"))
        .tool(Tool::new(
            "opening_hours",
            "Opening hours of the business",
            r#"{"type":"object","properties":{}}"#,
        ))
        .tool(Tool::new(
            "take_message",
            "Store a message for the staff",
            r#"{"type":"object","properties":{"name":{"type":"string"},"callback_number":{"type":"string"},"message":{"type":"string"}},"required":["name","message"]}"#,
        ))
        .tool(Tool::new(
            "transfer_to_person",
            "Transfer the caller to the front desk",
            r#"{"type":"object","properties":{}}"#,
        )))
    }

    fn on_tool_call(&mut self, name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "opening_hours" => {
                Ok(serde_json::json!({ "hours": setting("opening-hours") }).to_string())
            }
            "take_message" => self.take_message(&arguments),
            "transfer_to_person" => self.transfer_to_front_desk(),
            other => Err(format!("unknown tool `{other}`")),
        }
    }

    fn on_transcript(&mut self, role: Role, text: String, is_final: bool) -> Vec<Action> {
        if role != Role::Caller || !is_final {
            return Vec::new();
        }
        let lower = text.to_lowercase();
        if ASK_FOR_PERSON.iter().any(|p| lower.contains(p)) {
            if let Err(e) = self.transfer_to_front_desk() {
                log::warn(&format!("transfer refused: {e}"));
            }
        } else if lower.contains("appointment") {
            self.hand_to_appointments();
        }
        Vec::new()
    }

    fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
        match digits.as_str() {
            "0" => {
                let _ = self.transfer_to_front_desk();
            }
            "2" => self.hand_to_appointments(),
            _ => {}
        }
        Vec::new()
    }

    fn on_transfer_result(&mut self, _target: String, outcome: Result<(), String>) -> Vec<Action> {
        self.transferring = false;
        match outcome {
            Ok(()) => Vec::new(),
            Err(_) => vec![Action::Say(
                "Nobody is free at the moment. Can I take a message instead?".into(),
            )],
        }
    }
}

switchboard_sdk::export_agent!(Receptionist);
