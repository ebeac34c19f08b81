#![no_main]
//! See [`switchboard_fuzz::rtcp`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::rtcp(input));
