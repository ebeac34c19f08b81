//! Campaign pacing benchmark (ignored by default): a campaign of `BENCH_CONTACTS` (200) at
//! `BENCH_CPS` (5) calls per second and `BENCH_CONCURRENT` (20) calls up at once, through a trunk
//! to SIPp callees that ring, answer 1 to 3 s later and hang up 20 s after that
//! (tests/sipp/uas_campaign_bench.xml). It reports the rate calls start at while the campaign
//! ramps up (the first `BENCH_CONCURRENT` calls, paced by the rate alone), the most calls
//! started in any one second, and the calls up (polled every 250 ms) while the campaign is
//! saturated, each against its setting.
//!
//! `cargo test --release -p switchboard-tests --test all -- --ignored --nocapture campaigns_bench::`

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::api::Api;
use crate::support::host::Host;
use crate::support::load::env_or;
use crate::support::ports::free_port;
use crate::support::sipp::{scenario, spawn_sipp};
use crate::support::tempdir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn campaign_pacing_holds_its_rate_and_concurrency() {
    let contacts: usize = env_or("BENCH_CONTACTS", 200);
    let cps: f64 = env_or("BENCH_CPS", 5.0);
    let concurrent: usize = env_or("BENCH_CONCURRENT", 20);

    let dir = tempdir("sipp-campaign-bench");
    let port = free_port().to_string();
    let scenario = scenario("uas_campaign_bench.xml").display().to_string();
    let limit = (contacts + 10).to_string();
    let _sipp = spawn_sipp(
        dir.path(),
        &[
            "-sf",
            scenario.as_str(),
            "-p",
            &port,
            "-m",
            &limit,
            "-l",
            "1000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let host = Host::builder()
        .release()
        .examples(&["menu"])
        .rtp_ports(4 * concurrent as u16 + 40)
        .config(&format!(
            "[[sip.trunks]]\nname = \"carrier\"\noutbound-proxy = \"127.0.0.1:{port}\""
        ))
        .env("SWITCHBOARD_TEST_CLOCK", "2026-12-07T15:00:00Z")
        .start();
    let api = Api::new(host.http, None);
    let list: Vec<Value> = (0..contacts)
        .map(|i| json!({"number": format!("+1212555{i:04}")}))
        .collect();
    let created = api
        .post(
            "/v1/campaigns",
            &json!({"name": "pacing", "agent": "menu", "via": "carrier", "from": "+15550100",
                "consent_basis": "benchmark", "max_attempts_per_day": 5,
                "pacing": {"max_concurrent": concurrent, "calls_per_second": cps},
                "contacts": list}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    api.post(&format!("/v1/campaigns/{id}/start"), &json!({}))
        .await;

    // Calls up, while there are still contacts waiting (the campaign saturated).
    let mut up = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(contacts as u64 * 3 + 120);
    loop {
        let p = api.get(&format!("/v1/campaigns/{id}")).await.json;
        if p["campaign"]["state"] == "finished" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{p}");
        let dialing = p["dialing"].as_u64().unwrap_or(0) as usize;
        let pending = p["pending"].as_u64().unwrap_or(0);
        if pending > 0 && dialing > 0 && p["attempts"].as_u64().unwrap_or(0) > concurrent as u64 {
            up.push(dialing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = api.get(&format!("/v1/campaigns/{id}/contacts")).await.json;
    let mut starts: Vec<i64> = rows["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["attempts"].as_array().unwrap().clone())
        .map(|a| a["started_at_ms"].as_i64().unwrap())
        .collect();
    starts.sort();
    let outcomes = api.get(&format!("/v1/campaigns/{id}")).await.json["outcomes"].clone();

    let ramp = &starts[..concurrent.min(starts.len())];
    let ramp_rate = (ramp.len() - 1) as f64 / ((ramp[ramp.len() - 1] - ramp[0]) as f64 / 1000.0);
    let peak_second = starts
        .iter()
        .map(|&t| starts.iter().filter(|&&u| u >= t && u < t + 1000).count())
        .max()
        .unwrap_or(0);
    let mean_up = up.iter().sum::<usize>() as f64 / up.len().max(1) as f64;
    let (min_up, max_up) = (
        up.iter().copied().min().unwrap_or(0),
        up.iter().copied().max().unwrap_or(0),
    );
    let total_s = (starts[starts.len() - 1] - starts[0]) as f64 / 1000.0;
    println!(
        "campaign pacing: {contacts} contacts, {} calls, outcomes {outcomes}",
        starts.len()
    );
    println!(
        "  ramp: {ramp_rate:.2} calls/s (setting {cps}, ratio {:.3}); most started in one second: {peak_second}",
        ramp_rate / cps
    );
    println!(
        "  saturated: calls up mean {mean_up:.1}, min {min_up}, max {max_up} over {} samples (setting {concurrent}, ratio {:.3})",
        up.len(),
        mean_up / concurrent as f64
    );
    println!("  all calls started within {total_s:.1} s");
}
