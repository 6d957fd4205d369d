//! Seeded storage faults (testkit::faults) under writes and reads: a thousand
//! schedules of errors before and after a write takes effect, throttling, cut
//! listings, latency and crashes. Each run either completes or fails with an error;
//! afterwards the dataset opens, every commit reads exactly what was committed, and,
//! once a writer of ours has reopened it (as any restarted process does), deeplake
//! 3.9.52 reads the same.

use std::collections::BTreeMap;

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, Error, OpenOptions, Sample, TensorOptions};
use testkit::faults::{Counts, FaultPlan};
use testkit::samples::{int, ints};

const SCHEDULES: u64 = 1000;

fn text(i: i64) -> Sample {
    Sample::Text(format!("row {i}"))
}

async fn texts(ds: &Dataset) -> Vec<String> {
    ds.read_range("t", 0..ds.tensor_len("t").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Text(t) => t,
            other => panic!("not text: {other:?}"),
        })
        .collect()
}

/// A dataset of rows 0..5 in tensors x (int64) and t (text), committed; its commit.
async fn base(url: &str) -> String {
    let mut ds = Dataset::create(url, OpenOptions::default()).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.create_tensor("t", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.extend("x", (0..5).map(int).collect()).await.unwrap();
    ds.extend("t", (0..5).map(text).collect()).await.unwrap();
    ds.commit("base").await.unwrap()
}

/// Appends rows 5..10 and commits, through `storage`.
async fn next(url: &str, storage: StoreOptions) -> Result<String, Error> {
    let mut ds = Dataset::open(
        url,
        OpenOptions {
            storage,
            ..Default::default()
        },
    )
    .await?;
    ds.extend("x", (5..10).map(int).collect()).await?;
    ds.extend("t", (5..10).map(text).collect()).await?;
    ds.flush().await?;
    ds.commit("next").await
}

/// Rows of `url@commit` (clean storage).
async fn rows_at(url: &str, commit: &str) -> (Vec<i64>, Vec<String>) {
    let ds = Dataset::open_url(
        &format!("{url}@{commit}"),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{url}@{commit} does not open: {e}"));
    (ints(&ds, "x").await, texts(&ds).await)
}

fn want(n: i64) -> (Vec<i64>, Vec<String>) {
    (
        (0..n).collect(),
        (0..n).map(|i| format!("row {i}")).collect(),
    )
}

/// Checks the dataset after a faulty run: it opens, the base commit reads rows 0..5,
/// and a "next" commit, if there is one, reads rows 0..10. Returns that commit.
async fn check_after(url: &str, base: &str, seed: u64, counts: Counts) -> Option<String> {
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("seed {seed}: the dataset does not open after {counts:?}: {e}"));
    let log = ds.log();
    assert!(
        log.iter().any(|c| c.id == base),
        "seed {seed}: the base commit is gone from the log"
    );
    assert_eq!(
        rows_at(url, base).await,
        want(5),
        "seed {seed}: base commit"
    );
    let next = log
        .iter()
        .find(|c| c.message.as_deref() == Some("next"))
        .map(|c| c.id.clone());
    if let Some(c) = &next {
        assert_eq!(rows_at(url, c).await, want(10), "seed {seed}: next commit");
    }
    // The head (committed or not) is readable and its tensors agree in length.
    let (x, t) = (ints(&ds, "x").await, texts(&ds).await);
    assert_eq!(
        x.len(),
        t.len(),
        "seed {seed}: head tensors differ in length"
    );
    next
}

#[tokio::test]
async fn appends_and_commits_under_a_thousand_fault_schedules() {
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    let mut injected = 0u64;
    for seed in 0..SCHEDULES {
        let url = format!("memory://faults-commit-{seed}/ds");
        let c0 = base(&url).await;
        let (layer, log) = FaultPlan::seeded(seed).layer();
        let result = next(&url, StoreOptions::default().with_layer(layer)).await;
        let counts = log.counts();
        injected += counts.errors + counts.errors_after + counts.throttled + counts.partial_lists;
        let committed = check_after(&url, &c0, seed, counts).await;
        match &result {
            Ok(c1) => {
                assert_eq!(committed.as_deref(), Some(c1.as_str()), "seed {seed}");
                *tally.entry("committed").or_default() += 1;
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "seed {seed}: an error says nothing"
                );
                // A commit applied whose answer was lost still reads right (checked).
                *tally
                    .entry(if committed.is_some() {
                        "failed after committing"
                    } else {
                        "failed"
                    })
                    .or_default() += 1;
            }
        }
    }
    eprintln!("{SCHEDULES} schedules: {tally:?}, {injected} faults injected");
    assert!(
        tally.get("committed").copied().unwrap_or(0) > 0,
        "{tally:?}"
    );
    assert!(tally.get("failed").copied().unwrap_or(0) > 0, "{tally:?}");
}

#[tokio::test]
async fn reads_under_a_thousand_fault_schedules_are_right_or_an_error() {
    let url = "memory://faults-read/ds";
    let c0 = base(url).await;
    let mut tally: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in 0..SCHEDULES {
        let (layer, _) = FaultPlan::seeded(seed).layer();
        let storage = StoreOptions::default().with_layer(layer);
        let read = async {
            let ds = Dataset::open_url(
                &format!("{url}@{c0}"),
                OpenOptions {
                    storage,
                    read_only: true,
                    ..Default::default()
                },
            )
            .await?;
            let x = ds.read_range("x", 0..5).await?;
            let t = ds.read_range("t", 0..5).await?;
            Ok::<_, Error>((x, t))
        }
        .await;
        match read {
            Ok((x, t)) => {
                let x: Vec<i64> = x
                    .iter()
                    .map(|s| match s {
                        Sample::Array(a) => a.to_f64_vec()[0] as i64,
                        other => panic!("seed {seed}: {other:?}"),
                    })
                    .collect();
                let t: Vec<String> = t
                    .into_iter()
                    .map(|s| match s {
                        Sample::Text(t) => t,
                        other => panic!("seed {seed}: {other:?}"),
                    })
                    .collect();
                assert_eq!(
                    (x, t),
                    want(5),
                    "seed {seed}: a read that succeeds is right"
                );
                *tally.entry("read").or_default() += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                *tally.entry("failed").or_default() += 1;
            }
        }
    }
    eprintln!("{SCHEDULES} read schedules: {tally:?}");
    assert!(
        tally.get("read").copied().unwrap_or(0) > 0
            && tally.get("failed").copied().unwrap_or(0) > 0
    );
}

/// On local disk, deeplake 3.9.52 reads what faulty runs left exactly as we do.
#[tokio::test]
async fn deeplake3_reads_what_faulty_runs_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for seed in 0..40u64 {
        let url = dir
            .path()
            .join(format!("ds{seed}"))
            .to_string_lossy()
            .into_owned();
        std::fs::create_dir_all(&url).unwrap();
        let c0 = base(&url).await;
        let (layer, log) = FaultPlan::seeded(seed).layer();
        let _ = next(&url, StoreOptions::default().with_layer(layer)).await;
        let c1 = check_after(&url, &c0, seed, log.counts()).await;
        // The restart: a writer of ours opening the dataset brings the 3.x files up to
        // its newest flush record (3.x itself would need `reset=True` after a crash of
        // its own mid-write; committed versions never do).
        Dataset::open(&url, OpenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: a writer cannot reopen: {e}"));
        checked.push((url, c0, c1));
    }
    let script = r#"
import json, sys, deeplake
out = {}
for arg in sys.argv[1:]:
    url, commits = arg.split("|", 1)
    ds = deeplake.load(url, read_only=True, verbose=False)
    got = {}
    for c in [c for c in commits.split(",") if c]:
        ds.checkout(c)
        got[c] = [int(v) for v in ds.x.numpy().reshape(-1)], [str(v) for v in ds.t.numpy().reshape(-1)]
    out[url] = got
print(json.dumps(out))
"#;
    let args: Vec<String> = checked
        .iter()
        .map(|(u, c0, c1)| format!("{u}|{c0},{}", c1.clone().unwrap_or_default()))
        .collect();
    let v = testkit::oracle::dl3_json(script, &args);
    for (u, c0, c1) in &checked {
        let (x, t) = want(5);
        assert_eq!(v[u][c0], serde_json::json!([x, t]), "{u}@{c0}");
        if let Some(c1) = c1 {
            let (x, t) = want(10);
            assert_eq!(v[u][c1], serde_json::json!([x, t]), "{u}@{c1}");
        }
    }
}
