//! The `deeplake` command line (and, later, the HTTP daemon `deeplake serve`).
//!
//! The binary is a thin shell over [`cli`]: every command is a function taking parsed
//! arguments and writers, so tests drive it without spawning processes. All dataset
//! work goes through `deeplake-core`; nothing here builds object keys.

pub mod cli;
