//! The storage conformance suite, run against every backend (memory, local disk, the
//! S3-compatible server). Each check uses its own key prefix, so suites may share a
//! bucket.

use bytes::Bytes;
use deeplake_core::store::{Store, StoreOptions};
use deeplake_core::{Dataset, Error, NdArray, OpenOptions, Sample, TensorOptions};

/// Connection settings of the test S3 server, from the environment that
/// `scripts/s3.sh env` prints. Panics with instructions when it is not set: a test
/// that needs S3 must not pass silently without it.
pub fn s3_url_and_options(prefix: &str) -> (String, StoreOptions) {
    let bucket = std::env::var("DEEPLAKE_TEST_S3_BUCKET").unwrap_or_default();
    assert!(
        !bucket.is_empty() && std::env::var("AWS_ENDPOINT").is_ok(),
        "this test needs the S3 test server: run `scripts/test.sh`, or \
         `scripts/s3.sh start && eval \"$(scripts/s3.sh env)\"` before `cargo test`"
    );
    let unique = format!("{prefix}-{:016x}", rand::random::<u64>());
    (format!("s3://{bucket}/{unique}"), StoreOptions::default())
}

/// Basic object semantics.
pub async fn check_objects(store: &Store) {
    store
        .put("a/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    store
        .put("a/two", Bytes::from_static(b"world!"))
        .await
        .unwrap();
    store
        .put("b/three", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(store.get("a/one").await.unwrap().as_ref(), b"hello");
    assert_eq!(
        store.get_range("a/two", 1..4).await.unwrap().as_ref(),
        b"orl"
    );
    assert_eq!(store.get_prefix("a/two", 3).await.unwrap().as_ref(), b"wor");
    assert_eq!(
        store.get_prefix("a/two", 1000).await.unwrap().as_ref(),
        b"world!"
    );
    assert_eq!(store.size("a/two").await.unwrap(), Some(6));
    assert_eq!(store.size("missing").await.unwrap(), None);
    assert!(store.get_opt("missing").await.unwrap().is_none());
    assert!(matches!(
        store.get("missing").await,
        Err(Error::NotFound { .. })
    ));
    let listed: Vec<String> = store
        .list("a")
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(listed, vec!["a/one".to_owned(), "a/two".to_owned()]);
    // Overwrite is atomic and visible.
    store
        .put("a/one", Bytes::from_static(b"HELLO"))
        .await
        .unwrap();
    assert_eq!(store.get("a/one").await.unwrap().as_ref(), b"HELLO");
    store.delete("a/one").await.unwrap();
    store.delete("a/one").await.unwrap();
    assert!(!store.exists("a/one").await.unwrap());
    store.delete_prefix("").await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

/// Create-if-absent: one winner among racing writers, the loser gets a retryable
/// conflict, and the winner's bytes stay.
pub async fn check_create_if_absent(store: &Store, writers: usize) {
    let mut handles = Vec::new();
    for w in 0..writers {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            (
                w,
                s.put_if_absent("race/record", Bytes::from(format!("writer {w}")))
                    .await,
            )
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        let (w, r) = h.await.unwrap();
        match r {
            Ok(()) => winners.push(w),
            Err(Error::Conflict {
                retryable: true, ..
            }) => {}
            Err(e) => panic!("writer {w}: unexpected error {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one writer must win, got {winners:?}"
    );
    let got = store.get("race/record").await.unwrap();
    assert_eq!(got.as_ref(), format!("writer {}", winners[0]).as_bytes());
    store.delete_prefix("race").await.unwrap();
}

/// A small dataset written, reopened and read back on this backend.
pub async fn check_dataset_round_trip(url: &str, storage: StoreOptions) {
    let opts = OpenOptions {
        storage: storage.clone(),
        ..Default::default()
    };
    let mut ds = Dataset::create(url, opts.clone()).await.unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(["cat", "dog"]),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "x",
        TensorOptions::new("generic")
            .dtype(deeplake_core::Dtype::F32)
            .chunk_compression("lz4"),
    )
    .await
    .unwrap();
    ds.create_tensor("text", TensorOptions::new("text"))
        .await
        .unwrap();
    let n = 300u64;
    let mut labels = Vec::new();
    let mut xs = Vec::new();
    let mut texts = Vec::new();
    for i in 0..n {
        labels.push(Sample::Text(
            if i % 3 == 0 { "dog" } else { "cat" }.to_owned(),
        ));
        let v: Vec<f32> = (0..(i % 7 + 1))
            .map(|k| (i * 10 + k) as f32 * 0.5)
            .collect();
        xs.push(Sample::Array(
            NdArray::from_slice(vec![v.len()], &v).unwrap(),
        ));
        texts.push(Sample::Text(format!("row {i} ✓")));
    }
    ds.extend("labels", labels).await.unwrap();
    ds.extend("x", xs).await.unwrap();
    ds.extend("text", texts).await.unwrap();
    ds.flush().await.unwrap();
    drop(ds);
    let ds = Dataset::open(url, opts).await.unwrap();
    assert_eq!(ds.len(), n);
    assert_eq!(ds.tensor_names(), vec!["labels", "x", "text"]);
    for i in [0u64, 1, 150, 299] {
        let Sample::Array(l) = ds.read("labels", i).await.unwrap() else {
            panic!("label not an array")
        };
        assert_eq!(l.to_f64_vec(), vec![if i % 3 == 0 { 1.0 } else { 0.0 }]);
        let Sample::Array(x) = ds.read("x", i).await.unwrap() else {
            panic!("x not an array")
        };
        let want: Vec<f64> = (0..(i % 7 + 1))
            .map(|k| (i * 10 + k) as f64 * 0.5)
            .collect();
        assert_eq!(x.to_f64_vec(), want);
        assert_eq!(
            ds.read("text", i).await.unwrap(),
            Sample::Text(format!("row {i} ✓"))
        );
    }
    let all = ds.read_range("text", 0..n).await.unwrap();
    assert_eq!(all.len() as u64, n);
    ds.store().delete_prefix("").await.unwrap();
}
