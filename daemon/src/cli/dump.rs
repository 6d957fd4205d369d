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

/// Appends [`nested`]'s JSON text for `a` to `out` without building the tree: a decoded
/// image is tens of thousands of numbers, and a request for one is bound by this loop.
/// The innermost dimension is one typed loop per dtype.
pub(crate) fn write_nested(a: &NdArray, out: &mut Vec<u8>) {
    if a.shape.is_empty() {
        if a.data.is_empty() {
            out.extend_from_slice(b"[]");
        } else {
            write_elements(a.dtype, &a.data, out);
        }
        return;
    }
    let s = a.dtype.size();
    // Most elements of decoded images take up to four bytes with their comma.
    out.reserve(a.data.len() / s * 4 + 16);
    write_dim(a, 0, 0, s, out);
}

fn write_dim(a: &NdArray, dim: usize, offset: usize, size: usize, out: &mut Vec<u8>) {
    let n = a.shape[dim];
    let inner: usize = a.shape[dim + 1..].iter().product();
    out.push(b'[');
    if dim + 1 == a.shape.len() {
        write_elements(a.dtype, &a.data[offset * size..(offset + n) * size], out);
    } else {
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            write_dim(a, dim + 1, offset + i * inner, size, out);
        }
    }
    out.push(b']');
}

/// The decimal text of every byte value: up to three digits, then the length.
const U8_TEXT: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut v = 0;
    while v < 256 {
        let (h, d, u) = ((v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8);
        t[v] = if v >= 100 {
            [b'0' + h, b'0' + d, b'0' + u, 3]
        } else if v >= 10 {
            [b'0' + d, b'0' + u, 0, 2]
        } else {
            [b'0' + u, 0, 0, 1]
        };
        v += 1;
    }
    t
};

/// Comma-separated elements of `bytes` (little-endian values of `d`), as [`scalar`]
/// writes each one.
fn write_elements(d: Dtype, bytes: &[u8], out: &mut Vec<u8>) {
    fn ints<const N: usize, T: itoa::Integer>(
        bytes: &[u8],
        out: &mut Vec<u8>,
        from: impl Fn([u8; N]) -> T,
    ) {
        let mut buf = itoa::Buffer::new();
        for (i, c) in bytes.chunks_exact(N).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut x = [0u8; N];
            x.copy_from_slice(c);
            out.extend_from_slice(buf.format(from(x)).as_bytes());
        }
    }
    match d {
        Dtype::U8 => {
            // Pixels: a table lookup per element, no digit loop.
            for (i, &b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let [t0, t1, t2, len] = U8_TEXT[b as usize];
                out.extend_from_slice(&[t0, t1, t2][..len as usize]);
            }
        }
        Dtype::I8 => ints::<1, i8>(bytes, out, i8::from_le_bytes),
        Dtype::U16 => ints::<2, u16>(bytes, out, u16::from_le_bytes),
        Dtype::I16 => ints::<2, i16>(bytes, out, i16::from_le_bytes),
        Dtype::U32 => ints::<4, u32>(bytes, out, u32::from_le_bytes),
        Dtype::I32 => ints::<4, i32>(bytes, out, i32::from_le_bytes),
        Dtype::U64 => ints::<8, u64>(bytes, out, u64::from_le_bytes),
        Dtype::I64 => ints::<8, i64>(bytes, out, i64::from_le_bytes),
        Dtype::Bool => {
            for (i, &b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(if b != 0 { b"true" } else { b"false" });
            }
        }
        Dtype::F16 | Dtype::F32 | Dtype::F64 => {
            for (i, c) in bytes.chunks_exact(d.size()).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let v = element_to_f64(d, c);
                if v.is_finite() {
                    // serde_json's own float text, so both paths agree.
                    let _ = serde_json::to_writer(&mut *out, &v);
                } else {
                    out.extend_from_slice(b"null");
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
    fn write_nested_writes_what_nested_builds() {
        let cases = [
            NdArray::from_slice(vec![2, 3, 2], &(0..12u8).collect::<Vec<_>>()).unwrap(),
            NdArray::from_slice(vec![16, 16], &(0..=255u8).collect::<Vec<_>>()).unwrap(),
            NdArray::from_slice(vec![3], &[1.5f32, f32::NAN, -0.1]).unwrap(),
            NdArray::from_slice(vec![2, 1], &[i64::MIN, 7]).unwrap(),
            NdArray::from_slice(vec![2], &[u64::MAX, 0]).unwrap(),
            NdArray::from_slice(vec![2], &[true, false]).unwrap(),
            NdArray::from_slice(vec![0, 4], &[] as &[i32]).unwrap(),
            NdArray::from_slice(vec![4, 0], &[] as &[i32]).unwrap(),
            NdArray::scalar(-3i16),
            NdArray::scalar(2.5f64),
            NdArray::from_slice(vec![2, 2], &[u16::MAX, 0, 1, 2]).unwrap(),
            NdArray::from_slice(vec![3], &[i8::MIN, 0, i8::MAX]).unwrap(),
            NdArray::from_slice(vec![2], &[u32::MAX, 9]).unwrap(),
            NdArray::from_slice(vec![1, 2, 1], &[i32::MIN, i32::MAX]).unwrap(),
        ];
        for a in &cases {
            let mut out = Vec::new();
            write_nested(a, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
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
