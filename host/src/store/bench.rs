//! Store benchmarks, run on demand (they assert nothing about speed):
//!
//! ```text
//! cargo test -p switchboard --release --lib store::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `list_query_latency`: the `GET /v1/calls` query over 100,000 stored calls, first page of 50,
//! with each filter; p50/p99 over many runs (SQLite). `concurrent_event_throughput`: 200 calls
//! appending events as fast as each can (every append awaited until committed); events/s,
//! median of runs. `paced_event_commit_latency`: 1,000 calls each appending
//! `STORE_BENCH_EVENTS_PER_CALL_S` events a second (default 2); the rate reached and the commit
//! latency each append waited, p50/p99, after a warm-up. Both event benches run on SQLite and on Postgres (a
//! test server, see `tests::postgres_server`; skipped without Postgres).
//! Set `STORE_BENCH_PLANS=1` to print each list query's SQLite plan.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

const CALLS: usize = 100_000;
const SAMPLES: usize = 400;
const DAY: i64 = 86_400_000;
/// 2026-01-01, the start of the sample history.
const T0: i64 = 1_767_225_600_000;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture in release mode"]
async fn list_query_latency() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        path: dir.path().join("bench.db"),
        ..StoreConfig::default()
    };
    let store = SqliteStore::open(&cfg).unwrap();
    sample::populate(&store, CALLS, T0, 90 * DAY).await;

    let page_20_cursor = {
        let mut cursor = None;
        for _ in 0..20 {
            let f = CallFilter {
                cursor,
                ..Default::default()
            };
            cursor = store.list_calls(&f).await.unwrap().next_cursor;
        }
        cursor
    };
    type MakeFilter = Box<dyn Fn(usize) -> CallFilter>;
    let cases: Vec<(&str, MakeFilter)> = vec![
        ("no filter", Box::new(|_| CallFilter::default())),
        (
            "active",
            Box::new(|_| CallFilter {
                active: Some(true),
                ..Default::default()
            }),
        ),
        (
            "finished",
            Box::new(|_| CallFilter {
                active: Some(false),
                ..Default::default()
            }),
        ),
        (
            "agent",
            Box::new(|i| CallFilter {
                agent: Some(format!("agent{}", i % 10)),
                ..Default::default()
            }),
        ),
        (
            "number (20 calls each)",
            Box::new(|i| CallFilter {
                number: Some(sample::caller(i * 7)),
                ..Default::default()
            }),
        ),
        (
            "time range (1 day)",
            Box::new(|i| CallFilter {
                from_ms: Some(T0 + (i % 80) as i64 * DAY),
                to_ms: Some(T0 + (i % 80 + 1) as i64 * DAY),
                ..Default::default()
            }),
        ),
        (
            "agent + finished + 1 week",
            Box::new(|i| CallFilter {
                active: Some(false),
                agent: Some(format!("agent{}", i % 10)),
                from_ms: Some(T0 + (i % 80) as i64 * DAY),
                to_ms: Some(T0 + (i % 80 + 7) as i64 * DAY),
                ..Default::default()
            }),
        ),
        (
            "text, common word (10k hits)",
            Box::new(|_| CallFilter {
                text: Some("appointment".into()),
                ..Default::default()
            }),
        ),
        (
            "text, rare word (100 hits)",
            Box::new(|_| CallFilter {
                text: Some("cancel subscription".into()),
                ..Default::default()
            }),
        ),
        (
            "page 21 by cursor",
            Box::new(move |_| CallFilter {
                cursor: page_20_cursor.clone(),
                ..Default::default()
            }),
        ),
    ];
    println!("GET /v1/calls query, first page of 50, {CALLS} calls stored:");
    for (name, make) in &cases {
        if std::env::var_os("STORE_BENCH_PLANS").is_some() {
            let plan = super::sqlite::explain_list(&cfg.path, &make(0)).unwrap();
            println!("  plan: {}", plan.join(" | "));
        }
        let mut samples = Vec::with_capacity(SAMPLES);
        let mut rows = 0;
        for i in 0..SAMPLES {
            let f = make(i);
            let t = Instant::now();
            let page = store.list_calls(&f).await.unwrap();
            samples.push(t.elapsed());
            rows = page.calls.len();
        }
        println!(
            "  {name:<30} p50 {:>8.3} ms  p99 {:>8.3} ms  ({rows} rows)",
            percentile(&mut samples, 0.5).as_secs_f64() * 1e3,
            percentile(&mut samples, 0.99).as_secs_f64() * 1e3,
        );
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let id = format!("call-{:06}", (i * 241) % CALLS);
        let t = Instant::now();
        store.get_call(&id).await.unwrap();
        samples.push(t.elapsed());
    }
    println!(
        "  {:<30} p50 {:>8.3} ms  p99 {:>8.3} ms",
        "GET /v1/calls/{id} (get_call)",
        percentile(&mut samples, 0.5).as_secs_f64() * 1e3,
        percentile(&mut samples, 0.99).as_secs_f64() * 1e3,
    );
    let size = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);
    println!("  database file: {:.1} MiB", size as f64 / (1 << 20) as f64);
}

/// The back ends the event benches run on: SQLite in `dir`, and Postgres when installed.
async fn back_ends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn Store>)> {
    let sqlite = StoreConfig {
        path: dir.join("bench.db"),
        ..StoreConfig::default()
    };
    let mut stores = vec![("SQLite", open(&sqlite).await.unwrap())];
    if let Some(url) = super::tests::postgres_server::database() {
        let postgres = StoreConfig {
            url: Some(crate::model::Secret::new(url)),
            ..StoreConfig::default()
        };
        stores.push(("Postgres", open(&postgres).await.unwrap()));
    }
    stores
}

fn bench_call(id: &str, c: usize) -> NewCall {
    NewCall {
        id: id.to_string(),
        direction: Direction::Inbound,
        caller: format!("+1555{c:07}"),
        callee: "1000".into(),
        agent: Some("menu".into()),
        agent_version: None,
        transport: "udp".into(),
        started_at_ms: now_ms(),
        metadata: json!({}),
        node: "bench".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture in release mode"]
async fn concurrent_event_throughput() {
    const CONCURRENT: usize = 200;
    const RUN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in back_ends(dir.path()).await {
        let mut rates = Vec::new();
        for run in 0..3 {
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = (0..CONCURRENT)
                .map(|c| {
                    let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
                    tokio::spawn(async move {
                        let id = format!("run{run}-call{c}");
                        store.create_call(bench_call(&id, c)).await.unwrap();
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            store
                                .append_event(
                                    &id,
                                    now_ms(),
                                    "model.audio",
                                    json!({"frame": i, "bytes": 160}),
                                )
                                .await
                                .unwrap();
                            i += 1;
                        }
                        count.fetch_add(i, Ordering::Relaxed);
                    })
                })
                .collect();
            let started = Instant::now();
            tokio::time::sleep(RUN).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                t.await.unwrap();
            }
            let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            println!("  {name} run {run}: {rate:.0} events/s");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{name}: {CONCURRENT} concurrent calls appending (each append awaited until \
             committed): median {:.0} events/s",
            rates[rates.len() / 2]
        );
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture in release mode"]
async fn paced_event_commit_latency() {
    const CALLS: usize = 1000;
    const RUN: Duration = Duration::from_secs(12);
    /// Not measured: the calls being created, all at once (live calls start spread out).
    const WARM_UP: Duration = Duration::from_secs(2);
    let per_call: f64 = std::env::var("STORE_BENCH_EVENTS_PER_CALL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let every = Duration::from_secs_f64(1.0 / per_call);
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in back_ends(dir.path()).await {
        let started = Instant::now();
        let tasks: Vec<_> = (0..CALLS)
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = format!("paced-call{c}");
                    store.create_call(bench_call(&id, c)).await.unwrap();
                    // Calls spread over one period, as calls do not start in step.
                    let offset = every.mul_f64(c as f64 / CALLS as f64);
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut waited = Vec::new();
                    let mut i = 0u64;
                    while started.elapsed() < RUN {
                        tick.tick().await;
                        let t = Instant::now();
                        store
                            .append_event(&id, now_ms(), "turn", json!({"n": i}))
                            .await
                            .unwrap();
                        if started.elapsed() > WARM_UP {
                            waited.push(t.elapsed());
                        }
                        i += 1;
                    }
                    waited
                })
            })
            .collect();
        let mut waited = Vec::new();
        for t in tasks {
            waited.extend(t.await.unwrap());
        }
        let rate = waited.len() as f64 / (started.elapsed() - WARM_UP).as_secs_f64();
        println!(
            "{name}: {CALLS} calls x {per_call} events/s: {rate:.0} events/s written, \
             commit wait p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&mut waited, 0.5).as_secs_f64() * 1e3,
            percentile(&mut waited, 0.99).as_secs_f64() * 1e3,
            percentile(&mut waited, 1.0).as_secs_f64() * 1e3,
        );
        store.shutdown().await.unwrap();
    }
}
