//! SIPp as a test peer: its scenarios in tests/sipp, runs with their error log, a callee for
//! one call, and its shipped pcaps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::ports::{free_port, ports};
use crate::support::process::Proc;
use crate::support::tempdir;

/// The folder of SIPp's shipped pcaps (`g711a.pcap`, `dtmf_2833_*.pcap`): Debian puts them
/// in /usr/share/sip-tester, upstream installs in .../share/sipp/pcap.
pub fn sipp_pcap_dir() -> PathBuf {
    [
        "/usr/share/sip-tester",
        "/usr/share/sipp/pcap",
        "/usr/local/share/sipp/pcap",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("g711a.pcap").is_file())
    .expect("SIPp is installed but its pcaps (g711a.pcap, dtmf_2833_*.pcap) are not")
}

/// A scenario file of tests/sipp.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Arguments of SIPp's built-in uac: `calls` calls to `number` at `target`, each held
/// `hold_ms` before its BYE, with `options` (e.g. `-l`, `-r`) before the target.
pub fn uac_args(
    number: &str,
    calls: u32,
    hold_ms: u32,
    options: &[&str],
    target: &str,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-sn",
        "uac",
        "-s",
        number,
        "-m",
        &calls.to_string(),
        "-d",
        &hold_ms.to_string(),
    ]
    .map(String::from)
    .into();
    args.extend(options.iter().map(|o| o.to_string()));
    args.push(target.to_string());
    args
}

/// Runs SIPp with `args` in `dir`; returns the exit code (None on timeout) and the error log.
pub async fn run_sipp(
    dir: &Path,
    args: &[impl AsRef<std::ffi::OsStr>],
    timeout: Duration,
) -> (Option<i32>, String) {
    let mut p = spawn_sipp(dir, args);
    let code = p.wait(timeout).await;
    (code, sipp_errors(dir))
}

/// Starts SIPp with `args` in `dir`, errors logged to `errors.log`. Without `-mp` in `args` its
/// media ports (audio and video echo, 4 ports from `-mp` up; its default is 6000) are reserved
/// for it; its signalling port is the system's choice unless `args` name one (`-p`).
pub fn spawn_sipp(dir: &Path, args: &[impl AsRef<std::ffi::OsStr>]) -> Proc {
    let media = (!args.iter().any(|a| a.as_ref() == "-mp")).then(|| ports(4));
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .args(["-nostdin", "-i", "127.0.0.1", "-trace_err", "-error_file"])
        .arg(dir.join("errors.log"));
    if let Some(media) = &media {
        cmd.args(["-mp", &media.first().to_string()]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut sipp = Proc::spawn("sipp", &mut cmd);
    if let Some(media) = media {
        sipp.hold(media);
    }
    sipp
}

/// What SIPp wrote to `errors.log` in `dir`.
pub fn sipp_errors(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
}

/// A SIPp callee for one call on a reserved port: the built-in uas, or a scenario file from
/// tests/sipp. Returns the process, its folder (errors.log) and the port.
pub fn sipp_callee(scenario_file: Option<&str>) -> (Proc, tempfile::TempDir, u16) {
    sipp_callee_with(scenario_file, &[])
}

/// Like [`sipp_callee`], with more SIPp arguments (e.g. `-rtp_echo`).
pub fn sipp_callee_with(
    scenario_file: Option<&str>,
    extra: &[&str],
) -> (Proc, tempfile::TempDir, u16) {
    let dir = tempdir("sipp-callee");
    let port = free_port().to_string();
    let scen = scenario_file.map(|s| scenario(s).display().to_string());
    let mut args = match &scen {
        Some(s) => vec!["-sf", s.as_str()],
        None => vec!["-sn", "uas"],
    };
    args.extend(["-p", &port, "-m", "1", "-timeout", "40s", "-timeout_error"]);
    args.extend(extra);
    let sipp = spawn_sipp(dir.path(), &args);
    // SIPp binds its port a moment after it starts.
    std::thread::sleep(Duration::from_millis(300));
    (sipp, dir, port.parse().unwrap())
}

/// SIPp ends its scenario without an error (its exit code 0) within 10 s.
pub async fn sipp_completes(sipp: &mut Proc, dir: &Path) {
    let code = sipp.wait(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "sipp: {}", sipp_errors(dir));
}
