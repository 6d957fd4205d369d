//! One tensor's in-memory state at the node being read or written: its meta, info,
//! encoders, the head's `chunk_set` and `commit_diff`, and the chunks loaded for writing.
//! Loading reads every small index object of the tensor in parallel; saving writes data
//! chunks first and metas last, so a reader never sees an index pointing at a chunk
//! that is not there yet.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::format::chunk::ChunkBuilder;
use crate::format::compression::{self, Compression};
use crate::format::diff::CommitDiff;
use crate::format::dtype::Dtype;
use crate::format::encoders::{
    ChunkIdEncoder, CredsEncoder, PadEncoder, SequenceEncoder, TileEncoder,
};
use crate::format::htype::Htype;
use crate::format::meta::{self, TensorMeta};
use crate::ids::{ChunkId, CommitId, TensorName};
use crate::store::{Store, paths};
use crate::version::{ChunkLocation, ChunkSet};

/// The role of a hidden companion tensor, from the link function in its parent's meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompanionRole {
    Id,
    Shape,
    Info,
    /// A companion we keep in step but whose content we do not produce (e.g. a
    /// downsampled copy); writes to its parent are refused rather than desynchronised.
    Other,
}

impl CompanionRole {
    pub fn from_extend(f: &str) -> CompanionRole {
        match f {
            "extend_id" => CompanionRole::Id,
            "extend_shape" | "extend_len" => CompanionRole::Shape,
            "extend_info" => CompanionRole::Info,
            _ => CompanionRole::Other,
        }
    }
}

#[derive(Debug)]
pub struct TensorState {
    pub key: TensorName,
    pub meta: TensorMeta,
    pub info: Map<String, Value>,
    pub htype: Htype,
    /// Numeric dtype; `None` for text-like htypes or a generic tensor before its first sample.
    pub dtype: Option<Dtype>,
    pub sample_compression: Option<Compression>,
    pub chunk_compression: Option<Compression>,
    pub chunk_ids: ChunkIdEncoder,
    pub tiles: TileEncoder,
    pub seq: Option<SequenceEncoder>,
    pub creds: Option<CredsEncoder>,
    pub pad: PadEncoder,
    pub pad_stored: bool,
    /// The head's chunk set (non-root heads only).
    pub chunk_set: ChunkSet,
    pub diff: Option<CommitDiff>,
    /// Chunks held decompressed for writing, by id.
    pub builders: HashMap<u64, ChunkBuilder>,
    /// Builders changed since the last flush.
    pub dirty_chunks: BTreeSet<u64>,
    /// Closed chunks whose background write has not landed yet.
    pub inflight: super::writer::Inflight,
    /// Chunk ids known to be stored in the head (safe to rewrite in place).
    pub in_head: BTreeSet<u64>,
    pub dirty: bool,
    pub info_dirty: bool,
}

fn corrupt_at(store: &Store, key: &str) -> impl Fn(crate::error::Corruption) -> Error {
    let path = format!("{}/{key}", store.url().trim_end_matches('/'));
    move |c| c.at(&path)
}

impl TensorState {
    /// Builds the state of a freshly created tensor.
    pub fn new(key: TensorName, meta: TensorMeta, info: Map<String, Value>) -> Result<TensorState> {
        let mut t = TensorState::from_parts(key, meta, info)?;
        t.diff = Some(CommitDiff {
            created: true,
            ..Default::default()
        });
        t.dirty = true;
        t.info_dirty = true;
        Ok(t)
    }

    fn from_parts(
        key: TensorName,
        meta: TensorMeta,
        info: Map<String, Value>,
    ) -> Result<TensorState> {
        let htype = Htype::from_meta(&meta.htype, meta.is_link, meta.is_sequence)?;
        let dtype = match &meta.dtype {
            Some(d) if !htype.is_text_like() && !htype.is_link => d.parse::<Dtype>().ok(),
            _ => None,
        };
        let sample_compression = match &meta.sample_compression {
            Some(c) => Compression::parse(c)?,
            None => None,
        };
        let chunk_compression = match &meta.chunk_compression {
            Some(c) => Compression::parse(c)?,
            None => None,
        };
        let seq = meta.is_sequence.then(SequenceEncoder::default);
        let creds = meta.is_link.then(CredsEncoder::default);
        Ok(TensorState {
            key,
            meta,
            info,
            htype,
            dtype,
            sample_compression,
            chunk_compression,
            chunk_ids: ChunkIdEncoder::default(),
            tiles: TileEncoder::default(),
            seq,
            creds,
            pad: PadEncoder::default(),
            pad_stored: false,
            chunk_set: ChunkSet::default(),
            diff: None,
            builders: HashMap::new(),
            dirty_chunks: BTreeSet::new(),
            inflight: Default::default(),
            in_head: BTreeSet::new(),
            dirty: false,
            info_dirty: false,
        })
    }

    /// Loads tensor `key` as stored at commit `node`.
    pub async fn load(store: &Store, node: &CommitId, key: TensorName) -> Result<TensorState> {
        let k_meta = paths::tensor_meta(node, &key);
        let k_info = paths::tensor_info(node, &key);
        let k_ids = paths::chunks_index(node, &key);
        let k_tiles = paths::tiles_index(node, &key);
        let k_seq = paths::sequence_index(node, &key);
        let k_creds = paths::creds_index(node, &key);
        let k_pad = paths::pad_index(node, &key);
        let k_set = paths::chunk_set(node, &key);
        let k_diff = paths::commit_diff(node, &key);
        let (meta_b, info_b, ids_b, tiles_b, seq_b, creds_b, pad_b, set_b, diff_b) = futures::try_join!(
            store.get_opt(&k_meta),
            store.get_opt(&k_info),
            store.get_opt(&k_ids),
            store.get_opt(&k_tiles),
            store.get_opt(&k_seq),
            store.get_opt(&k_creds),
            store.get_opt(&k_pad),
            async {
                if node.is_root() {
                    Ok(None)
                } else {
                    store.get_opt(&k_set).await
                }
            },
            store.get_opt(&k_diff),
        )?;
        let meta_b = meta_b.ok_or_else(|| {
            Error::corrupt(
                format!("{}/{k_meta}", store.url()),
                "tensor listed in dataset_meta.json has no tensor_meta.json",
            )
        })?;
        let meta = TensorMeta::decode(&meta_b).map_err(corrupt_at(store, &k_meta))?;
        let info = match info_b {
            Some(b) if !b.is_empty() => {
                meta::decode_info(&b, "tensor_info.json").map_err(corrupt_at(store, &k_info))?
            }
            _ => Map::new(),
        };
        let mut t = TensorState::from_parts(key, meta, info).map_err(|e| match e {
            Error::InvalidInput { message } | Error::Unsupported { message } => {
                Error::corrupt(format!("{}/{k_meta}", store.url()), message)
            }
            other => other,
        })?;
        if let Some(b) = ids_b {
            t.chunk_ids = ChunkIdEncoder::decode(&b).map_err(corrupt_at(store, &k_ids))?;
        }
        if let Some(b) = tiles_b {
            t.tiles = TileEncoder::decode(&b).map_err(corrupt_at(store, &k_tiles))?;
        }
        if let (Some(b), true) = (seq_b, t.meta.is_sequence) {
            t.seq = Some(SequenceEncoder::decode(&b).map_err(corrupt_at(store, &k_seq))?);
        }
        if let (Some(b), true) = (creds_b, t.meta.is_link) {
            t.creds = Some(CredsEncoder::decode(&b).map_err(corrupt_at(store, &k_creds))?);
        }
        if let Some(b) = pad_b {
            t.pad = PadEncoder::decode(&b).map_err(corrupt_at(store, &k_pad))?;
            t.pad_stored = true;
        }
        if let Some(b) = set_b {
            t.chunk_set = ChunkSet::parse(&b).map_err(corrupt_at(store, &k_set))?;
        }
        if let Some(b) = diff_b {
            t.diff = Some(CommitDiff::decode(&b).map_err(corrupt_at(store, &k_diff))?);
        }
        // Which chunks the head owns: at the root every chunk without a chunk-set entry
        // elsewhere; at other nodes the plain entries of its own chunk set.
        if node.is_root() {
            t.in_head = t.chunk_ids.rows.iter().map(|r| r.0).collect();
        } else {
            t.in_head = t
                .chunk_ids
                .rows
                .iter()
                .map(|r| r.0)
                .filter(|id| t.chunk_set.contains_here(&ChunkId(*id).name()))
                .collect();
        }
        t.check_integrity(store, &k_ids)?;
        Ok(t)
    }

    /// The sample count the encoders imply must match the meta.
    fn check_integrity(&self, store: &Store, k_ids: &str) -> Result<()> {
        let n = self.chunk_ids.num_samples();
        if n != self.meta.length {
            return Err(Error::corrupt(
                format!("{}/{k_ids}", store.url()),
                format!(
                    "chunk index covers {n} samples but tensor_meta.json says length {}",
                    self.meta.length
                ),
            ));
        }
        Ok(())
    }

    /// Number of samples as users count them (sequences, not their items).
    pub fn num_samples(&self) -> u64 {
        match &self.seq {
            Some(s) => s.num_sequences(),
            None => self.meta.length,
        }
    }

    pub fn max_chunk_size(&self) -> usize {
        self.meta
            .max_chunk_size
            .map(|v| v as usize)
            .unwrap_or(crate::format::DEFAULT_MAX_CHUNK_SIZE)
    }

    /// Samples larger than this are tiled; `None` when tiling is disabled.
    pub fn tiling_threshold(&self) -> Option<usize> {
        match self.meta.tiling_threshold {
            Some(t) if t < 0 => None,
            Some(t) => Some(t as usize),
            None => Some(crate::format::DEFAULT_TILING_THRESHOLD),
        }
    }

    pub fn diff_mut(&mut self) -> &mut CommitDiff {
        self.diff.get_or_insert_with(CommitDiff::default)
    }

    /// Records that global item `i`, which existed before this commit, changed.
    pub fn record_update(&mut self, i: u64) {
        let d = self.diff_mut();
        let (a, b) = d.added;
        if (a..b).contains(&i) {
            return;
        }
        if !d.updated.contains(&i) {
            d.updated.push(i);
            d.updated.sort_unstable();
        }
    }

    /// Records appended items `[start, end)`.
    pub fn record_append(&mut self, start: u64, end: u64) {
        let d = self.diff_mut();
        if d.added.0 == d.added.1 {
            d.added = (start, end);
        } else {
            d.added.1 = end;
        }
    }

    /// Writes the chunks changed since the last flush (the open chunk, edited chunks).
    /// Chunk encoding and compression run on the CPU pool. Returns whether anything was
    /// written; the index files that point at these chunks come in [`Self::save_index`].
    pub async fn save_chunks(&mut self, store: &Store, node: &CommitId) -> Result<bool> {
        let dirty: Vec<u64> = std::mem::take(&mut self.dirty_chunks).into_iter().collect();
        let encoded: Vec<(u64, ChunkBuilder)> = dirty
            .iter()
            .filter_map(|id| self.builders.get(id).map(|b| (*id, b.clone())))
            .collect();
        let cc = self.chunk_compression.clone();
        let blobs = crate::runtime::spawn_cpu(move || {
            use rayon::prelude::*;
            Ok(encoded
                .into_par_iter()
                .map(|(id, b)| (id, encode_chunk(&b, cc.as_ref())))
                .collect::<Vec<_>>())
        })
        .await?;
        let key = self.key.clone();
        futures::future::try_join_all(blobs.into_iter().map(|(id, bytes)| {
            let k = paths::chunk(node, &key, ChunkId(id));
            async move { store.put(&k, Bytes::from(bytes)).await }
        }))
        .await?;
        if !node.is_root() {
            for id in &dirty {
                self.chunk_set
                    .insert(ChunkId(*id).name(), ChunkLocation::Here);
            }
        }
        // Keep only the last chunk's builder: it is the one further appends fill.
        let last = self.chunk_ids.rows.last().map(|r| r.0);
        self.builders.retain(|id, _| Some(*id) == last);
        if !dirty.is_empty() {
            self.dirty = true;
        }
        Ok(!dirty.is_empty())
    }

    /// Writes the encoders, diff, info and meta of this tensor at head `node`, the meta
    /// last: its `length` is what makes new samples count.
    pub async fn save_index(&mut self, store: &Store, node: &CommitId) -> Result<()> {
        if !self.dirty && !self.info_dirty {
            return Ok(());
        }
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        if self.dirty {
            writes.push((
                paths::chunks_index(node, &self.key),
                self.chunk_ids.encode(),
            ));
            writes.push((paths::tiles_index(node, &self.key), self.tiles.encode()));
            if let Some(s) = &self.seq {
                writes.push((paths::sequence_index(node, &self.key), s.encode()));
            }
            if let Some(c) = &self.creds {
                writes.push((paths::creds_index(node, &self.key), c.encode()));
            }
            if self.pad_stored || !self.pad.ranges.is_empty() {
                writes.push((paths::pad_index(node, &self.key), self.pad.encode()));
                self.pad_stored = true;
            }
            if !node.is_root() {
                writes.push((paths::chunk_set(node, &self.key), self.chunk_set.encode()));
            }
            if let Some(d) = &self.diff {
                writes.push((paths::commit_diff(node, &self.key), d.encode()));
            }
        }
        // 3.x writes tensor_info.json only once it holds something.
        if (self.info_dirty || self.dirty) && !self.info.is_empty() {
            writes.push((
                paths::tensor_info(node, &self.key),
                meta::encode_info(&self.info),
            ));
        }
        futures::future::try_join_all(
            writes
                .into_iter()
                .map(|(k, v)| async move { store.put(&k, v).await }),
        )
        .await?;
        store
            .put(&paths::tensor_meta(node, &self.key), self.meta.encode())
            .await?;
        self.dirty = false;
        self.info_dirty = false;
        Ok(())
    }
}

/// Serializes a chunk, compressing its data section with the tensor's chunk codec.
pub fn encode_chunk(b: &ChunkBuilder, chunk_compression: Option<&Compression>) -> Vec<u8> {
    match chunk_compression {
        Some(Compression::Lz4) => b.encode_with_data(&compression::lz4_compress(&b.data)),
        _ => b.encode_with_data(&b.data),
    }
}
