//! The integration tests of deeplake-daemon, one binary (`cargo test -p deeplake-daemon --test it`).

// Test helpers outside `#[test]` functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod fuzz_corpus;
mod import;
mod links;
mod materialize;
mod serve;
mod serve_arrow;
mod serve_jobs;
mod serve_stream;
mod transform;
mod vc;
mod viz;
mod viz_faults;
