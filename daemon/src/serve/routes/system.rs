//! `/healthz`, `/metrics` (Prometheus text) and `/openapi.json`.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody};
use crate::serve::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// Liveness: answers without touching storage or needing a token.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Request counts and latency histograms per route, and the chunk cache's counters
/// (needs admin).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::Admin, None)?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(&state.inner.chunk_cache.stats()),
    ))
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    axum::Json(crate::serve::openapi())
}
