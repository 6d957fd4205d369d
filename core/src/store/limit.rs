//! A cap on the requests one process has in flight to one S3 bucket.
//!
//! Reads fan out: opening a dataset with a long history resolves each tensor's chunk
//! locations over its commit chain, tensors in parallel, and a daemon serves several
//! datasets and streams at once. Without a cap that fan-out opens one connection (and
//! one socket, one task) per request in flight: hundreds after a few hundred commits.
//! Every store opened on a bucket takes its permits from one semaphore per bucket and
//! cap, so the cap holds across datasets and handles; each store keeps its own HTTP
//! client, since a client's pooled connections belong to the runtime that opened them.
//!
//! A permit is held from the request until its answer is read: for a GET, until the
//! body stream ends or is dropped; for a listing, for as long as the listing is read.
//! `Store` reads bodies and listings whole before it does anything else, so no caller
//! waits for a permit while holding one. A multipart upload holds one only while it
//! is created (its parts are not counted).

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests in flight to one bucket by default (storage option `max_requests`).
pub const DEFAULT_MAX_REQUESTS: usize = 64;

/// Semaphores by bucket and cap.
type Buckets = Mutex<HashMap<(String, usize), Arc<Semaphore>>>;

/// The semaphore of `bucket` at `max` permits, shared by every store of this process
/// that opens that bucket with that cap.
pub fn bucket_permits(bucket: &str, max: usize) -> Arc<Semaphore> {
    static BUCKETS: OnceLock<Buckets> = OnceLock::new();
    let mut m = BUCKETS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    m.entry((bucket.to_owned(), max))
        .or_insert_with(|| Arc::new(Semaphore::new(max)))
        .clone()
}

/// A store whose requests each hold a permit of a shared semaphore (module docs).
pub struct Limited {
    inner: Arc<dyn ObjectStore>,
    permits: Arc<Semaphore>,
}

impl Limited {
    pub fn new(inner: Arc<dyn ObjectStore>, permits: Arc<Semaphore>) -> Limited {
        Limited { inner, permits }
    }

    async fn permit(&self) -> object_store::Result<OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "limit",
                source: Box::new(e),
            })
    }
}

impl fmt::Debug for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limited({})", self.inner)
    }
}

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Limited({})", self.inner)
    }
}

/// A one-item stream of the error of a closed semaphore (never closed here).
fn closed<T: Send + 'static>(
    e: tokio::sync::AcquireError,
) -> BoxStream<'static, object_store::Result<T>> {
    futures::stream::once(async move {
        Err(object_store::Error::Generic {
            store: "limit",
            source: Box::new(e),
        })
    })
    .boxed()
}

/// `s`, holding `permit` until it ends or is dropped.
fn holding<T: Send + 'static>(
    s: BoxStream<'static, T>,
    permit: OwnedSemaphorePermit,
) -> BoxStream<'static, T> {
    s.map(move |x| {
        let _held = &permit;
        x
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Limited {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let _p = self.permit().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let _p = self.permit().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let p = self.permit().await?;
        let mut r = self.inner.get_opts(location, options).await?;
        r.payload = match r.payload {
            GetResultPayload::Stream(s) => GetResultPayload::Stream(holding(s, p)),
            // A local file is read without a connection.
            other => other,
        };
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let _p = self.permit().await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (inner, permits) = (self.inner.clone(), self.permits.clone());
        futures::stream::once(async move { (permits.acquire_owned().await, inner, locations) })
            .flat_map(|(p, inner, locations)| match p {
                Ok(p) => holding(inner.delete_stream(locations), p),
                Err(e) => closed(e),
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (inner, permits) = (self.inner.clone(), self.permits.clone());
        let prefix = prefix.cloned();
        futures::stream::once(async move { (permits.acquire_owned().await, inner, prefix) })
            .flat_map(|(p, inner, prefix)| match p {
                Ok(p) => holding(inner.list(prefix.as_ref()), p),
                Err(e) => closed(e),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let _p = self.permit().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let _p = self.permit().await?;
        self.inner.copy_opts(from, to, options).await
    }
}
