//! Packed appends store exactly what sample appends store: the same values, shapes,
//! companions and tensor metas, across chunk boundaries and with empty rows; rows that
//! do not fit their tensor are refused before anything changes.

use deeplake_core::{Dataset, Dtype, OpenOptions, PackedRows, Sample, TensorOptions};
use serde_json::json;

fn url(tag: &str) -> String {
    format!("memory://{tag}-{:016x}", rand::random::<u64>())
}

async fn with_tensors(tag: &str) -> Dataset {
    let mut ds = Dataset::create(&url(tag), OpenOptions::default())
        .await
        .unwrap();
    for (name, o) in [
        ("i", TensorOptions::new("generic").dtype(Dtype::I64)),
        ("f", TensorOptions::new("generic").dtype(Dtype::F64)),
        ("b", TensorOptions::new("generic").dtype(Dtype::Bool)),
        ("t", TensorOptions::new("text")),
        ("j", TensorOptions::new("json")),
    ] {
        let mut o = o;
        // Small chunks: the rows span many of them.
        o.max_chunk_size = Some(4096);
        ds.create_tensor(name, o).await.unwrap();
    }
    ds
}

#[tokio::test]
async fn packed_rows_store_what_samples_store() {
    let n = 3000usize;
    let null = |i: usize| i % 7 == 3;
    let mut a = with_tensors("samples").await;
    let mut b = with_tensors("packed").await;
    // Two batches, so the second continues the first one's open chunk.
    for range in [0..1700, 1700..n] {
        let mut s_i = Vec::new();
        let mut s_f = Vec::new();
        let mut s_b = Vec::new();
        let mut s_t = Vec::new();
        let mut s_j = Vec::new();
        let mut p_i = PackedRows::new(vec![1]);
        let mut p_f = PackedRows::new(vec![1]);
        let mut p_b = PackedRows::new(vec![1]);
        let mut p_t = PackedRows::new(vec![1]);
        let mut p_j = PackedRows::new(vec![1]);
        for i in range {
            if null(i) {
                s_i.push(Sample::Empty);
                s_f.push(Sample::Empty);
                s_b.push(Sample::Empty);
                p_i.push_empty();
                p_f.push_empty();
                p_b.push_empty();
            } else {
                let (vi, vf, vb) = (i as i64 * 31 - 5000, i as f64 / 3.0, i % 2 == 0);
                s_i.push(Sample::Array(deeplake_core::NdArray::scalar(vi)));
                s_f.push(Sample::Array(deeplake_core::NdArray::scalar(vf)));
                s_b.push(Sample::Array(deeplake_core::NdArray::scalar(vb)));
                p_i.push(&vi.to_le_bytes());
                p_f.push(&vf.to_le_bytes());
                p_b.push(&[u8::from(vb)]);
            }
            let text = if null(i) {
                String::new()
            } else {
                format!("row {i} {}", "é".repeat(i % 40))
            };
            s_t.push(if null(i) {
                Sample::Empty
            } else {
                Sample::Text(text.clone())
            });
            p_t.push(text.as_bytes());
            let doc = json!({"i": i, "tags": ["x", i % 3], "f": 0.5});
            p_j.buffer()
                .extend_from_slice(&deeplake_core::format::json::to_compact(&doc));
            p_j.end_row();
            s_j.push(Sample::Json(doc));
        }
        for (t, s) in [("i", s_i), ("f", s_f), ("b", s_b), ("t", s_t), ("j", s_j)] {
            a.extend(t, s).await.unwrap();
        }
        for (t, p) in [("i", p_i), ("f", p_f), ("b", p_b), ("t", p_t), ("j", p_j)] {
            b.extend_packed(t, p).await.unwrap();
        }
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let b = Dataset::open(b.url(), OpenOptions::default())
        .await
        .unwrap();
    let mut names = a.tensor_names();
    names.extend(a.hidden_tensor_names());
    names.sort();
    let mut b_names = b.tensor_names();
    b_names.extend(b.hidden_tensor_names());
    b_names.sort();
    assert_eq!(names, b_names);
    for name in &names {
        let (ma, mb) = (a.tensor_meta(name).unwrap(), b.tensor_meta(name).unwrap());
        assert_eq!(ma, mb, "tensor meta of {name}");
        assert_eq!(ma.length, n as u64, "{name}");
        if name.ends_with("_id") {
            continue; // random by design
        }
        let ra = a.read_range(name, 0..n as u64).await.unwrap();
        let rb = b.read_range(name, 0..n as u64).await.unwrap();
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "values of {name}");
    }
}

#[tokio::test]
async fn rows_that_do_not_fit_are_refused_and_change_nothing() {
    let mut ds = with_tensors("bad").await;
    ds.create_tensor(
        "img",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    let mut p = PackedRows::new(vec![1]);
    p.push(&1i64.to_le_bytes());
    p.push(&[1, 2, 3]);
    let e = ds.extend_packed("i", p).await.unwrap_err().to_string();
    assert!(e.contains("row 1") && e.contains("\"i\""), "{e}");
    let mut p = PackedRows::new(vec![1]);
    p.push(b"fine");
    p.push(&[0xff, 0xfe]);
    let e = ds.extend_packed("t", p).await.unwrap_err().to_string();
    assert!(e.contains("not UTF-8"), "{e}");
    let mut p = PackedRows::new(vec![2]);
    p.push(b"ab");
    let e = ds.extend_packed("t", p).await.unwrap_err().to_string();
    assert!(e.contains("shape"), "{e}");
    let mut p = PackedRows::new(vec![1]);
    p.push(b"\xff\xd8");
    let e = ds.extend_packed("img", p).await.unwrap_err().to_string();
    assert!(e.contains("append its samples instead"), "{e}");
    let e = ds
        .extend_packed("nope", PackedRows::new(vec![1]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    for t in ["i", "t", "img", "_i_id", "_i_shape", "_t_id"] {
        assert_eq!(ds.tensor_len(t).unwrap(), 0, "{t} changed");
    }
}
