//! `deeplake merge PATH SOURCE [--branch B] [--policy none|ours|theirs]
//! [--delete-removed-tensors]`: merges a branch, commit or tag into the head of branch
//! `B` (default `main`) with 3.x's rules, and prints what was merged per tensor and the
//! merge commit. `--json` prints the core's outcome object (`MergeOutcome::to_json`).
//!
//! With the default policy `none`, rows changed on both sides make the merge fail
//! before anything is written: the error, on stderr, lists them per tensor (row, source
//! row, sample id), and the exit status is non-zero.

use std::io::Write;

use deeplake_core::dataset::{MergeOptions, MergeOutcome};
use deeplake_core::version::MergePolicy;

use super::StorageArgs;
use super::commit::{close_after, open_branch};

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Branch, commit id or tag to merge.
    pub source: String,
    /// Branch whose head receives the merge.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// What to do with rows both sides changed: none (fail and list them), ours, theirs.
    #[arg(long, default_value = "none", value_parser = parse_policy)]
    pub policy: MergePolicy,
    /// Remove tensors that the source deleted (kept by default, as in 3.x).
    #[arg(long)]
    pub delete_removed_tensors: bool,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

fn parse_policy(s: &str) -> Result<MergePolicy, String> {
    s.parse().map_err(|e: deeplake_core::Error| e.to_string())
}

pub async fn run(a: &MergeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut ds = open_branch(&a.path, a.storage.open_options()?, &a.branch).await?;
    let opts = MergeOptions {
        policy: a.policy,
        delete_removed_tensors: a.delete_removed_tensors,
    };
    let result = ds.merge_with(&a.source, opts).await;
    let outcome = close_after(ds, result).await?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&outcome.to_json())?)?;
        return Ok(());
    }
    human(a, &outcome, out)
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn human(a: &MergeArgs, o: &MergeOutcome, out: &mut dyn Write) -> anyhow::Result<()> {
    if o.source_auto_commit {
        writeln!(
            out,
            "committed the head of {} as {} first (3.x's auto commit)",
            o.source, o.source_commit
        )?;
    }
    let Some(commit) = &o.commit else {
        writeln!(
            out,
            "nothing to merge: {} ({}) is already part of {}",
            o.source, o.source_commit, a.branch
        )?;
        return Ok(());
    };
    if let Some(c) = &o.own_auto_commit {
        writeln!(
            out,
            "committed the uncommitted changes of {} as {c} first",
            a.branch
        )?;
    }
    writeln!(
        out,
        "merged {} ({}) into {} (common ancestor {})",
        o.source,
        o.source_commit,
        a.branch,
        o.lca.as_deref().unwrap_or("-")
    )?;
    for (old, new) in &o.renamed {
        writeln!(out, "  renamed {old} -> {new}, as in the source")?;
    }
    for (name, t) in &o.tensors {
        let mut parts = Vec::new();
        if t.created {
            parts.push(format!(
                "new tensor, {} copied",
                plural(t.rows_added, "row")
            ));
        } else {
            if t.rows_added > 0 {
                let mut s = format!("{} added", plural(t.rows_added, "row"));
                if t.rows_readded > 0 {
                    s.push_str(&format!(" ({} deleted here, re-added)", t.rows_readded));
                }
                parts.push(s);
            }
            let taken = t.rows_updated;
            if taken > 0 {
                parts.push(format!("{} updated", plural(taken, "row")));
            }
        }
        if !t.conflicts.is_empty() {
            let how = match o.policy {
                MergePolicy::Theirs => "source's values taken",
                _ => "our values kept",
            };
            let rows: Vec<String> = t.conflicts.iter().map(|c| c.our_row.to_string()).collect();
            parts.push(format!(
                "{} resolved, {how} (rows {})",
                plural(t.conflicts.len() as u64, "conflict"),
                rows.join(", ")
            ));
        }
        writeln!(out, "  {name}: {}", parts.join(", "))?;
    }
    for name in &o.removed {
        writeln!(out, "  removed {name}, deleted in the source")?;
    }
    for name in &o.kept {
        writeln!(
            out,
            "  kept {name}, deleted in the source (--delete-removed-tensors removes it)"
        )?;
    }
    writeln!(out, "merge commit {commit}")?;
    Ok(())
}
