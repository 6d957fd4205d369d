//! `deeplake serve`: every route through the router (`oneshot`), auth scopes, path
//! traversal, limits, the committed OpenAPI document, and one real socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, OpenOptions, Sample, TensorOptions};
use deeplake_daemon::cli::{Cli, Command};
use deeplake_daemon::serve::auth::{TokenConfig, Tokens, hash_token};
use deeplake_daemon::serve::{self, AppState, Limits};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Server {
    root: tempfile::TempDir,
    app: axum::Router,
}

pub(crate) async fn demo(root: &std::path::Path, name: &str) {
    let path = root.join(name).to_string_lossy().into_owned();
    let parsed =
        Cli::try_parse_from(["deeplake", "demo", &path, "--rows", "12", "--size", "16"]).unwrap();
    let Command::Demo(a) = parsed.command else {
        panic!("not demo")
    };
    let mut out = Vec::new();
    deeplake_daemon::cli::demo::run(&a, &mut out).await.unwrap();
}

fn tokens() -> Tokens {
    let t = |tok: &str, scope: &str, datasets: Option<Vec<&str>>| -> TokenConfig {
        serde_json::from_value(json!({
            "sha256": hash_token(tok),
            "scope": scope,
            "datasets": datasets,
        }))
        .unwrap()
    };
    Tokens::new(vec![
        t("r", "read", None),
        t("w", "write", None),
        t("a", "admin", None),
        t("r-only-d", "read", Some(vec!["d"])),
    ])
    .unwrap()
}

async fn server(tokens: Tokens) -> Server {
    let root = tempfile::tempdir().unwrap();
    demo(root.path(), "d").await;
    let state = AppState::new(&root.path().to_string_lossy(), Default::default(), tokens);
    let limits = Limits {
        body_bytes: 4096,
        ..Limits::default()
    };
    Server {
        app: serve::router(state, &limits),
        root,
    }
}

pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>, String) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec(), ctype)
}

pub(crate) async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_as(app, method, uri, None, body).await
}

pub(crate) async fn call_as(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, b, _) = send(app, method, uri, token, body).await;
    let v = if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))
    };
    (s, v)
}

pub(crate) fn assert_error(v: &Value, kind: &str) {
    assert_eq!(v["error"]["kind"], kind, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[tokio::test]
async fn health_and_openapi_document_matches_committed_spec() {
    let s = server(Tokens::default()).await;
    let (st, v) = call(&s.app, "GET", "/healthz", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"status": "ok"})));
    let (st, served) = call(&s.app, "GET", "/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/openapi.json");
    if std::env::var("DEEPLAKE_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&spec, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&spec)
        .unwrap_or_else(|e| panic!("reading {}: {e}", spec.display()));
    assert!(
        committed == text,
        "spec/openapi.json differs from the served document; run with DEEPLAKE_UPDATE_OPENAPI=1"
    );
    assert!(served["paths"]["/datasets/{name}/query"]["post"].is_object());
}

#[tokio::test]
async fn datasets_create_list_info_delete() {
    let s = server(Tokens::default()).await;
    let (st, v) = call(&s.app, "GET", "/datasets", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"datasets": ["d"]})));
    let (st, v) = call(&s.app, "POST", "/datasets", Some(json!({"name": "e"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["length"], 0);
    let (st, v) = call(&s.app, "POST", "/datasets", Some(json!({"name": "e"}))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_error(&v, "conflict");
    let (st, v) = call(&s.app, "POST", "/datasets", Some(json!({"name": "../x"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_input");
    let (st, v) = call(&s.app, "POST", "/datasets", Some(json!({"nom": "x"}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_input");
    let (st, v) = call(&s.app, "GET", "/datasets", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"datasets": ["d", "e"]})));

    let (st, v) = call(&s.app, "GET", "/datasets/d", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["length"], 12);
    assert_eq!(v["branch"], "main");
    let images = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "images")
        .unwrap();
    assert_eq!(images["htype"], "image");
    assert_eq!(images["length"], 12);
    assert_eq!(images["sample_compression"], "jpeg");

    let (st, v) = call(&s.app, "GET", "/datasets/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (st, _) = call(&s.app, "DELETE", "/datasets/e", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s.app, "DELETE", "/datasets/e", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(&s.app, "GET", "/no/such/route", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
}

#[tokio::test]
async fn tensors_create_get_delete() {
    let s = server(Tokens::default()).await;
    let body = json!({"name": "scores", "htype": "generic", "dtype": "float32"});
    let (st, v) = call(&s.app, "POST", "/datasets/d/tensors", Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["dtype"], "float32");
    let (st, _) = call(&s.app, "POST", "/datasets/d/tensors", Some(body)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = call(&s.app, "GET", "/datasets/d/tensors/scores", None).await;
    assert_eq!((st, &v["length"]), (StatusCode::OK, &json!(0)));
    let (st, v) = call(&s.app, "GET", "/datasets/d/tensors/labels", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["class_names"].as_array().unwrap().len(), 4);
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/tensors",
        Some(json!({"name": "a/../b", "htype": "generic"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = call(&s.app, "DELETE", "/datasets/d/tensors/scores", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = call(&s.app, "GET", "/datasets/d/tensors/scores", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn samples_as_json_slices_and_raw_jpeg() {
    let s = server(Tokens::default()).await;
    let (st, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/captions/samples/0",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert!(v.is_string(), "{v}");
    let (st, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/labels/samples?start=2&end=5",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["samples"].as_array().unwrap().len(), 3);
    let (st, v) = call(&s.app, "GET", "/datasets/d/tensors/images/samples/1", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["shape"], json!([16, 16, 3]));
    let (st, body, ctype) = send(
        &s.app,
        "GET",
        "/datasets/d/tensors/images/samples/1?format=raw",
        None,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ctype, "image/jpeg");
    assert_eq!(&body[..2], &[0xff, 0xd8]);
    let ds = Dataset::open(
        &s.root.path().join("d").to_string_lossy(),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(body, ds.read_stored("images", 1).await.unwrap().1.to_vec());

    let (st, v) = call(&s.app, "GET", "/datasets/d/tensors/images/samples/12", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_error(&v, "not_found");
    let (st, _) = call(&s.app, "GET", "/datasets/d/tensors/images/samples/x", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/images/samples/0?format=bmp",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/labels/samples?start=5&end=2",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(&s.app, "GET", "/datasets/d/tensors/nope/samples/0", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/labels/samples/0?ref=nope",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

/// A WAV file of `n` silent 16-bit mono samples at 8 kHz.
fn wav(n: u32) -> Vec<u8> {
    let data = n * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    b.resize(b.len() + data as usize, 0);
    b
}

#[tokio::test]
async fn raw_audio_and_video_carry_their_media_types() {
    // A browser's <audio>/<video> plays a raw sample URL only with a media type.
    let s = server(Tokens::default()).await;
    let path = s.root.path().join("media").to_string_lossy().into_owned();
    let mut ds = Dataset::create(&path, OpenOptions::default())
        .await
        .unwrap();
    let audio = wav(400);
    // The start of an MP4: a `ftyp` box is what its codec is known by.
    let mut video = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    video.extend_from_slice(&[0; 64]);
    for (name, htype, codec, bytes, shape) in [
        ("audio", "audio", "wav", audio.clone(), vec![400, 1]),
        ("video", "video", "mp4", video.clone(), vec![1, 2, 2, 3]),
    ] {
        ds.create_tensor(name, TensorOptions::new(htype).sample_compression(codec))
            .await
            .unwrap();
        ds.append(
            name,
            Sample::Encoded {
                bytes: bytes.into(),
                compression: Compression::parse(codec).unwrap().unwrap(),
                shape: Some(shape),
            },
        )
        .await
        .unwrap();
    }
    ds.close().await.unwrap();
    for (name, want, bytes) in [("audio", "audio/wav", audio), ("video", "video/mp4", video)] {
        let (st, body, ctype) = send(
            &s.app,
            "GET",
            &format!("/datasets/media/tensors/{name}/samples/0?format=raw"),
            None,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(ctype, want);
        assert_eq!(body, bytes);
    }
}

pub(crate) async fn set_caption(root: &std::path::Path, branch: &str, row: u64, text: &str) {
    let mut ds = Dataset::open(
        &root.join("d").to_string_lossy(),
        OpenOptions {
            branch: Some(branch.parse().unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ds.update("captions", row, Sample::Text(text.to_owned()))
        .await
        .unwrap();
    ds.close().await.unwrap();
}

#[tokio::test]
async fn versions_commit_log_branches_tags_diff_merge() {
    let s = server(Tokens::default()).await;
    let (st, log0) = call(&s.app, "GET", "/datasets/d/log", None).await;
    assert_eq!(st, StatusCode::OK);
    let first = log0.as_array().unwrap().len();

    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/branches",
        Some(json!({"name": "alt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/branches",
        Some(json!({"name": "alt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "conflict");
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/branches",
        Some(json!({"name": "../x"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = call(&s.app, "GET", "/datasets/d/branches", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(v["branches"]["alt"].is_string(), "{v}");

    set_caption(s.root.path(), "alt", 0, "alt caption").await;
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/commit",
        Some(json!({"message": "on alt", "branch": "alt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let alt_commit = v["commit"].as_str().unwrap().to_owned();
    let (_, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/captions/samples/0?ref=alt",
        None,
    )
    .await;
    assert_eq!(v, json!("alt caption"));
    let (_, v) = call(
        &s.app,
        "GET",
        &format!("/datasets/d/log?ref={alt_commit}"),
        None,
    )
    .await;
    assert!(v.as_array().unwrap().len() > first);

    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/tags",
        Some(json!({"name": "v1", "commit": alt_commit})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v) = call(&s.app, "GET", "/datasets/d/tags", None).await;
    assert_eq!(v["tags"]["v1"], json!(alt_commit));
    let (st, _) = call(
        &s.app,
        "POST",
        "/datasets/d/tags",
        Some(json!({"name": "v1", "commit": alt_commit})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (_, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/captions/samples/0?ref=v1",
        None,
    )
    .await;
    assert_eq!(v, json!("alt caption"));

    let (st, v) = call(&s.app, "GET", "/datasets/d/diff?from=alt", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v.is_object() || v.is_array(), "{v}");
    let (st, _) = call(&s.app, "GET", "/datasets/d/diff?from=nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Row 0 changed on both sides: the merge fails with 409 and lists the row.
    set_caption(s.root.path(), "main", 0, "main caption").await;
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/commit",
        Some(json!({"message": "on main"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/merge",
        Some(json!({"source": "alt"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "conflict");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("captions"),
        "{v}"
    );
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/merge",
        Some(json!({"source": "alt", "policy": "theirs"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (_, v) = call(
        &s.app,
        "GET",
        "/datasets/d/tensors/captions/samples/0",
        None,
    )
    .await;
    assert_eq!(v, json!("alt caption"));
    let (st, _) = call(
        &s.app,
        "POST",
        "/datasets/d/merge",
        Some(json!({"source": "alt", "policy": "bogus"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn query_pages_and_views() {
    let s = server(Tokens::default()).await;
    let q = json!({"query": "SELECT * WHERE labels == 0 OR labels != 0", "limit": 5});
    let (st, v) = call(&s.app, "POST", "/datasets/d/query", Some(q)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 12);
    assert_eq!(v["rows"].as_array().unwrap().len(), 5);
    assert!(v["rows"][0]["captions"].is_string(), "{v}");
    let id = v["result_id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        &s.app,
        "GET",
        &format!("/datasets/d/results/{id}?offset=10&limit=5"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert_eq!(v["rows"][0]["__row"], 10);
    let (st, _) = call(&s.app, "GET", "/datasets/d/results/nope", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/query",
        Some(json!({"query": "SELEC"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_error(&v, "query");
    let outside = s.root.path().join("..").to_string_lossy().into_owned();
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/query",
        Some(json!({"query": format!("SELECT * FROM \"{outside}\"")})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _) = call(
        &s.app,
        "POST",
        "/datasets/d/query",
        Some(json!({"query": "SELECT *", "limit": 100000})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // As in 3.x, a view needs a committed head; the demo leaves its rows uncommitted.
    let view = json!({"id": "zeros", "query": "SELECT * WHERE labels == 0"});
    let (st, v) = call(&s.app, "POST", "/datasets/d/views", Some(view.clone())).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "invalid_input");
    let (st, v) = call(
        &s.app,
        "POST",
        "/datasets/d/commit",
        Some(json!({"message": "demo rows"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = call(&s.app, "POST", "/datasets/d/views", Some(view)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (_, v) = call(&s.app, "GET", "/datasets/d/views", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (st, v) = call(&s.app, "GET", "/datasets/d/views/zeros", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["rows"].is_array());
    let (st, _) = call(&s.app, "GET", "/datasets/d/views/..", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(&s.app, "DELETE", "/datasets/d/views/zeros", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s.app, "GET", "/datasets/d/views/zeros", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn scopes_on_read_write_admin_routes() {
    let s = server(tokens()).await;
    let app = &s.app;
    // No token, a wrong token, a malformed header.
    let (st, v) = call_as(app, "GET", "/datasets/d", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    let (st, _) = call_as(app, "GET", "/datasets/d", Some("wrong"), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(app, "GET", "/healthz", None).await;
    assert_eq!(st, StatusCode::OK);

    for tok in ["r", "w", "a", "r-only-d"] {
        let (st, _) = call_as(app, "GET", "/datasets/d", Some(tok), None).await;
        assert_eq!(st, StatusCode::OK, "{tok}");
    }
    let commit = json!({"message": "m"});
    let (st, v) = call_as(
        app,
        "POST",
        "/datasets/d/commit",
        Some("r"),
        Some(commit.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_error(&v, "forbidden");
    let (st, v) = call_as(
        app,
        "POST",
        "/datasets/d/commit",
        Some("w"),
        Some(commit.clone()),
    )
    .await;
    assert_ne!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, _) = call_as(app, "POST", "/datasets/d/commit", Some("a"), Some(commit)).await;
    assert_ne!(st, StatusCode::FORBIDDEN);

    let create = json!({"name": "n"});
    for tok in ["r", "w"] {
        let (st, _) = call_as(app, "POST", "/datasets", Some(tok), Some(create.clone())).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{tok}");
        let (st, _) = call_as(app, "GET", "/metrics", Some(tok), None).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{tok}");
    }
    let (st, _) = call_as(app, "POST", "/datasets", Some("a"), Some(create)).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, text, ctype) = send(app, "GET", "/metrics", Some("a"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"));
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(
            "deeplake_http_requests_total{method=\"GET\",route=\"/datasets/{name}\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("deeplake_http_request_duration_seconds_bucket"));

    // A token limited to `d` sees only `d`.
    let (_, v) = call_as(app, "GET", "/datasets", Some("r-only-d"), None).await;
    assert_eq!(v, json!({"datasets": ["d"]}));
    let (_, v) = call_as(app, "GET", "/datasets", Some("r"), None).await;
    assert_eq!(v, json!({"datasets": ["d", "n"]}));
    let (st, _) = call_as(app, "GET", "/datasets/n", Some("r-only-d"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call_as(app, "DELETE", "/datasets/n", Some("w"), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call_as(app, "DELETE", "/datasets/n", Some("a"), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn traversal_never_leaves_the_root() {
    let s = server(Tokens::default()).await;
    // A dataset beside the root, which no request may reach.
    let outer = tempfile::tempdir().unwrap();
    demo(outer.path(), "secret").await;
    let rel = pathdiff(outer.path(), s.root.path());
    let abs = outer.path().join("secret").to_string_lossy().into_owned();
    let enc = |p: &str| p.replace('/', "%2F");
    let uris = [
        format!("/datasets/{}", enc(&format!("{rel}/secret"))),
        "/datasets/..".to_owned(),
        "/datasets/%2E%2E".to_owned(),
        "/datasets/..%2Fd".to_owned(),
        format!("/datasets/{}", enc(&abs)),
        "/datasets/d%2F..%2Fd".to_owned(),
        "/datasets/d/tensors/..%2F..%2Fx/samples/0".to_owned(),
        "/datasets/d/tensors/images/samples/0?ref=..%2F..".to_owned(),
        format!("/datasets/d/log?ref={}", enc(&abs)),
        "/datasets/d/views/..%2F..%2Fx".to_owned(),
        format!("/datasets/d/views/{}", enc(&abs)),
    ];
    for u in &uris {
        let (st, v) = call(&s.app, "GET", u, None).await;
        assert!(
            st == StatusCode::BAD_REQUEST || st == StatusCode::NOT_FOUND,
            "{u}: {st} {v}"
        );
        assert!(v["error"]["kind"].is_string(), "{u}: {v}");
        assert!(v["error"]["message"].is_string(), "{u}: {v}");
    }
    let (st, _) = call(&s.app, "POST", "/datasets", Some(json!({"name": abs}))).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = call(&s.app, "DELETE", "/datasets/..%2Fx", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(outer.path().join("secret").exists());
}

/// `to` relative to `from`'s folder, as `..` segments (both are temp folders).
fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> String {
    let depth = from.components().count();
    let ups = vec![".."; depth].join("/");
    format!("{ups}{}", to.to_string_lossy())
}

#[tokio::test]
async fn body_limit_answers_413_in_the_error_shape() {
    let s = server(Tokens::default()).await;
    let big = json!({"query": "x".repeat(10_000)});
    let (st, v) = call(&s.app, "POST", "/datasets/d/query", Some(big)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_error(&v, "payload_too_large");
    // A missing body is a bad request in the same shape.
    let (st, v) = call(&s.app, "POST", "/datasets", None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "invalid_input");
}

#[test]
fn no_tokens_means_loopback_only() {
    let none = Tokens::default();
    assert!(serve::check_bind(&"127.0.0.1:0".parse().unwrap(), &none).is_ok());
    assert!(serve::check_bind(&"[::1]:0".parse().unwrap(), &none).is_ok());
    assert!(serve::check_bind(&"0.0.0.0:0".parse().unwrap(), &none).is_err());
    assert!(serve::check_bind(&"0.0.0.0:0".parse().unwrap(), &tokens()).is_ok());
}

#[tokio::test]
async fn real_socket_serves_and_stops() {
    let s = server(Tokens::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = s.app.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let body = http_get(addr, "/datasets/d/tensors/captions/samples/0").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let health = http_get(addr, "/healthz").await;
    assert!(health.ends_with("{\"status\":\"ok\"}"), "{health}");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}
