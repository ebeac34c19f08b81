//! Twilio's wire formats as a caller's side writes and reads them: the signed voice webhook
//! form, the TwiML `<Connect><Stream>` answer and the Media Streams messages Twilio sends.
//! Shared by the fake Twilio (support/fake_twilio.rs) and the benchmark's load generator
//! (tests/bin/twilio_load.rs), which mounts this file; sources are cited in fake_twilio.rs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

pub fn hmac_sha1_b64(key: &str, text: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    B64.encode(ring::hmac::sign(&key, text.as_bytes()).as_ref())
}

/// `X-Twilio-Signature` for a form POST to `url` (§4.2).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let text = sorted
        .iter()
        .fold(url.to_string(), |t, (n, v)| format!("{t}{n}{v}"));
    hmac_sha1_b64(auth_token, &text)
}

/// A Twilio SID: `prefix` and 32 hex digits, unique across processes and calls.
pub fn sid(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n: u128 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        ^ (u128::from(std::process::id()) << 64)
        ^ (u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) << 96);
    format!("{prefix}{n:032x}")
}

/// The stream URL and parameters of a `<Connect><Stream>` TwiML answer.
pub fn stream_of(twiml: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[at..].find('"')? + at;
        Some(unescape(&tag[at..end]))
    };
    let stream_at = twiml.find("<Stream ")?;
    let tag_end = twiml[stream_at..].find('>')? + stream_at;
    let url = attr(&twiml[stream_at..tag_end], "url")?;
    let mut params = Vec::new();
    let mut rest = &twiml[tag_end..];
    while let Some(p) = rest.find("<Parameter ") {
        let end = rest[p..].find("/>")? + p;
        let tag = &rest[p..end];
        params.push((attr(tag, "name")?, attr(tag, "value")?));
        rest = &rest[end..];
    }
    Some((url, params))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub fn form(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn encode_form(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// The form of an inbound call's voice webhook (§4.1).
pub fn voice_params(
    account_sid: &str,
    call_sid: &str,
    from: &str,
    to: &str,
) -> Vec<(String, String)> {
    form(&[
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("Caller", from),
        ("Direction", "inbound"),
        ("From", from),
        ("To", to),
    ])
}

/// One call's stream as Twilio writes it (§4.4, "Twilio → our server"); counters are strings
/// and every message after `connected` carries the sequence number and `streamSid`.
pub struct StreamMessages {
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    seq: u64,
}

impl StreamMessages {
    pub fn new(account_sid: &str, call_sid: &str) -> StreamMessages {
        StreamMessages {
            stream_sid: sid("MZ"),
            account_sid: account_sid.to_string(),
            call_sid: call_sid.to_string(),
            seq: 0,
        }
    }

    fn next(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    pub fn connected(&self) -> String {
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
    }

    /// `start` with the TwiML's `<Parameter>`s as custom parameters.
    pub fn start(&mut self, parameters: &[(String, String)]) -> String {
        let custom: Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "event": "start", "sequenceNumber": self.next(), "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid,
                "tracks": ["inbound"], "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        })
        .to_string()
    }

    /// The `chunk`th (from 1) 20 ms frame of the caller's μ-law audio.
    pub fn media(&mut self, chunk: u64, frame: &[u8]) -> String {
        json!({
            "event": "media", "sequenceNumber": self.next(), "streamSid": self.stream_sid,
            "media": {"track": "inbound", "chunk": chunk.to_string(),
                      "timestamp": (chunk * 20).to_string(), "payload": B64.encode(frame)},
        })
        .to_string()
    }

    /// A mark echoed once the audio before it has played.
    pub fn mark(&mut self, name: &str) -> String {
        json!({"event": "mark", "sequenceNumber": self.next(), "streamSid": self.stream_sid,
               "mark": {"name": name}})
        .to_string()
    }

    pub fn dtmf(&mut self, digit: char) -> String {
        json!({"event": "dtmf", "sequenceNumber": self.next(), "streamSid": self.stream_sid,
               "dtmf": {"track": "inbound_track", "digit": digit.to_string()}})
        .to_string()
    }

    pub fn stop(&mut self) -> String {
        json!({"event": "stop", "sequenceNumber": self.next(), "streamSid": self.stream_sid,
               "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
        .to_string()
    }
}
