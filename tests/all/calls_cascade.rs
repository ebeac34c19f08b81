//! A real phone (baresip) calls the `switchboard` binary whose brain is a cascade of
//! protocol-faithful fakes: speech to text (OpenAI transcription, Deepgram streaming), a chat
//! completions language model, text to speech (OpenAI speech, ElevenLabs, Cartesia).
//!
//! The phone's user speaks espeak-ng sentences at chosen times of the microphone file; the
//! host's voice detector ends each turn, the speech-to-text fake answers with its script, the
//! language model fake with its replies, and the speech fakes make a 440 Hz tone of 50 ms per
//! character, so what the phone heard can be measured against what was said.

use std::time::Duration;

use serde_json::Value;

use crate::support::agents::greeter_on;
use crate::support::api::{events_of, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{
    WINDOW, dial, loud_windows, ms, offline_speech_ready, recording, sounding_ms, spans_ms,
    speech_mic, tone_spans,
};
use crate::support::fake_cartesia::{self, FakeCartesia};
use crate::support::fake_chat::{FakeChat, Reply};
use crate::support::fake_deepgram::{self, FakeDeepgram};
use crate::support::fake_elevenlabs::{self, FakeElevenLabs};
use crate::support::fake_speech::{self, FakeSpeech};
use crate::support::fake_transcription::{self, Answer, FakeTranscription};
use crate::support::host::Host;
use crate::support::model_audio::SPEECH_MS_PER_CHARACTER;
use crate::support::process::require;

/// The speech fakes' tone.
const SPEECH_HZ: f64 = 440.0;

/// The receptionist's greeting on the example config.
const GREETING: &str = "Thank you for calling Switchboard Demo. How can I help you today?";

fn ready() -> bool {
    require("baresip") && require("espeak-ng") && require("sox")
}

/// `[model]` for a cascade of OpenAI-compatible fakes as the default provider.
fn openai_cascade(stt: &FakeTranscription, chat: &FakeChat, speech: &FakeSpeech) -> String {
    format!(
        "provider = \"cascade\"\n\
         [model.cascade]\nstt = \"openai\"\nllm = \"fake\"\ntts = \"openai\"\n\
         [model.cascade.llms.fake]\nbase-url = \"{}\"\nmodel = \"fake-llm\"\napi-key = \"sk-chat\"\n\
         [model.cascade.openai-stt]\nbase-url = \"{}\"\napi-key = \"sk-stt\"\n\
         [model.cascade.openai-tts]\nbase-url = \"{}\"\napi-key = \"{}\"\n",
        chat.url(),
        stt.base_url,
        speech.base_url,
        fake_speech::Script::default().api_key,
    )
}

/// The text of a chat request's messages with `role`, in order.
fn contents(request: &Value, role: &str) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A long answer, a sentence a second: the caller interrupts it while the model still writes
/// it (its speech runs ahead of the text, as each sentence lasts longer than a second).
const LONG: [&str; 6] = [
    "We have three branches in town. ",
    "The main office is next to the station. ",
    "The second one is by the river and has a car park. ",
    "The third one opened last spring in the new mall. ",
    "All three keep the same opening hours during the week. ",
    "On Saturdays only the main office is open in the morning.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_greets_answers_with_a_tool_and_keeps_only_what_was_heard() {
    if !ready() {
        return;
    }
    let stt = FakeTranscription::start(fake_transcription::Script {
        api_key: Some("sk-stt".into()),
        answers: vec![
            Answer::text("When are you open?"),
            Answer::text("Tell me about your branches."),
            Answer::text("Stop, thank you."),
        ],
    })
    .await;
    let chat = FakeChat::start_with_key("sk-chat").await;
    chat.push(
        Reply::tool_calls(vec![("call_1", "opening_hours", vec!["{", "}"])]).with_usage(120, 9),
    );
    chat.push(Reply::text(&["We are open ", "Monday to Friday."]).with_usage(150, 8));
    chat.push(Reply::text(&LONG).with_chunk_delay(1000));
    chat.push(Reply::text(&["You are welcome."]));
    let speech = FakeSpeech::start(fake_speech::Script::default()).await;
    let mut host = Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]")
        .model(&openai_cascade(&stt, &chat, &speech))
        .start();
    // The greeting takes 3.25 s; the question at 5 s is answered after a tool call; the
    // second question at 9 s gets a long answer (at least 14 s of speech), interrupted at 15 s.
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &speech_mic(
            30.0,
            &[
                (5.0, "When are you open?"),
                (9.0, "Tell me about your branches."),
                (15.0, "Stop, thank you."),
            ],
        ),
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;

    host.expect(&["Transcript", "Caller", "When are you open?"], 20);
    host.expect(&["ToolCall", "opening_hours"], 10);
    let result = host.expect(&["ToolResult", "ok: true"], 5);
    assert!(result.contains("Monday to Friday"), "{result}");
    host.expect(
        &["Transcript", "Agent", "We are open Monday to Friday."],
        10,
    );
    let barge = host.expect(&["BargeIn"], 20);
    host.expect(&["Transcript", "Agent", "You are welcome."], 15);
    tokio::time::sleep(Duration::from_secs(2)).await;
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);

    // The language model saw: the question, the tool's result, then the conversation with
    // only what the caller heard of the long answer.
    let requests: Vec<Value> = chat.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    assert_eq!(
        contents(&requests[0], "user"),
        ["When are you open?"],
        "{:#}",
        requests[0]
    );
    let tool = &requests[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(tool["role"], "tool", "{tool}");
    assert_eq!(tool["tool_call_id"], "call_1");
    assert!(
        tool["content"]
            .as_str()
            .unwrap()
            .contains("Monday to Friday"),
        "{tool}"
    );
    let long = LONG.concat();
    let agent_said = contents(&requests[3], "assistant");
    let heard = agent_said
        .iter()
        .find(|t| t.starts_with("We have three"))
        .unwrap_or_else(|| panic!("the long answer's heard part: {agent_said:?}"));
    assert!(
        heard.len() < long.trim().len() && long.starts_with(heard.as_str()),
        "only a prefix of the long answer was heard: {heard:?}"
    );
    // The record's barge-in says how much was played: the words kept match it at the voice's
    // pace, learnt from the greeting and the first answer (50 ms a character), give or take a
    // word as the cut falls between words.
    let played_ms: f64 = barge
        .split("played_ms: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("played_ms in {barge}"));
    let expected_chars = played_ms / f64::from(SPEECH_MS_PER_CHARACTER);
    eprintln!(
        "barge-in after {played_ms} ms of the long answer: {} characters kept of {} ({expected_chars:.0} heard)",
        heard.len(),
        long.len()
    );
    assert!(
        (heard.len() as f64 - expected_chars).abs() <= 14.0,
        "kept {heard:?} for {played_ms} ms heard"
    );
    // The model was still writing: its stream was dropped.
    assert_eq!(
        chat.cancelled(),
        1,
        "the long answer's stream was cancelled"
    );

    // The speech-to-text fake got one WAV per caller turn, 8 kHz as the call.
    let turns = stt.received();
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert!(turns.iter().all(|t| t.wav_rate == Some(8000)), "{turns:?}");

    // What the phone heard: the greeting and the first answer as long as the speech fake made
    // them.
    let heard_audio = recording(&phone, "-dec.wav");
    let tones = tone_spans(&heard_audio, SPEECH_HZ, WINDOW * 10);
    eprintln!("speech heard (ms): {:?}", spans_ms(&tones));
    assert!(tones.len() >= 3, "greeting, answer, long answer: {tones:?}");
    let fine = tone_spans(&heard_audio, SPEECH_HZ, WINDOW);
    let greeting_ms = sounding_ms(&fine, tones[0]);
    let expected = (GREETING.len() as u32 * SPEECH_MS_PER_CHARACTER) as f64;
    assert!(
        (greeting_ms - expected).abs() < 100.0,
        "greeting {greeting_ms} ms, {expected} made"
    );
    assert!(
        ms(tones[1].0) > 5000.0,
        "the answer follows the question: {tones:?}"
    );

    // The record: usage per stage, and each answered turn's latency split by stage.
    let call = only_call_record(host.http).await;
    let usage = call["usage"].as_array().unwrap();
    for (stage, unit) in [("stt", "seconds"), ("llm", "tokens"), ("tts", "characters")] {
        assert!(
            usage.iter().any(|u| u["stage"] == stage
                && u["unit"] == unit
                && u["amount"].as_f64() > Some(0.0)),
            "{stage} {unit} in {usage:#?}"
        );
    }
    assert!(
        // 120 + 150 scripted, 10 for the last reply (the fake's default); the cancelled stream
        // never got to its usage chunk.
        usage.iter().any(|u| u["stage"] == "llm"
            && u["kind"] == "input"
            && u["amount"].as_f64() == Some(280.0)),
        "{usage:#?}"
    );
    let latencies = call["latencies"].as_array().unwrap();
    assert!(!latencies.is_empty(), "{call:#}");
    for latency in latencies {
        let stages = &latency["stages"];
        eprintln!("turn latency: {latency}");
        for stage in ["stt_ms", "llm_ms", "tts_ms"] {
            assert!(
                stages[stage].as_f64().is_some_and(|v| v >= 0.0),
                "{latency}"
            );
        }
    }
    assert!(host.is_running());
}

/// Three versions of one agent, deployed in turn into a running host, each asking for another
/// cascade profile: every stage's service changes between calls, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_agent_version_picks_its_cascade_without_a_restart() {
    if !ready() {
        return;
    }
    const MANIFEST: &str = "name = \"greeter\"\nnumbers = [\"4000\"]\n";
    let stt = FakeTranscription::start(fake_transcription::Script::default()).await;
    let deepgram = FakeDeepgram::start(fake_deepgram::Script::default()).await;
    let (chat_one, chat_two) = (FakeChat::start().await, FakeChat::start().await);
    let speech = FakeSpeech::start(fake_speech::Script::default()).await;
    let elevenlabs = FakeElevenLabs::start(fake_elevenlabs::Script::default()).await;
    let cartesia = FakeCartesia::start(fake_cartesia::Script::default()).await;
    let model = format!(
        "provider = \"offline\"\n\
         [model.cascade]\nllm = \"one\"\n\
         [model.cascade.llms.one]\nbase-url = \"{}\"\n\
         [model.cascade.llms.two]\nbase-url = \"{}\"\n\
         [model.cascade.profiles.a]\nstt = \"openai\"\nllm = \"one\"\ntts = \"openai\"\n\
         [model.cascade.profiles.b]\nstt = \"deepgram\"\nllm = \"two\"\ntts = \"elevenlabs\"\n\
         [model.cascade.profiles.c]\nstt = \"openai\"\nllm = \"two\"\ntts = \"cartesia\"\n\
         [model.cascade.openai-stt]\nbase-url = \"{}\"\n\
         [model.cascade.deepgram]\nurl = \"{}\"\napi-key = \"{}\"\n\
         [model.cascade.openai-tts]\nbase-url = \"{}\"\napi-key = \"{}\"\n\
         [model.cascade.elevenlabs]\nurl = \"{}\"\napi-key = \"{}\"\nvoice-id = \"voice-1\"\n\
         [model.cascade.cartesia]\nurl = \"{}\"\napi-key = \"{}\"\nvoice-id = \"voice-2\"\n",
        chat_one.url(),
        chat_two.url(),
        stt.base_url,
        deepgram.url,
        fake_deepgram::Script::default().api_key,
        speech.base_url,
        fake_speech::Script::default().api_key,
        elevenlabs.url,
        fake_elevenlabs::Script::default().api_key,
        cartesia.url,
        fake_cartesia::Script::default().api_key,
    );
    let mut host = Host::builder()
        .agent(
            "greeter",
            greeter_on("cascade-a", Some("cascade:a")),
            MANIFEST.into(),
        )
        .calls("codecs = [\"pcmu\"]")
        .model(&model)
        .start();
    // Each call: the greeting, the caller's "hello there" at 2 s, the model's answer.
    let call = |host: &mut Host| {
        let sip_port = host.sip_port;
        async move {
            let phone = Baresip::start_with_mic(
                "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
                "",
                &speech_mic(12.0, &[(2.0, "Hello there.")]),
            )
            .await;
            let ctrl = dial(&phone, "4000", sip_port).await;
            (phone, ctrl)
        }
    };
    let versions = [("cascade-a", "a"), ("cascade-b", "b"), ("cascade-c", "c")];
    for (ended, (version, profile)) in versions.into_iter().enumerate() {
        if profile != "a" {
            host.agents.install(
                "greeter",
                &greeter_on(version, Some(&format!("cascade:{profile}"))),
                MANIFEST,
            );
            host.log
                .wait_for(&["agent version live", "greeter"], Duration::from_secs(60))
                .expect("the new version loaded");
        }
        let (phone, mut ctrl) = call(&mut host).await;
        // A new line: the earlier calls' answers are in the log too.
        host.log
            .wait_for(&["Transcript", "Agent", "OK."], Duration::from_secs(20))
            .unwrap_or_else(|| panic!("cascade:{profile} answered"));
        ctrl.command("hangup", "").await;
        host.wait_calls_ended(ended, 1, Duration::from_secs(10));
        drop(phone);
    }
    // Call 1 went to OpenAI transcription, the first model and OpenAI speech; call 2 to
    // Deepgram, the second model and ElevenLabs; call 3 to OpenAI transcription, the second
    // model and Cartesia.
    assert_eq!(chat_one.requests().len(), 1, "{:?}", chat_one.requests());
    assert_eq!(chat_two.requests().len(), 2, "{:?}", chat_two.requests());
    assert_eq!(stt.received().len(), 2, "{:?}", stt.received());
    assert_eq!(deepgram.upgrades().len(), 1, "{:?}", deepgram.upgrades());
    assert!(
        speech.requests().len() >= 2,
        "greeting and answer: {:?}",
        speech.requests()
    );
    assert!(
        elevenlabs.utterances().len() >= 2,
        "{:?}",
        elevenlabs.utterances()
    );
    assert!(!cartesia.packets().is_empty());
    assert!(host.is_running());
}

/// A language model that fails twice (the retry too): the record names the stage and the
/// caller hears the apology, not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_plays_the_apology_and_the_record_names_it() {
    if !ready() {
        return;
    }
    let stt = FakeTranscription::start(fake_transcription::Script {
        api_key: Some("sk-stt".into()),
        answers: vec![Answer::text("When are you open?")],
    })
    .await;
    let chat = FakeChat::start_with_key("sk-chat").await;
    for _ in 0..2 {
        chat.push(Reply::http_error(
            500,
            "server_error",
            "The server had an error",
        ));
    }
    let speech = FakeSpeech::start(fake_speech::Script::default()).await;
    let mut host = Host::builder()
        .examples(&["receptionist"])
        .calls("codecs = [\"pcmu\"]")
        .model(&openai_cascade(&stt, &chat, &speech))
        .start();
    let phone = Baresip::start_with_mic(
        "<sip:caller@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &speech_mic(30.0, &[(5.0, "When are you open?")]),
    )
    .await;
    let mut ctrl = dial(&phone, "2000", host.sip_port).await;

    host.expect(&["ModelError", "llm (fake)", "The server had an error"], 20);
    assert!(
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(30))
            .await
            .is_some(),
        "the host hung up after the apology: {}",
        phone.log()
    );
    host.expect(&["call ended"], 10);
    assert_eq!(chat.requests().len(), 2, "asked once more, then given up");

    // After the greeting (the fake's tone, 3.25 s), the apology: espeak-ng speech.
    let heard = recording(&phone, "-dec.wav");
    let tones = tone_spans(&heard, SPEECH_HZ, WINDOW * 10);
    let greeting_ms = ms(tones[0].1 - tones[0].0);
    assert!(
        (greeting_ms - 3250.0).abs() < 100.0,
        "the greeting first: {tones:?}"
    );
    let loud = loud_windows(&heard[tones[0].1..]);
    assert!(
        loud > 25,
        "the apology was heard: {loud} loud windows after the greeting"
    );
    let call = only_call_record(host.http).await;
    let errors: Vec<String> = events_of(&call)
        .iter()
        .filter(|(kind, _)| kind == "model-error")
        .map(|(_, data)| data["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        errors.iter().any(|m| m.contains("llm (fake)")),
        "the record names the stage: {errors:?}"
    );
    assert!(host.is_running());
}

/// A cascade with no network service at all: the local recogniser hears the caller (the
/// agent's phrases as its grammar), a language model on this machine (here the fake, as a
/// llama.cpp or Ollama server would be: no key) answers, espeak-ng speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_local_cascade_hears_offline_and_answers_through_a_local_model() {
    if !offline_speech_ready() {
        return;
    }
    let chat = FakeChat::start().await;
    chat.push(Reply::text(&["Of course, ", "let us find another time."]));
    let mut host = Host::builder()
        .examples(&["appointments"])
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"cascade\"\n[model.cascade]\nstt = \"local\"\nllm = \"local\"\n\
             tts = \"espeak\"\n[model.cascade.llms.local]\nbase-url = \"{}\"\n",
            chat.url()
        ))
        .start();
    // Patient 1001 has an appointment on file: the agent greets, then listens for its phrases.
    let phone = Baresip::start_with_mic(
        "<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "",
        &speech_mic(20.0, &[(4.0, "reschedule please")]),
    )
    .await;
    let mut ctrl = dial(&phone, "3000", host.sip_port).await;
    host.expect(&["Transcript", "Caller", "reschedule"], 25);
    // The agent's own branch, and the language model's answer, both spoken by espeak-ng.
    host.expect(&["Which day and time"], 10);
    host.expect(&["Transcript", "Agent", "let us find another time."], 15);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 10);
    let requests = chat.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "no key, no header"
    );
    let asked = contents(&requests[0].body, "user");
    assert!(
        asked.last().is_some_and(|t| t.contains("reschedule")),
        "the model heard the local transcript: {asked:?}"
    );
    assert!(host.is_running());
}
