//! Saved views in the 3.x layout, which deeplake 3.9.52 lists and loads:
//!
//! ```text
//! queries.json              [ {id, virtual-datasource, source-dataset, source-dataset-version,
//!                              created_at, message?, query_text?, source-dataset-index,
//!                              first-index-subscriptable}, ... ]
//! .queries/<id>/            a dataset holding one tensor VDS_INDEX (uint64, one source row
//!                           per view row), its dataset_info.json = the same entry
//! ```
//! A view names a commit: the source must have no uncommitted changes. The view dataset is
//! written and flushed first; the `queries.json` entry, which makes it visible, comes last,
//! under `queries.lock` (create-if-absent; a lock older than `LOCK_STALE` is taken over).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Dataset, OpenOptions, TensorOptions};
use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::dtype::Dtype;
use crate::ids::BranchName;
use crate::store::paths;

/// How long a `queries.lock` is honoured before it counts as left behind by a crash.
const LOCK_STALE: Duration = Duration::from_secs(30);
/// How long to wait for another writer's lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Key of the query text in a view's entry.
pub const QUERY_KEY: &str = "query_text";
/// Rows written per extend while saving.
const BATCH: usize = 1 << 16;

/// A saved view: its `queries.json` entry and its source rows.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedView {
    pub info: Map<String, Value>,
    pub indices: Vec<u64>,
}

impl SavedView {
    pub fn id(&self) -> &str {
        self.info
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The folder under `.queries/` that holds the view's dataset.
    pub fn folder(&self) -> &str {
        self.info
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_else(|| self.id())
    }

    /// Whether the view is still virtual (rows of its source) rather than optimized.
    pub fn is_virtual(&self) -> bool {
        self.info
            .get("virtual-datasource")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// The commit the view reads.
    pub fn commit(&self) -> Option<&str> {
        self.info
            .get("source-dataset-version")
            .and_then(Value::as_str)
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Dataset {
    /// The URL of the dataset of a saved view kept in `.queries/<folder>` (its id, or
    /// the `path` of its entry once optimized).
    pub fn view_url(&self, folder: &str) -> String {
        format!(
            "{}/{}",
            self.url().trim_end_matches('/'),
            paths::view_folder(folder)
        )
    }

    /// Saves source rows `indices` of the last commit as view `id`, with an optional
    /// message and the query that made it. `opts` carries the storage options.
    pub async fn save_view(
        &self,
        id: &str,
        indices: &[u64],
        message: Option<&str>,
        query: Option<&str>,
        opts: &OpenOptions,
    ) -> Result<SavedView> {
        let id: BranchName = id.parse().map_err(|_| {
            Error::invalid(format!("view id {id:?}: use letters, digits, '-' and '_'"))
        })?;
        let id = id.as_str().to_owned();
        if self.has_changes() {
            return Err(Error::invalid(
                "the head has uncommitted changes: commit before saving a view",
            ));
        }
        let commit = self.commit_id().ok_or_else(|| {
            Error::invalid("the dataset has no commit yet: commit before saving a view")
        })?;
        let len = self.len();
        if let Some(bad) = indices.iter().find(|&&i| i >= len) {
            return Err(Error::invalid(format!(
                "row {bad} is past the end of the dataset ({len} rows)"
            )));
        }
        if self.list_views().await?.iter().any(|v| v.id() == id) {
            return Err(Error::Conflict {
                path: format!("{}/{}", self.url(), paths::QUERIES),
                message: format!("a view named {id:?} exists"),
                retryable: false,
            });
        }
        let mut info = Map::new();
        info.insert("id".into(), json!(id));
        info.insert("virtual-datasource".into(), json!(true));
        info.insert("source-dataset".into(), json!(self.url()));
        info.insert("source-dataset-version".into(), json!(commit));
        info.insert("created_at".into(), json!(now()));
        if let Some(m) = message {
            info.insert("message".into(), json!(m));
        }
        if let Some(q) = query {
            // Not 3.x's `tql_query`: 3.x re-runs that on the saved rows when it loads a
            // view (and its engine needs a login), so the text is kept under our own key.
            info.insert(QUERY_KEY.into(), json!(q));
        }
        info.insert("source-dataset-index".into(), json!([indices]));
        info.insert("first-index-subscriptable".into(), json!(true));

        let mut vopts = opts.clone();
        vopts.overwrite = true;
        vopts.read_only = false;
        let mut vds = Dataset::create(&self.view_url(&id), vopts).await?;
        let mut t = TensorOptions::new("generic").dtype(Dtype::U64);
        t.create_id_tensor = false;
        t.create_shape_tensor = false;
        t.create_sample_info_tensor = false;
        vds.create_tensor("VDS_INDEX", t).await?;
        for part in indices.chunks(BATCH) {
            let samples = part
                .iter()
                .map(|&i| Sample::Array(NdArray::scalar(i)))
                .collect();
            vds.extend("VDS_INDEX", samples).await?;
        }
        for (k, v) in &info {
            vds.set_info(k.clone(), v.clone()).await?;
        }
        vds.flush().await?;
        vds.close().await?;

        self.update_queries_json(|list| {
            list.retain(|v| v.get("id").and_then(Value::as_str) != Some(id.as_str()));
            list.push(Value::Object(info.clone()));
        })
        .await?;
        Ok(SavedView {
            info,
            indices: indices.to_vec(),
        })
    }

    /// The saved views' entries (`queries.json`), without their rows.
    pub async fn list_views(&self) -> Result<Vec<SavedView>> {
        Ok(self
            .read_queries_json()
            .await?
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(info) => Some(SavedView {
                    info,
                    indices: Vec::new(),
                }),
                _ => None,
            })
            .collect())
    }

    /// A saved view with its rows (read from its VDS_INDEX tensor).
    pub async fn load_view(&self, id: &str, opts: &OpenOptions) -> Result<SavedView> {
        let entry = self
            .list_views()
            .await?
            .into_iter()
            .find(|v| v.id() == id)
            .ok_or_else(|| Error::not_found("view", id))?;
        let mut vopts = opts.clone();
        vopts.read_only = true;
        let folder = entry.folder().to_owned();
        let vds = Dataset::open(&self.view_url(&folder), vopts).await?;
        let n = vds.tensor_len("VDS_INDEX")?;
        let mut indices = Vec::with_capacity(n as usize);
        let mut start = 0;
        while start < n {
            let end = (start + BATCH as u64).min(n);
            for s in vds.read_range("VDS_INDEX", start..end).await? {
                match s {
                    Sample::Array(a) if a.num_elements() == 1 => {
                        indices.push(a.to_f64_vec()[0] as u64);
                    }
                    other => {
                        return Err(Error::corrupt(
                            format!("{}/VDS_INDEX", self.view_url(&folder)),
                            format!("a row index is {other:?}"),
                        ));
                    }
                }
            }
            start = end;
        }
        Ok(SavedView {
            info: entry.info,
            indices,
        })
    }

    /// Removes a saved view: its entry first (it stops being visible), then its data.
    pub async fn delete_view(&self, id: &str) -> Result<()> {
        let mut found = None;
        self.update_queries_json(|list| {
            if let Some(pos) = list
                .iter()
                .position(|v| v.get("id").and_then(Value::as_str) == Some(id))
            {
                let v = list.remove(pos);
                found = Some(
                    v.get("path")
                        .and_then(Value::as_str)
                        .unwrap_or(id)
                        .to_owned(),
                );
            }
        })
        .await?;
        let Some(folder) = found else {
            return Err(Error::not_found("view", id));
        };
        self.store()
            .delete_prefix(&paths::view_folder(&folder))
            .await
    }

    /// Marks view `id` optimized, as 3.x's `optimize` does: its entry gets
    /// `"virtual-datasource": false` and `"path": folder` (the dataset at
    /// `.queries/<folder>` must be complete by then), then the folder it had before is
    /// deleted. Returns the updated entry.
    pub async fn mark_view_optimized(&self, id: &str, folder: &str) -> Result<SavedView> {
        let mut before = None;
        self.update_queries_json(|list| {
            for v in list.iter_mut() {
                if let Value::Object(m) = v
                    && m.get("id").and_then(Value::as_str) == Some(id)
                {
                    let old = m
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or(id)
                        .to_owned();
                    m.insert("virtual-datasource".into(), json!(false));
                    m.insert("path".into(), json!(folder));
                    before = Some((old, m.clone()));
                    break;
                }
            }
        })
        .await?;
        let Some((old, info)) = before else {
            return Err(Error::not_found("view", id));
        };
        if old != folder {
            self.store()
                .delete_prefix(&paths::view_folder(&old))
                .await?;
        }
        Ok(SavedView {
            info,
            indices: Vec::new(),
        })
    }

    async fn read_queries_json(&self) -> Result<Vec<Value>> {
        match self.store().get_opt(paths::QUERIES).await? {
            None => Ok(Vec::new()),
            Some(b) => {
                let v: Value = serde_json::from_slice(&b)
                    .map_err(|e| Error::corrupt(format!("{}/{}", self.url(), paths::QUERIES), e))?;
                match v {
                    Value::Array(a) => Ok(a),
                    _ => Err(Error::corrupt(
                        format!("{}/{}", self.url(), paths::QUERIES),
                        "not a list",
                    )),
                }
            }
        }
    }

    /// Read-modify-write of `queries.json` under `queries.lock`.
    async fn update_queries_json(&self, f: impl FnOnce(&mut Vec<Value>)) -> Result<()> {
        let store = self.store();
        let started = std::time::Instant::now();
        let token = format!("{:016x}", rand::random::<u64>());
        loop {
            let body = json!({ "holder": token, "time": now() }).to_string();
            match store.put_if_absent(paths::QUERIES_LOCK, body).await {
                Ok(()) => break,
                Err(Error::Conflict { .. }) => {
                    let stale = match store.get_opt(paths::QUERIES_LOCK).await? {
                        Some(b) => serde_json::from_slice::<Value>(&b)
                            .ok()
                            .and_then(|v| v.get("time").and_then(Value::as_f64))
                            .is_none_or(|t| now() - t > LOCK_STALE.as_secs_f64()),
                        None => false,
                    };
                    if stale {
                        store.delete(paths::QUERIES_LOCK).await?;
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return Err(Error::Conflict {
                            path: format!("{}/{}", self.url(), paths::QUERIES_LOCK),
                            message: "another writer holds the saved-views lock".to_owned(),
                            retryable: true,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let result = async {
            let mut list = self.read_queries_json().await?;
            f(&mut list);
            let bytes = serde_json::to_vec(&list).map_err(Error::internal)?;
            store.put(paths::QUERIES, bytes).await?;
            store.sync().await
        }
        .await;
        let unlocked = store.delete(paths::QUERIES_LOCK).await;
        result.and(unlocked)
    }
}
