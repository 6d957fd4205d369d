//! Integration tests of the connector: the real binary, fed generated Airbyte message
//! files (`shared/airbyte/gen_messages.py`), its output checked by the protocol
//! validator (`shared/airbyte/validate_messages.py`, run by the Python named in
//! `DEEPLAKE_PROTO_PYTHON`; `scripts/test.sh` sets it) and its datasets read back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod common;
mod crash;
mod faults;
mod fuzz_corpus;
mod modes;
mod s3;
