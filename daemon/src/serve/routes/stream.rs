//! `POST /datasets/{name}/stream`: a training stream as Arrow IPC record batches.
//!
//! The request names a view (a ref, a TQL query, a saved view or a list of rows), the
//! tensors, the batch size, the order (sequential or a seeded shuffle), this reader's
//! part (rank of a world, worker of a rank), the cursor to resume from and the
//! transforms. The stream is opened and its first batch built before the answer
//! starts, so a bad request or unreadable data is a 4xx/5xx with the usual error body;
//! after that, batches go out as they are ready (`serve::arrow_stream` has the wire
//! form). A failure midway ends the body early, logged with its cause; the schema
//! announces the row count, so the client notices.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use deeplake_core::Dtype;
use deeplake_core::stream::{Cursor, Order, Part, Ragged, Stream, StreamSpec, Transform};
use deeplake_core::tql::ast::Query as Tql;
use deeplake_core::tql::{self, QueryOptions};
use deeplake_core::version::Ref;
use serde::Deserialize;
use utoipa::ToSchema;

use super::query::check_sources;
use crate::serve::arrow::{self, ARROW_STREAM, Kind};
use crate::serve::arrow_stream::StreamEncoder;
use crate::serve::auth::{Caller, Scope};
use crate::serve::error::{ApiError, ErrorBody, Json, Path};
use crate::serve::state::{AppState, DatasetName, parse_ref};

/// Rows per batch by default, and at most.
const DEFAULT_BATCH: usize = 32;
const MAX_BATCH: usize = 1 << 16;
/// Rows of the shuffle buffer by default.
const DEFAULT_SHUFFLE_BUFFER: usize = 2048;
/// Prefetch budget by default, and at most (MiB).
const DEFAULT_PREFETCH_MB: usize = 256;
const MAX_PREFETCH_MB: usize = 8 << 10;
/// The most bytes one batch may take when transforms fix its rows' size (rows of
/// `height x width`, up to 4 channels of 8 bytes).
const MAX_BATCH_BYTES: usize = 1 << 30;

pub fn router() -> Router<AppState> {
    Router::new().route("/datasets/{name}/stream", post(stream))
}

/// One transform: `{"resize": {"height": 224, "width": 224}}`, `{"flip": {"p": 0.5}}`,
/// `{"normalize": {"mean": [..], "std": [..]}}`, `{"cast": {"dtype": "float32"}}`, ...
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformSpec {
    Resize { height: usize, width: usize },
    CenterCrop { height: usize, width: usize },
    RandomCrop { height: usize, width: usize },
    Flip { p: Option<f64> },
    Normalize { mean: Vec<f32>, std: Vec<f32> },
    Cast { dtype: String },
}

impl TransformSpec {
    fn to_core(&self) -> Result<Transform, ApiError> {
        Ok(match self {
            TransformSpec::Resize { height, width } => Transform::Resize {
                height: *height,
                width: *width,
            },
            TransformSpec::CenterCrop { height, width } => Transform::CenterCrop {
                height: *height,
                width: *width,
            },
            TransformSpec::RandomCrop { height, width } => Transform::RandomCrop {
                height: *height,
                width: *width,
            },
            TransformSpec::Flip { p } => Transform::HorizontalFlip {
                p: p.unwrap_or(0.5),
            },
            TransformSpec::Normalize { mean, std } => Transform::Normalize {
                mean: mean.clone(),
                std: std.clone(),
            },
            TransformSpec::Cast { dtype } => Transform::Cast(
                dtype
                    .parse::<Dtype>()
                    .map_err(|_| ApiError::bad_request(format!("cast: unknown dtype {dtype:?}")))?,
            ),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// Branch, commit id or tag to read (default: the head of `main`).
    #[serde(rename = "ref")]
    pub r#ref: Option<String>,
    /// Stream the rows of this TQL query (run on `ref`).
    pub query: Option<String>,
    /// Stream the rows of this saved view (at the commit it names).
    pub view: Option<String>,
    /// Stream these rows, in this order.
    pub rows: Option<Vec<u64>>,
    /// Tensors to stream (default: every visible tensor).
    #[serde(default)]
    pub tensors: Vec<String>,
    /// Rows per batch (default 32, at most 65536).
    pub batch_size: Option<usize>,
    /// Shuffle: chunks, then rows through a buffer, seeded by `seed` and the epoch.
    #[serde(default)]
    pub shuffle: bool,
    #[serde(default)]
    pub seed: u64,
    /// Rows of the shuffle buffer (default 2048).
    pub shuffle_buffer: Option<usize>,
    /// This reader's rank and the number of ranks (default 0 of 1).
    #[serde(default)]
    pub rank: u32,
    pub world_size: Option<u32>,
    /// This reader's worker within its rank and the number of workers (default 0 of 1).
    #[serde(default)]
    pub worker: u32,
    pub num_workers: Option<u32>,
    /// Give every part the same number of rows (wrapping around), for data-parallel jobs.
    #[serde(default)]
    pub even: bool,
    /// Drop this part's last batch when it is short.
    #[serde(default)]
    pub drop_last: bool,
    /// The epoch to stream (default 0; a cursor names its own).
    pub epoch: Option<u64>,
    /// Resume from this cursor (`<epoch>:<offset>`, from a batch's `__cursor`).
    pub cursor: Option<String>,
    /// Decode images (default true); false sends their stored bytes.
    pub decode: Option<bool>,
    /// Transforms by tensor, applied in order.
    #[serde(default)]
    pub transforms: BTreeMap<String, Vec<TransformSpec>>,
    /// Rows of different shapes: "pad" (default; zero-padded, with each row's shape) or
    /// "list".
    pub ragged: Option<String>,
    /// Budget of batches prepared ahead (MiB, default 256).
    pub prefetch_mb: Option<usize>,
}

fn part(index: u32, count: Option<u32>, what: &str) -> Result<Part, ApiError> {
    Part::new(index, count.unwrap_or(1)).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// What a stream request asks for, checked before any dataset is opened.
#[derive(Debug)]
pub struct CheckedStream {
    /// The ref to read (a saved view names its own commit instead).
    pub r#ref: Option<Ref>,
    /// The query, parsed and refused if it names a dataset in FROM.
    pub query: Option<Tql>,
    pub batch_size: usize,
    pub prefetch_bytes: usize,
    pub ragged: Ragged,
    pub cursor: Cursor,
    pub order: Order,
    pub rank: Part,
    pub worker: Part,
    pub transforms: Vec<(String, Vec<Transform>)>,
}

impl StreamRequest {
    /// Checks everything the request says that needs no dataset: the route's first
    /// step, so a bad request is refused before any storage is read.
    pub fn check(&self) -> Result<CheckedStream, ApiError> {
        let chosen = [
            self.query.is_some(),
            self.view.is_some(),
            self.rows.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err(ApiError::bad_request(
                "give at most one of query, view and rows",
            ));
        }
        if self.view.is_some() && self.r#ref.is_some() {
            return Err(ApiError::bad_request(
                "a saved view reads the commit it names: give view or ref, not both",
            ));
        }
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH);
        if batch_size == 0 || batch_size > MAX_BATCH {
            return Err(ApiError::bad_request(format!(
                "batch_size {batch_size} is not within 1..={MAX_BATCH}"
            )));
        }
        let prefetch_mb = self.prefetch_mb.unwrap_or(DEFAULT_PREFETCH_MB);
        if prefetch_mb == 0 || prefetch_mb > MAX_PREFETCH_MB {
            return Err(ApiError::bad_request(format!(
                "prefetch_mb {prefetch_mb} is not within 1..={MAX_PREFETCH_MB}"
            )));
        }
        let ragged = match self.ragged.as_deref() {
            None | Some("pad") => Ragged::Pad,
            Some("list") => Ragged::List,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "ragged {other:?} is not one of pad, list"
                )));
            }
        };
        let cursor = match (&self.cursor, self.epoch) {
            (Some(c), _) => Cursor::parse(c)?,
            (None, e) => Cursor {
                epoch: e.unwrap_or(0),
                offset: 0,
            },
        };
        let query = match &self.query {
            Some(q) => {
                let parsed = tql::parser::parse(q)?;
                check_sources(&parsed)?;
                Some(parsed)
            }
            None => None,
        };
        let mut transforms = Vec::new();
        for (t, list) in &self.transforms {
            let list = list
                .iter()
                .map(TransformSpec::to_core)
                .collect::<Result<Vec<_>, _>>()?;
            for x in &list {
                x.validate()?;
                if let Transform::Resize { height, width }
                | Transform::CenterCrop { height, width }
                | Transform::RandomCrop { height, width } = x
                    && batch_size.saturating_mul(height * width * 4 * 8) > MAX_BATCH_BYTES
                {
                    return Err(ApiError::bad_request(format!(
                        "tensor {t:?}: batches of {batch_size} rows of {height}x{width} could exceed {} MiB; ask for smaller batches or sizes",
                        MAX_BATCH_BYTES >> 20
                    )));
                }
            }
            transforms.push((t.clone(), list));
        }
        let order = if self.shuffle {
            Order::Shuffle {
                seed: self.seed,
                buffer: self.shuffle_buffer.unwrap_or(DEFAULT_SHUFFLE_BUFFER).max(1),
            }
        } else {
            Order::Sequential
        };
        Ok(CheckedStream {
            r#ref: parse_ref(self.r#ref.as_deref())?,
            query,
            batch_size,
            prefetch_bytes: prefetch_mb << 20,
            ragged,
            cursor,
            order,
            rank: part(self.rank, self.world_size, "rank")?,
            worker: part(self.worker, self.num_workers, "worker")?,
            transforms,
        })
    }
}

/// Streams a view as Arrow IPC record batches.
#[utoipa::path(post, path = "/datasets/{name}/stream", tag = "stream", params(("name" = String, Path)),
    request_body = StreamRequest,
    responses((status = 200, description = "an Arrow IPC stream: __row, __cursor, then per tensor its column and <t>.shape; the schema metadata deeplake.rows_total gives the rows to expect",
            content((arrow::ArrowStream = "application/vnd.apache.arrow.stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stream(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<StreamRequest>,
) -> Result<Response, ApiError> {
    let name: DatasetName = name.parse()?;
    caller.require(Scope::Read, Some(name.as_str()))?;
    let checked = body.check()?;
    let batch_size = checked.batch_size;

    // The view: a saved view pins its commit; otherwise the ref (default main).
    let (ds, rows) = if let Some(id) = &body.view {
        let head = state.read(&name, None).await?;
        let v = head.load_view(id, &state.open_options()).await?;
        let commit = v
            .commit()
            .ok_or_else(|| ApiError::bad_request(format!("view {id:?} names no commit")))?
            .to_owned();
        let ds = state
            .read(&name, parse_ref(Some(&commit))?.as_ref())
            .await?;
        (ds, Some(v.indices))
    } else {
        let ds = state.read(&name, checked.r#ref.as_ref()).await?;
        let rows = match (&body.query, &body.rows) {
            (Some(q), _) => {
                let opts = QueryOptions {
                    seed: body.seed,
                    storage: state.inner.storage.clone(),
                };
                let res = tql::query(&ds, q, &opts).await?;
                Some(res.rows_of(&ds, "can be streamed")?)
            }
            (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        };
        (ds, rows)
    };

    let tensors = if body.tensors.is_empty() {
        ds.tensor_names()
    } else {
        body.tensors.clone()
    };
    let decode = body.decode.unwrap_or(true);
    let transforms = checked.transforms;
    let mut specs = Vec::with_capacity(tensors.len());
    for t in &tensors {
        // Link tensors stream their resolved targets (core's stream engine).
        let mut spec = if ds.tensor_htype(t)?.is_link {
            arrow::resolved_column_spec(&ds, t, decode)?
        } else {
            arrow::column_spec(&ds, t, decode)?
        };
        if let Some((_, list)) = transforms.iter().find(|(n, _)| n == t) {
            let Kind::Array(mut d) = spec.kind else {
                return Err(ApiError::bad_request(format!(
                    "tensor {t:?}: transforms apply to decoded arrays, and this tensor streams as {}",
                    spec.htype
                )));
            };
            for x in list {
                match x {
                    Transform::Normalize { .. } => d = Dtype::F32,
                    Transform::Cast(to) => d = *to,
                    _ => {}
                }
            }
            spec.kind = Kind::Array(d);
            spec.dtype = Some(d);
        }
        specs.push(spec);
    }
    let cursor = checked.cursor;
    let spec = StreamSpec {
        tensors,
        batch_size,
        order: checked.order,
        rank: checked.rank,
        worker: checked.worker,
        even: body.even,
        drop_last: body.drop_last,
        cursor,
        decode,
        transforms,
        ragged: checked.ragged,
        prefetch_bytes: checked.prefetch_bytes,
        ..StreamSpec::default()
    };
    let mut stream = Stream::open(ds, rows, spec).await?;
    let total = stream.rows_total();
    let mut enc = StreamEncoder::new(specs, total, cursor)?;
    // The first batch before the answer: its errors still get a status code.
    let first = match stream.next().await {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let label = name.as_str().to_owned();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut offset = cursor.offset;
        let mut pending = first;
        let mut bytes_out = 0u64;
        loop {
            let Some(batch) = pending.take() else {
                match stream.next().await {
                    Some(Ok(b)) => {
                        pending = Some(b);
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::error!(dataset = %label, error = %e, "stream failed midway");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                    None => break,
                }
            };
            let start = offset;
            offset += batch.rows.len() as u64;
            let encoded = tokio::task::spawn_blocking(move || {
                let out = enc.batch(&batch, start);
                (enc, out)
            })
            .await;
            let (e2, out) = match encoded {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(dataset = %label, error = %e, "stream encoder stopped");
                    return;
                }
            };
            enc = e2;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(dataset = %label, error = %e.message, "stream batch failed");
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            for chunk in out {
                bytes_out += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    tracing::info!(dataset = %label, "stream closed by the client");
                    return;
                }
            }
        }
        match enc.finish() {
            Ok(end) => {
                for chunk in end {
                    let _ = tx.send(Ok(chunk)).await;
                }
            }
            Err(e) => tracing::error!(dataset = %label, error = %e.message, "stream end failed"),
        }
        let st = stream.stats();
        tracing::info!(
            dataset = %label,
            rows = st.rows,
            batches = st.batches,
            bytes = bytes_out,
            peak_prefetch_bytes = st.peak_held,
            budget_bytes = st.budget,
            decoded_in_place = st.decoded_in_place,
            seconds = started.elapsed().as_secs_f64(),
            "stream finished"
        );
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok((
        [
            (CONTENT_TYPE, ARROW_STREAM.to_owned()),
            (
                axum::http::HeaderName::from_static("x-deeplake-rows-total"),
                total.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}
