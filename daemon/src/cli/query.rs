//! `deeplake query PATH[@ref] "TQL" [--json | --table]`: runs a query and prints the
//! view: one JSON line per row (source row index, then the columns), or a table where
//! arrays print as their shapes. `EXPLAIN ...` prints the plan; `--save-view ID` saves the
//! rows as a view that deeplake 3.x lists and loads.

use std::io::Write;

use deeplake_core::tql::{self, QueryOptions, Val};
use deeplake_core::version::Ref;
use deeplake_core::{Dataset, Sample};
use serde_json::{Map, Value, json};

use super::StorageArgs;

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Dataset path or URL; `PATH@ref` queries a branch, commit or tag. A query may
    /// also name its sources itself: FROM "url@ref".
    pub path: String,
    /// The TQL query.
    pub query: String,
    /// JSON lines (the default).
    #[arg(long, conflicts_with = "table")]
    pub json: bool,
    /// An aligned table; arrays print as their shapes.
    #[arg(long)]
    pub table: bool,
    /// Print whole arrays instead of their shapes (JSON output).
    #[arg(long)]
    pub full: bool,
    /// Save the resulting rows as a view with this id (3.x layout: `.queries/<id>`,
    /// `queries.json`); the dataset must be at a commit with no uncommitted changes.
    #[arg(long, value_name = "ID")]
    pub save_view: Option<String>,
    /// Message of the saved view.
    #[arg(long, requires = "save_view")]
    pub message: Option<String>,
    /// Seed of RANDOM() and SAMPLE BY.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Arrays above this many elements print as shape and dtype unless --full.
const SMALL: usize = 16;

fn val_json(v: &Val, full: bool) -> Value {
    match v {
        Val::Arr(a) if !full && a.data.len() > SMALL => json!({ "shape": a.shape }),
        other => other.to_json(),
    }
}

fn sample_json(s: &Sample, full: bool) -> Value {
    match s {
        Sample::Array(a) if a.num_elements() == 1 && a.shape.len() <= 1 => {
            let v = a.to_f64_vec()[0];
            if a.dtype.is_float() {
                json!(v)
            } else {
                json!(v as i64)
            }
        }
        Sample::Array(a) if full || a.num_elements() <= SMALL => {
            let arr = tql::Arr::new(
                a.shape.clone(),
                a.to_f64_vec(),
                if a.dtype.is_float() {
                    tql::Elem::Float
                } else {
                    tql::Elem::Int
                },
            );
            arr.to_json()
        }
        Sample::Array(a) => json!({ "shape": a.shape, "dtype": a.dtype.name() }),
        Sample::Encoded { shape, .. } => json!({ "shape": shape }),
        Sample::Text(t) => json!(t),
        Sample::Json(j) => j.clone(),
        Sample::List(l) => Value::Array(l.clone()),
        Sample::Link { path, .. } => json!(path),
        Sample::Empty => Value::Null,
        other => json!(format!("{other:?}")),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Object(m) if m.contains_key("shape") => {
            let dims: Vec<String> = m["shape"]
                .as_array()
                .map(|a| a.iter().map(|d| d.to_string()).collect())
                .unwrap_or_default();
            format!("({})", dims.join(", "))
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(a: &QueryArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut opts = a.storage.open_options()?;
    opts.read_only = true;
    let ds = Dataset::open_url(&a.path, opts.clone()).await?;
    let qopts = QueryOptions {
        seed: a.seed,
        storage: opts.storage.clone(),
    };
    let res = tql::query(&ds, &a.query, &qopts).await?;
    if let Some(plan) = &res.explain {
        write!(out, "{plan}")?;
        return Ok(());
    }
    if let Some(id) = &a.save_view {
        let v = res
            .save_view(&ds, id, a.message.as_deref(), Some(&a.query), &opts)
            .await?;
        writeln!(
            out,
            "{}",
            json!({ "saved_view": v.id(), "rows": res.rows.len(), "commit": v.commit() })
        )?;
        return Ok(());
    }
    // Stored tensors pass through a `SELECT *`; each source version is opened once.
    let mut opened: Vec<Option<Dataset>> = Vec::new();
    opened.resize_with(res.sources.len(), || None);
    let mut rows: Vec<Map<String, Value>> = Vec::with_capacity(res.rows.len());
    let mut header: Vec<String> = vec!["row".to_owned()];
    if res.sources.len() > 1 {
        header.push("source".to_owned());
    }
    let stored: Vec<String> = if res.star {
        ds.tensor_names()
    } else {
        Vec::new()
    };
    header.extend(stored.iter().cloned());
    header.extend(res.columns.iter().map(|(n, _)| n.clone()));
    for (k, &(s, r)) in res.rows.iter().enumerate() {
        let mut m = Map::new();
        m.insert("row".into(), json!(r));
        if res.sources.len() > 1 {
            let src = &res.sources[s as usize];
            m.insert("source".into(), json!(format!("{}@{}", src.url, src.node)));
        }
        if !stored.is_empty() {
            let src = &res.sources[s as usize];
            let d = if src.url == ds.url() && src.node == ds.node_id().as_str() {
                &ds
            } else {
                if opened[s as usize].is_none() {
                    opened[s as usize] = Some(
                        Dataset::open_ref(&src.url, &Ref::Name(src.node.clone()), opts.clone())
                            .await?,
                    );
                }
                opened[s as usize]
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("source {} not opened", src.url))?
            };
            for t in &stored {
                let v = match d.tensor_len(t) {
                    Ok(n) if r < n => sample_json(&d.read(t, r).await?, a.full),
                    _ => Value::Null,
                };
                m.insert(t.clone(), v);
            }
        }
        for (n, vals) in &res.columns {
            m.insert(n.clone(), val_json(&vals[k], a.full));
        }
        if let Some(g) = &res.groups {
            m.insert(
                "members".into(),
                json!(g[k].iter().map(|x| x.1).collect::<Vec<_>>()),
            );
        }
        rows.push(m);
    }
    if res.groups.is_some() {
        header.push("members".to_owned());
    }
    if a.table {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|m| {
                header
                    .iter()
                    .map(|h| m.get(h).map(cell).unwrap_or_default())
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
                    .min(60)
            })
            .collect();
        let line = |cols: Vec<String>| -> String {
            cols.iter()
                .zip(&widths)
                .map(|(c, w)| {
                    let c: String = c.chars().take(*w).collect();
                    format!("{c:<w$}")
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        writeln!(out, "{}", line(header.clone()))?;
        for c in cells {
            writeln!(out, "{}", line(c))?;
        }
        writeln!(out, "({} rows)", rows.len())?;
    } else {
        for m in rows {
            serde_json::to_writer(&mut *out, &Value::Object(m))?;
            writeln!(out)?;
        }
    }
    Ok(())
}
