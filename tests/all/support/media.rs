//! Helpers for media tests: an RTP peer on 127.0.0.1 and audio made by real tools (sox,
//! espeak-ng).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use switchboard::media::g711;
use switchboard::media::rtp::{RtpPacket, is_rtcp};
use tokio::net::UdpSocket;

/// Runs a tool to completion and panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a mono 16-bit raw file (as written by `sox ... -t raw -e signed -b 16`).
pub fn read_raw_i16(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A remote RTP endpoint: sends G.711 μ-law at real-time pace, receives what the session sends.
pub struct RtpPeer {
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

impl RtpPeer {
    pub async fn new(session_port: u16) -> RtpPeer {
        RtpPeer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            target: SocketAddr::from(([127, 0, 0, 1], session_port)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Streams 8 kHz PCM as 20 ms PCMU packets on an absolute 20 ms grid.
    pub async fn stream_pcmu(&self, pcm: &[i16], ssrc: u32) {
        self.stream_pcmu_stamped(pcm, ssrc, None).await
    }

    /// [`stream_pcmu`](Self::stream_pcmu), each packet carrying its send time against `stamp`
    /// (see [`crate::support::model_audio::stamp`]) when given.
    pub async fn stream_pcmu_stamped(&self, pcm: &[i16], ssrc: u32, stamp: Option<Instant>) {
        let start = tokio::time::Instant::now();
        for (i, frame) in pcm.chunks(160).enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(20 * i as u64)).await;
            let mut payload: Vec<u8> = frame.iter().map(|&s| g711::ulaw_encode(s)).collect();
            if let Some(epoch) = stamp {
                crate::support::model_audio::stamp(&mut payload, epoch);
            }
            let mut buf = Vec::new();
            RtpPacket {
                payload_type: 0,
                marker: i == 0,
                sequence: i as u16,
                timestamp: i as u32 * 160,
                ssrc,
                payload: &payload,
            }
            .write(&mut buf)
            .unwrap();
            self.socket.send_to(&buf, self.target).await.unwrap();
        }
    }

    /// Receives packets for `duration` and returns, for each that starts a talkspurt (marker
    /// bit), the time since the stamp it carries (see [`crate::support::model_audio::stamp`]).
    pub async fn receive_talkspurt_stamps(
        &self,
        duration: Duration,
        epoch: Instant,
    ) -> Vec<Duration> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut latencies = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
        {
            if let Ok(p) = RtpPacket::parse(&buf[..n])
                && !is_rtcp(&buf[..n])
                && p.marker
                && p.payload.len() >= crate::support::model_audio::STAMP_LEN
            {
                latencies.push(crate::support::model_audio::since_stamp(p.payload, epoch));
            }
        }
        latencies
    }

    /// Receives PCMU packets for `duration` and returns them decoded, in sequence order.
    pub async fn receive_pcmu(&self, duration: Duration) -> Vec<i16> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
        {
            if is_rtcp(&buf[..n]) {
                continue;
            }
            if let Ok(p) = RtpPacket::parse(&buf[..n])
                && p.payload_type == 0
            {
                packets.push((p.sequence, p.payload.to_vec()));
            }
        }
        let first = packets.first().map_or(0, |p| p.0);
        packets.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
        packets
            .into_iter()
            .flat_map(|(_, payload)| payload.into_iter().map(g711::ulaw_decode))
            .collect()
    }
}

/// Normalised cross-correlation of `a` and `b` at the best lag within ±`max_lag` samples.
pub fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (f64, isize) {
    let mut best = (f64::MIN, 0isize);
    for lag in -(max_lag as isize)..=max_lag as isize {
        let (x, y) = if lag >= 0 {
            (&a[lag as usize..], b)
        } else {
            (a, &b[(-lag) as usize..])
        };
        let n = x.len().min(y.len());
        if n == 0 {
            continue;
        }
        let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let (p, q) = (x[i] as f64, y[i] as f64);
            xy += p * q;
            xx += p * p;
            yy += q * q;
        }
        let c = xy / (xx.sqrt() * yy.sqrt()).max(1.0);
        if c > best.0 {
            best = (c, lag);
        }
    }
    best
}

/// A 16-bit PCM WAV file: interleaved samples (enough for what peers and tools here write).
pub struct Wav {
    pub channels: usize,
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn parse(wav: &[u8]) -> Wav {
        let channels = u16::from_le_bytes([wav[22], wav[23]]) as usize;
        let rate = u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]);
        let data = wav
            .windows(4)
            .position(|w| w == b"data")
            .map(|i| i + 8)
            .expect("data chunk");
        let samples = wav[data..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Wav {
            channels,
            rate,
            samples,
        }
    }

    pub fn read(path: &Path) -> Wav {
        Wav::parse(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// One channel's samples (0 = left).
    pub fn channel(&self, index: usize) -> Vec<i16> {
        self.samples
            .iter()
            .skip(index)
            .step_by(self.channels)
            .copied()
            .collect()
    }
}

/// RMS of 20 ms windows of a mono-or-stereo 16-bit WAV (first channel).
pub fn window_rms(wav: &[u8]) -> Vec<f64> {
    let wav = Wav::parse(wav);
    wav.channel(0)
        .chunks(wav.rate as usize / 50)
        .map(window_rms_of)
        .collect()
}

fn window_rms_of(w: &[i16]) -> f64 {
    (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt()
}

/// `samples` at `from` Hz brought to `to` Hz through the host's own anti-aliased resampler
/// (its delay removed, so the output lines up with the input).
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    let mut r = switchboard::resample::StreamResampler::new(from, to).unwrap();
    r.push(samples).unwrap();
    r.drain().unwrap();
    let mut out = Vec::with_capacity(samples.len() * to as usize / from as usize);
    let mut frame = Vec::new();
    while r.pop_frame(&mut frame) {
        out.extend_from_slice(&frame);
    }
    out
}

/// `samples` at `rate` brought to 8 kHz.
pub fn to_8k(samples: &[i16], rate: u32) -> Vec<i16> {
    resample(samples, rate, 8000)
}

/// The share of the energy of `samples` (at `rate`) above 4 kHz: what a narrowband path
/// (8 kHz anywhere on the way) takes away.
pub fn wideband_share(samples: &[i16], rate: u32) -> f64 {
    let narrow = resample(&to_8k(samples, rate), 8000, rate);
    let (mut high, mut all) = (0f64, 0f64);
    for (&x, &n) in samples.iter().zip(&narrow) {
        let (x, n) = (f64::from(x), f64::from(n));
        high += (x - n) * (x - n);
        all += x * x;
    }
    high / all.max(1.0)
}

/// Index of the first sample of the first 20 ms window (8 kHz) whose RMS exceeds `rms`.
pub fn onset(samples: &[i16], rms: f64) -> Option<usize> {
    samples
        .chunks(160)
        .position(|w| window_rms_of(w) > rms)
        .map(|i| i * 160)
}

/// Correlation of `len` samples of `sent` (from its onset) with `received` (from its own
/// onset), at the best lag within ±50 ms: how faithfully a signal crossed a call. Both at
/// 8 kHz.
pub fn onset_correlation(sent: &[i16], received: &[i16], len: usize) -> f64 {
    const LAG: usize = 400;
    let a = onset(sent, 500.0).expect("the sent signal has a loud part");
    let b = onset(received, 500.0).expect("the received signal has a loud part");
    let sent = &sent[a..(a + len).min(sent.len())];
    let received = &received[b.saturating_sub(LAG)..(b + len + LAG).min(received.len())];
    // `received` starts up to LAG early, so the search over 0..2·LAG covers both directions.
    best_correlation(received, sent, 2 * LAG).0
}

/// A microphone track at 8 kHz: `quiet` seconds of silence (while the agent greets), `tones`
/// seconds of [`tone_sequence`], then `tail` seconds of silence.
pub fn quiet_then_tones(quiet: usize, tones: usize, tail: usize) -> Vec<i16> {
    const RATE: usize = 8000;
    let mut out = vec![0i16; quiet * RATE];
    out.extend(tone_sequence(RATE as u32, tones as f64));
    out.extend(std::iter::repeat_n(0, tail * RATE));
    out
}

/// The one file in `dir` whose name ends with `suffix` (a recording); panics unless there is
/// exactly one.
pub fn only_file(dir: &Path, suffix: &str) -> std::path::PathBuf {
    let found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {suffix} in {}: {found:?}",
        dir.display()
    );
    found[0].clone()
}

/// `secs` of 80 ms tones at pseudo-random pitches between 300 and 3000 Hz (phase-continuous)
/// at `rate`: speech-like in having one unambiguous alignment, and within every codec's band.
pub fn tone_sequence(rate: u32, secs: f64) -> Vec<i16> {
    let rate = f64::from(rate);
    let mut out = Vec::new();
    let mut seed: u32 = 0x2545_f491;
    let mut phase = 0f64;
    for _ in 0..(secs * 1000.0 / 80.0) as usize {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let freq = 300.0 + f64::from(seed % 2700);
        for _ in 0..(rate * 80.0 / 1000.0) as usize {
            phase += 2.0 * std::f64::consts::PI * freq / rate;
            out.push((phase.sin() * 8000.0) as i16);
        }
    }
    out
}

/// A mono 16-bit PCM WAV of `samples`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = samples.len() as u32 * 2;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    std::fs::write(path, w).unwrap();
}
