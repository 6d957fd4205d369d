//! Linked tensors end to end against real targets: the HTTP test server (faults
//! injected), local files and the S3 test server.

use std::time::{Duration, Instant};

use deeplake_core::link::{LinkCreds, LinkOptions, Linker};
use deeplake_core::store::{Store, StoreOptions};
use deeplake_core::{Dataset, Error, OpenOptions, Sample, TensorOptions};
use testkit::http::HttpServer;
use testkit::samples::png_image;

fn linker(concurrency: usize, timeout: Duration) -> Linker {
    Linker::new(LinkOptions {
        concurrency,
        timeout,
        retries: 3,
        backoff: Duration::from_millis(10),
        ..LinkOptions::default()
    })
    .unwrap()
}

fn link(path: impl Into<String>) -> Sample {
    Sample::Link {
        path: path.into(),
        creds_key: None,
    }
}

async fn local_ds(dir: &tempfile::TempDir, l: &Linker) -> Dataset {
    Dataset::create(
        dir.path().join("ds").to_str().unwrap(),
        OpenOptions {
            linker: Some(l.clone()),
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn http_fetch_retries_503_and_resets_but_not_404() {
    let srv = HttpServer::start();
    let (png, _) = png_image(4, 5, 1);
    srv.put("a.png", png.clone());
    srv.put("b.png", png.clone());
    let l = linker(4, Duration::from_secs(5));

    srv.fail_times("a.png", 503, 2);
    assert_eq!(
        &l.fetch(&srv.url("a.png"), None).await.unwrap()[..],
        &png[..]
    );
    assert_eq!(srv.requests("a.png"), 3);

    srv.reset_times("b.png", 1);
    assert_eq!(
        &l.fetch(&srv.url("b.png"), None).await.unwrap()[..],
        &png[..]
    );
    assert_eq!(srv.requests("b.png"), 2);

    let err = l
        .fetch(&srv.url("gone.png?sig=secret"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Link {
                status: Some(404),
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(srv.requests("gone.png"), 1);
    assert!(!err.to_string().contains("secret"), "{err}");

    // A 503 that outlasts the retries fails, marked retryable, after retries + 1 tries.
    srv.fail_times("a.png", 503, 100);
    let err = l
        .fetch(&(srv.url("a.png") + "?fresh"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Link {
                status: Some(503),
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(srv.requests("a.png"), 3 + 4);
}

#[tokio::test]
async fn a_slow_target_times_out() {
    let srv = HttpServer::start();
    srv.put("slow.bin", vec![7u8; 100]);
    srv.delay_path("slow.bin", Duration::from_secs(3));
    let l = Linker::new(LinkOptions {
        timeout: Duration::from_millis(200),
        retries: 1,
        backoff: Duration::from_millis(10),
        ..LinkOptions::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = l.fetch(&srv.url("slow.bin"), None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(srv.requests("slow.bin"), 2);
}

#[tokio::test]
async fn concurrency_is_bounded_and_the_cache_saves_requests() {
    let srv = HttpServer::start();
    srv.set_delay(Duration::from_millis(50));
    for i in 0..24 {
        srv.put(&format!("{i}.bin"), vec![i as u8; 1000]);
    }
    let l = linker(4, Duration::from_secs(5));
    let urls: Vec<String> = (0..24).map(|i| srv.url(&format!("{i}.bin"))).collect();
    let got = futures::future::try_join_all(urls.iter().map(|u| l.fetch(u, None)))
        .await
        .unwrap();
    assert_eq!(got[5][0], 5);
    assert_eq!(srv.max_in_flight(), 4);
    assert_eq!(srv.total_requests(), 24);
    // Second read: from the cache, no request.
    let again = l.fetch(&urls[3], None).await.unwrap();
    assert_eq!(again[..], vec![3u8; 1000][..]);
    assert_eq!(srv.total_requests(), 24);
}

#[tokio::test]
async fn verify_fills_shapes_info_and_resolved_reads_return_the_targets() {
    let srv = HttpServer::start();
    let (a, a_arr) = png_image(6, 8, 3);
    let (b, b_arr) = png_image(10, 4, 9);
    srv.put("a.png", a.clone());
    srv.put("b.png", b.clone());
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("c.png");
    std::fs::write(&local, &b).unwrap();
    let l = linker(8, Duration::from_secs(5));
    let mut ds = local_ds(&dir, &l).await;
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("png"),
    )
    .await
    .unwrap();
    ds.extend(
        "img",
        vec![
            link(srv.url("a.png")),
            link(srv.url("b.png")),
            link(local.to_str().unwrap()),
        ],
    )
    .await
    .unwrap();
    ds.flush().await.unwrap();
    let m = ds.tensor_meta("img").unwrap();
    assert_eq!(
        (m.min_shape.clone(), m.max_shape.clone()),
        (vec![6, 4, 3], vec![10, 8, 3])
    );
    assert_eq!(ds.shape("img", 0).await.unwrap(), vec![6, 8, 3]);
    assert_eq!(ds.shape("img", 2).await.unwrap(), vec![10, 4, 3]);
    let info = ds.read("_img_info", 1).await.unwrap();
    let Sample::Json(info) = info else {
        panic!("{info:?}")
    };
    assert_eq!(info["format"], "png");
    assert_eq!(info["shape"], serde_json::json!([10, 4, 3]));

    // Reopened: stored links read back; resolved reads give the targets.
    let ds = Dataset::open(
        dir.path().join("ds").to_str().unwrap(),
        OpenOptions {
            linker: Some(l.clone()),
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ds.read("img", 0).await.unwrap(), link(srv.url("a.png")));
    let raw = ds.read_resolved("img", 0..3, false).await.unwrap();
    match &raw[1] {
        Sample::Encoded {
            bytes,
            compression,
            shape,
        } => {
            assert_eq!(&bytes[..], &b[..]);
            assert_eq!(compression.name(), "png");
            assert_eq!(shape.as_deref(), Some(&[10usize, 4, 3][..]));
        }
        other => panic!("{other:?}"),
    }
    let decoded = ds.read_resolved("img", 0..3, true).await.unwrap();
    assert_eq!(
        decoded,
        vec![
            Sample::Array(a_arr),
            Sample::Array(b_arr.clone()),
            Sample::Array(b_arr)
        ]
    );
}

#[tokio::test]
async fn a_failing_verify_appends_nothing_and_names_the_row() {
    let srv = HttpServer::start();
    let (a, _) = png_image(3, 3, 1);
    srv.put("ok.png", a);
    let dir = tempfile::tempdir().unwrap();
    let l = linker(8, Duration::from_secs(5));
    let mut ds = local_ds(&dir, &l).await;
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("png"),
    )
    .await
    .unwrap();
    ds.append("img", link(srv.url("ok.png"))).await.unwrap();
    let err = ds
        .extend(
            "img",
            vec![
                link(srv.url("ok.png")),
                link(srv.url("missing.png?token=s3cr3t")),
                link(srv.url("ok.png")),
            ],
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert!(msg.contains("\"img\"") && msg.contains("row 2"), "{msg}");
    assert!(
        msg.contains("/missing.png") && !msg.contains("s3cr3t"),
        "{msg}"
    );
    assert_eq!(ds.tensor_len("img").unwrap(), 1);
    assert_eq!(ds.tensor_len("_img_shape").unwrap(), 1);

    // verify=false: nothing is fetched, no shape/info companions (as in 3.x).
    let before = srv.total_requests();
    ds.create_tensor(
        "raw",
        TensorOptions::new("link[image]")
            .sample_compression("png")
            .verify(false),
    )
    .await
    .unwrap();
    ds.extend(
        "raw",
        vec![link(srv.url("missing.png")), link(srv.url("ok.png"))],
    )
    .await
    .unwrap();
    ds.flush().await.unwrap();
    assert_eq!(srv.total_requests(), before);
    let hidden = ds.hidden_tensor_names();
    assert!(hidden.contains(&"_raw_id".to_owned()), "{hidden:?}");
    assert!(
        !hidden.iter().any(|t| t == "_raw_shape" || t == "_raw_info"),
        "{hidden:?}"
    );
    assert!(!ds.tensor_meta("raw").unwrap().verify);
    // A broken link still reads back; resolving it is a link error naming the row.
    let err = ds.read_resolved("raw", 0..2, false).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Link {
                status: Some(404),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("row 0"), "{err}");
}

#[tokio::test]
async fn creds_keys_round_trip_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = linker(4, Duration::from_secs(5));
    let mut ds = local_ds(&dir, &l).await;
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]")
            .sample_compression("png")
            .verify(false),
    )
    .await
    .unwrap();
    let err = ds
        .append(
            "img",
            Sample::Link {
                path: "s3://b/x.png".into(),
                creds_key: Some("prod".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"prod\" is not registered"),
        "{err}"
    );
    assert_eq!(ds.tensor_len("img").unwrap(), 0);
    ds.add_creds_key("staging").await.unwrap();
    ds.add_creds_key("prod").await.unwrap();
    assert!(ds.add_creds_key("prod").await.is_err());
    let rows = vec![
        Sample::Link {
            path: "s3://b/x.png".into(),
            creds_key: Some("prod".into()),
        },
        link("/tmp/y.png"),
        Sample::Link {
            path: "s3://b/z.png".into(),
            creds_key: Some("staging".into()),
        },
    ];
    ds.extend("img", rows.clone()).await.unwrap();
    ds.flush().await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("ds/linked_creds.json")).unwrap();
    assert!(
        text.starts_with(
            r#"{"creds_keys": ["staging", "prod"], "managed_creds_keys": [], "used_creds_keys": ["#
        ),
        "{text}"
    );
    let ds = Dataset::open(
        dir.path().join("ds").to_str().unwrap(),
        OpenOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(ds.creds_keys(), ["staging", "prod"]);
    let mut used = ds.used_creds_keys().to_vec();
    used.sort();
    assert_eq!(used, ["prod", "staging"]);
    assert_eq!(ds.read_range("img", 0..3).await.unwrap(), rows);
}

#[tokio::test]
async fn s3_links_with_a_named_creds_key_whose_secrets_stay_out_of_the_dataset() {
    let (url, opts) = testkit::storage::s3_url_and_options("links");
    let bucket_store = Store::create(&url, &StoreOptions::default()).unwrap();
    let (png, arr) = png_image(5, 7, 4);
    bucket_store
        .put("media/cat.png", png.clone())
        .await
        .unwrap();
    let _ = opts;
    let target = format!("{url}/media/cat.png");
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT").unwrap();
    let mut creds = LinkCreds::default();
    creds.insert(
        "good",
        [
            ("aws_access_key_id", key_id.as_str()),
            ("aws_secret_access_key", secret.as_str()),
            ("endpoint", endpoint.as_str()),
            ("allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    creds.insert(
        "bad",
        [
            ("aws_access_key_id", key_id.as_str()),
            ("aws_secret_access_key", "not-the-secret"),
            ("endpoint", endpoint.as_str()),
            ("allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let l = Linker::new(LinkOptions {
        creds,
        retries: 1,
        backoff: Duration::from_millis(10),
        ..LinkOptions::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ds = local_ds(&dir, &l).await;
    ds.add_creds_key("good").await.unwrap();
    ds.add_creds_key("bad").await.unwrap();
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]").sample_compression("png"),
    )
    .await
    .unwrap();
    let good = Sample::Link {
        path: target.clone(),
        creds_key: Some("good".into()),
    };
    let err = ds
        .append(
            "img",
            Sample::Link {
                path: target.clone(),
                creds_key: Some("bad".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row 0"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    ds.append("img", good.clone()).await.unwrap();
    ds.flush().await.unwrap();
    assert_eq!(ds.shape("img", 0).await.unwrap(), vec![5, 7, 3]);
    assert_eq!(ds.read("img", 0).await.unwrap(), good);
    assert_eq!(
        ds.read_resolved("img", 0..1, true).await.unwrap(),
        vec![Sample::Array(arr)]
    );
    // No file of the dataset holds a secret.
    let mut stack = vec![dir.path().to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the secret",
                    e.path().display()
                );
            }
        }
    }
    assert!(files > 5, "{files}");
}

#[tokio::test]
async fn we_read_the_creds_keys_deeplake3_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (png, arr) = png_image(5, 3, 2);
    let file = dir.path().join("a.png");
    std::fs::write(&file, &png).unwrap();
    let ds_path = dir.path().join("dl3");
    let script = r#"
ds = deeplake.empty(sys.argv[1], overwrite=True, verbose=False)
ds.create_tensor("img", htype="link[image]", sample_compression="png", verbose=False)
for k in ("first", "second"):
    ds.add_creds_key(k)
    ds.populate_creds(k, {})
ds.img.append(deeplake.link(sys.argv[2], creds_key="second"))
ds.img.append(deeplake.link(sys.argv[2]))
ds.img.append(deeplake.link(sys.argv[2], creds_key="first"))
ds.flush()
print(json.dumps({"shape": list(ds.img[0].numpy().shape)}))
"#;
    let v = testkit::oracle::dl3_json(script, [ds_path.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(v["shape"], serde_json::json!([5, 3, 3]));
    let ds = Dataset::open(ds_path.to_str().unwrap(), OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(ds.creds_keys(), ["first", "second"]);
    let key = |k: &str| Some(k.to_owned());
    let path = file.to_str().unwrap().to_owned();
    assert_eq!(
        ds.read_range("img", 0..3).await.unwrap(),
        vec![
            Sample::Link {
                path: path.clone(),
                creds_key: key("second")
            },
            Sample::Link {
                path: path.clone(),
                creds_key: None
            },
            Sample::Link {
                path,
                creds_key: key("first")
            },
        ]
    );
    assert_eq!(ds.shape("img", 2).await.unwrap(), vec![5, 3, 3]);
    assert_eq!(
        ds.read_resolved("img", 0..1, true).await.unwrap(),
        vec![Sample::Array(arr)]
    );
}

#[tokio::test]
async fn sequences_of_links_verify_and_resolve_per_item() {
    let srv = HttpServer::start();
    let (a, a_arr) = png_image(2, 3, 5);
    let (b, b_arr) = png_image(4, 1, 6);
    srv.put("a.png", a);
    srv.put("b.png", b);
    let dir = tempfile::tempdir().unwrap();
    let l = linker(4, Duration::from_secs(5));
    let mut ds = local_ds(&dir, &l).await;
    ds.create_tensor(
        "clips",
        TensorOptions::new("sequence[link[image]]").sample_compression("png"),
    )
    .await
    .unwrap();
    ds.extend(
        "clips",
        vec![
            Sample::Sequence(vec![link(srv.url("a.png")), link(srv.url("b.png"))]),
            Sample::Sequence(vec![link(srv.url("b.png"))]),
        ],
    )
    .await
    .unwrap();
    let err = ds
        .append(
            "clips",
            Sample::Sequence(vec![link(srv.url("a.png")), link(srv.url("nope.png"))]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row 2"), "{err}");
    assert_eq!(ds.tensor_len("clips").unwrap(), 2);
    ds.flush().await.unwrap();
    let m = ds.tensor_meta("clips").unwrap();
    assert_eq!(
        (m.min_shape.clone(), m.max_shape.clone()),
        (vec![2, 1, 3], vec![4, 3, 3])
    );
    assert_eq!(
        ds.read_resolved("clips", 0..2, true).await.unwrap(),
        vec![
            Sample::Sequence(vec![Sample::Array(a_arr), Sample::Array(b_arr.clone())]),
            Sample::Sequence(vec![Sample::Array(b_arr)]),
        ]
    );
}

#[tokio::test]
async fn deeplake3_reads_our_unverified_links() {
    let dir = tempfile::tempdir().unwrap();
    let (png, _) = png_image(3, 4, 8);
    let file = dir.path().join("x.png");
    std::fs::write(&file, &png).unwrap();
    let l = linker(2, Duration::from_secs(5));
    let mut ds = local_ds(&dir, &l).await;
    ds.create_tensor(
        "img",
        TensorOptions::new("link[image]")
            .sample_compression("png")
            .verify(false),
    )
    .await
    .unwrap();
    ds.extend(
        "img",
        vec![link(file.to_str().unwrap()), link(file.to_str().unwrap())],
    )
    .await
    .unwrap();
    ds.close().await.unwrap();
    let script = r#"
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
t = ds["img"]
print(json.dumps({"len": len(t), "verify": t.meta.verify, "path": str(np.asarray(t[1].path()).reshape(-1)[0]),
                  "shape": list(t[0].numpy().shape), "hidden": sorted(ds._tensors(include_hidden=True))}))
"#;
    let v = testkit::oracle::dl3_json(script, [dir.path().join("ds").to_str().unwrap()]);
    assert_eq!(v["len"], 2, "{v}");
    assert_eq!(v["verify"], false, "{v}");
    assert_eq!(v["path"], file.to_str().unwrap(), "{v}");
    assert_eq!(v["shape"], serde_json::json!([3, 4, 3]), "{v}");
    assert_eq!(v["hidden"], serde_json::json!(["_img_id", "img"]), "{v}");
}
