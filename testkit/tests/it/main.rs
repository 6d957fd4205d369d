//! Integration tests of testkit's binaries: the crash test of the write path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
