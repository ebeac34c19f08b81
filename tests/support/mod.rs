//! Shared helpers for Switchboard's end-to-end and interop tests.

pub mod agents;
pub mod media;
