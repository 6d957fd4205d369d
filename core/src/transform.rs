//! Transforms: user functions over samples, run in parallel into a dataset that sees the
//! whole result as one commit, or applied on the fly without writing anything.
//!
//! ```text
//! input (a dataset or view at a ref, rows in chunk order | any iterator of rows)
//!   -> batches (dataset input: cut where the first tensor's chunk changes, so a batch
//!      reads few chunks; each chunk is fetched once), read one batch ahead of the
//!      workers
//!   -> pipeline on a rayon pool of `num_workers` threads: every input row through
//!      stage 1 (0, 1 or many rows out), each of those through stage 2, ... in order
//!   -> staging branch `transform-<fingerprint>` grown from the target's last commit:
//!      batches are staged while the next one is computed; a checkpoint, ONE flush
//!      holding the rows staged so far and the progress marker, follows at most every
//!      `checkpoint_every` (and at the end, on a cancel, on an error)
//!   -> publish: the staging head is committed and becomes the target branch's new
//!      commit in one tree record (`Dataset::publish_onto`); if the target moved
//!      meanwhile, the staging branch is merged instead (one merge commit)
//! ```
//!
//! Contract:
//! * Atomic: readers of the target branch see its previous commit until the publish
//!   record lands, then the whole result. A killed run leaves the target as it was and
//!   the staging branch with whole batches and a marker counting exactly them; a re-run
//!   with the same fingerprint (source version, rows, tensors, function names, target,
//!   job name) resumes after the last checkpoint. A failing user function (an error or a
//!   panic) fails the run with [`Error::Transform`] naming the function and the input
//!   sample (its source row, or its position in an iterator); its staging branch is
//!   deleted, so the dataset is left as it was.
//! * Values: outputs are written in input order, whatever the worker count, so any
//!   run equals a serial one value for value. Every output row must give a sample for
//!   every tensor of the target (declared ones are created on the staging branch).
//! * Lineage: the commit message names the functions and the source version; the
//!   commit's `dataset_info.json` holds [`LINEAGE_KEY`] (functions, source, commit,
//!   rows in and out, fingerprint).
//! * The target's uncommitted changes, if any, are committed first (3.x's rule for a
//!   checkout), since a branch can only grow from a commit.
//! * Progress and cancellation through [`Control`]: one stage of as many steps as input
//!   rows (0 when an iterator has no known length); a cancel stops after the batch in
//!   flight, leaving the run resumable and the target unchanged.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use crate::dataset::{Dataset, OpenOptions, Placement, ReadOptions, TensorOptions};
use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::ids::BranchName;
use crate::runtime::Control;
use crate::stream::{Batch, Column};
use crate::tql::{self, QueryOptions};
use crate::version::merge::MergePolicy;

/// Key of the progress marker and lineage in `dataset_info.json`.
pub const LINEAGE_KEY: &str = "transform";
/// Staging branches are named this, then the run's fingerprint.
pub const STAGING_PREFIX: &str = "transform-";

/// One sample per tensor.
pub type Row = BTreeMap<String, Sample>;

/// Where a stage puts its outputs (Deep Lake's `samples_out`): zero, one or many rows.
#[derive(Debug, Default)]
pub struct SamplesOut {
    rows: Vec<Row>,
}

impl SamplesOut {
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

type StageFn = dyn Fn(Row, &mut SamplesOut) -> Result<()> + Send + Sync;

#[derive(Clone)]
struct Stage {
    name: String,
    f: Arc<StageFn>,
}

/// Stacked user functions; cheap to clone (the functions are shared).
#[derive(Clone, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Adds a stage `(sample_in, samples_out)`: one row in, any number out.
    pub fn then<F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Row, &mut SamplesOut) -> Result<()> + Send + Sync + 'static,
    {
        self.stages.push(Stage {
            name: name.into(),
            f: Arc::new(f),
        });
        self
    }

    /// A one-to-one stage.
    pub fn map<F>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Row) -> Result<Row> + Send + Sync + 'static,
    {
        self.then(name, move |row, out| {
            out.push(f(row)?);
            Ok(())
        })
    }

    /// A stage that keeps the rows `keep` accepts.
    pub fn filter<F>(self, name: impl Into<String>, keep: F) -> Self
    where
        F: Fn(&Row) -> Result<bool> + Send + Sync + 'static,
    {
        self.then(name, move |row, out| {
            if keep(&row)? {
                out.push(row);
            }
            Ok(())
        })
    }

    /// The stages of `other` after these (Deep Lake's `compose`).
    pub fn compose(mut self, other: Pipeline) -> Self {
        self.stages.extend(other.stages);
        self
    }

    pub fn names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// Runs every stage over one input row; `sample` names it in errors. A panic of a
    /// stage is caught and reported like its error.
    pub fn run_one(&self, sample: u64, row: Row) -> Result<Vec<Row>> {
        let mut rows = vec![row];
        for stage in &self.stages {
            let mut out = SamplesOut::default();
            for r in rows {
                let fail = |message: String| Error::Transform {
                    function: stage.name.clone(),
                    sample,
                    message,
                };
                match catch_unwind(AssertUnwindSafe(|| (stage.f)(r, &mut out))) {
                    Ok(Ok(())) => {}
                    Ok(Err(Error::Transform { message, .. })) => return Err(fail(message)),
                    Ok(Err(e)) => return Err(fail(e.to_string())),
                    Err(panic) => return Err(fail(panic_message(&panic))),
                }
            }
            rows = out.rows;
        }
        Ok(rows)
    }

    /// Runs the pipeline over `rows` (named `ids` in errors) on `pool`, outputs in input
    /// order. The first failing input (lowest position) is the one reported.
    pub fn run_batch(
        &self,
        pool: &rayon::ThreadPool,
        ids: &[u64],
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        let outs: Vec<Result<Vec<Row>>> = pool.install(|| {
            rows.into_par_iter()
                .zip(ids.par_iter())
                .map(|(r, id)| self.run_one(*id, r))
                .collect()
        });
        let mut all = Vec::with_capacity(outs.len());
        for o in outs {
            all.extend(o?);
        }
        Ok(all)
    }

    /// Applies the pipeline to a batch of the streaming engine (on the fly: nothing is
    /// written). Its columns must be dense or lists (`Ragged::List` for ragged tensors).
    pub async fn apply_to_batch(
        &self,
        pool: &Arc<rayon::ThreadPool>,
        batch: &Batch,
    ) -> Result<Vec<Row>> {
        let rows = batch_rows(batch)?;
        let ids = batch.rows.clone();
        self.run_on(pool, ids, rows).await
    }

    /// [`Pipeline::run_batch`] awaited without blocking the reactor.
    async fn run_on(
        &self,
        pool: &Arc<rayon::ThreadPool>,
        ids: Vec<u64>,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        let p = self.clone();
        on_pool(pool, move |pool| p.run_batch(pool, &ids, rows)).await
    }
}

/// Runs `f` on `pool` (given to it, for parallel work inside) and awaits its result
/// without blocking the reactor.
async fn on_pool<T: Send + 'static>(
    pool: &Arc<rayon::ThreadPool>,
    f: impl FnOnce(&rayon::ThreadPool) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pool2 = pool.clone();
    pool.spawn(move || {
        let _ = tx.send(pool2.install(|| f(&pool2)));
    });
    rx.await.map_err(|_| {
        Error::internal("work on the transform's pool was dropped before it finished")
    })?
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

/// The rows of a stream batch, one sample per column.
pub fn batch_rows(batch: &Batch) -> Result<Vec<Row>> {
    let n = batch.rows.len();
    let mut rows: Vec<Row> = (0..n).map(|_| Row::new()).collect();
    for (name, col) in &batch.columns {
        match col {
            Column::List(samples) => {
                for (r, s) in rows.iter_mut().zip(samples) {
                    r.insert(name.clone(), s.clone());
                }
            }
            Column::Dense(a) => {
                let shape = a.shape.get(1..).unwrap_or_default().to_vec();
                let stride = shape.iter().product::<usize>() * a.dtype.size();
                for (i, r) in rows.iter_mut().enumerate() {
                    let data = a.data.slice(i * stride..(i + 1) * stride);
                    let row = NdArray::new(a.dtype, shape.clone(), data)?;
                    r.insert(name.clone(), Sample::Array(row));
                }
            }
            Column::Padded { .. } => {
                return Err(Error::invalid(format!(
                    "tensor {name} is ragged: stream it with ragged=list to transform it"
                )));
            }
        }
    }
    Ok(rows)
}

/// Which rows of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub enum Rows {
    All,
    Range {
        start: u64,
        end: u64,
    },
    List(Vec<u64>),
    /// A TQL query's rows (a view).
    Query(String),
}

/// What a transform reads.
pub enum Input {
    /// A dataset `url` (`PATH[@ref]`): the rows selected, the tensors named (empty:
    /// every visible one), decoded.
    Dataset {
        url: String,
        opts: OpenOptions,
        rows: Rows,
        tensors: Vec<String>,
    },
    /// Any rows; `len` is for progress only.
    Iter {
        rows: Box<dyn Iterator<Item = Row> + Send>,
        len: Option<u64>,
    },
}

/// How to run a transform into a dataset.
#[derive(Clone, Debug)]
pub struct TransformOptions {
    /// The output dataset (created if absent) and how to open it (`branch`: the target
    /// branch, default `main`).
    pub target: String,
    pub open: OpenOptions,
    /// Tensors to create where the target lacks them.
    pub tensors: Vec<(String, TensorOptions)>,
    /// Threads running the functions (0: one per core).
    pub num_workers: usize,
    /// Most input rows per batch (a batch also ends where a chunk of the input ends).
    pub batch_rows: usize,
    /// Names the run: part of the fingerprint, so an iterator input can be resumed
    /// (without it an iterator run cannot be told apart from another and starts over).
    pub job: Option<String>,
    /// Commit message (default: the functions and the source).
    pub message: Option<String>,
    /// Staged batches are made durable (with the progress marker) at most this often,
    /// and at the end, on a cancel and on an error: a killed run redoes at most this
    /// much work, and short runs do not pay a flush per batch. Zero: every batch.
    pub checkpoint_every: Duration,
}

impl TransformOptions {
    pub fn new(target: impl Into<String>) -> Self {
        TransformOptions {
            target: target.into(),
            open: OpenOptions::default(),
            tensors: Vec::new(),
            num_workers: 0,
            batch_rows: 512,
            job: None,
            message: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

/// [`TransformOptions::checkpoint_every`] unless set.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// What [`run`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The commit holding the result; `None` when cancelled before the end.
    pub commit: Option<String>,
    pub staging_branch: String,
    /// Input rows read in this run, and in all runs of this fingerprint.
    pub input_rows: u64,
    pub output_rows: u64,
    /// Input rows an earlier run had done.
    pub resumed_from: u64,
    /// Whether the result landed as a fast-forward (otherwise as a merge commit).
    pub fast_forward: bool,
    pub seconds: f64,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "commit": self.commit,
            "staging_branch": self.staging_branch,
            "input_rows": self.input_rows,
            "output_rows": self.output_rows,
            "resumed_from": self.resumed_from,
            "fast_forward": self.fast_forward,
            "seconds": self.seconds,
        })
    }
}

fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A resolved dataset input: the handle, the rows in order, and the tensors.
struct Source {
    ds: Dataset,
    rows: Vec<u64>,
    tensors: Vec<String>,
    /// Where each batch ends (exclusive indices into `rows`).
    cuts: Vec<usize>,
}

async fn resolve_source(
    url: &str,
    opts: &OpenOptions,
    rows: &Rows,
    tensors: &[String],
    batch_rows: usize,
) -> Result<Source> {
    let mut o = opts.clone();
    o.read_only = true;
    let ds = Dataset::open_url(url, o).await?;
    let rows: Vec<u64> = match rows {
        Rows::All => (0..ds.len()).collect(),
        Rows::Range { start, end } => {
            if start > end || *end > ds.len() {
                return Err(Error::invalid(format!(
                    "rows {start}..{end} are outside the {} rows of {url}",
                    ds.len()
                )));
            }
            (*start..*end).collect()
        }
        Rows::List(l) => {
            if let Some(r) = l.iter().find(|r| **r >= ds.len()) {
                return Err(Error::invalid(format!(
                    "row {r} is outside the {} rows of {url}",
                    ds.len()
                )));
            }
            l.clone()
        }
        Rows::Query(q) => {
            let res = tql::query(&ds, q, &QueryOptions::default()).await?;
            res.rows_of(&ds, "feeds a transform")?
        }
    };
    let tensors: Vec<String> = if tensors.is_empty() {
        ds.tensor_names()
    } else {
        for t in tensors {
            ds.tensor_htype(t)?;
        }
        tensors.to_vec()
    };
    let batch_rows = batch_rows.max(1);
    let keys = match tensors.first() {
        Some(t) => ds.chunk_keys(t, &rows)?,
        None => vec![0; rows.len()],
    };
    let mut cuts = Vec::new();
    let mut start = 0usize;
    for i in 1..=rows.len() {
        let full = i - start >= batch_rows;
        let chunk_ends = i == rows.len() || (keys[i] != keys[i - 1] && i - start >= batch_rows / 4);
        if full || chunk_ends {
            cuts.push(i);
            start = i;
        }
    }
    Ok(Source {
        ds,
        rows,
        tensors,
        cuts,
    })
}

impl Source {
    async fn read(&self, range: std::ops::Range<usize>) -> Result<(Vec<u64>, Vec<Row>)> {
        let ids = self.rows[range].to_vec();
        let mut rows: Vec<Row> = (0..ids.len()).map(|_| Row::new()).collect();
        let ropts = ReadOptions::default();
        let reads = futures::future::try_join_all(
            self.tensors
                .iter()
                .map(|t| self.ds.read_rows_with(t, &ids, &ropts)),
        )
        .await?;
        for (t, samples) in self.tensors.iter().zip(reads) {
            for (r, s) in rows.iter_mut().zip(samples) {
                r.insert(t.clone(), s);
            }
        }
        Ok((ids, rows))
    }
}

/// Reads the input in batches: `(ids, rows)` until empty.
enum Feed {
    Source {
        src: Box<Source>,
        next: usize,
    },
    Iter {
        rows: IterReader,
        pos: u64,
        batch: usize,
    },
}

/// A user iterator driven by one long-lived thread of its own: it may read files (so
/// not on the reactor), and one thread, unlike a blocking-pool task per batch, keeps
/// the allocator's pages that the read buffers come from; buffers freed by the workers
/// go back to them instead of the next batch faulting in fresh, zeroed memory.
struct IterReader {
    jobs: std::sync::mpsc::Sender<IterJob>,
}

/// Take up to `n` rows, or skip `n` rows (answering how many were skipped).
enum IterJob {
    Take(usize, tokio::sync::oneshot::Sender<Result<Vec<Row>>>),
    Skip(u64, tokio::sync::oneshot::Sender<Result<u64>>),
}

impl IterReader {
    fn spawn(mut rows: Box<dyn Iterator<Item = Row> + Send>) -> Result<IterReader> {
        let (jobs, rx) = std::sync::mpsc::channel::<IterJob>();
        let failed = |p: Box<dyn std::any::Any + Send>| {
            Error::invalid(format!("the input iterator {}", panic_message(&p)))
        };
        std::thread::Builder::new()
            .name("transform-input".into())
            .spawn(move || {
                // Ends when the feed is dropped (its sender with it).
                while let Ok(job) = rx.recv() {
                    match job {
                        IterJob::Take(n, tx) => {
                            let got = catch_unwind(AssertUnwindSafe(|| {
                                rows.by_ref().take(n).collect::<Vec<Row>>()
                            }));
                            let _ = tx.send(got.map_err(failed));
                        }
                        IterJob::Skip(n, tx) => {
                            let got = catch_unwind(AssertUnwindSafe(|| {
                                rows.by_ref()
                                    .take(usize::try_from(n).unwrap_or(usize::MAX))
                                    .count() as u64
                            }));
                            let _ = tx.send(got.map_err(failed));
                        }
                    }
                }
            })
            .map_err(|e| Error::internal(format!("starting the input thread: {e}")))?;
        Ok(IterReader { jobs })
    }

    async fn ask<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<Result<T>>) -> IterJob,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || Error::internal("the input thread stopped");
        self.jobs.send(job(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

impl Feed {
    /// Skips `n` input rows (done by an earlier run).
    async fn skip(&mut self, n: u64) -> Result<()> {
        match self {
            Feed::Source { src, next } => {
                let n = usize::try_from(n).map_err(Error::internal)?;
                match src.cuts.iter().position(|c| *c == n) {
                    Some(i) => *next = i + 1,
                    None if n == 0 => *next = 0,
                    None => {
                        return Err(Error::Conflict {
                            path: LINEAGE_KEY.to_owned(),
                            message: format!(
                                "the staged progress ({n} rows) does not end a batch of this input"
                            ),
                            retryable: false,
                        });
                    }
                }
            }
            Feed::Iter { rows, pos, .. } => {
                let skipped = rows.ask(|tx| IterJob::Skip(n, tx)).await?;
                *pos += skipped;
                if skipped < n {
                    return Err(Error::invalid(format!(
                        "the input ended before the {n} rows an earlier run had done"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<(Vec<u64>, Vec<Row>)>> {
        match self {
            Feed::Source { src, next } => {
                let Some(end) = src.cuts.get(*next).copied() else {
                    return Ok(None);
                };
                let start = if *next == 0 { 0 } else { src.cuts[*next - 1] };
                *next += 1;
                src.read(start..end).await.map(Some)
            }
            Feed::Iter { rows, pos, batch } => {
                let n = *batch;
                let got = rows.ask(|tx| IterJob::Take(n, tx)).await?;
                if got.is_empty() {
                    return Ok(None);
                }
                let ids: Vec<u64> = (*pos..*pos + got.len() as u64).collect();
                *pos += got.len() as u64;
                Ok(Some((ids, got)))
            }
        }
    }
}

/// The pipeline applied on the fly: batches of transformed rows, nothing written.
pub struct Transformed {
    feed: Feed,
    pipeline: Pipeline,
    pool: Arc<rayon::ThreadPool>,
}

impl Transformed {
    pub async fn open(
        pipeline: Pipeline,
        input: Input,
        num_workers: usize,
        batch_rows: usize,
    ) -> Result<Self> {
        Ok(Transformed {
            feed: feed_of(input, batch_rows).await?.0,
            pipeline,
            pool: Arc::new(pool(num_workers)?),
        })
    }

    /// The next batch's outputs; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Vec<Row>>> {
        match self.feed.next().await {
            Ok(Some((ids, rows))) => Some(self.pipeline.run_on(&self.pool, ids, rows).await),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

fn pool(n: usize) -> Result<rayon::ThreadPool> {
    let n = if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("transform-{i}"))
        .build()
        .map_err(Error::internal)
}

/// The feed, its total rows if known, and its identity for the fingerprint.
async fn feed_of(
    input: Input,
    batch_rows: usize,
) -> Result<(Feed, Option<u64>, Map<String, Value>)> {
    let batch_rows = batch_rows.max(1);
    Ok(match input {
        Input::Dataset {
            url,
            opts,
            rows,
            tensors,
        } => {
            let src = resolve_source(&url, &opts, &rows, &tensors, batch_rows).await?;
            let mut id = Map::new();
            id.insert("source".into(), json!(url));
            id.insert("source_node".into(), json!(src.ds.node_id().as_str()));
            id.insert("source_commit".into(), json!(src.ds.commit_id()));
            id.insert("rows".into(), json!(format!("{rows:?}")));
            id.insert("tensors".into(), json!(src.tensors));
            let total = src.rows.len() as u64;
            (
                Feed::Source {
                    src: Box::new(src),
                    next: 0,
                },
                Some(total),
                id,
            )
        }
        Input::Iter { rows, len } => (
            Feed::Iter {
                rows: IterReader::spawn(rows)?,
                pos: 0,
                batch: batch_rows,
            },
            len,
            Map::new(),
        ),
    })
}

fn with_branch(opts: &OpenOptions, branch: &str, holder: &str) -> Result<OpenOptions> {
    let mut o = opts.clone();
    o.branch = Some(branch.parse::<BranchName>()?);
    o.read_only = false;
    o.lease_holder = Some(holder.to_owned());
    o.lease_wait = Some(o.lease_wait.unwrap_or(Duration::from_secs(30)));
    Ok(o)
}

/// The staging branch of one run (fingerprint), for writers that bring their own rows
/// (the daemon's staged appends) as well as for [`run`]: open or resume, write parts
/// with a marker, then publish once or discard.
pub struct Staging {
    pub ds: Dataset,
    pub branch: String,
    /// The marker of an earlier run of this fingerprint (resume from it), if any.
    pub resumed: Option<Map<String, Value>>,
    target: String,
    /// Opens the target branch under this run's lease holder.
    target_open: OpenOptions,
}

impl Staging {
    /// Opens the staging branch of `fingerprint` on `target` (created if absent): the
    /// target's uncommitted changes are committed first; a staging branch left by an
    /// earlier run of the same fingerprint is resumed. `tensors` are created where
    /// missing. `open.branch` names the target branch (default `main`).
    pub async fn open(
        target: &str,
        open: &OpenOptions,
        fingerprint: &str,
        tensors: &[(String, TensorOptions)],
    ) -> Result<Staging> {
        let target_branch = open
            .branch
            .as_ref()
            .map_or_else(|| "main".to_owned(), |b| b.to_string());
        let branch = format!("{STAGING_PREFIX}{fingerprint}");
        let holder = format!("transform-{fingerprint}");
        let target_open = with_branch(open, &target_branch, &holder)?;
        let mut t = Dataset::open_or_create(target, target_open.clone()).await?;
        if t.has_changes() {
            t.commit("auto commit before transform").await?;
        }
        let mut resumed = None;
        if t.branches().contains(&branch) {
            let ds = Dataset::open(target, with_branch(open, &branch, &holder)?).await?;
            let info = ds
                .info()
                .get(LINEAGE_KEY)
                .and_then(Value::as_object)
                .cloned();
            match info {
                Some(m) if m.get("fingerprint").and_then(Value::as_str) == Some(fingerprint) => {
                    resumed = Some((ds, m));
                }
                // The branch is named by this fingerprint, and a batch's rows land in the
                // same flush as its marker: a run that stopped before its first batch
                // left the branch with no rows. It is grown afresh from the target.
                None if ds.len() == t.len() => {
                    ds.close().await?;
                    tracing::info!(branch = %branch, "restarting a staging branch that holds no batch");
                    t.delete_branch(&branch).await?;
                }
                _ => {
                    return Err(Error::Conflict {
                        path: branch.clone(),
                        message: format!(
                            "branch {branch} exists but holds no unfinished run of this transform"
                        ),
                        retryable: false,
                    });
                }
            }
        }
        let (mut ds, resumed) = if let Some((ds, m)) = resumed {
            t.close().await?;
            (ds, Some(m))
        } else {
            t.checkout(&branch, true).await?;
            (t, None)
        };
        for (name, opts) in tensors {
            if !ds.tensor_names().contains(name) {
                ds.create_tensor(name, opts.clone()).await?;
            }
        }
        Ok(Staging {
            ds,
            branch,
            resumed,
            target: target.to_owned(),
            target_open,
        })
    }

    /// A resumed marker's count `key` (0 when starting afresh).
    pub fn resumed_count(&self, key: &str) -> u64 {
        self.resumed
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// Appends `columns` as rows without making them durable (see
    /// [`Staging::checkpoint`]).
    pub async fn stage(&mut self, columns: Vec<(String, Vec<Sample>)>) -> Result<()> {
        if columns.first().is_some_and(|c| !c.1.is_empty()) {
            self.ds.extend_columns(columns).await?;
        }
        Ok(())
    }

    /// Appends `columns` without making them durable (see [`Staging::checkpoint`]),
    /// each large column cut into one part per thread of `pool`: each worker encodes
    /// its part and fills chunks of its own, and the handle adopts them in order
    /// (`Dataset::extend_parts`). Small columns go in as rows.
    pub async fn stage_parts(
        &mut self,
        columns: Vec<(String, Vec<Sample>)>,
        pool: &Arc<rayon::ThreadPool>,
    ) -> Result<()> {
        if columns.first().is_some_and(|c| !c.1.is_empty()) {
            let placed = place_columns(&self.ds, pool, columns).await?;
            self.ds.extend_parts(placed).await?;
        }
        Ok(())
    }

    /// Records `marker` (with `done: false`), which counts every row staged so far, in
    /// ONE flush with those rows: after a crash the marker counts exactly the rows
    /// staged up to the last checkpoint.
    pub async fn checkpoint(&mut self, mut marker: Map<String, Value>) -> Result<()> {
        marker.insert("done".into(), json!(false));
        self.ds.set_info(LINEAGE_KEY, Value::Object(marker)).await?;
        self.ds.flush().await
    }

    /// Makes the staged rows the target branch's new commit, with `lineage` (marked
    /// `done`) in its `dataset_info.json`: a fast-forward in one tree record, or a
    /// merge commit when the target moved meanwhile (its staging branch then stays,
    /// since the merge commit names its commit). Returns the commit and whether it was
    /// a fast-forward.
    pub async fn publish(
        mut self,
        mut lineage: Map<String, Value>,
        message: &str,
    ) -> Result<(String, bool)> {
        lineage.insert("done".into(), json!(true));
        self.ds
            .set_info(LINEAGE_KEY, Value::Object(lineage))
            .await?;
        self.ds.flush().await?;
        let mut target = Dataset::open(&self.target, self.target_open.clone()).await?;
        let out = match self.ds.publish_onto(message, &mut target).await {
            Ok(c) => (c, true),
            Err(Error::Conflict { message: why, .. }) => {
                tracing::info!(reason = %why, "target moved: merging the transform instead");
                let merged = target.merge(&self.branch, MergePolicy::default()).await?;
                let c = merged
                    .commit
                    .ok_or_else(|| Error::internal("the transform's merge wrote no commit"))?;
                (c, false)
            }
            Err(e) => return Err(e),
        };
        target.close().await?;
        Ok(out)
    }

    /// Deletes the staging branch: the target is left exactly as it was.
    pub async fn discard(self) -> Result<()> {
        let Staging {
            ds,
            branch,
            target,
            target_open,
            ..
        } = self;
        ds.close().await?;
        let mut t = Dataset::open(&target, target_open).await?;
        t.delete_branch(&branch).await?;
        t.close().await
    }
}

/// The columns of one batch, each large one placed into chunks by the workers of
/// `pool`, one contiguous part per worker.
async fn place_columns(
    ds: &Dataset,
    pool: &Arc<rayon::ThreadPool>,
    columns: Vec<(String, Vec<Sample>)>,
) -> Result<Vec<(String, Placement)>> {
    let workers = pool.current_num_threads().max(1);
    let mut out = Vec::with_capacity(columns.len());
    for (name, samples) in columns {
        let placer = match ds.placer(&name)? {
            Some(p) if p.worth_placing(&samples, workers) => p.for_column(&samples),
            _ => {
                out.push((name, Placement::Samples(samples)));
                continue;
            }
        };
        let per = samples.len().div_ceil(workers);
        let (mut rest, mut first, mut parts) = (samples, 0usize, Vec::with_capacity(workers));
        while !rest.is_empty() {
            let tail = rest.split_off(per.min(rest.len()));
            parts.push((first, std::mem::replace(&mut rest, tail)));
            first += per;
        }
        let placed = on_pool(pool, move |_| {
            parts
                .into_par_iter()
                .map(|(first, s)| placer.place(s, first))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        out.push((name, Placement::Parts(placed)));
    }
    Ok(out)
}

/// The default commit message: the functions and the source version.
pub fn commit_message(
    functions: &[&str],
    identity: &Map<String, Value>,
    rows_in: u64,
    rows_out: u64,
) -> String {
    let source = identity
        .get("source")
        .and_then(Value::as_str)
        .map(|s| {
            let c = identity.get("source_commit").and_then(Value::as_str);
            format!(
                " from {s}{}",
                c.map(|c| format!(" at {c}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!(
        "transform {}{source}: {rows_in} rows in, {rows_out} rows out",
        functions.join(" -> ")
    )
}

/// Runs `pipeline` over `input` into `opts.target` (module docs).
pub async fn run(
    pipeline: &Pipeline,
    input: Input,
    opts: &TransformOptions,
    ctl: &Control,
) -> Result<Report> {
    let started = Instant::now();
    if pipeline.stages.is_empty() {
        return Err(Error::invalid("a transform needs at least one function"));
    }
    let (mut feed, total, mut identity) = feed_of(input, opts.batch_rows).await?;
    let target_branch = opts
        .open
        .branch
        .as_ref()
        .map_or_else(|| "main".to_owned(), |b| b.to_string());
    let functions: Vec<&str> = pipeline.names();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let unique = opts.job.clone().unwrap_or_else(|| {
        if matches!(feed, Feed::Iter { .. }) {
            format!("{:016x}", rand::random::<u64>())
        } else {
            String::new()
        }
    });
    for part in [
        serde_json::to_string(&identity).map_err(Error::internal)?,
        functions.join("\u{1f}"),
        opts.target.clone(),
        target_branch.clone(),
        unique,
    ] {
        h = fnv(part.as_bytes(), fnv(b"\x1e", h));
    }
    let fp = format!("{h:016x}");
    // A run whose publish landed but whose answer was lost (a timeout, a crash right
    // after) is re-run with the same fingerprint: it must not append its rows twice.
    if let Some((commit, rows_in, rows_out)) =
        landed(&opts.target, &opts.open, &target_branch, &fp).await?
    {
        tracing::info!(commit = %commit, fingerprint = %fp, "this transform already landed");
        ctl.start_stage(rows_in);
        ctl.advance(rows_in);
        return Ok(Report {
            commit: Some(commit),
            staging_branch: format!("{STAGING_PREFIX}{fp}"),
            input_rows: rows_in,
            output_rows: rows_out,
            resumed_from: rows_in,
            fast_forward: true,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let mut staging = Staging::open(&opts.target, &opts.open, &fp, &opts.tensors).await?;
    let tensors = staging.ds.tensor_names();
    if tensors.is_empty() {
        return Err(Error::invalid(
            "the target has no tensors: declare the tensors the functions write",
        ));
    }
    identity.insert("functions".into(), json!(functions));
    identity.insert("fingerprint".into(), json!(fp));
    identity.insert("target_branch".into(), json!(target_branch));

    let mut done_in = staging.resumed_count("input_rows");
    let mut done_out = staging.resumed_count("output_rows");
    let resumed_from = done_in;
    if done_in > 0 {
        feed.skip(done_in).await?;
        tracing::info!(staging = %staging.branch, rows = done_in, "resuming transform");
    }
    ctl.start_stage(total.unwrap_or(0));
    ctl.advance(done_in);
    let workers = Arc::new(pool(opts.num_workers)?);

    let result = write_all(
        pipeline,
        &mut feed,
        &mut staging,
        &workers,
        &tensors,
        &identity,
        ctl,
        opts.checkpoint_every,
        &mut done_in,
        &mut done_out,
    )
    .await;
    let branch = staging.branch.clone();
    match result {
        Ok(true) => {}
        Ok(false) => {
            return Ok(Report {
                commit: None,
                staging_branch: branch,
                input_rows: done_in,
                output_rows: done_out,
                resumed_from,
                fast_forward: false,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        Err(e) => {
            if matches!(e, Error::Transform { .. }) {
                // The function fails on this input however often it runs: the staged
                // part goes, leaving the dataset as it was.
                if let Err(c) = staging.discard().await {
                    tracing::warn!(branch = %branch, error = %c, "staging branch not removed");
                }
            }
            return Err(e);
        }
    }
    let mut lineage = identity.clone();
    lineage.insert("input_rows".into(), json!(done_in));
    lineage.insert("output_rows".into(), json!(done_out));
    let message = opts
        .message
        .clone()
        .unwrap_or_else(|| commit_message(&functions, &identity, done_in, done_out));
    let (commit, fast_forward) = staging.publish(lineage, &message).await?;
    Ok(Report {
        commit: Some(commit),
        staging_branch: branch,
        input_rows: done_in,
        output_rows: done_out,
        resumed_from,
        fast_forward,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The target branch's latest commit and the rows in and out, when its lineage says a
/// run of fingerprint `fp` published there (and nothing ran since that replaced it).
async fn landed(
    target: &str,
    open: &OpenOptions,
    branch: &str,
    fp: &str,
) -> Result<Option<(String, u64, u64)>> {
    let mut o = open.clone();
    o.branch = Some(branch.parse::<BranchName>()?);
    o.read_only = true;
    let ds = match Dataset::open(target, o).await {
        Ok(ds) => ds,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(m) = ds.info().get(LINEAGE_KEY).and_then(Value::as_object) else {
        return Ok(None);
    };
    if m.get("fingerprint").and_then(Value::as_str) != Some(fp)
        || m.get("done").and_then(Value::as_bool) != Some(true)
    {
        return Ok(None);
    }
    let Some(commit) = ds.log().into_iter().find(|c| !c.is_head).map(|c| c.id) else {
        return Ok(None);
    };
    let count = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Some((commit, count("input_rows"), count("output_rows"))))
}

/// The batch loop; `Ok(false)` when cancelled. Three stages overlap, one batch apart:
/// the feed reads batch k+2 (a user iterator may read files, which would otherwise
/// leave the workers idle), the workers compute batch k+1, and batch k is encoded and
/// flushed. Batches are written in input order; the first error in that order is the
/// one returned, after every batch before it is staged.
#[allow(clippy::too_many_arguments)]
async fn write_all(
    pipeline: &Pipeline,
    feed: &mut Feed,
    out: &mut Staging,
    workers: &Arc<rayon::ThreadPool>,
    tensors: &[String],
    identity: &Map<String, Value>,
    ctl: &Control,
    checkpoint_every: Duration,
    done_in: &mut u64,
    done_out: &mut u64,
) -> Result<bool> {
    type Read = Result<(Vec<u64>, Vec<Row>)>;
    type Computed = Result<(u64, u64, Vec<Row>)>;
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel::<Read>(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Computed>(1);
    // Each stage ends when its input ends or its consumer has gone (an error or a
    // cancel downstream drops the receiver).
    let read = async move {
        loop {
            let b = feed.next().await.transpose();
            let last = !matches!(b, Some(Ok(_)));
            if let Some(b) = b
                && read_tx.send(b).await.is_err()
            {
                break;
            }
            if last {
                break;
            }
        }
    };
    let compute = async move {
        while let Some(b) = read_rx.recv().await {
            let c = match b {
                Ok((ids, rows)) => {
                    let n = ids.len() as u64;
                    let last = ids.last().copied().unwrap_or(0);
                    pipeline
                        .run_on(workers, ids, rows)
                        .await
                        .map(|r| (n, last, r))
                }
                Err(e) => Err(e),
            };
            let failed = c.is_err();
            if done_tx.send(c).await.is_err() || failed {
                break;
            }
        }
    };
    let write = async move {
        // The marker of rows staged since the last checkpoint, if any.
        let mut pending: Option<Map<String, Value>> = None;
        let mut last_checkpoint = Instant::now();
        while let Some(c) = done_rx.recv().await {
            let (n, last, rows) = match c {
                Ok(c) => c,
                Err(e) => {
                    // The batches before the failing one stay resumable, unless the
                    // run is discarded anyway (a failing function).
                    if let Some(m) = pending.take()
                        && !matches!(e, Error::Transform { .. })
                        && let Err(c) = out.checkpoint(m).await
                    {
                        tracing::warn!(error = %c, "the rows staged before the failure were not checkpointed");
                    }
                    return Err(e);
                }
            };
            if ctl.is_cancelled() {
                if let Some(m) = pending.take() {
                    out.checkpoint(m).await?;
                }
                return Ok(false);
            }
            let columns = columns_of(rows, tensors, last)?;
            let written = columns.first().map_or(0, |c| c.1.len()) as u64;
            out.stage_parts(columns, workers).await?;
            *done_in += n;
            *done_out += written;
            let mut marker = identity.clone();
            marker.insert("input_rows".into(), json!(*done_in));
            marker.insert("output_rows".into(), json!(*done_out));
            pending = Some(marker);
            if last_checkpoint.elapsed() >= checkpoint_every {
                if let Some(m) = pending.take() {
                    out.checkpoint(m).await?;
                }
                last_checkpoint = Instant::now();
            }
            ctl.advance(n);
        }
        if let Some(m) = pending.take() {
            out.checkpoint(m).await?;
        }
        Ok(true)
    };
    let ((), (), w) = tokio::join!(read, compute, write);
    w
}

/// Output rows as one column per tensor; every row must give every tensor.
fn columns_of(rows: Vec<Row>, tensors: &[String], near: u64) -> Result<Vec<(String, Vec<Sample>)>> {
    let mut cols: Vec<(String, Vec<Sample>)> = tensors
        .iter()
        .map(|t| (t.clone(), Vec::with_capacity(rows.len())))
        .collect();
    for mut r in rows {
        for (t, c) in cols.iter_mut() {
            match r.remove(t.as_str()) {
                Some(s) => c.push(s),
                None => {
                    return Err(Error::invalid(format!(
                        "an output row (input sample {near} or before) has no sample for tensor {t}"
                    )));
                }
            }
        }
        if let Some(extra) = r.keys().next() {
            return Err(Error::invalid(format!(
                "an output row (input sample {near} or before) names tensor {extra}, which the target lacks"
            )));
        }
    }
    Ok(cols)
}
