//! The streaming engine over a real local dataset: JPEG images of two sizes and labels,
//! in small chunks.

use std::collections::BTreeMap;
use std::sync::Arc;

use deeplake_core::format::compression::Compression;
use deeplake_core::stream::{Column, Cursor, Order, Part, Ragged, Stream, StreamSpec, Transform};
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};

const ROWS: u64 = 300;

fn jpeg(row: u64) -> Sample {
    // Two sizes, so batches mix shapes; pixels depend on the row.
    let (w, h) = if row.is_multiple_of(3) {
        (12, 8)
    } else {
        (8, 8)
    };
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(row % 256) as u8, (x * 20) as u8, (y * 30) as u8])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    Sample::Encoded {
        bytes: out.into(),
        compression: Compression::Jpeg,
        shape: Some(vec![h as usize, w as usize, 3]),
    }
}

async fn dataset() -> (tempfile::TempDir, Arc<Dataset>) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_str().unwrap().to_owned();
    std::fs::create_dir_all(&url).unwrap();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    let mut img = TensorOptions::new("image").sample_compression("jpeg");
    img.max_chunk_size = Some(16 << 10);
    ds.create_tensor("images", img).await.unwrap();
    let mut lab = TensorOptions::new("generic").dtype(Dtype::U32);
    lab.max_chunk_size = Some(1024);
    ds.create_tensor("labels", lab).await.unwrap();
    for part in (0..ROWS).collect::<Vec<_>>().chunks(100) {
        ds.extend("images", part.iter().map(|&r| jpeg(r)).collect())
            .await
            .unwrap();
        ds.extend(
            "labels",
            part.iter()
                .map(|&r| Sample::Array(NdArray::scalar(r as u32)))
                .collect(),
        )
        .await
        .unwrap();
    }
    ds.commit("rows").await.unwrap();
    (dir, Arc::new(ds))
}

/// Every batch of a stream: (labels per row, source rows, cursor after it).
async fn drain(mut s: Stream) -> Vec<(Vec<u32>, Vec<u64>, Cursor)> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        let labels = match b.column("labels").unwrap() {
            Column::Dense(a) => a.to_f64_vec().into_iter().map(|v| v as u32).collect(),
            other => panic!("labels: {other:?}"),
        };
        out.push((labels, b.rows.clone(), b.cursor));
    }
    out
}

fn spec(order: Order) -> StreamSpec {
    StreamSpec {
        tensors: vec!["labels".into()],
        batch_size: 16,
        order,
        ..StreamSpec::default()
    }
}

fn flat(b: &[(Vec<u32>, Vec<u64>, Cursor)]) -> Vec<u32> {
    b.iter().flat_map(|x| x.0.clone()).collect()
}

#[tokio::test]
async fn values_equal_the_datasets_and_ragged_images_pad() {
    let (_dir, ds) = dataset().await;
    let mut s = Stream::open(
        ds.clone(),
        None,
        StreamSpec {
            tensors: vec!["images".into(), "labels".into()],
            batch_size: 25,
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let mut seen = 0u64;
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        let Column::Padded { data, shapes } = b.column("images").unwrap() else {
            panic!("mixed image sizes must pad");
        };
        assert_eq!(data.shape, vec![b.rows.len(), 8, 12, 3]);
        for (i, &row) in b.rows.iter().enumerate() {
            let Sample::Array(want) = ds.read("images", row).await.unwrap() else {
                panic!("row {row} did not decode");
            };
            assert_eq!(shapes[i], want.shape);
            let (h, w) = (want.shape[0], want.shape[1]);
            let per = 8 * 12 * 3;
            for y in 0..h {
                let got = &data.data[i * per + y * 12 * 3..i * per + y * 12 * 3 + w * 3];
                assert_eq!(
                    got,
                    &want.data[y * w * 3..(y + 1) * w * 3],
                    "row {row} line {y}"
                );
            }
        }
        seen += b.rows.len() as u64;
    }
    assert_eq!(seen, ROWS);
    let stats = s.stats();
    assert_eq!((stats.rows, stats.batches), (ROWS, 12));
    assert!(stats.peak_held > 0 && stats.peak_held <= stats.budget);
    assert_eq!(
        stats.decoded_in_place, 0,
        "mixed sizes take the general path"
    );
}

#[tokio::test]
async fn shuffles_are_seeded_permutations_and_parts_split_the_epoch() {
    let (_dir, ds) = dataset().await;
    let shuffled = Order::Shuffle {
        seed: 11,
        buffer: 32,
    };
    let a = flat(
        &drain(
            Stream::open(ds.clone(), None, spec(shuffled))
                .await
                .unwrap(),
        )
        .await,
    );
    let again = flat(
        &drain(
            Stream::open(ds.clone(), None, spec(shuffled))
                .await
                .unwrap(),
        )
        .await,
    );
    assert_eq!(a, again);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..ROWS as u32).collect::<Vec<_>>());
    assert_ne!(a, sorted);
    let next_epoch = StreamSpec {
        cursor: Cursor {
            epoch: 1,
            offset: 0,
        },
        ..spec(shuffled)
    };
    assert_ne!(
        a,
        flat(&drain(Stream::open(ds.clone(), None, next_epoch).await.unwrap()).await)
    );

    let mut all = Vec::new();
    for rank in 0..3 {
        for worker in 0..2 {
            let s = StreamSpec {
                rank: Part::new(rank, 3).unwrap(),
                worker: Part::new(worker, 2).unwrap(),
                ..spec(shuffled)
            };
            all.extend(flat(
                &drain(Stream::open(ds.clone(), None, s).await.unwrap()).await,
            ));
        }
    }
    all.sort_unstable();
    assert_eq!(all, (0..ROWS as u32).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stream_resumed_from_a_batch_cursor_yields_exactly_the_rest() {
    let (_dir, ds) = dataset().await;
    let order = Order::Shuffle {
        seed: 5,
        buffer: 40,
    };
    let whole = drain(Stream::open(ds.clone(), None, spec(order)).await.unwrap()).await;
    let cut = 7;
    let resumed = StreamSpec {
        cursor: whole[cut - 1].2,
        ..spec(order)
    };
    let rest = drain(Stream::open(ds.clone(), None, resumed).await.unwrap()).await;
    assert_eq!(flat(&whole[cut..]), flat(&rest));
    assert_eq!(rest.last().unwrap().2.offset, ROWS);
}

#[tokio::test]
async fn views_transforms_and_bad_specs() {
    let (_dir, ds) = dataset().await;
    // A view: every 7th row, backwards.
    let mut view: Vec<u64> = (0..ROWS).step_by(7).collect();
    view.reverse();
    let got = flat(
        &drain(
            Stream::open(ds.clone(), Some(view.clone()), spec(Order::Sequential))
                .await
                .unwrap(),
        )
        .await,
    );
    assert_eq!(got, view.iter().map(|&r| r as u32).collect::<Vec<_>>());

    let mut s = Stream::open(
        ds.clone(),
        Some(vec![0, 1, 2]),
        StreamSpec {
            tensors: vec!["images".into()],
            transforms: vec![(
                "images".into(),
                vec![
                    Transform::Resize {
                        height: 4,
                        width: 4,
                    },
                    Transform::Normalize {
                        mean: vec![0.0],
                        std: vec![255.0],
                    },
                ],
            )],
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let b = s.next().await.unwrap().unwrap();
    let Column::Dense(a) = b.column("images").unwrap() else {
        panic!("resized images share one shape");
    };
    assert_eq!((a.shape.clone(), a.dtype), (vec![3, 4, 4, 3], Dtype::F32));
    // The red channel is the row number / 255 (JPEG keeps flat colour close).
    let v = a.to_f64_vec();
    assert!((v[48] - 1.0 / 255.0).abs() < 0.05, "{}", v[48]);

    let bad: BTreeMap<&str, StreamSpec> = BTreeMap::from([
        (
            "batch size",
            StreamSpec {
                batch_size: 0,
                ..StreamSpec::default()
            },
        ),
        (
            "nope",
            StreamSpec {
                tensors: vec!["nope".into()],
                ..StreamSpec::default()
            },
        ),
        (
            "not streamed",
            StreamSpec {
                tensors: vec!["labels".into()],
                transforms: vec![("images".into(), vec![Transform::Cast(Dtype::F32)])],
                ..StreamSpec::default()
            },
        ),
        (
            "this part",
            StreamSpec {
                cursor: Cursor {
                    epoch: 0,
                    offset: ROWS + 1,
                },
                ..StreamSpec::default()
            },
        ),
    ]);
    for (needle, s) in bad {
        let e = Stream::open(ds.clone(), None, s)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let e = Stream::open(ds.clone(), Some(vec![ROWS]), StreamSpec::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("past the end"), "{e}");
    let list = Stream::open(
        ds.clone(),
        Some(vec![0, 1]),
        StreamSpec {
            tensors: vec!["images".into()],
            ragged: Ragged::List,
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let mut list = list;
    assert!(matches!(
        list.next().await.unwrap().unwrap().column("images").unwrap(),
        Column::List(v) if v.len() == 2
    ));
}

#[tokio::test]
async fn prepared_batches_stay_within_the_budget() {
    let (_dir, ds) = dataset().await;
    // Each batch of 10 decoded images is 10 * 8 * 12 * 3 = 2,880 bytes padded.
    let mut s = Stream::open(
        ds.clone(),
        None,
        StreamSpec {
            tensors: vec!["images".into()],
            batch_size: 10,
            prefetch_bytes: 6_000,
            ahead: 4,
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let mut n = 0;
    while let Some(b) = s.next().await {
        let _b = b.unwrap();
        // Let the producer run ahead as far as the budget allows.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        n += 1;
    }
    assert_eq!(n, 30);
    let st = s.stats();
    assert!(st.peak_held <= 6_000, "{st:?}");
    assert!(st.peak_held >= 2_880, "{st:?}");
}

#[tokio::test]
async fn link_tensors_stream_their_decoded_targets() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..20u64)
        .map(|r| {
            let Sample::Encoded { bytes, .. } = jpeg(r) else {
                unreachable!()
            };
            let p = dir.path().join(format!("{r}.jpg"));
            std::fs::write(&p, &bytes).unwrap();
            p.to_str().unwrap().to_owned()
        })
        .collect();
    let url = dir.path().join("ds").to_str().unwrap().to_owned();
    std::fs::create_dir_all(&url).unwrap();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "photos",
        TensorOptions::new("link[image]").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.extend(
        "photos",
        files
            .iter()
            .map(|p| Sample::Link {
                path: p.clone(),
                creds_key: None,
            })
            .collect(),
    )
    .await
    .unwrap();
    ds.commit("links").await.unwrap();
    let ds = Arc::new(ds);
    let mut s = Stream::open(
        ds.clone(),
        Some(vec![3, 0, 19]),
        StreamSpec {
            tensors: vec!["photos".into()],
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let b = s.next().await.unwrap().unwrap();
    let Column::Padded { data, shapes } = b.column("photos").unwrap() else {
        panic!("rows of two sizes pad");
    };
    for (i, &row) in b.rows.iter().enumerate() {
        let decoded = image::load_from_memory(&std::fs::read(&files[row as usize]).unwrap())
            .unwrap()
            .to_rgb8();
        let (w, h) = (decoded.width() as usize, decoded.height() as usize);
        assert_eq!(shapes[i], vec![h, w, 3], "row {row}");
        // Our decoder and the image crate's may differ by a step on some pixels.
        let per = data.shape[1..].iter().product::<usize>();
        let got = &data.data[i * per..(i + 1) * per];
        let width = data.shape[2] * 3;
        let mut worst = 0i32;
        for y in 0..h {
            for x in 0..w * 3 {
                let d = i32::from(got[y * width + x]) - i32::from(decoded.as_raw()[y * w * 3 + x]);
                worst = worst.max(d.abs());
            }
        }
        assert!(worst <= 2, "row {row} differs by {worst}");
    }
    assert!(s.next().await.is_none());
    // A target that is gone is an error naming it, not a silent hole. (A fresh linker:
    // the process-wide one still holds every target that verify read at append.)
    std::fs::remove_file(&files[7]).unwrap();
    drop(ds);
    let fresh = OpenOptions {
        read_only: true,
        linker: Some(
            deeplake_core::link::Linker::new(deeplake_core::link::LinkOptions::default()).unwrap(),
        ),
        ..OpenOptions::default()
    };
    let ds = Arc::new(Dataset::open(&url, fresh).await.unwrap());
    let mut s = Stream::open(
        ds,
        Some(vec![7]),
        StreamSpec {
            tensors: vec!["photos".into()],
            ..StreamSpec::default()
        },
    )
    .await
    .unwrap();
    let e = s.next().await.unwrap().unwrap_err().to_string();
    assert!(e.contains("7.jpg") && e.contains("photos"), "{e}");
}

#[tokio::test]
async fn uniform_jpeg_batches_decode_in_place_and_a_held_batch_keeps_its_pixels() {
    // One image size: every batch takes the decode-into-the-batch-buffer path, whose
    // buffers are reused once a batch is dropped.
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_str().unwrap().to_owned();
    std::fs::create_dir_all(&url).unwrap();
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    let rows: Vec<u64> = (0..40).map(|r| r * 3 + 1).collect();
    ds.extend("images", rows.iter().map(|&r| jpeg(r)).collect())
        .await
        .unwrap();
    ds.commit("rows").await.unwrap();
    let ds = Arc::new(ds);
    let mut want = Vec::new();
    for r in 0..40 {
        let Sample::Array(a) = ds.read("images", r).await.unwrap() else {
            panic!("row {r} did not decode");
        };
        want.push(a.data.to_vec());
    }
    let mut held = None;
    for epoch in 0..3 {
        let mut s = Stream::open(
            ds.clone(),
            None,
            StreamSpec {
                tensors: vec!["images".into()],
                batch_size: 8,
                order: Order::Shuffle {
                    seed: 9,
                    buffer: 16,
                },
                cursor: Cursor { epoch, offset: 0 },
                ..StreamSpec::default()
            },
        )
        .await
        .unwrap();
        while let Some(b) = s.next().await {
            let b = b.unwrap();
            let Column::Dense(a) = b.column("images").unwrap() else {
                panic!("one image size collates dense");
            };
            assert_eq!(a.shape, vec![b.rows.len(), 8, 8, 3]);
            for (i, &row) in b.rows.iter().enumerate() {
                assert_eq!(
                    &a.data[i * 192..(i + 1) * 192],
                    &want[row as usize][..],
                    "row {row}"
                );
            }
            if held.is_none() {
                held = Some((b.rows.clone(), a.data.clone()));
            }
        }
        assert_eq!(s.stats().decoded_in_place, 40, "epoch {epoch}");
    }
    // Later batches reused freed buffers, never the one still held.
    let (rows, data) = held.unwrap();
    for (i, &row) in rows.iter().enumerate() {
        assert_eq!(
            &data[i * 192..(i + 1) * 192],
            &want[row as usize][..],
            "held row {row}"
        );
    }
}
