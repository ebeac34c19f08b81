#![no_main]
//! See [`switchboard_fuzz::manifest`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::manifest(input));
