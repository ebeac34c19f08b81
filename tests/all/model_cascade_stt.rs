//! The cascade's speech-to-text services against their fakes (support/fake_transcription,
//! support/fake_deepgram), driven as the cascade drives them: 20 ms frames for the whole call,
//! with SpeechStarted / SpeechStopped where the local voice detector would send them.

use std::process::Command;
use std::time::Duration;

use switchboard::model::cascade::stt::deepgram::{DeepgramConfig, DeepgramStt};
use switchboard::model::cascade::stt::openai::{OpenAiStt, OpenAiSttConfig};
use switchboard::model::cascade::stt::{SpeechToText, SttEvent, SttInput, SttStream};
use switchboard::model::{AudioFormat, ErrorKind, Secret};
use tokio::sync::mpsc;

use crate::support::fake_deepgram::{self, FakeDeepgram};
use crate::support::fake_transcription::{Answer, FakeTranscription, Outcome, Script};
use crate::support::media::{Wav, resample};
use crate::support::model_audio::{pcm16_samples, pcm16_tone};
use crate::support::model_tls::{TlsFront, have_openssl};

const WAIT: Duration = Duration::from_secs(10);
/// The OpenAI service's pre-roll before the detector's speech start.
const PRE_ROLL_MS: f64 = 300.0;
/// Silence after speech before the local detector says the caller stopped.
const STOP_SILENCE_MS: u32 = 500;

/// The caller's side of a stream: audio as 20 ms PCM16 frames, and the detector's marks.
struct Caller {
    input: mpsc::Sender<SttInput>,
    rate: u32,
}

impl Caller {
    async fn audio(&self, samples: &[i16]) {
        for frame in samples.chunks(self.rate as usize / 50) {
            let bytes = frame.iter().flat_map(|s| s.to_le_bytes()).collect();
            self.input.send(SttInput::Audio(bytes)).await.unwrap();
        }
    }

    async fn silence(&self, ms: u32) {
        self.audio(&vec![0; (self.rate * ms / 1000) as usize]).await;
    }

    async fn mark(&self, mark: SttInput) {
        self.input.send(mark).await.unwrap();
    }

    /// One turn as the local detector marks it: SpeechStarted at the speech, SpeechStopped
    /// after the end-of-speech silence. Returns the audio in ms between the marks.
    async fn turn(&self, speech: &[i16]) -> f64 {
        self.mark(SttInput::SpeechStarted).await;
        self.audio(speech).await;
        self.silence(STOP_SILENCE_MS).await;
        self.mark(SttInput::SpeechStopped).await;
        speech.len() as f64 * 1000.0 / f64::from(self.rate) + f64::from(STOP_SILENCE_MS)
    }
}

fn tone(rate: u32, ms: u32) -> Vec<i16> {
    pcm16_samples(&pcm16_tone(rate, ms, 440.0, 8000))
}

/// espeak-ng's voice saying `text`, at `rate`.
fn speech(text: &str, rate: u32) -> Vec<i16> {
    let out = Command::new("espeak-ng")
        .args(["--stdout", text])
        .output()
        .expect("run espeak-ng");
    assert!(out.status.success(), "espeak-ng failed");
    let wav = Wav::parse(&out.stdout);
    resample(&wav.samples, wav.rate, rate)
}

async fn open(service: &dyn SpeechToText, rate: u32) -> (Caller, mpsc::Receiver<SttEvent>) {
    let SttStream { input, events } = service
        .open(AudioFormat::Pcm16 { rate }, Some("en-US".into()))
        .await
        .expect("stream opens");
    (Caller { input, rate }, events)
}

/// Next event within [`WAIT`]; `None` when the stream ended.
async fn next(events: &mut mpsc::Receiver<SttEvent>) -> Option<SttEvent> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event or the end within the limit")
}

/// Events up to and including the first Final.
async fn until_final(events: &mut mpsc::Receiver<SttEvent>) -> Vec<SttEvent> {
    let mut out = Vec::new();
    loop {
        let event = next(events).await.expect("stream open until the final");
        let done = matches!(event, SttEvent::Final { .. } | SttEvent::Failed(_));
        out.push(event);
        if done {
            return out;
        }
    }
}

/// Every event until the stream ends.
async fn to_end(events: &mut mpsc::Receiver<SttEvent>) -> Vec<SttEvent> {
    let mut out = Vec::new();
    while let Some(event) = next(events).await {
        out.push(event);
    }
    out
}

fn finals(events: &[SttEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Final { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn usage(events: &[SttEvent]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Usage { seconds } => Some(*seconds),
            _ => None,
        })
        .collect()
}

fn openai(fake: &FakeTranscription, key: Option<&str>) -> OpenAiSttConfig {
    OpenAiSttConfig {
        base_url: fake.base_url.clone(),
        api_key: key.map(Secret::new),
        timeout_ms: 5_000,
        ..OpenAiSttConfig::default()
    }
}

#[tokio::test]
async fn openai_streams_a_turn_with_its_pre_roll() {
    let fake = FakeTranscription::start(Script {
        api_key: Some("sk-test".into()),
        answers: vec![Answer::text("Where is my order?")],
    })
    .await;
    let mut config = openai(&fake, Some("sk-test"));
    config.prompt = Some("Acme orders".into());
    let service = OpenAiStt::new(config).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(1000).await;
    let turn_ms = caller.turn(&speech("where is my order", 16000)).await;
    caller.silence(400).await;

    let turn = until_final(&mut events).await;
    let received = fake.received();
    assert_eq!(received.len(), 1, "one request for one turn");
    let request = &received[0];
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
    let field = |name: &str| request.fields.get(name).map(String::as_str);
    assert_eq!(field("model"), Some("gpt-4o-mini-transcribe"));
    assert_eq!(field("language"), Some("en"));
    assert_eq!(field("prompt"), Some("Acme orders"));
    assert_eq!(field("response_format"), Some("json"));
    assert_eq!(field("stream"), Some("true"));
    assert_eq!(request.wav_rate, Some(16000));
    let wav_ms = request.wav_ms.expect("a valid WAV");
    let expected_ms = PRE_ROLL_MS + turn_ms;
    assert!(
        (wav_ms - expected_ms).abs() <= 60.0,
        "the WAV holds {wav_ms} ms, the turn with its pre-roll {expected_ms} ms"
    );

    let interims: Vec<&String> = turn
        .iter()
        .filter_map(|e| match e {
            SttEvent::Interim(text) => Some(text),
            _ => None,
        })
        .collect();
    assert!(
        !interims.is_empty(),
        "interim text before the final: {turn:?}"
    );
    assert_eq!(interims[0], "Where");
    assert!(
        interims
            .iter()
            .all(|i| "Where is my order?".starts_with(i.as_str()))
    );
    assert_eq!(
        turn.last(),
        Some(&SttEvent::Final {
            text: "Where is my order?".into(),
            confidence: None
        })
    );
    // gpt-4o models bill tokens: the usage row is the audio sent.
    drop(caller);
    let rest = to_end(&mut events).await;
    assert_eq!(usage(&rest).len(), 1, "{rest:?}");
    assert!((usage(&rest)[0] - wav_ms / 1000.0).abs() < 0.01, "{rest:?}");
    assert!(
        finals(&rest).is_empty(),
        "no turn open at the end: {rest:?}"
    );
}

#[tokio::test]
async fn openai_whisper_answers_json_billed_by_duration() {
    let fake = FakeTranscription::start(Script {
        api_key: None,
        answers: vec![Answer::text("hello there")],
    })
    .await;
    let mut config = openai(&fake, None);
    config.model = "whisper-1".into();
    config.stream = false;
    let service = OpenAiStt::new(config).unwrap();
    let (caller, mut events) = open(&service, 8000).await;
    caller.silence(500).await;
    let turn_ms = caller.turn(&tone(8000, 1000)).await;

    let turn = until_final(&mut events).await;
    assert_eq!(
        turn,
        [SttEvent::Final {
            text: "hello there".into(),
            confidence: None
        }],
        "no interim without streaming"
    );
    assert_eq!(
        next(&mut events).await,
        Some(SttEvent::Usage { seconds: 2.0 })
    );
    let request = &fake.received()[0];
    assert_eq!(request.authorization, None, "no key, no header");
    assert_eq!(
        request.fields.get("model").map(String::as_str),
        Some("whisper-1")
    );
    assert_eq!(request.fields.get("stream"), None);
    assert_eq!(request.wav_rate, Some(8000));
    let wav_ms = request.wav_ms.unwrap();
    assert!(
        (wav_ms - (PRE_ROLL_MS + turn_ms)).abs() <= 60.0,
        "{wav_ms} ms"
    );

    // The caller hangs up mid-turn: that turn is still transcribed, then the stream ends.
    caller.silence(400).await;
    caller.mark(SttInput::SpeechStarted).await;
    caller.audio(&tone(8000, 700)).await;
    drop(caller);
    let rest = to_end(&mut events).await;
    assert_eq!(finals(&rest), ["hello"], "{rest:?}");
    assert_eq!(usage(&rest), [1.0]);
    let wav_ms = fake.received()[1].wav_ms.unwrap();
    assert!(
        (wav_ms - (PRE_ROLL_MS + 700.0)).abs() <= 60.0,
        "{wav_ms} ms"
    );
}

#[tokio::test]
async fn openai_trusts_a_private_ca_from_ca_file() {
    if !have_openssl() {
        return;
    }
    let fake = FakeTranscription::start(Script::default()).await;
    let plain_port: u16 = fake
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .parse()
        .unwrap();
    let front = TlsFront::start(plain_port).await;
    let mut config = openai(&fake, None);
    config.base_url = format!("https://127.0.0.1:{}/v1", front.port);

    // Public roots only: the private CA is not trusted.
    let service = OpenAiStt::new(config.clone()).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.turn(&tone(16000, 300)).await;
    let SttEvent::Failed(error) = until_final(&mut events).await.pop().unwrap() else {
        panic!("a failure")
    };
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(fake.received().is_empty());
    drop(caller);

    config.ca_file = Some(front.ca_file.clone());
    let service = OpenAiStt::new(config).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.turn(&tone(16000, 300)).await;
    assert_eq!(finals(&until_final(&mut events).await), ["hello"]);
    assert_eq!(fake.received().len(), 1);
}

#[tokio::test]
async fn openai_finals_come_in_turn_order() {
    let slow = Duration::from_millis(800);
    let fake = FakeTranscription::start(Script {
        api_key: None,
        answers: vec![
            Answer::text("first turn").after(slow),
            Answer::text("second turn"),
        ],
    })
    .await;
    let service = OpenAiStt::new(openai(&fake, None)).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(400).await;
    caller.turn(&tone(16000, 400)).await;
    caller.silence(200).await;
    caller.turn(&tone(16000, 400)).await;

    let first = until_final(&mut events).await;
    assert_eq!(
        fake.received().len(),
        2,
        "the second turn was sent while the first was in flight"
    );
    let second = until_final(&mut events).await;
    assert_eq!(finals(&first), ["first turn"]);
    assert_eq!(finals(&second), ["second turn"]);
    // The second turn's events all follow the first's final (its usage included).
    assert!(matches!(second[0], SttEvent::Usage { .. }), "{second:?}");
    assert!(
        second[1..]
            .iter()
            .all(|e| !matches!(e, SttEvent::Interim(t) if t.starts_with("first"))),
        "{second:?}"
    );
}

#[tokio::test]
async fn openai_failures_are_typed_and_end_the_stream() {
    // A wrong key.
    let fake = FakeTranscription::start(Script {
        api_key: Some("sk-right".into()),
        answers: Vec::new(),
    })
    .await;
    let service = OpenAiStt::new(openai(&fake, Some("sk-wrong"))).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(300).await;
    caller.turn(&tone(16000, 300)).await;
    let SttEvent::Failed(error) = until_final(&mut events).await.pop().unwrap() else {
        panic!("a failure")
    };
    assert_eq!(error.kind, ErrorKind::Auth);
    assert_eq!(error.code.as_deref(), Some("401"));
    assert_eq!(error.message, "Incorrect API key provided.");
    assert_eq!(next(&mut events).await, None, "Failed ends the stream");
    drop(caller);

    // A server error, a rate limit, and a request without a model.
    let fail = |status, code: Option<&str>, message: &str| Answer {
        outcome: Outcome::Fail {
            status,
            code: code.map(str::to_string),
            message: message.into(),
        },
        delay: Duration::ZERO,
    };
    let fake = FakeTranscription::start(Script {
        api_key: None,
        answers: vec![
            fail(
                500,
                None,
                "The server had an error while processing your request.",
            ),
            fail(
                429,
                Some("rate_limit_exceeded"),
                "Rate limit reached for requests.",
            ),
        ],
    })
    .await;
    for (model, kind, code) in [
        ("gpt-4o-transcribe", ErrorKind::Server, "500"),
        ("gpt-4o-transcribe", ErrorKind::RateLimited, "429"),
        ("", ErrorKind::InvalidRequest, "400"),
    ] {
        let mut config = openai(&fake, None);
        config.model = model.into();
        let service = OpenAiStt::new(config).unwrap();
        let (caller, mut events) = open(&service, 16000).await;
        caller.turn(&tone(16000, 300)).await;
        let SttEvent::Failed(error) = until_final(&mut events).await.pop().unwrap() else {
            panic!("a failure for model {model:?}")
        };
        assert_eq!(
            (error.kind, error.code.as_deref()),
            (kind, Some(code)),
            "{error}"
        );
        assert_eq!(next(&mut events).await, None);
    }
    assert_eq!(
        fake.received()[2].fields.get("model").map(String::as_str),
        Some("")
    );
}

#[tokio::test]
async fn openai_stalled_server_times_out() {
    let fake = FakeTranscription::start(Script {
        api_key: None,
        answers: vec![Answer::text("too late").after(Duration::from_secs(30))],
    })
    .await;
    let mut config = openai(&fake, None);
    config.timeout_ms = 300;
    let service = OpenAiStt::new(config).unwrap();
    let (caller, mut events) = open(&service, 16000).await;
    caller.turn(&tone(16000, 300)).await;
    let started = std::time::Instant::now();
    let SttEvent::Failed(error) = until_final(&mut events).await.pop().unwrap() else {
        panic!("a failure")
    };
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

fn deepgram(fake: &FakeDeepgram, key: &str) -> DeepgramConfig {
    DeepgramConfig {
        url: fake.url.clone(),
        connect_timeout_ms: 3_000,
        ..DeepgramConfig::new(Secret::new(key))
    }
}

#[tokio::test]
async fn deepgram_commits_a_turn_once_on_speech_final() {
    let fake = FakeDeepgram::start(fake_deepgram::Script {
        transcripts: vec!["Where is my order?".into()],
        ..fake_deepgram::Script::default()
    })
    .await;
    let service = DeepgramStt::new(deepgram(&fake, "dg-test"));
    let (caller, mut events) = open(&service, 16000).await;

    let upgrade = &fake.upgrades()[0];
    assert_eq!(
        upgrade.headers.get("authorization").map(String::as_str),
        Some("Token dg-test")
    );
    let query = |name: &str| upgrade.query.get(name).map(String::as_str);
    assert_eq!(query("encoding"), Some("linear16"));
    assert_eq!(query("sample_rate"), Some("16000"));
    assert_eq!(query("channels"), Some("1"));
    assert_eq!(query("model"), Some("nova-3"));
    assert_eq!(query("interim_results"), Some("true"));
    assert_eq!(query("endpointing"), Some("300"));
    assert_eq!(query("utterance_end_ms"), Some("1000"));
    assert_eq!(query("smart_format"), Some("true"));
    assert_eq!(query("language"), Some("en-US"));

    caller.silence(500).await;
    caller.turn(&tone(16000, 1000)).await;
    caller.silence(1500).await;

    let turn = until_final(&mut events).await;
    assert!(
        matches!(turn.first(), Some(SttEvent::Interim(t)) if t == "Where"),
        "interims first: {turn:?}"
    );
    assert!(
        turn.iter()
            .any(|e| *e == SttEvent::Interim("Where is my".into()))
    );
    let Some(SttEvent::Final { text, confidence }) = turn.last() else {
        panic!("{turn:?}")
    };
    assert_eq!(text, "Where is my order?");
    assert!((confidence.unwrap() - 0.98).abs() < 1e-3);
    let sent = fake_deepgram::types(&fake.sent());
    assert!(sent.contains(&"SpeechStarted".to_string()), "{sent:?}");

    // UtteranceEnd follows speech_final: no second commit.
    assert!(
        fake.wait_sent(WAIT, |s| fake_deepgram::types(s)
            .contains(&"UtteranceEnd".into()))
            .await
    );
    drop(caller);
    let rest = to_end(&mut events).await;
    assert!(finals(&rest).is_empty(), "committed once: {rest:?}");
    assert_eq!(fake.received_types(), ["CloseStream"]);
}

#[tokio::test]
async fn deepgram_commits_on_utterance_end_without_speech_final() {
    let fake = FakeDeepgram::start(fake_deepgram::Script {
        transcripts: vec!["Cancel it.".into(), "Thanks.".into()],
        speech_final: false,
        ..fake_deepgram::Script::default()
    })
    .await;
    let service = DeepgramStt::new(deepgram(&fake, "dg-test"));
    let (caller, mut events) = open(&service, 8000).await;
    caller.silence(300).await;
    caller.turn(&tone(8000, 600)).await;
    caller.silence(1500).await;
    caller.turn(&tone(8000, 400)).await;
    caller.silence(1500).await;

    let first = until_final(&mut events).await;
    let second = until_final(&mut events).await;
    assert_eq!(finals(&first), ["Cancel it."]);
    assert_eq!(finals(&second), ["Thanks."]);
    let sent = fake.sent();
    assert!(
        sent.iter().all(|m| m["speech_final"] != true),
        "this mode never sends speech_final"
    );
    assert_eq!(
        fake_deepgram::types(&sent)
            .iter()
            .filter(|t| *t == "UtteranceEnd")
            .count(),
        2
    );
    drop(caller);
    assert!(finals(&to_end(&mut events).await).is_empty());
}

#[tokio::test]
async fn deepgram_close_stream_on_drop_keeps_the_last_words_and_bills_metadata() {
    let fake = FakeDeepgram::start(fake_deepgram::Script {
        transcripts: vec!["goodbye".into()],
        metadata_duration: Some(42.5),
        ..fake_deepgram::Script::default()
    })
    .await;
    let service = DeepgramStt::new(deepgram(&fake, "dg-test"));
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(300).await;
    caller.audio(&tone(16000, 800)).await;
    // Hung up mid-word: the service's last results come after CloseStream.
    drop(caller);
    let rest = to_end(&mut events).await;
    assert_eq!(finals(&rest), ["goodbye"], "{rest:?}");
    assert_eq!(usage(&rest), [42.5], "usage from Metadata.duration");
    assert!(
        !rest.iter().any(|e| matches!(e, SttEvent::Failed(_))),
        "{rest:?}"
    );
    assert_eq!(fake.received_types(), ["CloseStream"]);
    assert_eq!(fake.audio_bytes(), 1100 * 32);
    let sent = fake_deepgram::types(&fake.sent());
    assert_eq!(
        sent.last().map(String::as_str),
        Some("Metadata"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn deepgram_keepalive_holds_a_quiet_socket_open() {
    let fake = FakeDeepgram::start(fake_deepgram::Script {
        idle_timeout: Duration::from_millis(700),
        ..fake_deepgram::Script::default()
    })
    .await;
    let mut config = deepgram(&fake, "dg-test");
    config.keepalive_ms = 200;
    let service = DeepgramStt::new(config);
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(200).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the call is on hold
    caller.silence(200).await;
    let keepalives = fake
        .received_types()
        .iter()
        .filter(|t| *t == "KeepAlive")
        .count();
    assert!(keepalives >= 4, "{:?}", fake.received_types());
    drop(caller);
    let rest = to_end(&mut events).await;
    assert!(
        !rest.iter().any(|e| matches!(e, SttEvent::Failed(_))),
        "{rest:?}"
    );
    assert_eq!(
        fake.received_types().last().map(String::as_str),
        Some("CloseStream")
    );

    // Without KeepAlive the service closes the idle socket with an error: the stream fails.
    let mut config = deepgram(&fake, "dg-test");
    config.keepalive_ms = 60_000;
    let service = DeepgramStt::new(config);
    let (caller, mut events) = open(&service, 16000).await;
    caller.silence(200).await;
    let rest = to_end(&mut events).await;
    let Some(SttEvent::Failed(error)) = rest.last() else {
        panic!("{rest:?}")
    };
    assert_eq!(
        (error.kind, error.code.as_deref()),
        (ErrorKind::Timeout, Some("1011"))
    );
    assert!(error.message.contains("NET-0001"), "{error}");
}

#[tokio::test]
async fn deepgram_bad_key_fails_at_open() {
    let fake = FakeDeepgram::start(fake_deepgram::Script::default()).await;
    let service = DeepgramStt::new(deepgram(&fake, "dg-wrong"));
    let error = service
        .open(AudioFormat::Pcm16 { rate: 16000 }, None)
        .await
        .expect_err("refused");
    assert_eq!(
        (error.kind, error.code.as_deref()),
        (ErrorKind::Auth, Some("401"))
    );
    assert!(error.message.contains("INVALID_AUTH"), "{error}");
}
