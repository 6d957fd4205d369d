//! TQL benchmark, our side: builds the table and embedding datasets (formulas shared
//! with `bench/tql_peer.py`, so both engines query the same values), then times each
//! query from a fresh read-only open, printing one JSON object.
//!
//! ```text
//! bench-tql build --out DIR --rows N --emb-rows M
//! bench-tql run --out DIR --reps R
//! ```

use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use deeplake_core::tql::{self, QueryOptions};
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Build {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 100_000)]
        emb_rows: u64,
    },
    Run {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

const SEED: u64 = 20_241_129;
const WORDS: [&str; 8] = [
    "red", "green", "blue", "cat", "dog", "tree", "river", "stone",
];
const DIM: usize = 512;
const BATCH: u64 = 50_000;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The query vector of the cosine query (also in tql_peer.py).
pub fn query_vector() -> Vec<f64> {
    (0..DIM)
        .map(|j| ((unit(splitmix(SEED ^ 0x5151 ^ j as u64)) * 2.0 - 1.0) as f32) as f64)
        .collect()
}

fn queries() -> Vec<(&'static str, String, &'static str)> {
    let v: Vec<String> = query_vector().iter().map(|x| format!("{x}")).collect();
    vec![
        (
            "filter",
            "SELECT * WHERE score > 0.9 AND label < 50".to_owned(),
            "table",
        ),
        (
            "order_by_two_keys_limit",
            "SELECT * ORDER BY label ASC, score DESC LIMIT 100".to_owned(),
            "table",
        ),
        (
            "cosine_top100",
            format!(
                "SELECT * ORDER BY COSINE_SIMILARITY(embedding, ARRAY[{}]) DESC LIMIT 100",
                v.join(", ")
            ),
            "emb",
        ),
        (
            "group_by",
            "SELECT grp, AVG(score) AS a, AMAX(label) AS m GROUP BY grp".to_owned(),
            "table",
        ),
        (
            "version_diff",
            "SELECT * FROM DIFF('v1', 'v2')".to_owned(),
            "table",
        ),
    ]
}

async fn append_table(ds: &mut Dataset, range: std::ops::Range<u64>) -> Result<()> {
    let mut start = range.start;
    while start < range.end {
        let end = (start + BATCH).min(range.end);
        let hs: Vec<u64> = (start..end).map(|i| splitmix(SEED + i)).collect();
        let col = |f: &dyn Fn(u64, u64) -> Sample| {
            (start..end)
                .zip(&hs)
                .map(|(i, &h)| f(i, h))
                .collect::<Vec<_>>()
        };
        ds.extend("id", col(&|i, _| Sample::Array(NdArray::scalar(i as i64))))
            .await?;
        ds.extend(
            "label",
            col(&|_, h| Sample::Array(NdArray::scalar((h % 100) as i32))),
        )
        .await?;
        ds.extend(
            "score",
            col(&|_, h| Sample::Array(NdArray::scalar(unit(h) as f32))),
        )
        .await?;
        ds.extend(
            "grp",
            col(&|i, _| Sample::Array(NdArray::scalar((i % 10) as i32))),
        )
        .await?;
        ds.extend(
            "text",
            col(&|i, h| Sample::Text(format!("item {i} {}", WORDS[((h >> 7) % 8) as usize]))),
        )
        .await?;
        start = end;
    }
    Ok(())
}

async fn build(out: &std::path::Path, rows: u64, emb_rows: u64) -> Result<Value> {
    let table = out.join("table");
    let t0 = Instant::now();
    let mut ds = Dataset::create(
        table.to_str().unwrap_or_default(),
        OpenOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    for (n, d) in [
        ("id", Dtype::I64),
        ("label", Dtype::I32),
        ("score", Dtype::F32),
        ("grp", Dtype::I32),
    ] {
        ds.create_tensor(n, TensorOptions::new("generic").dtype(d))
            .await?;
    }
    ds.create_tensor("text", TensorOptions::new("text")).await?;
    append_table(&mut ds, 0..rows).await?;
    let v1 = ds.commit("base rows").await?;
    ds.tag("v1", Some(&v1)).await?;
    for i in 0..1000.min(rows) {
        ds.update("score", i, Sample::Array(NdArray::scalar(2.0f32)))
            .await?;
    }
    append_table(&mut ds, rows..rows + 1000).await?;
    let v2 = ds.commit("1000 updated, 1000 appended").await?;
    ds.tag("v2", Some(&v2)).await?;
    ds.close().await?;
    let table_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let emb = out.join("emb");
    let mut e = Dataset::create(
        emb.to_str().unwrap_or_default(),
        OpenOptions {
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    e.create_tensor("id", TensorOptions::new("generic").dtype(Dtype::I64))
        .await?;
    e.create_tensor(
        "embedding",
        TensorOptions::new("embedding").dtype(Dtype::F32),
    )
    .await?;
    let mut start = 0;
    while start < emb_rows {
        let end = (start + 10_000).min(emb_rows);
        e.extend(
            "id",
            (start..end)
                .map(|i| Sample::Array(NdArray::scalar(i as i64)))
                .collect(),
        )
        .await?;
        let vecs = (start..end)
            .map(|i| {
                let v: Vec<f32> = (0..DIM as u64)
                    .map(|j| {
                        (unit(splitmix(SEED.wrapping_mul(31) + i * DIM as u64 + j)) * 2.0 - 1.0)
                            as f32
                    })
                    .collect();
                NdArray::from_slice(vec![DIM], &v).map(Sample::Array)
            })
            .collect::<Result<Vec<_>, _>>()?;
        e.extend("embedding", vecs).await?;
        start = end;
    }
    e.commit("embeddings").await?;
    e.close().await?;
    // The peer runs the very same query texts.
    let qs: Vec<Value> = queries()
        .into_iter()
        .map(|(n, q, w)| json!({"name": n, "query": q, "dataset": w}))
        .collect();
    std::fs::write(out.join("queries.json"), serde_json::to_vec_pretty(&qs)?)?;
    Ok(
        json!({"rows": rows, "emb_rows": emb_rows, "build_table_s": table_s, "build_emb_s": t1.elapsed().as_secs_f64()}),
    )
}

async fn run(out: &std::path::Path, reps: usize) -> Result<Value> {
    let mut results = serde_json::Map::new();
    for (name, q, which) in queries() {
        let url = out.join(which);
        let url = url.to_str().unwrap_or_default().to_owned();
        let mut times = Vec::new();
        let mut rows = 0;
        for rep in 0..=reps {
            let ds = Dataset::open(
                &url,
                OpenOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .await?;
            let t = Instant::now();
            let res = tql::query(&ds, &q, &QueryOptions::default()).await?;
            let s = t.elapsed().as_secs_f64();
            rows = res.rows.len();
            if rep > 0 {
                times.push(s);
            }
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        results.insert(
            name.to_owned(),
            json!({"median_s": sorted[sorted.len() / 2], "all_s": times, "rows": rows}),
        );
    }
    Ok(json!({"system": "ours", "queries": results}))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let v = match args.cmd {
        Cmd::Build {
            out,
            rows,
            emb_rows,
        } => build(&out, rows, emb_rows).await?,
        Cmd::Run { out, reps } => run(&out, reps).await?,
    };
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    serde_json::to_writer(&mut o, &v)?;
    writeln!(o)?;
    Ok(())
}
