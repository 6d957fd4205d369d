//! Syncs of generated message files: every state kind, bad records, unknown streams,
//! junk and very long lines, overwrite, append_dedup, refresh truncation, schema
//! changes. Each run's output passes the protocol validator, and the datasets hold
//! exactly the records sent.

use serde_json::{Value, json};

use crate::common::*;

async fn state_kind(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (msgs, cat) = generate(
        dir.path(),
        "m",
        &[
            "--records",
            "3000",
            "--streams",
            "images,labels",
            "--state-every",
            "250",
            "--state-type",
            kind,
            "--platform-ids",
            "--bad-every",
            "97",
            "--unknown-stream-every",
            "113",
        ],
    );
    let mut input = std::fs::read(&msgs).unwrap();
    // Junk the protocol says to skip, and a very long record.
    input.extend_from_slice(
        b"this is not json\n\n{\"type\":\"LOG\",\"log\":{\"level\":\"INFO\",\"message\":\"x\"}}\n",
    );
    let long = "y".repeat(24 << 20);
    input.extend_from_slice(
        format!(
            "{{\"type\":\"RECORD\",\"record\":{{\"stream\":\"labels\",\"namespace\":null,\"data\":{{\"id\":99999,\"caption\":\"{long}\",\"unknown_field\":1}},\"emitted_at\":1}}}}\n"
        )
        .as_bytes(),
    );
    let last_state = match kind {
        "STREAM" => {
            r#"{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"labels"},"stream_state":{"end":1}},"id":777}}"#
        }
        "GLOBAL" => {
            r#"{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"end":1},"stream_states":[]},"id":777}}"#
        }
        _ => r#"{"type":"STATE","state":{"type":"LEGACY","data":{"end":1},"id":777}}"#,
    };
    input.extend_from_slice(last_state.as_bytes());
    input.push(b'\n');
    let root = dir.path().join("lake");
    let cfg = write_config(dir.path(), &config_for(&root));
    let r = write(&cfg, &cat, &input);
    validate(dir.path(), &input, &r, &cat);
    let states = r.states();
    assert_eq!(
        states.last().unwrap()["id"],
        777,
        "the last state comes back"
    );
    assert!(
        states
            .iter()
            .any(|s| s["destinationStats"]["rejectedRecordCount"].as_f64() > Some(0.0)),
        "rejected records are counted"
    );
    let expected = expected_ids(&input, &["images", "labels"]);
    for stream in ["images", "labels"] {
        let ds = open(&root.join(stream)).await;
        assert_eq!(
            sorted(ints(&ds, "id").await),
            sorted(expected[stream].clone()),
            "{kind}: stream {stream} holds exactly the records sent"
        );
        assert_eq!(ds.len(), expected[stream].len() as u64);
        let raw = texts(&ds, "_airbyte_raw_id").await;
        assert_eq!(raw.len(), expected[stream].len());
        assert!(raw.iter().all(|r| r.len() == 36));
        assert_eq!(ds.tensor_len("created_at__ts").unwrap(), ds.len());
    }
    let labels = open(&root.join("labels")).await;
    let n = labels.len();
    match labels.read("caption", n - 1).await.unwrap() {
        deeplake_core::Sample::Text(t) => assert_eq!(t.len(), 24 << 20),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        labels.tensor_htype("image_url").unwrap().to_string(),
        "link[image]"
    );
}

#[tokio::test]
async fn stream_states_bad_records_unknown_streams_and_junk() {
    state_kind("STREAM").await;
}

#[tokio::test]
async fn global_states() {
    state_kind("GLOBAL").await;
}

#[tokio::test]
async fn legacy_states() {
    state_kind("LEGACY").await;
}

#[tokio::test]
async fn overwrite_replaces_the_data_in_one_swap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let cfg = write_config(dir.path(), &config_for(&root));
    let (m1, c1) = generate(dir.path(), "a", &["--records", "1200", "--streams", "s,t"]);
    let input = std::fs::read(&m1).unwrap();
    validate(dir.path(), &input, &write(&cfg, &c1, &input), &c1);
    // Second sync: overwrite for s only, with fewer and different records.
    let (m2, c2) = generate(
        dir.path(),
        "b",
        &[
            "--records",
            "300",
            "--streams",
            "s",
            "--payload-bytes",
            "7",
            "--dest-mode",
            "overwrite",
        ],
    );
    let input2 = std::fs::read(&m2).unwrap();
    validate(dir.path(), &input2, &write(&cfg, &c2, &input2), &c2);
    let s = open(&root.join("s")).await;
    assert_eq!(sorted(ints(&s, "id").await), (0..300).collect::<Vec<_>>());
    assert!(texts(&s, "blob").await.iter().all(|b| b == "xxxxxxx"));
    assert!(
        s.tensor_names()
            .iter()
            .all(|n| !n.starts_with("_airbyte_next"))
    );
    // The other stream is untouched.
    let t = open(&root.join("t")).await;
    assert_eq!(t.len(), 600);
}

#[tokio::test]
async fn append_dedup_updates_rows_by_primary_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let cfg = write_config(dir.path(), &config_for(&root));
    let (m1, c1) = generate(
        dir.path(),
        "a",
        &["--records", "1000", "--dest-mode", "append_dedup"],
    );
    let input = std::fs::read(&m1).unwrap();
    validate(dir.path(), &input, &write(&cfg, &c1, &input), &c1);
    // The second sync repeats keys 0..999 with new values and adds 1000..1499; within
    // it, key 5 comes twice (the later one wins).
    let (m2, c2) = generate(
        dir.path(),
        "b",
        &[
            "--records",
            "1500",
            "--dest-mode",
            "append_dedup",
            "--payload-bytes",
            "3",
        ],
    );
    let mut input2 = std::fs::read(&m2).unwrap();
    input2.extend_from_slice(
        br#"{"type":"RECORD","record":{"stream":"images","data":{"id":5,"blob":"last"},"emitted_at":9}}
{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"images"},"stream_state":{"x":1}}}}
"#,
    );
    validate(dir.path(), &input2, &write(&cfg, &c2, &input2), &c2);
    let ds = open(&root.join("images")).await;
    let ids = ints(&ds, "id").await;
    assert_eq!(
        sorted(ids.clone()),
        (0..1500).collect::<Vec<_>>(),
        "one row per key"
    );
    let blobs = texts(&ds, "blob").await;
    for (id, blob) in ids.iter().zip(&blobs) {
        let want = if *id == 5 { "last" } else { "xxx" };
        assert_eq!(blob, want, "row of key {id} holds the latest record");
    }
    // The key index persisted: a third sync with only an update adds no row.
    let (_, c3) = generate(
        dir.path(),
        "c",
        &["--records", "1", "--dest-mode", "append_dedup"],
    );
    let input3 = br#"{"type":"RECORD","record":{"stream":"images","data":{"id":7,"blob":"again"},"emitted_at":9}}
"#;
    write(&cfg, &c3, input3);
    let ds = open(&root.join("images")).await;
    assert_eq!(ds.len(), 1500);
    let pos = ints(&ds, "id").await.iter().position(|i| *i == 7).unwrap();
    assert_eq!(texts(&ds, "blob").await[pos], "again");
}

#[tokio::test]
async fn refresh_truncates_only_streams_marked_complete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let cfg = write_config(dir.path(), &config_for(&root));
    let (m1, c1) = generate(dir.path(), "a", &["--records", "1000", "--streams", "s,t"]);
    let input = std::fs::read(&m1).unwrap();
    write(&cfg, &c1, &input);
    // A refresh of generation 2 (truncating: minimum == generation), both streams,
    // but only s is marked COMPLETE.
    let (m2, c2) = generate(
        dir.path(),
        "b",
        &[
            "--records",
            "400",
            "--streams",
            "s,t",
            "--generation-id",
            "2",
            "--minimum-generation-id",
            "2",
            "--sync-id",
            "9",
            "--complete-status",
            "--payload-bytes",
            "2",
        ],
    );
    let text = String::from_utf8(std::fs::read(&m2).unwrap()).unwrap();
    let input2: String = text
        .lines()
        .filter(|l| !(l.contains("COMPLETE") && l.contains(r#""name":"t""#)))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = write(&cfg, &c2, input2.as_bytes());
    validate(dir.path(), input2.as_bytes(), &r, &c2);
    let s = open(&root.join("s")).await;
    assert_eq!(
        sorted(ints(&s, "id").await),
        (0..400).step_by(2).collect::<Vec<_>>()
    );
    assert!(
        ints(&s, "_airbyte_generation_id")
            .await
            .iter()
            .all(|g| *g == 2)
    );
    let t = open(&root.join("t")).await;
    assert_eq!(t.len(), 500, "t was not complete: the old data stays");
    assert!(texts(&t, "blob").await.iter().all(|b| b.is_empty()));
    // The retry of the same generation resumes t's staged rows and finishes it.
    let (m3, _) = generate(
        dir.path(),
        "c",
        &[
            "--records",
            "0",
            "--streams",
            "s,t",
            "--generation-id",
            "2",
            "--minimum-generation-id",
            "2",
            "--sync-id",
            "9",
            "--complete-status",
        ],
    );
    let input3 = std::fs::read(&m3).unwrap();
    write(&cfg, &c2, &input3);
    let t = open(&root.join("t")).await;
    assert_eq!(
        sorted(ints(&t, "id").await),
        (1..400).step_by(2).collect::<Vec<_>>()
    );
    // s had already landed generation 2: the retry appends to it, nothing is lost.
    let s = open(&root.join("s")).await;
    assert_eq!(s.len(), 200);
}

#[tokio::test]
async fn schema_changes_add_tensors_and_type_changes_null_with_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let cfg = write_config(dir.path(), &config_for(&root));
    let cat = |props: Value| {
        write_config(
            dir.path(),
            &json!({"streams": [{"stream": {"name": "u", "json_schema": {"properties": props},
                "supported_sync_modes": ["full_refresh"]}, "sync_mode": "full_refresh",
                "destination_sync_mode": "append"}]}),
        )
    };
    let c1 = cat(json!({"id": {"type": "integer"}, "n": {"type": "integer"}}));
    write(
        &cfg,
        &c1,
        br#"{"type":"RECORD","record":{"stream":"u","data":{"id":1,"n":10},"emitted_at":1}}
{"type":"RECORD","record":{"stream":"u","data":{"id":2,"n":"oops"},"emitted_at":1}}
"#,
    );
    let c2 = cat(
        json!({"id": {"type": "integer"}, "n": {"type": "string"}, "extra": {"type": "string"}}),
    );
    let input = br#"{"type":"RECORD","record":{"stream":"u","data":{"id":3,"n":"abc","extra":"e"},"emitted_at":1}}
{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"u"},"stream_state":{}}}}
"#;
    let r = write(&cfg, &c2, input);
    validate(dir.path(), input, &r, &c2);
    let ds = open(&root.join("u")).await;
    assert_eq!(ints(&ds, "id").await, [1, 2, 3]);
    assert_eq!(ds.len(), 3);
    let extra = texts(&ds, "extra").await;
    assert_eq!(
        extra,
        ["", "", "e"],
        "the new field's tensor is padded for earlier rows"
    );
    let metas = ds.read_range("_airbyte_meta", 0..3).await.unwrap();
    let changes = |i: usize| match &metas[i] {
        deeplake_core::Sample::Json(v) => v["changes"].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(changes(0), json!([]));
    assert_eq!(changes(1)[0]["reason"], "DESTINATION_TYPECAST_ERROR");
    assert_eq!(
        changes(2)[0]["field"],
        "n",
        "a string in the stored int64 column is nulled"
    );
}

#[tokio::test]
async fn overrides_make_class_labels_boxes_embeddings_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let mut cfg_v = config_for(&root);
    cfg_v["tensors"] = json!([
        {"field": "label", "htype": "class_label", "class_names": ["cat", "dog"]},
        {"field": "box", "htype": "bbox", "bbox_coords": {"type": "pixel", "mode": "LTWH"}},
        {"field": "vec", "htype": "embedding", "dtype": "float32"},
        {"field": "photo", "htype": "link[image]"},
        {"stream": "o", "field": "secret", "skip": true}
    ]);
    let cfg = write_config(dir.path(), &cfg_v);
    let cat = write_config(
        dir.path(),
        &json!({"streams": [{"stream": {"name": "o", "json_schema": {"properties": {
            "label": {"type": "string"}, "box": {"type": "array", "items": {"type": "number"}},
            "vec": {"type": "array", "items": {"type": "number"}}, "photo": {"type": "string"},
            "secret": {"type": "string"}}}, "supported_sync_modes": ["full_refresh"]},
            "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}),
    );
    let input = br#"{"type":"RECORD","record":{"stream":"o","data":{"label":"dog","box":[1,2,3,4],"vec":[0.5,1.5],"photo":"https://example.invalid/a.jpg","secret":"s"},"emitted_at":1}}
{"type":"RECORD","record":{"stream":"o","data":{"label":"bird","box":[5,6,7],"vec":[2,3],"photo":"not a url"},"emitted_at":2}}
{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"o"},"stream_state":{"n":2}}}}
"#;
    let r = write(&cfg, &cat, input);
    validate(dir.path(), input, &r, &cat);
    let ds = open(&root.join("o")).await;
    assert!(!ds.tensor_names().contains(&"secret".to_owned()));
    assert_eq!(ds.tensor_htype("label").unwrap().to_string(), "class_label");
    assert_eq!(ds.tensor_htype("photo").unwrap().to_string(), "link[image]");
    let names = ds.tensor_info("label").unwrap()["class_names"].clone();
    assert_eq!(
        names,
        json!(["cat", "dog", "bird"]),
        "new class names are added"
    );
    let labels = ds.read_range("label", 0..2).await.unwrap();
    let idx = |s: &deeplake_core::Sample| match s {
        deeplake_core::Sample::Array(a) => a.to_f64_vec(),
        other => panic!("{other:?}"),
    };
    assert_eq!(idx(&labels[0]), [1.0]);
    assert_eq!(idx(&labels[1]), [2.0]);
    let boxes = ds.read_range("box", 0..2).await.unwrap();
    match &boxes[0] {
        deeplake_core::Sample::Array(a) => {
            assert_eq!(a.shape, [1, 4]);
            assert_eq!(a.dtype, deeplake_core::Dtype::F32);
        }
        other => panic!("{other:?}"),
    }
    let vec = ds.read("vec", 1).await.unwrap();
    assert_eq!(idx(&vec), [2.0, 3.0]);
    let metas = ds.read_range("_airbyte_meta", 0..2).await.unwrap();
    let fields: Vec<String> = match &metas[1] {
        deeplake_core::Sample::Json(v) => v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_owned())
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fields,
        ["box", "photo"],
        "a 3-number box and a non-URL link are nulled"
    );
}
