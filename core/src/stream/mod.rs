//! The streaming engine: rows of a view, in a planned order, fetched, decoded,
//! transformed and collated into batches for training loops.
//!
//! * [`plan`] decides the order (sequential, or a chunk-aware seeded shuffle), the share
//!   of each rank and worker, and where a resumed epoch starts;
//! * [`transform`] holds the native per-sample transforms;
//! * [`engine`] runs a stream: bounded parallel reads, decoding on the CPU pool,
//!   collation, prefetch within a byte budget, a cursor per batch.

pub mod engine;
pub mod plan;
pub mod transform;

pub use engine::{Batch, Column, Ragged, Stream, StreamSpec, StreamStats};
pub use plan::{Cursor, Order, Part, Plan};
pub use transform::Transform;
