#![no_main]
//! See [`switchboard_fuzz::srtp`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::srtp(input));
