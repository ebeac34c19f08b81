//! `GET /v1/calls` over HTTP against the release binary with 100,000 calls in its SQLite store
//! (ignored by default; run with `--ignored --nocapture`). The history is written into the
//! running host's database file by this process (WAL lets both open it), then each list query
//! the dashboard uses is timed end to end: p50/p99 over many requests.

use std::time::Instant;

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::load::quantile;
use switchboard::store::{SqliteStore, StoreConfig, sample};

/// The request path of the i-th request of one kind of query.
type QueryPath = Box<dyn Fn(usize) -> String>;

const CALLS: usize = 100_000;
const REQUESTS: usize = 400;
const DAY: i64 = 86_400_000;
/// 2026-01-01.
const T0: i64 = 1_767_225_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn list_calls_over_http_with_100k_stored() {
    let host = Host::builder()
        .release()
        .examples(&["menu"])
        .rust_log("info,rsipstack=warn")
        .start();
    let store = SqliteStore::open(&StoreConfig {
        path: host.data.path().join("calls.db"),
        ..StoreConfig::default()
    })
    .unwrap();
    sample::populate(&store, CALLS, T0, 90 * DAY).await;
    store.shutdown().await.unwrap();

    let api = Api::new(host.http, None);
    let queries: [(&str, QueryPath); 5] = [
        ("newest first", Box::new(|_| "/v1/calls?limit=50".into())),
        (
            "active",
            Box::new(|_| "/v1/calls?active=true&limit=50".into()),
        ),
        (
            "agent",
            Box::new(|i| format!("/v1/calls?agent=agent{}&limit=50", i % 10)),
        ),
        (
            "number",
            Box::new(|i| {
                let number = sample::caller(i * 7);
                format!("/v1/calls?number={}&limit=50", urlencode(&number))
            }),
        ),
        (
            "one day",
            Box::new(|i| {
                let from = T0 + (i % 80) as i64 * DAY;
                format!("/v1/calls?from_ms={from}&to_ms={}&limit=50", from + DAY)
            }),
        ),
    ];
    println!("GET /v1/calls over HTTP, first page of 50, {CALLS} calls stored:");
    for (name, path) in &queries {
        let mut ms = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let t = Instant::now();
            let reply = api.get(&path(i)).await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  {name:<14} p50 {:.2} ms  p99 {:.2} ms",
            quantile(&ms, 0.5),
            quantile(&ms, 0.99)
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
