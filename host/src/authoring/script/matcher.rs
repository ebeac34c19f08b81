//! Whether what the agent did meets a script's expectation.
//!
//! Expectations look at what the agent did since the previous caller or model step, in order:
//! each one matches the first fitting thing after what the expectation before it matched, so a
//! run of expectations also checks their order (the runner lets a hint of expected input match
//! anywhere in the window: it is a request, not something the caller hears). The outcome and
//! "no fault" look at the whole call so far.

use super::format::{Expect, ResultCheck};
use super::observe::{Observed, hint_text};

/// Where in `window` (from `from` on) `expect` is met; the index of what met it.
pub fn find(expect: &Expect, window: &[Observed], from: usize) -> Option<usize> {
    let fits = |o: &Observed| match (expect, o) {
        (Expect::Say(text), Observed::Said(said)) => said.contains(text.as_str()),
        (Expect::SayMatches(re), Observed::Said(said)) => re.compiled.is_match(said),
        (Expect::Transfer(target), Observed::Transferred(t)) => t == target,
        (Expect::Hangup, Observed::HungUp) => true,
        (Expect::SendDigits(digits), Observed::SentDigits(d)) => d == digits,
        (Expect::CollectDigits, Observed::CollectsDigits(_)) => true,
        (Expect::Hint(text), Observed::Expects(hint)) => hint_text(hint).contains(text.as_str()),
        _ => false,
    };
    window
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, o)| fits(o))
        .map(|(i, _)| i)
}

/// Whether the whole call so far meets `expect` (the outcome set last; no fault).
pub fn holds_overall(expect: &Expect, log: &[Observed]) -> bool {
    match expect {
        Expect::Outcome(outcome) => {
            let last = log.iter().rev().find_map(|o| match o {
                Observed::Outcome(o) => Some(o),
                _ => None,
            });
            last == Some(outcome)
        }
        Expect::NoFault => !log.iter().any(|o| matches!(o, Observed::Fault(_))),
        _ => false,
    }
}

/// Whether `expect` is about the whole call rather than the last step's window.
pub fn is_overall(expect: &Expect) -> bool {
    matches!(expect, Expect::Outcome(_) | Expect::NoFault)
}

/// Whether a tool's result meets `check`.
pub fn result_meets(check: &ResultCheck, result: &Result<String, String>) -> bool {
    match (check, result) {
        (ResultCheck::Equals(text), Ok(r)) => r == text,
        (ResultCheck::Contains(text), Ok(r)) => r.contains(text.as_str()),
        (ResultCheck::Subset(expected), Ok(r)) => serde_json::from_str(r)
            .map(|actual| json_subset(expected, &actual))
            .unwrap_or(false),
        (ResultCheck::Error(text), Err(e)) => e.contains(text.as_str()),
        _ => false,
    }
}

/// `expected` is within `actual`: an object's members are in the other object (recursively),
/// arrays match element by element, numbers by value, the rest by equality.
pub fn json_subset(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| json_subset(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| json_subset(e, a))
        }
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (e, a) => e == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authoring::script::format::Regex;
    use crate::domain::agent_event::Expectation;
    use serde_json::json;

    fn window() -> Vec<Observed> {
        vec![
            Observed::Said("Welcome to Acme. Press 1 for hours.".into()),
            Observed::Expects(Expectation::Digits { min: 1, max: 6 }),
            Observed::Said("Connecting you.".into()),
            Observed::Transferred("sip:desk@example.org".into()),
            Observed::Outcome("sent to the desk".into()),
        ]
    }

    #[test]
    fn expectations_match_in_order() {
        let w = window();
        assert_eq!(find(&Expect::Say("Acme".into()), &w, 0), Some(0));
        assert_eq!(find(&Expect::Say("Connecting".into()), &w, 1), Some(2));
        // Already past it.
        assert_eq!(find(&Expect::Say("Acme".into()), &w, 1), None);
        assert_eq!(
            find(&Expect::Transfer("sip:desk@example.org".into()), &w, 0),
            Some(3)
        );
        assert_eq!(find(&Expect::Transfer("sip:other".into()), &w, 0), None);
        assert_eq!(find(&Expect::Hangup, &w, 0), None);
        assert_eq!(find(&Expect::Hint("digits 1-6".into()), &w, 0), Some(1));
        let re = Regex {
            pattern: "^Welcome to \\w+\\.".into(),
            compiled: regex_automata::meta::Regex::new("^Welcome to \\w+\\.").unwrap(),
        };
        assert_eq!(find(&Expect::SayMatches(re), &w, 0), Some(0));
    }

    #[test]
    fn outcome_and_faults_look_at_the_whole_call() {
        let mut log = window();
        assert!(holds_overall(
            &Expect::Outcome("sent to the desk".into()),
            &log
        ));
        log.push(Observed::Outcome("changed".into()));
        assert!(!holds_overall(
            &Expect::Outcome("sent to the desk".into()),
            &log
        ));
        assert!(holds_overall(&Expect::NoFault, &log));
        log.push(Observed::Fault("on-dtmf: Trap: boom".into()));
        assert!(!holds_overall(&Expect::NoFault, &log));
    }

    #[test]
    fn tool_results_by_text_and_json_subset() {
        let ok = Ok(r#"{"hours":"9-5","days":["mon","tue"],"n":1.0}"#.to_string());
        assert!(result_meets(&ResultCheck::Contains("9-5".into()), &ok));
        assert!(!result_meets(&ResultCheck::Equals("9-5".into()), &ok));
        assert!(result_meets(
            &ResultCheck::Subset(json!({"hours": "9-5"})),
            &ok
        ));
        assert!(result_meets(&ResultCheck::Subset(json!({"n": 1})), &ok));
        assert!(result_meets(
            &ResultCheck::Subset(json!({"days": ["mon", "tue"]})),
            &ok
        ));
        assert!(!result_meets(
            &ResultCheck::Subset(json!({"days": ["mon"]})),
            &ok
        ));
        assert!(!result_meets(
            &ResultCheck::Subset(json!({"hours": "10-6"})),
            &ok
        ));
        assert!(!result_meets(
            &ResultCheck::Subset(json!({"missing": 1})),
            &ok
        ));
        assert!(!result_meets(&ResultCheck::Error("x".into()), &ok));
        let err = Err("unknown tool `x`".to_string());
        assert!(result_meets(
            &ResultCheck::Error("unknown tool".into()),
            &err
        ));
        assert!(!result_meets(
            &ResultCheck::Contains("unknown".into()),
            &err
        ));
        let not_json = Ok("plain".to_string());
        assert!(!result_meets(&ResultCheck::Subset(json!({})), &not_json));
    }
}
