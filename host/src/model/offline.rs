//! The offline provider: no key, no network. Speech comes from the local espeak-ng program
//! (the greeting and [`Command::Say`]); the caller's audio runs through a local voice-activity
//! detector so barge-in works, and, when the PocketSphinx model is installed, through a local
//! recogniser (`listen`, `sphinx`) whose final transcripts of each caller turn reach the agent.
//! There is no language model, so the agent's own logic is the brain: no tool calls.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command as Process;
use tokio::sync::{OnceCell, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::config::OfflineConfig;
use super::listen::{Heard, Recognition, listen};
use super::speech_cache::{Lookup, Speech, SpeechCache};
use super::sphinx::Recogniser;
use super::vad::{Vad, VadEvent};
use super::{
    AudioFormat, CHANNEL_CAPACITY, CloseReason, Command, ConnectError, ErrorKind, Expectation,
    FormatSupport, ModelEvent, ModelProvider, ModelSession, ProviderError, ResponseStatus, Role,
    SessionSettings, check_formats,
};
use crate::resample::StreamResampler;
use crate::runtimes::DedicatedRuntime;

const NAME: &str = "offline";
/// Caller audio rates accepted: the call rates, so the media path never resamples for us (the
/// detector resamples to its own rate on the local model runtime).
const INPUT_RATES: [u32; 4] = [8_000, 16_000, 24_000, 48_000];
/// Rates speech is offered at: espeak-ng's own (22.05 kHz) and the call rates, so a call gets
/// its codec's rate and the resampling is done once per prompt, into the speech cache.
const OUTPUT_RATES: [u32; 5] = [8_000, 16_000, 22_050, 24_000, 48_000];
/// The voice detector's runtime. Its threads run behind the rest of the process, so when the
/// CPU is overloaded the detector (the bulk of the provider's work) falls behind before SIP
/// signalling, RTP pacing and the agent's speech do.
static DETECTOR_RUNTIME: DedicatedRuntime = DedicatedRuntime::new("local-model", 10, 1);
/// Audio is handed out in 100 ms chunks as espeak produces it.
const CHUNK_MS: usize = 100;

/// Local speech synthesis and voice-activity detection.
#[derive(Debug)]
pub struct OfflineProvider {
    config: Arc<OfflineConfig>,
    /// Whether espeak-ng runs, checked once on first connect.
    synth_check: OnceCell<Result<(), String>>,
    /// Shared by every session of this provider.
    speech: Arc<SpeechCache>,
    /// The speech recogniser, loaded on first connect; `None` when it is off or its model is
    /// missing (said once in the log).
    recogniser: OnceCell<Option<Arc<Recogniser>>>,
}

impl OfflineProvider {
    pub fn new(config: OfflineConfig) -> Self {
        Self {
            speech: Arc::new(SpeechCache::new(config.speech_cache_mb * 1024 * 1024)),
            config: Arc::new(config),
            synth_check: OnceCell::new(),
            recogniser: OnceCell::new(),
        }
    }

    /// The shared recogniser, loading it (a fraction of a second of CPU) on first use.
    async fn recogniser(&self) -> Option<Arc<Recogniser>> {
        if !self.config.recognise_speech {
            return None;
        }
        let config = self.config.recogniser.clone();
        self.recogniser
            .get_or_init(|| async move {
                match tokio::task::spawn_blocking(move || Recogniser::load(&config)).await {
                    Ok(Ok(recogniser)) => Some(recogniser),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "offline speech recognition is off");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "loading the speech recogniser failed");
                        None
                    }
                }
            })
            .await
            .clone()
    }

    async fn check_synthesizer(&self) -> Result<(), ConnectError> {
        let program = &self.config.espeak_program;
        let result = self
            .synth_check
            .get_or_init(|| async {
                match Process::new(program)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await
                {
                    Ok(s) if s.success() => Ok(()),
                    Ok(s) => Err(format!("`--version` exited with {s}")),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        result
            .clone()
            .map_err(|reason| ConnectError::SynthesizerUnavailable {
                program: program.display().to_string(),
                reason,
            })
    }

    async fn open(&self, settings: SessionSettings) -> Result<ModelSession, ConnectError> {
        check_formats(self, &settings)?;
        self.check_synthesizer().await?;
        let voice = settings
            .language
            .as_deref()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| self.config.voice.clone());
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (done_tx, done_rx) = mpsc::channel(4);
        let vad = Vad::new(
            settings.input_format.sample_rate(),
            self.config.vad_threshold,
            self.config.min_speech_ms,
            self.config.silence_ms,
        )
        .map_err(|_| ConnectError::UnsupportedFormat {
            provider: NAME,
            direction: "input",
            format: settings.input_format,
        })?;
        let (audio_tx, audio_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (voice_tx, voice_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (expect_tx, expect_rx) = watch::channel(Expectation::Anything);
        let recognition = self.recogniser().await.map(|recogniser| Recognition {
            recogniser,
            expect: expect_rx,
            min_confidence: self.config.min_confidence,
        });
        // Detection and recognition are the bulk of the work and may lag; speech must keep up
        // with the line.
        DETECTOR_RUNTIME.handle().spawn(
            listen(
                vad,
                settings.input_format.sample_rate(),
                recognition,
                audio_rx,
                voice_tx,
            )
            .instrument(tracing::Span::current()),
        );
        let mut actor = Actor {
            config: self.config.clone(),
            speech: self.speech.clone(),
            speech_out: SpeechOut {
                voice,
                format: settings.output_format,
            },
            events: ev_tx,
            detector: audio_tx,
            expect: expect_tx,
            caller_turns: 0,
            speaking: None,
            queued: VecDeque::new(),
            next_item: 0,
            done_tx,
        };
        if let Some(greeting) = settings.greeting {
            actor.say(greeting);
        }
        // Keep the caller's span (e.g. its call_id) on the session's logs.
        tokio::spawn(
            actor
                .run(cmd_rx, done_rx, voice_rx)
                .instrument(tracing::Span::current()),
        );
        Ok(ModelSession {
            commands: cmd_tx,
            events: ev_rx,
            input_format: settings.input_format,
            output_format: settings.output_format,
            loopback: false,
        })
    }
}

impl ModelProvider for OfflineProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn formats(&self) -> FormatSupport {
        FormatSupport {
            input: INPUT_RATES
                .iter()
                .map(|&rate| AudioFormat::Pcm16 { rate })
                .collect(),
            output: OUTPUT_RATES
                .iter()
                .map(|&rate| AudioFormat::Pcm16 { rate })
                .collect(),
        }
    }

    fn connect(
        &self,
        settings: SessionSettings,
    ) -> BoxFuture<'_, Result<ModelSession, ConnectError>> {
        Box::pin(self.open(settings))
    }
}

/// How a session speaks: the espeak-ng voice, and the format its audio is handed out in
/// (16-bit PCM at one of [`OUTPUT_RATES`]).
#[derive(Debug, Clone)]
struct SpeechOut {
    voice: String,
    format: AudioFormat,
}

/// One utterance being synthesised and streamed out.
struct Utterance {
    item_id: String,
    text: String,
    task: JoinHandle<()>,
}

/// Sent by a synthesis task when it has emitted all its audio (or failed).
struct SynthDone {
    item_id: String,
    result: Result<(), String>,
}

struct Actor {
    config: Arc<OfflineConfig>,
    speech: Arc<SpeechCache>,
    speech_out: SpeechOut,
    events: mpsc::Sender<ModelEvent>,
    /// Caller audio to the listening task.
    detector: mpsc::Sender<Vec<u8>>,
    /// The agent's latest hint, for the listening task.
    expect: watch::Sender<Expectation>,
    /// Caller turns transcribed so far (their item ids).
    caller_turns: u64,
    speaking: Option<Utterance>,
    queued: VecDeque<String>,
    next_item: u64,
    done_tx: mpsc::Sender<SynthDone>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::Receiver<SynthDone>,
        mut voice: mpsc::Receiver<Heard>,
    ) {
        loop {
            let alive = tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.on_command(cmd).await,
                },
                Some(finished) = done.recv() => self.on_synth_done(finished).await,
                Some(heard) = voice.recv() => match heard {
                    Heard::Voice(change) => self.on_voice(change).await,
                    Heard::Words(words) => {
                        self.caller_turns += 1;
                        self.emit(ModelEvent::Transcript {
                            role: Role::Caller,
                            item_id: format!("offline_caller_{}", self.caller_turns),
                            text: words.text,
                            is_final: true,
                        })
                        .await
                    }
                },
            };
            if !alive {
                break;
            }
        }
        self.stop_speaking();
    }

    /// Start speaking `text`, or queue it behind the current utterance.
    fn say(&mut self, text: String) {
        if self.speaking.is_some() {
            self.queued.push_back(text);
            return;
        }
        self.next_item += 1;
        let item_id = format!("offline_{}", self.next_item);
        let synth = synthesize(
            self.config.clone(),
            self.speech.clone(),
            self.speech_out.clone(),
            text.clone(),
            item_id.clone(),
            self.events.clone(),
            self.done_tx.clone(),
        );
        let task = tokio::spawn(synth.instrument(tracing::Span::current()));
        self.speaking = Some(Utterance {
            item_id,
            text,
            task,
        });
    }

    fn stop_speaking(&mut self) -> bool {
        self.queued.clear();
        match self.speaking.take() {
            Some(u) => {
                // Aborting drops the child process handle, which kills espeak-ng.
                u.task.abort();
                true
            }
            None => false,
        }
    }

    /// Returns false once nobody listens to events any more.
    async fn emit(&self, event: ModelEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    async fn cancel(&mut self) -> bool {
        if self.stop_speaking() {
            self.emit(ModelEvent::ResponseDone {
                status: ResponseStatus::Cancelled,
            })
            .await
        } else {
            true
        }
    }

    /// A change of the caller's speaking state, from the detector.
    async fn on_voice(&mut self, change: VadEvent) -> bool {
        match change {
            VadEvent::Started { at_ms } => {
                // Barge-in: like a remote model with interrupt_response, stop talking.
                self.emit(ModelEvent::SpeechStarted {
                    audio_start_ms: Some(at_ms),
                })
                .await
                    && self.cancel().await
            }
            VadEvent::Stopped { at_ms } => {
                self.emit(ModelEvent::SpeechStopped {
                    audio_end_ms: Some(at_ms),
                })
                .await
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Audio(frame) => {
                // A detector far behind loses frames rather than holding up the call.
                let _ = self.detector.try_send(frame);
                true
            }
            Command::Say(text) => {
                self.say(text);
                true
            }
            Command::CancelResponse => self.cancel().await,
            // No server-side conversation to trim, no model to call tools or follow
            // instructions: these are accepted and have nothing to act on.
            Command::Truncate { .. } | Command::UpdateInstructions(_) => true,
            Command::Expect(hint) => {
                self.expect.send_replace(hint);
                true
            }
            Command::ToolResult { call_id, .. } => {
                tracing::debug!(
                    call_id,
                    "offline provider ignores a tool result it never asked for"
                );
                true
            }
            Command::Close => {
                self.stop_speaking();
                self.emit(ModelEvent::Closed(CloseReason::Normal)).await;
                false
            }
        }
    }

    async fn on_synth_done(&mut self, done: SynthDone) -> bool {
        // A late message from an aborted utterance is stale.
        let Some(current) = self.speaking.take_if(|u| u.item_id == done.item_id) else {
            return true;
        };
        let alive = match done.result {
            Ok(()) => {
                self.emit(ModelEvent::Transcript {
                    role: Role::Agent,
                    item_id: current.item_id,
                    text: current.text,
                    is_final: true,
                })
                .await
                    && self
                        .emit(ModelEvent::ResponseDone {
                            status: ResponseStatus::Completed,
                        })
                        .await
            }
            Err(message) => {
                tracing::warn!(error = %message, "offline speech synthesis failed");
                let error = ProviderError::new(ErrorKind::Local, None, message);
                self.emit(ModelEvent::Error(error)).await
                    && self
                        .emit(ModelEvent::ResponseDone {
                            status: ResponseStatus::Failed,
                        })
                        .await
            }
        };
        if let Some(next) = self.queued.pop_front() {
            self.say(next);
        }
        alive
    }
}

/// Speak `text` as [`ModelEvent::Audio`] chunks: from the speech cache, or from espeak-ng as it
/// synthesises (then cached for the next call).
async fn synthesize(
    config: Arc<OfflineConfig>,
    cache: Arc<SpeechCache>,
    out: SpeechOut,
    text: String,
    item_id: String,
    events: mpsc::Sender<ModelEvent>,
    done: mpsc::Sender<SynthDone>,
) {
    let rate = out.format.sample_rate();
    let result = match cache
        .lookup(&out.voice, config.words_per_minute, rate, &text)
        .await
    {
        Lookup::Hit(speech) => {
            send_chunks(&speech.pcm, speech.format, &item_id, &events).await;
            Ok(())
        }
        Lookup::Miss(filler) => {
            match stream_speech(&config, &out, &text, &item_id, &events).await {
                Ok(Some(speech)) => {
                    cache.fill(filler, speech);
                    Ok(())
                }
                // Nobody listens any more: the audio is incomplete, keep none of it.
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        }
    };
    let _ = done.send(SynthDone { item_id, result }).await;
}

/// Bytes of one [`CHUNK_MS`] chunk (whole samples).
fn chunk_bytes(format: AudioFormat) -> usize {
    (format.bytes_per_ms() as usize * CHUNK_MS) & !1
}

/// Send `pcm` in chunks; false once nobody listens.
async fn send_chunks(
    pcm: &[u8],
    format: AudioFormat,
    item_id: &str,
    events: &mpsc::Sender<ModelEvent>,
) -> bool {
    for data in pcm.chunks(chunk_bytes(format)) {
        let event = ModelEvent::Audio {
            item_id: item_id.to_string(),
            data: data.to_vec(),
            format,
        };
        if events.send(event).await.is_err() {
            return false;
        }
    }
    true
}

/// Run espeak-ng, streaming its audio out in the session's format as it comes; the whole
/// utterance is returned for the cache, or `None` when the listener went away before the end.
async fn stream_speech(
    config: &OfflineConfig,
    out: &SpeechOut,
    text: &str,
    item_id: &str,
    events: &mpsc::Sender<ModelEvent>,
) -> Result<Option<Speech>, String> {
    let (voice, output) = (out.voice.as_str(), out.format);
    let mut child = Process::new(&config.espeak_program)
        .args(["--stdout", "--stdin", "-v", voice, "-s"])
        .arg(config.words_per_minute.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", config.espeak_program.display()))?;
    // Text goes through stdin so that words starting with '-' are never read as options.
    let mut stdin = child.stdin.take().ok_or("espeak-ng stdin missing")?;
    stdin
        .write_all(text.as_bytes())
        .await
        .map_err(|e| format!("writing text to espeak-ng: {e}"))?;
    drop(stdin);
    let mut stdout = child.stdout.take().ok_or("espeak-ng stdout missing")?;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut pcm = Vec::new();
    let mut header: Option<(AudioFormat, usize)> = None;
    let mut converter: Option<RateConverter> = None;
    let mut read_buf = vec![0u8; 8192];
    loop {
        let n = stdout
            .read(&mut read_buf)
            .await
            .map_err(|e| format!("reading espeak-ng output: {e}"))?;
        let eof = n == 0;
        buf.extend_from_slice(&read_buf[..n]);
        if header.is_none() {
            match parse_wav_header(&buf) {
                Ok(Some(found)) => header = Some(found),
                Ok(None) if !eof => continue,
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        let (format, data_start) = header.expect("header parsed above");
        let converter = match converter.as_mut() {
            Some(c) => c,
            None => converter.insert(RateConverter::new(format.sample_rate(), output)?),
        };
        // Whole chunks as they come; at the end the tail too.
        let available = buf.len() - data_start;
        let chunk = chunk_bytes(format);
        let take = if eof {
            available & !1
        } else {
            available / chunk * chunk
        };
        let end = data_start + take;
        let converted = converter.convert(&buf[data_start..end], eof)?;
        if !send_chunks(&converted, output, item_id, events).await {
            return Ok(None);
        }
        pcm.extend_from_slice(&converted);
        buf.drain(..end);
        header = Some((format, 0));
        if eof {
            break;
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for espeak-ng: {e}"))?;
    if !status.success() || header.is_none() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err).await;
        }
        return Err(format!("espeak-ng failed ({status}): {}", err.trim()));
    }
    Ok(Some(Speech {
        format: output,
        pcm,
    }))
}

/// espeak-ng's PCM16 brought to the session's rate (a pass-through when they match).
struct RateConverter {
    resampler: Option<StreamResampler>,
}

impl RateConverter {
    fn new(from: u32, output: AudioFormat) -> Result<RateConverter, String> {
        let to = output.sample_rate();
        let resampler = (from != to)
            .then(|| StreamResampler::new(from, to))
            .transpose()
            .map_err(|e| format!("speech at {from} Hz for a {to} Hz session: {e}"))?;
        Ok(RateConverter { resampler })
    }

    /// Converts little-endian PCM16 bytes; `last` drains what the filter still holds.
    fn convert(&mut self, bytes: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let Some(r) = self.resampler.as_mut() else {
            return Ok(bytes.to_vec());
        };
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        r.push(&samples).map_err(|e| e.to_string())?;
        if last {
            r.drain().map_err(|e| e.to_string())?;
        }
        Ok(r.pop_all().iter().flat_map(|s| s.to_le_bytes()).collect())
    }
}

/// Parse a RIFF/WAVE header; returns the audio format and where sample data starts, or
/// `None` when more bytes are needed. espeak-ng streams, so chunk sizes are placeholders.
fn parse_wav_header(buf: &[u8]) -> Result<Option<(AudioFormat, usize)>, String> {
    if buf.len() < 12 {
        return Ok(None);
    }
    if &buf[0..4] != b"RIFF" || &buf[8..12] != b"WAVE" {
        return Err("espeak-ng output is not a WAV stream".into());
    }
    let mut pos = 12;
    let mut format = None;
    loop {
        if buf.len() < pos + 8 {
            return Ok(None);
        }
        let id = &buf[pos..pos + 4];
        let size = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let body = pos + 8;
        if id == b"data" {
            return match format {
                Some(f) => Ok(Some((f, body))),
                None => Err("WAV data before fmt chunk".into()),
            };
        }
        if buf.len() < body + size {
            return Ok(None);
        }
        if id == b"fmt " {
            if size < 16 {
                return Err("short WAV fmt chunk".into());
            }
            let f = &buf[body..body + 16];
            let tag = u16::from_le_bytes([f[0], f[1]]);
            let channels = u16::from_le_bytes([f[2], f[3]]);
            let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
            let bits = u16::from_le_bytes([f[14], f[15]]);
            if tag != 1 || channels != 1 || bits != 16 {
                return Err(format!(
                    "unexpected espeak-ng WAV format (tag {tag}, {channels} channels, {bits} bits)"
                ));
            }
            format = Some(AudioFormat::Pcm16 { rate });
        }
        pos = body + size + (size & 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_header(rate: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF\x24\xf0\xff\x7fWAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2).to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data\x00\xf0\xff\x7f");
        h
    }

    #[test]
    fn parses_streaming_wav_header() {
        let h = wav_header(22050);
        assert_eq!(parse_wav_header(&h[..20]).unwrap(), None);
        assert_eq!(
            parse_wav_header(&h).unwrap(),
            Some((AudioFormat::Pcm16 { rate: 22050 }, 44))
        );
        assert!(parse_wav_header(b"OggS\0\0\0\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn rejects_stereo() {
        let mut h = wav_header(22050);
        h[22] = 2;
        assert!(parse_wav_header(&h).is_err());
    }
}
