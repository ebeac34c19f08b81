//! Answering-machine detection on the generated sets (`tests/amd/make_set.py`: 30 persons and
//! 30 machines each, espeak-ng voices and the neural piper voice when installed, G.711 line):
//! accuracy, persons taken for machines, decision time per class and beep time error, on the
//! tuning set and on the held-out test set. The targets (issue 29) are asserted on the test set.
//!
//! Run: `cargo test -p switchboard-tests --test all -- --ignored --nocapture amd_bench::`
//! (the sets are built into `target/amd/` once; delete it to rebuild). Try other thresholds
//! without rebuilding with `AMD_CONFIG='{"max-human-greeting-ms": 2200}'` (`AmdConfig`'s
//! fields, as JSON).

use std::time::Duration;

use crate::support::amd_set::{self, Detection, Labelled};
use crate::support::model_audio::percentile;
use switchboard::media::amd::{AmdConfig, MachineVerdict};

struct Figures {
    correct: usize,
    total: usize,
    persons: usize,
    persons_as_machine: usize,
}

fn ms_percentiles(mut ms: Vec<u64>) -> String {
    if ms.is_empty() {
        return "-".into();
    }
    ms.sort_unstable();
    let d: Vec<Duration> = ms.iter().map(|&m| Duration::from_millis(m)).collect();
    format!(
        "p50 {} ms, p95 {} ms, max {} ms (n={})",
        percentile(&d, 50.0).as_millis(),
        percentile(&d, 95.0).as_millis(),
        d[d.len() - 1].as_millis(),
        d.len()
    )
}

fn evaluate(name: &str, set: &[Labelled], config: &AmdConfig) -> Figures {
    let runs: Vec<(&Labelled, Detection)> = set
        .iter()
        .map(|l| (l, amd_set::detect(&l.path, config)))
        .collect();
    let mut f = Figures {
        correct: 0,
        total: runs.len(),
        persons: 0,
        persons_as_machine: 0,
    };
    let (mut unknown, mut machines_as_person) = (0, 0);
    let (mut human_after_speech, mut machine_after_speech) = (Vec::new(), Vec::new());
    let (mut human_after_answer, mut machine_after_answer) = (Vec::new(), Vec::new());
    let (mut beeps, mut beeps_found, mut false_beeps) = (0, 0, 0);
    let (mut beep_start_err, mut beep_end_err) = (Vec::new(), Vec::new());
    for (l, d) in &runs {
        let want = if l.machine {
            MachineVerdict::Machine
        } else {
            MachineVerdict::Human
        };
        if d.verdict == Some(want) {
            f.correct += 1;
        } else {
            println!(
                "  {name} miss: {} ({}, {:?}) -> {:?} at {} ms: {}",
                l.path.file_name().unwrap().to_string_lossy(),
                l.voice,
                l.beep_ms,
                d.verdict,
                d.verdict_ms,
                l.text
            );
        }
        match d.verdict {
            Some(MachineVerdict::Unknown) | None => unknown += 1,
            Some(MachineVerdict::Machine) if !l.machine => f.persons_as_machine += 1,
            Some(MachineVerdict::Human) if l.machine => machines_as_person += 1,
            _ => {}
        }
        if !l.machine {
            f.persons += 1;
        }
        let after_speech = d.verdict_ms.saturating_sub(l.speech_start_ms);
        match d.verdict {
            Some(MachineVerdict::Human) => {
                human_after_speech.push(after_speech);
                human_after_answer.push(d.verdict_ms);
            }
            Some(MachineVerdict::Machine) => {
                machine_after_speech.push(after_speech);
                machine_after_answer.push(d.verdict_ms);
            }
            _ => {}
        }
        match (l.beep_ms, d.beep_ms) {
            (Some((s, e)), Some((ds, de))) => {
                beeps += 1;
                beeps_found += 1;
                beep_start_err.push(s.abs_diff(ds));
                beep_end_err.push(e.abs_diff(de));
            }
            (Some(_), None) => beeps += 1,
            (None, Some(_)) => false_beeps += 1,
            (None, None) => {}
        }
    }
    println!("== {name}: {} files", f.total);
    println!(
        "  correct {}/{} ({:.1} %), persons as machine {}/{} ({:.1} %), machines as person {}, unknown {}",
        f.correct,
        f.total,
        100.0 * f.correct as f64 / f.total as f64,
        f.persons_as_machine,
        f.persons,
        100.0 * f.persons_as_machine as f64 / f.persons.max(1) as f64,
        machines_as_person,
        unknown
    );
    println!(
        "  human verdict after the greeting starts: {}",
        ms_percentiles(human_after_speech)
    );
    println!(
        "  human verdict after answer:              {}",
        ms_percentiles(human_after_answer)
    );
    println!(
        "  machine verdict after the greeting starts: {}",
        ms_percentiles(machine_after_speech)
    );
    println!(
        "  machine verdict after answer:              {}",
        ms_percentiles(machine_after_answer)
    );
    println!("  beeps found {beeps_found}/{beeps}, false beeps {false_beeps}");
    println!("  beep start error: {}", ms_percentiles(beep_start_err));
    println!("  beep end error:   {}", ms_percentiles(beep_end_err));
    f
}

#[test]
#[ignore = "benchmark: builds the generated sets (espeak-ng, sox, piper) and runs them"]
fn amd_bench_held_out_set() {
    let config: AmdConfig = match std::env::var("AMD_CONFIG") {
        Ok(json) => serde_json::from_str(&json).expect("AMD_CONFIG: AmdConfig as JSON"),
        Err(_) => AmdConfig::default(),
    };
    let tune = amd_set::build("amd", "tune", (30, 30));
    let test = amd_set::build("amd", "test", (30, 30));
    evaluate("tune", &tune, &config);
    let f = evaluate("test (held out)", &test, &config);
    assert!(
        f.correct * 100 >= f.total * 95,
        "below 95 % correct on the held-out set"
    );
    assert!(
        f.persons_as_machine * 100 <= f.persons * 2,
        "more than 2 % of persons taken for machines"
    );
}
