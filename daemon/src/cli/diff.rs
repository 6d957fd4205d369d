//! `deeplake diff PATH[@ref] [A] [B]`: what changed, as 3.x's `ds.diff` computes it.
//!
//! * no refs: the changes of the node being read (the head of `main`, or `@ref`)
//!   against its parent;
//! * `A`: the node being read and `A`, each since their common ancestor;
//! * `A B`: `A` and `B`, each since their common ancestor.
//!
//! Text by default: per side, per commit (newest first), the dataset and tensor
//! changes. `--json` prints 3.x's `diff(..., as_dict=True)` dict (sets as sorted lists).
//! `--rows` gives the row-level form instead: per side and visible tensor, the sample
//! ids added, updated and deleted since the common ancestor (with `--json`:
//! `{"lca", "sides": [{"node", "tensors": {name: {added, updated, deleted}}}]}`).

use std::io::Write;

use deeplake_core::Dataset;
use deeplake_core::version::Ref;
use deeplake_core::version::diff::{RowDiff, TensorChange, VersionDiff};

use super::StorageArgs;

/// Ids listed per kind in text output before the rest is counted.
const IDS_SHOWN: usize = 20;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Dataset path or URL; `PATH@ref` makes `ref` the node being read.
    pub path: String,
    /// First branch, commit or tag (a commit id is looked up before a branch, as in 3.x).
    pub a: Option<String>,
    /// Second branch, commit or tag.
    pub b: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Row-level form: sample ids added, updated and deleted per tensor.
    #[arg(long)]
    pub rows: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub async fn run(a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open_url(&a.path, opts).await?;
    let ra = a.a.as_deref().map(str::parse::<Ref>).transpose()?;
    let rb = a.b.as_deref().map(str::parse::<Ref>).transpose()?;
    let labels = side_labels(&ds, a);
    if a.rows {
        let d = ds.diff_rows(ra.as_ref(), rb.as_ref()).await?;
        if a.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&d.to_json())?)?;
        } else {
            write_rows(out, &d, &labels)?;
        }
        return Ok(());
    }
    let d = ds.diff(ra.as_ref(), rb.as_ref()).await?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&d.to_3x_json())?)?;
    } else {
        write_changes(out, &d, &labels)?;
    }
    Ok(())
}

fn side_labels(ds: &Dataset, a: &DiffArgs) -> Vec<String> {
    let here = format!("{} ({})", ds.node_id(), ds.branch());
    match (&a.a, &a.b) {
        (None, _) => vec![here],
        (Some(x), None) => vec![here, x.clone()],
        (Some(x), Some(y)) => vec![x.clone(), y.clone()],
    }
}

fn write_changes(out: &mut dyn Write, d: &VersionDiff, labels: &[String]) -> anyhow::Result<()> {
    match (d.sides.len(), &d.lca) {
        (1, Some(p)) => writeln!(out, "changes relative to the parent commit {p}")?,
        (1, None) => writeln!(out, "changes of the first commit")?,
        (_, Some(l)) => writeln!(out, "both sides relative to their common ancestor {l}")?,
        (_, None) => writeln!(out, "the two sides have no common ancestor")?,
    }
    for (side, label) in d.sides.iter().zip(labels) {
        writeln!(out)?;
        writeln!(out, "== {label}")?;
        if side.dataset.is_empty() {
            writeln!(out, "no changes")?;
        }
        for (ds, ts) in side.dataset.iter().zip(&side.tensor) {
            writeln!(out)?;
            match &ds.date {
                None => writeln!(out, "head {} (not committed)", ds.commit_id)?,
                Some(date) => {
                    writeln!(out, "commit {}", ds.commit_id)?;
                    writeln!(out, "Author:  {}", ds.author.as_deref().unwrap_or("-"))?;
                    writeln!(out, "Date:    {date}")?;
                    writeln!(out, "Message: {}", ds.message.as_deref().unwrap_or(""))?;
                    if let Some(m) = &ds.merge_parent {
                        writeln!(out, "Merged:  {m}")?;
                    }
                }
            }
            let mut any = false;
            if ds.info_updated {
                writeln!(out, "  dataset info updated")?;
                any = true;
            }
            for name in &ds.deleted {
                writeln!(out, "  deleted tensor {name}")?;
                any = true;
            }
            for (old, new) in &ds.renamed {
                writeln!(out, "  renamed tensor {old} -> {new}")?;
                any = true;
            }
            for (name, c) in &ts.tensors {
                if c.has_change() {
                    writeln!(out, "  {name}: {}", tensor_summary(c))?;
                    any = true;
                }
            }
            if !any {
                writeln!(out, "  no changes")?;
            }
        }
    }
    Ok(())
}

fn tensor_summary(c: &TensorChange) -> String {
    let mut parts = Vec::new();
    if c.created {
        parts.push("created".to_owned());
    }
    if c.cleared {
        parts.push("cleared".to_owned());
    }
    let (s, e) = c.data_added;
    if e > s {
        parts.push(format!("added {} rows [{s}, {e})", e - s));
    }
    if !c.data_updated.is_empty() {
        parts.push(format!(
            "updated {} rows [{}]",
            c.data_updated.len(),
            ranges(c.data_updated.iter().copied())
        ));
    }
    if !c.data_deleted.is_empty() {
        parts.push(format!(
            "deleted {} rows [{}]",
            c.data_deleted.len(),
            ranges(c.data_deleted.iter().copied())
        ));
    }
    if c.info_updated {
        parts.push("info updated".to_owned());
    }
    if c.data_transformed_in_place {
        parts.push("transformed in place".to_owned());
    }
    parts.join(", ")
}

/// Ascending row numbers as `1-3, 5, 8-9`.
fn ranges(rows: impl Iterator<Item = u64>) -> String {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for r in rows {
        match spans.last_mut() {
            Some((_, end)) if r == *end + 1 => *end = r,
            _ => spans.push((r, r)),
        }
    }
    spans
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_rows(out: &mut dyn Write, d: &RowDiff, labels: &[String]) -> anyhow::Result<()> {
    match &d.lca {
        Some(l) => writeln!(out, "rows by sample id, relative to {l}")?,
        None => writeln!(out, "rows by sample id, relative to an empty dataset")?,
    }
    for (side, label) in d.sides.iter().zip(labels) {
        writeln!(out)?;
        writeln!(out, "== {label}")?;
        let mut any = false;
        for (name, c) in &side.tensors {
            if c.is_empty() {
                continue;
            }
            any = true;
            writeln!(
                out,
                "  {name}: {} added, {} updated, {} deleted",
                c.added.len(),
                c.updated.len(),
                c.deleted.len()
            )?;
            for (kind, ids) in [
                ("added", &c.added),
                ("updated", &c.updated),
                ("deleted", &c.deleted),
            ] {
                if ids.is_empty() {
                    continue;
                }
                let shown: Vec<String> = ids.iter().take(IDS_SHOWN).map(u64::to_string).collect();
                let more = ids.len().saturating_sub(IDS_SHOWN);
                let tail = if more > 0 {
                    format!(" ... ({more} more)")
                } else {
                    String::new()
                };
                writeln!(out, "    {kind:<8}{}{tail}", shown.join(" "))?;
            }
        }
        if !any {
            writeln!(out, "  no changes")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deeplake_core::{Dtype, NdArray, OpenOptions, Sample, TensorOptions};
    use serde_json::Value;

    fn int(v: i64) -> Sample {
        Sample::Array(NdArray::from_slice(vec![1], &[v]).unwrap())
    }

    /// c1 (root): x [1, 2]; c2: x[0] = 10, +3; main head: +4 (not committed).
    async fn history() -> (String, String, String) {
        let url = format!("memory://cli-diff-{:016x}", rand::random::<u64>());
        let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
        ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
            .await
            .unwrap();
        ds.extend("x", vec![int(1), int(2)]).await.unwrap();
        let c1 = ds.commit("first").await.unwrap();
        ds.update("x", 0, int(10)).await.unwrap();
        ds.append("x", int(3)).await.unwrap();
        let c2 = ds.commit("second").await.unwrap();
        ds.append("x", int(4)).await.unwrap();
        ds.close().await.unwrap();
        (url, c1, c2)
    }

    async fn cli(args: &[&str]) -> String {
        use clap::Parser;
        let cli = super::super::Cli::try_parse_from(
            std::iter::once("deeplake").chain(args.iter().copied()),
        )
        .unwrap();
        let mut out = Vec::new();
        match cli.command {
            super::super::Command::Diff(a) => run(&a, &mut out).await.unwrap(),
            super::super::Command::Log(a) => super::super::log::run(&a, &mut out).await.unwrap(),
            super::super::Command::Dump(a) => super::super::dump::run(&a, &mut out).await.unwrap(),
            other => panic!("{other:?}"),
        }
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn log_diff_and_dump_at_refs() {
        let (url, c1, c2) = history().await;
        let log: Value = serde_json::from_str(&cli(&["log", &url, "--json"]).await).unwrap();
        let ids: Vec<&str> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["commit_id"].as_str().unwrap())
            .collect();
        assert_eq!(&ids[1..], [c2.as_str(), c1.as_str()]);
        assert_eq!(log[0]["is_head"], true);
        assert_eq!(log[1]["message"], "second");
        assert!(log[1]["date"].is_string());
        let text = cli(&["log", &format!("{url}@{c2}")]).await;
        assert!(
            text.contains(&format!("commit {c2}")) && !text.contains("head "),
            "{text}"
        );
        // No refs: the head's own changes.
        let d: Value = serde_json::from_str(&cli(&["diff", &url, "--json"]).await).unwrap();
        assert_eq!(d["tensor"][0]["x"]["data_added"], serde_json::json!([3, 4]));
        assert_eq!(d["dataset"][0]["date"], Value::Null);
        // Two commits: c1 is c2's ancestor, so its side is empty.
        let d: Value =
            serde_json::from_str(&cli(&["diff", &url, &c1, &c2, "--json"]).await).unwrap();
        assert_eq!(d["dataset"][0], serde_json::json!([]));
        assert_eq!(
            d["tensor"][1][0]["x"]["data_updated"],
            serde_json::json!([0])
        );
        let text = cli(&["diff", &url, &c1, &c2]).await;
        assert!(
            text.contains("x: added 1 rows [2, 3), updated 1 rows [0]"),
            "{text}"
        );
        let rows: Value =
            serde_json::from_str(&cli(&["diff", &url, &c1, "--rows", "--json"]).await).unwrap();
        assert_eq!(rows["lca"], c1.as_str());
        assert_eq!(
            rows["sides"][0]["tensors"]["x"]["added"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            rows["sides"][0]["tensors"]["x"]["updated"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let text = cli(&["diff", &url, &c1, "--rows"]).await;
        assert!(text.contains("x: 2 added, 1 updated, 0 deleted"), "{text}");
        // dump and info take PATH@ref.
        let dump = cli(&["dump", &format!("{url}@{c1}")]).await;
        assert_eq!(
            dump.lines().collect::<Vec<_>>(),
            [r#"{"x":[1]}"#, r#"{"x":[2]}"#]
        );
        let dump = cli(&["dump", &format!("{url}@main")]).await;
        assert_eq!(dump.lines().count(), 4);
    }

    #[test]
    fn row_ranges_compress() {
        assert_eq!(ranges([1, 2, 3, 5, 8, 9].into_iter()), "1-3, 5, 8-9");
        assert_eq!(ranges(std::iter::empty()), "");
    }

    #[test]
    fn tensor_summaries_list_what_changed() {
        let c = TensorChange {
            created: true,
            data_added: (0, 3),
            data_updated: [4, 5].into_iter().collect(),
            info_updated: true,
            ..Default::default()
        };
        assert_eq!(
            tensor_summary(&c),
            "created, added 3 rows [0, 3), updated 2 rows [4-5], info updated"
        );
    }
}
