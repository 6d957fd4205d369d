//! Turns a user [`Sample`] into what a chunk stores, following the tensor's htype,
//! dtype and compression. Pure CPU work: callers run it on the rayon pool.
//!
//! | input | tensor | stored |
//! |---|---|---|
//! | `Array` | no sample compression | raw LE bytes (chunk codec applied per chunk) |
//! | `Array` | jpeg / png / lz4 | the array encoded with that codec |
//! | `Encoded` in the tensor's codec | any | the bytes verbatim, shape from the header |
//! | `Encoded` in another codec | any | decoded, then as `Array` |
//! | `Text` / `Json` / `List` | text / json / list, tag | UTF-8 / JSON bytes |
//! | `Link` | link[...] | the path string |
//! | `Polygons` | polygon | the polygon byte layout |
//! | `Empty` | any | no bytes, an all-zero shape |
//!
//! Samples whose stored size passes the tiling threshold are cut into tiles, each
//! stored in its own chunk.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::compression::{self, Compression};
use crate::format::dtype::Dtype;
use crate::format::htype::{BaseHtype, Htype};
use crate::format::{json as pyjson, polygon};

/// What `encode` needs to know about the tensor.
#[derive(Clone, Debug)]
pub struct EncodeCtx {
    pub htype: Htype,
    pub dtype: Option<Dtype>,
    pub sample_compression: Option<Compression>,
    pub tiling_threshold: Option<usize>,
    /// Dims of an empty sample.
    pub empty_ndim: usize,
}

/// One stored item (a sample, or one item of a sequence).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredItem {
    pub shape: Vec<u32>,
    pub bytes: Bytes,
    /// Set when the item is tiled: `bytes` is then empty and each tile is stored in its
    /// own chunk.
    pub tiles: Option<Tiles>,
    /// The per-sample `_info` record for htypes that have one.
    pub info: Option<Value>,
    /// Shape recorded in `_shape` (link tensors: the target's shape when known).
    pub logical_shape: Vec<u64>,
    /// Link tensors: the creds encoder value (0: no creds key, i: `creds_keys[i - 1]`).
    pub creds: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tiles {
    pub sample_shape: Vec<u64>,
    pub tile_shape: Vec<u64>,
    /// `(tile shape, stored bytes)` in row-major order of the tile grid.
    pub tiles: Vec<(Vec<u32>, Vec<u8>)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Prepared {
    Item(StoredItem),
    Sequence(Vec<StoredItem>),
}

fn to_u32_shape(shape: &[usize]) -> Result<Vec<u32>> {
    shape
        .iter()
        .map(|&d| {
            u32::try_from(d).map_err(|_| Error::invalid(format!("dimension {d} exceeds u32")))
        })
        .collect()
}

fn item(shape: &[usize], bytes: impl Into<Bytes>) -> Result<StoredItem> {
    Ok(StoredItem {
        shape: to_u32_shape(shape)?,
        bytes: bytes.into(),
        tiles: None,
        info: None,
        logical_shape: shape.iter().map(|&d| d as u64).collect(),
        creds: 0,
    })
}

/// Budget of [`is_light`]: bytes of plain data that encoding copies in a few tens of
/// microseconds.
const LIGHT_BYTES: usize = 256 << 10;

/// Whether encoding `samples` is cheap enough to run where the caller is: no codec, no
/// JSON, a bounded number of plain bytes. Handing such a batch (a column of labels or
/// boxes) to the CPU pool costs more in thread wake-ups than the encoding itself, and
/// under load each hand-off waits for a core.
pub fn is_light(ctx: &EncodeCtx, samples: &[Sample]) -> bool {
    if ctx.sample_compression.is_some() || ctx.htype.is_sequence || samples.len() > 4096 {
        return false;
    }
    let mut bytes = 0usize;
    for s in samples {
        bytes += match s {
            Sample::Array(a) => a.data.len(),
            Sample::Text(t) => t.len(),
            Sample::Link { path, .. } => path.len(),
            Sample::Empty => 0,
            Sample::Encoded { .. }
            | Sample::Json(_)
            | Sample::List(_)
            | Sample::Polygons(_)
            | Sample::Sequence(_) => return false,
        };
        if bytes > LIGHT_BYTES {
            return false;
        }
    }
    true
}

/// Encodes one user sample for a tensor.
pub fn encode(ctx: &EncodeCtx, sample: Sample) -> Result<Prepared> {
    if ctx.htype.is_sequence {
        return match sample {
            Sample::Sequence(items) => {
                let inner = EncodeCtx {
                    htype: Htype {
                        is_sequence: false,
                        ..ctx.htype
                    },
                    ..ctx.clone()
                };
                let items = items
                    .into_iter()
                    .map(|s| encode_item(&inner, s))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Prepared::Sequence(items))
            }
            Sample::Empty => Ok(Prepared::Sequence(Vec::new())),
            other => Err(Error::invalid(format!(
                "tensor of htype {} takes sequences (a list of items), got {}",
                ctx.htype,
                kind(&other)
            ))),
        };
    }
    if let Sample::Sequence(_) = sample {
        return Err(Error::invalid(format!(
            "tensor of htype {} does not take sequences",
            ctx.htype
        )));
    }
    encode_item(ctx, sample).map(Prepared::Item)
}

fn kind(s: &Sample) -> &'static str {
    match s {
        Sample::Array(_) => "an array",
        Sample::Encoded { .. } => "encoded bytes",
        Sample::Text(_) => "text",
        Sample::Json(_) => "json",
        Sample::List(_) => "a list",
        Sample::Link { .. } => "a link",
        Sample::Polygons(_) => "polygons",
        Sample::Sequence(_) => "a sequence",
        Sample::Empty => "an empty sample",
    }
}

fn encode_item(ctx: &EncodeCtx, sample: Sample) -> Result<StoredItem> {
    let h = ctx.htype;
    if h.is_link {
        return match sample {
            Sample::Link { path, .. } | Sample::Text(path) => {
                // The target's shape and info are learned by the verify step
                // (dataset/links.rs), which has the network; unverified links have none.
                let mut it = item(&[1], path.into_bytes())?;
                it.logical_shape = Vec::new();
                it.info = Some(json!({}));
                Ok(it)
            }
            Sample::Empty => {
                let mut it = item(&[0], Vec::new())?;
                it.logical_shape = vec![0; ctx.empty_ndim];
                Ok(it)
            }
            other => Err(Error::invalid(format!(
                "link tensor takes a path or URL, got {}",
                kind(&other)
            ))),
        };
    }
    match h.base {
        BaseHtype::Text => match sample {
            Sample::Text(s) => item(&[1], s.into_bytes()),
            // 3.9.52 stores None like "": shape (1,), no bytes.
            Sample::Empty => item(&[1], Vec::new()),
            other => Err(Error::invalid(format!(
                "text tensor takes strings, got {}",
                kind(&other)
            ))),
        },
        BaseHtype::Json => match sample {
            Sample::Json(v) => item(&[1], pyjson::to_compact(&v)),
            Sample::Text(s) => item(&[1], pyjson::to_compact(&Value::String(s))),
            Sample::List(l) => item(&[1], pyjson::to_compact(&Value::Array(l))),
            Sample::Empty => item(&[1], pyjson::to_compact(&json!({}))),
            other => Err(Error::invalid(format!(
                "json tensor takes JSON values, got {}",
                kind(&other)
            ))),
        },
        BaseHtype::List | BaseHtype::Tag => {
            let list = match sample {
                Sample::List(l) | Sample::Json(Value::Array(l)) => l,
                Sample::Text(s) if h.base == BaseHtype::Tag => vec![Value::String(s)],
                Sample::Empty => Vec::new(),
                other => {
                    return Err(Error::invalid(format!(
                        "{} tensor takes lists, got {}",
                        h.base.name(),
                        kind(&other)
                    )));
                }
            };
            // 3.9.52 stores an empty tag (or None) as `[null]` of shape (1,); an empty
            // list stays `[]` of shape (0,).
            let list = if list.is_empty() && h.base == BaseHtype::Tag {
                vec![Value::Null]
            } else {
                list
            };
            let n = list.len();
            item(&[n], pyjson::to_compact(&Value::Array(list)))
        }
        BaseHtype::Polygon => match sample {
            Sample::Polygons(p) => {
                let p: Vec<NdArray> = match ctx.dtype {
                    Some(d) => p.iter().map(|a| a.cast(d)).collect(),
                    None => p,
                };
                let (bytes, shape) = polygon::encode(&p)?;
                item(&shape, bytes)
            }
            Sample::Empty => item(&[0, 0, 2], Vec::new()),
            other => Err(Error::invalid(format!(
                "polygon tensor takes polygons, got {}",
                kind(&other)
            ))),
        },
        _ => encode_numeric(ctx, sample),
    }
}

pub(super) fn image_info(shape: &[usize], format: &str) -> Value {
    json!({"exif": {}, "shape": shape, "format": format, "filename": "", "modified": false})
}

fn encode_numeric(ctx: &EncodeCtx, sample: Sample) -> Result<StoredItem> {
    let h = ctx.htype;
    let has_info = h.has_info_tensor();
    match sample {
        Sample::Empty => {
            let shape = vec![0usize; ctx.empty_ndim.max(1)];
            let mut it = item(&shape, Vec::new())?;
            if has_info {
                it.info = Some(json!({}));
            }
            Ok(it)
        }
        Sample::Encoded {
            bytes,
            compression: c,
            shape,
        } => {
            if ctx.sample_compression.as_ref() == Some(&c) {
                let shape = match shape.clone() {
                    Some(s) => s,
                    None if c.is_image() => compression::image_shape(&bytes, &c)?,
                    None => {
                        return Err(Error::invalid(format!(
                            "the shape of a {} sample must be given (it cannot be read from the bytes)",
                            c.name()
                        )));
                    }
                };
                h.check_shape(&shape)?;
                let wrong_channels = match (h.base, shape.get(2)) {
                    (BaseHtype::ImageRgb, Some(&ch)) => ch != 3,
                    (BaseHtype::ImageGray, Some(&ch)) => ch != 1,
                    _ => false,
                };
                if !wrong_channels || !c.can_decode() {
                    let mut it = item(&shape, bytes.clone())?;
                    if has_info {
                        it.info = Some(image_info(&shape, c.name()));
                    }
                    return Ok(it);
                }
                // image.rgb / image.gray convert other channel counts, as 3.x does; that
                // needs a decode and a re-encode.
            }
            if !c.can_decode() {
                return Err(Error::unsupported(format!(
                    "a {} sample cannot be stored in a tensor with sample compression {}; \
                     convert it first",
                    c.name(),
                    ctx.sample_compression
                        .as_ref()
                        .map(|c| c.name())
                        .unwrap_or("none")
                )));
            }
            let dtype = ctx.dtype.unwrap_or(Dtype::U8);
            let hint: Vec<usize> = shape.unwrap_or_default();
            let arr = compression::decode_sample(&bytes, &c, dtype, &hint)?;
            encode_array(ctx, arr)
        }
        Sample::Array(arr) => encode_array(ctx, arr),
        other => Err(Error::invalid(format!(
            "{} tensor takes arrays, got {}",
            h.base.name(),
            kind(&other)
        ))),
    }
}

/// Pillow's `convert("RGB")` for uint8 (H, W, C) arrays: gray is replicated, alpha dropped.
fn to_rgb(arr: NdArray) -> Result<NdArray> {
    let (Some(&ch), 3, Dtype::U8) = (arr.shape.get(2), arr.shape.len(), arr.dtype) else {
        return Ok(arr);
    };
    if ch == 3 {
        return Ok(arr);
    }
    let px = arr.shape[0] * arr.shape[1];
    let mut out = Vec::with_capacity(px * 3);
    for p in arr.data.chunks_exact(ch) {
        match ch {
            1 | 2 => out.extend_from_slice(&[p[0], p[0], p[0]]),
            _ => out.extend_from_slice(&p[..3]),
        }
    }
    NdArray::new(Dtype::U8, vec![arr.shape[0], arr.shape[1], 3], out)
}

/// Pillow's `convert("L")` for uint8 (H, W, C) arrays (ITU-R 601-2 luma).
fn to_gray(arr: NdArray) -> Result<NdArray> {
    let (Some(&ch), 3, Dtype::U8) = (arr.shape.get(2), arr.shape.len(), arr.dtype) else {
        return Ok(arr);
    };
    if ch == 1 {
        return Ok(arr);
    }
    let out: Vec<u8> = arr
        .data
        .chunks_exact(ch)
        .map(|p| {
            if ch < 3 {
                p[0]
            } else {
                let l = p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000;
                (l >> 16) as u8
            }
        })
        .collect();
    NdArray::new(Dtype::U8, vec![arr.shape[0], arr.shape[1], 1], out)
}

fn cast_checked(arr: NdArray, to: Dtype) -> Result<NdArray> {
    if arr.dtype == to {
        return Ok(arr);
    }
    if !to.is_float() {
        let (lo, hi) = int_range(to);
        for v in arr.to_f64_vec() {
            if v.fract() != 0.0 || v < lo || v > hi || v.is_nan() {
                return Err(Error::invalid(format!(
                    "value {v} of a {} array does not fit the tensor's dtype {to}",
                    arr.dtype
                )));
            }
        }
    }
    Ok(arr.cast(to))
}

fn int_range(d: Dtype) -> (f64, f64) {
    match d {
        Dtype::Bool => (0.0, 1.0),
        Dtype::U8 => (0.0, u8::MAX as f64),
        Dtype::U16 => (0.0, u16::MAX as f64),
        Dtype::U32 => (0.0, u32::MAX as f64),
        Dtype::U64 => (0.0, u64::MAX as f64),
        Dtype::I8 => (i8::MIN as f64, i8::MAX as f64),
        Dtype::I16 => (i16::MIN as f64, i16::MAX as f64),
        Dtype::I32 => (i32::MIN as f64, i32::MAX as f64),
        Dtype::I64 => (i64::MIN as f64, i64::MAX as f64),
        _ => (f64::MIN, f64::MAX),
    }
}

fn encode_array(ctx: &EncodeCtx, arr: NdArray) -> Result<StoredItem> {
    let h = ctx.htype;
    let mut arr = match ctx.dtype {
        Some(d) => cast_checked(arr, d)?,
        None => arr,
    };
    // Grayscale (H, W) images are stored as (H, W, 1), as 3.x does.
    if matches!(
        h.base,
        BaseHtype::Image | BaseHtype::ImageGray | BaseHtype::ImageRgb
    ) && arr.shape.len() == 2
    {
        arr.shape.push(1);
    }
    match h.base {
        BaseHtype::ImageRgb => arr = to_rgb(arr)?,
        BaseHtype::ImageGray => arr = to_gray(arr)?,
        _ => {}
    }
    if arr.shape.is_empty() {
        arr.shape = vec![1];
    }
    h.check_shape(&arr.shape)?;
    let shape = arr.shape.clone();
    let raw_len = arr.data.len();
    if let Some(t) = ctx.tiling_threshold
        && raw_len > t
        && raw_len > 0
        && !shape.is_empty()
    {
        return encode_tiled(ctx, arr, t);
    }
    let bytes = encode_payload(ctx, &arr)?;
    let mut it = item(&shape, bytes)?;
    if h.has_info_tensor() {
        it.info = Some(match &ctx.sample_compression {
            Some(c) => image_info(&shape, c.name()),
            None => json!({}),
        });
    }
    Ok(it)
}

fn encode_payload(ctx: &EncodeCtx, arr: &NdArray) -> Result<Vec<u8>> {
    match &ctx.sample_compression {
        None => Ok(arr.data.to_vec()),
        Some(Compression::Lz4) => Ok(compression::lz4_compress(&arr.data)),
        Some(c) => compression::encode_sample(arr, c),
    }
}

/// Tile shape: halve the largest dimension until one tile's raw bytes fit the threshold.
pub fn tile_shape(shape: &[usize], item_size: usize, threshold: usize) -> Vec<usize> {
    let mut t: Vec<usize> = shape.to_vec();
    let bytes = |t: &[usize]| t.iter().product::<usize>() * item_size;
    // Image tiles keep their channel dimension whole.
    let splittable = if shape.len() == 3 && shape[2] <= 4 {
        2
    } else {
        shape.len()
    };
    while bytes(&t) > threshold {
        let Some((i, _)) = t[..splittable]
            .iter()
            .enumerate()
            .filter(|(_, d)| **d > 1)
            .max_by_key(|(_, d)| **d)
        else {
            break;
        };
        t[i] = t[i].div_ceil(2);
    }
    t
}

fn encode_tiled(ctx: &EncodeCtx, arr: NdArray, threshold: usize) -> Result<StoredItem> {
    let isz = arr.dtype.size();
    let shape = arr.shape.clone();
    let ts = tile_shape(&shape, isz, threshold);
    let grid: Vec<usize> = shape.iter().zip(&ts).map(|(s, t)| s.div_ceil(*t)).collect();
    let n_tiles: usize = grid.iter().product();
    let mut tiles = Vec::with_capacity(n_tiles);
    for flat in 0..n_tiles {
        // Grid coordinates of this tile, row-major.
        let mut rem = flat;
        let mut coord = vec![0usize; grid.len()];
        for d in (0..grid.len()).rev() {
            coord[d] = rem % grid[d];
            rem /= grid[d];
        }
        let start: Vec<usize> = coord.iter().zip(&ts).map(|(c, t)| c * t).collect();
        let this: Vec<usize> = start
            .iter()
            .zip(&ts)
            .zip(&shape)
            .map(|((s, t), n)| (*t).min(n - s))
            .collect();
        let data = copy_block(&arr.data, &shape, isz, &start, &this);
        let tile = NdArray::new(arr.dtype, this.clone(), data)?;
        tiles.push((to_u32_shape(&this)?, encode_payload(ctx, &tile)?));
    }
    let mut it = item(&shape, Vec::new())?;
    it.tiles = Some(Tiles {
        sample_shape: shape.iter().map(|&d| d as u64).collect(),
        tile_shape: ts.iter().map(|&d| d as u64).collect(),
        tiles,
    });
    if ctx.htype.has_info_tensor() {
        it.info = Some(match &ctx.sample_compression {
            Some(c) => image_info(&shape, c.name()),
            None => json!({}),
        });
    }
    Ok(it)
}

/// Copies the block `[start, start + size)` out of a C-order array.
pub fn copy_block(
    data: &[u8],
    shape: &[usize],
    isz: usize,
    start: &[usize],
    size: &[usize],
) -> Vec<u8> {
    let nd = shape.len();
    let total: usize = size.iter().product();
    let mut out = Vec::with_capacity(total * isz);
    if total == 0 {
        return out;
    }
    let row = size[nd - 1] * isz;
    let mut strides = vec![isz; nd];
    for d in (0..nd.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let outer: usize = size[..nd - 1].iter().product();
    let mut idx = vec![0usize; nd.saturating_sub(1)];
    for _ in 0..outer {
        let mut off = start[nd - 1] * isz;
        for d in 0..nd - 1 {
            off += (start[d] + idx[d]) * strides[d];
        }
        out.extend_from_slice(&data[off..off + row]);
        for d in (0..nd - 1).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Writes `block` (shape `size`) into a C-order array at `start`.
pub fn paste_block(
    out: &mut [u8],
    shape: &[usize],
    isz: usize,
    start: &[usize],
    size: &[usize],
    block: &[u8],
) {
    let nd = shape.len();
    let total: usize = size.iter().product();
    if total == 0 || nd == 0 {
        return;
    }
    let row = size[nd - 1] * isz;
    let mut strides = vec![isz; nd];
    for d in (0..nd - 1).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let outer: usize = size[..nd - 1].iter().product();
    let mut idx = vec![0usize; nd - 1];
    for k in 0..outer {
        let mut off = start[nd - 1] * isz;
        for d in 0..nd - 1 {
            off += (start[d] + idx[d]) * strides[d];
        }
        let src = &block[k * row..(k + 1) * row];
        if let Some(dst) = out.get_mut(off..off + row) {
            dst.copy_from_slice(src);
        }
        for d in (0..nd - 1).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_shape_halves_largest_dim() {
        assert_eq!(tile_shape(&[60, 60], 1, 1000), vec![30, 30]);
        assert_eq!(tile_shape(&[100, 37], 1, 1000), vec![25, 37]);
        assert_eq!(
            tile_shape(&[4000, 4000, 3], 1, 16_000_000),
            vec![2000, 2000, 3]
        );
    }

    #[test]
    fn copy_and_paste_blocks_round_trip() {
        let shape = [5usize, 7];
        let data: Vec<u8> = (0..35).collect();
        let mut out = vec![0u8; 35];
        for (start, size) in [
            ([0, 0], [3, 4]),
            ([3, 0], [2, 4]),
            ([0, 4], [3, 3]),
            ([3, 4], [2, 3]),
        ] {
            let b = copy_block(&data, &shape, 1, &start, &size);
            assert_eq!(b.len(), size[0] * size[1]);
            paste_block(&mut out, &shape, 1, &start, &size, &b);
        }
        assert_eq!(out, data);
    }
}
