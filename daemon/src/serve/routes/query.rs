//! TQL over HTTP: run a query on one dataset, page through its result, and save,
//! list, load and delete views.
//!
//! A query runs on the dataset named in the path only: a FROM naming a dataset URL is
//! refused, since it could read storage outside the served root. Results are kept in
//! memory under a random id for paging until the dataset is written or newer results
//! push them out.
//!
//! Both the first page and later pages come as JSON, or with `?format=arrow` (a query
//! parameter on both routes, as on the sample routes; the Accept header is not
//! consulted) as an Arrow IPC stream: `__row`, one column per tensor for `SELECT *`, and
//! the computed columns (the mapping of `serve::arrow`). The result id and total then
//! travel in the `X-Deeplake-Result-Id` and `X-Deeplake-Total` headers.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deeplake_core::tql::ast::{FromClause, Query as Tql};
use deeplake_core::tql::{self, QueryOptions};
use deeplake_core::version::Ref;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::samples::{arrow_response, sample_json};
use crate::serve::arrow;
use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName, StoredResult, is_segment, parse_ref};

/// Rows a page holds by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets/{name}/query", post(run))
        .route("/datasets/{name}/results/{id}", get(page))
        .route("/datasets/{name}/views", get(list_views).post(save_view))
        .route(
            "/datasets/{name}/views/{id}",
            get(load_view).delete(delete_view),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub query: String,
    /// Rows of the first page (default 100, at most 1000).
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// Branch, commit id or tag to query (default: the head of `main`).
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
    #[serde(default)]
    pub seed: u64,
    /// Rows carry only `__row` and computed columns, not every tensor's sample of
    /// `SELECT *` (a client that reads the tensors itself, such as the visualizer).
    #[serde(default)]
    pub rows_only: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryPage {
    /// Id of the kept result: `GET /datasets/{name}/results/{id}` pages through it.
    pub result_id: String,
    pub total: usize,
    pub offset: usize,
    /// One object per row: `__row` (the source row), the select list's columns, and
    /// for `SELECT *` every tensor's sample.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Value>,
    pub explain: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    /// JSON rows carry only `__row` and computed columns (see `QueryRequest`).
    pub rows_only: Option<bool>,
    /// `json` (default) or `arrow` (an Arrow IPC stream).
    pub format: Option<String>,
    /// With `format=arrow`: decode images to arrays (default true) or send their stored
    /// bytes as Binary.
    pub decode: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct FormatParams {
    /// `json` (default) or `arrow` (an Arrow IPC stream).
    pub format: Option<String>,
    /// With `format=arrow`: decode images to arrays (default true) or send their stored
    /// bytes as Binary.
    pub decode: Option<bool>,
}

/// Whether a page goes out as Arrow (else JSON).
fn wants_arrow(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("arrow") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not one of json, arrow"
        ))),
    }
}

/// A page as an Arrow IPC stream, with the result's id and total in headers.
async fn arrow_page(
    r: &StoredResult,
    id: &str,
    offset: usize,
    limit: usize,
    decode: bool,
) -> Result<Response, ApiError> {
    let res = &r.result;
    let ds = &r.dataset_handle;
    let end = offset.saturating_add(limit).min(res.rows.len());
    let start = offset.min(end);
    let main = res
        .sources
        .iter()
        .position(|s| s.url == ds.url() && s.node == ds.node_id().as_str());
    let tensors = if res.star {
        ds.tensor_names()
    } else {
        Vec::new()
    };
    let opts = deeplake_core::dataset::ReadOptions {
        decode,
        ..Default::default()
    };
    let mut columns = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let spec = arrow::column_spec(ds, t, decode)?;
        let mut samples = Vec::with_capacity(end - start);
        for &(src, row) in &res.rows[start..end] {
            if Some(src as usize) == main {
                let mut s = ds.read_range_with(t, row..row + 1, &opts).await?;
                samples.push(s.pop().unwrap_or(deeplake_core::Sample::Empty));
            } else {
                samples.push(deeplake_core::Sample::Empty);
            }
        }
        columns.push((spec, samples));
    }
    let computed = res
        .columns
        .iter()
        .map(|(c, vals)| {
            let v = (start..end)
                .map(|k| vals.get(k).map(|v| v.to_json().to_string()))
                .collect();
            (c.clone(), v)
        })
        .collect();
    let page = arrow::Page {
        rows: Some(res.rows[start..end].iter().map(|&(_, row)| row).collect()),
        tensors: columns,
        computed,
    };
    let bytes = tokio::task::spawn_blocking(move || arrow::encode(page)).await??;
    let mut resp = arrow_response(bytes);
    let h = resp.headers_mut();
    let header = |v: String| {
        axum::http::HeaderValue::from_str(&v).map_err(|e| ApiError::internal(e.to_string()))
    };
    h.insert("x-deeplake-result-id", header(id.to_owned())?);
    h.insert("x-deeplake-total", header(res.rows.len().to_string())?);
    Ok(resp)
}

/// Refuses a query that names any dataset in FROM (module docs say why).
pub(crate) fn check_sources(q: &Tql) -> Result<(), ApiError> {
    fn from(fc: &FromClause) -> Result<(), ApiError> {
        match fc {
            FromClause::Source { .. } => Err(ApiError::bad_request(
                "FROM may not name a dataset here: the query runs on the dataset in the path",
            )),
            FromClause::Subquery { query, .. } => check_sources(query),
            FromClause::Join { left, right, .. } => {
                from(left)?;
                from(right)
            }
            FromClause::Diff { .. } => Ok(()),
        }
    }
    match q {
        Tql::Select(s) => s.from.as_ref().map_or(Ok(()), from),
        Tql::Set { left, right, .. } => {
            check_sources(left)?;
            check_sources(right)
        }
        Tql::Explain(q) => check_sources(q),
    }
}

/// What a query request asks for, checked before the dataset is opened.
#[derive(Debug)]
pub struct CheckedQuery {
    pub query: Tql,
    pub r#ref: Option<Ref>,
    pub limit: usize,
    pub offset: usize,
}

impl QueryRequest {
    /// Parses the query (refusing a FROM that names a dataset), the ref and the page
    /// bounds: the route's first step, and all of it that needs no dataset.
    pub fn check(&self) -> Result<CheckedQuery, ApiError> {
        let limit = limit_of(self.limit)?;
        let query = tql::parser::parse(&self.query)?;
        check_sources(&query)?;
        Ok(CheckedQuery {
            query,
            r#ref: parse_ref(self.r#ref.as_deref())?,
            limit,
            offset: self.offset.unwrap_or(0),
        })
    }
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    let l = limit.unwrap_or(DEFAULT_LIMIT);
    if l > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit {l} is above the most a page holds, {MAX_LIMIT}"
        )));
    }
    Ok(l)
}

async fn render_page(
    r: &StoredResult,
    offset: usize,
    limit: usize,
    rows_only: bool,
) -> Result<Vec<Value>, ApiError> {
    let res = &r.result;
    let ds = &r.dataset_handle;
    let end = offset.saturating_add(limit).min(res.rows.len());
    let start = offset.min(end);
    let main = res
        .sources
        .iter()
        .position(|s| s.url == ds.url() && s.node == ds.node_id().as_str());
    let tensors = if res.star && !rows_only {
        ds.tensor_names()
    } else {
        Vec::new()
    };
    let mut rows = Vec::with_capacity(end - start);
    for k in start..end {
        let (src, row) = res.rows[k];
        let mut m = Map::new();
        m.insert("__row".into(), json!(row));
        if Some(src as usize) == main {
            for t in &tensors {
                let s = ds.read(t, row).await?;
                m.insert(t.clone(), sample_json(&s));
            }
        }
        for (c, vals) in &res.columns {
            if let Some(v) = vals.get(k) {
                m.insert(c.clone(), v.to_json());
            }
        }
        rows.push(Value::Object(m));
    }
    Ok(rows)
}

/// Runs a TQL query on the dataset; answers the first page and a result id.
#[utoipa::path(post, path = "/datasets/{name}/query", tag = "query", params(("name" = String, Path), FormatParams),
    request_body = QueryRequest,
    responses((status = 200, description = "the page as JSON, or as an Arrow IPC stream with format=arrow (result id and total in X-Deeplake-Result-Id and X-Deeplake-Total)",
            content((QueryPage = "application/json"), (arrow::ArrowStream = "application/vnd.apache.arrow.stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(f): Query<FormatParams>,
    Json(body): Json<QueryRequest>,
) -> Result<Response, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let arrow = wants_arrow(f.format.as_deref())?;
    let checked = body.check()?;
    let (limit, offset) = (checked.limit, checked.offset);
    let ds = state.read(&name, checked.r#ref.as_ref()).await?;
    let opts = QueryOptions {
        seed: body.seed,
        storage: state.inner.storage.clone(),
    };
    let result = tql::query(&ds, &body.query, &opts).await?;
    let explain = result.explain.clone();
    let stored = StoredResult {
        dataset: name,
        query: body.query,
        result,
        dataset_handle: ds,
    };
    if arrow {
        let stored = state.keep_result(stored);
        let kept = state
            .result(&stored)
            .ok_or_else(|| ApiError::internal("a result kept a moment ago is gone"))?;
        return arrow_page(&kept, &stored, offset, limit, f.decode.unwrap_or(true)).await;
    }
    let rows = render_page(&stored, offset, limit, body.rows_only).await?;
    let total = stored.result.rows.len();
    let result_id = state.keep_result(stored);
    Ok(Json(QueryPage {
        result_id,
        total,
        offset,
        rows,
        explain,
    })
    .into_response())
}

/// Another page of a kept query result.
#[utoipa::path(get, path = "/datasets/{name}/results/{id}", tag = "query",
    params(("name" = String, Path), ("id" = String, Path), PageParams),
    responses((status = 200, description = "the page as JSON, or as an Arrow IPC stream with format=arrow (result id and total in X-Deeplake-Result-Id and X-Deeplake-Total)",
            content((QueryPage = "application/json"), (arrow::ArrowStream = "application/vnd.apache.arrow.stream"))),
        (status = 404, body = ErrorBody)))]
pub async fn page(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let arrow = wants_arrow(q.format.as_deref())?;
    let limit = limit_of(q.limit)?;
    let offset = q.offset.unwrap_or(0);
    let r = state
        .result(&id)
        .filter(|r| r.dataset == name)
        .ok_or_else(|| ApiError::not_found("no such query result (results expire on writes)"))?;
    if arrow {
        return arrow_page(&r, &id, offset, limit, q.decode.unwrap_or(true)).await;
    }
    let rows = render_page(&r, offset, limit, q.rows_only.unwrap_or(false)).await?;
    Ok(Json(QueryPage {
        result_id: id,
        total: r.result.rows.len(),
        offset,
        rows,
        explain: r.result.explain.clone(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveView {
    /// The view's id.
    pub id: String,
    /// The query whose rows the view keeps; it runs on the last commit of `main`.
    pub query: String,
    pub message: Option<String>,
}

fn view_id(id: &str) -> Result<&str, ApiError> {
    if is_segment(id) {
        Ok(id)
    } else {
        Err(ApiError::bad_request(format!(
            "view id {id:?} is not valid: 1..=128 of letters, digits, '_', '-', '.'"
        )))
    }
}

/// Runs a query and saves its rows as a view.
#[utoipa::path(post, path = "/datasets/{name}/views", tag = "views", params(("name" = String, Path)),
    request_body = SaveView,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn save_view(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SaveView>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let id = view_id(&body.id)?;
    check_sources(&tql::parser::parse(&body.query)?)?;
    let mut opts = state.open_options();
    opts.read_only = true;
    let ds = deeplake_core::Dataset::open(&state.url(&name), opts.clone()).await?;
    let qopts = QueryOptions {
        seed: 0,
        storage: state.inner.storage.clone(),
    };
    let res = tql::query(&ds, &body.query, &qopts).await?;
    let view = res
        .save_view(&ds, id, body.message.as_deref(), Some(&body.query), &opts)
        .await;
    state.invalidate(&name);
    let view = view?;
    Ok((StatusCode::CREATED, Json(Value::Object(view.info))))
}

/// The saved views' entries.
#[utoipa::path(get, path = "/datasets/{name}/views", tag = "views", params(("name" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn list_views(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let ds = state.read(&name, None).await?;
    let views = ds.list_views().await?;
    Ok(Json(
        views.into_iter().map(|v| Value::Object(v.info)).collect(),
    ))
}

/// A saved view: its entry and its source rows.
#[utoipa::path(get, path = "/datasets/{name}/views/{id}", tag = "views",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn load_view(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let id = view_id(&id)?;
    let ds = state.read(&name, None).await?;
    let v = ds.load_view(id, &state.open_options()).await?;
    Ok(Json(json!({"info": v.info, "rows": v.indices})))
}

/// Deletes a saved view.
#[utoipa::path(delete, path = "/datasets/{name}/views/{id}", tag = "views",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_view(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let id = view_id(&id)?;
    let mut opts = state.open_options();
    opts.read_only = true;
    let ds = deeplake_core::Dataset::open(&state.url(&name), opts).await?;
    let r = ds.delete_view(id).await;
    state.invalidate(&name);
    r?;
    Ok(StatusCode::NO_CONTENT)
}
