#![no_main]
//! See [`switchboard_fuzz::dtmf`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::dtmf(input));
