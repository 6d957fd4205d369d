//! `deeplake links check PATH[@ref] [--tensor T] [--concurrency N] [--json]`: probes
//! every link target of a dataset's link tensors and reports the broken ones.
//!
//! Contract: every non-empty link is probed once (HEAD, or the size of a file or
//! object; a server that refuses HEAD is asked with GET), at most `--concurrency` at
//! once with the linker's deadline and retries. Progress goes to stderr; the report
//! (tensor, row, redacted target, status, error per broken link, then a summary) goes to
//! stdout. The command fails (non-zero exit) when any link is broken. Targets are named
//! without query strings, since signed URLs carry secrets there.

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use deeplake_core::link::{LinkCreds, LinkOptions, Linker};
use deeplake_core::{Dataset, Error, Sample};
use futures::StreamExt;
use serde_json::json;

use super::StorageArgs;
use super::import::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct LinksArgs {
    #[command(subcommand)]
    pub command: LinksCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LinksCommand {
    /// Probe every link target; report the broken ones (non-zero exit if any).
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Dataset path or URL; `PATH@ref` reads a branch, commit or tag.
    pub path: String,
    /// Check this link tensor only (default: every link tensor).
    #[arg(long, value_name = "T")]
    pub tensor: Option<String>,
    /// Probes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// One link that did not answer.
struct Broken {
    tensor: String,
    row: u64,
    target: String,
    status: Option<u16>,
    error: String,
}

pub async fn run(a: &LinksArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match &a.command {
        LinksCommand::Check(c) => check(c, out).await,
    }
}

/// `(tensor, row, path, creds key)` of every non-empty link of `tensor`.
async fn links_of(
    ds: &Dataset,
    tensor: &str,
) -> anyhow::Result<Vec<(u64, String, Option<String>)>> {
    let rows = ds.tensor_len(tensor)?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let end = (start + 4096).min(rows);
        for (k, s) in ds
            .read_range(tensor, start..end)
            .await?
            .into_iter()
            .enumerate()
        {
            let row = start + k as u64;
            let items = match s {
                Sample::Sequence(items) => items,
                other => vec![other],
            };
            for it in items {
                if let Sample::Link { path, creds_key } = it
                    && !path.is_empty()
                {
                    out.push((row, path, creds_key));
                }
            }
        }
        start = end;
    }
    Ok(out)
}

async fn probe(linker: &Linker, path: &str, creds: Option<&str>) -> Result<(), Error> {
    match linker.size(path, creds).await {
        // Some servers refuse HEAD: ask with GET.
        Err(Error::Link {
            status: Some(405 | 501),
            ..
        }) => linker.fetch(path, creds).await.map(|_| ()),
        other => other.map(|_| ()),
    }
}

async fn check(a: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let linker = Linker::new(LinkOptions {
        concurrency: a.concurrency as usize,
        // Probes only: nothing worth caching.
        cache_bytes: 0,
        creds: LinkCreds::from_env()?,
        ..LinkOptions::default()
    })?;
    opts.linker = Some(linker.clone());
    let ds = Dataset::open_url(&a.path, opts).await?;
    let tensors: Vec<String> = match &a.tensor {
        Some(t) => {
            if !ds.tensor_htype(t)?.is_link {
                bail!("tensor {t:?} is not a link tensor");
            }
            vec![t.clone()]
        }
        None => ds
            .tensor_names()
            .into_iter()
            .filter(|t| ds.tensor_htype(t).is_ok_and(|h| h.is_link))
            .collect(),
    };
    let mut all = Vec::new();
    for t in &tensors {
        for (row, path, creds) in links_of(&ds, t).await? {
            all.push((t.clone(), row, path, creds));
        }
    }
    let total = all.len() as u64;
    let progress = Arc::new(Progress::counting("checking", "links", total));
    let started = std::time::Instant::now();
    let mut results: Vec<(usize, Option<Broken>)> =
        futures::stream::iter(all.into_iter().enumerate())
            .map(|(k, (tensor, row, path, creds))| {
                let linker = linker.clone();
                let progress = progress.clone();
                async move {
                    let r = probe(&linker, &path, creds.as_deref()).await;
                    progress.inc(1);
                    let broken = r.err().map(|e| {
                        let (status, error) = match &e {
                            Error::Link { status, reason, .. } => (*status, reason.clone()),
                            other => (None, other.to_string()),
                        };
                        Broken {
                            tensor,
                            row,
                            target: deeplake_core::link::redact(&path),
                            status,
                            error,
                        }
                    });
                    (k, broken)
                }
            })
            // Unordered keeps every slot busy behind a slow target; the report is sorted.
            .buffer_unordered(a.concurrency as usize)
            .collect()
            .await;
    progress.finish();
    results.sort_unstable_by_key(|(k, _)| *k);
    let broken: Vec<Broken> = results.into_iter().filter_map(|(_, b)| b).collect();
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let v = json!({
            "path": a.path,
            "tensors": tensors,
            "checked": total,
            "ok": total - broken.len() as u64,
            "broken": broken.iter().map(|b| json!({
                "tensor": b.tensor, "row": b.row, "target": b.target,
                "status": b.status, "error": b.error,
            })).collect::<Vec<_>>(),
            "seconds": secs,
        });
        writeln!(out, "{v}")?;
    } else {
        for b in &broken {
            writeln!(
                out,
                "broken {}[{}] {} status={} {}",
                b.tensor,
                b.row,
                b.target,
                b.status.map_or("-".to_owned(), |s| s.to_string()),
                b.error
            )?;
        }
        writeln!(
            out,
            "checked {total} links in {} tensors in {secs:.2} s: {} ok, {} broken",
            tensors.len(),
            total - broken.len() as u64,
            broken.len()
        )?;
    }
    out.flush()?;
    if !broken.is_empty() {
        bail!("{} of {total} links are broken", broken.len());
    }
    Ok(())
}
