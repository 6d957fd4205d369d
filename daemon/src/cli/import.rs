//! `deeplake import`: folders of class subfolders and COCO annotation files.
//!
//! ```text
//! deeplake import PATH --from-folder DIR [--overwrite] [--batch N]
//! deeplake import PATH --from-folder DIR --link [--no-verify] [--overwrite] [--batch N]
//! deeplake import PATH --from-coco ANNOTATIONS.json --images DIR [--overwrite] [--batch N]
//! deeplake import PATH --from-urls FILE.csv|FILE.jsonl [--url-column C] [--link-htype H]
//!                      [--creds-key NAME] [--no-verify] [--overwrite] [--batch N]
//! ```
//!
//! `--link` stores each image as a link (its absolute path) in a `link[image]` tensor
//! instead of a copy; `--from-urls` makes a link tensor of a URL column (urls.rs).
//!
//! Contract: everything that can be checked without writing is checked first (the
//! target holds no dataset unless `--overwrite`, the source layout, every image header,
//! every annotation); the first batch is then read and only after it is ready is the
//! dataset created. Batches of at most `--batch` rows (and about [`BATCH_BYTES`] of
//! input) are read in parallel, appended to every tensor, and flushed, so the dataset on
//! storage always holds whole rows. If a later batch fails, the error says how many rows
//! are in the dataset. Images are stored in the codec most files use; files in the
//! other codec are decoded and re-encoded. Progress goes to stderr; a short report ends
//! with one summary line on stdout.

mod coco;
mod folder;
mod images;
mod mask;
pub(crate) mod progress;
mod urls;

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::ArgGroup;
use deeplake_core::format::compression::Compression;
use deeplake_core::{Dataset, Dtype, NdArray, Sample, Store, TensorOptions};
use serde_json::json;

use self::images::Probe;
use self::progress::Progress;
use super::StorageArgs;

/// Input (file bytes plus decoded masks) one batch may hold, unless a single row is larger.
pub const BATCH_BYTES: u64 = 256 << 20;

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("source").required(true).args(["from_folder", "from_coco", "from_urls"])))]
pub struct ImportArgs {
    /// Dataset path or URL to create.
    pub path: String,
    /// A folder with one subfolder of .jpg/.jpeg/.png images per class.
    #[arg(long, value_name = "DIR")]
    pub from_folder: Option<PathBuf>,
    /// A COCO detection annotation file (needs --images).
    #[arg(long, value_name = "ANNOTATIONS.json", requires = "images")]
    pub from_coco: Option<PathBuf>,
    /// The folder that the COCO file names are relative to.
    #[arg(long, value_name = "DIR", requires = "from_coco")]
    pub images: Option<PathBuf>,
    /// With --from-folder: store links to the image files (absolute paths) in a
    /// link[image] tensor instead of copies.
    #[arg(long, requires = "from_folder")]
    pub link: bool,
    /// A CSV or JSON-lines file (by extension, else by content) with a URL column that
    /// becomes a link tensor; other columns become tensors too.
    #[arg(long, value_name = "FILE")]
    pub from_urls: Option<PathBuf>,
    /// The URL column of --from-urls.
    #[arg(long, value_name = "C", default_value = "url", requires = "from_urls")]
    pub url_column: String,
    /// The htype of the link tensor of --from-urls (link[image], link[video], ...).
    #[arg(
        long,
        value_name = "H",
        default_value = "link[image]",
        requires = "from_urls"
    )]
    pub link_htype: String,
    /// Creds key (a name; its secrets come from DEEPLAKE_LINK_CREDS[_FILE]) of every link
    /// of --from-urls.
    #[arg(long, value_name = "NAME", requires = "from_urls")]
    pub creds_key: Option<String>,
    /// Store links without reading their targets (no shapes; as 3.x's verify=False).
    #[arg(long)]
    pub no_verify: bool,
    /// Replace a dataset that already exists at PATH.
    #[arg(long)]
    pub overwrite: bool,
    /// Rows appended (and flushed) at a time.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &ImportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(file) = &a.from_urls {
        return urls::import_urls(a, file, out).await;
    }
    if a.no_verify && !a.link {
        bail!("--no-verify applies to links: --from-folder DIR --link, or --from-urls");
    }
    match (&a.from_folder, &a.from_coco, &a.images) {
        (Some(dir), None, _) => import_folder(a, dir, out).await,
        (None, Some(ann), Some(dir)) => import_coco(a, ann, dir, out).await,
        (None, Some(_), None) => bail!("--from-coco needs --images DIR"),
        _ => bail!("give exactly one of --from-folder DIR or --from-coco ANNOTATIONS.json"),
    }
}

/// Rows ready to append: one sample list per tensor, in the order of the tensor specs.
struct Batch {
    columns: Vec<Vec<Sample>>,
    rows: u64,
    file_bytes: u64,
    reencoded: u64,
}

/// A tensor an import creates.
struct TensorSpec {
    name: String,
    opts: TensorOptions,
}

/// Names row `i` for error messages.
type Labeller = dyn Fn(usize) -> String + Send + Sync;

/// Reads batch `k` (blocking; runs on the CPU pool).
type Prepare = Arc<dyn Fn(usize) -> anyhow::Result<Batch> + Send + Sync>;

#[derive(Default)]
struct Totals {
    rows: u64,
    file_bytes: u64,
    reencoded: u64,
}

/// Fails early when PATH holds a dataset and `--overwrite` is not given.
async fn check_target(a: &ImportArgs) -> anyhow::Result<()> {
    let opts = a.storage.open_options()?;
    // A missing local folder holds no dataset (opening does not create it).
    let store = match Store::open(&a.path, &opts.storage) {
        Err(deeplake_core::Error::NotFound { .. }) => return Ok(()),
        other => other?,
    };
    if !a.overwrite && Dataset::exists_in(&store).await? {
        bail!(
            "{} already holds a dataset; pass --overwrite to replace it",
            a.path
        );
    }
    Ok(())
}

/// Splits rows into batches of at most `max_rows` rows and, unless a single row is
/// larger, about `max_bytes` of `cost`.
fn plan_batches(costs: &[u64], max_rows: usize, max_bytes: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, c) in costs.iter().enumerate() {
        if i > start && (i - start >= max_rows || bytes.saturating_add(*c) > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(*c);
    }
    if start < costs.len() {
        out.push(start..costs.len());
    }
    out
}

/// Probes every file on the CPU pool, with a "checking" progress report.
/// `label` names row `i` in errors where the path alone does not say enough.
async fn probe_files(
    paths: Vec<PathBuf>,
    label: Option<Arc<Labeller>>,
) -> anyhow::Result<Vec<Probe>> {
    let progress = Arc::new(Progress::new("checking", paths.len() as u64));
    let p = Arc::clone(&progress);
    let probes = deeplake_core::runtime::spawn_cpu(move || {
        use rayon::prelude::*;
        let results: Vec<anyhow::Result<Probe>> = paths
            .par_iter()
            .enumerate()
            .map(|(i, path)| {
                let r = match &label {
                    Some(label) => images::probe(path).with_context(|| label(i)),
                    None => images::probe(path),
                };
                p.inc(1);
                r
            })
            .collect();
        Ok(first_error(results))
    })
    .await??;
    progress.finish();
    Ok(probes)
}

/// Keeps results in order; on failure returns the first error, noting how many others
/// failed too.
fn first_error<T>(results: Vec<anyhow::Result<T>>) -> anyhow::Result<Vec<T>> {
    let failures = results.iter().filter(|r| r.is_err()).count();
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(e) if failures > 1 => {
                return Err(e.context(format!("{failures} files failed; the first")));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn prepare_batch(prepare: &Prepare, k: usize) -> anyhow::Result<Batch> {
    let p = Arc::clone(prepare);
    deeplake_core::runtime::spawn_cpu(move || Ok(p(k))).await?
}

async fn write_batch(ds: &mut Dataset, specs: &[TensorSpec], batch: Batch) -> anyhow::Result<()> {
    for (spec, samples) in specs.iter().zip(batch.columns) {
        ds.extend(&spec.name, samples)
            .await
            .with_context(|| format!("appending to tensor {:?}", spec.name))?;
    }
    ds.flush().await.context("flushing the dataset")?;
    Ok(())
}

/// Reads the first batch, creates the dataset and its tensors, then appends every batch,
/// reading the next one while the current one is written.
async fn write_dataset(
    a: &ImportArgs,
    specs: Vec<TensorSpec>,
    batches: usize,
    total_rows: u64,
    prepare: Prepare,
) -> anyhow::Result<Totals> {
    let mut current = prepare_batch(&prepare, 0).await?;
    let mut opts = a.storage.open_options()?;
    opts.overwrite = a.overwrite;
    let mut ds = Dataset::create(&a.path, opts)
        .await
        .with_context(|| format!("creating a dataset at {}", a.path))?;
    if let Some(k) = &a.creds_key {
        ds.add_creds_key(k)
            .await
            .with_context(|| format!("adding creds key {k:?}"))?;
    }
    for spec in &specs {
        ds.create_tensor(&spec.name, spec.opts.clone())
            .await
            .with_context(|| format!("creating tensor {:?} in {}", spec.name, a.path))?;
    }
    let mut totals = Totals::default();
    let stopped = |e: anyhow::Error, rows: u64| {
        e.context(format!(
            "import into {} stopped: {rows} of {total_rows} rows were written and are readable",
            a.path
        ))
    };
    for k in 1..=batches {
        let (rows, file_bytes, reencoded) = (current.rows, current.file_bytes, current.reencoded);
        let next = async {
            if k < batches {
                Some(prepare_batch(&prepare, k).await)
            } else {
                None
            }
        };
        let (written, next) = tokio::join!(write_batch(&mut ds, &specs, current), next);
        written.map_err(|e| stopped(e, totals.rows))?;
        totals.rows += rows;
        totals.file_bytes += file_bytes;
        totals.reencoded += reencoded;
        match next {
            Some(Ok(b)) => current = b,
            Some(Err(e)) => return Err(stopped(e, totals.rows)),
            None => break,
        }
    }
    // Closing gives the branch's writer lease back, so the next command can write.
    ds.close().await.context("closing the dataset")?;
    Ok(totals)
}

fn summary(out: &mut dyn Write, path: &str, t: &Totals, started: Instant) -> anyhow::Result<()> {
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        t.rows as f64 / secs
    } else {
        0.0
    };
    writeln!(
        out,
        "imported {} rows ({} bytes of image files) into {path} in {secs:.2} s ({rate:.1} samples/s)",
        t.rows, t.file_bytes
    )?;
    Ok(())
}

fn image_tensor(codec: &Compression) -> TensorSpec {
    TensorSpec {
        name: "images".to_owned(),
        opts: TensorOptions::new("image").sample_compression(codec.name()),
    }
}

/// A link[image] tensor of `codec` (the codec 3.x records for its targets).
fn link_tensor(codec: &Compression, verify: bool) -> TensorSpec {
    TensorSpec {
        name: "images".to_owned(),
        opts: TensorOptions::new("link[image]")
            .sample_compression(codec.name())
            .verify(verify),
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn report_codec(out: &mut dyn Write, codec: &Compression, reencoded: u64) -> anyhow::Result<()> {
    let other = if *codec == Compression::Jpeg {
        "png"
    } else {
        "jpeg"
    };
    let files = count(
        reencoded,
        &format!("{other} file"),
        &format!("{other} files"),
    );
    writeln!(out, "images stored as {}; re-encoded {files}", codec.name())?;
    Ok(())
}

async fn import_folder(a: &ImportArgs, dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let started = Instant::now();
    check_target(a).await?;
    let scan = folder::scan(dir)?;
    let (paths, labels): (Vec<PathBuf>, Vec<u32>) = scan.files.into_iter().unzip();
    let probes = probe_files(paths.clone(), None).await?;
    let codec = images::majority_codec(probes.iter().map(|p| &p.codec));
    let costs: Vec<u64> = probes.iter().map(|p| p.len).collect();
    let batches = plan_batches(&costs, a.batch as usize, BATCH_BYTES);
    let total = paths.len() as u64;
    let specs = vec![
        if a.link {
            link_tensor(&codec, !a.no_verify)
        } else {
            image_tensor(&codec)
        },
        TensorSpec {
            name: "labels".to_owned(),
            opts: TensorOptions::new("class_label").class_names(scan.class_names.clone()),
        },
    ];
    let progress = Arc::new(Progress::new("importing", total));
    let link = a.link;
    let plan = Arc::new((paths, labels, batches.clone(), codec.clone()));
    let p = Arc::clone(&progress);
    let prepare: Prepare = Arc::new(move |k| {
        use rayon::prelude::*;
        let (paths, labels, batches, codec) = &*plan;
        let range = batches
            .get(k)
            .cloned()
            .context("batch index out of range")?;
        let rows = paths.get(range.clone()).context("batch out of range")?;
        let labs: Vec<Sample> = labels
            .get(range.clone())
            .context("batch out of range")?
            .iter()
            .map(|&l| Sample::Array(NdArray::scalar(l)))
            .collect();
        if link {
            // Links name the files by absolute path, so they resolve from anywhere.
            let imgs = rows
                .iter()
                .map(|path| {
                    let abs = std::fs::canonicalize(path)
                        .with_context(|| format!("{}: cannot resolve the path", path.display()))?;
                    p.inc(1);
                    Ok(Sample::Link {
                        path: abs.to_string_lossy().into_owned(),
                        creds_key: None,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(Batch {
                rows: imgs.len() as u64,
                columns: vec![imgs, labs],
                file_bytes: 0,
                reencoded: 0,
            });
        }
        let loaded = first_error(
            rows.par_iter()
                .map(|path| {
                    let r = images::load(path, codec);
                    p.inc(1);
                    r
                })
                .collect(),
        )?;
        let mut batch = Batch {
            columns: vec![Vec::new(), Vec::new()],
            rows: loaded.len() as u64,
            file_bytes: 0,
            reencoded: 0,
        };
        let mut imgs = Vec::with_capacity(loaded.len());
        for l in loaded {
            batch.file_bytes += l.file_bytes;
            batch.reencoded += u64::from(l.reencoded);
            imgs.push(l.sample);
        }
        batch.columns = vec![imgs, labs];
        Ok(batch)
    });
    let totals = write_dataset(a, specs, batches.len(), total, prepare).await?;
    progress.finish();
    writeln!(
        out,
        "{}: {}; skipped {} that are not .jpg/.jpeg/.png images in a class folder",
        count(scan.class_names.len() as u64, "class", "classes"),
        scan.class_names.join(", "),
        count(scan.skipped, "file", "files"),
    )?;
    if a.link {
        writeln!(out, "images stored as links to {} files", codec.name())?;
    } else {
        report_codec(out, &codec, totals.reencoded)?;
    }
    summary(out, &a.path, &totals, started)
}

async fn import_coco(
    a: &ImportArgs,
    ann: &Path,
    dir: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    check_target(a).await?;
    let bytes = std::fs::read(ann)
        .with_context(|| format!("--from-coco {}: cannot read the file", ann.display()))?;
    let plan = coco::parse(&bytes, &ann.display().to_string())?;
    drop(bytes);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--images {}: not a folder", dir.display()),
        Err(e) => {
            return Err(e).with_context(|| format!("--images {}: no such folder", dir.display()));
        }
    }
    if plan.images.is_empty() {
        bail!("{}: \"images\" is empty; nothing to import", ann.display());
    }
    let paths: Vec<PathBuf> = plan
        .images
        .iter()
        .map(|im| dir.join(&im.file_name))
        .collect();
    let ids: Vec<i64> = plan.images.iter().map(|im| im.id).collect();
    let probes = probe_files(
        paths.clone(),
        Some(Arc::new(move |i| {
            format!("image {}", ids.get(i).copied().unwrap_or(-1))
        })),
    )
    .await?;
    let mut costs = Vec::with_capacity(probes.len());
    for ((im, probe), path) in plan.images.iter().zip(&probes).zip(&paths) {
        coco::check_image(im, probe, path)?;
        let pixels: u64 = probe.shape.iter().take(2).map(|&d| d as u64).product();
        costs.push(
            probe
                .len
                .saturating_add(pixels.saturating_mul(im.annotations.len() as u64)),
        );
    }
    let codec = images::majority_codec(probes.iter().map(|p| &p.codec));
    let batches = plan_batches(&costs, a.batch as usize, BATCH_BYTES);
    let total = plan.images.len() as u64;
    let mut boxes = TensorOptions::new("bbox").dtype(Dtype::F32);
    boxes
        .info
        .insert("coords".into(), json!({"type": "pixel", "mode": "LTWH"}));
    let specs = vec![
        image_tensor(&codec),
        TensorSpec {
            name: "boxes".to_owned(),
            opts: boxes,
        },
        TensorSpec {
            name: "categories".to_owned(),
            opts: TensorOptions::new("class_label").class_names(plan.class_names.clone()),
        },
        TensorSpec {
            name: "masks".to_owned(),
            opts: TensorOptions::new("binary_mask").sample_compression("lz4"),
        },
        TensorSpec {
            name: "areas".to_owned(),
            opts: TensorOptions::new("generic").dtype(Dtype::F32),
        },
        TensorSpec {
            name: "iscrowd".to_owned(),
            opts: TensorOptions::new("generic").dtype(Dtype::U8),
        },
    ];
    let ncols = specs.len();
    let progress = Arc::new(Progress::new("importing", total));
    let n_classes = plan.class_names.len();
    let n_annotations = plan.num_annotations;
    let shared = Arc::new((plan, paths, batches.clone(), codec.clone()));
    let p = Arc::clone(&progress);
    let prepare: Prepare = Arc::new(move |k| {
        use rayon::prelude::*;
        let (plan, paths, batches, codec) = &*shared;
        let range = batches
            .get(k)
            .cloned()
            .context("batch index out of range")?;
        let ims = plan
            .images
            .get(range.clone())
            .context("batch out of range")?;
        let files = paths.get(range).context("batch out of range")?;
        let rows = first_error(
            ims.par_iter()
                .zip(files)
                .map(|(im, path)| {
                    let r = coco_row(im, path, codec);
                    p.inc(1);
                    r
                })
                .collect(),
        )?;
        let mut batch = Batch {
            columns: (0..ncols).map(|_| Vec::with_capacity(rows.len())).collect(),
            rows: 0,
            file_bytes: 0,
            reencoded: 0,
        };
        for (loaded, samples) in rows {
            batch.rows += 1;
            batch.file_bytes += loaded.file_bytes;
            batch.reencoded += u64::from(loaded.reencoded);
            for (col, s) in batch
                .columns
                .iter_mut()
                .zip(std::iter::once(loaded.sample).chain(samples))
            {
                col.push(s);
            }
        }
        Ok(batch)
    });
    let totals = write_dataset(a, specs, batches.len(), total, prepare).await?;
    progress.finish();
    writeln!(
        out,
        "{} in {}",
        count(n_annotations as u64, "annotation", "annotations"),
        count(n_classes as u64, "category", "categories")
    )?;
    report_codec(out, &codec, totals.reencoded)?;
    summary(out, &a.path, &totals, started)
}

fn coco_row(
    im: &coco::CocoImage,
    path: &Path,
    codec: &Compression,
) -> anyhow::Result<(images::Loaded, [Sample; 5])> {
    let loaded = images::load(path, codec).with_context(|| format!("image {}", im.id))?;
    let (h, w) = match loaded.shape[..] {
        [h, w, _] => (h, w),
        _ => bail!(
            "image {} ({}): unexpected shape {:?}",
            im.id,
            path.display(),
            loaded.shape
        ),
    };
    let samples = coco::annotation_samples(im, h, w)?;
    Ok((loaded, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_by_rows_and_bytes() {
        assert_eq!(plan_batches(&[1; 5], 2, 100), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            plan_batches(&[40, 40, 40, 200, 1], 10, 100),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(plan_batches(&[], 3, 100), Vec::<Range<usize>>::new());
        assert_eq!(plan_batches(&[500], 3, 100), vec![0..1]);
    }

    #[test]
    fn first_error_reports_the_first_in_order() {
        let r: Vec<anyhow::Result<u32>> =
            vec![Ok(1), Err(anyhow::anyhow!("b")), Err(anyhow::anyhow!("c"))];
        let e = format!("{:#}", first_error(r).unwrap_err());
        assert_eq!(e, "2 files failed; the first: b");
        assert_eq!(first_error(vec![Ok(1), Ok(2)]).unwrap(), vec![1, 2]);
    }
}
