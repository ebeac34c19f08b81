//! Cascade latency benchmark (ignored by default). Callers placed from this process (our SIP
//! endpoint + an RTP sender each) call 2000 (`receptionist`) on the release `switchboard`,
//! whose brain is a cascade of fakes that answer at once (OpenAI transcription as one JSON
//! answer, chat completions without pauses, OpenAI speech), so what the turns take is the
//! host's own work plus loopback HTTP and the fakes' parsing. Each caller speaks three
//! espeak-ng sentences after the greeting.
//!
//! Read from the host's `turn-latency` events: per stage, the caller's end of speech (the
//! voice detector's verdict) → final transcript (`stt`), request → first token (`llm`), first
//! sentence → first audio (`tts`); and host-in / host-out as for every brain. Also the host's
//! CPU time per call.
//!
//! Run by hand (it builds and runs the release binary):
//! `BENCH_CALLS=20 cargo test --release -p switchboard-tests --test all -- --ignored --nocapture cascade_bench::`

use std::time::Duration;

use crate::support::calls::speech_mic;
use crate::support::consumer::{dial_pcmu, test_config};
use crate::support::fake_chat::{FakeChat, Reply};
use crate::support::fake_speech::{self, FakeSpeech};
use crate::support::fake_transcription::{self, FakeTranscription};
use crate::support::host::Host;
use crate::support::load::{cpu_seconds, quantile};
use switchboard::sip::SipEndpoint;

/// The caller's track: quiet through the greeting, then three sentences.
fn track() -> Vec<i16> {
    speech_mic(
        14.0,
        &[
            (4.5, "When are you open?"),
            (8.0, "Thank you very much."),
            (11.0, "Goodbye for now."),
        ],
    )
}

/// One caller: dial, speak the track over RTP while taking the host's audio, hang up.
async fn caller(endpoint: SipEndpoint, sip_port: u16, n: u32, track: &[i16]) {
    let (peer, dialog) = dial_pcmu(&endpoint, format!("sip:2000@127.0.0.1:{sip_port}"), n).await;
    let secs = track.len() as u64 / 8000;
    tokio::join!(
        peer.stream_pcmu(track, 0x2000 + n),
        peer.receive_pcmu(Duration::from_secs(secs))
    );
    dialog.handle().hangup().await.ok();
}

/// The number after `name: ` in a logged event.
fn field(line: &str, name: &str) -> Option<f64> {
    line.split(&format!("{name}: "))
        .nth(1)?
        .split([',', ' ', '}'])
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn cascade_stage_latency() {
    let calls: u32 = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let stt = FakeTranscription::start(fake_transcription::Script::default()).await;
    let chat = FakeChat::start().await;
    for _ in 0..calls * 3 {
        chat.push(Reply::text(&["We are open ", "every day. ", "Anything else?"]).at_once());
    }
    let speech = FakeSpeech::start(fake_speech::Script {
        chunk_interval: Duration::ZERO,
        ..fake_speech::Script::default()
    })
    .await;
    let mut host = Host::builder()
        .release()
        .examples(&["receptionist"])
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "1000")
        .calls("codecs = [\"pcmu\"]")
        .rtp_ports(10000)
        .model(&format!(
            "provider = \"cascade\"\n\
             [model.cascade]\nstt = \"openai\"\nllm = \"fake\"\ntts = \"openai\"\n\
             [model.cascade.llms.fake]\nbase-url = \"{}\"\n\
             [model.cascade.openai-stt]\nbase-url = \"{}\"\nstream = false\n\
             [model.cascade.openai-tts]\nbase-url = \"{}\"\napi-key = \"{}\"\n",
            chat.url(),
            stt.base_url,
            speech.base_url,
            fake_speech::Script::default().api_key,
        ))
        .start();
    let (endpoint, _events) = SipEndpoint::start(test_config()).await.unwrap();
    let track = std::sync::Arc::new(track());
    let cpu_before = cpu_seconds(host.process.pid());
    let tasks: Vec<_> = (0..calls)
        .map(|n| {
            let (endpoint, track, sip_port) = (endpoint.clone(), track.clone(), host.sip_port);
            tokio::spawn(async move {
                // Spread the call setups over a second, as a burst of real calls would be.
                tokio::time::sleep(Duration::from_millis(
                    u64::from(n) * 1000 / u64::from(calls),
                ))
                .await;
                caller(endpoint, sip_port, n, &track).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    host.log.drain(Duration::from_secs(3));
    let cpu = cpu_seconds(host.process.pid()) - cpu_before;
    let turns: Vec<&String> = host
        .log
        .seen
        .iter()
        .filter(|l| l.contains("TurnLatency") && l.contains("stt_ms"))
        .collect();
    assert!(!turns.is_empty(), "no turn latency with stages recorded");
    let column = |name: &str| {
        let mut v: Vec<f64> = turns.iter().filter_map(|l| field(l, name)).collect();
        v.sort_by(f64::total_cmp);
        (quantile(&v, 0.5), quantile(&v, 0.99))
    };
    println!(
        "cascade bench: {calls} concurrent calls, {} turns answered (of {} spoken), host CPU \
         {:.3} s a call",
        turns.len(),
        calls * 3,
        cpu / f64::from(calls)
    );
    for name in [
        "stt_ms",
        "llm_ms",
        "tts_ms",
        "host_in_ms",
        "host_out_ms",
        "model_ms",
    ] {
        let (p50, p99) = column(name);
        println!("cascade bench: {name:<12} p50 {p50:8.2} ms  p99 {p99:8.2} ms");
    }
    endpoint.shutdown().await;
}
