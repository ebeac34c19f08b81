//! Shared helpers for Switchboard's end-to-end and interop tests.

pub mod agents;
pub mod api;
pub mod browser;
pub mod calls;
pub mod fake_gemini;
pub mod fake_openai;
pub mod host;
pub mod linphone;
pub mod media;
pub mod model_audio;
pub mod model_tls;
pub mod sip;
pub mod softphone;
