//! `deeplake dump PATH[@ref]`: one JSON object per row, from row 0 to the longest
//! tensor's end (a row lists the tensors that have it).
//!
//! Numbers, text, json and lists print as values; an array prints as nested lists
//! when it is small (at most 64 elements, not an image) or with `--full`, and
//! otherwise as `{"shape", "dtype", "sha256"}` where `sha256` is the hex digest of the
//! decoded array's C-order little-endian bytes. `--stored` adds `stored_sha256`, the
//! digest of the bytes as stored, for sample-compressed tensors. `--meta` prints a first
//! line `{"__meta__": {...}}` describing the tensors.

use std::io::Write;

use anyhow::{Context, bail};
use deeplake_core::format::array::{NdArray, element_to_f64};
use deeplake_core::format::htype::BaseHtype;
use deeplake_core::{Dataset, Dtype, Sample};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Dataset path or URL; `PATH@ref` reads a branch, commit or tag.
    pub path: String,
    /// Comma-separated tensor names (default: all visible tensors).
    #[arg(long, value_delimiter = ',')]
    pub tensors: Vec<String>,
    /// Row range START:END (either side may be empty), or a single row.
    #[arg(long)]
    pub rows: Option<String>,
    /// Print every array as nested lists.
    #[arg(long)]
    pub full: bool,
    /// Add the digest of the stored bytes of sample-compressed tensors.
    #[arg(long)]
    pub stored: bool,
    /// Print a first line describing the tensors.
    #[arg(long)]
    pub meta: bool,
    /// Show link tensors' targets (fetched, decoded as the inner htype; with --stored
    /// the digest of the target's bytes) instead of their paths.
    #[arg(long)]
    pub resolve_links: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Parses `a:b`, `a:`, `:b`, `a` against a length.
pub fn parse_rows(spec: Option<&str>, len: u64) -> anyhow::Result<std::ops::Range<u64>> {
    let Some(spec) = spec else { return Ok(0..len) };
    let num = |s: &str, default: u64| -> anyhow::Result<u64> {
        if s.trim().is_empty() {
            Ok(default)
        } else {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--rows: {s:?} is not a row number"))
        }
    };
    let r = match spec.split_once(':') {
        Some((a, b)) => num(a, 0)?..num(b, len)?.min(len),
        None => {
            let i = num(spec, 0)?;
            i..i + 1
        }
    };
    if r.start > r.end || r.end > len {
        bail!("--rows {spec}: out of range for a dataset of {len} rows");
    }
    Ok(r)
}

pub(crate) fn nested(a: &NdArray) -> Value {
    fn rec(a: &NdArray, dim: usize, offset: &mut usize) -> Value {
        if dim == a.shape.len() {
            let s = a.dtype.size();
            let b = &a.data[*offset * s..(*offset + 1) * s];
            *offset += 1;
            return scalar(a.dtype, b);
        }
        Value::Array((0..a.shape[dim]).map(|_| rec(a, dim + 1, offset)).collect())
    }
    let mut off = 0;
    if a.shape.is_empty() {
        return if a.data.is_empty() {
            Value::Array(vec![])
        } else {
            scalar(a.dtype, &a.data)
        };
    }
    rec(a, 0, &mut off)
}

/// [`nested`] without building the tree: serializes to the same JSON text, element by
/// element (a decoded image is tens of thousands of numbers).
pub(crate) struct NestedView<'a>(pub &'a NdArray);

impl serde::Serialize for NestedView<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        if a.shape.is_empty() {
            return if a.data.is_empty() {
                ser.collect_seq(std::iter::empty::<u8>())
            } else {
                Element(a.dtype, &a.data).serialize(ser)
            };
        }
        Dim {
            a,
            dim: 0,
            offset: 0,
        }
        .serialize(ser)
    }
}

/// The elements of `a` from flat index `offset` on, nested from dimension `dim` down.
struct Dim<'a> {
    a: &'a NdArray,
    dim: usize,
    offset: usize,
}

impl serde::Serialize for Dim<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let a = self.a;
        let n = a.shape[self.dim];
        // Elements one level below covers.
        let inner: usize = a.shape[self.dim + 1..].iter().product();
        let mut seq = ser.serialize_seq(Some(n))?;
        for i in 0..n {
            let offset = self.offset + i * inner;
            if self.dim + 1 == a.shape.len() {
                let s = a.dtype.size();
                seq.serialize_element(&Element(a.dtype, &a.data[offset * s..(offset + 1) * s]))?;
            } else {
                seq.serialize_element(&Dim {
                    a,
                    dim: self.dim + 1,
                    offset,
                })?;
            }
        }
        seq.end()
    }
}

/// One element, as [`scalar`] writes it.
struct Element<'a>(Dtype, &'a [u8]);

impl serde::Serialize for Element<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (d, b) = (self.0, self.1);
        let word = || {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[..8]);
            x
        };
        match d {
            Dtype::U64 => ser.serialize_u64(u64::from_le_bytes(word())),
            Dtype::I64 => ser.serialize_i64(i64::from_le_bytes(word())),
            _ => {
                let v = element_to_f64(d, b);
                match d {
                    Dtype::Bool => ser.serialize_bool(v != 0.0),
                    d if d.is_float() && v.is_finite() => ser.serialize_f64(v),
                    d if d.is_float() => ser.serialize_unit(),
                    _ => ser.serialize_i64(v as i64),
                }
            }
        }
    }
}

fn scalar(d: Dtype, b: &[u8]) -> Value {
    let v = element_to_f64(d, b);
    match d {
        Dtype::Bool => Value::Bool(v != 0.0),
        Dtype::U64 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[..8]);
            json!(u64::from_le_bytes(x))
        }
        Dtype::I64 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[..8]);
            json!(i64::from_le_bytes(x))
        }
        d if d.is_float() => serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        _ => json!(v as i64),
    }
}

fn digest(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

struct Render {
    /// The tensor's declared dtype when it is not numeric (`object` for meshes): empty
    /// samples of such tensors print it rather than a placeholder byte dtype.
    object_dtype: Option<String>,
    full: bool,
    stored: bool,
    image_like: bool,
    compressed: bool,
}

/// `stored` holds the stored bytes of the sample (one entry) or of each item of a
/// sequence sample.
fn render(s: &Sample, r: &Render, stored: Option<&[bytes::Bytes]>) -> Value {
    let own = stored.and_then(|v| v.first()).map(|b| b.as_ref());
    match s {
        Sample::Array(a) => {
            let small = a.num_elements() <= 64 && !r.image_like;
            let mut v = if r.compressed && r.stored {
                let mut m = Map::new();
                m.insert("shape".into(), json!(a.shape));
                m.insert(
                    "dtype".into(),
                    json!(r.object_dtype.as_deref().unwrap_or(a.dtype.name())),
                );
                if let Some(b) = own {
                    m.insert("stored_sha256".into(), json!(digest(b)));
                }
                if r.full {
                    m.insert("data".into(), nested(a));
                } else {
                    m.insert("sha256".into(), json!(digest(&a.data)));
                }
                return Value::Object(m);
            } else if r.full || small {
                nested(a)
            } else {
                json!({
                    "shape": a.shape,
                    "dtype": r.object_dtype.as_deref().unwrap_or(a.dtype.name()),
                    "sha256": digest(&a.data)
                })
            };
            if let (Value::Object(m), Some(b), true) = (&mut v, own, r.stored) {
                m.insert("stored_sha256".into(), json!(digest(b)));
            }
            v
        }
        Sample::Encoded {
            bytes,
            compression,
            shape,
        } => {
            json!({"shape": shape, "compression": compression.name(), "stored_sha256": digest(bytes)})
        }
        Sample::Text(t) => json!(t),
        Sample::Json(v) => v.clone(),
        Sample::List(l) => Value::Array(l.clone()),
        Sample::Link { path, .. } => json!(path),
        Sample::Polygons(p) => Value::Array(p.iter().map(nested).collect()),
        Sample::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(k, i)| render(i, r, stored.and_then(|v| v.get(k..k + 1))))
                .collect(),
        ),
        Sample::Empty => Value::Null,
    }
}

/// Rows of a link tensor resolved: decoded targets and, with `stored`, each target's
/// bytes (the linker's cache serves the second read).
#[allow(clippy::type_complexity)]
async fn resolved_rows(
    ds: &Dataset,
    tensor: &str,
    rows: std::ops::Range<u64>,
    stored: bool,
) -> anyhow::Result<(Vec<Sample>, Vec<Option<Vec<bytes::Bytes>>>)> {
    let decoded = ds
        .read_resolved(tensor, rows.clone(), true)
        .await
        .with_context(|| format!("resolving the links of tensor {tensor:?}"))?;
    if !stored {
        let none = vec![None; decoded.len()];
        return Ok((decoded, none));
    }
    fn bytes_of(s: Sample) -> Option<Vec<bytes::Bytes>> {
        match s {
            Sample::Encoded { bytes, .. } => Some(vec![bytes]),
            Sample::Array(a) => Some(vec![a.data]),
            Sample::Sequence(items) => Some(
                items
                    .into_iter()
                    .flat_map(|i| bytes_of(i).unwrap_or_default())
                    .collect(),
            ),
            _ => None,
        }
    }
    let raw = ds.read_resolved(tensor, rows, false).await?;
    Ok((decoded, raw.into_iter().map(bytes_of).collect()))
}

pub async fn run(a: &DumpArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open_url(&a.path, opts).await?;
    let mut names = if a.tensors.is_empty() {
        ds.tensor_names()
    } else {
        a.tensors.clone()
    };
    names.sort();
    for n in &names {
        ds.tensor_len(n)
            .with_context(|| format!("--tensors: no tensor {n:?} in {}", a.path))?;
    }
    let lens = names
        .iter()
        .map(|n| ds.tensor_len(n))
        .collect::<Result<Vec<_>, _>>()?;
    // The dataset length is the shortest tensor's (3.x's `len(ds)`); rows run to the
    // longest one, each listing the tensors that have it.
    let len = lens.iter().copied().min().unwrap_or(0);
    let rows = parse_rows(a.rows.as_deref(), lens.iter().copied().max().unwrap_or(0))?;
    if a.meta {
        let mut tensors = Map::new();
        for n in &names {
            let s = ds.summary(n)?;
            let mut m = json!({
                "htype": s.htype, "dtype": s.dtype, "sample_compression": s.sample_compression,
                "chunk_compression": s.chunk_compression, "length": s.length,
                "info": ds.tensor_info(n)?,
            });
            if ds.tensor_htype(n)?.base == BaseHtype::ClassLabel {
                m["class_names"] = json!(s.class_names);
            }
            tensors.insert(n.clone(), m);
        }
        writeln!(
            out,
            "{}",
            json!({"__meta__": {"length": len, "info": ds.info(), "tensors": tensors}})
        )?;
    }
    let renders: Vec<Render> = names
        .iter()
        .map(|n| {
            let h = ds.tensor_htype(n)?;
            let m = ds.tensor_meta(n)?;
            Ok(Render {
                object_dtype: m
                    .dtype
                    .clone()
                    .filter(|d| d.parse::<Dtype>().is_err() && !h.is_text_like()),
                full: a.full,
                stored: a.stored,
                image_like: matches!(
                    h.base,
                    BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray
                ),
                compressed: (m.sample_compression.is_some() && !h.is_link && !h.is_text_like())
                    || (a.resolve_links && h.is_link),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    const BATCH: u64 = 256;
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + BATCH).min(rows.end);
        let mut cols = Vec::with_capacity(names.len());
        for ((n, r), tlen) in names.iter().zip(&renders).zip(&lens) {
            let tend = end.min(*tlen).max(start);
            if a.resolve_links && ds.tensor_htype(n)?.is_link {
                cols.push(resolved_rows(&ds, n, start..tend, r.stored).await?);
                continue;
            }
            let samples = ds
                .read_range(n, start..tend)
                .await
                .with_context(|| format!("reading tensor {n:?}"))?;
            let mut stored = Vec::new();
            if r.stored && r.compressed {
                for i in start..tend {
                    let items = ds.read_stored_items(n, i).await?;
                    stored.push(Some(items.into_iter().map(|(_, b)| b).collect::<Vec<_>>()));
                }
            } else {
                stored.resize(samples.len(), None);
            }
            cols.push((samples, stored));
        }
        for k in 0..(end - start) as usize {
            let mut row = Map::new();
            for ((n, r), (samples, stored)) in names.iter().zip(&renders).zip(&cols) {
                if let (Some(sample), Some(st)) = (samples.get(k), stored.get(k)) {
                    row.insert(n.clone(), render(sample, r, st.as_deref()));
                }
            }
            writeln!(out, "{}", Value::Object(row))?;
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_specs() {
        assert_eq!(parse_rows(None, 5).unwrap(), 0..5);
        assert_eq!(parse_rows(Some("1:3"), 5).unwrap(), 1..3);
        assert_eq!(parse_rows(Some(":2"), 5).unwrap(), 0..2);
        assert_eq!(parse_rows(Some("3:"), 5).unwrap(), 3..5);
        assert_eq!(parse_rows(Some("4"), 5).unwrap(), 4..5);
        assert!(parse_rows(Some("9"), 5).is_err());
        assert!(parse_rows(Some("x:1"), 5).is_err());
    }

    #[test]
    fn nested_view_writes_what_nested_builds() {
        let cases = [
            NdArray::from_slice(vec![2, 3, 2], &(0..12u8).collect::<Vec<_>>()).unwrap(),
            NdArray::from_slice(vec![3], &[1.5f32, f32::NAN, -0.1]).unwrap(),
            NdArray::from_slice(vec![2, 1], &[i64::MIN, 7]).unwrap(),
            NdArray::from_slice(vec![2], &[u64::MAX, 0]).unwrap(),
            NdArray::from_slice(vec![2], &[true, false]).unwrap(),
            NdArray::from_slice(vec![0, 4], &[] as &[i32]).unwrap(),
            NdArray::scalar(-3i16),
        ];
        for a in &cases {
            assert_eq!(
                serde_json::to_string(&NestedView(a)).unwrap(),
                nested(a).to_string(),
                "{a:?}"
            );
        }
    }

    #[test]
    fn nested_lists_keep_shape() {
        let a = NdArray::from_slice(vec![2, 2], &[1i32, 2, 3, 4]).unwrap();
        assert_eq!(nested(&a), json!([[1, 2], [3, 4]]));
        let b = NdArray::from_slice(vec![1], &[true]).unwrap();
        assert_eq!(nested(&b), json!([true]));
    }
}
