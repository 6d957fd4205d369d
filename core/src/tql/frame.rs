//! Sources (a dataset at one version, with the columns a query reads loaded once) and
//! frames (rows of one or more sources plus computed columns): what every stage of the
//! executor takes and returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::value::{Arr, Elem, Val};
use crate::dataset::Dataset;
use crate::error::{Error, QueryErrorKind, Result};
use crate::format::array::Sample;
use crate::format::dtype::Dtype;

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
    cols: Mutex<HashMap<String, Arc<Vec<Val>>>>,
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
            schema.insert(name, ColInfo { kind, htype });
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

    /// Decodes a whole column into row values, once.
    pub async fn load(&self, ds: &Dataset, name: &str) -> Result<Arc<Vec<Val>>> {
        if let Some(c) = self.cols.lock().map_err(|_| poisoned())?.get(name) {
            return Ok(c.clone());
        }
        let info = self.schema.get(name).ok_or_else(|| unknown(name, None))?;
        let n = ds.tensor_len(name)?;
        let mut vals = Vec::with_capacity(n as usize);
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
        let col = Arc::new(vals);
        self.cols
            .lock()
            .map_err(|_| poisoned())?
            .insert(name.to_owned(), col.clone());
        Ok(col)
    }

    pub fn loaded(&self, name: &str) -> Option<Arc<Vec<Val>>> {
        self.cols.lock().ok()?.get(name).cloned()
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
                    return super::value::elem_val(v, elem);
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
        Ok(col.get(r as usize).cloned().unwrap_or(Val::Null))
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
        Ok(usize::try_from(r)
            .ok()
            .and_then(|r| col.get(r))
            .cloned()
            .unwrap_or(Val::Null))
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
