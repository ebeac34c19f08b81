//! JavaScript agents: `switchboard deploy`'s componentize-js build of the receptionist twin and
//! of a sandbox probe, loaded and driven through the harness.

use std::collections::BTreeMap;
use std::path::Path;

use crate::agents::receptionist_script;
use crate::support::agents::{agent_cache, interpreted_agent, repo_root};
use switchboard::domain::{Action, FaultKind};
use switchboard::plugins::harness::Harness;
use switchboard::plugins::runtime::AgentsConfig;

async fn load(dir: &Path) -> Harness {
    let wasm = interpreted_agent(dir);
    let config = AgentsConfig {
        cache_dir: Some(agent_cache()),
        ..AgentsConfig::default()
    };
    Harness::load_with(&wasm, dir.join("agent.toml"), config, BTreeMap::new())
        .await
        .expect("agent loads")
}

/// The JavaScript twin does what the Rust receptionist does (tests/all/agents.rs).
#[tokio::test]
async fn receptionist_js_tools_messages_dtmf_and_transfer() {
    let h = load(&repo_root().join("plugins/receptionist-js")).await;
    assert_eq!(h.version().info.name, "receptionist-js");
    assert_eq!(h.version().info.numbers, vec!["2002"]);
    receptionist_script(&h, "2002").await;
}

/// Inside StarlingMonkey the agent has no way out: no Node or XHR globals, and the web `fetch`,
/// whose global StarlingMonkey keeps, traps at its first wasi:http call (the build leaves
/// wasi:http out) before anything reaches a listener. A thrown Error is a trap too. Either way
/// the agent's part of the call ends with a fault and the host falls back; other calls go on.
#[tokio::test]
async fn js_agent_has_no_network_and_a_thrown_error_faults() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());

    let h = load(&repo_root().join("tests/fixtures/js-sandbox")).await;
    let mut call = h.call("100", "2902").await.unwrap();
    call.start().await.unwrap();
    let globals = call.tool_call("globals", "{}").await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(globals.result.as_ref().unwrap()).unwrap();
    for global in [
        "XMLHttpRequest",
        "WebSocket",
        "process",
        "require",
        "Deno",
        "Bun",
    ] {
        assert_eq!(seen[global], "undefined", "{global}: {seen}");
    }
    let fetch = serde_json::json!({ "url": url }).to_string();
    let fault = call.tool_call("fetch", &fetch).await.unwrap_err();
    assert_eq!(fault.kind, FaultKind::Trap, "{fault}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener saw a connection"
    );
    assert_eq!(
        call.tool_call("globals", "{}").await.unwrap_err().kind,
        FaultKind::Poisoned
    );

    // Another call of the same agent is unaffected; its thrown Error faults it in turn.
    let mut other = h.call("101", "2902").await.unwrap();
    other.start().await.unwrap();
    assert_eq!(
        other.dtmf("5").await.unwrap(),
        vec![Action::Say("digit 5".into())]
    );
    let fault = other.dtmf("9").await.unwrap_err();
    assert_eq!(fault.kind, FaultKind::Trap, "{fault}");
    assert_eq!(other.dtmf("5").await.unwrap_err().kind, FaultKind::Poisoned);
    assert_eq!(h.runtime().fallback_actions().last(), Some(&Action::Hangup));
}
