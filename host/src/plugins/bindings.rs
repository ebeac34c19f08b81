//! Host bindings of the two contract versions this host speaks. Imports are async (the guest
//! blocks on them without blocking a tokio worker) and trappable; exports are called
//! asynchronously so the epoch ticker can make runaway guests yield.
//!
//! 0.2.0 only adds to 0.1.0 and leaves every type of the `types` interface as it was, so the
//! 0.1.0 bindings reuse the 0.2.0 types (`with`): one `Action`, one `CallInfo`... for both
//! versions, and the hooks of either version return the same Rust types.

/// `switchboard:agent@0.2.0` (wit/agent.wit): what the SDK builds today.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, PartialEq],
    });
}

/// `switchboard:agent@0.1.0` (wit/0.1.0/agent.wit, frozen): agents built in wave 1.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, PartialEq],
        with: { "switchboard:agent/types": super::v0_2::switchboard::agent::types },
    });
}
