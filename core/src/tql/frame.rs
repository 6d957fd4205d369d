//! Sources (a dataset at one version, with the columns a query reads loaded once) and
//! frames (rows of one or more sources plus computed columns): what every stage of the
//! executor takes and returns.
//!
//! A loaded column is typed where its stored samples allow it ([`Column::Num`]: one
//! number per row; [`Column::Vecs`]: float32 arrays of one shape, in one buffer), decoded
//! straight from chunk bytes in parallel; any other column holds one [`Val`] per row.
//! Either way [`Column::get`] gives exactly the value the row-at-a-time evaluator sees,
//! so columnar kernels and the row path agree.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::value::{Arr, Elem, Val, elem_val};
use crate::dataset::Dataset;
use crate::error::{Error, QueryErrorKind, Result};
use crate::format::array::{Sample, element_to_f64};
use crate::format::chunk::Chunk;
use crate::format::dtype::Dtype;
use bytes::Bytes;
use rayon::prelude::*;

/// Rows decoded per read while loading a column.
const LOAD_BATCH: u64 = 4096;

#[derive(Clone, Debug, PartialEq)]
pub enum ColKind {
    /// One number per row (a generic tensor of shape `[1]`), NULL where the row is empty.
    Scalar {
        float: bool,
    },
    ClassLabel {
        names: Vec<String>,
    },
    Text,
    Json,
    /// n-d arrays: images, boxes, embeddings, generic tensors of other shapes.
    Array,
}

#[derive(Clone, Debug)]
pub struct ColInfo {
    pub kind: ColKind,
    pub htype: String,
    /// The stored dtype of a numeric tensor.
    pub dtype: Option<Dtype>,
}

/// A loaded column: see the module doc.
#[derive(Debug)]
pub enum Column {
    Vals(Vec<Val>),
    /// One number per row as the row path reads it: integers are already cut to i64
    /// range and booleans to 0/1, so `elem_val(data[r], elem)` is the row's value.
    Num {
        elem: Elem,
        data: Vec<f64>,
        /// Rows that hold a value (`None`: all of them); the others are NULL.
        valid: Option<Vec<bool>>,
    },
    /// Float32 arrays of one shape (embeddings), as stored: little-endian bytes, row
    /// after row, in parts that are slices of the chunks read (no copy).
    Vecs {
        shape: Vec<usize>,
        /// (first row, bytes of the part's consecutive rows).
        parts: Vec<(usize, Bytes)>,
        rows: usize,
    },
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Vals(v) => v.len(),
            Column::Num { data, .. } => data.len(),
            Column::Vecs { rows, .. } => *rows,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of row `r` (NULL past the end).
    pub fn get(&self, r: usize) -> Val {
        match self {
            Column::Vals(v) => v.get(r).cloned().unwrap_or(Val::Null),
            Column::Num { elem, data, valid } => match data.get(r) {
                Some(&x) if valid.as_ref().is_none_or(|v| v[r]) => elem_val(x, *elem),
                _ => Val::Null,
            },
            Column::Vecs { shape, .. } => match self.vec_row(r) {
                Some(b) => Val::arr(Arr::new(
                    shape.clone(),
                    b.chunks_exact(4)
                        .map(|x| f64::from(f32::from_le_bytes([x[0], x[1], x[2], x[3]])))
                        .collect(),
                    Elem::Float,
                )),
                None => Val::Null,
            },
        }
    }

    /// The stored bytes of row `r` of a Vecs column.
    pub fn vec_row(&self, r: usize) -> Option<&[u8]> {
        let Column::Vecs { shape, parts, rows } = self else {
            return None;
        };
        if r >= *rows {
            return None;
        }
        let w = shape.iter().product::<usize>() * 4;
        let k = parts.partition_point(|p| p.0 <= r).checked_sub(1)?;
        let (first, b) = &parts[k];
        b.get((r - first) * w..(r - first + 1) * w)
    }

    /// Whether row `r` holds a value (is not NULL).
    pub fn is_valid(&self, r: usize) -> bool {
        match self {
            Column::Num { valid, data, .. } => {
                r < data.len() && valid.as_ref().is_none_or(|v| v[r])
            }
            other => r < other.len() && !matches!(other, Column::Vals(v) if v[r].is_null()),
        }
    }
}

/// A dataset at one version: its schema and the columns a query reads, decoded once.
/// It holds no dataset handle, so the executor can run on the CPU pool.
pub struct Source {
    pub url: String,
    /// The commit read (None: an uncommitted head).
    pub commit: Option<String>,
    /// The node read (a commit id or the head's node id).
    pub node: String,
    pub len: u64,
    pub schema: BTreeMap<String, ColInfo>,
    /// Chunks of each tensor, for EXPLAIN's estimate.
    pub chunks: BTreeMap<String, usize>,
    cols: Mutex<HashMap<String, Arc<Column>>>,
}

impl Source {
    pub fn new(d: &Dataset) -> Result<Self> {
        let mut schema = BTreeMap::new();
        let mut chunks = BTreeMap::new();
        for name in d.tensor_names() {
            chunks.insert(name.clone(), d.summary(&name)?.num_chunks);
            let meta = d.tensor_meta(&name)?;
            let htype = meta.htype.clone();
            let scalar_shape = meta.max_shape.len() <= 1 && meta.max_shape.iter().all(|&x| x <= 1);
            let float = meta
                .dtype
                .as_deref()
                .and_then(|s| s.parse::<Dtype>().ok())
                .is_some_and(|d| d.is_float());
            let kind = match htype.as_str() {
                "class_label" => ColKind::ClassLabel {
                    names: d
                        .tensor_info(&name)?
                        .get("class_names")
                        .and_then(|v| v.as_array())
                        .map(|a| {
                            a.iter()
                                .map(|x| x.as_str().unwrap_or_default().to_owned())
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                "text" => ColKind::Text,
                "json" | "list" | "tag" => ColKind::Json,
                "generic" if scalar_shape => ColKind::Scalar { float },
                _ if htype.starts_with("link") => ColKind::Text,
                _ => ColKind::Array,
            };
            let dtype = meta.dtype.as_deref().and_then(|s| s.parse::<Dtype>().ok());
            schema.insert(name, ColInfo { kind, htype, dtype });
        }
        Ok(Source {
            url: d.url().to_owned(),
            commit: d.commit_id(),
            node: d.node_id().as_str().to_owned(),
            len: d.len(),
            schema,
            chunks,
            cols: Mutex::new(HashMap::new()),
        })
    }

    /// Whether two sources read the same version of the same dataset.
    pub fn same_as(&self, o: &Source) -> bool {
        self.url == o.url && self.node == o.node
    }

    /// Decodes a whole column, once: typed from chunk bytes where the tensor allows it,
    /// else through decoded samples.
    pub async fn load(&self, ds: &Dataset, name: &str) -> Result<Arc<Column>> {
        if let Some(c) = self.cols.lock().map_err(|_| poisoned())?.get(name) {
            return Ok(c.clone());
        }
        let info = self.schema.get(name).ok_or_else(|| unknown(name, None))?;
        let n = ds.tensor_len(name)?;
        let col = match load_plain(ds, name, info, n).await? {
            Some(c) => c,
            None => Column::Vals(load_samples(ds, name, info, n).await?),
        };
        let col = Arc::new(col);
        self.cols
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_owned(), col.clone());
        Ok(col)
    }

    pub fn loaded(&self, name: &str) -> Option<Arc<Column>> {
        self.cols.lock().ok()?.get(name).cloned()
    }

    /// Puts a column in place of a loaded one (tests compare the typed and row paths).
    #[cfg(test)]
    pub fn set_column(&self, name: &str, col: Column) {
        if let Ok(mut g) = self.cols.lock() {
            g.insert(name.to_owned(), Arc::new(col));
        }
    }
}

async fn load_samples(ds: &Dataset, name: &str, info: &ColInfo, n: u64) -> Result<Vec<Val>> {
    let mut vals = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut start = 0;
    while start < n {
        let end = (start + LOAD_BATCH).min(n);
        let samples = ds.read_range(name, start..end).await?;
        let kind = info.kind.clone();
        let batch = crate::runtime::spawn_cpu(move || {
            Ok(samples
                .into_iter()
                .map(|s| to_val(s, &kind))
                .collect::<Vec<_>>())
        })
        .await?;
        vals.extend(batch);
        start = end;
    }
    Ok(vals)
}

/// Whether a tensor's samples are plain numeric arrays (what `read` decodes with
/// `NdArray::new` on the stored bytes), so they can be decoded here in bulk.
fn numeric_htype(htype: &str) -> bool {
    !matches!(htype, "text" | "json" | "list" | "tag" | "polygon") && !htype.starts_with("link")
}

/// Rows decoded per task while loading a typed column.
const DECODE_PIECE: usize = 1 << 15;

/// A typed column decoded straight from the chunks of a plain numeric tensor; `None`
/// when the tensor or any sample does not fit a typed layout (the caller then reads
/// samples, which also reports damaged data as the sample reader does).
async fn load_plain(ds: &Dataset, name: &str, info: &ColInfo, n: u64) -> Result<Option<Column>> {
    let Some(dtype) = info.dtype else {
        return Ok(None);
    };
    let scalar = matches!(
        info.kind,
        ColKind::Scalar { .. } | ColKind::ClassLabel { .. }
    );
    let vecs = matches!(info.kind, ColKind::Array) && dtype == Dtype::F32;
    if !(scalar || vecs) || !numeric_htype(&info.htype) {
        return Ok(None);
    }
    let Some(parts) = ds.read_chunk_parts(name, 0..n).await? else {
        return Ok(None);
    };
    crate::runtime::spawn_cpu(move || {
        // Shape of the first stored sample: every row of a Vecs column must have it.
        let want: Vec<usize> = if vecs {
            match parts.first() {
                Some((c, locals)) if !locals.is_empty() => match c.dims(locals.start) {
                    Ok(d) => d.iter().map(|&x| x as usize).collect(),
                    Err(_) => return Ok(None),
                },
                _ => return Ok(None),
            }
        } else {
            Vec::new()
        };
        if vecs {
            if want.iter().product::<usize>() == 0 {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(parts.len());
            let mut row = 0;
            for (c, locals) in &parts {
                let Some(b) = vec_part(c, locals.clone(), &want) else {
                    return Ok(None);
                };
                out.push((row, b));
                row += locals.len();
            }
            return Ok(Some(Column::Vecs {
                shape: want,
                parts: out,
                rows: row,
            }));
        }
        // Pieces of at most DECODE_PIECE rows, decoded in parallel into disjoint slices
        // of the column.
        let per = DECODE_PIECE;
        let mut pieces: Vec<(&Chunk, std::ops::Range<usize>)> = Vec::new();
        for (c, locals) in &parts {
            let mut a = locals.start;
            while a < locals.end {
                let b = locals.end.min(a + per);
                pieces.push((c, a..b));
                a = b;
            }
        }
        let rows: usize = pieces.iter().map(|p| p.1.len()).sum();
        let mut data = vec![0f64; rows];
        let mut valid = vec![false; rows];
        let outs = split_out(&mut data, pieces.iter().map(|p| p.1.len()));
        let vouts = split_out(&mut valid, pieces.iter().map(|p| p.1.len()));
        let ok = pieces
            .par_iter()
            .zip(outs)
            .zip(vouts)
            .all(|(((c, locals), out), vout)| {
                decode_nums(c, locals.clone(), dtype, out, vout).is_some()
            });
        let valid = (!valid.iter().all(|&v| v)).then_some(valid);
        Ok(ok.then_some(Column::Num {
            elem: elem_of(dtype),
            data,
            valid,
        }))
    })
    .await
}

/// Splits `buf` into consecutive slices of the given lengths.
fn split_out<T>(mut buf: &mut [T], lens: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for n in lens {
        let rest = std::mem::take(&mut buf);
        let (a, b) = rest.split_at_mut(n.min(rest.len()));
        out.push(a);
        buf = b;
    }
    out
}

/// Rows `locals` of a chunk as float32 bytes of shape `want`: a slice of the chunk when
/// they are stored back to back, else a copy; `None` when a row has another shape.
fn vec_part(c: &Chunk, locals: std::ops::Range<usize>, want: &[usize]) -> Option<Bytes> {
    let width: usize = want.iter().product();
    let same = |dims: &[u32]| {
        dims.len() == want.len() && dims.iter().zip(want).all(|(&a, &b)| a as usize == b)
    };
    if let Some((dims, size, span)) = c.uniform_run(locals.clone())
        && same(dims)
        && size == width * 4
        && span.end <= c.data.len()
    {
        return Some(c.data.slice(span));
    }
    let mut out = Vec::with_capacity(locals.len().saturating_mul(width * 4).min(1 << 26));
    for l in locals {
        if !same(c.dims(l).ok()?) {
            return None;
        }
        let bytes = c.data.get(c.byte_range(l).ok()?)?;
        if bytes.len() != width * 4 {
            return None;
        }
        out.extend_from_slice(bytes);
    }
    Some(Bytes::from(out))
}

fn decode_nums(
    c: &Chunk,
    locals: std::ops::Range<usize>,
    dtype: Dtype,
    out: &mut [f64],
    valid: &mut [bool],
) -> Option<()> {
    let size = dtype.size();
    if let Some((dims, each, span)) = c.uniform_run(locals.clone())
        && dims.iter().map(|&d| d as usize).product::<usize>() == 1
        && each == size
    {
        let bytes = c.data.get(span)?;
        if bytes.len() != out.len() * size {
            return None;
        }
        for ((o, v), b) in out
            .iter_mut()
            .zip(valid.iter_mut())
            .zip(bytes.chunks_exact(size))
        {
            *o = normalize(element_to_f64(dtype, b), dtype);
            *v = true;
        }
        return Some(());
    }
    for (k, l) in locals.enumerate() {
        let dims = c.dims(l).ok()?;
        let bytes = c.data.get(c.byte_range(l).ok()?)?;
        let count = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))?;
        if count.checked_mul(size)? != bytes.len() {
            // An empty sample reads as zero elements (NULL); other mismatches are damage
            // the sample reader reports.
            if !bytes.is_empty() {
                return None;
            }
            continue;
        }
        match count {
            0 => {}
            1 => {
                *out.get_mut(k)? = normalize(element_to_f64(dtype, bytes), dtype);
                *valid.get_mut(k)? = true;
            }
            _ => return None,
        }
    }
    Some(())
}

fn elem_of(d: Dtype) -> Elem {
    match d {
        Dtype::Bool => Elem::Bool,
        d if d.is_float() => Elem::Float,
        _ => Elem::Int,
    }
}

/// A stored number as the row path holds it: `elem_val` turns an integer into an i64
/// (saturating) and a boolean into 0 or 1, and comparisons read those back as f64.
fn normalize(x: f64, d: Dtype) -> f64 {
    match elem_of(d) {
        Elem::Bool => f64::from(u8::from(x != 0.0)),
        Elem::Int => (x as i64) as f64,
        Elem::Float => x,
    }
}

fn poisoned() -> Error {
    Error::internal("query column cache poisoned")
}

pub fn unknown(name: &str, pos: Option<usize>) -> Error {
    Error::query(
        QueryErrorKind::UnknownColumn,
        pos,
        format!("tensor {name:?} does not exist (write 'text' in single quotes for a string)"),
    )
}

fn to_val(s: Sample, kind: &ColKind) -> Val {
    match s {
        Sample::Empty => Val::Null,
        Sample::Text(t) => Val::str(&t),
        Sample::Json(j) => Val::from_json(&j),
        Sample::List(l) => Val::Json(Arc::new(serde_json::Value::Array(l))),
        Sample::Link { path, .. } => Val::str(&path),
        Sample::Array(a) => {
            let n = a.num_elements();
            let scalar = matches!(kind, ColKind::Scalar { .. } | ColKind::ClassLabel { .. });
            let elem = match a.dtype {
                Dtype::Bool => Elem::Bool,
                d if d.is_float() => Elem::Float,
                _ => Elem::Int,
            };
            if scalar {
                if n == 0 {
                    return Val::Null;
                }
                if n == 1 {
                    let v = a.to_f64_vec()[0];
                    return elem_val(v, elem);
                }
            }
            Val::arr(Arr::new(a.shape.clone(), a.to_f64_vec(), elem))
        }
        // A sequence is the list of its items; polygons are their point arrays.
        Sample::Sequence(items) => Val::List(std::sync::Arc::new(
            items.into_iter().map(|i| to_val(i, kind)).collect(),
        )),
        Sample::Polygons(p) => Val::List(std::sync::Arc::new(
            p.into_iter()
                .map(|a| to_val(Sample::Array(a), &ColKind::Array))
                .collect(),
        )),
        // Decoded reads never return stored bytes; if one does, it has no value here.
        Sample::Encoded { .. } => Val::Null,
    }
}

/// Rows of one or more sources, and computed columns.
pub struct Frame<'s> {
    pub sources: Vec<&'s Source>,
    /// (source index, source row) of each frame row.
    pub rows: Vec<(u32, u64)>,
    /// Computed columns, one value per frame row, in select-list order.
    pub virt: Vec<(String, Vec<Val>)>,
    /// For a grouped result: each row's member rows.
    pub groups: Option<Vec<Vec<(u32, u64)>>>,
    /// Whether the stored columns pass through (`SELECT *`), besides `virt`.
    pub star: bool,
    /// Qualifier (FROM alias) of each source, for `t.col`.
    pub aliases: Vec<Option<String>>,
    /// For a JOIN: the right side's row of each frame row (`rows` holds the left side's);
    /// a side without a match is `(NO_ROW, 0)` and reads as NULL.
    pub pairs: Option<Vec<(u32, u64)>>,
}

/// The source index of a missing side of an outer-join row.
pub const NO_ROW: u32 = u32::MAX;

impl<'s> Frame<'s> {
    pub fn scan(src: &'s Source, alias: Option<String>) -> Self {
        Frame {
            sources: vec![src],
            rows: (0..src.len).map(|r| (0, r)).collect(),
            virt: Vec::new(),
            groups: None,
            star: true,
            aliases: vec![alias],
            pairs: None,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A frame of the same sources holding `rows` (positions into this frame).
    pub fn take(&self, positions: &[usize]) -> Frame<'s> {
        Frame {
            sources: self.sources.clone(),
            rows: positions.iter().map(|&p| self.rows[p]).collect(),
            virt: self
                .virt
                .iter()
                .map(|(n, v)| (n.clone(), positions.iter().map(|&p| v[p].clone()).collect()))
                .collect(),
            groups: self
                .groups
                .as_ref()
                .map(|g| positions.iter().map(|&p| g[p].clone()).collect()),
            star: self.star,
            aliases: self.aliases.clone(),
            pairs: self
                .pairs
                .as_ref()
                .map(|v| positions.iter().map(|&p| v[p]).collect()),
        }
    }

    fn source_index(&self, qualifier: Option<&str>, pos: usize) -> Result<Option<usize>> {
        match qualifier {
            None => Ok(None),
            Some(q) => self
                .aliases
                .iter()
                .position(|a| a.as_deref() == Some(q))
                .map(Some)
                .ok_or_else(|| {
                    Error::query(
                        QueryErrorKind::UnknownColumn,
                        Some(pos),
                        format!("no source is named {q:?}"),
                    )
                }),
        }
    }

    /// Value of column `name` at frame row `p`: a computed column first, then the
    /// stored tensor of the row's source.
    pub fn value(&self, qualifier: Option<&str>, name: &str, p: usize, pos: usize) -> Result<Val> {
        if qualifier.is_none()
            && let Some((_, v)) = self.virt.iter().find(|(n, _)| n == name)
        {
            return Ok(v[p].clone());
        }
        let want = self.source_index(qualifier, pos)?;
        let (s, r) = match &self.pairs {
            // A joined row: the qualifier picks the side, else the side that has it.
            Some(pairs) => match want {
                Some(0) => self.rows[p],
                Some(_) => pairs[p],
                None if self.sources[0].schema.contains_key(name) => self.rows[p],
                None => pairs[p],
            },
            None => {
                let (s, r) = self.rows[p];
                if want.is_some_and(|w| w != s as usize) {
                    return Ok(Val::Null);
                }
                (s, r)
            }
        };
        if s == NO_ROW {
            return Ok(Val::Null);
        }
        let src = self.sources[s as usize];
        let col = src.loaded(name).ok_or_else(|| unknown(name, Some(pos)))?;
        Ok(usize::try_from(r).map_or(Val::Null, |r| col.get(r)))
    }

    /// Value of stored column `name` at source row `r` of the first source (DATA()).
    pub fn source_value(
        &self,
        qualifier: Option<&str>,
        name: &str,
        r: i64,
        pos: usize,
    ) -> Result<Val> {
        let s = self.source_index(qualifier, pos)?.unwrap_or(0);
        let src = self.sources[s];
        let col = src.loaded(name).ok_or_else(|| unknown(name, Some(pos)))?;
        Ok(usize::try_from(r).map_or(Val::Null, |r| col.get(r)))
    }

    /// Whether `name` is a column here (computed or stored in every source).
    pub fn has_column(&self, name: &str) -> bool {
        self.virt.iter().any(|(n, _)| n == name)
            || self.sources.iter().any(|s| s.schema.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::array::NdArray;

    #[test]
    fn sequences_and_polygons_become_lists_of_values() {
        let seq = Sample::Sequence(vec![Sample::Text("a".into()), Sample::Empty]);
        let Val::List(items) = to_val(seq, &ColKind::Text) else {
            panic!("not a list")
        };
        assert_eq!(items.as_slice(), &[Val::str("a"), Val::Null]);
        let poly = NdArray::from_slice(vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let v = to_val(Sample::Polygons(vec![poly]), &ColKind::Array);
        assert_eq!(v.to_json(), serde_json::json!([[[1.0, 2.0], [3.0, 4.0]]]));
    }
}
