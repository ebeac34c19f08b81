//! MCP tools for agents, against real MCP servers (tests/all/support/mcp_servers.rs): the
//! Python SDK's `bookings` server on 127.0.0.1 and the reference `server-everything` in a
//! network namespace.
//!
//! The host's client on its own: both servers' tools listed under model-facing names, calls
//! with arguments and a bearer token, a tool's failure, a server restart (the session is gone:
//! 404, a new session), a server stopped. Then whole calls (a phone, the OpenAI fake as the
//! model, the `mcp-agent` fixture): the model calls a tool on each server, the agent vetoes
//! one call, a server stops mid-call, a hot reload adds a server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agents::fixture;
use crate::support::api::{events_of, find, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{dial, mic};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::mcp_servers::{self, Bookings, Everything};
use crate::support::process::require;
use switchboard::mcp::{Catalog, McpConfig, McpError, McpServer};
use switchboard::model::Secret;

const TOKEN: &str = "bookings-token";

fn config() -> McpConfig {
    McpConfig {
        call_timeout_ms: 3_000,
        ..McpConfig::default()
    }
}

fn catalog(bookings: &Bookings, everything: &Everything) -> Catalog {
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
    Catalog::new(servers, config())
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
    assert_eq!((book.server.as_str(), book.tool.as_str()), ("bookings", "book_table"));
    let schema: Value = serde_json::from_str(&book.parameters).unwrap();
    assert_eq!(schema["required"], json!(["name", "day"]), "{schema}");

    let booked = catalog
        .call("bookings", "book_table", r#"{"name":"Ann","day":"Friday"}"#)
        .await
        .unwrap();
    assert_eq!(booked, "Booked a table for Ann on Friday, confirmation B-42.");
    assert_eq!(
        bookings.calls(),
        [json!({"tool": "book_table", "arguments": {"name": "Ann", "day": "Friday"},
                "authorization": format!("Bearer {TOKEN}")})]
    );
    let echoed = catalog
        .call("everything", "echo", r#"{"message":"hi"}"#)
        .await
        .unwrap();
    assert_eq!(echoed, "Echo: hi");

    // A tool that fails is an error with its own words, not a transport failure.
    let failed = catalog.call("bookings", "broken", "{}").await.unwrap_err();
    assert!(matches!(&failed, McpError::Tool(t) if t.contains("broken")), "{failed:?}");

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
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(5), "{took:?}");
}
