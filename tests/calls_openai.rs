//! A real phone (baresip) calls 2000 on the `switchboard` binary running the `receptionist`
//! agent on the OpenAI Realtime provider, played by the protocol-faithful fake: audio both
//! ways, a tool call answered by the agent, transcripts and usage as call events, barge-in with
//! an exact truncation, and the offline apology when the provider drops the socket.
//!
//! The fake speaks a 300 Hz tone; the phone's user "speaks" 500 Hz tones at chosen times of
//! the microphone file, which the fake's energy VAD turns into turns and barge-ins.

use std::time::Duration;

use serde_json::Value;
use switchboard_tests::fake_openai::{FakeOpenAi, Reply, Script};
use switchboard_tests::host::Host;
use switchboard_tests::sip::{Baresip, BaresipCtrl, require};

const RATE: usize = 8000;
/// 20 ms analysis windows.
const WINDOW: usize = RATE / 50;
const AGENT_HZ: f64 = 300.0;
const CALLER_HZ: f64 = 500.0;

/// The switchboard binary with the receptionist on 2000 and the OpenAI provider at `fake`.
fn start_host(fake: &FakeOpenAi, api_key: &str) -> Host {
    Host::start(
        &["receptionist"],
        &format!(
            "[calls]\nrtp-port-min = 44000\nrtp-port-max = 46000\ncodecs = [\"pcmu\"]\n\
             [model]\nprovider = \"openai\"\nbase-url = \"{}\"\napi-key = \"{api_key}\"\n",
            fake.url
        ),
    )
}

/// A microphone track: silence with 500 Hz "speech" at the given (start s, length s) spans.
fn mic(secs: f64, speech: &[(f64, f64)]) -> Vec<i16> {
    let mut s = vec![0i16; (secs * RATE as f64) as usize];
    for &(from, len) in speech {
        let a = (from * RATE as f64) as usize;
        let b = ((from + len) * RATE as f64) as usize;
        for (i, x) in s[a..b].iter_mut().enumerate() {
            let t = i as f64 / RATE as f64;
            *x = (8000.0 * (2.0 * std::f64::consts::PI * CALLER_HZ * t).sin()) as i16;
        }
    }
    s
}

/// Dial 2000 and wait until the call is up.
async fn dial(phone: &Baresip, sip_port: u16) -> BaresipCtrl {
    let mut ctrl = phone.ctrl().await;
    ctrl.command("dial", &format!("sip:2000@127.0.0.1:{sip_port}"))
        .await;
    assert!(
        ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(20))
            .await
            .is_some(),
        "{}",
        phone.log()
    );
    ctrl
}

/// First channel of a 16-bit WAV file baresip recorded (`-dec`: heard, `-enc`: sent).
fn recording(phone: &Baresip, suffix: &str) -> Vec<i16> {
    let path = std::fs::read_dir(phone.dir.path().join("rec"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("baresip recorded {suffix}"));
    let wav = std::fs::read(&path).unwrap();
    let channels = u16::from_le_bytes([wav[22], wav[23]]) as usize;
    let rate = u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]) as usize;
    assert_eq!(rate, RATE, "recorded at 8 kHz");
    let data = wav
        .windows(4)
        .position(|w| w == b"data")
        .map(|i| i + 8)
        .expect("data chunk");
    wav[data..]
        .chunks_exact(2 * channels)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Amplitude of the `hz` component of each 20 ms window (Goertzel): how much of the window is
/// the fake's (or the caller's) tone, whatever else is there.
fn tone_level(samples: &[i16], hz: f64) -> Vec<f64> {
    let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
    samples
        .chunks_exact(WINDOW)
        .map(|win| {
            let (mut s1, mut s2) = (0.0, 0.0);
            for &x in win {
                let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
            2.0 * power.sqrt() / WINDOW as f64
        })
        .collect()
}

/// Sample-accurate tone spans: (start, end) sample indexes where the 1 ms envelope of `hz`
/// stays on, joining gaps shorter than `min_gap` samples.
fn spans(samples: &[i16], hz: f64, min_gap: usize) -> Vec<(usize, usize)> {
    let levels = tone_level(samples, hz);
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &l) in levels.iter().enumerate() {
        if l < 1000.0 {
            continue;
        }
        let (a, b) = (i * WINDOW, (i + 1) * WINDOW);
        match out.last_mut() {
            Some(last) if a - last.1 < min_gap => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    // Refine the edges to the sample where the signal starts/stops (the tone is loud, the rest
    // is digital silence or other tones far quieter at the edge).
    for span in &mut out {
        let loud = |x: &i16| x.unsigned_abs() > 500;
        let from = span.0.saturating_sub(WINDOW);
        span.0 = from + samples[from..span.1].iter().position(loud).unwrap_or(0);
        let to = (span.1 + WINDOW).min(samples.len());
        span.1 = span.0 + samples[span.0..to].iter().rposition(loud).unwrap_or(0) + 1;
    }
    out
}

fn ms(samples: usize) -> f64 {
    samples as f64 * 1000.0 / RATE as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptionist_on_openai_answers_with_a_tool() {
    if !require("baresip") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            Reply::ToolCall {
                name: "opening_hours".into(),
                arguments: "{}".into(),
            },
            Reply::Speech {
                transcript: "We are open Monday to Friday from nine to five.".into(),
                audio_ms: 2000,
            },
        ],
        caller_transcript: "When are you open?".into(),
        // Real time, as the server streams it.
        delta_ms: 20,
        delta_interval: Duration::from_millis(20),
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake, "test");
    // The greeting (12 words, 3.6 s) plays first; the caller asks at 5 s.
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, host.sip_port).await;

    host.expect(&["ToolCall", "opening_hours"], 20);
    let result = host.expect(&["ToolResult", "ok: true"], 5);
    assert!(result.contains("Monday to Friday"), "{result}");
    host.expect(&["Transcript", "Caller", "When are you open?"], 5);
    host.expect(&["Usage", "input_tokens: 301"], 5);
    host.expect(&["Transcript", "Agent", "We are open Monday"], 10);
    // The fake, like the real server, sends audio faster than real time: the transcript is
    // done long before the 2 s answer has been played.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    // The agent's result reached the model as the function call's output.
    let outputs = fake.received_of("conversation.item.create");
    let output = outputs
        .iter()
        .find(|e| e["item"]["type"] == "function_call_output")
        .unwrap_or_else(|| panic!("no function_call_output: {outputs:?}"));
    let hours: Value = serde_json::from_str(output["item"]["output"].as_str().unwrap()).unwrap();
    assert!(
        hours["hours"]
            .as_str()
            .unwrap()
            .contains("Monday to Friday"),
        "{output}"
    );
    // The phone's audio reached the model, G.711 passed straight through.
    assert!(!fake.received_of("input_audio_buffer.append").is_empty());
    assert!(
        fake.appended_bytes() > 5 * 8000,
        "{} bytes",
        fake.appended_bytes()
    );
    let updates = fake.received_of("session.update");
    assert_eq!(
        updates[0]["session"]["audio"]["input"]["format"]["type"],
        "audio/pcmu"
    );

    // What the phone heard: the greeting tone, then the answer tone, as long as the fake made
    // them (3.6 s and 2 s), in that order around the caller's question.
    let heard = recording(&phone, "-dec.wav");
    let tones = spans(&heard, AGENT_HZ, WINDOW * 10);
    eprintln!(
        "agent tone spans heard (ms): {:?}",
        tones
            .iter()
            .map(|&(a, b)| (ms(a), ms(b) - ms(a)))
            .collect::<Vec<_>>()
    );
    assert_eq!(tones.len(), 2, "greeting and answer: {tones:?}");
    let greeting = ms(tones[0].1 - tones[0].0);
    let answer = ms(tones[1].1 - tones[1].0);
    assert!((greeting - 3600.0).abs() < 60.0, "greeting {greeting} ms");
    assert!((answer - 2000.0).abs() < 60.0, "answer {answer} ms");
    assert!(
        ms(tones[1].0) > 5800.0,
        "the answer follows the question: {tones:?}"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_barges_in_on_a_long_answer() {
    if !require("baresip") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            Reply::Speech {
                transcript: "Let me tell you everything about our opening hours.".into(),
                audio_ms: 10_000,
            },
            Reply::Speech {
                transcript: "Sure.".into(),
                audio_ms: 500,
            },
        ],
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake, "test");
    // Question at 5 s (answer from ~6.3 s, 10 s long), interruption at 9 s.
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8), (9.0, 1.0)]),
    )
    .await;
    let mut ctrl = dial(&phone, host.sip_port).await;

    let barge = host.expect(&["BargeIn"], 20);
    assert!(
        fake.wait_for(Duration::from_secs(5), |r| r
            .iter()
            .any(|e| e.event["type"] == "conversation.item.truncate"))
            .await
    );
    host.expect(&["Transcript", "Agent", "Sure."], 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 10);

    let truncates = fake.received_of("conversation.item.truncate");
    assert_eq!(truncates.len(), 1, "{truncates:?}");
    let audio_end_ms = truncates[0]["audio_end_ms"].as_u64().unwrap() as f64;
    // The fake accepted it (an error would echo the truncate's event_id).
    assert!(
        fake.received()
            .iter()
            .all(|r| r.event["type"] != "<not json>"),
        "client events are JSON"
    );

    let heard = recording(&phone, "-dec.wav");
    let sent = recording(&phone, "-enc.wav");
    let tones = spans(&heard, AGENT_HZ, WINDOW * 10);
    let spoken = spans(&sent, CALLER_HZ, WINDOW * 10);
    assert!(tones.len() >= 2, "greeting and answer heard: {tones:?}");
    assert_eq!(spoken.len(), 2, "two caller turns sent: {spoken:?}");
    let answer = tones[1];
    let heard_ms = ms(answer.1 - answer.0);
    // How long agent audio went on after the caller started talking (both recordings start
    // with the call's audio, so their clocks line up to within a packet).
    let stop_ms = ms(answer.1) - ms(spoken[1].0);
    eprintln!(
        "barge-in: answer heard {heard_ms:.1} ms, truncate audio_end_ms {audio_end_ms}, \
         agent audio stopped {stop_ms:.1} ms after the caller's onset; {barge}"
    );
    assert!(
        (heard_ms - audio_end_ms).abs() <= 40.0,
        "truncated at what was played: heard {heard_ms} ms, audio_end_ms {audio_end_ms}"
    );
    assert!(heard_ms < 5000.0, "the 10 s answer was cut: {heard_ms} ms");
    assert!(
        stop_ms < 400.0,
        "agent audio stopped promptly: {stop_ms} ms"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_drop_plays_the_apology_and_ends_the_call() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        // Greeting, then the caller's question makes the fake drop the socket.
        replies: vec![Reply::Echo, Reply::DropSocket],
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake, "test");
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, host.sip_port).await;

    host.expect(&["ModelError", "model session closed"], 20);
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the host hung up after the apology: {}",
        phone.log()
    );
    host.expect(&["call ended", "model session closed"], 10);

    // After the greeting tone, the apology: speech from espeak-ng, not the fake's tone.
    let heard = recording(&phone, "-dec.wav");
    let tones = spans(&heard, AGENT_HZ, WINDOW * 10);
    let greeting = ms(tones[0].1 - tones[0].0);
    assert!(
        (greeting - 3600.0).abs() < 60.0,
        "greeting first: {tones:?}"
    );
    let after: Vec<i16> = heard[tones[0].1..].to_vec();
    let loud = after
        .chunks_exact(WINDOW)
        .filter(|w| {
            (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / WINDOW as f64).sqrt() > 300.0
        })
        .count();
    assert!(
        loud > 25,
        "the apology was heard: {loud} loud windows after the greeting"
    );
    assert!(host.is_running());
}
