//! The chunk cache shared through `OpenOptions::cache`: committed chunks are read once
//! for every handle; a head's chunks, which a writer may still grow in place, are never
//! served from another handle's reads; `extend_columns` checks every column before it
//! writes any.

use std::sync::Arc;

use deeplake_core::dataset::ChunkCache;
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};

fn url(tag: &str) -> String {
    format!("memory://{tag}-{:016x}", rand::random::<u64>())
}

fn row(i: usize) -> Sample {
    Sample::Array(NdArray::from_slice(vec![4], &[i as f32; 4]).unwrap())
}

fn opts(cache: &Arc<ChunkCache>) -> OpenOptions {
    OpenOptions {
        read_only: true,
        cache: Some(cache.clone()),
        ..Default::default()
    }
}

async fn filled(u: &str, rows: usize) -> Dataset {
    let mut ds = Dataset::create(u, OpenOptions::default()).await.unwrap();
    let mut o = TensorOptions::new("generic").dtype(Dtype::F32);
    o.max_chunk_size = Some(1024);
    ds.create_tensor("x", o).await.unwrap();
    ds.extend("x", (0..rows).map(row).collect()).await.unwrap();
    ds
}

#[tokio::test]
async fn committed_chunks_are_shared_by_handles() {
    let u = url("cache-shared");
    let mut w = filled(&u, 200).await;
    w.commit("rows").await.unwrap();
    w.close().await.unwrap();
    let cache = Arc::new(ChunkCache::new(1 << 20));
    let a = Dataset::open(&u, opts(&cache)).await.unwrap();
    let want = a.read_range("x", 0..200).await.unwrap();
    let first = cache.stats();
    assert!(first.misses > 0 && first.bytes > 0, "{first:?}");
    assert!(first.reads > 0 && first.read_bytes > 0, "{first:?}");
    drop(a);
    let b = Dataset::open(&u, opts(&cache)).await.unwrap();
    assert_eq!(b.read_range("x", 0..200).await.unwrap(), want);
    let second = cache.stats();
    assert_eq!(second.misses, first.misses, "{second:?}");
    assert_eq!(second.reads, first.reads, "{second:?}");
    assert!(second.hits > first.hits, "{second:?}");
    // A tight budget evicts and stays within its bound.
    let small = Arc::new(ChunkCache::new(2048));
    let c = Dataset::open(&u, opts(&small)).await.unwrap();
    assert_eq!(c.read_range("x", 0..200).await.unwrap(), want);
    let s = small.stats();
    assert!(s.evictions > 0 && s.bytes <= 2048, "{s:?}");
}

#[tokio::test]
async fn head_chunks_are_not_served_stale_to_later_handles() {
    let u = url("cache-head");
    // Uncommitted rows: the head's open chunk grows in place with the next append.
    let mut w = filled(&u, 5).await;
    w.flush().await.unwrap();
    let cache = Arc::new(ChunkCache::new(1 << 20));
    let a = Dataset::open(&u, opts(&cache)).await.unwrap();
    // A whole chunk, then a header for range reads of a few rows.
    assert_eq!(a.read_range("x", 0..5).await.unwrap().len(), 5);
    let h = Dataset::open(&u, opts(&cache)).await.unwrap();
    assert_eq!(h.read("x", 1).await.unwrap(), row(1));
    w.extend("x", (5..10).map(row).collect()).await.unwrap();
    w.flush().await.unwrap();
    let b = Dataset::open(&u, opts(&cache)).await.unwrap();
    let got = b.read_range("x", 0..10).await.unwrap();
    assert_eq!(got, (0..10).map(row).collect::<Vec<_>>());
    let c = Dataset::open(&u, opts(&cache)).await.unwrap();
    assert_eq!(c.read_range("x", 7..9).await.unwrap(), vec![row(7), row(8)]);
    w.close().await.unwrap();
}

#[tokio::test]
async fn extend_columns_checks_every_column_before_writing() {
    let u = url("cache-columns");
    let mut ds = filled(&u, 2).await;
    ds.create_tensor("t", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.extend(
        "t",
        vec![Sample::Text("a".into()), Sample::Text("b".into())],
    )
    .await
    .unwrap();
    // `t` is fine; row 1 of `x` has the wrong rank.
    let bad = vec![
        (
            "t".to_owned(),
            vec![Sample::Text("c".into()), Sample::Text("d".into())],
        ),
        (
            "x".to_owned(),
            vec![
                row(2),
                Sample::Array(NdArray::from_slice(vec![2, 2], &[1f32; 4]).unwrap()),
            ],
        ),
    ];
    let e = ds.extend_columns(bad).await.unwrap_err().to_string();
    assert!(e.contains("\"x\", row 1"), "{e}");
    let ragged = vec![
        ("t".to_owned(), vec![Sample::Text("c".into())]),
        ("x".to_owned(), vec![row(2), row(3)]),
    ];
    assert!(ds.extend_columns(ragged).await.is_err());
    ds.close().await.unwrap();
    let ds = Dataset::open(&u, OpenOptions::default()).await.unwrap();
    assert_eq!(ds.tensor_len("t").unwrap(), 2);
    assert_eq!(ds.tensor_len("x").unwrap(), 2);
    let mut ds = ds;
    ds.extend_columns(vec![
        ("t".to_owned(), vec![Sample::Text("c".into())]),
        ("x".to_owned(), vec![row(2)]),
    ])
    .await
    .unwrap();
    assert_eq!(ds.tensor_len("t").unwrap(), 3);
    assert_eq!(ds.read("x", 2).await.unwrap(), row(2));
    ds.close().await.unwrap();
}
