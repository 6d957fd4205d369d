//! `/datasets`: list, create, delete, describe; `/datasets/{name}/tensors`: create,
//! delete, describe.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use deeplake_core::{Dataset, Dtype, TensorOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName, parse_ref};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets", get(list).post(create))
        .route("/datasets/{name}", get(info).delete(delete))
        .route(
            "/datasets/{name}/tensors",
            axum::routing::post(create_tensor),
        )
        .route(
            "/datasets/{name}/tensors/{tensor}",
            get(tensor_info).delete(delete_tensor),
        )
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RefParam {
    /// Branch, commit id or tag to read (default: the head of `main`).
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    /// One segment of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        min_length = 1,
        max_length = 128
    )]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorInfo {
    pub name: String,
    pub htype: String,
    pub dtype: Option<String>,
    pub length: u64,
    pub min_shape: Vec<u64>,
    pub max_shape: Vec<u64>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub class_names: Vec<String>,
    /// The tensor's `tensor_info.json` entries.
    #[schema(value_type = Object)]
    pub info: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetInfo {
    pub name: String,
    pub length: u64,
    pub branch: String,
    /// The node read: a commit id, or the id of a head with uncommitted changes.
    pub head: String,
    /// The last commit at or below the node read.
    pub commit: Option<String>,
    pub tensors: Vec<TensorInfo>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTensor {
    pub name: String,
    /// A 3.x htype: `generic`, `image`, `class_label`, `text`, `json`, `bbox`, ...
    pub htype: String,
    pub dtype: Option<String>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Branch whose head receives the tensor (default `main`).
    pub branch: Option<String>,
}

fn tensor_json(ds: &Dataset, name: &str) -> Result<TensorInfo, ApiError> {
    let s = ds.summary(name)?;
    Ok(TensorInfo {
        name: s.name,
        htype: s.htype,
        dtype: s.dtype,
        length: s.length,
        min_shape: s.min_shape,
        max_shape: s.max_shape,
        sample_compression: s.sample_compression,
        chunk_compression: s.chunk_compression,
        class_names: s.class_names,
        info: ds.tensor_info(name)?.clone(),
    })
}

/// Every dataset directly under the root that the caller may read.
#[utoipa::path(get, path = "/datasets", tag = "datasets",
    responses((status = 200, body = DatasetList), (status = 401, body = ErrorBody)))]
pub async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
) -> Result<Json<DatasetList>, ApiError> {
    caller.require(Scope::Read, None).or_else(|e| {
        // A token limited to some datasets still lists those.
        if e.status == StatusCode::FORBIDDEN {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    let store = deeplake_core::Store::open(&state.inner.root, &state.inner.storage);
    let store = match store {
        Ok(s) => s,
        Err(deeplake_core::Error::NotFound { .. }) => {
            return Ok(Json(DatasetList { datasets: vec![] }));
        }
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<String> = store
        .list("")
        .await?
        .into_iter()
        .filter_map(|(key, _)| {
            let (dir, file) = key.split_once('/')?;
            let marker = file == "dataset_meta.json" || file == "version_control_info.json";
            (marker && crate::serve::state::is_segment(dir)).then(|| dir.to_owned())
        })
        .filter(|n| caller.may_see(n))
        .collect();
    names.dedup();
    Ok(Json(DatasetList { datasets: names }))
}

/// Creates an empty dataset.
#[utoipa::path(post, path = "/datasets", tag = "datasets", request_body = CreateDataset,
    responses((status = 201, body = DatasetInfo), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Json(body): Json<CreateDataset>,
) -> Result<(StatusCode, Json<DatasetInfo>), ApiError> {
    let name: DatasetName = body.name.parse()?;
    caller.require(Scope::Admin, Some(name.as_str()))?;
    let ds = Dataset::create(&state.url(&name), state.open_options()).await?;
    let info = describe(&name, &ds)?;
    state.finish(&name, ds, Ok(())).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

fn describe(name: &DatasetName, ds: &Dataset) -> Result<DatasetInfo, ApiError> {
    let tensors = ds
        .tensor_names()
        .iter()
        .map(|t| tensor_json(ds, t))
        .collect::<Result<_, _>>()?;
    Ok(DatasetInfo {
        name: name.as_str().to_owned(),
        length: ds.len(),
        branch: ds.branch().to_owned(),
        head: ds.node_id().to_string(),
        commit: ds.commit_id(),
        tensors,
    })
}

/// Length, tensors, branch and head of a dataset at a ref.
#[utoipa::path(get, path = "/datasets/{name}", tag = "datasets", params(("name" = String, Path), RefParam),
    responses((status = 200, body = DatasetInfo), (status = 404, body = ErrorBody)))]
pub async fn info(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RefParam>,
) -> Result<Json<DatasetInfo>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let r = parse_ref(q.r#ref.as_deref())?;
    let ds = state.read(&name, r.as_ref()).await?;
    Ok(Json(describe(&name, &ds)?))
}

/// Deletes a dataset and everything stored under it.
#[utoipa::path(delete, path = "/datasets/{name}", tag = "datasets", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Admin, Some(name.as_str()))?;
    let url = state.url(&name);
    let store = deeplake_core::Store::open(&url, &state.inner.storage)
        .map_err(|_| ApiError::not_found("dataset not found"))?;
    if !Dataset::exists_in(&store).await? {
        return Err(ApiError::not_found("dataset not found"));
    }
    store.delete_prefix("").await?;
    store.remove_empty_folders("").await?;
    state.invalidate(&name);
    // A dataset created later under the name must not find these chunks.
    state.inner.chunk_cache.forget_dataset(store.url());
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a tensor at the head of a branch.
#[utoipa::path(post, path = "/datasets/{name}/tensors", tag = "tensors", params(("name" = String, Path)),
    request_body = CreateTensor,
    responses((status = 201, body = TensorInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_tensor(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CreateTensor>,
) -> Result<(StatusCode, Json<TensorInfo>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let tensor: deeplake_core::ids::TensorName = body.name.parse()?;
    let branch = body.branch.as_deref().map(str::parse).transpose()?;
    let mut opts = TensorOptions::new(body.htype);
    if let Some(d) = &body.dtype {
        opts = opts.dtype(d.parse::<Dtype>()?);
    }
    opts.sample_compression = body.sample_compression;
    opts.chunk_compression = body.chunk_compression;
    opts.class_names = body.class_names;
    let mut ds = state.write(&name, branch).await?;
    let t = tensor.as_str();
    if ds
        .tensor_names()
        .iter()
        .chain(&ds.hidden_tensor_names())
        .any(|n| n == t)
    {
        state.finish(&name, ds, Ok(())).await?;
        return Err(ApiError::exists("tensor", t));
    }
    let result = async {
        ds.create_tensor(tensor.as_str(), opts).await?;
        ds.flush().await
    }
    .await;
    let info = result.and_then(|()| {
        tensor_json(&ds, tensor.as_str()).map_err(|e| deeplake_core::Error::internal(e.message))
    });
    let info = state.finish(&name, ds, info).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// A tensor's meta and info.
#[utoipa::path(get, path = "/datasets/{name}/tensors/{tensor}", tag = "tensors",
    params(("name" = String, Path), ("tensor" = String, Path), RefParam),
    responses((status = 200, body = TensorInfo), (status = 404, body = ErrorBody)))]
pub async fn tensor_info(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, tensor)): Path<(String, String)>,
    Query(q): Query<RefParam>,
) -> Result<Json<TensorInfo>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let tensor: deeplake_core::ids::TensorName = tensor.parse()?;
    let r = parse_ref(q.r#ref.as_deref())?;
    let ds = state.read(&name, r.as_ref()).await?;
    Ok(Json(tensor_json(&ds, tensor.as_str())?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BranchParam {
    /// Branch whose head is changed (default `main`).
    pub branch: Option<String>,
}

/// Deletes a tensor at the head of a branch.
#[utoipa::path(delete, path = "/datasets/{name}/tensors/{tensor}", tag = "tensors",
    params(("name" = String, Path), ("tensor" = String, Path), BranchParam),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_tensor(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, tensor)): Path<(String, String)>,
    Query(q): Query<BranchParam>,
) -> Result<StatusCode, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let tensor: deeplake_core::ids::TensorName = tensor.parse()?;
    let branch = q.branch.as_deref().map(str::parse).transpose()?;
    let mut ds = state.write(&name, branch).await?;
    let result = async {
        ds.delete_tensor(tensor.as_str()).await?;
        ds.flush().await
    }
    .await;
    state.finish(&name, ds, result).await?;
    Ok(StatusCode::NO_CONTENT)
}
