//! What carriers' JSON media-stream frames have in common: audio as base64 payloads, and μ-law
//! at 8 kHz (the G.711 that Twilio and Telnyx stream). Keypad digits are
//! [`keypad_digit`](crate::call::leg::keypad_digit).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::media::g711;

/// The audio of a media frame's base64 payload; an empty one is an error too.
pub fn payload(base64: &str) -> Result<Vec<u8>, String> {
    let audio = B64
        .decode(base64.as_bytes())
        .map_err(|e| format!("media payload is not base64: {e}"))?;
    if audio.is_empty() {
        return Err("an empty media payload".into());
    }
    Ok(audio)
}

/// μ-law bytes of PCM at 8 kHz.
pub fn ulaw_encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| g711::ulaw_encode(s)).collect()
}

/// PCM of μ-law bytes.
pub fn ulaw_decode(audio: &[u8]) -> Vec<i16> {
    audio.iter().map(|&b| g711::ulaw_decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(payload("/38="), Ok(vec![0xff, 0x7f]));
        assert!(payload("***").is_err());
        assert!(payload("").is_err());
        assert_eq!(ulaw_decode(&ulaw_encode(&[0, 0])), vec![0, 0]);
    }
}
