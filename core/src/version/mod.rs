//! Version control, as far as reading and writing a branch head needs it: the commit
//! tree (`version_control_info.json`), which node is being read or written, where a
//! chunk lives (the `chunk_set` walk toward the root), and the pure algebra of diffs
//! and merges.
//!
//! Chunk lookup for tensor key `K` at commit `C` (3.x rule): walk `C, parent(C), ...`
//! (first parents only); at each non-root node read `chunk_set` of `K`; the first node
//! whose set names the chunk decides (`n` -> that node, `n:c` -> commit `c`, `n:c:k` ->
//! commit `c` under key `k`); no entry anywhere -> the root commit.

pub mod chunk_set;
pub mod diff;
pub mod history;
pub mod log;
pub mod merge;
pub mod refs;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::vcinfo::VersionControlInfo;
use crate::ids::{ChunkId, CommitId, TensorName};
use crate::store::{Store, paths};

pub use chunk_set::{ChunkLocation, ChunkSet};
pub use history::{CommitRecord, log};
pub use merge::{MergePolicy, RowConflict};
pub use refs::{Ref, RefKind, ResolvedRef, Tags, split_ref, tags};

type SetCache = HashMap<(CommitId, TensorName), std::sync::Arc<ChunkSet>>;

/// Loads the commit tree. A dataset without `version_control_info.json` (older
/// writers) is treated as a root-only tree.
pub async fn load_tree(store: &Store) -> Result<VersionControlInfo> {
    match store.get_opt(paths::VERSION_CONTROL_INFO).await? {
        Some(b) => VersionControlInfo::decode(&b)
            .map_err(|c| c.at(format!("{}/{}", store.url(), paths::VERSION_CONTROL_INFO))),
        None => Ok(VersionControlInfo::new_root()),
    }
}

/// Finds where chunks of a tensor live, caching the `chunk_set` files it reads.
#[derive(Debug)]
pub struct ChunkLocator {
    /// First-parent chain from the node being read to the root, node first.
    ancestry: Vec<CommitId>,
    sets: Mutex<SetCache>,
}

impl ChunkLocator {
    pub fn new(tree: &VersionControlInfo, node: &CommitId) -> Result<Self> {
        let ancestry = tree
            .ancestry(node.as_str())
            .into_iter()
            .map(|s| s.parse::<CommitId>())
            .collect::<Result<Vec<_>>>()?;
        Ok(ChunkLocator {
            ancestry,
            sets: Mutex::new(HashMap::new()),
        })
    }

    pub fn node(&self) -> Option<&CommitId> {
        self.ancestry.first()
    }

    async fn chunk_set(
        &self,
        store: &Store,
        commit: &CommitId,
        key: &TensorName,
    ) -> Result<std::sync::Arc<ChunkSet>> {
        let k = (commit.clone(), key.clone());
        if let Some(s) = self.lock()?.get(&k) {
            return Ok(s.clone());
        }
        let path = paths::chunk_set(commit, key);
        let set = match store.get_opt(&path).await? {
            Some(b) => ChunkSet::parse(&b).map_err(|c| c.at(format!("{}/{path}", store.url())))?,
            None => ChunkSet::default(),
        };
        let set = std::sync::Arc::new(set);
        self.lock()?.insert(k, set.clone());
        Ok(set)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SetCache>> {
        self.sets
            .lock()
            .map_err(|_| Error::internal("chunk-set cache poisoned"))
    }

    /// Forgets a cached set (after the writer changed it).
    pub fn invalidate(&self, commit: &CommitId, key: &TensorName) -> Result<()> {
        self.lock()?.remove(&(commit.clone(), key.clone()));
        Ok(())
    }

    /// The object key of chunk `id` of tensor `key`, as seen from the node.
    pub async fn locate(&self, store: &Store, key: &TensorName, id: ChunkId) -> Result<String> {
        let name = id.name();
        for c in &self.ancestry {
            if c.is_root() {
                break;
            }
            let set = self.chunk_set(store, c, key).await?;
            if let Some(loc) = set.get(&name) {
                let (commit, k) = match loc {
                    ChunkLocation::Here => (c.clone(), key.clone()),
                    ChunkLocation::Commit(other) => (other.clone(), key.clone()),
                    ChunkLocation::CommitKey(other, k) => (other.clone(), k.clone()),
                };
                return Ok(paths::chunk(&commit, &k, id));
            }
        }
        Ok(paths::chunk(&CommitId::root(), key, id))
    }
}
