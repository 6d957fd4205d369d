//! `deeplake serve`'s Arrow IPC answers and appends: streams decoded with arrow-ipc's
//! StreamReader and compared with core reads, every append error leaving the dataset
//! as it was, deeplake 3.9.52 reading an appended dataset, the chunk cache's counters at
//! `/metrics`, and one stream over a real socket.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Float32Array, Int32Array, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use deeplake_core::{Dataset, OpenOptions, Sample};
use deeplake_daemon::serve::auth::Tokens;
use deeplake_daemon::serve::{self, AppState, Limits};
use serde_json::{Value, json};
use tower::ServiceExt;

const ARROW: &str = "application/vnd.apache.arrow.stream";

pub(crate) struct Server {
    pub(crate) root: tempfile::TempDir,
    pub(crate) app: axum::Router,
}

pub(crate) async fn server() -> Server {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("d").to_string_lossy().into_owned();
    let parsed = <deeplake_daemon::cli::Cli as clap::Parser>::try_parse_from([
        "deeplake", "demo", &path, "--rows", "12", "--size", "16",
    ])
    .unwrap();
    let deeplake_daemon::cli::Command::Demo(a) = parsed.command else {
        panic!("not demo")
    };
    deeplake_daemon::cli::demo::run(&a, &mut Vec::new())
        .await
        .unwrap();
    let state = AppState::new(
        &root.path().to_string_lossy(),
        Default::default(),
        Tokens::default(),
    );
    let limits = Limits {
        body_bytes: 64 << 10,
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
    ctype: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = ctype {
        b = b.header("content-type", c);
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec(), headers)
}

async fn get_arrow(app: &axum::Router, uri: &str) -> (RecordBatch, axum::http::HeaderMap) {
    let (st, body, headers) = send(app, "GET", uri, None, Vec::new()).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["content-type"], ARROW);
    (read_stream(&body), headers)
}

fn read_stream(body: &[u8]) -> RecordBatch {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)
            .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow_select_concat(&schema, &batches)
}

/// The stream's batches as one (the server sends one batch).
fn arrow_select_concat(schema: &Arc<Schema>, batches: &[RecordBatch]) -> RecordBatch {
    assert!(batches.len() <= 1, "{} batches", batches.len());
    batches
        .first()
        .cloned()
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()))
}

pub(crate) async fn json_call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let (st, b, _) = send(
        app,
        method,
        uri,
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await;
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

pub(crate) async fn open(root: &std::path::Path, name: &str) -> Dataset {
    Dataset::open(
        &root.join(name).to_string_lossy(),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn shape_of(batch: &RecordBatch, col: &str, row: usize) -> Vec<u32> {
    let l = batch.column_by_name(col).unwrap().as_list::<i32>();
    l.value(row).as_primitive::<UInt32Type>().values().to_vec()
}

fn array_bytes(s: &Sample) -> (Vec<usize>, Vec<u8>) {
    match s {
        Sample::Array(a) => (a.shape.clone(), a.data.to_vec()),
        other => panic!("not an array: {other:?}"),
    }
}

#[tokio::test]
async fn slices_as_arrow_match_core_reads() {
    let s = server().await;
    let ds = open(s.root.path(), "d").await;

    // Decoded images: List<UInt8> row-major plus their shape.
    let (b, _) = get_arrow(
        &s.app,
        "/datasets/d/tensors/images/samples?start=2&end=6&format=arrow",
    )
    .await;
    assert_eq!(b.num_rows(), 4);
    let field = b.schema().field_with_name("images").unwrap().clone();
    assert_eq!(field.metadata()["deeplake.htype"], "image");
    assert_eq!(field.metadata()["deeplake.dtype"], "uint8");
    assert_eq!(field.metadata()["deeplake.kind"], "array");
    let col = b.column_by_name("images").unwrap().as_list::<i32>();
    let want = ds.read_range("images", 2..6).await.unwrap();
    for (r, w) in want.iter().enumerate() {
        let (shape, bytes) = array_bytes(w);
        let got = col.value(r);
        assert_eq!(got.as_primitive::<UInt8Type>().values().to_vec(), bytes);
        let got_shape: Vec<usize> = shape_of(&b, "images.shape", r)
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(got_shape, shape);
    }
    assert_eq!(shape_of(&b, "images.shape", 0), vec![16, 16, 3]);

    // Stored bytes with decode=false: Binary, byte for byte the JPEG.
    let (b, _) = get_arrow(
        &s.app,
        "/datasets/d/tensors/images/samples?start=0&end=3&format=arrow&decode=false",
    )
    .await;
    let field = b.schema().field_with_name("images").unwrap().clone();
    assert_eq!(field.data_type(), &DataType::Binary);
    assert_eq!(field.metadata()["deeplake.compression"], "jpeg");
    let col = b
        .column_by_name("images")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap();
    for r in 0..3 {
        let (shape, stored) = ds.read_stored("images", r as u64).await.unwrap();
        assert_eq!(col.value(r), &stored[..]);
        let got: Vec<u64> = shape_of(&b, "images.shape", r)
            .iter()
            .map(|&d| d as u64)
            .collect();
        assert_eq!(got, shape);
    }

    // Boxes (float32 n x 4), class labels (one integer a row), captions (Utf8).
    let (b, _) = get_arrow(&s.app, "/datasets/d/tensors/boxes/samples?format=arrow").await;
    assert_eq!(b.num_rows(), 12);
    let col = b.column_by_name("boxes").unwrap().as_list::<i32>();
    for (r, w) in ds
        .read_range("boxes", 0..12)
        .await
        .unwrap()
        .iter()
        .enumerate()
    {
        let (shape, bytes) = array_bytes(w);
        let vals = col.value(r);
        let vals = vals.as_primitive::<Float32Type>().values();
        let got: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(got, bytes);
        let got_shape: Vec<usize> = shape_of(&b, "boxes.shape", r)
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(got_shape, shape);
    }
    let (b, _) = get_arrow(&s.app, "/datasets/d/tensors/labels/samples?format=arrow").await;
    let field = b.schema().field_with_name("labels").unwrap().clone();
    assert_eq!(field.metadata()["deeplake.kind"], "scalar");
    assert!(b.column_by_name("labels.shape").is_none());
    let col = b
        .column_by_name("labels")
        .unwrap()
        .as_primitive::<UInt32Type>();
    for (r, w) in ds
        .read_range("labels", 0..12)
        .await
        .unwrap()
        .iter()
        .enumerate()
    {
        let (_, bytes) = array_bytes(w);
        assert_eq!(col.value(r).to_le_bytes().to_vec(), bytes);
    }
    let (b, _) = get_arrow(
        &s.app,
        "/datasets/d/tensors/captions/samples?start=1&end=3&format=arrow",
    )
    .await;
    let col = b.column_by_name("captions").unwrap().as_string::<i32>();
    for (r, w) in ds
        .read_range("captions", 1..3)
        .await
        .unwrap()
        .iter()
        .enumerate()
    {
        let Sample::Text(t) = w else { panic!("{w:?}") };
        assert_eq!(col.value(r), t);
    }

    // The single-sample route answers a stream of one row.
    let (b, _) = get_arrow(&s.app, "/datasets/d/tensors/images/samples/7?format=arrow").await;
    assert_eq!(b.num_rows(), 1);
    let (_, bytes) = array_bytes(&ds.read("images", 7).await.unwrap());
    let col = b.column_by_name("images").unwrap().as_list::<i32>();
    assert_eq!(
        col.value(0).as_primitive::<UInt8Type>().values().to_vec(),
        bytes
    );

    let (st, _, _) = send(
        &s.app,
        "GET",
        "/datasets/d/tensors/images/samples?format=bmp",
        None,
        vec![],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(
        &s.app,
        "GET",
        "/datasets/d/tensors/images/samples?start=5&end=2&format=arrow",
        None,
        vec![],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn query_pages_as_arrow() {
    let s = server().await;
    let ds = open(s.root.path(), "d").await;
    let (st, body, headers) = send(
        &s.app,
        "POST",
        "/datasets/d/query?format=arrow",
        Some("application/json"),
        json!({"query": "SELECT * WHERE labels == 0 OR labels != 0", "limit": 5})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], ARROW);
    assert_eq!(headers["x-deeplake-total"], "12");
    let id = headers["x-deeplake-result-id"].to_str().unwrap().to_owned();
    let b = read_stream(&body);
    assert_eq!(b.num_rows(), 5);
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for want in [
        "__row",
        "images",
        "images.shape",
        "labels",
        "boxes",
        "boxes.shape",
        "captions",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert_eq!(names[0], "__row");
    let rows = b
        .column_by_name("__row")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!(rows.values().to_vec(), vec![0, 1, 2, 3, 4]);
    let caps = b.column_by_name("captions").unwrap().as_string::<i32>();
    let Sample::Text(t) = ds.read("captions", 3).await.unwrap() else {
        panic!()
    };
    assert_eq!(caps.value(3), t);

    let (b, headers) = get_arrow(
        &s.app,
        &format!("/datasets/d/results/{id}?offset=10&limit=5&format=arrow"),
    )
    .await;
    assert_eq!(headers["x-deeplake-result-id"], id.as_str());
    assert_eq!(b.num_rows(), 2);
    let rows = b
        .column_by_name("__row")
        .unwrap()
        .as_primitive::<UInt64Type>();
    assert_eq!(rows.values().to_vec(), vec![10, 11]);
    let imgs = b.column_by_name("images").unwrap().as_list::<i32>();
    let (_, bytes) = array_bytes(&ds.read("images", 11).await.unwrap());
    assert_eq!(
        imgs.value(1).as_primitive::<UInt8Type>().values().to_vec(),
        bytes
    );

    // Computed columns travel as JSON text.
    let (st, body, _) = send(
        &s.app,
        "POST",
        "/datasets/d/query?format=arrow",
        Some("application/json"),
        json!({"query": "SELECT labels WHERE labels == 1"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let b = read_stream(&body);
    assert!(b.column_by_name("__row").is_some());

    let (st, _, _) = send(
        &s.app,
        "POST",
        "/datasets/d/query?format=xml",
        Some("application/json"),
        json!({"query": "SELECT *"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// A dataset `t` with a float32 array tensor, a text, a json and a class_label tensor.
async fn typed_dataset(app: &axum::Router) {
    let (st, v) = json_call(app, "POST", "/datasets", json!({"name": "t"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    for body in [
        json!({"name": "x", "htype": "generic", "dtype": "float32"}),
        json!({"name": "txt", "htype": "text"}),
        json!({"name": "meta", "htype": "json"}),
        json!({"name": "label", "htype": "class_label", "class_names": ["a", "b", "c"]}),
    ] {
        let (st, v) = json_call(app, "POST", "/datasets/t/tensors", body).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
}

/// A list column of `T`, a null where a row is `None`.
fn list_of<T: arrow_array::types::ArrowPrimitiveType>(rows: &[Option<Vec<T::Native>>]) -> ArrayRef {
    Arc::new(ListArray::from_iter_primitive::<T, _, _>(rows.iter().map(
        |r| {
            r.as_ref()
                .map(|v| v.iter().map(|x| Some(*x)).collect::<Vec<_>>())
        },
    )))
}

fn list_f32(rows: &[Option<Vec<f32>>]) -> ArrayRef {
    list_of::<Float32Type>(rows)
}

fn shapes(rows: &[Option<Vec<u32>>]) -> ArrayRef {
    list_of::<UInt32Type>(rows)
}

fn stream(cols: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch =
        RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

fn f32s(s: &Sample) -> (Vec<usize>, Vec<f32>) {
    let (shape, bytes) = array_bytes(s);
    (
        shape,
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[tokio::test]
async fn append_json_and_arrow_then_read_back() {
    let s = server().await;
    typed_dataset(&s.app).await;
    let body = json!({"columns": {
        "x": [[[1.0, 2.0], [3.0, 4.0]], {"shape": [1, 3], "data": [5, 6, 7]}],
        "txt": ["one", null],
        "meta": [{"k": 1}, [1, "two"]],
        "label": [2, 0],
    }});
    let (st, v) = json_call(&s.app, "POST", "/datasets/t/append", body).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"rows": 2, "length": 2, "commit": null}));

    // Arrow: `label` unnamed gets empty samples; `x` rows with and without a shape column.
    let body = stream(vec![
        (
            "x",
            list_f32(&[
                Some(vec![1.5, 2.5, 3.5, 4.5, 5.5, 6.5]),
                None,
                Some(vec![9.0]),
            ]),
        ),
        (
            "x.shape",
            shapes(&[Some(vec![2, 3]), None, Some(vec![1, 1])]),
        ),
        (
            "txt",
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
        ),
        (
            "meta",
            Arc::new(StringArray::from(vec![
                Some("{\"z\": true}"),
                None,
                Some("3"),
            ])),
        ),
    ]);
    let (st, b, _) = send(
        &s.app,
        "POST",
        "/datasets/t/append?commit=rows%20in",
        Some(ARROW),
        body,
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["rows"], 3);
    assert_eq!(v["length"], 5);
    assert!(v["commit"].is_string(), "{v}");

    let ds = open(s.root.path(), "t").await;
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.commit_id().as_deref(), v["commit"].as_str());
    let x = ds.read_range("x", 0..5).await.unwrap();
    assert_eq!(f32s(&x[0]), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(f32s(&x[1]), (vec![1, 3], vec![5.0, 6.0, 7.0]));
    assert_eq!(
        f32s(&x[2]),
        (vec![2, 3], vec![1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    );
    assert!(
        matches!(&x[3], Sample::Empty)
            || matches!(&x[3], Sample::Array(a) if a.num_elements() == 0),
        "{:?}",
        x[3]
    );
    assert_eq!(f32s(&x[4]), (vec![1, 1], vec![9.0]));
    let txt = ds.read_range("txt", 0..5).await.unwrap();
    assert!(matches!(&txt[0], Sample::Text(t) if t == "one"), "{txt:?}");
    assert!(matches!(&txt[3], Sample::Text(t) if t == "b"), "{txt:?}");
    let meta = ds.read("meta", 2).await.unwrap();
    assert!(
        matches!(&meta, Sample::Json(j) if *j == json!({"z": true})),
        "{meta:?}"
    );
    assert_eq!(ds.tensor_len("label").unwrap(), 5);
    let (_, bytes) = array_bytes(&ds.read("label", 0).await.unwrap());
    assert_eq!(bytes, 2u32.to_le_bytes());

    // What the API sends, it takes back: an Arrow page of `t` appended to `t`.
    let (st, page, _) = send(
        &s.app,
        "GET",
        "/datasets/t/tensors/x/samples?start=0&end=2&format=arrow",
        None,
        vec![],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, b, _) = send(&s.app, "POST", "/datasets/t/append", Some(ARROW), page).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let ds = open(s.root.path(), "t").await;
    assert_eq!(ds.len(), 7);
    assert_eq!(
        f32s(&ds.read("x", 6).await.unwrap()),
        (vec![1, 3], vec![5.0, 6.0, 7.0])
    );

    // Stored JPEG bytes append to a jpeg tensor as they are.
    let (st, page, _) = send(
        &s.app,
        "GET",
        "/datasets/d/tensors/images/samples?start=0&end=2&format=arrow&decode=false",
        None,
        vec![],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, b, _) = send(&s.app, "POST", "/datasets/d/append", Some(ARROW), page).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let d = open(s.root.path(), "d").await;
    assert_eq!(d.tensor_len("images").unwrap(), 14);
    assert_eq!(
        d.read_stored("images", 12).await.unwrap().1,
        d.read_stored("images", 0).await.unwrap().1
    );
}

/// The lengths of every tensor of `t`, and the storage's listing, to show nothing moved.
async fn snapshot(root: &std::path::Path) -> (Vec<u64>, Vec<String>) {
    let ds = open(root, "t").await;
    let lens = ["x", "txt", "meta", "label"]
        .iter()
        .map(|t| ds.tensor_len(t).unwrap())
        .collect();
    let mut files: Vec<String> = walk(&root.join("t"));
    files.sort();
    (lens, files)
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            let len = e.metadata().unwrap().len();
            out.push(format!("{} {len}", path.display()));
        }
    }
    out
}

#[tokio::test]
async fn append_errors_answer_400_and_leave_the_dataset_unchanged() {
    let s = server().await;
    typed_dataset(&s.app).await;
    let (st, v) = json_call(
        &s.app,
        "POST",
        "/datasets/t/append",
        json!({"columns": {"x": [[[1.0]]], "label": [1]}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let before = snapshot(s.root.path()).await;

    let json_cases = [
        (json!({"columns": {"nope": [1]}}), "nope", None),
        (
            json!({"columns": {"x": [[1.0], [2.0]], "txt": ["a"]}}),
            "txt",
            None,
        ),
        (json!({"columns": {"x": [[1.0], "no"]}}), "x", Some(1)),
        (
            json!({"columns": {"x": [[[1.0, 2.0], [3.0]]]}}),
            "x",
            Some(0),
        ),
        (
            json!({"columns": {"x": [{"shape": [2, 2], "data": [1, 2, 3]}]}}),
            "x",
            Some(0),
        ),
        (json!({"columns": {"label": [0, 1.5]}}), "label", Some(1)),
        (json!({"columns": {"label": [0, -1]}}), "label", Some(1)),
        (json!({"columns": {"label": [1, "b"]}}), "label", Some(1)),
        (json!({"columns": {"txt": ["a", 7]}}), "txt", Some(1)),
        (json!({"columns": {"x": 3}}), "x", None),
        // Rows of another rank than the tensor's, after a good column.
        (
            json!({"columns": {"txt": ["a", "b"], "x": [[[1.0]], [3.0]]}}),
            "x",
            Some(1),
        ),
    ];
    for (body, tensor, row) in json_cases {
        let (st, v) = json_call(&s.app, "POST", "/datasets/t/append", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["kind"], "invalid_input", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{tensor:?}")), "{body}: {msg}");
        if let Some(r) = row {
            assert!(msg.contains(&format!("row {r}")), "{body}: {msg}");
        }
        assert_eq!(snapshot(s.root.path()).await, before, "{body}");
    }

    let i32s: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
    ]));
    let arrow_cases: Vec<(Vec<u8>, &str, Option<usize>)> = vec![
        (
            stream(vec![("nope", list_f32(&[Some(vec![1.0])]))]),
            "nope",
            None,
        ),
        (stream(vec![("x", i32s)]), "x", None),
        (
            stream(vec![("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]),
            "x",
            None,
        ),
        (
            stream(vec![
                ("x", list_f32(&[Some(vec![1.0]), Some(vec![1.0, 2.0, 3.0])])),
                ("x.shape", shapes(&[Some(vec![1, 1]), Some(vec![2, 2])])),
            ]),
            "x",
            Some(1),
        ),
        (
            stream(vec![(
                "txt",
                Arc::new(Float32Array::from(vec![1.0])) as ArrayRef,
            )]),
            "txt",
            None,
        ),
        (
            stream(vec![(
                "meta",
                Arc::new(StringArray::from(vec!["{}", "{bad"])) as ArrayRef,
            )]),
            "meta",
            Some(1),
        ),
        (
            stream(vec![(
                "label",
                Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
            )]),
            "label",
            Some(0),
        ),
        // One tensor twice (found by the http_bodies fuzz target): it would get its
        // rows twice and the others once.
        (
            stream(vec![
                ("txt", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
                ("txt", Arc::new(StringArray::from(vec!["b"])) as ArrayRef),
            ]),
            "txt",
            None,
        ),
    ];
    for (body, tensor, row) in arrow_cases {
        let (st, b, _) = send(&s.app, "POST", "/datasets/t/append", Some(ARROW), body).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(st, StatusCode::BAD_REQUEST, "{tensor}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{tensor:?}")), "{msg}");
        if let Some(r) = row {
            assert!(msg.contains(&format!("row {r}")), "{msg}");
        }
        assert_eq!(snapshot(s.root.path()).await, before, "{tensor}");
    }

    // Not a stream; no content type; over the body limit (413).
    let (st, _, _) = send(
        &s.app,
        "POST",
        "/datasets/t/append",
        Some(ARROW),
        b"nope".to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(&s.app, "POST", "/datasets/t/append", None, b"{}".to_vec()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let big = json!({"columns": {"x": [vec![1.0; 20_000]]}});
    let (st, v) = json_call(&s.app, "POST", "/datasets/t/append", big).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["kind"], "payload_too_large");
    // An image tensor refuses a row that is not an image: checked before any write.
    let (st, v) = json_call(
        &s.app,
        "POST",
        "/datasets/d/append",
        json!({"columns": {"images": [[[[0, 0, 0]]], [1, 2]], "captions": ["a", "b"]}}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("row 1"),
        "{v}"
    );
    let d = open(s.root.path(), "d").await;
    assert_eq!(d.tensor_len("images").unwrap(), 12);
    assert_eq!(d.tensor_len("captions").unwrap(), 12);
    assert_eq!(snapshot(s.root.path()).await, before);
}

/// Byte positions of the `Buffer` entries (offset, then length, 8 bytes each) and of
/// the `FieldNode` entries (length, then null count) of the first record batch of an
/// IPC stream, and the length of its body.
fn batch_layout(stream: &[u8]) -> (Vec<usize>, Vec<usize>, i64) {
    let mut at = 0;
    loop {
        assert_eq!(stream[at..at + 4], [0xff; 4], "continuation marker");
        let len = i32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8;
        let meta = &stream[at..at + len];
        let m = arrow_ipc::root_as_message(meta).unwrap();
        if let Some(b) = m.header_as_record_batch() {
            let at = |bytes: &[u8], n: usize| {
                let base = bytes.as_ptr() as usize - stream.as_ptr() as usize;
                (0..n).map(|k| base + 16 * k).collect::<Vec<_>>()
            };
            let (bufs, nodes) = (b.buffers().unwrap(), b.nodes().unwrap());
            return (
                at(bufs.bytes(), bufs.len()),
                at(nodes.bytes(), nodes.len()),
                m.bodyLength(),
            );
        }
        at += len + m.bodyLength() as usize;
    }
}

#[tokio::test]
async fn malformed_arrow_streams_answer_400_without_a_panic() {
    // The IPC reader slices buffers and sums row counts as the metadata says: these
    // bodies made it panic (found by the http_bodies fuzz target; the reproducers are
    // in its corpus).
    let s = server().await;
    typed_dataset(&s.app).await;
    let before = snapshot(s.root.path()).await;
    let good = stream(vec![
        ("x", list_f32(&[Some(vec![1.0, 2.0]), None])),
        (
            "txt",
            Arc::new(StringArray::from(vec![Some("a"), Some("bc")])) as ArrayRef,
        ),
    ]);
    let (bufs, _, body) = batch_layout(&good);
    // x: validity, offsets, then its values' validity and values; txt: validity,
    // offsets, bytes.
    assert_eq!(bufs.len(), 7);
    let set = |pos: usize, v: i64| {
        let mut b = good.clone();
        b[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    let cases = [
        ("past the body", set(bufs[1] + 8, body + 64), "outside its"),
        (
            "offset past the body",
            set(bufs[6], body + 8),
            "outside its",
        ),
        ("negative length", set(bufs[1] + 8, -8), "outside its"),
        (
            "partial offsets",
            set(bufs[1] + 8, 7),
            "whole number of 4-byte",
        ),
        (
            "partial values",
            set(bufs[3] + 8, 6),
            "whole number of 4-byte",
        ),
        ("misaligned", set(bufs[5], 4), "multiple of 8"),
        (
            "truncated body",
            good[..good.len() - 16].to_vec(),
            "past the end",
        ),
    ];
    for (what, body, expect) in cases {
        let (st, b, _) = send(&s.app, "POST", "/datasets/t/append", Some(ARROW), body).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {v}");
        assert_eq!(v["error"]["kind"], "invalid_input", "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("not an Arrow IPC stream"), "{what}: {msg}");
        assert!(msg.contains(expect), "{what}: {msg}");
        assert_eq!(snapshot(s.root.path()).await, before, "{what}");
    }
    // Row counts the body cannot hold: a fixed-size list whose rows times its size
    // overflow made the reader panic too.
    let fixed = arrow_array::FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        4,
        Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0])),
        None,
    );
    let fixed = stream(vec![("x", Arc::new(fixed) as ArrayRef)]);
    let (_, nodes, _) = batch_layout(&fixed);
    for (what, pos, v) in [
        ("rows overflowing", nodes[0], i64::MAX),
        ("negative rows", nodes[0], -1),
        ("more nulls than rows", nodes[0] + 8, 5),
    ] {
        let mut b = fixed.clone();
        b[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
        let (st, b, _) = send(&s.app, "POST", "/datasets/t/append", Some(ARROW), b).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(st, StatusCode::BAD_REQUEST, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("rows"), "{what}: {msg}");
        assert_eq!(snapshot(s.root.path()).await, before, "{what}");
    }
    // A column type no tensor takes is refused before any batch is read.
    let nested: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1)]),
    ]));
    let lol = arrow_array::ListArray::new(
        Arc::new(Field::new("item", nested.data_type().clone(), true)),
        arrow_buffer::OffsetBuffer::from_lengths([1]),
        nested,
        None,
    );
    let (st, b, _) = send(
        &s.app,
        "POST",
        "/datasets/t/append",
        Some(ARROW),
        stream(vec![("x", Arc::new(lol) as ArrayRef)]),
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("\"x\""),
        "{v}"
    );
    // The untouched stream still appends.
    let (st, b, _) = send(&s.app, "POST", "/datasets/t/append", Some(ARROW), good).await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(open(s.root.path(), "t").await.tensor_len("x").unwrap(), 2);
}

#[tokio::test]
async fn appended_rows_read_in_deeplake_3_9_52() {
    testkit::oracle::dl3_python();
    let s = server().await;
    typed_dataset(&s.app).await;
    let body = stream(vec![
        (
            "x",
            list_f32(&[Some(vec![1.0, 2.0, 3.0, 4.0]), Some(vec![0.5])]),
        ),
        ("x.shape", shapes(&[Some(vec![2, 2]), Some(vec![1, 1])])),
        (
            "txt",
            Arc::new(StringArray::from(vec![Some("hello"), Some("world")])),
        ),
        (
            "label",
            Arc::new(arrow_array::UInt32Array::from(vec![1, 2])),
        ),
    ]);
    let (st, b, _) = send(
        &s.app,
        "POST",
        "/datasets/t/append?commit=from%20arrow",
        Some(ARROW),
        body,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (st, v) = json_call(
        &s.app,
        "POST",
        "/datasets/t/append",
        json!({"columns": {"meta": [{"a": [1, 2]}], "label": [0]}}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let url = s.root.path().join("t").to_string_lossy().into_owned();
    let script = r#"
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
x = [ds["x"][i].numpy().tolist() for i in range(2)]
print(json.dumps({
    "len": len(ds),
    "x": x,
    "x_dtype": str(ds["x"].dtype),
    "txt": [ds["txt"][i].data()["value"] for i in range(2)],
    "label": [int(ds["label"][i].numpy().reshape(-1)[0]) for i in range(3)],
    "meta": ds["meta"][2].data()["value"],
    "commits": [c["message"] for c in ds.commits],
}))
"#;
    let v = testkit::oracle::dl3_json(script, [&url]);
    assert_eq!(v["len"], 3, "{v}");
    assert_eq!(v["x"], json!([[[1.0, 2.0], [3.0, 4.0]], [[0.5]]]));
    assert_eq!(v["x_dtype"], "float32");
    assert_eq!(v["txt"], json!(["hello", "world"]));
    assert_eq!(v["label"], json!([1, 2, 0]));
    assert_eq!(v["meta"], json!({"a": [1, 2]}));
    assert_eq!(v["commits"], json!(["from arrow"]));
}

#[tokio::test]
async fn metrics_export_the_chunk_cache_counters() {
    let s = server().await;
    for _ in 0..2 {
        let (st, _, _) = send(
            &s.app,
            "GET",
            "/datasets/d/tensors/images/samples?format=arrow",
            None,
            vec![],
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    let (st, text, _) = send(&s.app, "GET", "/metrics", None, vec![]).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(text).unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("deeplake_chunk_cache_misses_total") > 0, "{text}");
    assert!(value("deeplake_chunk_cache_hits_total") > 0, "{text}");
    assert!(value("deeplake_chunk_cache_bytes") > 0, "{text}");
    assert_eq!(value("deeplake_chunk_cache_evictions_total"), 0, "{text}");
    assert!(value("deeplake_chunk_reads_total") > 0, "{text}");
    assert!(value("deeplake_chunk_read_bytes_total") > 0, "{text}");
    assert!(text.contains("# TYPE deeplake_chunk_cache_hits_total counter"));
    assert_eq!(value("deeplake_runtime_workers"), 1, "{text}");
    assert!(text.contains("# TYPE deeplake_runtime_alive_tasks gauge"));
    // The live task gauge follows tasks as they start and end.
    let before = value("deeplake_runtime_alive_tasks");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let held = tokio::spawn(async move {
        let _ = rx.await;
    });
    let tasks = |app| async move {
        let (_, text, _) = send(app, "GET", "/metrics", None, vec![]).await;
        let text = String::from_utf8(text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("deeplake_runtime_alive_tasks "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(tasks(&s.app).await, before + 1);
    tx.send(()).unwrap();
    held.await.unwrap();
    assert_eq!(tasks(&s.app).await, before);
}

#[tokio::test]
async fn arrow_stream_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server().await;
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
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(
        b"GET /datasets/d/tensors/labels/samples?format=arrow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-type: {ARROW}")), "{head}");
    let b = read_stream(&raw[split + 4..]);
    assert_eq!(b.num_rows(), 12);
    let ds = open(s.root.path(), "d").await;
    let col = b
        .column_by_name("labels")
        .unwrap()
        .as_primitive::<UInt32Type>();
    let (_, bytes) = array_bytes(&ds.read("labels", 5).await.unwrap());
    assert_eq!(col.value(5).to_le_bytes().to_vec(), bytes);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
