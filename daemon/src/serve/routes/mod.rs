//! The HTTP routes, one file per resource. Each file's `router()` lists its routes
//! next to their handlers; `serve::router` merges them.

pub mod append;
pub mod datasets;
pub mod jobs;
pub mod query;
pub mod samples;
pub mod stream;
pub mod system;
pub mod transforms;
pub mod versions;
pub mod viz;
