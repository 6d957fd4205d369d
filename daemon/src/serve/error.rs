//! The one mapping from failures to HTTP responses.
//!
//! Every handler returns `Result<_, ApiError>`; every error body has the shape
//! `{"error": {"kind": "...", "message": "..."}}`. `core::Error` maps to a status here
//! and nowhere else. Storage, IO, corruption and internal failures are logged with
//! their detail and answered with a generic message, so paths and backend text never
//! reach a client. A storage backend that failed in a way that may pass
//! (`Error::is_transient`: network, 5xx, throttling) is a 503 with `Retry-After`, so
//! that clients and proxies retry rather than give up.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deeplake_core::Error;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind: `invalid_input`, `not_found`, `conflict`, `unauthorized`,
    /// `forbidden`, `payload_too_large`, `query`, `unsupported`, `timeout`, `storage`,
    /// `internal`, ...
    pub kind: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// Seconds to send in `Retry-After`.
    pub retry_after: Option<u32>,
}

/// Seconds a client is asked to wait after a transient storage failure: the backend's
/// client has already retried with backoff, so a short pause is enough to try again.
pub const STORAGE_RETRY_AFTER_S: u32 = 1;

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, asking the client to retry after `seconds`.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The thing a create names exists already. Core reports that as invalid input;
    /// to a client of this API it is a conflict with the current state.
    pub fn exists(what: &str, name: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{what} {name:?} already exists"),
        )
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the server log)",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            Error::Query { .. } => StatusCode::BAD_REQUEST,
            Error::Transform { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            // The daemon stood in for the client in front of a link's target.
            Error::Link { .. } => StatusCode::BAD_GATEWAY,
            _ if e.is_transient() => {
                tracing::warn!(error = %e, kind = e.kind(), "storage failed; the client may retry");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.kind(),
                    "the storage backend failed; try again shortly (details in the server log)",
                )
                .retry_after(STORAGE_RETRY_AFTER_S);
            }
            _ => {
                tracing::error!(error = %e, kind = e.kind(), "request failed");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.kind(),
                    format!("{} error (see the server log)", e.kind()),
                );
            }
        };
        // Not-found and conflict messages name the dataset by its storage URL; the
        // client named it by its dataset name, so the URL part is dropped.
        let message = match &e {
            Error::NotFound { what, .. } if *what == "dataset" => "dataset not found".to_owned(),
            Error::Conflict { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ApiError::new(status, e.kind(), message)
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_input"
        };
        // 415 and 422 from the extractor are a bad request to a client of this API.
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, kind, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_owned(),
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A JSON body extractor whose failures have the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query-string extractor with the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A path extractor with the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Answers errors raised by tower layers (timeout, concurrency) in the API's shape.
pub async fn layer_error(err: axum::BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long",
        )
    } else {
        ApiError::internal(err)
    }
}
