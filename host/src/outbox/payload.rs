//! What each call event becomes on the wire: `{type, timestamp, data}` (Standard Webhooks'
//! payload shape), with a `webhook-id` that names the event, so every attempt and resend of it
//! carries the same id.

use serde_json::{Value, json};

use super::config::EventType;
use crate::domain::events::{CallEvent, EventKind, HANDED_OFF};
use crate::store::CallDetail;
use crate::store::campaigns::CampaignProgress;

/// One event to send, before it is queued per webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event_type: EventType,
    /// The `webhook-id`.
    pub id: String,
    /// The call's id (a campaign's, for its progress): its messages are delivered in order.
    pub call_id: String,
    pub at_ms: u64,
    pub data: Value,
}

impl Message {
    fn new(event: &CallEvent, event_type: EventType, data: Value) -> Message {
        let suffix = match event_type {
            // Both follow from the `ended` event, whose own id is call.ended's.
            EventType::CallOutcome => "-outcome",
            EventType::RecordingReady => "-recording",
            _ => "",
        };
        let mut data = data;
        if let Some(o) = data.as_object_mut() {
            o.insert("call_id".into(), Value::String(event.call_id.clone()));
        }
        Message {
            event_type,
            id: format!("msg_{}_{}{suffix}", event.call_id, event.seq),
            call_id: event.call_id.clone(),
            at_ms: event.at_ms,
            data,
        }
    }

    /// A campaign's progress (`campaign.progress`): its messages go in order per campaign; the
    /// id names the campaign's state, so the same progress sent twice is one message.
    pub fn campaign(progress: &CampaignProgress) -> Message {
        let c = &progress.campaign;
        Message {
            event_type: EventType::CampaignProgress,
            id: format!(
                "msg_{}_{}_{}_{}",
                c.id,
                c.state.as_str(),
                progress.done,
                progress.attempts
            ),
            call_id: c.id.clone(),
            at_ms: c.updated_at_ms.max(0) as u64,
            data: json!({
                "campaign_id": c.id,
                "name": c.name,
                "state": c.state,
                "contacts": progress.contacts,
                "pending": progress.pending,
                "dialing": progress.dialing,
                "done": progress.done,
                "attempts": progress.attempts,
                "outcomes": progress.outcomes,
            }),
        }
    }

    /// The request body.
    pub fn body(&self) -> String {
        json!({
            "type": self.event_type.as_str(),
            "timestamp": rfc3339(self.at_ms),
            "data": self.data,
        })
        .to_string()
    }
}

/// Whether `event` is the call's end, whose messages need the call's record (see [`ended`]).
pub fn is_ended(event: &CallEvent) -> bool {
    matches!(event.kind, EventKind::Ended { .. })
}

/// The message of an event that needs nothing but itself.
pub fn direct(event: &CallEvent) -> Option<Message> {
    let (event_type, data) = match &event.kind {
        EventKind::Created {
            direction,
            caller,
            callee,
            transport,
            agent,
            agent_version,
            metadata,
            ..
        } => (
            EventType::CallStarted,
            json!({"direction": direction, "caller": caller, "callee": callee,
                   "transport": transport, "agent": agent, "agent_version": agent_version,
                   "metadata": metadata}),
        ),
        EventKind::Answered { codec, model } => (
            EventType::CallAnswered,
            json!({"codec": codec, "model": model}),
        ),
        EventKind::Transfer {
            target,
            status,
            detail,
        } if status == "completed" => (
            EventType::CallTransferred,
            json!({"target": target, "detail": detail}),
        ),
        EventKind::Handoff {
            from, to, status, ..
        } if status == HANDED_OFF => (
            EventType::CallTransferred,
            json!({"target": to, "from": from, "detail": "handed to another agent"}),
        ),
        _ => return None,
    };
    Some(Message::new(event, event_type, data))
}

/// The messages of the `ended` event: `call.ended` with the call record's transcript and usage
/// (`detail`, when the store could be read), then `call.outcome` when the agent set one, then
/// `recording.ready` when the call was recorded.
pub fn ended(event: &CallEvent, detail: Option<&CallDetail>) -> Vec<Message> {
    let EventKind::Ended {
        reason,
        abnormal,
        outcome,
    } = &event.kind
    else {
        return Vec::new();
    };
    let mut data = json!({"reason": reason, "abnormal": abnormal, "outcome": outcome});
    if let Some(d) = detail {
        let call = &d.call;
        let transcript: Vec<Value> = d
            .transcript
            .iter()
            .map(|l| json!({"role": l.role, "text": l.text, "at_ms": l.at_ms}))
            .collect();
        let extra = json!({
            "direction": call.direction,
            "caller": call.caller,
            "callee": call.callee,
            "agent": call.agent,
            "started_at_ms": call.started_at_ms,
            "answered_at_ms": call.answered_at_ms,
            "ended_at_ms": event.at_ms,
            "transcript": transcript,
            "usage": {
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "items": d.usage,
            },
        });
        if let (Some(o), Value::Object(extra)) = (data.as_object_mut(), extra) {
            o.extend(extra);
        }
    }
    let mut out = vec![Message::new(event, EventType::CallEnded, data)];
    if let Some(outcome) = outcome {
        out.push(Message::new(
            event,
            EventType::CallOutcome,
            json!({"outcome": outcome}),
        ));
    }
    if detail.is_some_and(|d| d.call.recording.is_some()) {
        out.push(Message::new(
            event,
            EventType::RecordingReady,
            json!({"recording": format!("/v1/calls/{}/recording", event.call_id)}),
        ));
    }
    out
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let at = i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_750_287_078_123), "2025-06-18T22:51:18.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn an_ended_event_with_an_outcome_gives_three_ids_of_one_event() {
        let event = CallEvent {
            call_id: "c1".into(),
            seq: 9,
            at_ms: 1_000,
            kind: EventKind::Ended {
                reason: "caller hung up".into(),
                abnormal: false,
                outcome: Some("booked".into()),
            },
        };
        let messages = ended(&event, None);
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["msg_c1_9", "msg_c1_9-outcome"]);
        let body: Value = serde_json::from_str(&messages[1].body()).unwrap();
        assert_eq!(body["type"], "call.outcome");
        assert_eq!(body["data"]["outcome"], "booked");
        assert_eq!(body["data"]["call_id"], "c1");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:01.000Z");
    }
}
