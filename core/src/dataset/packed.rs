//! Bulk appends of rows that are already in their stored form: a column of scalars,
//! texts or JSON documents handed over as one byte buffer with row ends, so an ingest
//! of millions of small rows costs a copy per row rather than a sample, an encode and
//! several allocations per row.
//!
//! [`Dataset::extend_packed`] checks every row against the tensor (dtype size, rank,
//! UTF-8 for text-like htypes) before it changes anything, and keeps the `_id` and
//! `_shape` companions in step exactly as [`Dataset::extend`] does. Tensors whose
//! samples need more than bytes and a shape (sample compression, links, sequences,
//! tiles, per-sample info) are refused with an error naming the tensor: those go
//! through [`Dataset::extend`].

use super::tensor::CompanionRole;
use super::{Dataset, FixedRows, append_fixed, append_rows};
use crate::error::{Error, Result};
use crate::format::htype::BaseHtype;

/// Rows of one tensor in stored form: their bytes back to back, and one shape shared
/// by all of them, except rows marked empty (`None` in Python), whose shape is all
/// zeros of the same rank and which hold no bytes.
#[derive(Clone, Debug, Default)]
pub struct PackedRows {
    data: Vec<u8>,
    ends: Vec<usize>,
    shape: Vec<u32>,
    empty: Vec<bool>,
    any_empty: bool,
}

impl PackedRows {
    /// No rows yet; each row will have `shape` (`[1]` for a scalar, a text or a JSON
    /// document).
    pub fn new(shape: Vec<u32>) -> PackedRows {
        PackedRows {
            shape,
            ..Default::default()
        }
    }

    /// Room for `rows` rows of `bytes` bytes in all.
    pub fn with_capacity(shape: Vec<u32>, rows: usize, bytes: usize) -> PackedRows {
        PackedRows {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
            shape,
            empty: Vec::with_capacity(rows),
            any_empty: false,
        }
    }

    /// Appends a row holding `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.end_row();
    }

    /// Appends an empty row (no bytes, an all-zero shape).
    pub fn push_empty(&mut self) {
        self.ends.push(self.data.len());
        self.empty.push(true);
        self.any_empty = true;
    }

    /// The buffer the next row's bytes are written to; [`PackedRows::end_row`] closes
    /// the row. For rows that are serialized in place (JSON).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Closes the row whose bytes were written to [`PackedRows::buffer`].
    pub fn end_row(&mut self) {
        self.ends.push(self.data.len());
        self.empty.push(false);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

impl Dataset {
    /// Appends `rows` to tensor `tensor`, whose samples they are in stored form: for a
    /// numeric htype, each row holds the tensor's dtype little-endian, as many values
    /// as the shape says; for text, UTF-8; for json, JSON text as
    /// [`crate::format::json::to_compact`] writes it (text and json rows have shape
    /// `[1]`).
    pub async fn extend_packed(&mut self, tensor: &str, mut rows: PackedRows) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(tensor)?;
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        let roles: Vec<(String, CompanionRole)> = {
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| Error::not_found("tensor", tensor))?;
            let refuse = |why: &str| {
                Err(Error::unsupported(format!(
                    "packed rows for tensor {tensor:?}: {why}; append its samples instead"
                )))
            };
            if t.htype.is_link || t.htype.is_sequence {
                return refuse("it is a link or sequence tensor");
            }
            if t.sample_compression.is_some() {
                return refuse("it has a sample compression");
            }
            if t.htype.has_info_tensor()
                || matches!(
                    t.htype.base,
                    BaseHtype::ClassLabel | BaseHtype::List | BaseHtype::Tag
                )
            {
                return refuse("its samples carry more than bytes and one shape");
            }
            let rank = rows.shape.len();
            if rank == 0 {
                return Err(Error::invalid(format!(
                    "packed rows for tensor {tensor:?} have a shape of no dimensions"
                )));
            }
            if !t.meta.max_shape.is_empty() && t.meta.max_shape.len() != rank {
                return Err(Error::invalid(format!(
                    "sample has {rank} dimensions but tensor {tensor:?} holds samples of {}",
                    t.meta.max_shape.len()
                )));
            }
            if t.htype.is_text_like() {
                if rows.shape != [1] {
                    return Err(Error::invalid(format!(
                        "{} rows of tensor {tensor:?} have shape (1,), not {:?}",
                        t.htype.base.name(),
                        rows.shape
                    )));
                }
                for i in 0..n {
                    if std::str::from_utf8(rows.row(i)).is_err() {
                        return Err(Error::invalid(format!(
                            "row {i} for {} tensor {tensor:?} is not UTF-8",
                            t.htype.base.name()
                        )));
                    }
                }
            } else {
                let Some(dtype) = t.dtype else {
                    return refuse("its dtype is not known yet");
                };
                let values: usize = rows.shape.iter().map(|&d| d as usize).product();
                let want = values.saturating_mul(dtype.size());
                for i in 0..n {
                    let got = rows.row(i).len();
                    let ok = if rows.empty[i] { got == 0 } else { got == want };
                    if !ok {
                        return Err(Error::invalid(format!(
                            "row {i} for tensor {tensor:?} holds {got} bytes; a {:?} sample of {} takes {want}",
                            rows.shape,
                            dtype.name()
                        )));
                    }
                }
            }
            let mut roles = Vec::new();
            for (ck, l) in &t.meta.links {
                match CompanionRole::from_extend(&l.extend) {
                    r @ (CompanionRole::Id | CompanionRole::Shape) => roles.push((ck.clone(), r)),
                    _ => return refuse("it has a companion other than ids and shapes"),
                }
            }
            roles
        };

        let zeros = vec![0u32; rows.shape.len()];
        let mut companions = Vec::with_capacity(roles.len());
        for (ck, role) in roles {
            let fixed = match role {
                CompanionRole::Id => {
                    let mut data = Vec::with_capacity(8 * n);
                    for _ in 0..n {
                        data.extend_from_slice(&rand::random::<u64>().to_le_bytes());
                    }
                    FixedRows {
                        shape: vec![1],
                        data,
                        n,
                    }
                }
                _ => {
                    let rank = u32::try_from(rows.shape.len())
                        .map_err(|_| Error::invalid("too many dimensions"))?;
                    let mut data = Vec::with_capacity(8 * rows.shape.len() * n);
                    for i in 0..n {
                        let s = if rows.empty[i] { &zeros } else { &rows.shape };
                        for d in s {
                            data.extend_from_slice(&i64::from(*d).to_le_bytes());
                        }
                    }
                    FixedRows {
                        shape: vec![rank],
                        data,
                        n,
                    }
                }
            };
            companions.push((ck, fixed));
        }

        let mut bounds = vec![rows.shape.iter().map(|&d| u64::from(d)).collect::<Vec<_>>()];
        if rows.any_empty {
            bounds.push(vec![0; rows.shape.len()]);
        }
        let store = self.store.clone();
        let node = self.node.clone();
        {
            let t = self
                .tensors
                .get_mut(&key)
                .ok_or_else(|| Error::not_found("tensor", tensor))?;
            // Rows of one size (scalars without nulls) go in as runs.
            let item = rows.ends[0];
            let uniform = !rows.any_empty
                && rows
                    .ends
                    .iter()
                    .enumerate()
                    .all(|(i, e)| *e == (i + 1) * item);
            if uniform {
                let fixed = FixedRows {
                    shape: rows.shape.clone(),
                    data: std::mem::take(&mut rows.data),
                    n,
                };
                append_fixed(&store, &self.locator, &mut self.writer, &node, t, &fixed).await?;
            } else {
                let it = (0..n).map(|i| {
                    let s: &[u32] = if rows.empty[i] { &zeros } else { &rows.shape };
                    (s, rows.row(i))
                });
                append_rows(
                    &store,
                    &self.locator,
                    &mut self.writer,
                    &node,
                    t,
                    it,
                    n,
                    &bounds,
                )
                .await?;
            }
        }
        for (ck, fixed) in companions {
            if let Some(c) = self.tensors.get_mut(&ck) {
                append_fixed(&store, &self.locator, &mut self.writer, &node, c, &fixed).await?;
            }
        }
        self.cache.clear();
        Ok(())
    }
}
