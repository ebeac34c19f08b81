//! A real phone (baresip) calls 2000 on the `switchboard` binary running the `receptionist`
//! agent on the Gemini Live provider, played by the protocol-faithful fake: the fake's 24 kHz
//! speech reaches the phone, the phone's audio reaches the fake as 16 kHz PCM, a `toolCall`
//! runs in the agent and its `toolResponse` reaches the fake, `interrupted` flushes playout,
//! transcripts and usage are call events; a close with an error code ends the call with the
//! apology.

use std::time::Duration;

use crate::support::baresip::Baresip;
use crate::support::calls::{
    AGENT_HZ, CALLER_HZ, RATE, WINDOW, dial, loud_spans, mic, ms, recording, sounding_ms, spans_ms,
    tone_spans,
};
use crate::support::fake_gemini::{FakeGemini, Reply, Script};
use crate::support::host::Host;
use crate::support::media::{onset_correlation, to_8k, tone_sequence};
use crate::support::model_audio::pcm16_samples;
use crate::support::process::require;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The switchboard binary with the receptionist on 2000 and the Gemini provider at `fake`.
fn start_host(fake: &FakeGemini) -> Host {
    Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"gemini\"\nbase-url = \"{}\"\napi-key = \"gm-test\"",
            fake.url
        ))
        .start()
}

/// All caller audio the fake received, as 16 kHz samples, after checking its declared format.
fn audio_received(fake: &FakeGemini) -> Vec<i16> {
    let mut samples = Vec::new();
    for input in fake.received_of("realtimeInput") {
        let audio = &input["audio"];
        assert_eq!(audio["mimeType"], "audio/pcm;rate=16000", "{input}");
        let bytes = B64.decode(audio["data"].as_str().unwrap()).unwrap();
        samples.extend(pcm16_samples(&bytes));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptionist_on_gemini_full_call() {
    if !require("baresip") {
        return;
    }
    let voice = tone_sequence(24000, 4.0);
    let fake = FakeGemini::start(Script {
        replies: vec![
            Reply::Echo,
            Reply::ToolCall {
                name: "opening_hours".into(),
                args: serde_json::json!({}),
            },
            Reply::Speech {
                transcript: "We are open Monday to Friday from nine to five, and on Saturdays."
                    .into(),
                audio_ms: 10_000,
            },
            Reply::Speech {
                transcript: "Sure.".into(),
                audio_ms: 500,
            },
        ],
        // Twice real time: audio queues up at the host, so an interruption has some to flush.
        chunk_interval: Duration::from_millis(50),
        voice: Some(voice.clone()),
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake);
    // The greeting (12 words, 3.6 s) plays first; the caller asks at 5 s with speech-like
    // tones, and talks over the (10 s) answer at 10 s.
    let question = tone_sequence(RATE as u32, 1.2);
    let mut track = mic(30.0, &[(10.0, 0.8)]);
    track[5 * RATE..5 * RATE + question.len()].copy_from_slice(&question);
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &track,
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["Answered", "model: \"gemini\""], 5);

    host.expect(&["ToolCall", "opening_hours"], 20);
    let result = host.expect(&["ToolResult", "ok: true"], 5);
    assert!(result.contains("Monday to Friday"), "{result}");
    host.expect(&["Transcript", "Caller", "What are your opening hours?"], 5);
    host.expect(
        &[
            "Transcript",
            "Agent",
            "Thank you for calling Switchboard Demo",
        ],
        5,
    );
    host.expect(&["Usage", "input_tokens: 500", "output_tokens: 96"], 5);
    let barge = host.expect(&["BargeIn"], 20);
    host.expect(&["Transcript", "Agent", "Sure."], 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    // The agent's result reached the model as the function response of that call.
    let responses = fake.received_of("toolResponse");
    assert_eq!(responses.len(), 1, "{responses:?}");
    let response = &responses[0]["functionResponses"][0];
    assert_eq!(response["id"], "fc_001", "{response}");
    assert_eq!(response["name"], "opening_hours", "{response}");
    let hours = response["response"]["result"]["hours"].as_str().unwrap();
    assert!(hours.contains("Monday to Friday"), "{response}");
    let setup = &fake.received_of("setup")[0];
    assert!(
        setup["tools"][0]["functionDeclarations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "opening_hours"),
        "{setup}"
    );

    // The phone's question reached the model as 16 kHz PCM, faithfully.
    let received = audio_received(&fake);
    let up = onset_correlation(&question, &to_8k(&received, 16000), RATE);
    // The greeting the fake spoke (the start of its voice) is what the phone heard.
    let heard = recording(&phone, "-dec.wav");
    let down = onset_correlation(&to_8k(&voice, 24000), &heard, 3 * RATE);
    eprintln!("phone → fake {up:.3}, fake → phone {down:.3}");
    assert!(up >= 0.9, "caller audio at the fake: {up:.3}");
    assert!(down >= 0.9, "the fake's speech at the phone: {down:.3}");

    // What the phone heard: greeting, the answer cut by the caller, then "Sure.".
    let spoken = recording(&phone, "-enc.wav");
    let agent = loud_spans(&heard, WINDOW * 10);
    let caller = tone_spans(&spoken, CALLER_HZ, WINDOW * 10);
    eprintln!(
        "agent spans heard (ms): {:?}; caller's interruption: {:?}; {barge}",
        spans_ms(&agent),
        spans_ms(&caller)
    );
    assert!(agent.len() >= 3, "greeting, answer, reply: {agent:?}");
    let greeting = sounding_ms(&loud_spans(&heard, WINDOW), agent[0]);
    assert!((greeting - 3600.0).abs() < 60.0, "greeting {greeting} ms");
    // The question's tones may hold a little 500 Hz too; the interruption is the last span.
    let interruption = *caller.last().expect("the interruption was sent");
    assert!(ms(interruption.0) > 9000.0, "{caller:?}");
    let answer = agent[1];
    let heard_ms = ms(answer.1 - answer.0);
    // How long agent audio went on after the caller started talking: the fake's VAD needs a
    // frame, then `interrupted` crosses the socket and the host flushes its queue.
    let stop_ms = ms(answer.1) - ms(interruption.0);
    assert!(heard_ms < 5000.0, "the 10 s answer was cut: {heard_ms} ms");
    assert!(
        (0.0..400.0).contains(&stop_ms),
        "agent audio stopped promptly: {stop_ms} ms"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_error_close_plays_the_apology_and_ends_the_call() {
    if !require("baresip") || !require("espeak-ng") {
        return;
    }
    let fake = FakeGemini::start(Script {
        // Greeting, then the caller's question makes the fake close with an internal error.
        replies: vec![
            Reply::Echo,
            Reply::Close {
                code: 1011,
                reason: "Internal error encountered.".into(),
            },
        ],
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake);
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;

    host.expect(
        &[
            "ModelError",
            "model session closed",
            "1011",
            "Internal error",
        ],
        20,
    );
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the host hung up after the apology: {}",
        phone.log()
    );
    host.expect(&["call ended", "model session closed"], 10);

    // After the greeting, the apology: espeak-ng speech, not the fake's tone.
    let heard = recording(&phone, "-dec.wav");
    let tones = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    assert!(
        (sounding_ms(&tone_spans(&heard, AGENT_HZ, WINDOW), tones[0]) - 3600.0).abs() < 60.0,
        "greeting first: {tones:?}"
    );
    let apology = loud_spans(&heard[tones[0].1..], WINDOW * 10);
    let loud_ms: f64 = apology.iter().map(|&(a, b)| ms(b - a)).sum();
    assert!(
        loud_ms > 500.0,
        "the apology was heard: {:?}",
        spans_ms(&apology)
    );
    assert!(host.is_running());
}
