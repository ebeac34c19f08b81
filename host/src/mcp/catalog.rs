//! The MCP tools of one agent version: its servers' tools, listed once and kept, each under the
//! name the model calls it by (`server__tool`). A server that cannot be listed has no tools
//! until it is asked again, [`super::McpConfig::retry_after_ms`] later, in the background: only
//! the first listing is waited for (at most the list timeout), so a server that is down never
//! holds up a call.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{McpClient, McpConfig, McpError, McpServer};

/// Longest model-facing tool name (OpenAI's function-name rule: `^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_TOOL_NAME: usize = 64;
/// The agent contract's caps on a tool (wit/agent.wit, `record tool`): a longer description is
/// cut, a tool with a larger schema is not offered.
const MAX_DESCRIPTION: usize = 1 << 10;
const MAX_PARAMETERS: usize = 16 << 10;

/// One MCP tool as the model is offered it.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// What the model calls: `server__tool`, characters outside `[a-zA-Z0-9_-]` as `_`.
    pub name: String,
    pub server: String,
    /// The tool's own name on its server.
    pub tool: String,
    pub description: String,
    /// JSON Schema of the arguments, as JSON text.
    pub parameters: String,
}

/// The model-facing name of `tool` on `server`.
pub fn model_name(server: &str, tool: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut name = format!("{}__{}", clean(server), clean(tool));
    name.truncate(MAX_TOOL_NAME);
    name
}

/// One server's listing.
enum Listing {
    NotYet,
    Listed(Arc<Vec<McpTool>>),
    Failed(Instant),
    /// Asked again, in the background.
    Retrying,
}

struct Entry {
    client: McpClient,
    listing: tokio::sync::Mutex<Listing>,
}

/// The MCP servers of one agent version and their tools.
pub struct Catalog {
    servers: Vec<Entry>,
    config: McpConfig,
}

impl Catalog {
    pub fn new(servers: Vec<McpServer>, config: McpConfig) -> Catalog {
        let http = config.http_client();
        Catalog {
            servers: servers
                .into_iter()
                .map(|server| Entry {
                    client: McpClient::new(server, http.clone()),
                    listing: tokio::sync::Mutex::new(Listing::NotYet),
                })
                .collect(),
            config,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Every tool of the servers that could be listed, in manifest order. A server not listed
    /// yet is listed now (concurrently with the others, within the list timeout); one due for
    /// another try is asked in the background and has no tools meanwhile. A name already taken
    /// by an earlier tool is skipped.
    pub async fn tools(self: &Arc<Self>) -> Vec<McpTool> {
        let listings =
            futures_util::future::join_all((0..self.servers.len()).map(|i| self.listing(i))).await;
        let mut seen = HashSet::new();
        let mut tools = Vec::new();
        for tool in listings.iter().flat_map(|l| l.iter()) {
            if seen.insert(tool.name.clone()) {
                tools.push(tool.clone());
            } else {
                tracing::warn!(server = %tool.server, tool = %tool.tool, name = %tool.name, "MCP tool name taken by another tool; not offered");
            }
        }
        tools
    }

    async fn listing(self: &Arc<Self>, index: usize) -> Arc<Vec<McpTool>> {
        let mut listing = self.servers[index].listing.lock().await;
        let retry_after = Duration::from_millis(self.config.retry_after_ms);
        match &*listing {
            Listing::Listed(tools) => tools.clone(),
            Listing::Failed(at) if at.elapsed() < retry_after => Arc::default(),
            Listing::Retrying => Arc::default(),
            Listing::Failed(_) => {
                *listing = Listing::Retrying;
                let this = self.clone();
                tokio::spawn(async move {
                    let mut listing = this.servers[index].listing.lock().await;
                    *listing = this.list(index).await;
                });
                Arc::default()
            }
            Listing::NotYet => {
                *listing = self.list(index).await;
                match &*listing {
                    Listing::Listed(tools) => tools.clone(),
                    _ => Arc::default(),
                }
            }
        }
    }

    /// Ask server `index` for its tools.
    async fn list(&self, index: usize) -> Listing {
        let client = &self.servers[index].client;
        let server = client.server();
        let timeout = Duration::from_millis(self.config.list_timeout_ms);
        match client.list_tools(timeout).await {
            Ok(found) => {
                let tools: Vec<McpTool> = found
                    .into_iter()
                    .filter_map(|t| offered(&server.name, t))
                    .collect();
                tracing::info!(server = %server.name, tools = tools.len(), "MCP tools listed");
                Listing::Listed(Arc::new(tools))
            }
            Err(error) => {
                tracing::warn!(server = %server.name, url = %server.url, %error, "MCP server not listed; its tools are missing until it is asked again");
                Listing::Failed(Instant::now())
            }
        }
    }

    /// Call `tool` on `server` with `arguments` (JSON text) within the call timeout.
    pub async fn call(
        &self,
        server: &str,
        tool: &str,
        arguments: &str,
    ) -> Result<String, McpError> {
        let Some(entry) = self
            .servers
            .iter()
            .find(|e| e.client.server().name == server)
        else {
            return Err(McpError::Protocol(format!("no MCP server `{server}`")));
        };
        let arguments: serde_json::Value = if arguments.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(arguments)
                .map_err(|e| McpError::Protocol(format!("the arguments are not JSON: {e}")))?
        };
        let timeout = Duration::from_millis(self.config.call_timeout_ms);
        entry.client.call_tool(tool, arguments, timeout).await
    }
}

/// A listed tool as offered to the model, within the contract's caps; `None` when its schema
/// is too large.
fn offered(server: &str, tool: super::ToolInfo) -> Option<McpTool> {
    let parameters = tool.input_schema.to_string();
    if parameters.len() > MAX_PARAMETERS {
        tracing::warn!(server, tool = %tool.name, bytes = parameters.len(), "MCP tool schema over {MAX_PARAMETERS} bytes; not offered");
        return None;
    }
    let mut description = tool.description;
    if description.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        description.truncate(end);
    }
    Some(McpTool {
        name: model_name(server, &tool.name),
        server: server.to_string(),
        tool: tool.name,
        description,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_fit_the_function_name_rule() {
        assert_eq!(model_name("crm", "lookup"), "crm__lookup");
        assert_eq!(
            model_name("crm", "contacts.find v2"),
            "crm__contacts_find_v2"
        );
        let long = model_name("crm", &"x".repeat(100));
        assert_eq!(long.len(), MAX_TOOL_NAME);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
    }

    #[test]
    fn tools_are_kept_within_the_contract_caps() {
        let tool = |description: String, schema: serde_json::Value| super::super::ToolInfo {
            name: "t".into(),
            description,
            input_schema: schema,
        };
        let long = offered("s", tool("é".repeat(600), serde_json::json!({}))).unwrap();
        assert!(long.description.len() <= MAX_DESCRIPTION);
        let huge = serde_json::json!({"description": "x".repeat(MAX_PARAMETERS)});
        assert_eq!(offered("s", tool(String::new(), huge)), None);
    }
}
