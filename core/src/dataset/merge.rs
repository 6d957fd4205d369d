//! `Dataset::merge`: merges a branch, commit or tag into the head being written, with
//! 3.x's semantics (`util/merge.py`; the rules are tabled in `version::merge`).
//!
//! ```text
//! resolve the source; a branch head with changes is committed on its branch first
//!   ("Auto commit before merging into <branch>", as 3.x does)
//! source an ancestor, or merged before?      -> nothing to merge, nothing written
//! plan (reads only): pair the tensors; per pair, the source rows to append, the rows
//!   whose source value replaces ours, the rows both sides changed
//! conflicts under policy none                -> Conflict error listing them; nothing written
//! our head has changes?                      -> committed first (see below)
//! apply: renames, rows (stored bytes and companion rows copied as stored, so merged
//!   rows keep the source's sample ids), new tensors, removed tensors
//! commit "Merge <source commit> into <branch>", merge_parent = the source commit
//! ```
//!
//! A failure while applying resets the head (it had no changes of its own), so a merge
//! lands whole, as one commit, or not at all.
//!
//! Unlike 3.x, a head with uncommitted changes is committed before the merge
//! ("Auto commit before merging <source> into <branch>"). The merge commit then holds
//! only what the merge wrote, which later merges attribute to the merged commits (the
//! 3.x rule for merge commits), while the head's own edits keep counting as ours.
//!
//! Rows of the source whose sample ids we lack are appended even where 3.x would link
//! whole chunks by `chunk_set` pointer; the data read back is the same. Rows that are
//! padding in every tensor are not dropped.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use super::encode::{Prepared, StoredItem};
use super::read;
use super::tensor::{CompanionRole, TensorState};
use super::versions::{At, changed_rows, id_column};
use super::{Dataset, class_names, replace_in_tensor};
use crate::error::{Error, Result};
use crate::format::array::{element_to_f64, put_f64_as};
use crate::format::diff::CommitDiff;
use crate::format::dtype::Dtype;
use crate::format::htype::BaseHtype;
use crate::ids::{CommitId, TensorName};
use crate::version::diff::{TensorChange, lca, touched_rows, visible_tensors};
use crate::version::merge::{
    Changes, MergePolicy, RowConflict, RowPlan, TensorPlan, change_nodes, merged_into, plan_rows,
    plan_tensors,
};
use crate::version::{Ref, log};

/// Source rows read and written at once.
const ROW_BATCH: usize = 256;

/// How to merge.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    pub policy: MergePolicy,
    /// Remove our tensors that the source deleted (3.x's `delete_removed_tensors`).
    pub delete_removed_tensors: bool,
}

/// What a merge did to one tensor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorMerge {
    /// Copied from the source as a new tensor (its rows count as added).
    pub created: bool,
    /// Source rows appended (rows we lacked).
    pub rows_added: u64,
    /// Of those, rows we had deleted and the source updated.
    pub rows_readded: u64,
    /// Our rows that took the source's value (conflicts resolved as theirs included).
    pub rows_updated: u64,
    /// Rows both sides changed, resolved by the policy.
    pub conflicts: Vec<RowConflict>,
}

impl TensorMerge {
    pub fn is_empty(&self) -> bool {
        !self.created && self.rows_added == 0 && self.rows_updated == 0 && self.conflicts.is_empty()
    }
}

/// What [`Dataset::merge`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeOutcome {
    /// The source as given.
    pub source: String,
    /// The commit merged in.
    pub source_commit: String,
    /// Whether the source branch's head was committed first.
    pub source_auto_commit: bool,
    /// Our head's changes, committed before the merge, if it had any.
    pub own_auto_commit: Option<String>,
    pub lca: Option<String>,
    pub policy: MergePolicy,
    /// The merge commit; `None` when there was nothing to merge (the source is an
    /// ancestor of the head, or was merged into it before).
    pub commit: Option<String>,
    /// Tensors (by their name after the merge) with something merged.
    pub tensors: BTreeMap<String, TensorMerge>,
    /// Our tensors renamed as the source renamed them: old name -> new name.
    pub renamed: BTreeMap<String, String>,
    /// Our tensors the source deleted, removed (`delete_removed_tensors`) or kept.
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

impl MergeOutcome {
    pub fn to_json(&self) -> Value {
        let tensors: serde_json::Map<String, Value> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    json!({
                        "created": t.created,
                        "rows_added": t.rows_added,
                        "rows_readded": t.rows_readded,
                        "rows_updated": t.rows_updated,
                        "conflicts": conflicts_json(&t.conflicts),
                    }),
                )
            })
            .collect();
        json!({
            "source": self.source,
            "source_commit": self.source_commit,
            "source_auto_commit": self.source_auto_commit,
            "own_auto_commit": self.own_auto_commit,
            "lca": self.lca,
            "policy": self.policy.as_str(),
            "merged": self.commit.is_some(),
            "commit": self.commit,
            "tensors": tensors,
            "renamed": self.renamed,
            "removed_tensors": self.removed,
            "kept_tensors": self.kept,
        })
    }
}

fn conflicts_json(c: &[RowConflict]) -> Value {
    Value::Array(
        c.iter()
            .map(|c| json!({"sample_id": c.sample_id, "row": c.our_row, "source_row": c.their_row}))
            .collect(),
    )
}

/// One pair of common tensors, planned.
struct Pair {
    /// Our key and the source's (equal unless paired by name).
    ours: String,
    theirs: String,
    /// The name after the merge.
    name: String,
    their_ids: Vec<u64>,
    rows: RowPlan,
}

/// Everything the apply step needs, read before anything is written.
struct Plan {
    tensors: TensorPlan,
    pairs: Vec<Pair>,
}

impl Dataset {
    /// Merges `source` (a branch, commit id or tag) into the head being written, as 3.x's
    /// `ds.merge(source, conflict_resolution=policy)` does (module docs). Source
    /// tensors deleted since the common ancestor are kept; see [`Dataset::merge_with`].
    pub async fn merge(&mut self, source: &str, policy: MergePolicy) -> Result<MergeOutcome> {
        self.merge_with(
            source,
            MergeOptions {
                policy,
                ..Default::default()
            },
        )
        .await
    }

    /// [`Dataset::merge`] with all options.
    pub async fn merge_with(&mut self, source: &str, opts: MergeOptions) -> Result<MergeOutcome> {
        self.check_writable()?;
        self.ensure_lease().await?;
        self.flush_all().await?;
        let r: Ref = source.parse()?;
        self.reload_tree().await?;
        let at = self.resolve_ref(&r)?;
        if at.node == self.node {
            return Err(Error::invalid(format!(
                "{source} is the head being written: a branch cannot be merged into itself"
            )));
        }
        let is_head = self.tree.branches.get(&at.branch) == Some(&at.node.to_string());
        let (target, source_auto_commit) = if is_head {
            self.commit_source_head(&at.branch).await?
        } else {
            (at.node.to_string(), false)
        };
        self.reload_tree().await?;
        let mut outcome = MergeOutcome {
            source: source.to_owned(),
            source_commit: target.clone(),
            source_auto_commit,
            policy: opts.policy,
            ..Default::default()
        };
        let ancestor = lca(&self.tree, self.node.as_str(), &target).ok_or_else(|| {
            Error::invalid(format!(
                "{source} shares no history with branch {}",
                self.branch
            ))
        })?;
        outcome.lca = Some(ancestor.clone());
        // 3.x stops only when the source is a first-parent ancestor; a source merged
        // before (reachable through a merge parent) has nothing left to bring either.
        if ancestor == target || merged_into(&self.tree, self.node.as_str(), &target) {
            return Ok(outcome);
        }
        let src = self.open_node(&target).await?;
        let base = self.open_node(&ancestor).await?;
        let plan = self
            .plan_merge(&src, &base, &target, &ancestor, opts.policy)
            .await?;
        let conflicts: Vec<(&str, &[RowConflict])> = plan
            .pairs
            .iter()
            .filter(|p| !p.rows.conflicts.is_empty())
            .map(|p| (p.name.as_str(), p.rows.conflicts.as_slice()))
            .collect();
        if !conflicts.is_empty() && opts.policy == MergePolicy::None {
            return Err(Error::Conflict {
                path: self.store.url().to_owned(),
                message: conflict_message(source, &self.branch, &ancestor, &conflicts),
                retryable: false,
            });
        }
        // Rows and keys are the same after a commit, so the plan still holds.
        if self.has_changes() {
            let msg = format!("Auto commit before merging {source} into {}", self.branch);
            outcome.own_auto_commit = Some(self.commit(&msg).await?);
        }
        if let Err(e) = self.apply_merge(&src, &plan, &opts, &mut outcome).await {
            // The head had no changes of its own: dropping what was written undoes it.
            let _ = self.reset().await;
            return Err(e);
        }
        let message = format!("Merge {target} into {}", self.branch);
        outcome.commit = Some(self.commit_node(&message, Some(target)).await?);
        Ok(outcome)
    }

    async fn reload_tree(&mut self) -> Result<()> {
        let (_, tree, tags) = log::load(&self.store).await?;
        self.tree = tree.into();
        self.tags = tags;
        Ok(())
    }

    /// The commit to merge from branch `branch`: its head's changes committed first (3.x
    /// does), else its last commit. Takes the branch's writer lease for that.
    async fn commit_source_head(&self, branch: &str) -> Result<(String, bool)> {
        let head: CommitId = self
            .tree
            .branches
            .get(branch)
            .ok_or_else(|| Error::not_found("branch", branch))?
            .parse()?;
        let mut src = Box::pin(Dataset::open_at(
            self.store.clone(),
            self.tree.clone(),
            head,
            branch.to_owned(),
            true,
            Some(self.cache.shared().clone()),
        ))
        .await?;
        src.lease = super::commit::Lease::new(Some(self.lease.ttl), None);
        if let Err(e) = src.acquire().await {
            return Err(match e {
                Error::Conflict {
                    path,
                    message,
                    retryable,
                } => Error::Conflict {
                    path,
                    message: format!(
                        "the head of source branch {branch} must be committed before the \
                         merge, but {message}"
                    ),
                    retryable,
                },
                other => other,
            });
        }
        let result = if src.has_changes() {
            let msg = format!("Auto commit before merging into {}", self.branch);
            src.commit(&msg).await.map(|c| (c, true))
        } else {
            src.tree
                .commits
                .get(src.node.as_str())
                .and_then(|n| n.parent.clone())
                .map(|p| (p, false))
                .ok_or_else(|| Error::internal("a head other than the root has no parent"))
        };
        let closed = src.close().await;
        let out = result?;
        closed?;
        Ok(out)
    }

    /// The dataset at `node`, read-only.
    async fn open_node(&self, node: &str) -> Result<Dataset> {
        let c: CommitId = node.parse()?;
        let branch = self
            .tree
            .commits
            .get(node)
            .map(|n| n.branch.clone())
            .ok_or_else(|| Error::not_found("commit", node))?;
        let mut ds = Box::pin(Dataset::open_at(
            self.store.clone(),
            self.tree.clone(),
            c,
            branch,
            false,
            Some(self.cache.shared().clone()),
        ))
        .await?;
        ds.tags = self.tags.clone();
        Ok(ds)
    }

    async fn plan_merge(
        &self,
        src: &Dataset,
        base: &Dataset,
        target: &str,
        ancestor: &str,
        policy: MergePolicy,
    ) -> Result<Plan> {
        let (ours_v, theirs_v) = (visible_tensors(&self.meta), visible_tensors(&src.meta));
        for (ds, tensors) in [(self, &ours_v), (src, &theirs_v)] {
            for (name, key) in tensors.iter() {
                if id_companion(ds, key).is_none() {
                    return Err(Error::unsupported(format!(
                        "tensor {name} has no sample-id companion (_{name}_id), and a merge \
                         matches rows by sample id"
                    )));
                }
            }
        }
        let our_nodes = self
            .open_all(&change_nodes(&self.tree, self.node.as_str(), ancestor))
            .await?;
        let their_nodes = self
            .open_all(&change_nodes(&self.tree, target, ancestor))
            .await?;
        let changed_there = |key: &str| {
            their_nodes.iter().any(|(_, at)| {
                at.get()
                    .tensors
                    .get(key)
                    .is_some_and(|t| TensorChange::from_commit_diff(t.diff.as_ref()).has_change())
            })
        };
        let tensors = plan_tensors(
            self.store.url(),
            &visible_tensors(&base.meta),
            &ours_v,
            &theirs_v,
            &changed_there,
        )?;
        let mut pairs = Vec::with_capacity(tensors.common.len());
        for c in &tensors.common {
            let ours = self.key_of(&c.ours)?;
            let theirs = src.key_of(&c.theirs)?;
            check_compatible(self, &ours, src, &theirs, &c.theirs)?;
            let our_ids = id_column(self, &ours, None).await?.unwrap_or_default();
            let their_ids = id_column(src, &theirs, None).await?.unwrap_or_default();
            let base_key = if base.tensors.contains_key(&ours) {
                &ours
            } else {
                &theirs
            };
            let base_ids = id_column(base, base_key, None).await?.unwrap_or_default();
            let mut deleted: HashSet<u64> = base_ids.into_iter().collect();
            for id in &our_ids {
                deleted.remove(id);
            }
            for (_, at) in &our_nodes {
                if let Some(d) = at.get().tensors.get(&ours).and_then(|t| t.diff.as_ref()) {
                    deleted.extend(d.deleted_ids.iter().copied());
                }
            }
            let our_changes = self.changes(&our_nodes, &ours).await?;
            let their_changes = self.changes(&their_nodes, &theirs).await?;
            let rows = plan_rows(&our_ids, &their_ids, &deleted, &our_changes, &their_changes);
            let replaced = !rows.update.is_empty()
                || (policy == MergePolicy::Theirs && !rows.conflicts.is_empty());
            if replaced && src.tensors.get(&theirs).is_some_and(|t| t.seq.is_some()) {
                return Err(Error::unsupported(format!(
                    "merging updated rows of sequence tensor {}",
                    c.theirs
                )));
            }
            pairs.push(Pair {
                ours,
                theirs,
                name: if c.rename { &c.theirs } else { &c.ours }.clone(),
                their_ids,
                rows,
            });
        }
        Ok(Plan { tensors, pairs })
    }

    async fn open_all(&self, nodes: &[String]) -> Result<Vec<(String, At<'_>)>> {
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            out.push((n.clone(), self.at(n).await?));
        }
        Ok(out)
    }

    /// Sample id -> the nodes (newest first) whose diff of tensor `key` updated it.
    async fn changes(&self, nodes: &[(String, At<'_>)], key: &str) -> Result<Changes> {
        let mut out = Changes::new();
        for (id, at) in nodes {
            let d = at.get();
            let Some(t) = d.tensors.get(key) else {
                continue;
            };
            let Some(diff) = t.diff.as_ref().filter(|d| !d.updated.is_empty()) else {
                continue;
            };
            let n = t.num_samples();
            let ids = if diff.deleted.is_empty() {
                let rows: Vec<_> = diff
                    .updated
                    .iter()
                    .filter(|u| **u < n)
                    .map(|u| *u..u + 1)
                    .collect();
                id_column(d, key, Some(&rows)).await?.unwrap_or_default()
            } else {
                self.updated_across_pops(d, id, key, diff, n).await?
            };
            for i in ids {
                out.entry(i).or_default().push(id.clone());
            }
        }
        Ok(out)
    }

    /// The ids a commit that also popped rows updated. 3.x numbers such updates before
    /// or after the pops depending on the order of the calls, so both readings are
    /// candidates, and a candidate counts when its value differs from the parent's.
    async fn updated_across_pops(
        &self,
        d: &Dataset,
        node: &str,
        key: &str,
        diff: &CommitDiff,
        n: u64,
    ) -> Result<Vec<u64>> {
        let only_updates = CommitDiff {
            updated: diff.updated.clone(),
            deleted: diff.deleted.clone(),
            ..Default::default()
        };
        let rows = touched_rows(&only_updates, n);
        let candidates: std::collections::BTreeSet<u64> = id_column(d, key, Some(&rows))
            .await?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let Some(parent) = self.tree.commits.get(node).and_then(|c| c.parent.clone()) else {
            return Ok(candidates.into_iter().collect());
        };
        let p = self.at(&parent).await?;
        let Some(parent_ids) = id_column(p.get(), key, None).await? else {
            return Ok(candidates.into_iter().collect());
        };
        let ids = id_column(d, key, None).await?.unwrap_or_default();
        changed_rows(d, p.get(), key, &ids, &parent_ids, &candidates).await
    }

    async fn apply_merge(
        &mut self,
        src: &Dataset,
        plan: &Plan,
        opts: &MergeOptions,
        outcome: &mut MergeOutcome,
    ) -> Result<()> {
        for c in plan.tensors.common.iter().filter(|c| c.rename) {
            self.rename_tensor(&c.ours, &c.theirs).await?;
            outcome.renamed.insert(c.ours.clone(), c.theirs.clone());
        }
        for p in &plan.pairs {
            let r = self.merge_pair(src, p, opts.policy).await?;
            if !r.is_empty() {
                outcome.tensors.insert(p.name.clone(), r);
            }
        }
        for name in &plan.tensors.new {
            let r = self.copy_tensor(src, name).await?;
            outcome.tensors.insert(name.clone(), r);
        }
        for name in &plan.tensors.removed {
            if opts.delete_removed_tensors {
                self.delete_tensor(name).await?;
                outcome.removed.push(name.clone());
            } else {
                outcome.kept.push(name.clone());
            }
        }
        self.flush_all().await
    }

    async fn merge_pair(
        &mut self,
        src: &Dataset,
        p: &Pair,
        policy: MergePolicy,
    ) -> Result<TensorMerge> {
        let st = src
            .tensors
            .get(&p.theirs)
            .ok_or_else(|| Error::not_found("tensor", &p.name))?;
        let mut updates = p.rows.update.clone();
        if policy == MergePolicy::Theirs {
            updates.extend(p.rows.conflicts.iter().map(|c| (c.our_row, c.their_row)));
            updates.sort_unstable();
        }
        self.adopt_dtype(&p.ours, st)?;
        let remap = self.class_label_map(&p.ours, st)?;
        for batch in updates.chunks(ROW_BATCH) {
            let rows: Vec<u64> = batch.iter().map(|(_, t)| *t).collect();
            let mut prepared = read::read_prepared(src, st, &rows).await?;
            remap_labels(&mut prepared, remap.as_deref(), st)?;
            let comps = self
                .source_companions(src, &p.ours, &p.theirs, &rows, &prepared, &p.their_ids)
                .await?;
            for (k, ((ours, _), item)) in batch.iter().zip(prepared).enumerate() {
                let Prepared::Item(it) = item else {
                    return Err(Error::internal("a sequence row in a plain tensor"));
                };
                let row: Vec<(String, StoredItem)> = comps
                    .iter()
                    .filter(|(ck, _)| self.role_of(&p.ours, ck) != CompanionRole::Id)
                    .filter_map(|(ck, rows)| match rows.get(k) {
                        Some(Prepared::Item(c)) => Some((ck.clone(), c.clone())),
                        _ => None,
                    })
                    .collect();
                self.put_row(&p.ours, *ours, it, row).await?;
            }
        }
        self.append_source_rows(
            src,
            &p.ours,
            &p.theirs,
            &p.rows.append,
            &p.their_ids,
            remap.as_deref(),
        )
        .await?;
        Ok(TensorMerge {
            created: false,
            rows_added: p.rows.append.len() as u64,
            rows_readded: p.rows.resurrected as u64,
            rows_updated: updates.len() as u64,
            conflicts: p.rows.conflicts.clone(),
        })
    }

    /// Appends source rows `rows` (ascending) of tensor `theirs` to our tensor `ours`,
    /// with their sample ids and companion rows.
    async fn append_source_rows(
        &mut self,
        src: &Dataset,
        ours: &str,
        theirs: &str,
        rows: &[u64],
        their_ids: &[u64],
        remap: Option<&[u64]>,
    ) -> Result<()> {
        let st = src
            .tensors
            .get(theirs)
            .ok_or_else(|| Error::not_found("tensor", theirs))?;
        for batch in rows.chunks(ROW_BATCH) {
            let mut prepared = read::read_prepared(src, st, batch).await?;
            remap_labels(&mut prepared, remap, st)?;
            let comps = self
                .source_companions(src, ours, theirs, batch, &prepared, their_ids)
                .await?;
            self.append_with_companions(ours, prepared, comps).await?;
        }
        Ok(())
    }

    fn role_of(&self, key: &str, companion: &str) -> CompanionRole {
        self.tensors
            .get(key)
            .and_then(|t| t.meta.links.get(companion))
            .map_or(CompanionRole::Other, |l| {
                CompanionRole::from_extend(&l.extend)
            })
    }

    /// Our companion rows for source rows `rows` of tensor `theirs` (already read as
    /// `prepared`): the source's sample ids, and its shape and info rows as stored
    /// where the source has a like companion (else made from the samples, as an
    /// append makes them).
    async fn source_companions(
        &self,
        src: &Dataset,
        ours: &str,
        theirs: &str,
        rows: &[u64],
        prepared: &[Prepared],
        their_ids: &[u64],
    ) -> Result<Vec<(String, Vec<Prepared>)>> {
        let mut comps = self.companion_rows(ours, prepared)?;
        let st = src
            .tensors
            .get(theirs)
            .ok_or_else(|| Error::not_found("tensor", theirs))?;
        for (ck, out) in comps.iter_mut() {
            let Some(link) = self.tensors.get(ours).and_then(|t| t.meta.links.get(ck)) else {
                continue;
            };
            let role = CompanionRole::from_extend(&link.extend);
            if role == CompanionRole::Id {
                *out = rows
                    .iter()
                    .map(|r| {
                        let id = their_ids.get(*r as usize).ok_or_else(|| {
                            Error::internal(format!("source row {r} has no sample id"))
                        })?;
                        Ok(Prepared::Item(id_row(*id)))
                    })
                    .collect::<Result<_>>()?;
                continue;
            }
            let like = st.meta.links.iter().find(|(_, l)| {
                CompanionRole::from_extend(&l.extend) == role
                    && l.flatten_sequence == link.flatten_sequence
            });
            let Some(sc) = like.and_then(|(k, _)| src.tensors.get(k)) else {
                continue;
            };
            let comp_rows: Vec<u64> = match &st.seq {
                Some(s) if link.flatten_sequence => rows
                    .iter()
                    .filter_map(|r| s.items(*r))
                    .flat_map(|(a, b)| a..b)
                    .collect(),
                _ => rows.to_vec(),
            };
            let copied = read::read_prepared(src, sc, &comp_rows).await?;
            if copied.len() == out.len() {
                *out = copied;
            }
        }
        Ok(comps)
    }

    /// Replaces row `index` of tensor `key` with a stored item, and the rows of the
    /// given companions with theirs.
    async fn put_row(
        &mut self,
        key: &str,
        index: u64,
        it: StoredItem,
        companions: Vec<(String, StoredItem)>,
    ) -> Result<()> {
        let store = self.store.clone();
        let node = self.node.clone();
        {
            let t = self
                .tensors
                .get_mut(key)
                .ok_or_else(|| Error::not_found("tensor", key))?;
            replace_in_tensor(&store, &self.locator, &node, t, index, it).await?;
            t.pad.unpad(index as u32);
        }
        for (ck, row) in companions {
            if let Some(c) = self.tensors.get_mut(&ck) {
                replace_in_tensor(&store, &self.locator, &node, c, index, row).await?;
            }
        }
        self.cache.clear();
        Ok(())
    }

    /// A generic tensor without samples here takes the source's dtype.
    fn adopt_dtype(&mut self, key: &str, st: &TensorState) -> Result<()> {
        let t = self
            .tensors
            .get_mut(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        if t.meta.dtype.is_none() && st.meta.dtype.is_some() {
            t.meta.dtype = st.meta.dtype.clone();
            t.meta.typestr = st.meta.typestr.clone();
            t.dtype = st.dtype;
            t.dirty = true;
        }
        Ok(())
    }

    /// For a class-label tensor whose source class names are not a prefix of ours:
    /// source label -> our label, our names extended with the source's new ones (3.x
    /// remaps through the names too). `None`: labels copy as they are.
    fn class_label_map(&mut self, key: &str, st: &TensorState) -> Result<Option<Vec<u64>>> {
        if st.htype.base != BaseHtype::ClassLabel {
            return Ok(None);
        }
        let t = self
            .tensors
            .get_mut(key)
            .ok_or_else(|| Error::not_found("tensor", key))?;
        let theirs = class_names(&st.info);
        let mut ours = class_names(&t.info);
        if ours.len() >= theirs.len() && ours[..theirs.len()] == theirs[..] {
            return Ok(None);
        }
        let identity = theirs.len() >= ours.len() && theirs[..ours.len()] == ours[..];
        let map: Vec<u64> = theirs
            .iter()
            .map(|n| match ours.iter().position(|o| o == n) {
                Some(i) => i as u64,
                None => {
                    ours.push(n.clone());
                    (ours.len() - 1) as u64
                }
            })
            .collect();
        t.info.insert("class_names".into(), json!(ours));
        t.info_dirty = true;
        Ok((!identity).then_some(map))
    }

    /// Copies source tensor `name` (its metas, rows and sample ids) as a new tensor.
    async fn copy_tensor(&mut self, src: &Dataset, name: &str) -> Result<TensorMerge> {
        let skey = src.key_of(name)?;
        let st = src
            .tensors
            .get(&skey)
            .ok_or_else(|| Error::not_found("tensor", name))?;
        let tname: TensorName = name.parse()?;
        let mut key = tname.clone();
        // A deleted tensor's folder may still hold objects of this commit: take a fresh key.
        if self.tensors.contains_key(key.as_str()) || self.meta.tensors.contains(&key.to_string()) {
            key = format!("{name}_{:04x}", rand::random::<u16>()).parse()?;
        }
        let fresh = |m: &crate::format::meta::TensorMeta, n: String| {
            let mut m = m.clone();
            m.length = 0;
            m.min_shape.clear();
            m.max_shape.clear();
            m.name = Some(n);
            m
        };
        let mut meta = fresh(&st.meta, name.to_owned());
        meta.links.clear();
        let mut companions: Vec<(u8, TensorName, TensorState)> = Vec::new();
        for (sck, link) in &st.meta.links {
            let (order, suffix) = match CompanionRole::from_extend(&link.extend) {
                CompanionRole::Info => (0, "info"),
                CompanionRole::Shape => (1, "shape"),
                CompanionRole::Id => (2, "id"),
                CompanionRole::Other => {
                    return Err(Error::unsupported(format!(
                        "tensor {name} has a companion {sck} of a kind this version does not write"
                    )));
                }
            };
            let sc = src
                .tensors
                .get(sck)
                .ok_or_else(|| Error::not_found("tensor", sck))?;
            let ck = key.companion(suffix);
            meta.links.insert(ck.to_string(), link.clone());
            let cm = fresh(&sc.meta, tname.companion(suffix).to_string());
            companions.push((order, ck.clone(), TensorState::new(ck, cm, Map::new())?));
        }
        companions.sort_by_key(|c| c.0);
        let state = TensorState::new(key.clone(), meta, st.info.clone())?;
        self.meta.tensors.push(key.to_string());
        self.meta
            .tensor_names
            .insert(name.to_owned(), key.to_string());
        self.tensors.insert(key.to_string(), state);
        for (_, ck, cs) in companions {
            if let Some(n) = &cs.meta.name {
                self.meta.tensor_names.insert(n.clone(), ck.to_string());
            }
            self.meta.tensors.push(ck.to_string());
            self.meta.hidden_tensors.push(ck.to_string());
            self.tensors.insert(ck.to_string(), cs);
        }
        self.add_groups_of(name);
        self.meta_dirty = true;
        let ids = id_column(src, &skey, None).await?.unwrap_or_default();
        let rows: Vec<u64> = (0..st.num_samples()).collect();
        self.append_source_rows(src, key.as_str(), &skey, &rows, &ids, None)
            .await?;
        Ok(TensorMerge {
            created: true,
            rows_added: rows.len() as u64,
            ..Default::default()
        })
    }
}

/// The key of tensor `key`'s sample-id companion at `ds`.
fn id_companion<'a>(ds: &'a Dataset, key: &str) -> Option<&'a str> {
    ds.tensors.get(key)?.meta.links.iter().find_map(|(k, l)| {
        (CompanionRole::from_extend(&l.extend) == CompanionRole::Id).then_some(k.as_str())
    })
}

/// Common tensors must store alike: the same htype and compressions (3.x's
/// `MergeMismatchError`), and the same dtype once both have one.
fn check_compatible(
    ours: &Dataset,
    ok: &str,
    theirs: &Dataset,
    tk: &str,
    name: &str,
) -> Result<()> {
    let (Some(a), Some(b)) = (ours.tensors.get(ok), theirs.tensors.get(tk)) else {
        return Err(Error::not_found("tensor", name));
    };
    let differ = |what: &str, x: String, y: String| {
        Err(Error::invalid(format!(
            "cannot merge tensor {name}: its {what} is {x} here and {y} in the source"
        )))
    };
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".to_owned());
    if a.htype != b.htype {
        return differ("htype", a.htype.to_string(), b.htype.to_string());
    }
    if a.meta.sample_compression != b.meta.sample_compression {
        return differ(
            "sample compression",
            opt(&a.meta.sample_compression),
            opt(&b.meta.sample_compression),
        );
    }
    if a.meta.chunk_compression != b.meta.chunk_compression {
        return differ(
            "chunk compression",
            opt(&a.meta.chunk_compression),
            opt(&b.meta.chunk_compression),
        );
    }
    if let (Some(x), Some(y)) = (&a.meta.dtype, &b.meta.dtype)
        && x != y
        && !a.htype.is_text_like()
    {
        return differ("dtype", x.clone(), y.clone());
    }
    Ok(())
}

fn id_row(id: u64) -> StoredItem {
    StoredItem {
        shape: vec![1],
        bytes: bytes::Bytes::copy_from_slice(&id.to_le_bytes()),
        tiles: None,
        info: None,
        logical_shape: vec![1],
        creds: 0,
    }
}

/// Rewrites stored class labels through `map` (source label -> our label).
fn remap_labels(prepared: &mut [Prepared], map: Option<&[u64]>, st: &TensorState) -> Result<()> {
    let Some(map) = map else {
        return Ok(());
    };
    if st.sample_compression.is_some() {
        return Err(Error::unsupported(format!(
            "remapping the labels of sample-compressed class-label tensor {}",
            st.key
        )));
    }
    let dtype = st.dtype.unwrap_or(Dtype::U32);
    let size = dtype.size();
    let one = |it: &mut StoredItem| {
        let mut out = Vec::with_capacity(it.bytes.len());
        for b in it.bytes.chunks(size) {
            let v = element_to_f64(dtype, b);
            let m = map.get(v as usize).map_or(v, |m| *m as f64);
            put_f64_as(dtype, m, &mut out);
        }
        it.bytes = out.into();
    };
    for p in prepared {
        match p {
            Prepared::Item(it) => one(it),
            Prepared::Sequence(items) => items.iter_mut().for_each(one),
        }
    }
    Ok(())
}

/// The conflict error's text: every conflicting row, per tensor.
fn conflict_message(
    source: &str,
    branch: &str,
    ancestor: &str,
    conflicts: &[(&str, &[RowConflict])],
) -> String {
    let n: usize = conflicts.iter().map(|(_, c)| c.len()).sum();
    let mut m = format!(
        "merging {source} into {branch}: {n} row(s) changed on both sides since {ancestor}; \
         nothing was written (choose the policy ours or theirs)"
    );
    for (tensor, rows) in conflicts {
        m.push_str(&format!("\n  tensor {tensor}:"));
        for c in *rows {
            m.push_str(&format!(
                "\n    row {} (source row {}, sample id {})",
                c.our_row, c.their_row, c.sample_id
            ));
        }
    }
    m
}
