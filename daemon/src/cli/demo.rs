//! `deeplake demo PATH`: builds a sample image-classification dataset (synthetic
//! JPEGs of coloured shapes, class labels, a bounding box and a caption per row) on
//! local storage, then prints its summary and first rows. The quickest way to see the
//! whole write and read path work.

use std::io::Write;

use anyhow::Context;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, NdArray, OpenOptions, Sample, TensorOptions};
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
    #[command(flatten)]
    pub storage: StorageArgs,
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
    let mut px = vec![0u8; (size * size * 3) as usize];
    for y in 0..s {
        for x in 0..s {
            let (dx, dy) = (x - x0, y - y0);
            let inside = dx >= 0 && dy >= 0 && dx < w && dy < w && {
                let (cx, cy, r) = (dx - w / 2, dy - w / 2, w / 2);
                match class {
                    0 => cx * cx + cy * cy <= r * r,
                    1 => true,
                    2 => dx >= (w - dy) / 2 && dx <= (w + dy) / 2,
                    _ => cx.abs() < w / 6 || cy.abs() < w / 6,
                }
            };
            let c = if inside { fg } else { bg };
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
    let caption = format!("a {} at ({x0}, {y0}), {w} px wide", CLASSES[class]);
    Ok((
        jpeg,
        class,
        [x0 as f32, y0 as f32, w as f32, w as f32],
        caption,
    ))
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
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut done = 0;
    while done < a.rows {
        let n = (a.rows - done).min(256);
        let seeds: Vec<u64> = (0..n).map(|_| rng.random()).collect();
        let size = a.size;
        let rows = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            seeds
                .into_par_iter()
                .map(|s| make_row(&mut StdRng::seed_from_u64(s), size))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await??;
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut bbs = Vec::with_capacity(n);
        let mut caps = Vec::with_capacity(n);
        for (jpeg, class, bb, cap) in rows {
            images.push(Sample::Encoded {
                bytes: jpeg.into(),
                compression: Compression::Jpeg,
                shape: None,
            });
            labels.push(Sample::Text(CLASSES[class].to_owned()));
            bbs.push(Sample::Array(NdArray::from_slice(vec![1, 4], &bb)?));
            caps.push(Sample::Text(cap));
        }
        ds.extend("images", images).await?;
        ds.extend("labels", labels).await?;
        ds.extend("boxes", bbs).await?;
        ds.extend("captions", caps).await?;
        done += n;
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
