//! The dataset API: create or open a dataset by URL, create, rename and delete tensors,
//! append, update and pop samples, read samples back, and flush.
//!
//! A `Dataset` works on one node of the commit tree. At a branch head it is writable;
//! writes are buffered per tensor and become durable at [`Dataset::flush`] (full chunks
//! are written as soon as they close, to bound memory). `flush` writes data chunks
//! first, then encoders, then tensor metas, then `dataset_meta.json`, so a reader that
//! opens the dataset mid-flush sees either the old sample counts or the new ones.
//!
//! Hidden companions are kept in step with every visible tensor: `_<t>_id` (a random
//! u64 per sample, used by merge), `_<t>_shape` (the sample shape) and, for image-like
//! htypes, `_<t>_info` (a JSON record per sample).

mod cache;
mod commit;
mod copy;
mod encode;
pub mod gc;
mod links;
mod merge;
mod packed;
mod parts;
mod read;
mod record;
mod staging;
mod tensor;
mod versions;
pub mod views;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

pub use cache::{CacheStats, ChunkCache, DEFAULT_CACHE_BYTES};
pub use copy::{StoredRows, set_item_info, stored_bytes};
pub use encode::{EncodeCtx, Prepared, StoredItem};
pub use merge::{MergeOptions, MergeOutcome, TensorMerge};
pub use packed::PackedRows;
pub use parts::{PlacedPart, Placement, Placer};
pub use read::{ChunkParts, ReadOptions};
pub use tensor::CompanionRole;
use tensor::TensorState;

use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::chunk::{Chunk, ChunkBuilder};
use crate::format::compression::Compression;
use crate::format::diff::DatasetDiff;
use crate::format::dtype::Dtype;
use crate::format::encoders::TileEntry;
use crate::format::htype::{BaseHtype, Htype};
use crate::format::linked_creds::LinkedCreds;
use crate::format::meta::{self, DatasetMeta, LinkSpec, TensorMeta};
use crate::format::vcinfo::VersionControlInfo;
use crate::format::{COMPANION_MAX_CHUNK_SIZE, WRITER_VERSION};
use crate::ids::{BranchName, ChunkId, CommitId, TensorName};
use crate::store::{Store, StoreOptions, paths};
use crate::version::ChunkLocator;

/// How to open or create a dataset.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    pub storage: StoreOptions,
    /// Branch to open (default `main`).
    pub branch: Option<BranchName>,
    /// Open read-only even at a branch head.
    pub read_only: bool,
    /// With `create`: delete whatever is at the path first.
    pub overwrite: bool,
    /// How long this writer's lease on its branch lasts without renewal (default 120 s).
    pub lease_ttl: Option<std::time::Duration>,
    /// How long to wait for another writer's lease on the branch (default: fail at once).
    pub lease_wait: Option<std::time::Duration>,
    /// This writer's lease holder name (default: a random one). A writer that resumes
    /// the work of an earlier run of itself (a materialization after a crash) names
    /// itself alike, so it takes over that run's lease instead of waiting for it to
    /// expire; two live writers of one name still cannot both flush (flush records are
    /// create-if-absent).
    pub lease_holder: Option<String>,
    /// A chunk cache to share with other handles (a server's one budget for every
    /// dataset); unset, the handle makes its own of [`DEFAULT_CACHE_BYTES`].
    pub cache: Option<std::sync::Arc<ChunkCache>>,
    /// Fetches link targets (verify at append, resolved reads); share one across handles
    /// so they share its concurrency bound and cache. Unset, a process-wide default is
    /// used, with creds from the environment.
    pub linker: Option<crate::link::Linker>,
}

/// How to create a tensor. `htype` is a 3.x htype string such as `image`,
/// `class_label`, `link[image]` or `sequence[bbox]`.
#[derive(Clone, Debug)]
pub struct TensorOptions {
    pub htype: String,
    pub dtype: Option<Dtype>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub max_chunk_size: Option<u64>,
    /// Negative disables tiling.
    pub tiling_threshold: Option<i64>,
    pub class_names: Vec<String>,
    pub hidden: bool,
    /// Hidden, but with the companions of a visible tensor: a tensor filled aside to
    /// replace a visible one later ([`Dataset::replace_tensor`]).
    pub staged: bool,
    pub create_id_tensor: bool,
    pub create_shape_tensor: bool,
    pub create_sample_info_tensor: bool,
    /// Extra `tensor_info.json` entries (e.g. bbox `coords`).
    pub info: Map<String, Value>,
    /// Link tensors: read each target at append time for its shape and `_info` (default
    /// true, as in 3.x). False stores links unchecked and, as in 3.x, makes no
    /// `_shape`/`_info` companions.
    pub verify: Option<bool>,
}

impl TensorOptions {
    pub fn new(htype: impl Into<String>) -> Self {
        TensorOptions {
            htype: htype.into(),
            dtype: None,
            sample_compression: None,
            chunk_compression: None,
            max_chunk_size: None,
            tiling_threshold: None,
            class_names: Vec::new(),
            hidden: false,
            staged: false,
            create_id_tensor: true,
            create_shape_tensor: true,
            create_sample_info_tensor: true,
            info: Map::new(),
            verify: None,
        }
    }

    /// See [`TensorOptions::verify`].
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = Some(verify);
        self
    }

    pub fn dtype(mut self, d: Dtype) -> Self {
        self.dtype = Some(d);
        self
    }

    pub fn sample_compression(mut self, c: impl Into<String>) -> Self {
        self.sample_compression = Some(c.into());
        self
    }

    pub fn chunk_compression(mut self, c: impl Into<String>) -> Self {
        self.chunk_compression = Some(c.into());
        self
    }

    /// See [`TensorOptions::staged`].
    pub fn staged(mut self) -> Self {
        self.staged = true;
        self
    }

    pub fn class_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.class_names = names.into_iter().map(Into::into).collect();
        self
    }
}

/// What `Dataset::tensor_summary` reports about a tensor.
#[derive(Clone, Debug)]
pub struct TensorSummary {
    pub name: String,
    pub key: String,
    pub htype: String,
    pub dtype: Option<String>,
    pub length: u64,
    pub min_shape: Vec<u64>,
    pub max_shape: Vec<u64>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub num_chunks: usize,
    pub class_names: Vec<String>,
}

/// A dataset opened at one node of its commit tree.
pub struct Dataset {
    store: Store,
    /// Shared with the commit-tree log's memory of the newest state and with handles
    /// opened from this one (diffs open many).
    tree: Arc<VersionControlInfo>,
    node: CommitId,
    branch: String,
    writable: bool,
    meta: DatasetMeta,
    meta_dirty: bool,
    info: Map<String, Value>,
    info_dirty: bool,
    ds_diff: Option<DatasetDiff>,
    tensors: BTreeMap<String, TensorState>,
    locator: ChunkLocator,
    cache: cache::CacheView,
    writer: writer::ChunkWriter,
    /// Tag name -> commit id, from the commit-tree log.
    tags: BTreeMap<String, String>,
    lease: commit::Lease,
    /// Sequence number of the head's newest flush record.
    flush_seq: Option<u64>,
    /// Checked out at a past commit of a writable handle: the first write branches off
    /// (3.x's `auto_checkout`) instead of failing.
    detached: bool,
    /// The newest flush record whose 3.x files are not written yet (deferred mode).
    compat_pending: Option<record::FlushRecord>,
    /// The linker given at open; `None` uses the process-wide default.
    linker: Option<crate::link::Linker>,
    /// Creds key names of `linked_creds.json` (root level, not versioned, as in 3.x).
    linked_creds: LinkedCreds,
    /// `used_creds_keys` grew: rewrite `linked_creds.json` at the next flush.
    linked_creds_dirty: bool,
    /// Off: link appends are never verified, whatever the tensor says.
    link_verify: bool,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("url", &self.store.url())
            .field("node", &self.node)
            .finish()
    }
}

impl Dataset {
    /// Whether a dataset exists at `store`'s root.
    pub async fn exists_in(store: &Store) -> Result<bool> {
        Ok(store
            .exists(&paths::dataset_meta(&CommitId::root()))
            .await?
            || store.exists(paths::VERSION_CONTROL_INFO).await?)
    }

    /// Creates an empty dataset at `url`. Fails if one exists, unless `overwrite`.
    pub async fn create(url: &str, opts: OpenOptions) -> Result<Dataset> {
        let store = Store::create(url, &opts.storage)?;
        if Dataset::exists_in(&store).await? {
            if !opts.overwrite {
                return Err(Error::Conflict {
                    path: url.to_owned(),
                    message: "a dataset already exists here (use overwrite to replace it)"
                        .to_owned(),
                    retryable: false,
                });
            }
            store.delete_prefix("").await?;
        }
        let root = CommitId::root();
        let meta = DatasetMeta::default();
        let tree = VersionControlInfo::new_root();
        store
            .put(&paths::dataset_meta(&root), meta.encode())
            .await?;
        store
            .put(&paths::dataset_info(&root), meta::encode_info(&Map::new()))
            .await?;
        // The first record of the commit-tree log is created only if absent: of two
        // processes racing to create the same dataset, exactly one succeeds.
        crate::version::log::create(&store, &tree).await?;
        store.sync().await?;
        crate::version::log::refresh_3x(&store, &tree, &[]).await?;
        let tree = Arc::new(tree);
        let locator = ChunkLocator::new(&tree, &root)?;
        let cache = cache::CacheView::new(opts.cache.clone(), store.url());
        Ok(Dataset {
            linker: opts.linker.clone(),
            linked_creds: LinkedCreds::default(),
            linked_creds_dirty: false,
            link_verify: true,
            store,
            tree,
            node: root,
            branch: "main".to_owned(),
            writable: !opts.read_only,
            meta,
            meta_dirty: false,
            info: Map::new(),
            info_dirty: false,
            ds_diff: None,
            tensors: BTreeMap::new(),
            locator,
            cache,
            writer: writer::ChunkWriter::new(4),
            tags: BTreeMap::new(),
            lease: commit::Lease::new(opts.lease_ttl, opts.lease_wait)
                .with_holder(opts.lease_holder.clone()),
            flush_seq: None,
            detached: false,
            compat_pending: None,
        })
    }

    /// Opens an existing dataset at the head of `opts.branch` (default `main`).
    pub async fn open(url: &str, opts: OpenOptions) -> Result<Dataset> {
        let store = match Store::open(url, &opts.storage) {
            Err(Error::NotFound { .. }) => return Err(Error::not_found("dataset", url)),
            other => other?,
        };
        if !Dataset::exists_in(&store).await? {
            return Err(Error::not_found("dataset", url));
        }
        if !opts.read_only {
            // A crash between a tree record and the 3.x refresh leaves the 3.x file
            // behind; writers bring it up to date.
            crate::version::log::repair_3x(&store).await?;
        }
        let (_, tree, tags) = crate::version::log::load(&store).await?;
        let branch = opts
            .branch
            .map(|b| b.as_str().to_owned())
            .unwrap_or_else(|| "main".to_owned());
        let node_s = tree
            .branches
            .get(&branch)
            .ok_or_else(|| Error::not_found("branch", &branch))?;
        let node: CommitId = node_s.parse().map_err(|_| {
            Error::corrupt(
                format!("{url}/{}", paths::VERSION_CONTROL_INFO),
                format!("bad commit id {node_s:?}"),
            )
        })?;
        let writable = !opts.read_only
            && tree
                .commits
                .get(node.as_str())
                .map(|n| n.is_head())
                .unwrap_or(true);
        let mut ds = Dataset::open_at(
            store,
            tree.into(),
            node,
            branch,
            writable,
            opts.cache.clone(),
        )
        .await?;
        ds.tags = tags;
        ds.lease = commit::Lease::new(opts.lease_ttl, opts.lease_wait)
            .with_holder(opts.lease_holder.clone());
        ds.linker = opts.linker.clone();
        Ok(ds)
    }

    /// Creates the dataset if absent, else opens it.
    pub async fn open_or_create(url: &str, opts: OpenOptions) -> Result<Dataset> {
        let store = Store::create(url, &opts.storage)?;
        if Dataset::exists_in(&store).await? {
            Dataset::open(url, opts).await
        } else {
            Dataset::create(url, opts).await
        }
    }

    async fn open_at(
        store: Store,
        tree: Arc<VersionControlInfo>,
        node: CommitId,
        branch: String,
        writable: bool,
        cache: Option<Arc<ChunkCache>>,
    ) -> Result<Dataset> {
        let mut ds = Dataset::open_at_inner(store, tree, node, branch, writable, cache).await?;
        ds.linked_creds = links::load_linked_creds(&ds.store).await?;
        Ok(ds)
    }

    async fn open_at_inner(
        store: Store,
        tree: Arc<VersionControlInfo>,
        node: CommitId,
        branch: String,
        writable: bool,
        cache: Option<Arc<ChunkCache>>,
    ) -> Result<Dataset> {
        let mut latest = record::latest(&store, &node).await?;
        if latest.is_none() {
            let files = Dataset::state_from_files(&store, &node).await;
            // A head's 3.x files change only after its first flush record exists. One
            // that landed while we read them means they may be a mix of old and new
            // (even look corrupt): the record is the consistent state then.
            latest = record::latest(&store, &node).await?;
            if latest.is_none() {
                let (m, i, d, t) = files?;
                return Dataset::assemble(
                    store,
                    tree,
                    node,
                    branch,
                    writable,
                    (m, i, d, t, None),
                    cache,
                );
            }
        }
        let Some(rec) = latest else {
            return Err(Error::internal("a flush record vanished while opening"));
        };
        if writable && record::lagging(&store, &node, rec.seq).await? {
            record::apply(&store, &node, &rec).await?;
        }
        let seq = rec.seq;
        let (m, i, d, t) = Dataset::state_from_record(&store, &node, rec)?;
        Dataset::assemble(
            store,
            tree,
            node,
            branch,
            writable,
            (m, i, d, t, Some(seq)),
            cache,
        )
    }

    #[allow(clippy::type_complexity)]
    fn assemble(
        store: Store,
        tree: Arc<VersionControlInfo>,
        node: CommitId,
        branch: String,
        writable: bool,
        state: (
            DatasetMeta,
            Map<String, Value>,
            Option<DatasetDiff>,
            BTreeMap<String, TensorState>,
            Option<u64>,
        ),
        cache: Option<Arc<ChunkCache>>,
    ) -> Result<Dataset> {
        let (meta, info, ds_diff, tensors, flush_seq) = state;
        let locator = ChunkLocator::new(&tree, &node)?;
        if !node.is_root() {
            for t in tensors.values() {
                locator.prime(&node, &t.key, t.chunk_set.clone())?;
            }
        }
        let cache = cache::CacheView::new(cache, store.url());
        Ok(Dataset {
            store,
            tree,
            node,
            branch,
            writable,
            meta,
            meta_dirty: false,
            info,
            info_dirty: false,
            ds_diff,
            tensors,
            locator,
            cache,
            writer: writer::ChunkWriter::new(4),
            tags: BTreeMap::new(),
            lease: commit::Lease::new(None, None),
            flush_seq,
            detached: false,
            compat_pending: None,
            linker: None,
            linked_creds: LinkedCreds::default(),
            linked_creds_dirty: false,
            link_verify: true,
        })
    }

    /// The state of `node` from its 3.x files (a dataset 3.x wrote, or a node never
    /// flushed by us).
    async fn state_from_files(store: &Store, node: &CommitId) -> Result<NodeState> {
        let k_meta = paths::dataset_meta(node);
        let meta_b = store.get(&k_meta).await?;
        let meta =
            DatasetMeta::decode(&meta_b).map_err(|c| c.at(format!("{}/{k_meta}", store.url())))?;
        let k_info = paths::dataset_info(node);
        let info = match store.get_opt(&k_info).await? {
            Some(b) if !b.is_empty() => meta::decode_info(&b, "dataset_info.json")
                .map_err(|c| c.at(format!("{}/{k_info}", store.url())))?,
            _ => Map::new(),
        };
        let k_diff = paths::dataset_diff(node);
        let ds_diff = match store.get_opt(&k_diff).await? {
            Some(b) => Some(
                DatasetDiff::decode(&b).map_err(|c| c.at(format!("{}/{k_diff}", store.url())))?,
            ),
            None => None,
        };
        let keys = tensor_keys(&meta, &format!("{}/{k_meta}", store.url()))?;
        let loaded = futures::future::try_join_all(
            keys.into_iter()
                .map(|k| async move { TensorState::load(store, node, k).await }),
        )
        .await?;
        let tensors = loaded
            .into_iter()
            .map(|t| (t.key.as_str().to_owned(), t))
            .collect();
        Ok((meta, info, ds_diff, tensors))
    }

    /// The state of `node` from its newest flush record.
    fn state_from_record(
        store: &Store,
        node: &CommitId,
        rec: record::FlushRecord,
    ) -> Result<NodeState> {
        let label = format!("{}/{}", store.url(), paths::flush_log(node, rec.seq));
        let meta_b = rec
            .dataset
            .meta
            .ok_or_else(|| Error::corrupt(&label, "no dataset meta"))?;
        let meta = DatasetMeta::decode(&meta_b).map_err(|c| c.at(&label))?;
        let info = match &rec.dataset.info {
            Some(b) if !b.is_empty() => {
                meta::decode_info(b, "dataset_info.json").map_err(|c| c.at(&label))?
            }
            _ => Map::new(),
        };
        let ds_diff = match &rec.dataset.commit_diff {
            Some(b) => Some(DatasetDiff::decode(b).map_err(|c| c.at(&label))?),
            None => None,
        };
        let mut files = rec.tensors;
        let mut tensors = BTreeMap::new();
        for key in tensor_keys(&meta, &label)? {
            let f = files
                .remove(key.as_str())
                .ok_or_else(|| Error::corrupt(&label, format!("no files for tensor {key}")))?;
            let l = label.clone();
            let t =
                TensorState::from_files(node, key, f, &move |file: &str| format!("{l} ({file})"))?;
            tensors.insert(t.key.as_str().to_owned(), t);
        }
        Ok((meta, info, ds_diff, tensors))
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The chunk cache this handle reads through (shared when [`OpenOptions::cache`] set one).
    pub fn chunk_cache(&self) -> &Arc<ChunkCache> {
        self.cache.shared()
    }

    /// The node being read: for a writable head, the id its next commit will get.
    pub fn node_id(&self) -> &CommitId {
        &self.node
    }

    /// The last committed id (the head's parent), or `None` before the first commit.
    pub fn commit_id(&self) -> Option<String> {
        let n = self.tree.commits.get(self.node.as_str())?;
        if n.is_head() {
            n.parent.clone()
        } else {
            Some(self.node.as_str().to_owned())
        }
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn branches(&self) -> Vec<String> {
        self.tree.branches.keys().cloned().collect()
    }

    /// The head node id of branch `name`, as of this handle's view of the tree.
    pub fn branch_head(&self, name: &str) -> Option<String> {
        self.tree.branches.get(name).cloned()
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Visible tensor names (3.x's `visible_tensors`: every name whose key is not
    /// hidden), in creation order of their keys. After a 3.x merge of a renamed tensor
    /// one key can carry two names; both are listed.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for k in &self.meta.tensors {
            if self.meta.hidden_tensors.contains(k) || !seen.insert(k.as_str()) {
                continue;
            }
            out.extend(
                self.meta
                    .tensor_names
                    .iter()
                    .filter(|(_, key)| *key == k)
                    .map(|(n, _)| n.clone()),
            );
        }
        out
    }

    /// Fills chunks only to `bytes` (when lower than half of a tensor's
    /// `max_chunk_size`) before starting the next. A writing policy, not stored: it bounds
    /// the memory of open chunks and what each flush writes again (a flush stores the
    /// open chunk whole, under a fresh name), at the cost of more, smaller chunks.
    pub fn set_chunk_fill(&mut self, bytes: Option<usize>) {
        let policy = self.writer.policy();
        self.writer.set_policy(writer::WritePolicy {
            fill: bytes,
            ..policy
        });
    }

    /// With `true`, a flush makes its data durable and visible to our readers (the
    /// flush record) but leaves the 3.x files (metas, encoders) as they were; they are
    /// brought up to date by [`Dataset::flush_all`], at each commit, checkout, merge
    /// and structural change, and by the next writer to open the head after a crash.
    /// Meanwhile 3.x readers see the head as of that last refresh. A writing policy,
    /// not stored: frequent flushes of many tensors (the connector) then write one
    /// record and the chunks, not every tensor's files again.
    pub fn set_deferred_compat_files(&mut self, deferred: bool) {
        let policy = self.writer.policy();
        self.writer.set_policy(writer::WritePolicy {
            deferred_compat: deferred,
            ..policy
        });
    }

    /// Names of the hidden tensors (companions, staged tensors), sorted.
    pub fn hidden_tensor_names(&self) -> Vec<String> {
        self.meta
            .tensor_names
            .iter()
            .filter(|(_, k)| self.meta.hidden_tensors.contains(k))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Dataset length: the shortest visible tensor, as in 3.x.
    pub fn len(&self) -> u64 {
        self.tensor_names()
            .iter()
            .filter_map(|n| self.key_of(n).ok())
            .filter_map(|k| self.tensors.get(&k))
            .map(|t| t.num_samples())
            .min()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key_of(&self, name: &str) -> Result<String> {
        self.meta
            .tensor_names
            .get(name)
            .cloned()
            .or_else(|| self.tensors.contains_key(name).then(|| name.to_owned()))
            .ok_or_else(|| Error::not_found("tensor", name))
    }

    fn tensor_state(&self, name: &str) -> Result<&TensorState> {
        let k = self.key_of(name)?;
        self.tensors
            .get(&k)
            .ok_or_else(|| Error::not_found("tensor", name))
    }

    pub fn tensor_len(&self, name: &str) -> Result<u64> {
        Ok(self.tensor_state(name)?.num_samples())
    }

    pub fn tensor_htype(&self, name: &str) -> Result<Htype> {
        Ok(self.tensor_state(name)?.htype)
    }

    pub fn tensor_meta(&self, name: &str) -> Result<&TensorMeta> {
        Ok(&self.tensor_state(name)?.meta)
    }

    pub fn tensor_info(&self, name: &str) -> Result<&Map<String, Value>> {
        Ok(&self.tensor_state(name)?.info)
    }

    pub fn info(&self) -> &Map<String, Value> {
        &self.info
    }

    pub fn summary(&self, name: &str) -> Result<TensorSummary> {
        let t = self.tensor_state(name)?;
        Ok(TensorSummary {
            name: name.to_owned(),
            key: t.key.to_string(),
            htype: t.htype.to_string(),
            dtype: t.meta.dtype.clone(),
            length: t.num_samples(),
            min_shape: t.meta.min_shape.clone(),
            max_shape: t.meta.max_shape.clone(),
            sample_compression: t.meta.sample_compression.clone(),
            chunk_compression: t.meta.chunk_compression.clone(),
            num_chunks: t.chunk_ids.rows.len(),
            class_names: class_names(&t.info),
        })
    }

    /// Bytes on storage under each tensor's folders (all commits), by visible name.
    pub async fn storage_sizes(&self) -> Result<BTreeMap<String, u64>> {
        let all = self.store.list("").await?;
        let mut out = BTreeMap::new();
        for name in self.tensor_names() {
            let key = self.key_of(&name)?;
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| Error::not_found("tensor", &name))?;
            let mut keys = vec![key.clone()];
            keys.extend(t.meta.links.keys().cloned());
            let mut total = 0u64;
            for (path, size) in &all {
                let rel = match path.strip_prefix("versions/") {
                    Some(r) => r.split_once('/').map(|x| x.1).unwrap_or(""),
                    None => path.as_str(),
                };
                if keys.iter().any(|k| rel.starts_with(&format!("{k}/"))) {
                    total += size;
                }
            }
            out.insert(name, total);
        }
        Ok(out)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable && !self.detached {
            return Err(Error::invalid(format!(
                "dataset {} is open read-only at {} (not a writable branch head)",
                self.store.url(),
                self.node
            )));
        }
        Ok(())
    }

    fn ds_diff_mut(&mut self) -> &mut DatasetDiff {
        self.ds_diff.get_or_insert_with(DatasetDiff::default)
    }

    pub async fn set_info(&mut self, key: impl Into<String>, value: Value) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        self.info.insert(key.into(), value);
        self.info_dirty = true;
        self.ds_diff_mut().info_updated = true;
        Ok(())
    }

    pub async fn set_tensor_info(
        &mut self,
        tensor: &str,
        key: impl Into<String>,
        value: Value,
    ) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let k = self.key_of(tensor)?;
        let t = self
            .tensors
            .get_mut(&k)
            .ok_or_else(|| Error::not_found("tensor", tensor))?;
        t.info.insert(key.into(), value);
        t.info_dirty = true;
        t.diff_mut().info_updated = true;
        Ok(())
    }

    // ---------------------------------------------------------------- tensors

    /// Creates a tensor (and its hidden companions).
    pub async fn create_tensor(&mut self, name: &str, opts: TensorOptions) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let tname: TensorName = name.parse()?;
        // Folders of the layout itself; a tensor there would shadow them.
        let first = name.split('/').next().unwrap_or_default();
        if matches!(first, "versions" | "_rs" | "_rs_flush" | ".queries") {
            return Err(Error::invalid(format!(
                "{first:?} is reserved and cannot name a tensor"
            )));
        }
        if self.meta.tensor_names.contains_key(name) {
            return Err(Error::invalid(format!("tensor {name:?} already exists")));
        }
        let htype = Htype::parse(&opts.htype)?;
        let sc = match &opts.sample_compression {
            Some(c) => Compression::parse(c)?,
            None => None,
        };
        let cc = match &opts.chunk_compression {
            Some(c) => Compression::parse(c)?,
            None => None,
        };
        htype.check_compression(sc.as_ref(), cc.as_ref())?;
        if let Some(c) = &cc
            && *c != Compression::Lz4
            && !htype.is_link
        {
            return Err(Error::unsupported(format!(
                "chunk compression {} (only lz4 chunk compression is written)",
                c.name()
            )));
        }
        if let Some(m) = opts.max_chunk_size
            && (m < 1024 || m > u32::MAX as u64)
        {
            return Err(Error::invalid(format!(
                "max_chunk_size {m} must be between 1 KB and 4 GB"
            )));
        }
        // A deleted tensor's folder may still hold objects of this commit: take a fresh key.
        let mut key = tname.clone();
        if self.tensors.contains_key(key.as_str()) || self.meta.tensors.contains(&key.to_string()) {
            key = format!("{name}_{:04x}", rand::random::<u16>()).parse()?;
        }
        let mut links = BTreeMap::new();
        let mut companions: Vec<(TensorName, TensorMeta, &'static str)> = Vec::new();
        // A staged tensor is hidden like a companion but keeps its own companions.
        let bare = opts.hidden && !opts.staged;
        let hidden = opts.hidden || opts.staged;
        let mk_companion =
            |suffix: &str, htype: &str, dtype: Option<&str>, max_chunk: Option<u64>| {
                let ck = key.companion(suffix);
                let cm = TensorMeta {
                    htype: htype.to_owned(),
                    dtype: dtype.map(str::to_owned),
                    typestr: None,
                    min_shape: Vec::new(),
                    max_shape: Vec::new(),
                    length: 0,
                    sample_compression: None,
                    chunk_compression: None,
                    max_chunk_size: max_chunk,
                    tiling_threshold: None,
                    hidden: true,
                    links: BTreeMap::new(),
                    is_sequence: false,
                    is_link: false,
                    verify: true,
                    name: Some(tname.companion(suffix).to_string()),
                    version: WRITER_VERSION.to_owned(),
                    extra: Map::new(),
                };
                (ck, cm)
            };
        if opts.create_id_tensor && !bare {
            let (ck, mut cm) = mk_companion("id", "generic", Some("uint64"), None);
            cm.extra = Htype::plain(BaseHtype::Generic).meta_extra();
            links.insert(
                ck.to_string(),
                LinkSpec {
                    extend: "extend_id".into(),
                    update: None,
                    flatten_sequence: false,
                },
            );
            companions.push((ck, cm, "id"));
        }
        // 3.x writes verify=true on every tensor it creates unless told otherwise; an
        // unverified link tensor gets no shape or info companions.
        let verify = opts.verify.unwrap_or(true);
        if opts.verify.is_some() && !htype.is_link {
            return Err(Error::invalid(format!(
                "verify applies to link tensors only, not to htype {}",
                opts.htype
            )));
        }
        let unverified_link = htype.is_link && !verify;
        if opts.create_shape_tensor && !bare && !unverified_link && htype.has_shape_tensor() {
            let (ck, mut cm) = mk_companion(
                "shape",
                "generic",
                Some("int64"),
                Some(COMPANION_MAX_CHUNK_SIZE as u64),
            );
            cm.extra = Htype::plain(BaseHtype::Generic).meta_extra();
            let list = htype.base == BaseHtype::List;
            links.insert(
                ck.to_string(),
                LinkSpec {
                    extend: if list { "extend_len" } else { "extend_shape" }.into(),
                    update: Some(if list { "update_len" } else { "update_shape" }.into()),
                    flatten_sequence: true,
                },
            );
            companions.push((ck, cm, "shape"));
        }
        if opts.create_sample_info_tensor && !bare && !unverified_link && htype.has_info_tensor() {
            let (ck, mut cm) = mk_companion(
                "info",
                "json",
                Some("Any"),
                Some(COMPANION_MAX_CHUNK_SIZE as u64),
            );
            cm.extra = Htype::plain(BaseHtype::Json).meta_extra();
            links.insert(
                ck.to_string(),
                LinkSpec {
                    extend: "extend_info".into(),
                    update: Some("update_info".into()),
                    flatten_sequence: true,
                },
            );
            companions.push((ck, cm, "info"));
        }
        let meta_dtype = htype.meta_dtype(opts.dtype)?;
        let tmeta = TensorMeta {
            htype: htype.base.name().to_owned(),
            dtype: meta_dtype,
            // 3.x sets typestr only when the dtype is inferred from data.
            typestr: None,
            min_shape: Vec::new(),
            max_shape: Vec::new(),
            length: 0,
            sample_compression: sc.as_ref().map(|c| c.name().to_owned()),
            chunk_compression: cc.as_ref().map(|c| c.name().to_owned()),
            max_chunk_size: opts.max_chunk_size,
            tiling_threshold: opts.tiling_threshold,
            hidden,
            links,
            is_sequence: htype.is_sequence,
            is_link: htype.is_link,
            verify,
            name: Some(name.to_owned()),
            version: WRITER_VERSION.to_owned(),
            extra: htype.meta_extra(),
        };
        let mut info = htype.default_info();
        if !opts.class_names.is_empty() {
            info.insert("class_names".into(), json!(opts.class_names));
        }
        for (k, v) in opts.info {
            info.insert(k, v);
        }
        let state = TensorState::new(key.clone(), tmeta, info)?;
        self.meta.tensors.push(key.to_string());
        self.meta
            .tensor_names
            .insert(name.to_owned(), key.to_string());
        if hidden {
            self.meta.hidden_tensors.push(key.to_string());
        }
        self.tensors.insert(key.to_string(), state);
        // 3.x lists companions after their tensor as info, shape, id, and names them in
        // `tensor_names` like visible tensors.
        for (ck, cm, _) in companions.into_iter().rev() {
            if let Some(n) = &cm.name {
                self.meta.tensor_names.insert(n.clone(), ck.to_string());
            }
            let st = TensorState::new(ck.clone(), cm, Map::new())?;
            self.meta.tensors.push(ck.to_string());
            self.meta.hidden_tensors.push(ck.to_string());
            self.tensors.insert(ck.to_string(), st);
        }
        self.add_groups_of(name);
        self.meta_dirty = true;
        // Like every other change, the new tensor becomes visible at the next flush
        // (one flush record for a whole schema, not one per tensor).
        Ok(())
    }

    /// Lists the groups a tensor name lies in (`a/b/t` -> `a`, `a/b`) in the dataset meta.
    fn add_groups_of(&mut self, name: &str) {
        if let Some((group, _)) = name.rsplit_once('/') {
            let mut g = String::new();
            for part in group.split('/') {
                if !g.is_empty() {
                    g.push('/');
                }
                g.push_str(part);
                if !self.meta.groups.contains(&g) {
                    self.meta.groups.push(g.clone());
                }
            }
        }
    }

    /// Gives the companions among `keys` that are named after tensor `old` (`_old_id`,
    /// `_old_shape`, `_old_info`) the names of tensor `new`.
    fn rename_companions(&mut self, keys: &[String], old: &TensorName, new: &TensorName) {
        for ck in keys {
            let Some(c) = self.tensors.get_mut(ck) else {
                continue;
            };
            let Some(n) = c.meta.name.clone() else {
                continue;
            };
            for suffix in ["id", "shape", "info"] {
                if n == old.companion(suffix).as_str() {
                    let nn = new.companion(suffix).to_string();
                    self.meta.tensor_names.remove(&n);
                    self.meta.tensor_names.insert(nn.clone(), ck.clone());
                    c.meta.name = Some(nn);
                    c.dirty = true;
                }
            }
        }
    }

    /// Renames a visible tensor. Keys (folders) stay; only names change, as in 3.x.
    pub async fn rename_tensor(&mut self, old: &str, new: &str) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let _: TensorName = new.parse()?;
        if self.meta.tensor_names.contains_key(new) {
            return Err(Error::invalid(format!("tensor {new:?} already exists")));
        }
        if old.rsplit_once('/').map(|x| x.0) != new.rsplit_once('/').map(|x| x.0) {
            return Err(Error::invalid(
                "a rename cannot move a tensor to another group",
            ));
        }
        let key = self.key_of(old)?;
        self.meta.tensor_names.remove(old);
        self.meta.tensor_names.insert(new.to_owned(), key.clone());
        let (oldn, newn): (TensorName, TensorName) = (old.parse()?, new.parse()?);
        let companion_keys: Vec<String> = match self.tensors.get_mut(&key) {
            Some(t) => {
                t.meta.name = Some(new.to_owned());
                t.dirty = true;
                t.meta.links.keys().cloned().collect()
            }
            None => Vec::new(),
        };
        self.rename_companions(&companion_keys, &oldn, &newn);
        let d = self.ds_diff_mut();
        // Chains of renames within one commit collapse to one entry.
        let original = d
            .renamed
            .iter()
            .find(|(_, v)| v.as_str() == old)
            .map(|(k, _)| k.clone());
        match original {
            Some(orig) => {
                d.renamed.insert(orig, new.to_owned());
            }
            None => {
                d.renamed.insert(old.to_owned(), new.to_owned());
            }
        }
        self.meta_dirty = true;
        self.flush_all().await
    }

    /// Deletes a visible tensor and its companions from the head.
    pub async fn delete_tensor(&mut self, name: &str) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(name)?;
        let mut keys = vec![key.clone()];
        if let Some(t) = self.tensors.get(&key) {
            keys.extend(t.meta.links.keys().cloned());
        }
        self.meta
            .tensor_names
            .retain(|n, k| n != name && !keys.contains(k));
        self.meta.tensors.retain(|k| !keys.contains(k));
        self.meta.hidden_tensors.retain(|k| !keys.contains(k));
        for k in &keys {
            self.tensors.remove(k);
        }
        self.ds_diff_mut().deleted.push(name.to_owned());
        self.meta_dirty = true;
        // Make the removal visible first, then drop the head's objects of the tensor.
        self.flush_all().await?;
        for k in &keys {
            let tk: TensorName = k.parse()?;
            self.store
                .delete_prefix(&paths::tensor_folder(&self.node, &tk))
                .await?;
        }
        self.cache.clear();
        Ok(())
    }

    // ---------------------------------------------------------------- writes

    /// Appends one sample to one tensor.
    pub async fn append(&mut self, tensor: &str, sample: Sample) -> Result<()> {
        self.extend(tensor, vec![sample]).await
    }

    /// Appends samples to one tensor. Encoding runs in parallel on the CPU pool.
    pub async fn extend(&mut self, tensor: &str, samples: Vec<Sample>) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(tensor)?;
        let facts = self.link_facts(&key, tensor, &samples).await?;
        let samples = self.map_class_labels(&key, samples)?;
        self.infer_dtype(&key, &samples)?;
        let ctx = self.encode_ctx(&key)?;
        let mut prepared = if encode::is_light(&ctx, &samples) {
            samples
                .into_iter()
                .map(|s| encode::encode(&ctx, s))
                .collect::<Result<Vec<_>>>()
        } else {
            crate::runtime::spawn_cpu(move || {
                use rayon::prelude::*;
                samples
                    .into_par_iter()
                    .map(|s| encode::encode(&ctx, s))
                    .collect::<Result<Vec<_>>>()
            })
            .await
        }
        .map_err(|e| with_tensor(e, tensor))?;
        if let Some(f) = facts {
            links::apply_link_facts(&mut prepared, f)?;
        }
        self.append_prepared(&key, prepared).await
    }

    /// Appends columns of samples, all of the same length: every sample is checked and
    /// encoded before anything changes, so a bad one leaves the handle as it was (the
    /// error names its tensor and its index in the column). class_label columns take
    /// label indexes here, not names. Failures of storage while appending may still
    /// leave a prefix of the columns appended.
    pub async fn extend_columns(&mut self, columns: Vec<(String, Vec<Sample>)>) -> Result<()> {
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
        let mut checked = Vec::with_capacity(columns.len());
        for (tensor, samples) in columns {
            let key = self.key_of(&tensor)?;
            let mut ctx = self.encode_ctx(&key)?;
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| Error::not_found("tensor", &key))?;
            if t.htype.base == BaseHtype::ClassLabel
                && let Some(k) = samples
                    .iter()
                    .position(|s| matches!(s, Sample::Text(_) | Sample::List(_)))
            {
                return Err(Error::invalid(format!(
                    "tensor {tensor:?}, row {k}: a class label is its index here, not a name"
                )));
            }
            if ctx.dtype.is_none() && t.meta.dtype.is_none() && !t.htype.is_text_like() {
                // The dtype the first array gives the tensor is the one all rows get.
                ctx.dtype = samples.iter().find_map(|s| match s {
                    Sample::Array(a) => Some(a.dtype),
                    _ => None,
                });
            }
            let facts = self.link_facts(&key, &tensor, &samples).await?;
            let originals = samples.clone();
            let name = tensor.clone();
            let mut prepared = crate::runtime::spawn_cpu(move || {
                use rayon::prelude::*;
                samples
                    .into_par_iter()
                    .enumerate()
                    .map(|(k, s)| encode::encode(&ctx, s).map_err(|e| in_row(&name, k, e)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
            if let Some(f) = facts {
                links::apply_link_facts(&mut prepared, f)?;
            }
            if let Err((k, r, want)) = rank_of(t_state(&self.tensors, &key)?, &prepared) {
                return Err(Error::invalid(format!(
                    "tensor {tensor:?}, row {k}: the sample has {r} dimensions, the tensor's samples {want}"
                )));
            }
            checked.push((key, originals, prepared));
        }
        self.ensure_lease().await?;
        for (key, originals, prepared) in checked {
            self.infer_dtype(&key, &originals)?;
            self.append_prepared(&key, prepared).await?;
        }
        Ok(())
    }

    /// Appends one row: a sample for each named tensor.
    pub async fn append_row(&mut self, row: Vec<(String, Sample)>) -> Result<()> {
        for (t, s) in row {
            self.append(&t, s).await?;
        }
        Ok(())
    }

    fn encode_ctx(&self, key: &str) -> Result<EncodeCtx> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        let empty_ndim = if !t.meta.max_shape.is_empty() {
            t.meta.max_shape.len()
        } else if matches!(
            t.htype.base,
            BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray
        ) {
            3
        } else {
            1
        };
        Ok(EncodeCtx {
            htype: t.htype,
            dtype: t.dtype,
            sample_compression: t.sample_compression.clone(),
            tiling_threshold: t.tiling_threshold(),
            empty_ndim,
        })
    }

    /// class_label tensors take names: map them to indices, adding new names to
    /// `class_names` in `tensor_info.json`.
    fn map_class_labels(&mut self, key: &str, samples: Vec<Sample>) -> Result<Vec<Sample>> {
        let t = self
            .tensors
            .get_mut(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        if t.htype.base != BaseHtype::ClassLabel {
            return Ok(samples);
        }
        let mut names = class_names(&t.info);
        let before = names.len();
        let mut index = |n: &str| -> u32 {
            match names.iter().position(|x| x == n) {
                Some(i) => i as u32,
                None => {
                    names.push(n.to_owned());
                    (names.len() - 1) as u32
                }
            }
        };
        fn map_one(s: Sample, index: &mut dyn FnMut(&str) -> u32) -> Result<Sample> {
            Ok(match s {
                Sample::Text(n) => Sample::Array(NdArray::from_slice(vec![1], &[index(&n)])?),
                Sample::List(l) if l.iter().all(|v| v.is_string()) => {
                    let idx: Vec<u32> = l
                        .iter()
                        .filter_map(|v| v.as_str())
                        .map(&mut *index)
                        .collect();
                    Sample::Array(NdArray::from_slice(vec![idx.len()], &idx)?)
                }
                Sample::Sequence(items) => Sample::Sequence(
                    items
                        .into_iter()
                        .map(|i| map_one(i, index))
                        .collect::<Result<_>>()?,
                ),
                other => other,
            })
        }
        let out = samples
            .into_iter()
            .map(|s| map_one(s, &mut index))
            .collect::<Result<Vec<_>>>()?;
        if names.len() != before {
            t.info.insert("class_names".into(), json!(names));
            t.info_dirty = true;
        }
        Ok(out)
    }

    /// A generic tensor takes its dtype from its first array sample.
    fn infer_dtype(&mut self, key: &str, samples: &[Sample]) -> Result<()> {
        let t = self
            .tensors
            .get_mut(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        // A link tensor records its targets' dtype, as 3.x's verify step does; image
        // targets decode to uint8.
        if t.htype.is_link {
            let image_like = matches!(
                t.htype.base,
                BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray
            );
            let has_target = samples
                .iter()
                .any(|s| matches!(s, Sample::Link { path, .. } if !path.is_empty()));
            if t.meta.dtype.is_none() && image_like && has_target {
                t.meta.dtype = Some(Dtype::U8.name().to_owned());
                t.meta.typestr = Some(Dtype::U8.typestr().to_owned());
                t.dirty = true;
            }
            return Ok(());
        }
        if t.dtype.is_some() || t.meta.dtype.is_some() || t.htype.is_text_like() {
            return Ok(());
        }
        // The dtype name 3.x would record: the array's, or what a blob's header says.
        fn first(s: &[Sample]) -> Option<String> {
            s.iter().find_map(|s| match s {
                Sample::Array(a) => Some(a.dtype.name().to_owned()),
                Sample::Polygons(p) => p.first().map(|a| a.dtype.name().to_owned()),
                Sample::Sequence(items) => first(items),
                Sample::Encoded {
                    bytes, compression, ..
                } => crate::format::compression::blob_dtype(bytes, compression).map(str::to_owned),
                _ => None,
            })
        }
        if let Some(name) = first(samples) {
            // `object` (meshes) has no numeric dtype: it is recorded, samples stay blobs.
            t.dtype = name.parse::<Dtype>().ok();
            t.meta.typestr = Some(match t.dtype {
                Some(d) => d.typestr().to_owned(),
                None => "|O".to_owned(),
            });
            t.meta.dtype = Some(name);
            t.dirty = true;
        }
        Ok(())
    }

    async fn append_prepared(&mut self, key: &str, prepared: Vec<Prepared>) -> Result<()> {
        if let Some(fixed) = self.fixed_companion_rows(key, &prepared)? {
            let store = self.store.clone();
            let node = self.node.clone();
            {
                let t = self
                    .tensors
                    .get_mut(key)
                    .ok_or_else(|| Error::not_found("tensor", key))?;
                append_to_tensor(&store, &self.locator, &mut self.writer, &node, t, prepared)
                    .await?;
            }
            for (ck, rows) in fixed {
                if let Some(c) = self.tensors.get_mut(&ck) {
                    append_fixed(&store, &self.locator, &mut self.writer, &node, c, &rows).await?;
                }
            }
            self.cache.clear();
            return Ok(());
        }
        let comp_rows = self.companion_rows(key, &prepared)?;
        self.append_with_companions(key, prepared, comp_rows).await
    }

    /// The common case of [`Dataset::companion_rows`] without an allocation per row:
    /// plain items (no sequences) whose companions are sample ids and shapes of one
    /// rank; `None` when the general path is needed.
    fn fixed_companion_rows(
        &self,
        key: &str,
        prepared: &[Prepared],
    ) -> Result<Option<Vec<(String, FixedRows)>>> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        let mut items = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Prepared::Item(it) => items.push(it),
                Prepared::Sequence(_) => return Ok(None),
            }
        }
        let n = items.len();
        let mut out = Vec::new();
        for (ck, l) in &t.meta.links {
            match CompanionRole::from_extend(&l.extend) {
                CompanionRole::Id => {
                    let mut data = Vec::with_capacity(8 * n);
                    for _ in 0..n {
                        data.extend_from_slice(&rand::random::<u64>().to_le_bytes());
                    }
                    out.push((
                        ck.clone(),
                        FixedRows {
                            shape: vec![1],
                            data,
                            n,
                        },
                    ));
                }
                CompanionRole::Shape => {
                    let rank = items.first().map_or(0, |it| it.logical_shape.len());
                    if rank == 0 || items.iter().any(|it| it.logical_shape.len() != rank) {
                        return Ok(None);
                    }
                    let rank32 =
                        u32::try_from(rank).map_err(|_| Error::invalid("too many dimensions"))?;
                    let mut data = Vec::with_capacity(8 * rank * n);
                    for it in &items {
                        for d in &it.logical_shape {
                            data.extend_from_slice(&(*d as i64).to_le_bytes());
                        }
                    }
                    out.push((
                        ck.clone(),
                        FixedRows {
                            shape: vec![rank32],
                            data,
                            n,
                        },
                    ));
                }
                CompanionRole::Info | CompanionRole::Other => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// The rows each companion of tensor `key` gets for the prepared samples: a fresh
    /// sample id, the shape, the info record.
    fn companion_rows(
        &self,
        key: &str,
        prepared: &[Prepared],
    ) -> Result<Vec<(String, Vec<Prepared>)>> {
        // Companion rows, produced from the prepared samples before they are consumed.
        let companions: Vec<(String, CompanionRole, bool)> = {
            let t = self
                .tensors
                .get(key)
                .ok_or_else(|| Error::not_found("tensor", key))?;
            t.meta
                .links
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        CompanionRole::from_extend(&l.extend),
                        l.flatten_sequence,
                    )
                })
                .collect()
        };
        let mut comp_rows: Vec<(String, Vec<Prepared>)> = Vec::new();
        for (ck, role, flatten) in &companions {
            let mut rows = Vec::new();
            for p in prepared {
                match (p, role) {
                    (_, CompanionRole::Id) => rows.push(Prepared::Item(id_item()?)),
                    (Prepared::Item(it), CompanionRole::Shape) => {
                        rows.push(Prepared::Item(shape_item(&it.logical_shape)?))
                    }
                    (Prepared::Item(it), CompanionRole::Info) => {
                        rows.push(Prepared::Item(info_item(it.info.as_ref())?))
                    }
                    (Prepared::Sequence(items), CompanionRole::Shape) if *flatten => {
                        for it in items {
                            rows.push(Prepared::Item(shape_item(&it.logical_shape)?));
                        }
                    }
                    (Prepared::Sequence(items), CompanionRole::Info) if *flatten => {
                        for it in items {
                            rows.push(Prepared::Item(info_item(it.info.as_ref())?));
                        }
                    }
                    (Prepared::Sequence(items), CompanionRole::Shape) => {
                        rows.push(Prepared::Item(shape_item(&[items.len() as u64])?));
                    }
                    (Prepared::Sequence(_), CompanionRole::Info) => {
                        rows.push(Prepared::Item(info_item(None)?))
                    }
                    (_, CompanionRole::Other) => {
                        return Err(Error::unsupported(format!(
                            "tensor {key} has a companion {ck} of a kind this version does not write"
                        )));
                    }
                }
            }
            comp_rows.push((ck.clone(), rows));
        }
        Ok(comp_rows)
    }

    /// Appends prepared samples to tensor `key` and the given rows to its companions
    /// (companion key -> rows, as [`Dataset::companion_rows`] makes them).
    async fn append_with_companions(
        &mut self,
        key: &str,
        prepared: Vec<Prepared>,
        comp_rows: Vec<(String, Vec<Prepared>)>,
    ) -> Result<()> {
        let store = self.store.clone();
        let node = self.node.clone();
        {
            let t = self
                .tensors
                .get_mut(key)
                .ok_or_else(|| Error::not_found("tensor", key))?;
            append_to_tensor(&store, &self.locator, &mut self.writer, &node, t, prepared).await?;
        }
        for (ck, rows) in comp_rows {
            if let Some(c) = self.tensors.get_mut(&ck) {
                append_to_tensor(&store, &self.locator, &mut self.writer, &node, c, rows).await?;
            }
        }
        // Chunks keep their names when they grow, so cached copies are now stale.
        self.cache.clear();
        Ok(())
    }

    /// Writes everything buffered: chunks, then encoders and metas, then the dataset
    /// meta and info.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let pending = self.meta_dirty
            || self.info_dirty
            || self.ds_diff.is_some()
            || self
                .tensors
                .values()
                .any(|t| t.dirty || t.info_dirty || !t.dirty_chunks.is_empty());
        if pending {
            // Nothing becomes visible unless this process holds the branch.
            self.ensure_lease().await?;
        }
        // Names first: a flushed link must never name a creds key the file lacks.
        if self.linked_creds_dirty {
            self.save_linked_creds().await?;
        }
        // Chunks written in the background must land before any index points at them.
        // The open chunks are written meanwhile: their ids differ from every chunk in
        // flight (a written chunk that changes gets a fresh id), which is checked, since
        // two writes of one chunk must not overlap.
        let clash = self.tensors.values().any(|t| {
            writer::lock(&t.inflight)
                .map(|m| t.dirty_chunks.iter().any(|id| m.contains_key(id)))
                .unwrap_or(true)
        });
        if clash {
            self.writer.drain().await?;
        }
        let store = self.store.clone();
        let node = self.node.clone();
        let saves = futures::future::try_join_all(self.tensors.values_mut().map(|t| {
            let store = &store;
            let node = &node;
            async move { t.save_chunks(store, node).await }
        }));
        let (drained, saved) = tokio::join!(self.writer.drain(), saves);
        drained?;
        saved?;
        let changed = pending || self.tensors.values().any(|t| t.dirty || t.info_dirty);
        if !changed {
            return Ok(());
        }
        // Data first and durable, then the record that makes it visible.
        self.store.sync().await?;
        let record = record::FlushRecord {
            seq: self.flush_seq.map_or(0, |s| s + 1),
            dataset: self.dataset_files(),
            tensors: self
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.to_files(&node)))
                .collect(),
        };
        record::create(&self.store, &node, &record).await?;
        self.flush_seq = Some(record.seq);
        if self.writer.policy().deferred_compat {
            for t in self.tensors.values_mut() {
                t.mark_saved();
            }
            self.compat_pending = Some(record);
        } else {
            // The 3.x files follow the record; after a crash here the next writer redoes
            // them.
            futures::future::try_join_all(self.tensors.values_mut().map(|t| {
                let store = &store;
                let node = &node;
                async move { t.save_index(store, node).await }
            }))
            .await?;
            record::write_dataset_files(&self.store, &node, &record.dataset).await?;
            record::mark_applied(&self.store, &node, record.seq).await?;
            self.compat_pending = None;
        }
        self.info_dirty = false;
        self.meta_dirty = false;
        for t in self.tensors.values() {
            if node.is_root() {
                self.locator.invalidate(&node, &t.key)?;
            } else {
                self.locator.prime(&node, &t.key, t.chunk_set.clone())?;
            }
        }
        self.cache.clear();
        Ok(())
    }

    /// [`Dataset::flush`], then the 3.x files brought up to date if a deferred flush
    /// left them behind (see [`Dataset::set_deferred_compat_files`]).
    pub async fn flush_all(&mut self) -> Result<()> {
        self.flush().await?;
        if let Some(rec) = self.compat_pending.take()
            && let Err(e) = record::apply(&self.store, &self.node, &rec).await
        {
            self.compat_pending = Some(rec);
            return Err(e);
        }
        Ok(())
    }

    /// The dataset-level files in record form (see `record::write_dataset_files`).
    fn dataset_files(&self) -> tensor::TensorFiles {
        tensor::TensorFiles {
            meta: Some(self.meta.encode()),
            info: Some(meta::encode_info(&self.info)),
            commit_diff: self.ds_diff.as_ref().map(|d| d.encode()),
            ..Default::default()
        }
    }

    /// Replaces sample `index` of a tensor. Writing past the end pads the gap with
    /// empty samples, as 3.x does.
    pub async fn update(&mut self, tensor: &str, index: u64, sample: Sample) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(tensor)?;
        let len = self.tensors.get(&key).map(|t| t.num_samples()).unwrap_or(0);
        if index >= len {
            let gap = (index - len) as usize;
            self.extend(tensor, vec![Sample::Empty; gap]).await?;
            if let Some(t) = self.tensors.get_mut(&key)
                && gap > 0
            {
                t.pad.add(len as u32, index as u32);
                t.dirty = true;
            }
            return self.append(tensor, sample).await;
        }
        let facts = self
            .link_facts(&key, tensor, std::slice::from_ref(&sample))
            .await?;
        let samples = self.map_class_labels(&key, vec![sample])?;
        self.infer_dtype(&key, &samples)?;
        let ctx = self.encode_ctx(&key)?;
        let mut prepared = crate::runtime::spawn_cpu(move || {
            samples
                .into_iter()
                .map(|s| encode::encode(&ctx, s))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| with_tensor(e, tensor))?;
        if let Some(f) = facts {
            links::apply_link_facts(&mut prepared, f)?;
        }
        let Some(Prepared::Item(it)) = prepared.pop() else {
            return Err(Error::unsupported(format!(
                "updating a sample of sequence tensor {tensor:?}"
            )));
        };
        let store = self.store.clone();
        let node = self.node.clone();
        let links: Vec<(String, CompanionRole)> = {
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| Error::not_found("tensor", tensor))?;
            t.meta
                .links
                .iter()
                .map(|(k, l)| (k.clone(), CompanionRole::from_extend(&l.extend)))
                .collect()
        };
        let logical = it.logical_shape.clone();
        let info = it.info.clone();
        {
            let t = self
                .tensors
                .get_mut(&key)
                .ok_or_else(|| Error::not_found("tensor", tensor))?;
            replace_in_tensor(&store, &self.locator, &node, t, index, it)
                .await
                .map_err(|e| with_tensor(e, tensor))?;
            t.pad.unpad(index as u32);
        }
        for (ck, role) in links {
            let row = match role {
                CompanionRole::Shape => shape_item(&logical)?,
                CompanionRole::Info => info_item(info.as_ref())?,
                _ => continue,
            };
            if let Some(c) = self.tensors.get_mut(&ck) {
                replace_in_tensor(&store, &self.locator, &node, c, index, row).await?;
            }
        }
        self.cache.clear();
        Ok(())
    }

    /// Removes row `index` (default: the last) from every visible tensor, as 3.x's
    /// `ds.pop`.
    pub async fn pop(&mut self, index: Option<u64>) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let len = self.len();
        let index = match index {
            Some(i) if i < len => i,
            Some(i) => {
                return Err(Error::invalid(format!(
                    "row {i} is out of range (dataset length {len})"
                )));
            }
            None if len > 0 => len - 1,
            None => return Err(Error::invalid("pop from an empty dataset")),
        };
        let store = self.store.clone();
        let node = self.node.clone();
        for name in self.tensor_names() {
            let key = self.key_of(&name)?;
            let links: Vec<(String, CompanionRole)> = match self.tensors.get(&key) {
                Some(t) => t
                    .meta
                    .links
                    .iter()
                    .map(|(k, l)| (k.clone(), CompanionRole::from_extend(&l.extend)))
                    .collect(),
                None => continue,
            };
            // The popped row's sample id goes into the diff (merge needs it).
            let id_key = links
                .iter()
                .find(|(_, r)| *r == CompanionRole::Id)
                .map(|(k, _)| k.clone());
            let sample_id = match &id_key {
                Some(k) => match self.read_key(k, index).await? {
                    Sample::Array(a) if a.dtype == Dtype::U64 && a.data.len() == 8 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&a.data);
                        Some(u64::from_le_bytes(b))
                    }
                    _ => None,
                },
                None => None,
            };
            let t = self
                .tensors
                .get_mut(&key)
                .ok_or_else(|| Error::not_found("tensor", &name))?;
            let item_range = match &t.seq {
                Some(s) => s
                    .items(index)
                    .ok_or_else(|| Error::internal("sequence index out of range"))?,
                None => (index, index + 1),
            };
            for item in (item_range.0..item_range.1).rev() {
                remove_from_tensor(&store, &self.locator, &node, t, item).await?;
            }
            if let Some(s) = &mut t.seq {
                remove_sequence(s, index);
            }
            record_pop(t, index, sample_id);
            for (ck, _) in &links {
                if let Some(c) = self.tensors.get_mut(ck) {
                    let flatten = true;
                    let (a, b) =
                        if flatten && item_range.1 - item_range.0 != 1 && c.num_samples() > index {
                            item_range
                        } else {
                            (index, index + 1)
                        };
                    for item in (a..b).rev() {
                        if item < c.meta.length {
                            remove_from_tensor(&store, &self.locator, &node, c, item).await?;
                        }
                    }
                    record_pop(c, index, None);
                }
            }
        }
        self.cache.clear();
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    async fn read_key(&self, key: &str, index: u64) -> Result<Sample> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        read::read_samples(self, t, index..index + 1, &ReadOptions::default())
            .await
            .and_then(|mut v| {
                v.pop()
                    .ok_or_else(|| Error::internal("read returned no sample"))
            })
    }

    /// Reads sample `index` of a tensor, decoded.
    pub async fn read(&self, tensor: &str, index: u64) -> Result<Sample> {
        let mut v = self.read_range(tensor, index..index + 1).await?;
        v.pop()
            .ok_or_else(|| Error::internal("read returned no sample"))
    }

    /// Reads samples `range` of a tensor, decoded. Needed chunks are fetched in parallel.
    pub async fn read_range(
        &self,
        tensor: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Sample>> {
        self.read_range_with(tensor, range, &ReadOptions::default())
            .await
    }

    pub async fn read_range_with(
        &self,
        tensor: &str,
        range: std::ops::Range<u64>,
        opts: &ReadOptions,
    ) -> Result<Vec<Sample>> {
        let t = self.tensor_state(tensor)?;
        read::read_samples(self, t, range, opts)
            .await
            .map_err(|e| with_tensor(e, tensor))
    }

    /// Rows `rows` of a tensor (any order, repeats allowed), decoded as `opts` says.
    /// Every chunk they touch is fetched once, concurrently.
    pub async fn read_rows_with(
        &self,
        tensor: &str,
        rows: &[u64],
        opts: &ReadOptions,
    ) -> Result<Vec<Sample>> {
        let t = self.tensor_state(tensor)?;
        read::read_rows(self, t, rows, opts)
            .await
            .map_err(|e| with_tensor(e, tensor))
    }

    /// For each of `rows`, a key equal for rows of `tensor` stored in the same chunk
    /// (readers that want chunk locality group by it).
    pub fn chunk_keys(&self, tensor: &str, rows: &[u64]) -> Result<Vec<u64>> {
        let t = self.tensor_state(tensor)?;
        read::chunk_keys(self, t, rows).map_err(|e| with_tensor(e, tensor))
    }

    /// The stored (still compressed) bytes and shape of sample `index` of a
    /// non-sequence tensor; tiled samples are returned decoded and re-laid as raw bytes.
    pub async fn read_stored(&self, tensor: &str, index: u64) -> Result<(Vec<u64>, Bytes)> {
        if self.tensor_state(tensor)?.seq.is_some() {
            return Err(Error::invalid(format!(
                "tensor {tensor:?} is a sequence: use read_stored_items for its items"
            )));
        }
        self.read_stored_items(tensor, index)
            .await?
            .pop()
            .ok_or_else(|| Error::internal("no stored item"))
    }

    /// The stored bytes and shape of each item of row `index` (one item unless the
    /// tensor is a sequence).
    pub async fn read_stored_items(
        &self,
        tensor: &str,
        index: u64,
    ) -> Result<Vec<(Vec<u64>, Bytes)>> {
        let t = self.tensor_state(tensor)?;
        read::read_stored(self, t, index)
            .await
            .map_err(|e| with_tensor(e, tensor))
    }

    /// Reads rows `range` of a numeric tensor as one array of shape `(rows, *sample)`.
    /// Every sample must have the same shape (use [`Dataset::read_range`] otherwise).
    pub async fn read_array(&self, tensor: &str, range: std::ops::Range<u64>) -> Result<NdArray> {
        let samples = self.read_range(tensor, range.clone()).await?;
        let mut shape: Option<Vec<usize>> = None;
        let mut dtype = self.tensor_state(tensor)?.dtype;
        let mut data = Vec::new();
        for (k, s) in samples.iter().enumerate() {
            let Sample::Array(a) = s else {
                return Err(Error::invalid(format!(
                    "tensor {tensor:?} row {} is not a numeric array",
                    range.start + k as u64
                )));
            };
            match &shape {
                None => shape = Some(a.shape.clone()),
                Some(want) if *want != a.shape => {
                    return Err(Error::invalid(format!(
                        "tensor {tensor:?} is ragged: row {} has shape {:?}, row {} has {:?}",
                        range.start,
                        want,
                        range.start + k as u64,
                        a.shape
                    )));
                }
                _ => {}
            }
            dtype = Some(a.dtype);
            data.extend_from_slice(&a.data);
        }
        let mut full = vec![samples.len()];
        full.extend(shape.unwrap_or_default());
        NdArray::new(dtype.unwrap_or(Dtype::U8), full, data)
    }

    /// Rows `range` of a tensor as the chunks that hold them, for columnar readers that
    /// decode stored bytes in bulk: `None` when the tensor's samples are not plain bytes
    /// (sequences, links, sample-compressed or tiled data), which read with
    /// [`Dataset::read_range`].
    pub async fn read_chunk_parts(
        &self,
        tensor: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<read::ChunkParts>> {
        let t = self.tensor_state(tensor)?;
        read::read_chunk_parts(self, t, range, &ReadOptions::default())
            .await
            .map_err(|e| with_tensor(e, tensor))
    }

    /// Shape of sample `index` without decoding its data.
    pub async fn shape(&self, tensor: &str, index: u64) -> Result<Vec<u64>> {
        let t = self.tensor_state(tensor)?;
        // A link stores a path: its sample's shape is the target's, kept in `_shape`.
        let shape_companion = t
            .meta
            .links
            .iter()
            .find(|(_, l)| matches!(CompanionRole::from_extend(&l.extend), CompanionRole::Shape))
            .and_then(|(k, _)| self.tensors.get(k));
        if let (true, None, Some(c)) = (t.htype.is_link, &t.seq, shape_companion) {
            let row = read::read_samples(self, c, index..index + 1, &ReadOptions::default())
                .await?
                .pop();
            return match row {
                Some(Sample::Array(a)) => {
                    Ok(a.to_f64_vec().into_iter().map(|d| d as u64).collect())
                }
                other => Err(Error::corrupt(
                    c.key.as_str(),
                    format!("shape row {index} reads as {other:?}"),
                )),
            };
        }
        read::sample_shape(self, t, index).await
    }
}

/// Dataset meta, info, diff and tensors of one node.
type NodeState = (
    DatasetMeta,
    Map<String, Value>,
    Option<DatasetDiff>,
    BTreeMap<String, TensorState>,
);

fn tensor_keys(meta: &DatasetMeta, label: &str) -> Result<Vec<TensorName>> {
    meta.tensors
        .iter()
        .map(|k| {
            k.parse::<TensorName>()
                .map_err(|_| Error::corrupt(label, format!("bad tensor key {k:?}")))
        })
        .collect()
}

fn with_tensor(e: Error, tensor: &str) -> Error {
    match e {
        Error::InvalidInput { message } => Error::InvalidInput {
            message: format!("tensor {tensor:?}: {message}"),
        },
        Error::Unsupported { message } => Error::Unsupported {
            message: format!("tensor {tensor:?}: {message}"),
        },
        other => other,
    }
}

pub(crate) fn class_names(info: &Map<String, Value>) -> Vec<String> {
    info.get("class_names")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn id_item() -> Result<StoredItem> {
    let id: u64 = rand::random();
    Ok(StoredItem {
        shape: vec![1],
        bytes: Bytes::copy_from_slice(&id.to_le_bytes()),
        tiles: None,
        info: None,
        logical_shape: vec![1],
        creds: 0,
    })
}

fn shape_item(shape: &[u64]) -> Result<StoredItem> {
    let mut bytes = Vec::with_capacity(shape.len() * 8);
    for d in shape {
        bytes.extend_from_slice(&(*d as i64).to_le_bytes());
    }
    let n = u32::try_from(shape.len()).map_err(|_| Error::invalid("too many dimensions"))?;
    Ok(StoredItem {
        shape: vec![n],
        bytes: bytes.into(),
        tiles: None,
        info: None,
        logical_shape: vec![shape.len() as u64],
        creds: 0,
    })
}

fn info_item(info: Option<&Value>) -> Result<StoredItem> {
    let v = info.cloned().unwrap_or_else(|| json!({}));
    Ok(StoredItem {
        shape: vec![1],
        bytes: crate::format::json::to_compact(&v).into(),
        tiles: None,
        info: None,
        logical_shape: vec![1],
        creds: 0,
    })
}

/// Makes sure the chunk in chunk-id row `row` is held as a builder, loading it (and
/// decompressing it) if needed. A chunk owned by an ancestor commit is copied into the
/// head under the same name (copy-on-write) once it is written back.
async fn ensure_builder(
    store: &Store,
    locator: &ChunkLocator,
    t: &mut TensorState,
    row: usize,
) -> Result<u64> {
    let id = t
        .chunk_ids
        .rows
        .get(row)
        .map(|r| r.0)
        .ok_or_else(|| Error::internal("chunk row out of range"))?;
    if t.builders.contains_key(&id) {
        return Ok(id);
    }
    let pending = writer::lock(&t.inflight)?.get(&id).cloned();
    if let Some(b) = pending {
        t.builders.insert(id, (*b).clone());
        return Ok(id);
    }
    let k = locator.locate(store, &t.key, ChunkId(id)).await?;
    let bytes = store.get(&k).await?;
    let chunk = Chunk::decode(bytes).map_err(|c| c.at(format!("{}/{k}", store.url())))?;
    let data = read::decompress_data(&chunk, t.chunk_compression.as_ref(), t.max_chunk_size())
        .map_err(|c| c.at(format!("{}/{k}", store.url())))?;
    t.builders.insert(
        id,
        ChunkBuilder::from_parts(chunk.shapes, chunk.byte_positions, data),
    );
    Ok(id)
}

/// Finds the chunk holding item `index` and holds it for writing: its row in the chunk
/// index, the item's position in the chunk, and the chunk id.
async fn hold_sample_chunk(
    store: &Store,
    locator: &ChunkLocator,
    t: &mut TensorState,
    index: u64,
) -> Result<(usize, usize, u64)> {
    let (row, local) = t.chunk_ids.locate(index).ok_or_else(|| {
        Error::invalid(format!(
            "sample {index} is out of range for tensor {}",
            t.key
        ))
    })?;
    let id = ensure_builder(store, locator, t, row).await?;
    Ok((row, local, id))
}

fn is_tile_chunk(t: &TensorState, row: usize) -> bool {
    let Some(&(_, last)) = t.chunk_ids.rows.get(row) else {
        return false;
    };
    if !t.tiles.entries.contains_key(&last) {
        return false;
    }
    // A row holds tiles when a neighbour shares its last index or the sample is tiled.
    true
}

/// A sample's input error, naming its tensor and row (the caller's faults keep their
/// kind; others pass as they are).
fn in_row(tensor: &str, row: usize, e: Error) -> Error {
    match e {
        Error::InvalidInput { message } => Error::InvalidInput {
            message: format!("tensor {tensor:?}, row {row}: {message}"),
        },
        Error::Unsupported { message } => Error::Unsupported {
            message: format!("tensor {tensor:?}, row {row}: {message}"),
        },
        other => other,
    }
}

fn update_shape_bounds(meta: &mut TensorMeta, shape: &[u64]) {
    if meta.length == 0 || meta.max_shape.is_empty() && meta.min_shape.is_empty() {
        meta.min_shape = shape.to_vec();
        meta.max_shape = shape.to_vec();
        return;
    }
    if meta.min_shape.len() != shape.len() {
        // Samples of differing rank: 3.x keeps the bounds of the first rank it saw.
        return;
    }
    for (i, d) in shape.iter().enumerate() {
        meta.min_shape[i] = meta.min_shape[i].min(*d);
        meta.max_shape[i] = meta.max_shape[i].max(*d);
    }
}

/// Every sample of a tensor has the same number of dimensions (3.x refuses others).
/// Checked before anything is appended, so a bad batch changes nothing.
fn check_ranks(t: &TensorState, prepared: &[Prepared]) -> Result<Option<usize>> {
    match rank_of(t, prepared) {
        Ok(rank) => Ok(rank),
        Err((_, r, want)) => Err(Error::invalid(format!(
            "sample has {r} dimensions but tensor {} holds samples of {want}",
            t.meta.name.as_deref().unwrap_or(t.key.as_str())
        ))),
    }
}

/// The rank of the tensor after `prepared`, or the first sample of another rank: its
/// index in `prepared`, its rank, and the rank wanted.
fn rank_of(
    t: &TensorState,
    prepared: &[Prepared],
) -> std::result::Result<Option<usize>, (usize, usize, usize)> {
    let mut rank = (!t.meta.max_shape.is_empty()).then_some(t.meta.max_shape.len());
    for (k, p) in prepared.iter().enumerate() {
        let items: &[StoredItem] = match p {
            Prepared::Item(it) => std::slice::from_ref(it),
            Prepared::Sequence(items) => items,
        };
        for it in items {
            let r = if t.htype.is_link {
                it.logical_shape.len()
            } else {
                it.shape.len()
            };
            if (t.htype.is_link && r == 0) || is_empty_item(it) {
                continue;
            }
            match rank {
                Some(want) if want != r => return Err((k, r, want)),
                None => rank = Some(r),
                _ => {}
            }
        }
    }
    Ok(rank)
}

fn t_state<'a>(tensors: &'a BTreeMap<String, TensorState>, key: &str) -> Result<&'a TensorState> {
    tensors
        .get(key)
        .ok_or_else(|| Error::not_found("tensor", key))
}

/// An empty sample: no bytes and an all-zero shape. It takes the tensor's rank.
fn is_empty_item(it: &StoredItem) -> bool {
    it.tiles.is_none() && it.bytes.is_empty() && it.shape.iter().all(|d| *d == 0)
}

async fn append_to_tensor(
    store: &Store,
    locator: &ChunkLocator,
    chunk_writer: &mut writer::ChunkWriter,
    node: &CommitId,
    t: &mut TensorState,
    prepared: Vec<Prepared>,
) -> Result<()> {
    if prepared.is_empty() {
        return Ok(());
    }
    let half = chunk_writer.fill_of(t.max_chunk_size());
    reopen_last_chunk(store, locator, t, half).await?;
    let rank = check_ranks(t, &prepared)?;
    let start = t.meta.length;
    let mut closed: Vec<u64> = Vec::new();
    for p in prepared {
        let (single, items) = match p {
            Prepared::Item(it) => (Some(it), Vec::new()),
            Prepared::Sequence(items) => {
                let n =
                    u32::try_from(items.len()).map_err(|_| Error::invalid("sequence too long"))?;
                match &mut t.seq {
                    Some(s) => s.push(n),
                    None => {
                        return Err(Error::internal("sequence sample for a non-sequence tensor"));
                    }
                }
                (None, items)
            }
        };
        for mut it in single.into_iter().chain(items) {
            if let Some(r) = rank
                && is_empty_item(&it)
                && it.shape.len() != r
                && !t.htype.is_text_like()
            {
                // A link stores its (empty) path with shape (1,) whatever the rank of
                // its targets; only the logical shape takes the rank.
                if !t.htype.is_link {
                    it.shape = vec![0; r];
                }
                it.logical_shape = vec![0; r];
            }
            let idx = t.meta.length;
            let shape_for_meta: Vec<u64> = if t.htype.is_link {
                it.logical_shape.clone()
            } else {
                it.shape.iter().map(|&d| d as u64).collect()
            };
            if let Some(tiles) = it.tiles {
                if let Some(&(last_id, _)) = t.chunk_ids.rows.last() {
                    closed.push(last_id);
                }
                let n = tiles.tiles.len();
                for (shape, bytes) in tiles.tiles {
                    let id = t.add_chunk(ChunkBuilder::tile(&shape, bytes));
                    t.chunk_ids.rows.push((id, idx));
                    closed.push(id);
                }
                debug_assert!(n > 0);
                t.tiles.entries.insert(
                    idx,
                    TileEntry {
                        sample_shape: tiles.sample_shape,
                        tile_shape: tiles.tile_shape,
                    },
                );
            } else {
                let last = t.chunk_ids.rows.last().copied();
                let row = t.chunk_ids.rows.len().saturating_sub(1);
                let fits = match last {
                    Some((id, _)) if !is_tile_chunk(t, row) => match t.builders.get(&id) {
                        Some(b) => b.num_samples() == 0 || b.data.len() + it.bytes.len() <= half,
                        None => false,
                    },
                    _ => false,
                };
                if fits {
                    if let Some((id, _)) = last {
                        if let Some(b) = t.builders.get_mut(&id) {
                            b.try_push_shared(&it.shape, it.bytes.clone())
                                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
                        }
                        t.dirty_chunks.insert(id);
                        if let Some(r) = t.chunk_ids.rows.last_mut() {
                            r.1 = idx;
                        }
                    }
                } else {
                    if let Some((id, _)) = last {
                        closed.push(id);
                    }
                    // Small samples are copied in: reserve the chunk's target size once,
                    // as growing a multi-megabyte buffer by doubling costs copies and page
                    // faults on the ingest path. Large ones stay shared, unbuffered.
                    let mut b = ChunkBuilder::default();
                    if it.bytes.len() < crate::format::chunk::SHARE_MIN {
                        b.data = writer::buffer(half).into();
                    }
                    b.try_push_shared(&it.shape, it.bytes.clone())
                        .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
                    let id = t.add_chunk(b);
                    t.chunk_ids.rows.push((id, idx));
                }
            }
            if let Some(c) = &mut t.creds {
                c.push(it.creds);
            }
            update_shape_bounds(&mut t.meta, &shape_for_meta);
            t.meta.length += 1;
        }
    }
    let end = t.meta.length;
    t.record_append(start, end);
    t.dirty = true;
    write_closed(store, chunk_writer, node, t, closed).await
}

/// Continues filling the last chunk unless it is a tile. One of an ancestor commit is
/// copied into the head first if it has room (3.x's copy-on-write): otherwise every
/// commit of a few rows would start a chunk of its own, and a long history would leave
/// thousands of tiny chunks for every reader to fetch.
async fn reopen_last_chunk(
    store: &Store,
    locator: &ChunkLocator,
    t: &mut TensorState,
    half: usize,
) -> Result<()> {
    if let Some(&(last_id, _)) = t.chunk_ids.rows.last() {
        let row = t.chunk_ids.rows.len() - 1;
        if !t.builders.contains_key(&last_id) && !is_tile_chunk(t, row) {
            let room = t.in_head.contains(&last_id) || {
                let k = locator.locate(store, &t.key, ChunkId(last_id)).await?;
                store.size(&k).await?.is_some_and(|s| s < half as u64)
            };
            if room {
                ensure_builder(store, locator, t, row).await?;
            }
        }
    }
    Ok(())
}

/// `n` items of one shape whose bytes lie back to back (companion rows: sample ids,
/// shapes).
struct FixedRows {
    shape: Vec<u32>,
    data: Vec<u8>,
    n: usize,
}

/// Appends fixed-size rows without a per-item allocation: as many as fit in the open
/// chunk go in as one run.
async fn append_fixed(
    store: &Store,
    locator: &ChunkLocator,
    chunk_writer: &mut writer::ChunkWriter,
    node: &CommitId,
    t: &mut TensorState,
    rows: &FixedRows,
) -> Result<()> {
    let (shape, data, n) = (&rows.shape[..], &rows.data[..], rows.n);
    if n == 0 {
        return Ok(());
    }
    let item = data.len() / n;
    if item * n != data.len() {
        return Err(Error::internal(format!(
            "tensor {}: fixed-size rows do not fit",
            t.key
        )));
    }
    let bounds: Vec<u64> = shape.iter().map(|&d| u64::from(d)).collect();
    check_appendable(t, &bounds)?;
    let half = chunk_writer.fill_of(t.max_chunk_size());
    reopen_last_chunk(store, locator, t, half).await?;
    let start = t.meta.length;
    let mut closed: Vec<u64> = Vec::new();
    let mut done = 0usize;
    while done < n {
        let left = n - done;
        let (id, k) = match room_in_last(t, item, half) {
            Some((id, room)) => (id, room.min(left)),
            None => (
                new_chunk(t, item, left, half, &mut closed),
                (half / item.max(1)).clamp(1, left),
            ),
        };
        if let Some(b) = t.builders.get_mut(&id) {
            b.try_push_run(shape, &data[done * item..(done + k) * item], k)
                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
        }
        t.meta.length += k as u64;
        t.dirty_chunks.insert(id);
        if let Some(r) = t.chunk_ids.rows.last_mut() {
            r.1 = t.meta.length - 1;
        }
        if let Some(c) = &mut t.creds {
            for _ in 0..k {
                c.push(0);
            }
        }
        done += k;
    }
    update_shape_bounds(&mut t.meta, &bounds);
    let end = t.meta.length;
    t.record_append(start, end);
    t.dirty = true;
    write_closed(store, chunk_writer, node, t, closed).await
}

/// Rows may follow the tensor's last sample (not a tile) and have its rank.
fn check_appendable(t: &TensorState, shape: &[u64]) -> Result<()> {
    if t.tiles
        .entries
        .contains_key(&t.meta.length.saturating_sub(1))
    {
        return Err(Error::internal(format!(
            "tensor {}: rows cannot follow a tiled sample here",
            t.key
        )));
    }
    if !t.meta.max_shape.is_empty() && t.meta.max_shape.len() != shape.len() {
        return Err(Error::invalid(format!(
            "sample has {} dimensions but tensor {} holds samples of {}",
            shape.len(),
            t.key,
            t.meta.max_shape.len()
        )));
    }
    Ok(())
}

/// The open last chunk, if a sample of `item` bytes fits in it, and how many such
/// samples do (at least one: an empty chunk takes any sample).
fn room_in_last(t: &TensorState, item: usize, half: usize) -> Option<(u64, usize)> {
    let (id, _) = *t.chunk_ids.rows.last()?;
    let row = t.chunk_ids.rows.len() - 1;
    if is_tile_chunk(t, row) {
        return None;
    }
    let b = t.builders.get(&id)?;
    let room = half.saturating_sub(b.data.len()) / item.max(1);
    if b.num_samples() == 0 {
        Some((id, room.max(1)))
    } else {
        (room > 0).then_some((id, room))
    }
}

/// Closes the last chunk and starts a new one for `left` more samples of `item` bytes
/// (its buffer reserved once, bounded by the fill); the caller puts the first in.
fn new_chunk(
    t: &mut TensorState,
    item: usize,
    left: usize,
    half: usize,
    closed: &mut Vec<u64>,
) -> u64 {
    if let Some(&(id, _)) = t.chunk_ids.rows.last() {
        closed.push(id);
    }
    let b = ChunkBuilder {
        data: writer::buffer(half.min(item.max(1).saturating_mul(left))).into(),
        ..Default::default()
    };
    let id = t.add_chunk(b);
    t.chunk_ids.rows.push((id, t.meta.length));
    id
}

/// Appends `n` rows given as (shape, stored bytes), copied into chunk buffers without
/// an allocation per row; `bounds` holds every distinct shape among them, for the
/// tensor meta's min and max shape. Checks that can fail run before anything changes.
#[allow(clippy::too_many_arguments)]
async fn append_rows<'a>(
    store: &Store,
    locator: &ChunkLocator,
    chunk_writer: &mut writer::ChunkWriter,
    node: &CommitId,
    t: &mut TensorState,
    rows: impl Iterator<Item = (&'a [u32], &'a [u8])>,
    n: usize,
    bounds: &[Vec<u64>],
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if let Some(b) = bounds.first() {
        check_appendable(t, b)?;
    }
    let half = chunk_writer.fill_of(t.max_chunk_size());
    reopen_last_chunk(store, locator, t, half).await?;
    let start = t.meta.length;
    let mut closed: Vec<u64> = Vec::new();
    for (shape, bytes) in rows.take(n) {
        let left = n - (t.meta.length - start) as usize;
        let id = match room_in_last(t, bytes.len(), half) {
            Some((id, _)) => id,
            None => new_chunk(t, bytes.len(), left, half, &mut closed),
        };
        if let Some(b) = t.builders.get_mut(&id) {
            b.try_push(shape, bytes)
                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
        }
        t.dirty_chunks.insert(id);
        if let Some(r) = t.chunk_ids.rows.last_mut() {
            r.1 = t.meta.length;
        }
        if let Some(c) = &mut t.creds {
            c.push(0);
        }
        t.meta.length += 1;
    }
    for b in bounds {
        update_shape_bounds(&mut t.meta, b);
    }
    let end = t.meta.length;
    t.record_append(start, end);
    t.dirty = true;
    write_closed(store, chunk_writer, node, t, closed).await
}

/// Writes the chunks in `closed` that will not grow any more, to bound memory.
async fn write_closed(
    store: &Store,
    chunk_writer: &mut writer::ChunkWriter,
    node: &CommitId,
    t: &mut TensorState,
    closed: Vec<u64>,
) -> Result<()> {
    let last = t.chunk_ids.rows.last().map(|r| r.0);
    let closing: Vec<u64> = closed
        .into_iter()
        .filter(|id| Some(*id) != last && t.dirty_chunks.contains(id))
        .collect();
    let renamed: Vec<u64> = closing.into_iter().map(|id| t.write_id(id)).collect();
    let to_write: Vec<(u64, ChunkBuilder)> = renamed
        .into_iter()
        .filter_map(|id| t.builders.remove(&id).map(|b| (id, b)))
        .collect();
    if !to_write.is_empty() {
        for (id, _) in &to_write {
            t.dirty_chunks.remove(id);
            t.persisted.insert(*id);
            if !node.is_root() {
                t.chunk_set
                    .insert(ChunkId(*id).name(), crate::version::ChunkLocation::Here);
            }
        }
        for (id, b) in to_write {
            let k = paths::chunk(node, &t.key, ChunkId(id));
            chunk_writer
                .submit(store, k, &t.inflight, id, b, t.chunk_compression.clone())
                .await?;
        }
    }
    Ok(())
}

async fn replace_in_tensor(
    store: &Store,
    locator: &ChunkLocator,
    _node: &CommitId,
    t: &mut TensorState,
    index: u64,
    it: StoredItem,
) -> Result<()> {
    check_ranks(t, std::slice::from_ref(&Prepared::Item(it.clone())))?;
    // A creds encoder shorter than the tensor (an old writer's) is left as it is.
    if let Some(c) = &mut t.creds
        && c.num_samples() > index
    {
        c.set(index, it.creds)
            .map_err(|e| Error::internal(format!("tensor {}: {e}", t.key)))?;
    }
    let shape: Vec<u64> = if t.htype.is_link {
        it.logical_shape.clone()
    } else {
        it.shape.iter().map(|&d| d as u64).collect()
    };
    if t.tiles.entries.contains_key(&index) || it.tiles.is_some() {
        place_alone(store, locator, t, index, it).await?;
    } else {
        let (_, local, id) = hold_sample_chunk(store, locator, t, index).await?;
        if let Some(b) = t.builders.get_mut(&id) {
            b.replace(local, &it.shape, &it.bytes)
                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
        }
        t.dirty_chunks.insert(id);
        t.in_head.insert(id);
    }
    if t.meta.min_shape.len() == shape.len() {
        for (i, d) in shape.iter().enumerate() {
            t.meta.min_shape[i] = t.meta.min_shape[i].min(*d);
            t.meta.max_shape[i] = t.meta.max_shape[i].max(*d);
        }
    }
    t.record_update(index);
    t.dirty = true;
    Ok(())
}

/// Replaces sample `index` when the old or the new sample is tiled: the sample gets
/// chunks of its own (one per tile, or one for a plain sample). A plain old sample's
/// chunk is split around it: earlier samples stay, later ones move to a fresh chunk.
async fn place_alone(
    store: &Store,
    locator: &ChunkLocator,
    t: &mut TensorState,
    index: u64,
    it: StoredItem,
) -> Result<()> {
    let mut tail: Option<(u64, (u64, u64))> = None; // (last index, (chunk id, last index))
    let insert_at = if t.tiles.entries.remove(&index).is_some() {
        let rows: Vec<usize> = (0..t.chunk_ids.rows.len())
            .filter(|&r| t.chunk_ids.rows[r].1 == index)
            .collect();
        let first = *rows
            .first()
            .ok_or_else(|| Error::internal("tiled sample without chunks"))?;
        for r in rows.into_iter().rev() {
            let (id, _) = t.chunk_ids.rows.remove(r);
            t.builders.remove(&id);
            t.dirty_chunks.remove(&id);
        }
        first
    } else {
        let (row, local, id) = hold_sample_chunk(store, locator, t, index).await?;
        let old_last = t.chunk_ids.rows[row].1;
        let b = t
            .builders
            .get_mut(&id)
            .ok_or_else(|| Error::internal("builder vanished"))?;
        let view = Chunk {
            version: String::new(),
            shapes: b.shapes.clone(),
            byte_positions: b.byte_positions.clone(),
            data: b.data.to_bytes(),
        };
        let n = b.num_samples();
        let internal =
            |c: crate::error::Corruption| Error::internal(format!("chunk {}: {c}", ChunkId(id)));
        let mut after = ChunkBuilder::default();
        for k in local + 1..n {
            let r = view.byte_range(k).map_err(internal)?;
            after
                .try_push(&view.shape(k).map_err(internal)?, &view.data[r])
                .map_err(internal)?;
        }
        for k in (local..n).rev() {
            b.remove(k).map_err(internal)?;
        }
        if after.num_samples() > 0 {
            let nid = t.add_chunk(after);
            tail = Some((old_last, (nid, old_last)));
        }
        if local == 0 {
            t.chunk_ids.rows.remove(row);
            t.builders.remove(&id);
            t.dirty_chunks.remove(&id);
            row
        } else {
            t.chunk_ids.rows[row].1 = index - 1;
            t.dirty_chunks.insert(id);
            t.in_head.insert(id);
            row + 1
        }
    };
    let mut new_rows = Vec::new();
    match it.tiles {
        Some(tiles) => {
            for (shape, bytes) in tiles.tiles {
                let id = t.add_chunk(ChunkBuilder::tile(&shape, bytes));
                new_rows.push((id, index));
            }
            t.tiles.entries.insert(
                index,
                TileEntry {
                    sample_shape: tiles.sample_shape,
                    tile_shape: tiles.tile_shape,
                },
            );
        }
        None => {
            let mut b = ChunkBuilder::default();
            b.try_push(&it.shape, &it.bytes)
                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
            let id = t.add_chunk(b);
            new_rows.push((id, index));
        }
    }
    if let Some((_, row)) = tail {
        new_rows.push(row);
    }
    t.chunk_ids.rows.splice(insert_at..insert_at, new_rows);
    Ok(())
}

async fn remove_from_tensor(
    store: &Store,
    locator: &ChunkLocator,
    _node: &CommitId,
    t: &mut TensorState,
    item: u64,
) -> Result<()> {
    if item >= t.meta.length {
        return Err(Error::internal(format!(
            "removing item {item} past the end of {}",
            t.key
        )));
    }
    if t.tiles.entries.remove(&item).is_some() {
        let rows: Vec<usize> = t
            .chunk_ids
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.1 == item)
            .map(|(i, _)| i)
            .collect();
        for r in rows.into_iter().rev() {
            let (id, _) = t.chunk_ids.rows.remove(r);
            t.builders.remove(&id);
            t.dirty_chunks.remove(&id);
        }
    } else {
        let (row, local, id) = hold_sample_chunk(store, locator, t, item).await?;
        let empty = match t.builders.get_mut(&id) {
            Some(b) => {
                b.remove(local)
                    .map_err(|c| c.at(format!("chunk {}", ChunkId(id))))?;
                b.num_samples() == 0
            }
            None => false,
        };
        if empty {
            t.chunk_ids.rows.remove(row);
            t.builders.remove(&id);
            t.dirty_chunks.remove(&id);
        } else {
            t.dirty_chunks.insert(id);
            t.in_head.insert(id);
        }
    }
    for r in t.chunk_ids.rows.iter_mut() {
        if r.1 >= item && r.1 > 0 {
            r.1 -= 1;
        }
    }
    // Row last indexes at `item` that belonged to the previous sample must stay; fix
    // the rows whose first sample was `item` (they were decremented into the previous).
    let shifted: Vec<(u64, TileEntry)> =
        t.tiles.entries.split_off(&(item + 1)).into_iter().collect();
    for (k, v) in shifted {
        t.tiles.entries.insert(k - 1, v);
    }
    if let Some(c) = &mut t.creds {
        let _ = c.remove(item);
    }
    t.meta.length -= 1;
    t.dirty = true;
    Ok(())
}

fn remove_sequence(s: &mut crate::format::encoders::SequenceEncoder, index: u64) {
    let mut lens: Vec<u32> = (0..s.num_sequences())
        .filter_map(|i| s.items(i))
        .map(|(a, b)| (b - a) as u32)
        .collect();
    if (index as usize) < lens.len() {
        lens.remove(index as usize);
    }
    let mut n = crate::format::encoders::SequenceEncoder::default();
    for l in lens {
        n.push(l);
    }
    *s = n;
}

fn record_pop(t: &mut TensorState, index: u64, sample_id: Option<u64>) {
    let d = t.diff_mut();
    let (a, b) = d.added;
    // As 3.9.52 does: a row appended in this commit only shrinks the added range, a row
    // from before is listed in `deleted`; the popped row's sample id is kept either way.
    if (a..b).contains(&index) {
        d.added.1 -= 1;
    } else {
        d.deleted.push(index);
        if index < a {
            d.added = (a - 1, b - 1);
        }
    }
    if let Some(id) = sample_id {
        d.deleted_ids.push(id);
    }
    d.updated.retain(|u| *u != index);
    for u in d.updated.iter_mut() {
        if *u > index {
            *u -= 1;
        }
    }
    t.dirty = true;
}
