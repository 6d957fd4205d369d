//! The algebra of a merge (3.x's `util/merge.py`), pure: which tensors pair up, and per
//! pair of tensors which source rows are appended, which replace ours, and which
//! conflict. `dataset::merge` reads the inputs and writes the result.
//!
//! Tensors pair up by key first (a rename keeps the key, so a tensor of the common
//! ancestor is the same tensor on both sides whatever its names), then by name (two
//! tensors created apart under one name merge, as in 3.x):
//!
//! | at the ancestor | here | in the source | result |
//! |---|---|---|---|
//! | `a` | `a` | `b` | ours renamed to `b` (conflict if we have another `b`) |
//! | `a` | `b` | `a` | ours stays `b` |
//! | `a` | `b` | `c` | conflict: renamed differently on both sides |
//! | `a` | deleted | `a`, changed since | copied back as a new tensor |
//! | `a` | deleted | `a`, unchanged | stays deleted |
//! | `a` | deleted | `b` (renamed) | conflict: renamed there, deleted here |
//! | `a` | `a` | deleted | kept, or removed with `delete_removed_tensors` |
//! | - | - | `n` | copied as a new tensor |
//!
//! Rows pair up by sample id (`_<t>_id`). Each side's *changes* map a sample id to the
//! commits that updated it since the common ancestor, newest first (a merge commit
//! counts as the commits it merged in). For each row the source updated:
//!
//! | we... | result |
//! |---|---|
//! | last updated it in the commit the source last updated it in (merged before) | nothing to do |
//! | did not update it, or last updated it in a commit the source also has | take theirs |
//! | deleted it | re-append it (3.x rule) |
//! | updated it in a commit the source lacks, and the source's latest update is one we also have | keep ours |
//! | updated it otherwise | conflict |
//!
//! Rows the source has and we lack (and did not delete) are appended in source order;
//! re-appended rows take their place in that order. Rows the source deleted stay.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::format::vcinfo::VersionControlInfo;

/// What to do with rows both sides changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MergePolicy {
    /// Refuse the merge and list the conflicting rows.
    #[default]
    None,
    /// Keep our values.
    Ours,
    /// Take the source's values.
    Theirs,
}

impl MergePolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            MergePolicy::None => "none",
            MergePolicy::Ours => "ours",
            MergePolicy::Theirs => "theirs",
        }
    }
}

impl fmt::Display for MergePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MergePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(MergePolicy::None),
            "ours" => Ok(MergePolicy::Ours),
            "theirs" => Ok(MergePolicy::Theirs),
            other => Err(Error::invalid(format!(
                "merge policy {other:?}: expected none, ours or theirs"
            ))),
        }
    }
}

/// Sample id -> the commits that updated it, newest first.
pub type Changes = HashMap<u64, Vec<String>>;

/// A row both sides changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowConflict {
    pub sample_id: u64,
    pub our_row: u64,
    pub their_row: u64,
}

/// What a merge does to one pair of tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowPlan {
    /// Source rows to append, ascending (source order).
    pub append: Vec<u64>,
    /// Of `append`, how many are rows we deleted and the source updated.
    pub resurrected: usize,
    /// `(our row, source row)`: our row takes the source's value.
    pub update: Vec<(u64, u64)>,
    /// Rows both sides changed, by our row.
    pub conflicts: Vec<RowConflict>,
}

/// Plans the rows of one pair of tensors. `ours` and `theirs` are the id columns;
/// `deleted_by_us` the ids we deleted since the common ancestor.
pub fn plan_rows(
    ours: &[u64],
    theirs: &[u64],
    deleted_by_us: &HashSet<u64>,
    our_changes: &Changes,
    their_changes: &Changes,
) -> RowPlan {
    let our_row: HashMap<u64, u64> = ours
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u64))
        .collect();
    let their_row: HashMap<u64, u64> = theirs
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as u64))
        .collect();
    let mut append: BTreeSet<u64> = theirs
        .iter()
        .enumerate()
        .filter(|(_, id)| !our_row.contains_key(id) && !deleted_by_us.contains(id))
        .map(|(i, _)| i as u64)
        .collect();
    let mut plan = RowPlan::default();
    let none = Vec::new();
    // Sorted so that the plan does not depend on hash order.
    let mut updated: Vec<(&u64, &Vec<String>)> = their_changes.iter().collect();
    updated.sort_by_key(|(id, _)| **id);
    for (id, theirs_at) in updated {
        let Some(&t) = their_row.get(id) else {
            continue; // updated, then deleted in the source
        };
        let Some(&o) = our_row.get(id) else {
            if deleted_by_us.contains(id) && append.insert(t) {
                plan.resurrected += 1;
            }
            continue; // a new row: appended with its latest value anyway
        };
        let ours_at = our_changes.get(id).unwrap_or(&none);
        let shared: HashSet<&String> = ours_at.iter().collect();
        let first_shared = theirs_at.iter().position(|c| shared.contains(c));
        match (ours_at.first(), first_shared) {
            (None, _) => plan.update.push((o, t)),
            // Both sides' latest change is the same commit: we have it already.
            (Some(latest), _) if theirs_at.first() == Some(latest) => {}
            (Some(latest), Some(i)) if theirs_at[i] == *latest => plan.update.push((o, t)),
            // Our latest update is newer than everything the source did to the row.
            (Some(_), Some(0)) => {}
            _ => plan.conflicts.push(RowConflict {
                sample_id: *id,
                our_row: o,
                their_row: t,
            }),
        }
    }
    plan.update.sort_unstable();
    plan.conflicts.sort_by_key(|c| c.our_row);
    plan.append = append.into_iter().collect();
    plan
}

/// The nodes whose own diffs make up one side's changes since `ancestor`, newest first:
/// the first-parent chain from `from` until it reaches history the ancestor has; a merge
/// commit stands for the chain it merged in (walked the same way, in its place), not
/// for its own diff, as in 3.x. Each node appears once.
pub fn change_nodes(tree: &VersionControlInfo, from: &str, ancestor: &str) -> Vec<String> {
    fn walk(
        tree: &VersionControlInfo,
        from: &str,
        shared: &HashSet<String>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        for c in tree.ancestry(from) {
            if shared.contains(&c) || !tree.commits.contains_key(&c) || !seen.insert(c.clone()) {
                return;
            }
            match tree.commits.get(&c).and_then(|n| n.merge_parent.as_deref()) {
                Some(m) if tree.commits.contains_key(m) => walk(tree, m, shared, seen, out),
                _ => out.push(c),
            }
        }
    }
    let shared: HashSet<String> = tree.ancestry(ancestor).into_iter().collect();
    let mut out = Vec::new();
    walk(tree, from, &shared, &mut HashSet::new(), &mut out);
    out
}

/// Whether `node` is `from` or lies behind it, following parents and merge parents:
/// then merging `node` into `from` has nothing left to bring.
pub fn merged_into(tree: &VersionControlInfo, from: &str, node: &str) -> bool {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut todo: Vec<&str> = vec![from];
    while let Some(c) = todo.pop() {
        if c == node {
            return true;
        }
        if !seen.insert(c) {
            continue;
        }
        if let Some(n) = tree.commits.get(c) {
            todo.extend(n.parent.as_deref());
            todo.extend(n.merge_parent.as_deref());
        }
    }
    false
}

/// A tensor present on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonTensor {
    /// Our name before the merge.
    pub ours: String,
    /// The source's name.
    pub theirs: String,
    /// Whether ours is renamed to the source's name (the source renamed it).
    pub rename: bool,
}

/// Which tensors a merge pairs, copies and removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorPlan {
    pub common: Vec<CommonTensor>,
    /// Source tensors to copy, by their name.
    pub new: Vec<String>,
    /// Our tensors the source deleted (removed only when asked).
    pub removed: Vec<String>,
}

/// One name per key, in the order given: `(name, key)` pairs -> key -> name.
fn by_key(tensors: &[(String, String)]) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    for (n, k) in tensors {
        out.entry(k.as_str()).or_insert(n.as_str());
    }
    out
}

/// Pairs the visible tensors (`(name, key)`) of the common ancestor, ours and the
/// source's (module docs). `changed_there(key)` says whether the source changed a
/// tensor since the ancestor. Conflicting renames are a non-retryable conflict on
/// `path`.
pub fn plan_tensors(
    path: &str,
    ancestor: &[(String, String)],
    ours: &[(String, String)],
    theirs: &[(String, String)],
    changed_there: &dyn Fn(&str) -> bool,
) -> Result<TensorPlan> {
    let conflict = |message: String| Error::Conflict {
        path: path.to_owned(),
        message,
        retryable: false,
    };
    let at_lca = by_key(ancestor);
    let our_keys = by_key(ours);
    let our_names: BTreeMap<&str, &str> =
        ours.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
    let their_keys = by_key(theirs);
    let mut plan = TensorPlan::default();
    let mut matched: HashSet<&str> = HashSet::new();
    let mut by_name: Vec<&str> = Vec::new();
    // Same tensor on both sides: reconcile the names.
    for (&key, &there) in &their_keys {
        let (Some(&before), Some(&here)) = (at_lca.get(key), our_keys.get(key)) else {
            by_name.push(there);
            continue;
        };
        let rename = if here == there || there == before {
            false
        } else if here == before {
            if our_names.get(there).is_some_and(|k| *k != key) {
                return Err(conflict(format!(
                    "tensor {before} was renamed to {there} in the source, and {there} \
                     names another tensor here"
                )));
            }
            true
        } else {
            return Err(conflict(format!(
                "tensor {before} was renamed to {here} here and to {there} in the source"
            )));
        };
        matched.insert(key);
        plan.common.push(CommonTensor {
            ours: here.to_owned(),
            theirs: there.to_owned(),
            rename,
        });
    }
    // Our names once the renames are done.
    let mut names_after: BTreeMap<String, &str> = our_names
        .iter()
        .map(|(n, k)| ((*n).to_owned(), *k))
        .collect();
    for c in plan.common.iter().filter(|c| c.rename) {
        if let Some(k) = names_after.remove(&c.ours) {
            names_after.insert(c.theirs.clone(), k);
        }
    }
    by_name.sort_unstable();
    for there in by_name {
        let key = theirs
            .iter()
            .find(|(n, _)| n == there)
            .map(|(_, k)| k.as_str())
            .unwrap_or(there);
        if let Some(before) = at_lca.get(key).filter(|b| **b != there) {
            return Err(conflict(format!(
                "tensor {before} was renamed to {there} in the source and deleted here"
            )));
        }
        match names_after.get(there) {
            Some(&k) if !matched.contains(k) => {
                matched.insert(k);
                plan.common.push(CommonTensor {
                    ours: our_names
                        .iter()
                        .find(|(_, kk)| **kk == k)
                        .map(|(n, _)| (*n).to_owned())
                        .unwrap_or_else(|| there.to_owned()),
                    theirs: there.to_owned(),
                    rename: false,
                });
            }
            Some(_) => {
                return Err(conflict(format!(
                    "tensor {there} of the source matches two tensors here"
                )));
            }
            // Deleted here and untouched there: it stays deleted.
            None if at_lca.contains_key(key) && !changed_there(key) => {}
            None => plan.new.push(there.to_owned()),
        }
    }
    for (&key, &here) in &our_keys {
        if !matched.contains(key) && at_lca.contains_key(key) && !their_keys.contains_key(key) {
            plan.removed.push(here.to_owned());
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(v: &[(u64, &[&str])]) -> Changes {
        v.iter()
            .map(|(id, cs)| (*id, cs.iter().map(|c| (*c).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn policies_parse() {
        assert_eq!("none".parse::<MergePolicy>().unwrap(), MergePolicy::None);
        assert_eq!("ours".parse::<MergePolicy>().unwrap(), MergePolicy::Ours);
        assert_eq!(
            "theirs".parse::<MergePolicy>().unwrap(),
            MergePolicy::Theirs
        );
        let e = "mine".parse::<MergePolicy>().unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        assert_eq!(MergePolicy::Theirs.to_string(), "theirs");
    }

    #[test]
    fn rows_follow_the_3x_rules() {
        // Ancestor rows 1..=5. Ours: updated 2 and 4, deleted 5, added 6.
        // Theirs: updated 1, 2, 3 and 5, added 7 and 8 (8 before 7), deleted 4.
        let ours = [1, 2, 3, 4, 6];
        let theirs = [1, 2, 3, 5, 8, 7];
        let deleted: HashSet<u64> = [5].into_iter().collect();
        let mine = changes(&[(2, &["o1"]), (4, &["o1"])]);
        let there = changes(&[(1, &["t1"]), (2, &["t2"]), (3, &["t1"]), (5, &["t1"])]);
        let p = plan_rows(&ours, &theirs, &deleted, &mine, &there);
        assert_eq!(p.update, [(0, 0), (2, 2)]);
        assert_eq!(
            p.conflicts,
            [RowConflict {
                sample_id: 2,
                our_row: 1,
                their_row: 1
            }]
        );
        // 5 comes back (we deleted it, they updated it), then the new rows in their order.
        assert_eq!(p.append, [3, 4, 5]);
        assert_eq!(p.resurrected, 1);
    }

    #[test]
    fn shared_commits_decide_who_is_newer() {
        let none = HashSet::new();
        // 1: our latest update came from the source's m1 (an earlier merge): theirs.
        // 2: we updated after merging m1; they did not since: ours.
        // 3: we both have m1, they updated since, and so did we: conflict.
        // 4: both sides last changed it in m1: nothing to do (even where an earlier
        //    merge kept our value: m1 counts as merged).
        let mine = changes(&[
            (1, &["m1"]),
            (2, &["o2", "m1"]),
            (3, &["o3", "m1"]),
            (4, &["m1", "o4"]),
        ]);
        let there = changes(&[
            (1, &["t2", "m1"]),
            (2, &["m1"]),
            (3, &["t3", "m1"]),
            (4, &["m1"]),
        ]);
        let p = plan_rows(&[1, 2, 3, 4], &[1, 2, 3, 4], &none, &mine, &there);
        assert_eq!(p.update, [(0, 0)]);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].sample_id, 3);
        assert!(p.append.is_empty());
    }

    #[test]
    fn merge_commits_stand_for_what_they_merged() {
        use crate::format::vcinfo::CommitNode;
        use crate::ids::FIRST_COMMIT_ID;
        // root -> l (ancestor) -> a1 -> a2 (alt); l -> m1 -> M (merge of a1) -> h (main).
        let mut t = VersionControlInfo::new_root();
        let mut add = |id: &str, parent: &str, merged: Option<&str>| {
            let mut n = CommitNode::head("b", Some(parent.to_owned()));
            n.commit_time = Some(1.0);
            n.merge_parent = merged.map(str::to_owned);
            t.commits.insert(id.to_owned(), n.into());
        };
        add("l", FIRST_COMMIT_ID, None);
        add("a1", "l", None);
        add("a2", "a1", None);
        add("m1", "l", None);
        add("M", "m1", Some("a1"));
        add("h", "M", None);
        assert_eq!(change_nodes(&t, "h", "l"), ["h", "a1", "m1"]);
        assert_eq!(change_nodes(&t, "a2", "l"), ["a2", "a1"]);
        // A merged-in chain stops where the ancestor's history starts.
        assert_eq!(change_nodes(&t, "M", "m1"), ["a1"]);
        assert!(change_nodes(&t, "l", "l").is_empty());
        assert!(merged_into(&t, "h", "a1"));
        assert!(merged_into(&t, "h", "l"));
        assert!(!merged_into(&t, "h", "a2"));
        assert!(!merged_into(&t, "a2", "m1"));
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
            .collect()
    }

    #[test]
    fn tensors_pair_by_key_then_by_name() {
        let lca = pairs(&[("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"), ("e", "e")]);
        // Ours: renamed b -> bb, deleted d and e, created n.
        let ours = pairs(&[("a", "a"), ("bb", "b"), ("c", "c"), ("n", "n")]);
        // Theirs: renamed a -> aa, deleted c, changed d, kept e unchanged, created n and m.
        let theirs = pairs(&[
            ("aa", "a"),
            ("b", "b"),
            ("d", "d"),
            ("e", "e"),
            ("n", "n"),
            ("m", "m"),
        ]);
        let p = plan_tensors("ds", &lca, &ours, &theirs, &|k| k == "d").unwrap();
        let common: Vec<(&str, &str, bool)> = p
            .common
            .iter()
            .map(|c| (c.ours.as_str(), c.theirs.as_str(), c.rename))
            .collect();
        assert_eq!(
            common,
            [("a", "aa", true), ("bb", "b", false), ("n", "n", false)]
        );
        assert_eq!(p.new, ["d", "m"]);
        assert_eq!(p.removed, ["c"]);
    }

    #[test]
    fn conflicting_renames_are_refused() {
        let lca = pairs(&[("a", "a"), ("x", "x")]);
        let conflict = |ours: &[(&str, &str)], theirs: &[(&str, &str)]| {
            let e = plan_tensors("ds", &lca, &pairs(ours), &pairs(theirs), &|_| true).unwrap_err();
            match e {
                Error::Conflict {
                    retryable: false,
                    message,
                    ..
                } => message,
                other => panic!("{other}"),
            }
        };
        let m = conflict(&[("b", "a"), ("x", "x")], &[("c", "a"), ("x", "x")]);
        assert!(m.contains("renamed to b here and to c"), "{m}");
        let m = conflict(&[("a", "a"), ("b", "x")], &[("b", "a"), ("x", "x")]);
        assert!(m.contains("names another tensor"), "{m}");
        let m = conflict(&[("x", "x")], &[("b", "a"), ("x", "x")]);
        assert!(m.contains("deleted here"), "{m}");
        // The same rename on both sides is no conflict.
        let p = plan_tensors(
            "ds",
            &lca,
            &pairs(&[("b", "a"), ("x", "x")]),
            &pairs(&[("b", "a"), ("x", "x")]),
            &|_| true,
        )
        .unwrap();
        assert_eq!(p.common.len(), 2);
        assert!(p.common.iter().all(|c| !c.rename));
    }
}
