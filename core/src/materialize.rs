//! Materialization: the rows of a view written out as a dense, freshly chunked dataset.
//!
//! ```text
//! source (PATH[@ref] + all rows | a row range | a row list | a TQL query | a saved view)
//!   -> rows in the chosen order (the view's, or ascending source rows)
//!   -> batches: read (link targets fetched through the Linker; other tensors' stored
//!      bytes and companion rows as stored), while the previous batch is appended
//!   -> each batch: append, then ONE flush that holds the data and the progress marker
//!   -> done: lineage in dataset_info.json; in place, the saved view's entry points at
//!      `.queries/<id>_OPTIMIZED` and the virtual folder is deleted (3.x's optimize)
//! ```
//!
//! Contract:
//! * Values: every selected tensor keeps its htype, dtype, compressions, tensor info and
//!   companions; the dataset info is copied. Stored bytes are copied without decoding.
//!   A link tensor becomes its inner htype (`is_link: false`): each target is fetched
//!   and stored as a sample, verbatim when the file's codec is the tensor's sample
//!   compression, re-encoded otherwise. A hidden `VDS_INDEX` (uint64) holds the source
//!   row of every written row.
//! * Durability and resume: the progress marker lives in the target's
//!   `dataset_info.json` (key [`LINEAGE_KEY`]) and is written by the same flush record
//!   as the batch's rows, so after a crash the target holds whole batches and a marker
//!   that counts exactly them. A re-run with the same arguments (same source version,
//!   rows, tensors, order and link policy: the fingerprint) continues after the last
//!   batch; other arguments onto an unfinished target, or any run onto a finished one,
//!   fail unless `overwrite`.
//! * Memory: rows are read in batches sized so that the batch being read and the batch
//!   being written stay within [`MaterializeOptions::memory_budget`]: the first batch
//!   is one row, each next one as many rows as half the budget holds at the last
//!   batch's bytes per row (a single row larger than that is still read alone).
//! * Failed links: [`OnLinkError::Skip`] leaves the row out of every tensor and lists it
//!   (row, tensor, redacted target, error) in the report and the lineage;
//!   [`OnLinkError::Stop`] fails naming them, with the target resumable.
//! * Progress and cancellation through [`Control`]: one stage of as many steps as
//!   rows; a cancel stops after the batch in flight (the target stays resumable).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::dataset::views::QUERY_KEY;
use crate::dataset::{
    CompanionRole, Dataset, OpenOptions, ReadOptions, StoredRows, TensorOptions, set_item_info,
    stored_bytes,
};
use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::compression::Compression;
use crate::format::dtype::Dtype;
use crate::link::{LinkOptions, Linker, redact};
use crate::runtime::Control;
use crate::store::paths;
use crate::tql::{self, QueryOptions};
use crate::version::Ref;

/// Key of the lineage and progress record in the target's `dataset_info.json`.
pub const LINEAGE_KEY: &str = "materialization";
/// The hidden tensor mapping each written row to its source row.
pub const VDS_INDEX: &str = "VDS_INDEX";

/// Which rows of the source.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    All,
    /// Rows `start..end`.
    Range {
        start: u64,
        end: u64,
    },
    Rows(Vec<u64>),
    /// A TQL query run on the source.
    Query(String),
    /// A saved view of the source (by id); it names its own commit.
    View(String),
}

/// Where the rows go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A new dataset.
    Dataset { url: String, opts: OpenOptions },
    /// The saved view of [`Selection::View`], optimized in place (3.x's layout).
    InPlace,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnLinkError {
    #[default]
    Stop,
    Skip,
}

impl OnLinkError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLinkError::Stop => "stop",
            OnLinkError::Skip => "skip",
        }
    }
}

impl FromStr for OnLinkError {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stop" => Ok(OnLinkError::Stop),
            "skip" => Ok(OnLinkError::Skip),
            _ => Err(Error::invalid(format!(
                "on-link-error {s:?}: use skip or stop"
            ))),
        }
    }
}

/// The order rows are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowOrder {
    /// The view's order.
    #[default]
    View,
    /// Ascending source rows: the source is read sequentially.
    Source,
}

impl RowOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            RowOrder::View => "view",
            RowOrder::Source => "source",
        }
    }
}

impl FromStr for RowOrder {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "view" => Ok(RowOrder::View),
            "source" => Ok(RowOrder::Source),
            _ => Err(Error::invalid(format!("order {s:?}: use view or source"))),
        }
    }
}

/// What to materialize, where, and how.
#[derive(Clone, Debug)]
pub struct MaterializeOptions {
    /// `PATH` or `PATH@ref` of the source dataset.
    pub source: String,
    /// Storage options of the source (and of an in-place target).
    pub source_opts: OpenOptions,
    pub selection: Selection,
    /// Visible tensors to copy (default: all).
    pub tensors: Option<Vec<String>>,
    pub destination: Destination,
    pub on_link_error: OnLinkError,
    /// Bytes of rows in flight (read and not yet flushed).
    pub memory_budget: u64,
    pub order: RowOrder,
    /// Replace a finished target, or an unfinished one made with other arguments.
    pub overwrite: bool,
    /// How link targets are fetched (its cache is turned off: every target is read once).
    pub link: LinkOptions,
    /// Seed of RANDOM() and SAMPLE BY in a query source.
    pub query_seed: u64,
    /// The most rows one durable batch holds.
    pub max_batch_rows: usize,
}

impl MaterializeOptions {
    pub fn new(source: impl Into<String>, selection: Selection, destination: Destination) -> Self {
        MaterializeOptions {
            source: source.into(),
            source_opts: OpenOptions::default(),
            selection,
            tensors: None,
            destination,
            on_link_error: OnLinkError::Stop,
            memory_budget: 256 << 20,
            order: RowOrder::View,
            overwrite: false,
            link: LinkOptions::default(),
            query_seed: 0,
            max_batch_rows: 4096,
        }
    }
}

/// A row left out because a link of it could not be fetched.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedRow {
    /// The source row.
    pub row: u64,
    pub tensor: String,
    /// The target, redacted (no query string, no password).
    pub target: String,
    pub error: String,
}

impl SkippedRow {
    fn to_json(&self) -> Value {
        json!({"row": self.row, "tensor": self.tensor, "target": self.target, "error": self.error})
    }

    fn from_json(v: &Value) -> Option<SkippedRow> {
        Some(SkippedRow {
            row: v.get("row")?.as_u64()?,
            tensor: v.get("tensor")?.as_str()?.to_owned(),
            target: v.get("target")?.as_str()?.to_owned(),
            error: v.get("error")?.as_str()?.to_owned(),
        })
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The target dataset's URL.
    pub target: String,
    /// Rows in the target (all runs).
    pub rows_written: u64,
    /// Rows left out for failed links (all runs).
    pub rows_skipped: u64,
    pub skipped: Vec<SkippedRow>,
    /// Stored bytes of samples written by this run.
    pub bytes: u64,
    pub elapsed: Duration,
    /// The position in the row order this run started at (0 unless resumed).
    pub resumed_from: u64,
    /// Stopped by a cancel before the end (the target is resumable).
    pub cancelled: bool,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "skipped": self.skipped.iter().map(SkippedRow::to_json).collect::<Vec<_>>(),
            "bytes": self.bytes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "resumed_from": self.resumed_from,
            "cancelled": self.cancelled,
        })
    }
}

/// The source resolved: the version read, its rows in write order, and what the
/// lineage says about it.
struct Resolved {
    root: Dataset,
    /// The version a saved view names, when it is not the one `root` reads.
    at: Option<Dataset>,
    rows: Vec<u64>,
    tensors: Vec<String>,
    lineage: Map<String, Value>,
    view: Option<crate::dataset::views::SavedView>,
}

impl Resolved {
    fn src(&self) -> &Dataset {
        self.at.as_ref().unwrap_or(&self.root)
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// FNV-1a: a hash that stays the same across builds (it is stored).
fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

async fn resolve(opts: &MaterializeOptions) -> Result<Resolved> {
    let mut ropts = opts.source_opts.clone();
    ropts.read_only = true;
    ropts.lease_holder = None;
    let root = Dataset::open_url(&opts.source, ropts.clone()).await?;
    let mut lineage = Map::new();
    let mut view = None;
    let (at, rows) = match &opts.selection {
        Selection::View(id) => {
            let v = root.load_view(id, &ropts).await?;
            let commit = v.commit().map(str::to_owned).ok_or_else(|| {
                Error::corrupt(
                    format!("{}/{}", root.url(), paths::QUERIES),
                    format!("view {id:?} names no source-dataset-version"),
                )
            })?;
            let src = Dataset::open_ref(root.url(), &Ref::Name(commit), ropts.clone()).await?;
            lineage.insert("selection".into(), json!("view"));
            lineage.insert("view".into(), json!(id));
            if let Some(q) = v.info.get(QUERY_KEY).or_else(|| v.info.get("tql_query")) {
                lineage.insert("query".into(), q.clone());
            }
            let rows = v.indices.clone();
            view = Some(v);
            (Some(src), rows)
        }
        Selection::Query(text) => {
            let qopts = QueryOptions {
                seed: opts.query_seed,
                storage: opts.source_opts.storage.clone(),
            };
            let res = tql::query(&root, text, &qopts).await?;
            let one_source = match res.sources.as_slice() {
                [s] => s.url == root.url() && s.node == root.node_id().as_str(),
                [] => true,
                _ => false,
            };
            if !one_source || res.groups.is_some() || res.joined.is_some() || res.explain.is_some()
            {
                return Err(Error::invalid(
                    "only a query that selects rows of the source (no FROM of another version, \
                     no GROUP BY, no JOIN, no EXPLAIN) can be materialized",
                ));
            }
            lineage.insert("selection".into(), json!("query"));
            lineage.insert("query".into(), json!(text));
            (None, res.rows.iter().map(|r| r.1).collect())
        }
        Selection::All => {
            lineage.insert("selection".into(), json!("all"));
            (None, (0..root.len()).collect())
        }
        Selection::Range { start, end } => {
            let len = root.len();
            if start > end || *end > len {
                return Err(Error::invalid(format!(
                    "rows {start}:{end} are out of range (the dataset has {len} rows)"
                )));
            }
            lineage.insert("selection".into(), json!(format!("rows {start}:{end}")));
            (None, (*start..*end).collect())
        }
        Selection::Rows(list) => {
            let len = root.len();
            if let Some(bad) = list.iter().find(|r| **r >= len) {
                return Err(Error::invalid(format!(
                    "row {bad} is out of range (the dataset has {len} rows)"
                )));
            }
            lineage.insert("selection".into(), json!("row list"));
            (None, list.clone())
        }
    };
    let src = at.as_ref().unwrap_or(&root);
    let visible = src.tensor_names();
    let tensors = match &opts.tensors {
        None => visible,
        Some(list) => {
            if list.is_empty() {
                return Err(Error::invalid("no tensors selected"));
            }
            for t in list {
                if !visible.contains(t) {
                    return Err(Error::not_found("tensor", t));
                }
            }
            let mut seen = std::collections::HashSet::new();
            list.iter()
                .filter(|t| seen.insert(t.as_str()))
                .cloned()
                .collect()
        }
    };
    if tensors.is_empty() {
        return Err(Error::invalid("the source has no tensors to materialize"));
    }
    let mut rows = rows;
    if opts.order == RowOrder::Source {
        rows.sort_unstable();
    }
    lineage.insert("source".into(), json!(root.url()));
    lineage.insert("commit".into(), json!(src.commit_id()));
    lineage.insert("node".into(), json!(src.node_id().as_str()));
    lineage.insert("order".into(), json!(opts.order.as_str()));
    lineage.insert("tensors".into(), json!(tensors));
    Ok(Resolved {
        root,
        at,
        rows,
        tensors,
        lineage,
        view,
    })
}

/// What identifies a run: a re-run with the same fingerprint resumes.
fn fingerprint(opts: &MaterializeOptions, r: &Resolved) -> String {
    let mut h = 0xcbf29ce484222325u64;
    h = fnv(r.root.url().as_bytes(), h);
    h = fnv(r.src().node_id().as_str().as_bytes(), h);
    h = fnv(&r.src().len().to_le_bytes(), h);
    for row in &r.rows {
        h = fnv(&row.to_le_bytes(), h);
    }
    for t in &r.tensors {
        h = fnv(t.as_bytes(), h);
        h = fnv(&[0], h);
    }
    h = fnv(opts.order.as_str().as_bytes(), h);
    h = fnv(opts.on_link_error.as_str().as_bytes(), h);
    h = fnv(
        match opts.destination {
            Destination::Dataset { .. } => b"dataset",
            Destination::InPlace => b"in-place",
        },
        h,
    );
    format!("{h:016x}")
}

/// The tensor options that recreate source tensor `name` (a link tensor as its inner
/// htype).
fn tensor_options(src: &Dataset, name: &str) -> Result<TensorOptions> {
    let m = src.tensor_meta(name)?;
    let htype = if m.is_sequence {
        format!("sequence[{}]", m.htype)
    } else {
        m.htype.clone()
    };
    let mut o = TensorOptions::new(htype);
    o.dtype = m.dtype.as_deref().and_then(|d| d.parse::<Dtype>().ok());
    o.sample_compression = m.sample_compression.clone();
    o.chunk_compression = m.chunk_compression.clone();
    o.max_chunk_size = m.max_chunk_size;
    o.tiling_threshold = m.tiling_threshold;
    o.info = src.tensor_info(name)?.clone();
    if !m.is_link {
        let roles: Vec<CompanionRole> = m
            .links
            .values()
            .map(|l| CompanionRole::from_extend(&l.extend))
            .collect();
        o.create_id_tensor = roles.contains(&CompanionRole::Id);
        o.create_shape_tensor = roles.contains(&CompanionRole::Shape);
        o.create_sample_info_tensor = roles.contains(&CompanionRole::Info);
    }
    Ok(o)
}

/// The progress marker found on an existing target.
struct Marker {
    fingerprint: String,
    done: bool,
    rows_done: u64,
    skipped: Vec<SkippedRow>,
}

fn marker_of(ds: &Dataset) -> Option<Marker> {
    let m = ds.info().get(LINEAGE_KEY)?;
    Some(Marker {
        fingerprint: m.get("fingerprint")?.as_str()?.to_owned(),
        done: m.get("state").and_then(Value::as_str) == Some("done"),
        rows_done: m.get("rows_done").and_then(Value::as_u64).unwrap_or(0),
        skipped: m
            .get("skipped")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(SkippedRow::from_json).collect())
            .unwrap_or_default(),
    })
}

/// One batch read and ready to append.
struct Batch {
    /// Positions `start..end` of the row order this batch covers.
    end: u64,
    /// Source rows kept (not skipped), in order.
    rows: Vec<u64>,
    tensors: Vec<(String, TensorRows)>,
    skipped: Vec<SkippedRow>,
    bytes: u64,
}

enum TensorRows {
    Stored(StoredRows),
    /// Fetched link targets (`None`: an empty link), with the source's companion rows
    /// and the link paths.
    Linked {
        stored: StoredRows,
        samples: Vec<Sample>,
        paths: Vec<Vec<String>>,
    },
}

/// Materializes the view (module docs).
pub async fn materialize(opts: &MaterializeOptions, ctl: &Control) -> Result<Report> {
    let started = Instant::now();
    if opts.memory_budget == 0 || opts.max_batch_rows == 0 {
        return Err(Error::invalid(
            "the memory budget and the batch size must be positive",
        ));
    }
    let r = resolve(opts).await?;
    let fp = fingerprint(opts, &r);
    let (url, mut topts) = match &opts.destination {
        Destination::Dataset { url, opts } => {
            if url.trim_end_matches('/') == r.root.url().trim_end_matches('/') {
                return Err(Error::invalid(
                    "the target is the source dataset; use a new path or --in-place",
                ));
            }
            (url.clone(), opts.clone())
        }
        Destination::InPlace => {
            let Selection::View(id) = &opts.selection else {
                return Err(Error::invalid(
                    "materializing in place needs a saved view (--view ID)",
                ));
            };
            (
                r.root.view_url(&paths::optimized_view(id)),
                opts.source_opts.clone(),
            )
        }
    };
    topts.read_only = false;
    topts.overwrite = false;
    topts.branch = None;
    topts.lease_holder = Some(format!("materialize-{fp}"));

    let in_place_id = match (&opts.destination, &opts.selection) {
        (Destination::InPlace, Selection::View(id)) => Some(id.clone()),
        _ => None,
    };

    // Open what is there: resume, refuse, or start afresh.
    let existing = match Dataset::open(&url, topts.clone()).await {
        Ok(ds) => Some(ds),
        Err(Error::NotFound { .. }) => None,
        // A run killed while creating the target leaves files that may not open; with
        // no data in them it starts afresh.
        Err(e) if never_flushed(&url, &topts).await? => {
            tracing::debug!(target = %url, error = %e, "recreating a half-created target");
            None
        }
        Err(e) => return Err(e),
    };
    let mut resume: Option<(Dataset, Marker)> = None;
    if let Some(ds) = existing {
        match marker_of(&ds) {
            Some(m) if m.done && m.fingerprint == fp && !opts.overwrite => {
                // Finished; in place, a crash may have come before the entry was updated.
                if let (Some(id), Some(v)) = (&in_place_id, &r.view)
                    && v.is_virtual()
                {
                    drop(ds);
                    r.root
                        .mark_view_optimized(id, &paths::optimized_view(id))
                        .await?;
                    return Ok(finished_report(&url, &r, &m, started));
                }
                return Err(Error::Conflict {
                    path: url,
                    message: "this target holds a finished materialization; use overwrite to \
                              write it again"
                        .to_owned(),
                    retryable: false,
                });
            }
            Some(m) if !m.done && m.fingerprint == fp => resume = Some((ds, m)),
            Some(_) if opts.overwrite => {}
            Some(m) if m.done => {
                return Err(Error::Conflict {
                    path: url,
                    message: "this target holds a finished materialization; use overwrite to \
                              replace it"
                        .to_owned(),
                    retryable: false,
                });
            }
            Some(_) => {
                return Err(Error::Conflict {
                    path: url,
                    message: "this target holds an unfinished materialization made with other \
                              arguments (source version, rows, tensors, order or link policy); \
                              re-run it with the same arguments, or use overwrite"
                        .to_owned(),
                    retryable: false,
                });
            }
            None => {
                let empty = ds.tensor_names().is_empty() && ds.hidden_tensor_names().is_empty();
                if !empty && !opts.overwrite {
                    return Err(Error::Conflict {
                        path: url,
                        message: "a dataset that is not a materialization exists here; use \
                                  overwrite to replace it"
                            .to_owned(),
                        retryable: false,
                    });
                }
            }
        }
    }

    let (mut target, resumed_from, mut skipped) = match resume {
        Some((ds, m)) => (ds, m.rows_done, m.skipped),
        None => (
            create_target(opts, &r, &url, &topts, &fp).await?,
            0,
            Vec::new(),
        ),
    };

    let total = r.rows.len() as u64;
    ctl.start_stage(total);
    ctl.advance(resumed_from);
    let links: Vec<bool> = r
        .tensors
        .iter()
        .map(|t| r.src().tensor_meta(t).map(|m| m.is_link))
        .collect::<Result<_>>()?;
    let linker = if links.iter().any(|l| *l) {
        Some(Linker::new(LinkOptions {
            cache_bytes: 0,
            ..opts.link.clone()
        })?)
    } else {
        None
    };
    let reader = BatchReader {
        src: r.src(),
        tensors: &r.tensors,
        links: &links,
        linker: linker.as_ref(),
        policy: opts.on_link_error,
    };

    // Batches: the next one is read while the last one is appended and flushed.
    let half_budget = (opts.memory_budget / 2).max(1);
    let mut per_row: Option<u64> = None;
    let mut pos = resumed_from;
    let mut bytes = 0u64;
    let mut cancelled = false;
    let next_size = |per_row: Option<u64>| -> u64 {
        // The first batch is one row: nothing is known of the rows' size before it.
        let by_budget = match per_row {
            Some(b) => half_budget / b.max(1),
            None => 1,
        };
        by_budget.clamp(1, opts.max_batch_rows as u64)
    };
    let mut pending: Option<Batch> = None;
    loop {
        let read_next = async {
            if pos >= total || ctl.is_cancelled() {
                return Ok(None);
            }
            let end = (pos + next_size(per_row)).min(total);
            let positions = pos..end;
            reader
                .read(
                    &r.rows[positions.start as usize..positions.end as usize],
                    end,
                )
                .await
                .map(Some)
        };
        let write_last = async {
            match pending.take() {
                Some(b) => {
                    let n = b.end;
                    let wrote = write_batch(&mut target, b, &mut skipped).await?;
                    Ok::<_, Error>(Some((n, wrote)))
                }
                None => Ok(None),
            }
        };
        // Both run to the end: a failed read still lets the batch before it land, so a
        // re-run resumes after it.
        let (next, wrote) = futures::future::join(read_next, write_last).await;
        if let Some((end, wrote)) = wrote? {
            bytes += wrote;
            let rows_done_before = ctl.progress().0;
            ctl.advance(end.saturating_sub(rows_done_before));
        }
        match next? {
            Some(b) => {
                let n = b.end - pos;
                per_row = Some((b.bytes / n.max(1)).max(1));
                pos = b.end;
                pending = Some(b);
            }
            None => {
                if pos < total {
                    cancelled = true;
                }
                break;
            }
        }
    }
    if cancelled {
        let rows_written = target.tensor_len(VDS_INDEX)?;
        target.close().await?;
        return Ok(Report {
            target: url,
            rows_written,
            rows_skipped: skipped.len() as u64,
            skipped,
            bytes,
            elapsed: started.elapsed(),
            resumed_from,
            cancelled: true,
        });
    }

    // Done: the lineage's final form, then (in place) the view's entry.
    let rows_written = target.tensor_len(VDS_INDEX)?;
    let mut lineage = r.lineage.clone();
    lineage.insert("fingerprint".into(), json!(fp));
    lineage.insert("state".into(), json!("done"));
    lineage.insert("rows_done".into(), json!(total));
    lineage.insert("rows".into(), json!(rows_written));
    lineage.insert("skipped_rows".into(), json!(skipped.len()));
    lineage.insert(
        "skipped".into(),
        json!(skipped.iter().map(SkippedRow::to_json).collect::<Vec<_>>()),
    );
    lineage.insert(
        "created_at".into(),
        target
            .info()
            .get(LINEAGE_KEY)
            .and_then(|m| m.get("created_at"))
            .cloned()
            .unwrap_or(json!(now())),
    );
    lineage.insert("finished_at".into(), json!(now()));
    target.set_info(LINEAGE_KEY, Value::Object(lineage)).await?;
    target.flush().await?;
    target.close().await?;
    if let Some(id) = &in_place_id {
        r.root
            .mark_view_optimized(id, &paths::optimized_view(id))
            .await?;
    }
    Ok(Report {
        target: url,
        rows_written,
        rows_skipped: skipped.len() as u64,
        skipped,
        bytes,
        elapsed: started.elapsed(),
        resumed_from,
        cancelled: false,
    })
}

/// Whether the dataset at `url` holds no flush record and no chunk: nothing a run
/// wrote past the creation of its files.
async fn never_flushed(url: &str, opts: &OpenOptions) -> Result<bool> {
    use crate::store::paths::{CommitFile, KeyPlace};
    let store = crate::store::Store::open(url, &opts.storage)?;
    let keys = store.list("").await?;
    Ok(keys.iter().all(|(k, _)| match paths::place(k) {
        KeyPlace::Records => true,
        KeyPlace::Commit { rest, .. } => !matches!(
            paths::commit_file(rest),
            CommitFile::FlushRecord(_) | CommitFile::Chunk { .. }
        ),
        _ => false,
    }))
}

fn finished_report(url: &str, r: &Resolved, m: &Marker, started: Instant) -> Report {
    Report {
        target: url.to_owned(),
        rows_written: r.rows.len() as u64 - m.skipped.len() as u64,
        rows_skipped: m.skipped.len() as u64,
        skipped: m.skipped.clone(),
        bytes: 0,
        elapsed: started.elapsed(),
        resumed_from: m.rows_done,
        cancelled: false,
    }
}

/// Creates the target: tensors like the source's, `VDS_INDEX`, the source's info, the
/// view entry (in place) and the marker; flushed before any row.
async fn create_target(
    opts: &MaterializeOptions,
    r: &Resolved,
    url: &str,
    topts: &OpenOptions,
    fp: &str,
) -> Result<Dataset> {
    let mut o = topts.clone();
    o.overwrite = true;
    let mut t = Dataset::create(url, o).await?;
    for name in &r.tensors {
        let to = tensor_options(r.src(), name)?;
        t.create_tensor(name, to).await?;
    }
    let mut vi = TensorOptions::new("generic").dtype(Dtype::U64);
    vi.hidden = true;
    vi.create_id_tensor = false;
    vi.create_shape_tensor = false;
    vi.create_sample_info_tensor = false;
    t.create_tensor(VDS_INDEX, vi).await?;
    for (k, v) in r.src().info() {
        if k != LINEAGE_KEY {
            t.set_info(k.clone(), v.clone()).await?;
        }
    }
    if let (Destination::InPlace, Some(v), Selection::View(id)) =
        (&opts.destination, &r.view, &opts.selection)
    {
        for (k, val) in &v.info {
            t.set_info(k.clone(), val.clone()).await?;
        }
        t.set_info("virtual-datasource", json!(false)).await?;
        t.set_info("path", json!(paths::optimized_view(id))).await?;
    }
    let mut lineage = r.lineage.clone();
    lineage.insert("fingerprint".into(), json!(fp));
    lineage.insert("state".into(), json!("running"));
    lineage.insert("rows_done".into(), json!(0));
    lineage.insert("rows_total".into(), json!(r.rows.len()));
    lineage.insert("skipped".into(), json!([]));
    lineage.insert("created_at".into(), json!(now()));
    t.set_info(LINEAGE_KEY, Value::Object(lineage)).await?;
    t.flush().await?;
    Ok(t)
}

/// A link tensor's targets of one batch: (tensor position, each target's bytes (`None`:
/// empty or skipped), each row's paths, whether each row is a sequence).
type Fetched = (usize, Vec<Option<Bytes>>, Vec<Vec<String>>, Vec<bool>);

struct BatchReader<'a> {
    src: &'a Dataset,
    tensors: &'a [String],
    links: &'a [bool],
    linker: Option<&'a Linker>,
    policy: OnLinkError,
}

impl BatchReader<'_> {
    /// Reads source rows `rows` (positions ending at `end`): links first, so that rows
    /// with a failed link are not read from the other tensors.
    async fn read(&self, rows: &[u64], end: u64) -> Result<Batch> {
        let mut skip: BTreeMap<usize, SkippedRow> = BTreeMap::new();
        let mut linked: Vec<Fetched> = Vec::new();
        for (ti, name) in self.tensors.iter().enumerate() {
            if !self.links[ti] {
                continue;
            }
            let linker = self
                .linker
                .ok_or_else(|| Error::internal("a link tensor without a linker"))?;
            let samples = self
                .src
                .read_rows_with(name, rows, &ReadOptions::default())
                .await?;
            // (row position, item position, path, creds key) of every target.
            let mut targets: Vec<(usize, String, Option<String>)> = Vec::new();
            let mut paths_of: Vec<Vec<String>> = Vec::with_capacity(samples.len());
            let mut is_seq = Vec::with_capacity(samples.len());
            for (k, s) in samples.into_iter().enumerate() {
                let (items, seq) = match s {
                    Sample::Sequence(items) => (items, true),
                    other => (vec![other], false),
                };
                is_seq.push(seq);
                let mut ps = Vec::new();
                for it in items {
                    let (path, creds) = match it {
                        Sample::Link { path, creds_key } => (path, creds_key),
                        Sample::Empty => (String::new(), None),
                        other => {
                            return Err(Error::corrupt(
                                format!("{}/{name}", self.src.url()),
                                format!("row {}: a link tensor holds {other:?}", rows[k]),
                            ));
                        }
                    };
                    targets.push((k, path.clone(), creds));
                    ps.push(path);
                }
                paths_of.push(ps);
            }
            // The futures are made first: a stream holding the closure would make the
            // whole run's future lose `Send` (a higher-ranked lifetime).
            let fetches: Vec<_> = targets
                .iter()
                .map(|(_, path, creds)| async move {
                    if path.is_empty() {
                        return Ok(None);
                    }
                    let b = linker.fetch(path, creds.as_deref()).await?;
                    if Compression::sniff(&b).is_none() {
                        return Err(Error::Link {
                            target: redact(path),
                            status: None,
                            reason: "the file's format is not one a tensor can store".to_owned(),
                            retryable: false,
                        });
                    }
                    Ok::<_, Error>(Some(b))
                })
                .collect();
            let fetched: Vec<Result<Option<Bytes>>> = futures::stream::iter(fetches)
                .buffered(linker.options().concurrency.max(1))
                .collect()
                .await;
            let mut bytes = Vec::with_capacity(fetched.len());
            for ((k, path, _), f) in targets.iter().zip(fetched) {
                match f {
                    Ok(b) => bytes.push(b),
                    Err(e) => {
                        let row = rows[*k];
                        let (target, reason) = match &e {
                            Error::Link { target, reason, .. } => (target.clone(), reason.clone()),
                            other => (redact(path), other.to_string()),
                        };
                        if self.policy == OnLinkError::Stop {
                            return Err(match e {
                                Error::Link {
                                    target,
                                    status,
                                    reason,
                                    retryable,
                                } => Error::Link {
                                    target,
                                    status,
                                    reason: format!("row {row}, tensor {name:?}: {reason}"),
                                    retryable,
                                },
                                other => Error::Link {
                                    target: redact(path),
                                    status: None,
                                    reason: format!("row {row}, tensor {name:?}: {other}"),
                                    retryable: false,
                                },
                            });
                        }
                        skip.entry(*k).or_insert(SkippedRow {
                            row,
                            tensor: name.clone(),
                            target,
                            error: reason,
                        });
                        bytes.push(None);
                    }
                }
            }
            linked.push((ti, bytes, paths_of, is_seq));
        }
        let kept: Vec<usize> = (0..rows.len()).filter(|k| !skip.contains_key(k)).collect();
        let kept_rows: Vec<u64> = kept.iter().map(|&k| rows[k]).collect();
        let reads: Vec<_> = self
            .tensors
            .iter()
            .map(|name| self.src.read_stored_rows(name, &kept_rows))
            .collect();
        let stored = futures::future::try_join_all(reads).await?;
        let mut out = Vec::with_capacity(self.tensors.len());
        let mut total = 0u64;
        for (ti, st) in stored.into_iter().enumerate() {
            let name = self.tensors[ti].clone();
            match linked.iter_mut().find(|l| l.0 == ti) {
                None => {
                    total += st.total_bytes();
                    out.push((name, TensorRows::Stored(st)));
                }
                Some((_, bytes, paths_of, is_seq)) => {
                    // Per row, its items' bytes (one item unless a sequence).
                    let mut it = std::mem::take(bytes).into_iter();
                    let mut samples = Vec::with_capacity(kept.len());
                    let mut paths = Vec::with_capacity(kept.len());
                    let mut by_row: Vec<Vec<Option<Bytes>>> = Vec::with_capacity(paths_of.len());
                    for ps in paths_of.iter() {
                        by_row.push(it.by_ref().take(ps.len()).collect());
                    }
                    for &k in &kept {
                        let items: Vec<Sample> = std::mem::take(&mut by_row[k])
                            .into_iter()
                            .map(|b| match b {
                                Some(b) => {
                                    total += b.len() as u64;
                                    let compression = Compression::sniff(&b)
                                        .unwrap_or(Compression::Other(String::new()));
                                    Sample::Encoded {
                                        bytes: b,
                                        compression,
                                        shape: None,
                                    }
                                }
                                None => Sample::Empty,
                            })
                            .collect();
                        samples.push(if is_seq[k] {
                            Sample::Sequence(items)
                        } else {
                            items.into_iter().next().unwrap_or(Sample::Empty)
                        });
                        paths.push(paths_of[k].clone());
                    }
                    out.push((
                        name,
                        TensorRows::Linked {
                            stored: st,
                            samples,
                            paths,
                        },
                    ));
                }
            }
        }
        Ok(Batch {
            end,
            rows: kept_rows,
            tensors: out,
            skipped: skip.into_values().collect(),
            bytes: total,
        })
    }
}

/// Appends a batch and flushes it with the marker in one flush record. Returns the
/// stored bytes of the samples written.
async fn write_batch(target: &mut Dataset, b: Batch, skipped: &mut Vec<SkippedRow>) -> Result<u64> {
    let mut bytes = 0u64;
    for (name, rows) in b.tensors {
        match rows {
            TensorRows::Stored(st) => {
                bytes += st.data_bytes();
                target.append_stored_rows(&name, st).await?;
            }
            TensorRows::Linked {
                mut stored,
                samples,
                paths,
            } => {
                let mut prepared = target.encode_rows(&name, samples).await?;
                for (p, ps) in prepared.iter_mut().zip(&paths) {
                    if let [one] = ps.as_slice() {
                        set_item_info(p, "filename", json!(one));
                    }
                    bytes += stored_bytes(p);
                }
                stored.rows = prepared;
                // The samples changed form: their shapes and info are made again; the
                // sample ids are the source's.
                stored
                    .companions
                    .retain(|(role, _, _)| *role == CompanionRole::Id);
                target.append_stored_rows(&name, stored).await?;
            }
        }
    }
    let index: Vec<Sample> = b
        .rows
        .iter()
        .map(|&r| Sample::Array(NdArray::scalar(r)))
        .collect();
    target.extend(VDS_INDEX, index).await?;
    skipped.extend(b.skipped);
    let mut lineage = target
        .info()
        .get(LINEAGE_KEY)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    lineage.insert("rows_done".into(), json!(b.end));
    lineage.insert(
        "skipped".into(),
        json!(skipped.iter().map(SkippedRow::to_json).collect::<Vec<_>>()),
    );
    target.set_info(LINEAGE_KEY, Value::Object(lineage)).await?;
    target.flush().await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Servers and the CLI run materializations as spawned tasks.
    #[test]
    fn a_run_is_send() {
        fn is_send<T: Send>(_: &T) {}
        let opts = MaterializeOptions::new("memory://x", Selection::All, Destination::InPlace);
        let ctl = Control::default();
        is_send(&materialize(&opts, &ctl));
    }
}
