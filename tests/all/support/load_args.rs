//! The command line the load generators share (tests/bin/*_load.rs): `--key value` pairs, a
//! target that must be on 127.0.0.1, a bounded number of calls and seconds, an audio file, and
//! the ramp over which calls start.

use std::collections::HashMap;
use std::time::Duration;

/// `--key value` pairs.
pub struct LoadArgs(HashMap<String, String>);

/// What every load has: where it goes, how much of it, and what the callers say.
pub struct Load {
    pub target: String,
    pub calls: u32,
    pub secs: u64,
    /// Calls start spread over this (`--ramp-ms`, 1 s unless given).
    pub ramp: Duration,
    /// The `--audio` file's bytes.
    pub audio: Vec<u8>,
}

impl LoadArgs {
    /// This process's arguments; panics, naming the argument, on anything else.
    pub fn from_env() -> LoadArgs {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("unexpected argument {key}"));
            let value = it.next().unwrap_or_else(|| panic!("--{key} needs a value"));
            map.insert(key.to_string(), value);
        }
        LoadArgs(map)
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    pub fn need(&self, key: &str) -> String {
        self.get(key)
            .unwrap_or_else(|| panic!("--{key} is required"))
    }

    /// The load of `--{target} --calls --secs --ramp-ms --audio`, within the bounds: the target
    /// an `http://127.0.0.1:` URL, at most `max_calls` calls of `max_secs` seconds.
    pub fn load(&self, target: &str, max_calls: u32, max_secs: u64) -> Load {
        let url = self.need(target);
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "the load goes to 127.0.0.1 only: {url}"
        );
        let calls: u32 = self.need("calls").parse().expect("--calls N");
        let secs: u64 = self.need("secs").parse().expect("--secs S");
        assert!(
            calls <= max_calls && secs <= max_secs,
            "at most {max_calls} calls of {max_secs} s"
        );
        let audio_path = self.need("audio");
        let audio = std::fs::read(&audio_path).unwrap_or_else(|e| panic!("{audio_path}: {e}"));
        let ramp_ms = self
            .get("ramp-ms")
            .map_or(1000, |v| v.parse().expect("--ramp-ms"));
        Load {
            target: url,
            calls,
            secs,
            ramp: Duration::from_millis(ramp_ms),
            audio,
        }
    }
}
