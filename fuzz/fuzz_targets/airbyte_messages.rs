//! Feeds arbitrary bytes to the connector's config, catalog and stdin message parsers
//! (see `deeplake_fuzz::airbyte` for what is checked).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::airbyte::airbyte_messages(data));
