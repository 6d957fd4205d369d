//! Linked tensors through the CLI and the daemon, against the real HTTP test server:
//! `deeplake links check` (the built binary), `import --link`, `import --from-urls`
//! (CSV and JSON lines), and sample reads that resolve links (raw bytes, decoded JSON,
//! the stored path, a 502 for a broken target).

use std::path::Path;

use clap::Parser;
use deeplake_core::{Dataset, OpenOptions, Sample, TensorOptions};
use deeplake_daemon::cli::{Cli, Command, import};
use deeplake_daemon::serve::auth::Tokens;
use deeplake_daemon::serve::{self, AppState, Limits};
use serde_json::Value;
use testkit::http::HttpServer;
use testkit::samples::png_image;

use crate::serve::{assert_error, call, send};

fn link(path: impl Into<String>) -> Sample {
    Sample::Link {
        path: path.into(),
        creds_key: None,
    }
}

fn arrow_batch(body: &[u8]) -> arrow_array::RecordBatch {
    let mut reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .unwrap();
    reader.next().unwrap().unwrap()
}

/// A dataset with one unverified link[image] tensor holding `links`.
async fn links_dataset(path: &Path, links: Vec<String>) {
    let mut ds = Dataset::create(path.to_str().unwrap(), OpenOptions::default())
        .await
        .unwrap();
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]")
            .sample_compression("png")
            .verify(false),
    )
    .await
    .unwrap();
    ds.extend("img", links.into_iter().map(link).collect())
        .await
        .unwrap();
    ds.close().await.unwrap();
}

#[test]
fn links_check_reports_exactly_the_broken_links() {
    let srv = HttpServer::start();
    let (png, _) = png_image(4, 4, 1);
    for i in 0..5 {
        srv.put(&format!("ok{i}.png"), png.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("here.png");
    std::fs::write(&local, &png).unwrap();
    let mut links: Vec<String> = (0..5).map(|i| srv.url(&format!("ok{i}.png"))).collect();
    links.insert(1, srv.url("gone1.png?sig=topsecret"));
    links.insert(4, srv.url("gone2.png"));
    links.push(local.to_string_lossy().into_owned());
    links.push(
        dir.path()
            .join("missing.png")
            .to_string_lossy()
            .into_owned(),
    );
    let ds_path = dir.path().join("ds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(links_dataset(&ds_path, links));
    let bin = env!("CARGO_BIN_EXE_deeplake");
    let out = std::process::Command::new(bin)
        .args([
            "links",
            "check",
            ds_path.to_str().unwrap(),
            "--json",
            "--concurrency",
            "4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checked"], 9, "{v}");
    assert_eq!(v["ok"], 6, "{v}");
    let broken: Vec<(u64, Option<u64>)> = v["broken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["row"].as_u64().unwrap(), b["status"].as_u64()))
        .collect();
    assert_eq!(broken, vec![(1, Some(404)), (4, Some(404)), (8, Some(404))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("topsecret"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 of 9 links are broken"));
    // One probe per link (no retries of a 404).
    assert_eq!(srv.requests("gone1.png"), 1);
    assert_eq!(srv.requests("ok3.png"), 1);

    // The text report, for one tensor.
    let out = std::process::Command::new(bin)
        .args([
            "links",
            "check",
            ds_path.to_str().unwrap(),
            "--tensor",
            "img",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("broken img["))
            .count(),
        3,
        "{text}"
    );
    assert!(text.contains("checked 9 links in 1 tensors"), "{text}");
}

fn import_args(v: &[&str]) -> import::ImportArgs {
    let mut full = vec!["deeplake", "import"];
    full.extend_from_slice(v);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Import(a) => a,
        other => panic!("parsed as {other:?}"),
    }
}

async fn import(v: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    import::run(&import_args(v), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_folder_as_links() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut want = Vec::new();
    for (class, seed) in [("cat", 1u8), ("cat", 2), ("dog", 3)] {
        let (png, arr) = png_image(5 + seed as usize, 6, seed);
        let p = src.join(class).join(format!("{seed}.png"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, png).unwrap();
        want.push((std::fs::canonicalize(&p).unwrap(), arr));
    }
    let ds_path = dir.path().join("ds");
    let ds_s = ds_path.to_str().unwrap();
    let out = import(&["--from-folder", src.to_str().unwrap(), "--link", ds_s])
        .await
        .unwrap();
    assert!(out.contains("stored as links"), "{out}");
    let ds = Dataset::open(ds_s, OpenOptions::default()).await.unwrap();
    assert_eq!(
        ds.tensor_htype("images").unwrap().to_string(),
        "link[image]"
    );
    let stored = ds.read_range("images", 0..3).await.unwrap();
    let resolved = ds.read_resolved("images", 0..3, true).await.unwrap();
    for (k, (path, arr)) in want.iter().enumerate() {
        assert_eq!(stored[k], link(path.to_string_lossy()));
        assert_eq!(resolved[k], Sample::Array(arr.clone()));
        assert_eq!(
            ds.shape("images", k as u64).await.unwrap(),
            arr.shape.iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
    }
    let labels: Vec<f64> = ds
        .read_range("labels", 0..3)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Array(a) => a.to_f64_vec()[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(labels, [0.0, 0.0, 1.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_urls_csv_and_jsonl() {
    let srv = HttpServer::start();
    let mut arrs = Vec::new();
    for i in 0..4u8 {
        let (png, arr) = png_image(3 + i as usize, 4, i);
        srv.put(&format!("p{i}.png"), png);
        arrs.push(arr);
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(
        &csv,
        format!(
            "url,label,caption,score\n{},cat,\"a cat, sitting\",1\n{},dog,a dog running,2\n{},cat,\"a cat \"\"asleep\"\"\",3\n{},dog,,4.5\n",
            srv.url("p0.png"),
            srv.url("p1.png"),
            srv.url("p2.png"),
            srv.url("p3.png")
        ),
    )
    .unwrap();
    let ds_path = dir.path().join("csv_ds");
    let ds_s = ds_path.to_str().unwrap();
    let out = import(&["--from-urls", csv.to_str().unwrap(), ds_s])
        .await
        .unwrap();
    assert!(
        out.contains("column \"label\" -> class_label, 2 classes"),
        "{out}"
    );
    let ds = Dataset::open(ds_s, OpenOptions::default()).await.unwrap();
    assert_eq!(ds.tensor_htype("url").unwrap().to_string(), "link[image]");
    assert_eq!(ds.tensor_htype("label").unwrap().to_string(), "class_label");
    assert_eq!(ds.tensor_htype("caption").unwrap().to_string(), "text");
    assert_eq!(
        ds.tensor_meta("score").unwrap().dtype.as_deref(),
        Some("float64")
    );
    assert_eq!(ds.shape("url", 3).await.unwrap(), vec![6, 4, 3]);
    assert_eq!(
        ds.read_resolved("url", 0..4, true).await.unwrap(),
        arrs.iter().cloned().map(Sample::Array).collect::<Vec<_>>()
    );
    assert_eq!(
        ds.read("caption", 2).await.unwrap(),
        Sample::Text("a cat \"asleep\"".into())
    );
    let label = ds.read("label", 1).await.unwrap();
    let Sample::Array(label) = label else {
        panic!("{label:?}")
    };
    assert_eq!(label.to_f64_vec(), [1.0]);
    let score = ds.read("score", 3).await.unwrap();
    let Sample::Array(score) = score else {
        panic!("{score:?}")
    };
    assert_eq!(score.to_f64_vec(), [4.5]);

    // JSON lines: bad lines are all reported with their numbers; nothing is written.
    let jsonl = dir.path().join("in.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{{\"url\": \"{}\", \"n\": 1}}\n{{\"n\": 2}}\nnot json\n{{\"url\": \"{}\", \"n\": 3}}\n",
            srv.url("p0.png"),
            srv.url("p1.png")
        ),
    )
    .unwrap();
    let bad_path = dir.path().join("bad_ds");
    let err = format!(
        "{:#}",
        import(&[
            "--from-urls",
            jsonl.to_str().unwrap(),
            bad_path.to_str().unwrap()
        ])
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("line 2: no \"url\"") && err.contains("line 3: not JSON"),
        "{err}"
    );
    assert!(!bad_path.join("dataset_meta.json").exists());

    // A broken URL fails verify; with --no-verify it is stored as is.
    std::fs::write(
        &jsonl,
        format!(
            "{{\"url\": \"{}\", \"n\": 1}}\n{{\"url\": \"{}\", \"n\": 2}}\n",
            srv.url("p0.png"),
            srv.url("nope.png")
        ),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        import(&[
            "--from-urls",
            jsonl.to_str().unwrap(),
            bad_path.to_str().unwrap()
        ])
        .await
        .unwrap_err()
    );
    assert!(err.contains("row 1") && err.contains("nope.png"), "{err}");
    let ok_path = dir.path().join("jsonl_ds");
    import(&[
        "--from-urls",
        jsonl.to_str().unwrap(),
        "--no-verify",
        "--link-htype",
        "link[image]",
        ok_path.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let ds = Dataset::open(ok_path.to_str().unwrap(), OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(ds.read("url", 1).await.unwrap(), link(srv.url("nope.png")));
    assert_eq!(ds.tensor_meta("n").unwrap().dtype.as_deref(), Some("int64"));
    assert!(!ds.tensor_meta("url").unwrap().verify);
}

#[tokio::test]
async fn sample_reads_resolve_links_and_broken_ones_are_502() {
    let srv = HttpServer::start();
    let (png, arr) = png_image(3, 2, 7);
    srv.put("a.png", png.clone());
    let root = tempfile::tempdir().unwrap();
    links_dataset(
        &root.path().join("l"),
        vec![srv.url("a.png"), srv.url("gone.png?X-Amz-Signature=abc")],
    )
    .await;
    let state = AppState::new(
        &root.path().to_string_lossy(),
        Default::default(),
        Tokens::default(),
    );
    let app = serve::router(state, &Limits::default());

    let (st, body, ctype) = send(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples/0?format=raw",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(ctype, "image/png");
    assert_eq!(body, png);

    let (st, v) = call(&app, "GET", "/datasets/l/tensors/img/samples/0", None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["shape"], serde_json::json!([3, 2, 3]));
    assert_eq!(
        v["data"][1][0][2].as_u64().unwrap(),
        arr.data[(2 * 3) + 2] as u64
    );

    // Arrow: the target decoded to a uint8 list with its shape, or its bytes as Binary.
    let (st, body, ctype) = send(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples/0?format=arrow",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(ctype, "application/vnd.apache.arrow.stream");
    let batch = arrow_batch(&body);
    let pixels = batch
        .column_by_name("img")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::ListArray>()
        .unwrap()
        .value(0);
    let pixels = pixels
        .as_any()
        .downcast_ref::<arrow_array::UInt8Array>()
        .unwrap();
    assert_eq!(pixels.values().to_vec(), arr.data.to_vec());
    let (st, body, _) = send(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples/0?format=arrow&decode=false",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let batch = arrow_batch(&body);
    let raw = batch
        .column_by_name("img")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::BinaryArray>()
        .unwrap();
    assert_eq!(raw.value(0), &png[..]);

    let (st, v) = call(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples/1?format=link",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["path"], srv.url("gone.png?X-Amz-Signature=abc"));

    let (st, v) = call(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples/1?format=raw",
        None,
    )
    .await;
    assert_eq!(st, 502, "{v}");
    assert_error(&v, "link");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("gone.png") && !msg.contains("abc"), "{msg}");

    let (st, v) = call(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples?start=0&end=2",
        None,
    )
    .await;
    assert_eq!(st, 502, "{v}");
    assert_error(&v, "link");
    let (st, v) = call(
        &app,
        "GET",
        "/datasets/l/tensors/img/samples?format=link",
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["samples"][0]["path"], srv.url("a.png"));
}

#[tokio::test]
async fn s3_links_resolve_with_creds_from_the_serve_config() {
    let (url, _) = testkit::storage::s3_url_and_options("daemon-links");
    let bucket = deeplake_core::Store::create(&url, &Default::default()).unwrap();
    let (png, _) = png_image(4, 2, 3);
    bucket.put("media/p.png", png.clone()).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("s");
    let mut ds = Dataset::create(path.to_str().unwrap(), OpenOptions::default())
        .await
        .unwrap();
    ds.add_creds_key("lake").await.unwrap();
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]")
            .sample_compression("png")
            .verify(false),
    )
    .await
    .unwrap();
    ds.append(
        "img",
        Sample::Link {
            path: format!("{url}/media/p.png"),
            creds_key: Some("lake".into()),
        },
    )
    .await
    .unwrap();
    ds.close().await.unwrap();
    let env = |k: &str| std::env::var(k).unwrap();
    let config: serve::Config = serde_json::from_value(serde_json::json!({
        "link_creds": {"lake": {
            "aws_access_key_id": env("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": env("AWS_SECRET_ACCESS_KEY"),
            "endpoint": env("AWS_ENDPOINT"),
            "allow_http": "true",
        }}
    }))
    .unwrap();
    let root_s = root.path().to_string_lossy().into_owned();

    // Without the secrets of "lake" the read is refused, naming the key.
    let bare = serve::router(
        AppState::new(&root_s, Default::default(), Tokens::default()),
        &Limits::default(),
    );
    let (st, v) = call(
        &bare,
        "GET",
        "/datasets/s/tensors/img/samples/0?format=raw",
        None,
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("\"lake\""),
        "{v}"
    );

    let state = AppState::new(&root_s, Default::default(), Tokens::default());
    state.set_linker(config.linker().unwrap());
    let app = serve::router(state, &Limits::default());
    let (st, body, ctype) = send(
        &app,
        "GET",
        "/datasets/s/tensors/img/samples/0?format=raw",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ctype, "image/png");
    assert_eq!(body, png);
    let (st, v) = call(
        &app,
        "GET",
        "/datasets/s/tensors/img/samples/0?format=link",
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["creds_key"], "lake");
}
