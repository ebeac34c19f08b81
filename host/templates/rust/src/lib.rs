//! The `{{name}}` agent: greets the caller, answers with the voice model, offers one tool and a
//! keypad menu (0 for an operator, # to hang up).

use switchboard_sdk::{Action, Agent, CallInfo, RejectReason, SessionConfig, Tool, config};

#[derive(Default)]
struct {{type}};

impl Agent for {{type}} {
    const DESCRIPTION: &'static str = "{{title}}: a new Switchboard agent";

    fn on_start(&mut self, _info: CallInfo) -> Result<SessionConfig, RejectReason> {
        let business = config::get("business-name").unwrap_or_else(|| "{{title}}".into());
        Ok(SessionConfig::new(format!(
            "You answer the phone for {business}. Be brief and friendly. When the caller asks \
             when we are open, call the `opening_hours` tool."
        ))
        .greeting(format!(
            "Hello, this is {business}. Press 0 for an operator, or tell me what you need."
        ))
        .tool(Tool::new(
            "opening_hours",
            "When we are open",
            r#"{"type":"object","properties":{}}"#,
        )))
    }

    fn on_tool_call(&mut self, name: String, _arguments: String) -> Result<String, String> {
        match name.as_str() {
            "opening_hours" => Ok("Monday to Friday, 9:00 to 17:00".into()),
            _ => Err(format!("no tool named {name}")),
        }
    }

    fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
        match digits.as_str() {
            "0" => vec![
                Action::Say("Connecting you to an operator.".into()),
                Action::Transfer("sip:operator@127.0.0.1".into()),
            ],
            "#" => vec![Action::Say("Goodbye.".into()), Action::Hangup],
            _ => vec![Action::Say("Press 0 for an operator, or # to hang up.".into())],
        }
    }
}

switchboard_sdk::export_agent!({{type}});
