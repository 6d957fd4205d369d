//! Materialization benchmark: one JSON object on stdout.
//!
//! ```text
//! bench-materialize --work DIR [--files 10000] [--rows 70000] [--step 7] [--reps 3] [--threads T]
//! ```
//!
//! (a) `links`: a dataset of `--files` rows whose `link[image]` tensor points at local
//!     JPEG files, materialized into a new dataset, against a plain parallel copy of the
//!     same files (read whole, written to a fresh folder and synced, as durable as the
//!     materialized data) with the same number of threads. Reported: medians and
//!     `copy_s / materialize_s` (the goal is >= 0.8); also the copy without syncs.
//! (b) `stream`: every `--step`th row of a `--rows`-row dataset with a stored JPEG image
//!     tensor, read in batches of 256 and decoded, from the materialized copy against
//!     the same rows read as a sparse view of the source. Reported: medians and
//!     `sparse_s / materialized_s`.
//!
//! Every timed read opens a fresh handle (a cold chunk cache); the files stay in the
//! OS page cache for both sides alike.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use deeplake_core::dataset::ReadOptions;
use deeplake_core::format::compression::Compression;
use deeplake_core::materialize::{self, Destination, MaterializeOptions, Selection};
use deeplake_core::runtime::Control;
use deeplake_core::{Dataset, NdArray, OpenOptions, Sample, TensorOptions};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Scratch folder (created; the caller deletes it).
    #[arg(long)]
    work: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    files: u32,
    #[arg(long, default_value_t = 70_000)]
    rows: u64,
    #[arg(long, default_value_t = 7)]
    step: u64,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Threads of both sides (tokio workers and the rayon pool; copy threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&args))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A `size` x `size` JPEG of smooth colour with grain, fixed by `i`.
fn jpeg(i: u64, size: u32) -> Result<Vec<u8>> {
    let h = splitmix(i);
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let g = splitmix(h ^ u64::from(x * 977 + y)) as u8 & 15;
        image::Rgb([
            ((x + (h as u32 & 63)) % 256) as u8 ^ g,
            ((y * 2 + (h >> 8) as u32 % 64) % 256) as u8,
            (((x ^ y) + (h >> 16) as u32 % 64) % 256) as u8 ^ g,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&img)?;
    Ok(out)
}

async fn run(args: &Args) -> Result<Value> {
    std::fs::create_dir_all(&args.work)?;
    let links = bench_links(args).await?;
    let stream = bench_stream(args).await?;
    Ok(json!({
        "threads": args.threads,
        "reps": args.reps,
        "links": links,
        "stream": stream,
    }))
}

async fn bench_links(args: &Args) -> Result<Value> {
    let files_dir = args.work.join("files");
    std::fs::create_dir_all(&files_dir)?;
    let n = args.files;
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| files_dir.join(format!("{i:06}.jpg")))
        .collect();
    {
        use rayon::prelude::*;
        paths
            .par_iter()
            .enumerate()
            .try_for_each(|(i, p)| -> Result<()> {
                std::fs::write(p, jpeg(i as u64, 128)?)?;
                Ok(())
            })?;
    }
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let src = args.work.join("links-src");
    let src_url = src.to_str().context("path")?.to_owned();
    let mut ds = Dataset::create(
        &src_url,
        OpenOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("jpeg"),
    )
    .await?;
    ds.create_tensor("label", TensorOptions::new("class_label"))
        .await?;
    let links: Vec<Sample> = paths
        .iter()
        .map(|p| Sample::Link {
            path: p.to_string_lossy().into_owned(),
            creds_key: None,
        })
        .collect();
    let labels: Vec<Sample> = (0..n)
        .map(|i| Sample::Array(NdArray::scalar(i % 10)))
        .collect();
    ds.extend_columns(vec![("img".into(), links), ("label".into(), labels)])
        .await?;
    ds.commit("links").await?;
    drop(ds);

    let mut mat = Vec::new();
    let mut copy = Vec::new();
    let mut copy_plain = Vec::new();
    let out = args.work.join("links-out");
    let copy_dir = args.work.join("copy");
    for _ in 0..args.reps {
        // Materialize.
        let mut o = MaterializeOptions::new(
            src_url.clone(),
            Selection::All,
            Destination::Dataset {
                url: out.to_string_lossy().into_owned(),
                opts: OpenOptions::default(),
            },
        );
        o.overwrite = true;
        let t = Instant::now();
        let rep = materialize::materialize(&o, &Control::default()).await?;
        mat.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(
            rep.rows_written == u64::from(n),
            "rows {}",
            rep.rows_written
        );

        // A plain parallel copy of the same files, durable like the materialized data.
        if copy_dir.exists() {
            std::fs::remove_dir_all(&copy_dir)?;
        }
        std::fs::create_dir_all(&copy_dir)?;
        let t = Instant::now();
        {
            use rayon::prelude::*;
            paths.par_iter().try_for_each(|p| -> Result<()> {
                let b = std::fs::read(p)?;
                let dst = copy_dir.join(p.file_name().context("name")?);
                let mut f = std::fs::File::create(dst)?;
                f.write_all(&b)?;
                f.sync_all()?;
                Ok(())
            })?;
        }
        std::fs::File::open(&copy_dir)?.sync_all()?;
        copy.push(t.elapsed().as_secs_f64());

        // The same copy without making it durable (what `cp` does).
        std::fs::remove_dir_all(&copy_dir)?;
        std::fs::create_dir_all(&copy_dir)?;
        let t = Instant::now();
        {
            use rayon::prelude::*;
            paths.par_iter().try_for_each(|p| -> Result<()> {
                let b = std::fs::read(p)?;
                std::fs::write(copy_dir.join(p.file_name().context("name")?), b)?;
                Ok(())
            })?;
        }
        copy_plain.push(t.elapsed().as_secs_f64());
    }
    let (m, c) = (median(mat.clone()), median(copy.clone()));
    let cp = median(copy_plain.clone());
    Ok(json!({
        "files": n,
        "bytes": bytes,
        "materialize_s": mat,
        "copy_s": copy,
        "materialize_median_s": m,
        "copy_median_s": c,
        "materialize_mb_s": bytes as f64 / m / 1e6,
        "copy_mb_s": bytes as f64 / c / 1e6,
        "ratio_copy_over_materialize": c / m,
        "copy_unsynced_s": copy_plain,
        "copy_unsynced_median_s": cp,
        "ratio_unsynced_copy_over_materialize": cp / m,
        "goal": 0.8,
    }))
}

/// Reads `rows` of `tensor` in batches of 256, decoded; returns the pixels summed (so
/// nothing is optimized away) and checks every row decoded to an array.
async fn stream(ds: &Dataset, rows: &[u64]) -> Result<u64> {
    let mut sum = 0u64;
    for part in rows.chunks(256) {
        let samples = ds
            .read_rows_with("images", part, &ReadOptions::default())
            .await?;
        for s in samples {
            match s {
                Sample::Array(a) => sum += u64::from(a.data.first().copied().unwrap_or(0)),
                other => anyhow::bail!("not an image: {other:?}"),
            }
        }
    }
    Ok(sum)
}

async fn bench_stream(args: &Args) -> Result<Value> {
    let src = args.work.join("stream-src");
    let src_url = src.to_str().context("path")?.to_owned();
    let mut ds = Dataset::create(
        &src_url,
        OpenOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await?;
    ds.create_tensor("label", TensorOptions::new("class_label"))
        .await?;
    const BATCH: u64 = 5000;
    let mut start = 0;
    while start < args.rows {
        let end = (start + BATCH).min(args.rows);
        let images = {
            use rayon::prelude::*;
            (start..end)
                .into_par_iter()
                .map(|i| {
                    Ok(Sample::Encoded {
                        bytes: jpeg(i, 48)?.into(),
                        compression: Compression::Jpeg,
                        shape: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let labels = (start..end)
            .map(|i| Sample::Array(NdArray::scalar((i % 10) as u32)))
            .collect();
        ds.extend_columns(vec![("images".into(), images), ("label".into(), labels)])
            .await?;
        start = end;
    }
    ds.commit("images").await?;
    drop(ds);
    let rows: Vec<u64> = (0..args.rows).step_by(args.step.max(1) as usize).collect();
    let out = args.work.join("stream-mat");
    let out_url = out.to_string_lossy().into_owned();
    let mut o = MaterializeOptions::new(
        src_url.clone(),
        Selection::Rows(rows.clone()),
        Destination::Dataset {
            url: out_url.clone(),
            opts: OpenOptions::default(),
        },
    );
    o.overwrite = true;
    let t = Instant::now();
    materialize::materialize(&o, &Control::default()).await?;
    let materialize_s = t.elapsed().as_secs_f64();
    let ro = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let dense: Vec<u64> = (0..rows.len() as u64).collect();
    let (mut sparse_t, mut dense_t) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        let sds = Dataset::open(&src_url, ro.clone()).await?;
        let t = Instant::now();
        let a = stream(&sds, &rows).await?;
        sparse_t.push(t.elapsed().as_secs_f64());
        let mds = Dataset::open(&out_url, ro.clone()).await?;
        let t = Instant::now();
        let b = stream(&mds, &dense).await?;
        dense_t.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(a == b, "the two reads differ");
    }
    let (s, d) = (median(sparse_t.clone()), median(dense_t.clone()));
    Ok(json!({
        "source_rows": args.rows,
        "rows": rows.len(),
        "step": args.step,
        "materialize_s": materialize_s,
        "sparse_s": sparse_t,
        "materialized_s": dense_t,
        "sparse_median_s": s,
        "materialized_median_s": d,
        "sparse_rows_s": rows.len() as f64 / s,
        "materialized_rows_s": rows.len() as f64 / d,
        "ratio_sparse_over_materialized": s / d,
    }))
}
