//! The polygon sample byte layout: `u16 n_polygons`, `u16 points[n]`, then all points as
//! `dtype[ndim]` little-endian. Its stored shape is `(n_polygons, max_points, ndim)`.
//!
//! A sample with no polygons is stored as zero bytes with shape `(0, 0, 0)`. As in 3.x,
//! a sample holds fewer than 65536 polygons, each of 1 to 65535 points, and all polygons
//! of a sample share one `ndim` (1 to 255) and one dtype. `decode` takes the dtype from
//! the tensor and `ndim` from the stored shape, and requires the point data to be exactly
//! what the header announces.

use bytes::Bytes;

use super::Reader;
use super::array::NdArray;
use super::dtype::Dtype;
use crate::error::{Corruption, Error};

/// Encodes polygons (each an array of shape `(points, ndim)`, same dtype and ndim).
/// Returns the bytes and the stored shape.
pub fn encode(polygons: &[NdArray]) -> Result<(Vec<u8>, Vec<usize>), crate::error::Error> {
    let Some(first) = polygons.first() else {
        return Ok((Vec::new(), vec![0, 0, 0]));
    };
    let n = u16::try_from(polygons.len()).map_err(|_| {
        Error::invalid(format!(
            "{} polygons in one sample; at most 65535",
            polygons.len()
        ))
    })?;
    let ndim = match first.shape.as_slice() {
        [_, d] => *d,
        other => {
            return Err(Error::invalid(format!(
                "polygon of shape {other:?}; expected (points, ndim)"
            )));
        }
    };
    if ndim == 0 || ndim > 255 {
        return Err(Error::invalid(format!(
            "polygon points of {ndim} dimensions; expected 1 to 255"
        )));
    }
    let mut lengths = Vec::with_capacity(polygons.len());
    for (k, p) in polygons.iter().enumerate() {
        let points = match p.shape.as_slice() {
            [points, d] if *d == ndim => *points,
            other => {
                return Err(Error::invalid(format!(
                    "polygon {k} has shape {other:?}; expected (points, {ndim})"
                )));
            }
        };
        if p.dtype != first.dtype {
            return Err(Error::invalid(format!(
                "polygon {k} has dtype {}, polygon 0 has {}",
                p.dtype, first.dtype
            )));
        }
        let points = u16::try_from(points)
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "polygon {k} has {points} points; expected 1 to 65535"
                ))
            })?;
        if p.data.len() != usize::from(points) * ndim * p.dtype.size() {
            return Err(Error::invalid(format!(
                "polygon {k}: data length does not match its shape"
            )));
        }
        lengths.push(points);
    }
    let data_len: usize = polygons.iter().map(|p| p.data.len()).sum();
    let mut out = Vec::with_capacity(2 + 2 * lengths.len() + data_len);
    out.extend_from_slice(&n.to_le_bytes());
    for l in &lengths {
        out.extend_from_slice(&l.to_le_bytes());
    }
    for p in polygons {
        out.extend_from_slice(&p.data);
    }
    let max_points = lengths.iter().copied().max().map_or(0, usize::from);
    Ok((out, vec![polygons.len(), max_points, ndim]))
}

/// Decodes polygon bytes given the tensor dtype and the stored shape's `ndim` (last dim).
pub fn decode(bytes: &[u8], dtype: Dtype, ndim: usize) -> Result<Vec<NdArray>, Corruption> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(bytes, "polygon sample");
    let n = r.u16_le()?;
    let n = r.check_count(u64::from(n), 2)?;
    let lengths = (0..n).map(|_| r.u16_le()).collect::<Result<Vec<_>, _>>()?;
    if n > 0 && !(1..=255).contains(&ndim) {
        return Err(Corruption::new(format!(
            "polygon sample: points of {ndim} dimensions; expected 1 to 255"
        )));
    }
    let point_size = ndim
        .checked_mul(dtype.size())
        .ok_or_else(|| Corruption::new(format!("polygon sample: ndim {ndim} too large")))?;
    let points: usize = lengths.iter().map(|&l| usize::from(l)).sum();
    let expected = points.checked_mul(point_size);
    if expected != Some(r.remaining()) {
        return Err(Corruption::new(format!(
            "polygon sample: {points} points of {point_size} bytes announced, {} bytes present",
            r.remaining()
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (k, &len) in lengths.iter().enumerate() {
        if len == 0 {
            return Err(Corruption::new(format!(
                "polygon sample: polygon {k} has no points"
            )));
        }
        let data = r.bytes(usize::from(len) * point_size)?;
        out.push(NdArray {
            dtype,
            shape: vec![usize::from(len), ndim],
            data: Bytes::copy_from_slice(data),
        });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn f32s(shape: Vec<usize>, values: &[f32]) -> NdArray {
        NdArray::from_slice(shape, values).unwrap()
    }

    /// The data section of a deeplake 3.9.52 polygon chunk: `[[1,2],[3,4],[5,6]]` and
    /// `[[7,8],[9,10]]` as float32, stored with shape `(2, 3, 2)`.
    const GOLDEN: &str = "0200030002000000803f0000004000004040000080400000a0400000c0400000\
                          e040000000410000104100002041";

    fn golden_polygons() -> Vec<NdArray> {
        vec![
            f32s(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            f32s(vec![2, 2], &[7.0, 8.0, 9.0, 10.0]),
        ]
    }

    #[test]
    fn golden_layout_and_shape() {
        let (bytes, shape) = encode(&golden_polygons()).unwrap();
        assert_eq!(bytes, hex::decode(GOLDEN).unwrap());
        assert_eq!(shape, vec![2, 3, 2]);
        assert_eq!(decode(&bytes, Dtype::F32, 2).unwrap(), golden_polygons());
    }

    #[test]
    fn empty_sample() {
        assert_eq!(encode(&[]).unwrap(), (vec![], vec![0, 0, 0]));
        assert_eq!(decode(&[], Dtype::F32, 0).unwrap(), vec![]);
        assert_eq!(decode(&[0, 0], Dtype::F32, 2).unwrap(), vec![]);
    }

    #[test]
    fn invalid_polygons_are_rejected() {
        let empty_polygon = f32s(vec![0, 2], &[]);
        assert!(encode(&[empty_polygon]).is_err());
        let mixed_ndim = [
            f32s(vec![1, 2], &[1.0, 2.0]),
            f32s(vec![1, 3], &[1.0, 2.0, 3.0]),
        ];
        assert!(encode(&mixed_ndim).is_err());
        let mixed_dtype = [
            f32s(vec![1, 2], &[1.0, 2.0]),
            NdArray::from_slice(vec![1, 2], &[1u8, 2]).unwrap(),
        ];
        assert!(encode(&mixed_dtype).is_err());
        assert!(
            encode(&[f32s(vec![2], &[1.0, 2.0])]).is_err(),
            "1-D polygon"
        );
        assert!(encode(&[f32s(vec![2, 0], &[])]).is_err(), "0-D points");
        let too_many = vec![f32s(vec![1, 1], &[0.0]); 65536];
        assert!(encode(&too_many).is_err());
        let too_long = NdArray::from_slice(vec![65536, 1], &vec![0u8; 65536]).unwrap();
        assert!(encode(&[too_long]).is_err());
    }

    #[test]
    fn corrupt_bytes_are_rejected() {
        let bytes = hex::decode(GOLDEN).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut], Dtype::F32, 2).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(decode(&longer, Dtype::F32, 2).is_err());
        assert!(decode(&bytes, Dtype::F32, 3).is_err(), "wrong ndim");
        assert!(decode(&bytes, Dtype::F32, 0).is_err());
        assert!(decode(&bytes, Dtype::F32, usize::MAX).is_err());
        assert!(decode(&[1, 0, 1, 0, 0], Dtype::U8, 256).is_err());
        // A header claiming 65535 polygons of 65535 points over a few bytes.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], Dtype::F64, 3).is_err());
        // A polygon without points.
        assert!(decode(&[1, 0, 0, 0], Dtype::F32, 2).is_err());
    }

    fn polygons() -> impl Strategy<Value = (Dtype, usize, Vec<NdArray>)> {
        (prop::sample::select(Dtype::ALL.to_vec()), 1usize..4).prop_flat_map(|(dtype, ndim)| {
            let polygon = (1usize..6).prop_flat_map(move |points| {
                prop::collection::vec(any::<u8>(), points * ndim * dtype.size()).prop_map(
                    move |data| NdArray {
                        dtype,
                        shape: vec![points, ndim],
                        data: data.into(),
                    },
                )
            });
            (
                Just(dtype),
                Just(ndim),
                prop::collection::vec(polygon, 0..6),
            )
        })
    }

    proptest! {
        #[test]
        fn round_trip((dtype, ndim, polys) in polygons()) {
            let (bytes, shape) = encode(&polys).unwrap();
            let max_points = polys.iter().map(|p| p.shape[0]).max().unwrap_or(0);
            let want_shape = if polys.is_empty() { vec![0, 0, 0] } else { vec![polys.len(), max_points, ndim] };
            prop_assert_eq!(shape, want_shape);
            prop_assert_eq!(decode(&bytes, dtype, ndim).unwrap(), polys);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), ndim in 0usize..5) {
            if let Ok(polys) = decode(&bytes, Dtype::U16, ndim) {
                let (again, _) = encode(&polys).unwrap();
                prop_assert_eq!(decode(&again, Dtype::U16, ndim).unwrap(), polys);
            }
        }
    }
}
