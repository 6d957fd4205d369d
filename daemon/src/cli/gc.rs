//! `deeplake gc PATH [--delete] [--grace 1h] [--json]`: lists the objects of a dataset
//! that no branch, tag or saved view reaches any more (folders of reset or deleted
//! heads, chunks superseded by rewrites, old flush records); `--delete` deletes them.
//! The default is a dry run.
//!
//! Objects younger than the grace period (default `1h`; `30m`, `90s`, `0s`, `1h30m`,
//! ...) are left alone, since writers in flight write data before the record that makes
//! it visible. Files that a linked tensor points to are never touched. With `--delete`
//! the dataset is scanned again right before deleting, and a key that became live (or
//! was written again) since the listing stays.
//!
//! Text output: one line per commit folder or object, then the totals per reason.
//! `--json`: `{"url", "deleted": bool, "grace_seconds", "live_commits", "scanned",
//! "objects", "bytes", "by_reason": {reason: {"objects", "bytes"}}, "items": [{"key",
//! "bytes", "reason"}], "young": {"objects", "bytes"}, "kept": [{"key", "reason",
//! "why"}]}`; `items` are the deleted objects with `--delete`, the garbage without.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use deeplake_core::dataset::gc::{self, GcItem, GcOptions, GcReason};
use deeplake_core::store::Store;
use serde_json::{Value, json};

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Dataset path or URL.
    pub path: String,
    /// Delete the garbage (without it, only list it).
    #[arg(long)]
    pub delete: bool,
    /// Leave objects younger than this alone (e.g. 1h, 30m, 0s).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub grace: Duration,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// `1h`, `30m`, `45s`, `2d`, `1h30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 1h, 30m, 90s, 0s)");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Bytes in decimal units, as 3.x counts them.
fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 object".to_owned()
    } else {
        format!("{n} objects")
    }
}

fn reason_text(r: GcReason) -> &'static str {
    match r {
        GcReason::UnreachableCommit => "commit no branch, tag or view reaches",
        GcReason::UnreferencedChunk => "chunk no version reads",
        GcReason::SupersededFlushRecord => "superseded flush record",
    }
}

pub(crate) fn items_json(items: &[GcItem]) -> Vec<Value> {
    items
        .iter()
        .map(|i| json!({"key": i.key, "bytes": i.bytes, "reason": i.reason.as_str()}))
        .collect()
}

pub(crate) fn totals_json(totals: &BTreeMap<GcReason, (usize, u64)>) -> Value {
    totals
        .iter()
        .map(|(r, (n, b))| (r.as_str().to_owned(), json!({"objects": n, "bytes": b})))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

pub async fn run(a: &GcArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let opts = a.storage.open_options()?;
    let store = match Store::open(&a.path, &opts.storage) {
        Err(deeplake_core::Error::NotFound { .. }) => {
            return Err(deeplake_core::Error::not_found("dataset", &a.path).into());
        }
        other => other?,
    };
    let plan = gc::plan(&store, &GcOptions { grace: a.grace }).await?;
    let (items, kept, totals) = if a.delete {
        let report = gc::apply(&store, &plan).await?;
        let totals = report.totals();
        (report.deleted, report.kept, totals)
    } else {
        let totals = plan.totals();
        (plan.items.clone(), Vec::new(), totals)
    };
    let bytes: u64 = items.iter().map(|i| i.bytes).sum();
    if a.json {
        let v = json!({
            "url": plan.url,
            "deleted": a.delete,
            "grace_seconds": a.grace.as_secs(),
            "live_commits": plan.live_commits,
            "scanned": plan.scanned,
            "objects": items.len(),
            "bytes": bytes,
            "by_reason": totals_json(&totals),
            "items": items_json(&items),
            "young": {"objects": plan.young_objects, "bytes": plan.young_bytes},
            "kept": kept.iter().map(|(i, why)| json!({
                "key": i.key, "reason": i.reason.as_str(), "why": why.as_str(),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {}, {} live commits",
        plan.url,
        count(plan.scanned),
        plan.live_commits
    )?;
    let verb = if a.delete { "deleted" } else { "would delete" };
    if items.is_empty() {
        writeln!(out, "nothing to delete")?;
    } else {
        let groups = gc::groups(&items);
        let width = groups.iter().map(|g| g.key.len()).max().unwrap_or(0);
        writeln!(out, "{verb}:")?;
        for g in &groups {
            let what = match g.reason {
                GcReason::UnreachableCommit => {
                    format!("{} ({})", reason_text(g.reason), count(g.objects))
                }
                r => reason_text(r).to_owned(),
            };
            writeln!(out, "  {:<width$}  {:>9}  {what}", g.key, size(g.bytes))?;
        }
        writeln!(out, "{verb} {}, {}", count(items.len()), size(bytes))?;
        for (r, (n, b)) in &totals {
            writeln!(out, "  {:<24} {}, {}", r.as_str(), count(*n), size(*b))?;
        }
    }
    for (i, why) in &kept {
        writeln!(out, "kept {} ({})", i.key, why.as_str())?;
    }
    if plan.young_objects > 0 {
        writeln!(
            out,
            "left alone, younger than the grace period ({}s): {}, {}",
            a.grace.as_secs(),
            count(plan.young_objects),
            size(plan.young_bytes)
        )?;
    }
    if !a.delete && !items.is_empty() {
        writeln!(out, "dry run: run again with --delete to delete them")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("1h"), Ok(3600));
        assert_eq!(d("30m"), Ok(1800));
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("2d"), Ok(172_800));
        for bad in ["", "h", "1x", "1h30", "-1s", "1.5h"] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1500), "1.5 kB");
        assert_eq!(size(20_100_000), "20.1 MB");
    }
}
