#![no_main]
//! See [`switchboard_fuzz::sip_guard`].

libfuzzer_sys::fuzz_target!(|input: &[u8]| switchboard_fuzz::sip_guard(input));
