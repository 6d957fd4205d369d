//! The commit-tree log: numbered, immutable records `_rs/log/<seq>.json`. A record
//! holds what one operation changed (commit nodes added, changed or removed, branch
//! heads and tags set or deleted); a record whose seq is a multiple of
//! [`CHECKPOINT_EVERY`] (K; record 0 included) holds the whole tree and tags instead.
//!
//! ```text
//! load:   newest checkpoint C: existence probes of multiples of K, galloping, then
//!         narrowing -> read C, C+1, ... in parallel batches up to the first absent
//!         seq -> the newest full record among them, then the deltas after it in order
//!         (no log: version_control_info.json, a dataset only 3.x wrote)
//! update: the state this process last made, plus any records after it (else load)
//!         -> apply the operation to a copy
//!         -> create record seq+1 with create-if-absent      <- the one visibility point
//!            (the delta against seq; the whole tree when seq+1 is a multiple of K)
//!            lost the race? reload, re-apply, retry (bounded)
//!         -> refresh version_control_info.json and commit_info.json for 3.x
//! ```
//!
//! A writer creates seq+1 only after reading seq, so records are contiguous: the first
//! absent seq ends the log, and an absent seq with a later one present is corruption.
//! A delta applies to exactly the tree of the record before it, since it could only be
//! created while its seq was free. Records are never rewritten, so a crash leaves the
//! old or the new tree. A load costs one checkpoint and fewer than K deltas, and an
//! update in a process that made the previous one reads only the records after it; a
//! commit writes a record the size of its change. K is part of the format: a later
//! version may only raise it to a multiple of itself. Logs written before deltas held
//! the whole tree in every record; they load the same way (a full record replaces the
//! state). The 3.x files are a cache of the newest tree (3.x needs the whole tree in
//! `version_control_info.json`): a writer that finds them behind (a crash between the
//! two steps) rewrites them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Corruption, Error, Result};
use crate::format::vcinfo::{CommitNode, EncodeCache, VersionControlInfo};
use crate::ids::CommitId;
use crate::store::{Store, paths};

/// How often a create-if-absent race is retried before giving up.
pub const MAX_RETRIES: usize = 32;

/// Every record whose seq is a multiple of this holds the whole tree: a load reads at
/// most this many records, and a writer pays for the whole tree this rarely.
pub const CHECKPOINT_EVERY: u64 = 16;

/// Existence probes (or record reads) sent at once while looking for the log's end.
const PROBES: usize = 8;

/// Tag name -> commit id. Tags are ours; 3.x does not know them.
pub type TagMap = BTreeMap<String, String>;

/// One record as stored. Exactly one of `tree` (a full record) and `delta` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeRecord {
    pub seq: u64,
    /// What made this record (`create`, `commit`, `branch`, `merge`, `tag`, ...).
    pub op: String,
    /// Unix seconds.
    pub time: f64,
    /// The whole tree after the operation (checkpoints, and every record of old logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<VersionControlInfo>,
    /// All tags after the operation (full records only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: TagMap,
    /// What the operation changed (every other record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<TreeDelta>,
}

/// What one operation changed in the tree and the tags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeDelta {
    /// Commit nodes added or changed, whole.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commits: BTreeMap<String, Arc<CommitNode>>,
    /// Commit nodes removed (reset, branch deletion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Branch -> head, for branches created or moved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branches: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_branches: Vec<String>,
    /// Tags created or changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: TagMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_tags: Vec<String>,
    /// The tree's other top-level keys, whole, when any of them changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Map<String, Value>>,
}

/// Keys of `new` that are absent from `old` or differ there, and keys of `old` absent
/// from `new`: one pass over both maps in key order.
fn map_diff<V: Clone>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    same: impl Fn(&V, &V) -> bool,
) -> (BTreeMap<String, V>, Vec<String>) {
    let (mut set, mut gone) = (BTreeMap::new(), Vec::new());
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                gone.push((*k).clone());
                a.next();
            }
            (None, Some((k, v))) => {
                set.insert((*k).clone(), (*v).clone());
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    gone.push((*ka).clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    set.insert((*kb).clone(), (*vb).clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if !same(va, vb) {
                        set.insert((*kb).clone(), (*vb).clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    (set, gone)
}

/// Removes `keys` from `map`; each must be there.
fn remove_all<V>(
    map: &mut BTreeMap<String, V>,
    keys: &[String],
    what: &str,
) -> Result<(), Corruption> {
    for k in keys {
        if map.remove(k).is_none() {
            return Err(Corruption::new(format!("removes unknown {what} {k}")));
        }
    }
    Ok(())
}

impl TreeDelta {
    /// What turns `(tree, tags)` into `(new_tree, new_tags)`.
    pub fn between(
        tree: &VersionControlInfo,
        tags: &TagMap,
        new_tree: &VersionControlInfo,
        new_tags: &TagMap,
    ) -> TreeDelta {
        // Copies of a tree share their nodes: a node still shared did not change.
        let (commits, removed) = map_diff(&tree.commits, &new_tree.commits, |a, b| {
            Arc::ptr_eq(a, b) || a == b
        });
        let (branches, deleted_branches) = map_diff(&tree.branches, &new_tree.branches, String::eq);
        let (tags, deleted_tags) = map_diff(tags, new_tags, String::eq);
        TreeDelta {
            commits,
            removed,
            branches,
            deleted_branches,
            tags,
            deleted_tags,
            extra: (tree.extra != new_tree.extra).then(|| new_tree.extra.clone()),
        }
    }

    /// Whether `tree`, this delta's result, is consistent where the delta touched it:
    /// the parents of changed nodes and the heads of set branches exist. A removal may
    /// orphan anything, so then the whole tree is checked.
    pub fn check(&self, tree: &VersionControlInfo) -> Result<(), Corruption> {
        if !self.removed.is_empty() {
            return tree.check();
        }
        for (id, node) in &self.commits {
            if let Some(p) = &node.parent
                && !tree.commits.contains_key(p)
            {
                return Err(Corruption::new(format!(
                    "commit {id} has unknown parent {p}"
                )));
            }
        }
        for (b, id) in &self.branches {
            if !tree.commits.contains_key(id) {
                return Err(Corruption::new(format!(
                    "branch {b} points at unknown commit {id}"
                )));
            }
        }
        Ok(())
    }

    /// Applies the change to the state it was taken against. Removing something absent
    /// means the delta does not belong to this state: corruption.
    pub fn apply(
        &self,
        tree: &mut VersionControlInfo,
        tags: &mut TagMap,
    ) -> Result<(), Corruption> {
        remove_all(&mut tree.commits, &self.removed, "commit")?;
        tree.commits
            .extend(self.commits.iter().map(|(k, v)| (k.clone(), v.clone())));
        remove_all(&mut tree.branches, &self.deleted_branches, "branch")?;
        tree.branches
            .extend(self.branches.iter().map(|(k, v)| (k.clone(), v.clone())));
        remove_all(tags, &self.deleted_tags, "tag")?;
        tags.extend(self.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(extra) = &self.extra {
            tree.extra = extra.clone();
        }
        Ok(())
    }
}

/// The tree and tags after record `seq`.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeState {
    pub seq: u64,
    /// Shared: the process remembers the newest state for its next update.
    pub tree: Arc<VersionControlInfo>,
    pub tags: TagMap,
}

fn label(store: &Store, seq: u64) -> String {
    format!("{}/{}", store.url(), paths::tree_log(seq))
}

/// Parses record `seq` and checks that it is one well-formed record of that number.
fn parse(store: &Store, seq: u64, bytes: &[u8]) -> Result<TreeRecord> {
    let r: TreeRecord =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(label(store, seq), e))?;
    let bad = |why: String| Err(Error::corrupt(label(store, seq), why));
    if r.seq != seq {
        return bad(format!("record says seq {}", r.seq));
    }
    match (&r.tree, &r.delta) {
        (Some(_), Some(_)) => bad("record holds both a tree and a delta".to_owned()),
        (None, None) => bad("record holds neither a tree nor a delta".to_owned()),
        (None, Some(_)) if seq.is_multiple_of(CHECKPOINT_EVERY) => bad(format!(
            "checkpoint record (a multiple of {CHECKPOINT_EVERY}) holds no tree"
        )),
        (None, Some(_)) if !r.tags.is_empty() => {
            bad("delta record carries a full tag list".to_owned())
        }
        _ => Ok(r),
    }
}

/// Probes whether each record of `seqs` exists, all at once.
async fn exist(store: &Store, seqs: &[u64]) -> Result<Vec<bool>> {
    futures::future::try_join_all(
        seqs.iter()
            .map(|s| async move { store.exists(&paths::tree_log(*s)).await }),
    )
    .await
}

/// The newest checkpoint record on storage, `None` when the dataset has no log.
///
/// Galloping over checkpoint numbers (1, 2, 4, ... past the last one known to exist)
/// finds one that is absent, then evenly spaced probes narrow the gap; each round sends
/// [`PROBES`] existence checks at once. Records only ever appear, in order, so the
/// answer was the newest checkpoint at some moment during the search.
async fn newest_checkpoint(store: &Store) -> Result<Option<u64>> {
    if !store.exists(&paths::tree_log(0)).await? {
        let any = store.list(paths::TREE_LOG_PREFIX).await?;
        if let Some(s) = any.iter().filter_map(|(k, _)| paths::record_seq(k)).min() {
            return Err(Error::corrupt(
                label(store, 0),
                format!("record 0 is missing while record {s} exists"),
            ));
        }
        return Ok(None);
    }
    let k = CHECKPOINT_EVERY;
    // `lo` is a checkpoint number known to exist, `hi` one known to be absent.
    let mut lo = 0u64;
    let mut hi = loop {
        let points: Vec<u64> = (0..PROBES as u32).map(|i| lo + (1u64 << i)).collect();
        let found = exist(store, &points.iter().map(|p| p * k).collect::<Vec<_>>()).await?;
        match found.iter().position(|f| !f) {
            Some(j) => {
                if j > 0 {
                    lo = points[j - 1];
                }
                break points[j];
            }
            None => lo = points[PROBES - 1],
        }
    };
    while hi - lo > 1 {
        let span = hi - lo;
        let n = (span - 1).min(PROBES as u64);
        let points: Vec<u64> = (1..=n).map(|i| lo + i * span / (n + 1)).collect();
        let found = exist(store, &points.iter().map(|p| p * k).collect::<Vec<_>>()).await?;
        match found.iter().position(|f| !f) {
            Some(j) => {
                if j > 0 {
                    lo = points[j - 1];
                }
                hi = points[j];
            }
            None => lo = points[points.len() - 1],
        }
    }
    Ok(Some(lo * k))
}

/// Reads records `from`, `from + 1`, ... up to the first absent one, [`PROBES`] at a
/// time. `from` must exist. An absent record with a later one present is corruption,
/// unless a second look finds it (it landed while the batch was in flight).
async fn read_from(store: &Store, from: u64) -> Result<Vec<Bytes>> {
    let mut out: Vec<Bytes> = Vec::new();
    let mut seq = from;
    loop {
        let batch: Vec<u64> = (seq..seq + PROBES as u64).collect();
        let got = futures::future::try_join_all(
            batch
                .iter()
                .map(|s| async move { store.get_opt(&paths::tree_log(*s)).await }),
        )
        .await?;
        let Some(gap) = got.iter().position(Option::is_none) else {
            out.extend(got.into_iter().flatten());
            seq += PROBES as u64;
            continue;
        };
        let later = got[gap + 1..].iter().position(Option::is_some);
        out.extend(got.into_iter().take(gap).flatten());
        let missing = seq + gap as u64;
        if let Some(j) = later {
            match store.get_opt(&paths::tree_log(missing)).await? {
                Some(b) => {
                    out.push(b);
                    seq = missing + 1;
                    continue;
                }
                None => {
                    return Err(Error::corrupt(
                        label(store, missing),
                        format!(
                            "record {missing} is missing while record {} exists",
                            missing + 1 + j as u64
                        ),
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err(Error::corrupt(
                label(store, from),
                "the record vanished while the log was read",
            ));
        }
        return Ok(out);
    }
}

/// Folds records `from`, `from + 1`, ... (`raw`, as read) onto `base`, the state
/// before `from`: newest first down to the newest full record, then the deltas after it
/// oldest first. Without a base, the record at `from` must be a full one.
fn fold_records(
    store: &Store,
    from: u64,
    raw: &[Bytes],
    base: Option<(VersionControlInfo, TagMap)>,
) -> Result<TreeState> {
    let mut deltas: Vec<(u64, TreeDelta)> = Vec::new();
    let mut start = base;
    for (i, b) in raw.iter().enumerate().rev() {
        let seq = from + i as u64;
        let r = parse(store, seq, b)?;
        match (r.tree, r.delta) {
            (Some(tree), _) => {
                start = Some((tree, r.tags));
                break;
            }
            (None, Some(d)) => deltas.push((seq, d)),
            (None, None) => {
                return Err(Error::corrupt(label(store, seq), "record holds no tree"));
            }
        }
    }
    let Some((mut tree, mut tags)) = start else {
        return Err(Error::corrupt(
            label(store, from),
            "checkpoint record holds no tree",
        ));
    };
    for (seq, d) in deltas.iter().rev() {
        d.apply(&mut tree, &mut tags)
            .map_err(|c| c.at(label(store, *seq)))?;
    }
    Ok(TreeState {
        seq: from + raw.len() as u64 - 1,
        tree: Arc::new(tree),
        tags,
    })
}

/// The tree after the newest record, `None` for a dataset without a log.
pub async fn load_state(store: &Store) -> Result<Option<TreeState>> {
    Ok(load_newest(store).await?.map(|(s, _)| s))
}

/// [`load_state`], with the bytes of the newest record.
async fn load_newest(store: &Store) -> Result<Option<(TreeState, Bytes)>> {
    let Some(from) = newest_checkpoint(store).await? else {
        return Ok(None);
    };
    let raw = read_from(store, from).await?;
    let state = fold_records(store, from, &raw, None)?;
    state
        .tree
        .check()
        .map_err(|c| c.at(label(store, state.seq)))?;
    let newest = raw.last().cloned().unwrap_or_default();
    Ok(Some((state, newest)))
}

/// The newest state a writer in this process made or loaded, per dataset URL, with the
/// bytes of its record, so that its next update reads only the records after it.
struct Known {
    state: TreeState,
    record: Bytes,
    /// The encoded nodes of the 3.x file this process last wrote for the dataset.
    encoded: EncodeCache,
}

/// Datasets a process remembers a state for; the memory is emptied when it fills.
const KNOWN_MAX: usize = 16;

fn known() -> &'static std::sync::Mutex<HashMap<String, Known>> {
    static KNOWN: OnceLock<std::sync::Mutex<HashMap<String, Known>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn remember(store: &Store, known_state: Known) {
    if let Ok(mut m) = known().lock() {
        if m.len() >= KNOWN_MAX && !m.contains_key(store.url()) {
            m.clear();
        }
        m.insert(store.url().to_owned(), known_state);
    }
}

/// The newest state for a writer. Starts from the remembered state when its record is
/// still on storage byte for byte (records embed fresh commit ids and times, so another
/// dataset at the same URL does not match) and applies only the records after it;
/// otherwise loads from the newest checkpoint.
async fn load_for_update(store: &Store) -> Result<Option<Known>> {
    let k = known().lock().ok().and_then(|mut m| m.remove(store.url()));
    if let Some(k) = k
        && let Ok(raw) = read_from(store, k.state.seq).await
        && raw.first() == Some(&k.record)
    {
        let record = raw.last().cloned().unwrap_or_default();
        if raw.len() == 1 {
            return Ok(Some(Known { record, ..k }));
        }
        let base = (Arc::unwrap_or_clone(k.state.tree), k.state.tags);
        let state = fold_records(store, k.state.seq + 1, &raw[1..], Some(base))?;
        state
            .tree
            .check()
            .map_err(|c| c.at(label(store, state.seq)))?;
        return Ok(Some(Known {
            state,
            record,
            encoded: k.encoded,
        }));
    }
    Ok(load_newest(store).await?.map(|(state, record)| Known {
        state,
        record,
        encoded: EncodeCache::default(),
    }))
}

/// The current tree: the newest log record, else the 3.x file (as record `None`).
pub async fn load(store: &Store) -> Result<(Option<u64>, VersionControlInfo, TagMap)> {
    match load_state(store).await? {
        Some(s) => Ok((Some(s.seq), Arc::unwrap_or_clone(s.tree), s.tags)),
        None => Ok((None, super::load_tree(store).await?, TagMap::new())),
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes the 3.x view of `tree`: `version_control_info.json`, and `commit_info.json`
/// of the given nodes.
pub async fn refresh_3x(store: &Store, tree: &VersionControlInfo, nodes: &[String]) -> Result<()> {
    refresh_3x_cached(store, tree, nodes, &mut EncodeCache::default()).await
}

/// [`refresh_3x`], encoding only the nodes that changed since `cache` saw them (the 3.x
/// file holds the whole tree; its bytes do not depend on the cache).
async fn refresh_3x_cached(
    store: &Store,
    tree: &VersionControlInfo,
    nodes: &[String],
    cache: &mut EncodeCache,
) -> Result<()> {
    for n in nodes {
        if let (Some(node), Ok(id)) = (tree.commits.get(n), n.parse::<CommitId>()) {
            let rec = serde_json::to_value(node).map_err(Error::internal)?;
            store
                .put(
                    &paths::commit_info(&id),
                    crate::format::json::to_compact(&rec),
                )
                .await?;
        }
    }
    store
        .put(paths::VERSION_CONTROL_INFO, tree.encode_cached(cache))
        .await
}

/// Creates record 0, the whole `tree` of a new dataset, only if absent: of two
/// processes racing to create the same dataset, exactly one succeeds.
pub async fn create(store: &Store, tree: &VersionControlInfo) -> Result<()> {
    let record = TreeRecord {
        seq: 0,
        op: "create".to_owned(),
        time: 0.0,
        tree: Some(tree.clone()),
        tags: TagMap::new(),
        delta: None,
    };
    let bytes = serde_json::to_vec(&record).map_err(Error::internal)?;
    store.put_if_absent(&paths::tree_log(0), bytes).await
}

/// What an update made of the state after record `seq`: the next seq, the new tree and
/// tags, the nodes `op` touched, and the record's bytes.
type Made = (u64, VersionControlInfo, TagMap, Vec<String>, Bytes);

/// Runs `op` on a copy of `(tree, tags)`, the state after record `seq` (`None`: no log
/// yet), and encodes the record that makes the result visible: a delta, or the whole
/// tree at a checkpoint.
fn next_record<F>(
    name: &str,
    seq: Option<u64>,
    tree: &VersionControlInfo,
    tags: &TagMap,
    op: &mut F,
) -> Result<Made>
where
    F: FnMut(&mut VersionControlInfo, &mut TagMap) -> Result<Vec<String>>,
{
    let (mut new_tree, mut new_tags) = (tree.clone(), tags.clone());
    let touched = op(&mut new_tree, &mut new_tags)?;
    let delta = TreeDelta::between(tree, tags, &new_tree, &new_tags);
    delta
        .check(&new_tree)
        .map_err(|c| Error::internal(format!("{name} left an inconsistent commit tree: {c}")))?;
    let next = seq.map_or(0, |s| s + 1);
    let full = next.is_multiple_of(CHECKPOINT_EVERY);
    let rec = TreeRecord {
        seq: next,
        op: name.to_owned(),
        time: now(),
        tree: full.then(|| new_tree.clone()),
        tags: if full {
            new_tags.clone()
        } else {
            TagMap::new()
        },
        delta: (!full).then_some(delta),
    };
    let bytes = Bytes::from(serde_json::to_vec(&rec).map_err(Error::internal)?);
    Ok((next, new_tree, new_tags, touched, bytes))
}

/// Applies `op` to the newest tree and makes the result visible as the next record.
/// `op` may run several times (after lost races) and must be a pure function of the
/// tree it is given; it returns the nodes whose `commit_info.json` 3.x should see
/// rewritten. Returns the state the new record makes.
pub async fn update<F>(store: &Store, name: &str, mut op: F) -> Result<TreeState>
where
    F: FnMut(&mut VersionControlInfo, &mut TagMap) -> Result<Vec<String>>,
{
    for attempt in 0..MAX_RETRIES {
        let base = load_for_update(store).await?;
        let made = match &base {
            Some(k) => next_record(
                name,
                Some(k.state.seq),
                &k.state.tree,
                &k.state.tags,
                &mut op,
            ),
            None => match super::load_tree(store).await {
                Ok(tree) => next_record(name, None, &tree, &TagMap::new(), &mut op),
                Err(e) => Err(e),
            },
        };
        let (next, new_tree, new_tags, touched, bytes) = match made {
            Ok(m) => m,
            Err(e) => {
                // Nothing was written: the state we started from is still good.
                if let Some(k) = base {
                    remember(store, k);
                }
                return Err(e);
            }
        };
        match store
            .put_if_absent(&paths::tree_log(next), bytes.clone())
            .await
        {
            Ok(()) => {
                let mut encoded = base.map(|k| k.encoded).unwrap_or_default();
                store.sync().await?;
                refresh_3x_cached(store, &new_tree, &touched, &mut encoded).await?;
                // Another writer may have landed a newer record and refreshed the 3.x
                // file before us; make sure the newest tree is what 3.x sees. Records
                // are contiguous, so a newer one means `next + 1` exists.
                if store.exists(&paths::tree_log(next + 1)).await?
                    && let Some(newest) = load_state(store).await?
                {
                    refresh_3x_cached(store, &newest.tree, &[], &mut encoded).await?;
                }
                let state = TreeState {
                    seq: next,
                    tree: Arc::new(new_tree),
                    tags: new_tags,
                };
                let known = Known {
                    state: state.clone(),
                    record: bytes,
                    encoded,
                };
                remember(store, known);
                return Ok(state);
            }
            Err(Error::Conflict {
                retryable: true, ..
            }) => {
                // The state we started from is still a good start: the next load reads
                // only the records the winners added.
                if let Some(k) = base {
                    remember(store, k);
                }
                // Back off a little, more each time, with jitter, so racers spread out.
                let ms = (1u64 << attempt.min(6)) + rand::random::<u64>() % 8;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        path: format!("{}/{}", store.url(), paths::TREE_LOG_PREFIX),
        message: format!(
            "gave up after {MAX_RETRIES} lost races for the next tree record ({name})"
        ),
        retryable: true,
    })
}

/// Makes sure the 3.x file shows the newest record (after a crash between the record
/// and the refresh).
pub async fn repair_3x(store: &Store) -> Result<()> {
    let Some(s) = load_state(store).await? else {
        return Ok(());
    };
    let current = store.get_opt(paths::VERSION_CONTROL_INFO).await?;
    let stale = match current {
        Some(b) => VersionControlInfo::decode(&b)
            .map(|t| t != *s.tree)
            .unwrap_or(true),
        None => true,
    };
    if stale {
        let nodes: Vec<String> = s.tree.commits.keys().cloned().collect();
        refresh_3x(store, &s.tree, &nodes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vcinfo::CommitNode;
    use crate::store::StoreOptions;

    const K: u64 = CHECKPOINT_EVERY;

    fn mem(url: &str) -> Store {
        Store::open(url, &StoreOptions::default()).unwrap()
    }

    /// A commit on `branch`, as `Dataset::commit` makes it: the head is frozen and a new
    /// head follows it.
    fn commit_op(
        branch: &str,
    ) -> impl FnMut(&mut VersionControlInfo, &mut TagMap) -> Result<Vec<String>> + use<> {
        let (b, n) = (branch.to_owned(), CommitId::generate().to_string());
        move |tree, _| {
            let h = tree.branches[&b].clone();
            let head = tree.commits.get_mut(&h).map(Arc::make_mut).unwrap();
            head.commit_time = Some(1.5);
            head.commit_message = Some("m".to_owned());
            head.children.push(n.clone());
            tree.commits
                .insert(n.clone(), CommitNode::head(&b, Some(h.clone())).into());
            tree.branches.insert(b.clone(), n.clone());
            Ok(vec![h, n.clone()])
        }
    }

    /// A new branch `name` whose head grows from `main`'s head's parent.
    fn branch_op(
        name: &str,
    ) -> impl FnMut(&mut VersionControlInfo, &mut TagMap) -> Result<Vec<String>> + use<> {
        let (b, n) = (name.to_owned(), CommitId::generate().to_string());
        move |tree, _| {
            let base = tree.commits[&tree.branches["main"]].parent.clone().unwrap();
            tree.commits
                .get_mut(&base)
                .map(Arc::make_mut)
                .unwrap()
                .children
                .push(n.clone());
            tree.commits
                .insert(n.clone(), CommitNode::head(&b, Some(base.clone())).into());
            tree.branches.insert(b.clone(), n.clone());
            Ok(vec![base, n.clone()])
        }
    }

    async fn record(store: &Store, seq: u64) -> TreeRecord {
        let b = store.get(&paths::tree_log(seq)).await.unwrap();
        parse(store, seq, &b).unwrap()
    }

    async fn three_x(store: &Store) -> VersionControlInfo {
        VersionControlInfo::decode(&store.get(paths::VERSION_CONTROL_INFO).await.unwrap()).unwrap()
    }

    fn corrupt_at(r: Result<Option<TreeState>>, seq: u64) -> String {
        match r {
            Err(Error::Corrupt { path, reason }) => {
                assert!(path.ends_with(&paths::tree_log(seq)), "{path}: {reason}");
                reason
            }
            other => panic!("expected Corrupt naming record {seq}, got {other:?}"),
        }
    }

    #[test]
    fn deltas_carry_every_kind_of_change_and_apply_back() {
        let mut old = VersionControlInfo::new_root();
        let root = crate::ids::FIRST_COMMIT_ID.to_owned();
        for i in 0..5 {
            old.commits.insert(
                format!("{i:040x}"),
                CommitNode::head("main", Some(root.clone())).into(),
            );
        }
        old.branches.insert("gone".into(), format!("{:040x}", 1));
        let old_tags: TagMap = [
            ("t1".to_owned(), root.clone()),
            ("t2".to_owned(), root.clone()),
        ]
        .into_iter()
        .collect();
        let mut new = old.clone();
        new.commits.remove(&format!("{:040x}", 2));
        new.commits
            .get_mut(&format!("{:040x}", 3))
            .map(Arc::make_mut)
            .unwrap()
            .commit_message = Some("x".into());
        new.commits.insert(
            "f".repeat(40),
            CommitNode::head("b", Some(root.clone())).into(),
        );
        new.branches.remove("gone");
        new.branches.insert("b".into(), "f".repeat(40));
        new.extra.insert("later_key".into(), Value::from(7));
        let mut new_tags = old_tags.clone();
        new_tags.remove("t1");
        new_tags.insert("t3".into(), "f".repeat(40));

        let d = TreeDelta::between(&old, &old_tags, &new, &new_tags);
        assert_eq!(d.removed, [format!("{:040x}", 2)]);
        assert_eq!(
            d.commits.len(),
            2,
            "the changed node and the new one, no others"
        );
        assert_eq!(d.deleted_branches, ["gone"]);
        assert_eq!(d.branches.len(), 1);
        assert_eq!(d.deleted_tags, ["t1"]);
        assert_eq!(d.tags.len(), 1);
        assert!(d.extra.is_some());
        d.check(&new).unwrap();
        let back: TreeDelta = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let (mut t, mut g) = (old.clone(), old_tags.clone());
        d.apply(&mut t, &mut g).unwrap();
        assert_eq!((t, g), (new.clone(), new_tags.clone()));
        // A delta taken against another state does not apply: it removes what is not
        // there.
        let (mut t, mut g) = (new.clone(), new_tags.clone());
        assert!(d.apply(&mut t, &mut g).is_err());
        // Nothing changed: an empty delta.
        let none = TreeDelta::between(&new, &new_tags, &new, &new_tags);
        assert_eq!(none, TreeDelta::default());
        assert_eq!(serde_json::to_string(&none).unwrap(), "{}");
    }

    #[tokio::test]
    async fn deltas_between_checkpoints_rebuild_the_tree() {
        let store = mem("memory://tree-log-deltas");
        create(&store, &VersionControlInfo::new_root())
            .await
            .unwrap();
        let mut sizes = Vec::new();
        for i in 1..=(2 * K + 5) {
            let st = match i {
                5 => update(&store, "branch", branch_op("alt")).await.unwrap(),
                9 => update(&store, "commit", commit_op("alt")).await.unwrap(),
                12 => update(&store, "tag", |tree, tags| {
                    let c = tree.commits[&tree.branches["main"]].parent.clone().unwrap();
                    tags.insert("v1".into(), c);
                    Ok(vec![])
                })
                .await
                .unwrap(),
                20 => update(&store, "untag", |_, tags| {
                    tags.remove("v1");
                    Ok(vec![])
                })
                .await
                .unwrap(),
                // As a reset does: the head goes, a fresh one takes its place.
                27 => update(&store, "reset", |tree, _| {
                    let h = tree.branches["alt"].clone();
                    let p = tree.commits.remove(&h).unwrap().parent.clone().unwrap();
                    let n = "e".repeat(40);
                    let pn = tree.commits.get_mut(&p).map(Arc::make_mut).unwrap();
                    pn.children.retain(|c| *c != h);
                    pn.children.push(n.clone());
                    tree.commits
                        .insert(n.clone(), CommitNode::head("alt", Some(p)).into());
                    tree.branches.insert("alt".into(), n);
                    Ok(vec![])
                })
                .await
                .unwrap(),
                _ => update(&store, "commit", commit_op("main")).await.unwrap(),
            };
            assert_eq!(st.seq, i);
            let fresh = load_state(&store).await.unwrap().unwrap();
            assert_eq!(
                fresh, st,
                "a load from storage rebuilds what update made ({i})"
            );
            assert_eq!(
                three_x(&store).await,
                *st.tree,
                "the 3.x file shows it ({i})"
            );
            sizes.push((i, store.size(&paths::tree_log(i)).await.unwrap().unwrap()));
        }
        for s in 0..=(2 * K + 5) {
            let r = record(&store, s).await;
            assert_eq!(
                r.tree.is_some(),
                s.is_multiple_of(K),
                "record {s}: whole trees only at multiples of {K}"
            );
            assert_eq!(r.delta.is_some(), !s.is_multiple_of(K), "record {s}");
        }
        // A commit's record does not grow with the history.
        let commit_size = |i: u64| sizes.iter().find(|(s, _)| *s == i).unwrap().1;
        assert!(commit_size(2 * K + 5) < commit_size(2) + 64, "{sizes:?}");
        let st = load_state(&store).await.unwrap().unwrap();
        assert_eq!(st.tree.branches.len(), 2);
        assert!(st.tags.is_empty());
        assert_eq!(
            st.tree.commits.len() as u64,
            1 + 2 * K + 5 - 3,
            "the root, one node per commit or branch; the tags and the reset add none"
        );
    }

    #[tokio::test]
    async fn a_missing_or_malformed_record_is_corruption_naming_it() {
        let store = mem("memory://tree-log-corrupt");
        create(&store, &VersionControlInfo::new_root())
            .await
            .unwrap();
        for _ in 0..K + 4 {
            update(&store, "commit", commit_op("main")).await.unwrap();
        }
        let good = load_state(&store).await.unwrap().unwrap();
        assert_eq!(good.seq, K + 4);
        let key = |s: u64| paths::tree_log(s);
        let saved: Vec<Bytes> = futures::future::try_join_all((0..=K + 4).map(|s| {
            let store = &store;
            async move { store.get(&paths::tree_log(s)).await }
        }))
        .await
        .unwrap();
        let restore = |s: u64| {
            let (store, b) = (store.clone(), saved[s as usize].clone());
            async move { store.put(&paths::tree_log(s), b).await.unwrap() }
        };

        // A delta between the checkpoint and the newest record is gone.
        store.delete(&key(K + 2)).await.unwrap();
        let why = corrupt_at(load_state(&store).await, K + 2);
        assert!(why.contains("missing"), "{why}");
        restore(K + 2).await;
        // The checkpoint is gone: the walk from the one before runs into the gap.
        store.delete(&key(K)).await.unwrap();
        corrupt_at(load_state(&store).await, K);
        restore(K).await;
        // Record 0 is gone while others exist.
        store.delete(&key(0)).await.unwrap();
        corrupt_at(load_state(&store).await, 0);
        restore(0).await;
        // Not JSON.
        store
            .put(&key(K + 3), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        corrupt_at(load_state(&store).await, K + 3);
        // Another record's bytes under this number.
        store
            .put(&key(K + 3), saved[(K + 1) as usize].clone())
            .await
            .unwrap();
        let why = corrupt_at(load_state(&store).await, K + 3);
        assert!(why.contains("says seq"), "{why}");
        restore(K + 3).await;
        // A checkpoint without a tree.
        let fake = serde_json::json!({"seq": K, "op": "commit", "time": 1.0, "delta": {}});
        store
            .put(&key(K), serde_json::to_vec(&fake).unwrap())
            .await
            .unwrap();
        let why = corrupt_at(load_state(&store).await, K);
        assert!(why.contains("no tree"), "{why}");
        restore(K).await;
        // A delta that does not fit the state before it.
        let mut d = record(&store, K + 1).await;
        if let Some(delta) = d.delta.as_mut() {
            delta.removed.push("0".repeat(40));
        }
        store
            .put(&key(K + 1), serde_json::to_vec(&d).unwrap())
            .await
            .unwrap();
        let why = corrupt_at(load_state(&store).await, K + 1);
        assert!(why.contains("unknown commit"), "{why}");
        restore(K + 1).await;
        // Writers fail the same way rather than build on a broken log.
        store.delete(&key(K + 2)).await.unwrap();
        let e = update(
            &mem("memory://tree-log-corrupt/"),
            "commit",
            commit_op("main"),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        restore(K + 2).await;
        assert_eq!(load_state(&store).await.unwrap().unwrap(), good);
    }

    #[tokio::test]
    async fn logs_of_whole_tree_records_still_load() {
        // Records as earlier versions wrote them: the whole tree and tags in each.
        let store = mem("memory://tree-log-old");
        let mut tree = VersionControlInfo::new_root();
        let mut tags = TagMap::new();
        let n = K + 3;
        for s in 0..=n {
            if s > 0 {
                commit_op("main")(&mut tree, &mut tags).unwrap();
            }
            if s == 5 {
                tags.insert("v".into(), crate::ids::FIRST_COMMIT_ID.into());
            }
            let old = serde_json::json!({
                "seq": s, "op": if s == 0 { "create" } else { "commit" },
                "time": 0.0, "tree": tree, "tags": tags,
            });
            store
                .put(&paths::tree_log(s), serde_json::to_vec(&old).unwrap())
                .await
                .unwrap();
        }
        let st = load_state(&store).await.unwrap().unwrap();
        assert_eq!((st.seq, &*st.tree, &st.tags), (n, &tree, &tags));
        // New records follow as deltas (or a checkpoint at the next multiple).
        let mut expect = (tree.clone(), tags.clone());
        for s in n + 1..=2 * K {
            let st = update(&store, "commit", commit_op("main")).await.unwrap();
            assert_eq!(st.seq, s);
            let r = record(&store, s).await;
            assert_eq!(r.tree.is_some(), s.is_multiple_of(K));
            let d = TreeDelta::between(&expect.0, &expect.1, &st.tree, &st.tags);
            assert_eq!(
                d.commits.len(),
                2,
                "one commit: its head frozen, a new head"
            );
            expect = ((*st.tree).clone(), st.tags.clone());
            assert_eq!(load_state(&store).await.unwrap().unwrap(), st);
        }
        assert_eq!(expect.1, tags, "the tag survived");
    }

    #[tokio::test]
    async fn other_writers_and_a_recreated_dataset_are_seen() {
        // Two URLs for the same memory: each has its own remembered state, as two
        // processes would.
        let (a, b) = (
            mem("memory://tree-log-known"),
            mem("memory://tree-log-known/"),
        );
        create(&a, &VersionControlInfo::new_root()).await.unwrap();
        update(&a, "commit", commit_op("main")).await.unwrap();
        update(&a, "commit", commit_op("main")).await.unwrap();
        update(&b, "branch", branch_op("alt")).await.unwrap();
        update(&b, "commit", commit_op("alt")).await.unwrap();
        let st = update(&a, "commit", commit_op("main")).await.unwrap();
        assert_eq!(st.seq, 5);
        assert!(st.tree.branches.contains_key("alt"), "a saw b's records");
        assert_eq!(st, load_state(&b).await.unwrap().unwrap());
        assert_eq!(three_x(&a).await, *st.tree);

        // The dataset is deleted and made again at the same place, with a shorter log
        // and then a longer one: what `a` remembers must not leak into it.
        for n in [3, 2 * K] {
            b.delete_prefix("").await.unwrap();
            create(&b, &VersionControlInfo::new_root()).await.unwrap();
            update(&b, "commit", commit_op("main")).await.unwrap();
            for i in 0..n {
                update(&b, "branch", branch_op(&format!("x{i}")))
                    .await
                    .unwrap();
            }
            let st = update(&a, "commit", commit_op("main")).await.unwrap();
            assert_eq!(st.seq, n + 2);
            assert!(!st.tree.branches.contains_key("alt"), "n = {n}");
            assert_eq!(st.tree.branches.len() as u64, n + 1, "n = {n}");
            assert_eq!(st, load_state(&b).await.unwrap().unwrap());
            assert_eq!(three_x(&b).await, *st.tree);
        }
    }

    #[tokio::test]
    async fn records_are_created_once_and_retried_on_races() {
        let store = mem("memory://tree-log-unit");
        create(&store, &VersionControlInfo::new_root())
            .await
            .unwrap();
        update(&store, "commit", commit_op("main")).await.unwrap();
        let mut handles = Vec::new();
        for w in 0..8 {
            // Half the writers come in through another URL of the same memory, so
            // they remember their own state, as separate processes do.
            let s = if w % 2 == 0 {
                store.clone()
            } else {
                mem("memory://tree-log-unit/")
            };
            handles.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for r in 0..3 {
                    let st = update(&s, "branch", branch_op(&format!("b{w}-{r}")))
                        .await
                        .unwrap();
                    seqs.push(st.seq);
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.extend(h.await.unwrap());
        }
        seqs.sort();
        assert_eq!(
            seqs,
            (2..=25).collect::<Vec<_>>(),
            "each update lands once, in its own record"
        );
        let st = load_state(&store).await.unwrap().unwrap();
        assert_eq!(st.seq, 25);
        assert_eq!(
            st.tree.branches.len(),
            25,
            "no branch was lost: {:?}",
            st.tree.branches.keys()
        );
        assert_eq!(
            three_x(&store).await,
            *st.tree,
            "the 3.x file shows the newest tree"
        );
        // A stale 3.x file is repaired.
        store
            .put(
                paths::VERSION_CONTROL_INFO,
                VersionControlInfo::new_root().encode(),
            )
            .await
            .unwrap();
        repair_3x(&store).await.unwrap();
        assert_eq!(three_x(&store).await, *st.tree);
    }
}
