//! Web calls as a load: N concurrent browser-like WebRTC peers against the host's offer
//! endpoint, in a process of its own so that its CPU is not the server's. Each call is a str0m
//! full ICE agent doing what the contract's page does: one offer holding a sendrecv Opus audio
//! m-line, the `switchboard` data channel and its one host candidate (no trickle), `POST`ed as
//! `application/sdp`, the answer applied; once ICE, DTLS and the channel are up it speaks the
//! given audio in 20 ms Opus frames on a drift-free clock (looped), decodes what the agent sends
//! to measure what it heard, and counts the channel's events by type. After S seconds it sends
//! `{"type":"hangup"}` on the channel and waits for the call to end.
//!
//! `webrtc-load --offer-url http://127.0.0.1:PORT/v1/webrtc/2000 --calls N --secs S
//!  --audio FILE.raw [--ramp-ms MS]` (FILE: mono 16-bit little-endian PCM at 48 kHz, encoded
//! once with the host's Opus encoder and shared by every call) prints `connected K of N` once
//! every call is connected or has failed to, then one JSON line: failures and where, totals,
//! and per call its id and what it saw. 127.0.0.1 only (the endpoint and the answer's
//! candidates); bounded by `--calls` and `--secs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use str0m::change::SdpAnswer;
use str0m::channel::ChannelId;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use switchboard::media::Codec;
use switchboard::media::codec::{AudioDecoder, new_decoder, new_encoder};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedSender;

/// The test helpers this program shares with the test binary, mounted at the same paths; it
/// uses only part of them.
#[allow(dead_code, unused_imports)]
#[path = "../all/support"]
mod support {
    pub mod load_args;
    pub mod model_audio;
}

use support::load_args::{Load, LoadArgs};
use support::model_audio::rms;

/// Calls at most, and seconds a call at most: a load, not a flood.
const MAX_CALLS: u32 = 1000;
const MAX_SECS: u64 = 600;
/// The offer's POST until its answer has arrived.
const OFFER_LIMIT: Duration = Duration::from_secs(20);
/// From the answer until ICE and DTLS are connected and the data channel is open.
const CONNECT_LIMIT: Duration = Duration::from_secs(15);
/// From the hangup until the call's `ended` event.
const HANGUP_LIMIT: Duration = Duration::from_secs(5);
/// The data channel the page opens (webrtc-contract.md).
const CHANNEL: &str = "switchboard";
/// 20 ms at 48 kHz.
const FRAME: usize = 960;
/// A decoded packet louder than this (RMS) is sound heard, not silence or comfort noise.
const LOUD_RMS: f64 = 300.0;

struct Args {
    offer_url: String,
    calls: u32,
    secs: u64,
    ramp: Duration,
    /// The audio as 20 ms Opus frames, sent in turn by every call.
    frames: Vec<Arc<[u8]>>,
}

fn args() -> Args {
    let Load {
        target: offer_url,
        calls,
        secs,
        ramp,
        audio,
    } = LoadArgs::from_env().load("offer-url", MAX_CALLS, MAX_SECS);
    let pcm: Vec<i16> = audio
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(pcm.len() >= FRAME, "at least 20 ms of 48 kHz audio");
    Args {
        offer_url,
        calls,
        secs,
        ramp,
        frames: opus_frames(&pcm),
    }
}

/// `pcm` (48 kHz) as consecutive 20 ms Opus frames from one encoder, as a browser sends them.
fn opus_frames(pcm: &[i16]) -> Vec<Arc<[u8]>> {
    let mut encoder = new_encoder(Codec::Opus).expect("an Opus encoder");
    pcm.chunks_exact(FRAME)
        .map(|frame| {
            let mut payload = Vec::new();
            encoder.encode(frame, &mut payload).expect("Opus encodes");
            payload.into()
        })
        .collect()
}

/// What one call saw.
#[derive(Default)]
struct Seen {
    /// The call's id (`X-Switchboard-Call-Id` of the answer).
    id: Option<String>,
    /// Where the call broke, if it did.
    failure: Option<String>,
    /// The offer's POST → ICE and DTLS connected and the data channel open, in ms.
    setup_ms: Option<f64>,
    /// Opus frames sent and received.
    sent: u64,
    received: u64,
    /// Received audio louder than [`LOUD_RMS`], in samples at 48 kHz.
    heard_samples: u64,
    /// The data channel's events by `type`.
    events: BTreeMap<String, u64>,
    /// Datagrams the socket did not take at once (dropped, as a browser's would be).
    send_drops: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    str0m::crypto::from_feature_flags().install_process_default();
    let args = Arc::new(args());
    let http = reqwest::Client::builder()
        .timeout(OFFER_LIMIT)
        .build()
        .expect("an HTTP client");
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let calls: Vec<_> = (0..args.calls)
        .map(|n| {
            let (args, http, connected) = (args.clone(), http.clone(), connected_tx.clone());
            tokio::spawn(async move {
                // Spread the call setups over the ramp, as a burst of real calls would be.
                tokio::time::sleep(args.ramp * n / args.calls.max(1)).await;
                let limit = OFFER_LIMIT
                    + CONNECT_LIMIT
                    + Duration::from_secs(args.secs)
                    + HANGUP_LIMIT
                    + Duration::from_secs(5);
                tokio::time::timeout(limit, call(&args, &http, connected))
                    .await
                    .unwrap_or_else(|_| Seen {
                        failure: Some(format!("stuck past {limit:?}")),
                        ..Seen::default()
                    })
            })
        })
        .collect();
    drop(connected_tx);
    let (mut settled, mut connected) = (0, 0);
    while let Some(ok) = connected_rx.recv().await {
        settled += 1;
        connected += u32::from(ok);
        if settled == args.calls {
            println!("connected {connected} of {}", args.calls);
        }
    }
    let mut failures = Vec::new();
    let mut per_call = Vec::new();
    let (mut sent, mut received, mut send_drops) = (0, 0, 0);
    let (mut setup_ms, mut heard_s) = (Vec::new(), Vec::new());
    for (n, c) in calls.into_iter().enumerate() {
        let seen = c.await.expect("a call task");
        if let Some(f) = &seen.failure {
            failures.push(format!("call {n}: {f}"));
        }
        sent += seen.sent;
        received += seen.received;
        send_drops += seen.send_drops;
        setup_ms.extend(seen.setup_ms);
        let heard = seen.heard_samples as f64 / 48000.0;
        heard_s.push(heard);
        per_call.push(json!({
            "id": seen.id, "failure": seen.failure, "sent": seen.sent,
            "received": seen.received, "heard_s": heard, "events": seen.events,
        }));
    }
    let report: Value = json!({
        "calls": args.calls, "connected": connected, "failed": failures.len(),
        "failures": failures.iter().take(20).collect::<Vec<_>>(),
        "sent": sent, "received": received, "send_drops": send_drops,
        "setup_ms": setup_ms, "heard_s": heard_s, "per_call": per_call,
    });
    println!("{report}");
}

/// Place one call and play it to its end; `connected` learns whether it came up.
async fn call(args: &Args, http: &reqwest::Client, connected: UnboundedSender<bool>) -> Seen {
    let mut seen = Seen::default();
    let posted = Instant::now();
    let mut peer = match Peer::connect(args, http, &mut seen).await {
        Ok(peer) => peer,
        Err(e) => {
            let _ = connected.send(false);
            seen.failure = Some(e);
            return seen;
        }
    };
    let _ = connected.send(true);
    peer.seen.setup_ms = Some(posted.elapsed().as_secs_f64() * 1000.0);
    peer.seen.id = seen.id;
    let end = tokio::time::Instant::now() + Duration::from_secs(args.secs);
    let outcome = match peer.talk(&args.frames, end).await {
        Ok(()) => peer.hang_up().await,
        Err(e) => Err(e),
    };
    let mut seen = peer.seen;
    seen.failure = outcome.err();
    if seen.failure.is_none() && seen.heard_samples == 0 {
        seen.failure = Some(format!(
            "no audio heard from the server ({} frames received)",
            seen.received
        ));
    }
    seen
}

/// The caller's side of the audio while it talks: a frame every tick of `clock`, in turn.
struct Voice<'a> {
    clock: tokio::time::Interval,
    frames: &'a [Arc<[u8]>],
    pt: Pt,
}

/// One call's peer connection: str0m driven over its own UDP socket.
struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    /// When str0m wants its next `Input::Timeout`.
    wake: Instant,
    /// Since the answer: "at N s" in failures.
    answered: Instant,
    connected: bool,
    channel: Option<ChannelId>,
    /// How the host ended the call: the data channel's `ended` event, or a close.
    ended: Option<&'static str>,
    /// Where the connection broke while str0m was being driven.
    broken: Option<String>,
    decoder: Box<dyn AudioDecoder>,
    pcm: Vec<i16>,
    buf: Vec<u8>,
    seen: Seen,
}

impl Peer {
    /// Offer, answer, and ICE + DTLS + the data channel up; the call's id goes into `seen`.
    async fn connect(args: &Args, http: &reqwest::Client, seen: &mut Seen) -> Result<Peer, String> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding a UDP socket: {e}"))?;
        let local = socket.local_addr().map_err(|e| format!("socket: {e}"))?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let mut changes = rtc.sdp_api();
        let mid = changes.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        // Before the offer, as the page does, so the offer carries the SCTP m-line.
        changes.add_channel(CHANNEL.into());
        let (offer, pending) = changes.apply().expect("media and a channel to offer");
        let mut peer = Peer {
            rtc,
            socket,
            local,
            mid,
            wake: Instant::now(),
            answered: Instant::now(),
            connected: false,
            channel: None,
            ended: None,
            broken: None,
            decoder: new_decoder(Codec::Opus).expect("an Opus decoder"),
            pcm: Vec::with_capacity(FRAME * 6),
            buf: vec![0; 2048],
            seen: Seen::default(),
        };
        peer.drain()?;

        let response = http
            .post(&args.offer_url)
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .map_err(|e| format!("offer POST: {e}"))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        seen.id = header("x-switchboard-call-id");
        let content_type = header("content-type").unwrap_or_default();
        let body = response
            .text()
            .await
            .map_err(|e| format!("offer answer body: {e}"))?;
        if status.as_u16() != 201 {
            return Err(format!("offer answered {status}: {}", body.trim()));
        }
        if !content_type.starts_with("application/sdp") || seen.id.is_none() {
            return Err(format!(
                "201 without an SDP answer and a call id (content-type {content_type:?}, id \
                 {:?})",
                seen.id
            ));
        }
        if let Some(line) = body
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .find(|l| l.split_whitespace().nth(4) != Some("127.0.0.1"))
        {
            return Err(format!("the answer has a candidate off 127.0.0.1: {line}"));
        }
        let answer =
            SdpAnswer::from_sdp_string(&body).map_err(|e| format!("answer is not SDP: {e}"))?;
        peer.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("answer refused: {e}"))?;
        peer.answered = Instant::now();
        peer.drain()?;

        let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
        while !(peer.connected && peer.channel.is_some()) {
            if !peer.step(deadline, None).await? {
                return Err(if peer.connected {
                    format!("the data channel not open {CONNECT_LIMIT:?} after the answer")
                } else {
                    format!("ICE + DTLS not connected {CONNECT_LIMIT:?} after the answer")
                });
            }
        }
        Ok(peer)
    }

    /// Speaks `frames` (looped) every 20 ms until `end`.
    async fn talk(
        &mut self,
        frames: &[Arc<[u8]>],
        end: tokio::time::Instant,
    ) -> Result<(), String> {
        let pt = self
            .rtc
            .writer(self.mid)
            .and_then(|w| {
                w.payload_params()
                    .find(|p| p.spec().codec == RtcCodec::Opus)
                    .map(|p| p.pt())
            })
            .ok_or("no Opus in the answer")?;
        let mut voice = Voice {
            // Ticks at start + k·20 ms, a late one catching up: the RTP clock and the wall
            // clock stay together however the process is scheduled.
            clock: tokio::time::interval(Duration::from_millis(20)),
            frames,
            pt,
        };
        while self.step(end, Some(&mut voice)).await? {
            if let Some(how) = self.ended {
                return Err(format!(
                    "the server ended the call at {:.1} s ({how})",
                    self.answered.elapsed().as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// `{"type":"hangup"}` on the data channel, then the end of the call: its `ended` event,
    /// or the close of the channel or of the connection (the host closes right after the
    /// event, which may not make it out before).
    async fn hang_up(&mut self) -> Result<(), String> {
        let channel = self.channel.ok_or("the data channel is not open")?;
        let written = self
            .rtc
            .channel(channel)
            .ok_or("the data channel is gone")?
            .write(false, br#"{"type":"hangup"}"#)
            .map_err(|e| format!("hangup: {e}"))?;
        self.drain()?;
        if !written {
            return Err("hangup: the data channel's buffer is full".into());
        }
        let deadline = tokio::time::Instant::now() + HANGUP_LIMIT;
        while self.ended.is_none() {
            if !self.step(deadline, None).await? {
                return Err(format!(
                    "neither an `ended` event nor a close {HANGUP_LIMIT:?} after the hangup"
                ));
            }
        }
        self.rtc.disconnect();
        Ok(())
    }

    /// Waits for the next of: a datagram, str0m's timer, the next frame of `voice` (while
    /// talking), `until`; feeds it to str0m and drains its output. False once `until` has
    /// come.
    async fn step(
        &mut self,
        until: tokio::time::Instant,
        voice: Option<&mut Voice<'_>>,
    ) -> Result<bool, String> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let wake = tokio::time::Instant::from_std(self.wake).min(until);
        let next_frame = async {
            match voice {
                Some(voice) => {
                    voice.clock.tick().await;
                    voice
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = self.socket.recv_from(&mut self.buf) => {
                let (n, source) = got.map_err(|e| format!("socket: {e}"))?;
                // Anything not STUN, DTLS, RTP or RTCP is not for str0m.
                if let Ok(datagram) = Receive::new(Protocol::Udp, source, self.local, &self.buf[..n]) {
                    self.rtc
                        .handle_input(Input::Receive(Instant::now(), datagram))
                        .map_err(|e| format!("str0m input: {e}"))?;
                    self.drain()?;
                }
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= until {
                    return Ok(false);
                }
                self.rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .map_err(|e| format!("str0m timeout: {e}"))?;
                self.drain()?;
            }
            voice = next_frame => {
                let n = self.seen.sent;
                let frame = voice.frames[(n % voice.frames.len() as u64) as usize].clone();
                let at = MediaTime::new(n * FRAME as u64, Frequency::FORTY_EIGHT_KHZ);
                self.rtc
                    .writer(self.mid)
                    .ok_or("the audio m-line is gone")?
                    .write(voice.pt, Instant::now(), at, frame)
                    .map_err(|e| format!("audio write: {e}"))?;
                self.seen.sent += 1;
                self.drain()?;
                // str0m packetizes the frame on the timeout it now asks for: given at once,
                // not through another wake-up (one per frame of every call).
                let now = Instant::now();
                if self.wake <= now {
                    self.rtc
                        .handle_input(Input::Timeout(now))
                        .map_err(|e| format!("str0m timeout: {e}"))?;
                    self.drain()?;
                }
            }
        }
        match &self.broken {
            Some(broken) => Err(broken.clone()),
            None => Ok(true),
        }
    }

    /// Polls str0m until it only has a timeout left (its one rule: every change is followed by
    /// a full drain): datagrams go out on the socket, events are taken in.
    fn drain(&mut self) -> Result<(), String> {
        loop {
            match self.rtc.poll_output().map_err(|e| format!("str0m: {e}"))? {
                Output::Timeout(at) => {
                    self.wake = at;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.seen.send_drops += 1;
                    }
                }
                Output::Event(event) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                let at = self.answered.elapsed().as_secs_f64();
                self.broken
                    .get_or_insert(format!("ICE disconnected at {at:.1} s"));
            }
            Event::ChannelOpen(id, label) if label == CHANNEL => self.channel = Some(id),
            Event::ChannelClose(id) if Some(id) == self.channel => {
                self.channel = None;
                self.ended.get_or_insert("the data channel closed");
            }
            Event::Closed => {
                self.ended.get_or_insert("the host closed the connection");
            }
            Event::ChannelData(data) => {
                let event: Value = serde_json::from_slice(&data.data).unwrap_or(Value::Null);
                let kind = event["type"].as_str().unwrap_or("<not a JSON event>");
                if kind == "ended" {
                    self.ended.get_or_insert("an `ended` event");
                }
                *self.seen.events.entry(kind.to_string()).or_default() += 1;
            }
            Event::MediaData(media) => {
                self.seen.received += 1;
                self.pcm.clear();
                if self.decoder.decode(&media.data, &mut self.pcm).is_ok()
                    && rms(&self.pcm) > LOUD_RMS
                {
                    self.seen.heard_samples += self.pcm.len() as u64;
                }
            }
            _ => {}
        }
    }
}
