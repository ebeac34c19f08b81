//! The media engine: one call's RTP stream as a sans-IO core. It owns no socket and reads no
//! clock: the shell around it (see `shell`) hands it what arrived and the time, and sends the
//! datagrams it leaves in an [`Output`]. Its inputs:
//!
//! - [`receive`](Engine::receive): a datagram from the RTP or RTCP socket, at `now`;
//! - [`command`](Engine::command): what the session handle asked (an update, a recording, ...);
//! - [`poll`](Engine::poll): the time, to do what is due (after every input and at
//!   [`deadline`](Engine::deadline)).
//!
//! Its outputs, in the [`Output`] the caller passes and empties: datagrams to send, events for
//! the call, whether the statistics changed, finished recordings. All engines of a media thread
//! share one `Output` (and the scratch buffers in it), so nothing is allocated per packet.
//!
//! The audio and digits the call queues for sending stay in the state the session handle
//! shares with the engine ([`Shared`]): the handle answers from it at once (`queued_ms`,
//! `flush_playout`) without a trip to the media thread.

mod receive;
mod send;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::codec::{AudioDecoder, AudioEncoder, new_decoder, new_encoder};
use super::dtmf::{DtmfEvent, DtmfReceiver, DtmfSender};
use super::jitter::JitterBuffer;
use super::playout::{PacingClock, PlayoutQueue};
use super::recording::Recorder;
use super::rtp::{is_rtcp, is_stun};
use super::sdp::NegotiatedMedia;
use super::session::{AudioSink, MediaConfig, MediaError, MediaEvent, Shared, SilenceMode, lock};
use super::srtp::SrtpSession;
use super::stats::{MediaStats, ReceiveStats};
use crate::resample::{StreamResampler, samples_for_ms};

/// A latched peer silent this long may be replaced by a new source address (NAT rebinding,
/// media moved by a PBX).
const RELATCH_AFTER: Duration = Duration::from_secs(2);
/// Packet intervals of pause between two digits we send.
const DTMF_GAP_PACKETS: u32 = 3;
const RTP_PAYLOAD_CN: u8 = 13;
/// Packets sent in a talkspurt between two updates of the statistics [`MediaSession::stats`]
/// reads.
///
/// [`MediaSession::stats`]: super::MediaSession::stats
const PUBLISH_EVERY_PACKETS: u64 = 8;

/// Which of a session's two sockets a datagram came in on or goes out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Socket {
    Rtp,
    Rtcp,
}

/// What the session handle asks of the engine, in order.
pub(super) enum Command {
    Update(Box<NegotiatedMedia>),
    CallerAudio(CallerAudio),
    Record(Box<Recorder>),
    StopRecording,
    /// Audio or digits were queued on an idle line: the engine sends them at once rather than
    /// at its next tick, which a sleeping engine does not have.
    Queued,
    Close,
}

/// Where decoded caller audio goes.
pub(super) enum CallerAudio {
    /// As [`MediaEvent::Audio`].
    Events,
    Sink(AudioSink),
    /// Straight back into the playout queue (see [`MediaSession::loop_back`]).
    ///
    /// [`MediaSession::loop_back`]: super::MediaSession::loop_back
    Loopback,
}

/// The stream's identity, chosen at random by the shell.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamIds {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
}

/// The wall-clock time (since the Unix epoch) at one instant: RTCP's NTP timestamps count
/// from there with the monotonic clock the engine is given, so the engine never reads the
/// wall clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct WallClock {
    pub at: Instant,
    pub unix: Duration,
}

impl WallClock {
    fn ntp(&self, now: Instant) -> u64 {
        super::rtcp::ntp_from_unix(self.unix + now.saturating_duration_since(self.at))
    }
}

/// What the engine leaves for its shell after an input, and the buffers it works in. Nothing
/// in it outlives one input and the shell's emptying: all engines of a thread share one,
/// which stays in the core's cache (with hundreds of engines taking turns on a media thread,
/// buffers of their own were cold on every packet).
#[derive(Default)]
pub(super) struct Output {
    /// Datagrams to send, in order, their bytes back to back in `bytes`.
    transmits: Vec<Transmit>,
    bytes: Vec<u8>,
    /// Events for the call, in order.
    pub events: Vec<MediaEvent>,
    /// The statistics changed enough to be published (see [`Engine::stats`]).
    pub stats_changed: bool,
    /// Recordings the engine let go: the shell finishes them off the media thread.
    pub recordings: Vec<Recorder>,
    bufs: Buffers,
}

#[derive(Clone, Copy)]
struct Transmit {
    socket: Socket,
    dest: SocketAddr,
    len: usize,
}

impl Output {
    /// The datagrams to send, in order.
    pub fn transmits(&self) -> impl Iterator<Item = (Socket, SocketAddr, &[u8])> {
        let mut at = 0;
        self.transmits.iter().map(move |t| {
            let bytes = &self.bytes[at..at + t.len];
            at += t.len;
            (t.socket, t.dest, bytes)
        })
    }

    /// Forgets the datagrams (sent or dropped); events and the rest are the shell's to take.
    pub fn clear_transmits(&mut self) {
        self.transmits.clear();
        self.bytes.clear();
    }

    /// Forgets everything in it.
    pub fn clear(&mut self) {
        self.clear_transmits();
        self.events.clear();
        self.stats_changed = false;
        self.recordings.clear();
    }

    /// Queues the datagram appended to `bytes` since `start`.
    fn transmit(&mut self, socket: Socket, dest: SocketAddr, start: usize) {
        let len = self.bytes.len() - start;
        self.transmits.push(Transmit { socket, dest, len });
    }
}

/// Buffers an engine fills and empties within one input: the audio decoded from a packet, the
/// audio and payload being sent.
#[derive(Default)]
struct Buffers {
    /// Caller audio of one packet, at the codec rate.
    decoded: Vec<i16>,
    /// One frame of caller audio at the inbound rate.
    inbound_frame: Vec<i16>,
    /// The PCM of the packet being sent.
    frame: Vec<i16>,
    payload: Vec<u8>,
    /// The plain packet decrypted from an SRTP datagram.
    srtp: Vec<u8>,
}

pub(super) struct Engine {
    config: MediaConfig,
    media: NegotiatedMedia,
    /// The telephone-event payload types of `media`, one bit each: checked on every packet
    /// without a walk of `dtmf_recv` (its own allocation, a cache miss per packet).
    dtmf_payload_types: u128,
    shared: Arc<Mutex<Shared>>,
    stats: MediaStats,
    wall: WallClock,

    // Inbound.
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    last_rx: Option<Instant>,
    timeout_from: Instant,
    remote_ssrc: Option<u32>,
    rx_stats: ReceiveStats,
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    dtmf_rx: DtmfReceiver,
    inbound_resampler: StreamResampler,
    caller_audio: CallerAudio,
    /// The echo line's G.711 bytes waiting to go back as they came (see `echoes_as_is`),
    /// ahead of the playout queue.
    echo: VecDeque<u8>,
    /// The last payload echoed as it came: a loss after it is concealed from it.
    echo_last: Vec<u8>,
    /// The decoder has not seen the payloads echoed as they came (its concealment history is
    /// older than `echo_last`).
    decoder_behind: bool,
    last_packet_samples: usize,
    last_sr: Option<(u32, Instant)>,

    // Outbound.
    encoder: Box<dyn AudioEncoder>,
    clock: PacingClock,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    talkspurt_start: bool,
    /// No queued audio went out on the last tick.
    idle: bool,
    /// How far the RTP timestamps run ahead of the wall clock because a talkspurt started
    /// between two ticks; given back before the next idle tick.
    ahead: Duration,
    dtmf_tx: Option<DtmfSender>,
    dtmf_gap: u32,
    /// Digits to send may wait in the shared queue: set by every `Queued` command, cleared
    /// when a look finds none. Until then an echo tick needs nothing from the shared state.
    digits_may_wait: bool,
    sent_since_report: bool,

    recorder: Option<Recorder>,
    next_rtcp: Instant,
    /// Keys and counters when the stream is SRTP.
    srtp: Option<SrtpSession>,
}

impl Engine {
    /// An engine for `media` starting at `now`; `shared` is the state its session handle
    /// holds too.
    pub fn new(
        config: MediaConfig,
        media: NegotiatedMedia,
        shared: Arc<Mutex<Shared>>,
        ids: StreamIds,
        wall: WallClock,
        now: Instant,
    ) -> Result<Engine, MediaError> {
        let clock_rate = media.codec.clock_rate();
        let sample_rate = media.codec.sample_rate();
        Ok(Engine {
            rx_stats: ReceiveStats::new(clock_rate),
            jitter: JitterBuffer::new(config.jitter_window),
            decoder: new_decoder(media.codec)?,
            dtmf_rx: DtmfReceiver::new(dtmf_clock(&media), clock_rate),
            inbound_resampler: StreamResampler::new(sample_rate, config.inbound_rate)?,
            caller_audio: CallerAudio::Events,
            echo: VecDeque::new(),
            echo_last: Vec::new(),
            decoder_behind: false,
            encoder: new_encoder(media.codec)?,
            clock: PacingClock::new(now, Duration::from_millis(media.ptime_ms as u64)),
            next_rtcp: now + config.rtcp_interval,
            config,
            shared,
            stats: MediaStats::default(),
            wall,
            latched: None,
            latched_rtcp: None,
            last_rx: None,
            timeout_from: now,
            remote_ssrc: None,
            last_packet_samples: samples_for_ms(sample_rate, media.ptime_ms),
            last_sr: None,
            ssrc: ids.ssrc,
            sequence: ids.sequence,
            timestamp: ids.timestamp,
            talkspurt_start: true,
            idle: true,
            ahead: Duration::ZERO,
            dtmf_tx: None,
            dtmf_gap: 0,
            digits_may_wait: false,
            sent_since_report: false,
            recorder: None,
            dtmf_payload_types: dtmf_payload_types(&media),
            srtp: media.srtp.as_ref().map(SrtpSession::new),
            media,
        })
    }

    /// A datagram arrived on `socket` from `from` at `now`. [`poll`](Self::poll) next: what it
    /// brought may be due at once (the echo line sends each packet as it comes).
    pub fn receive(
        &mut self,
        now: Instant,
        socket: Socket,
        datagram: &[u8],
        from: SocketAddr,
        out: &mut Output,
    ) {
        if self.srtp.is_some() {
            self.receive_srtp(now, socket, datagram, from, out);
            return;
        }
        match socket {
            Socket::Rtp => self.on_rtp(datagram, from, now, out),
            Socket::Rtcp => self.on_rtcp(datagram, from, now),
        }
    }

    /// An SRTP or SRTCP datagram: checked and decrypted before anything else looks at it, so a
    /// packet that fails authentication is counted and dropped, and latches nothing.
    fn receive_srtp(
        &mut self,
        now: Instant,
        socket: Socket,
        datagram: &[u8],
        from: SocketAddr,
        out: &mut Output,
    ) {
        let Some(srtp) = self.srtp.as_mut() else {
            return;
        };
        if is_stun(datagram) {
            return;
        }
        let rtcp = socket == Socket::Rtcp || is_rtcp(datagram);
        let mut plain = std::mem::take(&mut out.bufs.srtp);
        let checked = match rtcp {
            true => srtp.unprotect_rtcp(datagram, &mut plain),
            false => srtp.unprotect_rtp(datagram, &mut plain),
        };
        match checked {
            Ok(()) if rtcp => self.on_rtcp(&plain, from, now),
            Ok(()) => self.on_rtp(&plain, from, now, out),
            Err(e) => {
                match e {
                    super::srtp::SrtpError::Replay => self.stats.srtp_replayed += 1,
                    _ => self.stats.srtp_auth_failures += 1,
                }
                debug!(call_id = %self.config.call_id, source = %from, rtcp, len = datagram.len(),
                       error = %e, "SRTP packet dropped");
            }
        }
        out.bufs.srtp = plain;
    }

    /// Applies a command from the session handle. Returns whether it was `Close`: the engine
    /// has stopped and [`end`](Self::end) is next.
    pub fn command(&mut self, now: Instant, command: Command, out: &mut Output) -> bool {
        match command {
            Command::Update(media) => {
                if let Err(e) = self.apply_update(*media, now, out) {
                    warn!(call_id = %self.config.call_id, error = %e, "media update failed");
                }
            }
            Command::CallerAudio(to) => self.caller_audio = to,
            Command::Record(r) => self.recorder = Some(*r),
            Command::StopRecording => out.recordings.extend(self.recorder.take()),
            Command::Queued => {
                self.digits_may_wait = true;
                self.start_talkspurt(now);
            }
            Command::Close => return true,
        }
        false
    }

    /// Does what is due at `now`: released inbound packets, digit ends, packets to send, RTCP,
    /// the media timeout. Returns whether the media timed out: the engine has stopped (a
    /// [`MediaEvent::Timeout`] is in `out`) and [`end`](Self::end) is next.
    pub fn poll(&mut self, now: Instant, out: &mut Output) -> bool {
        self.release_inbound(now, out);
        if let Some(e) = self.dtmf_rx.poll(now) {
            self.on_dtmf(e, out);
        }
        while self.needs_tick() && self.tick_due(now) {
            self.tick(now, out);
        }
        if now >= self.next_rtcp {
            self.catch_up(now);
            self.send_rtcp(now, out);
        }
        if let Some(silent_for) = self.timed_out(now) {
            warn!(call_id = %self.config.call_id, ?silent_for, "media timeout");
            out.events.push(MediaEvent::Timeout { silent_for });
            return true;
        }
        false
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn deadline(&self) -> Instant {
        let mut wake = self.next_rtcp;
        if self.needs_tick() {
            wake = wake.min(self.clock.deadline());
        }
        if let Some(d) = self.jitter.next_deadline() {
            wake = wake.min(d);
        }
        if let Some(d) = self.dtmf_rx.next_deadline() {
            wake = wake.min(d);
        }
        if self.media.direction.receives() {
            wake = wake.min(self.timeout_base() + self.config.media_timeout);
        }
        wake
    }

    /// The statistics so far (published when `Output::stats_changed` says so).
    pub fn stats(&self) -> &MediaStats {
        &self.stats
    }

    /// The shell could not deliver an event of `out` (the call's queue was full).
    pub fn event_dropped(&mut self) {
        self.stats.frames_dropped += 1;
    }

    /// The engine stops: its recording goes to `out`; returns the final statistics.
    pub fn end(&mut self, out: &mut Output) -> MediaStats {
        self.publish_stats(out);
        out.recordings.extend(self.recorder.take());
        self.stats.clone()
    }

    /// For the shell's log.
    pub fn media(&self) -> &NegotiatedMedia {
        &self.media
    }

    pub fn call_id(&self) -> &str {
        &self.config.call_id
    }

    /// Whether the next packet goes out now: at its slot or later, or, while the line loops the
    /// caller back, as soon as a whole packet of the caller's audio is queued, up to one packet
    /// interval before its slot. The caller's packets then pace the echo, and each leaves in
    /// the wake that brought it instead of in a wake of its own.
    fn tick_due(&self, now: Instant) -> bool {
        let deadline = self.clock.deadline();
        if now >= deadline {
            return true;
        }
        if !matches!(self.caller_audio, CallerAudio::Loopback)
            || deadline - now > self.clock.period()
        {
            return false;
        }
        let samples = self.packet_samples();
        self.echo.len() >= samples || lock(&self.shared).queue.holds(samples)
    }

    /// Whether the packet clock must wake the engine. With suppressed silence and nothing to
    /// send, an idle line sleeps until audio or a digit is queued (see `start_talkspurt`).
    fn needs_tick(&self) -> bool {
        self.config.silence == SilenceMode::SendSilence
            || self.recorder.is_some()
            || !self.idle
            || !self.ahead.is_zero()
            || !self.line_goes_idle()
    }

    fn timeout_base(&self) -> Instant {
        self.last_rx
            .map_or(self.timeout_from, |t| t.max(self.timeout_from))
    }

    /// A timeout only counts while the peer is meant to send (not while it holds us).
    fn timed_out(&self, now: Instant) -> Option<Duration> {
        if !self.media.direction.receives() {
            return None;
        }
        let silent_for = now.saturating_duration_since(self.timeout_base());
        (silent_for >= self.config.media_timeout).then_some(silent_for)
    }

    /// Samples of one packet at the codec's sample rate.
    fn packet_samples(&self) -> usize {
        samples_for_ms(self.media.codec.sample_rate(), self.media.ptime_ms)
    }

    /// RTP timestamp units of one packet (fewer than its samples on G.722).
    fn packet_ticks(&self) -> u64 {
        samples_for_ms(self.media.codec.clock_rate(), self.media.ptime_ms) as u64
    }

    fn on_dtmf(&mut self, event: DtmfEvent, out: &mut Output) {
        self.stats.dtmf_events_received += 1;
        debug!(call_id = %self.config.call_id, digit = %event.digit, ms = event.duration_ms, "dtmf");
        out.events.push(MediaEvent::Dtmf(event));
    }

    fn apply_update(
        &mut self,
        media: NegotiatedMedia,
        now: Instant,
        out: &mut Output,
    ) -> Result<(), MediaError> {
        info!(call_id = %self.config.call_id, codec = ?media.codec, direction = ?media.direction,
              remote = ?media.remote_rtp, "media updated");
        if media.codec != self.media.codec {
            let rate = media.codec.sample_rate();
            self.decoder = new_decoder(media.codec)?;
            self.encoder = new_encoder(media.codec)?;
            self.inbound_resampler = StreamResampler::new(rate, self.config.inbound_rate)?;
            self.rx_stats = ReceiveStats::new(media.codec.clock_rate());
            self.jitter.reset();
            self.echo.clear();
            lock(&self.shared).queue = PlayoutQueue::new(rate);
            if let Some(recorder) = self.recorder.take() {
                // The WAV's rate is fixed at its start; a new codec rate ends that file.
                warn!(call_id = %self.config.call_id, "codec changed, recording stopped");
                out.recordings.push(recorder);
            }
        }
        if media.remote_rtp != self.media.remote_rtp {
            self.latched = None;
            self.latched_rtcp = None;
        }
        if media.ptime_ms != self.media.ptime_ms {
            self.clock
                .restart(now, Duration::from_millis(media.ptime_ms as u64));
        }
        self.dtmf_rx = DtmfReceiver::new(dtmf_clock(&media), media.codec.clock_rate());
        lock(&self.shared).dtmf_format = media.dtmf_send;
        // Direction changes restart the timeout window (resume after a long hold).
        self.timeout_from = now;
        self.dtmf_payload_types = dtmf_payload_types(&media);
        match (&mut self.srtp, &media.srtp) {
            (Some(session), Some(keys)) => session.rekey(keys),
            (session, keys) => *session = keys.as_ref().map(SrtpSession::new),
        }
        self.media = media;
        Ok(())
    }
}

/// The payload types `media` receives and sends telephone events with, one bit each.
fn dtmf_payload_types(media: &NegotiatedMedia) -> u128 {
    media
        .dtmf_recv
        .iter()
        .chain(&media.dtmf_send)
        .fold(0, |bits, d| bits | payload_type_bit(d.payload_type))
}

/// RTP payload types are 7 bits.
fn payload_type_bit(pt: u8) -> u128 {
    1 << (pt & 0x7f)
}

/// The clock telephone-event timestamps and durations run at on receive.
fn dtmf_clock(media: &NegotiatedMedia) -> u32 {
    media
        .dtmf_recv
        .first()
        .or(media.dtmf_send.as_ref())
        .map_or(media.codec.clock_rate(), |d| d.clock_rate)
}
