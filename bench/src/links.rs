//! Link reads benchmark: N image links served by a local HTTP server that waits
//! `--latency-ms` before every response, read back through `Dataset::read_resolved` at
//! several linker concurrencies. Prints one JSON object: per concurrency the wall time,
//! requests/s and MB/s, the ideal requests/s (concurrency / latency), the efficiency
//! (achieved / ideal) and the most requests the server saw in flight at once (the
//! linker's bound must hold it at the concurrency).
//!
//! ```text
//! bench-links [--n 400] [--latency-ms 20] [--side 96] [--concurrency 1,8,32,64] [--reps 3]
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use deeplake_core::link::{LinkOptions, Linker};
use deeplake_core::{Dataset, OpenOptions, Sample, TensorOptions};
use serde_json::json;
use testkit::http::HttpServer;

#[derive(Parser)]
struct Args {
    /// Links (and image files) in the dataset.
    #[arg(long, default_value_t = 400)]
    n: usize,
    /// Delay the server adds to every response.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Side of the square RGB images (PNG).
    #[arg(long, default_value_t = 96)]
    side: usize,
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 32, 64])]
    concurrency: Vec<usize>,
    /// Repetitions per concurrency (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
}

/// Image bytes of row `i`: noise, so PNG cannot shrink them much.
fn image(side: usize, i: usize) -> Result<Vec<u8>> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..side * side * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let arr = deeplake_core::NdArray::from_slice(vec![side, side, 3], &data)?;
    Ok(deeplake_core::format::compression::encode_sample(
        &arr,
        &deeplake_core::format::compression::Compression::Png,
    )?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    if a.n == 0 || a.reps == 0 || a.concurrency.contains(&0) {
        bail!("--n, --reps and every --concurrency must be at least 1");
    }
    let srv = HttpServer::start();
    let mut total_bytes = 0u64;
    let mut urls = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let bytes = image(a.side, i)?;
        total_bytes += bytes.len() as u64;
        let name = format!("img/{i:06}.png");
        srv.put(&name, bytes);
        urls.push(srv.url(&name));
    }
    let dir = std::env::temp_dir().join(format!("bench-links-{}", std::process::id()));
    let url = dir.to_string_lossy().into_owned();
    {
        let mut ds = Dataset::create(
            &url,
            OpenOptions {
                overwrite: true,
                ..OpenOptions::default()
            },
        )
        .await?;
        ds.create_tensor(
            "images",
            TensorOptions::new("link[image]")
                .sample_compression("png")
                .verify(false),
        )
        .await?;
        ds.extend(
            "images",
            urls.into_iter()
                .map(|path| Sample::Link {
                    path,
                    creds_key: None,
                })
                .collect(),
        )
        .await?;
        ds.close().await?;
    }
    srv.set_delay(Duration::from_millis(a.latency_ms));
    let latency_s = a.latency_ms as f64 / 1000.0;
    let mut results = Vec::new();
    for &c in &a.concurrency {
        let mut times = Vec::with_capacity(a.reps);
        let mut max_in_flight = 0;
        for _ in 0..a.reps {
            // A fresh linker without a cache: every read goes to the server.
            let linker = Linker::new(LinkOptions {
                concurrency: c,
                cache_bytes: 0,
                ..LinkOptions::default()
            })?;
            let ds = Dataset::open(
                &url,
                OpenOptions {
                    read_only: true,
                    linker: Some(linker),
                    ..OpenOptions::default()
                },
            )
            .await?;
            srv.reset_counters();
            let t = Instant::now();
            let got = ds.read_resolved("images", 0..a.n as u64, false).await?;
            times.push(t.elapsed().as_secs_f64());
            let bytes: u64 = got
                .iter()
                .map(|s| match s {
                    Sample::Encoded { bytes, .. } => bytes.len() as u64,
                    _ => 0,
                })
                .sum();
            if bytes != total_bytes || srv.total_requests() != a.n {
                bail!(
                    "concurrency {c}: read {bytes} bytes in {} requests, expected {total_bytes} in {}",
                    srv.total_requests(),
                    a.n
                );
            }
            max_in_flight = max_in_flight.max(srv.max_in_flight());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let rps = a.n as f64 / median;
        let ideal = c as f64 / latency_s;
        let line = json!({
            "concurrency": c,
            "median_s": median,
            "runs_s": times,
            "requests_per_s": rps,
            "mb_per_s": total_bytes as f64 / median / 1e6,
            "ideal_requests_per_s": ideal,
            "ideal_mb_per_s": ideal * total_bytes as f64 / a.n as f64 / 1e6,
            "efficiency": rps / ideal,
            "server_max_in_flight": max_in_flight,
        });
        writeln!(std::io::stderr(), "{line}")?;
        results.push(line);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{}",
        json!({
            "n": a.n,
            "latency_ms": a.latency_ms,
            "image_bytes_total": total_bytes,
            "image_bytes_mean": total_bytes as f64 / a.n as f64,
            "results": results,
        })
    )?;
    Ok(())
}
