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
    if n > 0 && ndim == 0 {
        return Err(Corruption::new("polygon sample: points of 0 dimensions"));
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
