//! Rows packed into chunks by parallel workers, away from the dataset handle, then
//! adopted by the handle in order.
//!
//! A transform's workers each take a contiguous part of a batch's rows: a worker
//! encodes its samples and fills chunks of its own ([`Placer::place`]), and the handle
//! then gives those chunks ids, records them in the tensor's chunk index and writes
//! them in the background ([`Dataset::extend_parts`]). The handle never touches a
//! part's sample bytes. Every part starts a chunk of its own (3.x's transforms do the
//! same), so a part is placed only when it fills a fair share of a chunk; smaller
//! columns (labels, say) go through [`Dataset::extend_columns`] into the open chunk.
//!
//! Placed rows are the rows `extend_columns` would write, value for value: the same
//! encoding, shapes, bounds, dtype and companion rows (ids, shapes, infos). Tensors
//! whose writes need the handle (links, sequences, tiled samples, companions this
//! version does not produce) are never placed.

use serde_json::Value;

use super::encode::{self, EncodeCtx, Prepared, StoredItem};
use super::tensor::CompanionRole;
use super::{Dataset, append_to_tensor, in_row, update_shape_bounds, write_closed, writer};
use crate::error::{Error, Result};
use crate::format::array::Sample;
use crate::format::chunk::{ChunkBuilder, SHARE_MIN};

/// What a worker needs to pack one tensor's samples into chunks (a snapshot of the
/// tensor when it was taken).
#[derive(Clone, Debug)]
pub struct Placer {
    tensor: String,
    ctx: EncodeCtx,
    /// Bytes a chunk is filled to.
    fill: usize,
    /// The tensor's rank, if it holds any sized sample yet.
    rank: Option<usize>,
    /// Whether the tensor's meta names a dtype (maybe one with no numeric type).
    meta_dtype: bool,
    /// Whether the tensor has no dtype yet: the first rows placed set it.
    needs_dtype: bool,
}

/// One worker's rows of one tensor, packed into chunks.
#[derive(Debug)]
pub struct PlacedPart {
    tensor: String,
    chunks: Vec<ChunkBuilder>,
    /// Per row: the shape recorded in the tensor's bounds, the logical shape and the
    /// info record (for the companions).
    rows: Vec<(Vec<u64>, Vec<u64>, Option<Value>)>,
    rank: Option<usize>,
    /// A sample to learn the tensor's dtype from, when the tensor has none yet.
    dtype_probe: Option<Sample>,
}

impl PlacedPart {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The chunks this part fills.
    pub fn num_chunks(&self) -> usize {
        self.chunks.len()
    }
}

/// One column of a batch: samples for the handle to place, or parts placed by workers
/// (in row order).
#[derive(Debug)]
pub enum Placement {
    Samples(Vec<Sample>),
    Parts(Vec<PlacedPart>),
}

impl Placement {
    fn len(&self) -> usize {
        match self {
            Placement::Samples(s) => s.len(),
            Placement::Parts(p) => p.iter().map(PlacedPart::len).sum(),
        }
    }
}

fn raw_len(s: &Sample) -> Option<usize> {
    match s {
        Sample::Array(a) => Some(a.data.len()),
        Sample::Encoded { bytes, .. } => Some(bytes.len()),
        _ => None,
    }
}

impl Placer {
    pub fn tensor(&self) -> &str {
        &self.tensor
    }

    /// Whether `samples`, cut into `parts` parts, should be placed by workers: each
    /// part must fill at least an eighth of a chunk, and every sample must be an array
    /// or encoded bytes below the tiling threshold (an empty one needs a known rank).
    pub fn worth_placing(&self, samples: &[Sample], parts: usize) -> bool {
        if parts == 0 || samples.len() < parts {
            return false;
        }
        let mut total = 0usize;
        for s in samples {
            match raw_len(s) {
                Some(0) if self.rank.is_none() => return false,
                Some(n) if self.ctx.tiling_threshold.is_none_or(|t| n < t) => total += n,
                None if matches!(s, Sample::Empty) && self.rank.is_some() => {}
                _ => return false,
            }
        }
        total / parts >= self.fill / 8
    }

    /// Fixes the dtype every row gets, for a tensor that has none yet: the first array
    /// of the whole column's, as [`Dataset::extend_columns`] does.
    pub fn for_column(mut self, samples: &[Sample]) -> Placer {
        if self.ctx.dtype.is_none() && !self.meta_dtype && !self.ctx.htype.is_text_like() {
            self.ctx.dtype = samples.iter().find_map(|s| match s {
                Sample::Array(a) => Some(a.dtype),
                _ => None,
            });
        }
        self
    }

    /// Encodes `samples` (rows `first..` of the batch, for errors) and packs them into
    /// chunks of their own, filled to the tensor's target. Runs on a worker.
    pub fn place(&self, samples: Vec<Sample>, first: usize) -> Result<PlacedPart> {
        let name = &self.tensor;
        let dtype_probe = if self.needs_dtype {
            samples
                .iter()
                .find(|s| matches!(s, Sample::Array(_) | Sample::Encoded { .. }))
                .cloned()
        } else {
            None
        };
        let mut rank = self.rank;
        let mut chunks: Vec<ChunkBuilder> = Vec::new();
        let mut cur = ChunkBuilder::default();
        let mut rows = Vec::with_capacity(samples.len());
        for (k, s) in samples.into_iter().enumerate() {
            let row = first + k;
            let at = |m: String| format!("tensor {name:?}, row {row}: {m}");
            let mut it = match encode::encode(&self.ctx, s).map_err(|e| in_row(name, row, e))? {
                Prepared::Item(it) => it,
                Prepared::Sequence(_) => {
                    return Err(Error::internal(at(
                        "a sequence reached a worker's chunks".into()
                    )));
                }
            };
            if it.tiles.is_some() {
                return Err(Error::internal(at(
                    "a tiled sample reached a worker's chunks".into(),
                )));
            }
            if super::is_empty_item(&it) {
                // An empty sample takes the tensor's rank, as on the handle's path.
                let r = rank.ok_or_else(|| {
                    Error::internal(at("an empty sample of a tensor with no rank yet".into()))
                })?;
                it.shape = vec![0; r];
                it.logical_shape = vec![0; r];
            } else {
                match rank {
                    Some(want) if want != it.shape.len() => {
                        return Err(Error::invalid(at(format!(
                            "the sample has {} dimensions, the tensor's samples {want}",
                            it.shape.len()
                        ))));
                    }
                    None => rank = Some(it.shape.len()),
                    _ => {}
                }
            }
            if cur.num_samples() > 0 && cur.data.len() + it.bytes.len() > self.fill {
                chunks.push(std::mem::take(&mut cur));
            }
            if cur.num_samples() == 0 && it.bytes.len() < SHARE_MIN {
                // Small samples are copied in: reserve the chunk once.
                cur.data = writer::buffer(self.fill).into();
            }
            let StoredItem {
                shape,
                bytes,
                info,
                logical_shape,
                ..
            } = it;
            cur.try_push_shared(&shape, bytes)
                .map_err(|c| Error::internal(at(c.to_string())))?;
            rows.push((
                shape.iter().map(|&d| u64::from(d)).collect(),
                logical_shape,
                info,
            ));
        }
        if cur.num_samples() > 0 {
            chunks.push(cur);
        }
        Ok(PlacedPart {
            tensor: self.tensor.clone(),
            chunks,
            rows,
            rank,
            dtype_probe,
        })
    }
}

impl Dataset {
    /// A placer for tensor `name`, or `None` when its writes need the handle (module
    /// docs).
    pub fn placer(&self, name: &str) -> Result<Option<Placer>> {
        let key = self.key_of(name)?;
        let t = super::t_state(&self.tensors, &key)?;
        let companions_ok = t.meta.links.values().all(|l| {
            matches!(
                CompanionRole::from_extend(&l.extend),
                CompanionRole::Id | CompanionRole::Shape | CompanionRole::Info
            )
        });
        if t.htype.is_link || t.htype.is_sequence || t.creds.is_some() || !companions_ok {
            return Ok(None);
        }
        let ctx = self.encode_ctx(&key)?;
        Ok(Some(Placer {
            tensor: name.to_owned(),
            fill: self.writer.fill_of(t.max_chunk_size()),
            rank: (!t.meta.max_shape.is_empty()).then_some(t.meta.max_shape.len()),
            meta_dtype: t.meta.dtype.is_some(),
            needs_dtype: t.dtype.is_none() && t.meta.dtype.is_none() && !t.htype.is_text_like(),
            ctx,
        }))
    }

    /// Appends one batch of rows given per tensor as samples or as parts placed by
    /// workers (in row order; every column the same number of rows). Everything is
    /// checked before anything is appended, so a bad batch changes nothing.
    pub async fn extend_parts(&mut self, columns: Vec<(String, Placement)>) -> Result<()> {
        self.check_writable()?;
        if let Some((first, rest)) = columns.split_first() {
            for (t, c) in rest {
                if c.len() != first.1.len() {
                    return Err(Error::invalid(format!(
                        "columns differ in length: {:?} has {}, {t:?} has {}",
                        first.0,
                        first.1.len(),
                        c.len()
                    )));
                }
            }
        }
        let mut samples = Vec::new();
        let mut placed = Vec::new();
        for (name, col) in columns {
            match col {
                Placement::Samples(s) => samples.push((name, s)),
                Placement::Parts(parts) => {
                    let key = self.key_of(&name)?;
                    let t = super::t_state(&self.tensors, &key)?;
                    let mut rank = (!t.meta.max_shape.is_empty()).then_some(t.meta.max_shape.len());
                    for p in &parts {
                        if p.tensor != name {
                            return Err(Error::internal(format!(
                                "a part of tensor {:?} was given as {name:?}",
                                p.tensor
                            )));
                        }
                        match (rank, p.rank) {
                            (Some(a), Some(b)) if a != b => {
                                return Err(Error::invalid(format!(
                                    "tensor {name:?}: samples of {b} dimensions follow samples of {a}"
                                )));
                            }
                            (None, b) => rank = b,
                            _ => {}
                        }
                    }
                    placed.push((key, parts));
                }
            }
        }
        // The handle's columns are checked (and appended) first; placed parts were
        // checked above and by their workers, so what follows only appends.
        self.extend_columns(samples).await?;
        self.ensure_lease().await?;
        for (key, parts) in placed {
            if let Some(probe) = parts.iter().find_map(|p| p.dtype_probe.clone()) {
                self.infer_dtype(&key, std::slice::from_ref(&probe))?;
            }
            for part in parts {
                self.adopt(&key, part).await?;
            }
        }
        self.cache.clear();
        Ok(())
    }

    /// Appends one placed part of tensor `key`: its chunks follow the tensor's last
    /// one, which stops growing; its companions get their rows.
    async fn adopt(&mut self, key: &str, part: PlacedPart) -> Result<()> {
        let PlacedPart { chunks, rows, .. } = part;
        if rows.is_empty() {
            return Ok(());
        }
        // Companion rows from the rows' shapes and infos, as the handle's path makes.
        let meta_only: Vec<Prepared> = rows
            .iter()
            .map(|(shape, logical, info)| {
                Prepared::Item(StoredItem {
                    shape: shape.iter().map(|&d| d as u32).collect(),
                    bytes: bytes::Bytes::new(),
                    tiles: None,
                    info: info.clone(),
                    logical_shape: logical.clone(),
                    creds: 0,
                })
            })
            .collect();
        let comp_rows = self.companion_rows(key, &meta_only)?;
        let (store, node) = (self.store.clone(), self.node.clone());
        {
            let t = self
                .tensors
                .get_mut(key)
                .ok_or_else(|| Error::not_found("tensor", key))?;
            let in_chunks: usize = chunks.iter().map(ChunkBuilder::num_samples).sum();
            if in_chunks != rows.len() {
                return Err(Error::internal(format!(
                    "tensor {key}: a part's chunks hold {in_chunks} rows, its rows are {}",
                    rows.len()
                )));
            }
            let start = t.meta.length;
            let mut closed: Vec<u64> = t.chunk_ids.rows.last().map(|r| r.0).into_iter().collect();
            for (shape, _, _) in &rows {
                update_shape_bounds(&mut t.meta, shape);
                t.meta.length += 1;
            }
            let mut last = start;
            for b in chunks {
                let n = b.num_samples() as u64;
                if n == 0 {
                    continue;
                }
                let id = t.add_chunk(b);
                last += n;
                t.chunk_ids.rows.push((id, last - 1));
                closed.push(id);
            }
            t.record_append(start, last);
            t.dirty = true;
            write_closed(&store, &mut self.writer, &node, t, closed).await?;
        }
        for (ck, crows) in comp_rows {
            if let Some(c) = self.tensors.get_mut(&ck) {
                append_to_tensor(&store, &self.locator, &mut self.writer, &node, c, crows).await?;
            }
        }
        Ok(())
    }
}
