//! Conversions between the media layer's PCM frames and the model's audio formats.

use crate::media::g711;
use crate::model::AudioFormat;

/// Caller audio (PCM at the format's rate) → bytes for the model.
pub fn encode_for_model(samples: &[i16], format: AudioFormat) -> Vec<u8> {
    match format {
        AudioFormat::Pcmu8k => samples.iter().map(|&s| g711::ulaw_encode(s)).collect(),
        AudioFormat::Pcma8k => samples.iter().map(|&s| g711::alaw_encode(s)).collect(),
        AudioFormat::Pcm16 { .. } => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
    }
}

/// Model audio bytes → PCM at `format.sample_rate()`.
pub fn decode_from_model(bytes: &[u8], format: AudioFormat) -> Vec<i16> {
    match format {
        AudioFormat::Pcmu8k => bytes.iter().map(|&b| g711::ulaw_decode(b)).collect(),
        AudioFormat::Pcma8k => bytes.iter().map(|&b| g711::alaw_decode(b)).collect(),
        AudioFormat::Pcm16 { .. } => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let pcm: Vec<i16> = (-100..100).map(|i| i * 300).collect();
        let f = AudioFormat::Pcm16 { rate: 24000 };
        assert_eq!(decode_from_model(&encode_for_model(&pcm, f), f), pcm);
        // G.711 bytes survive decode + encode unchanged (what "passthrough" relies on).
        let ulaw: Vec<u8> = (0..=255u8).filter(|&b| b != 0x7f).collect();
        let pcm = decode_from_model(&ulaw, AudioFormat::Pcmu8k);
        assert_eq!(encode_for_model(&pcm, AudioFormat::Pcmu8k), ulaw);
    }
}
