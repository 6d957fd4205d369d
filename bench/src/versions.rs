//! `bench-versions`: what a long history costs. Builds the same rows (the JPEGs,
//! labels and captions of a `gen_data.py` set) twice: once in a single commit, and
//! once as a chain of `--commits` commits that each append the next slice of rows.
//! Then reads both at the head of `main`, epochs interleaved, each from a fresh open:
//! every image decoded, and every image as stored bytes (no decode, so metadata costs
//! are not hidden behind JPEG decoding). Also times the commits themselves: early in
//! the chain against late in it, and one-row commits on a small dataset against the
//! same on the full one. Prints one JSON object; `bench/run_versions.sh` runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use clap::Parser;
use deeplake_core::dataset::ReadOptions;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, NdArray, OpenOptions, Sample, TensorOptions};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Read cost at the head of a long commit chain; prints one JSON object")]
struct Args {
    /// Directory written by gen_data.py.
    #[arg(long)]
    data: PathBuf,
    /// Scratch directory for the two datasets (replaced).
    #[arg(long)]
    out: PathBuf,
    /// Commits in the chain.
    #[arg(long, default_value_t = 1000)]
    commits: usize,
    /// Read epochs per dataset (interleaved).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Chunk size of the image tensor, so that the chain spreads its chunks over many
    /// commits the way a long ingest history does.
    #[arg(long, default_value_t = 2 << 20)]
    chunk_size: u64,
    /// Only read (and time) the two datasets a previous run left in --out: stored
    /// bytes, --epochs epochs of each, interleaved (for profiling the read path).
    #[arg(long)]
    read_only: bool,
}

#[derive(Clone, Deserialize)]
struct Row {
    file: String,
    label: u32,
    caption: String,
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

async fn create(url: &str, args: &Args) -> Result<Dataset> {
    if Path::new(url).exists() {
        std::fs::remove_dir_all(url).with_context(|| format!("removing {url}"))?;
    }
    let mut ds = Dataset::create(url, OpenOptions::default()).await?;
    let mut images = TensorOptions::new("image").sample_compression("jpeg");
    images.max_chunk_size = Some(args.chunk_size);
    ds.create_tensor("images", images).await?;
    ds.create_tensor("labels", TensorOptions::new("class_label"))
        .await?;
    ds.create_tensor("captions", TensorOptions::new("text"))
        .await?;
    Ok(ds)
}

async fn append_rows(ds: &mut Dataset, rows: &[Row], jpegs: &[Bytes]) -> Result<()> {
    ds.extend(
        "images",
        jpegs
            .iter()
            .map(|b| Sample::Encoded {
                bytes: b.clone(),
                compression: Compression::Jpeg,
                shape: None,
            })
            .collect(),
    )
    .await?;
    ds.extend(
        "labels",
        rows.iter()
            .map(|r| Sample::Array(NdArray::scalar(r.label)))
            .collect(),
    )
    .await?;
    ds.extend(
        "captions",
        rows.iter()
            .map(|r| Sample::Text(r.caption.clone()))
            .collect(),
    )
    .await?;
    Ok(())
}

/// One epoch from a fresh read-only open of `main`: every image (decoded or stored
/// bytes), every label and caption. Returns seconds and a checksum of what was read.
async fn epoch(url: &str, n: u64, decode: bool) -> Result<(f64, u64)> {
    let t0 = Instant::now();
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await?;
    ensure!(ds.tensor_len("images")? == n, "{url}: wrong length");
    let opts = ReadOptions {
        decode,
        ..Default::default()
    };
    let mut sum = 0u64;
    let mut a = 0;
    while a < n {
        let b = (a + 64).min(n);
        for s in ds.read_range_with("images", a..b, &opts).await? {
            sum = sum.wrapping_add(match s {
                Sample::Array(arr) => arr.data.len() as u64,
                Sample::Encoded { bytes, .. } => bytes.len() as u64,
                other => anyhow::bail!("image read back as {other:?}"),
            });
        }
        a = b;
    }
    sum = sum.wrapping_add(ds.read_range("labels", 0..n).await?.len() as u64);
    sum = sum.wrapping_add(ds.read_range("captions", 0..n).await?.len() as u64);
    Ok((t0.elapsed().as_secs_f64(), sum))
}

/// Median seconds of `k` one-row commits on `ds`.
async fn one_row_commits(ds: &mut Dataset, row: &Row, jpeg: &Bytes, k: usize) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..k {
        append_rows(ds, std::slice::from_ref(row), std::slice::from_ref(jpeg)).await?;
        let t = Instant::now();
        ds.commit(&format!("one row {i}")).await?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

async fn run(args: &Args) -> Result<Value> {
    let meta = std::fs::read_to_string(args.data.join("meta.jsonl"))
        .with_context(|| format!("reading {}", args.data.join("meta.jsonl").display()))?;
    let rows: Vec<Row> = meta
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let jpegs: Vec<Bytes> = rows
        .iter()
        .map(|r| std::fs::read(args.data.join(&r.file)).map(Bytes::from))
        .collect::<Result<_, _>>()?;
    let n = rows.len();
    ensure!(
        n >= args.commits && args.commits > 0,
        "need at least one row per commit"
    );
    std::fs::create_dir_all(&args.out)?;
    let fresh = args.out.join("fresh").to_string_lossy().into_owned();
    let chain = args.out.join("chain").to_string_lossy().into_owned();

    if args.read_only {
        let (mut f, mut c) = (Vec::new(), Vec::new());
        for _ in 0..args.epochs {
            f.push(epoch(&fresh, n as u64, false).await?.0);
            c.push(epoch(&chain, n as u64, false).await?.0);
        }
        let (fm, cm) = (median(f), median(c));
        return Ok(json!({
            "fresh_stored_s": fm, "chain_stored_s": cm, "ratio_chain_over_fresh": cm / fm,
        }));
    }
    let t = Instant::now();
    let mut ds = create(&fresh, args).await?;
    append_rows(&mut ds, &rows, &jpegs).await?;
    ds.commit("all rows").await?;
    let fresh_build = t.elapsed().as_secs_f64();
    ds.close().await?;

    let t = Instant::now();
    let mut ds = create(&chain, args).await?;
    let mut commit_s = Vec::with_capacity(args.commits);
    for k in 0..args.commits {
        let (a, b) = (k * n / args.commits, (k + 1) * n / args.commits);
        append_rows(&mut ds, &rows[a..b], &jpegs[a..b]).await?;
        let tc = Instant::now();
        ds.commit(&format!("rows {a}..{b}")).await?;
        commit_s.push(tc.elapsed().as_secs_f64());
        if (k + 1) % 100 == 0 {
            progress(&format!("chain: {} of {} commits", k + 1, args.commits));
        }
    }
    let chain_build = t.elapsed().as_secs_f64();
    ds.close().await?;
    let tenth = (args.commits / 10).max(1);
    let early = median(commit_s[..tenth].to_vec());
    let late = median(commit_s[commit_s.len() - tenth..].to_vec());

    let mut reads = json!({});
    for decode in [true, false] {
        let (mut f, mut c) = (Vec::new(), Vec::new());
        let (mut fsum, mut csum) = (0, 0);
        for _ in 0..args.epochs {
            let (s, x) = epoch(&fresh, n as u64, decode).await?;
            f.push(s);
            fsum = x;
            let (s, x) = epoch(&chain, n as u64, decode).await?;
            c.push(s);
            csum = x;
        }
        ensure!(fsum == csum, "the two datasets read back differently");
        let (fm, cm) = (median(f.clone()), median(c.clone()));
        reads[if decode { "decoded" } else { "stored_bytes" }] = json!({
            "fresh_s": fm, "chain_s": cm, "ratio_chain_over_fresh": cm / fm,
            "fresh_all": f, "chain_all": c,
        });
    }

    // Commit cost against dataset size: one-row commits on a 10-row dataset and on the
    // full one (the chain's head).
    let small = args.out.join("small").to_string_lossy().into_owned();
    let mut ds = create(&small, args).await?;
    append_rows(&mut ds, &rows[..10], &jpegs[..10]).await?;
    ds.commit("ten rows").await?;
    let small_commit = one_row_commits(&mut ds, &rows[0], &jpegs[0], 20).await?;
    ds.close().await?;
    let full = args.out.join("full").to_string_lossy().into_owned();
    let mut ds = create(&full, args).await?;
    append_rows(&mut ds, &rows, &jpegs).await?;
    ds.commit("all rows").await?;
    let full_commit = one_row_commits(&mut ds, &rows[0], &jpegs[0], 20).await?;
    ds.close().await?;

    Ok(json!({
        "n": n,
        "commits": args.commits,
        "image_chunk_size": args.chunk_size,
        "build_s": {"fresh": fresh_build, "chain": chain_build},
        "read": reads,
        "commit_s": {
            "chain_first_tenth_median": early,
            "chain_last_tenth_median": late,
            "ratio_late_over_early": late / early,
            "one_row_on_10_rows": small_commit,
            "one_row_on_full": full_commit,
            "ratio_full_over_small": full_commit / small_commit,
        },
    }))
}

/// Progress on stderr (stdout carries the JSON report).
fn progress(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}
