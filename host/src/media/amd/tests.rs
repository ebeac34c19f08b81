//! Synthetic signals: tones for the beep, harmonic "vowels" for speech that must not be one,
//! and the greeting pattern driven frame by frame (earshot decides voicing on real speech; the
//! generated set of `tests/amd/` covers that end to end).

use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};

const R8: u32 = 8000;

fn tone(rate: u32, hz: f32, ms: u32, amp: f32) -> Vec<i16> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .map(|i| (amp * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()) as i16)
        .collect()
}

/// A vowel-like sound: 12 harmonics of a gliding 120–160 Hz voice, with formant-ish weights.
fn vowel(rate: u32, ms: u32) -> Vec<i16> {
    let n = (rate * ms / 1000) as usize;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let f0 = 120.0 + 40.0 * (i as f32 / n as f32);
            phase += 2.0 * std::f32::consts::PI * f0 / rate as f32;
            let s: f32 = (1..=12)
                .map(|h| {
                    let hz = f0 * h as f32;
                    let weight = if (500.0..900.0).contains(&hz) {
                        1.0
                    } else {
                        0.35
                    };
                    weight * (phase * h as f32).sin()
                })
                .sum();
            (s * 2500.0) as i16
        })
        .collect()
}

fn silence(rate: u32, ms: u32) -> Vec<i16> {
    vec![0; (rate * ms / 1000) as usize]
}

/// Deterministic white noise (xorshift) at the given RMS-ish amplitude.
fn noise(rate: u32, ms: u32, amp: f32) -> Vec<i16> {
    let mut x = 0x2545_f491u32;
    (0..rate * ms / 1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ((x as f32 / u32::MAX as f32 - 0.5) * 2.0 * amp) as i16
        })
        .collect()
}

fn phone_line(samples: &[i16]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| ulaw_decode(ulaw_encode(s)))
        .collect()
}

/// Feeds audio in 20 ms packets from `at_ms`, as RTP would, collecting the events.
fn feed(det: &mut AmdDetector, rate: u32, at_ms: u64, audio: &[i16]) -> Vec<AmdEvent> {
    let per = (rate / 50) as usize;
    audio
        .chunks(per)
        .enumerate()
        .flat_map(|(i, c)| det.push(at_ms + i as u64 * 20, c).unwrap())
        .collect()
}

fn beeps(events: &[AmdEvent]) -> Vec<(u64, u64, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            AmdEvent::Beep { at_ms, end_ms, hz } => Some((at_ms, end_ms, hz)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_beep_through_g711_is_found_with_its_time_and_pitch() {
    for (hz, ms) in [(440.0, 150), (1000.0, 500), (1400.0, 1000), (1950.0, 250)] {
        let mut audio = silence(R8, 600);
        audio.extend(tone(R8, hz, ms, 8000.0));
        audio.extend(silence(R8, 400));
        let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
        let events = feed(&mut det, R8, 0, &phone_line(&audio));
        let found = beeps(&events);
        assert_eq!(found.len(), 1, "{hz} Hz {ms} ms: {events:?}");
        let (at, end, got_hz) = found[0];
        assert!(at.abs_diff(600) <= 20, "{hz} Hz start {at}");
        assert!(end.abs_diff(600 + u64::from(ms)) <= 20, "{hz} Hz end {end}");
        assert!(
            (got_hz as f32 - hz).abs() <= 32.0,
            "{hz} Hz read as {got_hz}"
        );
        assert_eq!(det.verdict(), Some(MachineVerdict::Machine));
        assert!(det.is_done());
    }
}

#[test]
fn a_beep_under_noise_at_16_khz_is_found() {
    let rate = 16_000;
    let mut audio = noise(rate, 1500, 600.0);
    let beep = tone(rate, 850.0, 300, 6000.0);
    for (a, b) in audio[8000..].iter_mut().zip(&beep) {
        *a = a.saturating_add(*b);
    }
    let mut det = AmdDetector::new(rate, AmdConfig::default()).unwrap();
    let found = beeps(&feed(&mut det, rate, 0, &audio));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].0.abs_diff(500) <= 20);
}

#[test]
fn vowels_noise_and_short_or_out_of_band_tones_are_not_beeps() {
    let mut audio = vowel(R8, 1200);
    audio.extend(silence(R8, 200));
    audio.extend(noise(R8, 500, 4000.0));
    audio.extend(tone(R8, 1000.0, 40, 8000.0)); // a click-length blip
    audio.extend(silence(R8, 200));
    audio.extend(tone(R8, 200.0, 500, 8000.0)); // hum, below the band
    audio.extend(silence(R8, 200));
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    let events = feed(&mut det, R8, 0, &phone_line(&audio));
    assert!(beeps(&events).is_empty(), "{events:?}");
}

/// Drives the greeting logic with voicing decided by the test, one 16 ms frame at a time.
fn pattern(det: &mut AmdDetector, voiced_ms: &[(bool, u64)]) -> Vec<AmdEvent> {
    let mut events = Vec::new();
    for &(voiced, ms) in voiced_ms {
        for _ in 0..ms / FRAME_MS {
            let start = det.frames * FRAME_MS;
            det.frames += 1;
            if det.verdict.is_none() {
                det.track_greeting(voiced, start, start + FRAME_MS, &mut events);
            }
        }
    }
    events
}

fn verdicts(events: &[AmdEvent]) -> Vec<(MachineVerdict, u64)> {
    events
        .iter()
        .filter_map(|e| match *e {
            AmdEvent::Verdict { verdict, at_ms } => Some((verdict, at_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_short_hello_then_silence_is_a_human_when_the_silence_has_lasted() {
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    let events = pattern(&mut det, &[(false, 480), (true, 480), (false, 2000)]);
    // Speech ends at 960 ms; 900 ms of silence later (rounded up to a frame) it is a person.
    assert_eq!(verdicts(&events), vec![(MachineVerdict::Human, 1872)]);
}

#[test]
fn a_long_greeting_with_short_pauses_is_a_machine_once_it_is_long_enough() {
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    let events = pattern(
        &mut det,
        &[
            (false, 320),
            (true, 800),
            (false, 400),
            (true, 1200),
            (false, 2000),
        ],
    );
    // The greeting starts at 320 ms; 2000 ms of greeting later it is a machine.
    assert_eq!(verdicts(&events), vec![(MachineVerdict::Machine, 2320)]);
}

#[test]
fn silence_or_an_endless_pause_pattern_is_unknown() {
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    let events = pattern(&mut det, &[(false, 5000)]);
    assert_eq!(verdicts(&events), vec![(MachineVerdict::Unknown, 4000)]);
}

#[test]
fn a_beep_before_a_verdict_makes_it_a_machine_and_after_a_human_nothing_is_reported() {
    let mut audio = silence(R8, 300);
    audio.extend(tone(R8, 1000.0, 300, 8000.0));
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    let events = feed(&mut det, R8, 0, &audio);
    assert_eq!(verdicts(&events), vec![]);
    let events = det.tick(1000).unwrap();
    assert_eq!(verdicts(&events), vec![(MachineVerdict::Machine, 600)]);

    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    pattern(&mut det, &[(true, 480), (false, 1000)]);
    assert_eq!(det.verdict(), Some(MachineVerdict::Human));
    assert!(det.is_done());
    assert!(feed(&mut det, R8, 1500, &tone(R8, 1000.0, 300, 8000.0)).is_empty());
}

#[test]
fn a_gap_in_the_audio_counts_as_silence() {
    let mut det = AmdDetector::new(R8, AmdConfig::default()).unwrap();
    assert!(det.push(0, &silence(R8, 20)).unwrap().is_empty());
    // No packets for 5 s (silence suppression): time still decides.
    let events = det.tick(5000).unwrap();
    assert_eq!(verdicts(&events), vec![(MachineVerdict::Unknown, 4000)]);
}
