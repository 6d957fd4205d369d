//! The streaming engine: rows of a view, in a planned order, fetched, decoded and
//! collated into batches for training loops.
//!
//! [`plan`] decides the order (sequential, or a chunk-aware seeded shuffle), the share
//! of each rank and worker, and where a resumed epoch starts.

pub mod plan;

pub use plan::{Cursor, Order, Part, Plan};
