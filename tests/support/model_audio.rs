//! Audio helpers for the model tests and fakes: tones, energy, latency stamps carried inside
//! audio bytes. G.711 comes from the host's media codec.

use std::time::{Duration, Instant};

pub use switchboard::media::g711::{alaw_decode, ulaw_decode, ulaw_encode};

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

/// The next `n` samples of `voice` from `*pos` (wrapping), as 16-bit PCM little-endian bytes:
/// how a fake speaks a test's signal instead of its tone, one chunk after another.
pub fn voice_chunk(voice: &[i16], pos: &mut usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 2);
    for _ in 0..n {
        out.extend_from_slice(&voice[*pos % voice.len()].to_le_bytes());
        *pos += 1;
    }
    out
}
