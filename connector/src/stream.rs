//! One stream's dataset: opening (with crash repair), the tensors its columns become,
//! batches, primary-key updates, staged data for truncating syncs, and what each flush
//! records in the dataset's info.
//!
//! Each flush stores, in the dataset info (written in the same flush record as the
//! rows), an `airbyte` entry:
//!
//! | key | meaning |
//! |---|---|
//! | `pending_commit` | the sidecar record whose existence commits this flush (several datasets changed at once), or null when this flush commits itself |
//! | `rows`, `staged_rows` | rows of the visible and of the staged tensors at this flush |
//! | `acked` | `rows` / `staged_rows` as of the last STATE this flush acknowledges: rows after it are in the flush but not vouched for |
//! | `fallback` | `acked` of the last committed flush, for when `pending_commit` never came to exist |
//! | `staging` | the generation a truncating sync is filling staged tensors for |
//! | `states` | the STATE messages this flush acknowledges |
//!
//! Truncating syncs (overwrite, or a refresh with `minimum_generation_id ==
//! generation_id > 0`) write into staged tensors `_airbyte_next__<t>`: readers keep
//! seeing the old data, a retried attempt of the same generation resumes them, and the
//! swap to the new data is one flush.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deeplake_core::store::Sidecar;
use deeplake_core::{Dataset, OpenOptions, Sample, TensorOptions};
use serde_json::{Value, json};

use crate::batch::{self, ColumnOut, MetaTensor, Pack, RowMeta, Source};
use crate::config::Config;
use crate::error::{CoreContext, Result};
use crate::input::RecordIn;
use crate::protocol::{Emit, StreamKey};
use crate::schema::{self, Column, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Append,
    Overwrite,
    Dedup,
}

/// A configured stream, as the catalog gives it.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub key: StreamKey,
    pub schema: Value,
    pub mode: Mode,
    pub primary_key: Vec<Vec<String>>,
    pub generation_id: Option<i64>,
    pub minimum_generation_id: Option<i64>,
    pub sync_id: Option<i64>,
}

impl StreamConfig {
    /// The bulk CDK's rule: overwrite, or a refresh whose minimum generation is itself.
    pub fn truncates(&self) -> bool {
        self.mode == Mode::Overwrite
            || matches!((self.generation_id, self.minimum_generation_id),
                        (Some(g), Some(m)) if g > 0 && g == m)
    }

    pub fn label(&self) -> String {
        match &self.key.0 {
            Some(ns) => format!("{ns}.{}", self.key.1),
            None => self.key.1.clone(),
        }
    }
}

/// The dataset URL of a stream.
pub fn dataset_url(cfg: &Config, key: &StreamKey) -> String {
    let seg = |s: &str| {
        let s = schema::sanitize(s);
        if s == "_rs" { format!("{s}_") } else { s }
    };
    let ns = key.0.clone().or_else(|| cfg.default_namespace.clone());
    let name = seg(&format!("{}{}", cfg.prefix, key.1));
    match ns.filter(|_| cfg.use_namespace) {
        Some(ns) => format!("{}/{}/{name}", cfg.root, seg(&ns)),
        None => format!("{}/{name}", cfg.root),
    }
}

/// Bytes each chunk is filled to (see `Dataset::set_chunk_fill`).
const CHUNK_FILL: usize = 1 << 20;

pub fn open_options(cfg: &Config) -> OpenOptions {
    OpenOptions {
        storage: cfg.storage.clone(),
        // A killed attempt's lease must not block the retry for long; a live writer
        // renews it at every write.
        lease_ttl: Some(cfg.lease),
        lease_wait: Some(cfg.lease + cfg.lease / 2),
        ..Default::default()
    }
}

/// The null of a column, as a sample.
fn null_sample(kind: &Kind) -> Sample {
    match kind {
        Kind::Json => Sample::Json(Value::Null),
        Kind::StrList => Sample::List(Vec::new()),
        Kind::Link => Sample::Link {
            path: String::new(),
            creds_key: None,
        },
        _ => Sample::Empty,
    }
}

pub struct StreamWriter {
    pub cfg: StreamConfig,
    pub url: String,
    pub cols: Arc<Vec<Column>>,
    /// Visible tensor name and where its samples come from.
    pub tensors: Arc<Vec<(String, Source)>>,
    pub ds: Dataset,
    /// Writing into staged tensors (a truncating sync).
    pub staging: bool,
    /// Rows of the tensors written to, buffered ones included.
    pub rows: u64,
    /// Rows of those tensors already handed to the dataset.
    stored: u64,
    batch: Vec<RecordIn>,
    updates: BTreeMap<u64, RecordIn>,
    index: Option<HashMap<String, u64>>,
    /// Changed since the last commit point.
    pub changed: bool,
    /// Visible and staged rows as of the last STATE covering this stream.
    acked: (u64, u64),
    fallback: (u64, u64),
    pub complete: bool,
    pub since_state: u64,
    pub rejected_since_state: u64,
    pub total: u64,
    pub rejected_total: u64,
    batch_size: usize,
    /// Link checks: configured, storage options, and what was already looked up.
    verify: Option<LinkCheck>,
    /// The states the dataset's newest flush committed in this same sync (another
    /// attempt of it), as [`state_identity`] gives them, with the number of records
    /// each one covered. A crash between that flush and the echo makes the platform
    /// send them again, with their records: those records are already stored (see
    /// [`Self::drop_replayed`]).
    replay: Vec<(Value, Option<u64>)>,
    /// Per tensor of `tensors`: whether its rows go to the dataset in stored form.
    packs: Arc<Vec<Option<Pack>>>,
    emit: Emit,
}

/// A state as the source made it: the statistics and the message id that the platform
/// and the destination add are not part of its identity.
pub fn state_identity(state: &Value) -> Value {
    let mut s = state.clone();
    if let Some(m) = s.as_object_mut() {
        m.remove("destinationStats");
        m.remove("sourceStats");
        m.remove("id");
    }
    s
}

fn record_count(state: &Value) -> Option<u64> {
    state
        .get("destinationStats")?
        .get("recordCount")?
        .as_f64()
        .map(|c| c as u64)
}

/// Looks link targets up before they are stored (`links.verify`).
struct LinkCheck {
    storage: deeplake_core::store::StoreOptions,
    seen: HashMap<String, bool>,
    warned_http: bool,
    emit: Emit,
}

impl LinkCheck {
    /// Whether `url` names an existing file; `None` when it cannot be checked here.
    async fn exists(&mut self, url: &str) -> Option<bool> {
        if let Some(hit) = self.seen.get(url) {
            return Some(*hit);
        }
        let found = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/')?;
            let store =
                deeplake_core::Store::open(&format!("s3://{bucket}"), &self.storage).ok()?;
            store.exists(key).await.ok()?
        } else if let Some(path) = url
            .strip_prefix("file://")
            .or(url.starts_with('/').then_some(url))
        {
            std::path::Path::new(path).is_file()
        } else {
            if !self.warned_http {
                self.warned_http = true;
                self.emit.warn(format!(
                    "links.verify checks local files and s3:// objects; {url} and other links of its kind are stored unchecked"
                ));
            }
            return None;
        };
        if self.seen.len() > 100_000 {
            self.seen.clear();
        }
        self.seen.insert(url.to_owned(), found);
        Some(found)
    }
}

fn staged(name: &str) -> String {
    format!("{}{name}", schema::STAGED_PREFIX)
}

fn airbyte_info(ds: &Dataset) -> Value {
    ds.info().get("airbyte").cloned().unwrap_or(Value::Null)
}

impl StreamWriter {
    /// Opens (or creates) the stream's dataset, undoes rows no commit vouches for, and
    /// makes the tensors of this sync's plan.
    pub async fn open(
        cfg: &Config,
        sc: StreamConfig,
        sidecar: &Sidecar,
        emit: &Emit,
    ) -> Result<StreamWriter> {
        let url = dataset_url(cfg, &sc.key);
        let label = sc.label();
        let mut cols = schema::plan_columns(&sc.key.1, &sc.schema, cfg)?;
        let mut ds = Dataset::open_or_create(&url, open_options(cfg))
            .await
            .ctx(format!("opening the dataset of stream {label} at {url}"))?;
        // Every flush stores each tensor's open chunk whole: a small fill keeps that,
        // and the memory of open chunks, independent of the sync's size.
        ds.set_chunk_fill(Some(CHUNK_FILL));
        // A flush per STATE then writes the chunks and one record, not every tensor's
        // 3.x files again; those follow at the commit or close that ends the sync.
        ds.set_deferred_compat_files(true);
        // Links are checked by `links.verify` (missing ones nulled, not failing the
        // sync); the dataset's own verify step would fetch every target.
        ds.set_link_verify(false);
        repair(&mut ds, sidecar, &label, emit).await?;
        let info = airbyte_info(&ds);

        let tensors = tensor_sources(&cols, sc.mode);

        // Staged tensors of an earlier attempt: resumed by a retry of the same
        // generation, dropped otherwise.
        let existing = ds.tensor_names();
        let old_staged: Vec<String> = all_names(&ds)
            .into_iter()
            .filter(|n| n.starts_with(schema::STAGED_PREFIX) && !is_companion(n))
            .collect();
        let same_generation = info.get("staging").is_some_and(|s| {
            s.get("generation_id").and_then(Value::as_i64) == sc.generation_id
                && s.get("sync_id").and_then(Value::as_i64) == sc.sync_id
        });
        // A retry after this generation already replaced the data appends to it.
        let landed = sc.generation_id.is_some_and(|g| g > 0)
            && info.get("generation_id").and_then(Value::as_i64) == sc.generation_id
            && info.get("staging").is_none_or(Value::is_null);
        let staging = sc.truncates() && !landed;
        let resume = staging && same_generation && !old_staged.is_empty();
        if !resume {
            for n in &old_staged {
                ds.unlink_tensor(n)
                    .await
                    .ctx(format!("dropping stale staged tensor {n} of {label}"))?;
            }
        }
        if resume {
            emit.info(format!(
                "stream {label}: resuming the staged data of generation {:?}",
                sc.generation_id
            ));
        }

        let target = |n: &str| if staging { staged(n) } else { n.to_owned() };
        let len_of = |ds: &Dataset, n: &str| ds.tensor_len(n).unwrap_or(0);
        let rows = if staging {
            len_of(&ds, &target(schema::RAW_ID))
        } else if existing.iter().any(|n| n == schema::RAW_ID) {
            len_of(&ds, schema::RAW_ID)
        } else {
            ds.len()
        };
        for (name, src) in tensors.iter() {
            let t = target(name);
            let exists = ds.tensor_len(&t).is_ok();
            if exists {
                // A stored tensor whose type differs from the plan wins: values that do
                // not fit it are nulled and reported, never stored as something else.
                if let Source::Field(ci) = src {
                    let meta = ds.tensor_meta(&t).ctx(format!("reading tensor {t}"))?;
                    let htype = if meta.is_link {
                        format!("link[{}]", meta.htype)
                    } else {
                        meta.htype.clone()
                    };
                    let k = schema::kind_of_existing(
                        &htype,
                        meta.dtype.as_deref(),
                        meta.sample_compression.is_some(),
                    );
                    let c = &mut cols[*ci];
                    if k != c.kind && !(c.kind == Kind::DateTime && k == Kind::Text) {
                        emit.warn(format!(
                            "stream {label}: field {} is stored as {htype} ({}), the schema now says {:?}; values that do not fit are stored as null",
                            c.field,
                            meta.dtype.as_deref().unwrap_or("-"),
                            c.kind
                        ));
                        c.kind = k;
                    }
                }
                continue;
            }
            let opts = tensor_options(&cols, src, cfg);
            let opts = if staging { opts.staged() } else { opts };
            ds.create_tensor(&t, opts)
                .await
                .ctx(format!("creating tensor {t} of stream {label}"))?;
            // A tensor added to a dataset that has rows starts with as many nulls.
            let mut left = rows;
            while left > 0 {
                let n = left.min(cfg.batch_size as u64);
                let null = match src {
                    Source::Field(ci) => null_sample(&cols[*ci].kind),
                    Source::Meta(MetaTensor::Meta) => null_sample(&Kind::Json),
                    _ => Sample::Empty,
                };
                ds.extend(&t, vec![null; n as usize])
                    .await
                    .ctx(format!("padding new tensor {t} of stream {label}"))?;
                left -= n;
            }
            if !staging && rows > 0 {
                emit.info(format!(
                    "stream {label}: new tensor {t} (schema change), {rows} earlier rows are null"
                ));
            }
        }
        let index = if sc.mode == Mode::Dedup {
            Some(load_index(&ds, &target(schema::PK), &label).await?)
        } else {
            None
        };
        let staged_rows = if staging { rows } else { 0 };
        let visible = if existing.iter().any(|n| n == schema::RAW_ID) {
            len_of(&ds, schema::RAW_ID)
        } else {
            ds.len()
        };
        // Only another attempt of the same sync can send committed states again; a new
        // sync may well send the same state (a full refresh, say) with new records.
        let stored = airbyte_info(&ds);
        let same_sync =
            sc.sync_id.is_some() && stored.get("sync_id").and_then(Value::as_i64) == sc.sync_id;
        let replay: Vec<(Value, Option<u64>)> = match stored.get("states") {
            Some(Value::Array(v)) if same_sync => v
                .iter()
                .map(|st| (state_identity(st), record_count(st)))
                .collect(),
            _ => Vec::new(),
        };
        // Which tensors take their rows in stored form, from what they hold now.
        let packs: Vec<Option<Pack>> = tensors
            .iter()
            .map(|(name, src)| {
                let meta = ds.tensor_meta(&target(name)).ok()?;
                if meta.is_link || meta.sample_compression.is_some() {
                    return None;
                }
                Pack::for_tensor(src, &cols, &meta.htype, meta.dtype.as_deref())
            })
            .collect();
        let mut w = StreamWriter {
            packs: Arc::new(packs),
            replay,
            url,
            cols: Arc::new(cols),
            tensors: Arc::new(tensors),
            ds,
            staging,
            rows,
            stored: rows,
            batch: Vec::new(),
            updates: BTreeMap::new(),
            index,
            changed: false,
            acked: (visible, staged_rows),
            fallback: (visible, staged_rows),
            complete: false,
            since_state: 0,
            rejected_since_state: 0,
            total: 0,
            rejected_total: 0,
            batch_size: cfg.batch_size,
            verify: cfg.links.verify.then(|| LinkCheck {
                storage: cfg.storage.clone(),
                seen: HashMap::new(),
                warned_http: false,
                emit: emit.clone(),
            }),
            cfg: sc,
            emit: emit.clone(),
        };
        // Schema changes and dropped staging become visible now, committed by themselves.
        w.flush(None, &[]).await?;
        Ok(w)
    }

    pub fn target(&self, name: &str) -> String {
        if self.staging {
            staged(name)
        } else {
            name.to_owned()
        }
    }

    /// Takes one record; a full batch is written to the dataset.
    pub async fn push(&mut self, rec: RecordIn) -> Result<()> {
        self.since_state += 1;
        self.total += 1;
        self.changed = true;
        if let (Some(index), Some(pk)) = (self.index.as_mut(), rec.pk.as_ref()) {
            if let Some(&row) = index.get(pk) {
                if row >= self.stored {
                    let i = (row - self.stored) as usize;
                    if let Some(slot) = self.batch.get_mut(i) {
                        *slot = rec;
                    }
                } else {
                    self.updates.insert(row, rec);
                }
            } else {
                index.insert(pk.clone(), self.rows);
                self.batch.push(rec);
                self.rows += 1;
            }
        } else {
            self.batch.push(rec);
            self.rows += 1;
        }
        if self.batch.len() + self.updates.len() >= self.batch_size {
            self.write_batch().await?;
        }
        Ok(())
    }

    pub fn reject(&mut self) {
        self.rejected_since_state += 1;
        self.rejected_total += 1;
    }

    fn row_meta(&self) -> RowMeta {
        RowMeta {
            generation_id: self.cfg.generation_id,
            sync_id: self.cfg.sync_id,
        }
    }

    /// With `links.verify`: a link whose target is missing is stored as null and
    /// reported in `_airbyte_meta.changes`.
    async fn verify_links(&mut self) {
        let Some(check) = self.verify.as_mut() else {
            return;
        };
        let links: Vec<usize> = (0..self.cols.len())
            .filter(|&i| self.cols[i].kind == Kind::Link)
            .collect();
        if links.is_empty() {
            return;
        }
        for rec in self.batch.iter_mut().chain(self.updates.values_mut()) {
            for &ci in &links {
                let Some(schema::Cell::Text(url)) = rec.cells.get(ci) else {
                    continue;
                };
                if check.exists(url).await == Some(false) {
                    rec.cells[ci] = schema::Cell::Null;
                    rec.changes
                        .push(json!({"field": self.cols[ci].field, "change": "NULLED",
                        "reason": "DESTINATION_SERIALIZATION_ERROR"}));
                }
            }
        }
    }

    /// Hands buffered rows and updates to the dataset (not yet durable).
    pub async fn write_batch(&mut self) -> Result<()> {
        let label = self.cfg.label();
        self.verify_links().await;
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            let (cols, tensors, rm) = (self.cols.clone(), self.tensors.clone(), self.row_meta());
            let packs = self.packs.clone();
            let columns = deeplake_core::runtime::spawn_cpu(move || {
                let rows: Vec<&RecordIn> = batch.iter().collect();
                Ok(batch::columns(&cols, &tensors, Some(&packs), &rows, rm))
            })
            .await
            .ctx("encoding a batch")?;
            for ((name, _), column) in self.tensors.clone().iter().zip(columns) {
                let t = self.target(name);
                match column {
                    ColumnOut::Samples(samples) => self.ds.extend(&t, samples).await,
                    ColumnOut::Packed(rows) => self.ds.extend_packed(&t, rows).await,
                }
                .ctx(format!("writing tensor {t} of stream {label}"))?;
            }
            self.stored = self.rows;
        }
        if !self.updates.is_empty() {
            let updates = std::mem::take(&mut self.updates);
            let rows: Vec<&RecordIn> = updates.values().collect();
            let columns = batch::columns(&self.cols, &self.tensors, None, &rows, self.row_meta());
            let at: Vec<u64> = updates.keys().copied().collect();
            for ((name, _), column) in self.tensors.clone().iter().zip(columns) {
                let t = self.target(name);
                let ColumnOut::Samples(samples) = column else {
                    continue;
                };
                for (row, s) in at.iter().zip(samples) {
                    self.ds.update(&t, *row, s).await.ctx(format!(
                        "updating row {row} of tensor {t} of stream {label}"
                    ))?;
                }
            }
        }
        Ok(())
    }

    /// Whether `state` (as [`state_identity`] gives it) is one the dataset already
    /// committed: the records before it, since the previous state, are a replay.
    /// `received` is how many records came before it since the previous state (of its
    /// scope): a replay covers the same records as the original.
    pub fn is_replay(&self, state: &Value, received: u64) -> bool {
        self.replay
            .iter()
            .any(|(s, c)| s == state && c.is_none_or(|c| c == received))
    }

    /// `state` came: it cannot come again, and when it is not a replay, the source has
    /// moved past every state this dataset committed, so none of them can either.
    pub fn state_seen(&mut self, state: &Value, replayed: bool) {
        if replayed {
            if let Some(i) = self.replay.iter().position(|(s, _)| s == state) {
                self.replay.remove(i);
            }
        } else {
            self.replay.clear();
        }
    }

    /// Drops the rows taken since the last state: they are a replay of rows the last
    /// attempt committed but whose state it died before echoing. Returns how many.
    /// Dedup streams keep them: a replay there rewrites the same keys with the same
    /// values, so it is already idempotent.
    pub async fn drop_replayed(&mut self) -> Result<u64> {
        if self.index.is_some() {
            return Ok(0);
        }
        let keep = if self.staging {
            self.acked.1
        } else {
            self.acked.0
        };
        if self.rows <= keep {
            return Ok(0);
        }
        let dropped = self.rows - keep;
        let buffered = (self.rows - self.stored) as usize;
        let from_batch = buffered.min(dropped as usize);
        self.batch
            .truncate(self.batch.len().saturating_sub(from_batch));
        if self.stored > keep {
            let label = self.cfg.label();
            if self.staging {
                for (name, _) in self.tensors.clone().iter() {
                    let t = self.target(name);
                    self.ds.truncate_tensor(&t, keep).await.ctx(format!(
                        "dropping replayed rows of staged tensor {t} of stream {label}"
                    ))?;
                }
            } else {
                self.ds
                    .truncate(keep)
                    .await
                    .ctx(format!("dropping replayed rows of stream {label}"))?;
            }
            self.stored = keep;
        }
        self.rows = keep;
        self.total = self.total.saturating_sub(dropped);
        Ok(dropped)
    }

    /// A STATE covering this stream arrived: every row so far is vouched for once the
    /// state is committed. (End of input vouches for everything too.)
    pub fn state_received(&mut self) {
        self.acked = (self.visible_rows(), self.staged_rows());
    }

    fn visible_rows(&self) -> u64 {
        if self.staging {
            self.ds.tensor_len(schema::RAW_ID).unwrap_or(0)
        } else {
            self.rows
        }
    }

    fn staged_rows(&self) -> u64 {
        if self.staging { self.rows } else { 0 }
    }

    /// Makes everything written durable and visible in one flush record, with the
    /// `airbyte` info entry naming `pending` (the commit record that will vouch for
    /// it) and the states it acknowledges.
    pub async fn flush(&mut self, pending: Option<&str>, states: &[Value]) -> Result<()> {
        self.write_batch().await?;
        let info = json!({
            "stream": {"name": self.cfg.key.1, "namespace": self.cfg.key.0},
            "pending_commit": pending,
            "rows": self.visible_rows(),
            "staged_rows": self.staged_rows(),
            "acked": {"rows": self.acked.0, "staged_rows": self.acked.1},
            "fallback": {"rows": self.fallback.0, "staged_rows": self.fallback.1},
            "staging": if self.staging {
                json!({"generation_id": self.cfg.generation_id, "sync_id": self.cfg.sync_id,
                       "minimum_generation_id": self.cfg.minimum_generation_id})
            } else { Value::Null },
            "generation_id": if self.staging {
                airbyte_info(&self.ds).get("generation_id").cloned().unwrap_or(Value::Null)
            } else { json!(self.cfg.generation_id) },
            // States that may still come again (see `replay`) stay recorded until they do.
            "states": states.iter().cloned().chain(self.replay.iter().map(|(s, c)| {
                let mut st = s.clone();
                if let (Some(c), Some(m)) = (c, st.as_object_mut()) {
                    m.insert("destinationStats".into(), json!({"recordCount": *c as f64}));
                }
                st
            })).collect::<Vec<_>>(),
            "sync_id": self.cfg.sync_id,
        });
        let label = self.cfg.label();
        self.ds
            .set_info("airbyte", info)
            .await
            .ctx(format!("recording the state of stream {label}"))?;
        self.ds
            .flush()
            .await
            .ctx(format!("flushing the dataset of stream {label}"))
    }

    /// The commit record the dataset's newest flush names, if any.
    pub fn pending_commit(&self) -> Option<String> {
        airbyte_info(&self.ds)
            .get("pending_commit")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The flush is committed: it becomes the state a later crash falls back to.
    pub fn committed(&mut self) {
        self.fallback = self.acked;
        self.changed = false;
    }

    /// Swaps the staged tensors in for the visible ones, in one flush.
    pub async fn swap_in(&mut self) -> Result<()> {
        if !self.staging {
            return Ok(());
        }
        let label = self.cfg.label();
        self.write_batch().await?;
        let keep: Vec<String> = self.tensors.iter().map(|(n, _)| n.clone()).collect();
        for n in self.ds.tensor_names() {
            if !keep.contains(&n) {
                self.ds
                    .unlink_tensor(&n)
                    .await
                    .ctx(format!("removing old tensor {n} of stream {label}"))?;
            }
        }
        for n in &keep {
            self.ds
                .replace_tensor(n, &staged(n))
                .await
                .ctx(format!("swapping in tensor {n} of stream {label}"))?;
        }
        self.staging = false;
        self.stored = self.rows;
        self.state_received();
        self.flush(None, &[]).await?;
        self.committed();
        self.emit.info(format!(
            "stream {label}: the new data ({} rows) replaced the old in one flush",
            self.rows
        ));
        Ok(())
    }
}

fn is_companion(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.starts_with('_')
        && ["_id", "_shape", "_info"]
            .iter()
            .any(|s| base.ends_with(s) && base.len() > s.len() + 1)
        && !base.starts_with(schema::STAGED_PREFIX)
}

/// Every tensor name of the dataset, hidden ones included.
fn all_names(ds: &Dataset) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for n in ds.tensor_names() {
        v.push(n);
    }
    v.extend(ds.hidden_tensor_names());
    v
}

fn tensor_options(cols: &[Column], src: &Source, cfg: &Config) -> TensorOptions {
    use deeplake_core::Dtype;
    match src {
        Source::Field(ci) => {
            let c = &cols[*ci];
            let mut o = TensorOptions::new(c.htype.clone());
            if let Some(d) = c.dtype {
                o = o.dtype(d);
            }
            if let Some(sc) = &c.sample_compression {
                o = o.sample_compression(sc.clone());
            }
            if let Some(cc) = &c.chunk_compression {
                o = o.chunk_compression(cc.clone());
            }
            if !c.class_names.is_empty() {
                o = o.class_names(c.class_names.clone());
            }
            o.info = c.info.clone();
            o
        }
        Source::Timestamp(_) => with_cc(TensorOptions::new("generic").dtype(Dtype::I64), cfg),
        Source::Meta(m) => {
            let o = match m {
                MetaTensor::RawId | MetaTensor::Pk => TensorOptions::new("text"),
                MetaTensor::ExtractedAt | MetaTensor::GenerationId => {
                    TensorOptions::new("generic").dtype(Dtype::I64)
                }
                MetaTensor::Meta => TensorOptions::new("json"),
            };
            with_cc(o, cfg)
        }
    }
}

fn with_cc(o: TensorOptions, cfg: &Config) -> TensorOptions {
    match &cfg.chunk_compression {
        Some(c) => o.chunk_compression(c.clone()),
        None => o,
    }
}

/// Loads the persistent key index of an append_dedup stream: canonical key -> row.
async fn load_index(ds: &Dataset, tensor: &str, label: &str) -> Result<HashMap<String, u64>> {
    let n = ds.tensor_len(tensor).unwrap_or(0);
    let mut index = HashMap::with_capacity(n as usize);
    let step = 65_536u64;
    let mut start = 0;
    while start < n {
        let end = (start + step).min(n);
        let samples = ds
            .read_range(tensor, start..end)
            .await
            .ctx(format!("reading the key index of stream {label}"))?;
        for (i, s) in samples.into_iter().enumerate() {
            if let Sample::Text(k) = s {
                index.insert(k, start + i as u64);
            }
        }
        start = end;
    }
    Ok(index)
}

/// Undoes a flush whose commit record never came to exist (a crash between the
/// datasets' flushes and the record that commits them together).
async fn repair(ds: &mut Dataset, sidecar: &Sidecar, label: &str, emit: &Emit) -> Result<()> {
    let info = airbyte_info(ds);
    if info.is_null() {
        return Ok(());
    }
    let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    let flushed = (
        get(&info, "rows").unwrap_or(0),
        get(&info, "staged_rows").unwrap_or(0),
    );
    // Which rows are vouched for: those of the last acknowledged state of this flush,
    // or of the flush before it when this one's commit record never came to exist.
    let (vouched, why, fell_back) = match info.get("pending_commit").and_then(Value::as_str) {
        Some(id) if !sidecar.exists(id).await.ctx("reading the commit records")? => (
            info.get("fallback").cloned().unwrap_or(Value::Null),
            format!("its commit record {id} was never written"),
            true,
        ),
        _ => (
            info.get("acked").cloned().unwrap_or(Value::Null),
            "rows after its last acknowledged state".to_owned(),
            false,
        ),
    };
    let rows = get(&vouched, "rows").unwrap_or(flushed.0).min(flushed.0);
    let staged_rows = get(&vouched, "staged_rows")
        .unwrap_or(flushed.1)
        .min(flushed.1);
    if (rows, staged_rows) == flushed && info.get("pending_commit").is_none_or(Value::is_null) {
        return Ok(());
    }
    ds.truncate(rows)
        .await
        .ctx(format!("rolling back stream {label}"))?;
    for n in ds.hidden_tensor_names() {
        if n.starts_with(schema::STAGED_PREFIX) && !is_companion(&n) {
            ds.truncate_tensor(&n, staged_rows)
                .await
                .ctx(format!("rolling back staged tensor {n} of stream {label}"))?;
        }
    }
    let mut restored = info.clone();
    if let Some(m) = restored.as_object_mut() {
        let counts = json!({"rows": rows, "staged_rows": staged_rows});
        m.insert("pending_commit".into(), Value::Null);
        m.insert("rows".into(), json!(rows));
        m.insert("staged_rows".into(), json!(staged_rows));
        m.insert("acked".into(), counts.clone());
        m.insert("fallback".into(), counts);
        // Rolled back to the flush before: its states were echoed before this flush
        // began, so none of them can come again. Cut back to the last acknowledged
        // state instead: this flush's states stand, and may come again.
        if fell_back {
            m.insert("states".into(), json!([]));
        }
    }
    ds.set_info("airbyte", restored)
        .await
        .ctx(format!("rolling back stream {label}"))?;
    ds.flush()
        .await
        .ctx(format!("rolling back stream {label}"))?;
    if (rows, staged_rows) != flushed {
        emit.warn(format!(
            "stream {label}: the last attempt stopped with rows no acknowledged state covers \
             ({why}); rolled back to {rows} rows (was {}), staged {staged_rows} (was {})",
            flushed.0, flushed.1
        ));
    }
    Ok(())
}

/// The tensors a stream writes, in order, and where each takes its values: per column
/// its tensor (and its timestamp companion), then the Airbyte meta tensors, then the
/// primary key in dedup mode.
pub fn tensor_sources(cols: &[schema::Column], mode: Mode) -> Vec<(String, Source)> {
    let mut tensors: Vec<(String, Source)> = Vec::new();
    for (ci, c) in cols.iter().enumerate() {
        tensors.push((c.tensor.clone(), Source::Field(ci)));
        if let Some(t) = &c.ts_tensor {
            tensors.push((t.clone(), Source::Timestamp(ci)));
        }
    }
    for (name, m) in [
        (schema::RAW_ID, MetaTensor::RawId),
        (schema::EXTRACTED_AT, MetaTensor::ExtractedAt),
        (schema::GENERATION_ID, MetaTensor::GenerationId),
        (schema::META, MetaTensor::Meta),
    ] {
        tensors.push((name.to_owned(), Source::Meta(m)));
    }
    if mode == Mode::Dedup {
        tensors.push((schema::PK.to_owned(), Source::Meta(MetaTensor::Pk)));
    }
    tensors
}
