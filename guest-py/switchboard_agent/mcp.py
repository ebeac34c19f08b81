"""Tools of the MCP servers the manifest names (`[[capabilities.mcp]]`).

The host lists them once per agent version and offers them to the model beside the agent's own
tools, named `server__tool`. Each MCP call reaches the agent first in `on_event` (an
`McpCall` event), where `veto(reason)` refuses it, and its result as an `McpResult` event.
"""

from wit_world.imports import mcp as _mcp

from ._errors import host_call


def tools() -> list:
    """The MCP tools of this agent version as the model sees them (`crm__lookup`): records with
    `name`, `description` and `parameters` (JSON Schema text). Pass the ones the model should
    have as `Session(..., mcp_tools=[...])` to offer only those; by default all are offered."""
    return _mcp.tools()


def rename(tool: str, name: str):
    """In `on_start`: let the model call MCP tool `tool` (a name from `tools()`) by `name`.
    Returns the tool record under that name, to pass in `mcp_tools`; `on_event` still sees the
    server's own names."""
    return host_call(_mcp.rename, tool, name)


def veto(reason: str) -> None:
    """During `on_event` of an MCP call: refuse it; the model gets `reason` as the error."""
    host_call(_mcp.veto, reason)
