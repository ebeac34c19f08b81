//! Test harness for the SIP module: free ports, peer processes killed on drop (SIPp,
//! kamailio, baresip), a raw SIP client, and a small consumer that answers calls with a
//! canned SDP (media and agents are other modules' work).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::sip::{CallOutcome, DialogEvent, OutboundCall, SipConfig, SipEndpoint, SipEvent};
use tokio::sync::mpsc;

/// A canned SDP answer/offer; nothing listens on its port (signalling tests only).
pub fn canned_sdp(direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=switchboard-test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

/// Whether a peer binary exists. Under `CI=true` a missing binary fails the test;
/// elsewhere the test is skipped with a message.
pub fn require(bin: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin} || test -x /usr/sbin/{bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    present_or_skip(&format!("peer `{bin}`"), found)
}

/// Whether `python3` can import `module` (e.g. `pjsua2`, from the pip package
/// `pjsua2-python`); missing is handled like [`require`].
pub fn require_python(module: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    present_or_skip(&format!("python module `{module}`"), found)
}

fn present_or_skip(what: &str, found: bool) -> bool {
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("required {what} is not installed (CI=true)");
        }
        eprintln!("SKIP: {what} not installed");
    }
    found
}

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

/// SIPp arguments of a benchmark load: `calls` at `rate` to `target`, caller media ports from
/// `media_port` up, statistics in `stat.csv`, every call's INVITE→200 time traced. Run it in
/// `dir`, a [`media_load_dir`].
pub fn media_load_args(
    audio: CallerAudio,
    calls: u32,
    rate: u32,
    media_port: u16,
    target: &str,
    dir: &Path,
) -> Vec<String> {
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
            &media_port.to_string(),
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
    args
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

/// A port free on 127.0.0.1 for UDP and TCP, with `port + 1` free too (baresip binds it for TLS).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let port = u.local_addr().unwrap().port();
        if port > 65000 {
            continue;
        }
        let ok = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if ok {
            return port;
        }
    }
    panic!("no free port pair found");
}

/// Like [`free_port`], but below the kernel's ephemeral range (32768 and up), for a server a
/// test stops and starts again on the same port: meanwhile any socket bound to port 0 may take
/// an ephemeral port, which then refuses the restart ("Address already in use"). Below that
/// range only sockets bound to a chosen port compete, and the tests' RTP ranges start at 20000.
pub fn free_port_to_restart_on() -> u16 {
    for _ in 0..200 {
        let port = 12000 + (fastrand_u64() % 7999) as u16;
        let ok = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if ok {
            return port;
        }
    }
    panic!("no free port pair found below 20000");
}

/// Base endpoint config for tests: UDP and TCP on one free port of 127.0.0.1.
pub fn test_config() -> SipConfig {
    SipConfig {
        udp_listen: Some("127.0.0.1:0".parse().unwrap()),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..SipConfig::default()
    }
}

/// A child process, in its own process group, killed with all its descendants (kamailio
/// forks workers; tshark runs dumpcap) and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
        }
    }

    /// Waits for exit up to `timeout`; kills it and returns None on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                self.kill_group();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the whole process group (the child is its leader), then reap.
    fn kill_group(&mut self) {
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .ok();
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Even an exited leader may have left workers in its group.
        self.kill_group();
    }
}

pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// Runs SIPp with `args` in `dir`; returns the exit code (None on timeout) and the error log.
pub async fn run_sipp(dir: &Path, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut p = spawn_sipp(dir, args);
    let code = p.wait(timeout).await;
    (code, sipp_errors(dir))
}

pub fn spawn_sipp(dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .args(["-nostdin", "-i", "127.0.0.1", "-trace_err", "-error_file"])
        .arg(dir.join("errors.log"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn("sipp", &mut cmd)
}

pub fn sipp_errors(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
}

/// A SIPp callee for one call on a free port: the built-in uas, or a scenario file from
/// tests/sipp. Returns the process, its folder (errors.log) and the port.
pub fn sipp_callee(scenario_file: Option<&str>) -> (Proc, tempfile::TempDir, u16) {
    let dir = tempdir("sipp-callee");
    let port = free_port().to_string();
    let scen = scenario_file.map(|s| scenario(s).display().to_string());
    let mut args = match &scen {
        Some(s) => vec!["-sf", s.as_str()],
        None => vec!["-sn", "uas"],
    };
    args.extend(["-p", &port, "-m", "1", "-timeout", "40s", "-timeout_error"]);
    let sipp = spawn_sipp(dir.path(), &args);
    // SIPp binds its port a moment after it starts.
    std::thread::sleep(Duration::from_millis(300));
    (sipp, dir, port.parse().unwrap())
}

/// What the test consumer does with incoming calls.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 180, then 200 with the canned SDP.
    Answer,
    /// 180 only; never answers (for CANCEL tests).
    RingOnly,
    /// Rejects with this code.
    Reject(u16),
}

/// Log of what the consumer saw, as short strings (`incoming:1000`, `dtmf:5`, ...).
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn has(&self, needle: &str) -> bool {
        self.entries().iter().any(|e| e.contains(needle))
    }
    /// Waits (bounded) until an entry contains `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.has(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A small consumer standing in for the call layer.
pub fn spawn_consumer(
    endpoint: SipEndpoint,
    mut events: mpsc::Receiver<SipEvent>,
    mode: Mode,
) -> Log {
    let log = Log::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                SipEvent::IncomingCall(call) => {
                    l.push(format!("incoming:{}:{}", call.dialled, call.transport));
                    match mode.clone() {
                        Mode::Answer => {
                            call.ringing().ok();
                            match call.answer(&canned_sdp("sendrecv")) {
                                Ok(dialog) => {
                                    tokio::spawn(drive_dialog(endpoint.clone(), dialog, l.clone()));
                                }
                                Err(e) => l.push(format!("answer-error:{e}")),
                            }
                        }
                        Mode::RingOnly => {
                            call.ringing().ok();
                            // Keep the call alive until the caller gives up.
                            let keep = l.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                keep.push("ring-only-expired");
                                drop(call);
                            });
                        }
                        Mode::Reject(code) => {
                            call.reject(code, "test").ok();
                        }
                    }
                }
                SipEvent::CallCancelled { call_id } => l.push(format!("cancelled:{call_id}")),
                SipEvent::Registration(s) => {
                    l.push(format!("registration:{}:{:?}", s.account, s.state))
                }
            }
        }
    });
    log
}

/// Handles one dialog's events like the call layer would (with canned SDP).
pub fn drive_dialog(
    endpoint: SipEndpoint,
    mut dialog: switchboard::sip::Dialog,
    log: Log,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let handle = dialog.handle();
        while let Some(ev) = dialog.recv().await {
            match ev {
                DialogEvent::Reinvite(r) => {
                    let (label, dir) = if r.hold {
                        ("hold", "recvonly")
                    } else {
                        ("resume", "sendrecv")
                    };
                    log.push(format!("reinvite:{label}"));
                    r.accept(canned_sdp(dir));
                }
                DialogEvent::Dtmf { digit, duration_ms } => {
                    log.push(format!("dtmf:{digit}:{duration_ms}"))
                }
                DialogEvent::TransferRequested { target, .. } => {
                    log.push(format!("transfer-requested:{target}"));
                    let call = OutboundCall {
                        to: target,
                        sdp_offer: canned_sdp("sendrecv"),
                        ..Default::default()
                    };
                    let code = match endpoint.place_call(call).await {
                        Ok(mut out) => match out.outcome().await {
                            CallOutcome::Answered { dialog, .. } => {
                                log.push("transfer-target-answered");
                                tokio::spawn(drive_dialog(endpoint.clone(), dialog, log.clone()));
                                200
                            }
                            CallOutcome::Busy => 486,
                            CallOutcome::Rejected { code, .. } => code,
                            _ => 480,
                        },
                        Err(_) => 503,
                    };
                    handle
                        .report_transfer(code, if code == 200 { "OK" } else { "Failed" })
                        .await
                        .ok();
                }
                DialogEvent::TransferProgress { code, .. } => {
                    log.push(format!("transfer-progress:{code}"))
                }
                DialogEvent::TransferOutcome { code, success, .. } => {
                    log.push(format!("transfer-outcome:{code}:{success}"));
                    if success {
                        handle.hangup().await.ok();
                    }
                }
                DialogEvent::Ended(reason) => {
                    log.push(format!("ended:{reason:?}"));
                    break;
                }
            }
        }
    })
}

/// Raw SIP over UDP or TCP for malformed-input and policy probes.
pub struct RawClient {
    udp: Option<tokio::net::UdpSocket>,
    tcp: Option<tokio::net::TcpStream>,
    pub local: SocketAddr,
    target: SocketAddr,
    buf: Vec<u8>,
    /// The last response `response_for` matched (for diagnostics).
    pub last_response: Option<String>,
}

impl RawClient {
    pub async fn udp(target: SocketAddr) -> RawClient {
        Self::udp_from("127.0.0.1:0", target).await
    }

    /// A UDP client bound to `bind` (e.g. `127.0.0.2:0` to be another source address).
    pub async fn udp_from(bind: &str, target: SocketAddr) -> RawClient {
        let s = tokio::net::UdpSocket::bind(bind).await.unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            udp: Some(s),
            tcp: None,
            local,
            target,
            buf: Vec::new(),
            last_response: None,
        }
    }

    pub async fn tcp(target: SocketAddr) -> RawClient {
        let s = tokio::net::TcpStream::connect(target).await.unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            udp: None,
            tcp: Some(s),
            local,
            target,
            buf: Vec::new(),
            last_response: None,
        }
    }

    pub fn transport(&self) -> &'static str {
        if self.udp.is_some() { "UDP" } else { "TCP" }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        if let Some(u) = &self.udp {
            u.send_to(bytes, self.target).await.ok();
        } else if let Some(t) = &mut self.tcp {
            t.write_all(bytes).await.ok();
        }
    }

    /// Next message (UDP datagram or TCP frame by Content-Length), within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(u) = &self.udp {
            let mut b = vec![0u8; 65536];
            let (n, _) = tokio::time::timeout_at(deadline, u.recv_from(&mut b))
                .await
                .ok()?
                .ok()?;
            return Some(String::from_utf8_lossy(&b[..n]).into_owned());
        }
        let t = self.tcp.as_mut()?;
        loop {
            if let Some(msg) = take_frame(&mut self.buf) {
                return Some(msg);
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, t.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for a response whose Call-ID is `call_id`; returns its status code.
    pub async fn response_for(&mut self, call_id: &str, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let msg = self
                .recv(deadline.saturating_duration_since(Instant::now()))
                .await?;
            // Final responses only.
            if !msg.starts_with("SIP/2.0 ") || msg.starts_with("SIP/2.0 1") {
                continue;
            }
            if call_id.is_empty() || msg.contains(call_id) {
                let code = msg.get(8..11)?.parse().ok();
                self.last_response = Some(msg);
                return code;
            }
        }
        None
    }

    /// Sends an OPTIONS and returns its final status (liveness probe).
    pub async fn options(&mut self) -> Option<u16> {
        let call_id = format!("alive-{}", fastrand_u64());
        let msg = request("OPTIONS", &call_id, self.local, self.transport(), "", "");
        self.send(msg.as_bytes()).await;
        self.response_for(&call_id, Duration::from_secs(3)).await
    }
}

fn take_frame(buf: &mut Vec<u8>) -> Option<String> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let cl = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim().eq_ignore_ascii_case("content-length") || k.trim() == "l")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    if buf.len() < end + cl {
        return None;
    }
    let msg: Vec<u8> = buf.drain(..end + cl).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

pub fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A well-formed out-of-dialog request; `extra` headers end with CRLF, `body` is the SDP.
pub fn request(
    method: &str,
    call_id: &str,
    local: SocketAddr,
    transport: &str,
    extra: &str,
    body: &str,
) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    format!(
        "{method} sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{}\r\n\
         From: <sip:probe@{local}>;tag=p{}\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContact: <sip:probe@{local}>\r\nMax-Forwards: 70\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        fastrand_u64(),
        fastrand_u64(),
        body.len()
    )
}

/// kamailio as registrar + record-routing proxy with digest auth (401 for REGISTER,
/// 407 for INVITE from known users). Users: alice/alicepw, bob/bobpw, agent/agentpw.
pub struct Kamailio {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Kamailio {
    pub async fn start(port: u16) -> Kamailio {
        let dir = tempdir("kam");
        let cfg = KAMAILIO_CFG
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", dir.path().to_str().unwrap());
        let cfg_path = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let mut cmd = Command::new("kamailio");
        cmd.args([
            "-f",
            cfg_path.to_str().unwrap(),
            "-DD",
            "-E",
            "-Y",
            dir.path().to_str().unwrap(),
            "-P",
        ])
        .arg(dir.path().join("k.pid"))
        .args(["-n", "2", "-m", "32", "-M", "4"])
        .stdout(Stdio::null())
        .stderr(log);
        let proc = Proc::spawn("kamailio", &mut cmd);
        let k = Kamailio {
            port,
            dir,
            _proc: proc,
        };
        // Ready when it answers OPTIONS.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = RawClient::udp(k.addr()).await;
        while Instant::now() < deadline {
            let call_id = format!("kam-up-{}", fastrand_u64());
            let msg = request("OPTIONS", &call_id, c.local, "UDP", "", "").replacen(
                "sip:1000@127.0.0.1",
                &format!("sip:127.0.0.1:{port}"),
                1,
            );
            c.send(msg.as_bytes()).await;
            if c.response_for(&call_id, Duration::from_millis(500)).await == Some(200) {
                return k;
            }
        }
        panic!("kamailio did not come up; log: {}", k.log());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// `kamcmd ul.dump` output.
    pub fn ul_dump(&self) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}/kamailio_ctl", self.dir.path().display()))
            .arg("ul.dump")
            .output()
            .expect("kamcmd");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:@PORT@
listen=tcp:127.0.0.1:@PORT@
alias="127.0.0.1:@PORT@"
auto_aliases=no
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "ctl.so"
loadmodule "auth.so"
loadmodule "htable.so"
modparam("ctl", "binrpc", "unix:@DIR@/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "min_expires", 1)
modparam("htable", "htable", "users=>size=4;")
modparam("rr", "enable_full_lr", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

event_route[htable:mod-init] {
    $sht(users=>alice) = "alicepw";
    $sht(users=>bob) = "bobpw";
    $sht(users=>agent) = "agentpw";
}

request_route {
    if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }
    t_check_trans();
    if (is_method("OPTIONS") && uri==myself && $rU==$null) { sl_send_reply("200", "OK"); exit; }
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$td", "$sht(users=>$tU)", "0")) {
            xlog("L_NOTICE", "CHALLENGE 401 $rm $tU\n");
            www_challenge("$td", "1");
            exit;
        }
        consume_credentials();
        xlog("L_NOTICE", "REGISTERED $tU expires $hdr(Expires)\n");
        save("location");
        exit;
    }
    if (is_method("INVITE|REFER") && $sht(users=>$fU) != $null) {
        if (!pv_proxy_authenticate("$fd", "$sht(users=>$fU)", "0")) {
            xlog("L_NOTICE", "CHALLENGE 407 $rm $fU\n");
            proxy_challenge("$fd", "1");
            exit;
        }
        consume_credentials();
    }
    if (is_method("INVITE|SUBSCRIBE")) { record_route(); }
    if (uri==myself) {
        if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
    }
    if (!t_relay()) { sl_reply_error(); }
    exit;
}
"#;

/// A headless baresip driven over ctrl_tcp (netstring JSON).
pub struct Baresip {
    pub sip_port: u16,
    pub ctrl_port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl Baresip {
    /// `account` is the full account line, e.g. `<sip:bob@127.0.0.1:5070>;auth_pass=bobpw;regint=60`.
    pub async fn start(account: &str) -> Baresip {
        Self::start_with(account, "").await
    }

    /// Like [`Baresip::start`] with extra config lines (e.g. `module sndfile.so` to record
    /// what it hears into `<dir>/rec`).
    pub async fn start_with(account: &str, extra_config: &str) -> Baresip {
        Self::start_with_mic(account, extra_config, &[0; 8000 * 30]).await
    }

    /// Like [`Baresip::start_with`], with `mic` (8 kHz mono samples, played from the start of
    /// each call) as what the phone's user says.
    pub async fn start_with_mic(account: &str, extra_config: &str, mic: &[i16]) -> Baresip {
        let sip_port = free_port();
        let ctrl_port = free_port();
        let dir = tempdir("baresip");
        let wav = dir.path().join("mic.wav");
        write_wav(&wav, 8000, mic);
        let config = format!(
            "sip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\ndns_server 127.0.0.1:53\n\
             audio_source aufile,{}\nausrc_srate 8000\nausrc_channels 1\nauplay_srate 8000\nauplay_channels 1\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module_tmp uuid.so\nmodule_tmp account.so\nmodule_app contact.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\nrtp_ports 20000-29999\nrtp_timeout 0\nsip_trans_def udp\n\
             snd_path {}\n{extra_config}\n",
            wav.display(),
            dir.path().join("rec").display()
        );
        std::fs::create_dir_all(dir.path().join("rec")).unwrap();
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(dir.path().join("accounts"), format!("{account}\n")).unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.path().join("baresip.log")).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let proc = Proc::spawn("baresip", &mut cmd);
        let b = Baresip {
            sip_port,
            ctrl_port,
            dir,
            _proc: proc,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", ctrl_port))
                .await
                .is_ok()
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("baresip did not come up: {}", b.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("baresip.log")).unwrap_or_default()
    }

    /// Connects the (single) ctrl_tcp client.
    pub async fn ctrl(&self) -> BaresipCtrl {
        let s = tokio::net::TcpStream::connect(("127.0.0.1", self.ctrl_port))
            .await
            .unwrap();
        BaresipCtrl { s, buf: Vec::new() }
    }
}

pub struct BaresipCtrl {
    s: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl BaresipCtrl {
    pub async fn command(&mut self, cmd: &str, params: &str) {
        use tokio::io::AsyncWriteExt;
        let json = format!(r#"{{"command":"{cmd}","params":"{params}","token":"t"}}"#);
        let ns = format!("{}:{},", json.len(), json);
        self.s.write_all(ns.as_bytes()).await.unwrap();
    }

    /// Waits for an event whose `type` equals `ty`; returns the JSON text.
    pub async fn wait_event(&mut self, ty: &str, timeout: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(msg) = self.take_netstring() {
                if msg.contains(&format!("\"type\":\"{ty}\"")) {
                    return Some(msg);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take_netstring(&mut self) -> Option<String> {
        let colon = self.buf.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&self.buf[..colon]).ok()?.parse().ok()?;
        if self.buf.len() < colon + 1 + len + 1 {
            return None;
        }
        let msg = String::from_utf8_lossy(&self.buf[colon + 1..colon + 1 + len]).into_owned();
        self.buf.drain(..colon + 1 + len + 1);
        Some(msg)
    }
}

/// A mono 16-bit PCM WAV of `samples`.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = samples.len() as u32 * 2;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    std::fs::write(path, w).unwrap();
}

/// CPU seconds (user + system) that process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
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
