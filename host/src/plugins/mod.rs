//! The WebAssembly agent runtime: loading agent components, routing dialled numbers to them,
//! hot reload, and one sandboxed instance per call.
//!
//! - [`runtime`]: the wasmtime engine, compilation cache, validation, per-call sandboxes.
//! - [`session`]: one call's instance and the hooks the call drives.
//! - [`manifest`] and [`capabilities`]: what an agent may do, checked at load.
//! - [`routing`]: dialled number → agent name.
//! - [`registry`]: the live versions and routes, swapped atomically; reload events.
//! - [`watcher`]: the plugin folder watcher that feeds the registry.
//! - [`harness`]: drive an agent through a scripted session without SIP.

mod bindings;
pub mod capabilities;
pub mod deploy;
pub mod harness;
pub mod http;
pub mod kv;
pub mod manifest;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod session;
pub mod watcher;

/// The contract's data types (records, variants and enums of `switchboard:agent/types`).
pub mod types {
    pub use super::bindings::switchboard::agent::types::{
        Action, AgentInfo, CallInfo, DigitRequest, Direction, EndReason, Error, LogLevel,
        RejectReason, Role, SessionConfig, Tool,
    };
}

pub use registry::{AgentEvent, AgentEventKind, Registry};
pub use runtime::{AgentSettings, AgentVersion, AgentsConfig, LoadError, Runtime};
pub use session::{AgentFault, AgentSession, FaultKind, StartOutcome, ToolOutcome};
