//! Background writes of closed chunks.
//!
//! A chunk that will not grow any more is encoded and put by a spawned task, so disk or
//! network IO overlaps with encoding the next samples. At most `max_in_flight` writes
//! run at once (memory stays bounded); [`ChunkWriter::drain`] waits for all of them and
//! reports the first error, and `Dataset::flush` drains before it writes any index that
//! points at those chunks. Until its write lands, a chunk stays readable from the
//! tensor's in-flight map; two writes of the same chunk never overlap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::format::chunk::ChunkBuilder;
use crate::format::compression::Compression;
use crate::store::Store;

/// Chunks of one tensor whose write has been submitted but has not landed, by id.
pub type Inflight = Arc<Mutex<HashMap<u64, Arc<ChunkBuilder>>>>;

pub struct ChunkWriter {
    tasks: JoinSet<Result<()>>,
    max_in_flight: usize,
    policy: WritePolicy,
}

/// How a writing handle writes. Not stored with the dataset; it outlives the handle
/// swaps of commit and checkout.
#[derive(Clone, Copy, Debug, Default)]
pub struct WritePolicy {
    /// Bytes a chunk is filled to before the next one starts, if lower than half of the
    /// tensor's `max_chunk_size` (see [`crate::Dataset::set_chunk_fill`]).
    pub fill: Option<usize>,
    /// Refresh the 3.x files at commits and structural changes only, not at every
    /// flush (see [`crate::Dataset::set_deferred_compat_files`]).
    pub deferred_compat: bool,
}

impl ChunkWriter {
    pub fn new(max_in_flight: usize) -> Self {
        ChunkWriter {
            tasks: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
            policy: WritePolicy::default(),
        }
    }

    pub fn set_policy(&mut self, policy: WritePolicy) {
        self.policy = WritePolicy {
            fill: policy.fill.map(|b| b.max(1)),
            ..policy
        };
    }

    pub fn policy(&self) -> WritePolicy {
        self.policy
    }

    /// How full a chunk of a tensor whose `max_chunk_size` is `max` gets.
    pub fn fill_of(&self, max: usize) -> usize {
        let half = max / 2;
        self.policy.fill.map_or(half, |f| f.min(half))
    }

    /// Starts writing `builder` at `key`.
    pub async fn submit(
        &mut self,
        store: &Store,
        key: String,
        inflight: &Inflight,
        id: u64,
        builder: ChunkBuilder,
        chunk_compression: Option<Compression>,
    ) -> Result<()> {
        let pending_same = lock(inflight)?.contains_key(&id);
        if pending_same {
            // An older version of this chunk is still being written: let it land first
            // so the newer one wins.
            self.drain().await?;
        }
        while self.tasks.len() >= self.max_in_flight {
            self.join_one().await?;
        }
        let builder = Arc::new(builder);
        lock(inflight)?.insert(id, builder.clone());
        let store = store.clone();
        let inflight = inflight.clone();
        self.tasks.spawn(async move {
            let b = builder.clone();
            let parts =
                crate::runtime::spawn_cpu(move || Ok(chunk_parts(&b, chunk_compression.as_ref())))
                    .await?;
            store.put_parts(&key, parts).await?;
            {
                let mut map = lock(&inflight)?;
                if map.get(&id).is_some_and(|b| Arc::ptr_eq(b, &builder)) {
                    map.remove(&id);
                }
            }
            if let Ok(b) = Arc::try_unwrap(builder) {
                recycle(b.data.into_owned_buffer());
            }
            // Durable now, while the next chunk fills, rather than all at the flush.
            store.sync_object(&key).await
        });
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(Error::internal(format!("a chunk write task failed: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for every submitted write; the first error is returned.
    pub async fn drain(&mut self) -> Result<()> {
        let mut first = None;
        while !self.tasks.is_empty() {
            if let Err(e) = self.join_one().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Data buffers of written chunks, kept for the next chunks of any tensor. A fresh
/// multi-megabyte buffer costs a page fault and a zeroed page per 4 KiB on first touch;
/// ingest fills one after another, so reusing a few saves that work.
static BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const POOLED_BUFFERS: usize = 4;
const MIN_POOLED: usize = 1 << 20;

/// An empty buffer with room for at least `cap` bytes, reused when one is pooled.
pub fn buffer(cap: usize) -> Vec<u8> {
    if cap >= MIN_POOLED
        && let Ok(mut pool) = BUFFERS.lock()
        && let Some(i) = pool.iter().position(|b| b.capacity() >= cap)
    {
        return pool.swap_remove(i);
    }
    Vec::with_capacity(cap)
}

fn recycle(mut data: Vec<u8>) {
    if data.capacity() < MIN_POOLED {
        return;
    }
    data.clear();
    if let Ok(mut pool) = BUFFERS.lock()
        && pool.len() < POOLED_BUFFERS
    {
        pool.push(data);
    }
}

/// A chunk as the parts of one put: its header, then its data section, compressed with
/// the tensor's chunk codec or else shared with the builder as it is, without a copy.
pub fn chunk_parts(b: &Arc<ChunkBuilder>, chunk_compression: Option<&Compression>) -> Vec<Bytes> {
    let header = Bytes::from(b.encode_header());
    match chunk_compression {
        Some(Compression::Lz4) => vec![
            header,
            Bytes::from(crate::format::compression::lz4_compress(
                &b.data.contiguous(),
            )),
        ],
        _ => {
            let mut parts = Vec::with_capacity(b.data.shared().len() + 2);
            parts.push(header);
            parts.extend(b.data.shared().iter().cloned());
            if !b.data.owned().is_empty() {
                parts.push(Bytes::from_owner(DataOf(b.clone())));
            }
            parts
        }
    }
}

/// The owned tail of a shared builder's data section, as the owner of a zero-copy `Bytes`.
struct DataOf(Arc<ChunkBuilder>);

impl AsRef<[u8]> for DataOf {
    fn as_ref(&self) -> &[u8] {
        self.0.data.owned()
    }
}

pub fn lock(m: &Inflight) -> Result<std::sync::MutexGuard<'_, HashMap<u64, Arc<ChunkBuilder>>>> {
    m.lock()
        .map_err(|_| Error::internal("in-flight chunk map poisoned"))
}
