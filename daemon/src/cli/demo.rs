//! `deeplake demo PATH`: builds a sample image-classification dataset (synthetic
//! JPEGs of coloured shapes, class labels, a bounding box and a caption per row) on
//! local storage, then prints its summary and first rows. The quickest way to see the
//! whole write and read path work.
//!
//! `--annotations` adds a tensor of every annotation htype the web visualizer draws
//! (masks, keypoints, polygons, points, an embedding, JSON and a three-frame
//! `sequence[image]`) and a second image tensor (`depth`, to compare with), all
//! derived from the same shape, commits the rows and makes a branch `relabel` that
//! changes some labels, deletes the last row and appends five, so the visualizer has
//! versions to compare. The same seed always gives the same dataset.

use std::io::Write;

use anyhow::Context;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};
use image::{ImageEncoder, codecs::jpeg::JpegEncoder};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use super::StorageArgs;

pub const CLASSES: [&str; 4] = ["circle", "square", "triangle", "cross"];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to create the dataset (replaced if it exists).
    pub path: String,
    /// Number of rows.
    #[arg(long, default_value_t = 1000)]
    pub rows: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write masks, keypoints, polygons, points, an embedding, JSON and a
    /// sequence of frames per row, and a second branch `relabel`.
    #[arg(long)]
    pub annotations: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The branch `--annotations` creates.
pub const RELABEL_BRANCH: &str = "relabel";
/// Frames of each row's `clip` sequence.
pub const CLIP_FRAMES: usize = 3;

/// Whether pixel `(dx, dy)` of a `w`-wide box holds the shape of `class`.
fn inside(class: usize, w: i64, dx: i64, dy: i64) -> bool {
    if dx < 0 || dy < 0 || dx >= w || dy >= w {
        return false;
    }
    let (cx, cy, r) = (dx - w / 2, dy - w / 2, w / 2);
    match class {
        0 => cx * cx + cy * cy <= r * r,
        1 => true,
        2 => dx >= (w - dy) / 2 && dx <= (w + dy) / 2,
        _ => cx.abs() < w / 6 || cy.abs() < w / 6,
    }
}

/// One synthetic row: JPEG bytes, class index, LTWH box, caption.
pub fn make_row(rng: &mut StdRng, size: u32) -> anyhow::Result<(Vec<u8>, usize, [f32; 4], String)> {
    let class = rng.random_range(0..CLASSES.len());
    let s = size as i64;
    let w = rng.random_range(s / 4..s / 2);
    let (x0, y0) = (rng.random_range(0..s - w), rng.random_range(0..s - w));
    let fg = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
    let bg = [
        rng.random::<u8>() / 2,
        rng.random::<u8>() / 2,
        rng.random::<u8>() / 2,
    ];
    let jpeg = paint(rng, size, |x, y| inside(class, w, x - x0, y - y0), fg, bg)?;
    let caption = format!("a {} at ({x0}, {y0}), {w} px wide", CLASSES[class]);
    Ok((
        jpeg,
        class,
        [x0 as f32, y0 as f32, w as f32, w as f32],
        caption,
    ))
}

/// A `size`-square JPEG: `fg` where `shape` holds, `bg` elsewhere, with a little noise.
fn paint(
    rng: &mut StdRng,
    size: u32,
    shape: impl Fn(i64, i64) -> bool,
    fg: [u8; 3],
    bg: [u8; 3],
) -> anyhow::Result<Vec<u8>> {
    let s = size as i64;
    let mut px = vec![0u8; (size * size * 3) as usize];
    for y in 0..s {
        for x in 0..s {
            let c = if shape(x, y) { fg } else { bg };
            let o = ((y * s + x) * 3) as usize;
            let noise = rng.random_range(0..12u8);
            for k in 0..3 {
                px[o + k] = c[k].saturating_add(noise);
            }
        }
    }
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90).write_image(
        &px,
        size,
        size,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(jpeg)
}

/// The annotation tensors of `--annotations`, in the order [`annotate`] fills them.
const ANNOTATION_TENSORS: [&str; 9] = [
    "depth",
    "masks",
    "segments",
    "keypoints",
    "polygons",
    "points",
    "embeddings",
    "meta",
    "clip",
];

async fn create_annotation_tensors(ds: &mut Dataset) -> anyhow::Result<()> {
    ds.create_tensor(
        "depth",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await?;
    ds.create_tensor("masks", TensorOptions::new("binary_mask"))
        .await?;
    let mut seg_names = vec!["background"];
    seg_names.extend(CLASSES);
    ds.create_tensor(
        "segments",
        TensorOptions::new("segment_mask").class_names(seg_names),
    )
    .await?;
    let mut kp = TensorOptions::new("keypoints_coco");
    kp.info.insert(
        "keypoints".into(),
        json!(["top_left", "top_right", "bottom_right", "bottom_left"]),
    );
    // COCO numbers keypoints from 1 in its connections.
    kp.info.insert(
        "connections".into(),
        json!([[1, 2], [2, 3], [3, 4], [4, 1]]),
    );
    ds.create_tensor("keypoints", kp).await?;
    ds.create_tensor("polygons", TensorOptions::new("polygon"))
        .await?;
    ds.create_tensor("points", TensorOptions::new("point"))
        .await?;
    ds.create_tensor(
        "embeddings",
        TensorOptions::new("embedding").dtype(Dtype::F32),
    )
    .await?;
    ds.create_tensor("meta", TensorOptions::new("json")).await?;
    ds.create_tensor(
        "clip",
        TensorOptions::new("sequence[image]").sample_compression("jpeg"),
    )
    .await?;
    Ok(())
}

/// The annotation samples of one row (see [`ANNOTATION_TENSORS`]): a grey "depth"
/// image (the shape near, the background far), the shape's mask,
/// its class in a segment mask, the box corners as keypoints, a triangle polygon, the
/// box centre as a point, an embedding, a JSON record and a clip of the shape moving.
fn annotate(
    rng: &mut StdRng,
    size: u32,
    class: usize,
    bb: [f32; 4],
) -> anyhow::Result<Vec<Sample>> {
    let s = size as usize;
    let (x0, y0, w) = (bb[0] as i64, bb[1] as i64, bb[2] as i64);
    let mut mask = vec![0u8; s * s];
    let mut seg = vec![0u32; s * s];
    for y in 0..s {
        for x in 0..s {
            if inside(class, w, x as i64 - x0, y as i64 - y0) {
                mask[y * s + x] = 1;
                seg[y * s + x] = class as u32 + 1;
            }
        }
    }
    let (x1, y1) = (x0 + w - 1, y0 + w - 1);
    let corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)];
    let kp: Vec<i32> = corners
        .iter()
        .flat_map(|&(x, y)| [x as i32, y as i32, 2])
        .collect();
    let tri = [
        (x0 + w / 2) as f32,
        y0 as f32,
        x1 as f32,
        y1 as f32,
        x0 as f32,
        y1 as f32,
    ];
    let emb: Vec<f32> = (0..16).map(|_| rng.random_range(-1.0..1.0f32)).collect();
    let fg = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
    let bg = [20, 20, 20];
    let step = (s as i64 - w) / CLIP_FRAMES as i64;
    let frames = (0..CLIP_FRAMES as i64)
        .map(|k| {
            let fx = k * step;
            paint(rng, size, |x, y| inside(class, w, x - fx, y - y0), fg, bg).map(|jpeg| {
                Sample::Encoded {
                    bytes: jpeg.into(),
                    compression: Compression::Jpeg,
                    shape: None,
                }
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let depth_px: Vec<u8> = mask
        .iter()
        .map(|&m| if m == 1 { 220 } else { 40 })
        .collect();
    let mut depth = Vec::new();
    JpegEncoder::new_with_quality(&mut depth, 90).write_image(
        &depth_px,
        size,
        size,
        image::ExtendedColorType::L8,
    )?;
    Ok(vec![
        Sample::Encoded {
            bytes: depth.into(),
            compression: Compression::Jpeg,
            shape: None,
        },
        Sample::Array(NdArray::new(Dtype::Bool, vec![s, s, 1], mask)?),
        Sample::Array(NdArray::from_slice(vec![s, s], &seg)?),
        Sample::Array(NdArray::from_slice(vec![12, 1], &kp)?),
        Sample::Polygons(vec![NdArray::from_slice(vec![3, 2], &tri)?]),
        Sample::Array(NdArray::from_slice(
            vec![1, 2],
            &[(x0 + w / 2) as i32, (y0 + w / 2) as i32],
        )?),
        Sample::Array(NdArray::from_slice(vec![16], &emb)?),
        Sample::Json(json!({"class": CLASSES[class], "side": w, "left": x0, "top": y0})),
        Sample::Sequence(frames),
    ])
}

/// Writes `rows` rows generated from `rng` (annotated ones with `annotations`).
async fn write_rows(
    ds: &mut Dataset,
    rng: &mut StdRng,
    rows: usize,
    size: u32,
    annotations: bool,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(256);
        let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
        let rows = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            seeds
                .into_par_iter()
                .map(|s| {
                    let mut rng = StdRng::seed_from_u64(s);
                    let row = make_row(&mut rng, size)?;
                    let extra = if annotations {
                        annotate(&mut rng, size, row.1, row.2)?
                    } else {
                        Vec::new()
                    };
                    Ok((row, extra))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut bbs = Vec::with_capacity(n);
        let mut caps = Vec::with_capacity(n);
        let mut extra: Vec<Vec<Sample>> = vec![Vec::with_capacity(n); ANNOTATION_TENSORS.len()];
        for ((jpeg, class, bb, cap), more) in rows {
            images.push(Sample::Encoded {
                bytes: jpeg.into(),
                compression: Compression::Jpeg,
                shape: None,
            });
            labels.push(Sample::Text(CLASSES[class].to_owned()));
            bbs.push(Sample::Array(NdArray::from_slice(vec![1, 4], &bb)?));
            caps.push(Sample::Text(cap));
            for (col, sample) in extra.iter_mut().zip(more) {
                col.push(sample);
            }
        }
        ds.extend("images", images).await?;
        ds.extend("labels", labels).await?;
        ds.extend("boxes", bbs).await?;
        ds.extend("captions", caps).await?;
        if annotations {
            for (name, col) in ANNOTATION_TENSORS.iter().zip(extra) {
                ds.extend(name, col).await?;
            }
        }
        done += n;
    }
    Ok(())
}

/// `--annotations`' history: the rows committed on `main`, then a branch that gives
/// every fifth of the first 50 rows the next class, deletes the last row and appends
/// five.
async fn make_relabel_branch(
    ds: &mut Dataset,
    rng: &mut StdRng,
    rows: usize,
    size: u32,
) -> anyhow::Result<()> {
    ds.commit("demo rows").await?;
    ds.checkout(RELABEL_BRANCH, true).await?;
    for i in (0..rows.min(50)).step_by(5) {
        let Sample::Array(old) = ds.read("labels", i as u64).await? else {
            anyhow::bail!("labels row {i} is not a class index");
        };
        let k = old.to_f64_vec().first().copied().unwrap_or(0.0) as usize;
        let next = CLASSES[(k + 1) % CLASSES.len()];
        ds.update("labels", i as u64, Sample::Text(next.to_owned()))
            .await?;
    }
    // The last row goes (rows before it keep their numbers), then five new ones come.
    ds.pop(None).await?;
    write_rows(ds, rng, 5, size, true).await?;
    ds.commit("relabel every fifth row, replace the last row by five new ones")
        .await?;
    ds.checkout("main", false).await?;
    Ok(())
}

pub async fn run(a: &DemoArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(a.size >= 16, "--size must be at least 16");
    let mut opts = a.storage.open_options()?;
    opts.overwrite = true;
    let start = std::time::Instant::now();
    let mut ds = Dataset::create(&a.path, OpenOptions { ..opts.clone() })
        .await
        .with_context(|| format!("creating {}", a.path))?;
    ds.create_tensor(
        "images",
        TensorOptions::new("image").sample_compression("jpeg"),
    )
    .await?;
    ds.create_tensor(
        "labels",
        TensorOptions::new("class_label").class_names(CLASSES),
    )
    .await?;
    let mut boxes = TensorOptions::new("bbox");
    boxes
        .info
        .insert("coords".into(), json!({"type": "pixel", "mode": "LTWH"}));
    ds.create_tensor("boxes", boxes).await?;
    ds.create_tensor("captions", TensorOptions::new("text"))
        .await?;
    if a.annotations {
        create_annotation_tensors(&mut ds).await?;
    }
    let mut rng = StdRng::seed_from_u64(a.seed);
    write_rows(&mut ds, &mut rng, a.rows, a.size, a.annotations).await?;
    if a.annotations {
        make_relabel_branch(&mut ds, &mut rng, a.rows, a.size).await?;
    }
    // Closing gives the branch's writer lease back, so the next command can write.
    ds.close().await?;
    let secs = start.elapsed().as_secs_f64();
    writeln!(
        out,
        "wrote {} rows to {} in {secs:.2} s ({:.0} rows/s)\n",
        a.rows,
        a.path,
        a.rows as f64 / secs
    )?;
    let info = super::info::InfoArgs {
        path: a.path.clone(),
        json: false,
        storage: a.storage.clone(),
    };
    super::info::run(&info, out).await?;
    writeln!(
        out,
        "\nfirst rows (deeplake dump {} --rows 0:3 --tensors labels,boxes,captions):",
        a.path
    )?;
    let dump = super::dump::DumpArgs {
        path: a.path.clone(),
        tensors: vec!["labels".into(), "boxes".into(), "captions".into()],
        rows: Some("0:3".into()),
        full: false,
        stored: false,
        meta: false,
        resolve_links: false,
        storage: a.storage.clone(),
    };
    super::dump::run(&dump, out).await
}
