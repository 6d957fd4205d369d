//! `deeplake materialize` as a real process: killed with SIGKILL at random points and
//! run again, it ends with the same dataset an uninterrupted run writes. The kill
//! points come from a seed, printed by the test; `DEEPLAKE_CRASH_SEED=<seed>` replays
//! them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deeplake_core::format::compression::Compression;
use deeplake_core::materialize::VDS_INDEX;
use deeplake_core::{Dataset, NdArray, OpenOptions, Sample, TensorOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

/// A small JPEG whose pixels depend on `seed`.
pub fn jpeg(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(12 + seed % 4, 9 + seed % 3, |x, y| {
        image::Rgb([
            ((x * 11 + seed * 7) % 256) as u8,
            ((y * 3 + seed * 17) % 256) as u8,
            ((x * y + seed) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// `n` rows: a class label, a caption, a stored JPEG and a link to a JPEG file.
pub async fn source(dir: &std::path::Path, n: u32) -> (String, Vec<String>) {
    let files_dir = dir.join("files");
    std::fs::create_dir_all(&files_dir).unwrap();
    let files: Vec<String> = (0..n)
        .map(|i| {
            let p = files_dir.join(format!("{i}.jpg"));
            std::fs::write(&p, jpeg(i)).unwrap();
            p.to_str().unwrap().to_owned()
        })
        .collect();
    let url = dir.join("src").to_str().unwrap().to_owned();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(["a", "b", "c"]),
    )
    .await
    .unwrap();
    ds.create_tensor("caption", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.create_tensor(
        "photo",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    let n = n as usize;
    ds.extend_columns(vec![
        (
            "labels".into(),
            (0..n)
                .map(|i| Sample::Array(NdArray::from_slice(vec![1], &[(i % 3) as u32]).unwrap()))
                .collect(),
        ),
        (
            "caption".into(),
            (0..n).map(|i| Sample::Text(format!("row {i}"))).collect(),
        ),
        (
            "photo".into(),
            (0..n)
                .map(|i| Sample::Encoded {
                    bytes: jpeg(1000 + i as u32).into(),
                    compression: Compression::Jpeg,
                    shape: None,
                })
                .collect(),
        ),
        (
            "img".into(),
            files
                .iter()
                .map(|f| Sample::Link {
                    path: f.clone(),
                    creds_key: None,
                })
                .collect(),
        ),
    ])
    .await
    .unwrap();
    ds.commit("rows").await.unwrap();
    (url, files)
}

/// Everything a reader sees of a materialized dataset: per tensor, each row's stored
/// shape and bytes, plus the source rows and the lineage's row and skip counts.
async fn contents(url: &str) -> Value {
    let ds = Dataset::open(url, OpenOptions::default()).await.unwrap();
    let mut out = serde_json::Map::new();
    for t in ["labels", "caption", "photo", "img", VDS_INDEX] {
        let mut col = Vec::new();
        for r in 0..ds.tensor_len(t).unwrap() {
            let (shape, bytes) = ds.read_stored(t, r).await.unwrap();
            col.push(serde_json::json!([shape, hex(&bytes)]));
        }
        out.insert(t.to_owned(), Value::Array(col));
    }
    out.insert("len".into(), serde_json::json!(ds.len()));
    let lin = &ds.info()[deeplake_core::materialize::LINEAGE_KEY];
    for k in ["state", "rows", "skipped_rows", "skipped", "order", "query"] {
        out.insert(k.into(), lin[k].clone());
    }
    Value::Object(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the command until it succeeds (or, after a kill, finds its job already done),
/// killing it with SIGKILL after a random delay (up to `max_delay`) up to `kills`
/// times. Returns how many runs were killed.
fn run_with_kills(args: &[&str], rng: &mut StdRng, kills: usize, max_delay: Duration) -> usize {
    let bin = env!("CARGO_BIN_EXE_deeplake");
    let mut killed = 0;
    loop {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if killed < kills {
            let ms = max_delay.as_millis().max(31) as u64;
            let delay = Duration::from_millis(rng.random_range(30..ms));
            let started = Instant::now();
            while started.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        // A kill that came after the run's last write left the job finished; the same
        // job again is then refused as done (the caller compares the target's contents).
        if killed > 0
            && !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("holds a finished materialization")
        {
            return killed;
        }
        assert!(
            out.status.success(),
            "deeplake {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(
            out.stdout
                .split(|b| *b == b'\n')
                .find(|l| l.starts_with(b"{"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(report["cancelled"], Value::Bool(false));
        return killed;
    }
}

/// SIGKILL at random points, re-run, and the result equals an uninterrupted run's:
/// values, order, no duplicate and no missing row; also for a run that skips broken
/// links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_resume_to_the_same_dataset() {
    let seed: u64 = std::env::var("DEEPLAKE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash seed {seed} (replay with DEEPLAKE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (src, files) = source(dir.path(), 150).await;
    let query = "SELECT * WHERE labels != 'c' ORDER BY caption DESC";

    for (name, extra) in [("stop", "stop"), ("skip", "skip")] {
        if name == "skip" {
            for i in [5usize, 33, 34, 121] {
                std::fs::remove_file(&files[i]).unwrap();
            }
        }
        let reference = dir.path().join(format!("ref-{name}"));
        let crashed = dir.path().join(format!("crashed-{name}"));
        let base = |to: &std::path::Path| -> Vec<String> {
            vec![
                "materialize".into(),
                src.clone(),
                "--query".into(),
                query.into(),
                "--to".into(),
                to.to_str().unwrap().into(),
                "--batch-rows".into(),
                "3".into(),
                "--on-link-error".into(),
                extra.into(),
            ]
        };
        let r: Vec<String> = base(&reference);
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        let started = Instant::now();
        assert_eq!(run_with_kills(&r, &mut rng, 0, Duration::ZERO), 0);
        // Kill points spread over the first quarter of what an uninterrupted run takes (a
        // resumed run has less to do).
        let full = started.elapsed();
        let c: Vec<String> = base(&crashed);
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        let killed = run_with_kills(&c, &mut rng, 5, full / 4);
        println!("{name}: {killed} runs killed (an uninterrupted run takes {full:?})");
        assert!(killed > 0, "no run was killed: seed {seed}");
        let want = contents(reference.to_str().unwrap()).await;
        let got = contents(crashed.to_str().unwrap()).await;
        assert_eq!(want["state"], "done");
        assert_eq!(got, want, "{name}: seed {seed}");
        let rows: Vec<i64> = want[VDS_INDEX]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let h = v[1].as_str().unwrap();
                let mut b = [0u8; 8];
                for (k, byte) in b.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&h[2 * k..2 * k + 2], 16).unwrap();
                }
                u64::from_le_bytes(b) as i64
            })
            .collect();
        let mut uniq = rows.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), rows.len(), "no row twice");
        let expect = if name == "skip" { 100 - 3 } else { 100 };
        assert_eq!(rows.len(), expect, "{name}");
        if name == "skip" {
            assert_eq!(want["skipped_rows"], 3);
        }
    }
}
