//! Audio helpers for the model tests and fakes: tones, G.711 μ-law/A-law, energy, latency
//! stamps carried inside audio bytes.

use std::time::{Duration, Instant};

/// 16-bit PCM little-endian sine tone.
pub fn pcm16_tone(rate: u32, ms: u32, freq: f32, amplitude: i16) -> Vec<u8> {
    let n = (rate as u64 * ms as u64 / 1000) as usize;
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f32 / rate as f32;
        let s = (amplitude as f32 * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Samples of 16-bit PCM little-endian bytes.
pub fn pcm16_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Root-mean-square level of samples.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// G.711 μ-law encode one sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 μ-law decode one byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = ((b >> 4) & 0x07) as i32;
    let mantissa = (b & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// G.711 A-law decode one byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// μ-law sine tone at 8 kHz.
pub fn ulaw_tone(ms: u32, freq: f32, amplitude: i16) -> Vec<u8> {
    pcm16_samples(&pcm16_tone(8000, ms, freq, amplitude))
        .into_iter()
        .map(ulaw_encode)
        .collect()
}

/// Write `epoch.elapsed()` (ns) into the first 8 bytes of `frame` (for latency measurement).
pub fn stamp(frame: &mut [u8], epoch: Instant) {
    let ns = epoch.elapsed().as_nanos() as u64;
    frame[..8].copy_from_slice(&ns.to_le_bytes());
}

/// Time since the stamp in `frame` was written.
pub fn since_stamp(frame: &[u8], epoch: Instant) -> Duration {
    let ns = u64::from_le_bytes(frame[..8].try_into().unwrap());
    epoch.elapsed().saturating_sub(Duration::from_nanos(ns))
}

/// p-th percentile (0–100) of durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trip_is_close() {
        for s in [-30000i16, -1000, -10, 0, 10, 1000, 30000] {
            let d = ulaw_decode(ulaw_encode(s));
            assert!(
                (d as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 16,
                "{s} -> {d}"
            );
        }
    }
}
