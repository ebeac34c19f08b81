#![no_main]
//! See [`switchboard_fuzz::webhooks`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::webhooks(input));
