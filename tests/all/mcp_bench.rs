//! MCP tool-call overhead added by the host (ignored by default). One call to the `mcp-agent`
//! fixture on the release `switchboard` binary, whose model (the OpenAI fake) calls the
//! reference server's `echo` tool (server-everything in its own network namespace) N times in
//! a row: each result asks for the next response, which is the next call.
//!
//! Per call, from the fake's clock: the host's `response.create` that asked for the call to
//! the `function_call_output` with its result. That span is the fake writing the function
//! call (a few small frames), the host (model events, call logic, the agent's
//! `on-event(mcp-call)`, the MCP request and its answer, the result back) and the server's own
//! time. The server's time is measured apart: the same tool called N times directly with the
//! host's MCP client, in this process. The overhead printed is the difference of the two
//! distributions' quantiles (p50 − p50, p99 − p99).
//!
//! Run by hand (it builds and runs the release binary):
//! `BENCH_MCP_CALLS=200 cargo test --release -p switchboard-tests --test all -- --ignored --nocapture mcp_bench::`

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::agents::fixture;
use crate::support::baresip::Baresip;
use crate::support::calls::{dial, mic};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::load::quantile;
use crate::support::mcp_servers::{self, Everything};
use crate::support::process::require;
use switchboard::mcp::{Catalog, McpConfig, McpServer};

/// p50 and p99 of `v`, in ms.
fn p50_p99(v: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    (quantile(&ms, 0.5), quantile(&ms, 0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand"]
async fn mcp_bench_tool_call_overhead() {
    if !mcp_servers::available() || !require("baresip") {
        return;
    }
    let n: usize = std::env::var("BENCH_MCP_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let everything = Everything::start().await;
    let arguments = json!({"message": "hello"}).to_string();

    // The server's own time: the tool called directly (after one warm-up call).
    let direct = Catalog::new(
        vec![McpServer {
            name: "everything".into(),
            url: everything.url().parse().unwrap(),
            token: None,
        }],
        McpConfig::default(),
    );
    direct.call("everything", "echo", &arguments).await.unwrap();
    let mut server = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        direct.call("everything", "echo", &arguments).await.unwrap();
        server.push(t.elapsed());
    }

    let mut replies = vec![Reply::Echo];
    replies.extend((0..n).map(|_| Reply::ToolCall {
        name: "everything__echo".into(),
        arguments: arguments.clone(),
    }));
    replies.push(Reply::Speech {
        transcript: "Done.".into(),
        audio_ms: 200,
    });
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies,
        record_audio: false,
        ..Script::default()
    })
    .await;
    let manifest = format!(
        "name = \"mcp-agent\"\nnumbers = [\"4700\"]\n[capabilities]\nhttp = [{:?}]\n\
         [[capabilities.mcp]]\nname = \"everything\"\nurl = \"{}\"\n",
        everything.host(),
        everything.url()
    );
    let mut host = Host::builder()
        .release()
        .agent("mcp-agent", fixture("mcp-agent"), manifest)
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .start();
    let phone = Baresip::start_with_mic(
        "<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(60.0, &[(4.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&phone, "4700", host.sip_port).await;
    let done = fake
        .wait_for(Duration::from_secs(120), |received| {
            received
                .iter()
                .filter(|r| r.event["item"]["type"] == "function_call_output")
                .count()
                >= n
        })
        .await;
    assert!(done, "not all {n} tool calls were answered");
    ctrl.command("hangup", "").await;

    // Each output's span since the response.create before it; the first call was asked for by
    // the caller's turn (the fake's voice activity), not by a response.create, and is left out.
    let mut asked = None;
    let mut first = true;
    let mut spans = Vec::with_capacity(n);
    for r in fake.received() {
        match r.event["type"].as_str() {
            Some("response.create") => asked = Some(r.at),
            Some("conversation.item.create")
                if r.event["item"]["type"] == "function_call_output" =>
            {
                let output = r.event["item"]["output"].as_str().unwrap_or("");
                assert_eq!(output, "Echo: hello");
                if let Some(at) = asked.take()
                    && !std::mem::take(&mut first)
                {
                    spans.push(r.at - at);
                }
            }
            _ => {}
        }
    }
    assert_eq!(spans.len(), n - 1, "one span per tool call but the first");
    let (e2e50, e2e99) = p50_p99(&spans);
    let (srv50, srv99) = p50_p99(&server);
    eprintln!(
        "MCP tool calls: {}; function call -> result p50 {e2e50:.2} ms, p99 {e2e99:.2} ms; \
         server alone p50 {srv50:.2} ms, p99 {srv99:.2} ms; host overhead p50 {:.2} ms, \
         p99 {:.2} ms",
        spans.len(),
        e2e50 - srv50,
        e2e99 - srv99
    );
    assert!(host.is_running());
}
