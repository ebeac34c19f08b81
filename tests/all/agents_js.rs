//! JavaScript agents: `switchboard deploy`'s componentize-js build of the receptionist twin and
//! of a sandbox probe, loaded and driven through the harness.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::agents::{agent_cache, interpreted_agent, repo_root};
use switchboard::domain::{Action, EndReason, FaultKind, Role};
use switchboard::plugins::harness::Harness;
use switchboard::plugins::runtime::AgentsConfig;
use switchboard::plugins::{StartOutcome, ToolOutcome};

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

fn says(actions: &[Action], needle: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Say(t) if t.contains(needle)))
}

/// The Rust receptionist's scenario (tests/all/agents.rs), plus its keypad branch.
#[tokio::test]
async fn receptionist_js_tools_messages_dtmf_and_transfer() {
    let h = load(&repo_root().join("plugins/receptionist-js")).await;
    assert_eq!(h.version().info.name, "receptionist-js");
    assert_eq!(h.version().info.numbers, vec!["2002"]);

    let mut call = h.call("+15550100009", "2002").await.unwrap();
    let start = call.start().await.unwrap();
    let StartOutcome::Accept { config, .. } = &start else {
        panic!("{start:?}")
    };
    let tools: Vec<&str> = config.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tools,
        ["opening_hours", "take_message", "transfer_to_person"]
    );
    let schema: serde_json::Value = serde_json::from_str(&config.tools[1].parameters).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["name", "message"]));
    assert!(
        config
            .instructions
            .starts_with("You are the friendly receptionist of Switchboard Demo."),
        "{}",
        config.instructions
    );
    assert_eq!(
        config.greeting.as_deref(),
        Some("Thank you for calling Switchboard Demo. How can I help you today?")
    );

    let hours = call.tool_call("opening_hours", "{}").await.unwrap();
    assert_eq!(
        hours.result.as_deref(),
        Ok(r#"{"hours":"Monday to Friday 9:00-17:00, Saturday 10:00-14:00, closed on Sunday"}"#)
    );

    let msg = call
        .tool_call(
            "take_message",
            r#"{"name":"Ada","message":"Please call me back"}"#,
        )
        .await
        .unwrap();
    assert!(
        msg.result.as_ref().unwrap().contains("Message 1 saved"),
        "{msg:?}"
    );
    let again = call
        .tool_call("take_message", r#"{"name":"Bob","message":"Hi"}"#)
        .await
        .unwrap();
    assert!(again.result.as_ref().unwrap().contains("Message 2 saved"));
    let bad = call.tool_call("take_message", "not json").await.unwrap();
    assert!(bad.result.unwrap_err().contains("bad arguments"));
    let empty = call
        .tool_call("take_message", r#"{"name":"Eve","message":" "}"#)
        .await
        .unwrap();
    assert!(empty.result.unwrap_err().contains("the message is empty"));
    // Asking for a person by voice transfers, through effects queued in on-transcript.
    let actions = call
        .transcript(Role::Caller, "Can I speak to a person please")
        .await
        .unwrap();
    assert_eq!(
        actions,
        vec![
            Action::Say("One moment, I am putting you through.".into()),
            Action::Transfer("sip:front-desk@127.0.0.1".into())
        ]
    );
    // A failed transfer keeps the call going with an offer to take a message.
    let failed = call
        .transfer_result("sip:front-desk@127.0.0.1", Err("486 busy".into()))
        .await
        .unwrap();
    assert!(says(&failed, "take a message"), "{failed:?}");
    // Key 0 asks for the front desk too.
    let keyed = call.dtmf("0").await.unwrap();
    assert_eq!(
        keyed.last(),
        Some(&Action::Transfer("sip:front-desk@127.0.0.1".into()))
    );
    let ok = call
        .transfer_result("sip:front-desk@127.0.0.1", Ok(()))
        .await
        .unwrap();
    assert!(ok.is_empty(), "{ok:?}");
    let tool: ToolOutcome = call.tool_call("transfer_to_person", "{}").await.unwrap();
    assert_eq!(
        tool.actions.last(),
        Some(&Action::Transfer("sip:front-desk@127.0.0.1".into()))
    );
    call.end(EndReason::Transferred("sip:front-desk@127.0.0.1".into()))
        .await
        .unwrap();

    // Messages persist in kv: the next call's message is the third.
    let mut next = h.call("+15550100010", "2002").await.unwrap();
    next.start().await.unwrap();
    let third = next
        .tool_call("take_message", r#"{"name":"Cy","message":"Hello"}"#)
        .await
        .unwrap();
    assert!(third.result.as_ref().unwrap().contains("Message 3 saved"));
    next.end(EndReason::CallerHangup).await.unwrap();
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
