//! Truncation and staged replacement: both become visible at one flush, survive a
//! reopen, keep older flush states readable, and leave a dataset 3.x-shaped
//! (companions in step).

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, OpenOptions, Sample, TensorOptions};
use testkit::samples::{int, ints};

fn url(tag: &str) -> String {
    format!("memory://{tag}-{:016x}", rand::random::<u64>())
}

fn opts() -> OpenOptions {
    OpenOptions {
        storage: StoreOptions::default(),
        ..Default::default()
    }
}

async fn texts(ds: &Dataset, t: &str) -> Vec<String> {
    let n = ds.tensor_len(t).unwrap();
    ds.read_range(t, 0..n)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Text(x) => x,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn truncate_cuts_every_tensor_and_companion_across_chunks() {
    let u = url("trunc");
    let mut ds = Dataset::create(&u, opts()).await.unwrap();
    let mut o = TensorOptions::new("generic").dtype(Dtype::I64);
    o.max_chunk_size = Some(4096);
    ds.create_tensor("x", o).await.unwrap();
    ds.create_tensor("t", TensorOptions::new("text"))
        .await
        .unwrap();
    let n = 3000;
    ds.extend("x", (0..n).map(int).collect()).await.unwrap();
    ds.extend("t", (0..n).map(|i| Sample::Text(format!("r{i}"))).collect())
        .await
        .unwrap();
    ds.flush().await.unwrap();
    ds.commit("first").await.unwrap();
    ds.extend("x", (n..n + 500).map(int).collect())
        .await
        .unwrap();
    ds.extend(
        "t",
        (n..n + 500)
            .map(|i| Sample::Text(format!("r{i}")))
            .collect(),
    )
    .await
    .unwrap();
    ds.flush().await.unwrap();
    // Into the committed part: rows of the last commit leave as deletions.
    ds.truncate(1234).await.unwrap();
    assert_eq!(ds.len(), 1234);
    ds.flush().await.unwrap();
    // And the head grows again from the cut.
    ds.extend("x", vec![int(-1)]).await.unwrap();
    ds.append("t", Sample::Text("again".into())).await.unwrap();
    ds.flush().await.unwrap();
    drop(ds);
    let ds = Dataset::open(&u, opts()).await.unwrap();
    assert_eq!(ds.len(), 1235);
    let x = ints(&ds, "x").await;
    assert_eq!(&x[..1234], &(0..1234).collect::<Vec<_>>()[..]);
    assert_eq!(x[1234], -1);
    let t = texts(&ds, "t").await;
    assert_eq!(t[1233], "r1233");
    assert_eq!(t[1234], "again");
    assert_eq!(ds.tensor_len("_x_id").unwrap(), 1235);
    assert_eq!(ds.tensor_len("_t_id").unwrap(), 1235);
    assert_eq!(ds.tensor_len("_x_shape").unwrap(), 1235);
    // The committed version still reads in full: nothing stored was rewritten.
    let first = deeplake_core::ids::FIRST_COMMIT_ID;
    let old = Dataset::open_url(&format!("{u}@{first}"), opts())
        .await
        .unwrap();
    assert_eq!(ints(&old, "x").await, (0..n).collect::<Vec<_>>());
}

#[tokio::test]
async fn staged_tensors_swap_in_at_one_flush() {
    let u = url("stage");
    let mut ds = Dataset::create(&u, opts()).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.create_tensor("gone", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.extend("x", vec![int(1), int(2), int(3)]).await.unwrap();
    ds.extend("gone", vec![Sample::Text("a".into()); 3])
        .await
        .unwrap();
    ds.flush().await.unwrap();
    ds.create_tensor(
        "_next_x",
        TensorOptions::new("generic").dtype(Dtype::I64).staged(),
    )
    .await
    .unwrap();
    ds.extend("_next_x", vec![int(7), int(8)]).await.unwrap();
    ds.flush().await.unwrap();
    {
        // Readers still see the old content while the staged tensor fills.
        let r = Dataset::open(
            &u,
            OpenOptions {
                read_only: true,
                ..opts()
            },
        )
        .await
        .unwrap();
        assert_eq!(r.tensor_names(), ["x", "gone"]);
        assert_eq!(ints(&r, "x").await, [1, 2, 3]);
    }
    ds.truncate_tensor("_next_x", 1).await.unwrap();
    ds.append("_next_x", int(9)).await.unwrap();
    ds.replace_tensor("x", "_next_x").await.unwrap();
    ds.unlink_tensor("gone").await.unwrap();
    ds.flush().await.unwrap();
    drop(ds);
    let ds = Dataset::open(&u, opts()).await.unwrap();
    assert_eq!(ds.tensor_names(), ["x"]);
    assert_eq!(ints(&ds, "x").await, [7, 9]);
    assert_eq!(ds.tensor_len("_x_id").unwrap(), 2);
    assert_eq!(ds.tensor_len("_x_shape").unwrap(), 2);
    assert_eq!(ds.len(), 2);
}
