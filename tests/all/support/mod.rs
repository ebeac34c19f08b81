//! Shared helpers for Switchboard's end-to-end and interop tests.

pub mod agents;
pub mod amd_set;
pub mod api;
pub mod baresip;
pub mod bridge_call;
pub mod browser;
pub mod callee;
pub mod calls;
pub mod consumer;
pub mod fake_cartesia;
pub mod fake_chat;
pub mod fake_deepgram;
pub mod fake_elevenlabs;
pub mod fake_gemini;
pub mod fake_openai;
pub mod fake_openai_sip;
pub mod fake_server;
pub mod fake_speech;
pub mod fake_telnyx;
pub mod fake_transcription;
pub mod fake_twilio;
pub mod fake_vonage;
pub mod host;
pub mod kamailio;
pub mod linphone;
pub mod load;
pub mod mcp_servers;
pub mod media;
pub mod model_audio;
pub mod model_events;
pub mod model_tls;
pub mod pcap;
pub mod pjsua;
pub mod ports;
/// A real Postgres server per test process and a database per test (the store's own tests use
/// the same file).
#[path = "../../../host/src/store/tests/postgres_server.rs"]
pub mod postgres;
pub mod process;
pub mod raw_sip;
pub mod rest_fake;
pub mod secure_caller;
pub mod sipp;
pub mod softphone;
pub mod speaker;
pub mod tls_peer;
pub mod twilio_wire;
pub mod webhook_receiver;

/// A temporary folder named `<prefix>…`, removed when dropped.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}
