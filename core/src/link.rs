//! Fetching the targets of linked tensors: `file://` and plain paths, `http(s)://` and
//! `s3://`.
//!
//! Contract:
//! * A [`Linker`] is cheap to clone and shared by every reader of a process. At most
//!   [`LinkOptions::concurrency`] fetches are in flight at once, whatever the number of
//!   callers.
//! * Each fetch has a deadline ([`LinkOptions::timeout`]) and is retried with jittered
//!   exponential backoff when the failure may pass (timeouts, dropped connections, 5xx,
//!   429). A missing target, a refusal (401/403) or a bad URL fails at once.
//! * Fetched bytes are kept in a byte-bounded LRU; a target is assumed not to change
//!   while a linker lives.
//! * Credentials are named: a link stores only its creds key (`linked_creds.json` holds
//!   the names). The secrets are given at run time ([`LinkCreds`]) and never written to
//!   storage, to errors or to logs: errors name a target without its query string, since
//!   signed URLs carry secrets there.
//! * A link with no creds key reads a local file, a public URL, or S3 with the `AWS_*`
//!   environment.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::sync::Semaphore;

use crate::bytecache::{ByteCache, CacheStats};
use crate::error::{Error, Result};

/// Environment variable holding creds sets as JSON: `{"name": {"key": "value", ...}}`.
pub const CREDS_ENV: &str = "DEEPLAKE_LINK_CREDS";
/// Environment variable naming a file that holds creds sets in the same JSON shape.
pub const CREDS_FILE_ENV: &str = "DEEPLAKE_LINK_CREDS_FILE";

/// Named credential sets for link targets. Keys of a set:
/// * for `s3://`: any `object_store` S3 config key or its `aws_` spelling
///   (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`,
///   `endpoint_url`/`endpoint`, `aws_region`/`region`, `allow_http`, ...);
/// * for `http(s)://`: `bearer_token`, or `authorization` (the whole header value).
///
/// `Debug` shows the names and keys only, never a value.
#[derive(Clone, Default)]
pub struct LinkCreds {
    sets: BTreeMap<String, BTreeMap<String, String>>,
}

impl fmt::Debug for LinkCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.sets.iter().map(|(k, v)| {
                (
                    k,
                    v.keys()
                        .map(|k| format!("{k}=<redacted>"))
                        .collect::<Vec<_>>(),
                )
            }))
            .finish()
    }
}

impl LinkCreds {
    /// Adds (or replaces) the set named `name`.
    pub fn insert(&mut self, name: impl Into<String>, set: BTreeMap<String, String>) {
        self.sets.insert(name.into(), set);
    }

    /// The names of the sets held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.sets.get(name)
    }

    /// Parses `{"name": {"key": "value"}}`. The error never quotes the text, which
    /// holds secrets.
    pub fn from_json(text: &str) -> Result<LinkCreds> {
        let sets: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(text)
            .map_err(|e| {
                Error::invalid(format!(
                    "link credentials: expected {{\"name\": {{\"key\": \"value\"}}}} (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        Ok(LinkCreds { sets })
    }

    /// Sets from [`CREDS_FILE_ENV`] and then [`CREDS_ENV`] (which wins on a name in both).
    pub fn from_env() -> Result<LinkCreds> {
        let mut out = LinkCreds::default();
        if let Ok(path) = std::env::var(CREDS_FILE_ENV) {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid(format!("{CREDS_FILE_ENV}: cannot read {path:?}: {e}"))
            })?;
            out.sets.extend(Self::from_json(&text)?.sets);
        }
        if let Ok(text) = std::env::var(CREDS_ENV) {
            out.sets.extend(Self::from_json(&text)?.sets);
        }
        Ok(out)
    }
}

/// Settings of a [`Linker`].
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Fetches in flight at once.
    pub concurrency: usize,
    /// Retries of a failure that may pass (so `retries + 1` attempts at most).
    pub retries: u32,
    /// Deadline of one attempt, body included.
    pub timeout: Duration,
    /// First backoff; each retry doubles it (with jitter), up to two seconds.
    pub backoff: Duration,
    /// Budget of the cache of fetched bytes (0 turns it off).
    pub cache_bytes: usize,
    pub creds: LinkCreds,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            concurrency: 32,
            retries: 3,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(50),
            cache_bytes: 64 << 20,
            creds: LinkCreds::default(),
        }
    }
}

/// Where a link points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A local file (`file://` or a plain path; relative paths are relative to the
    /// working folder, as in 3.x).
    Local(PathBuf),
    /// An `http://` or `https://` URL, query string included.
    Http(String),
    S3 {
        bucket: String,
        key: String,
    },
}

impl LinkTarget {
    pub fn parse(target: &str) -> Result<LinkTarget> {
        let t = target.trim();
        if t.is_empty() {
            return Err(Error::invalid("a link is empty"));
        }
        match t.split_once("://") {
            None => Ok(LinkTarget::Local(PathBuf::from(t))),
            Some(("file", p)) if !p.is_empty() => Ok(LinkTarget::Local(PathBuf::from(p))),
            Some(("http" | "https", rest)) if !rest.is_empty() => {
                Ok(LinkTarget::Http(t.to_owned()))
            }
            Some(("s3", rest)) => match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    Ok(LinkTarget::S3 {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                    })
                }
                _ => Err(Error::invalid(format!(
                    "link {}: expected s3://bucket/key",
                    redact(t)
                ))),
            },
            Some((scheme @ ("gcs" | "gs" | "gcp" | "az" | "azure" | "gdrive"), _)) => {
                Err(Error::unsupported(format!(
                    "link {}: {scheme}:// targets are not supported yet; use file://, http(s):// or s3://",
                    redact(t)
                )))
            }
            Some((scheme, _)) => Err(Error::invalid(format!(
                "link {}: unknown scheme {scheme:?}; use file://, http(s):// or s3://",
                redact(t)
            ))),
        }
    }
}

/// `target` fit for errors and logs: the query string and fragment (where signed URLs
/// keep their secrets) and any `user:password@` are dropped.
pub fn redact(target: &str) -> String {
    let cut = target.find(['?', '#']).unwrap_or(target.len());
    let mut s = target[..cut].to_owned();
    if let Some((scheme, rest)) = s.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            s = format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    s
}

/// What one attempt learned: the bytes, or a failure and whether it may pass.
struct Failure {
    status: Option<u16>,
    reason: String,
    retryable: bool,
}

impl Failure {
    fn of_object_store(e: &object_store::Error) -> Failure {
        use object_store::Error as E;
        let retryable = !matches!(
            e,
            E::NotFound { .. }
                | E::InvalidPath { .. }
                | E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::NotSupported { .. }
                | E::UnknownConfigurationKey { .. }
        );
        let status = match e {
            E::NotFound { .. } => Some(404),
            E::PermissionDenied { .. } => Some(403),
            E::Unauthenticated { .. } => Some(401),
            _ => None,
        };
        Failure {
            status,
            reason: e.to_string(),
            retryable,
        }
    }

    fn of_reqwest(e: &reqwest::Error) -> Failure {
        // reqwest's Display includes the URL; the caller names the redacted target.
        let reason = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else if e.is_body() || e.is_decode() {
            "the connection dropped while reading the body".to_owned()
        } else {
            "request failed".to_owned()
        };
        let detail = std::error::Error::source(e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        Failure {
            status: None,
            reason: format!("{reason}{detail}"),
            retryable: true,
        }
    }
}

type S3Client = Arc<dyn ObjectStore>;

/// Fetches link targets (module docs). Clones share the pool, the clients and the cache.
#[derive(Clone)]
pub struct Linker {
    inner: Arc<Inner>,
}

struct Inner {
    opts: LinkOptions,
    http: reqwest::Client,
    /// S3 clients by (bucket, creds key).
    s3: Mutex<HashMap<(String, Option<String>), S3Client>>,
    permits: Semaphore,
    cache: ByteCache<Bytes>,
}

impl fmt::Debug for Linker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linker")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Linker {
    pub fn new(opts: LinkOptions) -> Result<Linker> {
        if opts.concurrency == 0 {
            return Err(Error::invalid("link concurrency must be at least 1"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(opts.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(opts.concurrency)
            .build()
            .map_err(|e| Error::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Linker {
            inner: Arc::new(Inner {
                permits: Semaphore::new(opts.concurrency),
                cache: ByteCache::new(opts.cache_bytes),
                http,
                s3: Mutex::new(HashMap::new()),
                opts,
            }),
        })
    }

    pub fn options(&self) -> &LinkOptions {
        &self.inner.opts
    }

    /// Counters of the byte cache; `reads`/`read_bytes` count fetches from the targets.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// The bytes of `target`, read with the creds set `creds_key` (none: local files,
    /// public URLs, S3 with the environment).
    pub async fn fetch(&self, target: &str, creds_key: Option<&str>) -> Result<Bytes> {
        let cache_key = format!("{}\0{target}", creds_key.unwrap_or(""));
        if let Some(b) = self.inner.cache.get(&cache_key) {
            return Ok(b);
        }
        let bytes = self
            .with_retries(target, creds_key, |linker, parsed| async move {
                linker.get_once(&parsed, creds_key).await
            })
            .await?;
        self.inner.cache.record_read(bytes.len());
        self.inner
            .cache
            .insert(&cache_key, bytes.clone(), bytes.len());
        Ok(bytes)
    }

    /// The size of `target` in bytes, learned without reading it where the scheme
    /// allows (HEAD, a metadata call).
    pub async fn size(&self, target: &str, creds_key: Option<&str>) -> Result<u64> {
        self.with_retries(target, creds_key, |linker, parsed| async move {
            linker.head_once(&parsed, creds_key).await
        })
        .await
    }

    /// Runs one operation under a permit, with the deadline and the retry policy.
    async fn with_retries<T, F, Fut>(
        &self,
        target: &str,
        creds_key: Option<&str>,
        op: F,
    ) -> Result<T>
    where
        F: Fn(Linker, LinkTarget) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let parsed = LinkTarget::parse(target)?;
        // A local file needs no secrets (3.x reads it whatever its creds key).
        if let Some(k) = creds_key
            && !matches!(parsed, LinkTarget::Local(_))
            && self.inner.opts.creds.get(k).is_none()
        {
            return Err(Error::invalid(format!(
                "link {}: creds key {k:?} has no secrets in this process; give them with \
                 {CREDS_ENV}, {CREDS_FILE_ENV} or the daemon config",
                redact(target)
            )));
        }
        let opts = &self.inner.opts;
        let mut attempt = 0u32;
        loop {
            let outcome = {
                let _permit = self
                    .inner
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| Error::internal("link fetch pool closed"))?;
                match tokio::time::timeout(opts.timeout, op(self.clone(), parsed.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure {
                        status: None,
                        reason: format!("timed out after {:?}", opts.timeout),
                        retryable: true,
                    }),
                }
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(f) if f.retryable && attempt < opts.retries => {
                    attempt += 1;
                    let base = opts.backoff.saturating_mul(1 << attempt.min(16));
                    let capped = base.min(Duration::from_secs(2));
                    let jitter = rand::random::<f64>() * 0.5 + 0.75;
                    tracing::debug!(target = %redact(target), attempt, reason = %f.reason, "retrying a link fetch");
                    tokio::time::sleep(capped.mul_f64(jitter)).await;
                }
                Err(f) => {
                    let tries = if attempt > 0 {
                        format!(" (after {} attempts)", attempt + 1)
                    } else {
                        String::new()
                    };
                    return Err(Error::Link {
                        target: redact(target),
                        status: f.status,
                        reason: format!("{}{tries}", f.reason),
                        retryable: f.retryable,
                    });
                }
            }
        }
    }

    async fn get_once(
        &self,
        target: &LinkTarget,
        creds_key: Option<&str>,
    ) -> std::result::Result<Bytes, Failure> {
        match target {
            LinkTarget::Local(path) => tokio::fs::read(path).await.map(Bytes::from).map_err(|e| {
                let missing = e.kind() == std::io::ErrorKind::NotFound;
                Failure {
                    status: missing.then_some(404),
                    reason: if missing {
                        "no such file".to_owned()
                    } else {
                        e.to_string()
                    },
                    // A local read that failed for any other reason (EIO, EMFILE) may pass.
                    retryable: !missing && e.kind() != std::io::ErrorKind::PermissionDenied,
                }
            }),
            LinkTarget::Http(url) => {
                let resp = self
                    .http_request(reqwest::Method::GET, url, creds_key)
                    .send()
                    .await
                    .map_err(|e| Failure::of_reqwest(&e))?;
                let resp = http_status(resp)?;
                resp.bytes().await.map_err(|e| Failure::of_reqwest(&e))
            }
            LinkTarget::S3 { bucket, key } => {
                let (store, path) = self.s3_object(bucket, key, creds_key)?;
                let got = store
                    .get(&path)
                    .await
                    .map_err(|e| Failure::of_object_store(&e))?;
                got.bytes().await.map_err(|e| Failure::of_object_store(&e))
            }
        }
    }

    async fn head_once(
        &self,
        target: &LinkTarget,
        creds_key: Option<&str>,
    ) -> std::result::Result<u64, Failure> {
        match target {
            LinkTarget::Local(path) => match tokio::fs::metadata(path).await {
                Ok(m) if m.is_file() => Ok(m.len()),
                Ok(_) => Err(Failure {
                    status: None,
                    reason: "not a file".to_owned(),
                    retryable: false,
                }),
                Err(e) => Err(Failure {
                    status: (e.kind() == std::io::ErrorKind::NotFound).then_some(404),
                    reason: if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file".to_owned()
                    } else {
                        e.to_string()
                    },
                    retryable: false,
                }),
            },
            LinkTarget::Http(url) => {
                let resp = self
                    .http_request(reqwest::Method::HEAD, url, creds_key)
                    .send()
                    .await
                    .map_err(|e| Failure::of_reqwest(&e))?;
                let resp = http_status(resp)?;
                Ok(resp.content_length().unwrap_or(0))
            }
            LinkTarget::S3 { bucket, key } => {
                let (store, path) = self.s3_object(bucket, key, creds_key)?;
                let meta = store
                    .head(&path)
                    .await
                    .map_err(|e| Failure::of_object_store(&e))?;
                Ok(meta.size)
            }
        }
    }

    fn http_request(
        &self,
        method: reqwest::Method,
        url: &str,
        creds_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.inner.http.request(method, url);
        if let Some(set) = creds_key.and_then(|k| self.inner.opts.creds.get(k)) {
            if let Some(h) = set.get("authorization") {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            } else if let Some(t) = set.get("bearer_token") {
                req = req.bearer_auth(t);
            }
        }
        req
    }

    /// The client and the object path of `s3://bucket/key`.
    fn s3_object(
        &self,
        bucket: &str,
        key: &str,
        creds_key: Option<&str>,
    ) -> std::result::Result<(S3Client, ObjectPath), Failure> {
        let store = self.s3_store(bucket, creds_key)?;
        let path = ObjectPath::parse(key).map_err(|e| Failure {
            status: None,
            reason: format!("bad object key: {e}"),
            retryable: false,
        })?;
        Ok((store, path))
    }

    /// The S3 client of `bucket` with creds set `creds_key`, made once. Its own retries
    /// are off: [`Linker::with_retries`] owns the policy, so attempts do not multiply.
    fn s3_store(
        &self,
        bucket: &str,
        creds_key: Option<&str>,
    ) -> std::result::Result<Arc<dyn ObjectStore>, Failure> {
        let id = (bucket.to_owned(), creds_key.map(str::to_owned));
        let mut stores = self.inner.s3.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&id) {
            return Ok(s.clone());
        }
        let config = |reason: String| Failure {
            status: None,
            reason,
            retryable: false,
        };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 0,
                retry_timeout: self.inner.opts.timeout,
            })
            .with_client_options(ClientOptions::new().with_timeout(self.inner.opts.timeout));
        if let Some(set) = creds_key.and_then(|k| self.inner.opts.creds.get(k)) {
            for (k, v) in set {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| {
                    config(format!(
                        "creds key {:?}: unknown S3 setting {k:?}",
                        creds_key.unwrap_or_default()
                    ))
                })?;
                b = b.with_config(key, v.clone());
            }
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            b.build()
                .map_err(|e| config(format!("cannot open bucket {bucket:?}: {e}")))?,
        );
        stores.insert(id, store.clone());
        Ok(store)
    }
}

fn http_status(resp: reqwest::Response) -> std::result::Result<reqwest::Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = status.as_u16();
    Err(Failure {
        status: Some(code),
        reason: format!("HTTP {status}"),
        retryable: status.is_server_error() || code == 429 || code == 408,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_scheme() {
        assert_eq!(
            LinkTarget::parse("a/b.jpg").unwrap(),
            LinkTarget::Local("a/b.jpg".into())
        );
        assert_eq!(
            LinkTarget::parse("file:///x/y.png").unwrap(),
            LinkTarget::Local("/x/y.png".into())
        );
        assert_eq!(
            LinkTarget::parse("https://h:8/p?sig=1").unwrap(),
            LinkTarget::Http("https://h:8/p?sig=1".into())
        );
        assert_eq!(
            LinkTarget::parse("s3://b/k/1.jpg").unwrap(),
            LinkTarget::S3 {
                bucket: "b".into(),
                key: "k/1.jpg".into()
            }
        );
        for bad in ["", "s3://b", "s3:///k", "ftp://h/x", "http://"] {
            assert!(LinkTarget::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            LinkTarget::parse("gcs://b/k"),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn redaction_drops_query_strings_and_passwords() {
        assert_eq!(
            redact("https://u:pw@h/a.jpg?X-Amz-Signature=s"),
            "https://h/a.jpg"
        );
        assert_eq!(redact("s3://b/k#frag"), "s3://b/k");
        assert_eq!(redact("/p/a@b.jpg"), "/p/a@b.jpg");
    }

    #[test]
    fn creds_never_show_their_values() {
        let c = LinkCreds::from_json(r#"{"prod": {"aws_secret_access_key": "hunter2"}}"#).unwrap();
        let shown = format!(
            "{c:?} {:?}",
            LinkOptions {
                creds: c.clone(),
                ..LinkOptions::default()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("prod"), "{shown}");
        let err = LinkCreds::from_json(r#"{"prod": "hunter2"}"#)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn local_files_are_fetched_cached_and_missing_ones_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        std::fs::write(&p, b"hello").unwrap();
        let l = Linker::new(LinkOptions {
            retries: 5,
            backoff: Duration::from_secs(5),
            ..LinkOptions::default()
        })
        .unwrap();
        let url = format!("file://{}", p.display());
        assert_eq!(&l.fetch(&url, None).await.unwrap()[..], b"hello");
        assert_eq!(l.size(p.to_str().unwrap(), None).await.unwrap(), 5);
        std::fs::remove_file(&p).unwrap();
        // Served from the cache.
        assert_eq!(&l.fetch(&url, None).await.unwrap()[..], b"hello");
        assert_eq!(l.cache_stats().reads, 1);
        let started = std::time::Instant::now();
        let err = l
            .fetch(dir.path().join("gone").to_str().unwrap(), None)
            .await
            .unwrap_err();
        // Not retried: a 5 s backoff would show.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(
                &err,
                Error::Link {
                    status: Some(404),
                    retryable: false,
                    ..
                }
            ),
            "{err:?}"
        );
        // A creds key without secrets: fine for a local file, refused for a remote one.
        let q = dir.path().join("b.bin");
        std::fs::write(&q, b"keyed").unwrap();
        assert_eq!(
            &l.fetch(q.to_str().unwrap(), Some("nope")).await.unwrap()[..],
            b"keyed"
        );
        let err = l
            .fetch("https://127.0.0.1:9/x.jpg", Some("nope"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }
}
