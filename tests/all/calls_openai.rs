//! A real phone (baresip) calls 2000 on the `switchboard` binary running the `receptionist`
//! agent on the OpenAI Realtime provider, played by the protocol-faithful fake: audio both
//! ways, a tool call answered by the agent, transcripts and usage as call events, barge-in with
//! an exact truncation, and the offline apology when the provider drops the socket.
//!
//! The fake speaks a 300 Hz tone; the phone's user "speaks" 500 Hz tones at chosen times of
//! the microphone file, which the fake's energy VAD turns into turns and barge-ins.

use std::time::Duration;

use crate::support::agents::example_manifest;
use crate::support::baresip::Baresip;
use crate::support::calls::{
    AGENT_HZ, CALLER_HZ, RATE, WINDOW, dial, loud_windows, mic, ms, recording, sounding_ms,
    spans_ms, tone_spans,
};
use crate::support::fake_openai::{FakeOpenAi, Received, Reply, Script, goodbye_replies};
use crate::support::host::{Host, warm_agent_cache};
use crate::support::media::{Wav, only_file, onset_correlation, to_8k, tone_sequence};
use crate::support::model_audio::pcm16_samples;
use crate::support::process::require;
use crate::support::sipp::sipp_callee;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// The switchboard binary with the receptionist on 2000 and the OpenAI provider at `fake`.
fn start_host(fake: &FakeOpenAi, api_key: &str) -> Host {
    start_host_with(fake, api_key, "pcmu")
}

fn start_host_with(fake: &FakeOpenAi, api_key: &str, codec: &str) -> Host {
    start_agent(fake, api_key, codec, "receptionist")
}

/// The switchboard binary with the example agent `agent` and the OpenAI provider at `fake`.
fn start_agent(fake: &FakeOpenAi, api_key: &str, codec: &str, agent: &str) -> Host {
    Host::builder()
        .examples(&[agent])
        .calls(&format!("codecs = [\"{codec}\"]"))
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"{api_key}\"",
            fake.url
        ))
        .start()
}

// The receptionist and its twins in other languages: the same call must go the same way
// whichever one answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptionist_on_openai_answers_with_a_tool() {
    answers_with_a_tool("receptionist", "2000").await;
}

/// The Python twin of the receptionist, through the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptionist_py_on_openai_answers_with_a_tool() {
    answers_with_a_tool("receptionist-py", "2001").await;
}

/// The JavaScript twin of the receptionist, through the same call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptionist_js_on_openai_answers_with_a_tool() {
    answers_with_a_tool("receptionist-js", "2002").await;
}

async fn answers_with_a_tool(agent: &str, number: &str) {
    if !require("baresip") || !require("sipp") {
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
    warm_agent_cache(agent).await;
    // The front desk the caller is transferred to at the end: a SIPp callee, granted in place of
    // the manifest's.
    let (_desk, _desk_dir, desk_port) = sipp_callee(None);
    let desk = format!("sip:frontdesk@127.0.0.1:{desk_port}");
    let manifest = std::fs::read_to_string(example_manifest(agent))
        .unwrap()
        .replacen("\"sip:front-desk@127.0.0.1\"", &format!("\"{desk}\""), 1);
    let mut host = Host::builder()
        .example_with_manifest(agent, manifest)
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config(&format!(
            "[agent.{agent}.config]\nfront-desk = \"{desk}\"\n"
        ))
        .start();
    // The greeting (12 words, 3.6 s) plays first; the caller asks at 5 s.
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, number, host.sip_port).await;

    host.expect(&["ToolCall", "opening_hours"], 20);
    let result = host.expect(&["ToolResult", "ok: true"], 5);
    assert!(result.contains("Monday to Friday"), "{result}");
    host.expect(&["Transcript", "Caller", "When are you open?"], 5);
    host.expect(&["Usage", "input_tokens: 301"], 5);
    host.expect(&["Transcript", "Agent", "We are open Monday"], 10);
    // The fake, like the real server, sends audio faster than real time: the transcript is
    // done long before the 2 s answer has been played.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Key 0: the agent says it puts the caller through, then transfers by REFER to the desk,
    // which the phone calls.
    ctrl.command("sndcode", "0").await;
    host.expect(&["Transfer", &desk, "requested"], 20);
    host.expect(&["Transfer", &desk, "completed", "200"], 20);
    host.expect(&["call ended", "Transferred"], 10);

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
    let tones = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    eprintln!("agent tone spans heard (ms): {:?}", spans_ms(&tones));
    assert_eq!(
        tones.len(),
        3,
        "greeting, answer and the words before the transfer: {tones:?}"
    );
    let greeting = sounding_ms(&tone_spans(&heard, AGENT_HZ, WINDOW), tones[0]);
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
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;

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
    let tones = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    let spoken = tone_spans(&sent, CALLER_HZ, WINDOW * 10);
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
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;

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
    let tones = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    let greeting = sounding_ms(&tone_spans(&heard, AGENT_HZ, WINDOW), tones[0]);
    assert!(
        (greeting - 3600.0).abs() < 60.0,
        "greeting first: {tones:?}"
    );
    let loud = loud_windows(&heard[tones[0].1..]);
    assert!(
        loud > 25,
        "the apology was heard: {loud} loud windows after the greeting"
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_call_gets_24k_pcm_both_ways() {
    if !require("baresip") {
        return;
    }
    let voice = tone_sequence(24000, 4.0);
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            Reply::Speech {
                transcript: "Yes.".into(),
                audio_ms: 1000,
            },
        ],
        voice: Some(voice.clone()),
        ..Script::default()
    })
    .await;
    let mut host = start_host_with(&fake, "test", "opus");
    // The greeting (3.6 s) first; the caller asks at 5 s with speech-like tones.
    let question = tone_sequence(RATE as u32, 1.2);
    let mut track = vec![0i16; 30 * RATE];
    track[5 * RATE..5 * RATE + question.len()].copy_from_slice(&question);
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=opus",
        "module sndfile.so\nmodule opus.so\nopus_bitrate 64000\n",
        &track,
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["Answered", "codec: \"opus\"", "model: \"openai\""], 5);
    host.expect(&["Transcript", "Agent", "Yes."], 20);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    // No G.711 on an Opus leg: the model is configured for 24 kHz PCM both ways.
    let update = &fake.received_of("session.update")[0]["session"]["audio"];
    let pcm24k = serde_json::json!({"type": "audio/pcm", "rate": 24000});
    assert_eq!(update["input"]["format"], pcm24k, "{update}");
    assert_eq!(update["output"]["format"], pcm24k, "{update}");
    // What baresip sent reached the model resampled to 24 kHz, faithfully.
    let appended: Vec<i16> = fake
        .received_of("input_audio_buffer.append")
        .iter()
        .flat_map(|e| pcm16_samples(&B64.decode(e["audio"].as_str().unwrap()).unwrap()))
        .collect();
    let up = onset_correlation(&question, &to_8k(&appended, 24000), RATE);
    // The fake's 24 kHz greeting is what the phone heard.
    let heard = recording(&phone, "-dec.wav");
    let down = onset_correlation(&to_8k(&voice, 24000), &heard, 3 * RATE);
    eprintln!("opus: phone → fake {up:.3}, fake → phone {down:.3}");
    assert!(up >= 0.9, "caller audio at the fake: {up:.3}");
    assert!(down >= 0.9, "the fake's speech at the phone: {down:.3}");
    assert!(host.is_running());
}

/// A hold that outlives the model session: the fake ends each session 8 s after it opened (as
/// OpenAI does at its maximum duration); the held call stays up, and on resume a new session
/// takes over with the conversation so far (the greeting, as an assistant item) and hears the
/// caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_longer_than_the_model_session_reconnects_on_resume() {
    if !require("baresip") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        max_session: Some(Duration::from_secs(8)),
        ..Script::default()
    })
    .await;
    let mut host = start_host(&fake, "test");
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "",
        &mic(40.0, &[]),
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;
    let greeting = host.expect(&["Transcript", "Agent"], 10);
    ctrl.command("hold", "").await;
    host.expect(&["Hold { held: true"], 10);
    host.expect(&["model session closed during the hold"], 15);
    assert_eq!(fake.upgrades().len(), 1);
    ctrl.command("resume", "").await;
    host.expect(&["Hold { held: false"], 10);
    host.expect(&["a new model session took over"], 10);
    assert_eq!(fake.upgrades().len(), 2, "one new session");
    // The history is sent before the session counts as taken over, but the fake may read it
    // a moment later.
    let greeting_is_context = |received: &[Received]| {
        received.iter().any(|r| {
            let item = &r.event["item"];
            r.event["type"] == "conversation.item.create"
                && item["role"] == "assistant"
                && item["content"][0]["type"] == "output_text"
                && item["content"][0]["text"]
                    .as_str()
                    .is_some_and(|text| greeting.contains(text))
        })
    };
    assert!(
        fake.wait_for(Duration::from_secs(5), greeting_is_context)
            .await,
        "the greeting came back as context: {:?} / {greeting}",
        fake.received_of("conversation.item.create")
    );
    // The caller's audio goes to the new session (PCMU: 8000 bytes a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let appended = fake.appended_by_connection();
    assert!(appended.len() == 2 && appended[1] >= 8000, "{appended:?}");
    assert!(
        !host.log.seen.iter().any(|l| l.contains("call ended")),
        "the call stayed up"
    );
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_ends_the_call_with_the_end_call_tool_after_its_goodbye_is_heard() {
    if !require("baresip") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: goodbye_replies(),
        caller_transcript: "That is all, thanks.".into(),
        // Real time, as the server streams it: the playout runs dry between chunks.
        delta_ms: 20,
        delta_interval: Duration::from_millis(20),
        ..Script::default()
    })
    .await;
    let mut host = Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]\nrecord = true")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config("[agent.receptionist]\nend-call = true")
        .start();
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(30.0, &[(5.0, 0.8)]),
    )
    .await;
    let _ctrl = dial(&phone, "2000", host.sip_port).await;
    host.expect(&["ToolCall", "end_call"], 20);
    // The host ends the call itself, once the goodbye has been played.
    host.expect(&["call ended", "AgentHangup"], 15);

    // The model was offered the tool beside the agent's own, and got the host's answer.
    let updates = fake.received_of("session.update");
    let tools = updates[0]["session"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(
        names.contains(&"end_call") && names.contains(&"opening_hours"),
        "{names:?}"
    );
    let outputs = fake.received_of("conversation.item.create");
    let output = outputs
        .iter()
        .find(|e| e["item"]["type"] == "function_call_output")
        .unwrap();
    assert!(
        output["item"]["output"]
            .as_str()
            .unwrap()
            .contains("goodbye"),
        "{output}"
    );

    // The phone heard the greeting and the whole 2 s goodbye before the line went down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let heard = recording(&phone, "-dec.wav");
    let tones = tone_spans(&heard, AGENT_HZ, WINDOW * 10);
    assert_eq!(
        tones.len(),
        2,
        "greeting and goodbye: {:?}",
        spans_ms(&tones)
    );
    let goodbye = ms(tones[1].1 - tones[1].0);
    assert!((goodbye - 2000.0).abs() < 60.0, "goodbye {goodbye} ms");
    // And the call's recording holds all of it, on the agent's side.
    let wav = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    let agent = to_8k(&wav.channel(1), wav.rate);
    let recorded = tone_spans(&agent, AGENT_HZ, WINDOW * 10);
    assert_eq!(recorded.len(), 2, "recorded: {:?}", spans_ms(&recorded));
    let fine = tone_spans(&agent, AGENT_HZ, WINDOW);
    let goodbye = sounding_ms(&fine, recorded[1]);
    assert!(
        (goodbye - 2000.0).abs() < 60.0,
        "recorded goodbye {goodbye} ms"
    );
    assert!(host.is_running());
}
