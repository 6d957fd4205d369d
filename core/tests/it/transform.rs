//! Transforms against real datasets on disk: parallel runs equal serial ones, one-to-many
//! and stacked pipelines, failures that leave the target as it was, resume after a
//! cancel, the merge path when the target moved, and the on-the-fly mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deeplake_core::runtime::Control;
use deeplake_core::stream::transform::{SampleAt, apply};
use deeplake_core::stream::{Ragged, Stream, StreamSpec, Transform};
use deeplake_core::transform::{
    self, Input, LINEAGE_KEY, Pipeline, Row, Rows, SamplesOut, TransformOptions, Transformed,
};
use deeplake_core::{Dataset, Error, NdArray, OpenOptions, Sample, TensorOptions};

use super::int_column;
use super::materialize::jpeg;

fn last_commit(ds: &Dataset) -> deeplake_core::version::CommitRecord {
    ds.log().into_iter().find(|c| !c.is_head).unwrap()
}

fn int(v: i64) -> Sample {
    Sample::Array(NdArray::scalar(v))
}

fn as_int(s: &Sample) -> i64 {
    match s {
        Sample::Array(a) => a.to_f64_vec()[0] as i64,
        other => panic!("not a number: {other:?}"),
    }
}

/// A committed source of `n` rows: JPEG images of varied sizes and int labels.
async fn source(url: &str, n: u32) -> Dataset {
    let mut ds = Dataset::create(url, OpenOptions::default()).await.unwrap();
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await
    .unwrap();
    ds.create_tensor(
        "labels",
        TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
    )
    .await
    .unwrap();
    let images: Vec<Sample> = (0..n)
        .map(|i| Sample::Encoded {
            bytes: jpeg(10 + i % 7, 12 + i % 5, i).into(),
            compression: deeplake_core::format::compression::Compression::Jpeg,
            shape: None,
        })
        .collect();
    let labels: Vec<Sample> = (0..n).map(|i| int(i64::from(i))).collect();
    ds.extend_columns(vec![("images".into(), images), ("labels".into(), labels)])
        .await
        .unwrap();
    ds.commit("source").await.unwrap();
    ds
}

/// Resize to 4x4 and relabel to label % 5.
fn resize_relabel() -> Pipeline {
    Pipeline::new().map("resize_relabel", |mut row: Row| {
        let img = row
            .remove("images")
            .ok_or_else(|| Error::invalid("no image"))?;
        let at = SampleAt {
            tensor: "images",
            row: 0,
            seed: 0,
            epoch: 0,
        };
        let small = apply(
            &[Transform::Resize {
                height: 4,
                width: 4,
            }],
            img,
            at,
        )?;
        let label = as_int(&row["labels"]);
        Ok(Row::from([
            ("images".to_owned(), small),
            ("labels".to_owned(), int(label % 5)),
        ]))
    })
}

/// The target's tensors. Images get small chunks, so that a batch's image column
/// fills several and the workers place their parts into chunks of their own.
fn out_tensors() -> Vec<(String, TensorOptions)> {
    let mut images = TensorOptions::new("image").sample_compression("png");
    images.max_chunk_size = Some(4096);
    vec![
        ("images".into(), images),
        (
            "labels".into(),
            TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
        ),
    ]
}

fn ds_input(url: &str) -> Input {
    Input::Dataset {
        url: url.to_owned(),
        opts: OpenOptions::default(),
        rows: Rows::All,
        tensors: vec![],
    }
}

async fn images(ds: &Dataset) -> Vec<Sample> {
    ds.read_range("images", 0..ds.tensor_len("images").unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_run_equals_serial_and_lands_as_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 300).await;
    let mut results = Vec::new();
    for workers in [1usize, 4] {
        let out = dir
            .path()
            .join(format!("out{workers}"))
            .to_str()
            .unwrap()
            .to_owned();
        let mut opts = TransformOptions::new(&out);
        opts.tensors = out_tensors();
        opts.num_workers = workers;
        opts.batch_rows = 64;
        let ctl = Control::default();
        let rep = transform::run(&resize_relabel(), ds_input(&src), &opts, &ctl)
            .await
            .unwrap();
        assert_eq!((rep.input_rows, rep.output_rows), (300, 300));
        assert!(rep.fast_forward);
        assert_eq!(ctl.progress(), (300, 300));
        let ds = Dataset::open(&out, OpenOptions::default()).await.unwrap();
        assert_eq!(ds.len(), 300);
        // The branch shows the transform's commit; no staging branch is left.
        assert_eq!(ds.branches(), vec!["main".to_owned()]);
        let last = last_commit(&ds);
        assert_eq!(last.id, rep.commit.clone().unwrap());
        assert!(
            last.message.as_deref().unwrap().contains("resize_relabel"),
            "{last:?}"
        );
        let lineage = &ds.info()[LINEAGE_KEY];
        assert_eq!(lineage["functions"], serde_json::json!(["resize_relabel"]));
        assert_eq!(lineage["source"], serde_json::json!(src));
        assert_eq!(lineage["input_rows"], 300);
        assert!(!ds.has_changes());
        results.push((int_column(&ds, "labels").await, images(&ds).await));
    }
    assert_eq!(results[0], results[1]);
    let expect: Vec<i64> = (0..300).map(|i| i % 5).collect();
    assert_eq!(results[0].0, expect);
    for s in &results[0].1 {
        match s {
            Sample::Array(a) => assert_eq!(a.shape, vec![4, 4, 3]),
            other => panic!("{other:?}"),
        }
    }
    // deeplake's reopen path: a fresh handle at the commit reads the same rows.
    let at = format!("{}@{}", dir.path().join("out4").display(), {
        let ds = Dataset::open(
            dir.path().join("out4").to_str().unwrap(),
            OpenOptions::default(),
        )
        .await
        .unwrap();
        last_commit(&ds).id
    });
    let pinned = Dataset::open_url(&at, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(int_column(&pinned, "labels").await, expect);
}

/// Each worker writes its own chunks: a batch's image column is cut into one part per
/// worker, and every part starts chunks of its own, so the images fill at least
/// batches x workers chunks. The small label column joins the open chunk instead. The
/// rows equal the same pipeline's output written by one plain append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_writes_its_own_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    let source_ds = source(&src, 300).await;
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut opts = TransformOptions::new(&out);
    opts.tensors = out_tensors();
    opts.num_workers = 3;
    opts.batch_rows = 60;
    transform::run(
        &resize_relabel(),
        ds_input(&src),
        &opts,
        &Control::default(),
    )
    .await
    .unwrap();
    let ds = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let (imgs, labels) = (ds.summary("images").unwrap(), ds.summary("labels").unwrap());
    assert!(imgs.num_chunks >= 5 * 3, "{imgs:?}");
    assert_eq!(labels.num_chunks, 1, "{labels:?}");
    assert_eq!((imgs.length, imgs.max_shape.clone()), (300, vec![4, 4, 3]));

    // The same rows through one plain append.
    let plain_url = dir.path().join("plain").to_str().unwrap().to_owned();
    let mut plain = Dataset::create(&plain_url, OpenOptions::default())
        .await
        .unwrap();
    for (n, o) in out_tensors() {
        plain.create_tensor(&n, o).await.unwrap();
    }
    let (mut pi, mut pl) = (Vec::new(), Vec::new());
    let src_images = images(&source_ds).await;
    let src_labels = int_column(&source_ds, "labels").await;
    for (i, (img, label)) in src_images.into_iter().zip(src_labels).enumerate() {
        let row = Row::from([
            ("images".to_owned(), img),
            ("labels".to_owned(), int(label)),
        ]);
        let mut out = resize_relabel().run_one(i as u64, row).unwrap();
        let mut r = out.remove(0);
        pi.push(r.remove("images").unwrap());
        pl.push(r.remove("labels").unwrap());
    }
    plain
        .extend_columns(vec![("images".into(), pi), ("labels".into(), pl)])
        .await
        .unwrap();
    plain.commit("plain").await.unwrap();
    assert!(plain.summary("images").unwrap().num_chunks < imgs.num_chunks);
    assert_eq!(images(&ds).await, images(&plain).await);
    assert_eq!(
        int_column(&ds, "labels").await,
        int_column(&plain, "labels").await
    );
    let (a, b) = (
        ds.summary("images").unwrap(),
        plain.summary("images").unwrap(),
    );
    assert_eq!(
        (a.min_shape, a.max_shape, a.dtype),
        (b.min_shape, b.max_shape, b.dtype)
    );
}

/// A sample a worker cannot place (here, of another rank than the rest) fails the run
/// with an error naming its tensor and its row in the batch; the target is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sample_in_a_workers_part_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out").to_str().unwrap().to_owned();
    let pipeline = Pipeline::new().map("flat_at_37", |row: Row| {
        let i = as_int(&row["x"]);
        let shape = if i == 37 { vec![64] } else { vec![8, 8] };
        let v = NdArray::from_slice(shape, &[(i % 200) as u8; 64]).unwrap();
        Ok(Row::from([("v".to_owned(), Sample::Array(v))]))
    });
    let mut v = TensorOptions::new("generic").dtype(deeplake_core::Dtype::U8);
    v.max_chunk_size = Some(1024);
    let mut opts = TransformOptions::new(&target);
    opts.tensors = vec![("v".into(), v)];
    opts.num_workers = 2;
    opts.batch_rows = 40;
    opts.job = Some("flat".into());
    let rows = Box::new((0..80i64).map(|i| Row::from([("x".to_owned(), int(i))])));
    let err = transform::run(
        &pipeline,
        Input::Iter {
            rows,
            len: Some(80),
        },
        &opts,
        &Control::default(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tensor \"v\", row 37") && msg.contains("1 dimensions"),
        "{msg}"
    );
    let main = Dataset::open(&target, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(main.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_many_and_stacked_pipelines_over_an_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    // Each input i gives i % 4 rows (i*10 + k); then odd values are dropped; then each
    // value is doubled.
    let fan = Pipeline::new().then("fan_out", |row: Row, out: &mut SamplesOut| {
        let i = as_int(&row["x"]);
        for k in 0..i % 4 {
            out.push(Row::from([("x".to_owned(), int(i * 10 + k))]));
        }
        Ok(())
    });
    let pipeline = fan
        .filter("even", |row: &Row| Ok(as_int(&row["x"]) % 2 == 0))
        .compose(Pipeline::new().map("double", |row: Row| {
            Ok(Row::from([("x".to_owned(), int(as_int(&row["x"]) * 2))]))
        }));
    assert_eq!(pipeline.names(), vec!["fan_out", "even", "double"]);
    let mut expect = Vec::new();
    for i in 0..200i64 {
        for k in 0..i % 4 {
            let v = i * 10 + k;
            if v % 2 == 0 {
                expect.push(v * 2);
            }
        }
    }
    for workers in [1usize, 3] {
        let target = format!("{out}{workers}");
        let mut opts = TransformOptions::new(&target);
        opts.tensors = vec![(
            "x".into(),
            TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
        )];
        opts.num_workers = workers;
        opts.batch_rows = 16;
        let rows = Box::new((0..200i64).map(|i| Row::from([("x".to_owned(), int(i))])));
        let rep = transform::run(
            &pipeline,
            Input::Iter {
                rows,
                len: Some(200),
            },
            &opts,
            &Control::default(),
        )
        .await
        .unwrap();
        assert_eq!(rep.input_rows, 200);
        assert_eq!(rep.output_rows, expect.len() as u64);
        let ds = Dataset::open(&target, OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(int_column(&ds, "x").await, expect);
    }
}

/// Input rows the durable marker of `target`'s staging branch counts (0: none yet).
async fn checkpointed(target: &str) -> u64 {
    let ro = OpenOptions {
        read_only: true,
        ..Default::default()
    };
    let ds = Dataset::open(target, ro.clone()).await.unwrap();
    let Some(b) = ds
        .branches()
        .into_iter()
        .find(|b| b.starts_with("transform-"))
    else {
        return 0;
    };
    let mut o = ro;
    o.branch = Some(b.parse().unwrap());
    let staged = Dataset::open(target, o).await.unwrap();
    staged
        .info()
        .get(LINEAGE_KEY)
        .and_then(|m| m["input_rows"].as_u64())
        .unwrap_or(0)
}

/// Batches become durable at checkpoints: with an interval of zero after every batch,
/// so a reader of the staging branch sees progress midway; with an interval longer
/// than the run, only at the end. Both runs land the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_follow_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let handle = tokio::runtime::Handle::current();
    for (name, every) in [
        ("each", std::time::Duration::ZERO),
        ("hourly", std::time::Duration::from_secs(3600)),
    ] {
        let target = dir.path().join(name).to_str().unwrap().to_owned();
        let mut opts = TransformOptions::new(&target);
        opts.tensors = vec![(
            "x".into(),
            TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
        )];
        opts.num_workers = 2;
        opts.batch_rows = 16;
        opts.checkpoint_every = every;
        let seen = Arc::new(AtomicU64::new(u64::MAX));
        let (seen2, target2, handle2) = (seen.clone(), target.clone(), handle.clone());
        // The input thread looks at the staging branch when it reaches row 250; by
        // then the writer has staged the batches up to about row 200.
        let rows = Box::new((0..300i64).map(move |i| {
            if i == 250 {
                seen2.store(handle2.block_on(checkpointed(&target2)), Ordering::SeqCst);
            }
            Row::from([("x".to_owned(), int(i))])
        }));
        let rep = transform::run(
            &Pipeline::new().map("keep", Ok),
            Input::Iter {
                rows,
                len: Some(300),
            },
            &opts,
            &Control::default(),
        )
        .await
        .unwrap();
        assert_eq!(rep.input_rows, 300);
        let midway = seen.load(Ordering::SeqCst);
        if every.is_zero() {
            assert!((16..300).contains(&midway), "{name}: {midway}");
        } else {
            assert_eq!(midway, 0, "{name}: a checkpoint before the interval");
        }
        let ds = Dataset::open(&target, OpenOptions::default())
            .await
            .unwrap();
        assert_eq!(int_column(&ds, "x").await, (0..300).collect::<Vec<i64>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_input_iterator_is_an_error_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out").to_str().unwrap().to_owned();
    let pipeline = Pipeline::new().map("keep", Ok);
    let opts = || {
        let mut o = TransformOptions::new(&target);
        o.tensors = vec![(
            "x".into(),
            TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
        )];
        o.num_workers = 2;
        o.batch_rows = 16;
        o.job = Some("numbers".into());
        o
    };
    let rows = |fail_at: Option<i64>| -> Box<dyn Iterator<Item = Row> + Send> {
        Box::new((0..100i64).map(move |i| {
            if Some(i) == fail_at {
                panic!("row {i} is unreadable");
            }
            Row::from([("x".to_owned(), int(i))])
        }))
    };
    let err = transform::run(
        &pipeline,
        Input::Iter {
            rows: rows(Some(50)),
            len: Some(100),
        },
        &opts(),
        &Control::default(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("input iterator panicked") && msg.contains("row 50 is unreadable"),
        "{msg}"
    );
    // The target's main branch saw nothing; the whole batches before row 48 are staged.
    let main = Dataset::open(&target, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(main.len(), 0);
    drop(main);
    let rep = transform::run(
        &pipeline,
        Input::Iter {
            rows: rows(None),
            len: Some(100),
        },
        &opts(),
        &Control::default(),
    )
    .await
    .unwrap();
    assert_eq!(rep.resumed_from, 48);
    assert_eq!((rep.input_rows, rep.output_rows), (100, 100));
    let ds = Dataset::open(&target, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(int_column(&ds, "x").await, (0..100).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sample_names_function_and_sample_and_leaves_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 120).await;
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    // The target has a committed state of its own.
    {
        let mut t = Dataset::create(&out, OpenOptions::default()).await.unwrap();
        for (n, o) in out_tensors() {
            t.create_tensor(&n, o).await.unwrap();
        }
        t.extend_columns(vec![
            (
                "images".into(),
                vec![Sample::Array(
                    NdArray::from_slice(vec![4, 4, 3], &[7u8; 48]).unwrap(),
                )],
            ),
            ("labels".into(), vec![int(42)]),
        ])
        .await
        .unwrap();
        t.commit("before").await.unwrap();
    }
    let before = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let (commit, len) = (last_commit(&before).id, before.len());
    drop(before);
    for name in ["fails_on_77", "panics_on_77"] {
        let panics = name.starts_with("panics");
        let pipeline = Pipeline::new()
            .map(name, move |row: Row| {
                if as_int(&row["labels"]) == 77 {
                    if panics {
                        panic!("label 77 is cursed");
                    }
                    return Err(Error::invalid("label 77 is cursed"));
                }
                Ok(row)
            })
            .compose(resize_relabel());
        let mut opts = TransformOptions::new(&out);
        opts.num_workers = 4;
        opts.batch_rows = 32;
        let err = transform::run(&pipeline, ds_input(&src), &opts, &Control::default())
            .await
            .unwrap_err();
        match &err {
            Error::Transform {
                function,
                sample,
                message,
            } => {
                assert_eq!(function, name);
                assert_eq!(*sample, 77);
                assert!(message.contains("cursed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(name) && err.to_string().contains("sample 77"));
        let after = Dataset::open(&out, OpenOptions::default()).await.unwrap();
        assert_eq!(last_commit(&after).id, commit);
        assert_eq!(after.len(), len);
        assert_eq!(int_column(&after, "labels").await, vec![42]);
        assert_eq!(after.branches(), vec!["main".to_owned()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_leaves_the_target_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 200).await;
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let serial = dir.path().join("serial").to_str().unwrap().to_owned();
    let calls = Arc::new(AtomicU64::new(0));
    let ctl = Arc::new(Control::default());
    let (c2, k2) = (calls.clone(), ctl.clone());
    let counting = resize_relabel().map("count", move |row: Row| {
        // Cancels once some batches went through.
        if c2.fetch_add(1, Ordering::SeqCst) == 90 {
            k2.cancel();
        }
        Ok(row)
    });
    let mut opts = TransformOptions::new(&out);
    opts.tensors = out_tensors();
    opts.num_workers = 2;
    opts.batch_rows = 40;
    let rep = transform::run(&counting, ds_input(&src), &opts, &ctl)
        .await
        .unwrap();
    assert_eq!(rep.commit, None);
    assert!(rep.input_rows > 0 && rep.input_rows < 200, "{rep:?}");
    let staged = rep.input_rows;
    // The target shows its previous commit (the empty root committed first): no rows.
    let t = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(t.len(), 0);
    assert!(t.branches().contains(&rep.staging_branch));
    drop(t);
    let before = calls.load(Ordering::SeqCst);
    let rep2 = transform::run(&counting, ds_input(&src), &opts, &Control::default())
        .await
        .unwrap();
    assert_eq!(rep2.resumed_from, staged);
    assert_eq!(rep2.input_rows, 200);
    // Only the rows not staged were computed again.
    assert_eq!(calls.load(Ordering::SeqCst) - before, 200 - staged);
    let ds = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    assert_eq!(ds.branches(), vec!["main".to_owned()]);

    let mut sopts = TransformOptions::new(&serial);
    sopts.tensors = out_tensors();
    sopts.num_workers = 1;
    transform::run(
        &resize_relabel(),
        ds_input(&src),
        &sopts,
        &Control::default(),
    )
    .await
    .unwrap();
    let s = Dataset::open(&serial, OpenOptions::default())
        .await
        .unwrap();
    assert_eq!(
        int_column(&ds, "labels").await,
        int_column(&s, "labels").await
    );
    assert_eq!(images(&ds).await, images(&s).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_moved_gets_a_merge_commit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut opts = TransformOptions::new(&out);
    opts.tensors = vec![(
        "x".into(),
        TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
    )];
    opts.job = Some("job-1".into());
    opts.batch_rows = 10;
    let ctl = Arc::new(Control::default());
    let k = ctl.clone();
    let p = Pipeline::new().map("cancel_at_25", move |row: Row| {
        if as_int(&row["x"]) == 25 {
            k.cancel();
        }
        Ok(row)
    });
    let iter = || Input::Iter {
        rows: Box::new((0..50i64).map(|i| Row::from([("x".to_owned(), int(i))]))),
        len: Some(50),
    };
    let rep = transform::run(&p, iter(), &opts, &ctl).await.unwrap();
    assert_eq!(rep.commit, None);
    // Someone writes to the target meanwhile.
    {
        let mut t = Dataset::open(&out, OpenOptions::default()).await.unwrap();
        t.create_tensor(
            "x",
            TensorOptions::new("generic").dtype(deeplake_core::Dtype::I64),
        )
        .await
        .unwrap();
        t.extend("x", vec![int(-1), int(-2)]).await.unwrap();
        t.commit("meanwhile").await.unwrap();
    }
    let rep = transform::run(&p, iter(), &opts, &Control::default())
        .await
        .unwrap();
    assert!(!rep.fast_forward);
    assert!(rep.resumed_from > 0);
    let ds = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let mut expect = vec![-1, -2];
    expect.extend(0..50);
    assert_eq!(int_column(&ds, "x").await, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_fly_transforms_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    let ds = Arc::new(source(&src, 50).await);
    let commit = last_commit(&ds).id;
    let mut t = Transformed::open(resize_relabel(), ds_input(&src), 2, 16)
        .await
        .unwrap();
    let mut labels = Vec::new();
    while let Some(batch) = t.next().await {
        for r in batch.unwrap() {
            labels.push(as_int(&r["labels"]));
        }
    }
    assert_eq!(labels, (0..50).map(|i| i % 5).collect::<Vec<_>>());

    // Plugged into the streaming engine: its batches go through the pipeline.
    let spec = StreamSpec {
        batch_size: 8,
        ragged: Ragged::List,
        ..StreamSpec::default()
    };
    let mut s = Stream::open(ds.clone(), None, spec).await.unwrap();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let mut streamed = Vec::new();
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        for r in resize_relabel().apply_to_batch(&pool, &b).await.unwrap() {
            streamed.push(as_int(&r["labels"]));
        }
    }
    assert_eq!(streamed, labels);
    let again = Dataset::open(&src, OpenOptions::default()).await.unwrap();
    assert_eq!(last_commit(&again).id, commit);
    assert!(!again.has_changes());
}

/// deeplake 3.9.52 opens a published transform: one branch, the commit on it after the
/// target's previous one, the rows, the lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeplake_3_reads_a_published_transform() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 40).await;
    let out = dir.path().join("out").to_str().unwrap().to_owned();
    let mut opts = TransformOptions::new(&out);
    opts.tensors = out_tensors();
    opts.num_workers = 3;
    opts.batch_rows = 16;
    let rep = transform::run(
        &resize_relabel(),
        ds_input(&src),
        &opts,
        &Control::default(),
    )
    .await
    .unwrap();
    let commit = rep.commit.unwrap();
    let got = testkit::oracle::dl3_json(
        r#"
ds = deeplake.load(sys.argv[1], read_only=True)
log = [c["commit"] for c in ds.commits]
messages = [c["message"] for c in ds.commits]
labels = [int(x) for x in ds.labels.numpy().ravel()]
shape = list(ds.images[0].numpy().shape)
sums = [int(ds.images[i].numpy().astype("int64").sum()) for i in range(len(ds))]
lineage = ds.info["transform"]
print(json.dumps({"branches": list(ds.branches), "log": log, "messages": messages,
                  "labels": labels, "shape": shape, "sums": sums,
                  "functions": lineage["functions"],
                  "input_rows": lineage["input_rows"]}))
"#,
        [&out],
    );
    assert_eq!(got["branches"], serde_json::json!(["main"]));
    assert_eq!(got["log"][0], serde_json::json!(commit));
    let want: Vec<i64> = (0..40).map(|i| i % 5).collect();
    assert_eq!(got["labels"], serde_json::json!(want));
    assert_eq!(got["shape"], serde_json::json!([4, 4, 3]));
    // Every image, read from the chunks the workers wrote, has the pixels ours reads.
    let ds = Dataset::open(&out, OpenOptions::default()).await.unwrap();
    let sums: Vec<i64> = images(&ds)
        .await
        .iter()
        .map(|s| match s {
            Sample::Array(a) => a.to_f64_vec().iter().sum::<f64>() as i64,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got["sums"], serde_json::json!(sums));
    assert!(
        ds.summary("images").unwrap().num_chunks >= 6,
        "{:?}",
        ds.summary("images")
    );
    assert_eq!(got["functions"], serde_json::json!(["resize_relabel"]));
    assert_eq!(got["log"].as_array().unwrap().len(), 2, "{got}");
    assert_eq!(got["messages"][1], "auto commit before transform");
    assert!(
        got["messages"][0]
            .as_str()
            .unwrap()
            .starts_with("transform resize_relabel from")
    );
    assert_eq!(got["input_rows"], 40);
}

/// Onto the S3 test server: a cancelled run leaves the target, a re-run resumes and
/// publishes one commit equal to a local serial run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_cancelled_run_resumes_and_publishes() {
    let (url, storage) = testkit::storage::s3_url_and_options("transform");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src").to_str().unwrap().to_owned();
    source(&src, 60).await;
    let s3 = OpenOptions {
        storage,
        ..Default::default()
    };
    let ctl = Arc::new(Control::default());
    let k = ctl.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let p = resize_relabel().map("stop_midway", move |row: Row| {
        if c.fetch_add(1, Ordering::SeqCst) == 30 {
            k.cancel();
        }
        Ok(row)
    });
    let mut opts = TransformOptions::new(&url);
    opts.open = s3.clone();
    opts.tensors = out_tensors();
    opts.num_workers = 2;
    opts.batch_rows = 10;
    let rep = transform::run(&p, ds_input(&src), &opts, &ctl)
        .await
        .unwrap();
    assert_eq!(rep.commit, None);
    let t = Dataset::open(&url, s3.clone()).await.unwrap();
    assert_eq!(t.len(), 0);
    drop(t);
    let rep = transform::run(&p, ds_input(&src), &opts, &Control::default())
        .await
        .unwrap();
    assert!(rep.resumed_from > 0 && rep.fast_forward, "{rep:?}");
    let ds = Dataset::open(&url, s3).await.unwrap();
    assert_eq!(ds.branches(), vec!["main".to_owned()]);
    assert_eq!(last_commit(&ds).id, rep.commit.unwrap());

    let local = dir.path().join("local").to_str().unwrap().to_owned();
    let mut lopts = TransformOptions::new(&local);
    lopts.tensors = out_tensors();
    lopts.num_workers = 1;
    transform::run(
        &resize_relabel(),
        ds_input(&src),
        &lopts,
        &Control::default(),
    )
    .await
    .unwrap();
    let l = Dataset::open(&local, OpenOptions::default()).await.unwrap();
    assert_eq!(
        int_column(&ds, "labels").await,
        int_column(&l, "labels").await
    );
    assert_eq!(images(&ds).await, images(&l).await);
}
