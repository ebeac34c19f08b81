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

/// Audio the speech fakes make for each character of text they are given.
pub const SPEECH_MS_PER_CHARACTER: u32 = 50;

/// What the speech fakes (fake_speech, fake_elevenlabs, fake_cartesia) say for `text`: a
/// 440 Hz tone of [`SPEECH_MS_PER_CHARACTER`] per character, the spaces around it (separators
/// the protocols ask for) not counted, so a test can check lengths.
pub fn spoken_tone(text: &str, rate: u32) -> Vec<u8> {
    let ms = text.trim().chars().count() as u32 * SPEECH_MS_PER_CHARACTER;
    pcm16_tone(rate, ms, 440.0, 8000)
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

/// Bytes a latency stamp takes: 48 bits of nanoseconds, 4 bits a byte as 0xF0..=0xFF. As μ-law
/// those are the quietest codes, and they survive a G.711 decode/encode round trip, so a stamp
/// crosses the host unchanged and does not wake a fake's voice detection.
pub const STAMP_LEN: usize = 12;

/// Write `epoch.elapsed()` into the first [`STAMP_LEN`] bytes of `frame` (latency measurement).
pub fn stamp(frame: &mut [u8], epoch: Instant) {
    let ns = epoch.elapsed().as_nanos() as u64;
    for (i, byte) in frame[..STAMP_LEN].iter_mut().enumerate() {
        *byte = 0xF0 | ((ns >> (4 * i)) & 0xF) as u8;
    }
}

/// Time since the stamp in `frame` was written.
pub fn since_stamp(frame: &[u8], epoch: Instant) -> Duration {
    let ns = frame[..STAMP_LEN]
        .iter()
        .enumerate()
        .fold(0u64, |ns, (i, &b)| ns | (u64::from(b & 0xF) << (4 * i)));
    epoch.elapsed().saturating_sub(Duration::from_nanos(ns))
}

/// CLOCK_MONOTONIC now, in ns: the clock `Instant` reads on Linux, the same in every process.
fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `epoch` as CLOCK_MONOTONIC ns, to hand a stamp epoch to another process.
pub fn epoch_to_monotonic_ns(epoch: Instant) -> u64 {
    monotonic_now_ns() - epoch.elapsed().as_nanos() as u64
}

/// The stamp epoch another process handed over with [`epoch_to_monotonic_ns`].
pub fn epoch_from_monotonic_ns(ns: u64) -> Instant {
    let age = Duration::from_nanos(monotonic_now_ns().saturating_sub(ns));
    Instant::now()
        .checked_sub(age)
        .expect("an epoch since boot")
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

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard::media::g711;

    #[test]
    fn stamps_survive_a_g711_round_trip() {
        let epoch = Instant::now() - Duration::from_secs(3600);
        let mut frame = vec![0u8; 160];
        stamp(&mut frame, epoch);
        let through: Vec<u8> = frame
            .iter()
            .map(|&b| g711::ulaw_encode(g711::ulaw_decode(b)))
            .collect();
        assert_eq!(&through[..STAMP_LEN], &frame[..STAMP_LEN]);
        let age = since_stamp(&through, epoch);
        assert!(age < Duration::from_secs(1), "{age:?}");
        // The stamp is quiet: no louder than the quietest μ-law codes.
        let loudest = frame[..STAMP_LEN]
            .iter()
            .map(|&b| g711::ulaw_decode(b).unsigned_abs())
            .max();
        assert!(loudest < Some(128), "{loudest:?}");
    }

    #[test]
    fn an_epoch_crosses_processes_as_monotonic_ns() {
        let epoch = Instant::now() - Duration::from_secs(5);
        let back = epoch_from_monotonic_ns(epoch_to_monotonic_ns(epoch));
        let off = if back > epoch {
            back - epoch
        } else {
            epoch - back
        };
        assert!(off < Duration::from_millis(1), "{off:?}");
    }
}
