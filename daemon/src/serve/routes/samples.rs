//! `/datasets/{name}/tensors/{tensor}/samples`: one sample or a slice, decoded to
//! JSON, as an Arrow IPC stream (`?format=arrow`, the mapping of `serve::arrow`), or
//! one sample's stored bytes (`?format=raw`: the original JPEG of a jpeg tensor).
//! Rendering runs on the blocking pool: arrays can be large.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deeplake_core::Sample;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::serve::arrow;
use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::serve::state::{AppState, DatasetName, parse_ref};

/// Rows one slice request may return.
pub const MAX_SLICE: u64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets/{name}/tensors/{tensor}/samples", get(slice))
        .route(
            "/datasets/{name}/tensors/{tensor}/samples/{index}",
            get(one),
        )
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SampleParams {
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
    /// `json` (default), `arrow` (an Arrow IPC stream of one row) or `raw` (the stored
    /// bytes of one sample).
    pub format: Option<String>,
    /// With `format=arrow`: decode images to arrays (default true) or send their stored
    /// bytes as Binary.
    pub decode: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SliceParams {
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// `json` (default) or `arrow` (an Arrow IPC stream).
    pub format: Option<String>,
    /// With `format=arrow`: decode images to arrays (default true) or send their stored
    /// bytes as Binary.
    pub decode: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleSlice {
    pub start: u64,
    pub end: u64,
    /// One JSON value per row (see `GET .../samples/{index}`).
    #[schema(value_type = Vec<Object>)]
    pub samples: Vec<Value>,
}

fn nested(a: &deeplake_core::NdArray) -> Value {
    crate::cli::dump::nested(a)
}

/// Samples of at most this many elements are rendered to JSON on the request's task
/// (a 64x64 RGB image is 12,288).
const INLINE_RENDER_ELEMENTS: usize = 16 << 10;

/// Elements (or bytes, for text-like samples) that rendering `s` walks.
fn sample_elements(s: &Sample) -> usize {
    match s {
        Sample::Array(a) => a.num_elements(),
        Sample::Text(t) => t.len(),
        Sample::Link { path, .. } => path.len(),
        Sample::Encoded { .. } | Sample::Empty => 0,
        // Trees: no cheap bound, so they always go to the pool.
        Sample::Json(_) | Sample::List(_) | Sample::Polygons(_) | Sample::Sequence(_) => usize::MAX,
    }
}

/// The text of [`sample_json`] for an array, written without building its tree (keys
/// in the order the map gives them).
fn array_json(a: &deeplake_core::NdArray) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"data\":");
    crate::cli::dump::write_nested(a, &mut out);
    out.extend_from_slice(b",\"dtype\":\"");
    out.extend_from_slice(a.dtype.name().as_bytes());
    out.extend_from_slice(b"\",\"shape\":[");
    for (i, d) in a.shape.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(itoa::Buffer::new().format(*d).as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

/// A decoded sample as JSON: arrays as `{shape, dtype, data}` (data nested lists),
/// text, JSON and lists as themselves, links as their path, empty as null.
pub fn sample_json(s: &Sample) -> Value {
    match s {
        Sample::Array(a) => json!({"shape": a.shape, "dtype": a.dtype.name(), "data": nested(a)}),
        Sample::Encoded {
            compression, shape, ..
        } => json!({"shape": shape, "compression": compression.name()}),
        Sample::Text(t) => json!(t),
        Sample::Json(v) => v.clone(),
        Sample::List(l) => Value::Array(l.clone()),
        Sample::Link { path, .. } => json!(path),
        Sample::Polygons(p) => Value::Array(p.iter().map(nested).collect()),
        Sample::Sequence(items) => Value::Array(items.iter().map(sample_json).collect()),
        Sample::Empty => Value::Null,
    }
}

fn check_len(len: u64, index: u64) -> Result<(), ApiError> {
    if index >= len {
        return Err(ApiError::not_found(format!(
            "row {index} is out of range for a tensor of {len} rows"
        )));
    }
    Ok(())
}

/// One sample, as JSON or as its stored bytes.
#[utoipa::path(get, path = "/datasets/{name}/tensors/{tensor}/samples/{index}", tag = "samples",
    params(("name" = String, Path), ("tensor" = String, Path), ("index" = u64, Path), SampleParams),
    responses((status = 200, description = "the sample as JSON, an Arrow IPC stream with format=arrow, or its stored bytes with format=raw",
            content((Object = "application/json"), (arrow::ArrowStream = "application/vnd.apache.arrow.stream"),
                (arrow::ArrowStream = "application/octet-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, tensor, index)): Path<(String, String, u64)>,
    Query(q): Query<SampleParams>,
) -> Result<Response, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let tensor: deeplake_core::ids::TensorName = tensor.parse()?;
    let r = parse_ref(q.r#ref.as_deref())?;
    let ds = state.read(&name, r.as_ref()).await?;
    check_len(ds.tensor_len(tensor.as_str())?, index)?;
    match q.format.as_deref() {
        None | Some("json") => {
            let s = ds.read(tensor.as_str(), index).await?;
            let inline = sample_elements(&s) <= INLINE_RENDER_ELEMENTS;
            let render = move || match &s {
                Sample::Array(a) => Ok(array_json(a)),
                other => serde_json::to_vec(&sample_json(other)),
            };
            // Arrays are written without an intermediate tree. A small sample renders in
            // tens of microseconds, less than the hand-off to the blocking pool costs;
            // larger ones are rendered there, off the reactor.
            let body = if inline {
                render()
            } else {
                tokio::task::spawn_blocking(render).await?
            }
            .map_err(|e| ApiError::internal(format!("rendering row {index}: {e}")))?;
            Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
        }
        Some("arrow") => arrow_rows(&ds, tensor.as_str(), index..index + 1, q.decode).await,
        Some("raw") => {
            let (shape, bytes) = ds.read_stored(tensor.as_str(), index).await?;
            let meta = ds.tensor_meta(tensor.as_str())?;
            let ctype = match meta.sample_compression.as_deref() {
                Some("jpeg" | "jpg") => "image/jpeg",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
            Ok((
                [
                    (CONTENT_TYPE, ctype.to_owned()),
                    (
                        axum::http::HeaderName::from_static("x-deeplake-shape"),
                        shape.join(","),
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not one of json, arrow, raw"
        ))),
    }
}

/// Rows `start..end` of a tensor as JSON or as an Arrow IPC stream (at most 1000).
#[utoipa::path(get, path = "/datasets/{name}/tensors/{tensor}/samples", tag = "samples",
    params(("name" = String, Path), ("tensor" = String, Path), SliceParams),
    responses((status = 200, description = "JSON, or an Arrow IPC stream with format=arrow",
            content((SampleSlice = "application/json"), (arrow::ArrowStream = "application/vnd.apache.arrow.stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn slice(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path((name, tensor)): Path<(String, String)>,
    Query(q): Query<SliceParams>,
) -> Result<Response, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let tensor: deeplake_core::ids::TensorName = tensor.parse()?;
    let r = parse_ref(q.r#ref.as_deref())?;
    let ds = state.read(&name, r.as_ref()).await?;
    let len = ds.tensor_len(tensor.as_str())?;
    let start = q.start.unwrap_or(0);
    let end = q.end.unwrap_or(len).min(len);
    if start > end {
        return Err(ApiError::bad_request(format!(
            "start {start} is after end {end}"
        )));
    }
    if end - start > MAX_SLICE {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_SLICE} rows per request; ask for a smaller slice"
        )));
    }
    match q.format.as_deref() {
        None | Some("json") => {}
        Some("arrow") => return arrow_rows(&ds, tensor.as_str(), start..end, q.decode).await,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of json, arrow"
            )));
        }
    }
    let samples = ds.read_range(tensor.as_str(), start..end).await?;
    let samples =
        tokio::task::spawn_blocking(move || samples.iter().map(sample_json).collect()).await?;
    Ok(Json(SampleSlice {
        start,
        end,
        samples,
    })
    .into_response())
}

/// Rows `range` of one tensor as an Arrow IPC stream.
async fn arrow_rows(
    ds: &deeplake_core::Dataset,
    tensor: &str,
    range: std::ops::Range<u64>,
    decode: Option<bool>,
) -> Result<Response, ApiError> {
    let decode = decode.unwrap_or(true);
    let spec = arrow::column_spec(ds, tensor, decode)?;
    let opts = deeplake_core::dataset::ReadOptions {
        decode,
        ..Default::default()
    };
    let samples = ds.read_range_with(tensor, range, &opts).await?;
    let page = arrow::Page {
        rows: None,
        tensors: vec![(spec, samples)],
        computed: Vec::new(),
    };
    let bytes = tokio::task::spawn_blocking(move || arrow::encode(page)).await??;
    Ok(arrow_response(bytes))
}

/// An Arrow IPC stream response.
pub fn arrow_response(bytes: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, arrow::ARROW_STREAM)], bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deeplake_core::NdArray;

    #[test]
    fn array_json_is_the_text_of_sample_json() {
        for a in [
            NdArray::from_slice(vec![2, 2, 3], &(0..12u8).collect::<Vec<_>>()).unwrap(),
            NdArray::from_slice(vec![3], &[1.5f32, f32::NAN, -0.1]).unwrap(),
            NdArray::scalar(7u32),
            NdArray::from_slice(vec![0], &[] as &[i64]).unwrap(),
        ] {
            let want = serde_json::to_vec(&sample_json(&Sample::Array(a.clone()))).unwrap();
            assert_eq!(
                String::from_utf8(array_json(&a)).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
