//! The commit-tree log: numbered, immutable records `_rs/log/<seq>.json`, each holding
//! the whole tree (commits, branch heads, tags) after one operation.
//!
//! ```text
//! load newest record (or version_control_info.json for a dataset 3.x wrote)
//!   -> apply the operation in memory
//!   -> create record seq+1 with create-if-absent      <- the one visibility point
//!        lost the race? reload, re-apply, retry (bounded)
//!   -> refresh version_control_info.json and commit_info.json for 3.x
//! ```
//!
//! Records are never rewritten, so a crash leaves either the old or the new tree. The
//! 3.x files are a cache of the newest record: a writer that finds them behind (a crash
//! between the two steps) rewrites them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::vcinfo::VersionControlInfo;
use crate::ids::CommitId;
use crate::store::{Store, paths};

/// How often a create-if-absent race is retried before giving up.
pub const MAX_RETRIES: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeRecord {
    pub seq: u64,
    /// What made this record (`create`, `commit`, `branch`, `merge`, `tag`, ...).
    pub op: String,
    /// Unix seconds.
    pub time: f64,
    pub tree: VersionControlInfo,
    /// Tag name -> commit id. Tags are ours; 3.x does not know them.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// The newest record's sequence number, if the dataset has a log.
pub async fn latest_seq(store: &Store) -> Result<Option<u64>> {
    let keys = store.list(paths::TREE_LOG_PREFIX).await?;
    Ok(keys.iter().filter_map(|(k, _)| paths::record_seq(k)).max())
}

async fn read(store: &Store, seq: u64) -> Result<TreeRecord> {
    let key = paths::tree_log(seq);
    let b = store.get(&key).await?;
    let r: TreeRecord = serde_json::from_slice(&b)
        .map_err(|e| Error::corrupt(format!("{}/{key}", store.url()), e))?;
    if r.seq != seq {
        return Err(Error::corrupt(
            format!("{}/{key}", store.url()),
            format!("record says seq {}", r.seq),
        ));
    }
    // The tree must be self-consistent, as version_control_info.json must.
    VersionControlInfo::decode(&serde_json::to_vec(&r.tree).unwrap_or_default())
        .map_err(|c| c.at(format!("{}/{key}", store.url())))?;
    Ok(r)
}

/// The current tree: the newest log record, else the 3.x file (as record `None`).
pub async fn load(
    store: &Store,
) -> Result<(Option<u64>, VersionControlInfo, BTreeMap<String, String>)> {
    match latest_seq(store).await? {
        Some(seq) => {
            let r = read(store, seq).await?;
            Ok((Some(seq), r.tree, r.tags))
        }
        None => Ok((None, super::load_tree(store).await?, BTreeMap::new())),
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
    store.put(paths::VERSION_CONTROL_INFO, tree.encode()).await
}

/// Applies `op` to the newest tree and makes the result visible as the next record.
/// `op` may run several times (after lost races) and must be a pure function of the
/// tree it is given. Returns the new record.
pub async fn update<F>(store: &Store, name: &str, mut op: F) -> Result<TreeRecord>
where
    F: FnMut(&mut VersionControlInfo, &mut BTreeMap<String, String>) -> Result<Vec<String>>,
{
    for attempt in 0..MAX_RETRIES {
        let (seq, mut tree, mut tags) = load(store).await?;
        let touched = op(&mut tree, &mut tags)?;
        let next = seq.map_or(0, |s| s + 1);
        let rec = TreeRecord {
            seq: next,
            op: name.to_owned(),
            time: now(),
            tree,
            tags,
        };
        let bytes = serde_json::to_vec(&rec).map_err(Error::internal)?;
        match store.put_if_absent(&paths::tree_log(next), bytes).await {
            Ok(()) => {
                store.sync().await?;
                refresh_3x(store, &rec.tree, &touched).await?;
                // Another writer may have landed a newer record and refreshed the 3.x
                // file before us; make sure the newest tree is what 3.x sees.
                if let Some(newest) = latest_seq(store).await?.filter(|s| *s > next) {
                    let r = read(store, newest).await?;
                    refresh_3x(store, &r.tree, &[]).await?;
                }
                return Ok(rec);
            }
            Err(Error::Conflict {
                retryable: true, ..
            }) => {
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
    let Some(seq) = latest_seq(store).await? else {
        return Ok(());
    };
    let r = read(store, seq).await?;
    let current = store.get_opt(paths::VERSION_CONTROL_INFO).await?;
    let stale = match current {
        Some(b) => VersionControlInfo::decode(&b)
            .map(|t| t != r.tree)
            .unwrap_or(true),
        None => true,
    };
    if stale {
        let nodes: Vec<String> = r.tree.commits.keys().cloned().collect();
        refresh_3x(store, &r.tree, &nodes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vcinfo::CommitNode;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn records_are_created_once_and_retried_on_races() {
        let store = Store::open("memory://tree-log-unit", &StoreOptions::default()).unwrap();
        update(&store, "create", |_, _| Ok(vec![])).await.unwrap();
        let mut handles = Vec::new();
        for w in 0..8 {
            let s = store.clone();
            handles.push(tokio::spawn(async move {
                update(&s, "branch", move |tree, _| {
                    let id = CommitId::generate().to_string();
                    let root = crate::ids::FIRST_COMMIT_ID.to_owned();
                    tree.commits
                        .insert(id.clone(), CommitNode::head(&format!("b{w}"), Some(root)));
                    tree.branches.insert(format!("b{w}"), id.clone());
                    Ok(vec![id])
                })
                .await
                .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.push(h.await.unwrap().seq);
        }
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=8).collect::<Vec<_>>(),
            "each update lands once, in its own record"
        );
        let (seq, tree, _) = load(&store).await.unwrap();
        assert_eq!(seq, Some(8));
        assert_eq!(
            tree.branches.len(),
            9,
            "no branch was lost: {:?}",
            tree.branches.keys()
        );
        let vc = VersionControlInfo::decode(&store.get(paths::VERSION_CONTROL_INFO).await.unwrap())
            .unwrap();
        assert_eq!(vc, tree, "the 3.x file shows the newest tree");
        // A stale 3.x file is repaired.
        store
            .put(
                paths::VERSION_CONTROL_INFO,
                VersionControlInfo::new_root().encode(),
            )
            .await
            .unwrap();
        repair_3x(&store).await.unwrap();
        let vc = VersionControlInfo::decode(&store.get(paths::VERSION_CONTROL_INFO).await.unwrap())
            .unwrap();
        assert_eq!(vc, tree);
    }
}
