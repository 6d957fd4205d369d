//! Builds a dataset from one interop case: tensors, then steps (append, update, pop,
//! rename, delete, info, create; commit, checkout and merge for histories), with samples
//! given as JSON.

use std::path::Path;

use deeplake_core::dataset::MergeOptions;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, Dtype, Error, NdArray, OpenOptions, Sample, TensorOptions};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub tensors: Vec<TensorSpec>,
    #[serde(default)]
    pub steps: Vec<Value>,
}

#[derive(Debug, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub htype: String,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub sample_compression: Option<String>,
    #[serde(default)]
    pub chunk_compression: Option<String>,
    #[serde(default)]
    pub max_chunk_size: Option<u64>,
    #[serde(default)]
    pub tiling_threshold: Option<i64>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Tensor info entries 3.x takes as create_tensor arguments.
    #[serde(default)]
    pub coords: Option<Value>,
    #[serde(default)]
    pub keypoints: Option<Value>,
    #[serde(default)]
    pub connections: Option<Value>,
    #[serde(default)]
    pub create_shape_tensor: Option<bool>,
    #[serde(default)]
    pub create_id_tensor: Option<bool>,
    #[serde(default)]
    pub create_sample_info_tensor: Option<bool>,
}

fn invalid(m: impl std::fmt::Display) -> Error {
    Error::invalid(m)
}

/// Flattens a nested JSON list into values and a shape.
fn flatten(
    v: &Value,
    depth: usize,
    shape: &mut Vec<usize>,
    out: &mut Vec<f64>,
) -> Result<(), Error> {
    match v {
        Value::Array(items) => {
            if shape.len() == depth {
                shape.push(items.len());
            } else if shape[depth] != items.len() {
                return Err(invalid("ragged nested list"));
            }
            for i in items {
                flatten(i, depth + 1, shape, out)?;
            }
            Ok(())
        }
        Value::Bool(b) => {
            out.push(*b as u8 as f64);
            Ok(())
        }
        Value::Number(n) => {
            out.push(n.as_f64().ok_or_else(|| invalid("bad number"))?);
            Ok(())
        }
        other => Err(invalid(format!("not a number: {other}"))),
    }
}

pub fn array_from_json(v: &Value, dtype: Dtype) -> Result<NdArray, Error> {
    let mut shape = Vec::new();
    let mut vals = Vec::new();
    flatten(v, 0, &mut shape, &mut vals)?;
    let mut data = Vec::with_capacity(vals.len() * dtype.size());
    // Integers beyond 2^53 are exact only through their own parse.
    if matches!(dtype, Dtype::U64 | Dtype::I64) {
        fn ints(v: &Value, out: &mut Vec<Value>) {
            match v {
                Value::Array(a) => a.iter().for_each(|x| ints(x, out)),
                other => out.push(other.clone()),
            }
        }
        let mut raw = Vec::new();
        ints(v, &mut raw);
        for x in raw {
            match dtype {
                Dtype::U64 => data.extend_from_slice(
                    &x.as_u64()
                        .ok_or_else(|| invalid("not a u64"))?
                        .to_le_bytes(),
                ),
                _ => data.extend_from_slice(
                    &x.as_i64()
                        .ok_or_else(|| invalid("not an i64"))?
                        .to_le_bytes(),
                ),
            }
        }
    } else {
        for x in vals {
            deeplake_core::format::array::put_f64_as(dtype, x, &mut data);
        }
    }
    NdArray::new(dtype, shape, data)
}

/// The explicit shape of a file sample (`[n, c]`): audio, video, point cloud, mesh,
/// DICOM and NIfTI shapes come from the codec's own parser in 3.x, which the writer
/// does not have.
fn shape_from_json(v: &Value) -> Result<Vec<usize>, Error> {
    v.as_array()
        .ok_or_else(|| invalid(format!("shape must be a list, got {v}")))?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| invalid(format!("bad shape dimension {d}")))
        })
        .collect()
}

/// Converts a case sample to a [`Sample`].
/// The creds keys of the link samples of `steps`, in order of first use.
pub fn creds_keys(steps: &[Value]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(k)) = m.get("creds_key")
                    && !out.contains(k)
                {
                    out.push(k.clone());
                }
                for x in m.values() {
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    steps.iter().for_each(|s| walk(s, &mut out));
    out
}

pub fn sample_from_json(v: &Value, fixtures: &Path) -> Result<Sample, Error> {
    let Value::Object(m) = v else {
        return if v.is_null() {
            Ok(Sample::Empty)
        } else {
            Err(invalid(format!("bad sample {v}")))
        };
    };
    // `dtype` qualifies an array, `shape` a file and `creds_key` a link; the other key
    // names the kind.
    let (k, val) = m
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "dtype" | "shape" | "creds_key"))
        .ok_or_else(|| invalid("empty sample object"))?;
    Ok(match k.as_str() {
        "array" => {
            let d: Dtype = m
                .get("dtype")
                .and_then(|d| d.as_str())
                .unwrap_or("float64")
                .parse()?;
            Sample::Array(array_from_json(val, d)?)
        }
        "text" | "label" => Sample::Text(
            val.as_str()
                .ok_or_else(|| invalid("text must be a string"))?
                .to_owned(),
        ),
        "json" => Sample::Json(val.clone()),
        "list" | "labels" => Sample::List(
            val.as_array()
                .cloned()
                .ok_or_else(|| invalid("list must be a list"))?,
        ),
        "file" => {
            let p = fixtures.join(
                val.as_str()
                    .ok_or_else(|| invalid("file must be a string"))?,
            );
            let bytes = std::fs::read(&p).map_err(|e| invalid(format!("{}: {e}", p.display())))?;
            let c = Compression::sniff(&bytes)
                .ok_or_else(|| invalid(format!("{}: unknown file type", p.display())))?;
            Sample::Encoded {
                bytes: bytes.into(),
                compression: c,
                shape: m.get("shape").map(shape_from_json).transpose()?,
            }
        }
        "link" => {
            let s = val
                .as_str()
                .ok_or_else(|| invalid("link must be a string"))?;
            let path = if s.contains("://") || s.starts_with('/') {
                s.to_owned()
            } else {
                let p = fixtures.join(s);
                std::fs::canonicalize(&p)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            };
            Sample::Link {
                path,
                creds_key: m
                    .get("creds_key")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        }
        "polygons" => {
            let polys = val
                .as_array()
                .ok_or_else(|| invalid("polygons must be a list"))?;
            Sample::Polygons(
                polys
                    .iter()
                    .map(|p| array_from_json(p, Dtype::F32))
                    .collect::<Result<_, _>>()?,
            )
        }
        "sequence" => Sample::Sequence(
            val.as_array()
                .ok_or_else(|| invalid("sequence must be a list"))?
                .iter()
                .map(|s| sample_from_json(s, fixtures))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(invalid(format!("unknown sample kind {other:?}"))),
    })
}

fn get<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a Value, Error> {
    m.get(k)
        .ok_or_else(|| invalid(format!("step is missing {k:?}")))
}

fn get_str<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, Error> {
    get(m, k)?
        .as_str()
        .ok_or_else(|| invalid(format!("{k:?} must be a string")))
}

/// Creates the tensor of a spec, with its options as 3.x's `create_tensor` takes them.
async fn create_tensor(ds: &mut Dataset, t: &TensorSpec) -> Result<(), Error> {
    let mut o = TensorOptions::new(&t.htype);
    if let Some(d) = &t.dtype {
        o.dtype = Some(d.parse()?);
    }
    o.sample_compression = t.sample_compression.clone();
    o.chunk_compression = t.chunk_compression.clone();
    o.max_chunk_size = t.max_chunk_size;
    o.tiling_threshold = t.tiling_threshold;
    o.class_names = t.class_names.clone();
    for (k, v) in [
        ("coords", &t.coords),
        ("keypoints", &t.keypoints),
        ("connections", &t.connections),
    ] {
        if let Some(v) = v {
            o.info.insert(k.to_owned(), v.clone());
        }
    }
    if let Some(b) = t.create_shape_tensor {
        o.create_shape_tensor = b;
    }
    if let Some(b) = t.create_id_tensor {
        o.create_id_tensor = b;
    }
    if let Some(b) = t.create_sample_info_tensor {
        o.create_sample_info_tensor = b;
    }
    ds.create_tensor(&t.name, o).await?;
    Ok(())
}

/// Builds `case` at `url` (replacing anything there).
pub async fn build(case: &Case, fixtures: &Path, url: &str) -> Result<(), Error> {
    let mut ds = Dataset::create(
        url,
        OpenOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    for t in &case.tensors {
        create_tensor(&mut ds, t).await?;
    }
    // Creds keys are registered before anything uses them, in order of first use.
    for k in creds_keys(&case.steps) {
        ds.add_creds_key(&k).await?;
    }
    for step in &case.steps {
        let Value::Object(s) = step else {
            return Err(invalid(format!("bad step {step}")));
        };
        let (op, body) = s.iter().next().ok_or_else(|| invalid("empty step"))?;
        let b = body
            .as_object()
            .ok_or_else(|| invalid(format!("step {op} needs an object")))?;
        match op.as_str() {
            "append" => {
                let t = get_str(b, "tensor")?;
                let samples = get(b, "samples")?
                    .as_array()
                    .ok_or_else(|| invalid("samples must be a list"))?
                    .iter()
                    .map(|v| sample_from_json(v, fixtures))
                    .collect::<Result<Vec<_>, _>>()?;
                ds.extend(t, samples).await?;
            }
            "update" => {
                let t = get_str(b, "tensor")?;
                let i = get(b, "index")?
                    .as_u64()
                    .ok_or_else(|| invalid("index must be a number"))?;
                ds.update(t, i, sample_from_json(get(b, "sample")?, fixtures)?)
                    .await?;
            }
            "pop" => {
                let i = b.get("index").and_then(|v| v.as_u64());
                ds.pop(i).await?;
            }
            "rename" => {
                ds.rename_tensor(get_str(b, "from")?, get_str(b, "to")?)
                    .await?
            }
            "delete" => ds.delete_tensor(get_str(b, "tensor")?).await?,
            "info" => {
                let set = get(b, "set")?
                    .as_object()
                    .ok_or_else(|| invalid("set must be an object"))?;
                for (k, v) in set {
                    match b.get("tensor").and_then(|t| t.as_str()) {
                        Some(t) => ds.set_tensor_info(t, k.clone(), v.clone()).await?,
                        None => ds.set_info(k.clone(), v.clone()).await?,
                    }
                }
            }
            "create" => {
                let spec: TensorSpec = serde_json::from_value(body.clone())
                    .map_err(|e| invalid(format!("bad tensor spec {body}: {e}")))?;
                create_tensor(&mut ds, &spec).await?;
            }
            "commit" => {
                ds.commit(get_str(b, "message")?).await?;
            }
            "checkout" => {
                let create = b.get("create").and_then(Value::as_bool).unwrap_or(false);
                ds.checkout(get_str(b, "branch")?, create).await?;
            }
            "merge" => {
                let policy = b.get("policy").and_then(Value::as_str).unwrap_or("none");
                let opts = MergeOptions {
                    policy: policy.parse()?,
                    delete_removed_tensors: b
                        .get("delete_removed_tensors")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                };
                ds.merge_with(get_str(b, "source")?, opts).await?;
            }
            other => return Err(invalid(format!("unknown step {other:?}"))),
        }
    }
    ds.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(bytes: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.bin"), bytes).unwrap();
        dir
    }

    #[test]
    fn file_sample_takes_an_explicit_shape() {
        let dir = fixture(b"RIFF\x24\0\0\0WAVEfmt ");
        let s = sample_from_json(
            &serde_json::json!({"file": "x.bin", "shape": [400, 2]}),
            dir.path(),
        )
        .unwrap();
        let Sample::Encoded {
            compression, shape, ..
        } = s
        else {
            panic!("expected an encoded sample, got {s:?}");
        };
        assert_eq!(compression.name(), "wav");
        assert_eq!(shape, Some(vec![400, 2]));
    }

    #[test]
    fn file_sample_without_shape_leaves_it_to_the_codec() {
        let dir = fixture(b"\x89PNG\r\n\x1a\n");
        let s = sample_from_json(&serde_json::json!({"file": "x.bin"}), dir.path()).unwrap();
        assert!(matches!(s, Sample::Encoded { shape: None, .. }), "{s:?}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        let dir = fixture(b"LASF");
        for shape in [
            serde_json::json!(3),
            serde_json::json!([3, -1]),
            serde_json::json!([1.5]),
        ] {
            let v = serde_json::json!({"file": "x.bin", "shape": shape});
            assert!(sample_from_json(&v, dir.path()).is_err(), "{v}");
        }
    }
}
