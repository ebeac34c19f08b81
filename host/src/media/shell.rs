//! The shell around one session's [`Engine`], as a task of a media thread (see `reactor`): it
//! owns the RTP and RTCP sockets, reads the clock once per input, hands the engine what
//! arrived, sends what the engine leaves in its [`Output`] and passes its events to the call.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::engine::{Engine, Output, Socket, StreamIds, WallClock};
use super::ports::PortLease;
use super::reactor::{Step, Task, TaskWaker};
use super::recording::Recorder;
use super::rtcp::unix_now;
use super::sdp::NegotiatedMedia;
use super::session::{MediaConfig, MediaError, MediaEvent, Shared, lock};
use super::stats::MediaStats;

/// Events queued for the consumer; audio beyond `capacity - RESERVED_EVENT_SLOTS` is dropped
/// so DTMF and timeout events always find room.
pub(super) const EVENT_CAPACITY: usize = 256;
const RESERVED_EVENT_SLOTS: usize = 32;

/// A session's sockets and the lease on their ports.
pub(super) struct Sockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub lease: PortLease,
}

/// Where the shell delivers what concerns the session handle.
pub(super) struct ToSession {
    pub shared: Arc<Mutex<Shared>>,
    /// The statistics [`MediaSession::stats`](super::MediaSession::stats) reads.
    pub stats: Arc<Mutex<MediaStats>>,
    pub events: mpsc::Sender<MediaEvent>,
    /// The final statistics, once the engine has stopped and finished any recording.
    pub ended: oneshot::Sender<MediaStats>,
}

pub(super) struct Shell {
    engine: Engine,
    sockets: Sockets,
    shared: Arc<Mutex<Shared>>,
    stats: Arc<Mutex<MediaStats>>,
    events: mpsc::Sender<MediaEvent>,
    ended: Option<oneshot::Sender<MediaStats>>,
}

/// What the engines of a thread work in, one set for all (see [`Output`]): the datagram just
/// received and the engine's output.
struct Scratch {
    datagram: Vec<u8>,
    out: Output,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        datagram: vec![0; 2048],
        out: Output::default(),
    });
}

impl Shell {
    /// Starts an engine for `media` now, with a stream identity chosen at random.
    pub fn start(
        config: MediaConfig,
        media: &NegotiatedMedia,
        sockets: Sockets,
        to: ToSession,
    ) -> Result<Shell, MediaError> {
        let now = Instant::now();
        let ids = StreamIds {
            ssrc: random_u32(),
            sequence: random_u32() as u16,
            timestamp: random_u32(),
        };
        let wall = WallClock {
            at: now,
            unix: unix_now(),
        };
        let engine = Engine::new(config, media.clone(), to.shared.clone(), ids, wall, now)?;
        Ok(Shell {
            engine,
            sockets,
            shared: to.shared,
            stats: to.stats,
            events: to.events,
            ended: Some(to.ended),
        })
    }

    /// The next datagram waiting on `socket`; `None` when there is none or on an error, which
    /// is logged.
    fn try_recv(&self, socket: Socket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self.socket(socket).recv_from(buf) {
            Ok(received) => Some(received),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => {
                debug!(call_id = %self.engine.call_id(), error = %e, "recv");
                None
            }
        }
    }

    fn socket(&self, socket: Socket) -> &UdpSocket {
        match socket {
            Socket::Rtp => &self.sockets.rtp,
            Socket::Rtcp => &self.sockets.rtcp,
        }
    }

    /// Applies the commands queued by the session handle. Returns whether one was `Close`.
    fn run_commands(&mut self, now: Instant, out: &mut Output) -> bool {
        loop {
            let Some(command) = lock(&self.shared).commands.pop_front() else {
                return false;
            };
            if self.engine.command(now, command, out) {
                return true;
            }
        }
    }

    /// Sends the engine's datagrams, passes its events on, publishes its statistics and
    /// finishes the recordings it let go; `out` is empty after.
    fn flush(&mut self, out: &mut Output) {
        for (socket, dest, datagram) in out.transmits() {
            // Nonblocking: a full socket buffer drops the packet rather than holding the
            // thread; late media is no use.
            if let Err(e) = self.socket(socket).send_to(datagram, dest) {
                debug!(call_id = %self.engine.call_id(), error = %e, %dest, ?socket, "send");
            }
        }
        out.clear_transmits();
        for event in out.events.drain(..) {
            let is_audio = matches!(event, MediaEvent::Audio(_));
            if (is_audio && self.events.capacity() <= RESERVED_EVENT_SLOTS)
                || self.events.try_send(event).is_err()
            {
                self.engine.event_dropped();
            }
        }
        if std::mem::take(&mut out.stats_changed) {
            *lock(&self.stats) = self.engine.stats().clone();
        }
        for recorder in out.recordings.drain(..) {
            finish_recording(Some(recorder), self.engine.call_id(), || {});
        }
    }
}

impl Task for Shell {
    fn sockets(&self) -> [RawFd; 2] {
        [self.sockets.rtp.as_raw_fd(), self.sockets.rtcp.as_raw_fd()]
    }

    fn attach(&mut self, waker: TaskWaker) {
        let media = self.engine.media();
        info!(call_id = %self.engine.call_id(), port = self.sockets.lease.port(),
              codec = ?media.codec, remote = ?media.remote_rtp,
              srtp = ?media.srtp.as_ref().map(|k| k.suite), "media started");
        lock(&self.shared).engine = Some(waker);
    }

    /// Reads one datagram, then has the engine do what is due. One clock read per datagram.
    fn readable(&mut self, socket: usize) -> Step {
        let socket = if socket == 0 {
            Socket::Rtp
        } else {
            Socket::Rtcp
        };
        SCRATCH.with_borrow_mut(|Scratch { datagram, out }| {
            // A task that panicked mid-input may have left its output behind.
            out.clear();
            let now = Instant::now();
            if let Some((n, from)) = self.try_recv(socket, datagram) {
                self.engine.receive(now, socket, &datagram[..n], from, out);
            }
            let stop = self.engine.poll(now, out);
            self.flush(out);
            Step::stop_if(stop)
        })
    }

    fn wake(&mut self, now: Instant) -> Step {
        SCRATCH.with_borrow_mut(|Scratch { out, .. }| {
            out.clear();
            let stop = self.run_commands(now, out) || self.engine.poll(now, out);
            self.flush(out);
            Step::stop_if(stop)
        })
    }

    fn deadline(&self) -> Instant {
        self.engine.deadline()
    }

    fn end(mut self) {
        let (stats, recorder) = SCRATCH.with_borrow_mut(|Scratch { out, .. }| {
            out.clear();
            let stats = self.engine.end(out);
            (stats, out.recordings.pop())
        });
        *lock(&self.stats) = stats.clone();
        // At info the call's end line carries the same statistics.
        debug!(call_id = %self.engine.call_id(), stats = %stats, "media stopped");
        let ended = self.ended.take();
        let call_id = self.engine.call_id().to_owned();
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
impl Drop for Shell {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.closed = true;
        shared.commands.clear();
        shared.engine = None;
    }
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
