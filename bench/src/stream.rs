//! `bench-stream`: the in-process side of the loader benchmark (see `bench/README.md`).
//!
//! Streams an existing dataset through `deeplake_core::stream` (the engine the daemon
//! serves) for a number of epochs and prints one JSON object: per epoch the images
//! delivered as decoded arrays, wall and process CPU time, the time to the first batch,
//! and at the end the peak resident memory and the peak bytes of prepared batches.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::Parser;
use deeplake_core::stream::{Column, Cursor, Order, Stream, StreamSpec};
use deeplake_core::{Dataset, OpenOptions};
use serde_json::{Value, json};

mod procstat;
use procstat::{peak_rss, process_cpu};

// The daemon's allocator, so that in-process and daemon figures compare the same code.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Stream a dataset in-process with deeplake-core; prints one JSON object")]
struct Args {
    /// Dataset path or URL.
    #[arg(long)]
    dataset: String,
    /// Tensors to stream, comma-separated.
    #[arg(long, default_value = "images,labels")]
    tensors: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Shuffle (chunk-aware, seeded by the epoch).
    #[arg(long)]
    shuffle: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Storage options (`key=value`), e.g. for S3.
    #[arg(long = "storage-option")]
    storage: Vec<String>,
    /// Copy this local dataset folder to `--dataset` first (untimed), e.g. onto S3.
    #[arg(long)]
    copy_from: Option<std::path::PathBuf>,
    /// Only delete every object under `--dataset` (cleaning up a copy), then stop.
    #[arg(long)]
    delete: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&args))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}

async fn run(args: &Args) -> Result<Value> {
    let mut opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    for kv in &args.storage {
        let (k, v) = kv
            .split_once('=')
            .context("storage options are key=value")?;
        opts.storage = opts.storage.with(k, v);
    }
    if args.delete {
        let store = deeplake_core::Store::open(&args.dataset, &opts.storage)?;
        store.delete_prefix("").await?;
        return Ok(json!({ "deleted": args.dataset }));
    }
    if let Some(dir) = &args.copy_from {
        copy_tree(dir, &args.dataset, &opts.storage).await?;
    }
    let ds = Arc::new(
        Dataset::open(&args.dataset, opts)
            .await
            .with_context(|| format!("opening {}", args.dataset))?,
    );
    let tensors: Vec<String> = args.tensors.split(',').map(str::to_owned).collect();
    let mut epochs = Vec::new();
    for epoch in 0..args.epochs {
        let spec = StreamSpec {
            tensors: tensors.clone(),
            batch_size: args.batch_size,
            order: if args.shuffle {
                Order::Shuffle {
                    seed: args.seed,
                    buffer: 2048,
                }
            } else {
                Order::Sequential
            },
            cursor: Cursor { epoch, offset: 0 },
            ..StreamSpec::default()
        };
        let cpu0 = process_cpu()?;
        let t0 = Instant::now();
        let mut s = Stream::open(ds.clone(), None, spec).await?;
        let mut first = None;
        let (mut images, mut bytes) = (0u64, 0u64);
        while let Some(b) = s.next().await {
            let b = b?;
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            match b.column(&tensors[0]) {
                Some(Column::Dense(a)) | Some(Column::Padded { data: a, .. }) => {
                    images += a.shape[0] as u64;
                    bytes += a.data.len() as u64;
                }
                other => anyhow::bail!("{} did not decode to arrays: {other:?}", tensors[0]),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = process_cpu()? - cpu0;
        ensure!(
            images == ds.len(),
            "epoch {epoch} delivered {images} of {} rows",
            ds.len()
        );
        let st = s.stats();
        epochs.push(json!({
            "epoch": epoch,
            "images": images,
            "seconds": secs,
            "cpu_s": cpu,
            "images_per_s": images as f64 / secs,
            "images_per_cpu_s": images as f64 / cpu.max(1e-9),
            "mb_per_s": bytes as f64 / secs / 1e6,
            "first_batch_s": first.unwrap_or(secs),
            "peak_prefetch_bytes": st.peak_held,
        }));
    }
    Ok(json!({
        "system": "ours_inprocess",
        "batch_size": args.batch_size,
        "shuffle": args.shuffle,
        "epochs": epochs,
        "peak_rss_bytes": peak_rss()?,
    }))
}

/// Puts every file under `dir` at the same key under `url` (8 at a time).
async fn copy_tree(
    dir: &std::path::Path,
    url: &str,
    storage: &deeplake_core::store::StoreOptions,
) -> Result<()> {
    use futures::StreamExt;
    let store = deeplake_core::Store::open(url, storage)?;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    futures::stream::iter(files)
        .map(|p| {
            let store = store.clone();
            async move {
                let key = p
                    .strip_prefix(dir)?
                    .to_str()
                    .context("a file name is not UTF-8")?
                    .to_owned();
                let bytes = tokio::fs::read(&p).await?;
                store.put(&key, bytes).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(())
}
