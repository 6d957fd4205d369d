//! Feeds arbitrary bytes to every binary decoder of the 3.x format (see
//! `deeplake_fuzz::format` for what is checked).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::format::decode_format(data));
