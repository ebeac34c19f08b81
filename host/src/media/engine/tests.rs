//! The engine on a fake clock: no socket, no thread, no sleep. Each test says what time it is
//! and what arrives; the harness polls the engine at its deadlines, as the media thread does,
//! and keeps what it sent and reported.

mod g722;
mod receive;
mod rtcp;
mod send;
mod srtp;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Command, Engine, Output, Socket, StreamIds, WallClock};
use crate::media::codec::Codec;
use crate::media::recording::Recorder;
use crate::media::rtp::RtpPacket;
use crate::media::sdp::{Direction, NegotiatedMedia};
use crate::media::session::{AudioFrame, MediaConfig, MediaError, MediaEvent, Shared, lock};
use crate::media::stats::MediaStats;
pub(super) use crate::media::test_support::{self, config};

/// The peer's RTP and RTCP addresses.
const PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40000));
const PEER_RTCP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40001));
/// Our stream's identity (the shell picks it at random).
const IDS: StreamIds = StreamIds {
    ssrc: 0x5EED_0001,
    sequence: 65530,
    timestamp: 4_000_000_000,
};

/// An RTP packet the engine sent, at `at` after the start.
#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    dest: SocketAddr,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

struct Harness {
    engine: Engine,
    shared: Arc<Mutex<Shared>>,
    out: Output,
    t0: Instant,
    now: Instant,
    /// RTP packets sent, in order.
    rtp: Vec<Sent>,
    /// RTCP datagrams sent: when (after the start), where, what.
    rtcp: Vec<(Duration, SocketAddr, Vec<u8>)>,
    /// Events for the call, with when (after the start).
    events: Vec<(Duration, MediaEvent)>,
    /// What the session handle's `stats` would read.
    published: MediaStats,
    /// The engine stopped (media timeout).
    stopped: bool,
}

fn negotiated(peer: SocketAddr, codec: Codec) -> NegotiatedMedia {
    test_support::negotiated(peer, PEER_RTCP, codec)
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    RtpPacket {
        payload_type: pt,
        marker,
        sequence: seq,
        timestamp: ts,
        ssrc,
        payload,
    }
    .write(&mut buf)
    .unwrap();
    buf
}

impl Harness {
    /// An engine for `media` talking to [`PEER`], started (and polled once, as its media
    /// thread does when it arrives) at the fake clock's zero.
    fn new(config: MediaConfig, media: NegotiatedMedia) -> Harness {
        let t0 = Instant::now();
        let shared = Arc::new(Mutex::new(Shared::new(&media)));
        let wall = WallClock {
            at: t0,
            unix: Duration::from_secs(1_700_000_000),
        };
        let engine = Engine::new(config, media, shared.clone(), IDS, wall, t0).unwrap();
        let mut h = Harness {
            engine,
            shared,
            out: Output::default(),
            t0,
            now: t0,
            rtp: Vec::new(),
            rtcp: Vec::new(),
            events: Vec::new(),
            published: MediaStats::default(),
            stopped: false,
        };
        h.poll();
        h
    }

    fn pcmu() -> Harness {
        Harness::new(config(30_000), negotiated(PEER, Codec::Pcmu))
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn poll(&mut self) {
        if self.engine.poll(self.now, &mut self.out) {
            self.stopped = true;
        }
        self.collect();
    }

    /// Takes what the engine left in its output, as the shell does.
    fn collect(&mut self) {
        let at = self.now.duration_since(self.t0);
        for (socket, dest, datagram) in self.out.transmits() {
            match socket {
                Socket::Rtp => {
                    let p = RtpPacket::parse(datagram).expect("the engine sends valid RTP");
                    self.rtp.push(Sent {
                        at,
                        dest,
                        pt: p.payload_type,
                        marker: p.marker,
                        seq: p.sequence,
                        ts: p.timestamp,
                        ssrc: p.ssrc,
                        payload: p.payload.to_vec(),
                    });
                }
                Socket::Rtcp => self.rtcp.push((at, dest, datagram.to_vec())),
            }
        }
        self.out.clear_transmits();
        self.events
            .extend(self.out.events.drain(..).map(|e| (at, e)));
        if std::mem::take(&mut self.out.stats_changed) {
            self.published = self.engine.stats().clone();
        }
    }

    /// A datagram arrives on `socket` from `from` now.
    fn receive_on(&mut self, socket: Socket, datagram: &[u8], from: SocketAddr) {
        self.engine
            .receive(self.now, socket, datagram, from, &mut self.out);
        self.poll();
    }

    /// An RTP packet arrives from [`PEER`] now.
    fn rtp_in(&mut self, pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
        self.receive_on(Socket::Rtp, &rtp(pt, marker, seq, ts, ssrc, payload), PEER);
    }

    /// Runs the clock to `until`, polling the engine at each of its deadlines on the way. A
    /// deadline already past counts from a microsecond later, as on the media thread.
    fn run_until(&mut self, until: Instant) {
        while !self.stopped {
            let deadline = self
                .engine
                .deadline()
                .max(self.now + Duration::from_micros(1));
            if deadline > until {
                break;
            }
            self.now = deadline;
            self.poll();
        }
        self.now = self.now.max(until);
    }

    fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + Duration::from_millis(ms));
    }

    /// Runs the clock until `done` holds, at most `limit_ms` more; returns whether it held.
    fn run_while_not(&mut self, limit_ms: u64, done: impl Fn(&Harness) -> bool) -> bool {
        let limit = self.now + Duration::from_millis(limit_ms);
        while !done(self) {
            if self.stopped || self.now >= limit {
                return false;
            }
            let deadline = self
                .engine
                .deadline()
                .max(self.now + Duration::from_micros(1));
            self.now = deadline.min(limit);
            self.poll();
        }
        true
    }

    /// Runs until `n` RTP packets went to [`PEER`] in all; panics after 5 s of fake time.
    fn run_until_sent_to_peer(&mut self, n: usize) {
        let sent = |h: &Harness| h.rtp.iter().filter(|p| p.dest == PEER).count() >= n;
        assert!(self.run_while_not(5000, sent), "{n} packets to the peer");
    }

    /// A command from the session handle now, then a poll, as the media thread does.
    fn command(&mut self, command: Command) -> bool {
        let stop = self.engine.command(self.now, command, &mut self.out);
        if stop {
            self.collect();
        } else {
            self.poll();
        }
        stop
    }

    /// What `MediaSession::queue_audio` does.
    fn queue_audio(&mut self, pcm: &[i16], rate: u32) {
        if lock(&self.shared).queue_audio(pcm, rate).unwrap() {
            self.command(Command::Queued);
        }
    }

    /// What `MediaSession::send_dtmf` does.
    fn send_dtmf(&mut self, digits: &str, ms: u32) -> Result<(), MediaError> {
        lock(&self.shared).queue_digits(digits, ms)?;
        self.command(Command::Queued);
        Ok(())
    }

    fn start_recording(&mut self, path: &std::path::Path) {
        let rate = lock(&self.shared).queue.rate();
        let recorder = Recorder::start(path, rate).unwrap();
        self.command(Command::Record(Box::new(recorder)));
    }

    /// Caller audio reported as events so far, taken.
    fn take_audio(&mut self) -> Vec<AudioFrame> {
        let mut frames = Vec::new();
        self.events.retain(|(_, e)| match e {
            MediaEvent::Audio(f) => {
                frames.push(f.clone());
                false
            }
            _ => true,
        });
        frames
    }

    /// RTP packets sent to the peer, taken.
    fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.rtp)
    }

    /// Ends the engine as the session's `close` does: its final statistics; a recording is
    /// finished here.
    fn close(mut self) -> MediaStats {
        assert!(self.command(Command::Close), "close stops the engine");
        let stats = self.engine.end(&mut self.out);
        for recorder in self.out.recordings.drain(..) {
            recorder.finish().unwrap();
        }
        stats
    }
}
