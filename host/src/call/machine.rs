//! Answering-machine detection beside a call ([`crate::media::amd`]): each frame of the
//! callee's audio, on its way from the media thread to the model, is also copied to a detector
//! task; what the detector finds comes back to the call task as logic input. Nothing waits for
//! it: the greeting, the model and the callee's audio go on as they would without it, and a
//! full queue drops the copy, never the frame.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::media::amd::{AmdConfig, AmdDetector, AmdEvent};

/// Frames queued for the detector (20 ms each): a second and a bit.
const QUEUE: usize = 64;
/// Without audio for this long (a hold, silence suppression), time alone advances the
/// detector, so that a silent callee still gets a verdict.
const QUIET: Duration = Duration::from_millis(200);

/// A frame of callee audio and when it arrived.
type Frame = (Instant, Vec<i16>);

/// The detector running beside one call; dropping it stops the detector.
pub(crate) struct MachineDetection {
    frames: mpsc::Sender<Frame>,
    found: mpsc::Receiver<AmdEvent>,
    task: JoinHandle<()>,
}

/// Where the audio path copies each frame.
#[derive(Clone)]
pub(crate) struct FrameTap(mpsc::Sender<Frame>);

impl FrameTap {
    /// A copy of a frame for the detector; dropped when the detector is behind or done.
    pub(crate) fn copy(&self, samples: &[i16]) {
        let _ = self.0.try_send((Instant::now(), samples.to_vec()));
    }
}

impl MachineDetection {
    /// Starts detecting on audio at `rate` Hz, answered at `answered`; `None` (logged) when
    /// the detector cannot be made for that rate.
    pub(crate) fn start(rate: u32, config: AmdConfig, answered: Instant) -> Option<Self> {
        let detector = match AmdDetector::new(rate, config) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, rate, "answering-machine detection not started");
                return None;
            }
        };
        let (frames, frames_rx) = mpsc::channel(QUEUE);
        let (found_tx, found) = mpsc::channel(4);
        let task = tokio::spawn(detect(detector, rate, answered, frames_rx, found_tx));
        Some(MachineDetection {
            frames,
            found,
            task,
        })
    }

    pub(crate) fn tap(&self) -> FrameTap {
        FrameTap(self.frames.clone())
    }

    /// The next finding; `None` once the detector is done.
    pub(crate) async fn next(&mut self) -> Option<AmdEvent> {
        self.found.recv().await
    }
}

impl Drop for MachineDetection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn detect(
    mut detector: AmdDetector,
    rate: u32,
    answered: Instant,
    mut frames: mpsc::Receiver<Frame>,
    found: mpsc::Sender<AmdEvent>,
) {
    let since_answer = |t: Instant| t.saturating_duration_since(answered).as_millis() as u64;
    let mut quiet = tokio::time::interval(QUIET);
    let mut last_frame = Instant::now();
    while !detector.is_done() {
        let result = tokio::select! {
            frame = frames.recv() => match frame {
                Some((at, samples)) => {
                    last_frame = at;
                    let length_ms = samples.len() as u64 * 1000 / u64::from(rate);
                    detector.push(since_answer(at).saturating_sub(length_ms), &samples)
                }
                None => return,
            },
            _ = quiet.tick() => {
                if last_frame.elapsed() < QUIET {
                    continue;
                }
                detector.tick(since_answer(Instant::now()))
            }
        };
        let events = match result {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "answering-machine detection stopped");
                return;
            }
        };
        for event in events {
            tracing::info!(?event, "answering-machine detection");
            if found.send(event).await.is_err() {
                return;
            }
        }
    }
}
