//! Columnar batches: a stream's rows are transposed into one column per tensor, and
//! each column becomes one append. Columns of scalars, texts and JSON documents whose
//! tensor stores them plainly go straight to their stored bytes ([`PackedRows`]);
//! the others pass through Arrow arrays into samples. Columns convert in parallel on
//! the rayon pool.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dtype, NdArray, PackedRows, Sample};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::input::RecordIn;
use crate::schema::{Cell, Column, Kind};

/// The metadata tensors of every row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaTensor {
    RawId,
    ExtractedAt,
    GenerationId,
    Meta,
    Pk,
}

/// Where one tensor's samples come from.
#[derive(Clone, Debug)]
pub enum Source {
    Field(usize),
    /// The parsed timestamp of date-time column `usize`.
    Timestamp(usize),
    Meta(MetaTensor),
}

/// What a row's metadata tensors hold beyond the record itself.
#[derive(Clone, Copy, Debug)]
pub struct RowMeta {
    pub generation_id: Option<i64>,
    pub sync_id: Option<i64>,
}

fn column_array(col: &Column, ci: usize, rows: &[&RecordIn]) -> ArrayRef {
    let cells = rows.iter().map(|r| r.cells.get(ci).unwrap_or(&Cell::Null));
    match col.kind {
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(rows.len());
            for c in cells {
                match c {
                    Cell::Int(v) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for c in cells {
                match c {
                    Cell::Float(v) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for c in cells {
                match c {
                    Cell::Bool(v) => b.append_value(*v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Text | Kind::Link | Kind::DateTime => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
            for c in cells {
                match c {
                    Cell::Text(s) | Cell::DateTime(s, _) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Kind::IntList => {
            let mut b = ListBuilder::new(Int64Builder::new());
            for c in cells {
                match c {
                    Cell::Ints(v) => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        Kind::FloatList(_) | Kind::Numeric(_) | Kind::BBox(_) => {
            let mut b = ListBuilder::new(Float64Builder::new());
            for c in cells {
                match c {
                    Cell::Floats(v) => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    Cell::Ints(v) => {
                        for x in v {
                            b.values().append_value(*x as f64);
                        }
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Binary => {
            let mut b = BinaryBuilder::new();
            for c in cells {
                match c {
                    Cell::Bytes(v) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        // JSON-shaped values travel as JSON text.
        Kind::Json | Kind::StrList | Kind::ClassLabel => {
            let mut b = StringBuilder::new();
            for c in cells {
                match c {
                    Cell::Json(v) => b.append_value(v.to_string()),
                    Cell::Text(s) => b.append_value(Value::String(s.clone()).to_string()),
                    Cell::Int(i) => b.append_value(i.to_string()),
                    Cell::Ints(v) => b.append_value(json!(v).to_string()),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
    }
}

fn timestamp_array(ci: usize, rows: &[&RecordIn]) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(rows.len());
    for r in rows {
        match r.cells.get(ci) {
            Some(Cell::DateTime(_, Some(t))) => b.append_value(*t),
            _ => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

fn meta_array(m: MetaTensor, rows: &[&RecordIn], rm: RowMeta) -> ArrayRef {
    match m {
        MetaTensor::RawId => Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.raw_id.as_str()),
        )),
        MetaTensor::ExtractedAt => Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.emitted_at),
        )),
        MetaTensor::GenerationId => {
            Arc::new(Int64Array::from_iter(rows.iter().map(|_| rm.generation_id)))
        }
        MetaTensor::Meta => {
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                json!({"sync_id": rm.sync_id, "changes": r.changes}).to_string()
            })))
        }
        MetaTensor::Pk => Arc::new(StringArray::from_iter(rows.iter().map(|r| r.pk.as_deref()))),
    }
}

fn scalar<T: deeplake_core::format::array::Element>(v: T) -> Sample {
    Sample::Array(NdArray::scalar(v))
}

fn floats(v: &[f64], dtype: Dtype, shape: Vec<usize>) -> Sample {
    let mut data = Vec::with_capacity(v.len() * dtype.size());
    for x in v {
        deeplake_core::format::array::put_f64_as(dtype, *x, &mut data);
    }
    match NdArray::new(dtype, shape, data) {
        Ok(a) => Sample::Array(a),
        Err(_) => Sample::Empty,
    }
}

/// The samples of one Arrow array, for a tensor read as `kind`.
fn to_samples(kind: &Kind, a: &ArrayRef, sample_compression: Option<&str>) -> Vec<Sample> {
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<Int64Array>() {
        for i in 0..n {
            out.push(if x.is_null(i) {
                Sample::Empty
            } else if *kind == Kind::ClassLabel {
                scalar(x.value(i) as u32)
            } else {
                scalar(x.value(i))
            });
        }
    } else if let Some(x) = any.downcast_ref::<Float64Array>() {
        for i in 0..n {
            out.push(if x.is_null(i) {
                Sample::Empty
            } else {
                scalar(x.value(i))
            });
        }
    } else if let Some(x) = any.downcast_ref::<BooleanArray>() {
        for i in 0..n {
            out.push(if x.is_null(i) {
                Sample::Empty
            } else {
                scalar(x.value(i))
            });
        }
    } else if let Some(x) = any.downcast_ref::<StringArray>() {
        for i in 0..n {
            let v = (!x.is_null(i)).then(|| x.value(i));
            out.push(match (kind, v) {
                (Kind::Link, v) => Sample::Link {
                    path: v.unwrap_or_default().to_owned(),
                    creds_key: None,
                },
                (Kind::Text | Kind::DateTime, Some(s)) => Sample::Text(s.to_owned()),
                (Kind::Json, Some(s)) => {
                    Sample::Json(serde_json::from_str(s).unwrap_or(Value::Null))
                }
                (Kind::Json, None) => Sample::Json(Value::Null),
                (Kind::StrList, Some(s)) => match serde_json::from_str(s) {
                    Ok(Value::Array(items)) => Sample::List(items),
                    _ => Sample::List(Vec::new()),
                },
                (Kind::StrList, None) => Sample::List(Vec::new()),
                (Kind::ClassLabel, Some(s)) => match serde_json::from_str(s) {
                    Ok(Value::String(name)) => Sample::Text(name),
                    Ok(Value::Number(i)) => scalar(i.as_u64().unwrap_or(0) as u32),
                    Ok(Value::Array(items)) if items.iter().all(Value::is_string) => {
                        Sample::List(items)
                    }
                    Ok(Value::Array(items)) => {
                        let v: Vec<u32> = items
                            .iter()
                            .filter_map(Value::as_u64)
                            .map(|i| i as u32)
                            .collect();
                        NdArray::from_slice(vec![v.len()], &v)
                            .map(Sample::Array)
                            .unwrap_or(Sample::Empty)
                    }
                    _ => Sample::Empty,
                },
                (_, Some(s)) => Sample::Text(s.to_owned()),
                (_, None) => Sample::Empty,
            });
        }
    } else if let Some(x) = any.downcast_ref::<ListArray>() {
        for i in 0..n {
            if x.is_null(i) {
                out.push(Sample::Empty);
                continue;
            }
            let inner = x.value(i);
            let s = if let Some(f) = inner.as_any().downcast_ref::<Float64Array>() {
                let v = f.values();
                match kind {
                    Kind::BBox(d) => floats(v, *d, vec![v.len() / 4, 4]),
                    Kind::FloatList(d) | Kind::Numeric(d) => floats(v, *d, vec![v.len()]),
                    _ => floats(v, Dtype::F64, vec![v.len()]),
                }
            } else if let Some(iv) = inner.as_any().downcast_ref::<Int64Array>() {
                let v = iv.values();
                NdArray::from_slice(vec![v.len()], v)
                    .map(Sample::Array)
                    .unwrap_or(Sample::Empty)
            } else {
                Sample::Empty
            };
            out.push(s);
        }
    } else if let Some(x) = any.downcast_ref::<BinaryArray>() {
        let comp = sample_compression.and_then(|c| Compression::parse(c).ok().flatten());
        for i in 0..n {
            out.push(match (&comp, x.is_null(i)) {
                (Some(c), false) => Sample::Encoded {
                    bytes: bytes::Bytes::copy_from_slice(x.value(i)),
                    compression: c.clone(),
                    shape: None,
                },
                _ => Sample::Empty,
            });
        }
    }
    out
}

/// How a tensor's rows can go to the dataset in stored form: the tensor stores this
/// type plainly (no sample compression, not a link) and the column's values are of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pack {
    I64,
    F64,
    Bool,
    Text,
    Json,
}

impl Pack {
    /// The packing for a column of `kind` into a tensor of `htype` / `dtype` (as its
    /// meta records them), if any.
    pub fn for_tensor(
        src: &Source,
        cols: &[Column],
        htype: &str,
        dtype: Option<&str>,
    ) -> Option<Pack> {
        let kind = match src {
            Source::Field(ci) => cols[*ci].kind.clone(),
            Source::Timestamp(_) => Kind::Int,
            Source::Meta(MetaTensor::RawId | MetaTensor::Pk) => Kind::Text,
            Source::Meta(MetaTensor::ExtractedAt | MetaTensor::GenerationId) => Kind::Int,
            Source::Meta(MetaTensor::Meta) => Kind::Json,
        };
        match (kind, htype, dtype) {
            (Kind::Int, "generic", Some("int64")) => Some(Pack::I64),
            (Kind::Float, "generic", Some("float64")) => Some(Pack::F64),
            (Kind::Bool, "generic", Some("bool")) => Some(Pack::Bool),
            (Kind::Text | Kind::DateTime, "text", _) => Some(Pack::Text),
            (Kind::Json, "json", _) => Some(Pack::Json),
            _ => None,
        }
    }
}

/// One tensor's rows of a batch.
pub enum ColumnOut {
    Samples(Vec<Sample>),
    Packed(PackedRows),
}

/// Scalars of `N` stored bytes each; `None` is an empty row.
fn pack_fixed<const N: usize>(
    rows: &[&RecordIn],
    v: impl Fn(&RecordIn) -> Option<[u8; N]>,
) -> PackedRows {
    let mut p = PackedRows::with_capacity(vec![1], rows.len(), rows.len() * N);
    for r in rows {
        match v(r) {
            Some(x) => p.push(&x),
            None => p.push_empty(),
        }
    }
    p
}

fn pack_ints(rows: &[&RecordIn], v: impl Fn(&RecordIn) -> Option<i64>) -> PackedRows {
    pack_fixed(rows, |r| v(r).map(i64::to_le_bytes))
}

fn pack_texts<'a>(
    rows: &[&'a RecordIn],
    v: impl Fn(&'a RecordIn) -> Option<&'a str>,
) -> PackedRows {
    let mut p = PackedRows::with_capacity(vec![1], rows.len(), rows.len() * 16);
    for r in rows {
        // 3.x stores a missing text as an empty one: shape (1,), no bytes.
        p.push(v(r).unwrap_or("").as_bytes());
    }
    p
}

fn pack_json(rows: &[&RecordIn], v: impl Fn(&RecordIn) -> Value) -> PackedRows {
    let mut p = PackedRows::with_capacity(vec![1], rows.len(), rows.len() * 32);
    for r in rows {
        p.buffer()
            .extend_from_slice(&deeplake_core::format::json::to_compact(&v(r)));
        p.end_row();
    }
    p
}

fn cell(r: &RecordIn, ci: usize) -> &Cell {
    r.cells.get(ci).unwrap_or(&Cell::Null)
}

/// The column of `src` for `rows` in stored form.
fn packed(pack: Pack, src: &Source, rows: &[&RecordIn], rm: RowMeta) -> PackedRows {
    match (pack, src) {
        (Pack::I64, Source::Field(ci)) => pack_ints(rows, |r| match cell(r, *ci) {
            Cell::Int(v) => Some(*v),
            _ => None,
        }),
        (Pack::I64, Source::Timestamp(ci)) => pack_ints(rows, |r| match cell(r, *ci) {
            Cell::DateTime(_, t) => *t,
            _ => None,
        }),
        (Pack::I64, Source::Meta(MetaTensor::ExtractedAt)) => {
            pack_ints(rows, |r| Some(r.emitted_at))
        }
        (Pack::I64, _) => pack_ints(rows, |_| rm.generation_id),
        // Only field columns pack as float64 and bool (see `Pack::for_tensor`).
        (Pack::F64, src) => pack_fixed(rows, |r| match (src, r) {
            (Source::Field(ci), r) => match cell(r, *ci) {
                Cell::Float(v) => Some(v.to_le_bytes()),
                _ => None,
            },
            _ => None,
        }),
        (Pack::Bool, src) => pack_fixed(rows, |r| match (src, r) {
            (Source::Field(ci), r) => match cell(r, *ci) {
                Cell::Bool(v) => Some([u8::from(*v)]),
                _ => None,
            },
            _ => None,
        }),
        (Pack::Text, Source::Field(ci)) => pack_texts(rows, |r| match cell(r, *ci) {
            Cell::Text(s) | Cell::DateTime(s, _) => Some(s.as_str()),
            _ => None,
        }),
        (Pack::Text, Source::Meta(MetaTensor::RawId)) => {
            pack_texts(rows, |r| Some(r.raw_id.as_str()))
        }
        (Pack::Text, _) => pack_texts(rows, |r| r.pk.as_deref()),
        (Pack::Json, Source::Field(ci)) => pack_json(rows, |r| match cell(r, *ci) {
            Cell::Json(v) => v.clone(),
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Int(i) => json!(i),
            Cell::Ints(v) => json!(v),
            _ => Value::Null,
        }),
        (Pack::Json, _) => pack_json(
            rows,
            |r| json!({"sync_id": rm.sync_id, "changes": r.changes}),
        ),
    }
}

/// The rows of every tensor for `rows`, in the order of `tensors`: packed where
/// `packs` says so (none for `None`), samples otherwise.
pub fn columns(
    cols: &[Column],
    tensors: &[(String, Source)],
    packs: Option<&[Option<Pack>]>,
    rows: &[&RecordIn],
    rm: RowMeta,
) -> Vec<ColumnOut> {
    tensors
        .par_iter()
        .enumerate()
        .map(|(i, (_, src))| {
            if let Some(pack) = packs.and_then(|p| p.get(i).copied().flatten()) {
                return ColumnOut::Packed(packed(pack, src, rows, rm));
            }
            ColumnOut::Samples(match src {
                Source::Field(ci) => {
                    let col = &cols[*ci];
                    let a = column_array(col, *ci, rows);
                    to_samples(&col.kind, &a, col.sample_compression.as_deref())
                }
                Source::Timestamp(ci) => to_samples(&Kind::Int, &timestamp_array(*ci, rows), None),
                Source::Meta(m) => {
                    let a = meta_array(*m, rows, rm);
                    let kind = match m {
                        MetaTensor::RawId | MetaTensor::Pk => Kind::Text,
                        MetaTensor::ExtractedAt | MetaTensor::GenerationId => Kind::Int,
                        MetaTensor::Meta => Kind::Json,
                    };
                    to_samples(&kind, &a, None)
                }
            })
        })
        .collect()
}
