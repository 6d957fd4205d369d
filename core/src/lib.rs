//! deeplake-core: the library both binaries share.
//!
//! Module order (a module uses only those before it):
//!
//! ```text
//! error, ids, runtime, bytecache -> format (pure bytes <-> structs) -> store (object_store;
//! the only place keys are spelled) -> link (fetching link targets) -> version (commit
//! tree, chunk lookup) -> dataset (read, write) -> tql -> materialize (views written out as
//! dense datasets), stream (order plans, batches) -> transform (user functions in
//! parallel into one commit, or on the fly)
//! ```
//!
//! Datasets are stored in the Deep Lake 3.x Tensor Storage Format, byte-compatible with
//! deeplake 3.9.52: it opens what we write and we open what it writes.

pub mod bytecache;
pub mod error;
pub mod ids;
pub mod runtime;

pub mod format;
pub mod store;

pub mod link;
pub mod version;

pub mod dataset;
pub mod tql;

pub mod materialize;
pub mod stream;
pub mod transform;

pub use dataset::{Dataset, OpenOptions, PackedRows, TensorOptions};
pub use error::{Error, Result};
pub use format::array::{NdArray, Sample};
pub use format::dtype::Dtype;
pub use format::htype::Htype;
pub use store::Store;
