#![no_main]
//! See [`switchboard_fuzz::sdp`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::sdp(input));
