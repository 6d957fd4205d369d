//! `deeplake tag PATH[@ref] NAME [COMMIT]`: names commit `COMMIT` (default: the last
//! commit of `main`, or of the branch or commit `@ref` reads) as `NAME`. Tags never
//! move, and only commits can be tagged, not heads. Prints the tagged commit
//! (`--json`: `{"tag", "commit"}`).
//!
//! `deeplake tag PATH` lists the tags (`--json`: tag name -> commit id).
//!
//! Tagging changes only the commit tree, not a branch head, so it takes no writer lease
//! and works while another process writes.

use std::io::Write;

use deeplake_core::Dataset;
use serde_json::{Map, Value, json};

use super::StorageArgs;
use super::commit::close_after;

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// Dataset path or URL; `PATH@ref` makes the default commit the last one of `ref`.
    pub path: String,
    /// Tag to create; without it, the tags are listed.
    pub name: Option<String>,
    /// Commit id to tag.
    pub commit: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &TagArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let mut ds = Dataset::open_url(&a.path, opts).await?;
    let Some(name) = &a.name else {
        return list(&ds, a.json, out);
    };
    let result = ds.tag(name, a.commit.as_deref()).await;
    let commit = close_after(ds, result).await?;
    if a.json {
        let v = json!({"tag": name, "commit": commit});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "tagged {commit} as {name}")?;
    }
    Ok(())
}

fn list(ds: &Dataset, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let tags = ds.tags();
    if json {
        let v: Map<String, Value> = tags
            .iter()
            .map(|(t, c)| (t.clone(), Value::from(c.as_str())))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let width = tags.keys().map(String::len).max().unwrap_or(0);
    for (t, c) in tags {
        writeln!(out, "{t:<width$}  {c}")?;
    }
    Ok(())
}
