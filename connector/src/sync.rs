//! `write`: the sync loop, and the commit points that make STATE echoes exact.
//!
//! ```text
//! RECORD -> its stream's batch -> dataset (chunks written as they fill; not visible)
//! STATE  -> stats computed, queued as pending
//! commit point (records since the last one >= flush_records, or the flush interval
//! passed, with a state pending; and at end of input):
//!     every changed dataset: set info (states, pending commit id) + flush (one record)
//!     two or more changed: create sidecar record <commit id> (the commit)
//!     echo the pending states, in order
//!     per_state: version-commit the changed datasets
//! end of input: commit point; swap staged data of finished truncating streams in;
//!     per_sync: version-commit every changed dataset
//! ```
//!
//! A STATE is echoed only after every record before it is durable and committed
//! together with the state. A crash after some datasets flushed but before their
//! shared sidecar record exists is undone at the next start (see `stream`), so a retry
//! that replays records after the last echoed state stores each of them once.
//! A crash after the commit but before the echo makes the platform send the committed
//! states again with their records; each dataset remembers the states it committed
//! until they come again, and the records before such a state are not stored twice.
//!
//! `DESTINATION_DEEPLAKE_CRASH_BEFORE_ECHO=N` aborts the process at its Nth commit
//! point, after the commit and before the echo: the crash tests use it to hit that
//! window every time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use deeplake_core::store::{Sidecar, Store};
use serde_json::{Value, json};

use crate::config::{Commits, Config};
use crate::error::{CoreContext, Failure, Result};
use crate::input::{self, Parsed, Route, Router};
use crate::protocol::{self, Emit, StateScope, StreamKey};
use crate::schema;
use crate::stream::{self, Mode, StreamConfig, StreamWriter};

/// Aborts at the commit point the crash-test hook names (see the module doc).
fn crash_point() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    let at = std::env::var("DESTINATION_DEEPLAKE_CRASH_BEFORE_ECHO")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if at == Some(n) {
        std::process::abort();
    }
}

/// The sidecar log of commit records under the destination root.
pub const COMMIT_LOG: &str = "airbyte-commits";

/// Parses the configured catalog.
pub fn parse_catalog(raw: &Value) -> Result<Vec<StreamConfig>> {
    let raw = protocol::drop_nulls(raw.clone());
    let streams = raw
        .get("streams")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::config("the catalog has no streams list"))?;
    let mut out = Vec::new();
    for (i, cs) in streams.iter().enumerate() {
        let st = cs
            .get("stream")
            .ok_or_else(|| Failure::config(format!("catalog stream {i} has no stream")))?;
        let name = st
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Failure::config(format!("catalog stream {i} has no name")))?
            .to_owned();
        let namespace = st
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mode = match cs
            .get("destination_sync_mode")
            .and_then(Value::as_str)
            .unwrap_or("append")
        {
            "append" => Mode::Append,
            "overwrite" => Mode::Overwrite,
            "append_dedup" | "overwrite_dedup" => Mode::Dedup,
            other => {
                return Err(Failure::config(format!(
                    "stream {name}: destination_sync_mode {other:?} is not supported (append, overwrite, append_dedup)"
                )));
            }
        };
        let primary_key: Vec<Vec<String>> = cs
            .get("primary_key")
            .or_else(|| st.get("source_defined_primary_key"))
            .and_then(Value::as_array)
            .map(|paths| {
                paths
                    .iter()
                    .filter_map(|p| {
                        p.as_array().map(|parts| {
                            parts
                                .iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                    })
                    .filter(|p: &Vec<String>| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if mode == Mode::Dedup && primary_key.is_empty() {
            return Err(Failure::config(format!(
                "stream {name}: append_dedup needs a primary_key"
            )));
        }
        let int = |k: &str| cs.get(k).and_then(Value::as_i64);
        let sc = StreamConfig {
            key: (namespace, name),
            schema: st.get("json_schema").cloned().unwrap_or(json!({})),
            mode,
            primary_key,
            generation_id: int("generation_id"),
            minimum_generation_id: int("minimum_generation_id"),
            sync_id: int("sync_id"),
        };
        if out.iter().any(|o: &StreamConfig| o.key == sc.key) {
            return Err(Failure::config(format!(
                "stream {} is configured twice",
                sc.label()
            )));
        }
        out.push(sc);
    }
    Ok(out)
}

/// The destination root's store (where the commit records live).
pub fn root_store(cfg: &Config) -> Result<Store> {
    Store::create(&cfg.root, &cfg.storage).ctx(format!("opening {}", cfg.root))
}

struct Sync {
    cfg: Config,
    writers: Vec<StreamWriter>,
    by_key: HashMap<StreamKey, usize>,
    sidecar: Sidecar,
    /// Echo messages waiting for the next commit point, in arrival order.
    pending: Vec<Value>,
    /// The state JSON each pending echo carries, by scope (for the dataset info).
    since_global: u64,
    rejected_global: u64,
    records_since_flush: u64,
    last_flush: Instant,
    created_records: Vec<String>,
    unknown: HashMap<StreamKey, u64>,
    bad_lines: u64,
    saw_status: bool,
    echoed: u64,
    emit: Emit,
}

/// Runs one sync: messages are read from `input` (stdin in the process), and every
/// message the sync sends (STATE echoes, logs) goes through `emit`. A failure is
/// returned, not sent: the caller reports it.
pub async fn write(
    cfg: Config,
    catalog: &Value,
    input: impl std::io::Read + Send + 'static,
    emit: Emit,
) -> Result<()> {
    let streams = parse_catalog(catalog)?;
    let store = root_store(&cfg)?;
    let sidecar = Sidecar::new(&store, COMMIT_LOG).ctx("opening the commit log")?;
    emit.info(format!(
        "deeplake destination: {} stream(s) -> {} (batch {} records, flush every {} records or {:.0} s, commits {})",
        streams.len(),
        cfg.root,
        cfg.batch_size,
        cfg.flush_records,
        cfg.flush_interval.as_secs_f64(),
        match cfg.commits {
            Commits::PerSync => "per sync",
            Commits::PerState => "per state",
        }
    ));
    let mut writers = Vec::new();
    for sc in streams {
        let w = StreamWriter::open(&cfg, sc, &sidecar, &emit).await?;
        emit.info(format!(
            "{} -> {} ({:?}{})",
            schema::describe(&w.cfg.label(), &w.cols),
            w.url,
            w.cfg.mode,
            if w.staging {
                ", truncating: new data is staged and swapped in at the end"
            } else {
                ""
            }
        ));
        writers.push(w);
    }
    let streams: HashMap<StreamKey, usize> = writers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.cfg.key.clone(), i))
        .collect();
    let routes = writers
        .iter()
        .map(|w| {
            Route::new(
                w.cols
                    .iter()
                    .map(|c| (c.field.clone(), c.kind.clone()))
                    .collect(),
                (w.cfg.mode == Mode::Dedup).then(|| w.cfg.primary_key.clone()),
            )
        })
        .collect();
    let router = Arc::new(Router::new(
        &streams,
        routes,
        cfg.links.url_prefixes.clone(),
    ));
    let mut s = Sync {
        by_key: streams,
        cfg,
        writers,
        sidecar,
        pending: Vec::new(),
        since_global: 0,
        rejected_global: 0,
        records_since_flush: 0,
        last_flush: Instant::now(),
        created_records: Vec::new(),
        unknown: HashMap::new(),
        bad_lines: 0,
        saw_status: false,
        echoed: 0,
        emit,
    };
    let mut rx = input::spawn(router, input);
    loop {
        let next = if s.pending.is_empty() {
            rx.recv().await
        } else {
            let left = s.cfg.flush_interval.saturating_sub(s.last_flush.elapsed());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    s.commit_point().await?;
                    continue;
                }
            }
        };
        let Some(block) = next else { break };
        // Checked per message: a block holds thousands of records, and `flush_records`
        // is a promise about how far apart durable points are.
        for p in block {
            let is_state = matches!(p, Parsed::State(_));
            s.handle(p).await?;
            if is_state
                && (s.records_since_flush >= s.cfg.flush_records
                    || s.last_flush.elapsed() >= s.cfg.flush_interval)
            {
                s.commit_point().await?;
            }
        }
    }
    s.finish().await
}

impl Sync {
    async fn handle(&mut self, p: Parsed) -> Result<()> {
        match p {
            Parsed::Record(rec) => {
                let w = &mut self.writers[rec.stream];
                w.push(*rec).await?;
                self.since_global += 1;
                self.records_since_flush += 1;
            }
            Parsed::Rejected { stream } => {
                let w = &mut self.writers[stream];
                w.reject();
                self.rejected_global += 1;
                if w.rejected_total <= 5 {
                    self.emit.warn(format!(
                        "stream {}: rejected a record whose data is not a JSON object",
                        w.cfg.label()
                    ));
                }
            }
            Parsed::Unknown { key } => {
                let n = self.unknown.entry(key.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    self.emit.warn(format!(
                        "skipping records of stream {}{} (not in the configured catalog)",
                        key.0.map(|n| format!("{n}.")).unwrap_or_default(),
                        key.1
                    ));
                }
            }
            Parsed::State(state) => self.state(state).await?,
            Parsed::Status { key, status } => {
                self.saw_status = true;
                if status == "COMPLETE"
                    && let Some(i) = self.find(&key)
                {
                    self.writers[i].complete = true;
                }
            }
            Parsed::Bad(preview) => {
                self.bad_lines += 1;
                if self.bad_lines <= 5 {
                    self.emit.warn(format!(
                        "skipping an input line that is not an Airbyte message: {preview}"
                    ));
                }
            }
            Parsed::Ignored => {}
        }
        Ok(())
    }

    fn find(&self, key: &StreamKey) -> Option<usize> {
        self.by_key.get(key).copied().or_else(|| {
            if key.0.is_some() {
                return None;
            }
            let mut hits = self.by_key.iter().filter(|((_, n), _)| *n == key.1);
            match (hits.next(), hits.next()) {
                (Some((_, i)), None) => Some(*i),
                _ => None,
            }
        })
    }

    async fn state(&mut self, state: Value) -> Result<()> {
        let (global, scope): (bool, Vec<usize>) = match protocol::state_scope(&state) {
            StateScope::Stream(key) => (false, self.find(&key).into_iter().collect()),
            StateScope::Global => (true, (0..self.writers.len()).collect()),
        };
        // Records since the previous state of this scope.
        let received = match (global, scope.first()) {
            (false, Some(&i)) => self.writers[i].since_state,
            (false, None) => 0,
            (true, _) => self.since_global,
        };
        // A state the datasets already committed comes again when the last attempt died
        // between that commit and the echo: the records before it are stored already.
        let id = stream::state_identity(&state);
        for &i in &scope {
            let w = &mut self.writers[i];
            let replayed = w.is_replay(&id, received);
            if replayed {
                let dropped = w.drop_replayed().await?;
                if dropped > 0 {
                    self.emit.info(format!(
                        "stream {}: {dropped} replayed records before an already committed state were stored by the last attempt; not stored again",
                        w.cfg.label()
                    ));
                }
            }
            w.state_seen(&id, replayed);
        }
        let rejected = if global {
            let r = self.rejected_global;
            self.since_global = 0;
            self.rejected_global = 0;
            r
        } else {
            scope
                .first()
                .map_or(0, |&i| self.writers[i].rejected_since_state)
        };
        for &i in &scope {
            let w = &mut self.writers[i];
            w.state_received();
            w.since_state = 0;
            w.rejected_since_state = 0;
        }
        self.pending
            .push(protocol::echo_state(state, received, rejected));
        Ok(())
    }

    /// Makes every record so far durable and committed, then echoes the pending states.
    async fn commit_point(&mut self) -> Result<()> {
        let states: Vec<Value> = self
            .pending
            .iter()
            .filter_map(|m| m.get("state").cloned())
            .collect();
        let changed: Vec<usize> = (0..self.writers.len())
            .filter(|&i| self.writers[i].changed)
            .collect();
        let record_id = (changed.len() >= 2).then(|| {
            format!(
                "{:013x}-{}",
                protocol::now_ms() as u64,
                hex::encode(rand::random::<[u8; 8]>())
            )
        });
        for &i in &changed {
            self.writers[i].flush(record_id.as_deref(), &states).await?;
        }
        if let Some(id) = &record_id {
            let body = json!({
                "datasets": changed.iter().map(|&i| self.writers[i].url.clone()).collect::<Vec<_>>(),
                "states": states,
                "time_ms": protocol::now_ms(),
            });
            self.sidecar
                .create(id, serde_json::to_vec(&body).unwrap_or_default())
                .await
                .ctx("creating the commit record")?;
            self.created_records.push(id.clone());
        }
        for &i in &changed {
            self.writers[i].committed();
        }
        crash_point();
        for m in self.pending.drain(..) {
            self.emit
                .message(&m)
                .map_err(|e| Failure::system(format!("sending a STATE message failed: {e}")))?;
            self.echoed += 1;
        }
        if self.cfg.commits == Commits::PerState {
            for &i in &changed {
                let w = &mut self.writers[i];
                if w.ds.has_changes() {
                    let label = w.cfg.label();
                    w.ds.commit(&format!("airbyte: state {}", self.echoed))
                        .await
                        .ctx(format!("committing the dataset of stream {label}"))?;
                }
            }
        }
        self.records_since_flush = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        // The source finished: records after its last state belong to the sync too.
        for w in &mut self.writers {
            w.state_received();
            w.changed |= w.total > 0;
        }
        self.commit_point().await?;
        for w in &mut self.writers {
            if w.staging {
                if w.complete || !self.saw_status {
                    w.swap_in().await?;
                } else {
                    self.emit.warn(format!(
                        "stream {}: not marked COMPLETE; its staged data stays aside and the old data stays visible",
                        w.cfg.label()
                    ));
                }
            }
        }
        for w in &mut self.writers {
            let label = w.cfg.label();
            if self.cfg.commits == Commits::PerSync && w.ds.has_changes() && w.total > 0 {
                w.ds.commit(&format!("airbyte sync: {} records", w.total))
                    .await
                    .ctx(format!("committing the dataset of stream {label}"))?;
            }
        }
        // Commit records of this run that no dataset names any more.
        let named: Vec<String> = self
            .writers
            .iter()
            .filter_map(|w| w.pending_commit())
            .collect();
        for id in &self.created_records {
            if !named.contains(id) {
                let _ = self.sidecar.delete(id).await;
            }
        }
        let mut summary: Vec<String> = self
            .writers
            .iter()
            .map(|w| {
                let mut s = format!("{}={}", w.cfg.label(), w.total);
                if w.rejected_total > 0 {
                    s.push_str(&format!(" (+{} rejected)", w.rejected_total));
                }
                s
            })
            .collect();
        let skipped: u64 = self.unknown.values().sum();
        if skipped > 0 {
            summary.push(format!(
                "{skipped} records of streams not in the catalog skipped"
            ));
        }
        for w in self.writers.drain(..) {
            let label = w.cfg.label();
            w.ds.close()
                .await
                .ctx(format!("closing the dataset of stream {label}"))?;
        }
        self.emit.info(format!(
            "deeplake destination: wrote {}; {} state(s) acknowledged",
            summary.join(", "),
            self.echoed
        ));
        Ok(())
    }
}
