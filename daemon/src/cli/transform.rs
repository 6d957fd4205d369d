//! `deeplake transform (SRC[@ref] | --meta FILE.jsonl) --to OUT [--resize HxW]
//! [--relabel-mod K] [--workers N] [--batch-rows N] [--checkpoint-secs S] [--job NAME]`:
//! the built-in resize-and-relabel pipeline run through core's `transform` (a bounded
//! rayon pool, one commit at the end).
//!
//! Input: a dataset with an image tensor and an integer label tensor (`--image-tensor`,
//! `--label-tensor`), or a JSON-lines file of `{"file", "label"}` (paths relative to
//! the file), as `bench/gen_data.py` writes. Output: `images` (image, jpeg) resized to
//! HxW and `labels` (class_label) set to label % K. Progress goes to stderr (a bar on
//! a terminal, log lines otherwise); the report is one JSON object on stdout. Ctrl-C
//! stops after the batch in flight; the same command again resumes, as after a crash.

use std::cell::Cell;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deeplake_core::format::compression::{Compression, encode_sample, with_decoded_image};
use deeplake_core::runtime::Control;
use deeplake_core::stream::Transform;
use deeplake_core::stream::transform::{SampleAt, apply, resize_image, resize_pixels};
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
    /// Most input rows per batch of work.
    #[arg(long, default_value_t = 512)]
    pub batch_rows: usize,
    /// Seconds between checkpoints, which make the staged batches durable (0: after
    /// every batch); a killed run redoes at most this much work.
    #[arg(long, default_value_t = 1.0, value_parser = parse_secs)]
    pub checkpoint_secs: f64,
    /// Names the run so that an interrupted --meta run can be resumed.
    #[arg(long)]
    pub job: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
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
        let small = match img {
            // Decoded into the worker's reused buffer and resized from there.
            Sample::Encoded {
                bytes, compression, ..
            } => Sample::Array(with_decoded_image(
                &bytes,
                &compression,
                deeplake_core::Dtype::U8,
                |px, shape| resize_pixels(px, shape, h, w),
            )?),
            Sample::Text(path) => Sample::Array(image_file(&path, |bytes, compression| {
                with_decoded_image(
                    bytes,
                    &compression,
                    deeplake_core::Dtype::U8,
                    |px, shape| resize_pixels(px, shape, h, w),
                )
            })?),
            Sample::Array(a) => Sample::Array(resize_image(&a, h, w)?),
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

thread_local! {
    /// Each worker's buffer for the image file it is reading: reused, so reads land in
    /// memory the worker already holds instead of fresh pages of its own.
    static FILE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Reads the image file at `path` and lends its bytes, with the codec its signature
/// names (PNG, else JPEG), to `f`. A file that cannot be read is an error naming it.
fn image_file<T>(
    path: &str,
    f: impl FnOnce(&[u8], Compression) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut buf = FILE.take();
    buf.clear();
    let res = match std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut buf)) {
        Ok(_) if buf.starts_with(b"\x89PNG\r\n\x1a\n") => f(&buf, Compression::Png),
        Ok(_) => f(&buf, Compression::Jpeg),
        Err(e) => Err(Error::invalid(format!(
            "cannot read the image file {path}: {e}"
        ))),
    };
    FILE.set(buf);
    res
}

/// Rows of a `{"file", "label"}` JSON-lines file: the file's path and the label.
fn meta_rows(meta: &PathBuf) -> anyhow::Result<(Vec<(String, i64)>, PathBuf)> {
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
        let path = dir.join(file);
        let path = path.to_str().with_context(|| {
            format!(
                "{} line {}: the path {} is not UTF-8",
                meta.display(),
                i + 1,
                path.display()
            )
        })?;
        rows.push((path.to_owned(), label));
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
            // The workers read the files (`image_file`), in parallel and into buffers
            // each of them reuses.
            let iter = rows.into_iter().map(move |(file, label)| {
                Row::from([
                    (img.clone(), Sample::Text(file)),
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
    opts.checkpoint_every = Duration::from_secs_f64(a.checkpoint_secs);
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
