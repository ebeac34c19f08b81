//! Helpers for calls placed by a real phone (baresip) at the `switchboard` binary: microphone
//! tracks, dialling, baresip's recordings and where agent or caller audio is in them.

use std::path::Path;
use std::time::Duration;

use crate::support::baresip::{Baresip, BaresipCtrl};
use crate::support::host::Host;
use crate::support::media::{
    Wav, only_file, onset_correlation, quiet_then_tones, read_raw_i16, run, to_8k,
};
use crate::support::process::require;
use switchboard::media::Codec;

/// Rate of baresip's microphone and recordings here.
pub const RATE: usize = 8000;
/// 20 ms analysis windows.
pub const WINDOW: usize = RATE / 50;
/// The tone the model fakes speak.
pub const AGENT_HZ: f64 = 300.0;
/// The tone the phone's user "speaks".
pub const CALLER_HZ: f64 = 500.0;

/// A microphone track: silence with 500 Hz "speech" at the given (start s, length s) spans.
pub fn mic(secs: f64, speech: &[(f64, f64)]) -> Vec<i16> {
    let mut s = vec![0i16; (secs * RATE as f64) as usize];
    for &(from, len) in speech {
        let a = (from * RATE as f64) as usize;
        let b = ((from + len) * RATE as f64) as usize;
        for (i, x) in s[a..b].iter_mut().enumerate() {
            let t = i as f64 / RATE as f64;
            *x = (8000.0 * (2.0 * std::f64::consts::PI * CALLER_HZ * t).sin()) as i16;
        }
    }
    s
}

/// `text` spoken by espeak-ng (US English), as 16-bit audio at `rate` (sox's resampler).
pub fn espeak_at(text: &str, rate: u32) -> Vec<i16> {
    let dir = crate::support::tempdir("speech");
    let (wav, raw) = (dir.path().join("s.wav"), dir.path().join("s.raw"));
    let (wav, raw) = (wav.to_str().unwrap(), raw.to_str().unwrap());
    run("espeak-ng", &["-v", "en-us", "-w", wav, text]);
    let rate = rate.to_string();
    let to_raw = [
        "-r",
        &rate,
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-t",
        "raw",
    ];
    let mut args = vec![wav];
    args.extend(to_raw);
    args.push(raw);
    run("sox", &args);
    read_raw_i16(Path::new(raw))
}

/// Whether this machine can run calls the offline recogniser hears: a phone, espeak-ng, sox
/// and PocketSphinx's model (under CI=true each must be there).
pub fn offline_speech_ready() -> bool {
    if !require("baresip") || !require("espeak-ng") || !require("sox") {
        return false;
    }
    let model = Path::new("/usr/share/pocketsphinx/model/en-us/en-us/mdef");
    if !model.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the PocketSphinx model (pocketsphinx-en-us) is required under CI=true"
        );
        eprintln!("SKIP: pocketsphinx-en-us is not installed");
        return false;
    }
    true
}

/// A microphone track of `secs` seconds: silence with espeak-ng speech of each (start s, text).
pub fn speech_mic(secs: f64, speech: &[(f64, &str)]) -> Vec<i16> {
    let mut s = vec![0i16; (secs * RATE as f64) as usize];
    for &(from, text) in speech {
        let a = (from * RATE as f64) as usize;
        let words = espeak_at(text, RATE as u32);
        let b = (a + words.len()).min(s.len());
        s[a..b].copy_from_slice(&words[..b - a]);
    }
    s
}

/// Dial `number` on the host and wait until the call is up.
pub async fn dial(phone: &Baresip, number: &str, sip_port: u16) -> BaresipCtrl {
    let mut ctrl = phone.ctrl().await;
    ctrl.dial(&format!("sip:{number}@127.0.0.1:{sip_port}"), phone)
        .await;
    ctrl
}

/// First channel of the first WAV baresip recorded (`-dec`: heard, `-enc`: sent), brought to
/// 8 kHz (baresip records at the codec's rate: 48 kHz on Opus). Files are named by their start
/// time, so the first by name is the first call's.
pub fn recording(phone: &Baresip, suffix: &str) -> Vec<i16> {
    let path = std::fs::read_dir(phone.dir.path().join("rec"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .min()
        .unwrap_or_else(|| panic!("baresip recorded {suffix}"));
    let wav = Wav::read(&path);
    match wav.rate as usize {
        RATE => wav.channel(0),
        _ => to_8k(&wav.channel(0), wav.rate),
    }
}

/// Amplitude of the `hz` component of each 20 ms window (Goertzel): how much of the window is
/// the fake's (or the caller's) tone, whatever else is there.
pub fn tone_level(samples: &[i16], hz: f64) -> Vec<f64> {
    let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
    samples
        .chunks_exact(WINDOW)
        .map(|win| {
            let (mut s1, mut s2) = (0.0, 0.0);
            for &x in win {
                let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
            2.0 * power.sqrt() / WINDOW as f64
        })
        .collect()
}

/// Sample-accurate spans of the `hz` tone: (start, end) sample indexes, joining gaps shorter
/// than `min_gap` samples.
pub fn tone_spans(samples: &[i16], hz: f64, min_gap: usize) -> Vec<(usize, usize)> {
    spans_of(samples, &tone_level(samples, hz), min_gap)
}

/// Sample-accurate spans of any loud sound (a recording holding one talker only).
pub fn loud_spans(samples: &[i16], min_gap: usize) -> Vec<(usize, usize)> {
    let levels: Vec<f64> = samples
        .chunks_exact(WINDOW)
        .map(|w| crate::support::model_audio::rms(w) * std::f64::consts::SQRT_2)
        .collect();
    spans_of(samples, &levels, min_gap)
}

/// How many 20 ms windows of `samples` hold sound (RMS above 300): speech heard, whatever
/// its pitch.
pub fn loud_windows(samples: &[i16]) -> usize {
    samples
        .chunks_exact(WINDOW)
        .filter(|w| crate::support::model_audio::rms(w) > 300.0)
        .count()
}

/// How long the sound in `span` (spans joined across gaps) lasts in ms, less those gaps: where
/// a loaded machine lets playout run dry the sound pauses, but keeps its length. `fine` are the
/// same sound's spans joined only across gaps under a window.
pub fn sounding_ms(fine: &[(usize, usize)], span: (usize, usize)) -> f64 {
    fine.iter()
        .filter(|(from, to)| *from >= span.0 && *to <= span.1)
        .map(|(from, to)| ms(to - from))
        .sum()
}

/// Windows whose level is ≥ 1000 joined into spans, edges refined to the loud sample.
fn spans_of(samples: &[i16], levels: &[f64], min_gap: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &l) in levels.iter().enumerate() {
        if l < 1000.0 {
            continue;
        }
        let (a, b) = (i * WINDOW, (i + 1) * WINDOW);
        match out.last_mut() {
            Some(last) if a - last.1 < min_gap => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    // Refine the edges to the sample where the signal starts/stops (the sound is loud, the rest
    // is digital silence or other sounds far quieter at the edge).
    for span in &mut out {
        let loud = |x: &i16| x.unsigned_abs() > 500;
        let from = span.0.saturating_sub(WINDOW);
        span.0 = from + samples[from..span.1].iter().position(loud).unwrap_or(0);
        let to = (span.1 + WINDOW).min(samples.len());
        span.1 = span.0 + samples[span.0..to].iter().rposition(loud).unwrap_or(0) + 1;
    }
    out
}

/// Milliseconds of `samples` at 8 kHz.
pub fn ms(samples: usize) -> f64 {
    samples as f64 * 1000.0 / RATE as f64
}

/// Spans as (start ms, length ms), for messages.
pub fn spans_ms(spans: &[(usize, usize)]) -> Vec<(f64, f64)> {
    spans.iter().map(|&(a, b)| (ms(a), ms(b) - ms(a))).collect()
}

/// The microphone stays silent while the greeting plays, then sends this many seconds of tones.
const QUIET_SECS: usize = 11;
const TONE_SECS: usize = 4;

/// One run of [`audio_both_ways`]: the codec and the microphone track to give the phone.
pub struct AudioCheck {
    pub codec: String,
    pub mic: Vec<i16>,
}

impl AudioCheck {
    pub fn new(codec: &str) -> AudioCheck {
        AudioCheck {
            codec: codec.into(),
            mic: quiet_then_tones(QUIET_SECS, TONE_SECS, 3),
        }
    }
}

/// A call from `phone` (started with `check.mic`, recording with `module sndfile.so`) to the
/// `menu` agent at `uri` on a host recording its calls: what the microphone sends is in the
/// caller channel of the host's recording, and what the agent says (the greeting) is in
/// baresip's recording of what it received, each correlating ≥ 0.9; keypad digits sent over
/// RFC 4733 on the same call reach the agent. Returns the two correlations.
pub async fn audio_both_ways(
    host: &mut Host,
    phone: &Baresip,
    uri: &str,
    check: &AudioCheck,
) -> (f64, f64) {
    let codec = check.codec.as_str();
    let mut ctrl = phone.ctrl().await;
    ctrl.dial(uri, phone).await;
    let negotiated = codec.parse::<Codec>().unwrap().encoding_name();
    host.expect(&["Answered", &format!("codec: \"{negotiated}\"")], 10);
    // The greeting, then the microphone's tones, then a key press on the same call.
    tokio::time::sleep(Duration::from_secs((QUIET_SECS + TONE_SECS + 1) as u64)).await;
    ctrl.command("sndcode", "1").await;
    host.expect(&["Actions", "We are open"], 20);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 20);
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10))
            .await
            .is_some()
    );

    let recording = only_file(&host.data.path().join("recordings"), ".wav");
    let wav = Wav::read(&recording);
    assert_eq!(wav.channels, 2, "stereo: caller left, agent right");
    let caller = to_8k(&wav.channel(0), wav.rate);
    let agent = to_8k(&wav.channel(1), wav.rate);
    assert!(
        caller.len() > (QUIET_SECS + TONE_SECS) * RATE,
        "the recording covers the call: {} samples",
        caller.len()
    );

    let tones = &check.mic[QUIET_SECS * RATE..];
    let up = onset_correlation(tones, &caller, (TONE_SECS - 1) * RATE);
    // baresip's sndfile module writes what it decoded into `<rec>/...-dec.wav`.
    let heard = Wav::read(&only_file(&phone.dir.path().join("rec"), "-dec.wav"));
    let heard = to_8k(&heard.channel(0), heard.rate);
    let down = onset_correlation(&agent, &heard, 4 * RATE);
    eprintln!("{codec}: baresip → host {up:.3}, agent → baresip {down:.3}");
    assert!(up >= 0.9, "{codec}: caller audio in the recording: {up:.3}");
    assert!(down >= 0.9, "{codec}: agent audio at baresip: {down:.3}");
    (up, down)
}
