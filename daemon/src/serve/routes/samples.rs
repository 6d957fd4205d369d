//! `/datasets/{name}/tensors/{tensor}/samples`: one sample or a slice, decoded to
//! JSON, as an Arrow IPC stream (`?format=arrow`, the mapping of `serve::arrow`), or
//! one sample's stored bytes (`?format=raw`: the original JPEG of a jpeg tensor).
//! Rendering runs on the blocking pool: arrays can be large.
//!
//! A sequence's row is a list of items (frames); `?frame=k` picks item `k`, so a player
//! fetches one frame at a time (`raw`: its stored bytes, with the row's frame count in
//! `X-Deeplake-Frames`; `json`: the decoded item).
//!
//! Link tensors resolve through the dataset's linker: `raw` answers the target's bytes
//! with their content type, `json` and `arrow` the decoded target (as an image tensor
//! would); `?format=link` gives the stored path and creds key instead. A target that
//! cannot be fetched is a 502 with the usual error body (the target without its query
//! string).

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
    /// `json` (default), `arrow` (an Arrow IPC stream of one row), `raw` (the stored
    /// bytes of one sample; a link's target bytes) or `link` (a link tensor's stored path
    /// and creds key, unresolved).
    pub format: Option<String>,
    /// With `format=arrow`: decode images to arrays (default true) or send their stored
    /// bytes as Binary.
    pub decode: Option<bool>,
    /// A sequence tensor's item (frame) of the row, from 0; with `format=raw` or `json`.
    pub frame: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SliceParams {
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    /// `json` (default), `arrow` (an Arrow IPC stream) or `link` (a link tensor's stored
    /// paths and creds keys, unresolved).
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
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, description = "a link's target could not be fetched", body = ErrorBody)))]
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
    let htype = ds.tensor_htype(tensor.as_str())?;
    let is_link = htype.is_link;
    if let Some(frame) = q.frame {
        if !htype.is_sequence || is_link {
            return Err(ApiError::bad_request(format!(
                "frame applies to sequence tensors of stored samples; {:?} is {htype}",
                tensor.as_str()
            )));
        }
        return one_frame(&ds, tensor.as_str(), index, frame, q.format.as_deref()).await;
    }
    match q.format.as_deref() {
        Some("link") => {
            let s = ds.read(tensor.as_str(), index).await?;
            Ok(Json(link_json(&s, tensor.as_str())?).into_response())
        }
        Some("raw") if is_link => raw_link(&ds, tensor.as_str(), index).await,
        None | Some("json") => {
            let s = if is_link {
                one_of(
                    ds.read_resolved(tensor.as_str(), index..index + 1, true)
                        .await?,
                )?
            } else {
                ds.read(tensor.as_str(), index).await?
            };
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
            Ok(stored_response(&ds, tensor.as_str(), &shape, bytes, None)?)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not one of json, arrow, raw, link"
        ))),
    }
}

/// Stored bytes of one sample (or frame) with their media type and shape headers.
fn stored_response(
    ds: &deeplake_core::Dataset,
    tensor: &str,
    shape: &[u64],
    bytes: bytes::Bytes,
    frames: Option<usize>,
) -> Result<Response, ApiError> {
    let meta = ds.tensor_meta(tensor)?;
    // Media players need the type: a browser plays `audio/wav` from a URL, not
    // `application/octet-stream`.
    let ctype = content_type(meta.sample_compression.as_deref().unwrap_or(""));
    let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
    let mut resp = (
        [
            (CONTENT_TYPE, ctype.to_owned()),
            (
                axum::http::HeaderName::from_static("x-deeplake-shape"),
                shape.join(","),
            ),
        ],
        bytes,
    )
        .into_response();
    if let Some(n) = frames {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_static("x-deeplake-frames"),
            axum::http::HeaderValue::from(n),
        );
    }
    Ok(resp)
}

/// Item `frame` of sequence row `index`: its stored bytes (`raw`) or decoded (`json`).
async fn one_frame(
    ds: &deeplake_core::Dataset,
    tensor: &str,
    index: u64,
    frame: u64,
    format: Option<&str>,
) -> Result<Response, ApiError> {
    let out_of_range = |n: usize| {
        ApiError::not_found(format!(
            "frame {frame} is out of range: row {index} of {tensor:?} has {n} frames"
        ))
    };
    match format {
        Some("raw") => {
            let mut items = ds.read_stored_items(tensor, index).await?;
            let n = items.len();
            let k = usize::try_from(frame).map_err(|_| out_of_range(n))?;
            if k >= n {
                return Err(out_of_range(n));
            }
            let (shape, bytes) = items.swap_remove(k);
            stored_response(ds, tensor, &shape, bytes, Some(n))
        }
        None | Some("json") => {
            let Sample::Sequence(mut items) = ds.read(tensor, index).await? else {
                return Err(out_of_range(0));
            };
            let n = items.len();
            let k = usize::try_from(frame).map_err(|_| out_of_range(n))?;
            if k >= n {
                return Err(out_of_range(n));
            }
            let item = items.swap_remove(k);
            let body = tokio::task::spawn_blocking(move || serde_json::to_vec(&sample_json(&item)))
                .await?
                .map_err(|e| ApiError::internal(format!("rendering row {index}: {e}")))?;
            let mut resp = ([(CONTENT_TYPE, "application/json")], body).into_response();
            resp.headers_mut().insert(
                axum::http::HeaderName::from_static("x-deeplake-frames"),
                axum::http::HeaderValue::from(n),
            );
            Ok(resp)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} does not apply to a frame: use raw or json"
        ))),
    }
}

/// Rows `start..end` of a tensor as JSON or as an Arrow IPC stream (at most 1000).
#[utoipa::path(get, path = "/datasets/{name}/tensors/{tensor}/samples", tag = "samples",
    params(("name" = String, Path), ("tensor" = String, Path), SliceParams),
    responses((status = 200, description = "JSON, or an Arrow IPC stream with format=arrow",
            content((SampleSlice = "application/json"), (arrow::ArrowStream = "application/vnd.apache.arrow.stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, description = "a link's target could not be fetched", body = ErrorBody)))]
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
    let is_link = ds.tensor_htype(tensor.as_str())?.is_link;
    match q.format.as_deref() {
        None | Some("json") => {}
        Some("arrow") => return arrow_rows(&ds, tensor.as_str(), start..end, q.decode).await,
        Some("link") => {
            let stored = ds.read_range(tensor.as_str(), start..end).await?;
            let samples = stored
                .iter()
                .map(|s| link_json(s, tensor.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Json(SampleSlice {
                start,
                end,
                samples,
            })
            .into_response());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of json, arrow, link"
            )));
        }
    }
    let samples = if is_link {
        ds.read_resolved(tensor.as_str(), start..end, true).await?
    } else {
        ds.read_range(tensor.as_str(), start..end).await?
    };
    let samples =
        tokio::task::spawn_blocking(move || samples.iter().map(sample_json).collect()).await?;
    Ok(Json(SampleSlice {
        start,
        end,
        samples,
    })
    .into_response())
}

/// The one sample of a one-row read.
fn one_of(mut v: Vec<Sample>) -> Result<Sample, ApiError> {
    v.pop()
        .ok_or_else(|| ApiError::internal("a read of one row returned none".to_owned()))
}

/// A link tensor's stored sample: `{"path", "creds_key"}` (a sequence: a list of them;
/// an empty link: null).
fn link_json(s: &Sample, tensor: &str) -> Result<Value, ApiError> {
    match s {
        Sample::Link { path, creds_key } if path.is_empty() && creds_key.is_none() => {
            Ok(Value::Null)
        }
        Sample::Link { path, creds_key } => Ok(json!({"path": path, "creds_key": creds_key})),
        Sample::Sequence(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| link_json(i, tensor))
                .collect::<Result<_, _>>()?,
        )),
        Sample::Empty => Ok(Value::Null),
        _ => Err(ApiError::bad_request(format!(
            "format link applies to link tensors; {tensor:?} is not one"
        ))),
    }
}

/// The media type of bytes of `codec`: a link target's sniffed codec, or a tensor's
/// sample compression.
fn content_type(codec: &str) -> &'static str {
    match codec {
        "jpeg" | "jpg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "tiff" => "image/tiff",
        "mp4" => "video/mp4",
        "mkv" => "video/x-matroska",
        "avi" => "video/x-msvideo",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

/// `format=raw` of a link: the target's bytes as fetched.
async fn raw_link(
    ds: &deeplake_core::Dataset,
    tensor: &str,
    index: u64,
) -> Result<Response, ApiError> {
    match one_of(ds.read_resolved(tensor, index..index + 1, false).await?)? {
        Sample::Encoded {
            bytes,
            compression,
            shape,
        } => {
            let shape: Vec<String> = shape
                .unwrap_or_default()
                .iter()
                .map(usize::to_string)
                .collect();
            Ok((
                [
                    (CONTENT_TYPE, content_type(compression.name()).to_owned()),
                    (
                        axum::http::HeaderName::from_static("x-deeplake-shape"),
                        shape.join(","),
                    ),
                ],
                bytes,
            )
                .into_response())
        }
        // Bytes of no known codec come back as a u8 array of the file.
        Sample::Array(a) => Ok((
            [(CONTENT_TYPE, "application/octet-stream".to_owned())],
            a.data,
        )
            .into_response()),
        Sample::Empty => Err(ApiError::not_found(format!(
            "row {index} of {tensor:?} holds no link"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "format raw reads one target; {tensor:?} is a sequence (use json or arrow)"
        ))),
    }
}

/// Rows `range` of one tensor as an Arrow IPC stream.
async fn arrow_rows(
    ds: &deeplake_core::Dataset,
    tensor: &str,
    range: std::ops::Range<u64>,
    decode: Option<bool>,
) -> Result<Response, ApiError> {
    let decode = decode.unwrap_or(true);
    let (spec, samples) = if ds.tensor_htype(tensor)?.is_link {
        // The targets, mapped as the inner htype's samples would be.
        let spec = arrow::resolved_column_spec(ds, tensor, decode)?;
        (spec, ds.read_resolved(tensor, range, decode).await?)
    } else {
        let opts = deeplake_core::dataset::ReadOptions {
            decode,
            ..Default::default()
        };
        (
            arrow::column_spec(ds, tensor, decode)?,
            ds.read_range_with(tensor, range, &opts).await?,
        )
    };
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
