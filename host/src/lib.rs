//! Switchboard: SIP/RTP phone calls answered by AI voice models, with the agent logic for each
//! dialled number running as a hot-reloadable WebAssembly component.
//!
//! Layout: each module owns one concern. `plugins` runs agents; `config` reads the one TOML file.

pub mod api;
pub mod app;
pub mod authoring;
pub mod bench;
pub mod bridges;
pub mod call;
pub mod campaigns;
pub mod config;
pub mod config_client;
pub mod domain;
pub mod egress;
pub mod http_server;
pub mod live;
pub mod logs;
pub mod mcp;
pub mod media;
pub mod model;
pub mod node;
pub mod otlp;
pub mod outbox;
pub mod plugins;
pub mod recording;
pub mod resample;
mod runtimes;
pub mod sip;
pub mod softphone;
pub mod store;
pub mod tls;
pub mod webhooks;
pub mod webrtc;

// The fuzz targets' code (fuzz/src/lib.rs) names this crate `switchboard`; the corpus replay
// compiles it in here.
#[cfg(test)]
extern crate self as switchboard;
#[cfg(test)]
mod fuzz_corpus;
