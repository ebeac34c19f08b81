//! Host bindings generated from wit/agent.wit. Imports are async (the guest blocks on them
//! without blocking a tokio worker) and trappable; exports are called asynchronously so the
//! epoch ticker can make runaway guests yield.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, PartialEq],
});
