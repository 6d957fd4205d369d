//! Reading history: opening a dataset read-only at any branch, commit or tag (by API and
//! by `PATH@ref`), the commit log, and diffs between nodes, in 3.x's dict shape and by
//! row ids. The algebra (common ancestors, chains, which rows a commit touched) lives in
//! `version::diff`; this file only reads what it needs.
//!
//! A diff loads each commit of each side's chain as a read-only dataset (its metas,
//! encoders and diffs; no chunks) and takes the dataset diff and every visible tensor's
//! commit diff from it. The row-level form also reads the id column of each tensor at
//! both ends, the ids of the rows each chain commit touched, and the stored values of
//! those rows at both ends.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::read::{self, ReadOptions};
use super::tensor::{CompanionRole, TensorState};
use super::{Dataset, OpenOptions};
use crate::error::{Error, Result};
use crate::format::array::Sample;
use crate::format::dtype::Dtype;
use crate::ids::CommitId;
use crate::store::{Store, paths};
use crate::version::diff::{
    CommitChanges, DatasetChange, RowChanges, RowDiff, SideChanges, SideRows, TensorChange,
    VersionDiff, chain, id_changes, lca, touched_rows, visible_tensors,
};
use crate::version::{CommitRecord, Ref, ResolvedRef, split_ref};

/// Rows of an id column read per request: bounds the decoded samples held at once.
const ID_BATCH: u64 = 1 << 16;
/// Stored values compared at once when looking for updated rows.
const COMPARE_CONCURRENCY: usize = 16;
/// Nodes of a diff's chain loaded at once.
const OPEN_CONCURRENCY: usize = 8;

/// A dataset at some node: the one the diff was asked on, or one opened for it.
pub(super) enum At<'a> {
    This(&'a Dataset),
    Other(Box<Dataset>),
}

impl At<'_> {
    pub(super) fn get(&self) -> &Dataset {
        match self {
            At::This(d) => d,
            At::Other(d) => d,
        }
    }
}

impl Dataset {
    /// Opens the dataset at `url` read-only at `r`: a branch opens at its head (with
    /// the head's uncommitted changes), a commit or tag at that commit. A bare name is a
    /// branch first, then a commit id, then a tag, as 3.x's checkout resolves it.
    pub async fn open_ref(url: &str, r: &Ref, opts: OpenOptions) -> Result<Dataset> {
        let store = match Store::open(url, &opts.storage) {
            Err(Error::NotFound { .. }) => return Err(Error::not_found("dataset", url)),
            other => other?,
        };
        if !Dataset::exists_in(&store).await? {
            return Err(Error::not_found("dataset", url));
        }
        let (_, tree, tags) = crate::version::log::load(&store).await?;
        let at = r.resolve(&tree, &tags)?;
        let mut ds = Dataset::open_at(
            store,
            tree.into(),
            at.node,
            at.branch,
            false,
            opts.cache.clone(),
        )
        .await?;
        ds.tags = tags;
        ds.linker = opts.linker.clone();
        Ok(ds)
    }

    /// Opens `PATH` as [`Dataset::open`] does, or `PATH@ref` as [`Dataset::open_ref`]
    /// does ([`split_ref`] says when a suffix is a ref). If no dataset exists before
    /// the `@` but one exists at the whole path, the whole path is opened: a path may
    /// really end in `@name`.
    pub async fn open_url(url: &str, opts: OpenOptions) -> Result<Dataset> {
        let (base, Some(r)) = split_ref(url) else {
            return Dataset::open(url, opts).await;
        };
        if let Some(b) = &opts.branch {
            return Err(Error::invalid(format!(
                "{url} names ref {r} and the options name branch {b}: give one"
            )));
        }
        match Dataset::open_ref(base, &r, opts.clone()).await {
            Err(
                e @ Error::NotFound {
                    what: "dataset", ..
                },
            ) => match Dataset::open(url, opts).await {
                Err(Error::NotFound {
                    what: "dataset", ..
                }) => Err(e),
                other => other,
            },
            other => other,
        }
    }

    /// The first-parent chain from the node being read to the root, newest first (the
    /// node itself first, flagged `is_head` when it is a head).
    pub fn log(&self) -> Vec<CommitRecord> {
        crate::version::log(&self.tree, self.node.as_str())
    }

    /// Every node of the commit tree as this handle loaded it: the commits and the heads
    /// of all branches.
    pub fn all_commits(&self) -> Vec<CommitRecord> {
        crate::version::history::all(&self.tree)
    }

    /// Resolves `r` against this dataset's tree and tags, as [`Dataset::open_ref`] does.
    pub fn resolve_ref(&self, r: &Ref) -> Result<ResolvedRef> {
        r.resolve(&self.tree, &self.tags)
    }

    /// 3.x's `ds.diff(a, b, as_dict=True)` from the node being read:
    /// * no refs: the node's own changes (against its parent), one side;
    /// * `a` only: the node and `a`, each down to their common ancestor;
    /// * `a` and `b`: `a` and `b`, each down to their common ancestor.
    ///
    /// Refs resolve as 3.x's diff resolves them: commit id first, then branch, then tag.
    pub async fn diff(&self, a: Option<&Ref>, b: Option<&Ref>) -> Result<VersionDiff> {
        let (sides, ancestor) = self.diff_sides(a, b)?;
        let sides = futures::future::try_join_all(
            sides
                .iter()
                .map(|n| self.side_changes(n, ancestor.as_deref())),
        )
        .await?;
        Ok(VersionDiff {
            lca: ancestor,
            sides,
        })
    }

    /// The row-level diff, sides as in [`Dataset::diff`]: per visible tensor of each
    /// side, the sample ids added, updated and deleted since the common ancestor
    /// (`version::diff` defines them).
    pub async fn diff_rows(&self, a: Option<&Ref>, b: Option<&Ref>) -> Result<RowDiff> {
        let (sides, ancestor) = self.diff_sides(a, b)?;
        let base = match &ancestor {
            Some(n) => Some(self.at(n).await?),
            None => None,
        };
        let mut out = Vec::with_capacity(sides.len());
        for side in &sides {
            out.push(
                self.side_rows(side, ancestor.as_deref(), base.as_ref().map(At::get))
                    .await?,
            );
        }
        Ok(RowDiff {
            lca: ancestor,
            sides: out,
        })
    }

    /// The nodes of each side and their common ancestor.
    fn diff_sides(
        &self,
        a: Option<&Ref>,
        b: Option<&Ref>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let resolve = |r: &Ref| -> Result<String> {
            Ok(r.resolve_for_diff(&self.tree, &self.tags)?.node.to_string())
        };
        let here = self.node.to_string();
        let (x, y) = match (a, b) {
            (None, None) => {
                let parent = self.tree.commits.get(&here).and_then(|n| n.parent.clone());
                return Ok((vec![here], parent));
            }
            (Some(a), None) => (here, resolve(a)?),
            (Some(a), Some(b)) => (resolve(a)?, resolve(b)?),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "a diff against a second ref needs the first ref too",
                ));
            }
        };
        let ancestor = lca(&self.tree, &x, &y);
        Ok((vec![x, y], ancestor))
    }

    /// `node`'s records down to `stop`, newest first.
    async fn side_changes(&self, node: &str, stop: Option<&str>) -> Result<SideChanges> {
        let ids = chain(&self.tree, node, stop);
        let records: Vec<(DatasetChange, CommitChanges)> = futures::stream::iter(ids)
            .map(|c| async move {
                let at = self.at(&c).await?;
                Ok::<_, Error>(at.get().own_changes())
            })
            .buffered(OPEN_CONCURRENCY)
            .try_collect()
            .await?;
        let (dataset, tensor) = records.into_iter().unzip();
        Ok(SideChanges {
            node: node.to_owned(),
            dataset,
            tensor,
        })
    }

    /// The dataset and tensor records of the node this dataset has open. They come
    /// from the loaded state, so a writable head's unflushed changes count, and a node
    /// reads the same here as everywhere else (the loader decides between our flush
    /// records and the 3.x files).
    fn own_changes(&self) -> (DatasetChange, CommitChanges) {
        let id = self.node.as_str();
        let tensors = visible_tensors(&self.meta)
            .into_iter()
            .map(|(name, key)| {
                let d = self.tensors.get(&key).and_then(|t| t.diff.as_ref());
                (name, TensorChange::from_commit_diff(d))
            })
            .collect();
        (
            DatasetChange::new(
                id,
                self.tree.commits.get(id).map(|n| &**n),
                self.ds_diff.as_ref(),
            ),
            CommitChanges {
                commit_id: id.to_owned(),
                tensors,
            },
        )
    }

    fn commit_id_of(&self, id: &str) -> Result<CommitId> {
        id.parse().map_err(|_| {
            Error::corrupt(
                format!("{}/{}", self.store.url(), paths::VERSION_CONTROL_INFO),
                format!("bad commit id {id:?}"),
            )
        })
    }

    /// This dataset if it is at `node`, else the dataset opened read-only there.
    pub(super) async fn at(&self, node: &str) -> Result<At<'_>> {
        if node == self.node.as_str() {
            return Ok(At::This(self));
        }
        let c = self.commit_id_of(node)?;
        let branch = self
            .tree
            .commits
            .get(node)
            .map(|n| n.branch.clone())
            .ok_or_else(|| Error::not_found("commit", node))?;
        let mut ds = Dataset::open_at(
            self.store.clone(),
            self.tree.clone(),
            c,
            branch,
            false,
            Some(self.cache.shared().clone()),
        )
        .await?;
        ds.tags = self.tags.clone();
        Ok(At::Other(Box::new(ds)))
    }

    async fn side_rows(
        &self,
        node: &str,
        stop: Option<&str>,
        base: Option<&Dataset>,
    ) -> Result<SideRows> {
        let here = self.at(node).await?;
        let x = here.get();
        struct Track {
            names: Vec<String>,
            ids: Vec<u64>,
            base_ids: Vec<u64>,
            added: Vec<u64>,
            deleted: Vec<u64>,
            common: BTreeSet<u64>,
            candidates: BTreeSet<u64>,
        }
        // By key: names of one key share its rows.
        let mut tracks: Vec<(String, Track)> = Vec::new();
        for (name, key) in visible_tensors(&x.meta) {
            if let Some((_, t)) = tracks.iter_mut().find(|(k, _)| *k == key) {
                t.names.push(name);
                continue;
            }
            let Some(ids) = id_column(x, &key, None).await? else {
                continue;
            };
            let base_ids = match base {
                Some(b) => id_column(b, &key, None).await?.unwrap_or_default(),
                None => Vec::new(),
            };
            let (added, deleted, common) = id_changes(&base_ids, &ids);
            tracks.push((
                key,
                Track {
                    names: vec![name],
                    ids,
                    base_ids,
                    added,
                    deleted,
                    common,
                    candidates: BTreeSet::new(),
                },
            ));
        }
        // Rows that some commit of the chain touched, by id.
        for c in chain(&self.tree, node, stop) {
            if tracks.iter().all(|(_, t)| t.common.is_empty()) {
                break;
            }
            let held = if c == node {
                None
            } else {
                Some(self.at(&c).await?)
            };
            let d = held.as_ref().map_or(x, At::get);
            for (key, t) in tracks.iter_mut() {
                if t.common.is_empty() {
                    continue;
                }
                let Some(ts) = d.tensors.get(key.as_str()) else {
                    continue;
                };
                let Some(diff) = ts.diff.as_ref() else {
                    continue;
                };
                let rows = touched_rows(diff, ts.num_samples());
                if rows.is_empty() {
                    continue;
                }
                if let Some(ids) = id_column(d, key, Some(&rows)).await? {
                    t.candidates
                        .extend(ids.into_iter().filter(|i| t.common.contains(i)));
                }
            }
        }
        let mut tensors = std::collections::BTreeMap::new();
        for (key, t) in tracks {
            let updated = match base {
                Some(b) if !t.candidates.is_empty() => {
                    changed_rows(x, b, &key, &t.ids, &t.base_ids, &t.candidates).await?
                }
                _ => Vec::new(),
            };
            let changes = RowChanges {
                added: t.added,
                updated,
                deleted: t.deleted,
            };
            for name in t.names {
                tensors.insert(name, changes.clone());
            }
        }
        Ok(SideRows {
            node: node.to_owned(),
            tensors,
        })
    }
}

/// The sample ids of tensor `key` at `ds` (all rows, or the given row ranges), from its
/// `_<t>_id` companion; `None` if the tensor is absent or has no id companion.
pub(super) async fn id_column(
    ds: &Dataset,
    key: &str,
    rows: Option<&[Range<u64>]>,
) -> Result<Option<Vec<u64>>> {
    let Some(t) = ds.tensors.get(key) else {
        return Ok(None);
    };
    let Some(id_key) = t
        .meta
        .links
        .iter()
        .find(|(_, l)| CompanionRole::from_extend(&l.extend) == CompanionRole::Id)
        .map(|(k, _)| k)
    else {
        return Ok(None);
    };
    let Some(ids) = ds.tensors.get(id_key) else {
        return Ok(None);
    };
    let n = ids.num_samples();
    let whole = 0..n;
    let ranges = rows.unwrap_or(std::slice::from_ref(&whole));
    let mut out = Vec::new();
    for r in ranges {
        let (mut start, end) = (r.start.min(n), r.end.min(n));
        if let Some(fast) = plain_ids(ds, ids, start..end).await? {
            out.extend(fast);
            continue;
        }
        while start < end {
            let stop = end.min(start.saturating_add(ID_BATCH));
            let samples = read::read_samples(ds, ids, start..stop, &ReadOptions::default()).await?;
            for (k, s) in samples.iter().enumerate() {
                out.push(sample_id(s).ok_or_else(|| {
                    Error::corrupt(
                        format!("{}/{}", ds.store.url(), ids.key),
                        format!("row {} is not a uint64 sample id", start + k as u64),
                    )
                })?);
            }
            start = stop;
        }
    }
    Ok(Some(out))
}

/// Ids of rows `range` read straight from chunk bytes, when every row is one stored
/// uint64; `None` otherwise (the sample reader then reads them and names a bad row).
async fn plain_ids(ds: &Dataset, ids: &TensorState, range: Range<u64>) -> Result<Option<Vec<u64>>> {
    if ids.dtype != Some(Dtype::U64) || range.is_empty() {
        return Ok(None);
    }
    let Some(parts) = read::read_chunk_parts(ds, ids, range, &ReadOptions::default()).await? else {
        return Ok(None);
    };
    let one = |dims: &[u32]| dims.iter().map(|&d| u64::from(d)).product::<u64>() == 1;
    let id = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes);
    let mut out = Vec::new();
    for (c, locals) in &parts {
        if let Some((dims, 8, span)) = c.uniform_run(locals.clone())
            && one(dims)
            && let Some(b) = c.data.get(span)
        {
            out.extend(b.chunks_exact(8).filter_map(id));
            continue;
        }
        for l in locals.clone() {
            let dims_ok = c.dims(l).is_ok_and(one);
            match c
                .byte_range(l)
                .ok()
                .and_then(|r| c.data.get(r))
                .and_then(id)
            {
                Some(i) if dims_ok => out.push(i),
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(out))
}

fn sample_id(s: &Sample) -> Option<u64> {
    match s {
        Sample::Array(a) if a.dtype == Dtype::U64 && a.data.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&a.data);
            Some(u64::from_le_bytes(b))
        }
        _ => None,
    }
}

/// The candidate ids whose stored value at `x` differs from the one at `base`.
pub(super) async fn changed_rows(
    x: &Dataset,
    base: &Dataset,
    key: &str,
    ids: &[u64],
    base_ids: &[u64],
    candidates: &BTreeSet<u64>,
) -> Result<Vec<u64>> {
    let (Some(tx), Some(tb)) = (x.tensors.get(key), base.tensors.get(key)) else {
        return Ok(Vec::new());
    };
    let index = |col: &[u64]| -> HashMap<u64, u64> {
        col.iter()
            .enumerate()
            .filter(|(_, i)| candidates.contains(i))
            .map(|(k, i)| (*i, k as u64))
            .collect()
    };
    let (at_x, at_base) = (index(ids), index(base_ids));
    let pairs: Vec<(u64, u64, u64)> = candidates
        .iter()
        .filter_map(|id| Some((*id, *at_x.get(id)?, *at_base.get(id)?)))
        .collect();
    let changed: Vec<Option<u64>> = futures::stream::iter(pairs)
        .map(|(id, ix, ib)| async move {
            let (a, b) = futures::try_join!(stored(x, tx, ix), stored(base, tb, ib))?;
            Ok::<_, Error>((a != b).then_some(id))
        })
        .buffered(COMPARE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(changed.into_iter().flatten().collect())
}

async fn stored(ds: &Dataset, t: &TensorState, index: u64) -> Result<Vec<(Vec<u64>, Bytes)>> {
    read::read_stored(ds, t, index).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorOptions;
    use crate::format::array::NdArray;
    use crate::ids::FIRST_COMMIT_ID;
    use crate::version::RefKind;

    fn int(v: i64) -> Sample {
        Sample::Array(NdArray::from_slice(vec![1], &[v]).unwrap())
    }

    async fn ints(ds: &Dataset, t: &str) -> Vec<i64> {
        let n = ds.tensor_len(t).unwrap();
        ds.read_range(t, 0..n)
            .await
            .unwrap()
            .iter()
            .map(|s| match s {
                Sample::Array(a) => a.to_f64_vec()[0] as i64,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    async fn texts(ds: &Dataset, t: &str) -> Vec<String> {
        let n = ds.tensor_len(t).unwrap();
        ds.read_range(t, 0..n)
            .await
            .unwrap()
            .into_iter()
            .map(|s| match s {
                Sample::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    async fn ids(ds: &Dataset, t: &str) -> Vec<u64> {
        let key = ds.key_of(t).unwrap();
        id_column(ds, &key, None).await.unwrap().unwrap()
    }

    fn url() -> String {
        format!("memory://versions-{:016x}", rand::random::<u64>())
    }

    struct History {
        url: String,
        c1: String,
        c2: String,
        c3: String,
    }

    /// Written by our own writer:
    /// c1 (root): x [1,2,3], t [a,b,c]
    /// c2: x[1] = 20, +4/d
    /// alt from c2 -> c3: x[0] = 100, pop row 2, +5/e
    /// main head (not committed): rename t -> text, +6/f
    async fn history() -> History {
        let url = url();
        let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
        ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
            .await
            .unwrap();
        ds.create_tensor("t", TensorOptions::new("text"))
            .await
            .unwrap();
        ds.extend("x", vec![int(1), int(2), int(3)]).await.unwrap();
        ds.extend(
            "t",
            ["a", "b", "c"].map(|s| Sample::Text(s.into())).to_vec(),
        )
        .await
        .unwrap();
        let c1 = ds.commit("first").await.unwrap();
        ds.update("x", 1, int(20)).await.unwrap();
        ds.append_row(vec![
            ("x".into(), int(4)),
            ("t".into(), Sample::Text("d".into())),
        ])
        .await
        .unwrap();
        let c2 = ds.commit("second").await.unwrap();
        ds.checkout("alt", true).await.unwrap();
        ds.update("x", 0, int(100)).await.unwrap();
        ds.pop(Some(2)).await.unwrap();
        ds.append_row(vec![
            ("x".into(), int(5)),
            ("t".into(), Sample::Text("e".into())),
        ])
        .await
        .unwrap();
        let c3 = ds.commit("on alt").await.unwrap();
        ds.checkout("main", false).await.unwrap();
        ds.rename_tensor("t", "text").await.unwrap();
        ds.append_row(vec![
            ("x".into(), int(6)),
            ("text".into(), Sample::Text("f".into())),
        ])
        .await
        .unwrap();
        ds.close().await.unwrap();
        History { url, c1, c2, c3 }
    }

    fn name(s: &str) -> Ref {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn every_version_reads_as_written() {
        let h = history().await;
        assert_eq!(h.c1, FIRST_COMMIT_ID);
        let at = |r: &str| {
            let (url, r) = (h.url.clone(), name(r));
            async move { Dataset::open_ref(&url, &r, OpenOptions::default()).await }
        };
        let c1 = at(&h.c1).await.unwrap();
        assert_eq!(ints(&c1, "x").await, [1, 2, 3]);
        assert_eq!(texts(&c1, "t").await, ["a", "b", "c"]);
        assert_eq!((c1.branch(), c1.is_writable()), ("main", false));
        let c2 = at(&h.c2).await.unwrap();
        assert_eq!(ints(&c2, "x").await, [1, 20, 3, 4]);
        let c3 = at(&h.c3).await.unwrap();
        assert_eq!(ints(&c3, "x").await, [100, 20, 4, 5]);
        assert_eq!(texts(&c3, "t").await, ["a", "b", "d", "e"]);
        assert_eq!(c3.branch(), "alt");
        // A branch opens at its head, uncommitted changes included, read-only.
        let main = at("main").await.unwrap();
        assert_eq!(ints(&main, "x").await, [1, 20, 3, 4, 6]);
        assert_eq!(texts(&main, "text").await, ["a", "b", "c", "d", "f"]);
        assert!(!main.is_writable());
        assert_eq!(main.commit_id().as_deref(), Some(h.c2.as_str()));
        let alt = at("alt").await.unwrap();
        assert_eq!(ints(&alt, "x").await, [100, 20, 4, 5]);
        assert_eq!(alt.node_id().as_str(), alt.tree.branches["alt"]);
        let e = at("nope").await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = at("main").await;
        assert!(e.is_ok());
        let missing = Dataset::open_ref(&url(), &name("main"), OpenOptions::default()).await;
        assert!(matches!(
            missing,
            Err(Error::NotFound {
                what: "dataset",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn urls_with_refs() {
        let h = history().await;
        let ds = Dataset::open_url(&format!("{}@{}", h.url, h.c3), OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(ints(&ds, "x").await, [100, 20, 4, 5]);
        let ds = Dataset::open_url(&format!("{}@alt", h.url), OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(ds.branch(), "alt");
        // Without a ref the URL opens as `open` does: writable at main's head.
        let ds = Dataset::open_url(&h.url, OpenOptions::default())
            .await
            .unwrap();
        assert!(ds.is_writable());
        assert_eq!(ints(&ds, "x").await, [1, 20, 3, 4, 6]);
        drop(ds);
        let both = OpenOptions {
            branch: Some("main".parse().unwrap()),
            ..Default::default()
        };
        let e = Dataset::open_url(&format!("{}@alt", h.url), both)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        // A dataset whose path really ends in `@name` stays reachable.
        let odd = format!("{}@v2", url());
        let mut ds = Dataset::create(&odd, OpenOptions::default()).await.unwrap();
        ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
            .await
            .unwrap();
        ds.append("x", int(7)).await.unwrap();
        ds.close().await.unwrap();
        let ds = Dataset::open_url(&odd, OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(ints(&ds, "x").await, [7]);
        let e = Dataset::open_url(&format!("{}@main", url()), OpenOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotFound {
                    what: "dataset",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn tags_resolve_after_branches_and_commits() {
        let h = history().await;
        let mut ds = Dataset::open(&h.url, OpenOptions::default()).await.unwrap();
        ds.tag("v1", Some(&h.c2)).await.unwrap();
        ds.close().await.unwrap();
        assert_eq!(
            crate::version::tags(&Store::open(&h.url, &Default::default()).unwrap())
                .await
                .unwrap()
                .get("v1"),
            Some(&h.c2)
        );
        let v1 = Dataset::open_ref(&h.url, &name("v1"), OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(ints(&v1, "x").await, [1, 20, 3, 4]);
        let r = v1.resolve_ref(&Ref::Tag("v1".into())).unwrap();
        assert_eq!((r.node.as_str(), r.kind), (h.c2.as_str(), RefKind::Tag));
        assert!(v1.resolve_ref(&Ref::Branch("v1".into())).is_err());
    }

    #[tokio::test]
    async fn log_lists_the_first_parent_chain() {
        let h = history().await;
        let main = Dataset::open_ref(&h.url, &name("main"), OpenOptions::default())
            .await
            .unwrap();
        let log = main.log();
        let got: Vec<(&str, Option<&str>, bool)> = log
            .iter()
            .map(|r| (r.id.as_str(), r.message.as_deref(), r.is_head))
            .collect();
        assert_eq!(
            got,
            [
                (main.node_id().as_str(), None, true),
                (h.c2.as_str(), Some("second"), false),
                (h.c1.as_str(), Some("first"), false),
            ]
        );
        assert!(log[1].date().is_some() && log[0].date().is_none());
        let c3 = Dataset::open_ref(&h.url, &name(&h.c3), OpenOptions::default())
            .await
            .unwrap();
        let ids: Vec<String> = c3.log().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [h.c3.clone(), h.c2.clone(), h.c1.clone()]);
        assert!(c3.log().iter().all(|r| !r.is_head));
    }

    #[tokio::test]
    async fn diffs_in_the_3x_shape() {
        let h = history().await;
        let main = Dataset::open_ref(&h.url, &name("main"), OpenOptions::default())
            .await
            .unwrap();
        let head = main.node_id().to_string();
        // No refs: the head against its parent.
        let d = main.diff(None, None).await.unwrap();
        assert_eq!(d.lca.as_deref(), Some(h.c2.as_str()));
        let [side] = d.sides.as_slice() else {
            panic!("{d:?}")
        };
        assert_eq!(side.dataset.len(), 1);
        assert_eq!(side.dataset[0].commit_id, head);
        assert_eq!(side.dataset[0].date, None);
        assert_eq!(
            side.dataset[0].renamed.get("t").map(String::as_str),
            Some("text")
        );
        let x = &side.tensor[0].tensors["x"];
        assert_eq!(x.data_added, (4, 5));
        assert!(side.tensor[0].tensors.contains_key("text"));
        // Two refs: each side down to the common ancestor c2, newest first.
        let d = main
            .diff(Some(&name("main")), Some(&name("alt")))
            .await
            .unwrap();
        assert_eq!(d.lca.as_deref(), Some(h.c2.as_str()));
        let chain_ids = |i: usize| -> Vec<String> {
            d.sides[i]
                .dataset
                .iter()
                .map(|c| c.commit_id.clone())
                .collect()
        };
        assert_eq!(chain_ids(0), std::slice::from_ref(&head));
        let alt_head = main.tree.branches["alt"].clone();
        assert_eq!(chain_ids(1), [alt_head, h.c3.clone()]);
        let c3 = &d.sides[1].tensor[1];
        assert_eq!(c3.commit_id, h.c3);
        assert_eq!(
            c3.tensors["x"]
                .data_updated
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(
            c3.tensors["x"]
                .data_deleted
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(d.sides[1].dataset[1].message.as_deref(), Some("on alt"));
        let j = d.to_3x_json();
        assert_eq!(j["dataset"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            j["tensor"][1][1]["x"]["data_deleted"],
            serde_json::json!([2])
        );
        // One ref: the node being read against it.
        let one = main.diff(Some(&name(&h.c1)), None).await.unwrap();
        assert_eq!(one.lca.as_deref(), Some(h.c1.as_str()));
        assert_eq!(one.sides[0].dataset.len(), 2);
        assert!(one.sides[1].dataset.is_empty());
        let e = main.diff(None, Some(&name("alt"))).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }));
        assert!(main.diff(Some(&name("zzz")), None).await.is_err());
    }

    #[tokio::test]
    async fn row_diffs_by_sample_id() {
        let h = history().await;
        let open = |r: String| {
            let url = h.url.clone();
            async move {
                Dataset::open_ref(&url, &name(&r), OpenOptions::default())
                    .await
                    .unwrap()
            }
        };
        let (c2, main, alt) = (
            open(h.c2.clone()).await,
            open("main".into()).await,
            open("alt".into()).await,
        );
        let base = ids(&c2, "x").await;
        let (m, a) = (ids(&main, "x").await, ids(&alt, "x").await);
        assert_eq!(&m[..4], &base[..]);
        let d = main
            .diff_rows(Some(&name("main")), Some(&name("alt")))
            .await
            .unwrap();
        assert_eq!(d.lca.as_deref(), Some(h.c2.as_str()));
        let x_main = &d.sides[0].tensors["x"];
        assert_eq!(x_main.added, [m[4]]);
        assert!(x_main.updated.is_empty() && x_main.deleted.is_empty());
        let x_alt = &d.sides[1].tensors["x"];
        assert_eq!(x_alt.added, [a[3]]);
        assert_eq!(x_alt.updated, [base[0]]);
        assert_eq!(x_alt.deleted, [base[2]]);
        // Text rows share nothing with x's ids; the renamed tensor is listed by its
        // name at the node.
        let t_alt = &d.sides[1].tensors["t"];
        assert_eq!(t_alt.deleted, [ids(&c2, "t").await[2]]);
        assert!(t_alt.updated.is_empty());
        assert!(d.sides[0].tensors.contains_key("text"));
        let j = d.to_json();
        assert_eq!(
            j["sides"][1]["tensors"]["x"]["updated"],
            serde_json::json!([base[0]])
        );
        // No refs: the head against its parent; rows of c1 vs c2.
        let own = main.diff_rows(None, None).await.unwrap();
        assert_eq!(own.sides[0].tensors["x"].added, [m[4]]);
        let c2_own = c2.diff_rows(None, None).await.unwrap();
        assert_eq!(c2_own.sides[0].tensors["x"].updated, [base[1]]);
        assert_eq!(c2_own.sides[0].tensors["x"].added, [base[3]]);
        // The first commit against nothing: every row is new.
        let c1 = open(h.c1.clone()).await;
        let first = c1.diff_rows(None, None).await.unwrap();
        assert_eq!(first.lca, None);
        assert_eq!(first.sides[0].tensors["x"].added.len(), 3);
        // A node against itself changes nothing.
        let same = main
            .diff_rows(Some(&name(&h.c3)), Some(&name(&h.c3)))
            .await
            .unwrap();
        assert!(
            same.sides
                .iter()
                .all(|s| s.tensors.values().all(RowChanges::is_empty))
        );
    }

    #[tokio::test]
    async fn diffs_of_a_writable_head_include_unflushed_changes() {
        let h = history().await;
        let mut ds = Dataset::open(&h.url, OpenOptions::default()).await.unwrap();
        ds.update("x", 0, int(-1)).await.unwrap();
        let d = ds.diff(None, None).await.unwrap();
        let x = &d.sides[0].tensor[0].tensors["x"];
        assert_eq!(x.data_updated.iter().copied().collect::<Vec<_>>(), [0]);
        let rows = ds.diff_rows(None, None).await.unwrap();
        assert_eq!(rows.sides[0].tensors["x"].updated, [ids(&ds, "x").await[0]]);
        ds.close().await.unwrap();
    }
}
