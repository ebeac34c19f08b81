//! Call Control webhooks: JSON `{"data": {"event_type", "id", "occurred_at", "payload",
//! "record_type": "event"}, "meta": {...}}`. The bridge acts on `call.initiated` of an incoming
//! call, whose payload names the call (`call_control_id`), the parties (`from`, `to`), the
//! Call Control App (`connection_id`) and the SIP headers passed on (`custom_headers`) —
//! Telnyx's API definition (`CallInitiated`, as generated into team-telnyx/telnyx-python).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Webhook {
    pub data: Event,
}

#[derive(Debug, Deserialize)]
pub struct Event {
    pub event_type: String,
    /// Its shape depends on the event: read as a [`Payload`] for `call.initiated` only.
    #[serde(default)]
    pub payload: serde_json::Value,
}

/// What the bridge reads of a call event's payload (every field is optional in Telnyx's
/// schema, and may be null).
#[derive(Debug, Deserialize)]
pub struct Payload {
    pub call_control_id: Option<String>,
    pub connection_id: Option<String>,
    /// `incoming` or `outgoing`.
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub custom_headers: Option<Vec<Header>>,
}

#[derive(Debug, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A Call Control id as Telnyx makes them (`v3:…`): it goes into REST paths as it is, so
/// nothing else is let through.
pub fn is_call_control_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_initiated_event() {
        // As Telnyx delivers it (fields beyond the bridge's are passed over).
        let body = r#"{"data":{"event_type":"call.initiated","id":"b97d4d5e-6fe7-4432-911f-79637bf6ebb7",
            "occurred_at":"2025-11-23T03:30:00.076316Z","payload":{
            "call_control_id":"v3:2EC-70CTEjlUq3tDM0CxKXIt5-5N4iP4wo7_-PfH-qub97Sk4EqO5w",
            "call_leg_id":"b0e6224c","call_session_id":"b0e6141e","caller_id_name":"+18124040851",
            "calling_party_type":"pstn","client_state":null,"connection_codecs":"PCMA,PCMU",
            "connection_id":"2811212257810187875","direction":"incoming","from":"+18124040851",
            "offered_codecs":"PCMU,G729","start_time":"2025-11-23T03:30:00.076316Z",
            "state":"parked","to":"+13057864498",
            "custom_headers":[{"name":"X-Tenant","value":"acme"}]},
            "record_type":"event"},"meta":{"attempt":1,"delivered_to":"https://example.com/telnyx/webhook"}}"#;
        let w: Webhook = serde_json::from_str(body).unwrap();
        assert_eq!(w.data.event_type, "call.initiated");
        let p: Payload = serde_json::from_value(w.data.payload).unwrap();
        assert!(is_call_control_id(p.call_control_id.as_deref().unwrap()));
        assert_eq!(p.direction.as_deref(), Some("incoming"));
        assert_eq!(p.connection_id.as_deref(), Some("2811212257810187875"));
        assert_eq!(
            (p.from.as_deref(), p.to.as_deref()),
            (Some("+18124040851"), Some("+13057864498"))
        );
        let headers = p.custom_headers.unwrap();
        assert_eq!(
            (headers[0].name.as_str(), headers[0].value.as_str()),
            ("X-Tenant", "acme")
        );
        // Nulls are absent values.
        let p: Payload = serde_json::from_str(r#"{"to":"2000","custom_headers":null}"#).unwrap();
        assert!(p.custom_headers.is_none() && p.from.is_none());
        // Other events have other payloads.
        let hangup: Webhook = serde_json::from_str(
            r#"{"data":{"event_type":"call.hangup","payload":{"hangup_cause":"normal_clearing"}}}"#,
        )
        .unwrap();
        assert_eq!(hangup.data.event_type, "call.hangup");
        assert!(serde_json::from_str::<Webhook>(r#"{"data":{}}"#).is_err());
    }

    #[test]
    fn call_control_ids() {
        assert!(is_call_control_id("v3:abc-_.9"));
        assert!(!is_call_control_id(""));
        assert!(!is_call_control_id("v3:../../calls"));
        assert!(!is_call_control_id("v3:a?b"));
    }
}
