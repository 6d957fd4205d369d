//! `POST /datasets/{name}/stream`: batches decoded with arrow-ipc's StreamReader and
//! compared with core reads; shuffles, parts, cursors, views, transforms and errors.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use axum::http::StatusCode;
use deeplake_core::Sample;
use serde_json::{Value, json};

use super::serve_arrow::{json_call, open, send, server};

/// The stream's batches and its schema metadata.
async fn stream(app: &axum::Router, body: Value) -> (Vec<RecordBatch>, Value) {
    let (st, bytes, headers) = send(
        app,
        "POST",
        "/datasets/d/stream",
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        headers["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let md: std::collections::BTreeMap<String, String> = reader
        .schema()
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        headers["x-deeplake-rows-total"].to_str().unwrap(),
        md["deeplake.rows_total"]
    );
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    (batches, json!(md))
}

fn rows(batches: &[RecordBatch]) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("__row")
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn cursors(batches: &[RecordBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("__cursor").unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn batches_hold_the_datasets_values() {
    let s = server().await;
    let (batches, md) = stream(
        &s.app,
        json!({"tensors": ["images", "labels", "captions"], "batch_size": 5}),
    )
    .await;
    assert_eq!(md["deeplake.rows_total"], "12");
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
        vec![5, 5, 2]
    );
    assert_eq!(rows(&batches), (0..12).collect::<Vec<_>>());
    assert_eq!(cursors(&batches).last().unwrap(), "0:12");
    let ds = open(s.root.path(), "d").await;
    let mut r = 0u64;
    for b in &batches {
        let images = b.column_by_name("images").unwrap().as_list::<i32>();
        let shapes = b.column_by_name("images.shape").unwrap().as_list::<i32>();
        let labels = b
            .column_by_name("labels")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let captions = b.column_by_name("captions").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let Sample::Array(want) = ds.read("images", r).await.unwrap() else {
                panic!("row {r}");
            };
            assert_eq!(
                images
                    .value(i)
                    .as_primitive::<UInt8Type>()
                    .values()
                    .to_vec(),
                want.data.to_vec(),
                "row {r}"
            );
            let shape: Vec<usize> = shapes
                .value(i)
                .as_primitive::<UInt32Type>()
                .values()
                .iter()
                .map(|&d| d as usize)
                .collect();
            assert_eq!(shape, want.shape);
            let Sample::Array(label) = ds.read("labels", r).await.unwrap() else {
                panic!("label {r}");
            };
            assert_eq!(f64::from(labels.value(i)), label.to_f64_vec()[0]);
            let Sample::Text(c) = ds.read("captions", r).await.unwrap() else {
                panic!("caption {r}");
            };
            assert_eq!(captions.value(i), c);
            r += 1;
        }
    }
}

#[tokio::test]
async fn shuffles_parts_and_cursors() {
    let s = server().await;
    let base = json!({"tensors": ["labels"], "batch_size": 4, "shuffle": true, "seed": 3, "shuffle_buffer": 4});
    let (a, _) = stream(&s.app, base.clone()).await;
    let (b, _) = stream(&s.app, base.clone()).await;
    let order = rows(&a);
    assert_eq!(order, rows(&b));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..12).collect::<Vec<_>>());
    assert_ne!(order, sorted);

    let mut both = Vec::new();
    for rank in 0..2 {
        let mut body = base.clone();
        body["rank"] = json!(rank);
        body["world_size"] = json!(2);
        let (part, md) = stream(&s.app, body).await;
        assert_eq!(md["deeplake.rows_total"], "6");
        both.extend(rows(&part));
    }
    both.sort_unstable();
    assert_eq!(both, (0..12).collect::<Vec<_>>());

    // Resume after the 5th row: exactly the rest, in order.
    let c = cursors(&a);
    let mut body = base.clone();
    body["cursor"] = json!(c[4]);
    let (rest, md) = stream(&s.app, body).await;
    assert_eq!(md["deeplake.cursor"], c[4]);
    assert_eq!(rows(&rest), order[5..].to_vec());
    assert_eq!(cursors(&rest), c[5..].to_vec());
}

#[tokio::test]
async fn queries_views_and_transforms() {
    let s = server().await;
    let (st, res) = json_call(
        &s.app,
        "POST",
        "/datasets/d/query",
        json!({"query": "SELECT * WHERE labels == 1"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{res}");
    let want: Vec<u64> = res["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["__row"].as_u64().unwrap())
        .collect();
    assert!(!want.is_empty());
    let (q, _) = stream(
        &s.app,
        json!({"tensors": ["labels"], "query": "SELECT * WHERE labels == 1"}),
    )
    .await;
    assert_eq!(rows(&q), want);

    let (st, c) = json_call(
        &s.app,
        "POST",
        "/datasets/d/commit",
        json!({"message": "m"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let (st, v) = json_call(
        &s.app,
        "POST",
        "/datasets/d/views",
        json!({"id": "ones", "query": "SELECT * WHERE labels == 1"}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (vs, _) = stream(&s.app, json!({"tensors": ["labels"], "view": "ones"})).await;
    assert_eq!(rows(&vs), want);

    let (t, _) = stream(
        &s.app,
        json!({"tensors": ["images"], "rows": [3, 1], "transforms": {"images": [
            {"resize": {"height": 8, "width": 8}},
            {"normalize": {"mean": [0.0], "std": [255.0]}}
        ]}}),
    )
    .await;
    assert_eq!(rows(&t), vec![3, 1]);
    let images = t[0].column_by_name("images").unwrap().as_list::<i32>();
    for i in 0..2 {
        let v = images.value(i);
        let v = v.as_primitive::<Float32Type>();
        assert_eq!(v.len(), 8 * 8 * 3);
        assert!(v.values().iter().all(|x| (0.0..=1.0).contains(x)));
    }
}

#[tokio::test]
async fn bad_requests_are_400_with_the_reason() {
    let s = server().await;
    for (body, needle) in [
        (json!({"batch_size": 0}), "batch_size"),
        (json!({"query": "SELECT *", "rows": [1]}), "at most one"),
        (json!({"rows": [99]}), "past the end"),
        (json!({"cursor": "0:13"}), "cursor"),
        (json!({"cursor": "x"}), "cursor"),
        (json!({"rank": 2, "world_size": 2}), "rank"),
        (
            json!({"tensors": ["captions"], "transforms": {"captions": [{"flip": {"p": 0.5}}]}}),
            "transforms apply",
        ),
        (
            json!({"tensors": ["images"], "transforms": {"images": [{"resize": {"height": 0, "width": 2}}]}}),
            "resize",
        ),
        (json!({"query": "SELECT * FROM"}), ""),
        (json!({"shuffle": "yes"}), ""),
    ] {
        let (st, err) = json_call(&s.app, "POST", "/datasets/d/stream", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {err}");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (st, _) = json_call(&s.app, "POST", "/datasets/missing/stream", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, err) = json_call(
        &s.app,
        "POST",
        "/datasets/d/stream",
        json!({"tensors": ["nope"]}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("nope"),
        "{err}"
    );
}

#[tokio::test]
async fn link_tensors_stream_their_targets_decoded() {
    use deeplake_core::{Dataset, OpenOptions, TensorOptions};
    let s = server().await;
    // Three JPEG files outside the root, linked from a dataset inside it.
    let files = tempfile::tempdir().unwrap();
    let d = open(s.root.path(), "d").await;
    let mut paths = Vec::new();
    for r in 0..3u64 {
        let (_, bytes) = d.read_stored("images", r).await.unwrap();
        let p = files.path().join(format!("{r}.jpg"));
        std::fs::write(&p, &bytes).unwrap();
        paths.push(p.to_string_lossy().into_owned());
    }
    let url = s.root.path().join("linked").to_string_lossy().into_owned();
    std::fs::create_dir_all(&url).unwrap();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "photos",
        TensorOptions::new("link[image]").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.extend(
        "photos",
        paths
            .iter()
            .map(|p| Sample::Link {
                path: p.clone(),
                creds_key: None,
            })
            .collect(),
    )
    .await
    .unwrap();
    ds.close().await.unwrap();
    let (st, bytes, _) = send(
        &s.app,
        "POST",
        "/datasets/linked/stream",
        Some("application/json"),
        json!({"tensors": ["photos"], "batch_size": 3})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let batches: Vec<RecordBatch> =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let photos = batches[0]
        .column_by_name("photos")
        .unwrap()
        .as_list::<i32>();
    for r in 0..3u64 {
        let Sample::Array(want) = d.read("images", r).await.unwrap() else {
            panic!("row {r}");
        };
        assert_eq!(
            photos
                .value(r as usize)
                .as_primitive::<UInt8Type>()
                .values()
                .to_vec(),
            want.data.to_vec(),
            "row {r}: the linked file decodes as the stored JPEG does"
        );
    }
}
