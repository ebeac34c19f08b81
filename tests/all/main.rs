//! Switchboard's end-to-end and interop tests, in one test binary (as wasmtime's `tests/all`):
//! one link of the `switchboard` crate instead of one per test file. A module per area; a test's
//! name starts with its module, so one area runs with a filter, e.g.
//! `cargo nextest run -p switchboard-tests -E 'test(/^calls_audio::/)'` or
//! `cargo test -p switchboard-tests --test all -- calls_audio::`.
//!
//! The `*_bench` modules are benchmarks, `#[ignore]`d: run one with
//! `cargo test --release -p switchboard-tests --test all -- --ignored --nocapture media_bench::`.
//!
//! The helpers (peers, fakes, the host as a process, the port allocator) are the `support`
//! module.

mod support;

// The agents and their sandbox.
mod agent_scripts;
mod agents;
mod agents_js;
mod agents_python;
mod authoring;
mod dev;
mod mcp;
mod mcp_bench;
mod readme_recipe;
mod reload;
mod sandbox;

// The control plane.
mod api;
mod api_bench;
mod cli;
mod config_live;
mod config_live_accounts;
mod config_live_import;
mod config_live_model;
mod config_live_trunks;
mod dashboard;
mod dashboard_campaigns;
mod dashboard_config;
mod hardening_api;
mod otlp;
mod softphone;
mod store_crash;
mod store_postgres;
mod webhooks;
mod webhooks_bench;

// Outbound campaigns.
mod amd;
mod amd_bench;
mod campaigns;
mod campaigns_bench;

// Hardening (issue 22).
mod hardening_instance;
mod hardening_sip_ids;

// Several nodes: drain, node identity, leases.
mod node_drain;
mod node_kamailio;
mod node_recovery;
mod node_registration;

// Carriers' media streams (bridges): a fake carrier, the host, an agent and a model.
mod bridge_bench;
mod bridge_openai_sip;
mod bridge_telnyx;
mod bridge_twilio;
mod bridge_vonage;
mod openai_sip_bench;

// Calls end to end: a phone, the host, an agent and a model.
mod calls_audio;
mod calls_bench;
mod calls_cascade;
mod calls_dtmf;
mod calls_failures;
mod calls_gemini;
mod calls_handoff;
mod calls_leak;
mod calls_offline;
mod calls_offline_speech;
mod calls_openai;
mod calls_sip;
mod calls_transfer;
mod cascade_bench;
mod conversation;

// Media.
mod media_audio;
mod media_bench;
mod media_linphone;
mod media_ports;

// Model providers against their fakes.
mod model_bench;
mod model_cascade;
mod model_cascade_llm;
mod model_cascade_stt;
mod model_cascade_tts;
mod model_gemini;
mod model_offline;
mod model_openai;

// SIP against real peers and raw probes.
mod secure_bench;
mod sip_bench;
mod sip_inbound;
mod sip_kamailio;
mod sip_malformed;
mod sip_outbound;
mod sip_policy;
mod sip_refer;
mod sip_srtp;
mod sip_timers;
mod sip_tls;

// Browser calls.
mod webrtc_api;
mod webrtc_bench;
mod webrtc_browser;
