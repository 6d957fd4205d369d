//! Corrupt or truncated objects on storage give `Error::Corrupt` naming the object
//! key, never a panic.

use deeplake_core::{Dataset, Error, NdArray, OpenOptions, Sample, TensorOptions};

async fn make(dir: &std::path::Path) -> String {
    let url = dir.join("ds").to_string_lossy().into_owned();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "x",
        TensorOptions::new("generic").dtype(deeplake_core::Dtype::I32),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "c",
        TensorOptions::new("generic")
            .dtype(deeplake_core::Dtype::I32)
            .chunk_compression("lz4"),
    )
    .await
    .unwrap();
    let samples: Vec<Sample> = (0..50)
        .map(|i| Sample::Array(NdArray::from_slice(vec![3], &[i, i + 1, i + 2]).unwrap()))
        .collect();
    ds.extend("x", samples.clone()).await.unwrap();
    ds.extend("c", samples).await.unwrap();
    ds.close().await.unwrap();
    url
}

fn chunk_file(url: &str, tensor: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(url).join(tensor).join("chunks");
    std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

fn assert_corrupt(r: Result<impl std::fmt::Debug, Error>, key_part: &str) {
    match r {
        Err(Error::Corrupt { path, reason }) => {
            assert!(
                path.contains(key_part),
                "error path {path:?} should name {key_part:?} ({reason})"
            )
        }
        other => panic!("expected Corrupt naming {key_part}, got {other:?}"),
    }
}

async fn read_all(url: &str, tensor: &str) -> Result<Vec<Sample>, Error> {
    let ds = Dataset::open(url, OpenOptions::default()).await?;
    let n = ds.tensor_len(tensor)?;
    let mut all = ds.read_range(tensor, 0..n).await?;
    all.push(ds.read(tensor, n - 1).await?);
    Ok(all)
}

#[tokio::test]
async fn truncated_chunks_are_corrupt_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = make(dir.path()).await;
    for tensor in ["x", "c"] {
        let f = chunk_file(&url, tensor);
        let good = std::fs::read(&f).unwrap();
        for cut in [0usize, 1, 5, 9, 14, good.len() / 2, good.len() - 1] {
            std::fs::write(&f, &good[..cut]).unwrap();
            assert_corrupt(read_all(&url, tensor).await, &format!("{tensor}/chunks/"));
        }
        std::fs::write(&f, &good).unwrap();
        assert_eq!(read_all(&url, tensor).await.unwrap().len(), 51);
    }
}

#[tokio::test]
async fn garbage_chunks_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let url = make(dir.path()).await;
    let f = chunk_file(&url, "c");
    let good = std::fs::read(&f).unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..200 {
        let mut bad = good.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % bad.len();
            bad[i] = (seed >> 32) as u8;
        }
        std::fs::write(&f, &bad).unwrap();
        // Any outcome but a panic is acceptable for random flips inside the data;
        // errors must still be typed.
        match read_all(&url, "c").await {
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
}

#[tokio::test]
async fn hostile_header_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = make(dir.path()).await;
    let f = chunk_file(&url, "x");
    let mut bad = std::fs::read(&f).unwrap();
    // Shape table claims 2^31-1 rows.
    let at = 1 + bad[0] as usize;
    bad[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
    std::fs::write(&f, &bad).unwrap();
    assert_corrupt(read_all(&url, "x").await, "x/chunks/");
}

#[tokio::test]
async fn corrupt_encoders_and_metas_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = make(dir.path()).await;
    let base = std::path::Path::new(&url);
    // Our own flush record is the head's source of truth; a damaged one is reported.
    let newest = std::fs::read_dir(base.join("_rs_flush"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 25 && n.ends_with(".json"))
        .max()
        .unwrap();
    let rec = base.join("_rs_flush").join(&newest);
    let good = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &good[..good.len() / 2]).unwrap();
    assert_corrupt(read_all(&url, "x").await, &format!("_rs_flush/{newest}"));
    std::fs::write(&rec, &good).unwrap();
    assert_eq!(read_all(&url, "x").await.unwrap().len(), 51);
    // Without flush records (as deeplake 3.x writes datasets) the 3.x files are read.
    std::fs::remove_dir_all(base.join("_rs_flush")).unwrap();
    let cases = [
        (
            "x/chunks_index/unsharded",
            &b"\x063.9.52\x08\x01\x02"[..],
            "x/chunks_index/unsharded",
        ),
        (
            "x/tensor_meta.json",
            &b"{\"htype\": "[..],
            "x/tensor_meta.json",
        ),
        ("dataset_meta.json", &b"[1, 2"[..], "dataset_meta.json"),
        (
            "_rs/log/00000000000000000000.json",
            &b"{\"seq\": 0, \"tree\": 5}"[..],
            "_rs/log/00000000000000000000.json",
        ),
        (
            "x/tiles_index/unsharded",
            &b"\x06"[..],
            "x/tiles_index/unsharded",
        ),
    ];
    for (file, bytes, key) in cases {
        let p = base.join(file);
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, bytes).unwrap();
        assert_corrupt(read_all(&url, "x").await, key);
        std::fs::write(&p, &good).unwrap();
    }
    // The 3.x tree file is a cache of the tree log: a damaged one is rewritten.
    let vc = base.join("version_control_info.json");
    let good = std::fs::read(&vc).unwrap();
    std::fs::write(&vc, b"{\"commits\": 5}").unwrap();
    assert_eq!(read_all(&url, "x").await.unwrap().len(), 51);
    assert_eq!(std::fs::read(&vc).unwrap(), good);
    // A length that disagrees with the chunk index.
    let p = base.join("x/tensor_meta.json");
    let good = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, good.replace("\"length\": 50", "\"length\": 70")).unwrap();
    assert_corrupt(read_all(&url, "x").await, "x/chunks_index/unsharded");
    std::fs::write(&p, &good).unwrap();
    // A chunk listed in the index but missing on storage.
    let f = chunk_file(&url, "x");
    std::fs::remove_file(&f).unwrap();
    assert_corrupt(read_all(&url, "x").await, "x/chunks/");
}

#[tokio::test]
async fn bad_requests_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = make(dir.path()).await;
    let mut ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
    assert!(matches!(
        ds.read("x", 50).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.read("nope", 0).await,
        Err(Error::NotFound { .. })
    ));
    let wrong_rank = Sample::Array(NdArray::from_slice(vec![1, 3], &[1i32, 2, 3]).unwrap());
    assert!(matches!(
        ds.append("x", wrong_rank).await,
        Err(Error::InvalidInput { .. })
    ));
    let not_int = Sample::Array(NdArray::from_slice(vec![3], &[0.5f32, 1.0, 2.0]).unwrap());
    assert!(matches!(
        ds.append("x", not_int).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.append("x", Sample::Text("hi".into())).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.create_tensor("x", TensorOptions::new("generic")).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.create_tensor("../evil", TensorOptions::new("generic"))
            .await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.create_tensor("y", TensorOptions::new("nosuchhtype"))
            .await,
        Err(Error::InvalidInput { .. })
    ));
    for reserved in ["versions", "_rs", "_rs_flush/a"] {
        let r = ds
            .create_tensor(reserved, TensorOptions::new("generic"))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidInput { .. })),
            "{reserved}: {r:?}"
        );
    }
    // Nothing above changed the dataset.
    assert_eq!(ds.tensor_len("x").unwrap(), 50);
    assert!(matches!(
        Dataset::open(
            dir.path().join("missing").to_str().unwrap(),
            OpenOptions::default()
        )
        .await,
        Err(Error::NotFound { .. })
    ));
}
