//! Integration tests of deeplake-core: one binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod corrupt;
mod fuzz_corpus;
mod gc;
mod handoff;
mod merge;
mod packed;
mod slicing;
mod staging;
mod storage;
mod tql;
mod versioning;
