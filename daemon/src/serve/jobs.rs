//! Background jobs: long operations on one dataset (gc now; materialize when core has
//! it) that a request starts and later requests watch or cancel.
//!
//! ```text
//! POST /datasets/{name}/jobs {"kind", ...params}
//!   -> JobKind::prepare (parameters checked, 400 before anything is queued)
//!   -> queued -> running (at most MAX_RUNNING at once) -> succeeded | failed | cancelled
//! ```
//!
//! A kind is a [`JobKind`] in the registry: its name, the scope it needs, and how it
//! turns parameters into a run. A run is a future on the tokio runtime; CPU-heavy
//! steps inside it belong on the blocking pool or rayon, as everywhere else. Progress
//! and cancellation go through `core::runtime::Control`, so core sees no HTTP type.
//!
//! Cancelling is cooperative: a queued job is cancelled before it starts; a running one
//! is asked to stop and stops at its next check (between steps), then reads
//! `cancelled`. At shutdown [`Jobs::shutdown`] refuses new jobs, waits for the running
//! ones up to a grace period, then cancels what is left and waits for it to stop.
//!
//! The registry keeps at most [`MAX_KEPT`] jobs; the oldest finished ones are dropped
//! first, and a new job is refused (503) while all kept jobs are unfinished.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use deeplake_core::runtime::Control;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Scope;
use super::error::{ApiError, ErrorDetail};
use super::state::{AppState, DatasetName};

/// Jobs running at once; the others wait in `queued`.
pub const MAX_RUNNING: usize = 2;
/// Jobs kept in the registry (finished ones stay visible until pushed out).
pub const MAX_KEPT: usize = 256;

/// What a run returns: its result as JSON, or an error in the API's shape.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>;

/// A prepared run: called once, when the job leaves the queue.
pub type JobRun = Box<dyn FnOnce(JobContext) -> JobFuture + Send>;

/// What a run gets: the server state, its dataset, and its progress/cancel handle.
pub struct JobContext {
    pub state: AppState,
    pub dataset: DatasetName,
    pub control: Arc<Control>,
}

/// One kind of job.
pub trait JobKind: Send + Sync + 'static {
    /// The `kind` clients name.
    fn name(&self) -> &'static str;
    /// The scope a caller needs on the dataset to start, see or cancel such a job.
    fn scope(&self) -> Scope;
    /// Checks the request's parameters (every field but `kind`) and returns the run.
    fn prepare(&self, params: &Map<String, Value>) -> Result<JobRun, ApiError>;
    /// Datasets other than the job's own that it writes (a materialization's target):
    /// starting the job needs [`JobKind::scope`] on them too.
    fn other_datasets(
        &self,
        params: &Map<String, Value>,
    ) -> Result<Vec<super::state::DatasetName>, ApiError> {
        let _ = params;
        Ok(Vec::new())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct JobProgress {
    /// Steps done in the current stage.
    pub done: u64,
    /// Steps of the current stage; 0 while not known yet.
    pub total: u64,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct JobInfo {
    pub id: String,
    pub kind: String,
    pub dataset: String,
    pub state: JobState,
    pub progress: JobProgress,
    /// The parameters it was started with.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// The kind's result once succeeded (or what a cancelled run had done).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<ErrorDetail>,
    /// Whether a cancel was asked for.
    pub cancel_requested: bool,
}

struct Status {
    state: JobState,
    started_at: Option<f64>,
    finished_at: Option<f64>,
    result: Option<Value>,
    error: Option<ErrorDetail>,
}

pub struct Job {
    id: String,
    kind: &'static str,
    scope: Scope,
    dataset: DatasetName,
    params: Map<String, Value>,
    created_at: f64,
    control: Arc<Control>,
    status: Mutex<Status>,
}

impl Job {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn info(&self) -> JobInfo {
        let s = lock(&self.status);
        let (done, total) = self.control.progress();
        JobInfo {
            id: self.id.clone(),
            kind: self.kind.to_owned(),
            dataset: self.dataset.as_str().to_owned(),
            state: s.state,
            progress: JobProgress { done, total },
            params: self.params.clone(),
            created_at: self.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            result: s.result.clone(),
            error: s.error.clone(),
            cancel_requested: self.control.is_cancelled(),
        }
    }

    fn state(&self) -> JobState {
        lock(&self.status).state
    }

    /// Moves a queued job to running; false when it was cancelled meanwhile.
    fn start(&self) -> bool {
        let mut s = lock(&self.status);
        if s.state != JobState::Queued || self.control.is_cancelled() {
            return false;
        }
        s.state = JobState::Running;
        s.started_at = Some(now());
        true
    }

    fn finish(&self, outcome: Option<Result<Value, ApiError>>) {
        let mut s = lock(&self.status);
        if s.state.is_finished() {
            return;
        }
        let cancelled = self.control.is_cancelled();
        match outcome {
            None => s.state = JobState::Cancelled,
            Some(Ok(v)) => {
                s.state = if cancelled {
                    JobState::Cancelled
                } else {
                    JobState::Succeeded
                };
                s.result = Some(v);
            }
            Some(Err(e)) => {
                s.state = if cancelled {
                    JobState::Cancelled
                } else {
                    JobState::Failed
                };
                s.error = Some(ErrorDetail {
                    kind: e.kind.to_owned(),
                    message: e.message,
                });
            }
        }
        s.finished_at = Some(now());
    }
}

/// The registry of job kinds and of the jobs started.
pub struct Jobs {
    kinds: RwLock<Vec<Arc<dyn JobKind>>>,
    jobs: Mutex<VecDeque<Arc<Job>>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// Unfinished jobs; shutdown waits for it to reach 0.
    unfinished: Arc<tokio::sync::watch::Sender<usize>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Default for Jobs {
    fn default() -> Self {
        let jobs = Jobs {
            kinds: RwLock::new(Vec::new()),
            jobs: Mutex::new(VecDeque::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING)),
            unfinished: Arc::new(tokio::sync::watch::channel(0).0),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        jobs.register(Arc::new(super::gc_job::GcJob));
        jobs.register(Arc::new(super::materialize_job::MaterializeJob));
        jobs
    }
}

impl Jobs {
    /// Adds a kind (replacing one of the same name).
    pub fn register(&self, kind: Arc<dyn JobKind>) {
        let mut kinds = self.kinds.write().unwrap_or_else(|p| p.into_inner());
        kinds.retain(|k| k.name() != kind.name());
        kinds.push(kind);
    }

    /// The names of the kinds, sorted.
    pub fn kind_names(&self) -> Vec<&'static str> {
        let kinds = self.kinds.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<_> = kinds.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names
    }

    /// The kind called `name`; unknown names answer 400 listing the known ones.
    pub fn kind(&self, name: &str) -> Result<Arc<dyn JobKind>, ApiError> {
        let kinds = self.kinds.read().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kinds.iter().find(|k| k.name() == name) {
            return Ok(k.clone());
        }
        drop(kinds);
        Err(ApiError::bad_request(format!(
            "unknown job kind {name:?}; supported kinds: {}",
            self.kind_names().join(", ")
        )))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.jobs).iter().find(|j| j.id == id).cloned()
    }

    /// Every kept job, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        lock(&self.jobs).iter().cloned().collect()
    }

    /// Queues a prepared run and spawns the task that runs it when a slot frees up.
    pub fn submit(
        &self,
        state: &AppState,
        kind: &dyn JobKind,
        dataset: DatasetName,
        params: Map<String, Value>,
        run: JobRun,
    ) -> Result<Arc<Job>, ApiError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            ));
        }
        let job = Arc::new(Job {
            id: format!("{:032x}", rand::random::<u128>()),
            kind: kind.name(),
            scope: kind.scope(),
            dataset: dataset.clone(),
            params,
            created_at: now(),
            control: Arc::new(Control::default()),
            status: Mutex::new(Status {
                state: JobState::Queued,
                started_at: None,
                finished_at: None,
                result: None,
                error: None,
            }),
        });
        {
            let mut jobs = lock(&self.jobs);
            if jobs.len() >= MAX_KEPT {
                match jobs.iter().position(|j| j.state().is_finished()) {
                    Some(k) => {
                        jobs.remove(k);
                    }
                    None => {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            format!("{MAX_KEPT} jobs are unfinished; try again later"),
                        ));
                    }
                }
            }
            jobs.push_back(job.clone());
        }
        self.unfinished.send_modify(|n| *n += 1);
        let ctx = JobContext {
            state: state.clone(),
            dataset,
            control: job.control.clone(),
        };
        let slots = self.slots.clone();
        let unfinished = self.unfinished.clone();
        let task_job = job.clone();
        tokio::spawn(async move {
            let job = task_job;
            let permit = slots.acquire_owned().await;
            let outcome = if permit.is_ok() && job.start() {
                tracing::info!(job = %job.id, kind = job.kind, dataset = %job.dataset.as_str(), "job started");
                // Its own task, so that a panic in a run fails the job instead of
                // leaving it `running` and shutdown waiting for it.
                Some(match tokio::spawn(run(ctx)).await {
                    Ok(outcome) => outcome,
                    Err(e) => Err(ApiError::internal(format!("job {} panicked: {e}", job.id))),
                })
            } else {
                None
            };
            job.finish(outcome);
            drop(permit);
            tracing::info!(job = %job.id, state = ?job.state(), "job finished");
            unfinished.send_modify(|n| *n = n.saturating_sub(1));
        });
        Ok(job)
    }

    /// Asks a job to stop. A queued job is cancelled at once; a running one at its
    /// next check. A finished job answers 409.
    pub fn cancel(&self, job: &Job) -> Result<(), ApiError> {
        let mut s = lock(&job.status);
        match s.state {
            JobState::Queued => {
                job.control.cancel();
                s.state = JobState::Cancelled;
                s.finished_at = Some(now());
                Ok(())
            }
            JobState::Running => {
                job.control.cancel();
                Ok(())
            }
            done => Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "job {} has finished ({})",
                    job.id,
                    serde_json::to_value(done)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ),
            )),
        }
    }

    /// Refuses new jobs, waits up to `grace` for the unfinished ones, then cancels the
    /// rest and waits (up to `grace` again) for them to stop. Returns the jobs still
    /// unfinished at the end (0 unless a run ignored its cancel for that long).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.unfinished.subscribe();
        let waiting = *rx.borrow();
        if waiting == 0 {
            return 0;
        }
        tracing::info!(jobs = waiting, "waiting for jobs to finish");
        if tokio::time::timeout(grace, rx.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return 0;
        }
        let left: Vec<Arc<Job>> = self
            .list()
            .into_iter()
            .filter(|j| !j.state().is_finished())
            .collect();
        tracing::warn!(
            jobs = left.len(),
            "grace period over: cancelling the jobs left"
        );
        for j in &left {
            let _ = self.cancel(j);
        }
        let _ = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        *rx.borrow()
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
