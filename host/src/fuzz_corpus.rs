//! Replays every saved fuzz input (fuzz/corpus/<target>/: the seeds, what fuzzing kept, and the
//! inputs of every crash found) through the code its fuzz target runs (fuzz/src/lib.rs, compiled
//! in here), so plain `cargo test` checks, without cargo-fuzz, that none of them panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rsipstack::sip::SipMessage;

use crate::sip::guard::{check_request, stateless_response};

#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// The saved inputs of `target`, in name order.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

/// The inputs of `target` on which `run` panicked, each with the panic's message.
fn panics(target: &str, run: impl Fn(&[u8])) -> Vec<String> {
    let files = corpus(target);
    assert!(!files.is_empty(), "{target} has no saved inputs");
    files
        .iter()
        .filter_map(|path| {
            let input = std::fs::read(path).expect("a saved input");
            let outcome = catch_unwind(AssertUnwindSafe(|| run(&input)));
            outcome.err().map(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                format!("{}: {message}", path.display())
            })
        })
        .collect()
}

#[test]
fn every_saved_fuzz_input_runs_through_its_target_without_a_panic() {
    let failed: Vec<String> = targets::TARGETS
        .iter()
        .flat_map(|(target, run)| panics(target, run))
        .collect();
    assert!(failed.is_empty(), "panicked:\n{}", failed.join("\n"));
}

/// The SIP guard's corpus also feeds the checks every parsed request meets before the
/// transaction layer (these take the stack's parsed request, so no fuzz target reaches them).
#[test]
fn every_saved_sip_request_passes_the_request_checks_without_a_panic() {
    let failed = panics("sip_guard", |datagram| {
        if let Ok(SipMessage::Request(request)) = SipMessage::try_from(datagram)
            && let Some((code, _)) = check_request(&request)
        {
            stateless_response(&request, code, "switchboard").to_string();
        }
    });
    assert!(failed.is_empty(), "panicked:\n{}", failed.join("\n"));
}
