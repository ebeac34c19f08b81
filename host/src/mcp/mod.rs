//! MCP (Model Context Protocol) client for the streamable-HTTP transport, and the per-agent-
//! version [`catalog`] of the tools it lists. Nothing here knows about calls or agents.
//!
//! The wire follows the MCP specification, revision 2025-11-25 (what both test servers speak;
//! 2025-06-18 and 2025-03-26 servers are accepted too), basic/transports §Streamable HTTP and
//! basic/lifecycle, server/tools (https://modelcontextprotocol.io/specification/2025-11-25/):
//! - every JSON-RPC message is one HTTP POST to the server's URL with `Accept: application/json,
//!   text/event-stream`; a request's answer is a JSON body or an SSE stream whose `data:` lines
//!   carry JSON-RPC messages, ours among them; a notification is answered `202 Accepted`;
//! - `initialize` (our protocol version, no client capabilities) then the
//!   `notifications/initialized` notification; the server may give an `Mcp-Session-Id` header,
//!   which goes on every later request with `MCP-Protocol-Version: <negotiated version>`;
//! - HTTP 404 to a request that carried a session id means the session is gone: start a new
//!   one (once) and send the request again;
//! - `tools/list` pages with `cursor` / `nextCursor`; `tools/call` answers `content` parts and
//!   `isError`.
//!
//! Written by hand on reqwest (already a dependency) rather than with rmcp, the official Rust
//! SDK: rmcp 3.11 with `client` + `transport-streamable-http-client-reqwest` adds 18 crates
//! this workspace does not have (schemars and its derive, darling, chrono, sse-stream,
//! pastey, ...) for the four requests used here, and its own timeouts and retry policy would
//! sit beside ours; this client is one file, with every wait bounded by [`McpConfig`].

pub mod catalog;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::egress::with_causes;
use crate::model::Secret;

pub use catalog::{Catalog, McpTool};

/// The protocol revision this client asks for.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// Revisions whose streamable-HTTP transport and tools this client speaks.
const KNOWN_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// Largest response body read (JSON or the whole SSE stream up to our answer).
const MAX_RESPONSE: usize = 1 << 20;

/// `[agents.mcp]`: how long the host waits for MCP servers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct McpConfig {
    /// TCP (and TLS) connect to a server.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// One tool call, from the request to the result (a new session included); past it the
    /// model hears "tool unavailable".
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Listing one server's tools (every page, a new session included).
    #[serde(default = "default_list_timeout_ms")]
    pub list_timeout_ms: u64,
    /// A server whose listing failed is asked again after this long.
    #[serde(default = "default_retry_after_ms")]
    pub retry_after_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_call_timeout_ms() -> u64 {
    10_000
}
fn default_list_timeout_ms() -> u64 {
    5_000
}
fn default_retry_after_ms() -> u64 {
    30_000
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            connect_timeout_ms: default_connect_timeout_ms(),
            call_timeout_ms: default_call_timeout_ms(),
            list_timeout_ms: default_list_timeout_ms(),
            retry_after_ms: default_retry_after_ms(),
        }
    }
}

impl McpConfig {
    /// The HTTP client MCP requests go through: the egress rules of every fetch made on an
    /// agent's behalf ([`crate::egress`]: no redirects, names never resolving to local
    /// addresses), and the connect timeout.
    pub fn http_client(&self) -> reqwest::Client {
        crate::egress::client_builder()
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .build()
            .expect("static client configuration")
    }
}

/// One MCP server as an agent's manifest names it, with its bearer token resolved.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub name: String,
    pub url: url::Url,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// Why an MCP request failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// The tool ran and reported a failure (`isError: true`); the text is its content.
    #[error("{0}")]
    Tool(String),
}

impl McpError {
    /// The HTTP status or JSON-RPC error code, where there is one.
    pub fn code(&self) -> Option<i64> {
        match self {
            McpError::Http { status, .. } => Some(i64::from(*status)),
            McpError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A tool as a server lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "empty_schema")]
    pub input_schema: Value,
}

fn empty_schema() -> Value {
    json!({"type": "object"})
}

/// The session a server gave us.
#[derive(Debug, Clone)]
struct Session {
    id: Option<String>,
    protocol: String,
}

/// A client of one MCP server. Requests may run concurrently; they share one session.
pub struct McpClient {
    server: McpServer,
    http: reqwest::Client,
    session: tokio::sync::Mutex<Option<Session>>,
    next_id: AtomicU64,
}

impl McpClient {
    pub fn new(server: McpServer, http: reqwest::Client) -> McpClient {
        McpClient {
            server,
            http,
            session: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn server(&self) -> &McpServer {
        &self.server
    }

    /// Every tool the server has (all pages), within `timeout`.
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<ToolInfo>, McpError> {
        within(timeout, async {
            let mut tools = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let params = match &cursor {
                    Some(c) => json!({ "cursor": c }),
                    None => json!({}),
                };
                let result = self.request("tools/list", params).await?;
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Page {
                    tools: Vec<ToolInfo>,
                    next_cursor: Option<String>,
                }
                let page: Page = serde_json::from_value(result)
                    .map_err(|e| McpError::Protocol(format!("tools/list result: {e}")))?;
                tools.extend(page.tools);
                match page.next_cursor {
                    Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                    _ => return Ok(tools),
                }
            }
        })
        .await
    }

    /// Call `tool` with `arguments` (a JSON object) within `timeout`: its text content,
    /// joined by newlines; a result marked `isError` is [`McpError::Tool`].
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<String, McpError> {
        within(timeout, async {
            let params = json!({ "name": tool, "arguments": arguments });
            let result = self.request("tools/call", params).await?;
            tool_text(&result)
        })
        .await
    }

    /// One request in the current session: a new session first when there is none, and once
    /// more in a new session when the server says the session is gone (404).
    async fn request(&self, method: &str, params: Value) -> Result<Value, McpError> {
        let session = self.session().await?;
        match self.post_request(&session, method, &params).await {
            Err(McpError::Http { status: 404, .. }) if session.id.is_some() => {
                tracing::info!(server = %self.server.name, "MCP session gone; starting a new one");
                self.forget(&session).await;
                let session = self.session().await?;
                self.post_request(&session, method, &params).await
            }
            other => other,
        }
    }

    /// The current session, initialized now when there is none.
    async fn session(&self) -> Result<Session, McpError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = self.initialize().await?;
        *current = Some(session.clone());
        Ok(session)
    }

    /// Drop `stale` unless another request already replaced it.
    async fn forget(&self, stale: &Session) {
        let mut current = self.session.lock().await;
        if current.as_ref().map(|s| &s.id) == Some(&stale.id) {
            *current = None;
        }
    }

    async fn initialize(&self) -> Result<Session, McpError> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "switchboard", "version": env!("CARGO_PKG_VERSION") },
        });
        let fresh = Session {
            id: None,
            protocol: PROTOCOL_VERSION.to_string(),
        };
        let (result, id) = self.post(&fresh, "initialize", Some(&params)).await?;
        let result = result.ok_or_else(|| McpError::Protocol("no initialize result".into()))?;
        let protocol = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !KNOWN_VERSIONS.contains(&protocol.as_str()) {
            return Err(McpError::Protocol(format!(
                "the server speaks protocol version `{protocol}`; this host speaks {}",
                KNOWN_VERSIONS.join(", ")
            )));
        }
        let session = Session { id, protocol };
        self.post(&session, "notifications/initialized", None)
            .await?;
        tracing::debug!(server = %self.server.name, session = ?session.id, protocol = %session.protocol, "MCP session started");
        Ok(session)
    }

    async fn post_request(
        &self,
        session: &Session,
        method: &str,
        params: &Value,
    ) -> Result<Value, McpError> {
        let (result, _) = self.post(session, method, Some(params)).await?;
        result.ok_or_else(|| McpError::Protocol(format!("no result for {method}")))
    }

    /// POST one message: a request when `params` is given (its result comes back), else a
    /// notification. Also returns the session id the server set, if any.
    async fn post(
        &self,
        session: &Session,
        method: &str,
        params: Option<&Value>,
    ) -> Result<(Option<Value>, Option<String>), McpError> {
        let id = params.map(|_| self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut message = json!({ "jsonrpc": "2.0", "method": method });
        if let (Some(id), Some(params)) = (id, params) {
            message["id"] = json!(id);
            message["params"] = params.clone();
        }
        let mut request = self
            .http
            .post(self.server.url.clone())
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .body(message.to_string());
        if method != "initialize" {
            request = request.header("MCP-Protocol-Version", &session.protocol);
        }
        if let Some(sid) = &session.id {
            request = request.header("Mcp-Session-Id", sid);
        }
        if let Some(token) = &self.server.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| McpError::Unreachable(with_causes(&e)))?;
        let status = response.status();
        let session_id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(McpError::Http {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        let Some(id) = id else {
            return Ok((None, session_id));
        };
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let answer = if is_sse {
            read_sse_answer(response, id).await?
        } else {
            let body = read_capped(response).await?;
            let message: Value = serde_json::from_slice(&body)
                .map_err(|e| McpError::Protocol(format!("{method}: not JSON: {e}")))?;
            // A batch answer is allowed by older revisions.
            match message {
                Value::Array(items) => items
                    .into_iter()
                    .find(|m| m.get("id") == Some(&json!(id)))
                    .ok_or_else(|| McpError::Protocol(format!("{method}: no answer")))?,
                single => single,
            }
        };
        Ok((Some(rpc_result(answer)?), session_id))
    }
}

/// Run `f` for at most `timeout`.
async fn within<T>(
    timeout: Duration,
    f: impl Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or(Err(McpError::Timeout(timeout)))
}

async fn read_capped(response: reqwest::Response) -> Result<Vec<u8>, McpError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| McpError::Unreachable(with_causes(&e)))?;
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(McpError::Protocol(format!(
                "response over {MAX_RESPONSE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Read an SSE stream until the JSON-RPC message answering `id`; notifications and requests
/// from the server before it (progress, logging) are skipped.
async fn read_sse_answer(response: reqwest::Response, id: u64) -> Result<Value, McpError> {
    let mut buffer = String::new();
    let mut read = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| McpError::Unreachable(with_causes(&e)))?;
        read += chunk.len();
        if read > MAX_RESPONSE {
            return Err(McpError::Protocol(format!(
                "event stream over {MAX_RESPONSE} bytes"
            )));
        }
        buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(message) = sse_data(&event)
                && message.get("id") == Some(&json!(id))
            {
                return Ok(message);
            }
        }
    }
    Err(McpError::Protocol(
        "the event stream ended without an answer".into(),
    ))
}

/// The JSON-RPC message in one SSE event's `data:` lines, if it has one.
fn sse_data(event: &str) -> Option<Value> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    if data.is_empty() {
        return None;
    }
    serde_json::from_str(&data.join("\n")).ok()
}

/// A JSON-RPC answer's `result`, or its `error` as [`McpError::Rpc`].
fn rpc_result(mut answer: Value) -> Result<Value, McpError> {
    if let Some(error) = answer.get("error") {
        return Err(McpError::Rpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        });
    }
    answer
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| McpError::Protocol("an answer with neither result nor error".into()))
}

/// A `tools/call` result as the text the model gets: the text parts joined by newlines
/// (other parts named by their type), the structured content when there is no text.
fn tool_text(result: &Value) -> Result<String, McpError> {
    let parts: Vec<String> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|content| {
            content
                .iter()
                .map(|part| match part.get("type").and_then(Value::as_str) {
                    Some("text") => part
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    Some(other) => format!("[{other}]"),
                    None => String::new(),
                })
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let text = if parts.is_empty() {
        result
            .get("structuredContent")
            .map(Value::to_string)
            .unwrap_or_default()
    } else {
        parts.join("\n")
    };
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        return Err(McpError::Tool(text));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_become_text() {
        let ok = json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "x"}, {"type": "text", "text": "b"}]});
        assert_eq!(tool_text(&ok).unwrap(), "a\n[image]\nb");
        let failed = json!({"content": [{"type": "text", "text": "down"}], "isError": true});
        assert!(matches!(tool_text(&failed), Err(McpError::Tool(t)) if t == "down"));
        let structured = json!({"content": [], "structuredContent": {"n": 1}});
        assert_eq!(tool_text(&structured).unwrap(), r#"{"n":1}"#);
    }

    #[test]
    fn sse_events_and_rpc_answers() {
        assert_eq!(sse_data("event: ping\n"), None);
        // Data may be split over several lines.
        let split = "data: {\"jsonrpc\":\"2.0\",\ndata: \"id\":3}\n";
        assert_eq!(sse_data(split).unwrap()["id"], 3);
        let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"x\":1}}\n";
        let message = sse_data(event).unwrap();
        assert_eq!(rpc_result(message).unwrap(), json!({"x": 1}));
        let error = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}});
        assert!(matches!(
            rpc_result(error),
            Err(McpError::Rpc { code: -32602, .. })
        ));
    }
}
