//! `/datasets/{name}/jobs` (start) and `/jobs` (list, watch, cancel): the HTTP side of
//! the job registry in `serve::jobs`.
//!
//! Every route needs the job kind's scope on the job's dataset (`admin` for gc, `write`
//! for materialize, also on its target); the list shows only the jobs the caller could
//! open one by one.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::serve::auth::Caller;
use crate::serve::error::{ApiError, ErrorBody, Json, Path};
use crate::serve::jobs::{Job, JobInfo};
use crate::serve::state::{AppState, DatasetName};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets/{name}/jobs", post(start))
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(status).delete(cancel))
}

/// The kinds a job may have.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKindName {
    /// Garbage collection (core's plan, then apply when `delete` is true).
    Gc,
    /// A view written out as a dense dataset (`to`) or a saved view optimized in place.
    Materialize,
}

/// The body of `POST /datasets/{name}/jobs`: `kind`, then that kind's parameters.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JobRequest {
    pub kind: JobKindName,
    /// gc: delete the garbage (default false: only list it).
    pub delete: Option<bool>,
    /// gc: leave objects younger than this many seconds alone (default 3600).
    #[schema(minimum = 0)]
    pub grace_s: Option<u64>,
    /// materialize: the source version (branch, commit id or tag; default the head of
    /// `main`).
    #[serde(rename = "ref")]
    #[schema(rename = "ref")]
    pub at: Option<String>,
    /// materialize: the rows of this TQL query, in its order.
    pub query: Option<String>,
    /// materialize: the rows of this saved view (at the commit it names).
    pub view: Option<String>,
    /// materialize: rows `[start, end)`.
    pub rows: Option<[u64; 2]>,
    /// materialize: the target, a new dataset name under the root.
    pub to: Option<String>,
    /// materialize: optimize the saved view `view` in place (3.x's layout).
    pub in_place: Option<bool>,
    /// materialize: the tensors to copy (default all).
    pub tensors: Option<Vec<String>>,
    /// materialize: `skip` (leave the row out, listed in the result) or `stop` (default).
    pub on_link_error: Option<String>,
    /// materialize: memory budget of rows in flight, MiB (default 256).
    #[schema(minimum = 1)]
    pub memory_mb: Option<u64>,
    /// materialize: `view` (default) or `source` (ascending source rows).
    pub order: Option<String>,
    /// materialize: replace a finished target, or an unfinished one made with other
    /// parameters.
    pub overwrite: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Oldest first.
    pub jobs: Vec<JobInfo>,
}

/// Starts a job on a dataset; it runs in the background (`GET /jobs/{id}` watches it).
#[utoipa::path(post, path = "/datasets/{name}/jobs", tag = "jobs", params(("name" = String, Path)),
    request_body = JobRequest,
    responses((status = 202, body = JobInfo), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn start(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let name: DatasetName = name.parse()?;
    let mut params = body;
    let kind = match params.remove("kind") {
        Some(Value::String(k)) => k,
        Some(_) => return Err(ApiError::bad_request("\"kind\" must be a string")),
        None => {
            return Err(ApiError::bad_request(format!(
                "\"kind\" is missing; supported kinds: {}",
                state.jobs().kind_names().join(", ")
            )));
        }
    };
    let kind = state.jobs().kind(&kind)?;
    caller.require(kind.scope(), Some(name.as_str()))?;
    for other in kind.other_datasets(&params)? {
        caller.require(kind.scope(), Some(other.as_str()))?;
    }
    let run = kind.prepare(&params)?;
    let store = deeplake_core::Store::open(&state.url(&name), &state.inner.storage)
        .map_err(|_| ApiError::not_found("dataset not found"))?;
    if !deeplake_core::Dataset::exists_in(&store).await? {
        return Err(ApiError::not_found("dataset not found"));
    }
    let job = state
        .jobs()
        .submit(&state, kind.as_ref(), name, params, run)?;
    Ok((StatusCode::ACCEPTED, Json(job.info())))
}

fn visible(caller: &Caller, job: &Job) -> Result<(), ApiError> {
    caller.require(job.scope(), Some(job.dataset().as_str()))
}

fn find(state: &AppState, caller: &Caller, id: &str) -> Result<std::sync::Arc<Job>, ApiError> {
    let job = state
        .jobs()
        .get(id)
        .ok_or_else(|| ApiError::not_found("job not found"))?;
    visible(caller, &job)?;
    Ok(job)
}

/// The jobs the caller may see, oldest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, body = JobList), (status = 401, body = ErrorBody)))]
pub async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
) -> Result<Json<JobList>, ApiError> {
    let jobs = state
        .jobs()
        .list()
        .iter()
        .filter(|j| visible(&caller, j).is_ok())
        .map(|j| j.info())
        .collect();
    Ok(Json(JobList { jobs }))
}

/// A job's state, progress, and result or error.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = JobInfo), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn status(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    Ok(Json(find(&state, &caller, &id)?.info()))
}

/// Cancels a job: a queued one at once, a running one at its next step (watch it reach
/// `cancelled`). A finished job answers 409.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 202, body = JobInfo), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let job = find(&state, &caller, &id)?;
    state.jobs().cancel(&job)?;
    Ok((StatusCode::ACCEPTED, Json(job.info())))
}
