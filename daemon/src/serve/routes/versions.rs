//! Version control: log, commit, branches, tags, diff and merge of one dataset.
//! Writes open the branch head with a lease, close it before answering, and drop the
//! dataset's cached read handles.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use deeplake_core::dataset::MergeOptions;
use deeplake_core::ids::BranchName;
use deeplake_core::version::MergePolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

use super::datasets::RefParam;
use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName, parse_ref};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets/{name}/log", get(log))
        .route("/datasets/{name}/commit", post(commit))
        .route(
            "/datasets/{name}/branches",
            get(branches).post(create_branch),
        )
        .route("/datasets/{name}/tags", get(tags).post(create_tag))
        .route("/datasets/{name}/diff", get(diff))
        .route("/datasets/{name}/merge", post(merge))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntry {
    pub commit_id: String,
    pub branch: String,
    pub message: Option<String>,
    pub author: Option<String>,
    pub time: Option<f64>,
    pub parent: Option<String>,
    pub merge_parent: Option<String>,
    pub is_head: bool,
    pub tags: Vec<String>,
}

/// The commits from the node read back to the first, newest first.
#[utoipa::path(get, path = "/datasets/{name}/log", tag = "versions", params(("name" = String, Path), RefParam),
    responses((status = 200, body = Vec<LogEntry>), (status = 404, body = ErrorBody)))]
pub async fn log(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<RefParam>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let r = parse_ref(q.r#ref.as_deref())?;
    let ds = state.read(&name, r.as_ref()).await?;
    let mut tags_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (t, c) in ds.tags() {
        tags_of.entry(c.as_str()).or_default().push(t.clone());
    }
    let out = ds
        .log()
        .into_iter()
        .map(|r| LogEntry {
            tags: tags_of.get(r.id.as_str()).cloned().unwrap_or_default(),
            commit_id: r.id,
            branch: r.branch,
            message: r.message,
            author: r.author,
            time: r.time,
            parent: r.parent,
            merge_parent: r.merge_parent,
            is_head: r.is_head,
        })
        .collect();
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    pub message: String,
    /// Default `main`.
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommitResponse {
    pub commit: String,
    pub branch: String,
}

fn branch_of(s: Option<&str>) -> Result<Option<BranchName>, ApiError> {
    Ok(s.map(str::parse).transpose()?)
}

/// Commits the head of a branch.
#[utoipa::path(post, path = "/datasets/{name}/commit", tag = "versions", params(("name" = String, Path)),
    request_body = CommitRequest,
    responses((status = 201, body = CommitResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn commit(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CommitRequest>,
) -> Result<(StatusCode, Json<CommitResponse>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let branch = branch_of(body.branch.as_deref())?;
    let mut ds = state.write(&name, branch).await?;
    let result = ds.commit(&body.message).await;
    let branch = ds.branch().to_owned();
    let commit = state.finish(&name, ds, result).await?;
    Ok((StatusCode::CREATED, Json(CommitResponse { commit, branch })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BranchList {
    /// Branch name to the id of its head node.
    pub branches: BTreeMap<String, Option<String>>,
}

/// The branches and their heads.
#[utoipa::path(get, path = "/datasets/{name}/branches", tag = "versions", params(("name" = String, Path)),
    responses((status = 200, body = BranchList), (status = 404, body = ErrorBody)))]
pub async fn branches(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<BranchList>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let ds = state.read(&name, None).await?;
    let branches = ds
        .branches()
        .into_iter()
        .map(|b| {
            let head = ds.branch_head(&b);
            (b, head)
        })
        .collect();
    Ok(Json(BranchList { branches }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBranch {
    pub name: String,
    /// Branch whose head the new branch starts from (default `main`); a head with
    /// changes is committed first, as 3.x does.
    pub from: Option<String>,
}

/// Creates a branch.
#[utoipa::path(post, path = "/datasets/{name}/branches", tag = "versions", params(("name" = String, Path)),
    request_body = CreateBranch,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_branch(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CreateBranch>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let new: BranchName = body.name.parse()?;
    let from = branch_of(body.from.as_deref())?;
    let mut ds = state.write(&name, from).await?;
    if ds.branch_head(new.as_str()).is_some() {
        state.finish(&name, ds, Ok(())).await?;
        return Err(ApiError::exists("branch", new.as_str()));
    }
    let result = ds.checkout(new.as_str(), true).await;
    let base = ds.commit_id();
    state.finish(&name, ds, result).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"branch": new.as_str(), "base": base})),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TagList {
    /// Tag name to commit id.
    pub tags: BTreeMap<String, String>,
}

/// The tags and the commits they name.
#[utoipa::path(get, path = "/datasets/{name}/tags", tag = "versions", params(("name" = String, Path)),
    responses((status = 200, body = TagList), (status = 404, body = ErrorBody)))]
pub async fn tags(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TagList>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let ds = state.read(&name, None).await?;
    Ok(Json(TagList {
        tags: ds.tags().clone(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTag {
    pub name: String,
    /// Commit to tag (default: the last commit of `main`).
    pub commit: Option<String>,
}

/// Names a commit with a tag.
#[utoipa::path(post, path = "/datasets/{name}/tags", tag = "versions", params(("name" = String, Path)),
    request_body = CreateTag,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_tag(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CreateTag>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    // Tags are named as branches are, so they stay usable as `?ref=` values.
    let tag: BranchName = body.name.parse()?;
    if let Some(c) = &body.commit {
        c.parse::<deeplake_core::ids::CommitId>()?;
    }
    let mut opts = state.open_options();
    opts.read_only = true;
    let mut ds = deeplake_core::Dataset::open(&state.url(&name), opts).await?;
    if ds.tags().contains_key(tag.as_str()) {
        return Err(ApiError::exists("tag", tag.as_str()));
    }
    let commit = ds.tag(tag.as_str(), body.commit.as_deref()).await;
    state.invalidate(&name);
    let commit = commit?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"tag": tag.as_str(), "commit": commit})),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DiffParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What changed between two refs (3.x's `diff(as_dict=True)` shape): with neither,
/// the head's own changes; with `from` only, the head of `main` and `from`.
#[utoipa::path(get, path = "/datasets/{name}/diff", tag = "versions", params(("name" = String, Path), DiffParams),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn diff(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DiffParams>,
) -> Result<Json<Value>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let a = parse_ref(q.from.as_deref())?;
    let b = parse_ref(q.to.as_deref())?;
    let ds = state.read(&name, None).await?;
    let d = ds.diff(a.as_ref(), b.as_ref()).await?;
    Ok(Json(d.to_3x_json()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// Branch, commit id or tag to merge.
    pub source: String,
    /// Branch receiving the merge (default `main`).
    pub branch: Option<String>,
    /// `none` (conflicts fail with 409), `ours` or `theirs`.
    pub policy: Option<String>,
    #[serde(default)]
    pub delete_removed_tensors: bool,
}

/// Merges a ref into a branch head, then commits. Rows changed on both sides fail the
/// merge with 409 (policy `none`), the message listing them.
#[utoipa::path(post, path = "/datasets/{name}/merge", tag = "versions", params(("name" = String, Path)),
    request_body = MergeRequest,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn merge(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<MergeRequest>,
) -> Result<Json<Value>, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Write, Some(name.as_str()))?;
    let branch = branch_of(body.branch.as_deref())?;
    let source: deeplake_core::version::Ref = body.source.parse()?;
    let policy: MergePolicy = body.policy.as_deref().unwrap_or("none").parse()?;
    let mut ds = state.write(&name, branch).await?;
    let result = ds
        .merge_with(
            source.as_str(),
            MergeOptions {
                policy,
                delete_removed_tensors: body.delete_removed_tensors,
            },
        )
        .await;
    let outcome = state.finish(&name, ds, result).await?;
    Ok(Json(outcome.to_json()))
}
