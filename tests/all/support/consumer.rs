//! A small consumer of the sip module's events standing in for the call layer: it answers,
//! rings or rejects incoming calls with a canned SDP and logs what it saw, for tests of the
//! SIP endpoint alone (media and agents are other modules' work).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use switchboard::sip::{
    CallOutcome, Dialog, DialogEvent, OutboundCall, SipConfig, SipEndpoint, SipEvent,
};
use tokio::sync::mpsc;

use crate::support::media::RtpPeer;
use crate::support::ports::free_port;

/// A canned SDP answer/offer; nothing listens on its port, reserved for the test's process
/// (signalling tests only).
pub fn canned_sdp(direction: &str) -> String {
    static PORT: OnceLock<u16> = OnceLock::new();
    let port = PORT.get_or_init(free_port);
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=switchboard-test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

/// A benchmark caller's call: PCMU from a new RTP socket to `to`, answered. Returns the socket,
/// aimed at the media port of the answer, and the dialog (to hang up).
pub async fn dial_pcmu(endpoint: &SipEndpoint, to: String, n: u32) -> (RtpPeer, Dialog) {
    let peer = RtpPeer::new(0).await;
    let rtp_port = peer.addr().port();
    let call = OutboundCall {
        to,
        sdp_offer: format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        ),
        ..Default::default()
    };
    let mut outgoing = endpoint.place_call(call).await.expect("INVITE sent");
    let (remote_sdp, dialog) = match outgoing.outcome().await {
        CallOutcome::Answered { remote_sdp, dialog } => (remote_sdp, dialog),
        other => panic!("call {n} not answered: {other:?}"),
    };
    let sdp = remote_sdp.expect("an SDP answer");
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no audio port in {sdp}"));
    let peer = RtpPeer {
        target: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ..peer
    };
    (peer, dialog)
}

/// Base endpoint config for tests: UDP and TCP on one free port of 127.0.0.1.
pub fn test_config() -> SipConfig {
    SipConfig {
        udp_listen: Some("127.0.0.1:0".parse().unwrap()),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..SipConfig::default()
    }
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
                DialogEvent::SessionTimer(event) => log.push(format!("session-timer:{event:?}")),
            }
        }
    })
}
