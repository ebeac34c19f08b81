//! Load runs for the benchmarks: SIPp arguments and working folders of a media load, what a
//! SIPp run wrote about it, a SIP caller of our own, and the CPU time of a process or some of
//! its threads.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use switchboard::sip::SipEndpoint;

use crate::support::calls::RATE;
use crate::support::consumer::dial_pcmu;
use crate::support::ports::{Ports, free_port, ports};
use crate::support::sipp::{scenario, sipp_pcap_dir};
use crate::support::tempdir;

/// A benchmark's SIP caller: dials `uri` from `endpoint` offering PCMU (call `n`), speaks
/// `track` (8 kHz) in 20 ms packets on a drift-free grid, and hangs up at its end. With
/// `epoch`, every packet carries its send time (see [`crate::support::model_audio::stamp`])
/// and the result is the time since the stamp of each talkspurt the host started; without, what
/// the host sends is only taken off the socket.
pub async fn pcmu_caller(
    endpoint: SipEndpoint,
    uri: String,
    n: u32,
    track: &[i16],
    epoch: Option<Instant>,
) -> Vec<Duration> {
    let (peer, dialog) = dial_pcmu(&endpoint, uri, n).await;
    let length = Duration::from_millis((track.len() * 1000 / RATE) as u64);
    let receive = async {
        match epoch {
            Some(epoch) => peer.receive_talkspurt_stamps(length, epoch).await,
            None => {
                peer.receive_pcmu(length).await;
                Vec::new()
            }
        }
    };
    let ((), talkspurts) =
        tokio::join!(peer.stream_pcmu_stamped(track, 0x1000 + n, epoch), receive);
    dialog.handle().hangup().await.ok();
    talkspurts
}

/// How the benchmark callers send their audio (SIPp's 7 s of PCMA either way).
#[derive(Debug, Clone, Copy)]
pub enum CallerAudio {
    /// `sipp/uac_pcap_30ms.xml`: `play_pcap_audio` of g711a.pcap (30 ms packets, a raw socket
    /// per call), then an RFC 4733 digit.
    Pcap,
    /// `sipp/uac_rtpstream.xml`: `rtp_stream` of the same audio (20 ms packets from the call's
    /// bound media socket).
    RtpStream,
    /// `sipp/uac_silent.xml`: the same calls without any RTP.
    Silent,
}

/// A working folder for a benchmark load: `pcap/` links to SIPp's pcaps and `g711a.alaw` holds
/// g711a.pcap's audio as raw A-law.
pub fn media_load_dir(name: &str) -> tempfile::TempDir {
    let dir = tempdir(name);
    let pcaps = sipp_pcap_dir();
    std::os::unix::fs::symlink(&pcaps, dir.path().join("pcap")).unwrap();
    let alaw = rtp_payloads(&std::fs::read(pcaps.join("g711a.pcap")).unwrap());
    std::fs::write(dir.path().join("g711a.alaw"), alaw).unwrap();
    dir
}

/// The RTP payloads of a libpcap capture of Ethernet/IPv4/UDP/RTP packets, in order.
fn rtp_payloads(pcap: &[u8]) -> Vec<u8> {
    const GLOBAL_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    const ETHERNET: usize = 14;
    let mut out = Vec::new();
    let mut at = GLOBAL_HEADER;
    while at + RECORD_HEADER <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + RECORD_HEADER..at + RECORD_HEADER + len];
        at += RECORD_HEADER + len;
        let ip_header = usize::from(frame[ETHERNET] & 0x0f) * 4;
        let rtp = &frame[ETHERNET + ip_header + 8..];
        let csrcs = usize::from(rtp[0] & 0x0f);
        out.extend_from_slice(&rtp[12 + 4 * csrcs..]);
    }
    out
}

/// SIPp arguments of a benchmark load: `calls` at `rate` to `target`, statistics in
/// `stat.csv`, every call's INVITE→200 time traced. Run it in `dir`, a [`media_load_dir`].
/// The callers' media ports are `-mp` and up (`rtp_stream` binds a socket a call): 4 a call
/// are reserved, in the [`Ports`] returned, to be kept until SIPp has finished.
pub fn media_load_args(
    audio: CallerAudio,
    calls: u32,
    rate: u32,
    target: &str,
    dir: &Path,
) -> (Vec<String>, Ports) {
    let media = ports(u16::try_from(4 * calls + 4).expect("fewer calls"));
    let mut args = match audio {
        CallerAudio::Pcap => vec!["-sf".into(), path_arg(&scenario("uac_pcap_30ms.xml"))],
        CallerAudio::Silent => vec!["-sf".into(), path_arg(&scenario("uac_silent.xml"))],
        CallerAudio::RtpStream => vec![
            "-sf".into(),
            path_arg(&scenario("uac_rtpstream.xml")),
            "-key".into(),
            "audio".into(),
            format!("{},1,8", path_arg(&dir.join("g711a.alaw"))),
        ],
    };
    args.extend(
        [
            "-s",
            "1000",
            "-p",
            &free_port().to_string(),
            "-mp",
            &media.first().to_string(),
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            &calls.to_string(),
            "-timeout",
            "180s",
        ]
        .map(String::from),
    );
    args.extend(LOAD_TRACES.map(String::from));
    args.push(target.to_string());
    (args, media)
}

/// SIPp options of every load run: per-second statistics in `stat.csv` (what [`SippStats`]
/// reads) and each call's INVITE→200 time.
pub const LOAD_TRACES: [&str; 8] = [
    "-trace_stat",
    "-stf",
    "stat.csv",
    "-fd",
    "1",
    "-trace_rtt",
    "-rtt_freq",
    "1",
];

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// A numeric field of `/proc/<pid>/status`, e.g. `VmRSS:` (KiB) or `Threads:`.
pub fn status_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
}

/// CPU seconds used so far by the threads of process `pid` whose name starts with `prefix`
/// (threads that ended are not counted).
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| stat_cpu_seconds(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// utime + stime of a process's or thread's `stat` file, in seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// What a SIPp run wrote with `-trace_stat -stf stat.csv -trace_rtt`: final counters and the
/// per-call response times (ms) of its `rtd` measure.
pub struct SippStats {
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Sorted.
    pub rtt_ms: Vec<f64>,
}

impl SippStats {
    pub fn read(dir: &Path) -> SippStats {
        let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
        let header: Vec<&str> = stat.lines().next().unwrap_or("").split(';').collect();
        let last: Vec<&str> = stat.lines().last().unwrap_or("").split(';').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let rtt_file = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with("_rtt.csv"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .unwrap_or_default();
        // `date_ms;response_time_ms;rtd_no`
        let mut rtt_ms: Vec<f64> = rtt_file
            .lines()
            .skip(1)
            .filter_map(|l| l.split(';').nth(1)?.trim().parse().ok())
            .collect();
        rtt_ms.sort_by(f64::total_cmp);
        SippStats {
            successful: col("SuccessfulCall(C)"),
            failed: col("FailedCall(C)"),
            retransmissions: col("Retransmissions(C)"),
            rtt_ms,
        }
    }

    /// The `q` quantile (0–1) of the response times.
    pub fn rtt_quantile(&self, q: f64) -> f64 {
        quantile(&self.rtt_ms, q)
    }
}

/// The `q` quantile (0–1) of sorted `values` (NaN when empty).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// A benchmark's setting from the environment variable `name`, else `default`; a value that does
/// not parse stops the run.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a valid value"))
        })
        .unwrap_or(default)
}
