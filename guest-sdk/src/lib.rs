//! Write Switchboard phone agents in Rust.
//!
//! An agent is a `cdylib` crate built with plain `cargo build --release --target wasm32-wasip2`.
//! It implements [`Agent`] and calls [`export_agent!`] once; it needs no other dependency.
//! Switchboard creates one instance of the agent per call, so per-call state lives in ordinary
//! fields of the agent type.
//!
//! ```no_run
//! use switchboard_sdk::{Action, Agent, CallInfo, RejectReason, SessionConfig, call, kv};
//!
//! #[derive(Default)]
//! struct Pizzeria {
//!     wrong_keys: u32,
//! }
//!
//! impl Agent for Pizzeria {
//!     const DESCRIPTION: &'static str = "Takes pizza orders";
//!
//!     fn on_start(&mut self, info: CallInfo) -> Result<SessionConfig, RejectReason> {
//!         let greeting = match kv::get_string(&format!("name:{}", info.caller)) {
//!             Some(name) => format!("Welcome back, {name}! Press 1 to repeat your last order."),
//!             None => "Welcome to Luigi's. Press 1 to order, 0 for a person.".to_string(),
//!         };
//!         Ok(SessionConfig::new("You take pizza orders. Be brief.").greeting(greeting))
//!     }
//!
//!     fn on_dtmf(&mut self, digits: String) -> Vec<Action> {
//!         match digits.as_str() {
//!             "1" => vec![Action::Say("What would you like?".into())],
//!             "0" => {
//!                 // Effects can also be requested mid-hook; they run before the returned actions.
//!                 let _ = call::say("Connecting you now.");
//!                 vec![Action::Transfer("sip:front-desk@pizzeria.example".into())]
//!             }
//!             _ => {
//!                 self.wrong_keys += 1;
//!                 vec![Action::Say("Sorry, I did not get that.".into())]
//!             }
//!         }
//!     }
//! }
//!
//! switchboard_sdk::export_agent!(Pizzeria);
//! ```
//!
//! Host imports are plain functions: [`call`] (say, play, hang up, transfer, send DTMF; the
//! call's context and headers; the business outcome; what the caller will say next), [`kv`]
//! (persistent per-agent storage), [`http`] (to hosts the manifest allows), [`config`] (settings
//! and secrets the manifest declares), [`mcp`] (tools of the MCP servers the manifest names)
//! and [`log`]. Limits are documented in `wit/agent.wit`;
//! `wit/README.md` lists what the contract declares for later host releases.

extern crate self as switchboard_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "agent-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_agent_plugin",
        default_bindings_module: "::switchboard_sdk::bindings",
        runtime_path: "::switchboard_sdk::__rt::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __rt {
    pub use wit_bindgen;
}

pub use bindings::switchboard::agent::types::{
    Action, AgentInfo, CallContext, CallEvent, CallInfo, CallProgress, DigitRange, DigitRequest,
    Direction, EndReason, Error, ExpectHint, Handoff, LogLevel, MachineVerdict, McpCall, McpResult,
    RefusedAction, RejectReason, Role, SessionConfig, SupervisorMode, Tool, TransferProgress,
    TransferStep, TurnOptions,
};

/// The contract version this SDK speaks (`switchboard:agent@0.2.0`).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A phone agent. Every method but [`Agent::on_start`] has a default that does nothing.
///
/// A fresh value (from [`Default`]) is created for every call; the host calls the hooks one at a
/// time and [`Agent::on_end`] exactly once at the end.
pub trait Agent: Default + 'static {
    /// One line about what the agent does, shown by the host.
    const DESCRIPTION: &'static str = "";
    /// Numbers or prefix patterns the agent would like to serve (informational: routing comes
    /// from the manifest and the host's configuration).
    const NUMBERS: &'static [&'static str] = &[];

    /// How to run this call: instructions, greeting, voice, tools. An `Err` refuses the call
    /// with that SIP status.
    fn on_start(&mut self, info: CallInfo) -> Result<SessionConfig, RejectReason>;

    /// Keypad input: one digit, or the string gathered by [`Action::CollectDigits`].
    fn on_dtmf(&mut self, _digits: String) -> Vec<Action> {
        Vec::new()
    }

    /// Recognised speech of the caller or the agent; `is_final` is false for partial text.
    fn on_transcript(&mut self, _role: Role, _text: String, _is_final: bool) -> Vec<Action> {
        Vec::new()
    }

    /// The voice model called one of the tools from [`SessionConfig::tools`].
    fn on_tool_call(&mut self, name: String, _arguments: String) -> Result<String, String> {
        Err(format!("unknown tool `{name}`"))
    }

    /// Outcome of a transfer this agent asked for. After a failure the call goes on.
    fn on_transfer_result(&mut self, _target: String, outcome: Result<(), String>) -> Vec<Action> {
        match outcome {
            Ok(()) => Vec::new(),
            Err(_) => vec![Action::Say(
                "Sorry, I could not connect you. Please try again later.".into(),
            )],
        }
    }

    /// The call ended.
    fn on_end(&mut self, _reason: EndReason) {}

    /// Something happened on the call (the caller started speaking, an outbound call was
    /// answered, ...). Hosts send only the events they implement (`wit/README.md`), so ignore
    /// the ones you do not handle.
    fn on_event(&mut self, _event: CallEvent) -> Vec<Action> {
        Vec::new()
    }
}

impl SessionConfig {
    /// A session with these instructions and nothing else.
    pub fn new(instructions: impl Into<String>) -> Self {
        SessionConfig {
            instructions: instructions.into(),
            greeting: None,
            voice: None,
            language: None,
            tools: Vec::new(),
            model: None,
        }
    }

    /// Words spoken first, exactly as written.
    pub fn greeting(mut self, text: impl Into<String>) -> Self {
        self.greeting = Some(text.into());
        self
    }

    pub fn voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    pub fn language(mut self, tag: impl Into<String>) -> Self {
        self.language = Some(tag.into());
        self
    }

    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }
}

impl Tool {
    /// A tool; `parameters` is the JSON Schema of its arguments object.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: impl Into<String>,
    ) -> Self {
        Tool {
            name: name.into(),
            description: description.into(),
            parameters: parameters.into(),
        }
    }
}

impl RejectReason {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        RejectReason {
            code,
            reason: reason.into(),
        }
    }
}

/// Effects on the current call. Each is queued and carried out after the hook returns, before
/// the actions the hook returns.
pub mod call {
    use crate::bindings::switchboard::agent::call as host;
    use crate::{CallContext, Error, ExpectHint};

    /// Speak `text`.
    pub fn say(text: &str) -> Result<(), Error> {
        host::say(text)
    }

    /// Play an audio asset shipped with the agent.
    pub fn play(name: &str) -> Result<(), Error> {
        host::play(name)
    }

    /// End the call once queued speech has been played.
    pub fn hangup() {
        host::hangup()
    }

    /// Blind-transfer the caller; fails at once unless the manifest allows `target`.
    pub fn transfer(target: &str) -> Result<(), Error> {
        host::transfer(target)
    }

    /// Send keypad digits to the far end.
    pub fn send_dtmf(digits: &str) -> Result<(), Error> {
        host::send_dtmf(digits)
    }

    /// Record the business outcome of the call ("confirmed", "appointment booked", ...); the
    /// last one set wins.
    pub fn set_outcome(outcome: &str) -> Result<(), Error> {
        host::set_outcome(outcome)
    }

    /// The call as the host knows it now (from any hook, not only `on_start`).
    pub fn context() -> CallContext {
        host::context()
    }

    /// The call's selected signalling headers.
    pub fn headers() -> Vec<(String, String)> {
        host::headers()
    }

    /// What the caller is expected to say or key in next; helps recognition and turn-taking.
    pub fn expect(hint: &ExpectHint) -> Result<(), Error> {
        host::expect(hint)
    }
}

/// Reading what a caller said.
pub mod speech {
    /// The words a spoken digit can be, in digit order ("oh" is 0 as in phone numbers).
    const DIGITS: [(&str, char); 11] = [
        ("zero", '0'),
        ("oh", '0'),
        ("one", '1'),
        ("two", '2'),
        ("three", '3'),
        ("four", '4'),
        ("five", '5'),
        ("six", '6'),
        ("seven", '7'),
        ("eight", '8'),
        ("nine", '9'),
    ];

    /// The digits spoken in `text`, in order ("four two" and "4 2" give "42").
    pub fn digits(text: &str) -> String {
        text.split(|c: char| !c.is_alphanumeric())
            .flat_map(|word| {
                let word = word.to_ascii_lowercase();
                match DIGITS.iter().find(|(w, _)| *w == word) {
                    Some((_, d)) => vec![*d],
                    None => word.chars().filter(char::is_ascii_digit).collect(),
                }
            })
            .collect()
    }

    /// Whether `text` contains `word` as a whole word, ignoring case.
    pub fn has_word(text: &str, word: &str) -> bool {
        text.split(|c: char| !c.is_alphanumeric() && c != '\'')
            .any(|w| w.eq_ignore_ascii_case(word))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_digits_and_words() {
            assert_eq!(super::digits("four two"), "42");
            assert_eq!(super::digits("oh 7, nine"), "079");
            assert_eq!(super::digits("operator"), "");
            assert!(super::has_word("I want to talk to an Operator", "operator"));
            assert!(!super::has_word("operators", "operator"));
        }
    }
}

/// Persistent storage private to this agent, shared by all its calls and versions.
pub mod kv {
    use crate::Error;
    use crate::bindings::switchboard::agent::kv as host;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::get(key)
    }

    /// The value as UTF-8 text; None when missing or not UTF-8.
    pub fn get_string(key: &str) -> Option<String> {
        host::get(key).and_then(|v| String::from_utf8(v).ok())
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        host::set(key, value)
    }

    pub fn set_string(key: &str, value: &str) -> Result<(), Error> {
        host::set(key, value.as_bytes())
    }

    pub fn delete(key: &str) {
        host::delete(key)
    }

    /// Keys starting with `prefix`, sorted (at most 1000).
    pub fn list_keys(prefix: &str) -> Vec<String> {
        host::list_keys(prefix)
    }
}

/// Tools of the MCP servers the manifest names (`[[capabilities.mcp]]`). The host lists them
/// once per agent version and offers them to the model beside the agent's own tools, named
/// `server__tool`. Every MCP call reaches the agent first as `CallEvent::McpCall` in
/// `on_event`, where [`mcp::veto`] refuses it, and its result as `CallEvent::McpResult`.
pub mod mcp {
    use crate::bindings::switchboard::agent::mcp as host;
    use crate::{Error, Tool};

    /// The MCP tools of this agent version, named as the model sees them (`crm__lookup`).
    /// Put the ones the model should have in `SessionConfig::tools` (the description may be
    /// changed) to offer only those; list none of them to offer all.
    pub fn tools() -> Vec<Tool> {
        host::tools()
    }

    /// In `on_start`: let the model call MCP tool `tool` (a name from [`tools`]) by `name`.
    /// Returns the tool under that name, to put in `SessionConfig::tools`. `on_event` still
    /// sees the server's own names.
    pub fn rename(tool: &str, name: &str) -> Result<Tool, Error> {
        host::rename(tool, name)
    }

    /// During `on_event(CallEvent::McpCall(..))`: refuse that call; the model gets `reason` as
    /// the tool's error, and the server never sees the call.
    pub fn veto(reason: &str) -> Result<(), Error> {
        host::veto(reason)
    }
}

/// Outbound HTTP to hosts the manifest allows.
pub mod http {
    use crate::Error;
    use crate::bindings::switchboard::agent::http as host;
    pub use crate::bindings::switchboard::agent::http::{Request, Response};

    pub fn fetch(request: &Request) -> Result<Response, Error> {
        host::fetch(request)
    }

    pub fn get(url: &str) -> Result<Response, Error> {
        fetch(&Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// POST a JSON text body.
    pub fn post_json(url: &str, json: &str) -> Result<Response, Error> {
        fetch(&Request {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: json.as_bytes().to_vec(),
        })
    }

    impl Response {
        /// The body as UTF-8 text (lossy).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }
}

/// Settings and secrets the manifest declares, with values from the host's configuration.
pub mod config {
    use crate::bindings::switchboard::agent::config as host;

    pub fn get(key: &str) -> Option<String> {
        host::get(key)
    }
}

/// Log lines, tagged by the host with the agent, its version and the call id.
pub mod log {
    use crate::LogLevel;
    use crate::bindings::switchboard::agent::log as host;

    pub fn log(level: LogLevel, message: &str) {
        host::log(level, message)
    }

    pub fn debug(message: &str) {
        log(LogLevel::Debug, message)
    }

    pub fn info(message: &str) {
        log(LogLevel::Info, message)
    }

    pub fn warn(message: &str) {
        log(LogLevel::Warn, message)
    }

    pub fn error(message: &str) {
        log(LogLevel::Error, message)
    }
}

#[doc(hidden)]
pub mod __adapter {
    use crate::bindings::exports::switchboard::agent::agent::Guest;
    use crate::{
        Action, Agent, AgentInfo, CallEvent, CallInfo, EndReason, RejectReason, Role, SessionConfig,
    };
    use core::cell::RefCell;
    use core::marker::PhantomData;

    /// Static facts filled in by `export_agent!` from the author's crate.
    pub trait Described {
        fn info() -> AgentInfo;
    }

    /// Forwards the WIT exports to the author's [`Agent`]; one agent value per instance (call).
    pub struct Adapter<T>(PhantomData<T>);

    std::thread_local! {
        static AGENT: RefCell<Option<Box<dyn core::any::Any>>> = const { RefCell::new(None) };
    }

    fn with_agent<T: Agent, R>(f: impl FnOnce(&mut T) -> R) -> R {
        AGENT.with(|slot| {
            let mut slot = slot.borrow_mut();
            let agent = slot.get_or_insert_with(|| Box::new(T::default()));
            let agent = agent
                .downcast_mut::<T>()
                .expect("one agent type per component");
            f(agent)
        })
    }

    impl<T: Agent + Described> Guest for Adapter<T> {
        fn describe() -> AgentInfo {
            T::info()
        }

        fn on_start(info: CallInfo) -> Result<SessionConfig, RejectReason> {
            with_agent::<T, _>(|a| a.on_start(info))
        }

        fn on_dtmf(digits: String) -> Vec<Action> {
            with_agent::<T, _>(|a| a.on_dtmf(digits))
        }

        fn on_transcript(role: Role, text: String, is_final: bool) -> Vec<Action> {
            with_agent::<T, _>(|a| a.on_transcript(role, text, is_final))
        }

        fn on_tool_call(name: String, arguments: String) -> Result<String, String> {
            with_agent::<T, _>(|a| a.on_tool_call(name, arguments))
        }

        fn on_transfer_result(target: String, outcome: Result<(), String>) -> Vec<Action> {
            with_agent::<T, _>(|a| a.on_transfer_result(target, outcome))
        }

        fn on_end(reason: EndReason) {
            with_agent::<T, _>(|a| a.on_end(reason))
        }

        fn on_event(event: CallEvent) -> Vec<Action> {
            with_agent::<T, _>(|a| a.on_event(event))
        }
    }
}

/// Export an [`Agent`] type as the component's `switchboard:agent/agent` implementation.
///
/// The agent's name and version in `describe` are the crate's package name and version.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        impl $crate::__adapter::Described for $agent {
            fn info() -> $crate::AgentInfo {
                $crate::AgentInfo {
                    name: ::core::env!("CARGO_PKG_NAME").into(),
                    version: ::core::env!("CARGO_PKG_VERSION").into(),
                    description: <$agent as $crate::Agent>::DESCRIPTION.into(),
                    numbers: <$agent as $crate::Agent>::NUMBERS
                        .iter()
                        .map(|n| (*n).into())
                        .collect(),
                }
            }
        }
        type __SwitchboardAgentAdapter = $crate::__adapter::Adapter<$agent>;
        $crate::bindings::__export_agent_plugin!(
            __SwitchboardAgentAdapter with_types_in $crate::bindings
        );
    };
}
