//! `deeplake reset PATH [--branch B]`: drops the uncommitted changes of branch `B`'s
//! head (default `main`), as 3.x's `reset` does: the branch gets a fresh head with the
//! state of its last commit, and the old head's folder is deleted. Prints the dropped
//! and the new head (`--json`: `{"branch", "dropped_head", "head", "commit"}`).

use std::io::Write;

use serde_json::json;

use super::StorageArgs;
use super::commit::{close_after, open_branch};

#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Branch whose head is reset.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &ResetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut ds = open_branch(&a.path, a.storage.open_options()?, &a.branch).await?;
    let dropped = ds.node_id().to_string();
    let result = ds.reset().await;
    let (head, commit) = (ds.node_id().to_string(), ds.commit_id());
    close_after(ds, result).await?;
    if a.json {
        let v =
            json!({"branch": a.branch, "dropped_head": dropped, "head": head, "commit": commit});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "reset branch {}: dropped head {dropped}; new head {head} at commit {}",
            a.branch,
            commit.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
