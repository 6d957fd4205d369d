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
//!
//! Keys passed to a `Store` are relative to the dataset root and are built only in
//! [`paths`]. The one conditional write used for visibility is [`Store::put_if_absent`]
//! (create-if-absent), which behaves the same on all three backends.

pub mod paths;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Which backend a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Local,
    Memory,
    S3,
}

/// Options for opening a store: backend settings as key/value pairs (for S3 any
/// `object_store` S3 config key, e.g. `endpoint`, `region`, `access_key_id`,
/// `secret_access_key`, `allow_http`), layered over the `AWS_*` environment.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub options: Vec<(String, String)>,
}

impl StoreOptions {
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
    /// The folder of a local store whose durability comes from [`Store::sync`].
    sync_dir: Option<std::path::PathBuf>,
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
                inner: mem,
                root: clean_prefix(prefix)?,
                url: url.to_owned(),
                backend: Backend::Memory,
                sync_dir: None,
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url:?} names no bucket")));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            // An endpoint given without a scheme-specific flag still needs http allowed
            // for local S3-compatible servers; the caller sets allow_http explicitly.
            for (k, v) in &opts.options {
                let key: AmazonS3ConfigKey = k
                    .parse()
                    .map_err(|_| Error::invalid(format!("unknown S3 option {k:?}")))?;
                b = b.with_config(key, v.clone());
            }
            let s3 = b
                .build()
                .map_err(|e| Error::invalid(format!("cannot open {url}: {e}")))?;
            return Ok(Store {
                inner: Arc::new(s3),
                root: clean_prefix(prefix)?,
                url: url.to_owned(),
                backend: Backend::S3,
                sync_dir: None,
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
        // Durability: on Linux, writers call `sync` at their commit points, which
        // flushes the whole file system once (syncfs) instead of fsyncing every object;
        // elsewhere every put is fsynced. `durability=none` turns both off (scratch data).
        let none = opts
            .options
            .iter()
            .rev()
            .find(|(k, _)| k == "durability")
            .is_some_and(|(_, v)| v == "none");
        let batched = cfg!(target_os = "linux") && !none;
        let local = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::invalid(format!("cannot open dataset directory {path:?}: {e}")))?
            .with_fsync(!none && !batched);
        Ok(Store {
            inner: Arc::new(local),
            root: String::new(),
            url: url.to_owned(),
            backend: Backend::Local,
            sync_dir: batched.then(|| dir.to_path_buf()),
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
            sync_dir: self.sync_dir.clone(),
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
    /// durable once a put returns; a local folder is flushed with one `syncfs`.
    pub async fn sync(&self) -> Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(dir) = self.sync_dir.clone() {
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let f = std::fs::File::open(&dir)?;
                rustix::fs::syncfs(&f)?;
                Ok(())
            })
            .await
            .map_err(|e| Error::internal(format!("sync task failed: {e}")))??;
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
        let p = self.path(key)?;
        match self.inner.head(&p).await {
            Ok(m) => Ok(Some(m.size)),
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
        Ok(())
    }

    /// Writes an object made of several parts (sent without joining them first).
    pub async fn put_parts(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        let p = self.path(key)?;
        self.inner.put(&p, PutPayload::from_iter(parts)).await?;
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
            Ok(_) => Ok(()),
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
        let prefix = prefix.trim_end_matches('/');
        let p = if prefix.is_empty() && self.root.is_empty() {
            None
        } else if prefix.is_empty() {
            Some(Path::parse(&self.root).map_err(|e| Error::invalid(e.to_string()))?)
        } else {
            Some(self.path(prefix)?)
        };
        let mut out: Vec<(String, u64)> = self
            .inner
            .list(p.as_ref())
            .map_ok(|m| (self.relative(&m.location), m.size))
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let keys = self.list(prefix).await?;
        futures::stream::iter(keys)
            .map(|(k, _)| async move { self.delete(&k).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
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
