//! Answering-machine detection on a few generated phone-line recordings (`tests/amd/make_set.py`,
//! built into `target/amd-ci/`): persons are taken for persons, machines with a beep for
//! machines, with the beep where the generator put it. The full figures are `amd_bench`.

use crate::support::amd_set;
use switchboard::media::amd::{AmdConfig, MachineVerdict};

#[test]
fn amd_tells_persons_from_machines_and_finds_the_beep() {
    let set = amd_set::build("amd-ci", "test", (4, 4));
    let config = AmdConfig::default();
    let mut machines_with_beep = 0;
    for l in &set {
        let d = amd_set::detect(&l.path, &config);
        let name = l.path.file_name().unwrap().to_string_lossy();
        let want = if l.machine {
            MachineVerdict::Machine
        } else {
            MachineVerdict::Human
        };
        assert_eq!(d.verdict, Some(want), "{name} ({}): {}", l.voice, l.text);
        // A verdict is never later than a person's greeting plus the silence that ends it.
        assert!(
            d.verdict_ms > l.speech_start_ms,
            "{name}: verdict before speech"
        );
        if let Some((start, end)) = l.beep_ms {
            machines_with_beep += 1;
            let (ds, de) = d
                .beep_ms
                .unwrap_or_else(|| panic!("{name}: beep not found"));
            assert!(
                start.abs_diff(ds) <= 40 && end.abs_diff(de) <= 40,
                "{name}: beep {start}-{end} ms found at {ds}-{de} ms"
            );
        } else {
            assert_eq!(d.beep_ms, None, "{name}: a beep where there is none");
        }
    }
    assert!(machines_with_beep >= 2, "the set has machines with a beep");
}
