//! Streaming voice-activity detection for the offline provider: earshot's neural detector on
//! 16 ms frames of 16 kHz PCM16 (other input rates are resampled to it here, off the media
//! path), with onset confirmation and a silence hangover so that clicks do not start a turn and
//! short pauses do not end one.

use crate::resample::{ResampleError, StreamResampler};

/// The detector's native rate.
pub(crate) const DETECTOR_RATE: u32 = 16_000;

/// Samples per earshot frame (16 ms at 16 kHz).
const FRAME: usize = 256;
const FRAME_MS: u64 = 16;
/// Frames quieter than this RMS (about -50 dBFS) are silence without asking the detector: it
/// costs tens of microseconds a frame, and callers are quiet most of a call.
const QUIET_RMS: i64 = 100;

/// A change of the caller's speaking state, with the input-audio time it happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VadEvent {
    /// Speech began at this many ms into the input (the first voiced frame).
    Started { at_ms: u64 },
    /// Speech ended at this many ms into the input (the last voiced frame's end).
    Stopped { at_ms: u64 },
}

pub(crate) struct Vad {
    detector: Box<earshot::Detector>,
    /// Input at another rate than the detector's goes through this.
    resampler: Option<StreamResampler>,
    threshold: f32,
    /// Voiced frames in a row needed to declare speech.
    onset_frames: u32,
    /// Unvoiced frames in a row needed to declare silence.
    hangover_frames: u32,
    pending: Vec<i16>,
    /// The last push's samples at the input rate (kept to reuse its allocation).
    input: Vec<i16>,
    /// Quiet frames were skipped since the detector last ran: its context is stale.
    skipped: bool,
    /// A carried-over odd byte of the previous chunk (PCM16 frames may split samples).
    odd_byte: Option<u8>,
    frames_seen: u64,
    speaking: bool,
    run: u32,
    run_start_ms: u64,
    last_voiced_end_ms: u64,
}

impl Vad {
    /// A detector for PCM16 input at `input_rate` Hz.
    pub(crate) fn new(
        input_rate: u32,
        threshold: f32,
        min_speech_ms: u32,
        silence_ms: u32,
    ) -> Result<Self, ResampleError> {
        let frames = |ms: u32| (u64::from(ms).div_ceil(FRAME_MS)).max(1) as u32;
        let resampler = (input_rate != DETECTOR_RATE)
            .then(|| StreamResampler::new(input_rate, DETECTOR_RATE))
            .transpose()?;
        Ok(Self {
            detector: earshot::Detector::default_boxed(),
            resampler,
            threshold,
            onset_frames: frames(min_speech_ms),
            hangover_frames: frames(silence_ms),
            pending: Vec::with_capacity(FRAME * 2),
            input: Vec::new(),
            skipped: false,
            odd_byte: None,
            frames_seen: 0,
            speaking: false,
            run: 0,
            run_start_ms: 0,
            last_voiced_end_ms: 0,
        })
    }

    /// Feed PCM16 little-endian bytes at the input rate (any length); returns state changes in
    /// order.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<VadEvent>, ResampleError> {
        let mut bytes = bytes;
        let samples = &mut self.input;
        samples.clear();
        if let Some(lo) = self.odd_byte.take() {
            if let Some((&hi, rest)) = bytes.split_first() {
                samples.push(i16::from_le_bytes([lo, hi]));
                bytes = rest;
            } else {
                self.odd_byte = Some(lo);
            }
        }
        let mut chunks = bytes.chunks_exact(2);
        samples.extend(chunks.by_ref().map(|c| i16::from_le_bytes([c[0], c[1]])));
        if let [b] = chunks.remainder() {
            self.odd_byte = Some(*b);
        }
        match self.resampler.as_mut() {
            Some(r) => {
                r.push(samples)?;
                self.pending.extend(r.pop_all());
            }
            None => self.pending.extend_from_slice(samples),
        }
        let mut events = Vec::new();
        let mut offset = 0;
        while self.pending.len() - offset >= FRAME {
            let frame = &self.pending[offset..offset + FRAME];
            offset += FRAME;
            let energy: i64 = frame.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
            let voiced = if energy < QUIET_RMS * QUIET_RMS * FRAME as i64 {
                self.skipped = true;
                false
            } else {
                if std::mem::take(&mut self.skipped) {
                    // Start afresh, as at the start of a call, rather than from old context.
                    self.detector.reset();
                }
                self.detector.predict_i16(frame) >= self.threshold
            };
            if let Some(ev) = self.step(voiced) {
                events.push(ev);
            }
        }
        self.pending.drain(..offset);
        Ok(events)
    }

    fn step(&mut self, voiced: bool) -> Option<VadEvent> {
        let start_ms = self.frames_seen * FRAME_MS;
        self.frames_seen += 1;
        let same_as_state = voiced == self.speaking;
        if voiced {
            self.last_voiced_end_ms = start_ms + FRAME_MS;
        }
        if same_as_state {
            self.run = 0;
            return None;
        }
        if self.run == 0 {
            self.run_start_ms = start_ms;
        }
        self.run += 1;
        if self.speaking && self.run >= self.hangover_frames {
            self.speaking = false;
            self.run = 0;
            return Some(VadEvent::Stopped {
                at_ms: self.last_voiced_end_ms,
            });
        }
        if !self.speaking && self.run >= self.onset_frames {
            self.speaking = true;
            self.run = 0;
            return Some(VadEvent::Started {
                at_ms: self.run_start_ms,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(ms: usize) -> Vec<u8> {
        vec![0u8; ms * 32]
    }

    #[test]
    fn silence_never_starts_speech() {
        let mut vad = Vad::new(DETECTOR_RATE, 0.5, 64, 500).unwrap();
        assert!(vad.push(&silence(2000)).unwrap().is_empty());
    }

    #[test]
    fn hangover_logic_debounces() {
        let mut vad = Vad::new(DETECTOR_RATE, 0.5, 48, 96).unwrap();
        // 2 voiced frames: below onset (3 frames).
        assert_eq!(vad.step(true), None);
        assert_eq!(vad.step(true), None);
        assert_eq!(vad.step(false), None);
        // 3 voiced frames from frame 3 (48 ms).
        assert_eq!(vad.step(true), None);
        assert_eq!(vad.step(true), None);
        assert_eq!(vad.step(true), Some(VadEvent::Started { at_ms: 48 }));
        // A short gap does not end speech.
        assert_eq!(vad.step(false), None);
        assert_eq!(vad.step(true), None);
        for _ in 0..5 {
            assert_eq!(vad.step(false), None);
        }
        // Last voiced frame was frame 7 ending at 128 ms.
        assert_eq!(vad.step(false), Some(VadEvent::Stopped { at_ms: 128 }));
    }

    #[test]
    fn odd_byte_splits_are_joined() {
        let mut vad = Vad::new(DETECTOR_RATE, 0.5, 64, 500).unwrap();
        let sample = 1000i16.to_le_bytes();
        vad.push(&[sample[0]]).unwrap();
        vad.push(&[sample[1]]).unwrap();
        assert_eq!(vad.pending, vec![1000]);
    }
}
