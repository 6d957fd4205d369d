//! The Arrow IPC form of a training stream: one schema, then one record batch per
//! batch of the stream, written as each is ready.
//!
//! Columns: `__row` (UInt64, the source row), `__cursor` (Utf8, the cursor that resumes
//! right after that row, so any prefix of the stream resumes exactly), then per tensor
//! the mapping of [`super::arrow`] with one difference for arrays: every row of a batch
//! holds the batch's common shape, the element-wise largest of the rows' shapes
//! (rows of another shape are zero-padded at the end of each dimension), and
//! `<t>.shape` holds each row's own shape. A batch of `n` rows of tensor `t` is thus
//! the values buffer of `<t>` viewed as `(n, *max(<t>.shape))`, without a copy.
//!
//! The schema's metadata says what the stream covers: `deeplake.rows_total` (rows it
//! will yield), `deeplake.epoch` and `deeplake.cursor` (where it starts). A client that
//! reads fewer rows than announced knows the stream broke (the server logs why).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StringArray, UInt64Array};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use deeplake_core::stream::{Batch, Column, Cursor};
use deeplake_core::{Dtype, NdArray, Sample};

use super::arrow::{
    ColumnSpec, Kind, encode_column, item_field, offset, primitive, primitive_shared, push_shape,
    shape_type, tensor_field,
};
use super::error::ApiError;

/// Writes a stream's schema once, then its batches (module docs).
pub struct StreamEncoder {
    schema: Arc<Schema>,
    specs: Vec<ColumnSpec>,
    encoder: arrow_ipc::writer::StreamEncoder,
}

/// Buffers at least this large go out as their own body chunk, sharing Arrow's memory;
/// smaller ones (message headers, offsets, shapes) are gathered into one chunk.
const OWN_CHUNK: usize = 64 << 10;

/// The IPC stream's buffers as body chunks, copying only the small ones: a batch of
/// decoded images is written to the socket from the memory it was collated into.
fn chunks(buffers: Vec<arrow_buffer::Buffer>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut small: Vec<u8> = Vec::new();
    for b in buffers {
        if b.len() >= OWN_CHUNK {
            if !small.is_empty() {
                out.push(Bytes::from(std::mem::take(&mut small)));
            }
            out.push(Bytes::from_owner(b));
        } else {
            small.extend_from_slice(b.as_slice());
        }
    }
    if !small.is_empty() {
        out.push(Bytes::from(small));
    }
    out
}

impl StreamEncoder {
    /// A stream of tensors `specs` (their kinds after transforms).
    pub fn new(specs: Vec<ColumnSpec>, rows_total: u64, start: Cursor) -> Result<Self, ApiError> {
        let mut fields = vec![
            Field::new("__row", DataType::UInt64, false).with_metadata(HashMap::from([(
                "deeplake.kind".to_owned(),
                "row".to_owned(),
            )])),
            Field::new("__cursor", DataType::Utf8, false).with_metadata(HashMap::from([(
                "deeplake.kind".to_owned(),
                "cursor".to_owned(),
            )])),
        ];
        for spec in &specs {
            let (data_type, shaped) = match &spec.kind {
                Kind::Array(d) => (DataType::List(item_field(*d)), true),
                Kind::Scalar(d) => (primitive(*d, &[]).data_type().clone(), false),
                Kind::Binary(_) => (DataType::Binary, true),
                Kind::Text | Kind::Json => (DataType::Utf8, false),
            };
            fields.push(tensor_field(spec, data_type));
            if shaped {
                fields.push(
                    Field::new(format!("{}.shape", spec.name), shape_type(), true).with_metadata(
                        HashMap::from([("deeplake.shape_of".to_owned(), spec.name.clone())]),
                    ),
                );
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            HashMap::from([
                ("deeplake.rows_total".to_owned(), rows_total.to_string()),
                ("deeplake.epoch".to_owned(), start.epoch.to_string()),
                ("deeplake.cursor".to_owned(), start.to_token()),
            ]),
        ));
        let encoder =
            arrow_ipc::writer::StreamEncoder::try_new(&schema).map_err(ApiError::internal)?;
        Ok(StreamEncoder {
            schema,
            specs,
            encoder,
        })
    }

    /// One batch as IPC body chunks (the first call's start with the schema); `first`
    /// is the cursor offset before its first row.
    pub fn batch(&mut self, b: &Batch, first: u64) -> Result<Vec<Bytes>, ApiError> {
        let n = b.rows.len();
        let epoch = b.cursor.epoch;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(b.rows.clone())),
            Arc::new(StringArray::from(
                (0..n as u64)
                    .map(|i| {
                        Cursor {
                            epoch,
                            offset: first + i + 1,
                        }
                        .to_token()
                    })
                    .collect::<Vec<_>>(),
            )),
        ];
        for spec in &self.specs {
            let col = b.column(&spec.name).ok_or_else(|| {
                ApiError::internal(format!("the stream lost tensor {:?}", spec.name))
            })?;
            let (data, shape) = encode(spec, col, n)?;
            columns.push(data);
            if let Some(s) = shape {
                columns.push(s);
            }
        }
        let rb = RecordBatch::try_new(self.schema.clone(), columns).map_err(ApiError::internal)?;
        Ok(chunks(
            self.encoder.encode(&rb).map_err(ApiError::internal)?,
        ))
    }

    /// The end-of-stream marker (after the schema, when no batch was written).
    pub fn finish(self) -> Result<Vec<Bytes>, ApiError> {
        Ok(chunks(self.encoder.finish().map_err(ApiError::internal)?))
    }
}

/// One tensor's column(s) of a batch of `n` rows.
fn encode(
    spec: &ColumnSpec,
    col: &Column,
    n: usize,
) -> Result<(ArrayRef, Option<ArrayRef>), ApiError> {
    match (&spec.kind, col) {
        (Kind::Array(d), Column::Dense(a)) => {
            let shapes = vec![a.shape[1..].to_vec(); n];
            array_column(*d, a, &shapes, n)
        }
        (Kind::Array(d), Column::Padded { data, shapes }) => array_column(*d, data, shapes, n),
        (Kind::Scalar(d), Column::Dense(a)) if a.num_elements() == n => {
            let a = if a.dtype == *d { a.clone() } else { a.cast(*d) };
            Ok((primitive(*d, &a.data), None))
        }
        (_, other) => encode_column(spec, &samples_of(other, n)?),
    }
}

/// `(values as a List column, shapes)` of collated rows laid out as `(n, *shape)`.
fn array_column(
    d: Dtype,
    a: &NdArray,
    shapes: &[Vec<usize>],
    n: usize,
) -> Result<(ArrayRef, Option<ArrayRef>), ApiError> {
    let a = if a.dtype == d { a.clone() } else { a.cast(d) };
    let per: usize = a.shape[1..].iter().product();
    let offsets: Vec<i32> = (0..=n).map(|i| offset(i * per)).collect::<Result<_, _>>()?;
    let list = ListArray::try_new(
        item_field(d),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        primitive_shared(d, &a.data),
        None::<NullBuffer>,
    )
    .map_err(ApiError::internal)?;
    let mut sb = ListBuilder::new(UInt32Builder::new());
    for s in shapes {
        push_shape(&mut sb, Some(s))?;
    }
    Ok((Arc::new(list), Some(Arc::new(sb.finish()))))
}

/// A collated column back as one sample per row (for the kinds with no fast path).
fn samples_of(col: &Column, n: usize) -> Result<Vec<Sample>, ApiError> {
    let split = |a: &NdArray, shapes: Option<&[Vec<usize>]>| -> Result<Vec<Sample>, ApiError> {
        let per = a.data.len() / n.max(1);
        (0..n)
            .map(|i| {
                let row = a.data.slice(i * per..(i + 1) * per);
                let full: Vec<usize> = a.shape[1..].to_vec();
                let own = shapes.map(|s| s[i].clone()).unwrap_or_else(|| full.clone());
                let padded = NdArray::new(a.dtype, full.clone(), row)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Sample::Array(if own == full {
                    padded
                } else {
                    unpad(&padded, &own)
                }))
            })
            .collect()
    };
    match col {
        Column::List(v) => Ok(v.clone()),
        Column::Dense(a) => split(a, None),
        Column::Padded { data, shapes } => split(data, Some(shapes)),
    }
}

/// The `own`-shaped corner of a zero-padded array.
fn unpad(a: &NdArray, own: &[usize]) -> NdArray {
    let size = a.dtype.size();
    let n: usize = own.iter().product();
    let mut out = Vec::with_capacity(n * size);
    let full = &a.shape;
    let mut idx = vec![0usize; own.len()];
    for _ in 0..n {
        let mut at = 0usize;
        for (k, i) in idx.iter().enumerate() {
            at = at * full[k] + i;
        }
        out.extend_from_slice(&a.data[at * size..(at + 1) * size]);
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < own[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    NdArray::new(a.dtype, own.to_vec(), out).unwrap_or_else(|_| a.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpad_takes_the_corner() {
        let a = NdArray::from_slice(vec![2, 3], &[1u8, 2, 0, 4, 5, 0]).unwrap();
        assert_eq!(unpad(&a, &[2, 2]).data.to_vec(), vec![1, 2, 4, 5]);
        assert_eq!(unpad(&a, &[1, 3]).data.to_vec(), vec![1, 2, 0]);
        assert_eq!(unpad(&a, &[0, 3]).data.len(), 0);
    }

    #[test]
    fn a_padded_column_splits_back_into_rows() {
        let data = NdArray::from_slice(vec![2, 1, 3], &[1u8, 2, 3, 4, 0, 0]).unwrap();
        let col = Column::Padded {
            data,
            shapes: vec![vec![1, 3], vec![1, 1]],
        };
        let rows = samples_of(&col, 2).unwrap();
        assert_eq!(
            rows[1],
            Sample::Array(NdArray::from_slice(vec![1, 1], &[4u8]).unwrap())
        );
    }
}
