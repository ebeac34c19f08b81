//! The conversation of one call as the language model is given it, kept within the model's
//! token budget.
//!
//! The rule:
//! - Tokens are estimated, not counted: a message costs its characters / 4 plus 4 (the role
//!   and framing). There is no tokenizer here; the estimate is close enough for English and
//!   errs high for most other text, and the budget should leave room for the answer.
//! - The instructions (the system message) always stay, and count against the budget first.
//! - The conversation is cut into turns: a turn is a caller message and everything after it
//!   up to the next caller message (the agent's answers, its tool calls and their results).
//!   What came before the first caller message (a greeting) is a turn of its own.
//! - Whole turns are dropped, oldest first, until the rest fits, so a tool call is never kept
//!   without its result or the other way round.
//! - The newest turn always stays, even when it alone is over the budget.
//!
//! Barge-in: the caller may hear only part of an answer; [`History::heard`] cuts the answer to
//! what was heard, so the model does not believe it said the rest.

use super::llm::{Message, ToolCall};
use crate::model::Role;

/// One message, with the agent item id its answer text belongs to (for [`History::heard`]).
#[derive(Debug, Clone)]
struct Entry {
    item_id: Option<String>,
    message: Message,
}

/// The conversation of one call.
#[derive(Debug, Clone)]
pub struct History {
    budget_tokens: usize,
    entries: Vec<Entry>,
}

impl History {
    pub fn new(budget_tokens: usize) -> History {
        History {
            budget_tokens,
            entries: Vec::new(),
        }
    }

    /// A caller turn.
    pub fn caller(&mut self, text: &str) {
        self.push(None, Message::User(text.to_string()));
    }

    /// An agent answer as generated. The same `item_id` again replaces that answer's text (an
    /// answer given as it grows).
    pub fn agent(&mut self, item_id: &str, text: &str) {
        if let Some(text_slot) = self.answer_text(item_id) {
            *text_slot = Some(text.to_string());
            return;
        }
        self.push(
            Some(item_id.to_string()),
            Message::Assistant {
                text: Some(text.to_string()),
                tool_calls: Vec::new(),
            },
        );
    }

    /// Barge-in: the caller heard only `heard` of answer `item_id`; the rest never happened.
    /// Empty `heard` removes the answer (its tool calls, if any, stay with their results).
    /// Unknown id: no change.
    pub fn heard(&mut self, item_id: &str, heard: &str) {
        let Some(at) = self.position(item_id) else {
            return;
        };
        let heard = heard.trim();
        let Message::Assistant { text, tool_calls } = &mut self.entries[at].message else {
            return;
        };
        if !heard.is_empty() {
            *text = Some(heard.to_string());
        } else if tool_calls.is_empty() {
            self.entries.remove(at);
        } else {
            *text = None;
        }
    }

    /// A tool call the model asked for: kept in the assistant message just before it (the
    /// answer it came with), or in a new one.
    pub fn tool_call(&mut self, call: ToolCall) {
        if let Some(Entry {
            message: Message::Assistant { tool_calls, .. },
            ..
        }) = self.entries.last_mut()
        {
            tool_calls.push(call);
            return;
        }
        self.push(
            None,
            Message::Assistant {
                text: None,
                tool_calls: vec![call],
            },
        );
    }

    /// The result of tool call `call_id`.
    pub fn tool_result(&mut self, call_id: &str, output: &str) {
        self.push(
            None,
            Message::Tool {
                call_id: call_id.to_string(),
                content: output.to_string(),
            },
        );
    }

    /// The conversation so far of a call this session takes over, oldest first.
    pub fn seed(&mut self, earlier: &[(Role, String)]) {
        for (role, text) in earlier {
            let message = match role {
                Role::Caller => Message::User(text.clone()),
                Role::Agent => Message::Assistant {
                    text: Some(text.clone()),
                    tool_calls: Vec::new(),
                },
            };
            self.push(None, message);
        }
    }

    /// System message first, then the newest whole turns that fit the budget.
    pub fn messages(&self, instructions: &str) -> Vec<Message> {
        let system = Message::System(instructions.to_string());
        let mut used = estimate(&system);
        let turns = self.turns();
        let mut first_kept = turns.len();
        for (index, turn) in turns.iter().enumerate().rev() {
            let cost: usize = turn.iter().map(|entry| estimate(&entry.message)).sum();
            let newest = index + 1 == turns.len();
            if !newest && used + cost > self.budget_tokens {
                break;
            }
            used += cost;
            first_kept = index;
        }
        std::iter::once(system)
            .chain(
                turns[first_kept..]
                    .iter()
                    .flat_map(|turn| turn.iter().map(|entry| entry.message.clone())),
            )
            .collect()
    }

    fn push(&mut self, item_id: Option<String>, message: Message) {
        self.entries.push(Entry { item_id, message });
    }

    fn position(&self, item_id: &str) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|entry| entry.item_id.as_deref() == Some(item_id))
    }

    fn answer_text(&mut self, item_id: &str) -> Option<&mut Option<String>> {
        let at = self.position(item_id)?;
        match &mut self.entries[at].message {
            Message::Assistant { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The entries cut before each caller message.
    fn turns(&self) -> Vec<&[Entry]> {
        let mut turns = Vec::new();
        let mut start = 0;
        for (index, entry) in self.entries.iter().enumerate() {
            if index > start && matches!(entry.message, Message::User(_)) {
                turns.push(&self.entries[start..index]);
                start = index;
            }
        }
        if start < self.entries.len() {
            turns.push(&self.entries[start..]);
        }
        turns
    }
}

/// Estimated tokens of one message: characters / 4, plus 4 for the role and framing.
fn estimate(message: &Message) -> usize {
    let chars = match message {
        Message::System(text) | Message::User(text) => text.chars().count(),
        Message::Assistant { text, tool_calls } => {
            text.as_deref().map_or(0, |t| t.chars().count())
                + tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.chars().count() + c.arguments.chars().count())
                    .sum::<usize>()
        }
        Message::Tool { call_id, content } => call_id.len() + content.chars().count(),
    };
    chars / 4 + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "lookup_order".into(),
            arguments: "{\"order_id\":\"A1234\"}".into(),
        }
    }

    fn assistant(text: &str) -> Message {
        Message::Assistant {
            text: Some(text.into()),
            tool_calls: vec![],
        }
    }

    #[test]
    fn messages_keep_order_and_tool_calls_join_their_answer() {
        let mut history = History::new(8000);
        history.agent("greet", "Thanks for calling.");
        history.caller("Where is my order?");
        history.agent("a1", "Let me check.");
        history.tool_call(call("call_1"));
        history.tool_result("call_1", "{\"status\":\"shipped\"}");
        history.agent("a2", "It has shipped.");
        assert_eq!(
            history.messages("Be brief."),
            [
                Message::System("Be brief.".into()),
                assistant("Thanks for calling."),
                Message::User("Where is my order?".into()),
                Message::Assistant {
                    text: Some("Let me check.".into()),
                    tool_calls: vec![call("call_1")]
                },
                Message::Tool {
                    call_id: "call_1".into(),
                    content: "{\"status\":\"shipped\"}".into()
                },
                assistant("It has shipped."),
            ]
        );
    }

    #[test]
    fn a_tool_call_after_a_result_opens_a_new_assistant_message() {
        let mut history = History::new(8000);
        history.caller("Two orders please.");
        history.tool_call(call("c1"));
        history.tool_call(call("c2"));
        history.tool_result("c1", "1");
        history.tool_result("c2", "2");
        history.tool_call(call("c3"));
        let messages = history.messages("");
        assert!(
            matches!(&messages[2], Message::Assistant { text: None, tool_calls } if tool_calls.len() == 2)
        );
        assert!(
            matches!(&messages[5], Message::Assistant { text: None, tool_calls } if tool_calls == &[call("c3")])
        );
    }

    #[test]
    fn heard_cuts_or_removes_the_answer() {
        let mut history = History::new(8000);
        history.caller("Hi");
        history.agent("a1", "Hello there. How can I help you today?");
        history.heard("a1", "Hello there.");
        history.heard("unknown", "");
        assert_eq!(history.messages("")[2], assistant("Hello there."));
        history.heard("a1", "");
        assert_eq!(history.messages("").len(), 2);

        // An answer that called a tool loses its text only: the call keeps its result.
        history.agent("a2", "Checking.");
        history.tool_call(call("c1"));
        history.tool_result("c1", "ok");
        history.heard("a2", "");
        assert_eq!(
            history.messages("")[2],
            Message::Assistant {
                text: None,
                tool_calls: vec![call("c1")]
            }
        );
    }

    #[test]
    fn agent_again_with_the_same_id_replaces_the_text() {
        let mut history = History::new(8000);
        history.caller("Hi");
        history.agent("a1", "Hel");
        history.agent("a1", "Hello.");
        assert_eq!(
            history.messages("")[1..],
            [Message::User("Hi".into()), assistant("Hello.")]
        );
    }

    #[test]
    fn oldest_whole_turns_go_first_and_the_newest_always_stays() {
        // Each caller/agent message of 36 characters costs 36/4 + 4 = 13 tokens; a turn 26.
        let line = "x".repeat(36);
        let mut history = History::new(4 + 26 * 2); // the empty instructions cost 4
        for turn in 0..4 {
            history.caller(&format!("{turn}{}", &line[1..]));
            history.agent(&format!("a{turn}"), &line);
        }
        let messages = history.messages("");
        assert_eq!(messages.len(), 1 + 4);
        assert_eq!(messages[1], Message::User(format!("2{}", &line[1..])));

        // A turn with a tool call goes whole: never a call without its result.
        let mut history = History::new(30);
        history.caller("Where is my order?");
        history.tool_call(call("c1"));
        history.tool_result("c1", &"y".repeat(40));
        history.caller("Thanks");
        let messages = history.messages("");
        assert_eq!(
            messages,
            [
                Message::System(String::new()),
                Message::User("Thanks".into())
            ]
        );

        // Over budget on its own: still sent.
        let mut history = History::new(10);
        history.caller(&"z".repeat(400));
        assert_eq!(history.messages("Be brief.").len(), 2);
    }

    #[test]
    fn seed_takes_over_an_earlier_conversation() {
        let mut history = History::new(8000);
        history.seed(&[
            (Role::Agent, "Thanks for calling.".into()),
            (Role::Caller, "Hi".into()),
        ]);
        history.caller("Still there?");
        assert_eq!(
            history.messages("")[1..],
            [
                assistant("Thanks for calling."),
                Message::User("Hi".into()),
                Message::User("Still there?".into())
            ]
        );
    }
}
