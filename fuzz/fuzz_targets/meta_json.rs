//! Feeds arbitrary bytes to the parsers of the JSON files of the 3.x layout and of our
//! records (see `deeplake_fuzz::meta` for what is checked).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| deeplake_fuzz::meta::meta_json(data));
