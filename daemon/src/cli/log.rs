//! `deeplake log PATH[@ref]`: the commits from the node being read (the head of `main`
//! unless a ref is given) back to the first commit, newest first. The head itself is
//! listed first when it is one. `--json` prints an array of
//! `{commit_id, branch, message, author, time, date, parent, merge_parent, is_head, tags}`
//! (`merge_parent`: the commit a merge commit merged in, else null).

use std::collections::BTreeMap;
use std::io::Write;

use deeplake_core::Dataset;
use deeplake_core::version::CommitRecord;
use serde_json::{Value, json};

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Dataset path or URL; `PATH@ref` starts at a branch, commit or tag.
    pub path: String,
    /// Print a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub fn record_json(r: &CommitRecord, tags: &[&str]) -> Value {
    json!({
        "commit_id": r.id,
        "branch": r.branch,
        "message": r.message,
        "author": r.author,
        "time": r.time,
        "date": r.date(),
        "parent": r.parent,
        "merge_parent": r.merge_parent,
        "is_head": r.is_head,
        "tags": tags,
    })
}

pub async fn run(a: &LogArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open_url(&a.path, opts).await?;
    let mut tags_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (tag, commit) in ds.tags() {
        tags_of
            .entry(commit.as_str())
            .or_default()
            .push(tag.as_str());
    }
    let records = ds.log();
    let tags = |r: &CommitRecord| tags_of.get(r.id.as_str()).cloned().unwrap_or_default();
    if a.json {
        let v: Vec<Value> = records.iter().map(|r| record_json(r, &tags(r))).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "branch {}", ds.branch())?;
    for r in &records {
        writeln!(out)?;
        let t = tags(r);
        let tag_text = if t.is_empty() {
            String::new()
        } else {
            format!(", tag: {}", t.join(", tag: "))
        };
        if r.is_head {
            writeln!(
                out,
                "head   {} ({}{tag_text}, not committed)",
                r.id, r.branch
            )?;
            continue;
        }
        writeln!(out, "commit {} ({}{tag_text})", r.id, r.branch)?;
        if let Some(m) = &r.merge_parent {
            writeln!(out, "Merge:  {} {m}", r.parent.as_deref().unwrap_or("-"))?;
        }
        writeln!(out, "Author: {}", r.author.as_deref().unwrap_or("-"))?;
        writeln!(out, "Date:   {}", r.date().as_deref().unwrap_or("-"))?;
        writeln!(out)?;
        for line in r.message.as_deref().unwrap_or("").lines() {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}
