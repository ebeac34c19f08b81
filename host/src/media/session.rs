//! `MediaSession`: one call's RTP stream, the handle the call layer holds.
//!
//! Each session's [`Engine`](super::engine::Engine), the sans-IO core that runs everything
//! time-driven (the pacing clock, the jitter buffer, RTCP, the media timeout), sits in a
//! [`Shell`] on a media thread (see `reactor`), which owns the sockets and the clock. The
//! methods the call layer uses from other threads touch only the state the handle shares with
//! the engine (a short mutex over the outbound queue and the commands for the engine).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::codec::CodecError;
use super::dtmf::{DtmfEvent, InvalidDigit, digit_to_event};
use super::engine::{CallerAudio, Command};
use super::jitter::DEFAULT_WINDOW;
use super::playout::{FlushReport, PlayoutQueue};
use super::ports::{PortError, PortLease, PortPool};
use super::reactor::{TaskWaker, Threads};
use super::recording::{Recorder, RecordingError};
use super::sdp::{DtmfFormat, NegotiatedMedia};
use super::shell::{EVENT_CAPACITY, Shell, Sockets, ToSession};
use super::stats::MediaStats;
use crate::resample::ResampleError;

/// Default duration of a digit we send.
pub const DEFAULT_DTMF_MS: u32 = 100;

/// Where the engines run: on threads of their own, a burst of packets never delays SIP
/// signalling or call set-up on the main runtime, nor the other way round. One thread for two
/// cores: an engine's work per wake-up is a few microseconds, and with a thread per core the
/// threads spent more time parking and waking each other than working (200 echo calls: 15–25%
/// more process CPU than with half as many).
static MEDIA_THREADS: Threads<Shell> = Threads::new("media", 2);

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
        let shell = Shell::start(
            self.config,
            media,
            Sockets {
                rtp: self.rtp,
                rtcp: self.rtcp,
                lease: self.lease,
            },
            ToSession {
                shared: shared.clone(),
                stats: stats.clone(),
                events: event_tx,
                ended: ended_tx,
            },
        )?;
        MEDIA_THREADS.spawn(shell);
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
        let mut shared = lock(&self.shared);
        shared.queue_digits(digits, duration_ms)?;
        let _ = shared.command(Command::Queued);
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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// State shared between the session handle and the engine: the outbound direction (audio and
/// digits to send) and the commands.
pub(super) struct Shared {
    pub queue: PlayoutQueue,
    pub dtmf_format: Option<DtmfFormat>,
    pub dtmf_queue: VecDeque<(char, u32)>,
    /// The engine's last tick sent no audio: the next queued audio must wake it.
    pub wake_on_queue: bool,
    /// Commands from the session handle, in order. They share this lock with the playout
    /// rather than having a channel of their own.
    pub commands: VecDeque<Command>,
    /// Wakes the engine when a command is queued; set once the engine is on its thread (it
    /// looks for commands queued before then when it arrives).
    pub engine: Option<TaskWaker>,
    /// The engine has stopped; commands are refused.
    pub closed: bool,
}

impl Shared {
    pub fn new(media: &NegotiatedMedia) -> Shared {
        Shared {
            queue: PlayoutQueue::new(media.codec.sample_rate()),
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

    /// Queues `digits` to send, each for `duration_ms`, after any still waiting.
    pub fn queue_digits(&mut self, digits: &str, duration_ms: u32) -> Result<(), MediaError> {
        if self.dtmf_format.is_none() {
            return Err(MediaError::NoTelephoneEvent);
        }
        for d in digits.chars() {
            digit_to_event(d).ok_or(InvalidDigit(d))?;
        }
        self.dtmf_queue
            .extend(digits.chars().map(|d| (d, duration_ms)));
        Ok(())
    }

    /// Queues audio; true when the engine must be woken for it. Only the first audio after the
    /// line went idle needs that: during a talkspurt the packet clock picks the audio up.
    pub fn queue_audio(&mut self, pcm: &[i16], sample_rate: u32) -> Result<bool, MediaError> {
        self.queue.push(pcm, sample_rate)?;
        Ok(std::mem::take(&mut self.wake_on_queue))
    }
}

#[cfg(test)]
mod tests;
