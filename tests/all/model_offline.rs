//! The offline provider: real espeak-ng speech out, earshot VAD on real (espeak + sox) speech in.

use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::calls::espeak_at;
use crate::support::model_audio::{pcm16_samples, rms};
use crate::support::model_events::{next, until};
use switchboard::model::offline::OfflineProvider;
use switchboard::model::{
    AudioFormat, CloseReason, Command, ConnectError, ModelEvent, ModelProvider, ModelSession,
    OfflineConfig, ResponseStatus, Role, SessionSettings, TurnDetection,
};

const WAIT: Duration = Duration::from_secs(20);

/// Whether `program` runs; under CI a missing program fails the test instead of skipping it.
fn have(program: &str) -> bool {
    let ok = Process::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is required under CI=true"
        );
        eprintln!("SKIP: {program} is not installed");
    }
    ok
}

fn settings(greeting: Option<&str>) -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: String::new(),
        voice: None,
        language: None,
        tools: vec![],
        greeting: greeting.map(str::to_string),
        input_format: AudioFormat::Pcm16 { rate: 16_000 },
        output_format: AudioFormat::Pcm16 { rate: 22_050 },
        turn_detection: TurnDetection::default(),
        input_transcription: false,
        history: Vec::new(),
    }
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!("sb-model-{}-{n}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Raw PCM16 at `rate`: `lead_s` of silence, espeak-ng speaking `text`, half a second of
/// silence.
fn spoken_pcm(text: &str, lead_s: f32, rate: u32) -> Vec<u8> {
    let mut samples = vec![0i16; (lead_s * rate as f32) as usize];
    samples.extend(espeak_at(text, rate));
    samples.extend(vec![0i16; rate as usize / 2]);
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Raw 16 kHz PCM16 made by sox: `seconds` of digital silence or faint brown noise.
fn sox_background(seconds: u32, noise: bool) -> Vec<u8> {
    let raw = TempFile::new(if noise { "noise.raw" } else { "silence.raw" });
    let mut cmd = Process::new("sox");
    cmd.args([
        "-n",
        "-r",
        "16000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-t",
        "raw",
    ])
    .arg(&raw.0);
    if noise {
        cmd.args(["synth", &seconds.to_string(), "brownnoise", "vol", "0.02"]);
    } else {
        cmd.args(["trim", "0", &seconds.to_string()]);
    }
    assert!(cmd.status().unwrap().success(), "sox failed");
    std::fs::read(&raw.0).unwrap()
}

async fn feed(session: &ModelSession, pcm: &[u8]) {
    for frame in pcm.chunks(640) {
        session.send(Command::Audio(frame.to_vec())).await.unwrap();
    }
}

#[tokio::test]
async fn greeting_and_say_produce_audible_speech() {
    if !have("espeak-ng") {
        return;
    }
    let provider = OfflineProvider::new(OfflineConfig::default());
    let greeting = "Hello, you have reached the Switchboard demo line.";
    let mut session = provider.connect(settings(Some(greeting))).await.unwrap();
    assert_eq!(session.output_format, AudioFormat::Pcm16 { rate: 22_050 });
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ResponseDone { .. })
    })
    .await;
    let mut pcm = Vec::new();
    for e in &events {
        if let ModelEvent::Audio { data, format, .. } = e {
            assert_eq!(*format, AudioFormat::Pcm16 { rate: 22_050 });
            pcm.extend_from_slice(data);
        }
    }
    let seconds = pcm.len() as f64 / 44_100.0;
    let level = rms(&pcm16_samples(&pcm));
    assert!(
        seconds > 1.0 && seconds < 10.0,
        "greeting lasts {seconds} s"
    );
    assert!(level > 500.0, "greeting RMS {level} is not audible speech");
    assert!(events.iter().any(|e| matches!(e, ModelEvent::Transcript { role: Role::Agent, is_final: true, text, .. } if text == greeting)));
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Completed
        })
    );

    session
        .send(Command::Say("-- Goodbye.".into()))
        .await
        .unwrap();
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ResponseDone { .. })
    })
    .await;
    assert!(
        events.iter().any(|e| matches!(e, ModelEvent::Audio { .. })),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Completed
        })
    );
    session.send(Command::Close).await.unwrap();
    assert_eq!(
        next(&mut session, WAIT).await,
        ModelEvent::Closed(CloseReason::Normal)
    );
}

#[tokio::test]
async fn vad_detects_speech_onset_and_not_silence() {
    if !have("espeak-ng") || !have("sox") {
        return;
    }
    let provider = OfflineProvider::new(OfflineConfig::default());

    // Silence and faint noise: no speech events at all.
    let mut session = provider.connect(settings(None)).await.unwrap();
    feed(&session, &sox_background(3, false)).await;
    feed(&session, &sox_background(3, true)).await;
    session.send(Command::Close).await.unwrap();
    let events = until(&mut session, WAIT, |e| matches!(e, ModelEvent::Closed(_))).await;
    assert_eq!(events, vec![ModelEvent::Closed(CloseReason::Normal)]);

    // One second of silence, then speech: onset near 1000 ms, then the end of speech; at the
    // detector's own rate and at the narrowband call rate it resamples from.
    for rate in [16_000, 8_000] {
        let mut session = provider
            .connect(SessionSettings {
                input_format: AudioFormat::Pcm16 { rate },
                ..settings(None)
            })
            .await
            .unwrap();
        let pcm = spoken_pcm(
            "Hello, I would like to check the status of my order please.",
            1.0,
            rate,
        );
        feed(&session, &pcm).await;
        let events = until(&mut session, WAIT, |e| {
            matches!(e, ModelEvent::SpeechStopped { .. })
        })
        .await;
        let start = events.iter().find_map(|e| match e {
            ModelEvent::SpeechStarted { audio_start_ms } => *audio_start_ms,
            _ => None,
        });
        let start = start.expect("speech onset detected");
        assert!(
            (900..=1400).contains(&start),
            "{rate} Hz: onset at {start} ms"
        );
        let Some(ModelEvent::SpeechStopped {
            audio_end_ms: Some(end),
        }) = events.last()
        else {
            panic!("{events:?}")
        };
        let bytes_per_ms = u64::from(rate) * 2 / 1000;
        let speech_ms = (pcm.len() as u64 / bytes_per_ms) - 1000 - 500;
        assert!(
            *end > start + speech_ms / 2,
            "{rate} Hz: speech ended too early at {end} ms"
        );
    }
}

#[tokio::test]
async fn caller_speech_interrupts_agent_speech() {
    if !have("espeak-ng") || !have("sox") {
        return;
    }
    let provider = OfflineProvider::new(OfflineConfig::default());
    let mut session = provider.connect(settings(None)).await.unwrap();
    let long = "This is a long announcement about our opening hours. ".repeat(40);
    session.send(Command::Say(long)).await.unwrap();
    // Wait until the agent is audibly speaking, then the caller talks over it.
    loop {
        if let ModelEvent::Audio { .. } = next(&mut session, WAIT).await {
            break;
        }
    }
    feed(
        &session,
        &spoken_pcm("Stop, I have a question.", 0.2, 16_000),
    )
    .await;
    let events = until(&mut session, WAIT, |e| {
        matches!(e, ModelEvent::ResponseDone { .. })
    })
    .await;
    let started = events
        .iter()
        .position(|e| matches!(e, ModelEvent::SpeechStarted { .. }));
    assert!(
        started.is_some(),
        "no barge-in detected: {:?}",
        events.last()
    );
    assert_eq!(
        events.last(),
        Some(&ModelEvent::ResponseDone {
            status: ResponseStatus::Cancelled
        })
    );
}

#[tokio::test]
async fn missing_synthesizer_and_wrong_format_are_errors() {
    let provider = OfflineProvider::new(OfflineConfig {
        espeak_program: "/nonexistent/espeak-ng".into(),
        ..OfflineConfig::default()
    });
    let err = provider.connect(settings(None)).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::SynthesizerUnavailable { .. }),
        "{err}"
    );
    let mut s = settings(None);
    s.input_format = AudioFormat::Pcmu8k;
    let err = OfflineProvider::new(OfflineConfig::default())
        .connect(s)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::UnsupportedFormat {
                provider: "offline",
                ..
            }
        ),
        "{err}"
    );
}
