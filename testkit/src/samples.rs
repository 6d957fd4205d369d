//! Small sample builders and column readers that many tests use: one-element `int64`
//! samples, and a whole integer column read back as `i64`s.

use deeplake_core::{Dataset, NdArray, Sample};

/// A one-element `int64` sample.
pub fn int(v: i64) -> Sample {
    Sample::Array(NdArray::from_slice(vec![1], &[v]).unwrap())
}

/// Every row of a numeric tensor, first element of each, as `i64`.
pub async fn ints(ds: &Dataset, t: &str) -> Vec<i64> {
    let n = ds.tensor_len(t).unwrap();
    ds.read_range(t, 0..n)
        .await
        .unwrap()
        .iter()
        .map(|s| match s {
            Sample::Array(a) => a.to_f64_vec()[0] as i64,
            other => panic!("row of {t} read back as {other:?}"),
        })
        .collect()
}
