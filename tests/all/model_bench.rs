//! Host-added latency through the OpenAI Realtime provider, against the fake on 127.0.0.1.
//!
//! Run: `cargo test -p switchboard-tests --test all -- --ignored --nocapture model_bench::`
//! (add `--release` for optimised figures). Latency is carried in the audio bytes themselves
//! (an 8-byte timestamp), so each figure covers: command in → provider → WebSocket frame
//! decoded by the fake, and fake encodes a frame → WebSocket → provider → event out. Both
//! include the fake's own JSON/base64 work, so they bound the host's share from above.

use std::time::{Duration, Instant};

use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::model_audio::{percentile, since_stamp, stamp};
use switchboard::model::openai::OpenAiProvider;
use switchboard::model::{
    AudioFormat, Command, ModelEvent, ModelProvider, OpenAiConfig, Secret, SessionSettings,
    TurnDetection,
};

/// Frames per session each way (20 ms each: two seconds of audio).
const FRAMES: usize = 100;

fn settings() -> SessionSettings {
    SessionSettings {
        model: None,
        instructions: "bench".into(),
        voice: None,
        language: None,
        tools: vec![],
        greeting: None,
        input_format: AudioFormat::Pcmu8k,
        output_format: AudioFormat::Pcmu8k,
        turn_detection: TurnDetection::default(),
        input_transcription: false,
        history: Vec::new(),
    }
}

/// Runs `sessions` concurrent sessions; returns (in latencies, out latencies).
async fn run(sessions: usize) -> (Vec<Duration>, Vec<Duration>) {
    let script = Script {
        replies: vec![Reply::Speech {
            transcript: "bench".into(),
            audio_ms: (FRAMES * 20) as u32,
        }],
        delta_ms: 20,
        delta_interval: Duration::from_millis(20),
        // Stamped frames are not speech: keep the fake's VAD out of the way.
        vad_rms: None,
        record_audio: false,
        stamp_audio: true,
        ..Script::default()
    };
    let fake = FakeOpenAi::start(script).await;
    let epoch = fake.epoch;
    let mut config = OpenAiConfig::new(Secret::new("sk-test"));
    config.base_url = fake.url.clone();
    config.connect_timeout_ms = 30_000;
    let provider = std::sync::Arc::new(OpenAiProvider::new(config));
    // Connect everything first: the figures are for steady streaming, not connection setup.
    let mut connecting = Vec::new();
    for _ in 0..sessions {
        let provider = provider.clone();
        connecting.push(tokio::spawn(async move {
            provider.connect(settings()).await.expect("connect")
        }));
    }
    let mut opened = Vec::new();
    for c in connecting {
        opened.push(c.await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, mut session) in opened.into_iter().enumerate() {
        // Calls do not tick in lockstep: spread session starts over one 20 ms frame.
        let offset = Duration::from_micros((20_000 * i / sessions) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            session.send(Command::Say("go".into())).await.unwrap();
            let commands = session.commands.clone();
            let sender = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                for _ in 0..FRAMES {
                    tick.tick().await;
                    let mut frame = vec![0xFFu8; 160];
                    stamp(&mut frame, epoch);
                    commands.send(Command::Audio(frame)).await.unwrap();
                }
            });
            let mut out = Vec::with_capacity(FRAMES);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(30), session.recv()).await {
                    Ok(Some(ModelEvent::Audio { data, .. })) => out.push(since_stamp(&data, epoch)),
                    Ok(Some(ModelEvent::ResponseDone { .. })) => break,
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            sender.await.unwrap();
            session.send(Command::Close).await.unwrap();
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    let expected_in = sessions * FRAMES;
    let start = Instant::now();
    while fake.append_latencies().len() < expected_in && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (fake.append_latencies(), out)
}

fn report(label: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{label:<44} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  max={:>8.1} µs",
        v.len(),
        percentile(&v, 50.0).as_secs_f64() * 1e6,
        percentile(&v, 99.0).as_secs_f64() * 1e6,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn model_provider_latency() {
    for sessions in [1, 200] {
        let (input, output) = run(sessions).await;
        assert_eq!(
            input.len(),
            sessions * FRAMES,
            "every frame reached the fake"
        );
        assert_eq!(
            output.len(),
            sessions * FRAMES,
            "every delta reached the caller"
        );
        report(
            &format!("{sessions} session(s): command in → ws frame out"),
            input,
        );
        report(
            &format!("{sessions} session(s): ws frame in → event out"),
            output,
        );
    }
}
