//! Diffs between nodes of the commit tree: the pure part (no IO).
//!
//! * [`lca`] and [`chain`]: the lowest common ancestor of two nodes (the first node of
//!   `a`'s first-parent chain that is also in `b`'s) and the nodes from a node down to,
//!   not including, that ancestor, newest first: 3.x's `compare_commits`.
//! * [`VersionDiff`]: the per-commit records of 3.x's `ds.diff(a, b, as_dict=True)`,
//!   built from each commit's `dataset_diff` and per-tensor `commit_diff`
//!   ([`VersionDiff::to_3x_json`] gives 3.x's dict, sets as sorted lists).
//! * [`RowDiff`]: the row-level form, by sample id (`_<t>_id`) per visible tensor:
//!   `added` = ids at the node that the ancestor lacks, `deleted` = ids at the ancestor
//!   that the node lacks, `updated` = ids at both whose stored value differs. Set
//!   differences of the two id columns are exact where per-commit indices are not (3.x
//!   leaves rows that a merge links by chunk pointer out of `data_added`, and numbers
//!   `data_updated` inconsistently when a commit also pops). To keep value comparisons
//!   in proportion to the change, only rows that some commit of the chain touched
//!   ([`touched_rows`]) are compared.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Range;

use serde_json::{Map, Value, json};

use super::history::format_commit_time;
use crate::format::diff::{CommitDiff, DatasetDiff};
use crate::format::meta::DatasetMeta;
use crate::format::vcinfo::{CommitNode, VersionControlInfo};

/// The lowest common ancestor of `a` and `b` (first-parent chains), if any.
pub fn lca(tree: &VersionControlInfo, a: &str, b: &str) -> Option<String> {
    if a == b {
        return Some(a.to_owned());
    }
    let theirs: HashSet<String> = tree.ancestry(b).into_iter().collect();
    tree.ancestry(a).into_iter().find(|c| theirs.contains(c))
}

/// The first-parent chain from `from` down to `stop` (excluded), newest first; the
/// whole chain to the root when `stop` is `None` or not on it.
pub fn chain(tree: &VersionControlInfo, from: &str, stop: Option<&str>) -> Vec<String> {
    tree.ancestry(from)
        .into_iter()
        .filter(|c| tree.commits.contains_key(c))
        .take_while(|c| Some(c.as_str()) != stop)
        .collect()
}

/// Visible tensors of a dataset meta as 3.x lists them (`visible_tensors`): every name
/// whose key is not hidden, as `(name, key)`. A key may have several names (3.x merges
/// can leave an old and a new name on one key).
pub fn visible_tensors(meta: &DatasetMeta) -> Vec<(String, String)> {
    let hidden: HashSet<&str> = meta.hidden_tensors.iter().map(String::as_str).collect();
    meta.tensor_names
        .iter()
        .filter(|(_, k)| !hidden.contains(k.as_str()))
        .map(|(n, k)| (n.clone(), k.clone()))
        .collect()
}

/// What one commit did to one tensor (3.x's per-tensor diff record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorChange {
    pub created: bool,
    pub cleared: bool,
    pub info_updated: bool,
    /// Half-open range of appended rows.
    pub data_added: (u64, u64),
    pub data_updated: BTreeSet<u64>,
    pub data_deleted: BTreeSet<u64>,
    pub data_transformed_in_place: bool,
}

impl TensorChange {
    /// From the tensor's `commit_diff` in the commit; no file means no change.
    pub fn from_commit_diff(d: Option<&CommitDiff>) -> Self {
        match d {
            None => TensorChange::default(),
            Some(d) => TensorChange {
                created: d.created,
                cleared: d.cleared,
                info_updated: d.info_updated,
                data_added: d.added,
                data_updated: d.updated.iter().copied().collect(),
                data_deleted: d.deleted.iter().copied().collect(),
                data_transformed_in_place: d.data_transformed_in_place,
            },
        }
    }

    /// 3.x's `has_change`: whether the human-readable diff lists the tensor.
    pub fn has_change(&self) -> bool {
        self.created
            || self.cleared
            || self.info_updated
            || self.data_added.1 > self.data_added.0
            || !self.data_updated.is_empty()
            || !self.data_deleted.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "created": self.created,
            "cleared": self.cleared,
            "info_updated": self.info_updated,
            "data_added": [self.data_added.0, self.data_added.1],
            "data_updated": self.data_updated,
            "data_deleted": self.data_deleted,
            "data_transformed_in_place": self.data_transformed_in_place,
        })
    }
}

/// What one commit did to the dataset (3.x's per-commit dataset record).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetChange {
    pub commit_id: String,
    /// `None` for a head node.
    pub author: Option<String>,
    pub message: Option<String>,
    /// As 3.x prints commit times ([`format_commit_time`]); `None` for a head node.
    pub date: Option<String>,
    pub info_updated: bool,
    /// Old name -> new name.
    pub renamed: BTreeMap<String, String>,
    pub deleted: Vec<String>,
    /// For a merge commit we made: the commit it merged in. Not part of 3.x's dict.
    pub merge_parent: Option<String>,
}

impl DatasetChange {
    /// From the node's record and its `dataset_diff` (no file means no change).
    pub fn new(commit_id: &str, node: Option<&CommitNode>, diff: Option<&DatasetDiff>) -> Self {
        let diff = diff.cloned().unwrap_or_default();
        DatasetChange {
            commit_id: commit_id.to_owned(),
            author: node.and_then(|n| n.commit_user_name.clone()),
            message: node.and_then(|n| n.commit_message.clone()),
            date: node
                .and_then(|n| n.commit_time)
                .and_then(format_commit_time),
            info_updated: diff.info_updated,
            renamed: diff.renamed,
            deleted: diff.deleted,
            merge_parent: node.and_then(|n| n.merge_parent.clone()),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "commit_id": self.commit_id,
            "author": self.author,
            "message": self.message,
            "date": self.date,
            "info_updated": self.info_updated,
            "renamed": self.renamed,
            "deleted": self.deleted,
        })
    }
}

/// One commit's tensor records: visible tensor name -> change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitChanges {
    pub commit_id: String,
    pub tensors: BTreeMap<String, TensorChange>,
}

impl CommitChanges {
    /// `{"commit_id": ..., <tensor name>: {...}, ...}` as 3.x builds it.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("commit_id".into(), json!(self.commit_id));
        for (name, c) in &self.tensors {
            m.insert(name.clone(), c.to_json());
        }
        Value::Object(m)
    }
}

/// The records of one side: its node's chain down to the common ancestor, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideChanges {
    pub node: String,
    pub dataset: Vec<DatasetChange>,
    pub tensor: Vec<CommitChanges>,
}

/// A diff in the shape of 3.x's `ds.diff(..., as_dict=True)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionDiff {
    /// The common ancestor (for the one-sided form, the node's parent).
    pub lca: Option<String>,
    /// One side: the current node against its parent (`ds.diff()` without ids).
    /// Two sides: the two nodes against their common ancestor.
    pub sides: Vec<SideChanges>,
}

impl VersionDiff {
    /// 3.x's dict: `{"dataset": [...], "tensor": [...]}` for one side, and
    /// `{"dataset": [side 1, side 2], "tensor": [side 1, side 2]}` (3.x's tuples) for two.
    pub fn to_3x_json(&self) -> Value {
        let ds =
            |s: &SideChanges| Value::Array(s.dataset.iter().map(DatasetChange::to_json).collect());
        let ts =
            |s: &SideChanges| Value::Array(s.tensor.iter().map(CommitChanges::to_json).collect());
        match self.sides.as_slice() {
            [one] => json!({"dataset": ds(one), "tensor": ts(one)}),
            sides => json!({
                "dataset": sides.iter().map(ds).collect::<Vec<_>>(),
                "tensor": sides.iter().map(ts).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Row-level changes of one tensor, by sample id, each list ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowChanges {
    pub added: Vec<u64>,
    pub updated: Vec<u64>,
    pub deleted: Vec<u64>,
}

impl RowChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({"added": self.added, "updated": self.updated, "deleted": self.deleted})
    }
}

/// Row-level changes of one side: visible tensor name at the node -> changes. Tensors
/// without an id companion are left out (their rows have no identity).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideRows {
    pub node: String,
    pub tensors: BTreeMap<String, RowChanges>,
}

/// The row-level diff, sides as in [`VersionDiff`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowDiff {
    pub lca: Option<String>,
    pub sides: Vec<SideRows>,
}

impl RowDiff {
    /// `{"lca": id|null, "sides": [{"node": id, "tensors": {name: {added, updated, deleted}}}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "lca": self.lca,
            "sides": self.sides.iter().map(|s| json!({
                "node": s.node,
                "tensors": s.tensors.iter().map(|(n, c)| (n.clone(), c.to_json())).collect::<Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Ids at the node that the ancestor lacks, and ids at the ancestor that the node
/// lacks, each ascending; plus the ids both have.
pub fn id_changes(ancestor: &[u64], node: &[u64]) -> (Vec<u64>, Vec<u64>, BTreeSet<u64>) {
    let before: BTreeSet<u64> = ancestor.iter().copied().collect();
    let after: BTreeSet<u64> = node.iter().copied().collect();
    let added = after.difference(&before).copied().collect();
    let deleted = before.difference(&after).copied().collect();
    let common = before.intersection(&after).copied().collect();
    (added, deleted, common)
}

/// Rows (in the commit's own final numbering, below `len`) that a commit may have
/// written, as sorted disjoint ranges: the appended range, the updated rows, and every
/// row if the tensor was created, cleared or transformed in place. When the commit also
/// popped rows, 3.x records an update in the numbering before or after the pops
/// depending on the order of the calls, so both readings are included.
pub fn touched_rows(d: &CommitDiff, len: u64) -> Vec<Range<u64>> {
    if d.created || d.cleared || d.data_transformed_in_place {
        return std::iter::once(0..len).filter(|r| !r.is_empty()).collect();
    }
    let deleted: BTreeSet<u64> = d.deleted.iter().copied().collect();
    let mut rows: Vec<Range<u64>> = Vec::with_capacity(d.updated.len() * 2 + 1);
    let (a, b) = (d.added.0.min(len), d.added.1.min(len));
    if a < b {
        rows.push(a..b);
    }
    for &u in &d.updated {
        rows.push(u..u.saturating_add(1));
        if !deleted.is_empty() && !deleted.contains(&u) {
            let shifted = u - deleted.range(..u).count() as u64;
            rows.push(shifted..shifted.saturating_add(1));
        }
    }
    let mut rows: Vec<Range<u64>> = rows
        .into_iter()
        .map(|r| r.start.min(len)..r.end.min(len))
        .filter(|r| r.start < r.end)
        .collect();
    rows.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(rows.len());
    for r in rows {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FIRST_COMMIT_ID;

    fn id(n: u8) -> String {
        format!("{n:x}").repeat(40)
    }

    /// root -> 1 -> 2 -> 3 (main head); 2 -> 4 -> 5 (alt head); 1 -> 6 (b head).
    fn tree() -> VersionControlInfo {
        let mut t = VersionControlInfo::new_root();
        let mut add = |n: u8, parent: &str, branch: &str| {
            let mut c = CommitNode::head(branch, Some(parent.to_owned()));
            c.commit_time = Some(f64::from(n));
            t.commits.insert(id(n), c.into());
        };
        add(1, FIRST_COMMIT_ID, "main");
        add(2, &id(1), "main");
        add(3, &id(2), "main");
        add(4, &id(2), "alt");
        add(5, &id(4), "alt");
        add(6, &id(1), "b");
        t
    }

    #[test]
    fn lowest_common_ancestors() {
        let t = tree();
        assert_eq!(lca(&t, &id(3), &id(5)), Some(id(2)));
        assert_eq!(lca(&t, &id(5), &id(3)), Some(id(2)));
        assert_eq!(lca(&t, &id(5), &id(6)), Some(id(1)));
        assert_eq!(
            lca(&t, &id(3), &id(2)),
            Some(id(2)),
            "an ancestor is its own LCA"
        );
        assert_eq!(lca(&t, &id(2), &id(3)), Some(id(2)));
        assert_eq!(lca(&t, &id(4), &id(4)), Some(id(4)));
        assert_eq!(
            lca(&t, FIRST_COMMIT_ID, &id(5)),
            Some(FIRST_COMMIT_ID.to_owned())
        );
        assert_eq!(lca(&t, &id(3), "unknown"), None);
    }

    #[test]
    fn chains_end_before_the_ancestor() {
        let t = tree();
        assert_eq!(chain(&t, &id(5), Some(&id(2))), [id(5), id(4)]);
        assert_eq!(chain(&t, &id(3), Some(&id(2))), [id(3)]);
        assert!(chain(&t, &id(2), Some(&id(2))).is_empty());
        assert_eq!(
            chain(&t, &id(2), None),
            [id(2), id(1), FIRST_COMMIT_ID.to_owned()]
        );
        // A stop that is not an ancestor walks to the root.
        assert_eq!(chain(&t, &id(6), Some(&id(3))).len(), 3);
        assert!(chain(&t, "unknown", None).is_empty());
    }

    #[test]
    fn visible_tensors_keep_every_name_of_a_key() {
        let meta: DatasetMeta = DatasetMeta::decode(
            br#"{"version":"3.9.52","tensors":["vec","_vec_id"],"hidden_tensors":["_vec_id"],
                "tensor_names":{"vec":"vec","vectors":"vec","_vec_id":"_vec_id","_vectors_id":"_vec_id"}}"#,
        )
        .unwrap();
        assert_eq!(
            visible_tensors(&meta),
            [
                ("vec".into(), "vec".into()),
                ("vectors".into(), "vec".into())
            ]
        );
    }

    #[test]
    fn dict_form_matches_3x() {
        let diff = CommitDiff {
            created: true,
            added: (0, 3),
            updated: vec![5, 1, 5],
            deleted: vec![9],
            ..Default::default()
        };
        let c = TensorChange::from_commit_diff(Some(&diff));
        assert!(c.has_change());
        assert!(!TensorChange::from_commit_diff(None).has_change());
        let mut node = CommitNode::head("main", None);
        let head = DatasetChange::new("h", Some(&node), None);
        assert_eq!(
            head.to_json(),
            json!({"commit_id": "h", "author": null, "message": null, "date": null,
                   "info_updated": false, "renamed": {}, "deleted": []})
        );
        node.commit_time = Some(0.0);
        node.commit_message = Some("m".into());
        node.commit_user_name = Some("public".into());
        let mut dd = DatasetDiff::default();
        dd.renamed.insert("a".into(), "b".into());
        dd.deleted.push("gone".into());
        let done = DatasetChange::new("c", Some(&node), Some(&dd));
        let side = SideChanges {
            node: "c".into(),
            dataset: vec![done],
            tensor: vec![CommitChanges {
                commit_id: "c".into(),
                tensors: [("t".to_owned(), c)].into_iter().collect(),
            }],
        };
        let one = VersionDiff {
            lca: None,
            sides: vec![side.clone()],
        };
        let want_ds = json!({"commit_id": "c", "author": "public", "message": "m",
            "date": "1970-01-01 00:00:00", "info_updated": false, "renamed": {"a": "b"},
            "deleted": ["gone"]});
        let want_t = json!({"commit_id": "c", "t": {"created": true, "cleared": false,
            "info_updated": false, "data_added": [0, 3], "data_updated": [1, 5],
            "data_deleted": [9], "data_transformed_in_place": false}});
        assert_eq!(
            one.to_3x_json(),
            json!({"dataset": [want_ds], "tensor": [want_t]})
        );
        let two = VersionDiff {
            lca: Some("x".into()),
            sides: vec![side, SideChanges::default()],
        };
        assert_eq!(
            two.to_3x_json(),
            json!({"dataset": [[want_ds], []], "tensor": [[want_t], []]})
        );
    }

    #[test]
    fn id_set_changes() {
        let (added, deleted, common) = id_changes(&[5, 1, 9, 3], &[3, 7, 1, 2]);
        assert_eq!(added, [2, 7]);
        assert_eq!(deleted, [5, 9]);
        assert_eq!(common.into_iter().collect::<Vec<_>>(), [1, 3]);
        let rd = RowDiff {
            lca: Some("l".into()),
            sides: vec![SideRows {
                node: "n".into(),
                tensors: [(
                    "t".to_owned(),
                    RowChanges {
                        added: vec![u64::MAX],
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
            }],
        };
        assert_eq!(
            rd.to_json(),
            json!({"lca": "l", "sides": [{"node": "n", "tensors": {"t":
                {"added": [u64::MAX], "updated": [], "deleted": []}}}]})
        );
    }

    #[test]
    fn touched_rows_cover_appends_updates_and_both_pop_numberings() {
        let d = CommitDiff {
            added: (8, 10),
            updated: vec![1, 3, 9],
            ..Default::default()
        };
        assert_eq!(touched_rows(&d, 10), [1..2, 3..4, 8..10]);
        // Rows past the node's length (stale numbers) are dropped.
        assert_eq!(touched_rows(&d, 4), [1..2, 3..4]);
        let popped = CommitDiff {
            added: (5, 6),
            updated: vec![4, 2],
            deleted: vec![1, 2],
            ..Default::default()
        };
        // 4 reads as 4 (after the pops) or 2 (before them); 2 was itself popped.
        assert_eq!(touched_rows(&popped, 6), [2..3, 4..6]);
        for all in [
            CommitDiff {
                created: true,
                ..Default::default()
            },
            CommitDiff {
                cleared: true,
                ..Default::default()
            },
            CommitDiff {
                data_transformed_in_place: true,
                ..Default::default()
            },
        ] {
            assert_eq!(touched_rows(&all, 7), std::slice::from_ref(&(0..7)));
            assert!(touched_rows(&all, 0).is_empty());
        }
        let adjacent = CommitDiff {
            added: (2, 4),
            updated: vec![0, 1, 4],
            ..Default::default()
        };
        assert_eq!(touched_rows(&adjacent, 5), std::slice::from_ref(&(0..5)));
        let huge = CommitDiff {
            added: (u64::MAX - 1, u64::MAX),
            updated: vec![u64::MAX],
            ..Default::default()
        };
        assert!(touched_rows(&huge, 3).is_empty());
    }
}
