//! Materialization against real parts: JPEG files on disk behind a link tensor, a
//! local dataset, the S3 test server, and deeplake 3.9.52 reading what we wrote.

use deeplake_core::materialize::{
    self, Destination, MaterializeOptions, OnLinkError, RowOrder, Selection,
};
use deeplake_core::runtime::Control;
use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Error, NdArray, OpenOptions, Sample, TensorOptions};
use serde_json::{Value, json};

/// A JPEG file of `h` x `w` RGB pixels whose values depend on `seed`.
pub fn jpeg(h: u32, w: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 13) % 256) as u8,
            ((y * 5 + seed * 29) % 256) as u8,
            ((x + y + seed) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// The bytes of file `i` of [`jpeg_files`].
pub fn file_bytes(i: u32) -> Vec<u8> {
    jpeg(8 + i % 5, 10 + i % 3, i)
}

/// Writes `n` JPEG files under `dir` and returns their paths.
pub fn jpeg_files(dir: &std::path::Path, n: u32) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{i}.jpg"));
            std::fs::write(&p, file_bytes(i)).unwrap();
            p.to_str().unwrap().to_owned()
        })
        .collect()
}

fn arr_f32(v: &[f32]) -> Sample {
    Sample::Array(NdArray::from_slice(vec![v.len()], v).unwrap())
}

/// A source of `n` rows: class labels, ragged floats, boxes, text, json, a stored JPEG
/// image and a link[image] over `files`; committed.
pub async fn build_source(url: &str, files: &[String], opts: OpenOptions) -> Dataset {
    let mut ds = Dataset::create(url, opts).await.unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(["cat", "dog", "bird"]),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "x",
        TensorOptions::new("generic").dtype(deeplake_core::Dtype::F32),
    )
    .await
    .unwrap();
    let mut boxes = TensorOptions::new("bbox");
    boxes
        .info
        .insert("coords".into(), json!({"type": "pixel", "mode": "LTRB"}));
    ds.create_tensor("boxes", boxes).await.unwrap();
    ds.create_tensor("caption", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.create_tensor("meta", TensorOptions::new("json"))
        .await
        .unwrap();
    ds.create_tensor(
        "photo",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    let n = files.len();
    let col = |f: &dyn Fn(usize) -> Sample| (0..n).map(f).collect::<Vec<_>>();
    ds.extend_columns(vec![
        (
            "labels".into(),
            col(&|i| Sample::Array(NdArray::from_slice(vec![1], &[(i % 3) as u32]).unwrap())),
        ),
        (
            "x".into(),
            col(&|i| {
                arr_f32(
                    &(0..=(i % 4))
                        .map(|k| (i * 10 + k) as f32)
                        .collect::<Vec<_>>(),
                )
            }),
        ),
        (
            "boxes".into(),
            col(&|i| {
                Sample::Array(
                    NdArray::from_slice(vec![1, 4], &[i as f32, 1.0, 2.0 + i as f32, 3.0]).unwrap(),
                )
            }),
        ),
        ("caption".into(), col(&|i| Sample::Text(format!("row {i}")))),
        (
            "meta".into(),
            col(&|i| Sample::Json(json!({"i": i, "even": i % 2 == 0}))),
        ),
        (
            "photo".into(),
            col(&|i| Sample::Encoded {
                bytes: jpeg(6, 7, 100 + i as u32).into(),
                compression: deeplake_core::format::compression::Compression::Jpeg,
                shape: None,
            }),
        ),
        (
            "img".into(),
            col(&|i| Sample::Link {
                path: files[i].clone(),
                creds_key: None,
            }),
        ),
    ])
    .await
    .unwrap();
    ds.set_info("description", json!("materialize source"))
        .await
        .unwrap();
    ds.commit("rows").await.unwrap();
    ds
}

/// The decoded value of every tensor at `rows` of `ds` (links as the linked file's
/// pixels and bytes).
async fn values(ds: &Dataset, rows: &[u64], tensors: &[&str]) -> Vec<Vec<Sample>> {
    let mut out = Vec::new();
    for t in tensors {
        let mut col = Vec::new();
        for &r in rows {
            let s = ds.read(t, r).await.unwrap();
            col.push(match s {
                Sample::Link { path, .. } => {
                    let bytes = std::fs::read(&path).unwrap();
                    let jpeg = deeplake_core::format::compression::Compression::Jpeg;
                    let shape =
                        deeplake_core::format::compression::image_shape(&bytes, &jpeg).unwrap();
                    deeplake_core::format::compression::decode_sample(
                        &bytes,
                        &jpeg,
                        deeplake_core::Dtype::U8,
                        &shape,
                    )
                    .map(Sample::Array)
                    .unwrap()
                }
                other => other,
            });
        }
        out.push(col);
    }
    out
}

const TENSORS: [&str; 7] = ["labels", "x", "boxes", "caption", "meta", "photo", "img"];

fn opts_to(url: &str, selection: Selection) -> MaterializeOptions {
    let mut o = MaterializeOptions::new(
        String::new(),
        selection,
        Destination::Dataset {
            url: url.to_owned(),
            opts: OpenOptions::default(),
        },
    );
    o.max_batch_rows = 3;
    o
}

fn dl3_dump_script() -> &'static str {
    r#"
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
if len(sys.argv) > 2:
    ds = ds.load_view(sys.argv[2])
out = {"len": len(ds), "tensors": sorted(ds.tensors)}
for name in ["labels", "x", "boxes", "caption", "meta", "photo", "img"]:
    if name not in ds.tensors:
        continue
    t = ds[name]
    out[name + "_htype"] = t.meta.htype
    out[name + "_is_link"] = bool(t.meta.is_link)
    out[name + "_info"] = {k: v for k, v in t.info.items()}
    vals = []
    for i in range(len(ds)):
        if name == "caption":
            vals.append(t[i].data()["value"])
        elif name == "meta":
            vals.append(t[i].data()["value"])
        elif name in ("photo", "img"):
            vals.append({"shape": list(t[i].shape), "stored": t[i].tobytes().hex()})
        else:
            vals.append(t[i].numpy().tolist())
    out[name] = vals
out["vds_index"] = ds.VDS_INDEX.numpy().reshape(-1).tolist() if "VDS_INDEX" in ds._tensors(include_hidden=True) else None
out["info"] = {k: v for k, v in ds.info.items() if k != "materialization"}
print(json.dumps(out))
"#
}

fn sample_json(s: &Sample) -> Value {
    match s {
        Sample::Array(a) => {
            let v = a.to_f64_vec();
            fn nest(shape: &[usize], v: &[f64]) -> Value {
                match shape {
                    [] => json!(v[0]),
                    [n] => Value::Array(v[..*n].iter().map(|x| json!(x)).collect()),
                    [n, rest @ ..] => {
                        let step: usize = rest.iter().product();
                        Value::Array((0..*n).map(|i| nest(rest, &v[i * step..])).collect())
                    }
                }
            }
            nest(&a.shape, &v)
        }
        Sample::Text(t) => json!(t),
        Sample::Json(j) => j.clone(),
        other => panic!("{other:?}"),
    }
}

/// Our rows as the 3.x dump script prints them: JPEG tensors as shape and stored bytes
/// (decoders differ by a unit in some pixels), the rest decoded.
async fn ours_json(ds: &Dataset, n: u64) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for t in TENSORS {
        let mut col = Vec::new();
        for r in 0..n {
            col.push(if t == "photo" || t == "img" {
                let (shape, bytes) = ds.read_stored(t, r).await.unwrap();
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                json!({"shape": shape, "stored": hex})
            } else {
                sample_json(&ds.read(t, r).await.unwrap())
            });
        }
        out.push(col);
    }
    out
}

/// JSON numbers compared as numbers (3.x prints floats, we print f64s).
fn same_numbers(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_numbers(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_numbers(v, w)))
        }
        _ => a == b,
    }
}

/// A materialized dataset has the source view's values (the link tensor's are the
/// files' pixels and bytes), keeps htypes, info and class names, records its lineage,
/// and deeplake 3.9.52 reads the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_dataset_equals_the_view_and_opens_in_deeplake3() {
    testkit::oracle::dl3_python();
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 12);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let src = build_source(&src_url, &files, OpenOptions::default()).await;
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let rows = vec![9u64, 2, 5, 11, 0, 7, 3];
    let mut o = opts_to(&out, Selection::Rows(rows.clone()));
    o.source = src_url.clone();
    let ctl = Control::default();
    let report = materialize::materialize(&o, &ctl).await.unwrap();
    assert_eq!(report.rows_written, 7);
    assert_eq!(report.rows_skipped, 0);
    assert_eq!(report.resumed_from, 0);
    assert!(report.bytes > 0);
    assert_eq!(ctl.progress(), (7, 7));

    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(m.len(), 7);
    let want = values(&src, &rows, &TENSORS).await;
    let got = values(&m, &(0..7).collect::<Vec<_>>(), &TENSORS).await;
    assert_eq!(got, want);
    // The linked files' bytes are stored verbatim.
    for (k, &r) in rows.iter().enumerate() {
        let (_, stored) = m.read_stored("img", k as u64).await.unwrap();
        assert_eq!(&stored[..], &std::fs::read(&files[r as usize]).unwrap()[..]);
    }
    let img = m.tensor_meta("img").unwrap();
    assert!(!img.is_link);
    assert_eq!(img.htype, "image");
    assert_eq!(img.sample_compression.as_deref(), Some("jpeg"));
    for t in ["labels", "x", "boxes", "caption", "meta", "photo"] {
        let (a, b) = (src.tensor_meta(t).unwrap(), m.tensor_meta(t).unwrap());
        assert_eq!(
            (
                &a.htype,
                &a.dtype,
                &a.sample_compression,
                &a.chunk_compression
            ),
            (
                &b.htype,
                &b.dtype,
                &b.sample_compression,
                &b.chunk_compression
            ),
            "{t}"
        );
        assert_eq!(
            src.tensor_info(t).unwrap(),
            m.tensor_info(t).unwrap(),
            "{t}"
        );
    }
    assert_eq!(
        m.summary("labels").unwrap().class_names,
        ["cat", "dog", "bird"]
    );
    assert_eq!(m.info()["description"], json!("materialize source"));
    let lin = &m.info()[materialize::LINEAGE_KEY];
    assert_eq!(lin["state"], json!("done"));
    assert_eq!(lin["source"], json!(src.url()));
    assert_eq!(lin["commit"], json!(src.commit_id()));
    assert_eq!(lin["rows"], json!(7));
    assert_eq!(lin["skipped_rows"], json!(0));
    assert_eq!(lin["order"], json!("view"));
    assert!(lin["created_at"].as_f64().unwrap() > 0.0);
    assert_eq!(
        super::int_column(&m, materialize::VDS_INDEX).await,
        rows.iter().map(|&r| r as i64).collect::<Vec<_>>()
    );
    // Sample ids are the source's.
    for (k, &r) in rows.iter().enumerate() {
        assert_eq!(
            m.read("_x_id", k as u64).await.unwrap(),
            src.read("_x_id", r).await.unwrap()
        );
    }

    // A finished target is refused unless overwrite.
    let again = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "{again}");
    o.overwrite = true;
    o.order = RowOrder::Source;
    let r2 = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(r2.rows_written, 7);
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let mut sorted = rows.clone();
    sorted.sort();
    assert_eq!(
        super::int_column(&m, materialize::VDS_INDEX).await,
        sorted.iter().map(|&r| r as i64).collect::<Vec<_>>()
    );
    assert_eq!(m.info()[materialize::LINEAGE_KEY]["order"], json!("source"));
    let got = values(&m, &(0..7).collect::<Vec<_>>(), &TENSORS).await;
    assert_eq!(got, values(&src, &sorted, &TENSORS).await);

    // deeplake 3.9.52 reads the same values.
    let theirs = testkit::oracle::dl3_json(dl3_dump_script(), [&out]);
    assert_eq!(theirs["len"], json!(7));
    assert_eq!(theirs["img_htype"], json!("image"));
    assert_eq!(theirs["img_is_link"], json!(false));
    assert_eq!(
        theirs["labels_info"]["class_names"],
        json!(["cat", "dog", "bird"])
    );
    assert_eq!(
        theirs["boxes_info"]["coords"],
        json!({"type": "pixel", "mode": "LTRB"})
    );
    assert_eq!(theirs["info"]["description"], json!("materialize source"));
    let ours = ours_json(&m, 7).await;
    for (t, col) in TENSORS.iter().zip(ours) {
        assert!(
            same_numbers(&theirs[*t], &Value::Array(col.clone())),
            "{t}: theirs {} ours {}",
            theirs[*t],
            Value::Array(col)
        );
    }
}

/// A saved view optimized in place: `.queries/<id>_OPTIMIZED` in 3.x's layout, the
/// entry updated, the virtual folder gone; deeplake 3.9.52's `load_view` reads the
/// same values, and our `load_view` still gives the source rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_optimized_view_loads_in_deeplake3() {
    testkit::oracle::dl3_python();
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 10);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let src = build_source(&src_url, &files, OpenOptions::default()).await;
    let rows = vec![8u64, 1, 6, 3];
    src.save_view(
        "picked",
        &rows,
        Some("four rows"),
        None,
        &OpenOptions::default(),
    )
    .await
    .unwrap();
    let mut o = MaterializeOptions::new(
        src_url.clone(),
        Selection::View("picked".into()),
        Destination::InPlace,
    );
    o.max_batch_rows = 2;
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.rows_written, 4);
    assert!(
        rep.target.ends_with(".queries/picked_OPTIMIZED"),
        "{}",
        rep.target
    );
    assert!(!dir.path().join("src/.queries/picked").exists());
    assert!(
        dir.path()
            .join("src/.queries/picked_OPTIMIZED/dataset_meta.json")
            .exists()
    );
    let entry = src.list_views().await.unwrap().remove(0);
    assert_eq!(entry.info["virtual-datasource"], json!(false));
    assert_eq!(entry.info["path"], json!("picked_OPTIMIZED"));
    let opt = Dataset::open(&rep.target, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(opt.info()["path"], json!("picked_OPTIMIZED"));
    assert_eq!(opt.info()["virtual-datasource"], json!(false));
    assert_eq!(opt.info()["id"], json!("picked"));
    assert_eq!(opt.info()["source-dataset-version"], json!(src.commit_id()));
    assert!(opt.hidden_tensor_names().contains(&"VDS_INDEX".to_owned()));
    let loaded = src
        .load_view("picked", &OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(loaded.indices, rows);
    let got = values(&opt, &(0..4).collect::<Vec<_>>(), &TENSORS).await;
    assert_eq!(got, values(&src, &rows, &TENSORS).await);

    let theirs = testkit::oracle::dl3_json(dl3_dump_script(), [src_url.as_str(), "picked"]);
    assert_eq!(theirs["len"], json!(4));
    assert_eq!(theirs["vds_index"], json!(rows));
    assert_eq!(theirs["img_is_link"], json!(false));
    for (t, col) in TENSORS.iter().zip(ours_json(&opt, 4).await) {
        assert!(
            same_numbers(&theirs[*t], &Value::Array(col.clone())),
            "{t}: theirs {} ours {}",
            theirs[*t],
            Value::Array(col)
        );
    }
    // Once optimized, doing it again is refused; with overwrite it is redone.
    let again = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    assert!(matches!(again, Error::Conflict { .. }), "{again}");
    o.overwrite = true;
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.rows_written, 4);
    let theirs = testkit::oracle::dl3_json(dl3_dump_script(), [src_url.as_str(), "picked"]);
    assert_eq!(theirs["vds_index"], json!(rows));
}

/// Broken links: `stop` fails naming the row, tensor and target and leaves the target
/// resumable; `skip` leaves the rows out and lists them; a re-run after a skipped run
/// is refused as finished, and a re-run with other arguments onto an unfinished target
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_links_skip_or_stop() {
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 9);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let src = build_source(&src_url, &files, OpenOptions::default()).await;
    std::fs::remove_file(&files[4]).unwrap();
    std::fs::remove_file(&files[7]).unwrap();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut o = opts_to(&out, Selection::All);
    o.source = src_url.clone();
    o.on_link_error = OnLinkError::Stop;
    let err = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Link { .. }), "{err:?}");
    assert!(
        msg.contains("row 4") && msg.contains("\"img\"") && msg.contains("4.jpg"),
        "{msg}"
    );
    // The batches before the failure ([0], [1, 2, 3]; the batch of row 4 failed) are
    // durable and the target says where it stopped.
    let partial = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let lin = &partial.info()[materialize::LINEAGE_KEY];
    assert_eq!(lin["state"], json!("running"));
    assert_eq!(lin["rows_done"], json!(4));
    assert_eq!(partial.tensor_len("img").unwrap(), 4);
    drop(partial);

    // Other arguments onto the unfinished target: refused.
    o.on_link_error = OnLinkError::Skip;
    let err = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other arguments"), "{err}");
    // The file comes back: the same arguments resume after the durable batches.
    o.on_link_error = OnLinkError::Stop;
    std::fs::write(&files[4], file_bytes(4)).unwrap();
    std::fs::write(&files[7], file_bytes(7)).unwrap();
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.resumed_from, 4);
    assert_eq!(rep.rows_written, 9);
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let all: Vec<u64> = (0..9).collect();
    assert_eq!(
        values(&m, &all, &TENSORS).await,
        values(&src, &all, &TENSORS).await
    );

    // Skip: rows 4 and 7 are left out and listed.
    std::fs::remove_file(&files[4]).unwrap();
    std::fs::remove_file(&files[7]).unwrap();
    let out2 = dir.path().join("out2").to_str().unwrap().to_owned();
    let mut o2 = opts_to(&out2, Selection::All);
    o2.source = src_url.clone();
    o2.on_link_error = OnLinkError::Skip;
    let rep = materialize::materialize(&o2, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.rows_written, 7);
    assert_eq!(rep.rows_skipped, 2);
    assert_eq!(
        rep.skipped.iter().map(|s| s.row).collect::<Vec<_>>(),
        [4, 7]
    );
    assert!(rep.skipped.iter().all(|s| s.tensor == "img"
        && s.target.ends_with(".jpg")
        && s.error.contains("no such file")));
    let m = Dataset::open(&out2, OpenOptions::default()).await.unwrap();
    let kept = [0u64, 1, 2, 3, 5, 6, 8];
    assert_eq!(
        values(&m, &(0..7).collect::<Vec<_>>(), &TENSORS).await,
        values(&src, &kept, &TENSORS).await
    );
    assert_eq!(
        super::int_column(&m, materialize::VDS_INDEX).await,
        kept.iter().map(|&r| r as i64).collect::<Vec<_>>()
    );
    let lin = &m.info()[materialize::LINEAGE_KEY];
    assert_eq!(lin["skipped_rows"], json!(2));
    assert_eq!(lin["skipped"][0]["row"], json!(4));
    assert_eq!(lin["skipped"][1]["tensor"], json!("img"));
    // Finished: the same run again is refused, the report of the first stands.
    let err = materialize::materialize(&o2, &Control::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
}

/// Sources: a TQL query (in its result order), a saved view, a ref (a tag of an older
/// commit), and a subset of tensors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_view_and_ref_sources() {
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 10);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let mut src = build_source(&src_url, &files, OpenOptions::default()).await;
    let first = src.commit_id().unwrap();
    src.tag("v1", None).await.unwrap();
    src.save_view("odd", &[9, 7, 5], None, None, &OpenOptions::default())
        .await
        .unwrap();
    // A later commit changes the data: refs and views still read their version.
    src.extend_columns(vec![
        (
            "labels".into(),
            vec![Sample::Array(
                NdArray::from_slice(vec![1], &[2u32]).unwrap(),
            )],
        ),
        ("x".into(), vec![arr_f32(&[1.0])]),
        (
            "boxes".into(),
            vec![Sample::Array(
                NdArray::from_slice(vec![1, 4], &[0f32; 4]).unwrap(),
            )],
        ),
        ("caption".into(), vec![Sample::Text("late".into())]),
        ("meta".into(), vec![Sample::Json(json!({}))]),
        (
            "photo".into(),
            vec![Sample::Encoded {
                bytes: jpeg(6, 7, 1).into(),
                compression: deeplake_core::format::compression::Compression::Jpeg,
                shape: None,
            }],
        ),
        (
            "img".into(),
            vec![Sample::Link {
                path: files[0].clone(),
                creds_key: None,
            }],
        ),
    ])
    .await
    .unwrap();
    src.update("caption", 1, Sample::Text("changed".into()))
        .await
        .unwrap();
    src.commit("later").await.unwrap();
    let at_v1 = Dataset::open_url(&format!("{src_url}@v1"), OpenOptions::default())
        .await
        .unwrap();

    // TQL: rows in the query's order.
    let out = dir.path().join("q").to_str().unwrap().to_owned();
    let mut o = opts_to(
        &out,
        Selection::Query("SELECT * WHERE labels == 'dog' ORDER BY caption DESC".into()),
    );
    o.source = format!("{src_url}@v1");
    o.tensors = Some(vec!["caption".into(), "img".into()]);
    materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(m.tensor_names(), ["caption", "img"]);
    let want: Vec<u64> = vec![7, 4, 1];
    assert_eq!(
        super::int_column(&m, materialize::VDS_INDEX).await,
        want.iter().map(|&r| r as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        values(&m, &[0, 1, 2], &["caption", "img"]).await,
        values(&at_v1, &want, &["caption", "img"]).await
    );
    let lin = &m.info()[materialize::LINEAGE_KEY];
    assert_eq!(lin["commit"], json!(first));
    assert!(lin["query"].as_str().unwrap().contains("ORDER BY caption"));

    // A saved view reads the commit it names, not the head.
    let out = dir.path().join("v").to_str().unwrap().to_owned();
    let mut o = opts_to(&out, Selection::View("odd".into()));
    o.source = src_url.clone();
    materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(
        values(&m, &[0, 1, 2], &TENSORS).await,
        values(&at_v1, &[9, 7, 5], &TENSORS).await
    );
    assert_eq!(m.info()[materialize::LINEAGE_KEY]["view"], json!("odd"));

    // A ref with a row range; the head's changed caption is not read.
    let out = dir.path().join("r").to_str().unwrap().to_owned();
    let mut o = opts_to(&out, Selection::Range { start: 0, end: 3 });
    o.source = format!("{src_url}@v1");
    materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(
        m.read("caption", 1).await.unwrap(),
        Sample::Text("row 1".into())
    );
    assert_eq!(
        values(&m, &[0, 1, 2], &TENSORS).await,
        values(&at_v1, &[0, 1, 2], &TENSORS).await
    );

    // Bad input: rows past the end, an unknown tensor, in place without a view.
    let mut o = opts_to(
        dir.path().join("bad").to_str().unwrap(),
        Selection::Range { start: 5, end: 99 },
    );
    o.source = src_url.clone();
    assert!(matches!(
        materialize::materialize(&o, &Control::default())
            .await
            .unwrap_err(),
        Error::InvalidInput { .. }
    ));
    o.selection = Selection::All;
    o.tensors = Some(vec!["nope".into()]);
    assert!(matches!(
        materialize::materialize(&o, &Control::default())
            .await
            .unwrap_err(),
        Error::NotFound { .. }
    ));
    o.tensors = None;
    o.destination = Destination::InPlace;
    assert!(matches!(
        materialize::materialize(&o, &Control::default())
            .await
            .unwrap_err(),
        Error::InvalidInput { .. }
    ));
}

/// In place onto the S3 test server, with a cancel halfway that a re-run resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_on_s3_with_cancel_and_resume() {
    let (url, storage): (String, StoreOptions) =
        testkit::storage::s3_url_and_options("materialize");
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 10);
    let opts = OpenOptions {
        storage: storage.clone(),
        ..Default::default()
    };
    let src = build_source(&url, &files, opts.clone()).await;
    let rows: Vec<u64> = vec![0, 2, 4, 6, 8, 9, 1];
    src.save_view("evens", &rows, None, None, &opts)
        .await
        .unwrap();
    let mut o = MaterializeOptions::new(
        url.clone(),
        Selection::View("evens".into()),
        Destination::InPlace,
    );
    o.source_opts = opts.clone();
    o.max_batch_rows = 2;
    let ctl = Control::default();
    ctl.cancel();
    let rep = materialize::materialize(&o, &ctl).await.unwrap();
    assert!(rep.cancelled);
    assert_eq!(rep.rows_written, 0);
    assert!(src.list_views().await.unwrap()[0].is_virtual());
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert!(!rep.cancelled);
    assert_eq!(rep.rows_written, 7);
    let v = src.list_views().await.unwrap().remove(0);
    assert!(!v.is_virtual());
    let opt = Dataset::open(&src.view_url(v.folder()), opts.clone())
        .await
        .unwrap();
    assert_eq!(
        values(&opt, &(0..7).collect::<Vec<_>>(), &TENSORS).await,
        values(&src, &rows, &TENSORS).await
    );
    assert!(
        !src.store()
            .exists(".queries/evens/dataset_meta.json")
            .await
            .unwrap()
    );
    assert_eq!(src.load_view("evens", &opts).await.unwrap().indices, rows);
}

/// A target a killed run left half-created (files that do not open, no data) is
/// started afresh; a dataset that is not a materialization is replaced only with
/// overwrite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_created_targets_restart_and_other_datasets_need_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 4);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let src = build_source(&src_url, &files, OpenOptions::default()).await;
    let half = dir.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("dataset_meta.json"), b"{\"tensors\": [").unwrap();
    let mut o = opts_to(half.to_str().unwrap(), Selection::All);
    o.source = src_url.clone();
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.rows_written, 4);

    // The source itself is no target; another dataset needs overwrite.
    let mut o = opts_to(&src_url, Selection::All);
    o.source = src_url.clone();
    let err = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    let other = dir.path().join("other").to_str().unwrap().to_owned();
    build_source(&other, &files, OpenOptions::default()).await;
    let mut o = opts_to(&other, Selection::Range { start: 1, end: 3 });
    o.source = src_url.clone();
    let err = materialize::materialize(&o, &Control::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a materialization"), "{err}");
    assert_eq!(
        Dataset::open(&other, OpenOptions::default())
            .await
            .unwrap()
            .len(),
        4,
        "left as it was"
    );
    o.overwrite = true;
    materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    let m = Dataset::open(&other, OpenOptions::default()).await.unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(
        values(&m, &[0, 1], &TENSORS).await,
        values(&src, &[1, 2], &TENSORS).await
    );
}

/// Flush records of the dataset at `dir`, wherever its head keeps them.
fn flush_records(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() == "_rs_flush" {
                n += std::fs::read_dir(&p)
                    .unwrap()
                    .filter(|f| {
                        let name = f.as_ref().unwrap().file_name();
                        name.to_str()
                            .unwrap()
                            .chars()
                            .next()
                            .unwrap()
                            .is_ascii_digit()
                    })
                    .count();
            } else {
                n += flush_records(&p);
            }
        }
    }
    n
}

/// The memory budget sizes the batches: a small one writes the same rows in many small
/// durable batches, a large one in few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_sizes_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 24);
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let src = build_source(&src_url, &files, OpenOptions::default()).await;
    let mut counts = Vec::new();
    for budget in [1u64 << 12, 64 << 20] {
        let out = dir.path().join(format!("out-{budget}"));
        let mut o = opts_to(out.to_str().unwrap(), Selection::All);
        o.source = src_url.clone();
        o.max_batch_rows = 4096;
        o.memory_budget = budget;
        let rep = materialize::materialize(&o, &Control::default())
            .await
            .unwrap();
        assert_eq!(rep.rows_written, 24);
        let m = Dataset::open(out.to_str().unwrap(), OpenOptions::default())
            .await
            .unwrap();
        let all: Vec<u64> = (0..24).collect();
        assert_eq!(
            values(&m, &all, &TENSORS).await,
            values(&src, &all, &TENSORS).await
        );
        counts.push(flush_records(&out));
    }
    // Rows are a few KB: after the first batch (one row, before any size is known) a
    // 4 KB budget reads one row at a time, 64 MB the other 23 at once. Both runs also
    // flush the new target and the final lineage.
    assert_eq!(counts[0], counts[1] + 22, "{counts:?}");
}

/// A linked file in another codec than the tensor's is re-encoded (a PNG behind a
/// jpeg link[image] tensor becomes a JPEG of the same pixels, within JPEG's loss); a
/// file of no image format is a failed link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_codecs_are_re_encoded_and_unknown_files_fail() {
    use deeplake_core::format::compression::{self, Compression};
    let dir = tempfile::tempdir().unwrap();
    let files = jpeg_files(&dir.path().join("files"), 1);
    let png_img = image::RgbImage::from_fn(20, 16, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 15) as u8, 128])
    });
    let png = dir.path().join("p.png");
    png_img.save(&png).unwrap();
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, b"not an image").unwrap();
    let src_url = dir.path().join("src").to_str().unwrap().to_owned();
    let mut ds = Dataset::create(&src_url, OpenOptions::default())
        .await
        .unwrap();
    // Without verify at append, as 3.x allows: a target that is not an image reaches
    // the materializer, which must refuse it by name.
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]")
            .sample_compression("jpeg")
            .verify(false),
    )
    .await
    .unwrap();
    let link = |p: &str| Sample::Link {
        path: p.to_owned(),
        creds_key: None,
    };
    ds.extend(
        "img",
        vec![
            link(&files[0]),
            link(png.to_str().unwrap()),
            link(txt.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    ds.commit("links").await.unwrap();

    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut o = opts_to(&out, Selection::All);
    o.source = src_url.clone();
    o.on_link_error = OnLinkError::Skip;
    let rep = materialize::materialize(&o, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep.rows_written, 2);
    assert_eq!(rep.skipped.len(), 1);
    assert_eq!(rep.skipped[0].row, 2);
    assert!(rep.skipped[0].error.contains("format"), "{:?}", rep.skipped);
    let m = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let (shape, stored) = m.read_stored("img", 1).await.unwrap();
    assert_eq!(shape, [16, 20, 3]);
    assert_eq!(Compression::sniff(&stored), Some(Compression::Jpeg));
    let Sample::Array(got) = m.read("img", 1).await.unwrap() else {
        panic!("not an array")
    };
    let want = compression::decode_sample(
        &std::fs::read(&png).unwrap(),
        &Compression::Png,
        deeplake_core::Dtype::U8,
        &[16, 20, 3],
    )
    .unwrap();
    assert_eq!(got.shape, want.shape);
    let diff: f64 = got
        .data
        .iter()
        .zip(want.data.iter())
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .sum::<f64>()
        / got.data.len() as f64;
    assert!(diff < 8.0, "mean difference {diff}");
    // The JPEG file is kept as it was.
    assert_eq!(
        &m.read_stored("img", 0).await.unwrap().1[..],
        &std::fs::read(&files[0]).unwrap()[..]
    );
}
