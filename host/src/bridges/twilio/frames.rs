//! Twilio Media Streams frames: JSON text, counters as strings. Twilio sends `connected`, one
//! `start`, then `media` (20 ms of μ-law at 8 kHz, base64), `dtmf`, echoes of our `mark`s and
//! finally `stop`; we send `media`, `mark` and `clear` (reference/protocols.md §4.4, Twilio's
//! "Media Streams - WebSocket Messages").

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::bridges::stream::wire;
use crate::bridges::stream::{Framing, StreamEvent};
use crate::call::leg::keypad_digit;

/// A frame from Twilio.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    Connected,
    Start {
        start: Start,
    },
    Media {
        media: Media,
    },
    Dtmf {
        dtmf: Dtmf,
    },
    Mark {
        mark: Mark,
    },
    Stop,
    /// Events added after this was written are not ours to act on.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Deserialize)]
pub struct Media {
    #[serde(default)]
    pub track: String,
    pub payload: String,
}

#[derive(Debug, Deserialize)]
pub struct Dtmf {
    pub digit: String,
}

#[derive(Debug, Deserialize)]
pub struct Mark {
    pub name: String,
}

/// Parse a text frame.
pub fn parse(frame: &Message) -> Result<Inbound, String> {
    match frame {
        Message::Text(text) => {
            serde_json::from_str(text).map_err(|e| format!("not a media-stream message: {e}"))
        }
        Message::Binary(_) => Err("a binary frame (Twilio sends only text)".into()),
        _ => Err("not a text frame".into()),
    }
}

impl MediaFormat {
    /// Twilio's bidirectional streams carry μ-law at 8 kHz, mono.
    pub fn is_ulaw_8k(&self) -> bool {
        self.encoding == "audio/x-mulaw" && self.sample_rate == 8000 && self.channels == 1
    }
}

/// Twilio's wire format for one stream.
#[derive(Debug, Clone)]
pub struct TwilioFraming {
    pub stream_sid: String,
}

impl Framing for TwilioFraming {
    fn rate(&self) -> u32 {
        8000
    }

    fn bytes_per_ms(&self) -> usize {
        8
    }

    fn encode(&self, pcm: &[i16]) -> Vec<u8> {
        wire::ulaw_encode(pcm)
    }

    fn decode(&self, audio: &[u8]) -> Vec<i16> {
        wire::ulaw_decode(audio)
    }

    // Twilio's frames come in order over the one socket: each is due as it comes.
    fn read(&mut self, frame: Message) -> Result<Vec<StreamEvent>, String> {
        let event = match parse(&frame)? {
            Inbound::Media { media } => {
                if !media.track.is_empty() && media.track != "inbound" {
                    return Ok(Vec::new());
                }
                StreamEvent::Audio(self.decode(&wire::payload(&media.payload)?))
            }
            Inbound::Dtmf { dtmf } => StreamEvent::Digit(
                keypad_digit(&dtmf.digit)
                    .ok_or_else(|| format!("`{}` is not a keypad digit", dtmf.digit))?,
            ),
            Inbound::Mark { mark } => StreamEvent::Mark(mark.name),
            Inbound::Stop => StreamEvent::Stop,
            Inbound::Connected | Inbound::Start { .. } | Inbound::Unknown => StreamEvent::Other,
        };
        Ok(vec![event])
    }

    fn media(&self, audio: &[u8]) -> Message {
        let frame = json!({
            "event": "media",
            "streamSid": self.stream_sid,
            "media": {"payload": B64.encode(audio)},
        });
        Message::text(frame.to_string())
    }

    fn mark(&self, name: &str) -> Message {
        let frame = json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}});
        Message::text(frame.to_string())
    }

    fn clear(&self) -> Message {
        Message::text(json!({"event": "clear", "streamSid": self.stream_sid}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s.to_string())
    }

    #[test]
    fn the_documented_frames() {
        let start = parse(&text(
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1",
            "accountSid":"AC1","callSid":"CA1","tracks":["inbound"],
            "customParameters":{"token":"t"},
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#,
        ))
        .unwrap();
        let Inbound::Start { start } = start else {
            panic!("{start:?}")
        };
        assert_eq!(start.call_sid, "CA1");
        assert_eq!(start.custom_parameters["token"], "t");
        assert!(start.media_format.is_ulaw_8k());
        assert!(matches!(
            parse(&text(
                r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#
            )),
            Ok(Inbound::Connected)
        ));

        let mut f = TwilioFraming {
            stream_sid: "MZ1".into(),
        };
        let payload = B64.encode([0xffu8; 160]);
        let media = format!(
            r#"{{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{{"track":"inbound","chunk":"2","timestamp":"40","payload":"{payload}"}}}}"#
        );
        assert_eq!(
            f.read(text(&media)),
            Ok(vec![StreamEvent::Audio(vec![0; 160])])
        );
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"5"}}"#;
        assert_eq!(f.read(text(dtmf)), Ok(vec![StreamEvent::Digit('5')]));
        let mark =
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"sb-1"}}"#;
        assert_eq!(
            f.read(text(mark)),
            Ok(vec![StreamEvent::Mark("sb-1".into())])
        );
        let stop = r#"{"event":"stop","sequenceNumber":"6","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#;
        assert_eq!(f.read(text(stop)), Ok(vec![StreamEvent::Stop]));
        assert_eq!(
            f.read(text(r#"{"event":"future"}"#)),
            Ok(vec![StreamEvent::Other])
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut f = TwilioFraming {
            stream_sid: "MZ1".into(),
        };
        for bad in [
            "not json",
            r#"{"no":"event"}"#,
            r#"{"event":"media","media":{"payload":"***"}}"#,
            r#"{"event":"media","media":{"payload":""}}"#,
            r#"{"event":"dtmf","dtmf":{"digit":"55"}}"#,
            r#"{"event":"mark"}"#,
        ] {
            assert!(f.read(text(bad)).is_err(), "{bad}");
        }
        assert!(f.read(Message::binary(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn what_we_send() {
        let f = TwilioFraming {
            stream_sid: "MZ1".into(),
        };
        let Message::Text(media) = f.media(&[0xff, 0x7f]) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(&media).unwrap();
        assert_eq!(v["event"], "media");
        assert_eq!(v["streamSid"], "MZ1");
        assert_eq!(v["media"]["payload"], B64.encode([0xff, 0x7f]));
        let Message::Text(clear) = f.clear() else {
            panic!()
        };
        assert_eq!(clear.as_str(), r#"{"event":"clear","streamSid":"MZ1"}"#);
    }
}
