//! Telnyx media-streaming frames: JSON text, snake_case, counters as strings. Telnyx sends
//! `connected`, one `start` (`stream_id`, `start.call_control_id`, `start.client_state`,
//! `start.media_format`), then `media` (the base64 RTP payload, no header), `dtmf`, echoes of
//! our `mark`s, `error` and `stop`, in no guaranteed order; we send `media`, `mark` and `clear`
//! and need no stream id on them ("Media Streaming over WebSockets",
//! developers.telnyx.com/docs/voice/programmable-voice/media-streaming).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::reorder::Reorder;
use crate::bridges::stream::wire;
use crate::bridges::stream::{Framing, StreamEvent};
use crate::call::leg::keypad_digit;

/// A frame from Telnyx.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    Connected,
    Start {
        sequence_number: String,
        stream_id: String,
        start: Start,
    },
    Media {
        sequence_number: String,
        media: Media,
    },
    Dtmf {
        sequence_number: String,
        dtmf: Dtmf,
    },
    Mark {
        sequence_number: String,
        mark: Mark,
    },
    Error {
        #[serde(default)]
        payload: serde_json::Value,
    },
    Stop {
        sequence_number: String,
    },
    /// Events added after this was written are not ours to act on.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
pub struct Start {
    pub call_control_id: String,
    /// The `client_state` of the command that started the stream (base64).
    #[serde(default)]
    pub client_state: Option<String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Deserialize)]
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
            serde_json::from_str(text).map_err(|e| format!("not a media-streaming frame: {e}"))
        }
        Message::Binary(_) => Err("a binary frame (Telnyx sends only text)".into()),
        _ => Err("not a text frame".into()),
    }
}

/// A frame's `sequence_number`.
pub fn sequence(number: &str) -> Result<u64, String> {
    number
        .parse()
        .map_err(|_| format!("sequence_number `{number}` is not a count"))
}

impl MediaFormat {
    /// PCMU at 8 kHz, mono (older documents name the encoding `audio/x-mulaw`).
    pub fn is_pcmu_8k(&self) -> bool {
        matches!(self.encoding.as_str(), "PCMU" | "audio/x-mulaw")
            && self.sample_rate == 8000
            && self.channels == 1
    }
}

/// Telnyx's wire format for one stream, in RTP mode with PCMU both ways.
#[derive(Debug, Clone)]
pub struct TelnyxFraming {
    reorder: Reorder,
}

impl TelnyxFraming {
    /// The framing of a stream whose `start` was numbered `start`.
    pub fn after(start: u64) -> TelnyxFraming {
        TelnyxFraming {
            reorder: Reorder::after(start),
        }
    }
}

impl Framing for TelnyxFraming {
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

    /// Telnyx plays 20 ms to 30 s a message: the tail of an answer goes out as a whole 20 ms.
    fn frame_bytes(&self) -> Option<usize> {
        Some(160)
    }

    fn read(&mut self, frame: Message) -> Result<Vec<StreamEvent>, String> {
        let (seq, event) = match parse(&frame)? {
            Inbound::Media {
                sequence_number,
                media,
            } => {
                let seq = sequence(&sequence_number)?;
                // Only the caller's track is asked for; anything else is not the caller.
                let event = if media.track.is_empty() || media.track == "inbound" {
                    StreamEvent::Audio(self.decode(&wire::payload(&media.payload)?))
                } else {
                    StreamEvent::Other
                };
                (seq, event)
            }
            Inbound::Dtmf {
                sequence_number,
                dtmf,
            } => {
                let digit = keypad_digit(&dtmf.digit)
                    .ok_or_else(|| format!("`{}` is not a keypad digit", dtmf.digit))?;
                (sequence(&sequence_number)?, StreamEvent::Digit(digit))
            }
            Inbound::Mark {
                sequence_number,
                mark,
            } => (sequence(&sequence_number)?, StreamEvent::Mark(mark.name)),
            Inbound::Stop { sequence_number } => (sequence(&sequence_number)?, StreamEvent::Stop),
            Inbound::Error { payload } => {
                tracing::warn!(%payload, "Telnyx reports a media-streaming error");
                return Ok(Vec::new());
            }
            Inbound::Connected | Inbound::Start { .. } | Inbound::Unknown => {
                return Ok(Vec::new());
            }
        };
        Ok(self.reorder.push(seq, event))
    }

    fn media(&self, audio: &[u8]) -> Message {
        let frame = json!({"event": "media", "media": {"payload": B64.encode(audio)}});
        Message::text(frame.to_string())
    }

    fn mark(&self, name: &str) -> Message {
        Message::text(json!({"event": "mark", "mark": {"name": name}}).to_string())
    }

    fn clear(&self) -> Message {
        Message::text(json!({"event": "clear"}).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s.to_string())
    }

    fn media(seq: u64, byte: u8) -> Message {
        let payload = B64.encode([byte; 160]);
        text(&format!(
            r#"{{"event":"media","sequence_number":"{seq}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{payload}"}},"stream_id":"32DE0DEA"}}"#,
            seq - 1,
            (seq - 2) * 20
        ))
    }

    #[test]
    fn the_documented_frames() {
        assert!(matches!(
            parse(&text(r#"{"event":"connected","version":"1.0.0"}"#)),
            Ok(Inbound::Connected)
        ));
        let start = parse(&text(
            r#"{"event":"start","sequence_number":"1","start":{"user_id":"3E6F995F",
            "call_control_id":"v3:abc","call_session_id":"ff55a038","from":"+13122010094",
            "to":"+13122123456","tags":["TAG1"],"client_state":"aGF2ZQ==",
            "media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}},
            "stream_id":"32DE0DEA-53CB-4B21-89A4-9E1819C043BC"}"#,
        ))
        .unwrap();
        let Inbound::Start {
            sequence_number,
            stream_id,
            start,
        } = start
        else {
            panic!("{start:?}")
        };
        assert_eq!(
            (sequence_number.as_str(), stream_id.as_str()),
            ("1", "32DE0DEA-53CB-4B21-89A4-9E1819C043BC")
        );
        assert_eq!(start.call_control_id, "v3:abc");
        assert_eq!(start.client_state.as_deref(), Some("aGF2ZQ=="));
        assert!(start.media_format.is_pcmu_8k());

        let mut f = TelnyxFraming::after(1);
        assert_eq!(
            f.read(media(2, 0xff)),
            Ok(vec![StreamEvent::Audio(vec![0; 160])])
        );
        let dtmf = r#"{"event":"dtmf","stream_id":"32DE0DEA","occurred_at":"2025-06-05T08:54:19.698408Z","sequence_number":"3","dtmf":{"digit":"1"}}"#;
        assert_eq!(f.read(text(dtmf)), Ok(vec![StreamEvent::Digit('1')]));
        let mark = r#"{"event":"mark","stream_id":"32DE0DEA","sequence_number":"4","mark":{"name":"sb-1"}}"#;
        assert_eq!(
            f.read(text(mark)),
            Ok(vec![StreamEvent::Mark("sb-1".into())])
        );
        let error = r#"{"event":"error","payload":{"code":100003,"title":"malformed_frame","detail":"Received frame was not formed correctly"},"stream_id":"32DE0DEA"}"#;
        assert_eq!(f.read(text(error)), Ok(vec![]));
        let stop = r#"{"event":"stop","sequence_number":"5","stop":{"user_id":"3E6F995F","call_control_id":"v3:abc"},"stream_id":"32DE0DEA"}"#;
        assert_eq!(f.read(text(stop)), Ok(vec![StreamEvent::Stop]));
        assert_eq!(f.read(text(r#"{"event":"future"}"#)), Ok(vec![]));
    }

    #[test]
    fn frames_out_of_order_come_out_in_order() {
        let mut f = TelnyxFraming::after(1);
        assert_eq!(f.read(media(3, 0x00)), Ok(vec![]));
        let released = f.read(media(2, 0x80)).unwrap();
        let firsts: Vec<i16> = released
            .iter()
            .map(|e| match e {
                StreamEvent::Audio(pcm) => pcm[0],
                other => panic!("{other:?}"),
            })
            .collect();
        let (two, three) = (wire::ulaw_decode(&[0x80])[0], wire::ulaw_decode(&[0x00])[0]);
        assert_ne!(two, three);
        assert_eq!(firsts, vec![two, three]);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut f = TelnyxFraming::after(1);
        for bad in [
            "not json",
            r#"{"no":"event"}"#,
            r#"{"event":"media","sequence_number":"2","media":{"payload":"***"}}"#,
            r#"{"event":"media","sequence_number":"2","media":{"payload":""}}"#,
            r#"{"event":"media","media":{"payload":"/38="}}"#,
            r#"{"event":"media","sequence_number":"two","media":{"payload":"/38="}}"#,
            r#"{"event":"dtmf","sequence_number":"2","dtmf":{"digit":"55"}}"#,
            r#"{"event":"mark","sequence_number":"2"}"#,
        ] {
            assert!(f.read(text(bad)).is_err(), "{bad}");
        }
        assert!(f.read(Message::binary(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn what_we_send() {
        let f = TelnyxFraming::after(1);
        let Message::Text(media) = f.media(&[0xff, 0x7f]) else {
            panic!()
        };
        assert_eq!(
            media.as_str(),
            r#"{"event":"media","media":{"payload":"/38="}}"#
        );
        let Message::Text(mark) = f.mark("sb-1") else {
            panic!()
        };
        assert_eq!(mark.as_str(), r#"{"event":"mark","mark":{"name":"sb-1"}}"#);
        let Message::Text(clear) = f.clear() else {
            panic!()
        };
        assert_eq!(clear.as_str(), r#"{"event":"clear"}"#);
    }
}
