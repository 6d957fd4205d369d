//! `POST /datasets/{name}/append`: appends rows to the head of a branch, as JSON
//! columns or as an Arrow IPC stream (the mapping of `serve::arrow`).
//!
//! Every value is decoded and checked against its tensor, and every sample encoded,
//! before anything is written: an unknown tensor, a wrong dtype or shape, or columns of
//! different lengths answer 400 naming the tensor (and row), and the dataset is left
//! as it was. Tensors the request does not name get an empty sample per row, so the
//! tensors stay aligned. The append is flushed before the answer; `?commit=message`
//! commits it too.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use deeplake_core::{Dataset, Sample};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::serve::arrow::{self, ColumnSpec};
use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName};

pub fn router() -> Router<AppState> {
    Router::new().route("/datasets/{name}/append", post(append))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AppendParams {
    /// Branch whose head receives the rows (default `main`).
    pub branch: Option<String>,
    /// Commit after appending, with this message.
    pub commit: Option<String>,
}

/// The JSON form: one array per tensor, all of one length. A value is what the JSON
/// sample routes answer: a number or nested array (or `{shape, data}`) for numeric and
/// image tensors, a string for text and links, any value for json, an array for list,
/// an integer label for class_label, and null for an empty sample.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppendColumns {
    #[schema(value_type = Object)]
    pub columns: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppendResult {
    /// Rows appended.
    pub rows: u64,
    /// The dataset's length after the append.
    pub length: u64,
    /// The commit made with `?commit=`.
    pub commit: Option<String>,
}

/// The two forms a body of rows comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Json,
    Arrow,
}

/// Which form a body of rows is in, from its content type.
pub(crate) fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ctype.split(';').next().unwrap_or("").trim() {
        arrow::ARROW_STREAM => Ok(BodyKind::Arrow),
        "application/json" => Ok(BodyKind::Json),
        _ => Err(ApiError::bad_request(format!(
            "content-type {ctype:?}: send application/json or {}",
            arrow::ARROW_STREAM
        ))),
    }
}

/// A body of rows, or why it could not be read (413 when over the limit).
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(r.status(), "payload_too_large", r.body_text())
        } else {
            ApiError::bad_request(r.body_text())
        }
    })
}

/// The JSON form of a body of rows as columns of samples, each value checked against
/// its tensor's `spec` (lengths are the caller's to compare).
pub fn json_columns(
    body: &[u8],
    specs: &HashMap<String, ColumnSpec>,
) -> Result<Vec<(String, Vec<Sample>)>, ApiError> {
    let parsed: AppendColumns = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad append body: {e}")))?;
    let mut out = Vec::with_capacity(parsed.columns.len());
    for (t, values) in parsed.columns {
        let spec = specs
            .get(&t)
            .ok_or_else(|| ApiError::bad_request(format!("tensor {t:?}: no such tensor")))?;
        let Value::Array(values) = values else {
            return Err(ApiError::bad_request(format!(
                "tensor {t:?}: a column is an array of values"
            )));
        };
        let samples = values
            .iter()
            .enumerate()
            .map(|(r, v)| arrow::json_sample(spec, v, r))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((t, samples));
    }
    Ok(out)
}

/// Decodes the body into full columns: every visible tensor, in request order first.
async fn columns_of(
    ds: &Dataset,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Vec<(String, Vec<Sample>)>, ApiError> {
    let specs: HashMap<String, ColumnSpec> = ds
        .tensor_names()
        .into_iter()
        .map(|t| arrow::column_spec(ds, &t, false).map(|s| (t, s)))
        .collect::<Result<_, _>>()?;
    let kind = body_kind(headers)?;
    let names = ds.tensor_names();
    let mut cols = match kind {
        BodyKind::Arrow => {
            tokio::task::spawn_blocking(move || arrow::decode(&body, &specs)).await??
        }
        BodyKind::Json => {
            tokio::task::spawn_blocking(move || json_columns(&body, &specs)).await??
        }
    };
    let Some(rows) = cols.first().map(|(_, c)| c.len()) else {
        return Err(ApiError::bad_request("the body names no tensor"));
    };
    for (t, c) in &cols {
        if c.len() != rows {
            return Err(ApiError::bad_request(format!(
                "tensor {t:?}: the column has {} rows, tensor {:?} has {rows}",
                c.len(),
                cols[0].0
            )));
        }
    }
    if rows == 0 {
        return Err(ApiError::bad_request("the body holds no rows"));
    }
    for t in names {
        if !cols.iter().any(|(n, _)| *n == t) {
            cols.push((t, vec![Sample::Empty; rows]));
        }
    }
    Ok(cols)
}

/// Appends rows (JSON columns or an Arrow IPC stream), flushes, and optionally commits.
#[utoipa::path(post, path = "/datasets/{name}/append", tag = "samples",
    params(("name" = String, Path), AppendParams),
    request_body(content(
        (AppendColumns = "application/json"),
        (arrow::ArrowStream = "application/vnd.apache.arrow.stream"),
    )),
    responses((status = 200, body = AppendResult), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn append(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<AppendParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AppendResult>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let branch = q.branch.as_deref().map(str::parse).transpose()?;
    let body = body_bytes(body)?;
    let mut ds = state.write(&name, branch).await?;
    let cols = match columns_of(&ds, &headers, body).await {
        Ok(c) => c,
        Err(e) => {
            state.finish(&name, ds, Ok(())).await?;
            return Err(e);
        }
    };
    let rows = cols.first().map_or(0, |(_, c)| c.len() as u64);
    let result = async {
        ds.extend_columns(cols).await?;
        ds.flush().await?;
        let commit = match &q.commit {
            Some(m) => Some(ds.commit(m).await?),
            None => None,
        };
        Ok(AppendResult {
            rows,
            length: ds.len(),
            commit,
        })
    }
    .await;
    Ok(Json(state.finish(&name, ds, result).await?))
}
