//! `deeplake import` end to end: inputs are generated in temporary folders, the CLI
//! arguments are parsed as the binary parses them, and the resulting dataset is read
//! back through deeplake-core.

use std::io::Cursor;
use std::path::Path;

use clap::Parser;
use deeplake_core::{Dataset, Dtype, OpenOptions, Sample};
use deeplake_daemon::cli::{Cli, Command, import};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage, RgbaImage};
use serde_json::json;

fn args(v: &[&str]) -> import::ImportArgs {
    let mut full = vec!["deeplake", "import"];
    full.extend_from_slice(v);
    match Cli::try_parse_from(full).unwrap().command {
        Command::Import(a) => a,
        other => panic!("parsed as {other:?}"),
    }
}

async fn run(v: &[&str]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    import::run(&args(v), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

async fn run_err(v: &[&str]) -> String {
    format!("{:#}", run(v).await.expect_err("the import should fail"))
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    img.write_to(&mut c, format).unwrap();
    c.into_inner()
}

fn rgb(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            seed.wrapping_add((x as u8).wrapping_mul(20)),
            (y as u8).wrapping_mul(30),
            seed ^ (x + y) as u8,
        ])
    })
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

async fn open(path: &str) -> Dataset {
    Dataset::open(path, OpenOptions::default()).await.unwrap()
}

fn array(s: Sample) -> deeplake_core::NdArray {
    match s {
        Sample::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

async fn labels(ds: &Dataset) -> Vec<f64> {
    let mut out = Vec::new();
    for s in ds
        .read_range("labels", 0..ds.tensor_len("labels").unwrap())
        .await
        .unwrap()
    {
        out.extend(array(s).to_f64_vec());
    }
    out
}

fn exists(path: &Path) -> bool {
    path.join("dataset_meta.json").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_with_mostly_jpeg_keeps_jpeg_bytes() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let jpegs: Vec<(&str, Vec<u8>)> = vec![
        (
            "ants/a1.jpg",
            encode(rgb(8, 6, 1).into(), ImageFormat::Jpeg),
        ),
        (
            "ants/a2.jpeg",
            encode(rgb(5, 7, 2).into(), ImageFormat::Jpeg),
        ),
        (
            "bees/b1.JPG",
            encode(
                GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * y * 10) as u8])).into(),
                ImageFormat::Jpeg,
            ),
        ),
        (
            "cats/c1.Jpeg",
            encode(rgb(9, 3, 3).into(), ImageFormat::Jpeg),
        ),
    ];
    for (rel, b) in &jpegs {
        write(s, rel, b);
    }
    let rgba = RgbaImage::from_fn(4, 3, |x, y| {
        image::Rgba([x as u8 * 60, y as u8 * 80, 200, 7])
    });
    write(s, "bees/b2.png", &encode(rgba.into(), ImageFormat::Png));
    write(
        s,
        "cats/c2.PNG",
        &encode(rgb(6, 6, 4).into(), ImageFormat::Png),
    );
    write(s, "cats/notes.txt", b"not an image");
    write(s, "README.md", b"top-level files are skipped");

    let dst = tempfile::tempdir().unwrap();
    let path = dst.path().join("ds");
    let path_s = path.to_str().unwrap();
    let out = run(&[path_s, "--from-folder", s.to_str().unwrap(), "--batch", "4"])
        .await
        .unwrap();
    assert!(
        out.contains("3 classes: ants, bees, cats; skipped 2 files"),
        "{out}"
    );
    assert!(
        out.contains("images stored as jpeg; re-encoded 2 png files"),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("imported 6 rows (") && last.contains("samples/s"),
        "{out}"
    );

    let ds = open(path_s).await;
    assert_eq!(ds.tensor_names(), ["images", "labels"]);
    assert_eq!(ds.len(), 6);
    assert_eq!(
        ds.summary("labels").unwrap().class_names,
        ["ants", "bees", "cats"]
    );
    assert_eq!(ds.summary("images").unwrap().htype, "image");
    assert_eq!(
        ds.tensor_meta("images")
            .unwrap()
            .sample_compression
            .as_deref(),
        Some("jpeg")
    );
    // Rows: ants a1, a2; bees b1, b2; cats c1, c2 (path order inside a class).
    assert_eq!(labels(&ds).await, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
    for (row, (_, bytes)) in [0u64, 1, 2, 4].into_iter().zip(&jpegs) {
        let (_, stored) = ds.read_stored("images", row).await.unwrap();
        assert_eq!(&stored[..], &bytes[..], "row {row}");
    }
    // The PNGs were re-encoded as JPEG; RGBA lost its alpha channel.
    let (shape, stored) = ds.read_stored("images", 3).await.unwrap();
    assert_eq!(
        (shape, &stored[..3]),
        (vec![3, 4, 3], &[0xff, 0xd8, 0xff][..])
    );
    assert_eq!(
        array(ds.read("images", 5).await.unwrap()).shape,
        vec![6, 6, 3]
    );
    assert_eq!(
        array(ds.read("images", 2).await.unwrap()).shape,
        vec![4, 4, 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_with_mostly_png_keeps_pixels_exactly() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let a = rgb(7, 5, 9);
    let g = GrayImage::from_fn(3, 8, |x, y| image::Luma([(x * 70 + y) as u8]));
    let r = RgbaImage::from_fn(2, 2, |x, y| {
        image::Rgba([1, 2, (x * 100) as u8, (y * 100 + 5) as u8])
    });
    write(s, "x/1.png", &encode(a.clone().into(), ImageFormat::Png));
    write(s, "x/2.png", &encode(g.clone().into(), ImageFormat::Png));
    write(s, "y/3.png", &encode(r.clone().into(), ImageFormat::Png));
    write(
        s,
        "y/4.jpg",
        &encode(rgb(4, 4, 0).into(), ImageFormat::Jpeg),
    );
    let dst = tempfile::tempdir().unwrap();
    let path_s = dst.path().to_str().unwrap();
    let out = run(&[path_s, "--from-folder", s.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        out.contains("images stored as png; re-encoded 1 jpeg file"),
        "{out}"
    );
    let ds = open(path_s).await;
    assert_eq!(
        ds.tensor_meta("images")
            .unwrap()
            .sample_compression
            .as_deref(),
        Some("png")
    );
    assert_eq!(labels(&ds).await, [0.0, 0.0, 1.0, 1.0]);
    let expect: [(&[u8], Vec<usize>); 3] = [
        (a.as_raw(), vec![5, 7, 3]),
        (g.as_raw(), vec![8, 3, 1]),
        (r.as_raw(), vec![2, 2, 4]),
    ];
    for (row, (pixels, shape)) in expect.iter().enumerate() {
        let got = array(ds.read("images", row as u64).await.unwrap());
        assert_eq!((got.dtype, &got.shape), (Dtype::U8, shape), "row {row}");
        assert_eq!(&got.data[..], *pixels, "row {row}");
    }
    let (_, stored) = ds.read_stored("images", 3).await.unwrap();
    assert_eq!(&stored[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        array(ds.read("images", 3).await.unwrap()).shape,
        vec![4, 4, 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_errors_name_the_path_and_write_nothing() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let dst = tempfile::tempdir().unwrap();
    let path = dst.path().join("ds");
    let path_s = path.to_str().unwrap();

    let missing = s.join("missing");
    let e = run_err(&[path_s, "--from-folder", missing.to_str().unwrap()]).await;
    assert!(
        e.contains(missing.to_str().unwrap()) && e.contains("no such folder"),
        "{e}"
    );
    write(s, "file.txt", b"x");
    let file = s.join("file.txt");
    let e = run_err(&[path_s, "--from-folder", file.to_str().unwrap()]).await;
    assert!(e.contains("file.txt: not a folder"), "{e}");
    write(s, "empty/cls/readme.txt", b"x");
    let e = run_err(&[path_s, "--from-folder", s.join("empty").to_str().unwrap()]).await;
    assert!(e.contains("no .jpg, .jpeg or .png images"), "{e}");

    let good = encode(rgb(4, 4, 1).into(), ImageFormat::Jpeg);
    write(s, "imgs/a/1.jpg", &good);
    write(s, "imgs/a/2.jpg", &good);
    write(
        s,
        "imgs/b/bad.jpg",
        b"\xff\xd8\xff\xe0 this is not really a jpeg",
    );
    let e = run_err(&[path_s, "--from-folder", s.join("imgs").to_str().unwrap()]).await;
    assert!(
        e.contains("corrupt image file") && e.contains("bad.jpg"),
        "{e}"
    );
    assert!(!path.exists(), "nothing may be created: {e}");

    // An existing dataset is refused without --overwrite and left as it was, also when
    // --overwrite is given but the source is corrupt.
    std::fs::remove_file(s.join("imgs/b/bad.jpg")).unwrap();
    write(s, "imgs/b/3.jpg", &good);
    run(&[path_s, "--from-folder", s.join("imgs").to_str().unwrap()])
        .await
        .unwrap();
    write(s, "imgs/b/4.jpg", &good);
    let e = run_err(&[path_s, "--from-folder", s.join("imgs").to_str().unwrap()]).await;
    assert!(
        e.contains("already holds a dataset") && e.contains("--overwrite"),
        "{e}"
    );
    write(s, "imgs/b/bad.png", b"\x89PNG\r\n\x1a\nbroken");
    let e = run_err(&[
        path_s,
        "--from-folder",
        s.join("imgs").to_str().unwrap(),
        "--overwrite",
    ])
    .await;
    assert!(e.contains("bad.png"), "{e}");
    assert_eq!(open(path_s).await.len(), 3);
    std::fs::remove_file(s.join("imgs/b/bad.png")).unwrap();
    run(&[
        path_s,
        "--from-folder",
        s.join("imgs").to_str().unwrap(),
        "--overwrite",
    ])
    .await
    .unwrap();
    assert_eq!(open(path_s).await.len(), 4);
    assert!(exists(&path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_some_batches_says_what_was_imported() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    for rel in ["a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg", "c/5.jpg"] {
        write(s, rel, &encode(rgb(4, 4, 1).into(), ImageFormat::Jpeg));
    }
    // A PNG whose header is fine but whose pixel data is cut off: it passes the header
    // check and fails when it is decoded for re-encoding, in the last batch.
    let png = encode(rgb(16, 16, 2).into(), ImageFormat::Png);
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    write(s, "c/6.png", &png[..idat + 7]);
    let dst = tempfile::tempdir().unwrap();
    let path_s = dst.path().to_str().unwrap();
    let e = run_err(&[path_s, "--from-folder", s.to_str().unwrap(), "--batch", "2"]).await;
    assert!(e.contains("stopped: 4 of 6 rows were written"), "{e}");
    assert!(e.contains("6.png"), "{e}");
    let ds = open(path_s).await;
    assert_eq!(ds.len(), 4);
    assert_eq!(labels(&ds).await, [0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn cli_needs_exactly_one_source() {
    let parse = |v: &[&str]| {
        let mut full = vec!["deeplake", "import", "ds"];
        full.extend_from_slice(v);
        Cli::try_parse_from(full)
    };
    assert!(parse(&[]).is_err());
    assert!(parse(&["--from-coco", "a.json"]).is_err());
    assert!(
        parse(&[
            "--from-folder",
            "d",
            "--from-coco",
            "a.json",
            "--images",
            "i"
        ])
        .is_err()
    );
    assert!(parse(&["--from-folder", "d", "--batch", "0"]).is_err());
    let a = args(&["ds", "--from-folder", "d"]);
    assert_eq!((a.batch, a.overwrite), (256, false));
}

/// Three 6x5 images: two PNG, one JPEG without annotations, ids out of file order.
fn coco_inputs(root: &Path) -> (RgbImage, RgbImage, serde_json::Value) {
    let a = rgb(6, 5, 1);
    let b = rgb(6, 5, 2);
    write(
        root,
        "imgs/a.png",
        &encode(a.clone().into(), ImageFormat::Png),
    );
    write(
        root,
        "imgs/sub/b.png",
        &encode(b.clone().into(), ImageFormat::Png),
    );
    write(
        root,
        "imgs/c.jpg",
        &encode(rgb(6, 5, 3).into(), ImageFormat::Jpeg),
    );
    let ann = json!({
        "info": {"description": "hand-made"},
        "images": [
            {"id": 30, "file_name": "c.jpg", "width": 6, "height": 5},
            {"id": 10, "file_name": "a.png", "width": 6, "height": 5},
            {"id": 20, "file_name": "sub/b.png"},
        ],
        "categories": [{"id": 5, "name": "person"}, {"id": 1, "name": "bike"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 4, "image_id": 20, "category_id": 1, "bbox": [0, 0, 6, 5], "area": 15, "iscrowd": 0,
             "segmentation": [[0, 0, 6, 0, 0, 5]]},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [1, 0, 1, 5], "area": 5, "iscrowd": 1,
             "segmentation": {"counts": [5, 5, 20], "size": [5, 6]}},
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1, 1, 3, 2], "area": 6.0, "iscrowd": 0,
             "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            {"id": 3, "image_id": 20, "category_id": 3, "bbox": [0.5, 0.25, 2.125, 1.75], "area": 2.5, "iscrowd": 1,
             "segmentation": {"counts": "1130e0", "size": [5, 6]}},
        ],
    });
    (a, b, ann)
}

fn mask_plane(m: &deeplake_core::NdArray, k: usize) -> Vec<String> {
    let (h, w, n) = (m.shape[0], m.shape[1], m.shape[2]);
    (0..h)
        .map(|r| {
            (0..w)
                .map(|c| {
                    if m.data[(r * w + c) * n + k] == 1 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coco_file_imports_boxes_categories_and_masks() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let (a, b, ann) = coco_inputs(s);
    write(s, "ann.json", ann.to_string().as_bytes());
    let dst = tempfile::tempdir().unwrap();
    let path_s = dst.path().to_str().unwrap();
    let ann_p = s.join("ann.json");
    let imgs = s.join("imgs");
    let out = run(&[
        path_s,
        "--from-coco",
        ann_p.to_str().unwrap(),
        "--images",
        imgs.to_str().unwrap(),
        "--batch",
        "2",
    ])
    .await
    .unwrap();
    assert!(out.contains("4 annotations in 3 categories"), "{out}");
    assert!(
        out.contains("images stored as png; re-encoded 1 jpeg file"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with("imported 3 rows ("),
        "{out}"
    );

    let ds = open(path_s).await;
    assert_eq!(
        ds.tensor_names(),
        ["images", "boxes", "categories", "masks", "areas", "iscrowd"]
    );
    assert_eq!(ds.len(), 3);
    assert_eq!(
        ds.summary("categories").unwrap().class_names,
        ["bike", "car", "person"]
    );
    assert_eq!(
        ds.tensor_info("boxes").unwrap().get("coords"),
        Some(&json!({"type": "pixel", "mode": "LTWH"}))
    );
    let masks_meta = ds.tensor_meta("masks").unwrap();
    assert_eq!(
        (masks_meta.htype.as_str(), masks_meta.dtype.as_deref()),
        ("binary_mask", Some("bool"))
    );
    assert_eq!(masks_meta.sample_compression.as_deref(), Some("lz4"));
    assert_eq!(
        ds.tensor_meta("boxes").unwrap().dtype.as_deref(),
        Some("float32")
    );
    assert_eq!(
        ds.tensor_meta("areas").unwrap().dtype.as_deref(),
        Some("float32")
    );
    assert_eq!(
        ds.tensor_meta("iscrowd").unwrap().dtype.as_deref(),
        Some("uint8")
    );

    // Row 0 = image 10 (annotations 1, 2), row 1 = image 20 (3, 4), row 2 = image 30.
    for (row, img) in [(0u64, &a), (1, &b)] {
        assert_eq!(
            &array(ds.read("images", row).await.unwrap()).data[..],
            img.as_raw().as_slice()
        );
    }
    let (_, stored) = ds.read_stored("images", 2).await.unwrap();
    assert_eq!(&stored[..4], b"\x89PNG");

    let dsr = &ds;
    let boxes = |row| async move { array(dsr.read("boxes", row).await.unwrap()) };
    let b0 = boxes(0).await;
    assert_eq!((b0.dtype, b0.shape.clone()), (Dtype::F32, vec![2, 4]));
    assert_eq!(b0.to_f64_vec(), [1.0, 1.0, 3.0, 2.0, 1.0, 0.0, 1.0, 5.0]);
    assert_eq!(
        boxes(1).await.to_f64_vec(),
        [0.5, 0.25, 2.125, 1.75, 0.0, 0.0, 6.0, 5.0]
    );
    assert_eq!(boxes(2).await.shape, vec![0, 4]);

    let col =
        |t: &'static str, row| async move { array(dsr.read(t, row).await.unwrap()).to_f64_vec() };
    assert_eq!(col("categories", 0).await, [2.0, 1.0]);
    assert_eq!(col("categories", 1).await, [1.0, 0.0]);
    assert!(col("categories", 2).await.is_empty());
    assert_eq!(col("areas", 0).await, [6.0, 5.0]);
    assert_eq!(col("areas", 1).await, [2.5, 15.0]);
    assert_eq!(col("iscrowd", 0).await, [0.0, 1.0]);
    assert_eq!(col("iscrowd", 1).await, [1.0, 0.0]);
    assert!(col("areas", 2).await.is_empty() && col("iscrowd", 2).await.is_empty());

    let m0 = array(ds.read("masks", 0).await.unwrap());
    assert_eq!((m0.dtype, m0.shape.clone()), (Dtype::Bool, vec![5, 6, 2]));
    // Annotation 1: the rectangle x in [1, 4), y in [1, 3) sampled at pixel centres.
    assert_eq!(
        mask_plane(&m0, 0),
        ["000000", "011100", "011100", "000000", "000000"]
    );
    // Annotation 2: runs 5 zeros, 5 ones, 20 zeros, column-major: all of column 1.
    assert_eq!(
        mask_plane(&m0, 1),
        ["010000", "010000", "010000", "010000", "010000"]
    );
    let m1 = array(ds.read("masks", 1).await.unwrap());
    assert_eq!(m1.shape, vec![5, 6, 2]);
    // Annotation 3: "1130e0" = runs 1, 1, 3, 1 (stored as 0 + the run two before), 24
    // (21 + 3): pixel 1 = (row 1, col 0) and pixel 5 = (row 0, col 1).
    assert_eq!(
        mask_plane(&m1, 0),
        ["010000", "100000", "000000", "000000", "000000"]
    );
    // Annotation 4: the triangle (0,0) (6,0) (0,5); its hypotenuse crosses the row
    // centres at x = 5.4, 4.2, 3.0, 1.8, 0.6.
    assert_eq!(
        mask_plane(&m1, 1),
        ["111110", "111100", "111000", "110000", "100000"]
    );
    let m2 = array(ds.read("masks", 2).await.unwrap());
    assert_eq!((m2.shape.clone(), m2.data.len()), (vec![5, 6, 0], 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coco_errors_name_the_entry_and_write_nothing() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let (_, _, ann) = coco_inputs(s);
    let dst = tempfile::tempdir().unwrap();
    let path = dst.path().join("ds");
    let path_s = path.to_str().unwrap();
    let imgs = s.join("imgs");
    let ann_p = s.join("ann.json");
    let try_with = |v: serde_json::Value| {
        write(s, "ann.json", v.to_string().as_bytes());
        let (p, a, i) = (
            path_s.to_owned(),
            ann_p.to_str().unwrap().to_owned(),
            imgs.to_str().unwrap().to_owned(),
        );
        async move { run_err(&[&p, "--from-coco", &a, "--images", &i]).await }
    };

    let mut v = ann.clone();
    v["annotations"][2]["category_id"] = json!(77);
    let e = try_with(v).await;
    assert!(
        e.contains("annotation 1: category_id 77 is not the id"),
        "{e}"
    );
    let mut v = ann.clone();
    v["annotations"][0]["bbox"] = json!([1, 2, 3]);
    let e = try_with(v).await;
    assert!(
        e.contains("annotation 4: \"bbox\" must be 4 numbers"),
        "{e}"
    );
    let mut v = ann.clone();
    v.as_object_mut().unwrap().remove("annotations");
    assert!(try_with(v).await.contains("missing key \"annotations\""));
    let mut v = ann.clone();
    v["images"][2]["file_name"] = json!("sub/missing.png");
    let e = try_with(v).await;
    assert!(e.contains("image 20") && e.contains("missing.png"), "{e}");
    let mut v = ann.clone();
    v["images"][1]["width"] = json!(7);
    let e = try_with(v).await;
    assert!(
        e.contains("image 10") && e.contains("gives 7x5, the file is 6x5"),
        "{e}"
    );
    let mut v = ann.clone();
    v["annotations"][1]["segmentation"] = json!({"counts": [5, 5, 19], "size": [5, 6]});
    let e = try_with(v).await;
    assert!(e.contains("annotation 2: RLE runs cover 29 pixels"), "{e}");
    let mut v = ann.clone();
    v["annotations"][3]["segmentation"] = json!({"counts": "1130e0", "size": [6, 5]});
    let e = try_with(v).await;
    assert!(
        e.contains("annotation 3: RLE size [6, 5] is not the size of image 20"),
        "{e}"
    );
    assert!(!path.exists(), "nothing may be created");

    let e = run_err(&[
        path_s,
        "--from-coco",
        s.join("nope.json").to_str().unwrap(),
        "--images",
        imgs.to_str().unwrap(),
    ])
    .await;
    assert!(e.contains("nope.json"), "{e}");
    write(s, "ann.json", ann.to_string().as_bytes());
    let e = run_err(&[
        path_s,
        "--from-coco",
        ann_p.to_str().unwrap(),
        "--images",
        s.join("no-dir").to_str().unwrap(),
    ])
    .await;
    assert!(e.contains("--images") && e.contains("no-dir"), "{e}");
    assert!(!path.exists(), "nothing may be created");
}
