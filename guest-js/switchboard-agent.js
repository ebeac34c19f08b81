// switchboard-agent: the helper library of JavaScript agents (`import ... from "switchboard-agent"`).
//
// An agent module default-exports a class extending `Agent`; `switchboard deploy` builds it with
// componentize-js against wit/agent.wit (switchboard:agent@0.2.0). The host creates a fresh
// instance for every call, so per-call state lives in ordinary fields of the class.
//
// Mapping to the contract (the componentize-js bindings' shapes): records are plain objects with
// camelCase fields, variants are `{ tag, val }`, enums are kebab-case strings, `option` is a value
// or `undefined`, `list<u8>` is a Uint8Array. A host import that fails throws a `HostError`.

import * as callImport from "switchboard:agent/call@0.2.0";
import * as kvImport from "switchboard:agent/kv@0.2.0";
import * as httpImport from "switchboard:agent/http@0.2.0";
import * as configImport from "switchboard:agent/config@0.2.0";
import * as logImport from "switchboard:agent/log@0.2.0";
import * as mcpImport from "switchboard:agent/mcp@0.2.0";

/** A host import refused a request; `kind` is "not-allowed", "invalid" or "unavailable". */
export class HostError extends Error {
  constructor(kind, message) {
    super(`${kind}: ${message}`);
    this.name = "HostError";
    this.kind = kind;
    this.detail = message;
  }
}

/** Run a host import, turning its `error` variant into a HostError. */
function host(f) {
  try {
    return f();
  } catch (e) {
    const payload = e && e.payload;
    if (payload && typeof payload.tag === "string") {
      throw new HostError(payload.tag, String(payload.val));
    }
    throw e;
  }
}

// ---- Actions: what a hook returns; the host runs them in order after the hook. ----

/** Speak these words. */
export const say = (text) => ({ tag: "say", val: String(text) });
/** Play an audio asset shipped with the agent. */
export const play = (name) => ({ tag: "play", val: String(name) });
/** Send keypad digits to the far end (0-9 * # A-D, "," pauses 500 ms). */
export const sendDtmf = (digits) => ({ tag: "send-dtmf", val: String(digits) });
/** Blind-transfer the caller; the target must be listed in agent.toml. */
export const transfer = (target) => ({ tag: "transfer", val: String(target) });
/** End the call once anything queued before it has been spoken. */
export const hangup = () => ({ tag: "hangup" });
/** Gather keypad digits; they arrive as one string in `onDtmf`. */
export function collectDigits({ maxDigits, timeoutMs = 5000, terminator, prompt } = {}) {
  return { tag: "collect-digits", val: { maxDigits, timeoutMs, terminator, prompt } };
}

/** What `onStart` returns to refuse a call: the host answers with this SIP status. */
export class Reject {
  constructor(code, reason) {
    this.code = code;
    this.reason = reason;
  }
}
export const reject = (code, reason) => new Reject(code, reason);

/**
 * A tool the voice model may call. `parameters` is a JSON Schema object (or its JSON text);
 * `handler(args)` gets the parsed arguments with `this` bound to the agent, and returns the
 * result for the model: a string as is, anything else as JSON. A thrown error reaches the model
 * as the tool's error message.
 */
export function tool({ name, description, parameters = { type: "object", properties: {} }, handler }) {
  if (typeof handler !== "function") {
    throw new TypeError(`tool ${name}: handler must be a function`);
  }
  const schema = typeof parameters === "string" ? parameters : JSON.stringify(parameters);
  return { name, description, parameters: schema, handler };
}

// ---- Host imports, wrapped. ----

/** Effects on the current call, queued in order and carried out after the hook returns. */
export const call = {
  say: (text) => host(() => callImport.say(String(text))),
  play: (name) => host(() => callImport.play(name)),
  hangup: () => callImport.hangup(),
  transfer: (target) => host(() => callImport.transfer(target)),
  sendDtmf: (digits) => host(() => callImport.sendDtmf(digits)),
  /** The business outcome of the call ("booked", ...); the last one set wins. */
  setOutcome: (outcome) => host(() => callImport.setOutcome(outcome)),
  /** The call as the host knows it now: `{ info, handoff }`. */
  context: () => callImport.context(),
  headers: () => callImport.headers(),
  /** What the caller is expected to say next: `{ tag: "digits", val: { min, max } }`, ... */
  expect: (hint) => host(() => callImport.expect(typeof hint === "string" ? { tag: hint } : hint)),
};

const utf8 = { encode: (s) => new TextEncoder().encode(s), decode: (b) => new TextDecoder().decode(b) };

/** The agent's persistent key-value store (shared by its calls; quota from agent.toml). */
export const kv = {
  /** The value as text, or undefined. */
  get: (key) => {
    const bytes = kvImport.get(key);
    return bytes === undefined ? undefined : utf8.decode(bytes);
  },
  getBytes: (key) => kvImport.get(key),
  /** Store text or a Uint8Array; throws HostError("not-allowed") over the quota. */
  set: (key, value) =>
    host(() => kvImport.set(key, typeof value === "string" ? utf8.encode(value) : value)),
  delete: (key) => kvImport.delete(key),
  /** Keys starting with `prefix`, sorted, at most 1000. */
  keys: (prefix = "") => kvImport.listKeys(prefix),
};

/**
 * Tools of the MCP servers agent.toml names (`[[capabilities.mcp]]`), offered to the model
 * beside the agent's own tools as `server__tool`. Each MCP call reaches `onEvent` first
 * (`{ tag: "mcp-call", val: { server, tool, arguments } }`), where `mcp.veto(reason)` refuses
 * it; its result follows as `{ tag: "mcp-result", ... }`.
 */
export const mcp = {
  /** The version's MCP tools as the model sees them: `{ name, description, parameters }`. Put
   * the ones the model should have in the session's tools to offer only those; list none of
   * them to offer all. */
  tools: () => mcpImport.tools(),
  /** In `onStart`: let the model call MCP tool `tool` (a name from `tools()`) by `name`.
   * Returns the tool under that name, to put in the session's tools; `onEvent` still sees the
   * server's own names. */
  rename: (tool, name) => host(() => mcpImport.rename(String(tool), String(name))),
  /** During `onEvent` of an MCP call: refuse it; the model gets `reason` as the error. */
  veto: (reason) => host(() => mcpImport.veto(String(reason))),
};

/** A response of `http.fetch`. */
class Response {
  constructor({ status, headers, body }) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  text() {
    return utf8.decode(this.body);
  }
  json() {
    return JSON.parse(this.text());
  }
}

/** Outbound HTTP(S) to the hosts agent.toml allows; synchronous, redirects not followed. */
export const http = {
  fetch(url, { method = "GET", headers = {}, body } = {}) {
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
    let bytes = new Uint8Array();
    if (typeof body === "string") bytes = utf8.encode(body);
    else if (body instanceof Uint8Array) bytes = body;
    else if (body !== undefined) {
      bytes = utf8.encode(JSON.stringify(body));
      if (!pairs.some(([k]) => k.toLowerCase() === "content-type")) {
        pairs.push(["content-type", "application/json"]);
      }
    }
    return new Response(host(() => httpImport.fetch({ method, url, headers: pairs, body: bytes })));
  },
};

/** Settings and secrets from the host configuration (only keys agent.toml declares). */
export const config = {
  get: (key) => configImport.get(key),
};

/** Log lines, tagged by the host with the agent, version and call id. */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((level) => [
    level,
    (message) => logImport.log(level, String(message)),
  ]),
);

// ---- The agent. ----

/** Base class of an agent: override the hooks you need; the others do nothing. */
export class Agent {
  /** Shown by the host; `numbers` is informational (routing comes from agent.toml). */
  static version = "0.1.0";
  static description = "";
  static numbers = [];

  /** First hook: return `{ instructions, greeting, voice, language, tools, model }` or `reject(..)`. */
  onStart(info) {
    return { instructions: "", tools: [] };
  }
  /** A key (or the digits gathered by collectDigits): return actions. */
  onDtmf(digits) {
    return [];
  }
  /** Speech recognised on either side (`role` is "caller" or "agent"). */
  onTranscript(role, text, isFinal) {
    return [];
  }
  /** A tool without a handler was called (tools made with `tool()` go to their handler). */
  onToolCall(name, args) {
    throw new Error(`unknown tool \`${name}\``);
  }
  /** A transfer's outcome: `error` is undefined when the far side took the call. */
  onTransferResult(target, error) {
    return [];
  }
  /** Something happened on the call (`{ tag, val }`, see wit/agent.wit `call-event`). */
  onEvent(event) {
    return [];
  }
  /** Last hook, once per call: `reason` is `{ tag, val }` ("caller-hangup", "transferred", ...). */
  onEnd(reason) {}
}

const message = (e) => (e instanceof Error ? e.message : String(e));

/**
 * The `agent` export for an Agent class (the build's entry module calls it with the manifest's
 * name). The bindings treat a thrown non-Error as a hook's `err`, and a thrown Error as a trap;
 * hooks with a result type therefore throw plain values.
 */
export function serve(AgentClass, { name }) {
  let instance;
  let handlers = new Map();
  const agent = () => (instance ??= new AgentClass());
  const actions = (list) => (list === undefined ? [] : list);
  return {
    describe() {
      return {
        name,
        version: AgentClass.version,
        description: AgentClass.description,
        numbers: AgentClass.numbers,
      };
    },
    onStart(info) {
      const session = agent().onStart(info);
      if (session instanceof Reject) {
        throw { code: session.code, reason: session.reason };
      }
      const tools = session.tools ?? [];
      handlers = new Map(tools.filter((t) => t.handler).map((t) => [t.name, t.handler]));
      return {
        instructions: session.instructions,
        greeting: session.greeting,
        voice: session.voice,
        language: session.language,
        model: session.model,
        tools: tools.map(({ name, description, parameters }) => ({ name, description, parameters })),
      };
    },
    onDtmf: (digits) => actions(agent().onDtmf(digits)),
    onTranscript: (role, text, isFinal) => actions(agent().onTranscript(role, text, isFinal)),
    onToolCall(toolName, argumentsJson) {
      let args;
      try {
        args = argumentsJson === "" ? {} : JSON.parse(argumentsJson);
      } catch (e) {
        throw `bad arguments: ${message(e)}`;
      }
      let result;
      try {
        const handler = handlers.get(toolName);
        result = handler ? handler.call(agent(), args) : agent().onToolCall(toolName, args);
      } catch (e) {
        throw message(e);
      }
      return typeof result === "string" ? result : JSON.stringify(result ?? null);
    },
    onTransferResult: (target, outcome) =>
      actions(agent().onTransferResult(target, outcome.tag === "err" ? outcome.val : undefined)),
    onEvent: (event) => actions(agent().onEvent(event)),
    onEnd: (reason) => {
      agent().onEnd(reason);
    },
  };
}
