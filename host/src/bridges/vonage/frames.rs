//! Vonage's media socket (developer.vonage.com, Voice API "WebSockets"). Vonage opens it and
//! sends first a text message, `{"event":"websocket:connected","content-type":
//! "audio/l16;rate=16000", …}` with the NCCO's `headers` at the top level; then binary
//! messages of 16-bit signed little-endian PCM, 20 ms each (640 bytes at 16 kHz), and text
//! events: `websocket:dtmf` (`digit`), `websocket:notify` (the `payload` of a `notify` we sent,
//! once the audio sent before it has played) and `websocket:cleared` (after our `clear`). We
//! send binary audio in the same format, `{"action":"notify","payload":{…}}` and
//! `{"action":"clear"}`. There is no stop message: Vonage closes the socket when the call ends.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::bridges::stream::{Framing, StreamEvent};
use crate::call::leg::keypad_digit;

/// The audio the NCCO asks for.
pub const CONTENT_TYPE: &str = "audio/l16;rate=16000";
pub const RATE: u32 = 16_000;
/// 20 ms of 16-bit PCM at 16 kHz: every audio message's size.
const FRAME_BYTES: usize = 640;

/// The socket's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub content_type: String,
    /// The `token` header our NCCO gave the socket.
    pub token: Option<String>,
}

/// Read the socket's first message.
pub fn connected(frame: &Message) -> Result<Connected, String> {
    let Message::Text(text) = frame else {
        return Err("the first message is not the text websocket:connected".into());
    };
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the first message is not JSON: {e}"))?;
    // Vonage's older sockets sent the headers and content-type with no event name.
    match v.get("event") {
        None => {}
        Some(event) if event == "websocket:connected" => {}
        Some(other) => return Err(format!("expected websocket:connected first, got {other}")),
    }
    let content_type = v["content-type"]
        .as_str()
        .ok_or("websocket:connected without a content-type")?
        .to_string();
    Ok(Connected {
        content_type,
        token: v["token"].as_str().map(str::to_string),
    })
}

/// Whether the socket carries what the NCCO asked for (the media type's case and spaces aside).
pub fn is_l16_16k(content_type: &str) -> bool {
    content_type
        .replace(' ', "")
        .eq_ignore_ascii_case(CONTENT_TYPE)
}

/// Vonage's wire format: L16 at 16 kHz in fixed 20 ms frames.
#[derive(Debug, Clone, Default)]
pub struct VonageFraming;

/// A `websocket:dtmf` digit: a string (as documented) or a number; some sockets nest it in
/// `dtmf`.
fn dtmf_digit(event: &Value) -> Option<char> {
    let digit = event.get("digit").or_else(|| event["dtmf"].get("digit"))?;
    match digit {
        Value::String(s) => keypad_digit(s),
        Value::Number(n) => keypad_digit(&n.to_string()),
        _ => None,
    }
}

impl Framing for VonageFraming {
    fn rate(&self) -> u32 {
        RATE
    }

    fn bytes_per_ms(&self) -> usize {
        32
    }

    fn encode(&self, pcm: &[i16]) -> Vec<u8> {
        pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn decode(&self, audio: &[u8]) -> Vec<i16> {
        audio
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    // Vonage's messages come in order over the one socket: each is due as it comes.
    fn read(&mut self, frame: Message) -> Result<Vec<StreamEvent>, String> {
        let text = match frame {
            Message::Binary(audio) => {
                if audio.is_empty() || !audio.len().is_multiple_of(2) {
                    return Err(format!(
                        "a binary message of {} bytes is not 16-bit PCM",
                        audio.len()
                    ));
                }
                return Ok(vec![StreamEvent::Audio(self.decode(&audio))]);
            }
            Message::Text(text) => text,
            _ => return Err("neither a text nor a binary message".into()),
        };
        let text = text.as_str();
        let event: Value = serde_json::from_str(text)
            .map_err(|e| format!("a text message that is not JSON: {e}"))?;
        let Some(name) = event.get("event").and_then(Value::as_str) else {
            return Err(format!("a text message without an event: {text}"));
        };
        Ok(match name {
            "websocket:dtmf" => {
                vec![StreamEvent::Digit(dtmf_digit(&event).ok_or_else(|| {
                    format!("a DTMF event without a keypad digit: {text}")
                })?)]
            }
            "websocket:notify" => match event["payload"]["name"].as_str() {
                Some(mark) => vec![StreamEvent::Mark(mark.to_string())],
                // Not a notify of ours.
                None => vec![StreamEvent::Other],
            },
            // `websocket:connected` again, `websocket:cleared`, and events added later.
            _ => vec![StreamEvent::Other],
        })
    }

    fn media(&self, audio: &[u8]) -> Message {
        Message::binary(audio.to_vec())
    }

    fn mark(&self, name: &str) -> Message {
        Message::text(json!({"action": "notify", "payload": {"name": name}}).to_string())
    }

    fn clear(&self) -> Message {
        Message::text(json!({"action": "clear"}).to_string())
    }

    fn frame_bytes(&self) -> Option<usize> {
        Some(FRAME_BYTES)
    }

    fn close_ends_call(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s.to_string())
    }

    #[test]
    fn the_first_message_brings_the_token_and_the_format() {
        let first = text(
            r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","token":"t1"}"#,
        );
        let c = connected(&first).unwrap();
        assert_eq!(c.token.as_deref(), Some("t1"));
        assert!(is_l16_16k(&c.content_type));
        // The older form, without an event name.
        let old = connected(&text(r#"{"content-type":"audio/l16;rate=8000"}"#)).unwrap();
        assert_eq!(old.token, None);
        assert!(!is_l16_16k(&old.content_type));
        assert!(is_l16_16k("audio/L16; rate=16000"));
        for bad in [
            text("garbage"),
            text(r#"{"event":"websocket:dtmf","digit":"1"}"#),
            text(r#"{"event":"websocket:connected"}"#),
            Message::binary(vec![0; 640]),
        ] {
            assert!(connected(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_documented_messages() {
        let mut f = VonageFraming;
        let pcm: Vec<i16> = (0..320).map(|i| (i * 100 - 16000) as i16).collect();
        let audio = f.encode(&pcm);
        assert_eq!(audio.len(), 640);
        assert_eq!(&audio[..2], &(-16000i16).to_le_bytes());
        assert_eq!(
            f.read(Message::binary(audio)),
            Ok(vec![StreamEvent::Audio(pcm)])
        );
        let dtmf = r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#;
        assert_eq!(f.read(text(dtmf)), Ok(vec![StreamEvent::Digit('5')]));
        let nested = r##"{"event":"websocket:dtmf","dtmf":{"digit":"#","duration":260}}"##;
        assert_eq!(f.read(text(nested)), Ok(vec![StreamEvent::Digit('#')]));
        let notify = r#"{"event":"websocket:notify","payload":{"name":"sb-3"}}"#;
        assert_eq!(
            f.read(text(notify)),
            Ok(vec![StreamEvent::Mark("sb-3".into())])
        );
        for other in [
            r#"{"event":"websocket:cleared"}"#,
            r#"{"event":"websocket:notify","payload":{"reply":"x"}}"#,
            r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000"}"#,
            r#"{"event":"websocket:future"}"#,
        ] {
            assert_eq!(f.read(text(other)), Ok(vec![StreamEvent::Other]), "{other}");
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut f = VonageFraming;
        for bad in [
            Message::binary(vec![1, 2, 3]),
            Message::binary(Vec::new()),
            text("not json"),
            text(r#"{"no":"event"}"#),
            text(r#"{"event":"websocket:dtmf","digit":"55"}"#),
            text(r#"{"event":"websocket:dtmf"}"#),
        ] {
            assert!(f.read(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn what_we_send() {
        let f = VonageFraming;
        assert_eq!(f.media(&[1, 2]), Message::binary(vec![1, 2]));
        let Message::Text(notify) = f.mark("sb-1") else {
            panic!()
        };
        let v: Value = serde_json::from_str(&notify).unwrap();
        assert_eq!(v, json!({"action": "notify", "payload": {"name": "sb-1"}}));
        let Message::Text(clear) = f.clear() else {
            panic!()
        };
        assert_eq!(clear.as_str(), r#"{"action":"clear"}"#);
        assert_eq!(f.frame_bytes(), Some(640));
        assert_eq!(f.bytes_per_ms() * 20, 640);
    }
}
