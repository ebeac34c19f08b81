//! The generated answering-machine-detection sets (`tests/amd/make_set.py`) and the detector
//! run over one of their files as a call would run it: 20 ms packets after answer.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard::media::amd::{AmdConfig, AmdDetector, AmdEvent, MachineVerdict};

use super::agents::repo_root;

/// One labelled file of a set.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub path: PathBuf,
    pub machine: bool,
    /// When the greeting's speech starts, ms after answer.
    pub speech_start_ms: u64,
    /// The beep's start and end, ms after answer.
    pub beep_ms: Option<(u64, u64)>,
    pub voice: String,
    pub text: String,
}

/// What the detector said about one file.
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    pub verdict: Option<MachineVerdict>,
    pub verdict_ms: u64,
    pub beep_ms: Option<(u64, u64)>,
}

/// Builds set `which` (tune or test) under `target/<dir>` unless its labels are there already;
/// returns its files. `counts`: persons and machines. Tests running at once may build the same
/// set: each builds in a folder of its own and the first to finish moves it into place.
pub fn build(dir: &str, which: &str, counts: (u32, u32)) -> Vec<Labelled> {
    let root = repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let set = target.join(dir).join(which);
    if !set.join("labels.csv").exists() {
        let building = target.join(format!("{dir}.building-{}", std::process::id()));
        let status = Command::new("python3")
            .arg(root.join("tests/amd/make_set.py"))
            .arg(&building)
            .args(["--set", which])
            .args(["--persons", &counts.0.to_string()])
            .args(["--machines", &counts.1.to_string()])
            .status()
            .expect("run tests/amd/make_set.py");
        assert!(status.success(), "tests/amd/make_set.py failed");
        std::fs::create_dir_all(target.join(dir)).expect("the sets' folder");
        // Fails when another test put the set in place first: then that one is used.
        let _ = std::fs::rename(building.join(which), &set);
        let _ = std::fs::remove_dir_all(&building);
    }
    labels(&set)
}

fn labels(set: &Path) -> Vec<Labelled> {
    let text = std::fs::read_to_string(set.join("labels.csv")).expect("labels.csv");
    text.lines()
        .skip(1)
        .map(|line| {
            // The text (last column) may hold commas and quotes; the others do not.
            let cols: Vec<&str> = line.splitn(9, ',').collect();
            let ms = |s: &str| s.parse::<u64>().ok();
            Labelled {
                path: set.join(cols[0]),
                machine: cols[1] == "machine",
                speech_start_ms: ms(cols[2]).expect("speech start"),
                beep_ms: ms(cols[4]).zip(ms(cols[5])),
                voice: cols[6].to_string(),
                text: cols[8].trim_matches('"').to_string(),
            }
        })
        .collect()
}

/// Runs a detector over the file in 20 ms packets; stops at the file's end (then lets time
/// pass, as silence, until the detector gives up).
pub fn detect(path: &Path, config: &AmdConfig) -> Detection {
    let mut reader = hound::WavReader::open(path).expect("a set's WAV");
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    detect_samples(rate, &samples, config)
}

/// Like [`detect`], on samples at `rate` Hz.
pub fn detect_samples(rate: u32, samples: &[i16], config: &AmdConfig) -> Detection {
    let mut detector = AmdDetector::new(rate, config.clone()).expect("detector");
    let mut found = Detection {
        verdict: None,
        verdict_ms: 0,
        beep_ms: None,
    };
    let packet = (rate / 50) as usize;
    let mut record = |events: Vec<AmdEvent>| {
        for event in events {
            match event {
                AmdEvent::Verdict { verdict, at_ms } => {
                    found.verdict = Some(verdict);
                    found.verdict_ms = at_ms;
                }
                AmdEvent::Beep { at_ms, end_ms, .. } => found.beep_ms = Some((at_ms, end_ms)),
            }
        }
    };
    for (i, chunk) in samples.chunks(packet).enumerate() {
        record(detector.push(i as u64 * 20, chunk).expect("push"));
    }
    let end_ms = samples.len() as u64 * 1000 / u64::from(rate);
    record(
        detector
            .tick(end_ms + u64::from(config.max_decision_ms))
            .expect("tick"),
    );
    found
}
