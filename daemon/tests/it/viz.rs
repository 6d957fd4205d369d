//! The visualizer's side of `deeplake serve`: the embedded assets (content types,
//! caching, no token, no traversal), one frame of a sequence (`?frame=k`), query pages
//! of row numbers only (`rows_only`), and the annotated demo dataset it is tested on.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use deeplake_core::{Dataset, OpenOptions, Sample};
use deeplake_daemon::cli::{Cli, Command};
use deeplake_daemon::serve::auth::{TokenConfig, Tokens, hash_token};
use deeplake_daemon::serve::routes::viz;
use deeplake_daemon::serve::{self, AppState, Limits};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::serve::{assert_error, call, send};

async fn annotated(root: &std::path::Path, name: &str, rows: usize) -> String {
    let path = root.join(name).to_string_lossy().into_owned();
    let rows = rows.to_string();
    let parsed = Cli::try_parse_from([
        "deeplake",
        "demo",
        &path,
        "--rows",
        &rows,
        "--size",
        "32",
        "--annotations",
    ])
    .unwrap();
    let Command::Demo(a) = parsed.command else {
        panic!("not demo")
    };
    deeplake_daemon::cli::demo::run(&a, &mut Vec::new())
        .await
        .unwrap();
    path
}

fn app(root: &std::path::Path, tokens: Tokens) -> axum::Router {
    let state = AppState::new(&root.to_string_lossy(), Default::default(), tokens);
    serve::router(state, &Limits::default())
}

/// Status and headers of a GET with extra request headers.
async fn get_with(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

#[tokio::test]
async fn assets_are_served_without_a_token_with_types_and_caching() {
    let root = tempfile::tempdir().unwrap();
    let tokens = Tokens::new(vec![
        serde_json::from_value::<TokenConfig>(json!({"sha256": hash_token("r"), "scope": "read"}))
            .unwrap(),
    ])
    .unwrap();
    let app = app(root.path(), tokens);
    let v = viz::version();

    let (st, h, body) = get_with(&app, "/", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(&format!("viz/{v}/app.js")), "{page}");
    assert!(!page.contains("__VIZ_VERSION__"));
    let etag = h["etag"].to_str().unwrap().to_owned();
    let (st, _, body) = get_with(&app, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("grid.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
    ] {
        let (st, h, body) = get_with(&app, &format!("/viz/{v}/{file}"), &[]).await;
        assert_eq!(st, StatusCode::OK, "{file}");
        assert_eq!(h["content-type"], ctype);
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        let on_disk = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("assets/viz/{file}")),
        )
        .unwrap();
        assert_eq!(
            body, on_disk,
            "{file} is embedded as it is in the source tree"
        );
        let etag = h["etag"].to_str().unwrap().to_owned();
        let (st, _, _) = get_with(
            &app,
            &format!("/viz/{v}/{file}"),
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(st, StatusCode::NOT_MODIFIED);
    }
    // The API keeps its token rule.
    let (st, _, _) = send(&app, "GET", "/datasets", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_of_another_version_or_outside_the_table_are_not_found() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("secret.txt"), "do not serve").unwrap();
    let app = app(root.path(), Tokens::default());
    let v = viz::version();
    for uri in [
        "/viz/0000000000000000/app.js".to_owned(),
        format!("/viz/{v}/nope.js"),
        format!("/viz/{v}/index.html"),
        format!("/viz/{v}/..%2F..%2FCargo.toml"),
        format!("/viz/{v}/..%2Fsecret.txt"),
        format!("/viz/{v}/%2E%2E"),
        format!("/viz/{v}/../../Cargo.toml"),
        "/viz/../secret.txt".to_owned(),
        format!("/viz/{v}/app.js/extra"),
    ] {
        let (st, _, body) = get_with(&app, &uri, &[]).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{uri}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("do not serve") && !text.contains("[package]"),
            "{uri}: {text}"
        );
    }
}

#[tokio::test]
async fn a_sequence_frame_is_one_item_of_the_row() {
    let root = tempfile::tempdir().unwrap();
    let path = annotated(root.path(), "a", 6).await;
    let app = app(root.path(), Tokens::default());
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let ds = Dataset::open(&path, opts).await.unwrap();
    let items = ds.read_stored_items("clip", 4).await.unwrap();
    assert_eq!(items.len(), deeplake_daemon::cli::demo::CLIP_FRAMES);
    for (k, (shape, bytes)) in items.iter().enumerate() {
        let (st, h, body) = get_with(
            &app,
            &format!("/datasets/a/tensors/clip/samples/4?format=raw&frame={k}"),
            &[],
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(h["content-type"], "image/jpeg");
        assert_eq!(h["x-deeplake-frames"], items.len().to_string().as_str());
        let want: Vec<String> = shape.iter().map(u64::to_string).collect();
        assert_eq!(h["x-deeplake-shape"], want.join(",").as_str());
        assert_eq!(body, bytes.to_vec(), "frame {k}");
    }
    // JSON: the decoded item, the same as that item of the whole row.
    let Sample::Sequence(decoded) = ds.read("clip", 4).await.unwrap() else {
        panic!("clip is a sequence")
    };
    let (st, v) = call(
        &app,
        "GET",
        "/datasets/a/tensors/clip/samples/4?frame=1",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v,
        deeplake_daemon::serve::routes::samples::sample_json(&decoded[1])
    );

    let (st, v) = call(
        &app,
        "GET",
        "/datasets/a/tensors/clip/samples/4?format=raw&frame=3",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has 3 frames"),
        "{v}"
    );
    let (st, v) = call(
        &app,
        "GET",
        "/datasets/a/tensors/images/samples/0?format=raw&frame=0",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("sequence"),
        "{v}"
    );
    let (st, v) = call(
        &app,
        "GET",
        "/datasets/a/tensors/clip/samples/0?format=arrow&frame=0",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_input");
}

#[tokio::test]
async fn a_query_page_of_row_numbers_only() {
    let root = tempfile::tempdir().unwrap();
    annotated(root.path(), "a", 20).await;
    let app = app(root.path(), Tokens::default());
    let q = "SELECT * WHERE labels == 'circle'";
    let (st, full) = call(&app, "POST", "/datasets/a/query", Some(json!({"query": q}))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, rows) = call(
        &app,
        "POST",
        "/datasets/a/query",
        Some(json!({"query": q, "rows_only": true, "limit": 2})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(rows["total"], full["total"]);
    let row_numbers = |v: &Value| -> Vec<Value> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["__row"].clone())
            .collect()
    };
    let all = row_numbers(&full);
    assert!(all.len() > 2, "{full}");
    for r in rows["rows"].as_array().unwrap() {
        assert_eq!(r.as_object().unwrap().len(), 1, "only __row: {r}");
    }
    assert_eq!(row_numbers(&rows), all[..2]);
    let id = rows["result_id"].as_str().unwrap();
    let (st, next) = call(
        &app,
        "GET",
        &format!("/datasets/a/results/{id}?offset=2&limit=100&rows_only=true"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(row_numbers(&next), all[2..]);
    assert!(next["rows"][0].get("images").is_none());
    // Without it, SELECT * pages carry every tensor.
    assert!(full["rows"][0].get("labels").is_some());
}

#[tokio::test]
async fn the_annotated_demo_has_every_overlay_and_a_relabelled_branch() {
    let root = tempfile::tempdir().unwrap();
    let path = annotated(root.path(), "a", 12).await;
    let opts = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let main = Dataset::open(&path, opts.clone()).await.unwrap();
    assert_eq!(main.len(), 12);
    for (t, htype) in [
        ("masks", "binary_mask"),
        ("segments", "segment_mask"),
        ("keypoints", "keypoints_coco"),
        ("polygons", "polygon"),
        ("points", "point"),
        ("embeddings", "embedding"),
        ("meta", "json"),
        ("clip", "sequence[image]"),
    ] {
        assert_eq!(main.tensor_htype(t).unwrap().to_string(), htype);
        assert_eq!(main.tensor_len(t).unwrap(), 12, "{t}");
    }
    let relabel = Dataset::open(
        &path,
        OpenOptions {
            branch: Some(deeplake_daemon::cli::demo::RELABEL_BRANCH.parse().unwrap()),
            ..opts
        },
    )
    .await
    .unwrap();
    // The last row deleted, five appended.
    assert_eq!(relabel.len(), 16);
    let label = |s: Sample| match s {
        Sample::Array(a) => a.to_f64_vec()[0] as usize,
        other => panic!("{other:?}"),
    };
    for i in 0..11u64 {
        let (a, b) = (
            label(main.read("labels", i).await.unwrap()),
            label(relabel.read("labels", i).await.unwrap()),
        );
        if i % 5 == 0 {
            assert_eq!(b, (a + 1) % 4, "row {i} relabelled");
        } else {
            assert_eq!(a, b, "row {i} unchanged");
        }
    }
    // The mask covers the shape inside its box.
    let Sample::Array(mask) = main.read("masks", 0).await.unwrap() else {
        panic!("mask")
    };
    let Sample::Array(bb) = main.read("boxes", 0).await.unwrap() else {
        panic!("box")
    };
    let b = bb.to_f64_vec();
    let on: Vec<usize> = mask
        .to_f64_vec()
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i)
        .collect();
    assert!(!on.is_empty());
    for i in on {
        let (x, y) = ((i % 32) as f64, (i / 32) as f64);
        assert!(
            x >= b[0] && x < b[0] + b[2] && y >= b[1] && y < b[1] + b[3],
            "({x}, {y}) in {b:?}"
        );
    }
}
