//! Integration tests of testkit's binaries: the crash test of the write path, the
//! multi-process race of version-control operations, and the fault-injecting S3 proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod race;
mod s3_faults;
