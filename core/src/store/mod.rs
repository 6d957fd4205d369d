//! Storage: one [`Store`] over `object_store`, for a dataset root given as a URL.
//!
//! | URL | backend |
//! |---|---|
//! | `/abs/path`, `rel/path`, `file:///abs/path` | local disk (the embedded default) |
//! | `memory://name[/prefix]` | in-process memory, shared by every open of the same name |
//! | `s3://bucket[/prefix]` | S3 or an S3-compatible server |
//!
//! S3 settings come from [`StoreOptions`] or the standard `AWS_*` environment variables
//! (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP`, ...). Conditional puts use ETags (`aws_conditional_put=etag`).
//! Requests in flight to one bucket are capped per process (option `max_requests`,
//! default 64; see `limit`).
//!
//! Keys passed to a `Store` are relative to the dataset root and are built only in
//! [`paths`]. The one conditional write used for visibility is [`Store::put_if_absent`]
//! (create-if-absent), which behaves the same on all three backends.

mod limit;
pub mod paths;
mod sidecar;

pub use sidecar::Sidecar;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Times a listing that failed transiently is taken again (after 100, 200, 400 ms).
const LIST_RETRIES: u32 = 3;

/// The storage option capping the requests this process has in flight to an S3
/// bucket (a positive integer; default 64).
pub const MAX_REQUESTS: &str = "max_requests";

/// Which backend a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    Memory,
    S3,
}

/// One object as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Key relative to the store's root.
    pub key: String,
    pub size: u64,
    /// When the object was last written, as the backend reports it.
    pub modified: std::time::SystemTime,
}

fn entry_modified(m: &object_store::ObjectMeta) -> std::time::SystemTime {
    // Times before 1970 do not occur on real backends; clamp rather than fail.
    let ms = u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0);
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// Options for opening a store: backend settings as key/value pairs (for S3 any
/// `object_store` S3 config key, e.g. `endpoint`, `region`, `access_key_id`,
/// `secret_access_key`, `allow_http`), layered over the `AWS_*` environment.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub options: Vec<(String, String)>,
    /// Wraps the backend's object store: every request of the opened store goes
    /// through it (fault injection in tests, request accounting).
    pub layer: Option<StoreLayer>,
}

/// A wrapper put around a backend's object store (see [`StoreOptions::layer`]).
#[derive(Clone)]
pub struct StoreLayer(pub Arc<LayerFn>);

/// The function of a [`StoreLayer`]: the wrapped store from the backend's.
pub type LayerFn = dyn Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync;

impl std::fmt::Debug for StoreLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLayer")
    }
}

impl StoreOptions {
    /// These options with `layer` around the backend.
    pub fn with_layer(
        mut self,
        layer: impl Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync + 'static,
    ) -> Self {
        self.layer = Some(StoreLayer(Arc::new(layer)));
        self
    }

    fn wrap(&self, inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        match &self.layer {
            Some(l) => (l.0)(inner),
            None => inner,
        }
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }
}

/// A dataset root on some backend.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: String,
    url: String,
    backend: Backend,
    /// For a local store whose durability comes from [`Store::sync`]: the files and
    /// folders written since the last sync. Shared by every clone and child.
    local_sync: Option<Arc<LocalSync>>,
}

/// Dirty-file tracking of a local store. Only what this process wrote is flushed, one
/// `fsync` per file and per folder, so a sync never pays for other programs' dirty pages
/// (as a file-system-wide `syncfs` would).
#[derive(Debug)]
struct LocalSync {
    dir: std::path::PathBuf,
    files: Mutex<std::collections::HashSet<std::path::PathBuf>>,
    dirs: Mutex<std::collections::HashSet<std::path::PathBuf>>,
    /// Folders a past sync made durable: their own entries in their parents are on
    /// disk, so writing into them again needs no fsync above them. Forgotten when this
    /// store removes folders.
    durable_dirs: Mutex<std::collections::HashSet<std::path::PathBuf>>,
}

impl LocalSync {
    /// Remembers a written object: its file, its folder (a new entry), and the folders
    /// above it up to the first one known to be durable, since `put` may have created
    /// any of those.
    fn written(&self, full_key: &str) {
        let file = self.dir.join(full_key);
        let durable = self.durable_dirs.lock();
        if let Ok(mut dirs) = self.dirs.lock() {
            let mut d = file.parent();
            while let Some(p) = d {
                if !p.starts_with(&self.dir) || !dirs.insert(p.to_path_buf()) {
                    break;
                }
                if durable.as_ref().is_ok_and(|k| k.contains(p)) {
                    break;
                }
                d = p.parent();
            }
        }
        drop(durable);
        if let Ok(mut files) = self.files.lock() {
            files.insert(file);
        }
    }

    fn take(set: &Mutex<std::collections::HashSet<std::path::PathBuf>>) -> Vec<std::path::PathBuf> {
        set.lock()
            .map(|mut s| s.drain().collect())
            .unwrap_or_default()
    }
}

/// `fsync`s each path (files: data only; folders: their entries), a few at a time on
/// the blocking pool, since each call mostly waits on the device. A path that vanished
/// meanwhile (a deleted scratch object) has nothing left to make durable.
async fn fsync_all(paths: Vec<std::path::PathBuf>, dirs: bool) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut first: Option<Error> = None;
    for p in paths {
        while tasks.len() >= 8 {
            if let Some(r) = tasks.join_next().await {
                fsync_result(r, &mut first);
            }
        }
        tasks.spawn_blocking(
            move || -> std::result::Result<(), (std::path::PathBuf, std::io::Error)> {
                let res = std::fs::File::open(&p)
                    .and_then(|f| if dirs { f.sync_all() } else { f.sync_data() });
                match res {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| (p, e)),
                }
            },
        );
    }
    while let Some(r) = tasks.join_next().await {
        fsync_result(r, &mut first);
    }
    first.map_or(Ok(()), Err)
}

fn fsync_result(
    r: std::result::Result<
        std::result::Result<(), (std::path::PathBuf, std::io::Error)>,
        tokio::task::JoinError,
    >,
    first: &mut Option<Error>,
) {
    let e = match r {
        Ok(Ok(())) => return,
        Ok(Err((p, e))) => Error::Io(std::io::Error::new(
            e.kind(),
            format!("fsync {}: {e}", p.display()),
        )),
        Err(e) => Error::internal(format!("fsync task failed: {e}")),
    };
    first.get_or_insert(e);
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

fn memory_registry() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static REG: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn clean_prefix(p: &str) -> Result<String> {
    let p = p.trim_matches('/');
    if p.split('/').any(|s| s == ".." || s == ".") {
        return Err(Error::invalid(format!(
            "path {p:?} must not contain '.' or '..' segments"
        )));
    }
    Ok(p.to_owned())
}

impl Store {
    /// Opens the dataset root named by `url` (see the module table).
    pub fn open(url: &str, opts: &StoreOptions) -> Result<Store> {
        if url.trim().is_empty() {
            return Err(Error::invalid("dataset path is empty"));
        }
        if let Some(rest) = url.strip_prefix("memory://") {
            let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let mem = {
                let mut reg = memory_registry()
                    .lock()
                    .map_err(|_| Error::internal("memory store registry poisoned"))?;
                reg.entry(name.to_owned())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone()
            };
            return Ok(Store {
                inner: opts.wrap(mem),
                root: clean_prefix(prefix)?,
                url: url.to_owned(),
                backend: Backend::Memory,
                local_sync: None,
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url:?} names no bucket")));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            let mut max_requests = limit::DEFAULT_MAX_REQUESTS;
            // An endpoint given without a scheme-specific flag still needs http allowed
            // for local S3-compatible servers; the caller sets allow_http explicitly.
            for (k, v) in &opts.options {
                if k == MAX_REQUESTS {
                    max_requests = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::invalid(format!(
                            "storage option {MAX_REQUESTS}={v:?}: expected a positive integer"
                        ))
                    })?;
                    continue;
                }
                let key: AmazonS3ConfigKey = k
                    .parse()
                    .map_err(|_| Error::invalid(format!("unknown S3 option {k:?}")))?;
                b = b.with_config(key, v.clone());
            }
            let s3 = b
                .build()
                .map_err(|e| Error::invalid(format!("cannot open {url}: {e}")))?;
            let limited = limit::Limited::new(
                opts.wrap(Arc::new(s3)),
                limit::bucket_permits(bucket, max_requests),
            );
            return Ok(Store {
                inner: Arc::new(limited),
                root: clean_prefix(prefix)?,
                url: url.to_owned(),
                backend: Backend::S3,
                local_sync: None,
            });
        }
        if let Some((scheme, _)) = url.split_once("://")
            && scheme != "file"
        {
            return Err(Error::unsupported(format!(
                "storage scheme {scheme:?} in {url:?}; use a local path, file://, memory:// or s3://"
            )));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        let dir = std::path::Path::new(path);
        if !dir.is_dir() {
            return Err(Error::not_found("dataset folder", path));
        }
        // Durability: writers call `sync` at their commit points, which fsyncs the files
        // and folders written since the last one, instead of fsyncing inside every put.
        // `durability=none` turns it off (scratch data).
        let none = opts
            .options
            .iter()
            .rev()
            .find(|(k, _)| k == "durability")
            .is_some_and(|(_, v)| v == "none");
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::invalid(format!("cannot open dataset directory {path:?}: {e}")))?
            .with_fsync(false);
        let batched = !none;
        Ok(Store {
            inner: opts.wrap(Arc::new(local)),
            root: String::new(),
            url: url.to_owned(),
            backend: Backend::Local,
            local_sync: batched.then(|| {
                Arc::new(LocalSync {
                    dir: dir.to_path_buf(),
                    files: Mutex::default(),
                    dirs: Mutex::default(),
                    durable_dirs: Mutex::default(),
                })
            }),
        })
    }

    /// Like [`Store::open`], but creates a missing local folder first.
    pub fn create(url: &str, opts: &StoreOptions) -> Result<Store> {
        if !url.contains("://") || url.starts_with("file://") {
            let path = url.strip_prefix("file://").unwrap_or(url);
            if path.trim().is_empty() {
                return Err(Error::invalid("dataset path is empty"));
            }
            std::fs::create_dir_all(path).map_err(|e| {
                Error::invalid(format!("cannot create dataset directory {path:?}: {e}"))
            })?;
        }
        Store::open(url, opts)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A store rooted at `sub` below this one (for saved views, which are datasets).
    pub fn child(&self, sub: &str) -> Result<Store> {
        let sub = clean_prefix(sub)?;
        let root = if self.root.is_empty() {
            sub.clone()
        } else {
            format!("{}/{sub}", self.root)
        };
        Ok(Store {
            inner: self.inner.clone(),
            root,
            url: format!("{}/{sub}", self.url.trim_end_matches('/')),
            backend: self.backend,
            local_sync: self.local_sync.clone(),
        })
    }

    fn path(&self, key: &str) -> Result<Path> {
        let full = if self.root.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.root)
        };
        Path::parse(&full).map_err(|e| Error::invalid(format!("object key {key:?}: {e}")))
    }

    fn written(&self, p: &Path) {
        if let Some(ls) = &self.local_sync {
            ls.written(p.as_ref());
        }
    }

    fn relative(&self, p: &Path) -> String {
        let s = p.as_ref();
        if self.root.is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(&self.root)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_owned()
        }
    }

    /// Makes every write that returned before this call durable. Object stores are
    /// durable once a put returns; a local folder fsyncs what this store wrote since
    /// the last sync: the files and the folders that name them.
    pub async fn sync(&self) -> Result<()> {
        if let Some(ls) = &self.local_sync {
            let files = LocalSync::take(&ls.files);
            let dirs = LocalSync::take(&ls.dirs);
            // A new file is durable once both its data and its folder's entry are; the
            // two need no order between them, so they go to the device together.
            let (data, entries) =
                tokio::join!(fsync_all(files, false), fsync_all(dirs.clone(), true));
            data?;
            entries?;
            if let Ok(mut known) = ls.durable_dirs.lock() {
                known.extend(dirs);
            }
        }
        Ok(())
    }

    /// Starts making one written object durable now, ahead of the next [`Store::sync`]
    /// (which then has only its folder entry left to flush). Background chunk writes
    /// call this so the device works while the writer encodes the next chunk.
    pub async fn sync_object(&self, key: &str) -> Result<()> {
        if let Some(ls) = &self.local_sync {
            let file = ls.dir.join(self.path(key)?.as_ref());
            let removed = ls
                .files
                .lock()
                .map(|mut f| f.remove(&file))
                .unwrap_or(false);
            if removed {
                fsync_all(vec![file], false).await?;
            }
        }
        Ok(())
    }

    /// Reads a whole object; a missing one is `NotFound`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match self.get_opt(key).await? {
            Some(b) => Ok(b),
            None => Err(Error::not_found("object", format!("{}/{key}", self.url))),
        }
    }

    /// Reads a whole object, `None` if it does not exist.
    pub async fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        let p = self.path(key)?;
        match self.inner.get(&p).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `range` of an object. Ranges past the end are an error from the backend.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let p = self.path(key)?;
        match self.inner.get_range(&p, range).await {
            Ok(b) => Ok(b),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found("object", format!("{}/{key}", self.url)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads at most the first `n` bytes of an object (fewer if it is shorter).
    pub async fn get_prefix(&self, key: &str, n: u64) -> Result<Bytes> {
        let p = self.path(key)?;
        let opts = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(0..n.max(1))),
            ..Default::default()
        };
        match self.inner.get_opts(&p, opts).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(Error::not_found("object", format!("{}/{key}", self.url)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Object size, `None` if absent.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.stat(key).await?.map(|e| e.size))
    }

    /// Size and modification time of an object, `None` if absent.
    pub async fn stat(&self, key: &str) -> Result<Option<ObjectEntry>> {
        let p = self.path(key)?;
        match self.inner.head(&p).await {
            Ok(m) => Ok(Some(ObjectEntry {
                key: key.to_owned(),
                size: m.size,
                modified: entry_modified(&m),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// Writes (or replaces) an object atomically: readers see the old or the new bytes.
    pub async fn put(&self, key: &str, data: impl Into<Bytes>) -> Result<()> {
        let p = self.path(key)?;
        self.inner
            .put(&p, PutPayload::from_bytes(data.into()))
            .await?;
        self.written(&p);
        Ok(())
    }

    /// Writes an object made of several parts (sent without joining them first).
    pub async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        let p = self.path(key)?;
        self.inner.put(&p, PutPayload::from_iter(parts)).await?;
        self.written(&p);
        Ok(())
    }

    /// Creates an object only if the key is free. Losing the race is a retryable
    /// `Conflict` naming the key.
    pub async fn put_if_absent(&self, key: &str, data: impl Into<Bytes>) -> Result<()> {
        let p = self.path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&p, PutPayload::from_bytes(data.into()), opts)
            .await
        {
            Ok(_) => {
                self.written(&p);
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(Error::Conflict {
                path: format!("{}/{key}", self.url),
                message: "the object already exists".to_owned(),
                retryable: true,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; deleting a missing one is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match self.inner.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists every object under `prefix` (a key prefix ending at a folder boundary, or
    /// `""` for all), as `(key relative to the root, size)`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_entries(prefix)
            .await?
            .into_iter()
            .map(|e| (e.key, e.size))
            .collect())
    }

    /// Like [`Store::list`], with each object's modification time.
    pub async fn list_entries(&self, prefix: &str) -> Result<Vec<ObjectEntry>> {
        let prefix = prefix.trim_end_matches('/');
        let p = if prefix.is_empty() && self.root.is_empty() {
            None
        } else if prefix.is_empty() {
            Some(Path::parse(&self.root).map_err(|e| Error::invalid(e.to_string()))?)
        } else {
            Some(self.path(prefix)?)
        };
        // The backend's client retries each request, but not a listing whose body is cut
        // midway or whose next page fails: the whole listing is taken again, a few
        // times, as a listing is only right when it is whole.
        let mut attempt = 0u32;
        let mut out: Vec<ObjectEntry> = loop {
            let listed: Result<Vec<ObjectEntry>> = self
                .inner
                .list(p.as_ref())
                .map_ok(|m| ObjectEntry {
                    key: self.relative(&m.location),
                    size: m.size,
                    modified: entry_modified(&m),
                })
                .try_collect()
                .await
                .map_err(Error::from);
            match listed {
                Err(e) if e.is_transient() && attempt < LIST_RETRIES => {
                    attempt += 1;
                    tracing::debug!(prefix, attempt, error = %e, "listing again");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                other => break other?,
            }
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The key of the object that `target` (a link as a linked tensor stores it: a
    /// URL, an absolute path, or a path relative to the dataset root) names inside this
    /// store's root, or `None` when it points elsewhere. A relative path counts as
    /// relative to the root; on local disk it is also tried against the working folder.
    pub fn key_of_link(&self, target: &str) -> Option<String> {
        let base = self.url.trim_end_matches('/');
        if let Some(rest) = target.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
            return normalize_key(rest);
        }
        if self.backend != Backend::Local {
            return match target.split_once("://") {
                None if !target.starts_with('/') => normalize_key(target),
                _ => None,
            };
        }
        let dir = base.strip_prefix("file://").unwrap_or(base);
        let path = match target.split_once("://") {
            Some(("file", p)) => p,
            Some(_) => return None,
            None => target,
        };
        let relative = !path.starts_with('/');
        let root = std::path::absolute(dir).ok()?;
        let candidates = [
            std::path::absolute(path).ok(),
            // The same paths with symbolic links resolved (`/tmp` may be one).
            std::fs::canonicalize(path).ok(),
        ];
        let roots = [Some(root.clone()), std::fs::canonicalize(&root).ok()];
        for c in candidates.iter().flatten() {
            for r in roots.iter().flatten() {
                if let Some(k) = c
                    .strip_prefix(r)
                    .ok()
                    .and_then(|rel| rel.to_str())
                    .and_then(normalize_key)
                {
                    return Some(k);
                }
            }
        }
        if relative {
            return normalize_key(path);
        }
        None
    }

    /// Removes the empty folders left under `prefix` after its objects were deleted
    /// (local disk keeps folders; object stores have none).
    pub async fn remove_empty_folders(&self, prefix: &str) -> Result<()> {
        if self.backend != Backend::Local {
            return Ok(());
        }
        let dir = self.url.strip_prefix("file://").unwrap_or(&self.url);
        let top = std::path::Path::new(dir).join(self.path(prefix)?.as_ref());
        tokio::task::spawn_blocking(move || remove_empty_dirs(&top))
            .await
            .map_err(|e| Error::internal(format!("folder cleanup failed: {e}")))?;
        Ok(())
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let keys = self.list(prefix).await?;
        futures::stream::iter(keys)
            .map(|(k, _)| async move { self.delete(&k).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        // Object stores have no folders; a local disk keeps empty ones, which would look
        // like leftovers (3.x lists `versions/` folders), so they go too.
        if !prefix.trim_matches('/').is_empty() {
            if let Some(ls) = &self.local_sync
                && let Ok(mut known) = ls.durable_dirs.lock()
            {
                known.clear();
            }
            self.remove_empty_folders(prefix.trim_end_matches('/'))
                .await?;
        }
        Ok(())
    }
}

/// A relative key with `.` and empty segments dropped and `..` applied; `None` if it
/// climbs above the root or names nothing.
fn normalize_key(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Removes `dir` and the folders below it that hold no files, deepest first. A folder
/// that gained a file meanwhile stays (`remove_dir` only removes empty ones).
fn remove_empty_dirs(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(is_dir && remove_empty_dirs(&e.path())) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_round_trip_and_create_if_absent() {
        let s = Store::open("memory://store-unit/ds", &StoreOptions::default()).unwrap();
        s.put("a/b.json", Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(s.get("a/b.json").await.unwrap().as_ref(), b"{}");
        assert!(s.get_opt("nope").await.unwrap().is_none());
        assert!(matches!(s.get("nope").await, Err(Error::NotFound { .. })));
        s.put_if_absent("lock", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let e = s
            .put_if_absent("lock", Bytes::from_static(b"2"))
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            Error::Conflict {
                retryable: true,
                ..
            }
        ));
        assert_eq!(s.get("lock").await.unwrap().as_ref(), b"1");
        assert_eq!(s.get_range("a/b.json", 1..2).await.unwrap().as_ref(), b"}");
        assert_eq!(s.get_prefix("a/b.json", 100).await.unwrap().as_ref(), b"{}");
        let l = s.list("").await.unwrap();
        assert_eq!(l, vec![("a/b.json".to_owned(), 2), ("lock".to_owned(), 1)]);
        // the same name reopens the same data
        let s2 = Store::open("memory://store-unit/ds", &StoreOptions::default()).unwrap();
        assert!(s2.exists("lock").await.unwrap());
        s.delete_prefix("a").await.unwrap();
        assert!(!s2.exists("a/b.json").await.unwrap());
    }

    /// The folders a local sync will fsync: a write's own folder always, the ones above
    /// it only until one that a past sync made durable (and all again after this store
    /// removed folders).
    #[tokio::test]
    async fn a_sync_fsyncs_only_folders_that_may_be_new() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ds");
        let s = Store::create(root.to_str().unwrap(), &StoreOptions::default()).unwrap();
        let pending = |s: &Store| -> Vec<String> {
            let ls = s.local_sync.as_ref().unwrap();
            let mut v: Vec<String> = ls
                .dirs
                .lock()
                .unwrap()
                .iter()
                .map(|p| {
                    p.strip_prefix(&ls.dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            v.sort();
            v
        };
        s.put("a/b/x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(pending(&s), ["", "a", "a/b"]);
        s.sync().await.unwrap();
        assert!(pending(&s).is_empty());
        s.put("a/b/y", Bytes::from_static(b"2")).await.unwrap();
        s.put("a/c/z", Bytes::from_static(b"3")).await.unwrap();
        assert_eq!(pending(&s), ["a", "a/b", "a/c"]);
        s.sync().await.unwrap();
        s.delete_prefix("a/c").await.unwrap();
        s.put("a/b/w", Bytes::from_static(b"4")).await.unwrap();
        assert_eq!(pending(&s), ["", "a", "a/b"]);
    }

    #[test]
    fn links_inside_the_root_map_to_keys() {
        let o = StoreOptions::default();
        let m = Store::open("memory://links-unit/ds", &o).unwrap();
        assert_eq!(
            m.key_of_link("memory://links-unit/ds/media/a.png"),
            Some("media/a.png".to_owned())
        );
        assert_eq!(
            m.key_of_link("media/./x/../a.png"),
            Some("media/a.png".into())
        );
        assert_eq!(m.key_of_link("../other/a.png"), None);
        assert_eq!(m.key_of_link("memory://links-unit/dsx/a.png"), None);
        assert_eq!(m.key_of_link("s3://b/a.png"), None);
        assert_eq!(m.key_of_link("/abs/a.png"), None);
        let dir = std::env::temp_dir().join(format!("links-unit-{:x}", rand::random::<u64>()));
        let url = dir.join("ds").to_string_lossy().into_owned();
        let l = Store::create(&url, &o).unwrap();
        assert_eq!(
            l.key_of_link(&format!("{url}/media/a.png")),
            Some("media/a.png".into())
        );
        assert_eq!(
            l.key_of_link(&format!("file://{url}/media/a.png")),
            Some("media/a.png".into())
        );
        assert_eq!(l.key_of_link("media/a.png"), Some("media/a.png".into()));
        assert_eq!(l.key_of_link(&format!("{}/a.png", dir.display())), None);
        assert_eq!(l.key_of_link("https://host/a.png"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_urls_are_clear_errors() {
        let o = StoreOptions::default();
        assert!(matches!(
            Store::open("", &o),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            Store::open("gdrive://x", &o),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            Store::open("memory://x/../y", &o),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            Store::open("s3:///x", &o),
            Err(Error::InvalidInput { .. })
        ));
    }
}
