//! MCP tools for agents, against real MCP servers (tests/all/support/mcp_servers.rs): the
//! Python SDK's `bookings` server on 127.0.0.1 and the reference `server-everything` in a
//! network namespace.
//!
//! The host's client on its own: both servers' tools listed under model-facing names, calls
//! with arguments and a bearer token, a tool's failure, a server restart (the session is gone:
//! 404, a new session), a server stopped. Then whole calls (a phone, the OpenAI fake as the
//! model, the `mcp-agent` fixture): the model calls a tool on each server, the agent vetoes
//! one call, a server stops mid-call, a hot reload adds a server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agents::{agent_cache, fixture, interpreted_agent, repo_root};
use crate::support::api::{events_of, find, only_call_record};
use crate::support::baresip::{Baresip, BaresipCtrl};
use crate::support::calls::{dial, mic};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::mcp_servers::{self, Bookings, Everything};
use crate::support::process::require;
use switchboard::domain::agent_event::Notification;
use switchboard::mcp::{Catalog, McpConfig, McpError, McpServer};
use switchboard::model::Secret;
use switchboard::plugins::StartOutcome;
use switchboard::plugins::harness::Harness;
use switchboard::plugins::runtime::AgentsConfig;

const TOKEN: &str = "bookings-token";

fn config() -> McpConfig {
    McpConfig {
        call_timeout_ms: 3_000,
        ..McpConfig::default()
    }
}

fn catalog(bookings: &Bookings, everything: &Everything) -> Arc<Catalog> {
    let servers = vec![
        McpServer {
            name: "bookings".into(),
            url: bookings.url().parse().unwrap(),
            token: Some(Secret::new(TOKEN)),
        },
        McpServer {
            name: "everything".into(),
            url: everything.url().parse().unwrap(),
            token: None,
        },
    ];
    Arc::new(Catalog::new(servers, config()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_lists_and_calls_both_reference_servers() {
    if !mcp_servers::available() {
        return;
    }
    let mut bookings = Bookings::start(Some(TOKEN)).await;
    let everything = Everything::start().await;
    let catalog = catalog(&bookings, &everything);

    let tools = catalog.tools().await;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    for name in ["bookings__book_table", "bookings__slow", "everything__echo"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let book = tools
        .iter()
        .find(|t| t.name == "bookings__book_table")
        .unwrap();
    assert_eq!(
        (book.server.as_str(), book.tool.as_str()),
        ("bookings", "book_table")
    );
    let schema: Value = serde_json::from_str(&book.parameters).unwrap();
    assert_eq!(schema["required"], json!(["name", "day"]), "{schema}");

    let booked = catalog
        .call("bookings", "book_table", r#"{"name":"Ann","day":"Friday"}"#)
        .await
        .unwrap();
    assert_eq!(
        booked,
        "Booked a table for Ann on Friday, confirmation B-42."
    );
    assert_eq!(
        bookings.calls(),
        [
            json!({"tool": "book_table", "arguments": {"name": "Ann", "day": "Friday"},
                "authorization": format!("Bearer {TOKEN}")})
        ]
    );
    let echoed = catalog
        .call("everything", "echo", r#"{"message":"hi"}"#)
        .await
        .unwrap();
    assert_eq!(echoed, "Echo: hi");

    // A tool that fails is an error with its own words, not a transport failure.
    let failed = catalog.call("bookings", "broken", "{}").await.unwrap_err();
    assert!(
        matches!(&failed, McpError::Tool(t) if t.contains("broken")),
        "{failed:?}"
    );

    // A new server process knows no session: 404, a new session, the call goes through.
    bookings.restart().await;
    let again = catalog
        .call("bookings", "book_table", r#"{"name":"Bo","day":"Monday"}"#)
        .await
        .unwrap();
    assert!(again.contains("Bo on Monday"), "{again}");

    // A server that is gone fails the call, quickly and typed.
    bookings.stop();
    let started = Instant::now();
    let gone = catalog
        .call("bookings", "book_table", r#"{"name":"Cy","day":"Tuesday"}"#)
        .await
        .unwrap_err();
    assert!(matches!(gone, McpError::Unreachable(_)), "{gone:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A slow tool is cut at the call timeout.
    bookings.restart().await;
    let started = Instant::now();
    let slow = catalog
        .call("bookings", "slow", r#"{"seconds":30}"#)
        .await
        .unwrap_err();
    assert!(matches!(slow, McpError::Timeout(_)), "{slow:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_client_reads_plain_json_answers_too() {
    if !mcp_servers::available() {
        return;
    }
    let bookings = Bookings::start_with(None, true).await;
    let catalog = Arc::new(Catalog::new(
        vec![McpServer {
            name: "bookings".into(),
            url: bookings.url().parse().unwrap(),
            token: None,
        }],
        config(),
    ));
    let tools = catalog.tools().await;
    assert!(
        tools.iter().any(|t| t.name == "bookings__book_table"),
        "{tools:?}"
    );
    let booked = catalog
        .call("bookings", "book_table", r#"{"name":"Di","day":"Sunday"}"#)
        .await
        .unwrap();
    assert!(booked.contains("Di on Sunday"), "{booked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_a_server_down_at_listing_has_no_tools_until_a_later_try_in_the_background() {
    if !mcp_servers::available() {
        return;
    }
    let mut bookings = Bookings::start(None).await;
    bookings.stop();
    let catalog = Arc::new(Catalog::new(
        vec![McpServer {
            name: "bookings".into(),
            url: bookings.url().parse().unwrap(),
            token: None,
        }],
        McpConfig {
            retry_after_ms: 0,
            ..config()
        },
    ));
    assert!(catalog.tools().await.is_empty());
    bookings.restart().await;
    // Due for another try: asked in the background, nobody waits for it.
    let asked = Instant::now();
    assert!(catalog.tools().await.is_empty());
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "{:?}",
        asked.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tools = catalog.tools().await;
        if tools.iter().any(|t| t.name == "bookings__book_table") {
            break;
        }
        assert!(Instant::now() < deadline, "never listed: {tools:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python and JavaScript helper libraries: each fixture agent offers only the MCP tool it
/// chose from `mcp.tools()` (the JavaScript one renamed with `mcp.rename`) and vetoes a VIP
/// booking in `on-event(mcp-call)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_python_and_javascript_agents_choose_and_veto_mcp_tools() {
    if !mcp_servers::available() {
        return;
    }
    let bookings = Bookings::start(None).await;
    for (agent, language, name) in [
        ("mcp-agent-py", "python", "bookings__book_table"),
        ("mcp-agent-js", "js", "reserve_table"),
    ] {
        let wasm = interpreted_agent(&repo_root().join("tests/fixtures").join(agent));
        let manifest = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "name = \"{agent}\"\nlanguage = \"{language}\"\n[capabilities]\n\
             http = [\"127.0.0.1:{}\"]\n[[capabilities.mcp]]\nname = \"bookings\"\nurl = \"{}\"\n",
            bookings.port,
            bookings.url()
        );
        std::fs::write(manifest.path(), text).unwrap();
        let config = AgentsConfig {
            cache_dir: Some(agent_cache()),
            ..AgentsConfig::default()
        };
        let harness = Harness::load_with(&wasm, manifest.path(), config, BTreeMap::new())
            .await
            .unwrap();
        let mut call = harness.call("+15550100", NUMBER).await.unwrap();
        let StartOutcome::Accept { config, .. } = call.start().await.unwrap() else {
            panic!("{agent} rejected the call");
        };
        let offered: Vec<&str> = config.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(offered, [name], "{agent}");
        // The host knows where a renamed tool goes; the schema is the server's.
        let renames = call.session.mcp_renames();
        if name != "bookings__book_table" {
            assert_eq!(renames[name], "bookings__book_table", "{agent}");
        } else {
            assert!(renames.is_empty(), "{agent}: {renames:?}");
        }
        assert!(config.tools[0].parameters.contains("\"day\""), "{agent}");
        let booking = |name: &str| Notification::McpCall {
            server: "bookings".into(),
            tool: "book_table".into(),
            arguments: json!({"name": name, "day": "Friday"}).to_string(),
        };
        let (_, veto) = call.session.mcp_call(&booking("VIP Smith")).await.unwrap();
        assert_eq!(
            veto.as_deref(),
            Some("VIP bookings go through the front desk"),
            "{agent}"
        );
        let (_, veto) = call.session.mcp_call(&booking("Ann")).await.unwrap();
        assert_eq!(veto, None, "{agent}");
    }
}

/// `mcp.rename` refuses a tool the servers do not list and a name another MCP tool has; the
/// agent hears why (the fixture puts it in its instructions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_rename_refuses_unknown_tools_and_taken_names() {
    if !mcp_servers::available() {
        return;
    }
    let bookings = Bookings::start(None).await;
    // The harness wants <name>.wasm beside <name>.toml.
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("mcp-agent.wasm");
    std::fs::copy(fixture("mcp-agent"), &wasm).unwrap();
    for (rename, why) in [
        ("bookings__nope=table", "no MCP tool `bookings__nope`"),
        (
            "bookings__book_table=bookings__slow",
            "`bookings__slow` already names an MCP tool",
        ),
        (
            "bookings__book_table=book table",
            "must be 1-64 of [a-zA-Z0-9_-]",
        ),
    ] {
        let file = dir.path().join("mcp-agent.toml");
        let text = renaming(manifest(&[bookings_entry(&bookings)]), rename);
        std::fs::write(&file, text).unwrap();
        let config = AgentsConfig {
            cache_dir: Some(agent_cache()),
            ..AgentsConfig::default()
        };
        let harness = Harness::load_with(&wasm, &file, config, BTreeMap::new())
            .await
            .unwrap();
        let mut call = harness.call("+15550100", NUMBER).await.unwrap();
        let StartOutcome::Accept { config, .. } = call.start().await.unwrap() else {
            panic!("{rename}: rejected");
        };
        assert!(
            config.instructions.starts_with("rename refused") && config.instructions.contains(why),
            "{rename}: {}",
            config.instructions
        );
        assert!(call.session.mcp_renames().is_empty(), "{rename}");
    }
}

/// The number the `mcp-agent` fixture answers.
const NUMBER: &str = "4700";

/// The fixture's manifest, granting `servers` (`(name, url, allow-list entry, secret)`).
fn manifest(servers: &[(&str, String, String, Option<&str>)]) -> String {
    let hosts: Vec<String> = servers.iter().map(|s| format!("{:?}", s.2)).collect();
    let mut text = format!(
        "name = \"mcp-agent\"\nnumbers = [\"{NUMBER}\"]\n[capabilities]\nhttp = [{}]\n\
         secrets = [\"bookings-token\"]\n",
        hosts.join(", ")
    );
    for (name, url, _, secret) in servers {
        text.push_str(&format!(
            "[[capabilities.mcp]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
        if let Some(secret) = secret {
            text.push_str(&format!("authorization = \"{secret}\"\n"));
        }
    }
    text
}

/// `manifest` with the fixture's `rename` config set (`TOOL=NAME`).
fn renaming(manifest: String, rename: &str) -> String {
    manifest.replacen(
        "[capabilities]\n",
        "[capabilities]\nconfig = [\"rename\"]\n",
        1,
    ) + &format!("[config]\nrename = \"{rename}\"\n")
}

fn bookings_entry(bookings: &Bookings) -> (&'static str, String, String, Option<&'static str>) {
    let host = format!("127.0.0.1:{}", bookings.port);
    ("bookings", bookings.url(), host, Some("bookings-token"))
}

fn everything_entry(
    everything: &Everything,
) -> (&'static str, String, String, Option<&'static str>) {
    ("everything", everything.url(), everything.host(), None)
}

fn start_host(fake: &FakeOpenAi, manifest: String) -> Host {
    Host::builder()
        .agent("mcp-agent", fixture("mcp-agent"), manifest)
        .calls("codecs = [\"pcmu\"]")
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config(&format!(
            "[agents.mcp]\ncall-timeout-ms = 3000\n\
             [agent.mcp-agent.secrets]\nbookings-token = \"{TOKEN}\"\n"
        ))
        .start()
}

fn tool_call(name: &str, arguments: Value) -> Reply {
    Reply::ToolCall {
        name: name.into(),
        arguments: arguments.to_string(),
    }
}

/// The model's script: the greeting, then on the caller's first turn `calls` one after the
/// other (each result asks for the next response), then a spoken answer.
async fn model(calls: Vec<Reply>) -> FakeOpenAi {
    let mut replies = vec![Reply::Echo];
    replies.extend(calls);
    replies.push(Reply::Speech {
        transcript: "Anything else?".into(),
        audio_ms: 500,
    });
    FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies,
        caller_transcript: "A table for Friday, please.".into(),
        ..Script::default()
    })
    .await
}

/// A phone whose user speaks at 4 s (after the greeting).
async fn phone() -> Baresip {
    Baresip::start_with_mic(
        "<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(40.0, &[(4.0, 0.8)]),
    )
    .await
}

/// The model's closing answer is heard, then the caller hangs up and the call ends.
async fn model_answers_then_caller_hangs_up(host: &mut Host, ctrl: &mut BaresipCtrl) {
    host.expect(&["Transcript", "Agent", "Anything else?"], 10);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 10);
}

/// The function-call outputs the model got, in order.
fn outputs(fake: &FakeOpenAi) -> Vec<String> {
    fake.received_of("conversation.item.create")
        .iter()
        .filter(|e| e["item"]["type"] == "function_call_output")
        .map(|e| e["item"]["output"].as_str().unwrap().to_string())
        .collect()
}

/// The tool names the model was offered in the session's first `session.update`.
fn offered(fake: &FakeOpenAi) -> Vec<String> {
    fake.received_of("session.update")[0]["session"]["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_of_both_servers_in_a_call_and_a_server_stopped_mid_call() {
    if !mcp_servers::available() || !require("baresip") {
        return;
    }
    let mut bookings = Bookings::start(Some(TOKEN)).await;
    let everything = Everything::start().await;
    let fake = model(vec![
        tool_call(
            "bookings__book_table",
            json!({"name": "Ann", "day": "Friday"}),
        ),
        tool_call("everything__echo", json!({"message": "table for Ann"})),
        tool_call("bookings__slow", json!({"seconds": 30})),
    ])
    .await;
    let manifest = manifest(&[bookings_entry(&bookings), everything_entry(&everything)]);
    let mut host = start_host(&fake, manifest);
    let phone = phone().await;
    let mut ctrl = dial(&phone, NUMBER, host.sip_port).await;

    host.expect(&["ToolCall", "bookings__book_table"], 30);
    host.expect(&["ToolCall", "everything__echo"], 10);
    host.expect(&["ToolCall", "bookings__slow"], 10);
    // The slow tool is running on the server: stop the server under it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bookings.calls().iter().any(|c| c["tool"] == "slow") {
        assert!(Instant::now() < deadline, "slow never reached the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Instant::now();
    bookings.stop();
    let failed = host.expect(&["ToolResult", "ok: false", "tool unavailable"], 10);
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "{:?}: {failed}",
        stopped.elapsed()
    );
    // The call goes on: the model answers, the caller hangs up.
    model_answers_then_caller_hangs_up(&mut host, &mut ctrl).await;

    // The model was offered both servers' tools under their model-facing names.
    let offered = offered(&fake);
    for name in ["bookings__book_table", "everything__echo"] {
        assert!(
            offered.iter().any(|o| o == name),
            "{name} not in {offered:?}"
        );
    }
    // The arguments reached the server, with the agent's token.
    let seen = bookings.calls();
    assert_eq!(
        seen[0]["arguments"],
        json!({"name": "Ann", "day": "Friday"})
    );
    assert_eq!(seen[0]["authorization"], format!("Bearer {TOKEN}"));
    // The results reached the model; the stopped server became an error result.
    let outputs = outputs(&fake);
    assert_eq!(outputs.len(), 3, "{outputs:?}");
    assert_eq!(
        outputs[0],
        "Booked a table for Ann on Friday, confirmation B-42."
    );
    assert_eq!(outputs[1], "Echo: table for Ann");
    let error: Value = serde_json::from_str(&outputs[2]).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("tool unavailable"),
        "{error}"
    );

    // The record: each tool call and its result, a usage row per MCP call, a normal end.
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let calls: Vec<&str> = find(&events, "tool-call")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        calls,
        ["bookings__book_table", "everything__echo", "bookings__slow"]
    );
    let results: Vec<bool> = find(&events, "tool-result")
        .iter()
        .map(|r| r["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(results, [true, true, false]);
    let mcp_usage: Vec<&Value> = find(&events, "usage")
        .into_iter()
        .flat_map(|u| u["items"].as_array().unwrap())
        .filter(|i| i["stage"] == "mcp")
        .collect();
    assert_eq!(mcp_usage.len(), 3, "{mcp_usage:?}");
    assert_eq!(find(&events, "ended")[0]["reason"], "caller-hangup");
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_agent_vetoes_a_call_and_the_server_never_sees_it() {
    if !mcp_servers::available() || !require("baresip") {
        return;
    }
    let bookings = Bookings::start(Some(TOKEN)).await;
    let fake = model(vec![tool_call(
        "bookings__book_table",
        json!({"name": "VIP Smith", "day": "Friday"}),
    )])
    .await;
    let mut host = start_host(&fake, manifest(&[bookings_entry(&bookings)]));
    let phone = phone().await;
    let mut ctrl = dial(&phone, NUMBER, host.sip_port).await;

    host.expect(&["ToolCall", "bookings__book_table"], 30);
    host.expect(&["ToolResult", "ok: false", "VIP bookings"], 10);
    model_answers_then_caller_hangs_up(&mut host, &mut ctrl).await;

    let outputs = outputs(&fake);
    assert_eq!(
        outputs,
        [json!({"error": "VIP bookings go through the front desk"}).to_string()]
    );
    assert!(bookings.calls().is_empty(), "{:?}", bookings.calls());
}

/// An agent renames `bookings__book_table` to `reserve_table` in on-start: the model is offered
/// it under that name only, its calls reach the bookings server's `book_table`, and the agent
/// still sees the server's own names (its veto works on the renamed tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_a_tool_renamed_in_on_start_is_offered_and_routed_under_its_new_name() {
    if !mcp_servers::available() || !require("baresip") {
        return;
    }
    let bookings = Bookings::start(Some(TOKEN)).await;
    let fake = model(vec![
        tool_call("reserve_table", json!({"name": "Ann", "day": "Friday"})),
        tool_call(
            "reserve_table",
            json!({"name": "VIP Smith", "day": "Friday"}),
        ),
    ])
    .await;
    let manifest = renaming(
        manifest(&[bookings_entry(&bookings)]),
        "bookings__book_table=reserve_table",
    );
    let mut host = start_host(&fake, manifest);
    let phone = phone().await;
    let mut ctrl = dial(&phone, NUMBER, host.sip_port).await;

    host.expect(&["ToolCall", "reserve_table"], 30);
    host.expect(&["ToolResult", "ok: true"], 10);
    host.expect(&["ToolResult", "ok: false", "VIP bookings"], 10);
    model_answers_then_caller_hangs_up(&mut host, &mut ctrl).await;

    let offered = offered(&fake);
    assert!(offered.iter().any(|o| o == "reserve_table"), "{offered:?}");
    assert!(
        !offered.iter().any(|o| o == "bookings__book_table"),
        "{offered:?}"
    );
    let seen = bookings.calls();
    assert_eq!(
        seen.len(),
        1,
        "only Ann's booking reaches the server: {seen:?}"
    );
    assert_eq!(seen[0]["tool"], "book_table");
    assert_eq!(
        seen[0]["arguments"],
        json!({"name": "Ann", "day": "Friday"})
    );
    assert_eq!(
        outputs(&fake),
        [
            "Booked a table for Ann on Friday, confirmation B-42.".to_string(),
            json!({"error": "VIP bookings go through the front desk"}).to_string()
        ]
    );
    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let calls: Vec<&str> = find(&events, "tool-call")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["reserve_table", "reserve_table"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_hot_reload_adds_a_server_for_the_next_call_and_the_running_call_keeps_its_set() {
    if !mcp_servers::available() || !require("baresip") {
        return;
    }
    let bookings = Bookings::start(Some(TOKEN)).await;
    let everything = Everything::start().await;
    let echo = || tool_call("everything__echo", json!({"message": "hello"}));
    let answer = || Reply::Speech {
        transcript: "Anything else?".into(),
        audio_ms: 500,
    };
    // Each call: its greeting, then on the caller's turn the model calls everything's echo.
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![Reply::Echo, echo(), answer(), Reply::Echo, echo(), answer()],
        caller_transcript: "Say hello.".into(),
        ..Script::default()
    })
    .await;
    let before = manifest(&[bookings_entry(&bookings)]);
    let mut host = start_host(&fake, before);
    let first = Baresip::start_with_mic(
        "<sip:1001@127.0.0.1>;regint=0;audio_codecs=pcmu",
        "module sndfile.so",
        &mic(40.0, &[(9.0, 0.8)]),
    )
    .await;
    let mut ctrl = dial(&first, NUMBER, host.sip_port).await;
    host.expect(&["Transcript", "Agent", "Bookings, hello."], 30);

    // While the first call runs, the agent gains the everything server.
    let after = manifest(&[bookings_entry(&bookings), everything_entry(&everything)]);
    host.agents
        .install("mcp-agent", &fixture("mcp-agent"), &after);
    host.expect(&["MCP tools listed", "everything"], 30);

    // The first call keeps its set: everything's echo is no MCP tool of it (the agent, asked
    // instead, knows no such tool), and the server never hears of it.
    host.expect(&["ToolCall", "everything__echo"], 20);
    host.expect(&["ToolResult", "ok: false", "unknown tool"], 10);
    model_answers_then_caller_hangs_up(&mut host, &mut ctrl).await;

    // The next call has it (only lines from now on count: the first call's match too).
    let second = phone().await;
    let mut ctrl = dial(&second, NUMBER, host.sip_port).await;
    let mut next = |needles: &[&str], secs: u64| {
        host.log
            .wait_for(needles, Duration::from_secs(secs))
            .unwrap_or_else(|| panic!("no line with {needles:?}"))
    };
    next(&["ToolCall", "everything__echo"], 30);
    next(&["ToolResult", "ok: true", "Echo: hello"], 10);
    next(&["Transcript", "Agent", "Anything else?"], 10);
    ctrl.command("hangup", "").await;
    next(&["call ended", "CallerHangup"], 10);

    let updates = fake.received_of("session.update");
    let tools = |update: &Value| -> Vec<String> {
        update["session"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (first_tools, second_tools) = (tools(&updates[0]), tools(updates.last().unwrap()));
    assert!(
        first_tools.iter().all(|t| t.starts_with("bookings__")),
        "{first_tools:?}"
    );
    assert!(
        second_tools.iter().any(|t| t == "everything__echo"),
        "{second_tools:?}"
    );
    let outputs = outputs(&fake);
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(outputs[0].contains("unknown tool"), "{outputs:?}");
    assert_eq!(outputs[1], "Echo: hello");
}
