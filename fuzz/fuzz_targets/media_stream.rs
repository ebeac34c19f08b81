#![no_main]
//! See [`switchboard_fuzz::media_stream`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::media_stream(input));
