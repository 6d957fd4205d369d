//! Integration tests of testkit's binaries: the crash test of the write path and the
//! multi-process race of version-control operations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod race;
