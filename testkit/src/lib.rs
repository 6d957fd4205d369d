//! Test fixtures shared by the `tests/` folders of all crates: the interop case
//! builder (the same `cases.json` that the deeplake 3.9.52 oracle builds), the
//! storage conformance suite and small sample helpers.
//!
//! Test-support code: a failed expectation here is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cases;
pub mod faults;
pub mod http;
pub mod oracle;
pub mod samples;
pub mod storage;
