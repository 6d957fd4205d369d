//! Writers that hand a branch over to each other (one after the other, the previous
//! one dropped without closing, as after a crash) never lose or duplicate rows.

use std::time::Duration;

use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writers_hand_over_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let opts = OpenOptions {
        lease_ttl: Some(Duration::from_millis(200)),
        lease_wait: Some(Duration::from_secs(10)),
        ..Default::default()
    };
    let mut steps = 0u64;
    for round in 0..12u64 {
        let mut ds = Dataset::open_or_create(&url, opts.clone()).await.unwrap();
        if ds.tensor_names().is_empty() {
            ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
                .await
                .unwrap();
        }
        ds.acquire().await.unwrap();
        for _ in 0..(round % 4 + 1) {
            let n = ds.tensor_len("x").unwrap();
            assert_eq!(n, steps, "round {round}: the writer sees every earlier row");
            ds.append(
                "x",
                Sample::Array(NdArray::from_slice(vec![1], &[n as i64]).unwrap()),
            )
            .await
            .unwrap();
            ds.flush().await.unwrap();
            if n % 3 == 2 {
                ds.commit(&format!("rows 0..={n}")).await.unwrap();
            }
            steps += 1;
        }
        std::mem::forget(ds); // dies without releasing its lease or dropping anything
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
    let got: Vec<i64> = ds
        .read_range("x", 0..ds.tensor_len("x").unwrap())
        .await
        .unwrap()
        .iter()
        .map(|s| match s {
            Sample::Array(a) => a.to_f64_vec()[0] as i64,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, (0..steps as i64).collect::<Vec<_>>());
}

/// A chunk named by a flush record keeps its bytes: a later flush that grows it writes
/// a new chunk instead (a crash between the two must leave the first state intact).
#[tokio::test]
async fn flushed_chunks_are_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    let chunks = |p: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(std::path::Path::new(p).join("x/chunks"))
            .map(|d| {
                d.map(|e| e.unwrap())
                    .map(|e| {
                        (
                            e.file_name().into_string().unwrap(),
                            std::fs::read(e.path()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    for n in 0..6i64 {
        ds.append(
            "x",
            Sample::Array(NdArray::from_slice(vec![1], &[n]).unwrap()),
        )
        .await
        .unwrap();
        ds.flush().await.unwrap();
        let now = chunks(&url);
        for (name, bytes) in &seen {
            let still = now.iter().find(|(n2, _)| n2 == name).map(|(_, b)| b);
            assert_eq!(
                still,
                Some(bytes),
                "chunk {name} changed after it was flushed"
            );
        }
        seen = now;
    }
    assert_eq!(ds.tensor_len("x").unwrap(), 6);
}
