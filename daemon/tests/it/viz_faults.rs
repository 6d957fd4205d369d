//! The visualizer's reads under a thousand seeded storage-fault schedules
//! (testkit::faults). For each schedule a router whose storage goes through the fault
//! layer answers the page's sequence of requests (the dataset list, the dataset at the
//! head and at a branch, log, branches, diff, grid pages, raw images, one row's
//! samples, a query and its next page). Each answer is the fault-free answer byte for
//! byte, or an error status with the API's error body naming a storage failure; never
//! a panic, a hang or a wrong body; a storage failure is a 503 with `Retry-After`.
//! Once the faults end the same router answers everything right, so does a fresh one
//! on the same root, and the stored objects are exactly as before.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use deeplake_core::format::compression::Compression;
use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, OpenOptions, Sample, Store, TensorOptions};
use deeplake_daemon::serve::auth::Tokens;
use deeplake_daemon::serve::{self, AppState, Limits};
use futures::StreamExt;
use futures::future::join_all as all;
use image::{ImageEncoder, codecs::jpeg::JpegEncoder};
use serde_json::{Value, json};
use testkit::faults::{FaultPlan, saw_each, tally};
use tower::ServiceExt;

const SCHEDULES: u64 = 1000;
const ROOT: &str = "memory://viz-faults/root";
const NAME: &str = "v";
/// Rows on `main`; the branch has one more.
const ROWS: u64 = 6;
const BRANCH: &str = "relabel";
const QUERY: &str = "SELECT * WHERE labels == 'dog'";
/// Far above any answer here (milliseconds): only a hung request reaches it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// What the page sees of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    content_type: String,
    shape: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// A small JPEG of `n` (8x8 RGB, a pattern from `n`).
fn jpeg(n: u8) -> Sample {
    let px: Vec<u8> = (0..8 * 8 * 3)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(n.wrapping_mul(40)))
        .collect();
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .write_image(&px, 8, 8, image::ExtendedColorType::Rgb8)
        .unwrap();
    Sample::Encoded {
        bytes: bytes.into(),
        compression: Compression::Jpeg,
        shape: None,
    }
}

const CLASSES: [&str; 3] = ["cat", "dog", "bird"];

async fn append_rows(ds: &mut Dataset, rows: std::ops::Range<u64>) {
    ds.extend("images", rows.clone().map(|i| jpeg(i as u8)).collect())
        .await
        .unwrap();
    ds.extend(
        "labels",
        rows.clone()
            .map(|i| Sample::Text(CLASSES[i as usize % 3].to_owned()))
            .collect(),
    )
    .await
    .unwrap();
    ds.extend(
        "captions",
        rows.map(|i| Sample::Text(format!("picture {i}"))).collect(),
    )
    .await
    .unwrap();
}

/// `main`: two commits (4 rows, then 2 more); branch `relabel` from there: row 0
/// relabelled and one row appended, committed.
async fn fixture() {
    let url = format!("{ROOT}/{NAME}");
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(CLASSES),
    )
    .await
    .unwrap();
    ds.create_tensor("captions", TensorOptions::new("text"))
        .await
        .unwrap();
    append_rows(&mut ds, 0..4).await;
    ds.flush().await.unwrap();
    ds.commit("first").await.unwrap();
    append_rows(&mut ds, 4..ROWS).await;
    ds.flush().await.unwrap();
    ds.commit("second").await.unwrap();
    ds.checkout(BRANCH, true).await.unwrap();
    ds.update("labels", 0, Sample::Text("bird".to_owned()))
        .await
        .unwrap();
    append_rows(&mut ds, ROWS..ROWS + 1).await;
    ds.flush().await.unwrap();
    ds.commit("relabel row 0").await.unwrap();
    // Gives the lease back now, not in a task after the storage snapshot.
    ds.close().await.unwrap();
}

fn app(storage: StoreOptions) -> axum::Router {
    serve::router(
        AppState::new(ROOT, storage, Tokens::default()),
        &Limits::default(),
    )
}

async fn fetch(app: &axum::Router, method: &str, uri: &str, body: Option<&Value>) -> Answer {
    let b = Request::builder().method(method).uri(uri);
    let req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .unwrap();
    let call = async {
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let header = |k: &str| parts.headers.get(k).map(|v| v.to_str().unwrap().to_owned());
        // A body that breaks off after the status went out is a partial answer.
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{method} {uri}: the body broke off: {e}"));
        Answer {
            status: parts.status,
            content_type: header("content-type").unwrap_or_default(),
            shape: header("x-deeplake-shape"),
            retry_after: header("retry-after"),
            body: body.to_vec(),
        }
    };
    tokio::time::timeout(REQUEST_DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("{method} {uri}: no answer in {REQUEST_DEADLINE:?}"))
}

/// `body` without its `result_id` (a fresh random id per run), and that id.
fn without_result_id(a: &mut Answer) -> Option<String> {
    if a.status != StatusCode::OK {
        return None;
    }
    let mut v: Value = serde_json::from_slice(&a.body).unwrap();
    let id = v.as_object_mut()?.remove("result_id")?;
    a.body = serde_json::to_vec(&v).unwrap();
    id.as_str().map(str::to_owned)
}

/// The page's requests, in its order: what it waits for in turn, and what it sends
/// at once (`join_all`). Answers by a label naming each request.
async fn visit(app: &axum::Router) -> BTreeMap<String, Answer> {
    let ds = format!("/datasets/{NAME}");
    let mut out = BTreeMap::new();
    let mut phase = |answers: Vec<(String, Answer)>| out.extend(answers);
    let get = |uri: String| async move {
        let a = fetch(app, "GET", &uri, None).await;
        (uri, a)
    };

    // The dataset list, then the dataset picked, its refs, the branch to diff against.
    phase(vec![get("/datasets".to_owned()).await]);
    phase(vec![get(ds.clone()).await]);
    phase(all([get(format!("{ds}/log")), get(format!("{ds}/branches"))]).await);
    phase(
        all([
            get(format!("{ds}/diff?from={BRANCH}")),
            get(format!("{ds}?ref={BRANCH}")),
        ])
        .await,
    );
    // The grids: pages of the label and caption tensors (head and branch) and every
    // row's image as stored bytes.
    let mut grid = Vec::new();
    for t in ["labels", "captions"] {
        grid.push(get(format!("{ds}/tensors/{t}/samples?start=0&end={ROWS}")));
        grid.push(get(format!(
            "{ds}/tensors/{t}/samples?start=0&end={}&ref={BRANCH}",
            ROWS + 1
        )));
    }
    for row in 0..ROWS {
        grid.push(get(format!("{ds}/tensors/images/samples/{row}?format=raw")));
    }
    phase(all(grid).await);
    // One row opened: its non-image samples as JSON, then its image.
    phase(
        all([
            get(format!("{ds}/tensors/labels/samples/2")),
            get(format!("{ds}/tensors/captions/samples/2")),
        ])
        .await,
    );
    phase(vec![
        get(format!("{ds}/tensors/images/samples/2?format=raw")).await,
    ]);
    // A query: its first page, then the next by the result's id.
    let body = json!({"query": QUERY, "limit": 1, "rows_only": true});
    let mut first = fetch(app, "POST", &format!("{ds}/query"), Some(&body)).await;
    let id = without_result_id(&mut first);
    out.insert("POST query".to_owned(), first);
    if let Some(id) = id {
        let mut next = fetch(
            app,
            "GET",
            &format!("{ds}/results/{id}?offset=1&limit=10&rows_only=true"),
            None,
        )
        .await;
        without_result_id(&mut next);
        out.insert("GET next page".to_owned(), next);
    }
    out
}

/// Every stored object under the root and its bytes.
async fn snapshot() -> Vec<(String, Vec<u8>)> {
    let store = Store::open(ROOT, &StoreOptions::default()).unwrap();
    let mut out = Vec::new();
    for (key, _) in store.list("").await.unwrap() {
        out.push((key.clone(), store.get(&key).await.unwrap().to_vec()));
    }
    out
}

/// Checks that an error answer is the API's error body, naming a storage failure.
fn check_error(seed: u64, label: &str, a: &Answer) -> &'static str {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|_| {
        panic!(
            "seed {seed}: {label}: {} without a JSON error body: {:?}",
            a.status,
            String::from_utf8_lossy(&a.body)
        )
    });
    let (kind, message) = (
        v["error"]["kind"].as_str().unwrap_or_default(),
        v["error"]["message"].as_str().unwrap_or_default(),
    );
    assert!(
        !kind.is_empty() && !message.is_empty(),
        "seed {seed}: {label}: {} with an error body that says nothing: {v}",
        a.status
    );
    // A storage failure that may pass is a 503 asking for a retry, not a 500.
    assert!(
        a.status == StatusCode::SERVICE_UNAVAILABLE
            && kind == "storage"
            && message.contains("storage")
            && a.retry_after.as_deref() == Some("1"),
        "seed {seed}: {label}: a storage fault answered {} (Retry-After {:?}) {v}",
        a.status,
        a.retry_after
    );
    "error"
}

#[tokio::test]
async fn the_visualizers_reads_under_a_thousand_fault_schedules_are_right_or_an_error() {
    let t0 = std::time::Instant::now();
    fixture().await;
    let before = snapshot().await;
    let want = visit(&app(StoreOptions::default())).await;
    for (label, a) in &want {
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{label}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    assert!(want.contains_key("GET next page"), "{want:?}");
    let want = &want;
    let before = &before;

    let runs: Vec<BTreeMap<&'static str, u64>> = futures::stream::iter(0..SCHEDULES)
        .map(|seed| async move {
            let mut tally = BTreeMap::new();
            let (layer, log) = FaultPlan::seeded(seed).layer();
            let faulty = app(StoreOptions::default().with_layer(layer));
            let got = visit(&faulty).await;
            for (label, a) in &got {
                let kind = if a.status.is_success() {
                    let w = &want[label];
                    assert!(
                        a == w,
                        "seed {seed}: {label}: {} {:?} differs from the fault-free answer {:?}",
                        a.status,
                        String::from_utf8_lossy(&a.body),
                        String::from_utf8_lossy(&w.body)
                    );
                    "ok"
                } else {
                    check_error(seed, label, a)
                };
                *tally.entry(kind).or_default() += 1;
            }
            let counts = log.counts();
            *tally.entry("faults injected").or_default() +=
                counts.errors + counts.throttled + counts.partial_lists;
            *tally
                .entry(if got.values().all(|a| a.status.is_success()) {
                    "schedules answered fully"
                } else {
                    "schedules with errors"
                })
                .or_default() += 1;
            // Nothing was left behind: once storage is well again the same server (its
            // cached handles, chunks and results) answers everything right, so does a
            // fresh one, and nothing was written.
            log.heal();
            let healed = visit(&faulty).await;
            for (label, a) in &healed {
                assert!(
                    a == &want[label],
                    "seed {seed}: {label} once the faults ended: {} {:?}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
            }
            assert_eq!(healed.len(), want.len(), "seed {seed}");
            let clean = visit(&app(StoreOptions::default())).await;
            assert!(clean == *want, "seed {seed}: a fault-free server after it");
            let after = snapshot().await;
            if after != *before {
                let a: BTreeMap<_, _> = after.iter().cloned().collect();
                let b: BTreeMap<_, _> = before.iter().cloned().collect();
                let changed: Vec<&String> = a
                    .keys()
                    .chain(b.keys())
                    .filter(|k| a.get(*k) != b.get(*k))
                    .collect();
                panic!("seed {seed}: reads changed storage: {changed:?}");
            }
            tally
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let tally = tally(runs.into_iter().flatten());
    eprintln!(
        "{SCHEDULES} visualizer schedules in {:.1?}: {tally:?}",
        t0.elapsed()
    );
    saw_each(
        "visualizer reads",
        &tally,
        &[
            "ok",
            "error",
            "schedules answered fully",
            "schedules with errors",
        ],
    );
}
