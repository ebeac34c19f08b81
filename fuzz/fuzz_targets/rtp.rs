#![no_main]
//! See [`switchboard_fuzz::rtp`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::rtp(input));
