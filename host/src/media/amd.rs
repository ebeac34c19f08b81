//! Answering-machine detection: a sans-IO detector over the callee's audio after answer. It
//! never holds anything up: the call plays its greeting while this listens, and the verdict is
//! an event that arrives when the audio has shown it.
//!
//! Two features, both on a 16 kHz stream (8 kHz input is resampled to it) cut in 16 ms frames:
//!
//! - **The greeting's speech/silence pattern.** Each frame is voiced or not (earshot's neural
//!   voice detector, as in `model::vad`, behind an energy gate); `onset_ms` of voice in a row
//!   starts the greeting, pauses shorter than `end_silence_ms` stay inside it. A person answers
//!   with a short "Hello?" and then waits for us: a greeting that stops (`end_silence_ms` of
//!   silence) before `max_human_greeting_ms` is a **human**. A recorded greeting talks on: one
//!   that lasts `max_human_greeting_ms` is a **machine**. Nobody speaking for
//!   `initial_silence_ms`, or no verdict by `max_decision_ms`, is **unknown**.
//! - **The beep.** A 512-point Hann-windowed FFT every frame (32 ms window, 31.25 Hz bins): a
//!   frame is tonal when its loudest peak lies in `min_beep_hz..=max_beep_hz`, carries at least
//!   `min_purity` of the energy in 300–3400 Hz (the peak's five bins; a Hann main lobe is four
//!   wide) and stays within two bins of the previous frame's peak. Speech spreads its energy
//!   over harmonics; a beep keeps nearly all of it in one peak, also through G.711 (whose
//!   quantisation noise is ~35 dB down) and under moderate noise. Measured on the tuning set
//!   (32 ms windows): speech frames have purity p50 0.41, p99 0.87, p99.9 0.94 (espeak-ng's
//!   vowels are steadier than people's); beep frames, noisy ones included, 0.989 and up. Hence
//!   0.95. A run of tonal frames lasting `min_beep_ms..=max_beep_ms` is a beep,
//!   reported when it ends (so a message can start right after it); tonal frames are never
//!   counted as speech. A beep before any verdict makes the verdict machine.
//!
//! After a human verdict the detector is done; after machine or unknown it listens for a beep
//! until `beep_window_ms` after answer.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};
use serde::{Deserialize, Serialize};

pub use crate::domain::agent_event::MachineVerdict;
use crate::resample::{ResampleError, StreamResampler};

/// The analysis rate (earshot's native rate).
const RATE: u32 = 16_000;
/// Samples per analysis frame (16 ms).
const FRAME: usize = 256;
const FRAME_MS: u64 = 16;
/// FFT window for the beep: two frames (32 ms), hop one frame.
const WINDOW: usize = 2 * FRAME;
const BIN_HZ: f32 = RATE as f32 / WINDOW as f32;
/// Frames quieter than this RMS (about -50 dBFS) are neither speech nor tone.
const QUIET_RMS: f32 = 100.0;
/// The phone band the tone's purity is measured against.
const BAND_HZ: (f32, f32) = (300.0, 3400.0);

/// What the detector found, with times in ms of callee audio after answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AmdEvent {
    /// The verdict, reached at `at_ms` (once per call).
    Verdict { verdict: MachineVerdict, at_ms: u64 },
    /// A voicemail beep from `at_ms` to `end_ms` (reported at its end, once per call).
    Beep { at_ms: u64, end_ms: u64, hz: u32 },
}

/// Thresholds (see the module comment for what each one decides). Defaults are tuned on the
/// generated tuning set of `tests/amd/make_set.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AmdConfig {
    #[serde(default = "default_initial_silence_ms")]
    pub initial_silence_ms: u32,
    #[serde(default = "default_max_human_greeting_ms")]
    pub max_human_greeting_ms: u32,
    #[serde(default = "default_end_silence_ms")]
    pub end_silence_ms: u32,
    #[serde(default = "default_onset_ms")]
    pub onset_ms: u32,
    #[serde(default = "default_max_decision_ms")]
    pub max_decision_ms: u32,
    #[serde(default = "default_beep_window_ms")]
    pub beep_window_ms: u32,
    /// earshot's voice probability at or above which a frame is voiced.
    #[serde(default = "default_voice_threshold")]
    pub voice_threshold: f32,
    #[serde(default = "default_min_beep_hz")]
    pub min_beep_hz: u32,
    #[serde(default = "default_max_beep_hz")]
    pub max_beep_hz: u32,
    #[serde(default = "default_min_beep_ms")]
    pub min_beep_ms: u32,
    #[serde(default = "default_max_beep_ms")]
    pub max_beep_ms: u32,
    #[serde(default = "default_min_purity")]
    pub min_purity: f32,
}

fn default_initial_silence_ms() -> u32 {
    4000
}
fn default_max_human_greeting_ms() -> u32 {
    2000
}
fn default_end_silence_ms() -> u32 {
    900
}
fn default_onset_ms() -> u32 {
    48
}
fn default_max_decision_ms() -> u32 {
    6000
}
fn default_beep_window_ms() -> u32 {
    40_000
}
fn default_voice_threshold() -> f32 {
    0.5
}
fn default_min_beep_hz() -> u32 {
    350
}
fn default_max_beep_hz() -> u32 {
    2100
}
fn default_min_beep_ms() -> u32 {
    80
}
fn default_max_beep_ms() -> u32 {
    2000
}
fn default_min_purity() -> f32 {
    0.95
}

impl Default for AmdConfig {
    fn default() -> Self {
        AmdConfig {
            initial_silence_ms: default_initial_silence_ms(),
            max_human_greeting_ms: default_max_human_greeting_ms(),
            end_silence_ms: default_end_silence_ms(),
            onset_ms: default_onset_ms(),
            max_decision_ms: default_max_decision_ms(),
            beep_window_ms: default_beep_window_ms(),
            voice_threshold: default_voice_threshold(),
            min_beep_hz: default_min_beep_hz(),
            max_beep_hz: default_max_beep_hz(),
            min_beep_ms: default_min_beep_ms(),
            max_beep_ms: default_max_beep_ms(),
            min_purity: default_min_purity(),
        }
    }
}

impl AmdConfig {
    /// Thresholds that make a detector: ranges the right way round, durations above zero,
    /// tones the analysis can see (below its 8 kHz Nyquist frequency).
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("initial-silence-ms", self.initial_silence_ms),
            ("max-human-greeting-ms", self.max_human_greeting_ms),
            ("end-silence-ms", self.end_silence_ms),
            ("onset-ms", self.onset_ms),
            ("max-decision-ms", self.max_decision_ms),
            ("min-beep-ms", self.min_beep_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be above 0"));
        }
        if !(self.voice_threshold > 0.0 && self.voice_threshold < 1.0) {
            return Err("voice-threshold must be between 0 and 1".into());
        }
        if !(self.min_purity > 0.0 && self.min_purity <= 1.0) {
            return Err("min-purity must be above 0 and at most 1".into());
        }
        if self.min_beep_hz >= self.max_beep_hz || self.max_beep_hz >= RATE / 2 {
            return Err(format!(
                "min-beep-hz ({}) must be below max-beep-hz ({}), and that below {} Hz",
                self.min_beep_hz,
                self.max_beep_hz,
                RATE / 2
            ));
        }
        if self.min_beep_ms > self.max_beep_ms {
            return Err(format!(
                "min-beep-ms ({}) is above max-beep-ms ({})",
                self.min_beep_ms, self.max_beep_ms
            ));
        }
        if self.max_human_greeting_ms > self.max_decision_ms {
            return Err(format!(
                "max-human-greeting-ms ({}) is above max-decision-ms ({}): no greeting could \
                 ever be a machine's",
                self.max_human_greeting_ms, self.max_decision_ms
            ));
        }
        Ok(())
    }
}

/// The greeting as heard so far.
#[derive(Debug, Default)]
struct Greeting {
    /// Voiced frames in a row (before the greeting has started).
    run: u32,
    /// When the greeting's first voiced frame began.
    start_ms: Option<u64>,
    /// When its last voiced frame ended.
    last_voiced_end_ms: u64,
}

/// A run of tonal frames.
#[derive(Debug, Clone, Copy)]
struct Tone {
    start_ms: u64,
    end_ms: u64,
    bin: usize,
}

/// The detector for one call. Feed it the callee's audio with [`AmdDetector::push`], and call
/// [`AmdDetector::tick`] when audio stops arriving (no RTP) so time still decides.
pub struct AmdDetector {
    config: AmdConfig,
    voice: Box<earshot::Detector>,
    resampler: Option<StreamResampler>,
    fft: Arc<dyn RealToComplex<f32>>,
    hann: Vec<f32>,
    fft_in: Vec<f32>,
    fft_out: Vec<Complex<f32>>,
    /// 16 kHz samples not yet analysed.
    pending: Vec<i16>,
    /// The previous frame (the first half of the FFT window).
    previous: Vec<i16>,
    /// Input time consumed so far, in input samples (gaps filled with silence).
    input_samples: u64,
    input_rate: u32,
    frames: u64,
    /// Quiet frames were skipped since earshot last ran: its context is stale.
    voice_stale: bool,
    greeting: Greeting,
    tone: Option<Tone>,
    verdict: Option<MachineVerdict>,
    beep_found: bool,
}

impl AmdDetector {
    /// A detector for PCM16 at `input_rate` Hz (8000 or 16000; others are resampled too).
    pub fn new(input_rate: u32, config: AmdConfig) -> Result<AmdDetector, ResampleError> {
        let resampler = (input_rate != RATE)
            .then(|| StreamResampler::new(input_rate, RATE))
            .transpose()?;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(WINDOW);
        let hann = (0..WINDOW)
            .map(|i| {
                let x = std::f32::consts::PI * 2.0 * i as f32 / WINDOW as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        Ok(AmdDetector {
            fft_in: fft.make_input_vec(),
            fft_out: fft.make_output_vec(),
            fft,
            hann,
            config,
            voice: earshot::Detector::default_boxed(),
            resampler,
            pending: Vec::with_capacity(FRAME * 4),
            previous: vec![0; FRAME],
            input_samples: 0,
            input_rate,
            frames: 0,
            voice_stale: false,
            greeting: Greeting::default(),
            tone: None,
            verdict: None,
            beep_found: false,
        })
    }

    /// The verdict, once reached.
    pub fn verdict(&self) -> Option<MachineVerdict> {
        self.verdict
    }

    /// True when nothing more can come out (a human, or a beep found, or the beep window over).
    pub fn is_done(&self) -> bool {
        match self.verdict {
            Some(MachineVerdict::Human) => true,
            Some(_) => {
                self.beep_found || self.frames * FRAME_MS >= u64::from(self.config.beep_window_ms)
            }
            None => false,
        }
    }

    /// Feeds callee audio that starts `at_ms` after answer. A gap since the previous audio
    /// (lost packets, silence suppression) counts as silence; overlap is ignored.
    pub fn push(&mut self, at_ms: u64, samples: &[i16]) -> Result<Vec<AmdEvent>, ResampleError> {
        let mut events = Vec::new();
        if self.is_done() {
            return Ok(events);
        }
        let at = at_ms * u64::from(self.input_rate) / 1000;
        // A gap of more than one 20 ms packet is filled; smaller drifts are jitter.
        if at > self.input_samples + u64::from(self.input_rate) / 50 {
            let gap = vec![0i16; (at - self.input_samples) as usize];
            self.feed(&gap, &mut events)?;
        }
        self.feed(samples, &mut events)?;
        Ok(events)
    }

    /// Lets time decide when no audio arrives: analyses silence up to `now_ms` after answer.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<AmdEvent>, ResampleError> {
        self.push(now_ms, &[])
    }

    fn feed(&mut self, samples: &[i16], events: &mut Vec<AmdEvent>) -> Result<(), ResampleError> {
        self.input_samples += samples.len() as u64;
        match self.resampler.as_mut() {
            Some(r) => {
                r.push(samples)?;
                self.pending.extend(r.pop_all());
            }
            None => self.pending.extend_from_slice(samples),
        }
        let pending = std::mem::take(&mut self.pending);
        let mut frames = pending.chunks_exact(FRAME);
        for frame in frames.by_ref() {
            if self.is_done() {
                break;
            }
            self.frame(frame, events);
        }
        self.pending = frames.remainder().to_vec();
        Ok(())
    }

    fn frame(&mut self, frame: &[i16], events: &mut Vec<AmdEvent>) {
        let start_ms = self.frames * FRAME_MS;
        let end_ms = start_ms + FRAME_MS;
        self.frames += 1;
        let energy: f32 = frame.iter().map(|&s| f32::from(s) * f32::from(s)).sum();
        let loud = energy >= QUIET_RMS * QUIET_RMS * FRAME as f32;
        let tonal_bin = if loud { self.tonal_bin(frame) } else { None };
        self.previous.copy_from_slice(frame);
        self.track_tone(tonal_bin, start_ms, end_ms, events);
        let voiced = loud && tonal_bin.is_none() && self.voiced(frame);
        if !loud {
            self.voice_stale = true;
        }
        if self.verdict.is_none() {
            self.track_greeting(voiced, start_ms, end_ms, events);
        }
    }

    fn voiced(&mut self, frame: &[i16]) -> bool {
        if std::mem::take(&mut self.voice_stale) {
            self.voice.reset();
        }
        self.voice.predict_i16(frame) >= self.config.voice_threshold
    }

    fn decide(&mut self, verdict: MachineVerdict, at_ms: u64, events: &mut Vec<AmdEvent>) {
        if self.verdict.is_none() {
            self.verdict = Some(verdict);
            events.push(AmdEvent::Verdict { verdict, at_ms });
        }
    }

    fn track_greeting(
        &mut self,
        voiced: bool,
        start_ms: u64,
        end_ms: u64,
        events: &mut Vec<AmdEvent>,
    ) {
        let c = &self.config;
        // A tone under way may be the beep that ends a short recorded greeting: the silence
        // that would make a person is not over until it is.
        let tone_under_way = self.tone.is_some();
        let g = &mut self.greeting;
        if voiced {
            g.run += 1;
            g.last_voiced_end_ms = end_ms;
            if g.start_ms.is_none() && u64::from(g.run) * FRAME_MS >= u64::from(c.onset_ms) {
                g.start_ms = Some(end_ms - u64::from(g.run) * FRAME_MS);
            }
        } else {
            g.run = 0;
        }
        let verdict = match g.start_ms {
            None if start_ms + FRAME_MS >= u64::from(c.initial_silence_ms) => {
                Some(MachineVerdict::Unknown)
            }
            None => None,
            Some(start) if g.last_voiced_end_ms - start >= u64::from(c.max_human_greeting_ms) => {
                Some(MachineVerdict::Machine)
            }
            Some(_)
                if !tone_under_way
                    && end_ms - g.last_voiced_end_ms >= u64::from(c.end_silence_ms) =>
            {
                Some(MachineVerdict::Human)
            }
            Some(_) => None,
        };
        let verdict = verdict.or_else(|| {
            (end_ms >= u64::from(c.max_decision_ms)).then_some(MachineVerdict::Unknown)
        });
        if let Some(v) = verdict {
            self.decide(v, end_ms, events);
        }
    }

    /// The peak bin of this frame's window when the window is a pure tone in the beep band.
    fn tonal_bin(&mut self, frame: &[i16]) -> Option<usize> {
        for (i, (&s, w)) in self
            .previous
            .iter()
            .chain(frame)
            .zip(&self.hann)
            .enumerate()
        {
            self.fft_in[i] = f32::from(s) * w;
        }
        self.fft
            .process(&mut self.fft_in, &mut self.fft_out)
            .expect("buffers come from the plan");
        let bin = |hz: f32| (hz / BIN_HZ).round() as usize;
        let (lo, hi) = (bin(BAND_HZ.0), bin(BAND_HZ.1));
        let power: Vec<f32> = self.fft_out[lo..=hi].iter().map(|c| c.norm_sqr()).collect();
        let total: f32 = power.iter().sum();
        let (peak, _) = power.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
        let around: f32 = power[peak.saturating_sub(2)..(peak + 3).min(power.len())]
            .iter()
            .sum();
        let peak_bin = lo + peak;
        let in_band = peak_bin >= bin(self.config.min_beep_hz as f32)
            && peak_bin <= bin(self.config.max_beep_hz as f32);
        (in_band && total > 0.0 && around / total >= self.config.min_purity).then_some(peak_bin)
    }

    fn track_tone(
        &mut self,
        bin: Option<usize>,
        start_ms: u64,
        end_ms: u64,
        events: &mut Vec<AmdEvent>,
    ) {
        let continues = |t: &Tone, b: usize| t.bin.abs_diff(b) <= 2;
        match (self.tone, bin) {
            (Some(t), Some(b)) if continues(&t, b) => {
                self.tone = Some(Tone { end_ms, ..t });
            }
            (previous, next) => {
                if let Some(t) = previous {
                    self.end_tone(t, events);
                }
                // The window reaches one frame back: the tone began with it.
                self.tone = next.map(|bin| Tone {
                    start_ms: start_ms.saturating_sub(FRAME_MS),
                    end_ms,
                    bin,
                });
            }
        }
    }

    fn end_tone(&mut self, tone: Tone, events: &mut Vec<AmdEvent>) {
        // Window-based edges overstate a tone by about one frame; take half of it off each end.
        let at_ms = tone.start_ms + FRAME_MS / 2;
        let end_ms = tone.end_ms - FRAME_MS / 2;
        let length = end_ms.saturating_sub(at_ms);
        let c = &self.config;
        if self.beep_found
            || length < u64::from(c.min_beep_ms)
            || length > u64::from(c.max_beep_ms)
            || self.verdict == Some(MachineVerdict::Human)
        {
            return;
        }
        self.decide(MachineVerdict::Machine, end_ms, events);
        self.beep_found = true;
        events.push(AmdEvent::Beep {
            at_ms,
            end_ms,
            hz: (tone.bin as f32 * BIN_HZ).round() as u32,
        });
    }
}

#[cfg(test)]
mod tests;
