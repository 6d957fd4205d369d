//! `bench-ours`: the deeplake-rs side of the peer benchmark (see `bench/README.md`).
//!
//! Reads a data set made by `bench/gen_data.py` (JPEGs + `meta.jsonl`), writes it into a
//! fresh local dataset, reads it back and prints one JSON object with the measurements:
//! ingest rate, full decoded read (wall and per process CPU-second), the decode-only
//! ceiling of the same JPEGs on one thread, cold random single-sample reads, and bytes
//! on disk against the raw JPEG bytes. The JSON keys match what `bench/peers.py` prints
//! for the Python peers, so `bench/run.sh` can put them side by side.
//!
//! CPU time comes from `/proc` (process and thread `utime + stime`), so this binary is
//! Linux-only; clock ticks are 10 ms, which is why every CPU-timed phase runs for
//! seconds, not milliseconds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use deeplake_core::format::compression::Compression;
use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

mod procstat;
use procstat::{process_cpu, thread_cpu};

#[derive(Parser, Debug)]
#[command(about = "Benchmark deeplake-rs on a gen_data.py data set; prints one JSON object")]
struct Args {
    /// Directory written by gen_data.py (images/, meta.jsonl, manifest.json).
    #[arg(long)]
    data: PathBuf,
    /// Dataset directory to create (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Rows per `extend` call when writing.
    #[arg(long, default_value_t = 256)]
    write_batch: usize,
    /// Samples per `read_range` call in the full read.
    #[arg(long, default_value_t = 64)]
    read_batch: usize,
    /// Number of random single-sample reads.
    #[arg(long, default_value_t = 500)]
    random_reads: usize,
    /// Seed of the random read rows (splitmix64; peers.py draws the same rows).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Minimum process CPU time of the full read, in seconds (whole epochs).
    #[arg(long, default_value_t = 2.0)]
    read_min_cpu_s: f64,
    /// Minimum thread CPU time of the decode-only loop, in seconds (whole passes).
    #[arg(long, default_value_t = 2.0)]
    decode_min_cpu_s: f64,
    /// Minimum total process CPU time of the write phase, in seconds: the write is
    /// repeated into a fresh dataset until then, because one write of a few thousand
    /// rows takes only a few hundred milliseconds.
    #[arg(long, default_value_t = 1.0)]
    write_min_cpu_s: f64,
    /// Repeat the write this many times and stop (for profiling the write path).
    #[arg(long)]
    write_only: Option<usize>,
    /// With --write-only: open with `durability=none` (no fsync at flush).
    #[arg(long)]
    no_fsync: bool,
}

#[derive(Clone, Deserialize)]
struct Row {
    file: String,
    label: u32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
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

async fn run(args: &Args) -> Result<Value> {
    let rows = load_meta(&args.data)?;
    let n = rows.len();
    ensure!(n > 0, "{} has no rows", args.data.display());
    let classes = load_classes(&args.data)?;
    let url = args
        .out
        .to_str()
        .context("output path is not UTF-8")?
        .to_owned();

    if let Some(times) = args.write_only {
        let mut runs = Vec::new();
        for _ in 0..times.max(1) {
            // As in the measured run, the previous dataset is removed untimed.
            if args.out.exists() {
                std::fs::remove_dir_all(&args.out)
                    .with_context(|| format!("removing {}", args.out.display()))?;
            }
            let (s, cpu, parts) = write_phase(args, &url, &rows, &classes, !args.no_fsync).await?;
            runs.push(json!({ "seconds": s, "samples_per_s": n as f64 / s, "cpu_s": cpu, "breakdown": parts }));
        }
        return Ok(json!({ "system": "ours", "n": n, "write_only": runs }));
    }
    // The peers write through the page cache and never fsync (checked with strace:
    // deeplake 4.7.4 makes no fsync, fdatasync, syncfs or O_SYNC open while writing and
    // committing). Ours fsyncs at every flush by default, so both are measured: the
    // default, and `durability=none`, the peers' guarantee.
    let write_no_fsync = write_repeated(args, &url, &rows, &classes, false).await?;
    let write = write_repeated(args, &url, &rows, &classes, true).await?;
    let jpegs = read_jpegs(&args.data, &rows)?;
    let raw_bytes: u64 = jpegs.iter().map(|b| b.len() as u64).sum();
    let (disk_bytes, disk_alloc) = dir_size(&args.out)?;
    let full = full_read_phase(args, &url, n).await?;
    let decode = decode_only_phase(&jpegs, args.decode_min_cpu_s)?;
    let random = random_phase(args, &url, &jpegs).await?;
    let checks = check_phase(&url, &rows).await?;

    Ok(json!({
        "system": "ours",
        "version": env!("CARGO_PKG_VERSION"),
        "n": n,
        "jpeg_bytes": raw_bytes,
        "write": write,
        "write_no_fsync": write_no_fsync,
        "full_read": full,
        "decode_only": decode,
        "random": random,
        "disk": {
            "dataset_bytes": disk_bytes,
            "dataset_bytes_allocated": disk_alloc,
            "raw_jpeg_bytes": raw_bytes,
            "ratio": disk_bytes as f64 / raw_bytes as f64,
        },
        "checks": checks,
    }))
}

fn load_meta(dir: &Path) -> Result<Vec<Row>> {
    let p = dir.join("meta.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", p.display(), i + 1))
        })
        .collect()
}

fn load_classes(dir: &Path) -> Result<Vec<String>> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let classes = v
        .get("classes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(classes)
}

fn read_jpegs(dir: &Path, rows: &[Row]) -> Result<Vec<Bytes>> {
    rows.iter()
        .map(|r| {
            let p = dir.join(&r.file);
            std::fs::read(&p)
                .map(Bytes::from)
                .with_context(|| format!("reading {}", p.display()))
        })
        .collect()
}

/// Creates the dataset and ingests every row; the timed span includes reading the JPEG
/// files, as it does for the peers (deeplake 3 reads them inside `deeplake.read`).
/// Returns the wall time, the process CPU time and where the wall time went.
async fn write_phase(
    args: &Args,
    url: &str,
    rows: &[Row],
    classes: &[String],
    durable: bool,
) -> Result<(f64, f64, Value)> {
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    let mut ds = Dataset::create(
        url,
        OpenOptions {
            overwrite: true,
            storage: if durable {
                StoreOptions::default()
            } else {
                StoreOptions::default().with("durability", "none")
            },
            ..Default::default()
        },
    )
    .await?;
    ds.create_tensor(
        "images",
        TensorOptions::new("image")
            .dtype(Dtype::U8)
            .sample_compression("jpeg"),
    )
    .await?;
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(classes.iter().cloned()),
    )
    .await?;
    ds.create_tensor("boxes", TensorOptions::new("bbox").dtype(Dtype::F32))
        .await?;
    ds.create_tensor("captions", TensorOptions::new("text"))
        .await?;
    let create = t0.elapsed();
    let mut files = Duration::ZERO;
    let mut ext = [Duration::ZERO; 4];
    // Upcoming batches' files are read in parallel on the CPU pool while the current
    // batch is ingested, as `deeplake import` does; `read_files_s` is the time spent
    // waiting.
    let read_batch = |batch: Vec<Row>, dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>> {
            use rayon::prelude::*;
            batch
                .par_iter()
                .map(|r| {
                    let p = dir.join(&r.file);
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
                })
                .collect()
        })
    };
    let batches: Vec<Vec<Row>> = rows
        .chunks(args.write_batch.max(1))
        .map(|b| b.to_vec())
        .collect();
    // Two batches are read ahead, so a slow file read does not stall the ingest.
    let mut ahead = std::collections::VecDeque::new();
    for b in batches.iter().take(2) {
        ahead.push_back(read_batch(b.clone(), args.data.clone()));
    }
    for (k, batch) in batches.iter().enumerate() {
        let t = Instant::now();
        let bytes = match ahead.pop_front() {
            Some(h) => h.await??,
            None => Vec::new(),
        };
        files += t.elapsed();
        if let Some(b) = batches.get(k + 2) {
            ahead.push_back(read_batch(b.clone(), args.data.clone()));
        }
        let images = bytes
            .into_iter()
            .map(|b| Sample::Encoded {
                bytes: Bytes::from(b),
                compression: Compression::Jpeg,
                shape: None,
            })
            .collect();
        let labels = batch
            .iter()
            .map(|r| Sample::Array(NdArray::scalar(r.label)))
            .collect();
        let boxes = batch
            .iter()
            .map(|r| NdArray::from_slice(vec![4], &r.bbox).map(Sample::Array))
            .collect::<Result<_, _>>()?;
        let captions = batch
            .iter()
            .map(|r| Sample::Text(r.caption.clone()))
            .collect();
        for (slot, (name, samples)) in ext.iter_mut().zip([
            ("images", images),
            ("labels", labels),
            ("boxes", boxes),
            ("captions", captions),
        ]) {
            let t = Instant::now();
            ds.extend(name, samples).await?;
            *slot += t.elapsed();
        }
    }
    let t = Instant::now();
    ds.flush().await?;
    let flush = t.elapsed();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu()? - cpu0;
    let breakdown = json!({
        "create_s": create.as_secs_f64(),
        "read_files_s": files.as_secs_f64(),
        "extend_images_s": ext[0].as_secs_f64(),
        "extend_labels_s": ext[1].as_secs_f64(),
        "extend_boxes_s": ext[2].as_secs_f64(),
        "extend_captions_s": ext[3].as_secs_f64(),
        "flush_s": flush.as_secs_f64(),
    });
    Ok((wall, cpu, breakdown))
}

/// Writes the whole data set into a fresh dataset, again and again (deleting the previous
/// one untimed) until `write_min_cpu_s` of process CPU is spent. Rates: the median
/// repetition's wall time, and all rows over all CPU time (ticks are too coarse for one).
async fn write_repeated(
    args: &Args,
    url: &str,
    rows: &[Row],
    classes: &[String],
    durable: bool,
) -> Result<Value> {
    let n = rows.len() as f64;
    let raw: u64 = rows
        .iter()
        .map(|r| std::fs::metadata(args.data.join(&r.file)).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    let mut walls = Vec::new();
    let mut cpu_total = 0.0;
    let mut breakdowns = Vec::new();
    loop {
        if args.out.exists() {
            std::fs::remove_dir_all(&args.out)
                .with_context(|| format!("removing {}", args.out.display()))?;
        }
        let (wall, cpu, parts) = write_phase(args, url, rows, classes, durable).await?;
        walls.push(wall);
        cpu_total += cpu;
        breakdowns.push(parts);
        if cpu_total >= args.write_min_cpu_s {
            break;
        }
    }
    let median = percentile(&mut walls.clone(), 0.5);
    Ok(json!({
        "repeats": walls.len(),
        "seconds": median,
        "seconds_all": walls,
        "samples_per_s": n / median,
        "mb_per_s": raw as f64 / 1e6 / median,
        "cpu_s": cpu_total,
        "samples_per_cpu_s": n * walls.len() as f64 / cpu_total,
        "breakdown": breakdowns,
        "batch": args.write_batch,
        "api": "Dataset::extend per tensor per batch of Sample::Encoded file bytes, then flush",
        "durability": if durable { "fsync at flush (default)" } else { "durability=none: page cache, as the peers" },
    }))
}

/// Reads every image, decoded, in `read_batch` ranges; whole epochs, each from a fresh
/// open (empty chunk cache), until `read_min_cpu_s` of process CPU time is spent.
async fn full_read_phase(args: &Args, url: &str, n: usize) -> Result<Value> {
    let cpu0 = process_cpu()?;
    let t0 = Instant::now();
    let mut images = 0usize;
    let mut epochs = 0usize;
    let mut pixels = 0usize;
    loop {
        let got = read_epoch(args, url, n, &mut pixels).await?;
        ensure!(got == n, "full read returned {got} images, expected {n}");
        images += got;
        epochs += 1;
        if process_cpu()? - cpu0 >= args.read_min_cpu_s {
            break;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu()? - cpu0;
    Ok(json!({
        "images": images,
        "epochs": epochs,
        "decoded_bytes": pixels,
        "seconds": wall,
        "images_per_s": images as f64 / wall,
        "cpu_s": cpu,
        "images_per_cpu_s": images as f64 / cpu,
        "batch": args.read_batch,
        "api": "Dataset::read_range (decoded) in batches, fresh open per epoch",
    }))
}

async fn read_epoch(args: &Args, url: &str, n: usize, pixels: &mut usize) -> Result<usize> {
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await?;
    let mut images = 0usize;
    let step = args.read_batch.max(1) as u64;
    let mut a = 0u64;
    while a < n as u64 {
        let b = (a + step).min(n as u64);
        for s in ds.read_range("images", a..b).await? {
            match s {
                Sample::Array(arr) => *pixels += arr.data.len(),
                other => bail!("image read back as {other:?}, expected a decoded array"),
            }
            images += 1;
        }
        a = b;
    }
    Ok(images)
}

/// Decodes the JPEGs as the core reader does (zune-jpeg to RGB into a fresh buffer), on
/// one thread, in whole passes until `min_cpu_s` of that thread's CPU time is spent.
fn decode_only_phase(jpegs: &[Bytes], min_cpu_s: f64) -> Result<Value> {
    let jpegs = jpegs.to_vec();
    let handle = std::thread::spawn(move || -> Result<(usize, f64, f64)> {
        let cpu0 = thread_cpu()?;
        let t0 = Instant::now();
        let mut images = 0usize;
        loop {
            for j in &jpegs {
                let px = decode_jpeg(j)?;
                std::hint::black_box(&px);
                images += 1;
            }
            if thread_cpu()? - cpu0 >= min_cpu_s {
                break;
            }
        }
        Ok((images, t0.elapsed().as_secs_f64(), thread_cpu()? - cpu0))
    });
    let (images, wall, cpu) = handle
        .join()
        .map_err(|_| anyhow::anyhow!("decode thread panicked"))??;
    Ok(json!({
        "images": images,
        "seconds": wall,
        "cpu_s": cpu,
        "images_per_cpu_s": images as f64 / cpu,
        "images_per_s": images as f64 / wall,
        "decoder": "zune-jpeg (the core reader's decoder), one thread",
    }))
}

/// Cold random access: one fresh open (empty chunk cache), then single-sample decoded
/// reads of seeded random rows, each timed on its own. The same rows are then decoded
/// straight from the JPEG bytes to give the one-decode baseline.
async fn random_phase(args: &Args, url: &str, jpegs: &[Bytes]) -> Result<Value> {
    let n = jpegs.len() as u64;
    let idx = random_indexes(args.seed, n, args.random_reads);
    let t_open = Instant::now();
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await?;
    let open_ms = ms(t_open.elapsed());
    let mut lat = Vec::with_capacity(idx.len());
    let mut decoded = Vec::with_capacity(idx.len());
    for &i in &idx {
        let t = Instant::now();
        let s = ds.read("images", i).await?;
        lat.push(ms(t.elapsed()));
        decoded.push(s);
    }
    let mut dec = Vec::with_capacity(idx.len());
    let mut mismatches = 0usize;
    for (&i, s) in idx.iter().zip(&decoded) {
        let j = jpegs.get(i as usize).context("random index out of range")?;
        let t = Instant::now();
        let px = decode_jpeg(j)?;
        dec.push(ms(t.elapsed()));
        match s {
            Sample::Array(a) if a.data.as_ref() == px.as_slice() => {}
            _ => mismatches += 1,
        }
    }
    Ok(json!({
        "reads": idx.len(),
        "seed": args.seed,
        "open_ms": open_ms,
        "p50_ms": percentile(&mut lat, 0.50),
        "p99_ms": percentile(&mut lat, 0.99),
        "mean_ms": lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        "decode_p50_ms": percentile(&mut dec, 0.50),
        "pixel_mismatches": mismatches,
        "api": "Dataset::read (decoded), one fresh open",
    }))
}

/// Untimed sanity checks: every tensor has n rows and labels/boxes read back as written.
async fn check_phase(url: &str, rows: &[Row]) -> Result<Value> {
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await?;
    let n = rows.len() as u64;
    for t in ["images", "labels", "boxes", "captions"] {
        let len = ds.tensor_len(t)?;
        ensure!(len == n, "tensor {t} has {len} rows, expected {n}");
    }
    let labels = ds.read_range("labels", 0..n).await?;
    let boxes = ds.read_range("boxes", 0..n).await?;
    let mut bad = 0usize;
    for ((r, l), b) in rows.iter().zip(&labels).zip(&boxes) {
        let l_ok = matches!(l, Sample::Array(a) if a.to_f64_vec() == [f64::from(r.label)]);
        let want: Vec<f64> = r.bbox.iter().map(|&v| f64::from(v)).collect();
        let b_ok = matches!(b, Sample::Array(a) if a.to_f64_vec() == want);
        if !(l_ok && b_ok) {
            bad += 1;
        }
    }
    ensure!(bad == 0, "{bad} rows read back different labels or boxes");
    Ok(json!({ "rows": n, "label_box_mismatches": bad }))
}

fn decode_jpeg(bytes: &[u8]) -> Result<Vec<u8>> {
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    d.decode_headers()
        .map_err(|e| anyhow::anyhow!("jpeg header: {e}"))?;
    let size = d.output_buffer_size().context("jpeg too large")?;
    let mut px = vec![0u8; size];
    d.decode_into(&mut px)
        .map_err(|e| anyhow::anyhow!("jpeg decode: {e}"))?;
    Ok(px)
}

/// splitmix64 reduced mod `n`: a generator small enough to repeat exactly in peers.py,
/// so every system reads the same rows.
fn random_indexes(seed: u64, n: u64, count: usize) -> Vec<u64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            z % n.max(1)
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile (sorts `v`).
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// Apparent and allocated bytes of every file under `dir`.
fn dir_size(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                apparent += m.len();
                allocated += m.blocks() * 512;
            }
        }
    }
    Ok((apparent, allocated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [3.0], 0.99), 3.0);
        assert!(percentile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn random_indexes_match_splitmix64() {
        // First outputs of splitmix64 seeded with 0 (the published reference values).
        assert_eq!(
            random_indexes(0, u64::MAX, 2),
            vec![0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4]
        );
        let v = random_indexes(7, 10, 100);
        assert!(v.iter().all(|&i| i < 10));
        assert_eq!(v, random_indexes(7, 10, 100));
        // peers.py must draw the same rows; this is its output for (7, 2000, 5).
        assert_eq!(random_indexes(7, 2000, 5), vec![487, 1804, 1346, 203, 1674]);
    }

    #[test]
    fn cpu_clocks_advance() {
        assert!(procstat::clock_ticks().unwrap() > 0);
        let t0 = thread_cpu().unwrap();
        let p0 = process_cpu().unwrap();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu().unwrap() > t0);
        assert!(process_cpu().unwrap() > p0);
    }
}
