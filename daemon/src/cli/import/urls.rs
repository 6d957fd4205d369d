//! `deeplake import PATH --from-urls FILE`: a table of URLs (CSV with a header row, or
//! JSON lines) becomes a dataset whose URL column is a link tensor.
//!
//! Contract:
//! * The format is chosen by extension (`.csv`; `.jsonl`, `.ndjson`, `.json`), else by
//!   content (a first character `{` means JSON lines).
//! * Every line is parsed and checked before the dataset is created; bad lines (a
//!   malformed record, a wrong number of fields, a missing or empty URL) are all reported
//!   with their line numbers and nothing is written.
//! * Tensors are named after their columns. The URL column becomes a tensor of
//!   `--link-htype` (default `link[image]`); every link gets `--creds-key` when given.
//!   Other columns: numbers -> `generic` int64 or float64 (missing values are empty
//!   samples); short strings with few distinct values -> `class_label` (class names
//!   sorted); other strings -> `text`; objects, lists or mixed values -> `json`.
//! * Links are verified at append (fetched through the linker, in parallel within its
//!   bound) unless `--no-verify`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use deeplake_core::{Dtype, Htype, NdArray, Sample, TensorOptions};
use serde_json::Value;

use super::progress::Progress;
use super::{Batch, ImportArgs, Prepare, TensorSpec, check_target, plan_batches, summary};

/// Most bad lines listed in an error.
const SHOW_BAD: usize = 20;

/// Parsed records: column names in first-seen order, and `(line, values)` per record.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<(usize, BTreeMap<String, Value>)>,
}

/// CSV records with the line each starts on; or the line and reason of a syntax error.
type CsvRecords = Result<Vec<(usize, Vec<String>)>, (usize, String)>;

/// Splits CSV text into records of fields with the line each starts on (quotes may
/// hold commas, newlines and doubled quotes).
fn csv_records(text: &str) -> CsvRecords {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut line = 1;
    let mut start_line = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
                any = true;
            }
            '"' => return Err((line, "a quote inside an unquoted field".to_owned())),
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
                any = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if any || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    out.push((start_line, std::mem::take(&mut fields)));
                }
                was_quoted = false;
                any = false;
                line += 1;
                start_line = line;
            }
            _ if was_quoted => {
                return Err((line, "text after a closing quote".to_owned()));
            }
            _ => {
                field.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err((start_line, "a quoted field is never closed".to_owned()));
    }
    if any || !field.is_empty() {
        fields.push(field);
        out.push((start_line, fields));
    }
    Ok(out)
}

/// Parses CSV (header row first) or JSON lines into a table, collecting bad lines.
pub(crate) fn parse(text: &str, jsonl: bool) -> (Table, Vec<String>) {
    let mut t = Table::default();
    let mut bad = Vec::new();
    if jsonl {
        for (i, l) in text.lines().enumerate() {
            let line = i + 1;
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => {
                    for k in m.keys() {
                        if !t.columns.contains(k) {
                            t.columns.push(k.clone());
                        }
                    }
                    t.rows.push((line, m.into_iter().collect()));
                }
                Ok(_) => bad.push(format!("line {line}: not a JSON object")),
                Err(e) => bad.push(format!("line {line}: not JSON ({e})")),
            }
        }
        return (t, bad);
    }
    let records = match csv_records(text) {
        Ok(r) => r,
        Err((line, msg)) => {
            bad.push(format!("line {line}: {msg}"));
            return (t, bad);
        }
    };
    let mut it = records.into_iter();
    let Some((_, header)) = it.next() else {
        return (t, bad);
    };
    t.columns = header.iter().map(|h| h.trim().to_owned()).collect();
    for (line, fields) in it {
        if fields.len() != t.columns.len() {
            bad.push(format!(
                "line {line}: {} fields, the header has {}",
                fields.len(),
                t.columns.len()
            ));
            continue;
        }
        let row = t
            .columns
            .iter()
            .zip(fields)
            .map(|(c, f)| {
                let v = if f.is_empty() {
                    Value::Null
                } else {
                    Value::String(f)
                };
                (c.clone(), v)
            })
            .collect();
        t.rows.push((line, row));
    }
    (t, bad)
}

/// What a non-URL column becomes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Int,
    Float,
    Label(Vec<String>),
    Text,
    Json,
}

fn as_number(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) => Some(v.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Value::from(i))
            } else {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::from)
            }
        }
        _ => None,
    }
}

fn as_label(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Chooses a column's kind from its values (`Null` is a missing value).
pub(crate) fn kind_of(values: &[&Value]) -> Kind {
    let present: Vec<&Value> = values.iter().copied().filter(|v| !v.is_null()).collect();
    if present.is_empty() {
        return Kind::Text;
    }
    let nums: Option<Vec<Value>> = present.iter().map(|v| as_number(v)).collect();
    if let Some(nums) = nums {
        return if nums.iter().all(|n| n.is_i64() || n.is_u64()) {
            Kind::Int
        } else {
            Kind::Float
        };
    }
    if let Some(labels) = present
        .iter()
        .map(|v| as_label(v))
        .collect::<Option<Vec<_>>>()
    {
        let distinct: BTreeSet<&String> = labels.iter().collect();
        let short = labels
            .iter()
            .all(|l| l.len() <= 64 && !l.contains('\n') && l.split_whitespace().count() <= 3);
        if short && distinct.len() <= (labels.len() / 2).max(1) {
            return Kind::Label(distinct.into_iter().cloned().collect());
        }
        if present.iter().all(|v| v.is_string()) {
            return Kind::Text;
        }
    }
    Kind::Json
}

fn sample_of(kind: &Kind, v: &Value) -> anyhow::Result<Sample> {
    Ok(match (kind, v) {
        (Kind::Int | Kind::Float | Kind::Label(_), Value::Null) => Sample::Empty,
        (Kind::Int, v) => {
            let n = as_number(v)
                .and_then(|n| n.as_i64())
                .context("not an integer")?;
            Sample::Array(NdArray::from_slice(vec![1], &[n])?)
        }
        (Kind::Float, v) => {
            let n = as_number(v)
                .and_then(|n| n.as_f64())
                .context("not a number")?;
            Sample::Array(NdArray::from_slice(vec![1], &[n])?)
        }
        (Kind::Label(_), v) => Sample::Text(as_label(v).context("not a label")?),
        (Kind::Text, Value::Null) => Sample::Text(String::new()),
        (Kind::Text, Value::String(s)) => Sample::Text(s.clone()),
        (Kind::Text, other) => Sample::Text(other.to_string()),
        (Kind::Json, v) => Sample::Json(v.clone()),
    })
}

fn spec_of(name: &str, kind: &Kind) -> TensorSpec {
    let opts = match kind {
        Kind::Int => TensorOptions::new("generic").dtype(Dtype::I64),
        Kind::Float => TensorOptions::new("generic").dtype(Dtype::F64),
        Kind::Label(names) => TensorOptions::new("class_label").class_names(names.clone()),
        Kind::Text => TensorOptions::new("text"),
        Kind::Json => TensorOptions::new("json"),
    };
    TensorSpec {
        name: name.to_owned(),
        opts,
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Int => "generic int64".to_owned(),
        Kind::Float => "generic float64".to_owned(),
        Kind::Label(n) => format!("class_label, {} classes", n.len()),
        Kind::Text => "text".to_owned(),
        Kind::Json => "json".to_owned(),
    }
}

fn is_jsonl(file: &Path, text: &str) -> bool {
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => false,
        Some("jsonl" | "ndjson" | "json") => true,
        _ => text.trim_start().starts_with('{'),
    }
}

pub(crate) async fn import_urls(
    a: &ImportArgs,
    file: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let htype =
        Htype::parse(&a.link_htype).with_context(|| format!("--link-htype {:?}", a.link_htype))?;
    if !htype.is_link {
        bail!(
            "--link-htype {:?} is not a link htype (link[image], link[video], ...)",
            a.link_htype
        );
    }
    check_target(a).await?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--from-urls {}: cannot read the file", file.display()))?;
    let (table, mut bad) = parse(&text, is_jsonl(file, &text));
    let url_col = &a.url_column;
    if !table.columns.contains(url_col) && bad.is_empty() {
        bail!(
            "--from-urls {}: no column {url_col:?} (columns: {}); choose one with --url-column",
            file.display(),
            table.columns.join(", ")
        );
    }
    for (line, row) in &table.rows {
        match row.get(url_col) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            None | Some(Value::Null) => bad.push(format!("line {line}: no {url_col:?}")),
            Some(Value::String(_)) => bad.push(format!("line {line}: {url_col:?} is empty")),
            Some(_) => bad.push(format!("line {line}: {url_col:?} is not a string")),
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        let mut shown: Vec<String> = bad.into_iter().take(SHOW_BAD).collect();
        if n > SHOW_BAD {
            shown.push(format!("... and {} more", n - SHOW_BAD));
        }
        bail!(
            "--from-urls {}: {n} bad line(s); nothing was imported:\n  {}",
            file.display(),
            shown.join("\n  ")
        );
    }
    if table.rows.is_empty() {
        bail!(
            "--from-urls {}: no records; nothing to import",
            file.display()
        );
    }
    let null = Value::Null;
    let others: Vec<(String, Kind)> = table
        .columns
        .iter()
        .filter(|c| *c != url_col)
        .map(|c| {
            let vals: Vec<&Value> = table
                .rows
                .iter()
                .map(|(_, r)| r.get(c).unwrap_or(&null))
                .collect();
            (c.clone(), kind_of(&vals))
        })
        .collect();
    for c in std::iter::once(url_col).chain(others.iter().map(|(c, _)| c)) {
        c.parse::<deeplake_core::ids::TensorName>()
            .with_context(|| format!("column {c:?} cannot name a tensor"))?;
    }
    let mut specs = vec![TensorSpec {
        name: url_col.clone(),
        opts: TensorOptions::new(a.link_htype.clone()).verify(!a.no_verify),
    }];
    specs.extend(others.iter().map(|(c, k)| spec_of(c, k)));
    // Every cell becomes a sample now, so a value that does not fit fails before any write.
    let creds = a.creds_key.clone();
    let mut columns: Vec<Vec<Sample>> = vec![Vec::with_capacity(table.rows.len()); specs.len()];
    for (line, row) in &table.rows {
        let url = match row.get(url_col) {
            Some(Value::String(s)) => s.trim().to_owned(),
            _ => bail!("line {line}: no {url_col:?}"),
        };
        columns[0].push(Sample::Link {
            path: url,
            creds_key: creds.clone(),
        });
        for (k, (c, kind)) in others.iter().enumerate() {
            let s = sample_of(kind, row.get(c).unwrap_or(&null))
                .with_context(|| format!("line {line}, column {c:?}"))?;
            columns[k + 1].push(s);
        }
    }
    let total = table.rows.len() as u64;
    let batches = plan_batches(&vec![1; table.rows.len()], a.batch as usize, u64::MAX);
    let progress = Arc::new(Progress::counting("importing", "rows", total));
    let shared = Arc::new((columns, batches.clone()));
    let p = Arc::clone(&progress);
    let prepare: Prepare = Arc::new(move |k| {
        let (columns, batches) = &*shared;
        let range = batches
            .get(k)
            .cloned()
            .context("batch index out of range")?;
        let cols = columns
            .iter()
            .map(|c| c.get(range.clone()).map(<[Sample]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .context("batch out of range")?;
        p.inc(range.len() as u64);
        Ok(Batch {
            columns: cols,
            rows: range.len() as u64,
            file_bytes: 0,
            reencoded: 0,
        })
    });
    let totals = super::write_dataset(a, specs, batches.len(), total, prepare).await?;
    progress.finish();
    writeln!(
        out,
        "links: column {url_col:?} -> {} ({}{})",
        a.link_htype,
        if a.no_verify {
            "unverified"
        } else {
            "verified"
        },
        a.creds_key
            .as_deref()
            .map(|k| format!(", creds key {k:?}"))
            .unwrap_or_default()
    )?;
    for (c, k) in &others {
        writeln!(out, "column {c:?} -> {}", describe(k))?;
    }
    summary(out, &a.path, &totals, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_commas_newlines_and_bad_lines() {
        let (t, bad) = parse(
            "url,label,caption\n\"http://h/a,b.jpg\",cat,\"two\nlines\"\nhttp://h/c.jpg,dog,\"say \"\"hi\"\"\"\nhttp://h/d.jpg,dog\n\n",
            false,
        );
        assert_eq!(t.columns, ["url", "label", "caption"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].1["url"], json!("http://h/a,b.jpg"));
        assert_eq!(t.rows[0].1["caption"], json!("two\nlines"));
        assert_eq!(t.rows[1].0, 4);
        assert_eq!(t.rows[1].1["caption"], json!("say \"hi\""));
        assert_eq!(bad, ["line 5: 2 fields, the header has 3"]);
        let (_, bad) = parse("url\n\"open\n", false);
        assert_eq!(bad, ["line 2: a quoted field is never closed"]);
    }

    #[test]
    fn jsonl_bad_lines_have_numbers() {
        let (t, bad) = parse(
            "{\"url\": \"a\", \"n\": 1}\n[1]\n{oops\n\n{\"url\": \"b\"}\n",
            true,
        );
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.columns, ["n", "url"]);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].starts_with("line 2: not a JSON object"), "{bad:?}");
        assert!(bad[1].starts_with("line 3: not JSON"), "{bad:?}");
    }

    #[test]
    fn column_kinds() {
        let v = |xs: &[Value]| kind_of(&xs.iter().collect::<Vec<_>>());
        assert_eq!(v(&[json!("1"), json!(2), Value::Null]), Kind::Int);
        assert_eq!(v(&[json!("1.5"), json!(2)]), Kind::Float);
        assert_eq!(
            v(&[json!("cat"), json!("dog"), json!("cat"), json!("dog")]),
            Kind::Label(vec!["cat".into(), "dog".into()])
        );
        assert_eq!(v(&[json!("a cat"), json!("a dog")]), Kind::Text);
        assert_eq!(v(&[json!({"a": 1}), json!("x")]), Kind::Json);
    }
}
