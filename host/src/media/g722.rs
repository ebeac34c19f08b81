//! G.722 wideband speech at 64 kbit/s (ITU-T G.722 mode 1), written from the Recommendation:
//! 16 kHz audio is split by a 24-tap quadrature mirror filter into a 0–4 kHz and a 4–8 kHz
//! band, each coded by ADPCM (6 bits a sample for the lower band, 2 for the upper) with the
//! same adaptive predictor (two poles, six zeros). One byte carries one pair of input samples:
//! the upper band's 2 bits on top, the lower band's 6 below (G.722's own octet, as the peers
//! here send it: baresip's g722 module on spandsp is the interop test).
//!
//! On RTP (static payload type 9) the clock is 8000/s though the audio is 16 kHz, an error of
//! RFC 1890 kept for compatibility: RFC 3551 §4.5.2
//! (<https://datatracker.ietf.org/doc/rfc3551>), IANA's RTP parameters (PT 9 `G722`, 8000 Hz),
//! and e.g. GStreamer's `rtpg722pay2` (16 kHz audio in, `clock-rate: 8000` out,
//! <https://gstreamer.freedesktop.org/documentation/rsrtp/rtpg722pay2.html>) agree.
//!
//! The block names in comments (INVQAL, LOGSCL, UPPOL2, ...) are the Recommendation's, so the
//! code can be read against its figures. Arithmetic follows the Recommendation's 16-bit
//! fixed-point rules (products shifted right by 15, results limited), which is what keeps an
//! encoder and any other conforming decoder in step.

/// The transmit and receive QMF coefficients h0..h23 (Table 11/G.722, scaled by 2^13).
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32,
    -156, 12, 53, -11, -11, 3,
];

/// Lower-band quantizer decision levels (Table 6/G.722), scaled by 8; index 1..=29.
const Q6: [i32; 30] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/// Lower-band inverse quantizer outputs for the 6-bit codes (Table 6/G.722).
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];

/// Inverse quantizer outputs for the 4-bit truncated lower-band code (Table 7/G.722), which
/// is what drives the lower band's adaptation.
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];

/// Lower-band log scale factor multipliers (Table 8/G.722), by the 4-bit code's magnitude.
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
/// The 4-bit code's magnitude class.
const RL42: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];

/// Upper-band inverse quantizer outputs (Table 9/G.722) and log scale factor multipliers.
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const WH: [i32; 3] = [0, -214, 798];
const RH2: [usize; 4] = [2, 1, 2, 1];

/// 2^(i/32) scaled by 2048: the antilog table of the scale factor (Table 10/G.722).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Limits of the log scale factors (NBL, NBH) and the reconstructed signals.
const NB_MAX_LOW: i32 = 18432;
const NB_MAX_HIGH: i32 = 22528;

fn limit(x: i32) -> i32 {
    x.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// The sign bit of a 16-bit quantity: -1 for negative, 0 otherwise (the Recommendation's SG).
fn sign(x: i32) -> i32 {
    if x < 0 { -1 } else { 0 }
}

/// The 6-bit lower-band code for quantizer interval `i` (1..=30) and the error's sign: the
/// interval order of Table 6, positive codes falling from 61, negative from 63.
fn low_code(interval: usize, negative: bool) -> i32 {
    let i = interval as i32;
    match (negative, interval) {
        (false, _) => 62 - i,
        (true, 1 | 2) => 64 - i,
        (true, _) => 34 - i,
    }
}

/// One sub-band's ADPCM state: the scale factor and the adaptive predictor.
#[derive(Debug, Clone)]
struct Band {
    /// Log scale factor (NBL/NBH) and the quantizer scale factor (DETL/DETH) from it.
    nb: i32,
    det: i32,
    /// Predicted signal (S), its pole (SP) and zero (SZ) parts.
    s: i32,
    sp: i32,
    sz: i32,
    /// Reconstructed signals, partial reconstructions and pole coefficients, newest first.
    r: [i32; 3],
    p: [i32; 3],
    a: [i32; 3],
    /// Quantized differences and zero coefficients, newest first.
    d: [i32; 7],
    b: [i32; 7],
}

impl Band {
    fn new(det: i32) -> Band {
        Band {
            nb: 0,
            det,
            s: 0,
            sp: 0,
            sz: 0,
            r: [0; 3],
            p: [0; 3],
            a: [0; 3],
            d: [0; 7],
            b: [0; 7],
        }
    }

    /// LOGSCL/LOGSCH then SCALEL/SCALEH: the log scale factor leaks and steps by `step`,
    /// limited to `max`; the scale factor is its antilog, `shift` setting its range.
    fn scale(&mut self, step: i32, max: i32, shift: i32) {
        self.nb = (((self.nb * 127) >> 7) + step).clamp(0, max);
        let mantissa = ILB[((self.nb >> 6) & 31) as usize];
        let exponent = shift - (self.nb >> 11);
        let antilog = if exponent < 0 {
            mantissa << -exponent
        } else {
            mantissa >> exponent
        };
        self.det = antilog << 2;
    }

    /// Block 4: the predictor adapts to the quantized difference `dx` and predicts the next
    /// sample.
    fn adapt(&mut self, dx: i32) {
        // RECONS, PARREC
        self.d[0] = dx;
        self.r[0] = limit(self.s + dx);
        self.p[0] = limit(self.sz + dx);
        // UPPOL2: the second pole coefficient.
        let sg0 = sign(self.p[0]);
        let sg1 = sign(self.p[1]);
        let sg2 = sign(self.p[2]);
        let wd1 = limit(self.a[1] << 2);
        let wd2 = (if sg0 == sg1 { -wd1 } else { wd1 }).min(i16::MAX as i32);
        let wd3 = (wd2 >> 7) + (if sg0 == sg2 { 128 } else { -128 }) + ((self.a[2] * 32512) >> 15);
        let a2 = wd3.clamp(-12288, 12288);
        // UPPOL1: the first pole coefficient, bounded by the second for stability.
        let step = if sg0 == sg1 { 192 } else { -192 };
        let bound = limit(15360 - a2);
        let a1 = limit(step + ((self.a[1] * 32640) >> 15)).clamp(-bound, bound);
        // UPZERO: the zero coefficients step towards the sign agreement of the differences.
        let step = if dx == 0 { 0 } else { 128 };
        let sgd = sign(dx);
        let mut b = [0; 7];
        for (i, bi) in b.iter_mut().enumerate().skip(1) {
            let agree = if sign(self.d[i]) == sgd { step } else { -step };
            *bi = limit(agree + ((self.b[i] * 32640) >> 15));
        }
        // DELAYA
        self.d.copy_within(0..6, 1);
        self.b = b;
        self.r.copy_within(0..2, 1);
        self.p.copy_within(0..2, 1);
        self.a[1] = a1;
        self.a[2] = a2;
        // FILTEP, FILTEZ, PREDIC
        let pole = |a: i32, r: i32| (a * limit(r + r)) >> 15;
        self.sp = limit(pole(self.a[1], self.r[1]) + pole(self.a[2], self.r[2]));
        let zeros: i32 = (1..7)
            .map(|i| (self.b[i] * limit(self.d[i] + self.d[i])) >> 15)
            .sum();
        self.sz = limit(zeros);
        self.s = limit(self.sp + self.sz);
    }

    /// The lower band after its 6-bit `code` went out or came in: adaptation uses only the
    /// code's top 4 bits (so a decoder that drops bits stays in step).
    fn update_low(&mut self, code: i32) {
        let ril = (code >> 2) as usize;
        let dx = (self.det * QM4[ril]) >> 15;
        self.scale(WL[RL42[ril]], NB_MAX_LOW, 8);
        self.adapt(dx);
    }

    /// The upper band after its 2-bit `code`; returns the quantized difference.
    fn update_high(&mut self, code: i32) -> i32 {
        let dx = (self.det * QM2[code as usize]) >> 15;
        self.scale(WH[RH2[code as usize]], NB_MAX_HIGH, 10);
        self.adapt(dx);
        dx
    }
}

/// The delay line of a QMF: the last 24 samples, oldest first.
#[derive(Debug, Clone, Default)]
struct Qmf {
    x: [i32; 24],
}

impl Qmf {
    /// Shifts in two samples; returns the filter's sums over the odd and the even taps.
    fn push(&mut self, first: i32, second: i32) -> (i32, i32) {
        self.x.copy_within(2.., 0);
        self.x[22] = first;
        self.x[23] = second;
        let (mut odd, mut even) = (0, 0);
        for k in (0..24).step_by(2) {
            even += self.x[k] * QMF[k];
            odd += self.x[k + 1] * QMF[k + 1];
        }
        (odd, even)
    }
}

/// G.722 encoder: 16 kHz 16-bit PCM in, one byte per two samples out.
#[derive(Debug, Clone)]
pub struct Encoder {
    qmf: Qmf,
    low: Band,
    high: Band,
    /// An odd sample left from the last call, waiting for its pair.
    pending: Option<i16>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            qmf: Qmf::default(),
            low: Band::new(32),
            high: Band::new(8),
            pending: None,
        }
    }

    /// Encodes `pcm`, appending a byte for every pair of samples (an odd last sample waits
    /// for the next call).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) {
        let mut samples = pcm.iter().copied();
        let mut next_pair = |pending: &mut Option<i16>| {
            let first = pending.take().or_else(|| samples.next())?;
            match samples.next() {
                Some(second) => Some((first, second)),
                None => {
                    *pending = Some(first);
                    None
                }
            }
        };
        while let Some((first, second)) = next_pair(&mut self.pending) {
            out.push(self.encode_pair(first as i32, second as i32));
        }
    }

    fn encode_pair(&mut self, first: i32, second: i32) -> u8 {
        // Transmit QMF: the two bands at 8 kHz.
        let (odd, even) = self.qmf.push(first, second);
        let xl = (odd + even) >> 14;
        let xh = (odd - even) >> 14;

        // Lower band: SUBTRA, QUANTL.
        let el = limit(xl - self.low.s);
        let magnitude = if el >= 0 { el } else { -(el + 1) };
        let interval = (1..30)
            .find(|&i| magnitude < (Q6[i] * self.low.det) >> 12)
            .unwrap_or(30);
        let low = low_code(interval, el < 0);
        self.low.update_low(low);

        // Upper band: SUBTRA, QUANTH.
        let eh = limit(xh - self.high.s);
        let magnitude = if eh >= 0 { eh } else { -(eh + 1) };
        let big = magnitude >= (564 * self.high.det) >> 12;
        let high = match (eh < 0, big) {
            (false, false) => 3,
            (false, true) => 2,
            (true, false) => 1,
            (true, true) => 0,
        };
        self.high.update_high(high);

        ((high << 6) | low) as u8
    }
}

/// G.722 decoder: one byte in, two 16 kHz 16-bit samples out.
#[derive(Debug, Clone)]
pub struct Decoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            qmf: Qmf::default(),
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes `payload`, appending two samples per byte.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        out.reserve(payload.len() * 2);
        for &byte in payload {
            let (first, second) = self.decode_byte(byte);
            out.push(first);
            out.push(second);
        }
    }

    fn decode_byte(&mut self, byte: u8) -> (i16, i16) {
        let low = (byte & 0x3f) as i32;
        let high = (byte >> 6) as i32;

        // Lower band: INVQBL with all 6 bits for the output, RECONS, LIMIT.
        let rl = (self.low.s + ((self.low.det * QM6[low as usize]) >> 15)).clamp(-16384, 16383);
        self.low.update_low(low);

        // Upper band: INVQAH, RECONS, LIMIT.
        let predicted = self.high.s;
        let dh = self.high.update_high(high);
        let rh = (predicted + dh).clamp(-16384, 16383);

        // Receive QMF: back to 16 kHz.
        let (odd, even) = self.qmf.push(rl + rh, rl - rh);
        let out = |sum: i32| limit(sum >> 11) as i16;
        (out(odd), out(even))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, n: usize, amplitude: f64) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 16000.0;
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    /// Signal-to-noise ratio (dB) of `decoded` against `source`, at the best delay up to
    /// `max_delay` samples (the two QMFs delay the signal by 22 samples; a tone matches at
    /// that delay modulo its period).
    fn snr_db(source: &[i16], decoded: &[i16], max_delay: usize) -> (f64, usize) {
        (0..=max_delay)
            .map(|delay| {
                let n = decoded.len() - delay;
                let (mut signal, mut noise) = (0f64, 0f64);
                // Skip the start-up of the adaptation.
                for i in 1600..n {
                    let s = source[i] as f64;
                    let e = decoded[i + delay] as f64 - s;
                    signal += s * s;
                    noise += e * e;
                }
                (10.0 * (signal / noise.max(1.0)).log10(), delay)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
    }

    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let mut encoder = Encoder::new();
        let mut decoder = Decoder::new();
        let mut decoded = Vec::new();
        // In 20 ms packets, as RTP carries them.
        for frame in pcm.chunks(320) {
            let mut payload = Vec::new();
            encoder.encode(frame, &mut payload);
            assert_eq!(payload.len(), frame.len() / 2);
            decoder.decode(&payload, &mut decoded);
        }
        decoded
    }

    #[test]
    fn tones_in_both_bands_round_trip_with_high_snr() {
        // 1 kHz (lower band, 6 bits a sample) and 6 kHz (upper band, 2 bits a sample).
        // Measured: 47, 57 and 27 dB.
        for (hz, min_db) in [(1000.0, 40.0), (440.0, 40.0), (6000.0, 20.0)] {
            let source = tone(hz, 16000, 8000.0);
            let decoded = round_trip(&source);
            assert_eq!(decoded.len(), source.len());
            let (snr, delay) = snr_db(&source, &decoded, 40);
            eprintln!("{hz} Hz: SNR {snr:.1} dB at a delay of {delay}");
            assert!(snr >= min_db, "{hz} Hz: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn gain_is_unity_and_loud_input_does_not_overflow() {
        let source = tone(1000.0, 16000, 30000.0);
        let decoded = round_trip(&source);
        let peak = |s: &[i16]| s[8000..].iter().map(|x| x.unsigned_abs()).max().unwrap();
        let ratio = peak(&decoded) as f64 / peak(&source) as f64;
        assert!((0.95..1.05).contains(&ratio), "gain {ratio:.3}");
        let (snr, _) = snr_db(&source, &decoded, 40);
        assert!(snr >= 25.0, "SNR {snr:.1} dB at full scale");
        // A square wave at full scale: limited, not wrapped.
        let square: Vec<i16> = (0..16000)
            .map(|i| {
                if (i / 40) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let decoded = round_trip(&square);
        let (snr, _) = snr_db(&square, &decoded, 40);
        assert!(snr >= 10.0, "square wave SNR {snr:.1} dB");
    }

    #[test]
    fn silence_stays_silent_and_odd_samples_wait() {
        let decoded = round_trip(&vec![0; 3200]);
        let peak = decoded.iter().map(|s| s.unsigned_abs()).max().unwrap();
        eprintln!("silence decodes to a peak of {peak}");
        // The ADPCM's idle noise: a few least significant bits (the reference's too).
        assert!(peak <= 4, "silence decodes quiet: peak {peak}");
        let mut encoder = Encoder::new();
        let mut out = Vec::new();
        encoder.encode(&[1, 2, 3], &mut out);
        assert_eq!(out.len(), 1);
        encoder.encode(&[4], &mut out);
        assert_eq!(out.len(), 2, "the odd sample was kept for its pair");
    }

    #[test]
    fn codes_follow_table_6() {
        // The positive codes for intervals 1..=30 fall from 61 to 32, the negative ones are
        // 63, 62, then 31 down to 4: all 60 distinct, and QM6 has the sign of each.
        let mut seen = std::collections::HashSet::new();
        for i in 1..=30 {
            for negative in [false, true] {
                let code = low_code(i, negative);
                assert!(seen.insert(code), "code {code} twice");
                assert_eq!(QM6[code as usize] < 0, negative, "interval {i}");
            }
        }
        assert_eq!(low_code(1, false), 61);
        assert_eq!(low_code(30, true), 4);
    }

    /// libg722 (the bit-exact ITU-T implementation Sippy packages from spandsp, here version
    /// 1.2.8 from PyPI `G722`) encoded 1600 samples of noise plus a 500 Hz triangle, made by the
    /// generator below, into these bytes, and decoded them into samples whose FNV-1a hash is
    /// given: both directions here must be bit-exact with it.
    #[test]
    fn bit_exact_with_the_reference_implementation() {
        const ENCODED: [&str; 17] = [
            "2a842084208484890db52f312f29a937391ab54d0b0a8c15dbf9a9b23d6ee4ba1cd89f8f518f0e36781e2dd6a9e96d7c",
            "d2571816d0ff8c513ebd717171712e7d92ec15d85fd4949b5767976b7ba869ff50b4145a4e51f4947c3b186f68b9aedd",
            "d2fb37ff48dd3d587fea1df1b166fd7057b552f0d94bf892ef19b671ea38299bfd159cb4ff88df197cd77871e834f059",
            "55999e13354bd856b6f4ed9af1b6699df61f7b0eff49d46c1817f56ffae7553a70153ecdb7ca3cfe7ef31e69b0fe76db",
            "6ffcd1124bd8ef13181cbe68356652bf31f3cd7a15d4d3f95972f5d7ab7535b4b8553277c99391dfffb5d7ed5b2a37f3",
            "9bdbcf3792d09c1fceacf9dabc62bbb6deb1911cda537dd41df13decb9296fed3c55f21b165b159333d976fcb03274eb",
            "515cef0dbc9291ddb65a6af338f22bdc592f9890f990744bb659a87b2ff45df23feb8e53d0f1ce93377f5b5e2d697f2e",
            "4f3455b5cd59d99e553af49e782638f9bade9076cb96740dd57769baf5295879359c5af10e4d1fcff0ba7daf75adebdf",
            "e9db595c7c0bb459d77ed169b732ebd81c2895f1cd137718d732feebb6e879b8f1721bd8d0f88dbcd8339fd42674e9ff",
            "1f5f7a1437c6efd59f9af1156865d430fcd2f94e3fd6db541c315db4396aabd5f01af7d358cab510dd9af6b0d9ef6b57",
            "aeccebcfda0ed45e34b4f4721e255a6bf2cfd9b097ca9d509b729a6c1a28b3de55ae774dca1a9cce37dfbb5baaeff5de",
            "bf39f6cd0fd13e745a58ec522deb79ee97f41a7e1594ca9cdbd5ea1add25b3de2f4fefdc540f957774dffcaf792a731a",
            "fb7375d11a49d8711298b1752e78e63eff56ac92984d9a52731834ecfbe97b98e87a965f90d7cef7b458fa1ceba95baf",
            "7473985edc4bb23bfa152af9b4acf4b4ebfefa59ca5d973b7f0d703568fbb8ef5a5130785a8d955f15f1be776a3079b4",
            "3f2e937cdbcaeb537d7117f16b1dacd030ddb38e579755f099defeedb7f96d6d557bd9338fd43b5f4e367baeff2bb5fc",
            "3838dc4cbaccd9dfad8e5f712fab93f25130d6987e8c7c58f576ee5a396e7fedbf14ceb54b3b77917fd0e8eb321d6f5f",
            "3b5c567e16cefb956b943fb0b228f69adc7950b8585354b97f5ee9f2a9ef4e30",
        ];
        const DECODED_FNV1A: u64 = 0xec0d8d1b180fc138;
        let mut seed: u64 = 12345;
        let source: Vec<i16> = (0..1600)
            .map(|i| {
                seed = (seed * 1103515245 + 12345) % (1 << 31);
                let noise = ((seed >> 16) % 16001) as i32 - 8000;
                let t = i % 32;
                let triangle = (if t < 16 { t } else { 32 - t }) * 1400 - 11200;
                (noise + triangle) as i16
            })
            .collect();
        let expected: Vec<u8> = ENCODED
            .concat()
            .as_bytes()
            .chunks(2)
            .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
            .collect();
        let mut encoded = Vec::new();
        Encoder::new().encode(&source, &mut encoded);
        let first_difference = encoded.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "encoder output differs");
        assert_eq!(encoded.len(), expected.len());
        let mut decoded = Vec::new();
        Decoder::new().decode(&expected, &mut decoded);
        let hash = decoded
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        assert_eq!(
            hash,
            DECODED_FNV1A,
            "decoder output differs: {:?}",
            &decoded[..16]
        );
    }
}
