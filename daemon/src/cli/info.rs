//! `deeplake info PATH[@ref]`: tensors with htype, dtype, length, shape range, compression
//! and bytes on storage, plus the branch and commit being read.

use std::io::Write;

use deeplake_core::Dataset;
use serde_json::json;

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Dataset path or URL (a folder, file://, memory://, s3://bucket/prefix);
    /// `PATH@ref` reads a branch, commit or tag.
    pub path: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn shape_range(min: &[u64], max: &[u64]) -> String {
    if min.is_empty() {
        return "-".to_owned();
    }
    let dims: Vec<String> = min
        .iter()
        .zip(max)
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect();
    format!("({})", dims.join(", "))
}

pub async fn run(a: &InfoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open_url(&a.path, opts).await?;
    let sizes = ds.storage_sizes().await?;
    let mut tensors = Vec::new();
    for name in ds.tensor_names() {
        let s = ds.summary(&name)?;
        tensors.push((s, sizes.get(&name).copied().unwrap_or(0)));
    }
    if a.json {
        let v = json!({
            "path": a.path,
            "branch": ds.branch(),
            "head": ds.node_id().as_str(),
            "commit": ds.commit_id(),
            "length": ds.len(),
            "tensors": tensors.iter().map(|(s, size)| json!({
                "name": s.name, "htype": s.htype, "dtype": s.dtype, "length": s.length,
                "min_shape": s.min_shape, "max_shape": s.max_shape,
                "sample_compression": s.sample_compression, "chunk_compression": s.chunk_compression,
                "chunks": s.num_chunks, "bytes": size, "class_names": s.class_names,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "dataset  {}", a.path)?;
    writeln!(out, "branch   {}", ds.branch())?;
    writeln!(out, "head     {}", ds.node_id())?;
    writeln!(
        out,
        "commit   {}",
        ds.commit_id().unwrap_or_else(|| "(none yet)".to_owned())
    )?;
    writeln!(out, "rows     {}", ds.len())?;
    writeln!(out)?;
    let header = [
        "tensor",
        "htype",
        "dtype",
        "length",
        "shape",
        "compression",
        "chunks",
        "bytes",
    ];
    let rows: Vec<[String; 8]> = tensors
        .iter()
        .map(|(s, size)| {
            let comp = match (&s.sample_compression, &s.chunk_compression) {
                (Some(c), _) => format!("sample:{c}"),
                (None, Some(c)) => format!("chunk:{c}"),
                (None, None) => "none".to_owned(),
            };
            [
                s.name.clone(),
                s.htype.clone(),
                s.dtype.clone().unwrap_or_else(|| "-".to_owned()),
                s.length.to_string(),
                shape_range(&s.min_shape, &s.max_shape),
                comp,
                s.num_chunks.to_string(),
                size.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
