//! The read path: sample index -> chunk (via the chunk-id encoder and the chunk-set
//! walk) -> bytes -> decoded sample.
//!
//! * Reads of many samples fetch each needed chunk whole, concurrently, and decode on
//!   the CPU pool.
//! * Reads of a few samples from a chunk that is not chunk-compressed fetch only the
//!   chunk header (cached) and then the samples' byte ranges, so random access costs
//!   about one small range read per sample.
//! * Chunks held by the writer (unflushed) are read from memory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::cache::Kind;
use super::encode::paste_block;
use super::tensor::TensorState;
use super::{Dataset, class_names};
use crate::error::{Corruption, Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::chunk::Chunk;
use crate::format::compression::{self, Compression};
use crate::format::dtype::Dtype;
use crate::format::htype::BaseHtype;
use crate::format::{Reader, polygon};
use crate::ids::ChunkId;

/// How to read.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// Decode sample-compressed data (images) into arrays. When false, such samples are
    /// returned as [`Sample::Encoded`] with their stored bytes.
    pub decode: bool,
    /// Concurrent chunk fetches.
    pub concurrency: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            decode: true,
            concurrency: 8,
        }
    }
}

/// Decompresses a chunk's data section if the tensor has a chunk codec.
pub fn decompress_data(
    chunk: &Chunk,
    cc: Option<&Compression>,
    max_chunk: usize,
) -> Result<Vec<u8>, Corruption> {
    match cc {
        Some(Compression::Lz4) => {
            // A chunk may exceed max_chunk_size by one sample; allow generous headroom
            // but never an unbounded allocation.
            let cap = max_chunk
                .saturating_mul(4)
                .max(1 << 26)
                .min(u32::MAX as usize);
            compression::lz4_decompress(&chunk.data, cap)
        }
        Some(other) if other.is_image() => Err(Corruption::new(format!(
            "image chunk compression {} is not supported",
            other.name()
        ))),
        _ => Ok(chunk.data.to_vec()),
    }
}

/// Length of a chunk header, from a prefix of the chunk; `None` if the prefix is too
/// short to tell.
pub fn header_len(prefix: &[u8]) -> Result<Option<usize>, Corruption> {
    let mut r = Reader::new(prefix, "chunk header");
    let Ok(_) = r.version() else { return Ok(None) };
    let (Ok(rows), Ok(cols)) = (r.i32_le(), r.i32_le()) else {
        return Ok(None);
    };
    if rows < 0 || cols < 0 {
        return Err(Corruption::new(format!(
            "chunk header: negative shape table size {rows}x{cols}"
        )));
    }
    let shapes = (rows as usize)
        .checked_mul(cols as usize)
        .and_then(|n| n.checked_mul(4));
    let Some(shapes) = shapes else {
        return Err(Corruption::new("chunk header: shape table too large"));
    };
    let at = r.pos() + shapes;
    if prefix.len() < at + 4 {
        return Ok(None);
    }
    let mut b = [0u8; 4];
    b.copy_from_slice(&prefix[at..at + 4]);
    let bp = u32::from_le_bytes(b) as usize;
    Ok(Some(at + 4 + bp * 12))
}

/// Items `[start, end)` that hold sample range `range`.
fn item_range(t: &TensorState, range: &Range<u64>) -> Result<Vec<Range<u64>>> {
    match &t.seq {
        None => Ok((range.start..range.end).map(|i| i..i + 1).collect()),
        Some(s) => (range.start..range.end)
            .map(|i| {
                s.items(i)
                    .map(|(a, b)| a..b)
                    .ok_or_else(|| Error::internal(format!("sequence {i} missing")))
            })
            .collect(),
    }
}

/// A stored item fetched from its chunk(s).
enum Fetched {
    Plain {
        shape: Vec<u32>,
        bytes: Bytes,
    },
    Tiled {
        sample_shape: Vec<u64>,
        tile_shape: Vec<u64>,
        tiles: Vec<(Vec<u32>, Bytes)>,
    },
}

/// A chunk the writer holds in memory (being filled, changed, or written in the
/// background): it is newer than anything on storage.
fn held_chunk(t: &TensorState, id: u64, with_data: bool) -> Option<Chunk> {
    let to_chunk = |b: &crate::format::chunk::ChunkBuilder| Chunk {
        version: crate::format::WRITER_VERSION.to_owned(),
        shapes: b.shapes.clone(),
        byte_positions: b.byte_positions.clone(),
        data: if with_data {
            b.data.to_bytes()
        } else {
            Bytes::new()
        },
    };
    if let Some(b) = t.builders.get(&id) {
        return Some(to_chunk(b));
    }
    let map = super::writer::lock(&t.inflight).ok()?;
    map.get(&id).map(|b| to_chunk(b))
}

fn is_held(t: &TensorState, id: u64) -> bool {
    t.builders.contains_key(&id)
        || super::writer::lock(&t.inflight)
            .map(|m| m.contains_key(&id))
            .unwrap_or(false)
}

async fn fetch_chunk(ds: &Dataset, t: &TensorState, id: u64) -> Result<Arc<Chunk>> {
    if let Some(c) = held_chunk(t, id, true) {
        return Ok(Arc::new(c));
    }
    let (key, ckey) = cache_key(ds, t, id, Kind::Chunk).await?;
    if let Some(c) = ds.cache.get(&ckey) {
        return Ok(c);
    }
    let bytes = ds.store.get(&key).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::corrupt(
            format!("{}/{key}", ds.store.url()),
            format!(
                "chunk listed in the chunk index of tensor {} is missing",
                t.key
            ),
        ),
        other => other,
    })?;
    ds.cache.shared().record_read(bytes.len());
    let path = format!("{}/{key}", ds.store.url());
    let cc = t.chunk_compression.clone();
    let max = t.max_chunk_size();
    let chunk = crate::runtime::spawn_cpu(move || {
        let mut c = Chunk::decode(bytes).map_err(|e| e.at(&path))?;
        if cc.is_some() {
            c.data = Bytes::from(decompress_data(&c, cc.as_ref(), max).map_err(|e| e.at(&path))?);
        }
        Ok(c)
    })
    .await?;
    let chunk = Arc::new(chunk);
    let size = header_encoded_len(&chunk) + chunk.data.len();
    ds.cache.insert(&ckey, chunk.clone(), size);
    Ok(chunk)
}

/// The object key of chunk `id` and its cache key of `kind`: shared by every handle when
/// the chunk lies in a committed version's folder, private to this handle otherwise
/// (see the cache module).
async fn cache_key(ds: &Dataset, t: &TensorState, id: u64, kind: Kind) -> Result<(String, String)> {
    let (commit, key) = ds.locator.locate_in(&ds.store, &t.key, ChunkId(id)).await?;
    let immutable = ds
        .tree
        .commits
        .get(commit.as_str())
        .is_some_and(|n| !n.is_head());
    let ckey = ds.cache.key(kind, immutable, &key);
    Ok((key, ckey))
}

/// Fetches a few samples of one uncompressed chunk with range reads.
async fn fetch_ranges(
    ds: &Dataset,
    t: &TensorState,
    id: u64,
    locals: &[usize],
) -> Result<Vec<(Vec<u32>, Bytes)>> {
    let (key, ckey) = cache_key(ds, t, id, Kind::Chunk).await?;
    if let Some(c) = ds.cache.get(&ckey) {
        return locals
            .iter()
            .map(|&l| slice_item(&c, l, &key, ds))
            .collect();
    }
    let path = format!("{}/{key}", ds.store.url());
    let hkey = cache_key(ds, t, id, Kind::Header).await?.1;
    let header = match ds.cache.get(&hkey) {
        Some(h) => h,
        None => {
            let mut prefix = ds.store.get_prefix(&key, 16 * 1024).await?;
            ds.cache.shared().record_read(prefix.len());
            let len = match header_len(&prefix).map_err(|e| e.at(&path))? {
                Some(n) => n,
                None => {
                    prefix = ds.store.get_prefix(&key, 1 << 20).await?;
                    ds.cache.shared().record_read(prefix.len());
                    header_len(&prefix)
                        .map_err(|e| e.at(&path))?
                        .ok_or_else(|| Error::corrupt(&path, "chunk header is truncated"))?
                }
            };
            if prefix.len() < len {
                prefix = ds.store.get_prefix(&key, len as u64).await?;
                ds.cache.shared().record_read(prefix.len());
            }
            if prefix.len() < len {
                return Err(Error::corrupt(&path, "chunk header is truncated"));
            }
            let mut h = Chunk::decode(prefix.slice(..len)).map_err(|e| e.at(&path))?;
            h.data = Bytes::new();
            let h = Arc::new(h);
            ds.cache.insert(&hkey, h.clone(), len);
            h
        }
    };
    // Data offsets are relative to the end of the header.
    let hlen = header_encoded_len(&header) as u64;
    let mut out = Vec::with_capacity(locals.len());
    for &l in locals {
        let shape = header.shape(l).map_err(|e| e.at(&path))?;
        let r = header.byte_range(l).map_err(|e| e.at(&path))?;
        let bytes = if r.is_empty() {
            Bytes::new()
        } else {
            ds.store
                .get_range(&key, hlen + r.start as u64..hlen + r.end as u64)
                .await?
        };
        ds.cache.shared().record_read(bytes.len());
        if bytes.len() != r.len() {
            return Err(Error::corrupt(&path, format!("sample {l} is truncated")));
        }
        out.push((shape, bytes));
    }
    Ok(out)
}

fn header_encoded_len(h: &Chunk) -> usize {
    let cols = h.shapes.first().map(|r| r.len()).unwrap_or(0);
    1 + h.version.len() + 8 + 4 * h.shapes.len() * cols + 4 + 12 * h.byte_positions.len()
}

fn slice_item(c: &Chunk, local: usize, key: &str, ds: &Dataset) -> Result<(Vec<u32>, Bytes)> {
    let path = || format!("{}/{key}", ds.store.url());
    let shape = c.shape(local).map_err(|e| e.at(path()))?;
    let r = c.byte_range(local).map_err(|e| e.at(path()))?;
    if r.end > c.data.len() {
        return Err(Error::corrupt(
            path(),
            format!("sample {local} runs past the end of the chunk data"),
        ));
    }
    Ok((shape, c.data.slice(r)))
}

/// Fetches stored items `items` (global item indexes, ascending) of tensor `t`.
async fn fetch_items(
    ds: &Dataset,
    t: &TensorState,
    items: &[u64],
    opts: &ReadOptions,
) -> Result<Vec<Fetched>> {
    // Group plain items by chunk row; tiled items fetch their tile chunks.
    let mut by_row: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new(); // row -> (pos, local)
    let mut tiled: Vec<(usize, u64)> = Vec::new();
    for (pos, &i) in items.iter().enumerate() {
        if t.tiles.entries.contains_key(&i) {
            tiled.push((pos, i));
            continue;
        }
        let (row, local) = t.chunk_ids.locate(i).ok_or_else(|| {
            Error::corrupt(
                format!("{}/{}", ds.store.url(), t.key),
                format!("sample {i} is not in the chunk index"),
            )
        })?;
        by_row.entry(row).or_default().push((pos, local));
    }
    let mut out: Vec<Option<Fetched>> = (0..items.len()).map(|_| None).collect();
    let uncompressed = t.chunk_compression.is_none();
    let jobs: Vec<(u64, Vec<(usize, usize)>)> = by_row
        .into_iter()
        .map(|(row, v)| {
            (
                t.chunk_ids.rows.get(row).map(|r| r.0).unwrap_or_default(),
                v,
            )
        })
        .collect();
    let results: Vec<Vec<(usize, Vec<u32>, Bytes)>> = futures::stream::iter(jobs)
        .map(|(id, v)| async move {
            let locals: Vec<usize> = v.iter().map(|x| x.1).collect();
            let got = if uncompressed && locals.len() <= 4 && !is_held(t, id) {
                fetch_ranges(ds, t, id, &locals).await?
            } else {
                let c = fetch_chunk(ds, t, id).await?;
                let key = format!("{}/chunks/{}", t.key, ChunkId(id));
                locals
                    .iter()
                    .map(|&l| slice_item(&c, l, &key, ds))
                    .collect::<Result<Vec<_>>>()?
            };
            Ok::<_, Error>(
                v.iter()
                    .zip(got)
                    .map(|((pos, _), (s, b))| (*pos, s, b))
                    .collect(),
            )
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    for group in results {
        for (pos, shape, bytes) in group {
            out[pos] = Some(Fetched::Plain { shape, bytes });
        }
    }
    for (pos, i) in tiled {
        let e = t
            .tiles
            .entries
            .get(&i)
            .ok_or_else(|| Error::internal("tile entry vanished"))?;
        let ids: Vec<u64> = t
            .chunk_ids
            .rows
            .iter()
            .filter(|r| r.1 == i)
            .map(|r| r.0)
            .collect();
        if ids.len() as u64 != e.num_tiles() {
            return Err(Error::corrupt(
                format!("{}/{}", ds.store.url(), t.key),
                format!(
                    "sample {i} has {} tile chunks, its tile grid needs {}",
                    ids.len(),
                    e.num_tiles()
                ),
            ));
        }
        let tiles: Vec<(Vec<u32>, Bytes)> = futures::stream::iter(ids)
            .map(|id| async move {
                let c = fetch_chunk(ds, t, id).await?;
                let key = format!("{}/chunks/{}", t.key, ChunkId(id));
                let shape = c
                    .shapes
                    .first()
                    .map(|r| r[..r.len().saturating_sub(1)].to_vec())
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("{}/{key}", ds.store.url()),
                            "tile chunk has no shape",
                        )
                    })?;
                Ok::<_, Error>((shape, c.data.clone()))
            })
            .buffered(opts.concurrency.max(1))
            .try_collect()
            .await?;
        out[pos] = Some(Fetched::Tiled {
            sample_shape: e.sample_shape.clone(),
            tile_shape: e.tile_shape.clone(),
            tiles,
        });
    }
    out.into_iter()
        .map(|f| f.ok_or_else(|| Error::internal("item not fetched")))
        .collect()
}

/// Fills each link's creds key from the creds encoder row of its item.
fn with_creds_keys(
    ds: &Dataset,
    t: &TensorState,
    items: &[u64],
    mut decoded: Vec<Sample>,
) -> Result<Vec<Sample>> {
    let Some(enc) = &t.creds else {
        return Ok(decoded);
    };
    for (s, &item) in decoded.iter_mut().zip(items) {
        if let Sample::Link { creds_key, .. } = s {
            let code = enc.get(item).unwrap_or(0);
            *creds_key = ds
                .linked_creds
                .key_of(code)
                .map_err(|c| Error::corrupt(format!("{}/linked_creds.json", ds.url()), c))?
                .map(str::to_owned);
        }
    }
    Ok(decoded)
}

/// What decoding needs to know about a tensor (cheap to clone onto the CPU pool).
#[derive(Clone)]
struct DecodeCtx {
    base: BaseHtype,
    is_link: bool,
    dtype: Option<Dtype>,
    sc: Option<Compression>,
    decode: bool,
    creds_names: Vec<String>,
}

fn decode_plain(ctx: &DecodeCtx, shape: &[u32], bytes: Bytes) -> Result<Sample> {
    let shape_us: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    if ctx.is_link {
        let path = String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::corrupt("link", "link path is not UTF-8"))?;
        // An empty link reads as an empty path, as in 3.x.
        return Ok(Sample::Link {
            path,
            creds_key: None,
        });
    }
    let utf8 = |b: &Bytes| {
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::corrupt("sample", "text sample is not UTF-8"))
    };
    match ctx.base {
        BaseHtype::Text => return Ok(Sample::Text(utf8(&bytes)?)),
        BaseHtype::Json => {
            if bytes.is_empty() {
                return Ok(Sample::Json(Value::Object(Default::default())));
            }
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("json sample", e))?;
            return Ok(Sample::Json(v));
        }
        BaseHtype::List | BaseHtype::Tag => {
            if bytes.is_empty() {
                return Ok(Sample::List(Vec::new()));
            }
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("list sample", e))?;
            return Ok(Sample::List(match v {
                Value::Array(a) => a,
                other => vec![other],
            }));
        }
        BaseHtype::Polygon => {
            let dtype = ctx.dtype.unwrap_or(Dtype::F32);
            let ndim = shape_us.last().copied().unwrap_or(2);
            if bytes.is_empty() {
                return Ok(Sample::Polygons(Vec::new()));
            }
            let p = polygon::decode(&bytes, dtype, ndim).map_err(|e| e.at("polygon sample"))?;
            return Ok(Sample::Polygons(p));
        }
        _ => {}
    }
    let dtype = ctx.dtype.unwrap_or(Dtype::U8);
    if bytes.is_empty() {
        return Ok(Sample::Array(
            NdArray::new(dtype, shape_us.clone(), Bytes::new())
                .unwrap_or_else(|_| NdArray::empty(dtype, shape_us.len())),
        ));
    }
    match &ctx.sc {
        // Codecs we do not decode (audio, video, point clouds, meshes, dicom, nifti, ...)
        // come back as the opaque blob with its shape.
        Some(c) if !ctx.decode || !c.can_decode() => Ok(Sample::Encoded {
            bytes,
            compression: c.clone(),
            shape: Some(shape_us),
        }),
        Some(c) => Ok(Sample::Array(compression::decode_sample(
            &bytes, c, dtype, &shape_us,
        )?)),
        None => Ok(Sample::Array(
            NdArray::new(dtype, shape_us, bytes).map_err(|e| Error::corrupt("sample", e))?,
        )),
    }
}

fn decode_tiled(
    ctx: &DecodeCtx,
    sample_shape: &[u64],
    tile_shape: &[u64],
    tiles: Vec<(Vec<u32>, Bytes)>,
) -> Result<Sample> {
    let dtype = ctx.dtype.unwrap_or(Dtype::U8);
    let shape: Vec<usize> = sample_shape.iter().map(|&d| d as usize).collect();
    let ts: Vec<usize> = tile_shape.iter().map(|&d| d as usize).collect();
    if shape.len() != ts.len() || ts.contains(&0) {
        return Err(Error::corrupt(
            "tile encoder",
            "tile shape does not match the sample shape",
        ));
    }
    let isz = dtype.size();
    let total = shape
        .iter()
        .try_fold(isz, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::corrupt("tile encoder", "sample too large"))?;
    if total > (1usize << 34) {
        return Err(Error::corrupt(
            "tile encoder",
            "tiled sample larger than 16 GiB",
        ));
    }
    let grid: Vec<usize> = shape.iter().zip(&ts).map(|(s, t)| s.div_ceil(*t)).collect();
    let mut out = vec![0u8; total];
    for (flat, (tshape, bytes)) in tiles.into_iter().enumerate() {
        let mut rem = flat;
        let mut coord = vec![0usize; grid.len()];
        for d in (0..grid.len()).rev() {
            coord[d] = rem % grid[d];
            rem /= grid[d];
        }
        let start: Vec<usize> = coord.iter().zip(&ts).map(|(c, t)| c * t).collect();
        let tile_us: Vec<usize> = tshape.iter().map(|&d| d as usize).collect();
        let arr = match &ctx.sc {
            Some(c) => compression::decode_sample(&bytes, c, dtype, &tile_us)?,
            None => NdArray::new(dtype, tile_us.clone(), bytes)
                .map_err(|e| Error::corrupt("tile", e))?,
        };
        // Stored tiles may be padded past the sample's edge; keep only what is inside.
        let size: Vec<usize> = start
            .iter()
            .zip(&shape)
            .zip(&arr.shape)
            .map(|((s, n), a)| (*a).min(n - s))
            .collect();
        let block = if size == arr.shape {
            arr.data.to_vec()
        } else {
            super::encode::copy_block(&arr.data, &arr.shape, isz, &vec![0; size.len()], &size)
        };
        paste_block(&mut out, &shape, isz, &start, &size, &block);
    }
    Ok(Sample::Array(NdArray::new(dtype, shape, out)?))
}

fn decode_ctx(ds: &Dataset, t: &TensorState, opts: &ReadOptions) -> DecodeCtx {
    let _ = ds;
    DecodeCtx {
        base: t.htype.base,
        is_link: t.htype.is_link,
        dtype: t.dtype,
        sc: t.sample_compression.clone(),
        decode: opts.decode,
        creds_names: class_names(&t.info),
    }
}

pub(super) async fn read_samples(
    ds: &Dataset,
    t: &TensorState,
    range: Range<u64>,
    opts: &ReadOptions,
) -> Result<Vec<Sample>> {
    let n = t.num_samples();
    if range.start > range.end || range.end > n {
        return Err(Error::invalid(format!(
            "rows {}..{} are out of range for tensor {} of length {n}",
            range.start, range.end, t.key
        )));
    }
    let groups = item_range(t, &range)?;
    read_groups(ds, t, groups, opts).await
}

/// Rows `rows` (any order, repeats allowed) of tensor `t`, decoded.
pub(super) async fn read_rows(
    ds: &Dataset,
    t: &TensorState,
    rows: &[u64],
    opts: &ReadOptions,
) -> Result<Vec<Sample>> {
    let n = t.num_samples();
    if let Some(r) = rows.iter().find(|r| **r >= n) {
        return Err(Error::invalid(format!(
            "row {r} is out of range for tensor {} of length {n}",
            t.key
        )));
    }
    let groups = rows
        .iter()
        .map(|&r| item_range(t, &(r..r + 1)).map(|mut g| g.pop().unwrap_or(r..r)))
        .collect::<Result<Vec<_>>>()?;
    read_groups(ds, t, groups, opts).await
}

/// The samples made of item groups `groups` (one item each unless `t` is a sequence).
async fn read_groups(
    ds: &Dataset,
    t: &TensorState,
    groups: Vec<Range<u64>>,
    opts: &ReadOptions,
) -> Result<Vec<Sample>> {
    let items: Vec<u64> = groups.iter().flat_map(|r| r.clone()).collect();
    let fetched = fetch_items(ds, t, &items, opts).await?;
    let ctx = decode_ctx(ds, t, opts);
    let is_seq = t.seq.is_some();
    let decoded = crate::runtime::spawn_cpu(move || {
        use rayon::prelude::*;
        let _ = &ctx.creds_names;
        fetched
            .into_par_iter()
            .map(|f| match f {
                Fetched::Plain { shape, bytes } => decode_plain(&ctx, &shape, bytes),
                Fetched::Tiled {
                    sample_shape,
                    tile_shape,
                    tiles,
                } => decode_tiled(&ctx, &sample_shape, &tile_shape, tiles),
            })
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    let decoded = if t.htype.is_link {
        with_creds_keys(ds, t, &items, decoded)?
    } else {
        decoded
    };
    if !is_seq {
        return Ok(decoded);
    }
    let mut it = decoded.into_iter();
    Ok(groups
        .iter()
        .map(|g| Sample::Sequence(it.by_ref().take((g.end - g.start) as usize).collect()))
        .collect())
}

/// For each row of `rows`, a number equal for rows stored in the same chunk (the
/// position of its first item's chunk in the chunk index).
pub(super) fn chunk_keys(ds: &Dataset, t: &TensorState, rows: &[u64]) -> Result<Vec<u64>> {
    rows.iter()
        .map(|&r| {
            let item = match &t.seq {
                None => r,
                Some(s) => s
                    .items(r)
                    .map(|(a, _)| a)
                    .ok_or_else(|| Error::internal(format!("sequence {r} missing")))?,
            };
            t.chunk_ids
                .locate(item)
                .map(|(row, _)| row as u64)
                .ok_or_else(|| {
                    Error::corrupt(
                        format!("{}/{}", ds.store.url(), t.key),
                        format!("sample {item} is not in the chunk index"),
                    )
                })
        })
        .collect()
}

/// The stored bytes and shape of every item of row `index` (one item unless the tensor
/// is a sequence). Tiled items come back decoded and re-laid as raw bytes.
pub(super) async fn read_stored(
    ds: &Dataset,
    t: &TensorState,
    index: u64,
) -> Result<Vec<(Vec<u64>, Bytes)>> {
    if index >= t.num_samples() {
        return Err(Error::invalid(format!(
            "row {index} is out of range for tensor {} of length {}",
            t.key,
            t.num_samples()
        )));
    }
    let groups = item_range(t, &(index..index + 1))?;
    let items: Vec<u64> = groups.iter().flat_map(|r| r.clone()).collect();
    let fetched = fetch_items(ds, t, &items, &ReadOptions::default()).await?;
    let ctx = decode_ctx(ds, t, &ReadOptions::default());
    fetched
        .into_iter()
        .map(|f| match f {
            Fetched::Plain { shape, bytes } => {
                Ok((shape.into_iter().map(u64::from).collect(), bytes))
            }
            Fetched::Tiled {
                sample_shape,
                tile_shape,
                tiles,
            } => match decode_tiled(&ctx, &sample_shape, &tile_shape, tiles)? {
                Sample::Array(a) => Ok((sample_shape, a.data)),
                _ => Err(Error::internal("tiled sample decoded to a non-array")),
            },
        })
        .collect()
}

/// Rows `rows` (ascending) of tensor `t` as stored, ready to be appended or put in
/// place elsewhere: bytes and shapes verbatim, tiled items as their tiles. The shape
/// kept for the `_shape` companion is the stored one; callers that copy companions
/// copy the real one.
pub(super) async fn read_prepared(
    ds: &Dataset,
    t: &TensorState,
    rows: &[u64],
) -> Result<Vec<super::encode::Prepared>> {
    use super::encode::{Prepared, StoredItem, Tiles};
    let n = t.num_samples();
    if let Some(r) = rows.iter().find(|r| **r >= n) {
        return Err(Error::invalid(format!(
            "row {r} is out of range for tensor {} of length {n}",
            t.key
        )));
    }
    let groups: Vec<Range<u64>> = match &t.seq {
        None => rows.iter().map(|&r| r..r + 1).collect(),
        Some(s) => rows
            .iter()
            .map(|&r| {
                s.items(r)
                    .map(|(a, b)| a..b)
                    .ok_or_else(|| Error::internal(format!("sequence {r} missing")))
            })
            .collect::<Result<_>>()?,
    };
    let items: Vec<u64> = groups.iter().flat_map(|g| g.clone()).collect();
    let fetched = fetch_items(ds, t, &items, &ReadOptions::default()).await?;
    let creds_of = |item: u64| t.creds.as_ref().and_then(|c| c.get(item)).unwrap_or(0);
    let mut it = fetched
        .into_iter()
        .zip(items.iter().copied())
        .map(|(f, item)| match f {
            Fetched::Plain { shape, bytes } => StoredItem {
                logical_shape: shape.iter().map(|&d| u64::from(d)).collect(),
                shape,
                bytes,
                tiles: None,
                info: None,
                creds: creds_of(item),
            },
            Fetched::Tiled {
                sample_shape,
                tile_shape,
                tiles,
            } => StoredItem {
                shape: sample_shape.iter().map(|&d| d as u32).collect(),
                logical_shape: sample_shape.clone(),
                bytes: Bytes::new(),
                tiles: Some(Tiles {
                    sample_shape,
                    tile_shape,
                    tiles: tiles.into_iter().map(|(s, b)| (s, b.to_vec())).collect(),
                }),
                info: None,
                creds: creds_of(item),
            },
        });
    groups
        .iter()
        .map(|g| match t.seq {
            None => it.next().map(Prepared::Item),
            Some(_) => Some(Prepared::Sequence(
                it.by_ref().take((g.end - g.start) as usize).collect(),
            )),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::internal("fewer items fetched than asked"))
}

pub(super) async fn sample_shape(ds: &Dataset, t: &TensorState, index: u64) -> Result<Vec<u64>> {
    if index >= t.num_samples() {
        return Err(Error::invalid(format!(
            "row {index} is out of range for tensor {} of length {}",
            t.key,
            t.num_samples()
        )));
    }
    if t.seq.is_none() {
        if let Some(e) = t.tiles.entries.get(&index) {
            return Ok(e.sample_shape.clone());
        }
        let (row, local) = t
            .chunk_ids
            .locate(index)
            .ok_or_else(|| Error::internal("sample not in chunk index"))?;
        let id = t.chunk_ids.rows.get(row).map(|r| r.0).unwrap_or_default();
        if let Some(c) = held_chunk(t, id, false) {
            return Ok(c
                .shape(local)
                .map_err(|e| e.at(&t.key))?
                .into_iter()
                .map(u64::from)
                .collect());
        }
        if t.chunk_compression.is_none() {
            // Loads (and caches) the chunk header without fetching sample bytes.
            fetch_ranges(ds, t, id, &[]).await?;
            let (key, hkey) = cache_key(ds, t, id, Kind::Header).await?;
            let ckey = cache_key(ds, t, id, Kind::Chunk).await?.1;
            if let Some(h) = ds.cache.get(&hkey).or_else(|| ds.cache.get(&ckey)) {
                return Ok(h
                    .shape(local)
                    .map_err(|e| e.at(&key))?
                    .into_iter()
                    .map(u64::from)
                    .collect());
            }
        }
    }
    let s = read_samples(
        ds,
        t,
        index..index + 1,
        &ReadOptions {
            decode: false,
            concurrency: 1,
        },
    )
    .await?;
    Ok(match s.into_iter().next() {
        Some(Sample::Array(a)) => a.shape.iter().map(|&d| d as u64).collect(),
        Some(Sample::Encoded { shape: Some(s), .. }) => s.iter().map(|&d| d as u64).collect(),
        Some(Sample::Sequence(items)) => vec![items.len() as u64],
        Some(Sample::List(l)) => vec![l.len() as u64],
        Some(Sample::Empty) => vec![0],
        _ => vec![1],
    })
}

/// Rows of a tensor as whole chunks: each part is a chunk (data section decompressed)
/// and the chunk-local sample indexes it contributes, in row order.
pub type ChunkParts = Vec<(Arc<Chunk>, Range<usize>)>;

/// The chunks holding rows `range` of a tensor whose samples are stored as plain bytes
/// (no sequence, no link, no sample compression, no tiled sample in the range), fetched
/// whole and concurrently; `None` for any other tensor, which must be read through
/// [`read_samples`]. Columnar readers decode the bytes themselves, without a
/// [`Sample`] per row.
pub(super) async fn read_chunk_parts(
    ds: &Dataset,
    t: &TensorState,
    range: Range<u64>,
    opts: &ReadOptions,
) -> Result<Option<ChunkParts>> {
    let n = t.num_samples();
    if range.start > range.end || range.end > n {
        return Err(Error::invalid(format!(
            "rows {}..{} are out of range for tensor {} of length {n}",
            range.start, range.end, t.key
        )));
    }
    if t.seq.is_some()
        || t.htype.is_link
        || t.sample_compression.is_some()
        || t.tiles.entries.range(range.clone()).next().is_some()
    {
        return Ok(None);
    }
    let mut jobs: Vec<(u64, Range<usize>)> = Vec::new();
    let mut i = range.start;
    while i < range.end {
        let (row, local) = t.chunk_ids.locate(i).ok_or_else(|| {
            Error::corrupt(
                format!("{}/{}", ds.store.url(), t.key),
                format!("sample {i} is not in the chunk index"),
            )
        })?;
        let id = t.chunk_ids.rows.get(row).map(|r| r.0).unwrap_or_default();
        // Rows covered by this chunk row, clamped to the range asked for.
        let row_end = t.chunk_ids.first_index(row + 1).min(range.end);
        if row_end <= i {
            return Err(Error::internal("chunk index walk made no progress"));
        }
        let count = usize::try_from(row_end - i)
            .map_err(|_| Error::invalid("row range too large for this platform"))?;
        jobs.push((id, local..local + count));
        i = row_end;
    }
    let parts: ChunkParts = futures::stream::iter(jobs)
        .map(|(id, locals)| async move { Ok::<_, Error>((fetch_chunk(ds, t, id).await?, locals)) })
        .buffered(opts.concurrency.max(1))
        .try_collect()
        .await?;
    Ok(Some(parts))
}
