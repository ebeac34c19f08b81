//! A browser's call as a leg: the [`Peer`] runs on a task of its own that owns the UDP socket,
//! decodes the page's audio to the call's route, paces the agent's audio out in 20 ms frames
//! from the playout queue, and carries call events to the page and keys from it over the data
//! channel. The leg the call task holds shares the playout queue and the caller route with it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ice_tcp::TcpPath;
use super::peer::{Peer, PeerEvent, PeerOutput, is_fatal};
use crate::call::LegFormat;
use crate::call::leg::{
    CallerAudio, CallerRoute, Capabilities, Capability, DigitSource, Interrupted, Leg, LegAudio,
    LegError, LegEvent, LegFacts, Playout, Undelivered, finish_recording, keypad_digit,
};
use crate::media::codec::{AudioDecoder, AudioEncoder, new_decoder_at, new_encoder_at};
use crate::media::playout::{PacingClock, PlayoutQueue};
use crate::media::ports::PortLease;
use crate::media::recording::Recorder;
use crate::media::{Codec, MediaStats};
use crate::runtimes::DedicatedRuntime;

/// Web peers run on threads of their own, one a core, as RTP runs on the media threads: each
/// wakes 100 times a second, and on the main runtime they would queue behind the call tasks
/// (measured: 300 web calls there, 70 ms p99 from model audio to the first packet out).
static PEER_RUNTIME: DedicatedRuntime = DedicatedRuntime::new("web-peer", 0, 1);

/// One frame of audio each way.
const FRAME: Duration = Duration::from_millis(20);
/// The rate Opus is coded at here: the speech models' own (OpenAI's both ways, Gemini's voice),
/// so their audio needs no resampling; Opus codes it as super-wideband, 12 kHz of audio, all
/// that speech has. Decoding to it and encoding from it also costs less than at 48 kHz (measured
/// on speech: decode 19 against 27 µs a frame, encode 191 against 276).
const OPUS_PCM_RATE: u32 = 24_000;
/// A gap in the page's audio up to this long is concealed (Opus recovers from its FEC data);
/// a longer one is a pause, not a loss.
const MAX_CONCEALED_FRAMES: u64 = 5;
/// Call events held for a data channel that is not open yet.
const OUTBOX: usize = 256;

/// What the leg and its peer task share.
struct Shared {
    playout: Mutex<PlayoutQueue>,
    /// Agent audio was queued: a pause may be over.
    queued: tokio::sync::Notify,
    caller: Mutex<CallerRoute>,
    recording: Mutex<Option<Recorder>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(e: impl std::fmt::Display) -> LegError {
    LegError::Failed(e.to_string())
}

/// How long a web call may take to connect and to go without the page's audio.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub media: Duration,
}

/// An answered browser call.
pub struct WebLeg {
    facts: LegFacts,
    shared: Arc<Shared>,
    codec: Codec,
    /// The rate of the leg's PCM both ways (the codec's, or the one Opus is coded at).
    pcm_rate: u32,
    model_rate: u32,
    events: mpsc::UnboundedReceiver<LegEvent>,
    /// Closes the media; the task answers with its statistics.
    close: Option<oneshot::Sender<oneshot::Sender<MediaStats>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebLeg {
    /// Run `peer` on `socket` (and on its TCP connections, with ICE over TCP); `texts` are
    /// call events for the page.
    pub fn start(
        peer: Peer,
        socket: std::net::UdpSocket,
        lease: PortLease,
        tcp: Option<TcpPath>,
        facts: LegFacts,
        texts: mpsc::UnboundedReceiver<String>,
        timeouts: Timeouts,
    ) -> Result<WebLeg, LegError> {
        let runtime = PEER_RUNTIME.handle();
        // The socket belongs to the reactor of the runtime that polls it.
        let socket = {
            let _in_runtime = runtime.enter();
            socket
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(socket))
                .map_err(failed)?
        };
        let codec = peer.codec();
        let pcm_rate = codec.pcm_rate_near(OPUS_PCM_RATE);
        let shared = Arc::new(Shared {
            playout: Mutex::new(PlayoutQueue::new(pcm_rate)),
            queued: tokio::sync::Notify::new(),
            caller: Mutex::new(CallerRoute::Unset),
            recording: Mutex::new(None),
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let (close_tx, close) = oneshot::channel();
        let task = PeerTask {
            peer,
            socket,
            _lease: lease,
            tcp,
            shared: shared.clone(),
            events: events_tx,
            texts,
            outbox: VecDeque::new(),
            encoder: new_encoder_at(codec, pcm_rate).map_err(failed)?,
            decoder: new_decoder_at(codec, pcm_rate).map_err(failed)?,
            pcm_rate,
            frame_samples: (pcm_rate / 50) as usize,
            rtp_step: u64::from(codec.clock_rate() / 50),
            clock: None,
            rtp_out: 0,
            talking: false,
            last_in: None,
            started: Instant::now(),
            last_audio: None,
            timeouts,
            stats: MediaStats::default(),
            pcm_in: Vec::new(),
            frame_out: Vec::new(),
        };
        Ok(WebLeg {
            facts,
            shared,
            codec,
            pcm_rate,
            model_rate: pcm_rate,
            events,
            close: Some(close_tx),
            task: runtime.spawn(task.run(close)),
        })
    }
}

impl WebLeg {
    /// The model takes the page's audio at `rate`.
    pub fn for_model(&mut self, rate: u32) {
        self.model_rate = rate;
    }
}

impl Playout for WebLeg {
    fn queued_ms(&self) -> u64 {
        lock(&self.shared.playout).queued_ms()
    }
    fn is_empty(&self) -> bool {
        lock(&self.shared.playout).is_empty()
    }
    fn mark(&mut self) {
        lock(&self.shared.playout).mark();
    }
    fn interrupt(&mut self) -> Interrupted {
        let report = lock(&self.shared.playout).flush();
        Interrupted {
            played_ms: report.played_ms,
            discarded_ms: report.discarded_ms,
        }
    }
}

impl LegAudio for WebLeg {
    fn route_caller(&mut self, to: CallerAudio) -> Result<(), LegError> {
        *lock(&self.shared.caller) = CallerRoute::new(to, self.pcm_rate, self.model_rate)?;
        Ok(())
    }

    fn play(&mut self, pcm: &[i16], rate: u32) -> Result<(), LegError> {
        lock(&self.shared.playout).push(pcm, rate).map_err(failed)?;
        self.shared.queued.notify_one();
        Ok(())
    }

    fn record(&mut self, path: &Path) -> Result<(), LegError> {
        let recorder = Recorder::start(path, self.pcm_rate).map_err(failed)?;
        *lock(&self.shared.recording) = Some(recorder);
        Ok(())
    }
}

impl Leg for WebLeg {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }

    /// A web call transfers only to another agent: the call core hands it over, the leg has
    /// nothing to do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Audio, Capability::Handoff])
    }

    async fn next_event(&mut self) -> LegEvent {
        match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Nothing yet: the call's last events still reach the page, and [`Leg::close`], which
    /// follows at once, closes the connection after them.
    async fn hangup(&mut self) {}

    async fn transfer(&mut self, _target: &str) -> Result<(), LegError> {
        Err(LegError::NotAllowed(Capability::Transfer))
    }

    fn send_digits(&mut self, _digits: &str) -> Result<(), LegError> {
        Err(LegError::NotAllowed(Capability::SendDigits))
    }

    fn playout(&mut self) -> &mut dyn Playout {
        self
    }

    fn audio(&mut self) -> Option<&mut dyn LegAudio> {
        Some(self)
    }

    /// The codec, or PCM at the rate Opus is coded at.
    fn format(&self) -> Option<LegFormat> {
        Some(if self.pcm_rate == self.codec.sample_rate() {
            self.codec.into()
        } else {
            LegFormat::Pcm(self.pcm_rate)
        })
    }

    /// Stops the media and gives its statistics at once; the connection stays up a moment
    /// longer for the page to get the call's `ended` event (recorded after this returns).
    async fn close(mut self) -> Option<MediaStats> {
        let (stats_tx, stats_rx) = oneshot::channel();
        let stats = match self.close.take().map(|close| close.send(stats_tx)) {
            Some(Ok(())) => tokio::time::timeout(Duration::from_secs(2), stats_rx)
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        if stats.is_none() {
            self.task.abort();
        }
        let recording = lock(&self.shared.recording).take();
        if let Some(r) = recording {
            finish_recording(r).await;
        }
        stats
    }
}

/// A message from the page on the data channel.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum PageMessage {
    Key { key: String },
    Hangup,
}

/// How long a closed leg keeps the page's connection for the call's last events.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// Why the task stopped.
enum End {
    /// The call closed the leg; its statistics go here.
    Closed(oneshot::Sender<MediaStats>),
    /// Tell the call, then wait for it to close the leg.
    Event(LegEvent),
}

/// The task that owns the socket and the peer.
struct PeerTask {
    peer: Peer,
    socket: UdpSocket,
    /// The port goes back to the pool when the task ends.
    _lease: PortLease,
    tcp: Option<TcpPath>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<LegEvent>,
    texts: mpsc::UnboundedReceiver<String>,
    /// Call events waiting for the data channel to open.
    outbox: VecDeque<String>,
    encoder: Box<dyn AudioEncoder>,
    decoder: Box<dyn AudioDecoder>,
    pcm_rate: u32,
    /// PCM samples in a frame.
    frame_samples: usize,
    /// RTP time in a frame (the codec's clock, which for Opus is not its PCM's rate).
    rtp_step: u64,
    /// The outgoing frame clock, from the moment the connection is up.
    clock: Option<PacingClock>,
    /// RTP time of the next outgoing frame.
    rtp_out: u64,
    /// Whether the last frame carried agent audio.
    talking: bool,
    /// RTP time of the last frame from the page.
    last_in: Option<u64>,
    started: Instant,
    last_audio: Option<Instant>,
    timeouts: Timeouts,
    stats: MediaStats,
    /// The page's last frame, decoded; the agent's next frame (buffers kept for the call).
    pcm_in: Vec<i16>,
    frame_out: Vec<i16>,
}

impl PeerTask {
    async fn run(mut self, mut close: oneshot::Receiver<oneshot::Sender<MediaStats>>) {
        let mut buf = vec![0u8; 2048];
        let end = loop {
            let wake = match self.drain() {
                Ok(wake) => wake,
                Err(end) => break end,
            };
            let mut deadline = wake.min(self.watchdog());
            if let Some(clock) = &self.clock {
                deadline = deadline.min(Instant::from_std(clock.deadline()));
            }
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        if let Some(end) = self.receive(Protocol::Udp, from, &buf[..n]) {
                            break end;
                        }
                    }
                    Err(e) => break End::Event(LegEvent::Lost(format!("web call socket failed: {e}"))),
                },
                Some((from, frame)) = next_frame(&mut self.tcp) => {
                    if let Some(end) = self.receive(Protocol::Tcp, from, &frame) {
                        break end;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if let Some(end) = self.on_time() {
                        break end;
                    }
                }
                Some(text) = self.texts.recv() => self.for_page(text),
                () = self.shared.queued.notified() => self.start_talkspurt(Instant::now()),
                closed = &mut close => match closed {
                    Ok(stats_to) => break End::Closed(stats_to),
                    // The leg is gone without closing (its call task ended).
                    Err(_) => break End::Event(LegEvent::Hangup),
                },
            }
        };
        let stats_to = match end {
            End::Closed(stats_to) => Some(stats_to),
            End::Event(event) => {
                let _ = self.events.send(event);
                // The call closes the leg next.
                close.await.ok()
            }
        };
        if let Some(stats_to) = stats_to {
            let _ = stats_to.send(self.stats.clone());
            self.linger(&mut buf).await;
        }
        self.finish().await;
    }

    /// After the media: the call's last events (its `ended` event, with the reason) to the page
    /// while it is there, until the call's final state or [`LINGER`].
    async fn linger(&mut self, buf: &mut [u8]) {
        let until = Instant::now() + LINGER;
        while self.peer.is_alive() {
            let Ok(wake) = self.drain() else {
                return;
            };
            tokio::select! {
                text = self.texts.recv() => {
                    let Some(text) = text else {
                        return;
                    };
                    let last = is_final_state(&text);
                    self.for_page(text);
                    if last {
                        return;
                    }
                }
                received = self.socket.recv_from(buf) => match received {
                    Ok((n, from)) => {
                        let _ = self.receive(Protocol::Udp, from, &buf[..n]);
                    }
                    Err(_) => return,
                },
                Some((from, frame)) = next_frame(&mut self.tcp) => {
                    let _ = self.receive(Protocol::Tcp, from, &frame);
                }
                () = tokio::time::sleep_until(wake.min(until)) => {
                    if Instant::now() >= until {
                        return;
                    }
                    let _ = self.peer.timeout(std::time::Instant::now());
                }
            }
        }
    }

    /// A datagram from the browser; the end of the call when the peer failed for good.
    fn receive(&mut self, proto: Protocol, from: SocketAddr, datagram: &[u8]) -> Option<End> {
        let received = self
            .peer
            .receive(std::time::Instant::now(), proto, from, datagram);
        received.err().and_then(fatal)
    }

    /// When the task must look at the time for itself: the connection not up in time, or the
    /// page's audio gone quiet.
    fn watchdog(&self) -> Instant {
        match self.last_audio {
            Some(at) => at + self.timeouts.media,
            None => self.started + self.timeouts.connect,
        }
    }

    /// Timers: the next outgoing frame, str0m's own, the watchdog.
    fn on_time(&mut self) -> Option<End> {
        let now = Instant::now();
        if self
            .clock
            .as_ref()
            .is_some_and(|c| Instant::from_std(c.deadline()) <= now)
        {
            self.send_frame(now);
        }
        if let Err(e) = self.peer.timeout(now.into_std()) {
            return fatal(e);
        }
        if now >= self.watchdog() {
            return Some(End::Event(match self.last_audio {
                Some(_) => LegEvent::MediaTimeout,
                None => LegEvent::Lost(format!(
                    "the browser did not connect within {} s (ICE or DTLS)",
                    self.timeouts.connect.as_secs()
                )),
            }));
        }
        None
    }

    /// Everything the peer has to do now; the instant it wants to be woken at, or the end.
    fn drain(&mut self) -> Result<Instant, End> {
        loop {
            match self.peer.poll() {
                Ok(PeerOutput::Wake(at)) => return Ok(Instant::from_std(at)),
                Ok(PeerOutput::Transmit {
                    proto,
                    to,
                    datagram,
                }) => {
                    // A full send buffer or queue drops the datagram, as the network would.
                    let len = datagram.len() as u64;
                    let sent = match (proto, &self.tcp) {
                        (Protocol::Udp, _) => self.socket.try_send_to(&datagram, to).is_ok(),
                        (_, Some(tcp)) => tcp.send(to, datagram),
                        (_, None) => false,
                    };
                    if sent {
                        self.stats.packets_sent += 1;
                        self.stats.bytes_sent += len;
                    }
                }
                Ok(PeerOutput::Event(event)) => self.on_event(event)?,
                Err(e) => {
                    if let Some(end) = fatal(e) {
                        return Err(end);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, event: PeerEvent) -> Result<(), End> {
        match event {
            PeerEvent::Connected => {
                tracing::info!("web call connected");
                let now = std::time::Instant::now();
                self.clock = Some(PacingClock::new(now, FRAME));
                self.last_audio.get_or_insert(Instant::from_std(now));
            }
            PeerEvent::Audio { payload, rtp_time } => self.page_audio(&payload, rtp_time),
            PeerEvent::ChannelOpen => {
                while let Some(text) = self.outbox.pop_front() {
                    if !self.peer.send_text(&text) {
                        break;
                    }
                }
            }
            PeerEvent::Text(text) => match serde_json::from_str::<PageMessage>(&text) {
                Ok(PageMessage::Key { key }) => match keypad_digit(&key) {
                    Some(digit) => {
                        let _ = self.events.send(LegEvent::Digit {
                            digit,
                            source: DigitSource::Leg,
                        });
                    }
                    None => tracing::debug!(%key, "ignoring a key that is not on a keypad"),
                },
                Ok(PageMessage::Hangup) => return Err(End::Event(LegEvent::Hangup)),
                Err(e) => tracing::debug!(error = %e, "ignoring a page message"),
            },
            PeerEvent::Gone(why) => {
                tracing::info!(why, "the browser left the call");
                return Err(End::Event(LegEvent::Hangup));
            }
        }
        Ok(())
    }

    /// One frame of the page's audio: decoded, a short loss before it concealed, then to the
    /// call's route and the recording.
    fn page_audio(&mut self, payload: &[u8], rtp_time: u64) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += payload.len() as u64;
        self.last_audio = Some(Instant::now());
        let frame = self.rtp_step;
        let gap = self.last_in.map_or(0, |last| {
            rtp_time.saturating_sub(last).saturating_sub(frame)
        });
        if rtp_time <= self.last_in.unwrap_or(0) && self.last_in.is_some() {
            // A late or repeated frame: its moment has passed.
            self.stats.packets_discarded += 1;
            return;
        }
        self.last_in = Some(rtp_time);
        // One buffer each way for the whole call: this runs 50 times a second.
        let mut pcm = std::mem::take(&mut self.pcm_in);
        pcm.clear();
        if gap >= frame && gap <= frame * MAX_CONCEALED_FRAMES {
            let lost = (gap / frame) as usize;
            if self
                .decoder
                .conceal(Some(payload), lost * self.frame_samples, &mut pcm)
                .is_ok()
            {
                self.stats.concealed_ms += lost as u64 * FRAME.as_millis() as u64;
            }
        }
        if let Err(e) = self.decoder.decode(payload, &mut pcm) {
            self.stats.malformed_packets += 1;
            tracing::debug!(error = %e, "undecodable audio from the page");
            self.pcm_in = pcm;
            return;
        }
        if let Some(r) = lock(&self.shared.recording).as_mut() {
            r.caller(&pcm);
        }
        let undelivered = lock(&self.shared.caller).deliver(&pcm);
        match undelivered {
            None => {}
            Some(Undelivered::Unrouted) => {
                let _ = self.events.send(LegEvent::CallerAudio(pcm.clone()));
            }
            Some(Undelivered::LoopBack) => {
                let _ = lock(&self.shared.playout).push(&pcm, self.pcm_rate);
            }
        }
        self.pcm_in = pcm;
    }

    /// Agent audio after a pause goes out now, not at the next slot of the frame grid: the
    /// grid restarts here, and this frame's RTP time is taken back by the time gained.
    fn start_talkspurt(&mut self, now: Instant) {
        if self.talking || !lock(&self.shared.playout).holds(self.frame_samples) {
            return;
        }
        let Some(clock) = self.clock.as_mut() else {
            return;
        };
        let gained = clock.deadline().saturating_duration_since(now.into_std());
        if gained.is_zero() {
            return;
        }
        let rate = u128::from(self.peer.codec().clock_rate());
        self.rtp_out = self
            .rtp_out
            .saturating_sub((gained.as_micros() * rate / 1_000_000) as u64);
        clock.restart(now.into_std(), FRAME);
        self.send_frame(now);
    }

    /// The next 20 ms to the page: agent audio when some is queued, nothing otherwise (the
    /// RTP clock runs on, so the browser hears the pause as one).
    fn send_frame(&mut self, now: Instant) {
        let Some(clock) = self.clock.as_mut() else {
            return;
        };
        let skipped = clock.advance(now.into_std());
        self.rtp_out += skipped * self.rtp_step;
        let mut frame = std::mem::take(&mut self.frame_out);
        let popped = lock(&self.shared.playout).pop(self.frame_samples, &mut frame);
        if popped {
            if !self.talking {
                self.talking = true;
                let _ = self.events.send(LegEvent::PlayoutStarted { at: now });
            }
            let mut payload = Vec::with_capacity(160);
            match self.encoder.encode(&frame, &mut payload) {
                Ok(()) => {
                    if let Err(e) = self.peer.send_audio(now.into_std(), self.rtp_out, payload) {
                        tracing::debug!(error = %e, "agent audio not sent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "encoding agent audio failed"),
            }
        } else {
            if self.talking {
                self.talking = false;
                let _ = self.events.send(LegEvent::PlayoutDrained);
            }
            frame.clear();
            frame.resize(self.frame_samples, 0);
        }
        if let Some(r) = lock(&self.shared.recording).as_mut() {
            r.agent(&frame);
        }
        self.frame_out = frame;
        self.rtp_out += self.rtp_step;
    }

    /// A call event for the page, held until the data channel is open.
    fn for_page(&mut self, text: String) {
        if !self.outbox.is_empty() || !self.peer.send_text(&text) {
            if self.outbox.len() == OUTBOX {
                self.outbox.pop_front();
            }
            self.outbox.push_back(text);
        }
    }

    /// Send what the call said last, then close the connection in order (the page sees the
    /// data channel close) and give the close a moment to leave.
    async fn finish(&mut self) {
        while let Ok(text) = self.texts.try_recv() {
            self.for_page(text);
        }
        // What was just written leaves before the close.
        let _ = self.drain();
        self.peer.close();
        let until = Instant::now() + Duration::from_millis(200);
        while self.peer.is_alive() && Instant::now() < until {
            match self.drain() {
                Ok(wake) => {
                    tokio::time::sleep_until(wake.min(until)).await;
                    let _ = self.peer.timeout(std::time::Instant::now());
                }
                Err(_) => break,
            }
        }
    }
}

/// The next frame from the browser's TCP connections, if it may use any.
async fn next_frame(tcp: &mut Option<TcpPath>) -> Option<(SocketAddr, Vec<u8>)> {
    match tcp {
        Some(tcp) => tcp.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a call event for the page is the call's last (`state: ended`).
fn is_final_state(text: &str) -> bool {
    #[derive(Deserialize)]
    struct State<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        state: Option<&'a str>,
    }
    serde_json::from_str::<State>(text).is_ok_and(|e| e.kind == "state" && e.state == Some("ended"))
}

/// The end of the call for a fatal error of the peer; other errors are logged and dropped.
fn fatal(e: str0m::RtcError) -> Option<End> {
    if is_fatal(&e) {
        return Some(End::Event(LegEvent::Lost(format!("DTLS failed: {e}"))));
    }
    tracing::debug!(error = %e, "web call input dropped");
    None
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::ice_tcp::IceTcp;
    use super::super::test_browser::{Browser, cert};
    use super::*;
    use crate::media::PortPool;
    use crate::media::codec::{new_decoder, new_encoder};
    use crate::media::ports::test_port_range;
    use str0m::net::Receive;

    /// The page's end of a web call on a real socket: what it heard, and the leg's events.
    struct Page {
        browser: Browser,
        link: Link,
        host: std::net::SocketAddr,
        opus: Box<dyn AudioEncoder>,
        sent: u64,
    }

    /// How the page reaches the host: UDP, or one TCP connection (framed as RFC 4571).
    enum Link {
        Udp(UdpSocket),
        Tcp {
            frames: mpsc::Receiver<Vec<u8>>,
            write: tokio::net::tcp::OwnedWriteHalf,
        },
    }

    impl Link {
        async fn tcp(to: SocketAddr) -> Link {
            let stream = tokio::net::TcpStream::connect(to).await.unwrap();
            let (mut read, write) = stream.into_split();
            let (tx, frames) = mpsc::channel(64);
            // Read on a task of its own: a frame half read is not lost when `select!` drops
            // the read.
            tokio::spawn(async move {
                while let Ok(frame) = super::super::ice_tcp::read_frame(&mut read).await {
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
            });
            Link::Tcp { frames, write }
        }

        async fn send(&mut self, datagram: &[u8], to: SocketAddr) {
            match self {
                Link::Udp(socket) => {
                    socket.send_to(datagram, to).await.unwrap();
                }
                Link::Tcp { write, .. } => {
                    // The host may have closed the connection at the end of the call.
                    let _ = super::super::ice_tcp::write_frame(write, datagram).await;
                }
            }
        }

        async fn recv(&mut self, buf: &mut [u8]) -> Vec<u8> {
            match self {
                Link::Udp(socket) => {
                    let (n, _) = socket.recv_from(buf).await.unwrap();
                    buf[..n].to_vec()
                }
                Link::Tcp { frames, .. } => match frames.recv().await {
                    Some(frame) => frame,
                    None => std::future::pending().await,
                },
            }
        }
    }

    impl Page {
        /// Run the page until `done` (polled every 20 ms, when it also sends a frame of speech)
        /// or 10 s, taking the leg's events while there is a leg.
        async fn run_until(
            &mut self,
            mut leg: Option<&mut WebLeg>,
            seen: &mut Vec<LegEvent>,
            done: impl Fn(&Browser, &[LegEvent]) -> bool,
        ) {
            let end = Instant::now() + Duration::from_secs(10);
            let mut next_frame = Instant::now();
            let mut buf = vec![0u8; 2048];
            while !done(&self.browser, seen) {
                assert!(Instant::now() < end, "not done in 10 s: {seen:?}");
                let mut out = Vec::new();
                let wake = Instant::from_std(self.browser.poll(&mut out));
                for (_, datagram) in out {
                    self.link.send(&datagram, self.host).await;
                }
                tokio::select! {
                    datagram = self.link.recv(&mut buf) => {
                        let receive = Receive {
                            proto: self.browser.proto,
                            source: self.host,
                            destination: self.browser.addr,
                            contents: datagram.as_slice().try_into().unwrap(),
                        };
                        self.browser.rtc.handle_input(str0m::Input::Receive(std::time::Instant::now(), receive)).unwrap();
                    }
                    event = async {
                        match leg.as_deref_mut() {
                            Some(leg) => leg.next_event().await,
                            None => std::future::pending().await,
                        }
                    } => seen.push(event),
                    () = tokio::time::sleep_until(wake.min(next_frame)) => {
                        let now = Instant::now();
                        if now >= next_frame && self.browser.connected && self.browser.rtc.is_alive() {
                            let speech: Vec<i16> = (0..960).map(|i| ((i as f32 * 0.06).sin() * 8000.0) as i16).collect();
                            let mut payload = Vec::new();
                            self.opus.encode(&speech, &mut payload).unwrap();
                            self.browser.send_opus(now.into_std(), self.sent * 960, payload);
                            self.sent += 1;
                        }
                        if now >= next_frame {
                            next_frame = now + FRAME;
                        }
                        self.browser.rtc.handle_input(str0m::Input::Timeout(now.into_std())).unwrap();
                    }
                }
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_web_leg_plays_hears_takes_keys_feeds_the_page_and_ends_on_hangup() {
        a_whole_call(Protocol::Udp).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_page_that_cannot_use_udp_has_the_same_call_over_ice_tcp() {
        a_whole_call(Protocol::Tcp).await;
    }

    /// A web call from connecting to the page's last event, the page reaching the host `over`
    /// UDP or TCP.
    async fn a_whole_call(over: Protocol) {
        let (first, last) = test_port_range(2);
        let pool = PortPool::singles(first, last).unwrap();
        let localhost = "127.0.0.1".parse().unwrap();
        let (host_socket, lease) = pool.allocate_single(localhost).unwrap();
        let ice_tcp = IceTcp::start("127.0.0.1:0".parse().unwrap(), localhost).unwrap();
        let (link, host_addr) = match over {
            Protocol::Udp => {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                (Link::Udp(socket), host_socket.local_addr().unwrap())
            }
            _ => (Link::tcp(ice_tcp.advertised()).await, ice_tcp.advertised()),
        };
        let page_addr = match &link {
            Link::Udp(socket) => socket.local_addr().unwrap(),
            Link::Tcp { write, .. } => write.local_addr().unwrap(),
        };
        let now = std::time::Instant::now();
        let (mut browser, offer, pending) = Browser::offer(page_addr, over, true, false, now);
        let (mut peer, answer) = Peer::answer(
            &offer,
            host_socket.local_addr().unwrap(),
            Some(ice_tcp.advertised()),
            &cert(),
            now,
        )
        .unwrap();
        let tcp = ice_tcp.expect(peer.ice_ufrag());
        browser.accept(pending, &answer);
        let (texts, texts_rx) = mpsc::unbounded_channel();
        let facts = LegFacts {
            transport: "webrtc".into(),
            codec: Some("opus".into()),
            remote: "web".into(),
        };
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            media: Duration::from_secs(5),
        };
        let mut leg = WebLeg::start(
            peer,
            host_socket,
            lease,
            Some(tcp),
            facts,
            texts_rx,
            timeouts,
        )
        .unwrap();
        // Opus coded at the speech models' rate: their audio passes without resampling.
        assert_eq!(leg.format(), Some(LegFormat::Pcm(24_000)));
        leg.for_model(24_000);
        let heard = Arc::new(AtomicUsize::new(0));
        let counter = heard.clone();
        leg.route_caller(CallerAudio::Sink(Box::new(move |pcm: &[i16]| {
            counter.fetch_add(pcm.len(), Ordering::Relaxed);
        })))
        .unwrap();
        // 300 ms of the agent at the model's rate, and a call event for the page.
        let agent: Vec<i16> = (0..7200)
            .map(|i| ((i as f32 * 0.1).sin() * 6000.0) as i16)
            .collect();
        leg.play(&agent, 24_000).unwrap();
        texts
            .send(r#"{"type":"transcript","role":"agent","text":"Hello"}"#.into())
            .unwrap();
        let mut page = Page {
            browser,
            link,
            host: host_addr,
            opus: new_encoder(Codec::Opus).unwrap(),
            sent: 0,
        };
        let mut seen = Vec::new();
        page.run_until(Some(&mut leg), &mut seen, |b, seen| {
            b.audio.len() >= 15 && !b.texts.is_empty() && seen.contains(&LegEvent::PlayoutDrained)
        })
        .await;
        assert!(
            matches!(seen[0], LegEvent::PlayoutStarted { .. }),
            "{seen:?}"
        );
        assert_eq!(
            page.browser.texts,
            [r#"{"type":"transcript","role":"agent","text":"Hello"}"#]
        );
        // 20 ms frames on Opus's 48 kHz clock (a late wake-up skips a slot), each 20 ms of
        // audio to a 48 kHz decoder.
        let mut decoder = new_decoder(Codec::Opus).unwrap();
        for pair in page.browser.audio.windows(2) {
            let step = pair[1].0 - pair[0].0;
            assert!(step > 0 && step % 960 == 0, "RTP time went on by {step}");
        }
        for (_, payload) in &page.browser.audio {
            let mut pcm = Vec::new();
            decoder.decode(payload, &mut pcm).unwrap();
            assert_eq!(pcm.len(), 960);
        }
        // The page's speech reached the model at 24 kHz.
        assert!(heard.load(Ordering::Relaxed) > 0);
        // A key, then the page hangs up.
        page.browser.send_text(r#"{"type":"key","key":"7"}"#);
        page.browser.send_text(r#"{"type":"key","key":"x"}"#);
        page.browser.send_text(r#"{"type":"hangup"}"#);
        page.run_until(Some(&mut leg), &mut seen, |_, seen| {
            seen.contains(&LegEvent::Hangup)
        })
        .await;
        let digits: Vec<_> = seen
            .iter()
            .filter(|e| matches!(e, LegEvent::Digit { .. }))
            .collect();
        assert_eq!(
            digits,
            [&LegEvent::Digit {
                digit: '7',
                source: DigitSource::Leg
            }]
        );
        let stats = leg.close().await.unwrap();
        assert!(stats.packets_received >= 10, "{stats:?}");
        assert!(stats.packets_sent >= 15, "{stats:?}");
        assert!(heard.load(Ordering::Relaxed) >= 24_000 / 50 * 5);
        // The call's last events, recorded after the leg closed, still reach the page; then the
        // connection closes and the port goes back to the pool.
        let ended = r#"{"type":"ended","reason":"caller-hangup"}"#;
        texts.send(ended.into()).unwrap();
        texts
            .send(r#"{"type":"state","state":"ended"}"#.into())
            .unwrap();
        page.run_until(None, &mut seen, |b, _| b.texts.len() == 3)
            .await;
        assert_eq!(page.browser.texts[1], ended);
        let deadline = Instant::now() + Duration::from_secs(2);
        while pool.leased() > 0 {
            assert!(Instant::now() < deadline, "the port never went back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
