//! `deeplake stream PATH[@ref] [--tensors a,b] [--batch-size N] [--epochs E] [--shuffle]
//! [--seed S] [--query TQL] [--no-decode] [--prefetch-mb M] [--json]`: streams a dataset
//! in-process through core's streaming engine, as a training loop would get it from the
//! daemon, and reports what the machine delivers, for users checking their setup.
//!
//! Progress goes to stderr (a bar on a terminal, log lines otherwise). The report, one
//! line per epoch and a summary (or one JSON object with `--json`), goes to stdout:
//! rows/s, MB/s of delivered arrays, the time to the first batch, and the peak bytes
//! of batches held ahead against the budget.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use deeplake_core::Dataset;
use deeplake_core::stream::{Column, Cursor, Order, Stream, StreamSpec};
use deeplake_core::tql::{self, QueryOptions};
use serde_json::json;

use super::StorageArgs;
use super::import::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// Dataset path or URL; `PATH@ref` reads a branch, commit or tag.
    pub path: String,
    /// Tensors to stream, comma-separated (default: every visible tensor).
    #[arg(long, value_delimiter = ',')]
    pub tensors: Option<Vec<String>>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Chunk-aware shuffle, seeded by --seed and the epoch.
    #[arg(long)]
    pub shuffle: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stream the rows of this TQL query.
    #[arg(long)]
    pub query: Option<String>,
    /// Keep images as their stored bytes instead of decoding them.
    #[arg(long)]
    pub no_decode: bool,
    /// Budget of batches prepared ahead, in MiB.
    #[arg(long, default_value_t = 256)]
    pub prefetch_mb: usize,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn column_bytes(c: &Column) -> u64 {
    match c {
        Column::Dense(a) | Column::Padded { data: a, .. } => a.data.len() as u64,
        Column::List(v) => v
            .iter()
            .map(|s| match s {
                deeplake_core::Sample::Array(a) => a.data.len() as u64,
                deeplake_core::Sample::Encoded { bytes, .. } => bytes.len() as u64,
                deeplake_core::Sample::Text(t) => t.len() as u64,
                _ => 0,
            })
            .sum(),
    }
}

pub async fn run(a: &StreamArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(a.prefetch_mb > 0, "--prefetch-mb must be at least 1");
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Arc::new(
        Dataset::open_url(&a.path, opts.clone())
            .await
            .with_context(|| format!("opening {}", a.path))?,
    );
    let rows = match &a.query {
        Some(q) => {
            let res = tql::query(
                &ds,
                q,
                &QueryOptions {
                    seed: a.seed,
                    storage: opts.storage.clone(),
                },
            )
            .await?;
            Some(res.rows_of(&ds, "can be streamed")?)
        }
        None => None,
    };
    let mut epochs = Vec::new();
    let mut peak = 0u64;
    for epoch in 0..a.epochs {
        let spec = StreamSpec {
            tensors: a.tensors.clone().unwrap_or_default(),
            batch_size: a.batch_size,
            order: if a.shuffle {
                Order::Shuffle {
                    seed: a.seed,
                    buffer: 2048,
                }
            } else {
                Order::Sequential
            },
            cursor: Cursor { epoch, offset: 0 },
            decode: !a.no_decode,
            prefetch_bytes: a.prefetch_mb << 20,
            ..StreamSpec::default()
        };
        let started = Instant::now();
        let mut s = Stream::open(ds.clone(), rows.clone(), spec).await?;
        let progress = Progress::counting("streaming", "rows", s.rows_total());
        let (mut n, mut bytes, mut first) = (0u64, 0u64, None);
        while let Some(b) = s.next().await {
            let b = b.with_context(|| format!("epoch {epoch}, after {n} rows"))?;
            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            n += b.rows.len() as u64;
            bytes += b.columns.iter().map(|(_, c)| column_bytes(c)).sum::<u64>();
            progress.inc(b.rows.len() as u64);
        }
        progress.finish();
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let st = s.stats();
        peak = peak.max(st.peak_held);
        let e = json!({
            "epoch": epoch,
            "rows": n,
            "seconds": secs,
            "rows_per_s": n as f64 / secs,
            "mb_per_s": bytes as f64 / secs / 1e6,
            "first_batch_s": first.unwrap_or(secs),
        });
        if !a.json {
            writeln!(
                out,
                "epoch {epoch}: {n} rows in {secs:.2} s: {:.0} rows/s, {:.1} MB/s, first batch after {:.3} s",
                n as f64 / secs,
                bytes as f64 / secs / 1e6,
                first.unwrap_or(secs)
            )?;
        }
        epochs.push(e);
    }
    let budget = (a.prefetch_mb as u64) << 20;
    if a.json {
        let v = json!({
            "path": a.path,
            "batch_size": a.batch_size,
            "shuffle": a.shuffle,
            "epochs": epochs,
            "peak_prefetch_bytes": peak,
            "prefetch_budget_bytes": budget,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "batches held ahead: at most {:.1} MiB of a {:.0} MiB budget",
            peak as f64 / (1 << 20) as f64,
            budget as f64 / (1 << 20) as f64
        )?;
    }
    Ok(())
}
