//! Opt-outs: a called party who says "stop calling me", presses the campaign's opt-out key, or
//! whose agent calls `call.do-not-call` goes on the do-not-call list at once, while the call is
//! still up. Watches every call's events on the bus.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use super::Clock;
use super::contacts::e164;
use crate::domain::Role;
use crate::domain::events::{CallEvent, EventKind};
use crate::store::campaigns::CampaignStore;
use crate::store::number_key;

/// Words that mean "do not call me again", matched in the called party's final transcripts.
const PHRASES: &[&str] = &[
    "stop calling",
    "do not call",
    "don't call",
    "dont call",
    "never call",
    "remove me from",
    "take me off",
    "put me on your do not call",
];

/// Whether `text` asks not to be called again.
pub(super) fn asks_not_to_be_called(text: &str) -> bool {
    let words: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    PHRASES.iter().any(|p| words.contains(p))
}

/// The far party of a call and the key that opts them out, if their campaign has one.
struct Party {
    number: Option<String>,
    key: Option<char>,
}

fn party(
    direction: &str,
    caller: &str,
    callee: &str,
    metadata: Option<&serde_json::Value>,
) -> Party {
    let campaign = metadata.and_then(|m| m.get("campaign"));
    let number = campaign
        .and_then(|c| c["number"].as_str())
        .map(String::from)
        .or_else(|| {
            let far = if direction == "outbound" {
                callee
            } else {
                caller
            };
            e164(&format!("+{}", number_key(far)))
        });
    let key = campaign
        .and_then(|c| c["opt_out_key"].as_str())
        .and_then(|k| k.chars().next());
    Party { number, key }
}

pub(super) async fn listen(
    mut events: broadcast::Receiver<CallEvent>,
    store: Arc<dyn CampaignStore>,
    clock: Clock,
) {
    let mut calls: HashMap<String, Party> = HashMap::new();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "opt-out listener missed call events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let how = match &event.kind {
            EventKind::Created {
                direction,
                caller,
                callee,
                metadata,
                ..
            } => {
                let p = party(direction, caller, callee, metadata.as_ref());
                calls.insert(event.call_id.clone(), p);
                continue;
            }
            EventKind::Ended { .. } => {
                calls.remove(&event.call_id);
                continue;
            }
            EventKind::Transcript {
                role: Role::Caller,
                text,
            } if asks_not_to_be_called(text) => "speech",
            EventKind::Dtmf { digits, .. }
                if calls
                    .get(&event.call_id)
                    .and_then(|p| p.key)
                    .is_some_and(|k| digits.contains(k)) =>
            {
                "keypad"
            }
            EventKind::OptOut { source } => source.as_str(),
            _ => continue,
        };
        let Some(number) = calls.get(&event.call_id).and_then(|p| p.number.clone()) else {
            tracing::warn!(call_id = %event.call_id, how, "opt-out without an E.164 number");
            continue;
        };
        let source = format!("call:{}", event.call_id);
        match store
            .dnc_add(vec![number.clone()], &source, clock.now_ms())
            .await
        {
            Ok(_) => {
                tracing::info!(call_id = %event.call_id, number, how, "put on the do-not-call list")
            }
            Err(e) => tracing::error!(call_id = %event.call_id, error = %e, "storing an opt-out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_out_phrases_are_found_in_what_the_party_says() {
        assert!(asks_not_to_be_called("Please, STOP calling me!"));
        assert!(asks_not_to_be_called("Don't call this number again."));
        assert!(asks_not_to_be_called("take me off your list"));
        assert!(!asks_not_to_be_called("I will call you back"));
        assert!(!asks_not_to_be_called(
            "I will stop by; do call me tomorrow"
        ));
    }

    #[test]
    fn the_far_party_is_the_campaign_contact_or_the_other_side() {
        let meta = serde_json::json!({"campaign": {"number": "+12125550100", "opt_out_key": "9"}});
        let p = party("outbound", "+15550000", "sip:+12125550100@pbx", Some(&meta));
        assert_eq!(
            (p.number.as_deref(), p.key),
            (Some("+12125550100"), Some('9'))
        );
        let inbound = party("inbound", "sip:+447700900123@carrier", "2000", None);
        assert_eq!(inbound.number.as_deref(), Some("+447700900123"));
        assert_eq!(party("inbound", "sip:1001@pbx", "2000", None).number, None);
    }
}
