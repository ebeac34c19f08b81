//! OpenAI SIP connector under load, against the release binary (ignored by default; run with
//! `--ignored --nocapture`): 100 incoming-call webhooks a second for 5 s to the `receptionist`,
//! each call accepted and left running on its sideband socket. Reports the time from a webhook
//! going out to its accept coming in (routing, the agent's `on-start`, the accept request:
//! host time plus two loopback hops), p50/p99, and the host's resident memory per live
//! connector call.

use std::time::{Duration, Instant};

use crate::support::api::Api;
use crate::support::fake_openai_sip::{FakeOpenAiSip, Script};
use crate::support::host::Host;
use crate::support::load::quantile;

const RATE: u64 = 100;
const CALLS: u64 = 500;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn webhook_to_accept_at_100_calls_per_second() {
    let fake = FakeOpenAiSip::start(Script::default()).await;
    let (builder, webhook, _port) = fake.connect(
        Host::builder()
            .release()
            .examples(&["receptionist"])
            .rust_log("warn,switchboard=info,switchboard::call=warn,switchboard::bridges=warn")
            .env("SWITCHBOARD__AGENTS__MAX_INSTANCES", "2000"),
    );
    let host = builder.start();
    let pid = host.process.child.id();
    let fake = std::sync::Arc::new(fake);

    // Warm up: a few calls, hung up, so first-use costs are not counted.
    for i in 0..5 {
        let call = format!("rtc_warm{i}");
        fake.call(&webhook, &call, "sip:2000@sip.api.openai.com", &[])
            .await;
        fake.wait(10, "a warm-up call", |f| f.sockets(&call) == 1)
            .await;
        fake.hang_up(&call).await;
    }
    let api = Api::new(host.http, None);
    api.poll("/v1/calls?active=true", Duration::from_secs(10), |l| {
        l["calls"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CALLS {
        tokio::time::sleep_until((start + Duration::from_millis(i * 1000 / RATE)).into()).await;
        let (fake, webhook) = (fake.clone(), webhook.clone());
        tasks.push(tokio::spawn(async move {
            let call = format!("rtc_load{i:04}");
            fake.call(&webhook, &call, "sip:2000@sip.api.openai.com", &[])
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let sent_for = start.elapsed();
    fake.wait(60, "every call on its sideband", |f| {
        (0..CALLS).all(|i| f.sockets(&format!("rtc_load{i:04}")) == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);

    let mut latencies: Vec<f64> = fake
        .accept_latencies("rtc_load")
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    assert_eq!(latencies.len() as u64, CALLS);
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "{CALLS} calls in {:.1} s: webhook → accept p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         RSS {before} KiB idle, {after} KiB with {CALLS} live connector calls: {:.1} KiB per call",
        sent_for.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().unwrap(),
        (after.saturating_sub(before)) as f64 / CALLS as f64,
    );

    for i in 0..CALLS {
        fake.hang_up(&format!("rtc_load{i:04}")).await;
    }
    api.poll("/v1/calls?active=true", Duration::from_secs(60), |l| {
        l["calls"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
}
