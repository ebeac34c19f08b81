//! What a phone call through any carrier bridge must show end to end, once the test's caller
//! has asked at 5 s and cut the long answer at 9 s: the greeting heard whole, the answer cut
//! where the caller spoke and truncated at what was acknowledged, the record of a call with the
//! digit, the tool, both sides' transcript, usage and latency, and the stereo recording.

use std::net::SocketAddr;
use std::path::Path;

use crate::support::api::{events_of, find, only_call_record};
use crate::support::calls::{AGENT_HZ, CALLER_HZ, WINDOW, ms, sounding_ms, spans_ms, tone_spans};
use crate::support::fake_openai::FakeOpenAi;
use crate::support::media::{Wav, to_8k};

/// `heard`: what the fake carrier's caller heard, at 8 kHz; `recording_rate`: the rate the
/// host records the carrier's stream at; `http`: the host's API.
pub async fn check_call(
    heard: &[i16],
    model: &FakeOpenAi,
    http: SocketAddr,
    transport: &str,
    recording_rate: u32,
) {
    // What the caller heard: the greeting as long as the model made it, then the answer cut
    // where the caller spoke.
    let tones = tone_spans(heard, AGENT_HZ, WINDOW * 10);
    eprintln!("agent audio heard (ms): {:?}", spans_ms(&tones));
    assert!(tones.len() >= 2, "greeting and answer heard: {tones:?}");
    let greeting = sounding_ms(&tone_spans(heard, AGENT_HZ, WINDOW), tones[0]);
    assert!((greeting - 3600.0).abs() < 100.0, "greeting {greeting} ms");
    // The answer: what of it played before the caller cut in at 9 s, a loaded machine's
    // playout gaps (which split it) left out.
    let answer: f64 = tones[1..]
        .iter()
        .filter(|(from, _)| ms(*from) < 9000.0)
        .map(|(from, to)| ms(to - from))
        .sum();
    let truncates = model.received_of("conversation.item.truncate");
    assert_eq!(truncates.len(), 1, "{truncates:?}");
    let audio_end_ms = truncates[0]["audio_end_ms"].as_u64().unwrap() as f64;
    eprintln!("answer heard {answer:.0} ms, truncated at {audio_end_ms} ms");
    // The truncation is the audio acknowledged when the caller interrupted; the caller also
    // heard what played until the `clear` reached the carrier (a chunk and a round trip, longer
    // on a loaded machine).
    assert!(
        answer < 9000.0 && audio_end_ms <= answer + 20.0 && answer - audio_end_ms <= 500.0,
        "heard {answer} ms, truncated at {audio_end_ms} ms"
    );

    // The record: a call with the digit, the tool, transcript, usage and latency.
    let record = only_call_record(http).await;
    let events = events_of(&record);
    let created = find(&events, "created");
    assert_eq!(created[0]["transport"], transport, "{created:?}");
    assert_eq!(created[0]["callee"], "2000");
    assert_eq!(find(&events, "dtmf")[0]["digits"], "5", "{events:?}");
    assert!(!find(&events, "tool-call").is_empty());
    assert!(!find(&events, "barge-in").is_empty());
    let transcript = record["transcript"].as_array().unwrap();
    let roles: Vec<&str> = transcript
        .iter()
        .filter_map(|l| l["role"].as_str())
        .collect();
    assert!(
        roles.contains(&"agent") && roles.contains(&"caller"),
        "{transcript:?}"
    );
    assert!(!find(&events, "usage").is_empty());
    assert!(!record["usage"].as_array().unwrap().is_empty(), "{record}");
    assert!(
        !record["latencies"].as_array().unwrap().is_empty(),
        "{record}"
    );
    let ended = find(&events, "ended");
    assert_eq!(ended[0]["abnormal"], false, "{ended:?}");

    // The recording: the caller left, the agent right as the caller heard it.
    let path = record["call"]["recording"].as_str().expect("a recording");
    let wav = Wav::read(Path::new(path));
    assert_eq!((wav.channels, wav.rate), (2, recording_rate));
    let channel = |i| to_8k(&wav.channel(i), recording_rate);
    let caller = tone_spans(&channel(0), CALLER_HZ, WINDOW * 10);
    assert_eq!(
        caller.len(),
        2,
        "the question and the interruption: {caller:?}"
    );
    let agent_channel = channel(1);
    let agent = tone_spans(&agent_channel, AGENT_HZ, WINDOW * 10);
    eprintln!("recorded agent audio (ms): {:?}", spans_ms(&agent));
    // As heard: a gap where a loaded machine let the playout run dry is not the greeting's.
    let greeting = sounding_ms(&tone_spans(&agent_channel, AGENT_HZ, WINDOW), agent[0]);
    assert!(
        (greeting - 3600.0).abs() < 100.0,
        "recorded greeting {greeting} ms"
    );
}
