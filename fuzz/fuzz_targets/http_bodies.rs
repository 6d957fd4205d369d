//! Feeds arbitrary bytes to the daemon's request-body parsers (see
//! `deeplake_fuzz::http` for what is checked).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::http::http_bodies(data));
