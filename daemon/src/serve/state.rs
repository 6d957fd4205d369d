//! Shared server state: the storage root, tokens, the cache of opened datasets, the
//! one chunk cache every dataset handle reads through (a byte budget for the whole
//! server), query results kept for paging, background jobs, and metrics.
//!
//! Dataset names are validated once ([`DatasetName`]) and only then joined to the root,
//! so no request can name storage outside it. Read handles are cached per
//! (dataset, ref) for a few seconds (a branch head may move under another writer) and
//! dropped at once when this server writes to that dataset. One request at a time opens
//! a given (dataset, ref); the others wait for its handle, so the requests that arrive
//! as a handle expires do not each open the dataset again.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deeplake_core::dataset::{ChunkCache, DEFAULT_CACHE_BYTES};
use deeplake_core::store::StoreOptions;
use deeplake_core::tql::QueryResult;
use deeplake_core::version::Ref;
use deeplake_core::{Dataset, OpenOptions};

use super::auth::Tokens;
use super::error::ApiError;
use super::jobs::Jobs;
use super::metrics::Metrics;

/// How long a cached read handle is reused.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Read handles kept at most.
const CACHE_CAP: usize = 64;
/// Query results kept for paging at most (oldest dropped first).
const RESULTS_CAP: usize = 64;

/// A dataset's name under the root: one path segment of `[A-Za-z0-9_.-]`, 1..=128
/// bytes, not starting with `.` or `-` (so never `.`, `..` or a hidden folder).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

impl DatasetName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatasetName {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        if is_segment(s) {
            Ok(DatasetName(s.to_owned()))
        } else {
            Err(ApiError::bad_request(format!(
                "dataset name {s:?} is not valid: 1..=128 of letters, digits, '_', '-', '.', not starting with '.' or '-'"
            )))
        }
    }
}

/// [`is_segment`] as a regular expression, for the API document.
pub const DATASET_NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_.-]*$";

/// The naming rule of datasets and saved views.
pub fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses a `?ref=` value.
pub fn parse_ref(s: Option<&str>) -> Result<Option<Ref>, ApiError> {
    s.map(|s| s.parse::<Ref>().map_err(ApiError::from))
        .transpose()
}

/// A dataset name and the ref it was opened at (empty for the head of `main`).
type CacheKey = (DatasetName, String);

/// A query result kept for paging.
pub struct StoredResult {
    pub dataset: DatasetName,
    pub query: String,
    pub result: QueryResult,
    pub dataset_handle: Arc<Dataset>,
}

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub root: String,
    pub storage: StoreOptions,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub chunk_cache: Arc<ChunkCache>,
    /// Fetches link targets for every dataset (one bound, one cache); unset, core's
    /// process default (creds from the environment).
    linker: std::sync::OnceLock<deeplake_core::link::Linker>,
    jobs: Jobs,
    cache: Mutex<HashMap<CacheKey, (Arc<Dataset>, Instant)>>,
    /// A gate per key being opened (see the module docs).
    opening: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
    results: Mutex<Vec<(String, Arc<StoredResult>)>>,
}

impl AppState {
    /// State with a chunk cache of [`DEFAULT_CACHE_BYTES`].
    pub fn new(root: &str, storage: StoreOptions, tokens: Tokens) -> AppState {
        AppState::with_cache(
            root,
            storage,
            tokens,
            Arc::new(ChunkCache::new(DEFAULT_CACHE_BYTES)),
        )
    }

    pub fn with_cache(
        root: &str,
        storage: StoreOptions,
        tokens: Tokens,
        chunk_cache: Arc<ChunkCache>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                root: root.trim_end_matches('/').to_owned(),
                storage,
                tokens,
                metrics: Metrics::default(),
                chunk_cache,
                linker: std::sync::OnceLock::new(),
                jobs: Jobs::default(),
                cache: Mutex::new(HashMap::new()),
                opening: Mutex::new(HashMap::new()),
                results: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The job registry (`serve::jobs`).
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// The storage URL of a dataset.
    pub fn url(&self, name: &DatasetName) -> String {
        format!("{}/{}", self.inner.root, name.as_str())
    }

    /// Sets the linker of every dataset opened from now on (once; later calls are
    /// ignored).
    pub fn set_linker(&self, linker: deeplake_core::link::Linker) {
        let _ = self.inner.linker.set(linker);
    }

    pub fn open_options(&self) -> OpenOptions {
        OpenOptions {
            storage: self.inner.storage.clone(),
            cache: Some(self.inner.chunk_cache.clone()),
            linker: self.inner.linker.get().cloned(),
            ..Default::default()
        }
    }

    /// A read-only handle at `r` (the head of `main` when `None`), cached.
    pub async fn read(
        &self,
        name: &DatasetName,
        r: Option<&Ref>,
    ) -> Result<Arc<Dataset>, ApiError> {
        let key = (
            name.clone(),
            r.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        );
        if let Some(ds) = self.cached(&key) {
            return Ok(ds);
        }
        let gate = lock(&self.inner.opening)
            .entry(key.clone())
            .or_default()
            .clone();
        let opened = async {
            let _turn = gate.lock().await;
            // The request ahead of this one may have opened it meanwhile.
            if let Some(ds) = self.cached(&key) {
                return Ok(ds);
            }
            self.open_and_keep(name, r, key.clone()).await
        }
        .await;
        let mut opening = lock(&self.inner.opening);
        // The map's reference and ours: nobody else waits at this gate.
        if Arc::strong_count(&gate) <= 2 {
            opening.remove(&key);
        }
        opened
    }

    async fn open_and_keep(
        &self,
        name: &DatasetName,
        r: Option<&Ref>,
        key: CacheKey,
    ) -> Result<Arc<Dataset>, ApiError> {
        let mut opts = self.open_options();
        opts.read_only = true;
        let url = self.url(name);
        let ds = match r {
            Some(r) => Dataset::open_ref(&url, r, opts).await?,
            None => Dataset::open(&url, opts).await?,
        };
        let ds = Arc::new(ds);
        let mut cache = lock(&self.inner.cache);
        if cache.len() >= CACHE_CAP {
            let now = Instant::now();
            cache.retain(|_, (_, t)| now.duration_since(*t) < CACHE_TTL);
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
        }
        cache.insert(key, (ds.clone(), Instant::now()));
        Ok(ds)
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<Dataset>> {
        let cache = lock(&self.inner.cache);
        cache
            .get(key)
            .filter(|(_, t)| t.elapsed() < CACHE_TTL)
            .map(|(d, _)| d.clone())
    }

    /// Drops every cached handle of `name`; called after each write to it.
    pub fn invalidate(&self, name: &DatasetName) {
        lock(&self.inner.cache).retain(|(n, _), _| n != name);
        lock(&self.inner.results).retain(|(_, r)| &r.dataset != name);
    }

    /// A writable handle at the head of `branch` (default `main`).
    pub async fn write(
        &self,
        name: &DatasetName,
        branch: Option<deeplake_core::ids::BranchName>,
    ) -> Result<Dataset, ApiError> {
        let mut opts = self.open_options();
        opts.branch = branch;
        Ok(Dataset::open(&self.url(name), opts).await?)
    }

    /// Closes a writable handle after an operation (its lease goes back even when the
    /// operation failed), reports the operation's error first, and drops the cache.
    pub async fn finish<T>(
        &self,
        name: &DatasetName,
        ds: Dataset,
        result: deeplake_core::Result<T>,
    ) -> Result<T, ApiError> {
        let closed = ds.close().await;
        self.invalidate(name);
        let value = result?;
        closed?;
        Ok(value)
    }

    pub fn keep_result(&self, r: StoredResult) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let mut results = lock(&self.inner.results);
        if results.len() >= RESULTS_CAP {
            results.remove(0);
        }
        results.push((id.clone(), Arc::new(r)));
        id
    }

    pub fn result(&self, id: &str) -> Option<Arc<StoredResult>> {
        lock(&self.inner.results)
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, r)| r.clone())
    }
}

/// Locks a mutex; a panic while it was held cannot leave these maps inconsistent
/// (each update is one insert or retain), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_share_one_open() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("d").to_string_lossy().into_owned();
        let ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
        ds.close().await.unwrap();
        let state = AppState::new(
            &dir.path().to_string_lossy(),
            Default::default(),
            Tokens::default(),
        );
        let name: DatasetName = "d".parse().unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (state, name) = (state.clone(), name.clone());
                tokio::spawn(async move { state.read(&name, None).await.unwrap() })
            })
            .collect();
        let mut handles = Vec::new();
        for t in tasks {
            handles.push(t.await.unwrap());
        }
        assert!(
            handles.iter().all(|h| Arc::ptr_eq(h, &handles[0])),
            "one open for all"
        );
        assert!(lock(&state.inner.opening).is_empty(), "no gate left behind");
        // A write drops the handle; the next read opens a new one.
        state.invalidate(&name);
        let again = state.read(&name, None).await.unwrap();
        assert!(!Arc::ptr_eq(&again, &handles[0]));
    }
}
