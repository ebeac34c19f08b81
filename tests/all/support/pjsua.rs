//! pjsua2 as a peer: the python callers in `tests/peers/` (on `pjphone.py`) place one call each
//! and print one JSON line about it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::agents::repo_root;
use super::ports::free_port;
use super::process::Proc;

/// Run `tests/peers/<script>` with `args` and a free `--rtp-port`, wait for it (a minute at
/// most) and give the JSON line it printed. Its log goes to `dir/pjsua.log` and is shown when
/// it fails or prints no JSON.
pub async fn call<S: AsRef<OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
    dir: &Path,
) -> Value {
    call_within(script, args, dir, Duration::from_secs(60)).await
}

/// [`call`] for a call that may take up to `limit`.
pub async fn call_within<S: AsRef<OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
    dir: &Path,
    limit: Duration,
) -> Value {
    let (out, log) = (dir.join("out.json"), dir.join("pjsua.log"));
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/peers").join(script))
        .args(args)
        .args(["--rtp-port", &free_port().to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let code = Proc::spawn("pjsua2", &mut cmd).wait(limit).await;
    let summary = std::fs::read_to_string(&out).unwrap_or_default();
    let pjlog = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, Some(0), "pjsua2: {summary}\n{pjlog}");
    let json = summary.lines().find(|l| l.starts_with('{')).unwrap_or("");
    let json: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("pjsua2 summary {summary:?}: {e}\n{pjlog}"));
    eprintln!("pjsua2: {json}");
    json
}
