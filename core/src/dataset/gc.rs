//! Garbage collection of a dataset's storage: the objects that no branch, tag or saved
//! view reaches any more, listed by [`plan`] and deleted by [`apply`].
//!
//! ```text
//! plan:  list every object -> scan what is live -> classify each listed object;
//!        an object younger than the grace period is never listed
//! apply: scan again (a commit may have landed since the plan) -> each planned key that
//!        is still garbage for the same reason and still older than the grace period
//!        is deleted (deleting a key that is gone already is fine)
//! ```
//!
//! Live (never listed):
//!
//! | what | why |
//! |---|---|
//! | the commits on the first-parent chains of every branch head and tag, in the newest tree record and in `version_control_info.json` | our readers and 3.x's walk these |
//! | every file of a live commit but its chunks and old flush records (metas, encoders, diffs, `commit_info.json`, locks, `applied.json`) | small, and 3.x rewrites some in place |
//! | each chunk that the chunk index of a live state names, at the key the `chunk_set` walk gives | a reader of that state fetches it |
//! | the newest flush record of a live commit, and each one superseded less than the grace period ago | open reads the newest; a reader that loaded the previous one moments ago still fetches its chunks |
//! | `_rs/` (tree log, leases) | our records |
//! | `.queries/`, `queries.json`, `queries.lock`, and the commits views name as their source | saved views (the whole prefix for now: views arrive later and will say what in it is garbage) |
//! | objects inside the root that a linked tensor of a live state points to | links are the user's files |
//! | anything outside the layout: unknown keys, chunks of a tensor no live state knows (a nested dataset's, say) | not provably ours |
//!
//! A *live state* of a commit is its 3.x files and each of its live flush records; a chunk
//! that any of them needs stays. Garbage, with its [`GcReason`]:
//!
//! * every object under `versions/<c>/` of a commit no live chain contains (a reset or
//!   deleted head whose folder deletion did not finish, a head whose tree record never
//!   landed);
//! * a chunk `<tensor>/chunks/<name>` of a live commit that no live state reads: chunks
//!   are never rewritten in place, so a changed chunk gets a fresh name and the old
//!   object stays behind; a writer that died before its flush leaves chunks too;
//! * a flush record of a live commit that a newer record superseded more than the grace
//!   period ago.
//!
//! [`apply_with`] reports progress (one step per planned key) and stops between deletes
//! when its [`Control`] is cancelled: the keys not yet deleted are reported as kept
//! ([`GcKept::Cancelled`]). Plan and apply are idempotent, so a cancelled collection is
//! simply run again.
//!
//! Nothing is deleted when any part of the scan fails: a live state that does not parse
//! is an error (`Corrupt` for bad bytes) before the first delete.
//!
//! The grace period (default one hour) protects writers in flight, which write chunks
//! and a new head's files before the record that makes them visible. With a grace of
//! zero, collect only while no one writes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};

use super::Dataset;
use super::read::decompress_data;
use super::record;
use super::tensor::TensorFiles;
use crate::error::{Error, Result};
use crate::format::chunk::Chunk;
use crate::format::compression::Compression;
use crate::format::encoders::ChunkIdEncoder;
use crate::format::meta::{DatasetMeta, TensorMeta};
use crate::ids::{ChunkId, CommitId, TensorName};
use crate::runtime::Control;
use crate::store::Store;
use crate::store::paths::{self, CommitFile, KeyPlace};
use crate::version::{ChunkLocation, ChunkSet, log};

/// How old an object must be before gc may list it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How many objects are read or deleted at once.
const CONCURRENCY: usize = 16;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Objects modified less than this long ago are left alone.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: DEFAULT_GRACE,
        }
    }
}

/// Why an object is garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GcReason {
    /// Under the folder of a commit that no branch, tag or view reaches.
    UnreachableCommit,
    /// A chunk of a live commit that no live state reads.
    UnreferencedChunk,
    /// A flush record superseded by a newer one more than the grace period ago.
    SupersededFlushRecord,
}

impl GcReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            GcReason::UnreachableCommit => "unreachable_commit",
            GcReason::UnreferencedChunk => "unreferenced_chunk",
            GcReason::SupersededFlushRecord => "superseded_flush_record",
        }
    }
}

impl std::fmt::Display for GcReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcItem {
    pub key: String,
    pub bytes: u64,
    pub reason: GcReason,
}

/// What [`plan`] found.
#[derive(Clone, Debug)]
pub struct GcPlan {
    /// The store the plan is for.
    pub url: String,
    pub grace: Duration,
    /// The garbage, sorted by key.
    pub items: Vec<GcItem>,
    /// Objects listed.
    pub scanned: usize,
    /// Commits on live chains.
    pub live_commits: usize,
    /// Garbage left alone because it is younger than the grace period.
    pub young_objects: usize,
    pub young_bytes: u64,
}

impl GcPlan {
    pub fn bytes(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Object count and bytes per reason.
    pub fn totals(&self) -> BTreeMap<GcReason, (usize, u64)> {
        totals(&self.items)
    }
}

/// Why [`apply`] left a planned key alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcKept {
    /// The scan before deleting found it live (or garbage for another reason): the
    /// dataset changed since the plan.
    Changed,
    /// It was written again since the plan and is younger than the grace period.
    Young,
    /// The collection was cancelled before this key's turn.
    Cancelled,
}

impl GcKept {
    pub fn as_str(&self) -> &'static str {
        match self {
            GcKept::Changed => "changed_since_plan",
            GcKept::Young => "younger_than_grace",
            GcKept::Cancelled => "cancelled",
        }
    }
}

/// What [`apply`] did.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// Deleted (or already gone), sorted by key.
    pub deleted: Vec<GcItem>,
    /// Planned but left alone, sorted by key.
    pub kept: Vec<(GcItem, GcKept)>,
    /// Whether the collection was cancelled before it went through the plan.
    pub cancelled: bool,
}

impl GcReport {
    pub fn bytes(&self) -> u64 {
        self.deleted.iter().map(|i| i.bytes).sum()
    }

    pub fn totals(&self) -> BTreeMap<GcReason, (usize, u64)> {
        totals(&self.deleted)
    }
}

/// Objects as a listing shows them: the objects of one dead commit folder as one group
/// named by the folder (`versions/<c>/`), every other object as a group of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcGroup {
    pub key: String,
    pub reason: GcReason,
    pub objects: usize,
    pub bytes: u64,
}

/// Groups `items` for display: dead commit folders first, then single objects, each
/// sorted by key.
pub fn groups(items: &[GcItem]) -> Vec<GcGroup> {
    let mut folders: BTreeMap<String, GcGroup> = BTreeMap::new();
    let mut single = Vec::new();
    for i in items {
        let folder = match (i.reason, paths::place(&i.key)) {
            (GcReason::UnreachableCommit, KeyPlace::Commit { commit, .. }) => {
                paths::commit_folder(&commit)
            }
            _ => None,
        };
        match folder {
            Some(f) => {
                let g = folders.entry(f.clone()).or_insert(GcGroup {
                    key: format!("{f}/"),
                    reason: i.reason,
                    objects: 0,
                    bytes: 0,
                });
                g.objects += 1;
                g.bytes += i.bytes;
            }
            None => single.push(GcGroup {
                key: i.key.clone(),
                reason: i.reason,
                objects: 1,
                bytes: i.bytes,
            }),
        }
    }
    single.sort_by(|a, b| a.key.cmp(&b.key));
    folders.into_values().chain(single).collect()
}

fn totals(items: &[GcItem]) -> BTreeMap<GcReason, (usize, u64)> {
    let mut out: BTreeMap<GcReason, (usize, u64)> = BTreeMap::new();
    for i in items {
        let t = out.entry(i.reason).or_default();
        t.0 += 1;
        t.1 += i.bytes;
    }
    out
}

fn age(now: SystemTime, modified: SystemTime) -> Duration {
    // A modification time ahead of our clock is as young as can be.
    now.duration_since(modified).unwrap_or(Duration::ZERO)
}

/// Lists the garbage of the dataset at `store`'s root (module docs for the rules).
pub async fn plan(store: &Store, opts: &GcOptions) -> Result<GcPlan> {
    if !Dataset::exists_in(store).await? {
        return Err(Error::not_found("dataset", store.url()));
    }
    // The clock is read first and the listing made before the scan: every listed object
    // is then at least as old as it looks, and the scan sees a state at least as new as
    // the listing (an object that a record landing meanwhile names is live).
    let now = SystemTime::now();
    let listing = store.list_entries("").await?;
    let live = Live::scan(store, opts.grace, now).await?;
    let mut plan = GcPlan {
        url: store.url().to_owned(),
        grace: opts.grace,
        items: Vec::new(),
        scanned: listing.len(),
        live_commits: live.commits.len(),
        young_objects: 0,
        young_bytes: 0,
    };
    for e in listing {
        let Some(reason) = live.garbage(&e.key) else {
            continue;
        };
        if age(now, e.modified) < opts.grace {
            plan.young_objects += 1;
            plan.young_bytes += e.size;
            continue;
        }
        plan.items.push(GcItem {
            key: e.key,
            bytes: e.size,
            reason,
        });
    }
    Ok(plan)
}

/// Deletes the garbage `plan` lists, after checking again that each key is still
/// garbage (for the same reason) and still older than the plan's grace period.
pub async fn apply(store: &Store, plan: &GcPlan) -> Result<GcReport> {
    apply_with(store, plan, &Control::default()).await
}

/// [`apply`], reporting one step of `control` per planned key and stopping between
/// deletes once it is cancelled (module docs).
pub async fn apply_with(store: &Store, plan: &GcPlan, control: &Control) -> Result<GcReport> {
    if store.url() != plan.url {
        return Err(Error::invalid(format!(
            "the plan is for {}, not {}",
            plan.url,
            store.url()
        )));
    }
    let now = SystemTime::now();
    let live = Live::scan(store, plan.grace, now).await?;
    enum Verdict {
        Delete(GcItem),
        Keep(GcItem, GcKept),
    }
    // Owned items: a future borrowing its item would keep the whole future from being
    // `Send` for every lifetime, which a caller on a spawned task needs.
    let live = &live;
    let verdicts: Vec<Verdict> = futures::stream::iter(plan.items.iter().cloned())
        .map(|item: GcItem| async move {
            if live.garbage(&item.key) != Some(item.reason) {
                return Ok::<_, Error>(Verdict::Keep(item, GcKept::Changed));
            }
            Ok(match store.stat(&item.key).await? {
                Some(e) if age(now, e.modified) < plan.grace => Verdict::Keep(item, GcKept::Young),
                Some(e) => Verdict::Delete(GcItem {
                    bytes: e.size,
                    ..item
                }),
                None => Verdict::Delete(item),
            })
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    control.start_stage(plan.items.len() as u64);
    let mut report = GcReport::default();
    let mut to_delete = Vec::new();
    for v in verdicts {
        match v {
            Verdict::Delete(i) => to_delete.push(i),
            Verdict::Keep(i, why) => {
                control.advance(1);
                report.kept.push((i, why));
            }
        }
    }
    // Each delete checks the flag first, so a cancel stops the deletes not yet started
    // and the ones under way finish.
    let done: Vec<(GcItem, bool)> = futures::stream::iter(to_delete)
        .map(|i| async move {
            if control.is_cancelled() {
                return Ok::<_, Error>((i, false));
            }
            store.delete(&i.key).await?;
            control.advance(1);
            Ok((i, true))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (i, deleted) in done {
        if deleted {
            report.deleted.push(i);
        } else {
            report.cancelled = true;
            report.kept.push((i, GcKept::Cancelled));
        }
    }
    report.deleted.sort_by(|a, b| a.key.cmp(&b.key));
    report.kept.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    // Local disk keeps the emptied folders of dead commits; they go too.
    let dead: BTreeSet<String> = report
        .deleted
        .iter()
        .filter(|i| i.reason == GcReason::UnreachableCommit)
        .filter_map(|i| match paths::place(&i.key) {
            KeyPlace::Commit { commit, .. } => paths::commit_folder(&commit),
            _ => None,
        })
        .collect();
    for folder in dead {
        store.remove_empty_folders(&folder).await?;
    }
    Ok(report)
}

/// What one tensor of one live state needs.
#[derive(Debug)]
struct TensorRefs {
    key: TensorName,
    chunk_ids: Vec<u64>,
    is_link: bool,
    chunk_compression: Option<Compression>,
    max_chunk_size: usize,
}

/// The live states of one commit.
#[derive(Debug)]
struct CommitStates {
    commit: CommitId,
    tensors: Vec<TensorRefs>,
    /// Chunk sets of the states, by tensor key.
    sets: HashMap<TensorName, Vec<ChunkSet>>,
    /// Sequence numbers of the live flush records, and the newest record's.
    live_records: BTreeSet<u64>,
    newest_record: Option<u64>,
}

/// Everything a live state needs, as object keys and names.
#[derive(Debug, Default)]
struct Live {
    commits: HashSet<CommitId>,
    chunks: HashSet<String>,
    links: HashSet<String>,
    tensors: HashSet<String>,
    records: HashMap<CommitId, (BTreeSet<u64>, Option<u64>)>,
}

impl Live {
    /// Why `key` is garbage, or `None` when it is live or not provably ours.
    fn garbage(&self, key: &str) -> Option<GcReason> {
        if self.links.contains(key) || self.chunks.contains(key) {
            return None;
        }
        let KeyPlace::Commit { commit, rest } = paths::place(key) else {
            return None;
        };
        if !self.commits.contains(&commit) {
            return Some(GcReason::UnreachableCommit);
        }
        match paths::commit_file(rest) {
            CommitFile::FlushRecord(seq) => {
                let (live, newest) = self.records.get(&commit)?;
                // A record newer than any the scan saw landed after it: it is live.
                let superseded = newest.is_some_and(|n| seq < n);
                (superseded && !live.contains(&seq)).then_some(GcReason::SupersededFlushRecord)
            }
            CommitFile::Chunk { tensor, .. } => self
                .tensors
                .contains(tensor)
                .then_some(GcReason::UnreferencedChunk),
            CommitFile::Other => None,
        }
    }

    async fn scan(store: &Store, grace: Duration, now: SystemTime) -> Result<Live> {
        let (_, tree, tags) = log::load(store).await?;
        // 3.x reads its own file, which a 3.x writer may have moved past our log: both
        // trees count.
        let tree3 = crate::version::load_tree(store).await?;
        let mut parents: HashMap<&str, Option<&str>> = HashMap::new();
        for t in [&tree3, &tree] {
            for (id, n) in &t.commits {
                parents.insert(id.as_str(), n.parent.as_deref());
            }
        }
        let mut starts: Vec<&str> = Vec::new();
        starts.extend(tree.branches.values().map(String::as_str));
        starts.extend(tree3.branches.values().map(String::as_str));
        for (tag, c) in &tags {
            if !parents.contains_key(c.as_str()) {
                return Err(Error::corrupt(
                    format!("{}/{}", store.url(), paths::TREE_LOG_PREFIX),
                    format!("tag {tag} names unknown commit {c}"),
                ));
            }
            starts.push(c);
        }
        let sources = view_sources(store).await?;
        starts.extend(
            sources
                .iter()
                .map(String::as_str)
                .filter(|c| parents.contains_key(c)),
        );
        let order = chains(store, &parents, starts)?;
        let states: Vec<CommitStates> = futures::stream::iter(order.iter().cloned())
            .map(|c| load_states(store, c, grace, now))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;

        let mut live = Live {
            commits: order.iter().cloned().collect(),
            ..Default::default()
        };
        let mut sets: HashMap<(&CommitId, &TensorName), Vec<&ChunkSet>> = HashMap::new();
        for s in &states {
            for (k, v) in &s.sets {
                sets.entry((&s.commit, k)).or_default().extend(v.iter());
            }
            live.records
                .insert(s.commit.clone(), (s.live_records.clone(), s.newest_record));
        }
        let ancestry = |c: &CommitId| -> Vec<CommitId> {
            let mut out = Vec::new();
            let mut cur = Some(c.as_str());
            while let Some(x) = cur {
                if out.len() > parents.len() {
                    break; // a cycle in a corrupt tree must not loop forever
                }
                if let Ok(id) = x.parse::<CommitId>() {
                    out.push(id);
                }
                cur = parents.get(x).copied().flatten();
            }
            out
        };
        // Link chunks, with what decoding them needs.
        let mut link_chunks: BTreeMap<String, (Option<Compression>, usize)> = BTreeMap::new();
        for s in &states {
            let chain = ancestry(&s.commit);
            // Several states of a commit mostly share their chunks: each is located once.
            let mut done: HashSet<(&TensorName, u64, bool)> = HashSet::new();
            for t in &s.tensors {
                live.tensors.insert(t.key.as_str().to_owned());
                for &id in &t.chunk_ids {
                    if !done.insert((&t.key, id, t.is_link)) {
                        continue;
                    }
                    for key in locate(&chain, &sets, &t.key, ChunkId(id)) {
                        if t.is_link {
                            link_chunks
                                .entry(key.clone())
                                .or_insert((t.chunk_compression.clone(), t.max_chunk_size));
                        }
                        live.chunks.insert(key);
                    }
                }
            }
        }
        live.links = link_targets(store, link_chunks).await?;
        Ok(live)
    }
}

/// The commits on the first-parent chains from `starts` to the root, each once.
fn chains(
    store: &Store,
    parents: &HashMap<&str, Option<&str>>,
    starts: Vec<&str>,
) -> Result<Vec<CommitId>> {
    let bad = |reason: String| {
        Error::corrupt(
            format!("{}/{}", store.url(), paths::VERSION_CONTROL_INFO),
            reason,
        )
    };
    let mut order: Vec<CommitId> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for s in starts {
        let mut cur = Some(s);
        // `seen` also ends a cycle in a corrupt tree.
        while let Some(c) = cur.filter(|c| seen.insert(c)) {
            order.push(c.parse().map_err(|_| bad(format!("bad commit id {c:?}")))?);
            cur = *parents
                .get(c)
                .ok_or_else(|| bad(format!("commit {c} is not in the tree")))?;
        }
    }
    Ok(order)
}

/// Where the readers of a state at `chain[0]` look for chunk `id` of tensor `key`: the
/// first node of the chain whose chunk set (in any of its states) names the chunk
/// decides; no entry anywhere means the root. Several states of one node may disagree:
/// every place they name counts.
fn locate(
    chain: &[CommitId],
    sets: &HashMap<(&CommitId, &TensorName), Vec<&ChunkSet>>,
    key: &TensorName,
    id: ChunkId,
) -> Vec<String> {
    let name = id.name();
    for c in chain {
        if c.is_root() {
            break;
        }
        let Some(node_sets) = sets.get(&(c, key)) else {
            continue;
        };
        let found: Vec<String> = node_sets
            .iter()
            .filter_map(|s| s.get(&name))
            .map(|loc| match loc {
                ChunkLocation::Here => paths::chunk(c, key, id),
                ChunkLocation::Commit(other) => paths::chunk(other, key, id),
                ChunkLocation::CommitKey(other, k) => paths::chunk(other, k, id),
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    vec![paths::chunk(&CommitId::root(), key, id)]
}

/// Loads the live states of commit `c`: its 3.x files and its live flush records.
async fn load_states(
    store: &Store,
    c: CommitId,
    grace: Duration,
    now: SystemTime,
) -> Result<CommitStates> {
    let records = record::list(store, &c).await?;
    let newest_record = records.last().map(|(s, _)| *s);
    // A record is live while it is the newest or its successor is younger than grace.
    let live_records: BTreeSet<u64> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            records
                .get(i + 1)
                .is_none_or(|(_, next)| age(now, next.modified) < grace)
        })
        .map(|(_, (s, _))| *s)
        .collect();
    let mut out = CommitStates {
        commit: c.clone(),
        tensors: Vec::new(),
        sets: HashMap::new(),
        live_records,
        newest_record,
    };
    for &seq in &out.live_records.clone() {
        let rec = record::read(store, &c, seq).await?;
        let label = format!("{}/{}", store.url(), paths::flush_log(&c, seq));
        for (k, files) in rec.tensors {
            let key: TensorName = k
                .parse()
                .map_err(|_| Error::corrupt(&label, format!("bad tensor key {k:?}")))?;
            add_tensor(&mut out, key, files, &|f| format!("{label} ({f})"))?;
        }
    }
    let k_meta = paths::dataset_meta(&c);
    match store.get_opt(&k_meta).await? {
        Some(b) => {
            let label = format!("{}/{k_meta}", store.url());
            let meta = DatasetMeta::decode(&b).map_err(|e| e.at(&label))?;
            let mut keys: Vec<TensorName> = Vec::new();
            for k in &meta.tensors {
                let key: TensorName = k
                    .parse()
                    .map_err(|_| Error::corrupt(&label, format!("bad tensor key {k:?}")))?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            let fetched = futures::future::try_join_all(keys.into_iter().map(|k| {
                let c = &c;
                async move {
                    let f = TensorFiles::fetch(store, c, &k).await?;
                    Ok::<_, Error>((k, f))
                }
            }))
            .await?;
            for (k, files) in fetched {
                let (url, c2, k2) = (store.url().to_owned(), c.clone(), k.clone());
                add_tensor(&mut out, k, files, &move |f| {
                    format!("{url}/{}", TensorFiles::key_of(&c2, &k2, f))
                })?;
            }
        }
        None if out.live_records.is_empty() => {
            return Err(Error::corrupt(
                format!("{}/{k_meta}", store.url()),
                format!(
                    "commit {c} is on a live chain but has neither dataset_meta.json nor a flush record"
                ),
            ));
        }
        None => {}
    }
    Ok(out)
}

/// Decodes what gc needs of one tensor's files and adds it to `out`.
fn add_tensor(
    out: &mut CommitStates,
    key: TensorName,
    files: TensorFiles,
    label: &dyn Fn(&str) -> String,
) -> Result<()> {
    let meta_b = files.meta.ok_or_else(|| {
        Error::corrupt(
            label("tensor_meta.json"),
            "tensor listed in dataset_meta.json has no tensor_meta.json",
        )
    })?;
    let meta = TensorMeta::decode(&meta_b).map_err(|e| e.at(label("tensor_meta.json")))?;
    let chunk_compression = match &meta.chunk_compression {
        Some(c) => Compression::parse(c)
            .map_err(|e| Error::corrupt(label("tensor_meta.json"), e.to_string()))?,
        None => None,
    };
    let chunk_ids = match &files.chunks_index {
        Some(b) => ChunkIdEncoder::decode(b)
            .map_err(|e| e.at(label("chunks_index")))?
            .rows
            .iter()
            .map(|r| r.0)
            .collect(),
        None => Vec::new(),
    };
    if let (Some(b), false) = (&files.chunk_set, out.commit.is_root()) {
        let set = ChunkSet::parse(b).map_err(|e| e.at(label("chunk_set")))?;
        out.sets.entry(key.clone()).or_default().push(set);
    }
    out.tensors.push(TensorRefs {
        key,
        chunk_ids,
        is_link: meta.is_link,
        chunk_compression,
        max_chunk_size: meta
            .max_chunk_size
            .map(|v| v as usize)
            .unwrap_or(crate::format::DEFAULT_MAX_CHUNK_SIZE),
    });
    Ok(())
}

/// The keys inside the root that the samples of these link chunks point to. A chunk
/// that cannot be read leaves its targets unknown, which stops the collection.
async fn link_targets(
    store: &Store,
    chunks: BTreeMap<String, (Option<Compression>, usize)>,
) -> Result<HashSet<String>> {
    let per_chunk: Vec<Vec<String>> = futures::stream::iter(chunks)
        .map(|(key, (cc, max))| async move {
            let path = format!("{}/{key}", store.url());
            let bytes = store.get(&key).await.map_err(|e| match e {
                Error::NotFound { .. } => Error::corrupt(
                    &path,
                    "a chunk of a linked tensor is missing: the files it points to are unknown",
                ),
                other => other,
            })?;
            let paths = crate::runtime::spawn_cpu(move || {
                let mut c = Chunk::decode(bytes).map_err(|e| e.at(&path))?;
                if cc.is_some() {
                    c.data = bytes::Bytes::from(
                        decompress_data(&c, cc.as_ref(), max).map_err(|e| e.at(&path))?,
                    );
                }
                (0..c.num_samples())
                    .map(|i| {
                        c.sample_data(i)
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .map_err(|e| e.at(&path))
                    })
                    .collect::<Result<Vec<String>>>()
            })
            .await?;
            Ok::<_, Error>(paths)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(per_chunk
        .into_iter()
        .flatten()
        .filter_map(|p| store.key_of_link(&p))
        .collect())
}

/// The source commits that saved views name (`source-dataset-version` in `queries.json`
/// and in each view's `dataset_info.json`). Views arrive in a later release; until then
/// their whole prefix is live and this only keeps their sources alive.
async fn view_sources(store: &Store) -> Result<Vec<String>> {
    let mut docs: Vec<(String, serde_json::Value)> = Vec::new();
    let parse = |key: &str, b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .map_err(|e| Error::corrupt(format!("{}/{key}", store.url()), e))
    };
    if let Some(b) = store.get_opt(paths::QUERIES).await? {
        docs.push((paths::QUERIES.to_owned(), parse(paths::QUERIES, &b)?));
    }
    for e in store.list_entries(paths::QUERIES_FOLDER).await? {
        let depth = e.key.matches('/').count();
        if depth == 2
            && e.key.ends_with("/dataset_info.json")
            && let Some(b) = store.get_opt(&e.key).await?
        {
            let v = parse(&e.key, &b)?;
            docs.push((e.key, v));
        }
    }
    let mut out = Vec::new();
    for (_, v) in docs {
        let entries = match v {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        };
        for e in entries {
            if let Some(s) = e.get("source-dataset-version").and_then(|s| s.as_str()) {
                out.push(s.to_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn grace_and_reasons() {
        assert_eq!(GcOptions::default().grace, Duration::from_secs(3600));
        let now = SystemTime::now();
        assert_eq!(age(now, now + Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(
            age(now, now - Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            GcReason::UnreferencedChunk.to_string(),
            "unreferenced_chunk"
        );
    }

    #[test]
    fn dead_folders_group_into_one_line() {
        let c = CommitId::generate();
        let item = |key: String, reason| GcItem {
            key,
            bytes: 10,
            reason,
        };
        let t: TensorName = "x".parse().unwrap();
        let items = vec![
            item(paths::dataset_meta(&c), GcReason::UnreachableCommit),
            item(
                paths::chunk(&c, &t, ChunkId(1)),
                GcReason::UnreachableCommit,
            ),
            item(
                paths::chunk(&CommitId::root(), &t, ChunkId(2)),
                GcReason::UnreferencedChunk,
            ),
        ];
        let g = groups(&items);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].key, format!("versions/{c}/"));
        assert_eq!((g[0].objects, g[0].bytes), (2, 20));
        assert_eq!((g[1].key.as_str(), g[1].objects), ("x/chunks/2", 1));
    }

    #[tokio::test]
    async fn a_folder_that_is_no_dataset_is_not_found() {
        let s = Store::open("memory://gc-unit-empty", &StoreOptions::default()).unwrap();
        assert!(matches!(
            plan(&s, &GcOptions::default()).await,
            Err(Error::NotFound { .. })
        ));
    }
}
