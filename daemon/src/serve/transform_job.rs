//! The `transform` job: the one writer of a transform whose rows are computed by
//! clients (the Python `compute` workers, Ray tasks) and sent here in numbered parts.
//!
//! ```text
//! POST /datasets/{name}/transforms {job, functions, ...}
//!   -> core's transform::Staging opened (or resumed: `parts_done`), a job queued
//! POST .../transforms/{job}/parts/{k}   (any order, any worker; body decoded here)
//!   -> the writer appends parts in index order: part k, then k+1, ...; a checkpoint
//!      (ONE flush of the parts staged so far with the marker {parts, input_rows,
//!      output_rows}) follows at most every second, and before the writer stops
//! POST .../transforms/{job}/commit {parts: N}
//!   -> once parts 0..N landed: published as one commit (fast-forward, or a merge if
//!      the branch moved); the job's result names the commit
//! DELETE .../transforms/{job}  -> the staging branch is deleted; nothing is visible
//! ```
//!
//! Parts arriving ahead of their turn wait in memory; a part already written (a
//! retried request) is dropped. A client that dies leaves its session waiting; a
//! `begin` of the same job takes the session over (the old writer stops, its staged
//! parts stay) and answers which parts are already durable, so a re-run sends only the
//! rest. Progress on the job counts parts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use deeplake_core::Sample;
use deeplake_core::transform::{DEFAULT_CHECKPOINT_EVERY, Staging, commit_message};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::arrow::{self, ColumnSpec};
use super::auth::Scope;
use super::error::ApiError;
use super::jobs::{JobContext, JobFuture, JobKind, JobRun, JobState};
use super::state::{AppState, DatasetName};

/// Parts queued to the writer before senders wait.
const QUEUE: usize = 16;

type Columns = Vec<(String, Vec<Sample>)>;

pub enum Msg {
    Part {
        index: u64,
        input_rows: u64,
        columns: Columns,
    },
    Commit {
        parts: u64,
    },
    Abort {
        discard: bool,
    },
}

/// An open transform of one dataset.
pub struct Session {
    pub job_id: String,
    pub staging: String,
    pub parts_done: u64,
    pub specs: Arc<HashMap<String, ColumnSpec>>,
    pub tx: mpsc::Sender<Msg>,
}

/// Open sessions by `<dataset url>#<job>`.
static SESSIONS: LazyLock<Mutex<HashMap<String, Arc<Session>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn sessions() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Session>>> {
    SESSIONS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn key(state: &AppState, name: &DatasetName, job: &str) -> String {
    format!("{}#{job}", state.url(name))
}

pub fn session(state: &AppState, name: &DatasetName, job: &str) -> Result<Arc<Session>, ApiError> {
    sessions()
        .get(&key(state, name, job))
        .cloned()
        .ok_or_else(|| {
            ApiError::from(deeplake_core::Error::not_found(
                "transform",
                format!(
                    "{job} (start it with POST /datasets/{}/transforms)",
                    name.as_str()
                ),
            ))
        })
}

/// What `begin` is told.
pub struct Begin {
    pub job: String,
    pub functions: Vec<String>,
    pub branch: Option<deeplake_core::ids::BranchName>,
    pub source: Option<String>,
    pub source_commit: Option<String>,
    pub parts: Option<u64>,
}

/// What `begin` answers: the job watching the writer and where to resume.
pub struct Begun {
    pub job_id: String,
    pub staging: String,
    pub parts_done: u64,
    pub input_rows: u64,
    pub output_rows: u64,
}

pub fn check_job_name(job: &str) -> Result<(), ApiError> {
    let ok = !job.is_empty()
        && job.len() <= 64
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "job {job:?}: 1 to 64 characters of [A-Za-z0-9_.-]"
        )))
    }
}

/// Opens (or resumes) the staging branch and queues its writer as a job.
pub async fn begin(state: &AppState, name: &DatasetName, b: Begin) -> Result<Begun, ApiError> {
    check_job_name(&b.job)?;
    if b.functions.is_empty() {
        return Err(ApiError::bad_request("name at least one function"));
    }
    let k = key(state, name, &b.job);
    let old = sessions().remove(&k);
    if let Some(old) = old {
        // A client that died left this writer waiting: stop it (its staged parts stay)
        // and wait until it let go of the branch.
        let _ = old.tx.send(Msg::Abort { discard: false }).await;
        let started = Instant::now();
        while state.jobs().get(&old.job_id).is_some_and(|j| {
            !matches!(
                j.info().state,
                JobState::Succeeded | JobState::Failed | JobState::Cancelled
            )
        }) {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "conflict",
                    format!("the earlier writer of transform {} did not stop", b.job),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut o = state.open_options();
    o.branch = b.branch.clone();
    let staging = Staging::open(&state.url(name), &o, &b.job, &[]).await?;
    let tensors = staging.ds.tensor_names();
    if tensors.is_empty() {
        return Err(ApiError::bad_request(
            "the dataset has no tensors: create the tensors the functions write first",
        ));
    }
    let specs: HashMap<String, ColumnSpec> = tensors
        .iter()
        .map(|t| arrow::column_spec(&staging.ds, t, false).map(|s| (t.clone(), s)))
        .collect::<Result<_, _>>()?;
    let begun = Begun {
        job_id: String::new(),
        staging: staging.branch.clone(),
        parts_done: staging.resumed_count("parts"),
        input_rows: staging.resumed_count("input_rows"),
        output_rows: staging.resumed_count("output_rows"),
    };
    let mut identity = Map::new();
    identity.insert("job".into(), json!(b.job));
    identity.insert("fingerprint".into(), json!(b.job));
    identity.insert("functions".into(), json!(b.functions));
    if let Some(s) = &b.source {
        identity.insert("source".into(), json!(s));
    }
    if let Some(c) = &b.source_commit {
        identity.insert("source_commit".into(), json!(c));
    }
    identity.insert(
        "target_branch".into(),
        json!(b.branch.as_ref().map_or("main", |b| b.as_str())),
    );
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer {
        staging,
        rx,
        identity,
        next: begun.parts_done,
        input_rows: begun.input_rows,
        output_rows: begun.output_rows,
        expected: b.parts,
        key: k.clone(),
    };
    let mut params = Map::new();
    params.insert("job".into(), json!(b.job));
    params.insert("functions".into(), json!(b.functions));
    let run: JobRun = Box::new(move |ctx: JobContext| -> JobFuture { Box::pin(writer.run(ctx)) });
    let job = state
        .jobs()
        .submit(state, &TransformJob, name.clone(), params, run)?;
    let session = Arc::new(Session {
        job_id: job.id().to_owned(),
        staging: begun.staging.clone(),
        parts_done: begun.parts_done,
        specs: Arc::new(specs),
        tx,
    });
    sessions().insert(k, session);
    state.invalidate(name);
    Ok(Begun {
        job_id: job.id().to_owned(),
        ..begun
    })
}

/// Decodes a part's body (an Arrow IPC stream; empty: no rows) into full columns.
pub fn decode_part(
    body: &[u8],
    json: bool,
    specs: &HashMap<String, ColumnSpec>,
) -> Result<Vec<(String, Vec<Sample>)>, ApiError> {
    let mut names: Vec<&String> = specs.keys().collect();
    names.sort();
    if body.is_empty() {
        return Ok(names.into_iter().map(|n| (n.clone(), Vec::new())).collect());
    }
    let mut cols = if json {
        crate::serve::routes::append::json_columns(body, specs)?
    } else {
        arrow::decode(body, specs)?
    };
    let rows = cols.first().map_or(0, |(_, c)| c.len());
    for n in names {
        match cols.iter().find(|(t, _)| t == n) {
            None if rows == 0 => cols.push((n.clone(), Vec::new())),
            None => {
                return Err(ApiError::bad_request(format!(
                    "tensor {n:?}: every output row needs a sample for it"
                )));
            }
            Some((_, c)) if c.len() != rows => {
                return Err(ApiError::bad_request(format!(
                    "tensor {n:?}: the column has {} rows, the part has {rows}",
                    c.len()
                )));
            }
            Some(_) => {}
        }
    }
    Ok(cols)
}

struct Writer {
    staging: Staging,
    rx: mpsc::Receiver<Msg>,
    identity: Map<String, Value>,
    next: u64,
    input_rows: u64,
    output_rows: u64,
    expected: Option<u64>,
    key: String,
}

impl Writer {
    async fn run(self, ctx: JobContext) -> Result<Value, ApiError> {
        let key = self.key.clone();
        let out = self.write(ctx).await;
        // This writer's session goes, unless a newer one replaced it.
        let mut s = sessions();
        if let Some(cur) = s.get(&key)
            && cur.tx.is_closed()
        {
            s.remove(&key);
        }
        drop(s);
        out
    }

    async fn write(mut self, ctx: JobContext) -> Result<Value, ApiError> {
        let ctl = ctx.control;
        if let Some(n) = self.expected {
            ctl.start_stage(n);
            ctl.advance(self.next);
        }
        // Parts ahead of their turn: index -> (input rows, columns).
        let mut pending: BTreeMap<u64, (u64, Columns)> = BTreeMap::new();
        // The marker of parts staged since the last checkpoint, if any.
        let mut staged: Option<Map<String, Value>> = None;
        let mut last_checkpoint = Instant::now();
        let mut parts: Option<u64> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                m = self.rx.recv() => match m {
                    None => {
                        self.checkpoint(&mut staged).await?;
                        return Ok(self.report(None, false, true));
                    }
                    Some(Msg::Part { index, input_rows, columns }) => {
                        if index >= self.next {
                            pending.insert(index, (input_rows, columns));
                        }
                    }
                    Some(Msg::Commit { parts: n }) => {
                        if n < self.next {
                            return Err(ApiError::bad_request(format!(
                                "{n} parts were announced, but {} are written", self.next
                            )));
                        }
                        parts = Some(n);
                        if ctl.progress().1 != n {
                            ctl.start_stage(n);
                            ctl.advance(self.next);
                        }
                    }
                    Some(Msg::Abort { discard }) => {
                        self.rx.close();
                        if discard {
                            self.staging.discard().await?;
                            ctx.state.invalidate(&ctx.dataset);
                            return Ok(json!({"discarded": true}));
                        }
                        // A writer taken over leaves its parts durable for the next.
                        self.checkpoint(&mut staged).await?;
                        return Ok(self.report(None, false, true));
                    }
                },
                _ = tick.tick() => {}
            }
            while let Some((input_rows, columns)) = pending.remove(&self.next) {
                let rows = columns.first().map_or(0, |c| c.1.len()) as u64;
                let mut marker = self.identity.clone();
                marker.insert("parts".into(), json!(self.next + 1));
                marker.insert("input_rows".into(), json!(self.input_rows + input_rows));
                marker.insert("output_rows".into(), json!(self.output_rows + rows));
                self.staging.stage(columns).await?;
                staged = Some(marker);
                self.next += 1;
                self.input_rows += input_rows;
                self.output_rows += rows;
                ctl.advance(1);
            }
            if staged.is_some() && last_checkpoint.elapsed() >= DEFAULT_CHECKPOINT_EVERY {
                self.checkpoint(&mut staged).await?;
                last_checkpoint = Instant::now();
            }
            if let Some(n) = parts
                && self.next >= n
            {
                break;
            }
            if ctl.is_cancelled() {
                self.rx.close();
                self.checkpoint(&mut staged).await?;
                return Ok(self.report(None, false, true));
            }
        }
        self.rx.close();
        self.checkpoint(&mut staged).await?;
        let mut lineage = self.identity.clone();
        lineage.insert("parts".into(), json!(self.next));
        lineage.insert("input_rows".into(), json!(self.input_rows));
        lineage.insert("output_rows".into(), json!(self.output_rows));
        let functions: Vec<&str> = self
            .identity
            .get("functions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let message = commit_message(
            &functions,
            &self.identity,
            self.input_rows,
            self.output_rows,
        );
        let staging_branch = self.staging.branch.clone();
        let (input_rows, output_rows, parts) = (self.input_rows, self.output_rows, self.next);
        let (commit, fast_forward) = self.staging.publish(lineage, &message).await?;
        ctx.state.invalidate(&ctx.dataset);
        Ok(json!({
            "commit": commit,
            "fast_forward": fast_forward,
            "parts": parts,
            "input_rows": input_rows,
            "output_rows": output_rows,
            "staging_branch": staging_branch,
            "cancelled": false,
        }))
    }

    /// Makes the staged parts durable with their marker, if any are waiting.
    async fn checkpoint(
        &mut self,
        staged: &mut Option<Map<String, Value>>,
    ) -> Result<(), ApiError> {
        if let Some(marker) = staged.take() {
            self.staging.checkpoint(marker).await?;
        }
        Ok(())
    }

    fn report(&self, commit: Option<String>, fast_forward: bool, cancelled: bool) -> Value {
        json!({
            "commit": commit,
            "fast_forward": fast_forward,
            "parts": self.next,
            "input_rows": self.input_rows,
            "output_rows": self.output_rows,
            "staging_branch": self.staging.branch,
            "cancelled": cancelled,
        })
    }
}

/// Transform jobs start with `POST /datasets/{name}/transforms`, not the jobs route.
pub struct TransformJob;

impl JobKind for TransformJob {
    fn name(&self) -> &'static str {
        "transform"
    }

    fn scope(&self) -> Scope {
        Scope::Write
    }

    fn prepare(&self, _params: &Map<String, Value>) -> Result<JobRun, ApiError> {
        Err(ApiError::bad_request(
            "a transform starts with POST /datasets/{name}/transforms",
        ))
    }
}
