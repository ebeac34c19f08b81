//! Outbound pacing: a drift-free packet clock and the queue of audio waiting to be sent.
//!
//! The clock computes every deadline from the start instant (`start + k·period`), so delays in
//! one tick never accumulate into the next the way `sleep(20ms)` loops do. The queue takes PCM
//! at any rate, can be flushed at once for barge-in, and counts what was really sent so the
//! model's transcript can be truncated to what the caller heard.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::resample::{ResampleError, StreamResampler, move_front, samples_for_ms};

/// After falling this many periods behind (process stalled), skip the missed ticks instead of
/// bursting them out.
const MAX_LATE_PERIODS: u32 = 5;

/// Absolute-deadline packet clock.
#[derive(Debug, Clone)]
pub struct PacingClock {
    start: Instant,
    period: Duration,
    tick: u64,
}

impl PacingClock {
    /// A clock whose first deadline is `start`.
    pub fn new(start: Instant, period: Duration) -> PacingClock {
        PacingClock {
            start,
            period,
            tick: 0,
        }
    }

    /// The packet interval.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// When the next packet is due.
    pub fn deadline(&self) -> Instant {
        self.start + self.period * self.tick as u32
    }

    /// Consumes the due tick. Returns how many further ticks were skipped because the clock
    /// fell more than a few periods behind; the caller advances its RTP timestamp over them.
    pub fn advance(&mut self, now: Instant) -> u64 {
        let late = now.saturating_duration_since(self.deadline());
        self.tick += 1;
        if late > self.period * MAX_LATE_PERIODS {
            let skipped = (late.as_nanos() / self.period.as_nanos()) as u64;
            self.tick += skipped;
            skipped
        } else {
            0
        }
    }

    /// Consumes every tick due before `now` (the sender slept through them); returns how many.
    pub fn skip_past(&mut self, now: Instant) -> u64 {
        let behind = now.saturating_duration_since(self.deadline());
        if behind.is_zero() {
            return 0;
        }
        let due = (behind.as_nanos() / self.period.as_nanos()) as u64 + 1;
        self.tick += due;
        due
    }

    /// Restarts the clock with a new period (the packet duration changed).
    pub fn restart(&mut self, start: Instant, period: Duration) {
        *self = PacingClock::new(start, period);
    }
}

/// What [`PlayoutQueue::flush`] dropped and what had been played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlushReport {
    /// Audio sent since the last mark or flush, in ms.
    pub played_ms: u64,
    /// Audio that was queued and is now discarded, in ms.
    pub discarded_ms: u64,
}

/// Audio waiting to be sent, held at the codec rate.
pub struct PlayoutQueue {
    rate: u32,
    samples: VecDeque<i16>,
    /// Converts pushes at other rates; replaced when the input rate changes.
    resampler: Option<StreamResampler>,
    played_samples: u64,
}

impl PlayoutQueue {
    /// An empty queue sending at `rate` Hz.
    pub fn new(rate: u32) -> PlayoutQueue {
        PlayoutQueue {
            rate,
            samples: VecDeque::new(),
            resampler: None,
            played_samples: 0,
        }
    }

    /// The rate audio leaves the queue at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Appends mono PCM at `rate` Hz (resampled to the queue's rate if needed).
    pub fn push(&mut self, pcm: &[i16], rate: u32) -> Result<(), ResampleError> {
        if rate == self.rate {
            self.drain_resampler()?;
            self.resampler = None;
            self.samples.extend(pcm);
            return Ok(());
        }
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.input_rate() != rate)
        {
            self.drain_resampler()?;
            self.resampler = Some(StreamResampler::new(rate, self.rate)?);
        }
        if let Some(r) = self.resampler.as_mut() {
            r.push(pcm)?;
            r.pop_all_into(&mut self.samples);
        }
        Ok(())
    }

    fn drain_resampler(&mut self) -> Result<(), ResampleError> {
        if let Some(r) = self.resampler.as_mut() {
            r.drain()?;
            r.pop_all_into(&mut self.samples);
        }
        Ok(())
    }

    fn samples_to_ms(&self, samples: u64) -> u64 {
        samples * 1000 / self.rate as u64
    }

    /// Audio waiting, in ms.
    pub fn queued_ms(&self) -> u64 {
        self.samples_to_ms(self.samples.len() as u64)
    }

    /// Whether nothing is waiting, not even inside the resampler.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.resampler.as_ref().is_none_or(|r| r.is_empty())
    }

    /// Whether `n` samples are waiting: a whole packet of `n` could go out.
    pub fn holds(&self, n: usize) -> bool {
        self.samples.len() >= n
    }

    /// Audio sent since the last mark or flush, in ms.
    pub fn played_ms(&self) -> u64 {
        self.samples_to_ms(self.played_samples)
    }

    /// Replaces `frame` with the next `n` samples to send; `false` (and `frame` untouched)
    /// when nothing is queued. A short tail is padded with silence; only real samples count
    /// as played. Audio still inside the resampler is drained first, so the end of an
    /// utterance is not cut. The caller's buffer is reused: this runs for every packet.
    pub fn pop(&mut self, n: usize, frame: &mut Vec<i16>) -> bool {
        if self.samples.len() < n && self.resampler.is_some() {
            // Resampling cannot fail on a drain of data it already accepted; if it did, the
            // tail is lost, which is the best we can do.
            let _ = self.drain_resampler();
        }
        if self.samples.is_empty() {
            return false;
        }
        let real = n.min(self.samples.len());
        frame.clear();
        move_front(&mut self.samples, real, frame);
        frame.resize(n, 0);
        self.played_samples += real as u64;
        true
    }

    /// Starts a new played-ms count (e.g. when a new model response begins); returns the old.
    pub fn mark(&mut self) -> u64 {
        let played = self.played_ms();
        self.played_samples = 0;
        played
    }

    /// Discards everything queued at once (barge-in) and reports what was played.
    pub fn flush(&mut self) -> FlushReport {
        let pending_in_resampler = self.resampler.as_ref().map_or(0, |r| r.available());
        let discarded = self.samples.len() + pending_in_resampler;
        self.samples.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.clear();
        }
        FlushReport {
            played_ms: self.mark(),
            discarded_ms: self.samples_to_ms(discarded as u64),
        }
    }

    /// Samples per packet of `ms` at the queue's rate.
    pub fn samples_per(&self, ms: u32) -> usize {
        samples_for_ms(self.rate, ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute_and_do_not_drift() {
        let t0 = Instant::now();
        let period = Duration::from_millis(20);
        let mut clock = PacingClock::new(t0, period);
        // Each tick is serviced 7 ms late: the next deadline is still on the 20 ms grid.
        for k in 0..1000u32 {
            assert_eq!(clock.deadline(), t0 + period * k);
            assert_eq!(
                clock.advance(clock.deadline() + Duration::from_millis(7)),
                0
            );
        }
        assert_eq!(clock.deadline(), t0 + Duration::from_secs(20));
    }

    #[test]
    fn a_stall_skips_ticks_instead_of_bursting() {
        let t0 = Instant::now();
        let period = Duration::from_millis(20);
        let mut clock = PacingClock::new(t0, period);
        // Woken 1 s late for tick 0: 50 ticks are skipped, the grid is kept.
        let skipped = clock.advance(t0 + Duration::from_millis(1000));
        assert_eq!(skipped, 50);
        assert_eq!(clock.deadline(), t0 + Duration::from_millis(1020));
        // Slightly late (within 5 periods): catch up packet by packet.
        assert_eq!(clock.advance(t0 + Duration::from_millis(1080)), 0);
    }

    #[test]
    fn queue_pads_tail_and_counts_only_real_audio() {
        let mut q = PlayoutQueue::new(8000);
        q.push(&[7; 200], 8000).unwrap();
        assert_eq!(q.queued_ms(), 25);
        let mut frame = Vec::new();
        assert!(q.pop(160, &mut frame));
        assert_eq!(frame, vec![7; 160]);
        assert!(q.pop(160, &mut frame));
        assert_eq!(&frame[..40], &[7; 40]);
        assert!(frame[40..].iter().all(|&s| s == 0));
        assert_eq!(q.played_ms(), 25);
        assert!(!q.pop(160, &mut frame));
        assert_eq!(q.mark(), 25);
        assert_eq!(q.played_ms(), 0);
    }

    #[test]
    fn flush_reports_played_and_discarded() {
        let mut q = PlayoutQueue::new(8000);
        q.push(&vec![1; 8000], 8000).unwrap();
        let mut frame = Vec::new();
        for _ in 0..15 {
            assert!(q.pop(160, &mut frame));
        }
        let report = q.flush();
        assert_eq!(
            report,
            FlushReport {
                played_ms: 300,
                discarded_ms: 700
            }
        );
        assert!(!q.pop(160, &mut frame));
        assert_eq!(q.flush(), FlushReport::default());
    }

    #[test]
    fn accepts_any_rate_and_drains_the_resampler_tail() {
        let mut q = PlayoutQueue::new(8000);
        // 1 s of 24 kHz model audio and 0.5 s of 22.05 kHz TTS.
        q.push(&vec![1000; 24000], 24000).unwrap();
        q.push(&vec![1000; 11025], 22050).unwrap();
        let mut total = 0;
        let mut frame = Vec::new();
        while q.pop(160, &mut frame) {
            total += frame.len();
        }
        assert_eq!(q.played_ms(), 1500);
        assert!((12000..=12160).contains(&total), "{total}");
    }
}
