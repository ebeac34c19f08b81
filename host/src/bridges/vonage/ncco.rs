//! The NCCOs the bridge answers with (developer.vonage.com, Voice API "NCCO reference"): a
//! `connect` of the call to our media socket, a spoken refusal, and the NCCO a transfer moves
//! the call to.

use serde_json::{Value, json};

use super::frames::CONTENT_TYPE;

/// Connect the call to our media socket at `uri` as 16 kHz L16. `token` travels as a header
/// and comes back in the socket's first message (headers are limited to 512 bytes; a token is
/// 32); Vonage reports the socket leg's events (failed, unanswered, disconnected) to
/// `event_url`, with the headers.
pub fn connect_socket(uri: &str, token: &str, event_url: &str) -> Value {
    json!([{
        "action": "connect",
        "eventUrl": [event_url],
        "endpoint": [{
            "type": "websocket",
            "uri": uri,
            "content-type": CONTENT_TYPE,
            "headers": {"token": token},
        }],
    }])
}

/// Refuse the call. An NCCO has no reject action, and a call ends when its NCCO does: the
/// caller hears why, then the call ends.
pub fn refuse(busy: bool) -> Value {
    let text = if busy {
        "The line is busy. Please call again later."
    } else {
        "This number cannot take your call."
    };
    json!([{"action": "talk", "text": text}])
}

/// Hand the caller to `target`: a SIP URI, or a phone number (`tel:` and `+` dropped: Vonage
/// writes E.164 numbers as digits).
pub fn transfer_to(target: &str) -> Value {
    let endpoint = if target.starts_with("sip:") || target.starts_with("sips:") {
        json!({"type": "sip", "uri": target})
    } else {
        let number = target.strip_prefix("tel:").unwrap_or(target);
        json!({"type": "phone", "number": number.trim_start_matches('+')})
    };
    json!([{"action": "connect", "endpoint": [endpoint]}])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_connect_as_documented() {
        let ncco = connect_socket(
            "wss://agents.example.com/vonage/media",
            "abc",
            "https://agents.example.com/vonage/event",
        );
        assert_eq!(
            ncco,
            json!([{"action": "connect",
                    "eventUrl": ["https://agents.example.com/vonage/event"],
                    "endpoint": [{"type": "websocket",
                                  "uri": "wss://agents.example.com/vonage/media",
                                  "content-type": "audio/l16;rate=16000",
                                  "headers": {"token": "abc"}}]}])
        );
    }

    #[test]
    fn refusals_and_transfers() {
        assert_eq!(refuse(true)[0]["action"], "talk");
        assert!(
            refuse(false)[0]["text"]
                .as_str()
                .unwrap()
                .contains("cannot")
        );
        assert_eq!(
            transfer_to("sip:desk@pbx.example.com"),
            json!([{"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:desk@pbx.example.com"}]}])
        );
        assert_eq!(
            transfer_to("tel:+4930123")[0]["endpoint"][0],
            json!({"type": "phone", "number": "4930123"})
        );
        assert_eq!(transfer_to("+4930123"), transfer_to("4930123"));
    }
}
