//! A byte-bounded LRU cache, shareable across a process: decoded chunks and chunk
//! headers (`dataset`), fetched link targets (`link`).
//!
//! Contract:
//! * The values held never exceed the byte budget: an insert evicts least recently used
//!   entries until the new one fits; a value larger than the whole budget is not kept
//!   (and evicts nothing).
//! * A lookup that finds an entry makes it the most recently used.
//! * Hits, misses, evictions and the bytes held are counted ([`ChunkCache::stats`]),
//!   and so are the reads of chunk objects (whole or ranges) that its handles made.
//!
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counters of a [`ByteCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found their entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries dropped to make room (not those forgotten after a write).
    pub evictions: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
    /// The byte budget.
    pub budget: u64,
    /// Reads from storage (whole chunks, headers, sample ranges, link targets).
    pub reads: u64,
    /// Bytes those reads returned.
    pub read_bytes: u64,
}

struct Slot<V> {
    value: V,
    size: usize,
    tick: u64,
}

struct Lru<V> {
    slots: HashMap<String, Slot<V>>,
    /// Use order: the smallest tick is the least recently used key.
    order: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Lru {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
        }
    }
}

impl<V: Clone> Lru<V> {
    fn touch(&mut self, key: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.slots.get_mut(key)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, key.to_owned());
        Some(slot.value.clone())
    }

    fn remove(&mut self, key: &str) -> Option<Slot<V>> {
        let slot = self.slots.remove(key)?;
        self.order.remove(&slot.tick);
        self.bytes -= slot.size;
        Some(slot)
    }
}

/// A byte-bounded LRU (module docs).
pub struct ByteCache<V> {
    budget: usize,
    lru: Mutex<Lru<V>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
}

impl<V: Clone> std::fmt::Debug for ByteCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<V: Clone> ByteCache<V> {
    /// A cache holding at most `budget` bytes of values.
    pub fn new(budget: usize) -> Self {
        ByteCache {
            budget,
            lru: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
        }
    }

    /// Counts one read of `bytes` bytes from storage (a chunk object, a link target).
    pub fn record_read(&self, bytes: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Each update leaves the maps consistent before it can panic, so a poisoned lock
    /// is used as is rather than turning every later read into an error.
    fn lock(&self) -> MutexGuard<'_, Lru<V>> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry under `key`, now the most recently used.
    pub fn get(&self, key: &str) -> Option<V> {
        let got = self.lock().touch(key);
        let counter = if got.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        got
    }

    /// Keeps `value` (costing `size` bytes) under `key`, evicting the least recently used
    /// entries until it fits; a value over the whole budget is not kept.
    pub fn insert(&self, key: &str, value: V, size: usize) {
        if size > self.budget {
            return;
        }
        let mut lru = self.lock();
        lru.remove(key);
        let mut evicted = 0;
        while lru.bytes + size > self.budget {
            let Some((_, old)) = lru.order.pop_first() else {
                break;
            };
            if let Some(slot) = lru.slots.remove(&old) {
                lru.bytes -= slot.size;
                evicted += 1;
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, key.to_owned());
        lru.slots.insert(key.to_owned(), Slot { value, size, tick });
        lru.bytes += size;
        drop(lru);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Drops every entry whose key starts with `prefix` (not counted as evictions).
    pub fn forget_prefix(&self, prefix: &str) {
        let mut lru = self.lock();
        let keys: Vec<String> = lru
            .slots
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in keys {
            lru.remove(&k);
        }
    }

    /// Drops every entry of the dataset at `url`, shared or private to a handle (after the
    /// dataset was deleted, say, so that a new one at the same URL starts cold).
    pub fn forget_dataset(&self, url: &str) {
        self.forget_prefix(&format!("{url}\0"));
    }

    pub fn clear(&self) {
        *self.lock() = Lru::default();
    }

    pub fn stats(&self) -> CacheStats {
        let (bytes, entries) = {
            let lru = self.lock();
            (lru.bytes as u64, lru.slots.len() as u64)
        };
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes,
            entries,
            budget: self.budget as u64,
            reads: self.reads.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether `key` is held (without touching its use order or the counters).
    pub fn contains(&self, key: &str) -> bool {
        self.lock().slots.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Vec<u8> {
        vec![0u8; n]
    }

    fn has(c: &ByteCache<Vec<u8>>, key: &str) -> bool {
        c.lock().slots.contains_key(key)
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let c = ByteCache::new(30);
        c.insert("a", chunk(10), 10);
        c.insert("b", chunk(10), 10);
        c.insert("c", chunk(10), 10);
        // Using `a` makes `b` the oldest.
        assert!(c.get("a").is_some());
        c.insert("d", chunk(10), 10);
        assert!(!has(&c, "b"));
        assert!(has(&c, "a") && has(&c, "c") && has(&c, "d"));
        c.insert("e", chunk(10), 10);
        assert!(!has(&c, "c"));
        let s = c.stats();
        assert_eq!((s.evictions, s.entries, s.bytes), (2, 3, 30));
    }

    #[test]
    fn never_holds_more_than_the_budget() {
        let c = ByteCache::new(100);
        for i in 0..50usize {
            let size = 7 + (i * 13) % 40;
            c.insert(&format!("k{i}"), chunk(size), size);
            let s = c.stats();
            assert!(s.bytes <= 100, "{s:?}");
            assert_eq!(
                s.bytes as usize,
                c.lock().slots.values().map(|v| v.size).sum::<usize>()
            );
        }
        // A big insert evicts as many as it needs, oldest first.
        c.insert("big", chunk(95), 95);
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.stats().bytes, 95);
    }

    #[test]
    fn an_item_over_the_budget_is_not_kept_and_evicts_nothing() {
        let c = ByteCache::new(20);
        c.insert("a", chunk(10), 10);
        c.insert("huge", chunk(21), 21);
        assert!(!has(&c, "huge"));
        assert!(has(&c, "a"));
        assert_eq!(c.stats().evictions, 0);
        // An item of exactly the budget fits.
        c.insert("full", chunk(20), 20);
        assert!(has(&c, "full") && !has(&c, "a"));
    }

    #[test]
    fn replacing_a_key_updates_its_size() {
        let c = ByteCache::new(30);
        c.insert("a", chunk(10), 10);
        c.insert("a", chunk(25), 25);
        let s = c.stats();
        assert_eq!((s.bytes, s.entries, s.evictions), (25, 1, 0));
    }

    #[test]
    fn counts_hits_and_misses() {
        let c = ByteCache::new(30);
        assert!(c.get("a").is_none());
        c.insert("a", chunk(1), 1);
        assert!(c.get("a").is_some());
        assert!(c.get("a").is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (2, 1));
    }
}
