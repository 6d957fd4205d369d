//! Feeds arbitrary text to the TQL lexer and parser (see `deeplake_fuzz::parse_tql`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::parse_tql(data));
