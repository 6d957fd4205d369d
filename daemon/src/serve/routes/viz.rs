//! The web visualizer's static assets (`daemon/assets/viz/`), embedded in the binary.
//!
//! `GET /` answers `index.html`, which names every other asset under
//! `/viz/<version>/<file>`; `<version>` is a hash of all the assets, so an asset URL
//! never changes meaning and is served `immutable`, while the page itself is
//! revalidated (`no-cache`, with an ETag). Files are looked up by exact name in a
//! fixed table: no path reaches the file system, so traversal finds nothing. The
//! assets need no token; the API calls the page makes keep their token rules.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::serve::error::{ApiError, Path};
use crate::serve::state::AppState;

/// (file name, media type, bytes) of every asset.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../assets/viz/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../assets/viz/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/api.js"),
    ),
    (
        "cache.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/cache.js"),
    ),
    (
        "render.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/render.js"),
    ),
    (
        "grid.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/grid.js"),
    ),
    (
        "sample.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../assets/viz/sample.js"),
    ),
];

/// The placeholder in `index.html` that becomes the assets' version.
const VERSION_MARK: &str = "__VIZ_VERSION__";

struct Built {
    version: String,
    index: Vec<u8>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut h = Sha256::new();
        for (name, _, bytes) in ASSETS {
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let version = hex::encode(&h.finalize()[..8]);
        let index = ASSETS
            .iter()
            .find(|(n, _, _)| *n == "index.html")
            .map(|(_, _, b)| String::from_utf8_lossy(b).replace(VERSION_MARK, &version))
            .unwrap_or_default()
            .into_bytes();
        Built { version, index }
    })
}

/// The version segment of the asset URLs this binary serves.
pub fn version() -> &'static str {
    &built().version
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/viz/{version}/{file}", get(asset))
}

/// Whether the request's `If-None-Match` names `etag`.
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn respond(
    headers: &HeaderMap,
    etag: String,
    cache: &'static str,
    ctype: &'static str,
    body: &'static [u8],
) -> Response {
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches(headers, &etag) {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (ETAG, etag_value),
                (CACHE_CONTROL, HeaderValue::from_static(cache)),
            ],
        )
            .into_response();
    }
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(ctype)),
            (ETAG, etag_value),
            (CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// The visualizer's page.
pub async fn index(headers: HeaderMap) -> Response {
    let b = built();
    respond(
        &headers,
        format!("\"{}\"", b.version),
        "no-cache",
        "text/html; charset=utf-8",
        &b.index,
    )
}

/// One asset of this binary's version.
pub async fn asset(
    headers: HeaderMap,
    Path((v, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if v != version() {
        return Err(ApiError::not_found(format!(
            "no visualizer assets of version {v:?} (this server has {})",
            version()
        )));
    }
    let (_, ctype, bytes) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == file && *n != "index.html")
        .ok_or_else(|| ApiError::not_found(format!("no visualizer asset {file:?}")))?;
    Ok(respond(
        &headers,
        format!("\"{v}-{file}\""),
        "public, max-age=31536000, immutable",
        ctype,
        bytes,
    ))
}
