//! Streaming sample-rate conversion between telephony, model and TTS rates, in 20 ms frames;
//! used by media (codec rate ↔ model rate) and by the offline provider (speech at call rate).
//!
//! Always the band-limited FFT resampler of `rubato` (anti-aliasing filter included), never a
//! polynomial interpolator: model speech at 24 kHz squeezed into 8 kHz would otherwise fold
//! its 4–12 kHz energy back into the phone band.

use std::collections::VecDeque;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _, WindowFunction};

/// Why a resampler could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot resample {from} Hz -> {to} Hz: {source}")]
    Construction {
        from: u32,
        to: u32,
        #[source]
        source: rubato::ResamplerConstructionError,
    },
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
    #[error("sample rate {0} Hz out of range (1000..=192000)")]
    BadRate(u32),
}

/// Samples in `ms` milliseconds at `rate`.
pub fn samples_for_ms(rate: u32, ms: u32) -> usize {
    (rate as u64 * ms as u64 / 1000) as usize
}

/// Moves the first `n` samples of `from` (which must hold them) to the end of `to`: two slice
/// copies, where `to.extend(from.drain(..n))` copies sample by sample on every packet.
pub fn move_front(from: &mut VecDeque<i16>, n: usize, to: &mut Vec<i16>) {
    let (a, b) = from.as_slices();
    let first = n.min(a.len());
    to.extend_from_slice(&a[..first]);
    to.extend_from_slice(&b[..n - first]);
    from.drain(..n);
}

/// 16-bit little-endian PCM bytes from one rate to another as they stream (speech from a
/// synthesiser, audio for a service): a pass-through when the rates match.
pub struct Pcm16Converter {
    resampler: Option<StreamResampler>,
    /// A sample split across two chunks.
    odd_byte: Option<u8>,
}

impl Pcm16Converter {
    pub fn new(from: u32, to: u32) -> Result<Pcm16Converter, ResampleError> {
        let resampler = (from != to)
            .then(|| StreamResampler::new(from, to))
            .transpose()?;
        Ok(Pcm16Converter {
            resampler,
            odd_byte: None,
        })
    }

    /// Converts the next bytes; `last` drains what the filter still holds.
    pub fn convert(&mut self, bytes: &[u8], last: bool) -> Result<Vec<u8>, ResampleError> {
        let mut joined;
        let bytes = match self.odd_byte.take() {
            Some(b) => {
                joined = Vec::with_capacity(bytes.len() + 1);
                joined.push(b);
                joined.extend_from_slice(bytes);
                &joined[..]
            }
            None => bytes,
        };
        let whole = bytes.len() & !1;
        if whole < bytes.len() {
            self.odd_byte = Some(bytes[whole]);
        }
        let Some(r) = self.resampler.as_mut() else {
            return Ok(bytes[..whole].to_vec());
        };
        let samples: Vec<i16> = bytes[..whole]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        r.push(&samples)?;
        if last {
            r.drain()?;
        }
        Ok(r.pop_all().iter().flat_map(|s| s.to_le_bytes()).collect())
    }
}

/// Mono 16-bit resampler with a push/pop frame interface.
///
/// Push any number of input samples; pop fixed 20 ms frames (or everything available) at the
/// output rate. Between equal rates it is a plain FIFO.
pub struct StreamResampler {
    from: u32,
    to: u32,
    fft: Option<Fft<f32>>,
    pending_in: Vec<f32>,
    input_scratch: Vec<f32>,
    output_scratch: Vec<f32>,
    out: VecDeque<i16>,
    /// Leading output samples still to drop: the filter's start-up delay, which is silence.
    skip: usize,
    /// Real input samples pushed and output samples produced since the last reset, so
    /// [`StreamResampler::drain`] knows how much output the input is owed.
    total_in: u64,
    total_out: u64,
}

impl StreamResampler {
    /// A converter from `from` Hz to `to` Hz (any rates 1–192 kHz, e.g. 22050 for TTS).
    pub fn new(from: u32, to: u32) -> Result<StreamResampler, ResampleError> {
        Self::with_filter(from, to, 20, None)
    }

    /// A converter with a longer, steeper anti-aliasing filter (one FFT block of `block_ms`),
    /// for audio that is analysed rather than played, where the added delay (half a block)
    /// does not matter. Upsampled phone audio for a 16 kHz speech recogniser is the case: the
    /// 20 ms filter of [`StreamResampler::new`] leaves images above 4 kHz that the
    /// recogniser's features (up to 6.8 kHz) pick up.
    pub fn sharp(from: u32, to: u32, block_ms: u32) -> Result<StreamResampler, ResampleError> {
        Self::with_filter(from, to, block_ms, Some(1))
    }

    /// `sub_chunks`: `None` lets rubato split the block for a low delay.
    fn with_filter(
        from: u32,
        to: u32,
        block_ms: u32,
        sub_chunks: Option<usize>,
    ) -> Result<StreamResampler, ResampleError> {
        for rate in [from, to] {
            if !(1000..=192_000).contains(&rate) {
                return Err(ResampleError::BadRate(rate));
            }
        }
        let fft = if from == to {
            None
        } else {
            let chunk = samples_for_ms(from, block_ms);
            let fft = match sub_chunks {
                None => Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input),
                Some(sub_chunks) => Fft::<f32>::new_custom(
                    from as usize,
                    to as usize,
                    chunk,
                    sub_chunks,
                    1,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                ),
            };
            Some(fft.map_err(|source| ResampleError::Construction { from, to, source })?)
        };
        let output_max = fft.as_ref().map_or(0, |f| f.output_frames_max());
        let skip = fft.as_ref().map_or(0, |f| f.output_delay());
        Ok(StreamResampler {
            from,
            to,
            fft,
            pending_in: Vec::new(),
            input_scratch: Vec::new(),
            output_scratch: vec![0.0; output_max],
            out: VecDeque::new(),
            skip,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Input rate.
    pub fn input_rate(&self) -> u32 {
        self.from
    }

    /// Output rate.
    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Added latency, in output samples (the FFT filter's delay; 0 between equal rates).
    pub fn delay_samples(&self) -> usize {
        self.fft.as_ref().map_or(0, |f| f.output_delay())
    }

    /// Feeds input samples.
    pub fn push(&mut self, input: &[i16]) -> Result<(), ResampleError> {
        if self.fft.is_none() {
            self.out.extend(input);
            return Ok(());
        }
        self.total_in += input.len() as u64;
        self.pending_in
            .extend(input.iter().map(|&s| s as f32 / 32768.0));
        self.process_pending()
    }

    /// Pushes the input still held inside the filter out (the end of an utterance): pads with
    /// silence and keeps only the output the real input is owed. The next push starts afresh.
    pub fn drain(&mut self) -> Result<(), ResampleError> {
        let Some(pad) = self.fft.as_ref().map(|f| f.input_frames_next()) else {
            return Ok(());
        };
        let owed = self.owed();
        let mut rounds = 0;
        while self.total_out < owed && rounds < 8 {
            self.pending_in.resize(self.pending_in.len() + pad, 0.0);
            self.process_pending()?;
            rounds += 1;
        }
        let excess = (self.total_out.saturating_sub(owed) as usize).min(self.out.len());
        self.out.truncate(self.out.len() - excess);
        self.reset_filter();
        Ok(())
    }

    fn reset_filter(&mut self) {
        self.pending_in.clear();
        if let Some(f) = self.fft.as_mut() {
            f.reset();
            self.skip = f.output_delay();
        }
        self.total_in = 0;
        self.total_out = 0;
    }

    fn process_pending(&mut self) -> Result<(), ResampleError> {
        let Some(fft) = self.fft.as_mut() else {
            return Ok(());
        };
        loop {
            let need = fft.input_frames_next();
            if self.pending_in.len() < need {
                break;
            }
            self.input_scratch.clear();
            self.input_scratch.extend(self.pending_in.drain(..need));
            let capacity = self.output_scratch.len();
            let input = InterleavedSlice::new(&self.input_scratch, 1, need)
                .expect("input slice sized to its frame count");
            let mut output = InterleavedSlice::new_mut(&mut self.output_scratch, 1, capacity)
                .expect("output slice sized to its frame count");
            let (_, written) = fft.process_into_buffer(&input, &mut output, None)?;
            let skipped = self.skip.min(written);
            self.skip -= skipped;
            self.total_out += (written - skipped) as u64;
            self.out.extend(
                self.output_scratch[skipped..written]
                    .iter()
                    .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
            );
        }
        Ok(())
    }

    /// Output samples ready.
    pub fn available(&self) -> usize {
        self.out.len()
    }

    /// Whether no output is ready or still owed for input already pushed.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty() && self.total_out >= self.owed()
    }

    /// Output samples the input pushed so far is worth.
    fn owed(&self) -> u64 {
        self.total_in * self.to as u64 / self.from as u64
    }

    /// Replaces `frame` with one 20 ms output frame if a whole one is ready (else `false`,
    /// `frame` untouched). The caller's buffer is reused: this runs for every packet.
    pub fn pop_frame(&mut self, frame: &mut Vec<i16>) -> bool {
        let n = samples_for_ms(self.to, 20);
        if self.out.len() < n {
            return false;
        }
        frame.clear();
        move_front(&mut self.out, n, frame);
        true
    }

    /// Moves every ready output sample to the end of `queue`, without an intermediate copy.
    pub fn pop_all_into(&mut self, queue: &mut VecDeque<i16>) {
        queue.append(&mut self.out);
    }

    /// Pops every ready output sample.
    pub fn pop_all(&mut self) -> Vec<i16> {
        let n = self.out.len();
        let mut all = Vec::with_capacity(n);
        move_front(&mut self.out, n, &mut all);
        all
    }

    /// Drops buffered input and output and resets the filter state (barge-in).
    pub fn clear(&mut self) {
        self.out.clear();
        self.reset_filter();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f64, secs: f64, amplitude: f64) -> Vec<i16> {
        let n = (rate as f64 * secs) as usize;
        (0..n)
            .map(|i| {
                ((2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() * amplitude)
                    as i16
            })
            .collect()
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }

    fn convert(from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let mut r = StreamResampler::new(from, to).unwrap();
        // Feed in uneven pieces, as a network would.
        for piece in input.chunks(333) {
            r.push(piece).unwrap();
        }
        r.pop_all()
    }

    #[test]
    fn out_of_band_tone_is_removed_when_downsampling() {
        for from in [16000u32, 24000, 48000, 22050] {
            // 5 kHz is above the 4 kHz Nyquist limit of 8 kHz output: must vanish, not alias.
            let out = convert(from, 8000, &tone(from, 5000.0, 1.0, 16000.0));
            let steady = &out[out.len() / 4..out.len() * 3 / 4];
            assert!(
                rms(steady) < 16000.0 * 0.001,
                "{from} Hz: alias rms {}",
                rms(steady)
            );
            // An in-band 1 kHz tone passes at (nearly) full level.
            let out = convert(from, 8000, &tone(from, 1000.0, 1.0, 16000.0));
            let steady = &out[out.len() / 4..out.len() * 3 / 4];
            let expected = 16000.0 / 2f64.sqrt();
            assert!(
                (rms(steady) / expected - 1.0).abs() < 0.05,
                "{from} Hz: in-band rms {}",
                rms(steady)
            );
        }
    }

    #[test]
    fn lengths_follow_the_rate_ratio_and_frames_are_20ms() {
        for (from, to) in [
            (8000u32, 16000u32),
            (8000, 24000),
            (24000, 8000),
            (48000, 8000),
            (22050, 16000),
            (8000, 48000),
        ] {
            let mut r = StreamResampler::new(from, to).unwrap();
            let input = tone(from, 440.0, 2.0, 8000.0);
            r.push(&input).unwrap();
            let expected = 2.0 * to as f64;
            let got = r.available() as f64;
            // Everything except the tail still inside the filter comes out.
            assert!(
                got <= expected && got > expected - 3.0 * samples_for_ms(to, 20) as f64,
                "{from}->{to}: {got}"
            );
            r.drain().unwrap();
            assert_eq!(r.available() as f64, expected, "{from}->{to} after drain");
            let mut frame = Vec::new();
            assert!(r.pop_frame(&mut frame));
            assert_eq!(frame.len(), samples_for_ms(to, 20));
        }
    }

    #[test]
    fn drain_releases_exactly_the_owed_output_without_leading_delay() {
        for (from, to) in [
            (24000u32, 8000u32),
            (8000, 24000),
            (22050, 8000),
            (16000, 48000),
        ] {
            let mut r = StreamResampler::new(from, to).unwrap();
            // 110 ms: not a whole number of 20 ms chunks.
            let input = tone(from, 300.0, 0.11, 10000.0);
            r.push(&input).unwrap();
            r.drain().unwrap();
            let out = r.pop_all();
            let owed = input.len() as u64 * to as u64 / from as u64;
            assert_eq!(out.len() as u64, owed, "{from}->{to}");
            // No start-up silence: the sine's first peak is within its first quarter period.
            let quarter = (to as f64 / 300.0 / 4.0) as usize + 4;
            assert!(
                out[..quarter * 2].iter().any(|&s| s > 5000),
                "{from}->{to} starts late"
            );
            // A second utterance after the drain behaves the same.
            r.push(&input).unwrap();
            r.drain().unwrap();
            assert_eq!(r.pop_all().len() as u64, owed);
        }
    }

    #[test]
    fn equal_rates_pass_through_and_bad_rates_fail() {
        let mut r = StreamResampler::new(8000, 8000).unwrap();
        r.push(&[1, 2, 3]).unwrap();
        assert_eq!(r.pop_all(), [1, 2, 3]);
        assert_eq!(r.delay_samples(), 0);
        assert!(StreamResampler::new(0, 8000).is_err());
        assert!(StreamResampler::new(8000, 1_000_000).is_err());
        let mut down = StreamResampler::new(48000, 8000).unwrap();
        down.push(&[100; 2000]).unwrap();
        down.clear();
        assert_eq!(down.available(), 0);
    }

    #[test]
    fn pcm16_bytes_keep_a_sample_split_across_chunks() {
        let mut same = Pcm16Converter::new(8000, 8000).unwrap();
        assert_eq!(same.convert(&[1, 0, 2], false).unwrap(), [1, 0]);
        assert_eq!(same.convert(&[0, 3, 0], false).unwrap(), [2, 0, 3, 0]);
        // 100 ms at 8 kHz in odd-sized pieces comes out as 100 ms at 16 kHz, once drained.
        let mut up = Pcm16Converter::new(8000, 16000).unwrap();
        let input: Vec<u8> = (0..800i16).flat_map(|s| (s * 10).to_le_bytes()).collect();
        let mut out = Vec::new();
        for piece in input.chunks(333) {
            out.extend(up.convert(piece, false).unwrap());
        }
        out.extend(up.convert(&[], true).unwrap());
        assert_eq!(out.len(), 1600 * 2);
    }
}
