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
use deeplake_core::stream::transform::{SampleAt, apply, resize_image};
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
