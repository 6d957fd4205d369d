//! Commits, branches, checkout and the writer lease, on top of the commit-tree log
//! (`version::log`).
//!
//! ```text
//! commit(msg):  flush head H -> write H2's metas (copy of H's) -> log record:
//!               H frozen (message, time), H2 = new head of the branch
//! checkout(b, create): auto-commit a changed head (3.x rule) -> write the new head's
//!               metas -> log record: new branch b at its head
//! ```
//!
//! Each step that makes a state visible is one create-if-absent log record; files
//! written before it (the new head's metas) are invisible until it lands. At most one
//! process writes to a branch head at a time: it holds the branch's lease, a chain of
//! create-if-absent records `_rs/lease/<branch>/<seq>.json` that expire unless renewed.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, Result};
use crate::format::meta;
use crate::format::vcinfo::CommitNode;
use crate::ids::{BranchName, CommitId};
use crate::store::paths;
use crate::version::{ChunkLocator, ChunkSet, log};

/// Default lease time: a writer that dies without releasing blocks others this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    pid: u32,
    /// Unix seconds when this holder first took the lease.
    since: f64,
    /// Unix seconds; 0 once released.
    expires: f64,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The writer-lease state a `Dataset` keeps.
#[derive(Clone, Debug)]
pub struct Lease {
    pub holder: String,
    pub ttl: Duration,
    pub wait: Duration,
    /// The branch, sequence number and expiry of the record we hold, if any.
    held: Option<(String, u64, f64, f64)>,
}

impl Lease {
    pub fn new(ttl: Option<Duration>, wait: Option<Duration>) -> Self {
        Lease {
            holder: format!("{:016x}", rand::random::<u64>()),
            ttl: ttl.unwrap_or(DEFAULT_LEASE_TTL),
            wait: wait.unwrap_or(Duration::ZERO),
            held: None,
        }
    }

    /// Names the holder (see `OpenOptions::lease_holder`); `None` keeps the random one.
    pub fn with_holder(mut self, holder: Option<String>) -> Self {
        if let Some(h) = holder {
            self.holder = h;
        }
        self
    }
}

/// Ends a lease we hold as record `seq` by writing an expired record after it.
async fn release(
    store: &crate::store::Store,
    holder: &str,
    branch: &str,
    seq: u64,
    since: f64,
) -> Result<()> {
    let rec = LeaseRecord {
        holder: holder.to_owned(),
        pid: std::process::id(),
        since,
        expires: 0.0,
    };
    let bytes = serde_json::to_vec(&rec).map_err(Error::internal)?;
    match store
        .put_if_absent(&paths::lease(branch, seq + 1), bytes)
        .await
    {
        // Someone took over after our lease ran out: nothing of ours to release.
        Ok(()) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Dataset {
    /// A handle dropped without `close` still gives its lease back, best effort: the
    /// release runs on the current runtime if there is one. Unflushed changes are lost,
    /// as they would be after a crash; the lease otherwise expires on its own.
    fn drop(&mut self) {
        if let (Some((branch, seq, since, _)), Ok(rt)) = (
            self.lease.held.take(),
            tokio::runtime::Handle::try_current(),
        ) {
            let (store, holder) = (self.store.clone(), self.lease.holder.clone());
            rt.spawn(async move {
                let _ = release(&store, &holder, &branch, seq, since).await;
            });
        }
    }
}

impl Dataset {
    /// Whether the head has changes since its parent commit (3.x: any tensor or dataset
    /// diff). The root commit, while it is the head, always counts as changed.
    pub fn has_changes(&self) -> bool {
        self.node.is_root()
            || self.ds_diff.is_some()
            || self
                .tensors
                .values()
                .any(|t| t.diff.is_some() || t.dirty || !t.dirty_chunks.is_empty())
    }

    async fn latest_lease(&self, branch: &str) -> Result<Option<(u64, LeaseRecord)>> {
        let keys = self.store.list(&paths::lease_prefix(branch)).await?;
        let Some(seq) = keys.iter().filter_map(|(k, _)| paths::record_seq(k)).max() else {
            return Ok(None);
        };
        let key = paths::lease(branch, seq);
        let b = self.store.get(&key).await?;
        let r: LeaseRecord = serde_json::from_slice(&b)
            .map_err(|e| Error::corrupt(format!("{}/{key}", self.store.url()), e))?;
        Ok(Some((seq, r)))
    }

    /// Takes the current branch for writing now (writes take it on their own, lazily).
    /// The head is reloaded if another writer changed it, so state read after this call
    /// is current until the lease is given up.
    pub async fn acquire(&mut self) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await
    }

    /// Takes (or renews) the lease of the current branch. A lease held by another live
    /// writer is waited for up to `lease_wait`, then reported as a retryable conflict.
    ///
    /// Every write calls this first, so a handle checked out at a past commit branches
    /// off here (3.x's `auto_checkout`): a new branch `auto_<sha1>` from that commit.
    pub(crate) async fn ensure_lease(&mut self) -> Result<()> {
        if self.detached {
            self.auto_checkout().await?;
        }
        let branch = self.branch.clone();
        let ttl = self.lease.ttl.as_secs_f64();
        if let Some((b, _, _, expires)) = &self.lease.held
            && *b == branch
            && expires - now() > ttl / 2.0
        {
            return Ok(());
        }
        let started = std::time::Instant::now();
        loop {
            let latest = self.latest_lease(&branch).await?;
            let t = now();
            let renewal = latest
                .as_ref()
                .is_some_and(|(_, r)| r.holder == self.lease.holder);
            let (next, since) = match &latest {
                Some((seq, r)) if r.holder == self.lease.holder => (seq + 1, r.since),
                Some((seq, r)) if r.expires > t => {
                    if started.elapsed() < self.lease.wait {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    return Err(Error::Conflict {
                        path: format!("{}/{}", self.store.url(), paths::lease(&branch, *seq)),
                        message: format!(
                            "branch {branch} is held by writer {} (pid {}) since {:.0} (unix time), \
                             until {:.0} unless renewed",
                            r.holder, r.pid, r.since, r.expires
                        ),
                        retryable: true,
                    });
                }
                Some((seq, _)) => (seq + 1, t),
                None => (0, t),
            };
            let rec = LeaseRecord {
                holder: self.lease.holder.clone(),
                pid: std::process::id(),
                since,
                expires: t + ttl,
            };
            let bytes = serde_json::to_vec(&rec).map_err(Error::internal)?;
            match self
                .store
                .put_if_absent(&paths::lease(&branch, next), bytes)
                .await
            {
                Ok(()) => {
                    self.lease.held = Some((branch, next, since, rec.expires));
                    if !renewal {
                        // Another writer may have changed the head since this handle
                        // loaded it: start from what is on storage now.
                        self.reload_head().await?;
                    }
                    return Ok(());
                }
                Err(Error::Conflict {
                    retryable: true, ..
                }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reloads the state of the current branch's head from storage (the head may even
    /// be a newer node, if another writer committed). Must not be called with unflushed
    /// changes: callers take the lease before they change anything.
    async fn reload_head(&mut self) -> Result<()> {
        let (_, tree, tags) = log::load(&self.store).await?;
        let head: CommitId = tree
            .branches
            .get(&self.branch)
            .ok_or_else(|| Error::not_found("branch", &self.branch))?
            .parse()?;
        let mut fresh = Box::pin(Dataset::open_at(
            self.store.clone(),
            tree.into(),
            head,
            self.branch.clone(),
            true,
            Some(self.cache.shared().clone()),
        ))
        .await?;
        let lease = std::mem::replace(&mut self.lease, Lease::new(None, None));
        // The writing policy outlives the handle swap.
        fresh.writer.set_policy(self.writer.policy());
        fresh.linker = self.linker.take();
        fresh.link_verify = self.link_verify;
        *self = fresh;
        self.lease = lease;
        self.tags = tags;
        Ok(())
    }

    /// Flushes and gives up the lease, so another writer can take the branch at once.
    pub async fn close(mut self) -> Result<()> {
        self.flush_all().await?;
        self.release_lease().await
    }

    async fn release_lease(&mut self) -> Result<()> {
        if let Some((branch, seq, since, _)) = self.lease.held.take() {
            release(&self.store, &self.lease.holder, &branch, seq, since).await?;
        }
        Ok(())
    }

    /// Writes the metas of the in-memory state as the starting files of head `to`
    /// (3.x's `copy_metas`): metas, infos and encoders, an empty `chunk_set`, no diffs.
    async fn write_head_files(&self, to: &CommitId) -> Result<()> {
        let mut writes: Vec<(String, Vec<u8>)> = vec![
            (paths::dataset_meta(to), self.meta.encode()),
            (paths::dataset_info(to), meta::encode_info(&self.info)),
        ];
        for t in self.tensors.values() {
            let k = &t.key;
            writes.push((paths::tensor_meta(to, k), t.meta.encode()));
            if !t.info.is_empty() {
                writes.push((paths::tensor_info(to, k), meta::encode_info(&t.info)));
            }
            writes.push((paths::chunks_index(to, k), t.chunk_ids.encode()));
            writes.push((paths::tiles_index(to, k), t.tiles.encode()));
            if let Some(s) = &t.seq {
                writes.push((paths::sequence_index(to, k), s.encode()));
            }
            if let Some(c) = &t.creds {
                writes.push((paths::creds_index(to, k), c.encode()));
            }
            writes.push((paths::chunk_set(to, k), Vec::new()));
        }
        let store = &self.store;
        futures::future::try_join_all(
            writes
                .into_iter()
                .map(|(k, v)| async move { store.put(&k, v).await }),
        )
        .await?;
        self.store.sync().await
    }

    /// Moves the in-memory state to the fresh head `node`: nothing in it is owned by the
    /// new head yet and nothing has changed. Returns the locator of the node it leaves
    /// (its cached `chunk_set`s stay good).
    fn become_head(&mut self, node: CommitId, branch: String) -> Result<ChunkLocator> {
        for t in self.tensors.values_mut() {
            t.diff = None;
            t.chunk_set = ChunkSet::default();
            t.in_head.clear();
            t.builders.clear();
            t.dirty_chunks.clear();
            t.dirty = false;
            t.info_dirty = false;
            t.pad_stored = false;
        }
        self.ds_diff = None;
        self.flush_seq = None;
        self.meta_dirty = false;
        self.info_dirty = false;
        let locator = self.locator.for_node(&self.tree, &node)?;
        let left = std::mem::replace(&mut self.locator, locator);
        self.node = node;
        self.branch = branch;
        self.writable = true;
        // A new branch from a past commit is itself the branching off: no auto branch.
        self.detached = false;
        self.cache.clear();
        Ok(left)
    }

    /// Commits the head: its changes become commit `H` (the id the head already had),
    /// and a new empty head follows it on the branch. Returns `H`.
    pub async fn commit(&mut self, message: &str) -> Result<String> {
        self.commit_node(message, None).await
    }

    /// [`Dataset::commit`], recording `merge_parent` on the commit (merges do).
    pub(super) async fn commit_node(
        &mut self,
        message: &str,
        merge_parent: Option<String>,
    ) -> Result<String> {
        self.check_writable()?;
        self.ensure_lease().await?;
        self.flush_all().await?;
        let head = self.node.clone();
        let branch = self.branch.clone();
        let next = CommitId::generate();
        self.write_head_files(&next).await?;
        let (h, n, b, m) = (
            head.to_string(),
            next.to_string(),
            branch.clone(),
            message.to_owned(),
        );
        let rec = log::update(&self.store, "commit", move |tree, _| {
            if tree.branches.get(&b) != Some(&h) {
                return Err(Error::Conflict {
                    path: paths::VERSION_CONTROL_INFO.to_owned(),
                    message: format!("branch {b} moved past {h} while committing"),
                    retryable: false,
                });
            }
            let node = tree
                .commits
                .get_mut(&h)
                .map(Arc::make_mut)
                .ok_or_else(|| Error::not_found("commit", &h))?;
            node.commit_message = Some(m.clone());
            node.commit_time = Some(now());
            node.commit_user_name = Some("public".to_owned());
            node.merge_parent = merge_parent.clone();
            node.children.push(n.clone());
            tree.commits
                .insert(n.clone(), CommitNode::head(&b, Some(h.clone())).into());
            tree.branches.insert(b.clone(), n.clone());
            Ok(vec![h.clone(), n.clone()])
        })
        .await?;
        self.tree = rec.tree;
        self.tags = rec.tags;
        let committed = self.become_head(next, branch)?;
        // The commit has landed; a missing checkpoint only makes reads walk further, so
        // failing to write one must not report the commit as failed.
        if let Err(e) = self.write_chunk_maps(&head, &committed).await {
            tracing::warn!(commit = %head, error = %e, "chunk-map checkpoint not written");
        }
        Ok(head.to_string())
    }

    /// Writes the chunk-location checkpoint of every tensor at `commit` (whose locator
    /// is `loc`), if its depth calls for one (`version::CHUNK_MAP_EVERY`). Only after the
    /// commit is frozen: a head's `chunk_set`s still change.
    async fn write_chunk_maps(&self, commit: &CommitId, loc: &ChunkLocator) -> Result<()> {
        if !loc.is_checkpoint() || loc.node() != Some(commit) {
            return Ok(());
        }
        let store = &self.store;
        futures::future::try_join_all(self.tensors.values().map(|t| async move {
            let ids = t.chunk_ids.rows.iter().map(|r| crate::ids::ChunkId(r.0));
            let set = loc.chunk_map(store, &t.key, ids).await?;
            store
                .put(&paths::chunk_map(commit, &t.key), set.encode())
                .await
        }))
        .await?;
        Ok(())
    }

    /// Switches to branch `target`; with `create`, makes it first, from the current
    /// state (3.x rules: a changed head is auto-committed first; an unchanged head
    /// branches from its parent).
    pub async fn checkout(&mut self, target: &str, create: bool) -> Result<()> {
        if !create {
            if !self.writable && !self.detached {
                // A read-only handle moves as a read-only handle (time travel).
                let r: crate::version::Ref = target.parse()?;
                let (_, tree, tags) = log::load(&self.store).await?;
                let at = r.resolve(&tree, &tags)?;
                let mut other = Dataset::open_at(
                    self.store.clone(),
                    tree.into(),
                    at.node,
                    at.branch,
                    false,
                    Some(self.cache.shared().clone()),
                )
                .await?;
                other.tags = tags;
                // The writing policy outlives the handle swap.
                other.writer.set_policy(self.writer.policy());
                other.linker = self.linker.take();
                other.link_verify = self.link_verify;
                *self = other;
                return Ok(());
            }
            self.flush_all().await?;
            let r: crate::version::Ref = target.parse()?;
            let (_, tree, tags) = log::load(&self.store).await?;
            let at = r.resolve(&tree, &tags)?;
            // A branch name, or the id of a branch's head, checks out that head for
            // writing; any other commit or a tag is read there until the first write,
            // which branches off (3.x).
            let head_of = tree
                .branches
                .iter()
                .find(|(_, h)| h.as_str() == at.node.as_str())
                .map(|(b, _)| b.clone());
            let (branch, writable) = match head_of {
                Some(b) => (b, true),
                None => (at.branch.clone(), false),
            };
            let mut other = Dataset::open_at(
                self.store.clone(),
                tree.into(),
                at.node,
                branch,
                writable,
                Some(self.cache.shared().clone()),
            )
            .await?;
            other.tags = tags;
            other.detached = !writable;
            self.release_lease().await?;
            let lease = std::mem::replace(&mut self.lease, Lease::new(None, None));
            // The writing policy outlives the handle swap.
            other.writer.set_policy(self.writer.policy());
            other.linker = self.linker.take();
            other.link_verify = self.link_verify;
            *self = other;
            self.lease = lease;
            return Ok(());
        }
        let name: BranchName = target.parse()?;
        if self.tree.branches.contains_key(name.as_str()) {
            return Err(Error::invalid(format!("branch {name} already exists")));
        }
        let at_head = |ds: &Dataset| {
            ds.tree
                .commits
                .get(ds.node.as_str())
                .is_some_and(|n| n.is_head())
        };
        if at_head(self) && self.has_changes() {
            // The changes this handle saw may be another writer's, committed since it
            // loaded them: decide on the head as it is once this handle holds the
            // branch (taking the lease reloads it), or an empty auto commit lands.
            self.ensure_lease().await?;
        }
        let base: String = if at_head(self) {
            if self.has_changes() {
                self.commit(&format!("auto commit before checkout to {name}"))
                    .await?
            } else {
                self.tree
                    .commits
                    .get(self.node.as_str())
                    .and_then(|n| n.parent.clone())
                    .ok_or_else(|| Error::internal("a head other than the root has no parent"))?
            }
        } else {
            self.node.to_string()
        };
        let next = CommitId::generate();
        self.write_head_files(&next).await?;
        let (n, b, base_c) = (next.to_string(), name.to_string(), base.clone());
        let rec = log::update(&self.store, "branch", move |tree, _| {
            if tree.branches.contains_key(&b) {
                return Err(Error::invalid(format!("branch {b} already exists")));
            }
            let parent = tree
                .commits
                .get_mut(&base_c)
                .map(Arc::make_mut)
                .ok_or_else(|| Error::not_found("commit", &base_c))?;
            parent.children.push(n.clone());
            tree.commits
                .insert(n.clone(), CommitNode::head(&b, Some(base_c.clone())).into());
            tree.branches.insert(b.clone(), n.clone());
            Ok(vec![base_c.clone(), n.clone()])
        })
        .await?;
        self.tree = rec.tree;
        self.tags = rec.tags;
        self.release_lease().await?;
        self.become_head(next, name.to_string())?;
        self.ensure_lease().await
    }

    /// 3.x's `auto_checkout`: a write at a past commit goes to a new branch
    /// `auto_<sha1 of time and randomness>` that starts at that commit.
    async fn auto_checkout(&mut self) -> Result<()> {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        h.update(now().to_le_bytes());
        h.update(rand::random::<u64>().to_le_bytes());
        let name = format!("auto_{}", hex::encode(h.finalize()));
        self.detached = false;
        tracing::info!(branch = %name, from = %self.node, "write at a past commit: new branch");
        Box::pin(self.checkout(&name, true)).await
    }

    /// Whether this handle sits at a past commit (a write would branch off).
    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Names commit `commit` (default: the last commit) as `name`. Tags never move.
    pub async fn tag(&mut self, name: &str, commit: Option<&str>) -> Result<String> {
        let tag: BranchName = name.parse()?;
        let target = match commit {
            Some(c) => c.to_owned(),
            None => self
                .commit_id()
                .ok_or_else(|| Error::invalid("nothing is committed yet to tag"))?,
        };
        let (t, c) = (tag.to_string(), target.clone());
        let rec = log::update(&self.store, "tag", move |tree, tags| {
            let node = tree
                .commits
                .get(&c)
                .ok_or_else(|| Error::not_found("commit", &c))?;
            if node.is_head() {
                return Err(Error::invalid(format!(
                    "{c} is a branch head, not a commit: commit first"
                )));
            }
            if tags.contains_key(&t) {
                return Err(Error::invalid(format!("tag {t} already exists")));
            }
            tags.insert(t.clone(), c.clone());
            Ok(vec![])
        })
        .await?;
        self.tree = rec.tree;
        self.tags = rec.tags;
        Ok(target)
    }

    /// Tag name -> commit id.
    pub fn tags(&self) -> &std::collections::BTreeMap<String, String> {
        &self.tags
    }
}

impl Dataset {
    /// Drops the head's uncommitted changes: the branch gets a fresh head with the state
    /// of its last commit, and the old head's folder is deleted (3.x's `reset`).
    pub async fn reset(&mut self) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let head = self.node.clone();
        let parent: CommitId = self
            .tree
            .commits
            .get(head.as_str())
            .and_then(|n| n.parent.clone())
            .ok_or_else(|| {
                Error::invalid("nothing is committed yet: there is no state to reset to")
            })?
            .parse()?;
        let base = Box::pin(Dataset::open_at(
            self.store.clone(),
            self.tree.clone(),
            parent.clone(),
            self.branch.clone(),
            false,
            Some(self.cache.shared().clone()),
        ))
        .await?;
        let next = CommitId::generate();
        base.write_head_files(&next).await?;
        let (h, n, p, b) = (
            head.to_string(),
            next.to_string(),
            parent.to_string(),
            self.branch.clone(),
        );
        let rec = log::update(&self.store, "reset", move |tree, _| {
            if tree.branches.get(&b) != Some(&h) {
                return Err(Error::Conflict {
                    path: paths::VERSION_CONTROL_INFO.to_owned(),
                    message: format!("branch {b} moved past {h} while resetting"),
                    retryable: false,
                });
            }
            tree.commits.remove(&h);
            if let Some(pn) = tree.commits.get_mut(&p).map(Arc::make_mut) {
                pn.children.retain(|c| *c != h);
                pn.children.push(n.clone());
            }
            tree.commits
                .insert(n.clone(), CommitNode::head(&b, Some(p.clone())).into());
            tree.branches.insert(b.clone(), n.clone());
            Ok(vec![p.clone(), n.clone()])
        })
        .await?;
        // The old head is unreachable now; its objects go (a crash here leaves garbage
        // that gc collects, never a visible change).
        if let Some(folder) = paths::commit_folder(&head) {
            self.store.delete_prefix(&folder).await?;
        }
        let mut fresh = Box::pin(Dataset::open_at(
            self.store.clone(),
            rec.tree,
            next,
            self.branch.clone(),
            true,
            Some(self.cache.shared().clone()),
        ))
        .await?;
        let lease = std::mem::replace(&mut self.lease, Lease::new(None, None));
        // The writing policy outlives the handle swap.
        fresh.writer.set_policy(self.writer.policy());
        fresh.linker = self.linker.take();
        fresh.link_verify = self.link_verify;
        *self = fresh;
        self.lease = lease;
        self.tags = rec.tags;
        Ok(())
    }

    /// Deletes branch `name` and the commits made on it (3.x's `delete_branch`): not
    /// `main`, not the branch this handle is on, and not a branch whose commits other
    /// branches grew from, merged, or that a tag names.
    pub async fn delete_branch(&mut self, name: &str) -> Result<()> {
        if name == "main" {
            return Err(Error::invalid("the main branch cannot be deleted"));
        }
        if name == self.branch {
            return Err(Error::invalid(format!(
                "cannot delete branch {name}: it is checked out here"
            )));
        }
        let b = name.to_owned();
        let mut removed: Vec<String> = Vec::new();
        let rec = log::update(&self.store, "delete_branch", |tree, tags| {
            if !tree.branches.contains_key(&b) {
                return Err(Error::not_found("branch", &b));
            }
            let own: Vec<String> = tree
                .commits
                .iter()
                .filter(|(_, n)| n.branch == b)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &own {
                let node = &tree.commits[id];
                if let Some(c) = node
                    .children
                    .iter()
                    .find(|c| tree.commits.get(*c).is_some_and(|n| n.branch != b))
                {
                    return Err(Error::invalid(format!(
                        "cannot delete branch {b}: branch {} grew from its commit {id}",
                        tree.commits[c].branch
                    )));
                }
                if let Some((m, _)) = tree
                    .commits
                    .iter()
                    .find(|(_, n)| n.branch != b && n.merge_parent.as_ref() == Some(id))
                {
                    return Err(Error::invalid(format!(
                        "cannot delete branch {b}: commit {m} merged its commit {id}"
                    )));
                }
                if let Some((t, _)) = tags.iter().find(|(_, c)| *c == id) {
                    return Err(Error::invalid(format!(
                        "cannot delete branch {b}: tag {t} names its commit {id}"
                    )));
                }
            }
            for id in &own {
                if let Some(node) = tree.commits.remove(id)
                    && let Some(p) = node.parent.as_ref().and_then(|p| tree.commits.get_mut(p))
                {
                    Arc::make_mut(p).children.retain(|c| c != id);
                }
            }
            tree.branches.remove(&b);
            removed = own;
            Ok(vec![])
        })
        .await?;
        self.tree = rec.tree;
        self.tags = rec.tags;
        for id in removed {
            if let Ok(c) = id.parse::<CommitId>()
                && let Some(folder) = paths::commit_folder(&c)
            {
                self.store.delete_prefix(&folder).await?;
            }
        }
        Ok(())
    }
}

impl Dataset {
    /// Commits this head (a staging branch that grew from `target`'s last commit) and
    /// makes that commit the new state of `target`'s branch in ONE tree record: the
    /// commit moves onto `target`'s branch, `target` gets a fresh head after it, its old
    /// (unchanged) head and this staging branch are dropped. Readers of `target` see
    /// either the old state or the whole new commit, never a part of it (the publish
    /// step of `transform`). Refuses, changing nothing, when `target` has uncommitted
    /// changes or moved past the commit this branch grew from; the caller merges then.
    /// Returns the commit id; `target` is left at the new head.
    pub async fn publish_onto(mut self, message: &str, target: &mut Dataset) -> Result<String> {
        self.check_writable()?;
        target.check_writable()?;
        if self.branch == target.branch {
            return Err(Error::invalid(format!(
                "cannot publish branch {} onto itself",
                self.branch
            )));
        }
        self.ensure_lease().await?;
        target.ensure_lease().await?;
        self.flush_all().await?;
        target.flush_all().await?;
        if target.has_changes() {
            return Err(Error::Conflict {
                path: paths::VERSION_CONTROL_INFO.to_owned(),
                message: format!(
                    "branch {} has uncommitted changes: cannot fast-forward it",
                    target.branch
                ),
                retryable: false,
            });
        }
        let head = self.node.to_string();
        let target_head = target.node.to_string();
        let (b, t) = (self.branch.clone(), target.branch.clone());
        let next = CommitId::generate();
        self.write_head_files(&next).await?;
        let (n, m) = (next.to_string(), message.to_owned());
        let rec = log::update(&self.store, "publish", move |tree, _| {
            let moved = |what: &str| Error::Conflict {
                path: paths::VERSION_CONTROL_INFO.to_owned(),
                message: format!("{what} moved while publishing"),
                retryable: false,
            };
            if tree.branches.get(&b) != Some(&head) {
                return Err(moved(&format!("branch {b}")));
            }
            if tree.branches.get(&t) != Some(&target_head) {
                return Err(moved(&format!("branch {t}")));
            }
            let base = tree.commits.get(&head).and_then(|c| c.parent.clone());
            let target_base = tree
                .commits
                .get(&target_head)
                .and_then(|c| c.parent.clone());
            if base.is_none() || base != target_base {
                return Err(Error::Conflict {
                    path: paths::VERSION_CONTROL_INFO.to_owned(),
                    message: format!("branch {b} did not grow from the last commit of {t}"),
                    retryable: false,
                });
            }
            let base = base.unwrap_or_default();
            if let Some(p) = tree.commits.get_mut(&base).map(Arc::make_mut) {
                p.children.retain(|c| *c != target_head);
            }
            tree.commits.remove(&target_head);
            let node = tree
                .commits
                .get_mut(&head)
                .map(Arc::make_mut)
                .ok_or_else(|| Error::not_found("commit", &head))?;
            node.branch = t.clone();
            node.commit_message = Some(m.clone());
            node.commit_time = Some(now());
            node.commit_user_name = Some("public".to_owned());
            node.children.push(n.clone());
            tree.commits
                .insert(n.clone(), CommitNode::head(&t, Some(head.clone())).into());
            tree.branches.insert(t.clone(), n.clone());
            tree.branches.remove(&b);
            Ok(vec![base.clone(), head.clone(), n.clone()])
        })
        .await?;
        let committed = self.node.clone();
        // The staging branch is gone from the tree; its lease record only blocks a
        // branch of the same name, so it is released now.
        self.release_lease().await?;
        // The old head is unreachable; a crash before this delete leaves garbage for
        // gc, never a visible change.
        if let Some(folder) = paths::commit_folder(&target.node) {
            target.store.delete_prefix(&folder).await?;
        }
        let mut fresh = Box::pin(Dataset::open_at(
            target.store.clone(),
            rec.tree,
            next,
            target.branch.clone(),
            true,
            Some(target.cache.shared().clone()),
        ))
        .await?;
        let lease = std::mem::replace(&mut target.lease, Lease::new(None, None));
        fresh.writer.set_policy(target.writer.policy());
        fresh.linker = target.linker.take();
        fresh.link_verify = target.link_verify;
        *target = fresh;
        target.lease = lease;
        target.tags = rec.tags;
        Ok(committed.to_string())
    }
}
