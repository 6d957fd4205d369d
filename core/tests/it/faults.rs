//! Seeded storage faults (testkit::faults) under writes and reads: a thousand
//! schedules of errors before and after a write takes effect, throttling, cut
//! listings, latency and crashes. Each run either completes or fails with an error;
//! afterwards the dataset opens, every commit reads exactly what was committed, and,
//! once a writer of ours has reopened it (as any restarted process does), deeplake
//! 3.9.52 reads the same.

use std::time::Duration;

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, Error, NdArray, OpenOptions, Sample, TensorOptions};
use testkit::faults::{Counts, FaultPlan, Tally, saw_each, tally};
use testkit::samples::{int, ints};

const SCHEDULES: u64 = 1000;

/// Runs the schedule `f(seed)` for every seed, 16 at a time (a fault's latency is a
/// sleep, so overlapping schedules keep the suite quick; each uses its own dataset),
/// and adds up the outcomes each reports.
async fn each_schedule<F, Fut>(f: F) -> Tally
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Vec<(&'static str, u64)>>,
{
    use futures::StreamExt;
    let runs: Vec<Vec<(&'static str, u64)>> = futures::stream::iter(0..SCHEDULES)
        .map(f)
        .buffer_unordered(16)
        .collect()
        .await;
    tally(runs.into_iter().flatten())
}

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
    source_of(url, 5).await
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
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        let url = format!("memory://faults-commit-{seed}/ds");
        let c0 = base(&url).await;
        let (layer, log) = FaultPlan::seeded(seed).layer();
        let result = next(&url, StoreOptions::default().with_layer(layer)).await;
        let counts = log.counts();
        tally.push((
            "faults injected",
            counts.errors + counts.errors_after + counts.throttled + counts.partial_lists,
        ));
        let committed = check_after(&url, &c0, seed, counts).await;
        match &result {
            Ok(c1) => {
                assert_eq!(committed.as_deref(), Some(c1.as_str()), "seed {seed}");
                tally.push(("committed", 1));
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "seed {seed}: an error says nothing"
                );
                // A commit applied whose answer was lost still reads right (checked).
                tally.push((
                    if committed.is_some() {
                        "failed after committing"
                    } else {
                        "failed"
                    },
                    1,
                ));
            }
        }
        tally
    })
    .await;
    eprintln!("{SCHEDULES} append and commit schedules: {tally:?}");
    saw_each("append and commit", &tally, &["committed", "failed"]);
}

#[tokio::test]
async fn reads_under_a_thousand_fault_schedules_are_right_or_an_error() {
    let url = "memory://faults-read/ds";
    let c0 = base(url).await;
    let c0 = &c0;
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
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
                tally.push(("read", 1));
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                tally.push(("failed", 1));
            }
        }
        tally
    })
    .await;
    eprintln!("{SCHEDULES} read schedules: {tally:?}");
    saw_each("read", &tally, &["read", "failed"]);
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

/// Rows of main's commit c1 in [`branches`].
fn main_rows() -> (Vec<i64>, Vec<String>) {
    let (mut x, mut t) = want(5);
    x.extend([100, 101]);
    t.extend(["row 100".to_owned(), "row 101".to_owned()]);
    (x, t)
}

/// main: 0..5 (c0), then 100, 101 (c1); alt from c0: 5..10 (c2). Returns (c1, c2).
async fn branches(url: &str) -> (String, String) {
    base(url).await;
    let mut ds = Dataset::open(url, OpenOptions::default()).await.unwrap();
    ds.checkout("alt", true).await.unwrap();
    ds.extend("x", (5..10).map(int).collect()).await.unwrap();
    ds.extend("t", (5..10).map(text).collect()).await.unwrap();
    let c2 = ds.commit("on alt").await.unwrap();
    ds.checkout("main", false).await.unwrap();
    ds.extend("x", vec![int(100), int(101)]).await.unwrap();
    ds.extend("t", vec![text(100), text(101)]).await.unwrap();
    let c1 = ds.commit("on main").await.unwrap();
    ds.close().await.unwrap();
    (c1, c2)
}

async fn merge_alt(url: &str, storage: StoreOptions) -> Result<(), Error> {
    let mut ds = Dataset::open(
        url,
        OpenOptions {
            storage,
            ..Default::default()
        },
    )
    .await?;
    ds.merge("alt", deeplake_core::version::MergePolicy::None)
        .await?;
    Ok(())
}

async fn head_rows(url: &str) -> (Vec<i64>, Vec<String>) {
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (ints(&ds, "x").await, texts(&ds).await)
}

#[tokio::test]
async fn merges_under_a_thousand_fault_schedules() {
    // What a merge without faults gives.
    let clean = "memory://faults-merge-clean/ds";
    branches(clean).await;
    merge_alt(clean, StoreOptions::default()).await.unwrap();
    let merged = head_rows(clean).await;
    assert_eq!(merged.0.len(), 12, "{merged:?}");
    let merged = &merged;
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        let url = format!("memory://faults-merge-{seed}/ds");
        let (c1, c2) = branches(&url).await;
        let (layer, log) = FaultPlan::seeded(seed).layer();
        let result = merge_alt(&url, StoreOptions::default().with_layer(layer)).await;
        let counts = log.counts();
        let ds = Dataset::open(
            &url,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: does not open after {counts:?}: {e}"));
        let (want1, want2) = (main_rows(), want(10));
        assert_eq!(
            rows_at(&url, &c1).await,
            want1,
            "seed {seed}: main's commit"
        );
        assert_eq!(rows_at(&url, &c2).await, want2, "seed {seed}: alt's commit");
        let merge_commit = ds
            .log()
            .iter()
            .find(|c| !c.is_head && c.merge_parent.is_some())
            .map(|c| c.id.clone());
        if let Some(m) = &merge_commit {
            assert_eq!(
                rows_at(&url, m).await,
                *merged,
                "seed {seed}: the merge commit"
            );
        }
        match (&result, &merge_commit) {
            (Ok(()), Some(_)) => tally.push(("merged", 1)),
            (Ok(()), None) => panic!("seed {seed}: the merge succeeded but left no merge commit"),
            (Err(_), Some(_)) => tally.push(("failed after merging", 1)),
            (Err(_), None) => tally.push(("failed", 1)),
        }
        tally
    })
    .await;
    eprintln!("{SCHEDULES} merge schedules: {tally:?}");
    saw_each("merge", &tally, &["merged", "failed"]);
}

#[tokio::test]
async fn gc_under_a_thousand_fault_schedules_keeps_every_commit() {
    use deeplake_core::dataset::gc::{self, GcOptions};
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        let url = format!("memory://faults-gc-{seed}/ds");
        let (c1, c2) = branches(&url).await;
        // Garbage: a head chunk written, then superseded by its update (chunks are
        // never rewritten in place), and the flush record before the last.
        let mut ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
        ds.extend("x", vec![int(7)]).await.unwrap();
        ds.extend("t", vec![text(7)]).await.unwrap();
        ds.flush().await.unwrap();
        ds.update("x", 7, int(8)).await.unwrap();
        ds.flush().await.unwrap();
        ds.close().await.unwrap();
        let (layer, _) = FaultPlan::seeded(seed).layer();
        let run = async {
            let store = deeplake_core::store::Store::open(
                &url,
                &StoreOptions::default().with_layer(layer),
            )?;
            let opts = GcOptions {
                grace: std::time::Duration::ZERO,
            };
            let plan = gc::plan(&store, &opts).await?;
            gc::apply(&store, &plan).await
        }
        .await;
        let (want1, want2) = (main_rows(), want(10));
        assert_eq!(
            rows_at(&url, &c1).await,
            want1,
            "seed {seed}: main's commit after gc"
        );
        assert_eq!(
            rows_at(&url, &c2).await,
            want2,
            "seed {seed}: alt's commit after gc"
        );
        let mut head = want1.clone();
        head.0.push(8);
        head.1.push("row 7".to_owned());
        assert_eq!(
            head_rows(&url).await,
            head,
            "seed {seed}: main's head after gc"
        );
        if let Ok(report) = &run {
            if !report.deleted.is_empty() {
                tally.push(("deleted something", 1));
            }
            let store = deeplake_core::store::Store::open(&url, &StoreOptions::default()).unwrap();
            let again = gc::plan(
                &store,
                &GcOptions {
                    grace: std::time::Duration::ZERO,
                },
            )
            .await
            .unwrap();
            assert!(
                again
                    .items
                    .iter()
                    .all(|i| !report.deleted.iter().any(|d| d.key == i.key)),
                "seed {seed}: deleted objects are gone"
            );
        }
        tally.push((if run.is_ok() { "collected" } else { "failed" }, 1));
        tally
    })
    .await;
    eprintln!("{SCHEDULES} gc schedules: {tally:?}");
    saw_each("gc", &tally, &["collected", "failed", "deleted something"]);
}

/// Opens `url@c0` through a fault schedule, read-only.
async fn open_faulty(url: &str, commit: &str, seed: u64) -> Result<std::sync::Arc<Dataset>, Error> {
    let (layer, _) = FaultPlan::seeded(seed).layer();
    Dataset::open_url(
        &format!("{url}@{commit}"),
        OpenOptions {
            storage: StoreOptions::default().with_layer(layer),
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .map(std::sync::Arc::new)
}

#[tokio::test]
async fn queries_and_streams_under_a_thousand_fault_schedules_are_right_or_an_error() {
    use deeplake_core::stream::{Order, Stream, StreamSpec};
    use deeplake_core::tql::{self, QueryOptions};
    let url = "memory://faults-query/ds";
    let c0 = base(url).await;
    let q = "SELECT * WHERE x >= 2 ORDER BY x DESC";
    let clean = Dataset::open_url(&format!("{url}@{c0}"), OpenOptions::default())
        .await
        .unwrap();
    let want_rows = tql::query(&clean, q, &QueryOptions::default())
        .await
        .unwrap()
        .rows_of(&clean, "are checked")
        .unwrap();
    assert_eq!(want_rows, vec![4, 3, 2]);
    let c0 = &c0;
    let want_rows = &want_rows;
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        // A query: the same rows, or an error.
        let got = async {
            let ds = open_faulty(url, c0, seed).await?;
            let r = tql::query(&ds, q, &QueryOptions::default()).await?;
            r.rows_of(&ds, "are checked")
        }
        .await;
        match got {
            Ok(rows) => {
                assert_eq!(&rows, want_rows, "seed {seed}: query");
                tally.push(("query right", 1));
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                tally.push(("query failed", 1));
            }
        }
        // A shuffled stream: every row once with its values, or an error (never a hang).
        let streamed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            let ds = open_faulty(url, c0, seed + 10_000).await?;
            let mut s = Stream::open(
                ds,
                None,
                StreamSpec {
                    tensors: vec!["x".into(), "t".into()],
                    batch_size: 2,
                    order: Order::Shuffle { seed, buffer: 4 },
                    ..StreamSpec::default()
                },
            )
            .await?;
            let mut seen = Vec::new();
            while let Some(b) = s.next().await {
                let b = b?;
                let Some(deeplake_core::stream::Column::Dense(x)) = b.column("x") else {
                    panic!("seed {seed}: x is not one array");
                };
                let x: Vec<u64> = x.to_f64_vec().into_iter().map(|v| v as u64).collect();
                assert_eq!(x, b.rows, "seed {seed}: a streamed row's value");
                seen.extend(b.rows.iter().copied());
            }
            Ok::<_, Error>(seen)
        })
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: the stream hung"));
        match streamed {
            Ok(mut rows) => {
                rows.sort_unstable();
                assert_eq!(rows, vec![0, 1, 2, 3, 4], "seed {seed}: stream");
                tally.push(("stream right", 1));
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                tally.push(("stream failed", 1));
            }
        }
        tally
    })
    .await;
    eprintln!("{SCHEDULES} query and stream schedules: {tally:?}");
    saw_each(
        "query and stream",
        &tally,
        &[
            "query right",
            "query failed",
            "stream right",
            "stream failed",
        ],
    );
}

/// A committed dataset of rows 0..n in x (int64) and t (text); its commit.
async fn source_of(url: &str, n: i64) -> String {
    let mut ds = Dataset::create(url, OpenOptions::default()).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.create_tensor("t", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.extend("x", (0..n).map(int).collect()).await.unwrap();
    ds.extend("t", (0..n).map(text).collect()).await.unwrap();
    let c = ds.commit("base").await.unwrap();
    ds.close().await.unwrap();
    c
}

/// Rows of the head of `url`'s main branch (clean storage); the dataset must open.
async fn head_of(url: &str, seed: u64, what: &str) -> (Vec<i64>, Vec<String>) {
    let ds = Dataset::open(
        url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("seed {seed}: {what} does not open: {e}"));
    let (x, t) = (ints(&ds, "x").await, texts(&ds).await);
    assert_eq!(
        x.len(),
        t.len(),
        "seed {seed}: {what}: tensors differ in length"
    );
    (x, t)
}

#[tokio::test]
async fn transforms_under_a_thousand_fault_schedules_land_whole_or_not_at_all() {
    use deeplake_core::runtime::Control;
    use deeplake_core::transform::{self, Input, Pipeline, Row, Rows, TransformOptions};
    const N: i64 = 40;
    // v: 32 bytes a row into 1 KB chunks, so each worker places its part of a batch
    // into chunks of its own.
    fn v_row(x: i64) -> NdArray {
        NdArray::from_slice(vec![32], &[(x % 251) as u8; 32]).unwrap()
    }
    async fn vs(url: &str) -> Vec<NdArray> {
        let ds = Dataset::open(url, OpenOptions::default()).await.unwrap();
        ds.read_range("v", 0..ds.tensor_len("v").unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|s| match s {
                Sample::Array(a) => a,
                other => panic!("not an array: {other:?}"),
            })
            .collect()
    }
    let src = "memory://faults-tf-src/ds";
    source_of(src, N).await;
    let pipeline = || {
        Pipeline::new()
            .filter("skip_every_fourth", |row: &Row| match row.get("x") {
                Some(Sample::Array(a)) => Ok(a.to_f64_vec()[0] as i64 % 4 != 3),
                _ => Err(Error::invalid("no x")),
            })
            .map("times_ten", |mut row: Row| {
                let x = match row.remove("x") {
                    Some(Sample::Array(a)) => a.to_f64_vec()[0] as i64,
                    _ => return Err(Error::invalid("no x")),
                };
                let t = match row.remove("t") {
                    Some(Sample::Text(t)) => t,
                    _ => return Err(Error::invalid("no t")),
                };
                Ok(Row::from([
                    ("x".to_owned(), int(x * 10)),
                    ("t".to_owned(), Sample::Text(format!("{t}!"))),
                    ("v".to_owned(), Sample::Array(v_row(x))),
                ]))
            })
    };
    let kept: Vec<i64> = (0..N).filter(|i| i % 4 != 3).collect();
    let expected = (
        kept.iter().map(|i| i * 10).collect::<Vec<_>>(),
        kept.iter().map(|i| format!("row {i}!")).collect::<Vec<_>>(),
    );
    let run = |target: String, storage: StoreOptions, checkpoint_every: Duration| {
        let p = pipeline();
        async move {
            let input = Input::Dataset {
                url: src.to_owned(),
                opts: OpenOptions {
                    storage: storage.clone(),
                    ..Default::default()
                },
                rows: Rows::All,
                tensors: vec![],
            };
            let mut opts = TransformOptions::new(target);
            opts.open.storage = storage;
            opts.num_workers = 2;
            opts.batch_rows = 8;
            opts.checkpoint_every = checkpoint_every;
            transform::run(&p, input, &opts, &Control::default()).await
        }
    };
    let expected_v: Vec<NdArray> = kept.iter().map(|&i| v_row(i)).collect();
    let expected_v = &expected_v;
    let expected = &expected;
    let run = &run;
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        let target = format!("memory://faults-tf-{seed}/out");
        {
            let mut t = Dataset::create(&target, OpenOptions::default())
                .await
                .unwrap();
            t.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
                .await
                .unwrap();
            t.create_tensor("t", TensorOptions::new("text"))
                .await
                .unwrap();
            let mut v = TensorOptions::new("generic").dtype(Dtype::U8);
            v.max_chunk_size = Some(1024);
            t.create_tensor("v", v).await.unwrap();
            t.commit("empty").await.unwrap();
            t.close().await.unwrap();
        }
        let (layer, log) = FaultPlan::seeded(seed).layer();
        // Half the schedules checkpoint after every batch, half only at the end (the
        // default interval outlasts these runs).
        let every = if seed % 2 == 0 {
            Duration::ZERO
        } else {
            transform::DEFAULT_CHECKPOINT_EVERY
        };
        let result = run(
            target.clone(),
            StoreOptions::default().with_layer(layer),
            every,
        )
        .await;
        let counts = log.counts();
        // Readers see the previous commit or the whole result, never a part.
        let head = head_of(&target, seed, "the target").await;
        let landed = !head.0.is_empty();
        if landed {
            assert_eq!(
                head, *expected,
                "seed {seed}: a partial result after {counts:?}"
            );
            assert_eq!(
                vs(&target).await,
                *expected_v,
                "seed {seed}: v after {counts:?}"
            );
        }
        match &result {
            Ok(rep) => {
                assert!(landed, "seed {seed}: Ok, but nothing landed ({counts:?})");
                assert!(rep.commit.is_some(), "seed {seed}");
                tally.push(("landed", 1));
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "seed {seed}: an error says nothing"
                );
                tally.push((
                    if landed {
                        "failed after landing"
                    } else {
                        "failed"
                    },
                    1,
                ));
            }
        }
        // Run again on sound storage: it completes (resuming, or seeing it landed)
        // with every row exactly once.
        let again = run(target.clone(), StoreOptions::default(), every)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the re-run failed after {counts:?}: {e}"));
        assert!(again.commit.is_some(), "seed {seed}");
        assert_eq!(
            head_of(&target, seed, "the target after a re-run").await,
            *expected,
            "seed {seed}: after a re-run ({counts:?})"
        );
        assert_eq!(
            vs(&target).await,
            *expected_v,
            "seed {seed}: v after a re-run"
        );
        // Five batches, each cut into two parts of chunks of their own.
        let ds = Dataset::open(&target, OpenOptions::default())
            .await
            .unwrap();
        let chunks = ds.summary("v").unwrap().num_chunks;
        assert!(chunks >= 10, "seed {seed}: v in {chunks} chunks");
        tally
    })
    .await;
    eprintln!("{SCHEDULES} transform schedules: {tally:?}");
    saw_each("transform", &tally, &["landed", "failed"]);
}

#[tokio::test]
async fn materializations_under_a_thousand_fault_schedules_hold_whole_batches() {
    use deeplake_core::materialize::{self, Destination, MaterializeOptions, Selection};
    use deeplake_core::runtime::Control;
    const N: i64 = 40;
    let src = "memory://faults-mat-src/ds";
    source_of(src, N).await;
    let run = |target: String, storage: StoreOptions| async move {
        let mut o = MaterializeOptions::new(
            src,
            Selection::All,
            Destination::Dataset {
                url: target,
                opts: OpenOptions {
                    storage: storage.clone(),
                    ..Default::default()
                },
            },
        );
        o.source_opts.storage = storage;
        o.max_batch_rows = 7;
        materialize::materialize(&o, &Control::default()).await
    };
    let run = &run;
    let tally = each_schedule(|seed| async move {
        let mut tally: Vec<(&'static str, u64)> = Vec::new();
        let target = format!("memory://faults-mat-{seed}/out");
        let (layer, log) = FaultPlan::seeded(seed).layer();
        let result = run(target.clone(), StoreOptions::default().with_layer(layer)).await;
        let counts = log.counts();
        // The target is absent, or opens holding a prefix of the source in whole rows.
        let opened = Dataset::open(
            &target,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .await;
        let done = match opened {
            // A target whose creation stopped before its tensors holds no rows (a re-run
            // starts it afresh).
            Ok(ds) if !ds.tensor_names().iter().any(|t| t == "x" || t == "t") => 0,
            Ok(ds) => {
                let (x, t) = (ints(&ds, "x").await, texts(&ds).await);
                let n = x.len() as i64;
                assert_eq!(want(n), (x, t), "seed {seed}: not a prefix ({counts:?})");
                n
            }
            Err(Error::NotFound { .. }) => 0,
            Err(e) => panic!("seed {seed}: the target does not open after {counts:?}: {e}"),
        };
        match &result {
            Ok(rep) => {
                assert_eq!((rep.rows_written, done), (N as u64, N), "seed {seed}");
                tally.push(("done", 1));
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "seed {seed}: an error says nothing"
                );
                tally.push((
                    if done == N {
                        "failed after finishing"
                    } else {
                        "failed"
                    },
                    1,
                ));
            }
        }
        // A re-run on sound storage resumes and finishes, or says it already finished.
        match run(target.clone(), StoreOptions::default()).await {
            Ok(rep) => assert_eq!(rep.rows_written, N as u64, "seed {seed}"),
            // Refused as finished: the check below shows that it is.
            Err(Error::Conflict { message, .. }) if message.contains("finished") => {}
            Err(e) => panic!("seed {seed}: the re-run failed after {counts:?}: {e}"),
        }
        assert_eq!(
            head_of(&target, seed, "the target after a re-run").await,
            want(N),
            "seed {seed}: after a re-run ({counts:?})"
        );
        tally
    })
    .await;
    eprintln!("{SCHEDULES} materialize schedules: {tally:?}");
    saw_each("materialize", &tally, &["done", "failed"]);
}
