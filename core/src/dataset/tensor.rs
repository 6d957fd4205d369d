//! One tensor's in-memory state at the node being read or written: its meta, info,
//! encoders, the head's `chunk_set` and `commit_diff`, and the chunks loaded for writing.
//! Loading reads every small index object of the tensor in parallel; saving writes data
//! chunks first and metas last, so a reader never sees an index pointing at a chunk
//! that is not there yet.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::dataset::writer;
use crate::error::{Error, Result};
use crate::format::chunk::ChunkBuilder;
use crate::format::compression::Compression;
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
    /// Chunk ids known to be stored in the head.
    pub in_head: BTreeSet<u64>,
    /// Chunk ids whose bytes are on storage. Those are never rewritten: a changed chunk
    /// is written under a fresh id, so the last visible state keeps its bytes.
    pub persisted: BTreeSet<u64>,
    pub dirty: bool,
    pub info_dirty: bool,
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
            persisted: BTreeSet::new(),
            dirty: false,
            info_dirty: false,
        })
    }

    /// Loads tensor `key` as stored at commit `node` (its 3.x files).
    pub async fn load(store: &Store, node: &CommitId, key: TensorName) -> Result<TensorState> {
        let files = TensorFiles::fetch(store, node, &key).await?;
        let url = store.url().to_owned();
        let (n, k) = (node.clone(), key.clone());
        TensorState::from_files(node, key, files, &move |file: &str| {
            format!("{url}/{}", TensorFiles::key_of(&n, &k, file))
        })
    }

    /// Builds the state from a tensor's stored objects. `label` names the object a
    /// decoding error is reported against.
    pub fn from_files(
        node: &CommitId,
        key: TensorName,
        files: TensorFiles,
        label: &dyn Fn(&str) -> String,
    ) -> Result<TensorState> {
        let meta_b = files.meta.ok_or_else(|| {
            Error::corrupt(
                label("tensor_meta.json"),
                "tensor listed in dataset_meta.json has no tensor_meta.json",
            )
        })?;
        let at = |f: &str| {
            let l = label(f);
            move |c: crate::error::Corruption| c.at(&l)
        };
        let meta = TensorMeta::decode(&meta_b).map_err(at("tensor_meta.json"))?;
        let info = match files.info {
            Some(b) if !b.is_empty() => {
                meta::decode_info(&b, "tensor_info.json").map_err(at("tensor_info.json"))?
            }
            _ => Map::new(),
        };
        let mut t = TensorState::from_parts(key, meta, info).map_err(|e| match e {
            Error::InvalidInput { message } | Error::Unsupported { message } => {
                Error::corrupt(label("tensor_meta.json"), message)
            }
            other => other,
        })?;
        if let Some(b) = files.chunks_index {
            t.chunk_ids = ChunkIdEncoder::decode(&b).map_err(at("chunks_index"))?;
        }
        if let Some(b) = files.tiles_index {
            t.tiles = TileEncoder::decode(&b).map_err(at("tiles_index"))?;
        }
        if let (Some(b), true) = (files.sequence_index, t.meta.is_sequence) {
            t.seq = Some(SequenceEncoder::decode(&b).map_err(at("sequence_index"))?);
        }
        if let (Some(b), true) = (files.creds_index, t.meta.is_link) {
            t.creds = Some(CredsEncoder::decode(&b).map_err(at("creds_index"))?);
        }
        if let Some(b) = files.pad_index {
            t.pad = PadEncoder::decode(&b).map_err(at("pad_index"))?;
            t.pad_stored = true;
        }
        if let (Some(b), false) = (files.chunk_set, node.is_root()) {
            t.chunk_set = ChunkSet::parse(&b).map_err(at("chunk_set"))?;
        }
        if let Some(b) = files.commit_diff {
            t.diff = Some(CommitDiff::decode(&b).map_err(at("commit_diff"))?);
        }
        // Which chunks the head owns: at the root every chunk without a chunk-set entry
        // elsewhere; at other nodes the plain entries of its own chunk set.
        let ids = t.chunk_ids.rows.iter().map(|r| r.0);
        t.in_head = if node.is_root() {
            ids.collect()
        } else {
            ids.filter(|id| t.chunk_set.contains_here(&ChunkId(*id).name()))
                .collect()
        };
        t.persisted = t.chunk_ids.rows.iter().map(|r| r.0).collect();
        t.check_integrity(&label("chunks_index"))?;
        Ok(t)
    }

    /// Everything this tensor stores at a node besides chunks, encoded.
    pub fn to_files(&self, node: &CommitId) -> TensorFiles {
        TensorFiles {
            meta: Some(self.meta.encode()),
            info: (!self.info.is_empty()).then(|| meta::encode_info(&self.info)),
            chunks_index: Some(self.chunk_ids.encode()),
            tiles_index: Some(self.tiles.encode()),
            sequence_index: self.seq.as_ref().map(|s| s.encode()),
            creds_index: self.creds.as_ref().map(|c| c.encode()),
            pad_index: (self.pad_stored || !self.pad.ranges.is_empty()).then(|| self.pad.encode()),
            chunk_set: (!node.is_root()).then(|| self.chunk_set.encode()),
            commit_diff: self.diff.as_ref().map(|d| d.encode()),
        }
    }

    /// The sample count the encoders imply must match the meta.
    fn check_integrity(&self, label: &str) -> Result<()> {
        let n = self.chunk_ids.num_samples();
        if n != self.meta.length {
            return Err(Error::corrupt(
                label,
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

    /// Adds a chunk made in this head under a fresh id (not yet written).
    pub fn add_chunk(&mut self, builder: ChunkBuilder) -> u64 {
        let id = ChunkId::generate().0;
        self.builders.insert(id, builder);
        self.dirty_chunks.insert(id);
        self.in_head.insert(id);
        id
    }

    /// The id under which changed chunk `id` is written: the same id for a chunk that
    /// has never been written, a fresh one (renamed everywhere) for one on storage.
    pub fn write_id(&mut self, id: u64) -> u64 {
        if !self.persisted.contains(&id) {
            return id;
        }
        let new = ChunkId::generate().0;
        for r in self.chunk_ids.rows.iter_mut().filter(|r| r.0 == id) {
            r.0 = new;
        }
        if let Some(b) = self.builders.remove(&id) {
            self.builders.insert(new, b);
        }
        if self.dirty_chunks.remove(&id) {
            self.dirty_chunks.insert(new);
        }
        self.in_head.remove(&id);
        self.in_head.insert(new);
        self.chunk_set.remove(&ChunkId(id).name());
        new
    }

    /// Writes the chunks changed since the last flush (the open chunk, edited chunks).
    /// Chunk encoding and compression run on the CPU pool. Returns whether anything was
    /// written; the index files that point at these chunks come in [`Self::save_index`].
    pub async fn save_chunks(&mut self, store: &Store, node: &CommitId) -> Result<bool> {
        let dirty: Vec<u64> = self
            .dirty_chunks
            .clone()
            .into_iter()
            .map(|id| self.write_id(id))
            .collect();
        self.dirty_chunks.clear();
        // The builders are shared with the puts rather than copied (the last chunk can
        // be 16 MB), and come back once the puts are done.
        let shared: Vec<(u64, Arc<ChunkBuilder>)> = dirty
            .iter()
            .filter_map(|id| self.builders.remove(id).map(|b| (*id, Arc::new(b))))
            .collect();
        let written = put_chunks(
            store,
            node,
            &self.key,
            &shared,
            self.chunk_compression.clone(),
        )
        .await;
        for (id, b) in shared {
            let b = Arc::try_unwrap(b).unwrap_or_else(|b| (*b).clone());
            self.builders.insert(id, b);
        }
        if let Err(e) = written {
            // Nothing is lost: the same chunks are written again at the next flush.
            self.dirty_chunks.extend(dirty);
            return Err(e);
        }
        for id in &dirty {
            // Written now: any later change to it goes under a fresh id.
            self.persisted.insert(*id);
            if !node.is_root() {
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

    /// Writes the 3.x files of this tensor at head `node` if anything changed.
    pub async fn save_index(&mut self, store: &Store, node: &CommitId) -> Result<()> {
        if !self.dirty && !self.info_dirty {
            return Ok(());
        }
        self.to_files(node).write(store, node, &self.key).await?;
        self.mark_saved();
        Ok(())
    }

    /// The current metas and encoders are on storage (in 3.x files or a flush record).
    pub fn mark_saved(&mut self) {
        if self.pad_stored || !self.pad.ranges.is_empty() {
            self.pad_stored = true;
        }
        self.dirty = false;
        self.info_dirty = false;
    }
}

/// Puts chunks of one tensor at `node`, in parallel; the data sections are compressed
/// (or shared as they are) on the CPU pool.
async fn put_chunks(
    store: &Store,
    node: &CommitId,
    key: &TensorName,
    chunks: &[(u64, Arc<ChunkBuilder>)],
    cc: Option<Compression>,
) -> Result<()> {
    let work = chunks.to_vec();
    let parts = crate::runtime::spawn_cpu(move || {
        use rayon::prelude::*;
        Ok(work
            .into_par_iter()
            .map(|(id, b)| (id, writer::chunk_parts(&b, cc.as_ref())))
            .collect::<Vec<_>>())
    })
    .await?;
    futures::future::try_join_all(parts.into_iter().map(|(id, parts)| {
        let k = paths::chunk(node, key, ChunkId(id));
        async move { store.put_parts(&k, parts).await }
    }))
    .await?;
    Ok(())
}

/// The objects one tensor stores at one node besides its chunks, as bytes. Serialized
/// (base64) into flush records, whose snapshot is the source of truth for a head.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorFiles {
    #[serde(default, with = "b64")]
    pub meta: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub info: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub chunks_index: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub tiles_index: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub sequence_index: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub creds_index: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub pad_index: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub chunk_set: Option<Vec<u8>>,
    #[serde(default, with = "b64")]
    pub commit_diff: Option<Vec<u8>>,
}

impl TensorFiles {
    /// The 3.x object key of file `file` of tensor `key` at `node`.
    pub fn key_of(node: &CommitId, key: &TensorName, file: &str) -> String {
        match file {
            "tensor_meta.json" => paths::tensor_meta(node, key),
            "tensor_info.json" => paths::tensor_info(node, key),
            "chunks_index" => paths::chunks_index(node, key),
            "tiles_index" => paths::tiles_index(node, key),
            "sequence_index" => paths::sequence_index(node, key),
            "creds_index" => paths::creds_index(node, key),
            "pad_index" => paths::pad_index(node, key),
            "chunk_set" => paths::chunk_set(node, key),
            _ => paths::commit_diff(node, key),
        }
    }

    fn slots(&self) -> [(&'static str, &Option<Vec<u8>>); 9] {
        [
            ("tensor_info.json", &self.info),
            ("chunks_index", &self.chunks_index),
            ("tiles_index", &self.tiles_index),
            ("sequence_index", &self.sequence_index),
            ("creds_index", &self.creds_index),
            ("pad_index", &self.pad_index),
            ("chunk_set", &self.chunk_set),
            ("commit_diff", &self.commit_diff),
            ("tensor_meta.json", &self.meta),
        ]
    }

    /// Reads the 3.x files of tensor `key` at `node`.
    pub async fn fetch(store: &Store, node: &CommitId, key: &TensorName) -> Result<TensorFiles> {
        let get = |file: &'static str| {
            let k = TensorFiles::key_of(node, key, file);
            async move { Ok::<_, Error>(store.get_opt(&k).await?.map(|b| b.to_vec())) }
        };
        let (
            meta,
            info,
            chunks_index,
            tiles_index,
            sequence_index,
            creds_index,
            pad_index,
            chunk_set,
            commit_diff,
        ) = futures::try_join!(
            get("tensor_meta.json"),
            get("tensor_info.json"),
            get("chunks_index"),
            get("tiles_index"),
            get("sequence_index"),
            get("creds_index"),
            get("pad_index"),
            get("chunk_set"),
            get("commit_diff"),
        )?;
        Ok(TensorFiles {
            meta,
            info,
            chunks_index,
            tiles_index,
            sequence_index,
            creds_index,
            pad_index,
            chunk_set,
            commit_diff,
        })
    }

    /// Writes these files as the 3.x objects of tensor `key` at `node`, the meta last
    /// (its `length` is what makes new samples count for a 3.x reader).
    pub async fn write(&self, store: &Store, node: &CommitId, key: &TensorName) -> Result<()> {
        let slots = self.slots();
        let (meta, rest) = slots
            .split_last()
            .ok_or_else(|| Error::internal("no slots"))?;
        futures::future::try_join_all(rest.iter().filter_map(|(f, v)| {
            let k = TensorFiles::key_of(node, key, f);
            v.as_ref()
                .map(|v| async move { store.put(&k, v.clone()).await })
        }))
        .await?;
        if let Some(m) = meta.1 {
            store
                .put(&TensorFiles::key_of(node, key, meta.0), m.clone())
                .await?;
        }
        Ok(())
    }
}

/// Optional bytes as base64 strings in JSON.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(t) => STANDARD
                .decode(t)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
