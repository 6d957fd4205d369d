//! `deeplake transform` as a real process: SIGKILLed once rows were staged, the target
//! stays at its previous commit; the same command again completes it, equal value for
//! value to an uninterrupted serial run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, NdArray, OpenOptions, Sample, TensorOptions};
use serde_json::Value;

use super::materialize::jpeg;

async fn source(url: &str, n: u32) {
    let mut ds = Dataset::create(url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
    )
    .await
    .unwrap();
    let images = (0..n)
        .map(|i| Sample::Encoded {
            bytes: jpeg(i).into(),
            compression: Compression::Jpeg,
            shape: None,
        })
        .collect();
    let labels = (0..n)
        .map(|i| Sample::Array(NdArray::scalar(i64::from(i) * 3)))
        .collect();
    ds.extend_columns(vec![("images".into(), images), ("labels".into(), labels)])
        .await
        .unwrap();
    ds.commit("source").await.unwrap();
}

fn read_only() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..Default::default()
    }
}

/// The last commit of `main` and the length there.
async fn state(url: &str) -> (String, u64, Vec<String>) {
    let ds = Dataset::open(url, read_only()).await.unwrap();
    let commit = ds.log().into_iter().find(|c| !c.is_head).unwrap().id;
    (commit, ds.len(), ds.branches())
}

/// Input rows the staging branch of `url` holds, if there is one.
async fn staged(url: &str) -> Option<u64> {
    let ds = Dataset::open(url, read_only()).await.ok()?;
    let b = ds
        .branches()
        .into_iter()
        .find(|b| b.starts_with("transform-"))?;
    let mut o = read_only();
    o.branch = Some(b.parse().unwrap());
    let s = Dataset::open(url, o).await.ok()?;
    s.info().get("transform")?["input_rows"].as_u64()
}

/// Every row's stored bytes, per output tensor.
async fn contents(url: &str) -> Vec<Vec<(Vec<u64>, Vec<u8>)>> {
    let ds = Dataset::open(url, read_only()).await.unwrap();
    let mut out = Vec::new();
    for t in ["images", "labels"] {
        let mut col = Vec::new();
        for r in 0..ds.tensor_len(t).unwrap() {
            let (shape, bytes) = ds.read_stored(t, r).await.unwrap();
            col.push((shape, bytes.to_vec()));
        }
        out.push(col);
    }
    out
}

fn run_to_end(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_deeplake"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deeplake {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap()
}

/// Runs `deeplake ARGS`, which must fail, and returns its stderr.
fn run_failing(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_deeplake"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "deeplake {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_transform_leaves_the_target_and_a_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 400).await;
    let reference = dir.path().join("ref").to_str().unwrap().to_owned();
    let target = dir.path().join("out").to_str().unwrap().to_owned();
    let args = |to: &str, workers: &str| -> Vec<String> {
        [
            "transform",
            &src,
            "--to",
            to,
            "--resize",
            "6x5",
            "--relabel-mod",
            "7",
            "--workers",
            workers,
            "--batch-rows",
            "8",
            // A checkpoint after every batch, so that the kill below finds some.
            "--checkpoint-secs",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let r = args(&reference, "1");
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    let rep = run_to_end(&r);
    assert_eq!(rep["input_rows"], 400);

    // The target has a commit of its own before the run.
    {
        let mut t = Dataset::create(&target, OpenOptions::default())
            .await
            .unwrap();
        t.commit("empty start").await.unwrap();
    }
    let before = state(&target).await;
    let c = args(&target, "3");
    let c: Vec<&str> = c.iter().map(String::as_str).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deeplake"))
        .args(&c)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let at_kill = loop {
        if let Some(n) = staged(&target).await
            && n > 0
        {
            break n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was staged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(at_kill < 400, "killed after {at_kill} rows");
    // Readers of main see exactly the previous commit.
    let after = state(&target).await;
    assert_eq!((&after.0, after.1), (&before.0, before.1));
    assert_eq!(after.1, 0);

    let rep = run_to_end(&c);
    assert!(rep["resumed_from"].as_u64().unwrap() >= at_kill, "{rep}");
    assert_eq!(rep["input_rows"], 400);
    assert_eq!(rep["fast_forward"], true);
    let done = state(&target).await;
    assert_eq!(done.1, 400);
    assert_eq!(
        done.2,
        vec!["main".to_owned()],
        "the staging branch is gone"
    );
    assert_eq!(done.0, rep["commit"].as_str().unwrap());
    let want = contents(&reference).await;
    assert_eq!(contents(&target).await, want);
    let ds = Dataset::open(&target, read_only()).await.unwrap();
    let labels = ds.read_range("labels", 0..400).await.unwrap();
    for (i, l) in labels.iter().enumerate() {
        match l {
            Sample::Array(a) => assert_eq!(a.to_f64_vec()[0] as usize, (i * 3) % 7),
            other => panic!("{other:?}"),
        }
    }
}

/// `--meta FILE.jsonl` input: the workers read the listed image files (JPEG and PNG);
/// the rows equal decoding, resizing and encoding each file by hand. A file that cannot
/// be read fails the run with its path, and the target keeps its previous commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_file_input_reads_each_image_file_and_names_an_unreadable_one() {
    use deeplake_core::format::compression::{decode_sample, encode_sample};
    use deeplake_core::stream::transform::resize_image;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let mut meta = String::new();
    let mut want = Vec::new();
    for i in 0..30u32 {
        let (name, bytes, codec) = if i % 5 == 4 {
            let a = decode_sample(&jpeg(i), &Compression::Jpeg, deeplake_core::Dtype::U8, &[1])
                .unwrap();
            (
                format!("{i}.png"),
                encode_sample(&a, &Compression::Png).unwrap(),
                Compression::Png,
            )
        } else {
            (format!("{i}.jpg"), jpeg(i), Compression::Jpeg)
        };
        std::fs::write(files.join(&name), &bytes).unwrap();
        meta.push_str(&format!(
            "{{\"file\": \"files/{name}\", \"label\": {}}}\n",
            i * 3
        ));
        let full = decode_sample(&bytes, &codec, deeplake_core::Dtype::U8, &[1]).unwrap();
        let small = resize_image(&full, 6, 5).unwrap();
        want.push((
            vec![6u64, 5, 3],
            encode_sample(&small, &Compression::Jpeg).unwrap(),
        ));
    }
    let meta_path = dir.path().join("meta.jsonl");
    std::fs::write(&meta_path, &meta).unwrap();
    let target = dir.path().join("out").to_str().unwrap().to_owned();
    let args = |meta: &str| -> Vec<String> {
        [
            "transform",
            "--meta",
            meta,
            "--to",
            &target,
            "--resize",
            "6x5",
            "--relabel-mod",
            "7",
            "--workers",
            "2",
            "--batch-rows",
            "7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args(meta_path.to_str().unwrap());
    let rep = run_to_end(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        (rep["input_rows"].as_u64(), rep["output_rows"].as_u64()),
        (Some(30), Some(30))
    );
    let got = contents(&target).await;
    assert_eq!(got[0], want, "images");
    let labels: Vec<u8> = got[1].iter().map(|(_, b)| b[0]).collect();
    assert_eq!(labels, (0..30u8).map(|i| (i * 3) % 7).collect::<Vec<_>>());
    let before = state(&target).await;

    // A listed file that is missing: the run fails naming it, and nothing lands.
    let bad_meta = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_meta,
        format!("{meta}{{\"file\": \"files/missing.jpg\", \"label\": 1}}\n"),
    )
    .unwrap();
    let err = run_failing(&args(bad_meta.to_str().unwrap()));
    assert!(
        err.contains("cannot read the image file") && err.contains("missing.jpg"),
        "{err}"
    );
    let after = state(&target).await;
    assert_eq!((after.0, after.1), (before.0, before.1));

    // A checkpoint interval that is not a number of seconds is refused up front.
    for bad in ["--checkpoint-secs=-1", "--checkpoint-secs=soon"] {
        let mut a = args(meta_path.to_str().unwrap());
        a.push(bad.to_owned());
        let err = run_failing(&a);
        assert!(err.contains("not a number of seconds"), "{bad}: {err}");
    }
}

/// The daemon's transform routes take a part as JSON columns too (any HTTP client can
/// send one); a body of another type is refused, and the parts land as one commit.
#[tokio::test]
async fn transform_parts_as_json_land_as_one_commit() {
    use super::serve_arrow::{json_call, send, server};
    use axum::http::StatusCode;
    use serde_json::json;
    let s = server().await;
    let (st, b) = json_call(&s.app, "POST", "/datasets", json!({"name": "tj"})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    for (name, htype) in [("x", "generic"), ("t", "text")] {
        let mut body = json!({"name": name, "htype": htype});
        if name == "x" {
            body["dtype"] = json!("int64");
        }
        let (st, b) = json_call(&s.app, "POST", "/datasets/tj/tensors", body).await;
        assert!(st.is_success(), "{b}");
    }
    let (st, begun) = json_call(
        &s.app,
        "POST",
        "/datasets/tj/transforms",
        json!({"job": "j1", "functions": ["double"], "parts": 2}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{begun}");
    let job_id = begun["job_id"].as_str().unwrap().to_owned();
    for (i, rows) in [(0, [1, 2]), (1, [3, 4])] {
        let body = json!({"columns": {"x": rows, "t": rows.map(|r| format!("row {r}"))}});
        let (st, b, _) = send(
            &s.app,
            "POST",
            &format!("/datasets/tj/transforms/j1/parts/{i}?input_rows=2"),
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&b));
    }
    let (st, b, _) = send(
        &s.app,
        "POST",
        "/datasets/tj/transforms/j1/parts/2",
        Some("text/plain"),
        b"x".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("content-type"));
    let (st, b) = json_call(
        &s.app,
        "POST",
        "/datasets/tj/transforms/j1/commit",
        json!({"parts": 2}),
    )
    .await;
    assert!(st.is_success(), "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, j) = json_call(&s.app, "GET", &format!("/jobs/{job_id}"), json!(null)).await;
        if j["state"] != "running" && j["state"] != "queued" {
            break j;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    let ds = Dataset::open(
        &s.root.path().join("tj").to_string_lossy(),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(testkit::samples::ints(&ds, "x").await, vec![1, 2, 3, 4]);
    let last = ds.log().into_iter().find(|c| !c.is_head).unwrap();
    assert!(
        last.message.as_deref().unwrap_or("").contains("double"),
        "{:?}",
        last.message
    );
}
