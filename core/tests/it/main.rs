//! Integration tests of deeplake-core: one binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod corrupt;
mod faults;
mod fuzz_corpus;
mod gc;
mod handoff;
mod links;
mod materialize;
mod merge;
mod packed;
mod slicing;
mod staging;
mod storage;
mod stream;
mod tql;
mod transform;
mod versioning;

/// Every sample of a scalar integer tensor, in order.
pub async fn int_column(ds: &deeplake_core::Dataset, tensor: &str) -> Vec<i64> {
    ds.read_range(tensor, 0..ds.tensor_len(tensor).unwrap())
        .await
        .unwrap()
        .iter()
        .map(|s| match s {
            deeplake_core::Sample::Array(a) => a.to_f64_vec()[0] as i64,
            other => panic!("tensor {tensor}: {other:?}"),
        })
        .collect()
}
