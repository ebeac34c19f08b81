"""Write a Switchboard phone agent in Python.

    from switchboard_agent import AgentBase, Session, tool, say, transfer

    class Agent(AgentBase):          # componentize-py exports the class named `Agent`
        name = "my-agent"            # must equal `name` in agent.toml

        def on_start(self, call):
            return Session("You are ...", greeting="Hello!")

        @tool("Opening hours of the business")
        def opening_hours(self):
            return {"hours": "9-17"}

        def on_dtmf(self, digits):
            if digits == "0":
                return transfer("sip:front-desk@example.com")

A fresh instance serves each call, so per-call state lives in ordinary attributes. Hooks the
class does not define do nothing. A hook may return nothing, one action or a list of actions.
"""

import inspect as _inspect
import json as _json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from . import call, config, http, kv, log, mcp
from ._errors import HostError, Invalid, NotAllowed, Unavailable
from .actions import collect_digits, hangup, play, say, send_dtmf, transfer

Role = types.Role
CallInfo = types.CallInfo

__all__ = [
    "AgentBase", "Session", "Reject", "ToolError", "tool", "Role", "CallInfo",
    "say", "play", "send_dtmf", "transfer", "hangup", "collect_digits",
    "call", "kv", "http", "config", "log", "mcp",
    "HostError", "NotAllowed", "Invalid", "Unavailable",
]

_NO_ARGUMENTS = {"type": "object", "properties": {}}


class Session:
    """How the host runs the call, returned by `on_start`. Tools come from `@tool` methods;
    `mcp_tools` (some of `mcp.tools()`) are the MCP tools offered, all of them when None."""

    def __init__(
        self, instructions, greeting=None, voice=None, language=None, model=None, mcp_tools=None
    ):
        self.instructions = instructions
        self.greeting = greeting
        self.voice = voice
        self.language = language
        self.model = model
        self.mcp_tools = mcp_tools


class Reject(Exception):
    """Raise from `on_start` to refuse the call with this SIP status (400..=699)."""

    def __init__(self, code=486, reason="Busy Here"):
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class ToolError(Exception):
    """Raise from a tool: the model gets the message as the tool's error and the call goes on."""


def tool(description, parameters=None, name=None):
    """Offer a method to the voice model as a tool. `parameters` is the JSON Schema of its
    arguments (a dict or JSON text); the model's arguments arrive as keyword arguments. The
    return value (str, or anything JSON-serialisable) goes back to the model."""

    def mark(method):
        schema = parameters if parameters is not None else _NO_ARGUMENTS
        if not isinstance(schema, str):
            schema = _json.dumps(schema)
        method._switchboard_tool = types.Tool(
            name=name or method.__name__, description=description, parameters=schema
        )
        return method

    return mark


def _actions(result):
    """A hook's return value as the contract's list of actions."""
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]


def _tool_result(run):
    """Run a tool body: its value as the model's result text, `ToolError` as the error text."""
    try:
        result = run()
    except ToolError as e:
        raise Err(str(e))
    return result if isinstance(result, str) else _json.dumps(result, separators=(",", ":"))


def _wrap_start(on_start):
    def hook(self, info):
        try:
            session = on_start(self, info)
        except Reject as r:
            raise Err(types.RejectReason(code=r.code, reason=r.reason))
        if not isinstance(session, Session):
            raise TypeError("on_start must return a switchboard_agent.Session")
        return types.SessionConfig(
            instructions=session.instructions,
            greeting=session.greeting,
            voice=session.voice,
            language=session.language,
            tools=[spec for _, spec in type(self)._tools().values()] + list(session.mcp_tools or []),
            model=session.model,
        )

    return hook


def _wrap_actions(on_hook):
    def hook(self, *args):
        return _actions(on_hook(self, *args))

    return hook


def _wrap_transfer_result(on_transfer_result):
    def hook(self, target, outcome):
        error = outcome.value if isinstance(outcome, Err) else None
        return _actions(on_transfer_result(self, target, error))

    return hook


def _wrap_tool_call(on_tool_call):
    def hook(self, name, arguments):
        return _tool_result(lambda: on_tool_call(self, name, arguments))

    return hook


# The author's hooks, as written, and how each becomes the contract's export.
_HOOKS = {
    "on_start": _wrap_start,
    "on_dtmf": _wrap_actions,
    "on_transcript": _wrap_actions,
    "on_event": _wrap_actions,
    "on_transfer_result": _wrap_transfer_result,
    "on_tool_call": _wrap_tool_call,
}


class AgentBase(exports.Agent):
    """The contract's `agent` export. Override the hooks you need:

    - `on_start(call) -> Session` (`call` is a `CallInfo`; raise `Reject` to refuse the call),
    - `on_dtmf(digits)`, `on_transcript(role, text, final)`, `on_event(event)`,
    - `on_transfer_result(target, error)` (`error` is None when the far side took the call),
    - `on_end(reason)`,
    and mark tools with `@tool`. Class attributes `name` (must equal the manifest's),
    `version`, `description` and `numbers` describe the agent.
    """

    name = "agent"
    version = "0.1.0"
    description = ""
    numbers = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for hook, wrap in _HOOKS.items():
            if hook in vars(cls):
                setattr(cls, hook, wrap(vars(cls)[hook]))

    @classmethod
    def _tools(cls):
        """Tool name -> (method name, `types.Tool`), over the class and its bases."""
        found = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                spec = getattr(value, "_switchboard_tool", None)
                if spec is not None:
                    found[spec.name] = (attribute, spec)
        return found

    # ---- defaults, already in the contract's form ----

    def describe(self):
        return types.AgentInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            numbers=list(self.numbers),
        )

    on_start = _wrap_start(lambda self, info: Session(""))

    def on_dtmf(self, digits):
        return []

    def on_transcript(self, role, text, final):
        return []

    def on_event(self, event):
        return []

    def on_transfer_result(self, target, outcome):
        return []

    def on_end(self, reason):
        pass

    def on_tool_call(self, name, arguments):
        entry = type(self)._tools().get(name)
        if entry is None:
            raise Err(f"unknown tool `{name}`")
        try:
            kwargs = _json.loads(arguments) if arguments.strip() else {}
        except ValueError as e:
            raise Err(f"bad arguments: {e}")
        if not isinstance(kwargs, dict):
            raise Err("bad arguments: expected a JSON object")
        method = getattr(self, entry[0])
        try:
            _inspect.signature(method).bind(**kwargs)
        except TypeError as e:
            # The model named arguments the tool does not take, or left a required one out.
            raise Err(f"bad arguments: {e}")
        return _tool_result(lambda: method(**kwargs))
