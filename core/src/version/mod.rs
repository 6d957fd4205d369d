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
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::vcinfo::VersionControlInfo;
use crate::ids::{ChunkId, CommitId, TensorName};
use crate::store::{Store, paths};

pub use chunk_set::{ChunkLocation, ChunkSet};
pub use history::{CommitRecord, log};
pub use merge::{MergePolicy, RowConflict};
pub use refs::{Ref, RefKind, ResolvedRef, Tags, split_ref, tags};

type SetCache = HashMap<(CommitId, TensorName), std::sync::Arc<ChunkSet>>;
/// Per tensor key: chunk name -> (commit, key) it is stored under, for every chunk the
/// ancestry's `chunk_set`s name (first node wins, as in the walk).
type Resolved = HashMap<TensorName, std::sync::Arc<HashMap<String, (CommitId, TensorName)>>>;

/// How many `chunk_set` files are fetched at once when a tensor's chain is resolved.
const SET_FETCHES: usize = 32;

/// Commits whose depth (distance from the root) is a multiple of this get a
/// checkpoint of where each chunk of their chunk index lives ([`paths::chunk_map`]): a
/// reader walks at most this many `chunk_set`s before one, and a commit pays for a map
/// (the size of its index, not of its history) only this rarely.
pub const CHUNK_MAP_EVERY: usize = 16;

/// Loads the commit tree. A dataset without `version_control_info.json` (older
/// writers) is treated as a root-only tree.
pub async fn load_tree(store: &Store) -> Result<VersionControlInfo> {
    match store.get_opt(paths::VERSION_CONTROL_INFO).await? {
        Some(b) => VersionControlInfo::decode(&b)
            .map_err(|c| c.at(format!("{}/{}", store.url(), paths::VERSION_CONTROL_INFO))),
        None => Ok(VersionControlInfo::new_root()),
    }
}

/// Adds the entries of `set` (read at node `c`) that nearer nodes did not decide.
fn fold(
    map: &mut HashMap<String, (CommitId, TensorName)>,
    c: &CommitId,
    key: &TensorName,
    set: &ChunkSet,
) {
    for (name, loc) in set.iter() {
        if map.contains_key(name) {
            continue;
        }
        let at = match loc {
            ChunkLocation::Here => (c.clone(), key.clone()),
            ChunkLocation::Commit(other) => (other.clone(), key.clone()),
            ChunkLocation::CommitKey(other, k) => (other.clone(), k.clone()),
        };
        map.insert(name.clone(), at);
    }
}

/// Finds where chunks of a tensor live, caching the `chunk_set` files it reads.
#[derive(Debug)]
pub struct ChunkLocator {
    tree: Arc<VersionControlInfo>,
    node: CommitId,
    /// First-parent steps from the node to the root (or to the last node the tree
    /// knows). The chain itself is walked only as far as a lookup needs it.
    depth: usize,
    sets: Mutex<SetCache>,
    resolved: Mutex<Resolved>,
}

impl ChunkLocator {
    pub fn new(tree: &Arc<VersionControlInfo>, node: &CommitId) -> Result<Self> {
        let depth = tree.ancestry_iter(node.as_str()).count() - 1;
        Ok(ChunkLocator {
            tree: tree.clone(),
            node: node.clone(),
            depth,
            sets: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
        })
    }

    /// A locator for `node` of `tree`. A node whose first parent is this locator's node
    /// (the head a commit starts) is one deeper without walking the chain: parents never
    /// change.
    pub fn for_node(&self, tree: &Arc<VersionControlInfo>, node: &CommitId) -> Result<Self> {
        let parent = tree
            .commits
            .get(node.as_str())
            .and_then(|n| n.parent.as_deref());
        if parent != Some(self.node.as_str()) || !tree.commits.contains_key(self.node.as_str()) {
            return ChunkLocator::new(tree, node);
        }
        Ok(ChunkLocator {
            tree: tree.clone(),
            node: node.clone(),
            depth: self.depth + 1,
            sets: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
        })
    }

    pub fn node(&self) -> Option<&CommitId> {
        Some(&self.node)
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

    /// Takes `set` as the `chunk_set` of `key` at `commit` instead of reading its file:
    /// a head's set is what its flush record says, and the 3.x file may lag behind it
    /// (a flush whose refresh of the 3.x files failed midway).
    pub fn prime(&self, commit: &CommitId, key: &TensorName, set: ChunkSet) -> Result<()> {
        self.lock()?
            .insert((commit.clone(), key.clone()), std::sync::Arc::new(set));
        self.resolved
            .lock()
            .map_err(|_| Error::internal("chunk-location cache poisoned"))?
            .remove(key);
        Ok(())
    }

    /// Forgets a cached set (after the writer changed it).
    pub fn invalidate(&self, commit: &CommitId, key: &TensorName) -> Result<()> {
        self.lock()?.remove(&(commit.clone(), key.clone()));
        self.resolved
            .lock()
            .map_err(|_| Error::internal("chunk-location cache poisoned"))?
            .remove(key);
        Ok(())
    }

    /// The checkpoint of tensor `key` at the node: where each chunk of `ids` (the node's
    /// chunk index) is stored, as a `chunk_set` whose entries all name their commit and
    /// key. Chunks the index no longer names (superseded copies, popped rows) are left
    /// out: a reader at the node or a descendant asks only for chunks of its own index,
    /// which this node's index names too or which were written after the node (found in
    /// the sets walked before the checkpoint); keeping them would make every checkpoint
    /// grow with the history.
    pub async fn chunk_map(
        &self,
        store: &Store,
        key: &TensorName,
        ids: impl IntoIterator<Item = ChunkId>,
    ) -> Result<ChunkSet> {
        let map = self.resolve(store, key).await?;
        let mut set = ChunkSet::default();
        for name in ids.into_iter().map(|id| id.name()) {
            if let Some((c, k)) = map.get(&name) {
                set.insert(name, ChunkLocation::CommitKey(c.clone(), k.clone()));
            }
        }
        Ok(set)
    }

    /// Whether the node is deep enough in the tree to carry a chunk-map checkpoint.
    pub fn is_checkpoint(&self) -> bool {
        self.depth > 0 && self.depth.is_multiple_of(CHUNK_MAP_EVERY)
    }

    /// The object key of chunk `id` of tensor `key`, as seen from the node.
    ///
    /// The first lookup for a tensor fetches the `chunk_set` of every node on the chain
    /// at once (a few dozen in flight) and folds them into one map, so reading at the
    /// head of a long chain costs one round of parallel small reads per tensor, not one
    /// sequential read per commit per chunk.
    pub async fn locate(&self, store: &Store, key: &TensorName, id: ChunkId) -> Result<String> {
        Ok(self.locate_in(store, key, id).await?.1)
    }

    /// [`ChunkLocator::locate`], with the commit whose folder holds the chunk.
    pub async fn locate_in(
        &self,
        store: &Store,
        key: &TensorName,
        id: ChunkId,
    ) -> Result<(CommitId, String)> {
        let map = self.resolve(store, key).await?;
        Ok(match map.get(&id.name()) {
            Some((commit, k)) => (commit.clone(), paths::chunk(commit, k, id)),
            None => (CommitId::root(), paths::chunk(&CommitId::root(), key, id)),
        })
    }

    async fn resolve(
        &self,
        store: &Store,
        key: &TensorName,
    ) -> Result<std::sync::Arc<HashMap<String, (CommitId, TensorName)>>> {
        let cached = self
            .resolved
            .lock()
            .map_err(|_| Error::internal("chunk-location cache poisoned"))?
            .get(key)
            .cloned();
        if let Some(m) = cached {
            return Ok(m);
        }
        // The non-root nodes of the chain, node first, parsed as the walk reaches them.
        let mut chain = self
            .tree
            .ancestry_iter(self.node.as_str())
            .map(str::parse::<CommitId>)
            .take_while(|c| c.as_ref().map_or(true, |c| !c.is_root()));
        let depth_of = |i: usize| self.depth - i;
        let mut map: HashMap<String, (CommitId, TensorName)> = HashMap::new();
        let mut start = 0;
        loop {
            // Up to and including the next checkpoint candidate below the node read.
            let mut group: Vec<CommitId> = Vec::new();
            for c in chain.by_ref() {
                group.push(c?);
                let i = start + group.len() - 1;
                if i > 0 && depth_of(i).is_multiple_of(CHUNK_MAP_EVERY) {
                    break;
                }
            }
            if group.is_empty() {
                break;
            }
            let end = start + group.len();
            let group = &group[..];
            let last = group.len() - 1;
            let candidate =
                last + start > 0 && depth_of(last + start).is_multiple_of(CHUNK_MAP_EVERY);
            let checkpoint = if candidate {
                let p = paths::chunk_map(&group[last], key);
                match store.get_opt(&p).await? {
                    Some(b) => Some(
                        ChunkSet::parse(&b).map_err(|c| c.at(format!("{}/{p}", store.url())))?,
                    ),
                    None => None,
                }
            } else {
                None
            };
            let walk = if checkpoint.is_some() {
                &group[..last]
            } else {
                group
            };
            let mut sets = Vec::with_capacity(walk.len());
            for part in walk.chunks(SET_FETCHES) {
                sets.extend(
                    futures::future::try_join_all(
                        part.iter().map(|c| self.chunk_set(store, c, key)),
                    )
                    .await?,
                );
            }
            for (c, set) in walk.iter().zip(&sets) {
                fold(&mut map, c, key, set);
            }
            if let Some(cp) = checkpoint {
                fold(&mut map, &group[last], key, &cp);
                break;
            }
            start = end;
        }
        let map = std::sync::Arc::new(map);
        self.resolved
            .lock()
            .map_err(|_| Error::internal("chunk-location cache poisoned"))?
            .insert(key.clone(), map.clone());
        Ok(map)
    }
}
