//! The bodies of the fuzz targets, as plain functions of bytes. Each module is one
//! target's body and states what it checks; the targets in `fuzz_targets/` only call
//! them. The main workspace's tests include these files and run them over the seed
//! corpora on stable, without libFuzzer: `format`, `meta` and `tql` in core's tests
//! (`core/tests/it/fuzz_corpus.rs`), `airbyte` in the connector's, `http` in the
//! daemon's.

pub mod airbyte;
pub mod format;
pub mod http;
pub mod meta;
pub mod tql;
