//! `deeplake transform (SRC[@ref] | --meta FILE.jsonl) --to OUT [--resize HxW]
//! [--relabel-mod K] [--workers N] [--batch-rows N] [--job NAME]`: the built-in
//! resize-and-relabel pipeline run through core's `transform` (a bounded rayon pool,
//! one commit at the end).
//!
//! Input: a dataset with an image tensor and an integer label tensor (`--image-tensor`,
//! `--label-tensor`), or a JSON-lines file of `{"file", "label"}` (paths relative to
//! the file), as `bench/gen_data.py` writes. Output: `images` (image, jpeg) resized to
//! HxW and `labels` (class_label) set to label % K. Progress goes to stderr (a bar on
//! a terminal, log lines otherwise); the report is one JSON object on stdout. Ctrl-C
//! stops after the batch in flight; the same command again resumes, as after a crash.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use deeplake_core::format::compression::{Compression, decode_sample, encode_sample};
use deeplake_core::runtime::Control;
use deeplake_core::stream::Transform;
use deeplake_core::stream::transform::{SampleAt, apply};
use deeplake_core::transform::{self, Input, Pipeline, Row, Rows, TransformOptions};
use deeplake_core::{Error, NdArray, Sample, TensorOptions};

use super::StorageArgs;
use super::import::progress::run_cancellable;

#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    /// Source dataset path or URL (`PATH@ref` reads a branch, commit or tag).
    #[arg(required_unless_present = "meta", conflicts_with = "meta")]
    pub path: Option<String>,
    /// Read JSON lines of {"file", "label"} instead of a dataset.
    #[arg(long, value_name = "FILE.jsonl")]
    pub meta: Option<PathBuf>,
    /// The output dataset's path or URL (created if absent; its branch gets one commit).
    #[arg(long, value_name = "OUT")]
    pub to: String,
    /// Branch of the output that receives the commit.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Resize images to HxW.
    #[arg(long, default_value = "128x128", value_parser = parse_size)]
    pub resize: (usize, usize),
    /// New label = label % K.
    #[arg(long, default_value_t = 5)]
    pub relabel_mod: i64,
    #[arg(long, default_value = "images")]
    pub image_tensor: String,
    #[arg(long, default_value = "labels")]
    pub label_tensor: String,
    /// Threads running the pipeline (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Most input rows per durable batch.
    #[arg(long, default_value_t = 512)]
    pub batch_rows: usize,
    /// Names the run so that an interrupted --meta run can be resumed.
    #[arg(long)]
    pub job: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?} is not a size HxW (e.g. 128x128)");
    let (h, w) = s.split_once('x').ok_or_else(bad)?;
    Ok((
        h.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    ))
}

/// The built-in pipeline: decode, resize to `h x w`, label % `k`.
pub fn resize_relabel(image: &str, label: &str, (h, w): (usize, usize), k: i64) -> Pipeline {
    let (image, label) = (image.to_owned(), label.to_owned());
    let resize = [Transform::Resize {
        height: h,
        width: w,
    }];
    Pipeline::new().map("resize_relabel", move |mut row: Row| {
        let img = row
            .remove(&image)
            .ok_or_else(|| Error::invalid(format!("the row has no tensor {image}")))?;
        let img = match img {
            Sample::Encoded {
                bytes, compression, ..
            } => Sample::Array(decode_sample(
                &bytes,
                &compression,
                deeplake_core::Dtype::U8,
                &[1],
            )?),
            other => other,
        };
        let small = match img {
            Sample::Array(a) if a.dtype == deeplake_core::Dtype::U8 && a.shape.len() == 3 => {
                Sample::Array(resize_u8(&a, h, w)?)
            }
            other => {
                let at = SampleAt {
                    tensor: &image,
                    row: 0,
                    seed: 0,
                    epoch: 0,
                };
                apply(&resize, other, at)?
            }
        };
        let l = match row.get(&label) {
            Some(Sample::Array(a)) => a.to_f64_vec().first().copied().unwrap_or(0.0) as i64,
            _ => return Err(Error::invalid(format!("the row has no number in {label}"))),
        };
        let new = u32::try_from(l.rem_euclid(k.max(1))).map_err(Error::internal)?;
        // Encoded here, on the worker pool, so the one writer only stores bytes.
        let small = match small {
            Sample::Array(a) => Sample::Encoded {
                bytes: encode_sample(&a, &Compression::Jpeg)?.into(),
                compression: Compression::Jpeg,
                shape: Some(a.shape.clone()),
            },
            other => other,
        };
        Ok(Row::from([
            ("images".to_owned(), small),
            ("labels".to_owned(), Sample::Array(NdArray::scalar(new))),
        ]))
    })
}

/// Fixed-point bits of the resize weights.
const W_BITS: u32 = 14;

/// Per output index: the first source index and the weights of an antialiased triangle
/// (bilinear) filter, as fixed-point integers summing to `1 << W_BITS`.
fn coeffs(src: usize, dst: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    (0..dst)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = (center - support).floor().max(0.0) as usize;
            let hi = ((center + support).ceil() as usize).min(src);
            let w: Vec<f64> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 + 0.5 - center) / support).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            let one = f64::from(1u32 << W_BITS);
            (
                lo,
                w.iter().map(|v| (v / sum * one).round() as i32).collect(),
            )
        })
        .collect()
}

fn to_u8(acc: i32) -> u8 {
    ((acc + (1 << (W_BITS - 1))) >> W_BITS).clamp(0, 255) as u8
}

/// Bilinear (antialiased) resize of `(h, w, c)` uint8 pixels to `(oh, ow, c)`: two
/// separable passes in fixed point, the kernel of the built-in pipeline.
pub fn resize_u8(a: &NdArray, oh: usize, ow: usize) -> deeplake_core::Result<NdArray> {
    let (h, w, c) = (a.shape[0], a.shape[1], a.shape[2]);
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::invalid(format!(
            "cannot resize an image of shape {:?}",
            a.shape
        )));
    }
    let src = &a.data[..];
    // Rows first: that pass runs over whole contiguous rows (it vectorizes), and the
    // per-pixel column pass then sees only the `oh` rows left.
    let cy = coeffs(h, oh);
    let stride = w * c;
    let mut tmp = vec![0u8; oh * stride];
    let mut acc = vec![0i32; stride];
    for ((lo, ws), dst) in cy.iter().zip(tmp.chunks_exact_mut(stride)) {
        acc.fill(0);
        let rows = &src[lo * stride..(lo + ws.len()) * stride];
        for (wt, r) in ws.iter().zip(rows.chunks_exact(stride)) {
            for (a, v) in acc.iter_mut().zip(r) {
                *a += wt * i32::from(*v);
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = to_u8(*a);
        }
    }
    let cx = coeffs(w, ow);
    let mut out = vec![0u8; oh * ow * c];
    let mut px_acc = vec![0i32; c];
    for (row, o) in tmp.chunks_exact(stride).zip(out.chunks_exact_mut(ow * c)) {
        for ((lo, ws), px) in cx.iter().zip(o.chunks_exact_mut(c)) {
            px_acc.fill(0);
            let window = &row[lo * c..(lo + ws.len()) * c];
            for (wt, s) in ws.iter().zip(window.chunks_exact(c)) {
                for (a, v) in px_acc.iter_mut().zip(s) {
                    *a += wt * i32::from(*v);
                }
            }
            for (d, a) in px.iter_mut().zip(&px_acc) {
                *d = to_u8(*a);
            }
        }
    }
    NdArray::new(deeplake_core::Dtype::U8, vec![oh, ow, c], out)
}

/// Rows of a `{"file", "label"}` JSON-lines file: the file's bytes and the label.
fn meta_rows(meta: &PathBuf) -> anyhow::Result<(Vec<(PathBuf, i64)>, PathBuf)> {
    let dir = meta.parent().map(PathBuf::from).unwrap_or_default();
    let f = std::fs::File::open(meta).with_context(|| format!("opening {}", meta.display()))?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", meta.display(), i + 1))?;
        let file = v["file"]
            .as_str()
            .with_context(|| format!("{} line {}: no \"file\"", meta.display(), i + 1))?;
        let label = v["label"]
            .as_i64()
            .with_context(|| format!("{} line {}: no integer \"label\"", meta.display(), i + 1))?;
        rows.push((dir.join(file), label));
    }
    Ok((rows, dir))
}

pub async fn run(a: &TransformArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let storage = a.storage.open_options()?;
    let input = match (&a.path, &a.meta) {
        (Some(p), _) => Input::Dataset {
            url: p.clone(),
            opts: storage.clone(),
            rows: Rows::All,
            tensors: vec![a.image_tensor.clone(), a.label_tensor.clone()],
        },
        (None, Some(m)) => {
            let (rows, _) = meta_rows(m)?;
            let n = rows.len() as u64;
            let (img, lab) = (a.image_tensor.clone(), a.label_tensor.clone());
            let iter = rows.into_iter().map(move |(file, label)| {
                // An unreadable file becomes an empty sample, which the function
                // reports with its row.
                let sample = std::fs::read(&file).map_or(Sample::Empty, |b| Sample::Encoded {
                    bytes: b.into(),
                    compression: Compression::Jpeg,
                    shape: None,
                });
                Row::from([
                    (img.clone(), sample),
                    (lab.clone(), Sample::Array(NdArray::scalar(label))),
                ])
            });
            Input::Iter {
                rows: Box::new(iter),
                len: Some(n),
            }
        }
        (None, None) => anyhow::bail!("give a source dataset or --meta FILE.jsonl"),
    };
    let mut opts = TransformOptions::new(a.to.clone());
    opts.open = storage;
    opts.open.branch = Some(a.branch.parse()?);
    opts.tensors = vec![
        (
            "images".into(),
            TensorOptions::new("image").sample_compression("jpeg"),
        ),
        ("labels".into(), TensorOptions::new("class_label")),
    ];
    opts.num_workers = a.workers;
    opts.batch_rows = a.batch_rows;
    opts.job = match (&a.job, &a.meta) {
        (Some(j), _) => Some(j.clone()),
        (None, Some(m)) => Some(format!("meta:{}", m.display())),
        (None, None) => None,
    };
    let pipeline = resize_relabel(&a.image_tensor, &a.label_tensor, a.resize, a.relabel_mod);
    let ctl = Arc::new(Control::default());
    let work = {
        let ctl = ctl.clone();
        async move { transform::run(&pipeline, input, &opts, &ctl).await }
    };
    let report = run_cancellable(ctl, "transforming", work).await?;
    writeln!(out, "{}", report.to_json())?;
    if report.commit.is_none() {
        anyhow::bail!(
            "stopped after {} input rows: run the same command again to resume",
            report.input_rows
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The fixed-point kernel stays within 2 levels of the image crate's bilinear
    /// resize (the streaming transform) on a textured image, down and up.
    #[test]
    fn fast_resize_matches_the_reference_kernel() {
        let (h, w) = (37usize, 53usize);
        let px: Vec<u8> = (0..h * w * 3)
            .map(|i| ((i * 7919) % 251) as u8 / 2 + ((i / 3) % w) as u8)
            .collect();
        let a = NdArray::new(deeplake_core::Dtype::U8, vec![h, w, 3], px).unwrap();
        for (oh, ow) in [(16, 20), (37, 53), (64, 80)] {
            let ours = resize_u8(&a, oh, ow).unwrap();
            let at = SampleAt {
                tensor: "t",
                row: 0,
                seed: 0,
                epoch: 0,
            };
            let Sample::Array(want) = apply(
                &[Transform::Resize {
                    height: oh,
                    width: ow,
                }],
                Sample::Array(a.clone()),
                at,
            )
            .unwrap() else {
                panic!("not an array")
            };
            assert_eq!(ours.shape, want.shape);
            let worst = ours
                .data
                .iter()
                .zip(want.data.iter())
                .map(|(x, y)| (i16::from(*x) - i16::from(*y)).abs())
                .max()
                .unwrap();
            assert!(worst <= 2, "{oh}x{ow}: differs by {worst}");
        }
    }
}
