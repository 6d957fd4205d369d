//! `deeplake commit PATH -m MESSAGE [--branch B]`: commits the head of branch `B`
//! (default `main`) and prints the new commit's id. `--json` prints
//! `{"commit", "branch", "head"}`, where `head` is the fresh head that follows the commit.
//!
//! Every command here that writes opens its branch, does one operation and closes the
//! handle, so the branch's writer lease is given back before the process exits; another
//! process holding the lease makes the command fail with the core's conflict message.

use std::io::Write;

use deeplake_core::ids::BranchName;
use deeplake_core::{Dataset, OpenOptions};
use serde_json::json;

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Commit message.
    #[arg(short, long)]
    pub message: String,
    /// Branch whose head is committed.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Print a JSON object instead of the commit id.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Opens the head of `branch` for writing. A `PATH@ref` is not a write target, so the
/// path is taken as it is; the hint helps when it was meant as one.
pub(crate) async fn open_branch(
    path: &str,
    opts: OpenOptions,
    branch: &str,
) -> anyhow::Result<Dataset> {
    let opts = OpenOptions {
        branch: Some(branch.parse::<BranchName>()?),
        read_only: false,
        ..opts
    };
    match Dataset::open(path, opts).await {
        Err(
            e @ deeplake_core::Error::NotFound {
                what: "dataset", ..
            },
        ) if deeplake_core::version::split_ref(path).1.is_some() => Err(anyhow::Error::new(e)
            .context("PATH@ref opens read-only: give the plain PATH and the branch as an option")),
        other => Ok(other?),
    }
}

/// Closes `ds` after an operation: its lease goes back even when the operation failed,
/// and the operation's error is the one reported.
pub(crate) async fn close_after<T>(
    ds: Dataset,
    result: deeplake_core::Result<T>,
) -> anyhow::Result<T> {
    let closed = ds.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

pub async fn run(a: &CommitArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut ds = open_branch(&a.path, a.storage.open_options()?, &a.branch).await?;
    let result = ds.commit(&a.message).await;
    let head = ds.node_id().to_string();
    let commit = close_after(ds, result).await?;
    if a.json {
        let v = json!({"commit": commit, "branch": a.branch, "head": head});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "{commit}")?;
    }
    Ok(())
}
