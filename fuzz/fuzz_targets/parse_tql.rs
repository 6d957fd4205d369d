//! Feeds arbitrary text to the TQL lexer and parser, and runs what parses on a small
//! dataset (see `deeplake_fuzz::tql`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::tql::parse_tql(data));
