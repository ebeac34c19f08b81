//! The cascade's text-to-speech services against their protocol-faithful fakes
//! (support/fake_speech.rs, fake_elevenlabs.rs, fake_cartesia.rs): an answer of two sentences
//! comes back as audio of the length the fakes make for it, starting before the answer's end
//! was sent; the wire carries what each service asks for; errors arrive typed; a stalled
//! service times out on the configured stall time; a dropped stream is stopped at the service.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::model::cascade::tts::cartesia::{CartesiaConfig, CartesiaTts};
use switchboard::model::cascade::tts::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
use switchboard::model::cascade::tts::openai::{OpenAiTts, OpenAiTtsConfig};
use switchboard::model::cascade::tts::{TextToSpeech, TtsEvent, TtsInput, TtsStream};
use switchboard::model::{AudioFormat, ErrorKind, ProviderError, Secret};

use crate::support::fake_cartesia::{self, FakeCartesia};
use crate::support::fake_elevenlabs::{self, FakeElevenLabs};
use crate::support::fake_speech::{self, FakeSpeech};
use crate::support::model_audio::SPEECH_MS_PER_CHARACTER;

const WAIT: Duration = Duration::from_secs(10);
const FIRST: &str = "Your order shipped today.";
const SECOND: &str = "It arrives on Friday.";
/// The stall limit the services are configured with here.
const STALL_MS: u64 = 300;
/// How soon a dropped stream must reach the service.
const CANCEL_WITHIN: Duration = Duration::from_millis(200);
const PCM_16K: AudioFormat = AudioFormat::Pcm16 { rate: 16_000 };
const PCM_24K: AudioFormat = AudioFormat::Pcm16 { rate: 24_000 };

/// Next event, failing the test after [`WAIT`].
async fn next(stream: &mut TtsStream) -> TtsEvent {
    tokio::time::timeout(WAIT, stream.events.recv())
        .await
        .expect("an event in time")
        .expect("the stream ends with Done or Failed")
}

/// Events until the first audio.
async fn until_audio(stream: &mut TtsStream) -> Vec<TtsEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(stream).await;
        let audio = matches!(event, TtsEvent::Audio(_));
        assert!(
            !matches!(event, TtsEvent::Failed(_) | TtsEvent::Done),
            "{event:?}"
        );
        events.push(event);
        if audio {
            return events;
        }
    }
}

/// Events until Done or Failed, that one included.
async fn until_end(stream: &mut TtsStream) -> Vec<TtsEvent> {
    let mut events = Vec::new();
    loop {
        let event = next(stream).await;
        let end = matches!(event, TtsEvent::Done | TtsEvent::Failed(_));
        events.push(event);
        if end {
            return events;
        }
    }
}

/// The failure a stream ends with, and how long after `since` it came.
async fn failure(stream: &mut TtsStream, since: Instant) -> (ProviderError, Duration) {
    match until_end(stream).await.pop() {
        Some(TtsEvent::Failed(error)) => (error, since.elapsed()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// What a test checks of an error.
fn kind_code_message(error: &ProviderError) -> (ErrorKind, Option<&str>, &str) {
    (error.kind, error.code.as_deref(), error.message.as_str())
}

/// A piece of the answer.
fn piece(text: &str) -> TtsInput {
    TtsInput::Text(text.into())
}

async fn send(stream: &TtsStream, pieces: impl IntoIterator<Item = TtsInput>) {
    for piece in pieces {
        stream
            .input
            .send(piece)
            .await
            .expect("the stream takes input");
    }
}

/// Open an utterance in the configured voice, no language given, and send `pieces`.
async fn say(
    tts: &dyn TextToSpeech,
    format: AudioFormat,
    pieces: impl IntoIterator<Item = TtsInput>,
) -> TtsStream {
    let stream = tts.open(format, None, None).await.expect("open");
    send(&stream, pieces).await;
    stream
}

/// Say `pieces`; the failure the utterance ends with, and how long after the first piece
/// was sent.
async fn first_failure(
    tts: &dyn TextToSpeech,
    format: AudioFormat,
    pieces: impl IntoIterator<Item = TtsInput>,
) -> (ProviderError, Duration) {
    let mut stream = say(tts, format, []).await;
    let sent = Instant::now();
    send(&stream, pieces).await;
    failure(&mut stream, sent).await
}

/// A timeout on the configured stall limit.
fn assert_stall_timeout(error: &ProviderError, after: Duration) {
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    let limit = Duration::from_millis(STALL_MS);
    assert!(after >= limit - Duration::from_millis(20), "{after:?}");
    assert!(after < limit + Duration::from_millis(300), "{after:?}");
}

/// Say FIRST, wait for its first audio and drop the stream (a barge-in); when it was dropped.
async fn drop_while_speaking(tts: &dyn TextToSpeech, format: AudioFormat) -> Instant {
    let mut stream = say(tts, format, [piece(FIRST)]).await;
    until_audio(&mut stream).await;
    let dropped = Instant::now();
    drop(stream);
    dropped
}

/// Poll `seen` until it has something (the fakes record from their own tasks).
async fn wait_for<T>(mut seen: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = seen() {
            return value;
        }
        assert!(Instant::now() < deadline, "the fake never saw it");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Speak FIRST, wait for its first audio, then SECOND and End; all the events, checked for
/// length, order and usage.
async fn speak_two_sentences(tts: &dyn TextToSpeech, format: AudioFormat) -> Vec<TtsEvent> {
    let mut stream = tts
        .open(format, None, Some("en-US".into()))
        .await
        .expect("open");
    send(&stream, [piece(FIRST)]).await;
    // The first audio comes before the answer's end is even known.
    let mut events = until_audio(&mut stream).await;
    send(&stream, [piece(SECOND), TtsInput::End]).await;
    events.extend(until_end(&mut stream).await);
    assert_eq!(events.last(), Some(&TtsEvent::Done), "{:?}", events.last());
    let characters = (FIRST.chars().count() + SECOND.chars().count()) as u64;
    let audio: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Audio(a) => Some(a.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let expected_ms = characters * u64::from(SPEECH_MS_PER_CHARACTER);
    let frame = format.bytes_per_ms() * 20.0;
    let expected = expected_ms as f64 * format.bytes_per_ms();
    assert!(
        (audio.len() as f64 - expected).abs() <= frame,
        "{} bytes of {format}, expected {expected} (±{frame})",
        audio.len()
    );
    assert!(events.iter().all(|e| match e {
        TtsEvent::Audio(a) => a.len() % 2 == 0,
        _ => true,
    }));
    let billed: u64 = events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Usage { characters } => Some(*characters),
            _ => None,
        })
        .sum();
    assert_eq!(billed, characters);
    events
}

// --- OpenAI-compatible speech ---------------------------------------------------------------

fn openai(fake: &FakeSpeech, key: &str) -> OpenAiTts {
    OpenAiTts::new(OpenAiTtsConfig {
        base_url: fake.base_url.clone(),
        api_key: Some(Secret::new(key)),
        instructions: Some("Speak warmly.".into()),
        speed: Some(1.25),
        timeout_ms: 3_000,
        stall_timeout_ms: STALL_MS,
        ..Default::default()
    })
    .expect("provider")
}

#[tokio::test]
async fn openai_speech_streams_each_sentence_in_order() {
    let fake = FakeSpeech::start(fake_speech::Script::default()).await;
    let tts = openai(&fake, "sk-speech-test");
    assert_eq!(tts.formats(), vec![PCM_24K]);
    speak_two_sentences(&tts, PCM_24K).await;

    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one request per sentence");
    for (request, text) in requests.iter().zip([FIRST, SECOND]) {
        assert_eq!(request.path, "/v1/audio/speech");
        assert_eq!(
            request.header("authorization"),
            Some("Bearer sk-speech-test")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.body,
            json!({
                "model": "gpt-4o-mini-tts", "input": text, "voice": "marin",
                "response_format": "pcm", "instructions": "Speak warmly.", "speed": 1.25,
            })
        );
    }
}

#[tokio::test]
async fn openai_speech_works_ahead_but_keeps_the_order() {
    let hold = Duration::from_millis(300);
    let fake = FakeSpeech::start(fake_speech::Script {
        held: Some((FIRST.into(), hold)),
        ..Default::default()
    })
    .await;
    let format = PCM_24K;
    let pieces = [piece(FIRST), piece(" "), piece(SECOND), TtsInput::End];
    let mut stream = say(&openai(&fake, "sk-speech-test"), format, pieces).await;
    let events = until_end(&mut stream).await;
    assert_eq!(events.last(), Some(&TtsEvent::Done));
    // The second sentence was asked for while the first was still on its way...
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "nothing asked for the blank piece");
    let received = |text: &str| {
        requests
            .iter()
            .find(|r| r.body["input"] == text)
            .expect("requested")
            .received
    };
    assert!(received(SECOND) < received(FIRST) + hold);
    // ...and still came out second: the audio before the first usage report is the first
    // sentence's, all of it.
    let first_piece: usize = events
        .iter()
        .take_while(|e| !matches!(e, TtsEvent::Usage { .. }))
        .map(|e| match e {
            TtsEvent::Audio(a) => a.len(),
            _ => 0,
        })
        .sum();
    let expected =
        FIRST.chars().count() as f64 * f64::from(SPEECH_MS_PER_CHARACTER) * format.bytes_per_ms();
    assert_eq!(first_piece as f64, expected);
    assert_eq!(
        events.iter().find(|e| matches!(e, TtsEvent::Usage { .. })),
        Some(&TtsEvent::Usage {
            characters: FIRST.chars().count() as u64
        })
    );
}

#[tokio::test]
async fn openai_speech_first_byte_times_out() {
    let fake = FakeSpeech::start(fake_speech::Script {
        held: Some((FIRST.into(), Duration::from_secs(5))),
        ..Default::default()
    })
    .await;
    let config = OpenAiTtsConfig {
        base_url: fake.base_url.clone(),
        api_key: Some(Secret::new("sk-speech-test")),
        timeout_ms: 250,
        stall_timeout_ms: 5_000,
        ..Default::default()
    };
    let tts = OpenAiTts::new(config).unwrap();
    let (error, after) = first_failure(&tts, PCM_24K, [piece(FIRST)]).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(after >= Duration::from_millis(230), "{after:?}");
    assert!(after < Duration::from_millis(250 + 300), "{after:?}");
}

#[tokio::test]
async fn openai_speech_takes_the_utterance_voice_and_keyless_servers() {
    let fake = FakeSpeech::start(fake_speech::Script::default()).await;
    let tts = OpenAiTts::new(OpenAiTtsConfig {
        base_url: fake.base_url.clone(),
        ..Default::default()
    })
    .unwrap();
    let mut stream = tts.open(PCM_24K, Some("cedar".into()), None).await.unwrap();
    send(&stream, [piece(FIRST), TtsInput::End]).await;
    // The fake wants a key: no key, no header, a 401 that says so.
    let (error, _) = failure(&mut stream, Instant::now()).await;
    assert_eq!(
        (error.kind, error.code.as_deref()),
        (ErrorKind::Auth, Some("401"))
    );
    assert!(
        error.message.contains("didn't provide an API key"),
        "{error}"
    );
    let request = &fake.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.body["voice"], "cedar");
    let wrong = tts.open(PCM_16K, None, None).await;
    assert_eq!(wrong.unwrap_err().kind, ErrorKind::Unsupported);
}

#[tokio::test]
async fn openai_speech_errors_are_typed_by_status() {
    let fake = FakeSpeech::start(fake_speech::Script::default()).await;
    let tts = openai(&fake, "sk-wrong");
    let (error, _) = first_failure(&tts, PCM_24K, [piece(FIRST)]).await;
    assert_eq!(
        (error.kind, error.code.as_deref()),
        (ErrorKind::Auth, Some("401"))
    );
    assert!(
        error.message.starts_with("Incorrect API key provided"),
        "{error}"
    );

    let busy = FakeSpeech::start(fake_speech::Script {
        mode: fake_speech::Mode::Fail {
            status: "429 Too Many Requests",
            code: "rate_limit_exceeded",
            message: "Rate limit reached for requests",
        },
        ..Default::default()
    })
    .await;
    let tts = openai(&busy, "sk-speech-test");
    let (error, _) = first_failure(&tts, PCM_24K, [piece(FIRST)]).await;
    assert_eq!(
        kind_code_message(&error),
        (
            ErrorKind::RateLimited,
            Some("429"),
            "Rate limit reached for requests"
        )
    );
}

#[tokio::test]
async fn openai_speech_stall_times_out_on_the_stall_limit() {
    let fake = FakeSpeech::start(fake_speech::Script {
        mode: fake_speech::Mode::Stall,
        ..Default::default()
    })
    .await;
    let tts = openai(&fake, "sk-speech-test");
    let mut stream = say(&tts, PCM_24K, [piece(FIRST), TtsInput::End]).await;
    until_audio(&mut stream).await;
    let (error, after) = failure(&mut stream, Instant::now()).await;
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(after < Duration::from_millis(STALL_MS + 300), "{after:?}");
}

#[tokio::test]
async fn openai_speech_dropped_stream_aborts_the_request() {
    let fake = FakeSpeech::start(fake_speech::Script {
        chunk_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let dropped = drop_while_speaking(&openai(&fake, "sk-speech-test"), PCM_24K).await;
    let aborted = wait_for(|| fake.aborted().first().copied()).await;
    assert!(aborted - dropped < CANCEL_WITHIN, "{:?}", aborted - dropped);
}

// --- ElevenLabs -------------------------------------------------------------------------------

fn elevenlabs(fake: &FakeElevenLabs, key: &str) -> ElevenLabsTts {
    let mut config = ElevenLabsConfig::new(Secret::new(key), "voice-1");
    config.url = fake.url.clone();
    config.connect_timeout_ms = 3_000;
    config.stall_timeout_ms = STALL_MS;
    ElevenLabsTts::new(config)
}

#[tokio::test]
async fn elevenlabs_streams_an_utterance_on_one_socket() {
    let fake = FakeElevenLabs::start(fake_elevenlabs::Script::default()).await;
    let tts = elevenlabs(&fake, "xi-test-key");
    let format = PCM_16K;
    assert!(tts.formats().contains(&format));
    let ulaw = tts.open(AudioFormat::Pcmu8k, None, None).await;
    assert_eq!(ulaw.unwrap_err().kind, ErrorKind::Unsupported);
    speak_two_sentences(&tts, format).await;

    let utterances = fake.utterances();
    assert_eq!(utterances.len(), 1);
    let u = &utterances[0];
    assert_eq!(u.path, "/v1/text-to-speech/voice-1/stream-input");
    assert_eq!(
        u.query,
        "model_id=eleven_flash_v2_5&output_format=pcm_16000&language_code=en"
    );
    assert_eq!(u.header("xi-api-key"), Some("xi-test-key"));
    assert_eq!(
        u.packets,
        vec![
            json!({"text": " "}),
            json!({"text": format!("{FIRST} "), "flush": true}),
            json!({"text": format!("{SECOND} ")}),
            json!({"text": ""}),
        ]
    );
    assert_eq!(u.unspaced, 0);
    assert!(u.final_sent && u.closed_early.is_none());
}

#[tokio::test]
async fn elevenlabs_refusals_are_typed() {
    let fake = FakeElevenLabs::start(fake_elevenlabs::Script::default()).await;
    // The key is checked after the upgrade: the stream opens, then fails.
    let tts = elevenlabs(&fake, "xi-wrong");
    let (error, _) = first_failure(&tts, PCM_24K, [piece(FIRST)]).await;
    assert_eq!(
        kind_code_message(&error),
        (ErrorKind::Auth, Some("1008"), "Invalid API key")
    );

    let refusing = FakeElevenLabs::start(fake_elevenlabs::Script {
        mode: fake_elevenlabs::Mode::Close {
            code: 1008,
            reason: "Invalid model_id".into(),
        },
        ..Default::default()
    })
    .await;
    let tts = elevenlabs(&refusing, "xi-test-key");
    let (error, _) = first_failure(&tts, PCM_24K, [piece(FIRST)]).await;
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::InvalidRequest, "Invalid model_id")
    );
}

#[tokio::test]
async fn elevenlabs_stall_times_out_on_the_stall_limit() {
    let fake = FakeElevenLabs::start(fake_elevenlabs::Script {
        mode: fake_elevenlabs::Mode::Stall,
        ..Default::default()
    })
    .await;
    let tts = elevenlabs(&fake, "xi-test-key");
    let (error, after) = first_failure(&tts, PCM_24K, [piece(FIRST), TtsInput::End]).await;
    assert_stall_timeout(&error, after);
    // A stall is given up: the socket is closed.
    wait_for(|| fake.utterances()[0].closed_early).await;
}

#[tokio::test]
async fn elevenlabs_dropped_stream_closes_the_socket() {
    let fake = FakeElevenLabs::start(fake_elevenlabs::Script {
        chunk_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let dropped = drop_while_speaking(&elevenlabs(&fake, "xi-test-key"), PCM_24K).await;
    let closed = wait_for(|| fake.utterances()[0].closed_early).await;
    assert!(closed - dropped < CANCEL_WITHIN, "{:?}", closed - dropped);
    assert!(!fake.utterances()[0].final_sent);
}

// --- Cartesia ---------------------------------------------------------------------------------

fn cartesia(fake: &FakeCartesia, key: &str) -> CartesiaTts {
    let mut config = CartesiaConfig::new(Secret::new(key), "voice-uuid-1");
    config.url = fake.url.clone();
    config.connect_timeout_ms = 3_000;
    config.stall_timeout_ms = STALL_MS;
    CartesiaTts::new(config)
}

#[tokio::test]
async fn cartesia_streams_utterances_as_contexts_of_one_socket() {
    let fake = FakeCartesia::start(fake_cartesia::Script::default()).await;
    let tts = cartesia(&fake, "sk_car_test");
    let format = AudioFormat::Pcm16 { rate: 8_000 };
    assert!(tts.formats().contains(&format));
    let odd_rate = tts
        .open(AudioFormat::Pcm16 { rate: 11_025 }, None, None)
        .await;
    assert_eq!(odd_rate.unwrap_err().kind, ErrorKind::Unsupported);
    speak_two_sentences(&tts, format).await;
    speak_two_sentences(&tts, PCM_24K).await;

    let handshakes = fake.handshakes();
    assert_eq!(handshakes.len(), 1, "both utterances on one socket");
    assert_eq!(handshakes[0].header("x-api-key"), Some("sk_car_test"));
    assert_eq!(handshakes[0].header("cartesia-version"), Some("2025-04-16"));
    assert_eq!(handshakes[0].query, "cartesia_version=2025-04-16");

    let packets = fake.packets();
    assert_eq!(packets.len(), 6, "{packets:?}");
    let context = |p: &Value| p["context_id"].as_str().unwrap().to_string();
    assert_ne!(context(&packets[0]), context(&packets[3]));
    for (i, (transcript, more)) in [
        (format!("{FIRST} "), true),
        (format!("{SECOND} "), true),
        (String::new(), false),
    ]
    .into_iter()
    .enumerate()
    {
        let p = &packets[i];
        assert_eq!(context(p), context(&packets[0]));
        assert_eq!(
            *p,
            json!({
                "model_id": "sonic-2",
                "voice": {"mode": "id", "id": "voice-uuid-1"},
                "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
                "language": "en",
                "max_buffer_delay_ms": 0,
                "context_id": context(&packets[0]),
                "transcript": transcript,
                "continue": more,
            })
        );
    }
    assert_eq!(packets[3]["output_format"]["sample_rate"], 24000);
    assert!(fake.cancels().is_empty());
}

#[tokio::test]
async fn cartesia_errors_are_typed() {
    let fake = FakeCartesia::start(fake_cartesia::Script::default()).await;
    let refused = cartesia(&fake, "sk_wrong")
        .open(PCM_16K, None, None)
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.code.as_deref()),
        (ErrorKind::Auth, Some("401"))
    );

    let failing = FakeCartesia::start(fake_cartesia::Script {
        mode: fake_cartesia::Mode::Error {
            status_code: 429,
            message: "Too many concurrent requests".into(),
        },
        ..Default::default()
    })
    .await;
    let tts = cartesia(&failing, "sk_car_test");
    let (error, _) = first_failure(&tts, PCM_16K, [piece(FIRST)]).await;
    assert_eq!(
        kind_code_message(&error),
        (
            ErrorKind::RateLimited,
            Some("429"),
            "Too many concurrent requests"
        )
    );
}

#[tokio::test]
async fn cartesia_stall_times_out_on_the_stall_limit() {
    let fake = FakeCartesia::start(fake_cartesia::Script {
        mode: fake_cartesia::Mode::Stall,
        ..Default::default()
    })
    .await;
    let tts = cartesia(&fake, "sk_car_test");
    let (error, after) = first_failure(&tts, PCM_16K, [piece(FIRST), TtsInput::End]).await;
    assert_stall_timeout(&error, after);
}

#[tokio::test]
async fn cartesia_dropped_stream_cancels_its_context() {
    let fake = FakeCartesia::start(fake_cartesia::Script {
        chunk_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let tts = cartesia(&fake, "sk_car_test");
    let dropped = drop_while_speaking(&tts, PCM_16K).await;
    let (context, cancelled) = wait_for(|| fake.cancels().first().cloned()).await;
    assert!(
        cancelled - dropped < CANCEL_WITHIN,
        "{:?}",
        cancelled - dropped
    );
    assert_eq!(context, fake.packets()[0]["context_id"]);
    // The socket stays for the next utterance.
    speak_two_sentences(&tts, PCM_16K).await;
    assert_eq!(fake.handshakes().len(), 1);
}

#[tokio::test]
async fn cartesia_lost_socket_fails_its_utterances_and_the_next_reconnects() {
    let fake = FakeCartesia::start(fake_cartesia::Script {
        mode: fake_cartesia::Mode::DropFirstSocket,
        ..Default::default()
    })
    .await;
    let tts = cartesia(&fake, "sk_car_test");
    let format = PCM_16K;
    // At once, not after the stall limit.
    let (error, after) = first_failure(&tts, format, [piece(FIRST)]).await;
    assert_eq!(error.kind, ErrorKind::Server, "{error}");
    assert!(after < Duration::from_millis(STALL_MS), "{after:?}");
    speak_two_sentences(&tts, format).await;
    assert_eq!(fake.handshakes().len(), 2);
}
