//! A keypad menu that needs no AI: every prompt is spoken with `say`, so it runs on the offline
//! provider with local speech synthesis.

use switchboard_sdk::{
    Action, Agent, CallInfo, DigitRequest, ExpectHint, RejectReason, Role, SessionConfig, call,
    config, speech,
};

const OPERATOR: &str = "sip:operator@127.0.0.1";
const MAX_WRONG_KEYS: u32 = 3;

#[derive(Default)]
struct Menu {
    /// Set while an order number is being gathered with collect-digits.
    collecting_order: bool,
    wrong_keys: u32,
}

fn setting(key: &str, fallback: &str) -> String {
    config::get(key).unwrap_or_else(|| fallback.to_string())
}

/// Spoken answers to the menu, and the key each stands for.
const SPOKEN_KEYS: [(&str, &str); 7] = [
    ("hours", "1"),
    ("address", "2"),
    ("order", "3"),
    ("operator", "0"),
    ("repeat", "9"),
    ("again", "9"),
    ("goodbye", "#"),
];

/// Tell the host what callers say at the menu, so offline recognition listens for it.
fn expect_menu() {
    let phrases: Vec<String> = [
        "opening hours",
        "hours",
        "address",
        "order",
        "check an order",
        "operator",
        "talk to an operator",
        "I want to talk to an operator",
        "repeat",
        "say that again",
        "goodbye",
        "one",
        "two",
        "three",
        "zero",
        "nine",
    ]
    .map(String::from)
    .to_vec();
    let _ = call::expect(&ExpectHint::Phrases(phrases));
}

fn menu_prompt() -> String {
    "Press 1 for opening hours, 2 for our address, 3 to check an order, \
     0 to speak to the operator, 9 to hear this again, or the hash key to hang up."
        .to_string()
}

impl Agent for Menu {
    const DESCRIPTION: &'static str = "Keypad menu: opening hours, address, order status, operator";
    const NUMBERS: &'static [&'static str] = &["1000"];

    fn on_start(&mut self, _info: CallInfo) -> Result<SessionConfig, RejectReason> {
        let name = setting("business-name", "us");
        expect_menu();
        Ok(
            SessionConfig::new("You are a keypad menu. Only speak the prompts you are given.")
                .greeting(format!("Welcome to {name}. {}", menu_prompt())),
        )
    }

    /// Spoken answers take the same branches as keys: a menu word, or a digit.
    fn on_transcript(&mut self, role: Role, text: String, is_final: bool) -> Vec<Action> {
        if role != Role::Caller || !is_final {
            return Vec::new();
        }
        if self.collecting_order {
            return self.on_dtmf(speech::digits(&text));
        }
        let key = SPOKEN_KEYS
            .iter()
            .find(|(word, _)| speech::has_word(&text, word))
            .map(|(_, key)| key.to_string())
            .unwrap_or_else(|| speech::digits(&text));
        if key.is_empty() {
            return vec![Action::Say(format!(
                "Sorry, I did not catch that. {}",
                menu_prompt()
            ))];
        }
        self.on_dtmf(key)
    }

    fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
        if self.collecting_order {
            self.collecting_order = false;
            expect_menu();
            return if digits.is_empty() {
                vec![Action::Say(format!(
                    "No order number received. {}",
                    menu_prompt()
                ))]
            } else {
                let spaced: Vec<String> = digits.chars().map(String::from).collect();
                vec![Action::Say(format!(
                    "Order {} is on its way. {}",
                    spaced.join(" "),
                    menu_prompt()
                ))]
            };
        }
        match digits.as_str() {
            "1" => vec![Action::Say(format!(
                "We are open {}.",
                setting("opening-hours", "on weekdays")
            ))],
            "2" => vec![Action::Say(format!(
                "You will find us at {}.",
                setting("address", "our office")
            ))],
            "3" => {
                self.collecting_order = true;
                let _ = call::expect(&ExpectHint::Digits(switchboard_sdk::DigitRange {
                    min: 1,
                    max: 6,
                }));
                vec![Action::CollectDigits(DigitRequest {
                    max_digits: 6,
                    timeout_ms: 5000,
                    terminator: Some("#".into()),
                    prompt: Some("Enter your order number, then the hash key.".into()),
                })]
            }
            "0" => {
                let _ = call::say("Connecting you to the operator.");
                vec![Action::Transfer(OPERATOR.into())]
            }
            "9" => vec![Action::Say(menu_prompt())],
            "#" => vec![Action::Say("Goodbye.".into()), Action::Hangup],
            _ => {
                self.wrong_keys += 1;
                if self.wrong_keys >= MAX_WRONG_KEYS {
                    vec![
                        Action::Say("Sorry, that did not work. Goodbye.".into()),
                        Action::Hangup,
                    ]
                } else {
                    vec![Action::Say(format!(
                        "Sorry, {digits} is not an option. {}",
                        menu_prompt()
                    ))]
                }
            }
        }
    }
}

switchboard_sdk::export_agent!(Menu);
