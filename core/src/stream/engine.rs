//! The stream itself: batches of a view's rows, read, decoded, transformed and
//! collated ahead of the consumer within a memory budget.
//!
//! Contract:
//! * A stream covers one epoch of one part (rank, worker) of a view, in the plan's order
//!   ([`super::plan`]), from a cursor on. Every batch carries the cursor that resumes
//!   right after it.
//! * Batches are built concurrently (`ahead` at a time): each tensor's rows are read
//!   with every chunk they touch fetched once, then decoding, transforms and collation
//!   run on the CPU pool, never on the reactor.
//! * Prepared batches waiting for the consumer hold at most `prefetch_bytes`; a batch
//!   larger than the whole budget waits until nothing else is held. Memory is the
//!   budget plus the batches being built; [`StreamStats::peak_held`] reports the peak.
//! * Collation: rows of one shape and dtype become one contiguous array
//!   `(batch, *shape)`; arrays of one rank but different shapes are zero-padded to the
//!   largest (with each row's shape) or given as a list, as asked; anything else
//!   (text, json, encoded bytes, sequences) is a list.
//! * Link tensors stream their targets (fetched through the dataset's linker and decoded
//!   as their inner htype), not their paths.
//! * The first error ends the stream; dropping the stream stops its work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::plan::{Cursor, Order, Part, Plan};
use super::transform::{self, SampleAt, Transform};
use crate::dataset::{Dataset, ReadOptions};
use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::compression::Compression;

/// How rows of different shapes are collated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ragged {
    /// Zero-padded to the largest shape, with each row's shape.
    Pad,
    /// One sample per row.
    List,
}

/// What to stream.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Tensors to read (empty: every visible tensor). The first one's chunks guide a
    /// shuffle.
    pub tensors: Vec<String>,
    pub batch_size: usize,
    pub order: Order,
    pub rank: Part,
    pub worker: Part,
    /// Pad every part to one length (data-parallel jobs).
    pub even: bool,
    /// Drop the last batch of the part when it is short.
    pub drop_last: bool,
    pub cursor: Cursor,
    /// Decode images (otherwise their stored bytes are returned).
    pub decode: bool,
    /// Transforms by tensor, applied in order.
    pub transforms: Vec<(String, Vec<Transform>)>,
    pub ragged: Ragged,
    /// Budget of prepared batches held ahead of the consumer.
    pub prefetch_bytes: usize,
    /// Batches built at once.
    pub ahead: usize,
    /// Concurrent chunk fetches per tensor read.
    pub fetch_concurrency: usize,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            tensors: Vec::new(),
            batch_size: 32,
            order: Order::Sequential,
            rank: Part::WHOLE,
            worker: Part::WHOLE,
            even: false,
            drop_last: false,
            cursor: Cursor::default(),
            decode: true,
            transforms: Vec::new(),
            ragged: Ragged::Pad,
            prefetch_bytes: 256 << 20,
            ahead: 2,
            fetch_concurrency: 16,
        }
    }
}

/// One collated tensor of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// Every row had this array's shape after the batch dimension.
    Dense(NdArray),
    /// Rows zero-padded to the largest shape; `shapes[i]` is row i's own shape.
    Padded {
        data: NdArray,
        shapes: Vec<Vec<usize>>,
    },
    /// One sample per row.
    List(Vec<Sample>),
}

impl Column {
    fn bytes(&self) -> usize {
        match self {
            Column::Dense(a) => a.data.len(),
            Column::Padded { data, shapes } => data.data.len() + shapes.len() * 16,
            Column::List(v) => v.iter().map(sample_bytes).sum(),
        }
    }
}

fn sample_bytes(s: &Sample) -> usize {
    match s {
        Sample::Array(a) => a.data.len(),
        Sample::Encoded { bytes, .. } => bytes.len(),
        Sample::Text(t) => t.len(),
        Sample::Link { path, .. } => path.len(),
        Sample::Polygons(p) => p.iter().map(|a| a.data.len()).sum(),
        Sample::Sequence(items) => items.iter().map(sample_bytes).sum(),
        Sample::Json(_) | Sample::List(_) => 64,
        Sample::Empty => 0,
    }
}

/// A batch: its source rows, one column per tensor (in the spec's order), and the
/// cursor that resumes after it.
#[derive(Debug)]
pub struct Batch {
    pub rows: Vec<u64>,
    pub columns: Vec<(String, Column)>,
    pub cursor: Cursor,
    _held: Held,
}

impl Batch {
    pub fn column(&self, tensor: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|(t, _)| t == tensor)
            .map(|(_, c)| c)
    }
}

/// Releases a batch's share of the budget when the consumer drops it.
#[derive(Debug)]
struct Held {
    bytes: u64,
    counters: Arc<Counters>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters.held.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    held: AtomicU64,
    peak_held: AtomicU64,
    decoded_in_place: AtomicU64,
}

/// What a stream has done so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamStats {
    /// Rows and batches yielded, and the bytes of their columns.
    pub rows: u64,
    pub batches: u64,
    pub bytes: u64,
    /// The most bytes of prepared batches held at once (waiting or with the consumer).
    pub peak_held: u64,
    pub budget: u64,
    /// Samples decoded straight into their batch buffer (no per-sample buffer or copy).
    pub decoded_in_place: u64,
}

/// A running stream (module docs).
pub struct Stream {
    rx: mpsc::Receiver<Result<Batch>>,
    counters: Arc<Counters>,
    budget: u64,
    rows_total: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream {
    /// Starts streaming `view` (rows of `ds`; all rows when `None`) as `spec` says.
    pub async fn open(
        ds: Arc<Dataset>,
        view: Option<Vec<u64>>,
        spec: StreamSpec,
    ) -> Result<Stream> {
        if spec.batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        if spec.prefetch_bytes == 0 {
            return Err(Error::invalid(
                "the prefetch budget must be at least 1 byte",
            ));
        }
        let mut spec = spec;
        if spec.tensors.is_empty() {
            spec.tensors = ds.tensor_names();
        }
        if spec.tensors.is_empty() {
            return Err(Error::invalid("the dataset has no tensors to stream"));
        }
        let mut len = u64::MAX;
        for t in &spec.tensors {
            len = len.min(ds.tensor_len(t)?);
        }
        for (t, list) in &spec.transforms {
            if !spec.tensors.contains(t) {
                return Err(Error::invalid(format!(
                    "transforms name tensor {t:?}, which is not streamed"
                )));
            }
            for x in list {
                x.validate()?;
            }
            if !list.is_empty() && !spec.decode {
                return Err(Error::invalid(format!(
                    "transforms on tensor {t:?} need decoded samples (decode is off)"
                )));
            }
        }
        // Checking the view, the chunk lookup and the epoch's order are O(rows): a view of
        // millions of rows takes tens of milliseconds, so they run on the CPU pool.
        let (plan_ds, plan_spec) = (ds.clone(), spec.clone());
        let batches =
            crate::runtime::spawn_cpu(move || plan_batches(&plan_ds, view, &plan_spec, len))
                .await?;
        let rows_total = batches.iter().map(|b| b.len() as u64).sum();
        let counters = Arc::new(Counters::default());
        let budget = spec.prefetch_bytes;
        let (tx, rx) = mpsc::channel(spec.ahead.max(1));
        let task = tokio::spawn(produce(ds, Arc::new(spec), batches, counters.clone(), tx));
        Ok(Stream {
            rx,
            counters,
            budget: budget as u64,
            rows_total,
            task,
        })
    }

    /// The next batch; `None` after the last one (or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.recv().await
    }

    /// Rows this stream yields in all (after the cursor).
    pub fn rows_total(&self) -> u64 {
        self.rows_total
    }

    pub fn stats(&self) -> StreamStats {
        let c = &self.counters;
        StreamStats {
            rows: c.rows.load(Ordering::SeqCst),
            batches: c.batches.load(Ordering::SeqCst),
            bytes: c.bytes.load(Ordering::SeqCst),
            peak_held: c.peak_held.load(Ordering::SeqCst),
            budget: self.budget,
            decoded_in_place: c.decoded_in_place.load(Ordering::SeqCst),
        }
    }
}

/// The batches (source rows) of the part and epoch `spec` names.
fn plan_batches(
    ds: &Dataset,
    view: Option<Vec<u64>>,
    spec: &StreamSpec,
    len: u64,
) -> Result<Vec<Vec<u64>>> {
    let rows: Vec<u64> = match view {
        Some(v) => {
            if let Some(r) = v.iter().find(|r| **r >= len) {
                return Err(Error::invalid(format!(
                    "view row {r} is past the end of the streamed tensors ({len} rows)"
                )));
            }
            v
        }
        None => (0..len).collect(),
    };
    let plan = match spec.order {
        Order::Sequential => Plan::unchunked(rows.len()),
        Order::Shuffle { .. } => Plan::new(&ds.chunk_keys(&spec.tensors[0], &rows)?),
    };
    let positions = plan.part(spec.order, spec.rank, spec.worker, spec.even, spec.cursor)?;
    let mut batches: Vec<Vec<u64>> = positions
        .chunks(spec.batch_size)
        .map(|c| c.iter().map(|&p| rows[p]).collect())
        .collect();
    if spec.drop_last && batches.last().is_some_and(|b| b.len() < spec.batch_size) {
        batches.pop();
    }
    Ok(batches)
}

async fn produce(
    ds: Arc<Dataset>,
    spec: Arc<StreamSpec>,
    batches: Vec<Vec<u64>>,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Result<Batch>>,
) {
    let budget = Arc::new(Semaphore::new(
        spec.prefetch_bytes.min(Semaphore::MAX_PERMITS),
    ));
    let mut offset = spec.cursor.offset;
    // Batches in flight outlive the engine's own queue (a server's send queue holds
    // some), so the pool is sized in bytes, half the prefetch budget, not in batches.
    let pool = BufferPool::new(spec.prefetch_bytes / 2);
    let built = futures::stream::iter(batches)
        .map(|rows| {
            build(
                ds.clone(),
                spec.clone(),
                rows,
                pool.clone(),
                counters.clone(),
            )
        })
        .buffered(spec.ahead.max(1));
    futures::pin_mut!(built);
    while let Some(next) = built.next().await {
        let (rows, columns) = match next {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let bytes: usize = columns.iter().map(|(_, c)| c.bytes()).sum();
        let want = bytes.clamp(1, spec.prefetch_bytes.min(Semaphore::MAX_PERMITS)) as u32;
        let permit = match budget.clone().acquire_many_owned(want).await {
            Ok(p) => p,
            Err(_) => return,
        };
        let now = counters.held.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        counters.peak_held.fetch_max(now, Ordering::SeqCst);
        offset += rows.len() as u64;
        counters.rows.fetch_add(rows.len() as u64, Ordering::SeqCst);
        counters.batches.fetch_add(1, Ordering::SeqCst);
        counters.bytes.fetch_add(bytes as u64, Ordering::SeqCst);
        let batch = Batch {
            rows,
            columns,
            cursor: Cursor {
                epoch: spec.cursor.epoch,
                offset,
            },
            _held: Held {
                bytes: bytes as u64,
                counters: counters.clone(),
                _permit: permit,
            },
        };
        if tx.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

/// Reads, decodes, transforms and collates one batch.
async fn build(
    ds: Arc<Dataset>,
    spec: Arc<StreamSpec>,
    rows: Vec<u64>,
    pool: BufferPool,
    counters: Arc<Counters>,
) -> Result<(Vec<u64>, Vec<(String, Column)>)> {
    let reads = spec.tensors.iter().map(|t| {
        let (ds, rows, spec) = (&ds, &rows, &spec);
        async move {
            let transforms = spec
                .transforms
                .iter()
                .find(|(n, _)| n == t)
                .map(|(_, l)| l.as_slice())
                .unwrap_or(&[]);
            // A link tensor streams its targets, fetched and decoded as its inner htype.
            let read = if ds.tensor_htype(t)?.is_link {
                Read::Decoded(ds.read_resolved_rows(t, rows, spec.decode).await?)
            } else if spec.decode && transforms.is_empty() {
                // Stored bytes, decoded later straight into the batch buffer.
                let opts = ReadOptions {
                    decode: false,
                    concurrency: spec.fetch_concurrency.max(1),
                };
                // As the reader decodes: the tensor's numeric dtype, else uint8 (text
                // and json tensors say "str" or "Any", and are never decoded).
                let dtype = ds
                    .tensor_meta(t)?
                    .dtype
                    .as_deref()
                    .and_then(|d| d.parse::<crate::Dtype>().ok())
                    .unwrap_or(crate::Dtype::U8);
                Read::Stored(ds.read_rows_with(t, rows, &opts).await?, dtype)
            } else {
                let opts = ReadOptions {
                    decode: spec.decode,
                    concurrency: spec.fetch_concurrency.max(1),
                };
                Read::Decoded(ds.read_rows_with(t, rows, &opts).await?)
            };
            Ok::<_, Error>((t.clone(), read))
        }
    });
    let read: Vec<(String, Read)> = futures::future::try_join_all(reads).await?;
    let spec2 = spec.clone();
    let rows2 = rows.clone();
    let columns = crate::runtime::spawn_cpu(move || {
        use rayon::prelude::*;
        read.into_iter()
            .map(|(tensor, read)| {
                let samples = match read {
                    Read::Stored(samples, dtype) => {
                        match decode_into_batch(samples, dtype, &pool)? {
                            Ok(col) => {
                                counters
                                    .decoded_in_place
                                    .fetch_add(rows2.len() as u64, Ordering::SeqCst);
                                return Ok((tensor, col));
                            }
                            Err(samples) => decode_all(samples, dtype)?,
                        }
                    }
                    Read::Decoded(samples) => samples,
                };
                let transforms = spec2
                    .transforms
                    .iter()
                    .find(|(t, _)| *t == tensor)
                    .map(|(_, l)| l.as_slice())
                    .unwrap_or(&[]);
                let samples: Vec<Sample> = if transforms.is_empty() {
                    samples
                } else {
                    let seed = match spec2.order {
                        Order::Shuffle { seed, .. } => seed,
                        Order::Sequential => 0,
                    };
                    samples
                        .into_par_iter()
                        .zip(rows2.par_iter())
                        .map(|(s, &row)| {
                            transform::apply(
                                transforms,
                                s,
                                SampleAt {
                                    tensor: &tensor,
                                    row,
                                    seed,
                                    epoch: spec2.cursor.epoch,
                                },
                            )
                        })
                        .collect::<Result<_>>()?
                };
                let col = collate(samples, spec2.ragged)
                    .map_err(|e| Error::invalid(format!("tensor {tensor:?}: {e}")))?;
                Ok((tensor, col))
            })
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    Ok((rows, columns))
}

/// One tensor's rows as read: decoded, or stored bytes still to decode (with the
/// tensor's dtype).
enum Read {
    Decoded(Vec<Sample>),
    Stored(Vec<Sample>, crate::Dtype),
}

/// Decodes a batch of JPEG rows of one shape straight into one batch buffer (in
/// parallel, each row into its own slot), skipping the per-row buffer and the copy of
/// collation. Rows that do not fit that mould are handed back for the general path.
fn decode_into_batch(
    samples: Vec<Sample>,
    dtype: crate::Dtype,
    pool: &BufferPool,
) -> Result<std::result::Result<Column, Vec<Sample>>> {
    use rayon::prelude::*;
    let first_shape = match samples.first() {
        Some(Sample::Encoded {
            compression: Compression::Jpeg,
            shape: Some(s),
            ..
        }) => s.clone(),
        _ => return Ok(Err(samples)),
    };
    let same = samples.iter().all(|s| {
        matches!(s, Sample::Encoded { compression: Compression::Jpeg, shape: Some(sh), .. } if *sh == first_shape)
    });
    // The stored shape sizes the buffer before any header is read: it must be a sane
    // image (the decoder checks each header against it).
    let sane = first_shape.len() == 3
        && (first_shape[0] as u64).saturating_mul(first_shape[1] as u64)
            <= crate::format::compression::MAX_IMAGE_PIXELS
        && first_shape[2] <= 4;
    let per: usize = first_shape.iter().product();
    let Some(total) = per.checked_mul(samples.len()) else {
        return Ok(Err(samples));
    };
    if dtype != crate::Dtype::U8 || !same || !sane || per == 0 {
        return Ok(Err(samples));
    }
    let mut buf = pool.take(total);
    let fitted = buf
        .as_mut_slice()
        .par_chunks_mut(per)
        .zip(samples.par_iter())
        .map(|(out, s)| match s {
            Sample::Encoded {
                bytes,
                compression,
                shape: Some(shape),
            } => crate::format::compression::decode_sample_into(
                bytes,
                compression,
                crate::Dtype::U8,
                shape,
                out,
            ),
            _ => Ok(false),
        })
        .collect::<Result<Vec<bool>>>()?;
    if !fitted.iter().all(|&f| f) {
        return Ok(Err(samples));
    }
    let mut shape = vec![samples.len()];
    shape.extend_from_slice(&first_shape);
    Ok(Ok(Column::Dense(NdArray::new(
        crate::Dtype::U8,
        shape,
        bytes::Bytes::from_owner(buf),
    )?)))
}

/// Decodes stored rows the ordinary way (the codecs core decodes; others stay bytes).
fn decode_all(samples: Vec<Sample>, dtype: crate::Dtype) -> Result<Vec<Sample>> {
    use rayon::prelude::*;
    samples
        .into_par_iter()
        .map(|s| match s {
            Sample::Encoded {
                bytes,
                compression,
                shape: Some(shape),
            } if compression.can_decode() => Ok(Sample::Array(
                crate::format::compression::decode_sample(&bytes, &compression, dtype, &shape)?,
            )),
            other => Ok(other),
        })
        .collect()
}

/// Batch buffers handed back once their batch is dropped, so the next batches reuse
/// memory already mapped instead of faulting in (and the kernel zeroing) fresh pages.
/// It keeps at most `limit` bytes of idle buffers.
#[derive(Clone)]
struct BufferPool(Arc<std::sync::Mutex<Idle>>);

#[derive(Default)]
struct Idle {
    free: Vec<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl BufferPool {
    fn new(limit: usize) -> Self {
        BufferPool(Arc::new(std::sync::Mutex::new(Idle {
            limit,
            ..Idle::default()
        })))
    }

    /// A buffer of `len` bytes. Its contents are stale, and every byte is overwritten
    /// by the decoder before the batch is handed out.
    fn take(&self, len: usize) -> PooledBuf {
        let reused = self.0.lock().ok().and_then(|mut idle| {
            let i = idle.free.iter().position(|b| b.capacity() >= len)?;
            let b = idle.free.swap_remove(i);
            idle.bytes -= b.capacity();
            Some(b)
        });
        let mut buf = reused.unwrap_or_default();
        buf.resize(len, 0);
        buf.truncate(len);
        PooledBuf {
            buf,
            pool: Arc::downgrade(&self.0),
        }
    }
}

/// A batch buffer that goes back to its pool when the last view of it is dropped.
struct PooledBuf {
    buf: Vec<u8>,
    pool: std::sync::Weak<std::sync::Mutex<Idle>>,
}

impl PooledBuf {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade()
            && let Ok(mut idle) = pool.lock()
            && idle.bytes + self.buf.capacity() <= idle.limit
        {
            idle.bytes += self.buf.capacity();
            idle.free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Collates one tensor's samples of a batch (module docs).
pub fn collate(samples: Vec<Sample>, ragged: Ragged) -> Result<Column> {
    let arrays: Option<Vec<&NdArray>> = samples
        .iter()
        .map(|s| match s {
            Sample::Array(a) => Some(a),
            _ => None,
        })
        .collect();
    let Some(arrays) = arrays.filter(|a| !a.is_empty()) else {
        return Ok(Column::List(samples));
    };
    let (dtype, ndim) = (arrays[0].dtype, arrays[0].shape.len());
    if arrays
        .iter()
        .any(|a| a.dtype != dtype || a.shape.len() != ndim)
    {
        return Ok(Column::List(samples));
    }
    let n = arrays.len();
    if arrays.iter().all(|a| a.shape == arrays[0].shape) {
        let mut data = Vec::with_capacity(arrays[0].data.len() * n);
        for a in &arrays {
            data.extend_from_slice(&a.data);
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&arrays[0].shape);
        return Ok(Column::Dense(NdArray::new(dtype, shape, data)?));
    }
    if ragged == Ragged::List {
        return Ok(Column::List(samples));
    }
    let max: Vec<usize> = (0..ndim)
        .map(|d| arrays.iter().map(|a| a.shape[d]).max().unwrap_or(0))
        .collect();
    let per: usize = max.iter().product::<usize>() * dtype.size();
    let mut data = vec![0u8; per * n];
    for (i, a) in arrays.iter().enumerate() {
        pad_into(a, &max, &mut data[i * per..(i + 1) * per]);
    }
    let mut shape = vec![n];
    shape.extend_from_slice(&max);
    Ok(Column::Padded {
        data: NdArray::new(dtype, shape, data)?,
        shapes: arrays.iter().map(|a| a.shape.clone()).collect(),
    })
}

/// Copies `a` into the zeroed `out` laid out as `max` (row-major), at the origin.
fn pad_into(a: &NdArray, max: &[usize], out: &mut [u8]) {
    let size = a.dtype.size();
    if a.shape.is_empty() {
        out[..a.data.len()].copy_from_slice(&a.data);
        return;
    }
    let last = a.shape[a.shape.len() - 1] * size;
    let rows: usize = a.shape[..a.shape.len() - 1].iter().product();
    if last == 0 {
        return;
    }
    // Strides of the padded layout, in elements.
    let mut stride = vec![1usize; max.len()];
    for d in (0..max.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1] * max[d + 1];
    }
    let outer = &a.shape[..a.shape.len() - 1];
    let mut idx = vec![0usize; outer.len()];
    for r in 0..rows {
        let at: usize = idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>() * size;
        out[at..at + last].copy_from_slice(&a.data[r * last..(r + 1) * last]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape_collates_dense_and_ragged_pads_with_shapes() {
        let a = NdArray::from_slice(vec![2], &[1u16, 2]).unwrap();
        let b = NdArray::from_slice(vec![2], &[3u16, 4]).unwrap();
        match collate(
            vec![Sample::Array(a.clone()), Sample::Array(b)],
            Ragged::Pad,
        )
        .unwrap()
        {
            Column::Dense(d) => {
                assert_eq!(d.shape, vec![2, 2]);
                assert_eq!(d.to_f64_vec(), vec![1.0, 2.0, 3.0, 4.0]);
            }
            other => panic!("{other:?}"),
        }
        let c = NdArray::from_slice(vec![2, 2], &[1u8, 2, 3, 4]).unwrap();
        let d = NdArray::from_slice(vec![1, 3], &[5u8, 6, 7]).unwrap();
        match collate(
            vec![Sample::Array(c.clone()), Sample::Array(d.clone())],
            Ragged::Pad,
        )
        .unwrap()
        {
            Column::Padded { data, shapes } => {
                assert_eq!(data.shape, vec![2, 2, 3]);
                assert_eq!(shapes, vec![vec![2, 2], vec![1, 3]]);
                assert_eq!(
                    data.to_f64_vec(),
                    vec![1., 2., 0., 3., 4., 0., 5., 6., 7., 0., 0., 0.]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            collate(vec![Sample::Array(c), Sample::Array(d)], Ragged::List).unwrap(),
            Column::List(v) if v.len() == 2
        ));
        assert!(matches!(
            collate(
                vec![Sample::Text("x".into()), Sample::Array(a)],
                Ragged::Pad
            )
            .unwrap(),
            Column::List(_)
        ));
    }
}
