//! A load of secure SIP callers, in a process of its own so that its CPU is not the server's
//! (Debian's SIPp has neither TLS nor SRTP). Two loads, bounded in count and time, to 127.0.0.1
//! only:
//!
//! `secure-load calls --target 127.0.0.1:PORT --ca CA.pem --calls N --secs S [--ramp-ms MS]
//!  [--srtp] [--to 1000]`: N calls over SIP over TLS (a connection each), set up over the ramp
//! and all hung up S seconds after the start. Each offers PCMU, RTP/SAVP with an SDES key of
//! its own under `--srtp` (the project's SRTP, `switchboard::media::srtp`) or plain RTP/AVP,
//! and sends a 20 ms packet of a tone every 20 ms, checking what comes back (authenticated,
//! the tone). Prints `up K of N` once every call is answered (or failed to be), then one JSON
//! line: failures and where, packets sent and received, packets that failed authentication,
//! echoes that carried the tone.
//!
//! `secure-load handshakes --target 127.0.0.1:PORT --ca CA.pem --count N [--concurrency C]
//!  [--tls12]`: N full TLS handshakes (session resumption off), C at a time, each connection
//! closed (close_notify) once its handshake is done. Prints one JSON line: handshakes done and
//! failed, seconds, the protocol version and cipher suite.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::json;
use switchboard::media::srtp::{MasterKey, SrtpKeys, Suite};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;

/// The test helpers this program shares with the test binary, mounted at the same paths; it
/// uses only part of them.
#[allow(dead_code, unused_imports)]
#[path = "../all/support"]
mod support {
    pub mod model_tls;
    pub mod raw_sip;
    pub mod secure_caller;
}

use support::model_tls::client_config_with;
use support::raw_sip::fastrand_u64;
use support::secure_caller::{
    Dialog, RtpStream, SipTls, body, crypto_attribute, offer, parse_answer, status, tone_frame,
    transact,
};

/// Calls at most, seconds at most, handshakes at most: a load, not a flood.
const MAX_CALLS: u32 = 1000;
const MAX_SECS: u64 = 600;
const MAX_HANDSHAKES: u32 = 20_000;
/// How long a call's connection and INVITE may take.
const SETUP_LIMIT: Duration = Duration::from_secs(20);

struct Args(HashMap<String, String>);

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Args {
        let mut map = HashMap::new();
        while let Some(key) = it.next() {
            let key = key
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("unexpected argument {key}"))
                .to_string();
            // Switches take no value.
            if matches!(key.as_str(), "srtp" | "tls12") {
                map.insert(key, String::new());
                continue;
            }
            let value = it.next().unwrap_or_else(|| panic!("--{key} needs a value"));
            map.insert(key, value);
        }
        Args(map)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn need<T: std::str::FromStr>(&self, key: &str) -> T {
        self.get(key)
            .unwrap_or_else(|| panic!("--{key} is required"))
            .parse()
            .unwrap_or_else(|_| panic!("--{key}: not a valid value"))
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The server, on 127.0.0.1 only.
    fn target(&self) -> SocketAddr {
        let target: SocketAddr = self.need("target");
        assert!(
            target.ip() == std::net::Ipv4Addr::LOCALHOST,
            "the load goes to 127.0.0.1 only: {target}"
        );
        target
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let args = Args::parse(it);
    let ca: PathBuf = args.need("ca");
    match mode.as_str() {
        "calls" => {
            let tls = Arc::new(client_config_with(&ca, rustls::DEFAULT_VERSIONS));
            calls(&args, tls).await
        }
        "handshakes" => {
            let versions: &[&'static rustls::SupportedProtocolVersion] = if args.has("tls12") {
                &[&rustls::version::TLS12]
            } else {
                &[&rustls::version::TLS13]
            };
            let mut config = client_config_with(&ca, versions);
            config.resumption = rustls::client::Resumption::disabled();
            handshakes(&args, Arc::new(config)).await
        }
        other => panic!("secure-load calls|handshakes ..., not {other:?}"),
    }
}

/// What one call saw.
#[derive(Default)]
struct Seen {
    /// Where the call broke, if it did.
    failure: Option<String>,
    sent: u64,
    received: u64,
    /// Packets from the server that failed SRTP authentication here.
    auth_failures: u64,
    /// Packets back that carried the tone as sent.
    tones: u64,
}

async fn calls(args: &Args, tls: Arc<rustls::ClientConfig>) {
    let target = args.target();
    let count: u32 = args.need("calls");
    let secs: u64 = args.need("secs");
    assert!(
        count <= MAX_CALLS && secs <= MAX_SECS,
        "at most {MAX_CALLS} calls for {MAX_SECS} s"
    );
    let ramp = Duration::from_millis(args.get("ramp-ms").map_or(1000, |v| v.parse().unwrap()));
    assert!(
        ramp + Duration::from_secs(5) < Duration::from_secs(secs),
        "the calls last at least 5 s after the ramp"
    );
    let srtp = args.has("srtp");
    let uri = format!(
        "sip:{}@127.0.0.1:{};transport=tls",
        args.get("to").unwrap_or("1000"),
        target.port()
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let tasks: Vec<_> = (0..count)
        .map(|n| {
            let (tls, uri, up) = (tls.clone(), uri.clone(), up_tx.clone());
            tokio::spawn(async move {
                tokio::time::sleep(ramp * n / count.max(1)).await;
                // A server that stops answering blocks a call: it ends here.
                let limit = end.saturating_duration_since(Instant::now()) + SETUP_LIMIT;
                let call = Call {
                    target,
                    uri: &uri,
                    srtp,
                    end,
                };
                tokio::time::timeout(limit, call.run(tls, &up))
                    .await
                    .unwrap_or_else(|_| Seen {
                        failure: Some(format!("stuck past {limit:?}")),
                        ..Seen::default()
                    })
            })
        })
        .collect();
    drop(up_tx);
    let (mut settled, mut up) = (0, 0);
    while let Some(ok) = up_rx.recv().await {
        settled += 1;
        up += u32::from(ok);
        if settled == count {
            println!("up {up} of {count}");
        }
    }
    let mut failures = Vec::new();
    let mut totals = Seen::default();
    for (n, task) in tasks.into_iter().enumerate() {
        let seen = task.await.expect("a call task");
        if let Some(f) = seen.failure {
            failures.push(format!("call {n}: {f}"));
        }
        totals.sent += seen.sent;
        totals.received += seen.received;
        totals.auth_failures += seen.auth_failures;
        totals.tones += seen.tones;
    }
    let report = json!({
        "calls": count, "up": up, "srtp": srtp, "failed": failures.len(),
        "failures": failures.iter().take(10).collect::<Vec<_>>(),
        "packets_sent": totals.sent, "packets_received": totals.received,
        "auth_failures": totals.auth_failures, "tones": totals.tones,
    });
    println!("{report}");
}

/// One call of the load.
struct Call<'a> {
    target: SocketAddr,
    uri: &'a str,
    srtp: bool,
    /// When it hangs up.
    end: Instant,
}

impl Call<'_> {
    /// Places the call, plays it to its end, hangs up; `up` learns whether it was answered.
    async fn run(
        self,
        tls: Arc<rustls::ClientConfig>,
        up: &tokio::sync::mpsc::UnboundedSender<bool>,
    ) -> Seen {
        let mut seen = Seen::default();
        let answered = tokio::time::timeout(SETUP_LIMIT, self.answered(tls)).await;
        let (mut sip, mut dialog, rtp, rtcp, mut stream) = match answered {
            Ok(Ok(call)) => call,
            Ok(Err(e)) => {
                let _ = up.send(false);
                seen.failure = Some(e);
                return seen;
            }
            Err(_) => {
                let _ = up.send(false);
                seen.failure = Some(format!("not answered in {SETUP_LIMIT:?}"));
                return seen;
            }
        };
        let _ = up.send(true);

        let tone = tone_frame();
        let (mut out, mut plain) = (Vec::new(), Vec::new());
        let (mut inbound, mut reports) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let hang_up = tokio::time::sleep_until(tokio::time::Instant::from_std(self.end));
        tokio::pin!(hang_up);
        loop {
            tokio::select! {
                _ = &mut hang_up => break,
                _ = tick.tick() => {
                    stream.next_packet(&tone, &mut out);
                    if let Err(e) = rtp.send(&out).await {
                        seen.failure = Some(format!("RTP send: {e}"));
                        break;
                    }
                    seen.sent += 1;
                }
                got = rtp.recv(&mut inbound) => match got {
                    Ok(n) => match stream.receive(&inbound[..n], &mut plain) {
                        Ok(()) => {
                            seen.received += 1;
                            seen.tones += u64::from(plain.get(12..) == Some(tone.as_slice()));
                        }
                        Err(_) => seen.auth_failures += 1,
                    },
                    Err(e) => {
                        seen.failure = Some(format!("RTP receive: {e}"));
                        break;
                    }
                },
                // SRTCP or RTCP reports: taken off the socket, not checked.
                _ = rtcp.recv(&mut reports) => {}
                message = sip.recv() => match message {
                    None => {
                        seen.failure = Some("the server closed the SIP connection".into());
                        return seen;
                    }
                    Some(m) if status(&m).is_none() && !m.starts_with("ACK ") => {
                        let _ = sip.answer_ok(&m).await;
                        if m.starts_with("BYE ") {
                            seen.failure = Some("the server hung up".into());
                            return seen;
                        }
                    }
                    Some(_) => {}
                },
            }
        }
        let bye = dialog.bye();
        match transact(&mut sip, &dialog, &bye, Duration::from_secs(10)).await {
            Ok(ok) if status(&ok) == Some(200) => {}
            Ok(other) => seen.failure = Some(format!("BYE answered {:?}", status(&other))),
            Err(e) => seen.failure = Some(format!("BYE: {e}")),
        }
        if seen.failure.is_none() && (seen.received == 0 || seen.auth_failures > 0) {
            seen.failure = Some(format!(
                "{} packets back, {} failed authentication",
                seen.received, seen.auth_failures
            ));
        }
        seen
    }

    /// The connection, the answered dialog, its RTP and RTCP sockets and stream.
    async fn answered(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<(SipTls, Dialog, UdpSocket, UdpSocket, RtpStream), String> {
        let mut sip = SipTls::connect(self.target, tls)
            .await
            .map_err(|e| format!("TLS connection: {e}"))?;
        let bind = || async {
            UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("binding RTP: {e}"))
        };
        let (rtp, rtcp) = (bind().await?, bind().await?);
        let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);
        let suite = Suite::AesCm128HmacSha1_80;
        let key = self.srtp.then(MasterKey::random);
        let crypto = key.as_ref().map(|k| crypto_attribute(suite, k, "|2^31"));
        let mut dialog = Dialog::new(self.uri, sip.local);
        let invite = dialog.invite(&offer(port(&rtp), port(&rtcp), crypto.as_deref(), 1));
        let ok = transact(&mut sip, &dialog, &invite, SETUP_LIMIT).await?;
        if status(&ok) != Some(200) {
            let _ = sip.send(&dialog.ack_failure(&ok)).await;
            return Err(format!(
                "INVITE answered {}",
                ok.lines().next().unwrap_or("")
            ));
        }
        dialog.established(&ok);
        sip.send(&dialog.ack())
            .await
            .map_err(|e| format!("ACK: {e}"))?;
        let answer = parse_answer(body(&ok)).ok_or_else(|| format!("no SDP answer: {ok}"))?;
        let keys = match (key, answer.crypto) {
            (Some(send), Some((suite, recv))) => Some(SrtpKeys { suite, send, recv }),
            (None, None) => None,
            (Some(_), None) => return Err("SRTP offered, plain answer".into()),
            (None, Some(_)) => return Err("plain offer, SRTP answer".into()),
        };
        rtp.connect(answer.rtp)
            .await
            .map_err(|e| format!("RTP to {}: {e}", answer.rtp))?;
        let stream = RtpStream::new(keys.as_ref(), (fastrand_u64() >> 49) as u16);
        Ok((sip, dialog, rtp, rtcp, stream))
    }
}

async fn handshakes(args: &Args, tls: Arc<rustls::ClientConfig>) {
    let target = args.target();
    let count: u32 = args.need("count");
    assert!(
        count <= MAX_HANDSHAKES,
        "at most {MAX_HANDSHAKES} handshakes"
    );
    let concurrency: u32 = args.get("concurrency").map_or(4, |c| c.parse().unwrap());
    let connector = TlsConnector::from(tls);
    let next = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (connector, next) = (connector.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut first_error, mut agreed) = (0u32, 0u32, None, None);
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match handshake(&connector, target).await {
                        Ok(params) => {
                            ok += 1;
                            agreed.get_or_insert(params);
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (ok, failed, first_error, agreed)
            })
        })
        .collect();
    let (mut ok, mut failed, mut first_error, mut agreed) = (0, 0, None, None);
    for w in workers {
        let (o, f, e, a) = w.await.expect("a handshake worker");
        ok += o;
        failed += f;
        first_error = first_error.or(e);
        agreed = agreed.or(a);
    }
    let secs = start.elapsed().as_secs_f64();
    let (version, suite) = agreed.unwrap_or_default();
    let report = json!({
        "count": count, "ok": ok, "failed": failed, "first_error": first_error,
        "secs": secs, "per_second": f64::from(ok) / secs,
        "version": version, "suite": suite,
    });
    println!("{report}");
}

/// One full handshake, then close_notify; the version and cipher suite agreed.
async fn handshake(
    connector: &TlsConnector,
    target: SocketAddr,
) -> Result<(String, String), String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(target.ip().into());
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let agreed = (
        format!("{:?}", session.protocol_version()),
        format!("{:?}", session.negotiated_cipher_suite().map(|s| s.suite())),
    );
    let _ = tls.shutdown().await;
    Ok(agreed)
}
