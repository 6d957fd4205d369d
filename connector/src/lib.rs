//! The Airbyte destination of deeplake-rs as a library; `src/main.rs` is the
//! `destination-deeplake` process around it.
//!
//! The modules: `protocol` (the process edge), `config` (the spec and the validated
//! config), `schema` (JSON schema to tensors, values to cells), `input` (reader and
//! parser threads), `batch` (Arrow columns to samples), `stream` (one dataset) and
//! `sync` (the write loop and its commit points).
//!
//! The parsers of untrusted input (`config::Config::parse`, `sync::parse_catalog`,
//! `schema::plan_columns`, `input::parse_line`) are public so that the fuzz targets
//! call exactly what a sync calls. Only `protocol` writes to stdout, the protocol
//! channel; a sync sends its messages through the `protocol::Emit` it is given.

pub mod batch;
pub mod config;
pub mod error;
pub mod input;
pub mod protocol;
pub mod schema;
pub mod stream;
pub mod sync;
