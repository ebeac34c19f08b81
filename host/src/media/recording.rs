//! Call recording: a stereo WAV (caller left, agent right) streamed to disk while the call runs.
//!
//! Samples go through a bounded channel to a writer thread, so a slow disk never stalls the
//! media loop (if the channel is full the chunk is dropped and counted). The header is updated
//! every second, so even a crashed call leaves a readable file, and finalised at close.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Chunks in flight to the writer thread (about 10 s of 20 ms frames per side).
const CHANNEL_CHUNKS: usize = 1000;

/// Why a recording could not be started or finished.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path}: {source}")]
    Wav {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    #[error("recording {path}: writer thread: {source}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

enum Chunk {
    Caller(Vec<i16>),
    Agent(Vec<i16>),
}

/// A running recording. Dropping it finishes the file (without waiting for the thread).
pub struct Recorder {
    path: PathBuf,
    tx: Option<SyncSender<Chunk>>,
    thread: Option<JoinHandle<Result<u64, hound::Error>>>,
    dropped_chunks: u64,
}

impl Recorder {
    /// Creates `path` and starts writing a stereo 16-bit WAV at `sample_rate`.
    pub fn start(path: &Path, sample_rate: u32) -> Result<Recorder, RecordingError> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer =
            hound::WavWriter::create(path, spec).map_err(|source| RecordingError::Wav {
                path: path.to_path_buf(),
                source,
            })?;
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("media-recorder".into())
            .spawn(move || write_loop(writer, rx, sample_rate))
            .map_err(|source| RecordingError::Thread {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Recorder {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
            dropped_chunks: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caller audio (left channel).
    pub fn caller(&mut self, pcm: &[i16]) {
        self.send(Chunk::Caller(pcm.to_vec()));
    }

    /// Agent audio (right channel).
    pub fn agent(&mut self, pcm: &[i16]) {
        self.send(Chunk::Agent(pcm.to_vec()));
    }

    fn send(&mut self, chunk: Chunk) {
        if let Some(tx) = &self.tx {
            match tx.try_send(chunk) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.dropped_chunks += 1,
                Err(TrySendError::Disconnected(_)) => self.tx = None,
            }
        }
    }

    /// Finishes the file and waits for it to be complete; returns the stereo frames written.
    /// Blocking: call from a blocking context.
    pub fn finish(mut self) -> Result<u64, RecordingError> {
        self.tx = None;
        let path = self.path.clone();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result.map_err(|source| RecordingError::Wav { path, source }),
            Some(Err(_)) => Err(RecordingError::Wav {
                path,
                source: hound::Error::IoError(std::io::Error::other("writer thread panicked")),
            }),
            None => Ok(0),
        }
    }
}

fn write_loop(
    mut writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    rx: Receiver<Chunk>,
    sample_rate: u32,
) -> Result<u64, hound::Error> {
    // When one side has this much buffered and the other none, the other side is silent
    // (hold, or not sending) rather than late: pad it so the channels stay aligned.
    let max_lag = sample_rate as usize / 2;
    let mut caller: VecDeque<i16> = VecDeque::new();
    let mut agent: VecDeque<i16> = VecDeque::new();
    let mut frames = 0u64;
    let mut since_flush = 0u64;
    while let Ok(chunk) = rx.recv() {
        match chunk {
            Chunk::Caller(s) => caller.extend(s),
            Chunk::Agent(s) => agent.extend(s),
        }
        if caller.is_empty() && agent.len() > max_lag {
            caller.resize(agent.len(), 0);
        }
        if agent.is_empty() && caller.len() > max_lag {
            agent.resize(caller.len(), 0);
        }
        let n = caller.len().min(agent.len());
        for (l, r) in caller.drain(..n).zip(agent.drain(..n)) {
            writer.write_sample(l)?;
            writer.write_sample(r)?;
        }
        frames += n as u64;
        since_flush += n as u64;
        if since_flush >= sample_rate as u64 {
            writer.flush()?;
            since_flush = 0;
        }
    }
    // Channel closed: write what is left, padding the shorter side.
    let n = caller.len().max(agent.len());
    caller.resize(n, 0);
    agent.resize(n, 0);
    for (l, r) in caller.into_iter().zip(agent) {
        writer.write_sample(l)?;
        writer.write_sample(r)?;
    }
    frames += n as u64;
    writer.finalize()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_file_with_caller_left_agent_right() {
        let dir = std::env::temp_dir().join(format!("sb-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("call.wav");
        let mut rec = Recorder::start(&path, 8000).unwrap();
        for i in 0..100 {
            rec.caller(&[1000 + i; 160]);
            rec.agent(&[-2000 - i; 160]);
        }
        // A long caller-only stretch (agent on hold) is padded on the agent side.
        for _ in 0..50 {
            rec.caller(&[5; 160]);
        }
        // Streamed as it goes: the file already holds audio before it is finished.
        let mut grew = false;
        for _ in 0..100 {
            if std::fs::metadata(&path).unwrap().len() > 44 + 4 * 8000 {
                grew = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(grew, "header+1 s of audio flushed while recording");
        let frames = rec.finish().unwrap();
        assert_eq!(frames, 150 * 160);
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().channels, 2);
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.duration(), 150 * 160);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!((samples[0], samples[1]), (1000, -2000));
        let last_frame = samples.len() - 2;
        assert_eq!((samples[last_frame], samples[last_frame + 1]), (5, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let err = Recorder::start(Path::new("/nonexistent-dir/x.wav"), 8000)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/x.wav"));
    }
}
