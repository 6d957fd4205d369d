//! Flush records: the crash-safe source of truth for a head's metadata.
//!
//! ```text
//! flush:  chunks (fresh names) -> sync -> create <head>/_rs_flush/<seq>.json -> sync
//!         -> refresh the 3.x files (dataset_meta.json, tensor metas, encoders, ...)
//!         -> <head>/_rs_flush/applied.json = seq
//! open:   newest record of the node, if any, else the 3.x files; a writer whose
//!         applied marker is behind the newest record rewrites the 3.x files first
//! ```
//!
//! A record is a full snapshot of the head's metadata (metas, infos, encoders, chunk
//! set, diffs) and is created with create-if-absent, so a crash at any point leaves the
//! previous or the new snapshot, never a mix. Chunks are never rewritten in place, so
//! every chunk a record names still holds the bytes it had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tensor::TensorFiles;
use crate::error::{Error, Result};
use crate::ids::CommitId;
use crate::store::{ObjectEntry, Store, paths};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlushRecord {
    pub seq: u64,
    /// `dataset_meta.json`, `dataset_info.json`, `dataset_diff` (base64 where binary).
    pub dataset: TensorFiles,
    /// Tensor key -> its files.
    pub tensors: BTreeMap<String, TensorFiles>,
}

#[derive(Serialize, Deserialize)]
struct Applied {
    seq: u64,
}

fn applied_key(node: &CommitId) -> String {
    paths::flush_applied(node)
}

/// The newest flush record of `node`, if it has any.
pub async fn latest(store: &Store, node: &CommitId) -> Result<Option<FlushRecord>> {
    let keys = store.list(&paths::flush_log_prefix(node)).await?;
    let Some(seq) = keys.iter().filter_map(|(k, _)| paths::record_seq(k)).max() else {
        return Ok(None);
    };
    read(store, node, seq).await.map(Some)
}

/// The flush records of `node` on storage, oldest first, with when each was created.
pub async fn list(store: &Store, node: &CommitId) -> Result<Vec<(u64, ObjectEntry)>> {
    let mut out: Vec<(u64, ObjectEntry)> = store
        .list_entries(&paths::flush_log_prefix(node))
        .await?
        .into_iter()
        .filter_map(|e| paths::record_seq(&e.key).map(|s| (s, e)))
        .collect();
    out.sort_by_key(|(s, _)| *s);
    Ok(out)
}

/// Flush record `seq` of `node`.
pub async fn read(store: &Store, node: &CommitId, seq: u64) -> Result<FlushRecord> {
    let key = paths::flush_log(node, seq);
    let b = store.get(&key).await?;
    let r: FlushRecord = serde_json::from_slice(&b)
        .map_err(|e| Error::corrupt(format!("{}/{key}", store.url()), e))?;
    if r.seq != seq {
        return Err(Error::corrupt(
            format!("{}/{key}", store.url()),
            format!("record says seq {}", r.seq),
        ));
    }
    Ok(r)
}

/// Makes `record` the visible state of head `node`.
pub async fn create(store: &Store, node: &CommitId, record: &FlushRecord) -> Result<()> {
    let bytes = serde_json::to_vec(record).map_err(Error::internal)?;
    match store.put_if_absent(&paths::flush_log(node, record.seq), bytes).await {
        Ok(()) => store.sync().await,
        Err(Error::Conflict { path, .. }) => Err(Error::Conflict {
            path,
            message: "another writer flushed this head at the same time (the branch lease was not respected)"
                .to_owned(),
            retryable: false,
        }),
        Err(e) => Err(e),
    }
}

/// Records that the 3.x files of `node` show record `seq`.
pub async fn mark_applied(store: &Store, node: &CommitId, seq: u64) -> Result<()> {
    let bytes = serde_json::to_vec(&Applied { seq }).map_err(Error::internal)?;
    store.put(&applied_key(node), bytes).await
}

/// Whether the 3.x files of `node` lag behind record `seq` (a crash mid-refresh).
pub async fn lagging(store: &Store, node: &CommitId, seq: u64) -> Result<bool> {
    Ok(match store.get_opt(&applied_key(node)).await? {
        Some(b) => serde_json::from_slice::<Applied>(&b)
            .map(|a| a.seq < seq)
            .unwrap_or(true),
        None => true,
    })
}

/// Rewrites every 3.x file of `node` from `record`.
pub async fn apply(store: &Store, node: &CommitId, record: &FlushRecord) -> Result<()> {
    for (key, files) in &record.tensors {
        let k = key.parse()?;
        files.write(store, node, &k).await?;
    }
    write_dataset_files(store, node, &record.dataset).await?;
    mark_applied(store, node, record.seq).await
}

/// Writes the dataset-level 3.x files held in `files` (meta in `meta`, info in `info`,
/// the dataset diff in `commit_diff`), `dataset_meta.json` last.
pub async fn write_dataset_files(
    store: &Store,
    node: &CommitId,
    files: &TensorFiles,
) -> Result<()> {
    if let Some(b) = &files.info {
        store.put(&paths::dataset_info(node), b.clone()).await?;
    }
    if let Some(b) = &files.commit_diff {
        store.put(&paths::dataset_diff(node), b.clone()).await?;
    }
    if let Some(b) = &files.meta {
        store.put(&paths::dataset_meta(node), b.clone()).await?;
    }
    Ok(())
}
