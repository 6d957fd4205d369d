//! The chunk cache of dataset handles: a [`ByteCache`] of decoded chunks and chunk
//! headers, shareable by every dataset handle of a process.
//!
//! What may be shared is decided by the handles ([`CacheView`]): a chunk stored in the
//! folder of a committed version never changes, so it is cached under the dataset URL
//! and its key, for every handle. A chunk of an uncommitted head may still grow or be
//! rewritten in place by a writer, so it is cached under a namespace private to the
//! handle that read it, and forgotten when that handle writes or is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::bytecache::{ByteCache, CacheStats};
use crate::format::chunk::Chunk;

/// Budget of the cache a handle makes for itself when [`crate::OpenOptions::cache`] is unset.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// The cache of decoded chunks and headers (module docs).
pub type ChunkCache = ByteCache<Arc<Chunk>>;

/// Whole chunks and headers of the same object are different entries.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Chunk,
    Header,
}

/// One handle's window on a (possibly shared) [`ChunkCache`]: builds its keys and
/// forgets its private entries when the handle writes or goes away.
pub(crate) struct CacheView {
    cache: Arc<ChunkCache>,
    url: String,
    handle: u64,
}

static HANDLES: AtomicU64 = AtomicU64::new(0);

impl CacheView {
    pub(crate) fn new(cache: Option<Arc<ChunkCache>>, url: &str) -> Self {
        CacheView {
            cache: cache.unwrap_or_else(|| Arc::new(ChunkCache::new(DEFAULT_CACHE_BYTES))),
            url: url.to_owned(),
            handle: HANDLES.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn private_prefix(&self) -> String {
        format!("{}\0#{}\0", self.url, self.handle)
    }

    /// The cache key of object `key` (immutable: stored under a committed version).
    pub(crate) fn key(&self, kind: Kind, immutable: bool, key: &str) -> String {
        let k = match kind {
            Kind::Chunk => 'c',
            Kind::Header => 'h',
        };
        if immutable {
            format!("{}\0{k}\0{key}", self.url)
        } else {
            format!("{}{k}\0{key}", self.private_prefix())
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Chunk>> {
        self.cache.get(key)
    }

    pub(crate) fn insert(&self, key: &str, value: Arc<Chunk>, size: usize) {
        self.cache.insert(key, value, size);
    }

    /// Forgets what only this handle may use: chunks of a head it may have changed.
    pub(crate) fn clear(&self) {
        self.cache.forget_prefix(&self.private_prefix());
    }

    pub(crate) fn shared(&self) -> &Arc<ChunkCache> {
        &self.cache
    }
}

impl Drop for CacheView {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Arc<Chunk> {
        Arc::new(Chunk {
            version: "3.9.52".to_owned(),
            shapes: Vec::new(),
            byte_positions: Vec::new(),
            data: bytes::Bytes::from(vec![0u8; n]),
        })
    }

    fn has(c: &ChunkCache, key: &str) -> bool {
        c.contains(key)
    }

    #[test]
    fn views_share_committed_chunks_and_keep_head_chunks_private() {
        let shared = Arc::new(ChunkCache::new(1000));
        let a = CacheView::new(Some(shared.clone()), "mem://d");
        let b = CacheView::new(Some(shared.clone()), "mem://d");
        let other = CacheView::new(Some(shared.clone()), "mem://e");
        let committed = a.key(Kind::Chunk, true, "t/chunks/1");
        assert_eq!(committed, b.key(Kind::Chunk, true, "t/chunks/1"));
        assert_ne!(committed, other.key(Kind::Chunk, true, "t/chunks/1"));
        assert_ne!(committed, a.key(Kind::Header, true, "t/chunks/1"));
        let head_a = a.key(Kind::Chunk, false, "t/chunks/2");
        assert_ne!(head_a, b.key(Kind::Chunk, false, "t/chunks/2"));
        a.insert(&committed, chunk(10), 10);
        a.insert(&head_a, chunk(10), 10);
        // A write through `a` forgets its private entries only.
        a.clear();
        assert!(b.get(&committed).is_some());
        assert!(!has(&shared, &head_a));
        a.insert(&head_a, chunk(10), 10);
        drop(a);
        assert!(!has(&shared, &head_a));
        assert!(has(&shared, &committed));
        shared.forget_dataset("mem://d");
        assert_eq!(shared.stats().entries, 0);
    }
}
