//! The `deeplake` command line and the HTTP daemon `deeplake serve` ([`serve`]).
//!
//! The binary is a thin shell over [`cli`]: every command is a function taking parsed
//! arguments and writers, so tests drive it without spawning processes. All dataset
//! work goes through `deeplake-core`; nothing here builds object keys.

pub mod cli;
pub mod serve;
