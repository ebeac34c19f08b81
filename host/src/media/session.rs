//! `MediaSession`: one call's RTP stream, tying the pieces of this module together.
//!
//! One engine per session, driven by a media thread (see `reactor`), owns the sockets and runs
//! everything time-driven (the pacing clock, the jitter buffer, RTCP, the media timeout). The
//! methods the call layer uses from other threads touch only the state the two share (a short
//! mutex over the outbound queue and the commands for the engine).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::codec::{AudioDecoder, AudioEncoder, CodecError, new_decoder, new_encoder};
use super::dtmf::{DtmfEvent, DtmfPacket, DtmfReceiver, DtmfSender, InvalidDigit, digit_to_event};
use super::jitter::{BufferedPacket, DEFAULT_WINDOW, JitterBuffer, Playout, PushOutcome};
use super::playout::{FlushReport, PacingClock, PlayoutQueue};
use super::ports::{PortError, PortLease, PortPool};
use super::reactor::{Step, Task, TaskWaker, Threads};
use super::recording::{Recorder, RecordingError};
use super::rtcp::{self, ReportBlock, RtcpPacket, SenderInfo};
use super::rtp::{RtpPacket, is_rtcp, is_stun};
use super::sdp::{DtmfFormat, NegotiatedMedia};
use super::stats::{MediaStats, ReceiveStats};
use crate::resample::{ResampleError, StreamResampler, samples_for_ms};

/// Events queued for the consumer; audio beyond `capacity - RESERVED_EVENT_SLOTS` is dropped
/// so DTMF and timeout events always find room.
const EVENT_CAPACITY: usize = 256;
const RESERVED_EVENT_SLOTS: usize = 32;
/// A latched peer silent this long may be replaced by a new source address (NAT rebinding,
/// media moved by a PBX).
const RELATCH_AFTER: Duration = Duration::from_secs(2);
/// Packet intervals of pause between two digits we send.
const DTMF_GAP_PACKETS: u32 = 3;
/// Default duration of a digit we send.
pub const DEFAULT_DTMF_MS: u32 = 100;
const RTP_PAYLOAD_CN: u8 = 13;
/// Packets sent in a talkspurt between two updates of the statistics [`MediaSession::stats`]
/// reads.
const PUBLISH_EVERY_PACKETS: u64 = 8;

/// Where the engines run: on threads of their own, a burst of packets never delays SIP
/// signalling or call set-up on the main runtime, nor the other way round. One thread for two
/// cores: an engine's work per wake-up is a few microseconds, and with a thread per core the
/// threads spent more time parking and waking each other than working (200 echo calls: 15–25%
/// more process CPU than with half as many).
static MEDIA_THREADS: Threads<Engine> = Threads::new("media", 2);

/// How many threads the media engines run on.
pub fn media_threads() -> usize {
    MEDIA_THREADS.count()
}

/// Anything that stops a session from being created or used.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("RTP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error(transparent)]
    Dtmf(#[from] InvalidDigit),
    #[error("the peer did not negotiate telephone-event, cannot send RFC 4733 DTMF")]
    NoTelephoneEvent,
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("media session has ended")]
    Closed,
}

/// What to send when the outbound queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SilenceMode {
    /// Keep sending encoded silence: carriers and NATs expect a steady stream.
    #[default]
    SendSilence,
    /// Send nothing; timestamps keep advancing and the next packet carries the marker bit.
    Suppress,
}

/// Per-session settings (the call layer fills these from configuration).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Address to bind the RTP/RTCP sockets on.
    pub bind_ip: IpAddr,
    /// Rate of the PCM frames delivered in [`MediaEvent::Audio`].
    pub inbound_rate: u32,
    /// How long the jitter buffer waits for a missing packet.
    pub jitter_window: Duration,
    /// No RTP for this long (while the peer is supposed to send) ends the session with
    /// [`MediaEvent::Timeout`].
    pub media_timeout: Duration,
    /// Interval of RTCP reports and [`MediaEvent::Stats`].
    pub rtcp_interval: Duration,
    pub silence: SilenceMode,
    /// RTCP CNAME.
    pub cname: String,
    /// Call identifier for logs.
    pub call_id: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::from([0, 0, 0, 0]),
            inbound_rate: 8000,
            jitter_window: DEFAULT_WINDOW,
            media_timeout: Duration::from_secs(30),
            rtcp_interval: Duration::from_secs(5),
            silence: SilenceMode::SendSilence,
            cname: "switchboard".into(),
            call_id: String::new(),
        }
    }
}

/// 20 ms of caller audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub samples: Vec<i16>,
    pub sample_rate: u32,
}

/// Takes caller audio on the media thread, frame by frame, in place of
/// [`MediaEvent::Audio`]: the call layer passes frames on (to a model) without a task hop per
/// frame. It must not block.
pub type AudioSink = Box<dyn FnMut(&[i16]) + Send>;

/// Where decoded caller audio goes.
enum CallerAudio {
    /// As [`MediaEvent::Audio`].
    Events,
    Sink(AudioSink),
    /// Straight back into the playout queue (see [`MediaSession::loop_back`]).
    Loopback,
}

/// What a session reports to the call layer.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Caller audio: continuous 20 ms frames at `MediaConfig::inbound_rate` (losses concealed),
    /// until an [`AudioSink`] or loopback is set.
    Audio(AudioFrame),
    /// A key press received as RFC 4733.
    Dtmf(DtmfEvent),
    /// No RTP for the configured time; the session has stopped.
    Timeout { silent_for: Duration },
    /// Periodic statistics (every RTCP interval).
    Stats(MediaStats),
    /// The first packet of queued audio after an idle line went out at `at` (a talkspurt
    /// began); the time a turn's answer really left the host.
    PlayoutStarted { at: Instant },
    /// Everything queued has been sent; the line is idle again.
    PlayoutIdle,
}

/// Sockets bound from the pool, before SDP negotiation: its [`port`](Self::port) goes into the
/// local SDP, then [`start`](Self::start) with the negotiated result.
pub struct PendingMedia {
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    lease: PortLease,
    config: MediaConfig,
}

impl PendingMedia {
    /// Leases a port pair from `pool` and binds it.
    pub fn bind(pool: &PortPool, config: MediaConfig) -> Result<PendingMedia, MediaError> {
        let sockets = pool.allocate(config.bind_ip)?;
        Ok(PendingMedia {
            rtp: sockets.rtp,
            rtcp: sockets.rtcp,
            lease: sockets.lease,
            config,
        })
    }

    /// Our RTP port (RTCP is `port + 1`).
    pub fn port(&self) -> u16 {
        self.lease.port()
    }

    /// Sets the rate of delivered caller audio. An outbound call binds its port before the
    /// answer names the codec, and the codec decides the rate the model hears.
    pub fn set_inbound_rate(&mut self, rate: u32) {
        self.config.inbound_rate = rate;
    }

    /// Starts media with the negotiated parameters, on a media thread.
    pub fn start(self, media: &NegotiatedMedia) -> Result<MediaSession, MediaError> {
        self.rtp.set_nonblocking(true)?;
        self.rtcp.set_nonblocking(true)?;
        let port = self.lease.port();
        let shared = Arc::new(Mutex::new(Shared::new(media)));
        let stats = Arc::new(Mutex::new(MediaStats::default()));
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let (ended_tx, ended_rx) = oneshot::channel();
        let engine = Engine::new(
            self.config,
            media.clone(),
            Sockets {
                rtp: self.rtp,
                rtcp: self.rtcp,
                lease: self.lease,
            },
            shared.clone(),
            stats.clone(),
            event_tx,
            ended_tx,
        )?;
        MEDIA_THREADS.spawn(engine);
        Ok(MediaSession {
            port,
            events: Some(event_rx),
            shared,
            stats,
            ended: Some(ended_rx),
        })
    }
}

/// One call's media. Dropping it stops the stream and frees its ports; [`close`](Self::close)
/// does the same and waits until it is done.
pub struct MediaSession {
    port: u16,
    events: Option<mpsc::Receiver<MediaEvent>>,
    shared: Arc<Mutex<Shared>>,
    stats: Arc<Mutex<MediaStats>>,
    /// The final statistics, once the engine has stopped and finished any recording.
    ended: Option<oneshot::Receiver<MediaStats>>,
}

enum Command {
    Update(Box<NegotiatedMedia>),
    CallerAudio(CallerAudio),
    Record(Box<Recorder>),
    StopRecording,
    /// Audio or digits were queued on an idle line: the engine sends them at once rather than
    /// at its next tick, which a sleeping engine does not have.
    Queued,
    Close,
}

impl MediaSession {
    /// Our RTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next inbound event; `None` once the session has ended and all events were read,
    /// or when the receiver was taken with [`take_events`](Self::take_events).
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        match self.events.as_mut() {
            Some(events) => events.recv().await,
            None => None,
        }
    }

    /// Takes the inbound event receiver, for a call task that selects on it while using the
    /// session's other methods.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<MediaEvent>> {
        self.events.take()
    }

    /// Queues caller-bound audio (mono PCM at any rate; resampled to the codec rate).
    pub fn queue_audio(&self, pcm: &[i16], sample_rate: u32) -> Result<(), MediaError> {
        if lock(&self.shared).queue_audio(pcm, sample_rate)? {
            // A stopped engine has nothing to wake.
            let _ = self.command(Command::Queued);
        }
        Ok(())
    }

    /// Audio queued and not yet sent, in ms.
    pub fn queued_ms(&self) -> u64 {
        lock(&self.shared).queue.queued_ms()
    }

    /// Whether all queued audio has been sent.
    pub fn playout_is_empty(&self) -> bool {
        lock(&self.shared).queue.is_empty()
    }

    /// Restarts the played-ms count (at the start of a new model response); returns the old.
    pub fn mark_playout(&self) -> u64 {
        lock(&self.shared).queue.mark()
    }

    /// Barge-in: drops all queued audio at once and reports how much had really been sent.
    pub fn flush_playout(&self) -> FlushReport {
        lock(&self.shared).queue.flush()
    }

    /// Sends `digits` as RFC 4733 events of `duration_ms` each, after any digits still going.
    pub fn send_dtmf(&self, digits: &str, duration_ms: u32) -> Result<(), MediaError> {
        let mut out = lock(&self.shared);
        if out.dtmf_format.is_none() {
            return Err(MediaError::NoTelephoneEvent);
        }
        for d in digits.chars() {
            digit_to_event(d).ok_or(InvalidDigit(d))?;
        }
        out.dtmf_queue
            .extend(digits.chars().map(|d| (d, duration_ms)));
        let _ = out.command(Command::Queued);
        Ok(())
    }

    /// Applies a new negotiation (re-INVITE: hold/resume, new address, new codec).
    pub fn update(&self, media: &NegotiatedMedia) -> Result<(), MediaError> {
        self.command(Command::Update(Box::new(media.clone())))
    }

    /// Sends caller audio to `sink` from now on instead of as [`MediaEvent::Audio`] (frames
    /// already reported stay in the event queue).
    pub fn set_audio_sink(&self, sink: AudioSink) -> Result<(), MediaError> {
        self.command(Command::CallerAudio(CallerAudio::Sink(sink)))
    }

    /// The echo line: from now on the caller's audio goes back to the caller on the media
    /// thread (no frame leaves it): G.711 packets as they came, other audio decoded and queued
    /// at the codec rate. Each packet goes out as soon as it is whole, in the caller's rhythm
    /// (see `Engine::tick_due`).
    pub fn loop_back(&self) -> Result<(), MediaError> {
        self.command(Command::CallerAudio(CallerAudio::Loopback))
    }

    /// Starts recording the call to a stereo WAV at the codec rate (caller left, agent right).
    pub fn start_recording(&self, path: &Path) -> Result<(), MediaError> {
        let rate = lock(&self.shared).queue.rate();
        let recorder = Recorder::start(path, rate)?;
        self.command(Command::Record(Box::new(recorder)))
    }

    /// Stops recording (the file is finalised in the background).
    pub fn stop_recording(&self) -> Result<(), MediaError> {
        self.command(Command::StopRecording)
    }

    fn command(&self, command: Command) -> Result<(), MediaError> {
        lock(&self.shared).command(command)
    }

    /// Current statistics.
    pub fn stats(&self) -> MediaStats {
        lock(&self.stats).clone()
    }

    /// Stops the stream, finishes any recording, frees the ports; returns final statistics.
    pub async fn close(mut self) -> MediaStats {
        let _ = self.command(Command::Close);
        match self.ended.take() {
            Some(ended) => match ended.await {
                Ok(stats) => stats,
                Err(_) => lock(&self.stats).clone(),
            },
            None => lock(&self.stats).clone(),
        }
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if self.ended.is_some() {
            // An engine already stopped has nothing to close.
            let _ = self.command(Command::Close);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// State shared between the session handle and the engine: the outbound direction (audio and
/// digits to send) and the commands.
struct Shared {
    queue: PlayoutQueue,
    dtmf_format: Option<DtmfFormat>,
    dtmf_queue: VecDeque<(char, u32)>,
    /// The engine's last tick sent no audio: the next queued audio must wake it.
    wake_on_queue: bool,
    /// Commands from the session handle, in order. They share this lock with the playout
    /// rather than having a channel of their own.
    commands: VecDeque<Command>,
    /// Wakes the engine when a command is queued; set once the engine is on its thread (it
    /// looks for commands queued before then when it arrives).
    engine: Option<TaskWaker>,
    /// The engine has stopped; commands are refused.
    closed: bool,
}

impl Shared {
    fn new(media: &NegotiatedMedia) -> Shared {
        Shared {
            queue: PlayoutQueue::new(media.codec.clock_rate()),
            dtmf_format: media.dtmf_send,
            dtmf_queue: Default::default(),
            wake_on_queue: true,
            commands: VecDeque::new(),
            engine: None,
            closed: false,
        }
    }

    fn command(&mut self, command: Command) -> Result<(), MediaError> {
        if self.closed {
            return Err(MediaError::Closed);
        }
        self.commands.push_back(command);
        if let Some(engine) = &self.engine {
            engine.wake();
        }
        Ok(())
    }

    /// Queues audio; true when the engine must be woken for it. Only the first audio after the
    /// line went idle needs that: during a talkspurt the packet clock picks the audio up.
    fn queue_audio(&mut self, pcm: &[i16], sample_rate: u32) -> Result<bool, MediaError> {
        self.queue.push(pcm, sample_rate)?;
        Ok(std::mem::take(&mut self.wake_on_queue))
    }
}

/// A session's sockets and the lease on their ports.
struct Sockets {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
}

/// What the engine sends on one tick.
enum TickPayload {
    /// Queued audio, in the engine's `frame`.
    Audio,
    /// The caller's G.711 audio echoed as it came, in the engine's `payload`.
    Echo,
    Dtmf(DtmfPacket, u8),
    /// Nothing queued: silence packets or none, as configured.
    Idle,
}

struct Engine {
    config: MediaConfig,
    media: NegotiatedMedia,
    /// The telephone-event payload types of `media`, one bit each: checked on every packet
    /// without a walk of `dtmf_recv` (its own allocation, a cache miss per packet).
    dtmf_payload_types: u128,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
    shared: Arc<Mutex<Shared>>,
    shared_stats: Arc<Mutex<MediaStats>>,
    events: mpsc::Sender<MediaEvent>,
    ended: Option<oneshot::Sender<MediaStats>>,
    stats: MediaStats,

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

    // Shared.
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
}

/// Buffers an engine fills and empties within one wake: the datagram just received, the
/// audio decoded from it, the audio and packet being sent. All engines of a thread share one
/// set, which stays in the core's cache: with hundreds of engines taking turns on a media
/// thread, buffers of their own were cold on every packet. Nothing in them outlives a wake.
struct Scratch {
    datagram: Vec<u8>,
    bufs: Buffers,
}

#[derive(Default)]
struct Buffers {
    /// Caller audio of one packet, at the codec rate.
    decoded: Vec<i16>,
    /// One frame of caller audio at the inbound rate.
    inbound_frame: Vec<i16>,
    /// The PCM of the packet being sent.
    frame: Vec<i16>,
    payload: Vec<u8>,
    packet: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        datagram: vec![0; 2048],
        bufs: Buffers::default(),
    });
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from OS randomness per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Finishes `recorder`, if any, on a thread of its own (it waits for the file's writer), then
/// runs `then`; without a recording, runs `then` at once.
fn finish_recording(
    recorder: Option<Recorder>,
    call_id: &str,
    then: impl FnOnce() + Send + 'static,
) {
    let Some(recorder) = recorder else {
        then();
        return;
    };
    let id = call_id.to_owned();
    let finishing = std::thread::Builder::new()
        .name("recording-end".into())
        .spawn(move || {
            let path = recorder.path().to_path_buf();
            match recorder.finish() {
                Ok(frames) => {
                    info!(call_id = %id, path = %path.display(), frames, "recording finished")
                }
                Err(e) => warn!(call_id = %id, error = %e, "recording failed"),
            }
            then();
        });
    if let Err(e) = finishing {
        // The recorder, dropped with the closure, still finishes the file in the background.
        warn!(call_id, error = %e, "recording not awaited");
    }
}

impl Engine {
    fn new(
        config: MediaConfig,
        media: NegotiatedMedia,
        sockets: Sockets,
        shared: Arc<Mutex<Shared>>,
        shared_stats: Arc<Mutex<MediaStats>>,
        events: mpsc::Sender<MediaEvent>,
        ended: oneshot::Sender<MediaStats>,
    ) -> Result<Engine, MediaError> {
        let now = Instant::now();
        let clock_rate = media.codec.clock_rate();
        Ok(Engine {
            rx_stats: ReceiveStats::new(clock_rate),
            jitter: JitterBuffer::new(config.jitter_window),
            decoder: new_decoder(media.codec)?,
            dtmf_rx: DtmfReceiver::new(dtmf_clock(&media), clock_rate),
            inbound_resampler: StreamResampler::new(clock_rate, config.inbound_rate)?,
            caller_audio: CallerAudio::Events,
            echo: VecDeque::new(),
            echo_last: Vec::new(),
            decoder_behind: false,
            encoder: new_encoder(media.codec)?,
            clock: PacingClock::new(now.into_std(), Duration::from_millis(media.ptime_ms as u64)),
            next_rtcp: now + config.rtcp_interval,
            config,
            rtp: sockets.rtp,
            rtcp: sockets.rtcp,
            lease: sockets.lease,
            shared,
            shared_stats,
            events,
            ended: Some(ended),
            stats: MediaStats::default(),
            latched: None,
            latched_rtcp: None,
            last_rx: None,
            timeout_from: now,
            remote_ssrc: None,
            last_packet_samples: samples_for_ms(clock_rate, media.ptime_ms),
            last_sr: None,
            ssrc: random_u32(),
            sequence: random_u32() as u16,
            timestamp: random_u32(),
            talkspurt_start: true,
            idle: true,
            ahead: Duration::ZERO,
            dtmf_tx: None,
            dtmf_gap: 0,
            digits_may_wait: false,
            sent_since_report: false,
            recorder: None,
            dtmf_payload_types: dtmf_payload_types(&media),
            media,
        })
    }

    /// Reads one datagram from the RTP (`socket` 0) or RTCP socket, then does what is due.
    /// Synchronous, so that the thread's scratch buffers serve it. Returns whether the media
    /// timed out.
    fn serve(&mut self, scratch: &mut Scratch, socket: usize) -> bool {
        let (socket, rtp) = match socket {
            0 => (&self.rtp, true),
            _ => (&self.rtcp, false),
        };
        let now = Instant::now();
        if let Some((n, from)) = self.try_recv(socket, &mut scratch.datagram) {
            if rtp {
                self.on_rtp(&scratch.datagram[..n], from, now, &mut scratch.bufs);
            } else {
                self.on_rtcp(&scratch.datagram[..n], from);
            }
        }
        self.service(now, &mut scratch.bufs)
    }

    /// The next datagram waiting on `socket`; `None` when there is none or on an error, which
    /// is logged.
    fn try_recv(&self, socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match socket.recv_from(buf) {
            Ok(received) => Some(received),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => {
                debug!(call_id = %self.config.call_id, error = %e, "recv");
                None
            }
        }
    }

    /// Applies the commands queued by the session handle. Returns whether one was `Close`.
    fn run_commands(&mut self) -> bool {
        loop {
            let Some(command) = lock(&self.shared).commands.pop_front() else {
                return false;
            };
            match command {
                Command::Update(media) => {
                    if let Err(e) = self.apply_update(*media) {
                        warn!(call_id = %self.config.call_id, error = %e, "media update failed");
                    }
                }
                Command::CallerAudio(to) => self.caller_audio = to,
                Command::Record(r) => self.recorder = Some(*r),
                Command::StopRecording => {
                    finish_recording(self.recorder.take(), &self.config.call_id, || {})
                }
                Command::Queued => {
                    self.digits_may_wait = true;
                    self.start_talkspurt(Instant::now());
                }
                Command::Close => return true,
            }
        }
    }

    /// What is due at `now`: released inbound packets, digit ends, packets to send, RTCP, the
    /// media timeout. Returns whether the media timed out.
    fn service(&mut self, now: Instant, bufs: &mut Buffers) -> bool {
        self.release_inbound(now, bufs);
        if let Some(e) = self.dtmf_rx.poll(now.into_std()) {
            self.on_dtmf(e);
        }
        while self.needs_tick() && self.tick_due(now) {
            self.tick(now, bufs);
        }
        if now >= self.next_rtcp {
            self.catch_up(now);
            self.send_rtcp(now);
        }
        if let Some(silent_for) = self.timed_out(now) {
            warn!(call_id = %self.config.call_id, ?silent_for, "media timeout");
            self.emit(MediaEvent::Timeout { silent_for });
            return true;
        }
        false
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_rtcp;
        if self.needs_tick() {
            wake = wake.min(Instant::from_std(self.clock.deadline()));
        }
        if let Some(d) = self.jitter.next_deadline() {
            wake = wake.min(Instant::from_std(d));
        }
        if let Some(d) = self.dtmf_rx.next_deadline() {
            wake = wake.min(Instant::from_std(d));
        }
        if self.media.direction.receives() {
            wake = wake.min(self.timeout_base() + self.config.media_timeout);
        }
        wake
    }

    /// Whether the next packet goes out now: at its slot or later, or, while the line loops the
    /// caller back, as soon as a whole packet of the caller's audio is queued, up to one packet
    /// interval before its slot. The caller's packets then pace the echo, and each leaves in
    /// the wake that brought it instead of in a wake of its own.
    fn tick_due(&self, now: Instant) -> bool {
        let (now, deadline) = (now.into_std(), self.clock.deadline());
        if now >= deadline {
            return true;
        }
        if !matches!(self.caller_audio, CallerAudio::Loopback)
            || deadline - now > self.clock.period()
        {
            return false;
        }
        let samples = samples_for_ms(self.media.codec.clock_rate(), self.media.ptime_ms);
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
        let silent_for = now.duration_since(self.timeout_base());
        (silent_for >= self.config.media_timeout).then_some(silent_for)
    }

    fn emit(&mut self, event: MediaEvent) {
        let is_audio = matches!(event, MediaEvent::Audio(_));
        if is_audio && self.events.capacity() <= RESERVED_EVENT_SLOTS {
            self.stats.frames_dropped += 1;
            return;
        }
        if self.events.try_send(event).is_err() {
            self.stats.frames_dropped += 1;
        }
    }

    fn on_dtmf(&mut self, event: DtmfEvent) {
        self.stats.dtmf_events_received += 1;
        debug!(call_id = %self.config.call_id, digit = %event.digit, ms = event.duration_ms, "dtmf");
        self.emit(MediaEvent::Dtmf(event));
    }

    fn apply_update(&mut self, media: NegotiatedMedia) -> Result<(), MediaError> {
        info!(call_id = %self.config.call_id, codec = ?media.codec, direction = ?media.direction,
              remote = ?media.remote_rtp, "media updated");
        let now = Instant::now();
        if media.codec != self.media.codec {
            let rate = media.codec.clock_rate();
            self.decoder = new_decoder(media.codec)?;
            self.encoder = new_encoder(media.codec)?;
            self.inbound_resampler = StreamResampler::new(rate, self.config.inbound_rate)?;
            self.rx_stats = ReceiveStats::new(rate);
            self.jitter.reset();
            self.echo.clear();
            lock(&self.shared).queue = PlayoutQueue::new(rate);
            if self.recorder.is_some() {
                // The WAV's rate is fixed at its start; a new codec rate ends that file.
                warn!(call_id = %self.config.call_id, "codec changed, recording stopped");
                finish_recording(self.recorder.take(), &self.config.call_id, || {});
            }
        }
        if media.remote_rtp != self.media.remote_rtp {
            self.latched = None;
            self.latched_rtcp = None;
        }
        if media.ptime_ms != self.media.ptime_ms {
            self.clock
                .restart(now.into_std(), Duration::from_millis(media.ptime_ms as u64));
        }
        self.dtmf_rx = DtmfReceiver::new(dtmf_clock(&media), media.codec.clock_rate());
        lock(&self.shared).dtmf_format = media.dtmf_send;
        // Direction changes restart the timeout window (resume after a long hold).
        self.timeout_from = now;
        self.dtmf_payload_types = dtmf_payload_types(&media);
        self.media = media;
        Ok(())
    }

    /// Symmetric RTP: the first source we hear from becomes where we send. Another source is
    /// accepted only once the latched one has been silent for a while.
    fn accept_source(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.latched {
            Some(addr) if addr == from => true,
            Some(addr) => {
                let stale = self
                    .last_rx
                    .is_none_or(|t| now.duration_since(t) >= RELATCH_AFTER);
                if stale {
                    info!(call_id = %self.config.call_id, old = %addr, new = %from, "re-latched RTP source");
                    self.latched = Some(from);
                    self.latched_rtcp = None;
                }
                stale
            }
            None => {
                debug!(call_id = %self.config.call_id, source = %from, "latched RTP source");
                self.latched = Some(from);
                true
            }
        }
    }

    fn on_rtp(&mut self, datagram: &[u8], from: SocketAddr, now: Instant, bufs: &mut Buffers) {
        if is_rtcp(datagram) {
            // rtcp-mux peers send RTCP on the RTP port.
            self.on_rtcp(datagram, from);
            return;
        }
        if is_stun(datagram) {
            // ICE connectivity checks we did not offer: not media, not an error.
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed_packets += 1;
                return;
            }
        };
        if !self.accept_source(from, now) {
            self.stats.foreign_packets += 1;
            return;
        }
        if self.remote_ssrc != Some(packet.ssrc) {
            if self.remote_ssrc.is_some() {
                // Counted in the statistics the call's end line reports.
                debug!(call_id = %self.config.call_id, old = ?self.remote_ssrc, new = packet.ssrc, "remote SSRC changed");
                self.stats.ssrc_changes += 1;
                // Drain what the old source left, then start over for the new one.
                self.release_inbound_all(now, bufs);
                self.jitter.reset();
            }
            self.rx_stats = ReceiveStats::new(self.media.codec.clock_rate());
            self.remote_ssrc = Some(packet.ssrc);
            self.stats.remote_ssrc = Some(packet.ssrc);
        }
        self.last_rx = Some(now);
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.payload.len() as u64;
        let is_audio = self.is_audio_pt(packet.payload_type);
        let is_dtmf = self.is_dtmf_pt(packet.payload_type);
        if !is_audio && !is_dtmf {
            // Comfort noise and unknown payloads still occupy sequence numbers.
            if packet.payload_type != RTP_PAYLOAD_CN {
                debug!(call_id = %self.config.call_id, pt = packet.payload_type, "unexpected payload type");
            }
        }
        self.rx_stats.on_packet(
            packet.sequence,
            is_audio.then_some(packet.timestamp),
            now.into_std(),
        );
        if self.jitter.release_in_order(packet.sequence) {
            self.play_packet(
                packet.payload_type,
                packet.timestamp,
                packet.payload,
                now,
                bufs,
            );
            return;
        }
        let outcome = self.jitter.push(
            packet.sequence,
            BufferedPacket {
                payload_type: packet.payload_type,
                marker: packet.marker,
                timestamp: packet.timestamp,
                payload: packet.payload.to_vec(),
            },
            now.into_std(),
        );
        if outcome != PushOutcome::Buffered {
            self.stats.packets_discarded += 1;
        }
    }

    fn is_audio_pt(&self, pt: u8) -> bool {
        pt == self.media.recv_payload_type || pt == self.media.send_payload_type
    }

    fn is_dtmf_pt(&self, pt: u8) -> bool {
        self.dtmf_payload_types & payload_type_bit(pt) != 0
    }

    fn release_inbound(&mut self, now: Instant, bufs: &mut Buffers) {
        while let Some(item) = self.jitter.pop(now.into_std()) {
            self.play_inbound(item, now, bufs);
        }
    }

    /// Releases everything buffered regardless of the window (the source is going away).
    fn release_inbound_all(&mut self, now: Instant, bufs: &mut Buffers) {
        let far = now.into_std() + Duration::from_secs(3600);
        while let Some(item) = self.jitter.pop(far) {
            self.play_inbound(item, now, bufs);
        }
    }

    fn play_inbound(&mut self, item: Playout, now: Instant, bufs: &mut Buffers) {
        match item {
            Playout::Packet(p) => {
                self.play_packet(p.payload_type, p.timestamp, &p.payload, now, bufs)
            }
            Playout::Lost { following } => {
                if std::mem::take(&mut self.decoder_behind) {
                    // Conceal from the last payload echoed, not from older audio.
                    bufs.decoded.clear();
                    let _ = self.decoder.decode(&self.echo_last, &mut bufs.decoded);
                }
                bufs.decoded.clear();
                let samples = self.last_packet_samples;
                if let Err(e) =
                    self.decoder
                        .conceal(following.as_deref(), samples, &mut bufs.decoded)
                {
                    debug!(call_id = %self.config.call_id, error = %e, "concealment failed");
                    return;
                }
                self.stats.concealed_ms +=
                    (bufs.decoded.len() as u64 * 1000) / self.media.codec.clock_rate() as u64;
                self.deliver_decoded(bufs);
            }
        }
    }

    /// The next packet of the inbound stream, in order: a DTMF event or audio.
    fn play_packet(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        payload: &[u8],
        now: Instant,
        bufs: &mut Buffers,
    ) {
        if self.is_dtmf_pt(payload_type) {
            for e in self.dtmf_rx.on_packet(timestamp, payload, now.into_std()) {
                self.on_dtmf(e);
            }
            return;
        }
        if !self.is_audio_pt(payload_type) {
            return;
        }
        if self.echoes_as_is(payload.len()) {
            self.echo.extend(payload);
            self.echo_last.clear();
            self.echo_last.extend_from_slice(payload);
            self.decoder_behind = true;
            self.last_packet_samples = payload.len();
            self.start_talkspurt(now);
            return;
        }
        bufs.decoded.clear();
        match self.decoder.decode(payload, &mut bufs.decoded) {
            Ok(()) => {
                self.last_packet_samples = bufs.decoded.len();
                self.decoder_behind = false;
            }
            Err(e) => {
                debug!(call_id = %self.config.call_id, error = %e, "undecodable packet");
                self.stats.malformed_packets += 1;
                return;
            }
        }
        self.deliver_decoded(bufs);
    }

    /// Caller audio just decoded (or concealed): to the recording, and in frames at the
    /// inbound rate to the sink or as events, or back to the caller.
    fn deliver_decoded(&mut self, bufs: &mut Buffers) {
        if let Some(r) = self.recorder.as_mut() {
            r.caller(&bufs.decoded);
        }
        if let CallerAudio::Loopback = self.caller_audio {
            self.loop_decoded_back(&bufs.decoded);
            return;
        }
        if let Err(e) = self.inbound_resampler.push(&bufs.decoded) {
            warn!(call_id = %self.config.call_id, error = %e, "inbound resampling failed");
            return;
        }
        while self.inbound_resampler.pop_frame(&mut bufs.inbound_frame) {
            if let CallerAudio::Sink(sink) = &mut self.caller_audio {
                sink(&bufs.inbound_frame);
            } else {
                let sample_rate = self.config.inbound_rate;
                self.emit(MediaEvent::Audio(AudioFrame {
                    samples: bufs.inbound_frame.clone(),
                    sample_rate,
                }));
            }
        }
    }

    fn loop_decoded_back(&mut self, decoded: &[i16]) {
        if self.echoes_as_is(decoded.len()) {
            // Concealed audio joins the echoed payloads, in order.
            let start = self.echo.len();
            let mut encoded = std::mem::take(&mut self.echo_last);
            encoded.clear();
            match self.encoder.encode(decoded, &mut encoded) {
                Ok(()) => self.echo.extend(&encoded),
                Err(e) => warn!(call_id = %self.config.call_id, error = %e, "encode failed"),
            }
            self.echo_last = encoded;
            if self.echo.len() > start {
                self.start_talkspurt(Instant::now());
            }
            return;
        }
        let rate = self.media.codec.clock_rate();
        let queued = lock(&self.shared).queue_audio(decoded, rate);
        match queued {
            // What `Command::Queued` would do, without the command to itself.
            Ok(true) => self.start_talkspurt(Instant::now()),
            Ok(false) => {}
            Err(e) => {
                warn!(call_id = %self.config.call_id, error = %e, "looping audio back failed")
            }
        }
    }

    /// Whether the echo line sends a packet of `samples` back as it came rather than through
    /// the decoder, the playout queue and the encoder: G.711, a whole packet of our ptime, and
    /// no recording (which needs the audio decoded).
    fn echoes_as_is(&self, samples: usize) -> bool {
        matches!(self.caller_audio, CallerAudio::Loopback)
            && self.media.codec.is_g711()
            && self.recorder.is_none()
            && samples == samples_for_ms(self.media.codec.clock_rate(), self.media.ptime_ms)
    }

    /// Agent audio was queued. On an idle line its first packet goes out now rather than at
    /// the next slot of the packet grid (up to one packet interval later), and the grid
    /// restarts here. The RTP timestamps stay contiguous, so they run ahead of the wall clock
    /// by the time gained until the talkspurt ends.
    fn start_talkspurt(&mut self, now: Instant) {
        if !self.idle || !self.sending() || self.dtmf_tx.is_some() || self.dtmf_gap > 0 {
            return;
        }
        self.catch_up(now);
        let gained = self
            .clock
            .deadline()
            .saturating_duration_since(now.into_std());
        if gained.is_zero() {
            return;
        }
        self.ahead += gained;
        self.clock.restart(now.into_std(), self.clock.period());
    }

    /// An idle engine with suppressed silence sleeps through ticks that would have sent
    /// nothing; their time still passes for the RTP timestamps (and the recording's silence).
    fn catch_up(&mut self, now: Instant) {
        if self.config.silence != SilenceMode::Suppress || !self.idle {
            return;
        }
        let slept = self.clock.skip_past(now.into_std());
        if slept == 0 {
            return;
        }
        let samples = samples_for_ms(self.media.codec.clock_rate(), self.media.ptime_ms);
        self.timestamp = self.timestamp.wrapping_add((samples as u64 * slept) as u32);
        if let Some(r) = self.recorder.as_mut() {
            r.agent(&vec![0; samples * slept as usize]);
        }
    }

    /// Whether the next tick has nothing to send but silence.
    fn line_goes_idle(&self) -> bool {
        if !self.echo.is_empty() {
            return false;
        }
        let out = lock(&self.shared);
        out.queue.is_empty() && out.dtmf_queue.is_empty() && self.dtmf_tx.is_none()
    }

    /// One packet interval: send a DTMF packet, queued audio, or silence.
    fn tick(&mut self, now: Instant, bufs: &mut Buffers) {
        if !self.ahead.is_zero() && self.line_goes_idle() {
            // Give back the time a talkspurt gained (see `start_talkspurt`) before the line
            // goes quiet, so the timestamps meet the wall clock again.
            let resume = self.clock.deadline() + self.ahead;
            self.clock.restart(resume, self.clock.period());
            self.ahead = Duration::ZERO;
            return;
        }
        let skipped = self.clock.advance(now.into_std());
        let samples = samples_for_ms(self.media.codec.clock_rate(), self.media.ptime_ms);
        // Time the process could not keep up with still passed on the call: the recording
        // keeps it as silence so it stays as long as the call.
        if skipped > 0
            && let Some(r) = self.recorder.as_mut()
        {
            r.agent(&vec![0; samples * skipped as usize]);
        }
        let sending = self.sending();
        let payload = if sending {
            self.next_payload(samples, bufs)
        } else {
            TickPayload::Idle
        };
        let talking = matches!(payload, TickPayload::Audio | TickPayload::Echo);
        match payload {
            TickPayload::Dtmf(packet, pt) => {
                bufs.payload.clear();
                bufs.payload.extend_from_slice(&packet.payload);
                self.send_packet(pt, packet.marker, packet.timestamp, bufs);
                if let Some(r) = self.recorder.as_mut() {
                    r.agent(&vec![0; samples]);
                }
            }
            TickPayload::Audio | TickPayload::Echo => {
                if std::mem::take(&mut self.idle) {
                    self.emit(MediaEvent::PlayoutStarted { at: now });
                }
                let marker = std::mem::take(&mut self.talkspurt_start);
                if let TickPayload::Echo = payload {
                    let pt = self.media.send_payload_type;
                    self.send_packet(pt, marker, self.timestamp, bufs);
                    self.record_echo(bufs);
                } else {
                    self.send_audio(marker, bufs);
                }
            }
            TickPayload::Idle => {
                // Set before the engine decides whether to sleep (`needs_tick` looks at the
                // queue), so audio queued from here on is never missed.
                lock(&self.shared).wake_on_queue = true;
                if !std::mem::replace(&mut self.idle, true) {
                    self.emit(MediaEvent::PlayoutIdle);
                }
                // The next queued audio starts a talkspurt (marker bit), after silence packets
                // as after a pause in sending.
                self.talkspurt_start = true;
                bufs.frame.clear();
                bufs.frame.resize(samples, 0);
                if sending && self.config.silence == SilenceMode::SendSilence {
                    self.send_audio(false, bufs);
                } else if let Some(r) = self.recorder.as_mut() {
                    r.agent(&bufs.frame);
                }
            }
        }
        // Timestamps advance with the clock whether or not a packet went out.
        self.timestamp = self
            .timestamp
            .wrapping_add((samples as u64 * (1 + skipped)) as u32);
        // During a talkspurt the statistics go out every few packets, and on every other tick:
        // readers see them at most that stale, and the engine is spared a lock and a copy per
        // packet.
        if !talking
            || self
                .stats
                .packets_sent
                .is_multiple_of(PUBLISH_EVERY_PACKETS)
        {
            self.publish_stats();
        }
    }

    /// Records the echoed payload in `bufs.payload` (it was queued before a recording began;
    /// from then on the echo goes through the decoder and is recorded as it is sent).
    fn record_echo(&mut self, bufs: &mut Buffers) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        bufs.frame.clear();
        match new_decoder(self.media.codec) {
            Ok(mut decoder) => match decoder.decode(&bufs.payload, &mut bufs.frame) {
                Ok(()) => r.agent(&bufs.frame),
                Err(e) => debug!(call_id = %self.config.call_id, error = %e, "echo not recorded"),
            },
            Err(e) => debug!(call_id = %self.config.call_id, error = %e, "echo not recorded"),
        }
    }

    /// Encodes and sends the audio in `bufs.frame` at the current timestamp, and records it.
    fn send_audio(&mut self, marker: bool, bufs: &mut Buffers) {
        bufs.payload.clear();
        match self.encoder.encode(&bufs.frame, &mut bufs.payload) {
            Ok(()) => {
                let pt = self.media.send_payload_type;
                self.send_packet(pt, marker, self.timestamp, bufs);
            }
            Err(e) => warn!(call_id = %self.config.call_id, error = %e, "encode failed"),
        }
        if let Some(r) = self.recorder.as_mut() {
            r.agent(&bufs.frame);
        }
    }

    /// What the next packet carries: echoed audio goes to `bufs.payload`, queued audio to
    /// `bufs.frame`. Digits come first; the echo line needs nothing from the shared state.
    fn next_payload(&mut self, samples: usize, bufs: &mut Buffers) -> TickPayload {
        if (self.digits_may_wait || self.dtmf_tx.is_some())
            && let Some(dtmf) = self.next_dtmf_packet()
        {
            return dtmf;
        }
        self.dtmf_gap = self.dtmf_gap.saturating_sub(1);
        if self.echo.len() >= samples {
            return self.take_echo(samples, bufs);
        }
        if lock(&self.shared).queue.pop(samples, &mut bufs.frame) {
            TickPayload::Audio
        } else {
            TickPayload::Idle
        }
    }

    /// The next packet of the digit being sent, starting the next queued digit when none is
    /// and the gap after the last has passed.
    fn next_dtmf_packet(&mut self) -> Option<TickPayload> {
        let mut out = lock(&self.shared);
        self.digits_may_wait = !out.dtmf_queue.is_empty();
        let format = out.dtmf_format?;
        if self.dtmf_tx.is_none()
            && self.dtmf_gap == 0
            && let Some((digit, ms)) = out.dtmf_queue.pop_front()
        {
            let start = self.timestamp;
            match DtmfSender::new(digit, ms, format.clock_rate, self.media.ptime_ms, start) {
                Ok(sender) => {
                    self.dtmf_tx = Some(sender);
                    self.stats.dtmf_events_sent += 1;
                }
                Err(e) => warn!(call_id = %self.config.call_id, error = %e, "dtmf"),
            }
        }
        let packet = self.dtmf_tx.as_mut()?.next_packet();
        if packet.is_none() {
            self.dtmf_tx = None;
            self.dtmf_gap = DTMF_GAP_PACKETS;
            // Audio after an event starts a new talkspurt.
            self.talkspurt_start = true;
        }
        packet.map(|packet| TickPayload::Dtmf(packet, format.payload_type))
    }

    /// The next `samples` echoed bytes, into `bufs.payload`.
    fn take_echo(&mut self, samples: usize, bufs: &mut Buffers) -> TickPayload {
        let (front, back) = self.echo.as_slices();
        let from_front = front.len().min(samples);
        bufs.payload.clear();
        bufs.payload.extend_from_slice(&front[..from_front]);
        bufs.payload
            .extend_from_slice(&back[..samples - from_front]);
        self.echo.drain(..samples);
        TickPayload::Echo
    }

    /// Whether we send media now: the direction allows it and we know where to.
    fn sending(&self) -> bool {
        self.media.direction.sends() && self.destination().is_some()
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.media.remote_rtp)
    }

    /// Sends `bufs.payload` as the next RTP packet. A packet the socket cannot take at once
    /// (its send buffer is full) is dropped rather than waited for: late media is no use.
    fn send_packet(&mut self, payload_type: u8, marker: bool, timestamp: u32, bufs: &mut Buffers) {
        let Some(dest) = self.destination() else {
            return;
        };
        bufs.packet.clear();
        let header = RtpPacket {
            payload_type,
            marker,
            sequence: self.sequence,
            timestamp,
            ssrc: self.ssrc,
            payload: &bufs.payload,
        };
        if let Err(e) = header.write(&mut bufs.packet) {
            warn!(call_id = %self.config.call_id, error = %e, "rtp build");
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        // Nonblocking: a full socket buffer drops the packet rather than holding the thread.
        match self.rtp.send_to(&bufs.packet, dest) {
            Ok(_) => {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += bufs.payload.len() as u64;
                self.sent_since_report = true;
            }
            Err(e) => debug!(call_id = %self.config.call_id, error = %e, %dest, "rtp send"),
        }
    }

    fn on_rtcp(&mut self, datagram: &[u8], from: SocketAddr) {
        if is_stun(datagram) {
            return;
        }
        let packets = match rtcp::parse_compound(datagram) {
            Ok(p) => p,
            Err(e) => {
                debug!(call_id = %self.config.call_id, error = %e, "bad rtcp");
                self.stats.malformed_packets += 1;
                return;
            }
        };
        self.stats.rtcp_received += 1;
        if self.latched_rtcp.is_none() && self.latched.is_none_or(|a| a.ip() == from.ip()) {
            self.latched_rtcp = Some(from);
        }
        let now = Instant::now();
        for packet in packets {
            let blocks = match packet {
                RtcpPacket::SenderReport { info, blocks, .. } => {
                    self.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
                    blocks
                }
                RtcpPacket::ReceiverReport { blocks, .. } => blocks,
                RtcpPacket::Other(_) => continue,
            };
            for block in blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                self.stats.remote_fraction_lost = Some(block.fraction_lost as f64 / 256.0);
                self.stats.remote_jitter_ms =
                    Some(block.jitter as f64 * 1000.0 / self.media.codec.clock_rate() as f64);
                if block.last_sr != 0 {
                    let now_mid = rtcp::ntp_middle(rtcp::ntp_now());
                    let rtt = now_mid
                        .wrapping_sub(block.last_sr)
                        .wrapping_sub(block.delay_since_last_sr);
                    // Ignore nonsense from clock skew (RTT above a minute).
                    if rtt < 60 << 16 {
                        self.stats.round_trip_ms = Some(rtt as f64 * 1000.0 / 65536.0);
                    }
                }
            }
        }
    }

    fn send_rtcp(&mut self, now: Instant) {
        self.next_rtcp = now + self.config.rtcp_interval;
        let block = self.remote_ssrc.map(|ssrc| {
            let (last_sr, delay_since_last_sr) = self.last_sr.map_or((0, 0), |(mid, at)| {
                let delay = now.duration_since(at).as_secs_f64() * 65536.0;
                (mid, delay as u32)
            });
            ReportBlock {
                ssrc,
                fraction_lost: self.rx_stats.take_fraction_lost(),
                cumulative_lost: self.rx_stats.lost().min(0x7F_FFFF) as i32,
                highest_seq: self.rx_stats.extended_max(),
                jitter: self.rx_stats.jitter_units(),
                last_sr,
                delay_since_last_sr,
            }
        });
        let sender = std::mem::take(&mut self.sent_since_report).then(|| SenderInfo {
            ntp: rtcp::ntp_now(),
            rtp_timestamp: self.timestamp,
            packets: self.stats.packets_sent as u32,
            octets: self.stats.bytes_sent as u32,
        });
        let report = rtcp::build_report(self.ssrc, sender, block.as_slice(), &self.config.cname);
        let dest = self.latched_rtcp.or(self.media.remote_rtcp).or_else(|| {
            self.latched
                .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
        });
        if let Some(dest) = dest {
            match self.rtcp.send_to(&report, dest) {
                Ok(_) => self.stats.rtcp_sent += 1,
                Err(e) => debug!(call_id = %self.config.call_id, error = %e, "rtcp send"),
            }
        }
        self.publish_stats();
        let snapshot = self.stats.clone();
        self.emit(MediaEvent::Stats(snapshot));
    }

    fn publish_stats(&mut self) {
        self.stats.packets_lost = self.rx_stats.lost();
        self.stats.packets_expected = self.rx_stats.expected();
        self.stats.jitter_ms = self.rx_stats.jitter_ms();
        *lock(&self.shared_stats) = self.stats.clone();
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

impl Task for Engine {
    fn sockets(&self) -> [RawFd; 2] {
        [self.rtp.as_raw_fd(), self.rtcp.as_raw_fd()]
    }

    fn attach(&mut self, waker: TaskWaker) {
        info!(call_id = %self.config.call_id, port = self.lease.port(), codec = ?self.media.codec,
              remote = ?self.media.remote_rtp, "media started");
        lock(&self.shared).engine = Some(waker);
    }

    fn readable(&mut self, socket: usize) -> Step {
        Step::stop_if(SCRATCH.with_borrow_mut(|scratch| self.serve(scratch, socket)))
    }

    fn wake(&mut self, now: std::time::Instant) -> Step {
        if self.run_commands() {
            return Step::Stop;
        }
        Step::stop_if(
            SCRATCH
                .with_borrow_mut(|scratch| self.service(Instant::from_std(now), &mut scratch.bufs)),
        )
    }

    fn deadline(&self) -> std::time::Instant {
        self.next_wake().into_std()
    }

    fn end(mut self) {
        self.publish_stats();
        // At info the call's end line carries the same statistics.
        debug!(call_id = %self.config.call_id, stats = %self.stats, "media stopped");
        let (recorder, ended) = (self.recorder.take(), self.ended.take());
        let (call_id, stats) = (self.config.call_id.clone(), self.stats.clone());
        // The sockets and their ports go back before `close` returns.
        drop(self);
        finish_recording(recorder, &call_id, move || {
            if let Some(ended) = ended {
                let _ = ended.send(stats);
            }
        });
    }
}

/// Marks the shared state closed when the engine stops, however it stops (it ended, or it
/// panicked), so that commands sent later fail instead of waiting.
impl Drop for Engine {
    fn drop(&mut self) {
        let mut out = lock(&self.shared);
        out.closed = true;
        out.commands.clear();
        out.engine = None;
    }
}

/// The clock telephone-event timestamps and durations run at on receive.
fn dtmf_clock(media: &NegotiatedMedia) -> u32 {
    media
        .dtmf_recv
        .first()
        .or(media.dtmf_send.as_ref())
        .map_or(media.codec.clock_rate(), |d| d.clock_rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Codec;
    use crate::media::dtmf::{DtmfSource, TelephoneEvent};
    use crate::media::g711;
    use crate::media::ports::test_port_range;
    use crate::media::sdp::{Direction, DtmfFormat};
    use std::net::UdpSocket as StdUdpSocket;

    fn pool(pairs: u16) -> PortPool {
        let (start, end) = test_port_range(pairs);
        PortPool::new(start, end).unwrap()
    }

    /// A session with `config` started towards a new peer, negotiated for `codec`; the pool
    /// must live as long as the session.
    async fn started(config: MediaConfig, codec: Codec) -> (PortPool, Peer, MediaSession) {
        let pool = pool(2);
        let pending = PendingMedia::bind(&pool, config).unwrap();
        let peer = Peer::new(pending.port()).await;
        let session = pending.start(&negotiated(peer.addr(), codec)).unwrap();
        (pool, peer, session)
    }

    fn config(timeout_ms: u64) -> MediaConfig {
        MediaConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            media_timeout: Duration::from_millis(timeout_ms),
            call_id: "test".into(),
            ..MediaConfig::default()
        }
    }

    fn negotiated(peer: SocketAddr, codec: Codec) -> NegotiatedMedia {
        let pt = codec.static_payload_type().unwrap_or(111);
        let dtmf = DtmfFormat {
            payload_type: 101,
            clock_rate: codec.clock_rate(),
        };
        NegotiatedMedia {
            codec,
            send_payload_type: pt,
            recv_payload_type: pt,
            dtmf_send: Some(dtmf),
            dtmf_recv: vec![
                dtmf,
                DtmfFormat {
                    payload_type: 120,
                    clock_rate: 8000,
                },
            ],
            remote_rtp: Some(peer),
            remote_rtcp: Some(SocketAddr::new(peer.ip(), peer.port() + 1)),
            ptime_ms: 20,
            direction: Direction::SendRecv,
        }
    }

    struct Peer {
        socket: tokio::net::UdpSocket,
        target: SocketAddr,
    }

    impl Peer {
        async fn new(session_port: u16) -> Peer {
            Peer {
                socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                target: SocketAddr::from(([127, 0, 0, 1], session_port)),
            }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        async fn send(&self, pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
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
            self.socket.send_to(&buf, self.target).await.unwrap();
        }

        /// Next RTP packet from the session (RTCP and timeouts skipped), as owned parts.
        async fn recv(&self) -> Option<(u8, bool, u16, u32, u32, Vec<u8>)> {
            let mut buf = [0u8; 2048];
            loop {
                let (n, _) =
                    tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf))
                        .await
                        .ok()?
                        .ok()?;
                if is_rtcp(&buf[..n]) {
                    continue;
                }
                let p = RtpPacket::parse(&buf[..n]).ok()?;
                return Some((
                    p.payload_type,
                    p.marker,
                    p.sequence,
                    p.timestamp,
                    p.ssrc,
                    p.payload.to_vec(),
                ));
            }
        }
    }

    async fn collect_audio(session: &mut MediaSession, until: Duration) -> Vec<AudioFrame> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + until;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, session.recv()).await {
            if let MediaEvent::Audio(f) = event {
                frames.push(f);
            }
        }
        frames
    }

    /// Our own sender at 5 % loss and 0–40 ms random delay (reordering): the session delivers
    /// one continuous, in-order 20 ms frame per packet sent and counts the losses.
    #[tokio::test]
    async fn loss_and_jitter_give_continuous_output_and_right_stats() {
        let (_pool, peer, mut session) = started(config(30_000), Codec::Pcmu).await;
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next_rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        const PACKETS: u16 = 150;
        let mut schedule = Vec::new();
        let mut dropped = 0u64;
        for i in 0..PACKETS {
            if i > 0 && i < PACKETS - 1 && next_rand() % 100 < 5 {
                dropped += 1;
                continue;
            }
            schedule.push((i as u64 * 20 + next_rand() % 41, i));
        }
        schedule.sort();
        let t0 = Instant::now();
        let send = async {
            for (at, i) in &schedule {
                tokio::time::sleep_until(t0 + Duration::from_millis(*at)).await;
                let level = g711::ulaw_encode(*i as i16 * 100);
                let seq = 65500u16.wrapping_add(*i);
                peer.send(
                    0,
                    *i == 0,
                    seq,
                    1000 + *i as u32 * 160,
                    0xABCD,
                    &[level; 160],
                )
                .await;
            }
        };
        let (_, frames) = tokio::join!(
            send,
            collect_audio(
                &mut session,
                Duration::from_millis(PACKETS as u64 * 20 + 600)
            )
        );
        assert_eq!(
            frames.len(),
            PACKETS as usize,
            "one frame per packet, losses concealed"
        );
        assert!(
            frames
                .iter()
                .all(|f| f.samples.len() == 160 && f.sample_rate == 8000)
        );
        let mut matched = 0;
        for (i, f) in frames.iter().enumerate() {
            let expected = g711::ulaw_decode(g711::ulaw_encode(i as i16 * 100));
            if f.samples[0] == expected {
                matched += 1;
            }
        }
        let stats = session.stats();
        // A loaded machine may delay a send past the window; such a packet is discarded and
        // concealed (output stays continuous), so allow a few.
        assert!(stats.packets_discarded <= 3, "{stats:?}");
        assert!(
            matched as u64 >= PACKETS as u64 - dropped - stats.packets_discarded,
            "frames in order: {matched} matched"
        );
        assert_eq!(stats.packets_lost, dropped, "{stats:?}");
        assert_eq!(stats.packets_expected, PACKETS as u64);
        assert!(
            stats.jitter_ms > 2.0 && stats.jitter_ms < 60.0,
            "jitter {}",
            stats.jitter_ms
        );
        assert!(stats.concealed_ms >= dropped * 20);
        assert_eq!(stats.remote_ssrc, Some(0xABCD));
        let final_stats = session.close().await;
        assert_eq!(final_stats.packets_lost, dropped);
    }

    /// Shared: queued 24 kHz audio leaves as paced PCMU with continuous sequence numbers and
    /// timestamps, marker on the first packet, silence after the queue runs dry; the session
    /// latches to the peer's real source address instead of the SDP one.
    #[tokio::test]
    async fn paced_send_with_latching_flush_and_timestamp_continuity() {
        let pool = pool(2);
        let pending = PendingMedia::bind(&pool, config(30_000)).unwrap();
        let peer = Peer::new(pending.port()).await;
        // SDP points somewhere else (a NATed private address); symmetric RTP fixes it.
        let mut media = negotiated("127.0.0.1:9".parse().unwrap(), Codec::Pcmu);
        media.remote_rtcp = None;
        let session = pending.start(&media).unwrap();
        peer.send(0, true, 1, 0, 77, &[0xFF; 160]).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tone: Vec<i16> = (0..24000)
            .map(|i| ((i as f32 * 0.1).sin() * 8000.0) as i16)
            .collect();
        session.queue_audio(&tone, 24000).unwrap();
        let mut packets = Vec::new();
        while packets.len() < 30 {
            packets.push(peer.recv().await.expect("packets reach the latched source"));
        }
        let report = session.flush_playout();
        assert!(
            report.played_ms > 0 && report.played_ms < 1000,
            "{report:?}"
        );
        assert!(report.played_ms + report.discarded_ms >= 990, "{report:?}");
        for _ in 0..10 {
            packets.push(peer.recv().await.unwrap());
        }
        for w in packets.windows(2) {
            assert_eq!(w[1].2, w[0].2.wrapping_add(1), "sequence continuous");
            assert_eq!(w[1].3, w[0].3.wrapping_add(160), "timestamp continuous");
            assert_eq!(w[1].4, w[0].4, "one SSRC");
        }
        assert!(packets.iter().all(|p| p.0 == 0 && p.5.len() == 160));
        let first_audio = packets
            .iter()
            .position(|p| p.5.iter().any(|&b| b != g711::ULAW_SILENCE))
            .expect("audio was sent");
        let markers: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].1).collect();
        assert_eq!(
            markers,
            [first_audio],
            "marker on the talkspurt's first packet only"
        );
        // After the flush only silence goes out.
        assert!(
            packets
                .last()
                .unwrap()
                .5
                .iter()
                .all(|&b| b == g711::ULAW_SILENCE)
        );
        assert!(
            packets
                .iter()
                .any(|p| p.5.iter().any(|&b| b != g711::ULAW_SILENCE))
        );
        assert_eq!(session.queued_ms(), 0);
        // The call layer hears when the talkspurt started and when the line went idle.
        let mut session = session;
        let mut playout = Vec::new();
        while playout.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(2), session.recv()).await {
                Ok(Some(MediaEvent::PlayoutStarted { .. })) => playout.push("started"),
                Ok(Some(MediaEvent::PlayoutIdle)) => playout.push("idle"),
                Ok(Some(_)) => {}
                other => panic!("playout events: {playout:?}, then {other:?}"),
            }
        }
        assert_eq!(playout, ["started", "idle"]);
        session.close().await;
    }

    #[tokio::test]
    async fn dtmf_send_and_receive() {
        let (_pool, peer, mut session) = started(config(30_000), Codec::Pcmu).await;
        assert!(
            session.send_dtmf("1x", 100).is_err(),
            "invalid digit rejected"
        );
        session.send_dtmf("1#", 100).unwrap();
        let mut events: Vec<(bool, u32, TelephoneEvent)> = Vec::new();
        while events.iter().filter(|e| e.2.end).count() < 6 {
            let p = peer.recv().await.expect("dtmf packets");
            if p.0 == 101 {
                events.push((p.1, p.3, TelephoneEvent::parse(&p.5).unwrap()));
            }
        }
        let first: Vec<_> = events.iter().filter(|e| e.2.event == 1).collect();
        let second: Vec<_> = events.iter().filter(|e| e.2.event == 11).collect();
        assert_eq!(first.len(), 7, "4 updates + 3 end packets");
        assert!(first[0].0 && !first[1].0, "marker on the first packet only");
        assert!(
            first.iter().all(|e| e.1 == first[0].1),
            "one timestamp per event"
        );
        assert_eq!(first.iter().filter(|e| e.2.end).count(), 3);
        assert_eq!(first.last().unwrap().2.duration, 800);
        assert!(second[0].1 > first[0].1, "second digit starts later");

        // Receive on PT 120 (telephone-event/8000 as baresip offers it), with three end packets.
        for (k, dur, end) in [
            (0, 160u16, false),
            (1, 320, false),
            (2, 480, true),
            (3, 480, true),
            (4, 480, true),
        ] {
            let te = TelephoneEvent {
                event: 9,
                end,
                volume: 10,
                duration: dur,
            };
            peer.send(120, k == 0, 100 + k, 8000, 5, &te.to_bytes())
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut digits = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, session.recv()).await {
            if let MediaEvent::Dtmf(d) = event {
                digits.push(d);
            }
        }
        assert_eq!(
            digits,
            [DtmfEvent {
                digit: '9',
                duration_ms: 60,
                source: DtmfSource::Rtp
            }]
        );
        assert_eq!(session.stats().dtmf_events_received, 1);
        assert_eq!(session.stats().dtmf_events_sent, 2);
        session.close().await;
    }

    #[tokio::test]
    async fn ssrc_change_resets_the_stream() {
        let (_pool, peer, mut session) = started(config(30_000), Codec::Pcma).await;
        for i in 0..10u16 {
            peer.send(8, i == 0, 500 + i, i as u32 * 160, 1, &[0xD5; 160])
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // New source (e.g. after a transfer): unrelated sequence and timestamp.
        for i in 0..10u16 {
            peer.send(
                8,
                i == 0,
                40000 + i,
                9_000_000 + i as u32 * 160,
                2,
                &[0xD5; 160],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let frames = collect_audio(&mut session, Duration::from_millis(400)).await;
        assert_eq!(frames.len(), 20, "no loss invented across the change");
        let stats = session.close().await;
        assert_eq!(stats.ssrc_changes, 1);
        assert_eq!(stats.remote_ssrc, Some(2));
        assert_eq!(stats.packets_lost, 0);
        assert_eq!(stats.packets_expected, 10, "counted for the current source");
    }

    #[tokio::test]
    async fn an_audio_sink_takes_the_frames_in_place_of_events() {
        let (_pool, peer, mut session) = started(config(30_000), Codec::Pcmu).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        session
            .set_audio_sink(Box::new(move |samples: &[i16]| {
                let _ = tx.send(samples.to_vec());
            }))
            .unwrap();
        for i in 0..5u16 {
            peer.send(0, i == 0, 100 + i, u32::from(i) * 160, 7, &[0x9f; 160])
                .await;
        }
        let mut frames = Vec::new();
        while frames.len() < 5 {
            let frame = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("frames reach the sink")
                .unwrap();
            frames.push(frame);
        }
        let expected = crate::media::g711::ulaw_decode(0x9f);
        assert!(frames.iter().all(|f| f.len() == 160 && f[0] == expected));
        assert!(
            collect_audio(&mut session, Duration::from_millis(100))
                .await
                .is_empty(),
            "no audio events once the sink is set"
        );
        session.close().await;
    }

    #[tokio::test]
    async fn loopback_plays_the_callers_audio_back_in_order() {
        let (_pool, peer, mut session) = started(config(30_000), Codec::Pcmu).await;
        session.loop_back().unwrap();
        for i in 0..5u8 {
            let payload = [0x90 + i; 160];
            peer.send(
                0,
                i == 0,
                100 + u16::from(i),
                u32::from(i) * 160,
                7,
                &payload,
            )
            .await;
        }
        // Silence may come before and after; the five frames come back in order, the first
        // opening a talkspurt, in consecutive packets.
        let mut echoed = Vec::new();
        while echoed.len() < 5 {
            let (pt, marker, seq, _, _, payload) = peer.recv().await.expect("audio comes back");
            assert_eq!(pt, 0);
            if payload[0] != 0xff {
                assert!(
                    payload.iter().all(|&b| b == payload[0]),
                    "one frame per packet"
                );
                echoed.push((payload[0], marker, seq));
            }
        }
        assert_eq!(
            echoed.iter().map(|e| e.0).collect::<Vec<_>>(),
            [0x90, 0x91, 0x92, 0x93, 0x94]
        );
        assert!(echoed[0].1 && echoed[1..].iter().all(|e| !e.1));
        assert!(echoed.windows(2).all(|w| w[1].2 == w[0].2.wrapping_add(1)));
        assert!(
            collect_audio(&mut session, Duration::from_millis(100))
                .await
                .is_empty(),
            "no audio events while looping back"
        );
        session.close().await;
    }

    /// The echo line sends G.711 back byte for byte; a lost packet is concealed in its place,
    /// from the audio echoed just before it (the decoder never saw that audio).
    #[tokio::test]
    async fn loopback_echoes_g711_as_it_came_and_conceals_a_loss_in_place() {
        let (_pool, peer, session) = started(config(30_000), Codec::Pcmu).await;
        session.loop_back().unwrap();
        for i in [0u8, 1, 3, 4] {
            // Both μ-law codes for zero (0xff, 0x7f) would not survive a decode and encode.
            let mut payload = [0x90 + i; 160];
            payload[0] = 0x7f;
            let (seq, ts) = (200 + u16::from(i), u32::from(i) * 160);
            peer.send(0, i == 0, seq, ts, 7, &payload).await;
        }
        let mut echoed = Vec::new();
        let five = async {
            while echoed.len() < 5 {
                let (_, _, _, _, _, payload) = peer.recv().await.expect("audio comes back");
                if payload.iter().any(|&b| b != 0xff) {
                    echoed.push(payload);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), five)
            .await
            .expect("five packets of audio, the concealed one not silent");
        for (packet, i) in [(0, 0u8), (1, 1), (3, 3), (4, 4)] {
            assert_eq!(
                echoed[packet][0], 0x7f,
                "packet {i} came back as it was sent"
            );
            assert!(echoed[packet][1..].iter().all(|&b| b == 0x90 + i));
        }
        let concealed = &echoed[2];
        assert_eq!(
            concealed[1..80],
            [0x91; 79],
            "the first 10 ms repeat the audio before the loss at full level"
        );
        assert_ne!(concealed[159], 0x91, "then it fades");
        session.close().await;
    }

    /// Digits queued while the echo line is talking go out between echoed packets (an echo
    /// tick skips the shared state until a digit is queued). The caller's packets come faster
    /// than they go back, so that echo always waits when the digit is queued.
    #[tokio::test]
    async fn digits_sent_during_an_echo_go_out_between_echoed_packets() {
        let (_pool, peer, session) = started(config(30_000), Codec::Pcmu).await;
        session.loop_back().unwrap();
        let talk = async {
            for i in 0..40u16 {
                peer.send(0, i == 0, 300 + i, u32::from(i) * 160, 7, &[0x90; 160])
                    .await;
                if i == 20 {
                    session.send_dtmf("7", 100).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let listen = async {
            // Payload types in the order they came back (echo 0, telephone-event 101),
            // silence left out, until shortly after the talking.
            let until = tokio::time::Instant::now() + Duration::from_millis(40 * 20 + 500);
            let mut heard = Vec::new();
            while let Ok(Some((pt, _, _, _, _, payload))) =
                tokio::time::timeout_at(until, peer.recv()).await
            {
                if pt == 101 {
                    assert_eq!(TelephoneEvent::parse(&payload).unwrap().event, 7);
                }
                if pt == 101 || payload[0] == 0x90 {
                    heard.push(pt);
                }
            }
            heard
        };
        let ((), heard) = tokio::join!(talk, listen);
        let first_digit = heard.iter().position(|&pt| pt == 101).expect("the digit");
        let after = &heard[first_digit..];
        let last_digit = after.iter().rposition(|&pt| pt == 101).unwrap();
        assert!(first_digit > 0, "echo before the digit: {heard:?}");
        assert_eq!(after[..=last_digit], [101; 7], "one whole event: {heard:?}");
        assert!(
            after[last_digit + 1..].contains(&0),
            "echo after the digit: {heard:?}"
        );
        session.close().await;
    }

    #[tokio::test]
    async fn loopback_sends_each_packet_as_it_arrives() {
        let pool = pool(2);
        let config = MediaConfig {
            silence: SilenceMode::Suppress,
            ..config(30_000)
        };
        let pending = PendingMedia::bind(&pool, config).unwrap();
        let peer = Peer::new(pending.port()).await;
        let mut media = negotiated(peer.addr(), Codec::Pcmu);
        media.ptime_ms = 60;
        let session = pending.start(&media).unwrap();
        session.loop_back().unwrap();
        // Each packet goes out as soon as the previous one came back: up to 60 ms before its
        // slot on the engine's packet clock. Its echo must not wait for that slot.
        let mut delays = Vec::new();
        for i in 0..4u8 {
            let sent = Instant::now();
            let (seq, ts) = (10 + u16::from(i), u32::from(i) * 480);
            peer.send(0, i == 0, seq, ts, 7, &[0x90 + i; 480]).await;
            let (_, _, _, _, _, payload) = peer.recv().await.expect("the echo");
            assert_eq!(payload, [0x90 + i; 480]);
            delays.push(sent.elapsed());
        }
        let mut early = delays[1..].to_vec();
        early.sort();
        assert!(
            early[1] < Duration::from_millis(30),
            "echo delays {delays:?}"
        );
        session.close().await;
    }

    #[tokio::test]
    async fn media_timeout_ends_the_session_and_returns_the_port() {
        let pool = pool(2);
        let pending = PendingMedia::bind(&pool, config(200)).unwrap();
        let port = pending.port();
        let peer = Peer::new(port).await;
        let mut session = pending
            .start(&negotiated(peer.addr(), Codec::Pcmu))
            .unwrap();
        assert_eq!(pool.leased(), 1);
        let started = Instant::now();
        let mut timeout = None;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_secs(5), session.recv()).await
        {
            if let MediaEvent::Timeout { silent_for } = event {
                timeout = Some(silent_for);
            }
        }
        let silent_for = timeout.expect("timeout event");
        assert!(silent_for >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(3));
        // The task ended by itself: it refuses commands, its sockets are closed and the pair is
        // back in the pool.
        assert!(matches!(session.loop_back(), Err(MediaError::Closed)));
        assert_eq!(pool.leased(), 0);
        assert!(
            StdUdpSocket::bind(("127.0.0.1", port)).is_ok(),
            "RTP port free again"
        );
        session.close().await;
    }

    #[tokio::test]
    async fn hold_stops_sending_and_suspends_the_timeout() {
        let pool = pool(2);
        let pending = PendingMedia::bind(&pool, config(300)).unwrap();
        let peer = Peer::new(pending.port()).await;
        let mut media = negotiated(peer.addr(), Codec::Pcmu);
        let mut session = pending.start(&media).unwrap();
        assert!(peer.recv().await.is_some(), "sending while sendrecv");
        media.direction = Direction::Inactive;
        session.update(&media).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Drain what was in flight, then expect silence on the wire and no timeout for > 300 ms.
        let mut buf = [0u8; 2048];
        while tokio::time::timeout(Duration::from_millis(50), peer.socket.recv_from(&mut buf))
            .await
            .is_ok()
        {}
        let quiet = tokio::time::timeout(Duration::from_millis(700), peer.recv()).await;
        assert!(matches!(quiet, Err(_) | Ok(None)), "nothing sent on hold");
        let mut events = Vec::new();
        while let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(10), session.recv()).await
        {
            events.push(e);
        }
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, MediaEvent::Timeout { .. })),
            "no timeout on hold"
        );
        // Resume: packets flow again (and the timeout applies again).
        media.direction = Direction::SendRecv;
        session.update(&media).unwrap();
        assert!(peer.recv().await.is_some(), "sending after resume");
        let stats = session.close().await;
        assert!(stats.packets_sent > 0);
    }

    #[tokio::test]
    async fn records_both_directions_to_stereo_wav() {
        let dir = std::env::temp_dir().join(format!("sb-session-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("call.wav");
        let (_pool, peer, session) = started(config(30_000), Codec::Pcmu).await;
        session.start_recording(&path).unwrap();
        session.queue_audio(&vec![4000; 8000], 8000).unwrap();
        for i in 0..25u16 {
            peer.send(
                0,
                i == 0,
                i,
                i as u32 * 160,
                9,
                &[g711::ulaw_encode(-3000); 160],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        session.close().await;
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let left_caller = samples
            .iter()
            .step_by(2)
            .filter(|&&s| s == g711::ulaw_decode(g711::ulaw_encode(-3000)))
            .count();
        let right_agent = samples
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|&&s| s == 4000)
            .count();
        assert!(
            left_caller >= 20 * 160,
            "caller audio on the left: {left_caller}"
        );
        assert!(
            right_agent >= 20 * 160,
            "agent audio on the right: {right_agent}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// RTCP: the session sends SR + SDES to the peer's RTCP port on its interval, with a report
    /// block about the peer's stream; the peer's RR gives us its view and the round-trip time.
    #[tokio::test]
    async fn rtcp_reports_both_ways() {
        let pool = pool(2);
        let config = MediaConfig {
            rtcp_interval: Duration::from_millis(200),
            ..config(30_000)
        };
        let pending = PendingMedia::bind(&pool, config).unwrap();
        let our_rtcp = SocketAddr::from(([127, 0, 0, 1], pending.port() + 1));
        let peer = Peer::new(pending.port()).await;
        let peer_rtcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut media = negotiated(peer.addr(), Codec::Pcmu);
        media.remote_rtcp = Some(peer_rtcp.local_addr().unwrap());
        let mut session = pending.start(&media).unwrap();
        for i in 0..5u16 {
            // Sequence gap: packet 2 never sent.
            if i != 2 {
                peer.send(0, i == 0, i, i as u32 * 160, 0x1234, &[0xFF; 160])
                    .await;
            }
        }
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer_rtcp.recv_from(&mut buf))
            .await
            .expect("an RTCP report within the interval")
            .unwrap();
        let packets = rtcp::parse_compound(&buf[..n]).unwrap();
        let (our_ssrc, info, block) = match &packets[0] {
            RtcpPacket::SenderReport { ssrc, info, blocks } => (*ssrc, *info, blocks[0]),
            other => panic!("expected SR, got {other:?}"),
        };
        assert_eq!(packets[1], RtcpPacket::Other(202), "SDES follows");
        assert!(info.packets > 0);
        assert_eq!(block.ssrc, 0x1234);
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.highest_seq, 4);
        assert_eq!(block.fraction_lost, 51, "1 of 5 expected lost (256 / 5)");
        // Peer answers with an RR about our stream, echoing our SR time (zero delay).
        let rr = rtcp::build_report(
            0x1234,
            None,
            &[ReportBlock {
                ssrc: our_ssrc,
                fraction_lost: 128,
                jitter: 80,
                last_sr: rtcp::ntp_middle(info.ntp),
                ..ReportBlock::default()
            }],
            "peer",
        );
        peer_rtcp.send_to(&rr, our_rtcp).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut stats_events = 0;
        let mut stats = session.stats();
        while stats.round_trip_ms.is_none() && Instant::now() < deadline {
            if let Ok(Some(MediaEvent::Stats(s))) =
                tokio::time::timeout_at(deadline, session.recv()).await
            {
                stats_events += 1;
                stats = s;
            }
        }
        assert!(stats_events > 0);
        assert_eq!(stats.remote_fraction_lost, Some(0.5));
        assert_eq!(stats.remote_jitter_ms, Some(10.0));
        let rtt = stats.round_trip_ms.expect("rtt from LSR");
        assert!((0.0..1000.0).contains(&rtt), "rtt {rtt}");
        assert!(stats.rtcp_sent >= 1 && stats.rtcp_received >= 1);
        session.close().await;
    }

    /// Silence suppression: nothing is sent while the queue is empty, and the first packet of
    /// the next talkspurt carries the marker bit and a timestamp that kept running meanwhile.
    #[tokio::test]
    async fn suppressed_silence_keeps_timestamps_running() {
        let config = MediaConfig {
            silence: SilenceMode::Suppress,
            ..config(30_000)
        };
        let (_pool, peer, session) = started(config, Codec::Pcmu).await;
        session.queue_audio(&[1000; 320], 8000).unwrap();
        let first = peer.recv().await.unwrap();
        let second = peer.recv().await.unwrap();
        assert!(first.1 && !second.1, "marker starts the talkspurt");
        assert_eq!(second.3, first.3.wrapping_add(160));
        let quiet = tokio::time::timeout(Duration::from_millis(300), peer.recv()).await;
        assert!(quiet.is_err(), "nothing sent while there is nothing to say");
        session.queue_audio(&[1000; 160], 8000).unwrap();
        let resumed = peer.recv().await.unwrap();
        assert!(resumed.1, "new talkspurt marked");
        assert_eq!(
            resumed.2,
            second.2.wrapping_add(1),
            "no sequence gap for unsent packets"
        );
        let elapsed_ticks = resumed.3.wrapping_sub(second.3) / 160;
        assert!(
            elapsed_ticks >= 15,
            "timestamp advanced through the silence: {elapsed_ticks} ticks"
        );
        assert_eq!(
            resumed.3.wrapping_sub(second.3) % 160,
            0,
            "still on the packet grid"
        );
        // A digit queued on the sleeping line wakes it.
        let quiet = tokio::time::timeout(Duration::from_millis(100), peer.recv()).await;
        assert!(quiet.is_err(), "idle again after the talkspurt");
        session.send_dtmf("5", 60).unwrap();
        let digit = tokio::time::timeout(Duration::from_secs(2), peer.recv())
            .await
            .expect("a digit wakes the idle line")
            .unwrap();
        assert_eq!(digit.0, 101);
        assert_eq!(
            digit.3.wrapping_sub(resumed.3) % 160,
            0,
            "the digit starts on the packet grid"
        );
        session.close().await;
    }

    #[tokio::test]
    async fn dropping_frees_the_ports() {
        let pool = pool(2);
        let pending = PendingMedia::bind(&pool, config(30_000)).unwrap();
        assert_eq!(pool.leased(), 1);
        drop(pending);
        assert_eq!(
            pool.leased(),
            0,
            "an unstarted session returns its pair at once"
        );
        let pending = PendingMedia::bind(&pool, config(30_000)).unwrap();
        let port = pending.port();
        let mut session = pending
            .start(&negotiated("127.0.0.1:9".parse().unwrap(), Codec::Pcmu))
            .unwrap();
        let mut events = session.take_events().unwrap();
        assert!(session.recv().await.is_none(), "events were taken");
        drop(session);
        // The aborted task drops its sockets and lease; the event stream ends.
        let ended = tokio::time::timeout(Duration::from_secs(2), async {
            while events.recv().await.is_some() {}
        })
        .await;
        assert!(ended.is_ok());
        assert_eq!(pool.leased(), 0);
        assert!(StdUdpSocket::bind(("127.0.0.1", port)).is_ok());
        assert!(StdUdpSocket::bind(("127.0.0.1", port + 1)).is_ok());
    }

    /// Opus with losses: the engine conceals from the next packet's FEC or PLC and the output
    /// stays continuous at the requested rate.
    #[tokio::test]
    async fn opus_losses_are_concealed_continuously() {
        let pool = pool(2);
        let config = MediaConfig {
            inbound_rate: 16000,
            ..config(30_000)
        };
        let pending = PendingMedia::bind(&pool, config).unwrap();
        let peer = Peer::new(pending.port()).await;
        let mut session = pending
            .start(&negotiated(peer.addr(), Codec::Opus))
            .unwrap();
        let mut encoder = crate::media::codec::new_encoder(Codec::Opus).unwrap();
        let send = async {
            let t0 = Instant::now();
            for i in 0..50u32 {
                let pcm: Vec<i16> = (0..960)
                    .map(|k| {
                        (((i * 960 + k) as f32 * 2.0 * std::f32::consts::PI * 300.0 / 48000.0)
                            .sin()
                            * 8000.0) as i16
                    })
                    .collect();
                let mut payload = Vec::new();
                encoder.encode(&pcm, &mut payload).unwrap();
                tokio::time::sleep_until(t0 + Duration::from_millis(20 * i as u64)).await;
                if i % 10 == 5 {
                    continue;
                }
                peer.send(111, i == 0, i as u16, i * 960, 3, &payload).await;
            }
        };
        let (_, frames) = tokio::join!(
            send,
            collect_audio(&mut session, Duration::from_millis(1500))
        );
        // One 20 ms frame per packet, lost ones concealed (without concealment: 45); the last
        // frame may still sit in the 48k -> 16k filter, which releases it with the next audio.
        assert!((49..=50).contains(&frames.len()), "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.samples.len() == 320));
        let stats = session.close().await;
        assert_eq!(stats.packets_lost, 5);
        assert!(stats.concealed_ms >= 100, "{stats:?}");
    }

    #[tokio::test]
    async fn opus_call_roundtrip_between_two_sessions() {
        let pool = pool(4);
        let a = PendingMedia::bind(
            &pool,
            MediaConfig {
                inbound_rate: 16000,
                ..config(30_000)
            },
        )
        .unwrap();
        let b = PendingMedia::bind(
            &pool,
            MediaConfig {
                inbound_rate: 16000,
                ..config(30_000)
            },
        )
        .unwrap();
        let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port()));
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.port()));
        let a = a.start(&negotiated(b_addr, Codec::Opus)).unwrap();
        let mut b = b.start(&negotiated(a_addr, Codec::Opus)).unwrap();
        let tone: Vec<i16> = (0..16000)
            .map(|i| {
                ((i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin() * 10000.0) as i16
            })
            .collect();
        a.queue_audio(&tone, 16000).unwrap();
        let frames = collect_audio(&mut b, Duration::from_millis(1300)).await;
        assert!(frames.len() >= 50, "{} frames", frames.len());
        assert!(
            frames
                .iter()
                .all(|f| f.samples.len() == 320 && f.sample_rate == 16000)
        );
        let loud = frames
            .iter()
            .filter(|f| {
                f.samples
                    .iter()
                    .map(|&s| (s as i64).abs())
                    .max()
                    .unwrap_or(0)
                    > 5000
            })
            .count();
        assert!(loud >= 40, "the tone arrives: {loud} loud frames");
        a.close().await;
        b.close().await;
        assert_eq!(pool.leased(), 0);
    }
}
