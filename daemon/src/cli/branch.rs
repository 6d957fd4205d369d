//! `deeplake branch PATH NAME [--from REF]`: creates branch `NAME` with 3.x's rules.
//! From a branch (`main` unless `--from` names another), a head with changes is
//! committed first and the new branch starts at that commit; an unchanged head gives
//! its last commit. From a commit id or tag, the branch starts at that commit.
//! Prints the new branch and its base commit (`--json`:
//! `{"branch", "from", "base", "head", "auto_commit"}`).
//!
//! `deeplake branch PATH NAME --delete` deletes branch `NAME` with 3.x's rules (not
//! `main`; not a branch another branch grew from or a tag names) and its head's and
//! commits' folders.
//!
//! `deeplake branch PATH` lists the branches with their head and the commit each head
//! is on (`--json`: branch name -> head id).

use std::io::Write;

use deeplake_core::version::{Ref, log};
use deeplake_core::{Dataset, OpenOptions};
use serde_json::{Map, Value, json};

use super::StorageArgs;
use super::commit::{close_after, open_branch};

#[derive(Debug, clap::Args)]
pub struct BranchArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Branch to create; without it, the branches are listed.
    pub name: Option<String>,
    /// Branch, commit id or tag to start from (default: the head of main).
    #[arg(long, value_name = "REF", requires = "name", conflicts_with = "delete")]
    pub from: Option<String>,
    /// Delete branch NAME instead of creating it.
    #[arg(long, requires = "name")]
    pub delete: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &BranchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match &a.name {
        None => list(a, out).await,
        Some(name) if a.delete => delete(a, name, out).await,
        Some(name) => create(a, name, out).await,
    }
}

async fn list(a: &BranchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open(&a.path, opts).await?;
    // One snapshot of the tree gives every head and its parent consistently.
    let (_, tree, _) = log::load(ds.store()).await?;
    if a.json {
        let v: Map<String, Value> = tree
            .branches
            .iter()
            .map(|(b, head)| (b.clone(), Value::from(head.as_str())))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let width = tree.branches.keys().map(String::len).max().unwrap_or(0);
    for (b, head) in &tree.branches {
        let on = tree
            .commits
            .get(head)
            .and_then(|n| n.parent.as_deref())
            .unwrap_or("-");
        writeln!(out, "{b:<width$}  head {head}  on {on}")?;
    }
    Ok(())
}

/// Where a new branch starts: a branch's head (which may need an auto-commit) or a
/// commit, read-only.
async fn open_base(a: &BranchArgs, opts: OpenOptions) -> anyhow::Result<(Dataset, String)> {
    let Some(from) = &a.from else {
        return Ok((open_branch(&a.path, opts, "main").await?, "main".to_owned()));
    };
    let probe = Dataset::open(
        &a.path,
        OpenOptions {
            read_only: true,
            ..opts.clone()
        },
    )
    .await?;
    let at = probe.resolve_ref(&from.parse::<Ref>()?)?;
    // A head's id names the branch it heads: start from that branch, with its rules.
    let is_head = probe
        .resolve_ref(&Ref::Branch(at.branch.clone()))
        .is_ok_and(|b| b.node == at.node);
    drop(probe);
    if is_head {
        let ds = open_branch(&a.path, opts, &at.branch).await?;
        return Ok((ds, at.branch));
    }
    let ro = OpenOptions {
        read_only: true,
        ..opts
    };
    let ds = Dataset::open_ref(&a.path, &Ref::Commit(at.node), ro).await?;
    Ok((ds, from.clone()))
}

async fn create(a: &BranchArgs, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let (mut ds, from) = open_base(a, a.storage.open_options()?).await?;
    let auto_commit = ds.is_writable() && ds.has_changes();
    let result = ds.checkout(name, true).await;
    let (base, head) = (ds.commit_id(), ds.node_id().to_string());
    close_after(ds, result).await?;
    let base_text = base.as_deref().unwrap_or("-");
    if a.json {
        let v = json!({
            "branch": name,
            "from": from,
            "base": base,
            "head": head,
            "auto_commit": auto_commit,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    if auto_commit {
        writeln!(
            out,
            "committed the changes on {from} as {base_text} first (3.x's auto commit)"
        )?;
    }
    writeln!(out, "created branch {name} from {base_text} (head {head})")?;
    Ok(())
}

async fn delete(a: &BranchArgs, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    // The handle sits on main (the core refuses to delete the branch a handle is on,
    // and refuses main itself with its own message).
    let mut ds = Dataset::open(&a.path, a.storage.open_options()?).await?;
    let head = ds.branch_head(name);
    let result = ds.delete_branch(name).await;
    close_after(ds, result).await?;
    if a.json {
        let v = json!({"deleted": name, "head": head});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            out,
            "deleted branch {name} (head {})",
            head.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}
