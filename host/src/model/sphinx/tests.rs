//! Recognition of synthesised phone audio: espeak-ng speech brought to 8 kHz, through G.711
//! μ-law and back (what a PCMU call delivers), decoded in grammar mode. espeak-ng is a worst
//! case for a model trained on human speech; the figures printed here are the honest ones.
//!
//! Under CI=true a missing model (`pocketsphinx-en-us`) or espeak-ng fails; elsewhere these
//! tests skip with a message.

use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use super::*;
use crate::media::g711::{ulaw_decode, ulaw_encode};

/// The tests share one recogniser (as calls do) and measure process memory: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn required(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is required under CI=true (bash .ci/setup installs it)"
        );
        eprintln!("SKIP: {what} is not installed");
    }
    present
}

/// The recogniser on the default model, loaded once for the test process.
fn recogniser() -> Option<Arc<Recogniser>> {
    static LOADED: OnceLock<Option<Arc<Recogniser>>> = OnceLock::new();
    let config = RecogniserConfig::default();
    let present = ModelFiles::locate(&config.model_dir).is_ok();
    if !required(
        &format!("the PocketSphinx model in {DEFAULT_MODEL_DIR}"),
        present,
    ) {
        return None;
    }
    LOADED
        .get_or_init(|| Some(Recogniser::load(&config).expect("model loads")))
        .clone()
}

fn have_espeak() -> bool {
    let ok = Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    required("espeak-ng", ok)
}

/// `text` spoken by espeak-ng as a caller on a PCMU line: 8 kHz samples after μ-law, with
/// 300 ms of line silence around it (what a voice detector's pre-roll and hangover keep).
fn phone_speech(text: &str) -> Vec<i16> {
    let wav = tempfile::Builder::new()
        .suffix(".wav")
        .tempfile()
        .expect("temp file");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(wav.path())
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed for {text:?}");
    let mut reader = hound::WavReader::open(wav.path()).expect("espeak-ng wrote a WAV");
    let rate = reader.spec().sample_rate;
    let speech: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let mut to_line = StreamResampler::new(rate, 8000).unwrap();
    to_line.push(&speech).unwrap();
    to_line.drain().unwrap();
    let silence = vec![0i16; 8000 * 3 / 10];
    let mut line = silence.clone();
    line.extend(to_line.pop_all());
    line.extend(&silence);
    line.iter().map(|&s| ulaw_decode(ulaw_encode(s))).collect()
}

/// Decodes `audio` (8 kHz) in 20 ms packets, as a call delivers it.
fn decode(decoder: &mut Decoder, audio: &[i16]) -> Option<Transcript> {
    for packet in audio.chunks(160) {
        decoder.push(packet).unwrap();
    }
    decoder.finish().unwrap()
}

/// The menu words of the example agents, and a spoken number.
fn menu_grammar() -> Grammar {
    Grammar::new(["yes", "no", "operator", "confirm", "reschedule"])
        .unwrap()
        .with_digits()
}

#[test]
fn grammar_mode_on_espeak_phone_audio() {
    let _serial = serial();
    let Some(recogniser) = recogniser() else {
        return;
    };
    if !have_espeak() {
        return;
    }
    let mut decoder = recogniser.decoder(8000).unwrap();
    decoder.expect(&menu_grammar()).unwrap();
    let cases = [
        ("yes", "yes"),
        ("no", "no"),
        ("operator", "operator"),
        ("confirm", "confirm"),
        ("reschedule", "reschedule"),
        ("one two three four", "one two three four"),
    ];
    let mut table = Vec::new();
    let mut audio_secs = 0.0;
    let started = Instant::now();
    for (spoken, _) in cases {
        let audio = phone_speech(spoken);
        audio_secs += audio.len() as f64 / 8000.0;
        let t0 = Instant::now();
        let heard = decode(&mut decoder, &audio);
        table.push((spoken, heard, t0.elapsed()));
    }
    let total = started.elapsed();
    eprintln!("espeak-ng, 8 kHz μ-law, grammar mode:");
    eprintln!(
        "{:<20} {:<24} {:>10} {:>8}",
        "spoken", "heard", "confidence", "decode"
    );
    let mut right = 0;
    for ((spoken, heard, took), (_, expected)) in table.iter().zip(cases) {
        let (text, confidence) = heard
            .as_ref()
            .map_or(("(nothing)", 0.0), |t| (t.text.as_str(), t.confidence));
        right += usize::from(text == expected);
        eprintln!(
            "{spoken:<20} {text:<24} {confidence:>10.3} {:>6} ms",
            took.as_millis()
        );
    }
    eprintln!(
        "{right}/{} right; {audio_secs:.1} s of audio (synthesis included in {} ms)",
        cases.len(),
        total.as_millis()
    );
    for (spoken, heard, _) in &table {
        let heard = heard.as_ref().map(|t| t.text.as_str());
        // Measured 2026-12-07 (Debian model, remove_noise on): 2/6 right. "no" was heard as
        // "operator", "confirm" and "reschedule" as nothing, "one two three four" as "one
        // eight two three four". Only what holds is asserted; the misses are open work.
        if ["yes", "operator"].contains(spoken) {
            assert_eq!(heard, Some(*spoken), "{spoken:?}");
        }
    }
}

#[test]
fn a_grammar_with_an_unknown_word_is_refused_with_the_words() {
    let _serial = serial();
    let Some(recogniser) = recogniser() else {
        return;
    };
    let mut decoder = recogniser.decoder(8000).unwrap();
    let err = decoder
        .expect(&Grammar::new(["yes", "flurbonic", "qzxv"]).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "words not in the pronunciation dictionary: flurbonic, qzxv"
    );
    assert!(matches!(
        decoder.push(&[0; 160]),
        Err(RecogniserError::NothingExpected)
    ));
}

#[test]
fn a_missing_model_names_the_file_and_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let err = Recogniser::load(&RecogniserConfig {
        model_dir: dir.path().to_path_buf(),
        ..RecogniserConfig::default()
    })
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("en-us/mdef"), "{message}");
    assert!(message.contains("pocketsphinx-en-us"), "{message}");
}

#[test]
fn silence_gives_no_transcript_and_decoders_are_pooled() {
    let _serial = serial();
    let Some(recogniser) = recogniser() else {
        return;
    };
    let mut decoder = recogniser.decoder(8000).unwrap();
    decoder.expect(&menu_grammar()).unwrap();
    assert_eq!(decode(&mut decoder, &vec![0; 8000]), None);
    let idle = recogniser.idle_decoders();
    drop(decoder);
    assert_eq!(recogniser.idle_decoders(), idle + 1);
    let _again = recogniser.decoder(16000).unwrap();
    assert_eq!(recogniser.idle_decoders(), idle);
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn memory_per_decoder() {
    let _serial = serial();
    let Some(recogniser) = recogniser() else {
        return;
    };
    const N: usize = 10;
    let grammar = menu_grammar();
    // Fresh decoders, not pooled ones: take the idle ones out first.
    let pooled: Vec<Decoder> = (0..recogniser.idle_decoders())
        .map(|_| recogniser.decoder(8000).unwrap())
        .collect();
    let before = rss_kib();
    let t0 = Instant::now();
    let decoders: Vec<Decoder> = (0..N)
        .map(|_| {
            let mut d = recogniser.decoder(8000).unwrap();
            d.expect(&grammar).unwrap();
            d
        })
        .collect();
    let made = t0.elapsed();
    let grammar_kib = (rss_kib().saturating_sub(before)) / decoders.len() as u64;
    eprintln!(
        "grammar mode: {} KiB per decoder ({} decoders, {} ms each to load)",
        grammar_kib,
        decoders.len(),
        made.as_millis() / decoders.len() as u128
    );
    drop(decoders);
    drop(pooled);
    let before = rss_kib();
    let t0 = Instant::now();
    let mut large = recogniser.decoder(8000).unwrap();
    large.expect_anything().unwrap();
    eprintln!(
        "large vocabulary: {} KiB more for one decoder ({} ms to load)",
        rss_kib().saturating_sub(before),
        t0.elapsed().as_millis()
    );
    // A decoder holds an acoustic model of its own (about 6 MB of files): far below the
    // ~43 MB a decoder with the whole dictionary measured.
    assert!(grammar_kib < 40 * 1024, "{grammar_kib} KiB per decoder");
}
