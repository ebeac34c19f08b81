//! Host-added latency benchmark (ignored by default). Callers placed from this process (our SIP
//! endpoint + an RTP sender each) call 2000 (`receptionist`) on the `switchboard` binary, whose
//! OpenAI provider is the fake answering at once. Each caller speaks three turns.
//!
//! Measured at the host's edges, with send-time stamps in the audio (G.711 passes through to
//! the model, so a stamp crosses the host unchanged): RTP in → WebSocket out is each caller
//! packet's stamp as its `input_audio_buffer.append` reaches the fake; WebSocket in → RTP out is
//! each answer's first delta's stamp as the packet starting the talkspurt reaches the caller.
//! Both include the loopback hops and the peers' own parsing, so they overstate the host's
//! share slightly. The host's own per-turn split (`turn-latency` call events) is printed too.
//!
//! Run by hand (it builds and runs the release binary):
//! `BENCH_CALLS=200 cargo test -p switchboard-tests --test all -- --ignored --nocapture calls_bench::`

use std::time::Duration;

use crate::support::calls::mic;
use crate::support::consumer::test_config;
use crate::support::fake_openai::{FakeOpenAi, Script};
use crate::support::host::Host;
use crate::support::load::{pcmu_caller, quantile};
use switchboard::sip::SipEndpoint;

/// Each caller: quiet through the greeting, then three 0.6 s turns 3 s apart.
fn track() -> Vec<i16> {
    mic(14.0, &[(5.0, 0.6), (8.0, 0.6), (11.0, 0.6)])
}

/// p50 and p99 of `v`, in ms.
fn p50_p99(v: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (quantile(&ms, 0.5), quantile(&ms, 0.99))
}

/// Per-turn (host-in + host-out, host-in, host-out, model) in ms from the host's log.
fn turn_latencies(lines: &[String]) -> Vec<[f64; 4]> {
    let field = |line: &str, name: &str| -> f64 {
        line.split(&format!("{name}: "))
            .nth(1)
            .and_then(|v| v.split([',', ' ']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    lines
        .iter()
        .filter(|l| l.contains("TurnLatency"))
        .map(|l| {
            let (i, o) = (field(l, "host_in_ms"), field(l, "host_out_ms"));
            [i + o, i, o, field(l, "model_ms")]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn host_added_latency() {
    let calls: u32 = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        // Answers are generated at once; only the host's own work is left in the turn.
        record_audio: false,
        stamp_audio: true,
        ..Script::default()
    })
    .await;
    // The release build, with call events in the log (the turn latencies are read from it).
    let mut host = Host::builder()
        .release()
        .examples(&["receptionist"])
        .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "1000")
        .calls("codecs = [\"pcmu\"]")
        .rtp_ports(10000)
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .start();
    let (endpoint, _events) = SipEndpoint::start(test_config()).await.unwrap();
    let epoch = fake.epoch;
    let tasks: Vec<_> = (0..calls)
        .map(|n| {
            let endpoint = endpoint.clone();
            let sip_port = host.sip_port;
            tokio::spawn(async move {
                // Spread the call setups over a second, as a burst of real calls would be.
                tokio::time::sleep(Duration::from_millis(
                    u64::from(n) * 1000 / u64::from(calls),
                ))
                .await;
                // Returns the WebSocket in → RTP out latency of every talkspurt the host sent.
                let uri = format!("sip:2000@127.0.0.1:{sip_port}");
                pcmu_caller(endpoint, uri, n, &track(), Some(epoch)).await
            })
        })
        .collect();
    // Each call's first talkspurt is its greeting, sent while the other calls are being set up.
    let (mut greetings, mut answers) = (Vec::new(), Vec::new());
    for t in tasks {
        let talkspurts = t.await.unwrap();
        greetings.extend(talkspurts.first().copied());
        answers.extend(talkspurts.into_iter().skip(1));
    }
    let host_in = fake.append_latencies();
    assert!(
        !host_in.is_empty() && !answers.is_empty(),
        "stamps measured"
    );
    let (in50, in99) = p50_p99(&host_in);
    let (out50, out99) = p50_p99(&answers);
    let (greet50, greet99) = p50_p99(&greetings);
    println!(
        "calls bench: {calls} concurrent calls, at the host's edges: RTP in → WebSocket out p50 \
         {in50:.2} ms p99 {in99:.2} ms ({} packets); WebSocket in → RTP out, answers p50 \
         {out50:.2} ms p99 {out99:.2} ms ({} talkspurts), greetings p50 {greet50:.2} ms p99 \
         {greet99:.2} ms",
        host_in.len(),
        answers.len()
    );
    host.log.drain(Duration::from_secs(3));
    let turns = turn_latencies(&host.log.seen);
    assert!(!turns.is_empty(), "no turn latency recorded");
    let column = |i: usize| {
        let mut v: Vec<f64> = turns.iter().map(|t| t[i]).collect();
        v.sort_by(f64::total_cmp);
        (quantile(&v, 0.5), quantile(&v, 0.99))
    };
    let (added, host_in, host_out, model) = (column(0), column(1), column(2), column(3));
    println!(
        "calls bench: {calls} concurrent calls, host's own split, {} turns (of {} spoken): in+out \
         p50 {:.2} ms p99 {:.2} ms; host-in p50 {:.3} p99 {:.3} ms; host-out p50 {:.2} p99 {:.2} \
         ms; model (fake, incl. its VAD silence) p50 {:.1} p99 {:.1} ms",
        turns.len(),
        calls * 3,
        added.0,
        added.1,
        host_in.0,
        host_in.1,
        host_out.0,
        host_out.1,
        model.0,
        model.1
    );
    endpoint.shutdown().await;
}
