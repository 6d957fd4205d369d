//! `/datasets/{name}/transforms`: transforms whose rows clients compute (the Python
//! `compute` schedulers, Ray tasks) and whose one writer is a `transform` job
//! (`serve::transform_job`): begin (or resume), send numbered parts from any worker in
//! any order, commit once, or abort leaving the dataset as it was.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName};
use crate::serve::transform_job::{self, Begin, Msg};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets/{name}/transforms", post(begin))
        .route(
            "/datasets/{name}/transforms/{job}",
            axum::routing::delete(abort),
        )
        .route("/datasets/{name}/transforms/{job}/parts/{part}", post(part))
        .route("/datasets/{name}/transforms/{job}/commit", post(commit))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformBegin {
    /// Names the run (1 to 64 of `[A-Za-z0-9_.-]`): the same name resumes it.
    pub job: String,
    /// The functions of the pipeline, in order (for the lineage).
    pub functions: Vec<String>,
    /// The branch that receives the commit (default `main`).
    pub branch: Option<String>,
    /// What the rows were computed from, for the lineage.
    pub source: Option<String>,
    pub source_commit: Option<String>,
    /// Parts the client will send, if known (for progress).
    pub parts: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransformSession {
    /// The job writing the parts (`GET /jobs/{id}`: progress in parts, then the result).
    pub job_id: String,
    pub staging_branch: String,
    /// Parts 0..parts_done are durable from an earlier run: send only the others.
    pub parts_done: u64,
    pub input_rows: u64,
    pub output_rows: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PartParams {
    /// Input samples this part was computed from (for progress and the lineage).
    pub input_rows: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartAccepted {
    pub part: u64,
    /// Output rows in the part.
    pub rows: u64,
    /// The part was written by an earlier run and is ignored.
    pub already_written: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformCommit {
    /// How many parts the run has (numbered 0..parts).
    pub parts: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransformJobRef {
    /// Watch it with `GET /jobs/{id}`.
    pub job_id: String,
}

/// Opens a transform's staging branch (or resumes one of the same `job`) and starts its
/// writer job. The dataset's tensors must exist.
#[utoipa::path(post, path = "/datasets/{name}/transforms", tag = "transforms",
    params(("name" = String, Path)),
    request_body = TransformBegin,
    responses((status = 200, body = TransformSession), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn begin(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(b): Json<TransformBegin>,
) -> Result<Json<TransformSession>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let branch = b.branch.as_deref().map(str::parse).transpose()?;
    let begun = transform_job::begin(
        &state,
        &name,
        Begin {
            job: b.job,
            functions: b.functions,
            branch,
            source: b.source,
            source_commit: b.source_commit,
            parts: b.parts,
        },
    )
    .await?;
    Ok(Json(TransformSession {
        job_id: begun.job_id,
        staging_branch: begun.staging,
        parts_done: begun.parts_done,
        input_rows: begun.input_rows,
        output_rows: begun.output_rows,
    }))
}

/// One part of the output rows, as an Arrow IPC stream or JSON columns (the append
/// mappings; an empty body is a part with no rows). Every tensor of the dataset needs a
/// column.
#[utoipa::path(post, path = "/datasets/{name}/transforms/{job}/parts/{part}", tag = "transforms",
    params(("name" = String, Path), ("job" = String, Path), ("part" = u64, Path), PartParams),
    request_body(content(
        (super::append::AppendColumns = "application/json"),
        (crate::serve::arrow::ArrowStream = "application/vnd.apache.arrow.stream"),
    )),
    responses((status = 202, body = PartAccepted), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn part(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, job, index)): Path<(String, String, u64)>,
    Query(q): Query<PartParams>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PartAccepted>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let body = super::append::body_bytes(body)?;
    let session = transform_job::session(&state, &name, &job)?;
    if index < session.parts_done {
        return Ok((
            StatusCode::ACCEPTED,
            Json(PartAccepted {
                part: index,
                rows: 0,
                already_written: true,
            }),
        ));
    }
    // An empty part needs no type.
    let json =
        !body.is_empty() && super::append::body_kind(&headers)? == super::append::BodyKind::Json;
    let specs = session.specs.clone();
    let columns =
        tokio::task::spawn_blocking(move || transform_job::decode_part(&body, json, &specs))
            .await??;
    let rows = columns.first().map_or(0, |c| c.1.len()) as u64;
    session
        .tx
        .send(Msg::Part {
            index,
            input_rows: q.input_rows.unwrap_or(0),
            columns,
        })
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("transform {job} has stopped (see its job for why)"),
            )
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PartAccepted {
            part: index,
            rows,
            already_written: false,
        }),
    ))
}

/// Says how many parts there are: once all landed, the writer publishes them as one
/// commit. Watch the job for the result.
#[utoipa::path(post, path = "/datasets/{name}/transforms/{job}/commit", tag = "transforms",
    params(("name" = String, Path), ("job" = String, Path)),
    request_body = TransformCommit,
    responses((status = 202, body = TransformJobRef), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn commit(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, job)): Path<(String, String)>,
    Json(c): Json<TransformCommit>,
) -> Result<(StatusCode, Json<TransformJobRef>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let session = transform_job::session(&state, &name, &job)?;
    send(&session, Msg::Commit { parts: c.parts }, &job).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TransformJobRef {
            job_id: session.job_id.clone(),
        }),
    ))
}

/// Abandons a transform: its staging branch is deleted, the dataset stays as it was.
#[utoipa::path(delete, path = "/datasets/{name}/transforms/{job}", tag = "transforms",
    params(("name" = String, Path), ("job" = String, Path)),
    responses((status = 202, body = TransformJobRef), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn abort(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, job)): Path<(String, String)>,
) -> Result<(StatusCode, Json<TransformJobRef>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let session = transform_job::session(&state, &name, &job)?;
    send(&session, Msg::Abort { discard: true }, &job).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TransformJobRef {
            job_id: session.job_id.clone(),
        }),
    ))
}

async fn send(session: &transform_job::Session, m: Msg, job: &str) -> Result<(), ApiError> {
    session.tx.send(m).await.map_err(|_| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("transform {job} has stopped (see its job for why)"),
        )
    })
}
