//! Writers that hand a branch over to each other (one after the other, the previous
//! one dropped without closing, as after a crash) never lose or duplicate rows.

use std::time::Duration;

use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};

use crate::int_column;

/// Writers whose lease lapses 200 ms after they die, and who wait for one that holds it.
fn short_lease() -> OpenOptions {
    OpenOptions {
        lease_ttl: Some(Duration::from_millis(200)),
        lease_wait: Some(Duration::from_secs(10)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writers_hand_over_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let opts = short_lease();
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
    let got = int_column(&ds, "x").await;
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

/// What deeplake 3.9.52 sees of tensor `x` at the head of `main`: its length, or -1
/// without such a tensor.
fn dl3_len_of_x(url: &str) -> i64 {
    let script = r#"
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
print(json.dumps({"len": len(ds["x"]) if "x" in ds.tensors else -1}))
"#;
    testkit::oracle::dl3_json(script, [url])["len"]
        .as_i64()
        .unwrap()
}

/// With deferred 3.x files, a flush is durable and visible to our readers at once, while
/// deeplake 3.9.52 sees the head as of the last commit; a commit, `flush_all`, or the
/// next writer after a crash brings the 3.x files up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_compat_files_follow_at_commit_flush_all_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let opts = short_lease();
    let rows = |from: i64, n: i64| -> Vec<Sample> {
        (from..from + n)
            .map(|i| Sample::Array(NdArray::from_slice(vec![1], &[i]).unwrap()))
            .collect()
    };
    let ours = |url: String| async move {
        let ro = OpenOptions {
            read_only: true,
            ..Default::default()
        };
        let ds = Dataset::open(&url, ro).await.unwrap();
        ds.tensor_len("x").unwrap()
    };

    let mut ds = Dataset::create(&url, opts.clone()).await.unwrap();
    ds.set_deferred_compat_files(true);
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.extend("x", rows(0, 5)).await.unwrap();
    ds.flush().await.unwrap();
    assert_eq!(ours(url.clone()).await, 5);
    assert_eq!(dl3_len_of_x(&url), -1, "3.x files wait for the commit");

    ds.commit("five rows").await.unwrap();
    assert_eq!(dl3_len_of_x(&url), 5);

    // The policy outlives the commit's handle swap.
    ds.extend("x", rows(5, 2)).await.unwrap();
    ds.flush().await.unwrap();
    assert_eq!(ours(url.clone()).await, 7);
    assert_eq!(dl3_len_of_x(&url), 5);
    ds.flush_all().await.unwrap();
    assert_eq!(dl3_len_of_x(&url), 7);

    ds.extend("x", rows(7, 3)).await.unwrap();
    ds.flush().await.unwrap();
    std::mem::forget(ds); // dies with its 3.x files behind its flush record
    assert_eq!(dl3_len_of_x(&url), 7);
    assert_eq!(ours(url.clone()).await, 10);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let next = Dataset::open(&url, opts.clone()).await.unwrap();
    next.close().await.unwrap();
    assert_eq!(
        dl3_len_of_x(&url),
        10,
        "the next writer repairs the 3.x files"
    );
    let ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
    assert_eq!(int_column(&ds, "x").await, (0..10).collect::<Vec<_>>());
}
