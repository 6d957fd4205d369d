//! The Arrow IPC wire form of samples: one mapping, used to answer reads and queries
//! and to take appends (`application/vnd.apache.arrow.stream`, the IPC *stream*
//! format).
//!
//! | tensor (from its meta)                          | column `<t>`                 | `<t>.shape`    |
//! |-------------------------------------------------|------------------------------|----------------|
//! | numeric arrays, decoded images (uint8 HWC)      | `List<dtype>`, row-major     | `List<UInt32>` |
//! | class_label with at most one label per row      | the dtype (an integer)       | -              |
//! | sample-compressed, read with `decode=false`     | `Binary` (the stored bytes)  | `List<UInt32>` |
//! | text; link (its path)                           | `Utf8`                       | -              |
//! | json, list, tag, polygon, sequence              | `Utf8` holding JSON          | -              |
//!
//! An empty sample is null in both columns. Every tensor field carries metadata:
//! `deeplake.htype`, `deeplake.dtype`, `deeplake.kind` (`array`, `scalar`, `binary`,
//! `text`, `json`) and, for binary, `deeplake.compression`; a shape field carries
//! `deeplake.shape_of`. Query pages add `__row` (UInt64, the source row) first, and
//! computed select columns as `Utf8` JSON.
//!
//! Appends read the same mapping back, driven by each column's Arrow type: `List` or
//! `FixedSizeList` of the tensor's exact dtype (shape from `<t>.shape`, else 1-d), a bare
//! primitive (shape `[1]`), `Binary` (stored bytes in the tensor's sample compression),
//! `Utf8` (text, link path, or JSON for json/list tensors), nulls as empty samples.
//! Encoding and decoding are CPU work: callers run them on the blocking pool.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, ListBuilder, StringBuilder, UInt32Builder};
use arrow_array::types::{
    ArrowPrimitiveType, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeListArray, LargeBinaryArray,
    LargeStringArray, ListArray, PrimitiveArray, RecordBatch, StringArray, UInt64Array,
};
use arrow_buffer::{Buffer, MutableBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use axum::http::StatusCode;
use deeplake_core::format::compression::Compression;
use deeplake_core::format::htype::BaseHtype;
use deeplake_core::{Dataset, Dtype, NdArray, Sample};

use super::error::ApiError;
use super::routes::samples::sample_json;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// An Arrow IPC stream: `__row` for query pages, then per tensor `<t>` (a List of its
/// dtype, an integer, Utf8 or Binary) and `<t>.shape` (List<UInt32>); docs/daemon.md
/// gives the whole mapping.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ArrowStream(pub Vec<u8>);

/// How a tensor's samples become a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Array(Dtype),
    Scalar(Dtype),
    Binary(String),
    Text,
    Json,
}

/// A tensor's column: its name, what the meta says, and how it maps.
#[derive(Clone, Debug)]
pub struct ColumnSpec {
    pub name: String,
    pub htype: String,
    pub dtype: Option<Dtype>,
    pub base: BaseHtype,
    pub is_link: bool,
    pub is_sequence: bool,
    pub kind: Kind,
}

/// The column mapping of `tensor` (module docs); `decode` false sends stored bytes of
/// sample-compressed tensors.
pub fn column_spec(ds: &Dataset, tensor: &str, decode: bool) -> Result<ColumnSpec, ApiError> {
    let h = ds.tensor_htype(tensor)?;
    let meta = ds.tensor_meta(tensor)?;
    let image = matches!(
        h.base,
        BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray
    );
    let dtype = meta
        .dtype
        .as_deref()
        .and_then(|d| d.parse::<Dtype>().ok())
        .or(image.then_some(Dtype::U8));
    let kind = if h.is_sequence
        || matches!(
            h.base,
            BaseHtype::Polygon | BaseHtype::List | BaseHtype::Tag | BaseHtype::Json
        ) {
        Kind::Json
    } else if h.is_link || h.base == BaseHtype::Text {
        Kind::Text
    } else if let (Some(c), false) = (&meta.sample_compression, decode) {
        Kind::Binary(c.clone())
    } else if let Some(d) = dtype {
        let one_label = meta.max_shape.len() <= 1 && meta.max_shape.iter().all(|&n| n <= 1);
        if h.base == BaseHtype::ClassLabel && one_label {
            Kind::Scalar(d)
        } else {
            Kind::Array(d)
        }
    } else {
        // No dtype yet (a generic tensor never written): nothing numeric to promise.
        Kind::Json
    };
    Ok(ColumnSpec {
        name: tensor.to_owned(),
        htype: meta.htype.clone(),
        dtype,
        base: h.base,
        is_link: h.is_link,
        is_sequence: h.is_sequence,
        kind,
    })
}

/// The column mapping of a link tensor's resolved targets: what a tensor of its inner
/// htype would map to (images: uint8 arrays, or with `decode` false their bytes).
pub fn resolved_column_spec(
    ds: &Dataset,
    tensor: &str,
    decode: bool,
) -> Result<ColumnSpec, ApiError> {
    let mut spec = column_spec(ds, tensor, decode)?;
    let meta = ds.tensor_meta(tensor)?;
    spec.is_link = false;
    spec.kind = if spec.is_sequence {
        Kind::Json
    } else if !decode {
        Kind::Binary(
            meta.sample_compression
                .clone()
                .unwrap_or_else(|| "none".to_owned()),
        )
    } else {
        Kind::Array(spec.dtype.unwrap_or(Dtype::U8))
    };
    Ok(spec)
}

fn arrow_type(d: Dtype) -> DataType {
    match d {
        Dtype::Bool => DataType::Boolean,
        Dtype::U8 => DataType::UInt8,
        Dtype::U16 => DataType::UInt16,
        Dtype::U32 => DataType::UInt32,
        Dtype::U64 => DataType::UInt64,
        Dtype::I8 => DataType::Int8,
        Dtype::I16 => DataType::Int16,
        Dtype::I32 => DataType::Int32,
        Dtype::I64 => DataType::Int64,
        Dtype::F16 => DataType::Float16,
        Dtype::F32 => DataType::Float32,
        Dtype::F64 => DataType::Float64,
    }
}

fn dtype_of(t: &DataType) -> Option<Dtype> {
    Some(match t {
        DataType::Boolean => Dtype::Bool,
        DataType::UInt8 => Dtype::U8,
        DataType::UInt16 => Dtype::U16,
        DataType::UInt32 => Dtype::U32,
        DataType::UInt64 => Dtype::U64,
        DataType::Int8 => Dtype::I8,
        DataType::Int16 => Dtype::I16,
        DataType::Int32 => Dtype::I32,
        DataType::Int64 => Dtype::I64,
        DataType::Float16 => Dtype::F16,
        DataType::Float32 => Dtype::F32,
        DataType::Float64 => Dtype::F64,
        _ => return None,
    })
}

pub(crate) fn item_field(d: Dtype) -> Arc<Field> {
    Arc::new(Field::new("item", arrow_type(d), true))
}

pub(crate) fn shape_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt32, true)))
}

fn unsupported(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported", message)
}

/// A primitive array over little-endian element bytes (the layout of [`NdArray`] data).
pub(crate) fn primitive(d: Dtype, bytes: &[u8]) -> ArrayRef {
    fn prim<T: ArrowPrimitiveType>(bytes: &[u8]) -> ArrayRef {
        let n = bytes.len() / std::mem::size_of::<T::Native>();
        // A fresh MutableBuffer is aligned for every native type; the element bytes may
        // not be.
        let mut mb = MutableBuffer::new(bytes.len());
        mb.extend_from_slice(bytes);
        let values = ScalarBuffer::<T::Native>::new(Buffer::from(mb), 0, n);
        Arc::new(PrimitiveArray::<T>::new(values, None))
    }
    match d {
        Dtype::Bool => Arc::new(BooleanArray::from(
            bytes.iter().map(|b| *b != 0).collect::<Vec<bool>>(),
        )),
        Dtype::U8 => prim::<UInt8Type>(bytes),
        Dtype::U16 => prim::<UInt16Type>(bytes),
        Dtype::U32 => prim::<UInt32Type>(bytes),
        Dtype::U64 => prim::<UInt64Type>(bytes),
        Dtype::I8 => prim::<Int8Type>(bytes),
        Dtype::I16 => prim::<Int16Type>(bytes),
        Dtype::I32 => prim::<Int32Type>(bytes),
        Dtype::I64 => prim::<Int64Type>(bytes),
        Dtype::F16 => prim::<Float16Type>(bytes),
        Dtype::F32 => prim::<Float32Type>(bytes),
        Dtype::F64 => prim::<Float64Type>(bytes),
    }
}

/// [`primitive`] over shared bytes: no copy when they are aligned for the element type
/// (always for bytes, the dtype of decoded images), a copy otherwise.
pub(crate) fn primitive_shared(d: Dtype, bytes: &bytes::Bytes) -> ArrayRef {
    fn prim<T: ArrowPrimitiveType>(bytes: &bytes::Bytes) -> ArrayRef {
        let size = std::mem::size_of::<T::Native>();
        let n = bytes.len() / size;
        let values = ScalarBuffer::<T::Native>::new(Buffer::from(bytes.clone()), 0, n);
        Arc::new(PrimitiveArray::<T>::new(values, None))
    }
    let aligned = bytes.as_ptr().align_offset(d.size().max(1)) == 0;
    match d {
        Dtype::U8 => prim::<UInt8Type>(bytes),
        Dtype::I8 => prim::<Int8Type>(bytes),
        Dtype::U16 if aligned => prim::<UInt16Type>(bytes),
        Dtype::U32 if aligned => prim::<UInt32Type>(bytes),
        Dtype::U64 if aligned => prim::<UInt64Type>(bytes),
        Dtype::I16 if aligned => prim::<Int16Type>(bytes),
        Dtype::I32 if aligned => prim::<Int32Type>(bytes),
        Dtype::I64 if aligned => prim::<Int64Type>(bytes),
        Dtype::F16 if aligned => prim::<Float16Type>(bytes),
        Dtype::F32 if aligned => prim::<Float32Type>(bytes),
        Dtype::F64 if aligned => prim::<Float64Type>(bytes),
        _ => primitive(d, bytes),
    }
}

/// Appends one row's shape (or a null) to a shape column.
pub(crate) fn push_shape(
    b: &mut ListBuilder<UInt32Builder>,
    shape: Option<&[usize]>,
) -> Result<(), ApiError> {
    match shape {
        Some(s) => {
            for &d in s {
                let d = u32::try_from(d)
                    .map_err(|_| ApiError::internal(format!("dimension {d} exceeds u32")))?;
                b.values().append_value(d);
            }
            b.append(true);
        }
        None => b.append(false),
    }
    Ok(())
}

pub(crate) fn offset(n: usize) -> Result<i32, ApiError> {
    i32::try_from(n).map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the page's values exceed one Arrow list column (2 GiB); ask for fewer rows",
        )
    })
}

/// The column (and shape column) of `samples` under `spec`.
pub(crate) fn encode_column(
    spec: &ColumnSpec,
    samples: &[Sample],
) -> Result<(ArrayRef, Option<ArrayRef>), ApiError> {
    let t = &spec.name;
    match &spec.kind {
        Kind::Array(d) => {
            let mut bytes = Vec::new();
            let mut offsets = vec![0i32];
            let mut valid = Vec::with_capacity(samples.len());
            let mut shapes = ListBuilder::new(UInt32Builder::new());
            for (r, s) in samples.iter().enumerate() {
                match s {
                    Sample::Array(a) => {
                        let a = if a.dtype == *d { a.clone() } else { a.cast(*d) };
                        bytes.extend_from_slice(&a.data);
                        offsets.push(offset(bytes.len() / d.size())?);
                        valid.push(true);
                        push_shape(&mut shapes, Some(&a.shape))?;
                    }
                    Sample::Empty => {
                        offsets.push(offset(bytes.len() / d.size())?);
                        valid.push(false);
                        push_shape(&mut shapes, None)?;
                    }
                    _ => {
                        return Err(unsupported(format!(
                            "tensor {t:?}, row {r}: the sample is not a decodable array; ask with decode=false"
                        )));
                    }
                }
            }
            let list = ListArray::try_new(
                item_field(*d),
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                primitive(*d, &bytes),
                Some(NullBuffer::from(valid)),
            )
            .map_err(ApiError::internal)?;
            Ok((Arc::new(list), Some(Arc::new(shapes.finish()))))
        }
        Kind::Scalar(d) => {
            let mut bytes = Vec::with_capacity(samples.len() * d.size());
            let mut valid = Vec::with_capacity(samples.len());
            for (r, s) in samples.iter().enumerate() {
                match s {
                    Sample::Array(a) if a.num_elements() == 1 => {
                        let a = if a.dtype == *d { a.clone() } else { a.cast(*d) };
                        bytes.extend_from_slice(&a.data);
                        valid.push(true);
                    }
                    Sample::Empty | Sample::Array(_) if s_is_empty(s) => {
                        bytes.extend(std::iter::repeat_n(0u8, d.size()));
                        valid.push(false);
                    }
                    _ => {
                        return Err(ApiError::internal(format!(
                            "tensor {t:?}, row {r}: a class label row holds more than one label"
                        )));
                    }
                }
            }
            let values = primitive(*d, &bytes);
            let data = values
                .to_data()
                .into_builder()
                .nulls(Some(NullBuffer::from(valid)))
                .build()
                .map_err(ApiError::internal)?;
            Ok((arrow_array::make_array(data), None))
        }
        Kind::Binary(_) => {
            let mut b = BinaryBuilder::new();
            let mut shapes = ListBuilder::new(UInt32Builder::new());
            for (r, s) in samples.iter().enumerate() {
                match s {
                    Sample::Encoded { bytes, shape, .. } => {
                        b.append_value(bytes);
                        push_shape(&mut shapes, shape.as_deref())?;
                    }
                    Sample::Empty => {
                        b.append_null();
                        push_shape(&mut shapes, None)?;
                    }
                    _ => {
                        return Err(ApiError::internal(format!(
                            "tensor {t:?}, row {r}: expected stored bytes"
                        )));
                    }
                }
            }
            Ok((Arc::new(b.finish()), Some(Arc::new(shapes.finish()))))
        }
        Kind::Text => {
            let mut b = StringBuilder::new();
            for s in samples {
                match s {
                    Sample::Text(x) => b.append_value(x),
                    Sample::Link { path, .. } => b.append_value(path),
                    Sample::Empty => b.append_null(),
                    other => b.append_value(sample_json(other).to_string()),
                }
            }
            Ok((Arc::new(b.finish()), None))
        }
        Kind::Json => {
            let mut b = StringBuilder::new();
            for s in samples {
                match s {
                    Sample::Empty => b.append_null(),
                    other => b.append_value(sample_json(other).to_string()),
                }
            }
            Ok((Arc::new(b.finish()), None))
        }
    }
}

fn s_is_empty(s: &Sample) -> bool {
    match s {
        Sample::Empty => true,
        Sample::Array(a) => a.num_elements() == 0,
        _ => false,
    }
}

pub(crate) fn tensor_field(spec: &ColumnSpec, data_type: DataType) -> Field {
    let (kind, compression) = match &spec.kind {
        Kind::Array(_) => ("array", None),
        Kind::Scalar(_) => ("scalar", None),
        Kind::Binary(c) => ("binary", Some(c.clone())),
        Kind::Text => ("text", None),
        Kind::Json => ("json", None),
    };
    let mut md = HashMap::from([
        ("deeplake.htype".to_owned(), spec.htype.clone()),
        (
            "deeplake.dtype".to_owned(),
            spec.dtype.map(|d| d.name().to_owned()).unwrap_or_default(),
        ),
        ("deeplake.kind".to_owned(), kind.to_owned()),
    ]);
    if let Some(c) = compression {
        md.insert("deeplake.compression".to_owned(), c);
    }
    Field::new(&spec.name, data_type, true).with_metadata(md)
}

/// Rows of a page or slice, column by column.
pub struct Page {
    /// The `__row` column (query pages only).
    pub rows: Option<Vec<u64>>,
    /// A tensor's spec and one sample per row.
    pub tensors: Vec<(ColumnSpec, Vec<Sample>)>,
    /// Computed select columns: one JSON text (or null) per row.
    pub computed: Vec<(String, Vec<Option<String>>)>,
}

/// The page as an Arrow IPC stream of one record batch.
pub fn encode(page: Page) -> Result<Vec<u8>, ApiError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    if let Some(rows) = page.rows {
        fields.push(
            Field::new("__row", DataType::UInt64, false).with_metadata(HashMap::from([(
                "deeplake.kind".to_owned(),
                "row".to_owned(),
            )])),
        );
        columns.push(Arc::new(UInt64Array::from(rows)));
    }
    for (spec, samples) in &page.tensors {
        let (col, shape) = encode_column(spec, samples)?;
        fields.push(tensor_field(spec, col.data_type().clone()));
        columns.push(col);
        if let Some(shape) = shape {
            fields.push(
                Field::new(format!("{}.shape", spec.name), shape_type(), true).with_metadata(
                    HashMap::from([("deeplake.shape_of".to_owned(), spec.name.clone())]),
                ),
            );
            columns.push(shape);
        }
    }
    for (name, vals) in page.computed {
        fields.push(
            Field::new(&name, DataType::Utf8, true).with_metadata(HashMap::from([(
                "deeplake.kind".to_owned(),
                "json".to_owned(),
            )])),
        );
        columns.push(Arc::new(StringArray::from(vals)));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = if columns.is_empty() {
        RecordBatch::new_empty(schema.clone())
    } else {
        RecordBatch::try_new(schema.clone(), columns).map_err(ApiError::internal)?
    };
    let mut out = Vec::new();
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).map_err(ApiError::internal)?;
    w.write(&batch).map_err(ApiError::internal)?;
    w.finish().map_err(ApiError::internal)?;
    drop(w);
    Ok(out)
}

// ------------------------------------------------------------------ appends

fn bad(tensor: &str, row: Option<usize>, message: impl std::fmt::Display) -> ApiError {
    match row {
        Some(r) => ApiError::bad_request(format!("tensor {tensor:?}, row {r}: {message}")),
        None => ApiError::bad_request(format!("tensor {tensor:?}: {message}")),
    }
}

/// Element bytes of row `r` of a primitive array, as [`NdArray`] data.
fn element_bytes(values: &dyn Array, d: Dtype, start: usize, len: usize) -> Vec<u8> {
    if d == Dtype::Bool {
        let b = values.as_any().downcast_ref::<BooleanArray>();
        return (start..start + len)
            .map(|i| u8::from(b.is_some_and(|b| b.value(i))))
            .collect();
    }
    let data = values.to_data();
    let size = d.size();
    let buf = &data.buffers()[0];
    let from = (data.offset() + start) * size;
    buf.as_slice()[from..from + len * size].to_vec()
}

/// A list cell's values must all be present: a tensor element cannot be missing.
fn check_no_nulls(values: &dyn Array, start: usize, len: usize) -> bool {
    values.null_count() == 0 || (start..start + len).all(|i| values.is_valid(i))
}

fn shape_at(shapes: Option<&ListArray>, r: usize, len: usize) -> Result<Vec<usize>, String> {
    let Some(s) = shapes.filter(|s| s.is_valid(r)) else {
        return Ok(vec![len]);
    };
    let v = s.value(r);
    let v = v
        .as_any()
        .downcast_ref::<PrimitiveArray<UInt32Type>>()
        .ok_or("the shape column must be List<UInt32>")?;
    let shape: Vec<usize> = v.values().iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    if n != len {
        return Err(format!(
            "shape {shape:?} holds {n} values, the row has {len}"
        ));
    }
    Ok(shape)
}

/// Where a list row's values lie in the list's values: `(start, len)`, `None` for null.
type Cell = Option<(usize, usize)>;

/// One column of a stream as samples of `spec`'s tensor; `base` is the request row of
/// the batch's first row (for messages).
fn decode_column(
    spec: &ColumnSpec,
    col: &ArrayRef,
    shapes: Option<&ArrayRef>,
    base: usize,
) -> Result<Vec<Sample>, ApiError> {
    let t = &spec.name;
    let shapes = match shapes {
        Some(s) => Some(
            s.as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| bad(t, None, "the shape column must be List<UInt32>"))?,
        ),
        None => None,
    };
    let want_dtype = |d: Dtype| -> Result<(), ApiError> {
        if matches!(
            spec.base,
            BaseHtype::Text | BaseHtype::Json | BaseHtype::List
        ) || spec.is_link
        {
            return Err(bad(
                t,
                None,
                format!("a {} tensor takes Utf8, not numbers", spec.htype),
            ));
        }
        match spec.dtype {
            Some(have) if have != d => Err(bad(
                t,
                None,
                format!(
                    "the column holds {}, the tensor holds {}",
                    d.name(),
                    have.name()
                ),
            )),
            _ => Ok(()),
        }
    };
    let n = col.len();
    let mut out = Vec::with_capacity(n);
    // (values, start, len) of each list cell, for both list layouts.
    let cells: Option<(ArrayRef, Vec<Cell>)> = match col.data_type() {
        DataType::List(_) => {
            let l = col
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| ApiError::internal("list column is not a ListArray"))?;
            let offs = l.value_offsets();
            let cells = (0..n)
                .map(|r| {
                    l.is_valid(r)
                        .then(|| (offs[r] as usize, (offs[r + 1] - offs[r]) as usize))
                })
                .collect();
            Some((l.values().clone(), cells))
        }
        DataType::FixedSizeList(_, size) => {
            let l = col
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .ok_or_else(|| ApiError::internal("list column is not a FixedSizeListArray"))?;
            let size = *size as usize;
            let cells = (0..n)
                .map(|r| l.is_valid(r).then_some((r * size, size)))
                .collect();
            Some((l.values().clone(), cells))
        }
        _ => None,
    };
    if let Some((values, cells)) = cells {
        let d = dtype_of(values.data_type()).ok_or_else(|| {
            bad(
                t,
                None,
                format!("list of {} is not a tensor dtype", values.data_type()),
            )
        })?;
        want_dtype(d)?;
        for (r, cell) in cells.into_iter().enumerate() {
            let Some((start, len)) = cell else {
                out.push(Sample::Empty);
                continue;
            };
            if !check_no_nulls(values.as_ref(), start, len) {
                return Err(bad(t, Some(base + r), "a list value is null"));
            }
            let shape = shape_at(shapes, r, len).map_err(|m| bad(t, Some(base + r), m))?;
            let bytes = element_bytes(values.as_ref(), d, start, len);
            let a = NdArray::new(d, shape, bytes).map_err(|e| bad(t, Some(base + r), e))?;
            out.push(Sample::Array(a));
        }
        return Ok(out);
    }
    match col.data_type() {
        DataType::Null => Ok(vec![Sample::Empty; n]),
        dt if dtype_of(dt).is_some() => {
            let d = dtype_of(dt).ok_or_else(|| ApiError::internal("dtype vanished"))?;
            want_dtype(d)?;
            for r in 0..n {
                if col.is_null(r) {
                    out.push(Sample::Empty);
                    continue;
                }
                let bytes = element_bytes(col.as_ref(), d, r, 1);
                let a = NdArray::new(d, vec![1], bytes).map_err(|e| bad(t, Some(base + r), e))?;
                out.push(Sample::Array(a));
            }
            Ok(out)
        }
        DataType::Binary | DataType::LargeBinary => {
            let Kind::Binary(c) = &spec.kind else {
                return Err(bad(
                    t,
                    None,
                    "Binary columns are for sample-compressed tensors (their stored bytes)",
                ));
            };
            let compression = Compression::parse(c)
                .map_err(ApiError::from)?
                .ok_or_else(|| bad(t, None, "the tensor has no sample compression"))?;
            for r in 0..n {
                if col.is_null(r) {
                    out.push(Sample::Empty);
                    continue;
                }
                let bytes = match col.as_any().downcast_ref::<BinaryArray>() {
                    Some(b) => b.value(r).to_vec(),
                    None => col
                        .as_any()
                        .downcast_ref::<LargeBinaryArray>()
                        .ok_or_else(|| ApiError::internal("binary column mismatch"))?
                        .value(r)
                        .to_vec(),
                };
                out.push(Sample::Encoded {
                    bytes: bytes.into(),
                    compression: compression.clone(),
                    shape: None,
                });
            }
            Ok(out)
        }
        DataType::Utf8 | DataType::LargeUtf8 => {
            for r in 0..n {
                if col.is_null(r) {
                    out.push(Sample::Empty);
                    continue;
                }
                let s = match col.as_any().downcast_ref::<StringArray>() {
                    Some(a) => a.value(r),
                    None => col
                        .as_any()
                        .downcast_ref::<LargeStringArray>()
                        .ok_or_else(|| ApiError::internal("string column mismatch"))?
                        .value(r),
                };
                out.push(text_sample(spec, s, base + r)?);
            }
            Ok(out)
        }
        other => Err(bad(t, None, format!("a column of {other} is not taken"))),
    }
}

/// A string value as a sample of `spec`'s tensor.
fn text_sample(spec: &ColumnSpec, s: &str, row: usize) -> Result<Sample, ApiError> {
    let t = &spec.name;
    if spec.is_link {
        return Ok(Sample::Link {
            path: s.to_owned(),
            creds_key: None,
        });
    }
    match spec.base {
        BaseHtype::Text => Ok(Sample::Text(s.to_owned())),
        BaseHtype::Json | BaseHtype::List | BaseHtype::Tag => {
            let v: serde_json::Value =
                serde_json::from_str(s).map_err(|e| bad(t, Some(row), format!("not JSON: {e}")))?;
            json_sample(spec, &v, row)
        }
        _ => Err(bad(
            t,
            Some(row),
            format!("a {} tensor does not take text", spec.htype),
        )),
    }
}

/// Decodes an append's Arrow IPC stream into columns of samples, checking each column
/// against its tensor. `specs` holds every visible tensor.
pub fn decode(
    bytes: &[u8],
    specs: &HashMap<String, ColumnSpec>,
) -> Result<Vec<(String, Vec<Sample>)>, ApiError> {
    check_ipc_buffers(bytes)?;
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| ApiError::bad_request(format!("not an Arrow IPC stream: {e}")))?;
    let schema = reader.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut tensors = Vec::new();
    for (k, name) in names.iter().enumerate() {
        if name == "__row" {
            continue;
        }
        if let Some(base) = name.strip_suffix(".shape")
            && specs.contains_key(base)
            && names.iter().any(|n| n == base)
        {
            continue;
        }
        if !specs.contains_key(name) {
            return Err(bad(name, None, "no such tensor"));
        }
        // Two columns of one tensor would append its rows twice and misalign it.
        if names[..k].contains(name) {
            return Err(bad(name, None, "the stream has two columns of this name"));
        }
        let shape = names.iter().position(|n| *n == format!("{name}.shape"));
        tensors.push((name.clone(), k, shape));
    }
    let mut out: Vec<(String, Vec<Sample>)> = tensors
        .iter()
        .map(|(n, _, _)| (n.clone(), Vec::new()))
        .collect();
    let mut base = 0usize;
    for batch in reader {
        let batch =
            batch.map_err(|e| ApiError::bad_request(format!("bad Arrow IPC stream: {e}")))?;
        for ((name, k, shape), (_, col)) in tensors.iter().zip(out.iter_mut()) {
            let spec = specs
                .get(name)
                .ok_or_else(|| ApiError::internal("spec vanished"))?;
            let samples =
                decode_column(spec, batch.column(*k), shape.map(|s| batch.column(s)), base)?;
            col.extend(samples);
        }
        base += batch.num_rows();
    }
    Ok(out)
}

/// How the IPC reader uses one buffer of a record batch, for the checks it skips.
#[derive(Clone, Copy)]
enum BufferUse {
    /// Validity or boolean bits, or raw bytes: any length.
    Bytes,
    /// Viewed as elements of this many bytes (offsets, fixed-width values).
    Elements(u64),
}

/// The layout of a column of `dt` as a record batch lists it: one field node per
/// array (the list size of a fixed-size list, else `None`) and its buffers, children
/// after their parent. `Err` for a type no tensor takes (refused before any batch is
/// read).
fn layout(
    dt: &DataType,
    nodes: &mut Vec<Option<i64>>,
    uses: &mut Vec<BufferUse>,
) -> Result<(), String> {
    use BufferUse::{Bytes, Elements};
    nodes.push(match dt {
        DataType::FixedSizeList(_, size) => Some(i64::from(*size)),
        _ => None,
    });
    match dt {
        DataType::Null => {}
        DataType::Boolean => uses.extend([Bytes, Bytes]),
        DataType::Utf8 | DataType::Binary => uses.extend([Bytes, Elements(4), Bytes]),
        DataType::LargeUtf8 | DataType::LargeBinary => uses.extend([Bytes, Elements(8), Bytes]),
        DataType::List(f) => {
            uses.extend([Bytes, Elements(4)]);
            layout(f.data_type(), nodes, uses)?;
        }
        DataType::FixedSizeList(f, _) => {
            uses.push(Bytes);
            layout(f.data_type(), nodes, uses)?;
        }
        other if dtype_of(other).is_some() => {
            let width = other.primitive_width().unwrap_or(1) as u64;
            uses.extend([Bytes, Elements(width)]);
        }
        other => return Err(format!("a column of {other} is not taken")),
    }
    Ok(())
}

/// Walks the messages of an IPC stream before the reader sees them. The reader slices
/// and views buffers as the metadata says without checking it, and panics on a
/// malformed upload; so every column must be of a type some tensor takes, every
/// buffer must lie inside its message's body at an offset the format allows (a
/// multiple of 8), a buffer viewed as elements must hold whole elements, row counts
/// must be ones the body can hold, and every body must lie inside the stream. Dictionary batches are refused (no tensor takes a
/// dictionary column).
fn check_ipc_buffers(bytes: &[u8]) -> Result<(), ApiError> {
    let malformed = |why: String| ApiError::bad_request(format!("not an Arrow IPC stream: {why}"));
    let word = |at: usize| -> Option<[u8; 4]> { bytes.get(at..at + 4)?.try_into().ok() };
    // Per field node and per buffer, from the schema.
    let mut layouts: Option<(Vec<Option<i64>>, Vec<BufferUse>)> = None;
    let mut at = 0usize;
    // The stream may end without the end-of-stream marker (as the reader accepts).
    while let Some(mut w) = word(at) {
        at += 4;
        if w == [0xff; 4] {
            w = word(at).ok_or_else(|| malformed("truncated message length".into()))?;
            at += 4;
        }
        let meta_len = i32::from_le_bytes(w);
        if meta_len == 0 {
            return Ok(());
        }
        let meta = usize::try_from(meta_len)
            .ok()
            .and_then(|n| bytes.get(at..at.checked_add(n)?))
            .ok_or_else(|| malformed(format!("message metadata of {meta_len} bytes")))?;
        at += meta.len();
        let message = arrow_ipc::root_as_message(meta)
            .map_err(|e| malformed(format!("bad message metadata: {e}")))?;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|n| at.checked_add(*n).is_some_and(|end| end <= bytes.len()))
            .ok_or_else(|| {
                malformed(format!(
                    "a message body of {} bytes past the end",
                    message.bodyLength()
                ))
            })?;
        if let Some(schema) = message.header_as_schema() {
            let schema = arrow_ipc::convert::try_fb_to_schema(schema)
                .map_err(|e| malformed(format!("bad schema: {e}")))?;
            let (mut nodes, mut uses) = (Vec::new(), Vec::new());
            for f in schema.fields() {
                layout(f.data_type(), &mut nodes, &mut uses).map_err(|m| bad(f.name(), None, m))?;
            }
            layouts = Some((nodes, uses));
        }
        if message.header_as_dictionary_batch().is_some() {
            return Err(malformed("dictionary batches are not taken".into()));
        }
        if let Some(batch) = message.header_as_record_batch() {
            let (nodes, uses) = layouts
                .as_ref()
                .ok_or_else(|| malformed("a record batch before the schema".into()))?;
            // Rows cost at least a bit each, except in null columns: a batch claiming
            // more is malformed, and its row counts could overflow the reader's sums.
            let max_rows = i64::try_from(body)
                .unwrap_or(i64::MAX)
                .saturating_mul(8)
                .saturating_add(1 << 16);
            if !(0..=max_rows).contains(&batch.length()) {
                return Err(malformed(format!(
                    "a batch of {} rows in {body} bytes",
                    batch.length()
                )));
            }
            for (k, n) in batch.nodes().into_iter().flatten().enumerate() {
                let values = match nodes.get(k).copied().flatten() {
                    Some(size) => n.length().checked_mul(size),
                    None => Some(n.length()),
                };
                if !(0..=n.length()).contains(&n.null_count())
                    || values.is_none_or(|v| !(0..=max_rows).contains(&v))
                {
                    return Err(malformed(format!(
                        "an array of {} rows ({} null) in {body} bytes",
                        n.length(),
                        n.null_count()
                    )));
                }
            }
            for (k, b) in batch.buffers().into_iter().flatten().enumerate() {
                let (offset, len) = (b.offset(), b.length());
                let end = u64::try_from(offset)
                    .ok()
                    .zip(u64::try_from(len).ok())
                    .and_then(|(o, l)| o.checked_add(l));
                if end.is_none_or(|end| end > body as u64) {
                    return Err(malformed(format!(
                        "a buffer at {offset} of {len} bytes outside its {body}-byte message body"
                    )));
                }
                if offset % 8 != 0 {
                    return Err(malformed(format!(
                        "a buffer at offset {offset}, not a multiple of 8"
                    )));
                }
                if let Some(BufferUse::Elements(width)) = uses.get(k)
                    && !(len as u64).is_multiple_of(*width)
                {
                    return Err(malformed(format!(
                        "a buffer of {len} bytes holds no whole number of {width}-byte elements"
                    )));
                }
            }
        }
        at += body;
    }
    Ok(())
}

/// A JSON value as a sample of `spec`'s tensor (the JSON append form).
pub fn json_sample(
    spec: &ColumnSpec,
    v: &serde_json::Value,
    row: usize,
) -> Result<Sample, ApiError> {
    use serde_json::Value;
    let t = &spec.name;
    if v.is_null() {
        return Ok(Sample::Empty);
    }
    if spec.is_link {
        return match v {
            Value::String(s) => Ok(Sample::Link {
                path: s.clone(),
                creds_key: None,
            }),
            _ => Err(bad(t, Some(row), "a link is its path, a string")),
        };
    }
    if spec.is_sequence {
        return Err(bad(t, None, "sequence tensors are not taken by this route"));
    }
    match spec.base {
        BaseHtype::Text => match v {
            Value::String(s) => Ok(Sample::Text(s.clone())),
            _ => Err(bad(t, Some(row), "a text sample is a string")),
        },
        BaseHtype::Json => Ok(Sample::Json(v.clone())),
        BaseHtype::List | BaseHtype::Tag => match v {
            Value::Array(a) => Ok(Sample::List(a.clone())),
            _ => Err(bad(t, Some(row), "a list sample is an array")),
        },
        BaseHtype::Polygon => Err(bad(t, None, "polygon tensors are not taken by this route")),
        _ => {
            let (shape, flat) = match v {
                Value::Object(o) => {
                    let shape = o
                        .get("shape")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad(t, Some(row), "an array object needs \"shape\""))?
                        .iter()
                        .map(|d| d.as_u64().map(|d| d as usize))
                        .collect::<Option<Vec<usize>>>()
                        .ok_or_else(|| bad(t, Some(row), "shape holds non-negative integers"))?;
                    let data = o
                        .get("data")
                        .ok_or_else(|| bad(t, Some(row), "an array object needs \"data\""))?;
                    let (_, flat) = nested(data).map_err(|m| bad(t, Some(row), m))?;
                    (shape, flat)
                }
                Value::Number(_) | Value::Bool(_) => (vec![1], vec![v]),
                Value::Array(_) => nested(v).map_err(|m| bad(t, Some(row), m))?,
                Value::String(_) => {
                    return Err(bad(
                        t,
                        Some(row),
                        format!("a {} tensor does not take a string", spec.htype),
                    ));
                }
                Value::Null => return Ok(Sample::Empty),
            };
            let n: usize = shape.iter().product();
            if n != flat.len() {
                return Err(bad(
                    t,
                    Some(row),
                    format!("shape {shape:?} holds {n} values, data has {}", flat.len()),
                ));
            }
            let d = spec.dtype.unwrap_or_else(|| {
                if flat.iter().all(|x| x.is_i64() || x.is_u64()) {
                    Dtype::I64
                } else {
                    Dtype::F64
                }
            });
            let mut bytes = Vec::with_capacity(n * d.size());
            for x in flat {
                put_number(d, x, &mut bytes).map_err(|m| bad(t, Some(row), m))?;
            }
            NdArray::new(d, shape, bytes)
                .map(Sample::Array)
                .map_err(|e| bad(t, Some(row), e))
        }
    }
}

/// The shape and row-major values of a rectangular nested array.
fn nested(v: &serde_json::Value) -> Result<(Vec<usize>, Vec<&serde_json::Value>), String> {
    fn walk<'a>(
        v: &'a serde_json::Value,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<&'a serde_json::Value>,
    ) -> Result<(), String> {
        match v {
            serde_json::Value::Array(a) => {
                if depth == shape.len() {
                    if !out.is_empty() {
                        return Err("the nested array is ragged".to_owned());
                    }
                    shape.push(a.len());
                } else if shape[depth] != a.len() {
                    return Err("the nested array is ragged".to_owned());
                }
                for x in a {
                    walk(x, depth + 1, shape, out)?;
                }
                Ok(())
            }
            other => {
                if depth != shape.len() {
                    return Err("the nested array is ragged".to_owned());
                }
                out.push(other);
                Ok(())
            }
        }
    }
    let mut shape = Vec::new();
    let mut out = Vec::new();
    walk(v, 0, &mut shape, &mut out)?;
    Ok((shape, out))
}

/// Appends `x` as a `d` element, refusing values the dtype cannot hold exactly.
fn put_number(d: Dtype, x: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = || format!("{x} is not a {} value", d.name());
    macro_rules! int {
        ($t:ty) => {{
            let v = if let Some(i) = x.as_i64() {
                <$t>::try_from(i).map_err(|_| wrong())?
            } else if let Some(u) = x.as_u64() {
                <$t>::try_from(u).map_err(|_| wrong())?
            } else {
                return Err(wrong());
            };
            out.extend_from_slice(&v.to_le_bytes());
        }};
    }
    match d {
        Dtype::Bool => {
            let b = match x {
                serde_json::Value::Bool(b) => *b,
                _ => match x.as_u64() {
                    Some(0) => false,
                    Some(1) => true,
                    _ => return Err(wrong()),
                },
            };
            out.push(u8::from(b));
        }
        Dtype::U8 => int!(u8),
        Dtype::U16 => int!(u16),
        Dtype::U32 => int!(u32),
        Dtype::U64 => int!(u64),
        Dtype::I8 => int!(i8),
        Dtype::I16 => int!(i16),
        Dtype::I32 => int!(i32),
        Dtype::I64 => int!(i64),
        Dtype::F16 | Dtype::F32 | Dtype::F64 => {
            let f = x.as_f64().ok_or_else(wrong)?;
            deeplake_core::format::array::put_f64_as(d, f, out);
        }
    }
    Ok(())
}
