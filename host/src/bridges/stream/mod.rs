//! A carrier's media stream as a call leg: the carrier (Twilio, Telnyx, Vonage) holds the phone
//! call and streams its audio to us over a WebSocket; we stream the agent's audio back. What
//! the carriers share lives here — the socket task, the playout by acknowledged marks, pacing,
//! resampling, timeouts — and what differs stays with each carrier: the frames on the wire
//! ([`Framing`]) and the REST calls that hang up or transfer ([`Carrier`]).

pub mod marks;
pub mod setup;
pub mod wire;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::websocket::ServerSocket;
use crate::call::leg::{
    CallerAudio, CallerRoute, Capabilities, Capability, DigitSource, Interrupted, Leg, LegAudio,
    LegError, LegEvent, LegFacts, Playout, Undelivered, finish_recording,
};
use crate::media::MediaStats;
use crate::media::recording::Recorder;
use crate::resample::StreamResampler;
use marks::{Heard, MarkQueue};

/// Audio sent ahead of what the carrier has played: enough to ride out network jitter, little
/// enough that a barge-in drops little (the carrier holds at most this).
const LEAD: Duration = Duration::from_millis(400);
/// One media message and its mark: the precision of what the caller heard.
const CHUNK: Duration = Duration::from_millis(40);
/// Frames that are not the carrier's protocol before the stream is closed as broken.
const MAX_GARBAGE: u32 = 20;
/// Caller audio may run ahead of the clock by this much (a carrier catching up after a
/// network stall) before the stream counts as a flood and is closed.
const FLOOD_LEAD: Duration = Duration::from_secs(5);

/// What a carrier's frame means to the call.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Caller audio, decoded to PCM at the stream's rate.
    Audio(Vec<i16>),
    Digit(char),
    /// The carrier played our audio up to this mark.
    Mark(String),
    /// The carrier ends the stream (the caller hung up, or a transfer took the call).
    Stop,
    /// A frame to ignore (keep-alives, events of no use to the call).
    Other,
}

/// A carrier's wire format on the media socket.
pub trait Framing: Send + 'static {
    /// The stream's audio rate.
    fn rate(&self) -> u32;
    /// Bytes of encoded audio per ms.
    fn bytes_per_ms(&self) -> usize;
    /// Encode PCM at [`Framing::rate`] for the wire.
    fn encode(&self, pcm: &[i16]) -> Vec<u8>;
    /// Decode what [`Framing::encode`] made.
    fn decode(&self, audio: &[u8]) -> Vec<i16>;
    /// Read a frame: the events it makes due, in order (none while it waits for a frame the
    /// carrier sent before it); an error names what was wrong with it.
    fn read(&mut self, frame: Message) -> Result<Vec<StreamEvent>, String>;
    fn media(&self, audio: &[u8]) -> Message;
    fn mark(&self, name: &str) -> Message;
    fn clear(&self) -> Message;
    /// The size of every audio message, for a carrier that plays fixed frames (Vonage: 20 ms) or
    /// refuses less than a frame (Telnyx: 20 ms); `None` when a message may hold any amount
    /// (Twilio).
    fn frame_bytes(&self) -> Option<usize> {
        None
    }
    /// Whether the carrier closing the socket is the end of the call (Vonage has no `stop`
    /// message); otherwise a close without a stop is a lost stream.
    fn close_ends_call(&self) -> bool {
        false
    }
}

/// How a carrier took a transfer it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The phone call is the target's now and the carrier tells nothing more (Twilio's
    /// `<Dial>`, Vonage's NCCO): the stream ends next.
    Taken,
    /// The carrier dials the target and tells later, by webhook, whether it answered (Telnyx):
    /// the outcome arrives as a [`LegEvent::TransferOutcome`] on the sender the transfer was
    /// given, and on a failure the call goes on over the stream.
    Dialling,
}

/// A carrier's control of the call, outside the stream.
pub trait Carrier: Send + Sync + 'static {
    /// End the phone call.
    fn hangup(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Hand the phone call to `target`. A carrier that reports the outcome later sends it on
    /// `outcome`.
    fn transfer(
        &self,
        target: &str,
        outcome: mpsc::UnboundedSender<LegEvent>,
    ) -> impl Future<Output = Result<Handover, String>> + Send;
}

/// Counts of one stream, for the call's media statistics.
#[derive(Default)]
struct Counts {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    malformed: AtomicU64,
}

/// What the leg and its socket task share.
struct Shared {
    queue: Mutex<MarkQueue>,
    caller: Mutex<CallerRoute>,
    /// Something to send: audio, a clear, or the close.
    wake: Notify,
    counts: Counts,
    recording: Mutex<Option<Recording>>,
}

/// A call recording on a stream. The carrier plays our audio on its own clock, so the agent
/// side is written as it is heard: what the acknowledged marks say has played, 20 ms of it
/// beside each 20 ms of the caller (silence when nothing played).
struct Recording {
    recorder: Recorder,
    heard: VecDeque<i16>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An answered call on a carrier's media stream.
pub struct StreamLeg<C: Carrier, F: Framing> {
    facts: LegFacts,
    carrier: Arc<C>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<LegEvent>,
    /// The leg's own events (a transfer's outcome), in order behind the socket's.
    own_events: mpsc::UnboundedSender<LegEvent>,
    close: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Agent audio at the model's rate → the stream's rate.
    resampler: Option<StreamResampler>,
    rate: u32,
    caller_rate: u32,
    /// The task's framing, to encode agent audio here.
    framing: F,
    /// The phone call went elsewhere: hanging up must not end it.
    transferred: bool,
}

impl<C: Carrier, F: Framing + Clone> StreamLeg<C, F> {
    /// Run the stream of an answered call: caller audio goes to the model at `caller_rate`; a
    /// stream that sends no audio for `media_timeout` ends the call. (`F: Clone`: the leg
    /// encodes agent audio with its own copy while the task reads frames.)
    pub fn start(
        socket: ServerSocket,
        framing: F,
        carrier: C,
        facts: LegFacts,
        caller_rate: u32,
        media_timeout: Duration,
    ) -> StreamLeg<C, F> {
        let mut queue = MarkQueue::new(framing.bytes_per_ms(), CHUNK, LEAD);
        if let Some(frame) = framing.frame_bytes() {
            queue = queue.framed(frame, framing.encode(&[0])[0]);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            caller: Mutex::new(CallerRoute::Unset),
            wake: Notify::new(),
            counts: Counts::default(),
            recording: Mutex::new(None),
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let rate = framing.rate();
        let own_events = events_tx.clone();
        let task = tokio::spawn(
            SocketTask {
                socket,
                framing: framing.clone(),
                shared: shared.clone(),
                events: events_tx,
                media_timeout,
                garbage: 0,
                sent: VecDeque::new(),
                started: Instant::now(),
                received: 0,
            }
            .run(close_rx),
        );
        StreamLeg {
            facts,
            carrier: Arc::new(carrier),
            shared,
            events,
            own_events,
            close: Some(close_tx),
            task,
            resampler: None,
            rate,
            caller_rate,
            framing,
            transferred: false,
        }
    }
}

impl<C: Carrier, F: Framing + Clone> Playout for StreamLeg<C, F> {
    fn queued_ms(&self) -> u64 {
        lock(&self.shared.queue).queued_ms()
    }
    fn is_empty(&self) -> bool {
        self.queued_ms() == 0
    }
    fn mark(&mut self) {
        lock(&self.shared.queue).mark();
    }
    fn interrupt(&mut self) -> Interrupted {
        let cut = lock(&self.shared.queue).interrupt();
        self.shared.wake.notify_one();
        cut
    }
}

fn failed(e: impl std::fmt::Display) -> LegError {
    LegError::Failed(e.to_string())
}

impl<C: Carrier, F: Framing + Clone> LegAudio for StreamLeg<C, F> {
    fn route_caller(&mut self, to: CallerAudio) -> Result<(), LegError> {
        *lock(&self.shared.caller) = CallerRoute::new(to, self.rate, self.caller_rate)?;
        Ok(())
    }

    fn play(&mut self, pcm: &[i16], rate: u32) -> Result<(), LegError> {
        let audio = if rate == self.rate {
            self.framing.encode(pcm)
        } else {
            let resampler = match &mut self.resampler {
                Some(r) if r.input_rate() == rate => r,
                slot => slot.insert(StreamResampler::new(rate, self.rate).map_err(failed)?),
            };
            resampler.push(pcm).map_err(failed)?;
            let mut frame = Vec::new();
            let mut audio = Vec::new();
            while resampler.pop_frame(&mut frame) {
                audio.extend(self.framing.encode(&frame));
            }
            audio
        };
        lock(&self.shared.queue).push(&audio);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn record(&mut self, path: &Path) -> Result<(), LegError> {
        let recorder = Recorder::start(path, self.rate).map_err(failed)?;
        *lock(&self.shared.recording) = Some(Recording {
            recorder,
            heard: VecDeque::new(),
        });
        Ok(())
    }
}

impl<C: Carrier, F: Framing + Clone> Leg for StreamLeg<C, F> {
    fn facts(&self) -> &LegFacts {
        &self.facts
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of(&[Capability::Audio, Capability::Transfer, Capability::Handoff])
    }

    async fn next_event(&mut self) -> LegEvent {
        let event = match self.events.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        };
        if let LegEvent::TransferOutcome { success: true, .. } = event {
            self.transferred = true;
        }
        event
    }

    async fn hangup(&mut self) {
        if !self.transferred
            && let Err(e) = self.carrier.hangup().await
        {
            // Closing the stream still ends the phone call: `<Connect>` has nothing after it.
            tracing::warn!(error = %e, "the carrier did not take the hang-up");
        }
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
    }

    async fn transfer(&mut self, target: &str) -> Result<(), LegError> {
        let handover = self
            .carrier
            .transfer(target, self.own_events.clone())
            .await
            .map_err(failed)?;
        if handover == Handover::Taken {
            // The stream ends next; the carrier tells nothing of the new leg over it.
            self.transferred = true;
            let _ = self.own_events.send(LegEvent::TransferOutcome {
                code: 200,
                reason: "the carrier took the call".into(),
                success: true,
            });
        }
        Ok(())
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

    async fn close(mut self) -> Option<MediaStats> {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        // The task closes the socket and ends; a carrier that never answers the close frame
        // does not hold the call.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
        let recording = lock(&self.shared.recording).take();
        if let Some(r) = recording {
            finish_recording(r.recorder).await;
        }
        let c = &self.shared.counts;
        Some(MediaStats {
            packets_received: c.frames_in.load(Ordering::Relaxed),
            bytes_received: c.bytes_in.load(Ordering::Relaxed),
            packets_sent: c.frames_out.load(Ordering::Relaxed),
            bytes_sent: c.bytes_out.load(Ordering::Relaxed),
            malformed_packets: c.malformed.load(Ordering::Relaxed),
            ..MediaStats::default()
        })
    }
}

/// The task that owns the socket: frames in to the call, queued audio out at the carrier's
/// pace, and the close.
struct SocketTask<F: Framing> {
    socket: ServerSocket,
    framing: F,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<LegEvent>,
    media_timeout: Duration,
    garbage: u32,
    /// Chunks sent and not yet acknowledged, for the recording of what was heard.
    sent: VecDeque<(String, Vec<u8>)>,
    /// When the stream started, and the caller audio received since, in samples.
    started: Instant,
    received: u64,
}

/// How the stream ended, as the call hears it.
enum End {
    /// We closed it (hang-up or the call's end).
    Closed,
    Event(LegEvent),
}

impl<F: Framing> SocketTask<F> {
    async fn run(mut self, mut close: tokio::sync::oneshot::Receiver<()>) {
        let mut last_audio = Instant::now();
        let end = loop {
            let timeout = last_audio + self.media_timeout;
            tokio::select! {
                frame = self.socket.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Some(end) = self.on_frame(frame, &mut last_audio) {
                            break end;
                        }
                    }
                    Some(Err(e)) => break End::Event(LegEvent::Lost(format!("media stream failed: {e}"))),
                    None => break End::Event(LegEvent::Lost("media stream closed without a stop".into())),
                },
                () = self.shared.wake.notified() => {
                    if let Err(e) = self.send_queued().await {
                        break End::Event(LegEvent::Lost(format!("media stream failed: {e}")));
                    }
                }
                () = tokio::time::sleep_until(timeout) => break End::Event(LegEvent::MediaTimeout),
                _ = &mut close => break End::Closed,
            }
        };
        match end {
            End::Event(event) => {
                let _ = self.events.send(event);
                // Wait for the call to close the leg, so the socket outlives its events.
                let _ = close.await;
            }
            End::Closed => {}
        }
        let _ = self
            .socket
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "call ended".into(),
            }))
            .await;
    }

    /// One frame from the carrier; `Some` when the stream is over.
    fn on_frame(&mut self, frame: Message, last_audio: &mut Instant) -> Option<End> {
        let events = match frame {
            Message::Close(_) => {
                return Some(End::Event(if self.framing.close_ends_call() {
                    LegEvent::Hangup
                } else {
                    LegEvent::Lost("the carrier closed the media stream without a stop".into())
                }));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return None,
            frame => self.framing.read(frame),
        };
        match events {
            Ok(events) => events
                .into_iter()
                .find_map(|event| self.on_event(event, last_audio)),
            Err(why) => {
                self.shared.counts.malformed.fetch_add(1, Ordering::Relaxed);
                self.garbage += 1;
                tracing::debug!(%why, "ignoring a malformed media-stream frame");
                (self.garbage >= MAX_GARBAGE).then(|| {
                    End::Event(LegEvent::Lost(format!(
                        "the media stream sent {MAX_GARBAGE} malformed frames (last: {why})"
                    )))
                })
            }
        }
    }

    /// One event of the stream; `Some` when the stream is over.
    fn on_event(&mut self, event: StreamEvent, last_audio: &mut Instant) -> Option<End> {
        match event {
            StreamEvent::Audio(pcm) => {
                *last_audio = Instant::now();
                self.received += pcm.len() as u64;
                let heard =
                    Duration::from_millis(self.received * 1000 / u64::from(self.framing.rate()));
                if heard > self.started.elapsed() + FLOOD_LEAD {
                    return Some(End::Event(LegEvent::Lost(format!(
                        "the media stream sent {} ms of audio in {} ms",
                        heard.as_millis(),
                        self.started.elapsed().as_millis()
                    ))));
                }
                let c = &self.shared.counts;
                c.frames_in.fetch_add(1, Ordering::Relaxed);
                c.bytes_in
                    .fetch_add((pcm.len() * 2) as u64, Ordering::Relaxed);
                self.caller_audio(&pcm);
            }
            StreamEvent::Digit(digit) => {
                let _ = self.events.send(LegEvent::Digit {
                    digit,
                    source: DigitSource::Leg,
                });
            }
            StreamEvent::Mark(name) => {
                let heard = lock(&self.shared.queue).acknowledge(&name);
                if heard != Heard::Unknown {
                    self.played(&name);
                }
                match heard {
                    Heard::Drained => {
                        let _ = self.events.send(LegEvent::PlayoutDrained);
                    }
                    // Room at the carrier for more.
                    Heard::Played => self.shared.wake.notify_one(),
                    Heard::Unknown => {}
                }
            }
            StreamEvent::Stop => return Some(End::Event(LegEvent::Hangup)),
            StreamEvent::Other => {}
        }
        None
    }

    /// The chunks up to `mark` were heard: into the recording, if there is one.
    fn played(&mut self, mark: &str) {
        let mut recording = lock(&self.shared.recording);
        while let Some((name, audio)) = self.sent.pop_front() {
            if let Some(r) = recording.as_mut() {
                r.heard.extend(self.framing.decode(&audio));
            }
            if name == mark {
                break;
            }
        }
    }

    fn caller_audio(&mut self, pcm: &[i16]) {
        if let Some(r) = lock(&self.shared.recording).as_mut() {
            r.recorder.caller(pcm);
            let n = pcm.len().min(r.heard.len());
            let mut agent: Vec<i16> = r.heard.drain(..n).collect();
            agent.resize(pcm.len(), 0);
            r.recorder.agent(&agent);
        }
        let undelivered = lock(&self.shared.caller).deliver(pcm);
        match undelivered {
            None => {}
            Some(Undelivered::Unrouted) => {
                let _ = self.events.send(LegEvent::CallerAudio(pcm.to_vec()));
            }
            Some(Undelivered::LoopBack) => {
                let audio = self.framing.encode(pcm);
                lock(&self.shared.queue).push(&audio);
                self.shared.wake.notify_one();
            }
        }
    }

    /// Send a clear the queue owes, then audio up to the lead, each chunk with its mark.
    async fn send_queued(&mut self) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let clear = lock(&self.shared.queue).take_clear();
        if clear {
            self.sent.clear();
            self.socket.send(self.framing.clear()).await?;
        }
        loop {
            let chunk = lock(&self.shared.queue).next_chunk();
            let Some(chunk) = chunk else {
                return Ok(());
            };
            if chunk.starts_talkspurt {
                let _ = self
                    .events
                    .send(LegEvent::PlayoutStarted { at: Instant::now() });
            }
            let c = &self.shared.counts;
            c.frames_out.fetch_add(1, Ordering::Relaxed);
            c.bytes_out
                .fetch_add(chunk.audio.len() as u64, Ordering::Relaxed);
            match self.framing.frame_bytes() {
                Some(n) => {
                    for frame in chunk.audio.chunks(n) {
                        self.socket.feed(self.framing.media(frame)).await?;
                    }
                }
                None => self.socket.feed(self.framing.media(&chunk.audio)).await?,
            }
            self.socket.feed(self.framing.mark(&chunk.mark)).await?;
            self.sent.push_back((chunk.mark, chunk.audio));
            self.socket.flush().await?;
        }
    }
}
