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

/// A `h x w` RGB image with pixels from `seed`, as PNG file bytes and as the array a
/// decode gives.
pub fn png_image(h: usize, w: usize, seed: u8) -> (Vec<u8>, NdArray) {
    let data: Vec<u8> = (0..h * w * 3)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let arr = NdArray::from_slice(vec![h, w, 3], &data).unwrap();
    let png = deeplake_core::format::compression::encode_sample(
        &arr,
        &deeplake_core::format::compression::Compression::Png,
    )
    .unwrap();
    (png, arr)
}
