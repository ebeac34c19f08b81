//! The WebAssembly agent runtime: loading agent components, routing dialled numbers to them,
//! hot reload, and one sandboxed instance per call.
//!
//! - [`runtime`]: the wasmtime engine, compilation cache (whole components, and each function
//!   in `function_cache`), validation, per-call sandboxes and per-language pools.
//! - [`contract`]: the contract versions spoken (0.1.0 and 0.2.0) and dispatch to either.
//! - [`session`]: one call's agent and the hooks the call drives, run in a `sandbox` (store,
//!   memory `limiter`, CPU budget, fault rules) and checked by `validate` (the size caps).
//! - `host`: the host imports of the contract, one file per WIT interface.
//! - [`manifest`] and [`capabilities`]: what an agent may do, checked at load.
//! - [`routing`]: dialled number → agent name.
//! - [`registry`]: the live versions and routes, swapped atomically; reload events.
//! - [`watcher`]: the plugin folder watcher that feeds the registry.
//! - [`harness`]: drive an agent through a scripted session without SIP.

mod bindings;
pub mod capabilities;
pub mod contract;
mod convert;
mod cpu;
pub mod deploy;
mod function_cache;
pub mod harness;
mod host;
pub mod http;
pub mod kv;
mod limiter;
pub mod manifest;
pub mod registry;
pub mod routing;
pub mod runtime;
mod sandbox;
pub mod session;
#[cfg(test)]
mod tests_contract;
#[cfg(test)]
mod tests_wave1;
mod validate;
pub mod watcher;

/// The contract's own data types that have no host domain type: what `describe` returns,
/// the errors of host imports, log levels. Everything else crosses the edge as
/// [`crate::domain`] types ([`convert`]).
pub mod types {
    pub use super::bindings::v0_2::switchboard::agent::types::{AgentInfo, Error, LogLevel};
}

pub use contract::Contract;
pub use manifest::Language;
pub use registry::{AgentEvent, AgentEventKind, Registry};
pub use runtime::{AgentSettings, AgentVersion, AgentsConfig, InterpreterPool, LoadError, Runtime};
pub use session::{AgentSession, StartOutcome, ToolOutcome};
