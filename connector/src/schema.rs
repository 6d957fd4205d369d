//! From a stream's JSON schema (and the user's overrides) to tensors, and from each
//! record value to a typed cell of its column.
//!
//! | JSON schema (nulls in unions ignored) | tensor |
//! |---|---|
//! | `integer` (or `number` with `airbyte_type: integer`) | generic int64 |
//! | `number` | generic float64 |
//! | `boolean` | generic bool |
//! | `string` | text |
//! | `string` + `format: date-time` / `date` | text, plus `<field>__ts` int64 (microseconds since the epoch, UTC) |
//! | `string` named like a link (config `links`) | `link` or `link[image]` |
//! | array of integers / numbers | generic int64 / float64; `embedding` (float32) when `minItems == maxItems` |
//! | array of strings | tag |
//! | object, other arrays, unions of several types, no type | json |
//!
//! A value that does not fit its column (a string in an integer column, say) is stored
//! as null and reported in `_airbyte_meta.changes` (`DESTINATION_TYPECAST_ERROR`);
//! nothing is ever stored as something it was not.

use std::collections::HashSet;

use deeplake_core::Dtype;
use serde_json::{Map, Value, json};

use crate::config::{Config, glob_match};
use crate::error::{Failure, Result};

/// How a column's values are read and stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Int,
    Float,
    Bool,
    Text,
    /// Text kept as sent, plus a parsed timestamp tensor.
    DateTime,
    IntList,
    /// Arrays of numbers stored with this dtype (float64 generic, float32 embedding).
    FloatList(Dtype),
    /// Arrays of strings (tag / list).
    StrList,
    Json,
    Link,
    ClassLabel,
    /// Boxes of 4 numbers each, stored with this dtype.
    BBox(Dtype),
    /// Base64 file bytes stored as-is in a sample-compressed tensor (image, ...).
    Binary,
    /// A number or an array of numbers, stored with this dtype.
    Numeric(Dtype),
}

/// One source field and the tensor(s) it becomes.
#[derive(Clone, Debug)]
pub struct Column {
    pub field: String,
    pub tensor: String,
    pub kind: Kind,
    pub htype: String,
    pub dtype: Option<Dtype>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub class_names: Vec<String>,
    pub info: Map<String, Value>,
    /// The parsed-timestamp tensor of a date-time column.
    pub ts_tensor: Option<String>,
    /// Why this mapping was chosen, for the log.
    pub why: String,
}

/// Names of the Airbyte metadata tensors.
pub const RAW_ID: &str = "_airbyte_raw_id";
pub const EXTRACTED_AT: &str = "_airbyte_extracted_at";
pub const GENERATION_ID: &str = "_airbyte_generation_id";
pub const META: &str = "_airbyte_meta";
/// Canonical primary key of each row (append_dedup streams): the persistent key index.
pub const PK: &str = "_airbyte_pk";
/// Staged tensors (a truncating sync's new data) are named `<STAGED_PREFIX><tensor>`.
pub const STAGED_PREFIX: &str = "_airbyte_next__";

const RESERVED_FIRST: [&str; 4] = ["versions", "_rs", "_rs_flush", ".queries"];

/// Reduces any UTF-8 name to a tensor name segment.
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        s = format!("_{s}");
    }
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Tensor names taken so far, companions included.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn take(&mut self, wanted: &str) -> String {
        let base = {
            let s = sanitize(wanted);
            let lower = s.to_ascii_lowercase();
            if RESERVED_FIRST.contains(&s.as_str())
                || lower.starts_with("_airbyte")
                || s.starts_with('.')
            {
                format!("f_{s}")
            } else {
                s
            }
        };
        let mut name = base.clone();
        let mut n = 2;
        while self.clashes(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.reserve(&name);
        name
    }

    fn clashes(&self, name: &str) -> bool {
        [
            name.to_owned(),
            format!("_{name}_id"),
            format!("_{name}_shape"),
            format!("_{name}_info"),
        ]
        .iter()
        .any(|n| self.0.contains(n))
    }

    fn reserve(&mut self, name: &str) {
        for n in [
            name.to_owned(),
            format!("_{name}_id"),
            format!("_{name}_shape"),
            format!("_{name}_info"),
        ] {
            self.0.insert(n);
        }
    }
}

/// The non-null JSON types a property allows, following `anyOf` / `oneOf` unions.
fn types_of(p: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match p.get("type") {
        Some(Value::String(s)) => out.push(s.clone()),
        Some(Value::Array(a)) => out.extend(a.iter().filter_map(|t| t.as_str().map(str::to_owned))),
        _ => {}
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = p.get(key) {
            for s in subs {
                out.extend(types_of(s));
            }
        }
    }
    out.retain(|t| t != "null");
    out.sort();
    out.dedup();
    out
}

/// The one non-null subschema of a union (for `format`, `items`), or the property.
fn main_schema(p: &Value) -> &Value {
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = p.get(key) {
            let non_null: Vec<&Value> = subs.iter().filter(|s| !types_of(s).is_empty()).collect();
            if non_null.len() == 1 {
                return main_schema(non_null[0]);
            }
        }
    }
    p
}

fn auto_kind(field: &str, p: &Value, cfg: &Config) -> (Kind, String, Option<Dtype>, String) {
    let types = types_of(p);
    let s = main_schema(p);
    let airbyte_type = s.get("airbyte_type").and_then(Value::as_str).unwrap_or("");
    let format = s.get("format").and_then(Value::as_str).unwrap_or("");
    if types.len() != 1 {
        let why = if types.is_empty() {
            "no JSON type".to_owned()
        } else {
            format!("union of {}", types.join(", "))
        };
        return (Kind::Json, "json".into(), None, why);
    }
    match types[0].as_str() {
        "integer" => (
            Kind::Int,
            "generic".into(),
            Some(Dtype::I64),
            "integer".into(),
        ),
        "number" if airbyte_type == "integer" => (
            Kind::Int,
            "generic".into(),
            Some(Dtype::I64),
            "number with airbyte_type integer".into(),
        ),
        "number" => (
            Kind::Float,
            "generic".into(),
            Some(Dtype::F64),
            "number".into(),
        ),
        "boolean" => (
            Kind::Bool,
            "generic".into(),
            Some(Dtype::Bool),
            "boolean".into(),
        ),
        "string" => {
            let lower = field.to_ascii_lowercase();
            if cfg.links.detect && cfg.links.field_names.iter().any(|g| glob_match(g, &lower)) {
                let image = cfg
                    .links
                    .image_field_names
                    .iter()
                    .any(|g| glob_match(g, &lower));
                let h = if image { "link[image]" } else { "link" };
                return (
                    Kind::Link,
                    h.into(),
                    None,
                    "string with a link-like field name".into(),
                );
            }
            if format == "date-time" || format == "date" || airbyte_type.starts_with("timestamp") {
                return (
                    Kind::DateTime,
                    "text".into(),
                    None,
                    format!(
                        "string, format {}",
                        if format.is_empty() {
                            airbyte_type
                        } else {
                            format
                        }
                    ),
                );
            }
            (Kind::Text, "text".into(), None, "string".into())
        }
        "array" => {
            let items = s
                .get("items")
                .map(main_schema)
                .cloned()
                .unwrap_or(Value::Null);
            let it = types_of(&items);
            let fixed = match (
                s.get("minItems").and_then(Value::as_u64),
                s.get("maxItems").and_then(Value::as_u64),
            ) {
                (Some(a), Some(b)) if a == b && a > 0 => Some(a),
                _ => None,
            };
            match it.as_slice() {
                [t] if t == "integer" => (
                    Kind::IntList,
                    "generic".into(),
                    Some(Dtype::I64),
                    "array of integers".into(),
                ),
                [t] if t == "number" => match fixed {
                    Some(n) => (
                        Kind::FloatList(Dtype::F32),
                        "embedding".into(),
                        Some(Dtype::F32),
                        format!("array of {n} numbers"),
                    ),
                    None => (
                        Kind::FloatList(Dtype::F64),
                        "generic".into(),
                        Some(Dtype::F64),
                        "array of numbers".into(),
                    ),
                },
                [t] if t == "string" => {
                    (Kind::StrList, "tag".into(), None, "array of strings".into())
                }
                _ => (
                    Kind::Json,
                    "json".into(),
                    None,
                    "array of mixed items".into(),
                ),
            }
        }
        "object" => (Kind::Json, "json".into(), None, "object".into()),
        other => (Kind::Json, "json".into(), None, format!("type {other}")),
    }
}

fn kind_for_htype(htype: &str, dtype: Option<Dtype>, compressed: bool) -> (Kind, Option<Dtype>) {
    let base = htype.split('[').next().unwrap_or(htype);
    if htype.starts_with("link") {
        return (Kind::Link, None);
    }
    match base {
        "text" => (Kind::Text, None),
        "json" => (Kind::Json, None),
        "list" | "tag" => (Kind::StrList, None),
        "class_label" => (Kind::ClassLabel, Some(dtype.unwrap_or(Dtype::U32))),
        "bbox" => {
            let d = dtype.unwrap_or(Dtype::F32);
            (Kind::BBox(d), Some(d))
        }
        "embedding" => {
            let d = dtype.unwrap_or(Dtype::F32);
            (Kind::FloatList(d), Some(d))
        }
        "image" | "image.rgb" | "image.gray" | "video" | "audio" | "point_cloud" | "mesh"
            if compressed =>
        {
            (Kind::Binary, dtype)
        }
        _ => {
            let d = dtype.unwrap_or(Dtype::F64);
            (Kind::Numeric(d), Some(d))
        }
    }
}

/// Plans the columns of one stream from its JSON schema.
pub fn plan_columns(stream: &str, schema: &Value, cfg: &Config) -> Result<Vec<Column>> {
    let mut names = Names::default();
    for meta in [RAW_ID, EXTRACTED_AT, GENERATION_ID, META, PK] {
        names.reserve(meta);
    }
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut cols = Vec::new();
    for (field, p) in props {
        let ov = cfg.override_for(stream, field);
        if ov.is_some_and(|o| o.skip) {
            continue;
        }
        let (mut kind, mut htype, mut dtype, mut why) = auto_kind(field, p, cfg);
        let mut sample_compression = None;
        let mut chunk_compression = cfg.chunk_compression.clone();
        let mut class_names = Vec::new();
        let mut info = Map::new();
        if let Some(o) = ov {
            if let Some(h) = &o.htype {
                // A chosen htype brings its own default dtype, not the schema's.
                let (k, d) = kind_for_htype(h, o.dtype, o.sample_compression.is_some());
                kind = k;
                dtype = d;
                htype = h.clone();
            } else if let Some(d) = o.dtype {
                dtype = Some(d);
                kind = match kind {
                    Kind::FloatList(_) | Kind::IntList => Kind::FloatList(d),
                    Kind::Int | Kind::Float | Kind::Bool => Kind::Numeric(d),
                    other => other,
                };
            }
            sample_compression = o.sample_compression.clone();
            if let Some(c) = &o.chunk_compression {
                chunk_compression = (c != "none").then(|| c.clone());
            }
            class_names = o.class_names.clone();
            if let Some(c) = &o.bbox_coords {
                info.insert("coords".into(), c.clone());
            }
            why = "configured override".into();
        }
        if matches!(kind, Kind::Binary | Kind::Link) {
            // Already-compressed files and link paths gain nothing from lz4.
            chunk_compression = None;
        }
        if htype.starts_with("link") && dtype.is_some() {
            dtype = None;
        }
        let tensor = names.take(field);
        let ts_tensor = (kind == Kind::DateTime).then(|| names.take(&format!("{field}__ts")));
        cols.push(Column {
            field: field.clone(),
            tensor,
            kind,
            htype,
            dtype,
            sample_compression,
            chunk_compression,
            class_names,
            info,
            ts_tensor,
            why,
        });
    }
    for o in &cfg.overrides {
        let mine = o.stream.as_deref().is_none_or(|s| s == stream);
        if mine && o.stream.is_some() && !props.contains_key(&o.field) {
            return Err(Failure::config(format!(
                "tensors override for {stream}.{}: the stream's schema has no such field",
                o.field
            )));
        }
    }
    Ok(cols)
}

/// The kind that fits an existing tensor, when it differs from the plan (a type change
/// between syncs: the stored tensor wins and values that do not fit are nulled).
pub fn kind_of_existing(htype: &str, dtype: Option<&str>, compressed: bool) -> Kind {
    let d = dtype.and_then(|d| d.parse::<Dtype>().ok());
    match (htype, d) {
        ("generic", Some(Dtype::I64)) => Kind::Int,
        ("generic", Some(Dtype::F64)) => Kind::Float,
        ("generic", Some(Dtype::Bool)) => Kind::Bool,
        _ => kind_for_htype(htype, d, compressed).0,
    }
}

/// One value of one column, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    /// Text and its timestamp in microseconds (None when it does not parse).
    DateTime(String, Option<i64>),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Json(Value),
    Bytes(Vec<u8>),
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            t => t.parse().ok(),
        },
        _ => None,
    }
}

/// Converts one value; `Err(())` means it does not fit the column (store null, report).
#[allow(clippy::result_unit_err)]
pub fn to_cell(kind: &Kind, v: Value, link_prefixes: &[String]) -> Result<Cell, ()> {
    if v.is_null() {
        return Ok(Cell::Null);
    }
    let cell = match kind {
        Kind::Int => Cell::Int(as_i64(&v).ok_or(())?),
        Kind::Float => Cell::Float(as_f64(&v).ok_or(())?),
        Kind::Bool => match v {
            Value::Bool(b) => Cell::Bool(b),
            Value::String(s) if s == "true" || s == "false" => Cell::Bool(s == "true"),
            _ => return Err(()),
        },
        Kind::Text => match v {
            Value::String(s) => Cell::Text(s),
            // A number or object in a string column keeps its exact JSON text.
            other => Cell::Text(other.to_string()),
        },
        Kind::DateTime => match v {
            Value::String(s) => {
                let ts = parse_timestamp_us(&s);
                Cell::DateTime(s, ts)
            }
            _ => return Err(()),
        },
        Kind::IntList => match v {
            Value::Array(a) => Cell::Ints(a.iter().map(as_i64).collect::<Option<_>>().ok_or(())?),
            _ => return Err(()),
        },
        Kind::FloatList(_) | Kind::Numeric(_) => match v {
            Value::Array(a) => Cell::Floats(flat_numbers(&a).ok_or(())?),
            other => Cell::Floats(vec![as_f64(&other).ok_or(())?]),
        },
        Kind::BBox(_) => match v {
            Value::Array(a) => {
                let f = flat_numbers(&a).ok_or(())?;
                if f.len() % 4 != 0 {
                    return Err(());
                }
                Cell::Floats(f)
            }
            _ => return Err(()),
        },
        Kind::StrList => match v {
            Value::Array(_) => Cell::Json(v),
            _ => return Err(()),
        },
        Kind::Json => Cell::Json(v),
        Kind::Link => match v {
            Value::String(s) if link_prefixes.iter().any(|p| s.starts_with(p.as_str())) => {
                Cell::Text(s)
            }
            Value::String(s) if s.is_empty() => Cell::Null,
            _ => return Err(()),
        },
        Kind::ClassLabel => match v {
            Value::String(s) => Cell::Text(s),
            Value::Number(_) => Cell::Int(as_i64(&v).filter(|i| *i >= 0).ok_or(())?),
            Value::Array(a) if a.iter().all(Value::is_string) => Cell::Json(Value::Array(a)),
            Value::Array(a) => Cell::Ints(
                a.iter()
                    .map(|x| as_i64(x).filter(|i| *i >= 0))
                    .collect::<Option<_>>()
                    .ok_or(())?,
            ),
            _ => return Err(()),
        },
        Kind::Binary => match v {
            Value::String(s) => {
                use base64::Engine;
                Cell::Bytes(
                    base64::engine::general_purpose::STANDARD
                        .decode(s.as_bytes())
                        .map_err(|_| ())?,
                )
            }
            _ => return Err(()),
        },
    };
    Ok(cell)
}

fn flat_numbers(a: &[Value]) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(a.len());
    for x in a {
        match x {
            Value::Array(inner) => out.extend(flat_numbers(inner)?),
            other => out.push(as_f64(other)?),
        }
    }
    Some(out)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses RFC 3339 / ISO 8601 date-times and dates (`2023-11-14`, `2023-11-14T22:13:05Z`,
/// `2023-11-14 22:13:05.123456+02:00`; no offset means UTC) to microseconds since the
/// epoch.
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut us = days_from_civil(y, mo, d) * 86_400_000_000;
    if b.len() == 10 {
        return Some(us);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let mut i = 16;
    let mut sec = 0;
    if b.get(i) == Some(&b':') {
        sec = num(i + 1..i + 3)?;
        i += 3;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    us += (h * 3600 + mi * 60 + sec) * 1_000_000;
    if matches!(b.get(i), Some(b'.') | Some(b',')) {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let digits = &s.trim()[start..end.min(start + 6)];
        let frac: i64 = digits.parse().ok()?;
        us += frac * 10i64.pow(6 - digits.len() as u32);
        i = end;
    }
    match b.get(i) {
        None => Some(us),
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => Some(us),
        Some(&c @ (b'+' | b'-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = match b.get(i + 3) {
                Some(b':') => num(i + 4..i + 6)?,
                Some(_) => num(i + 3..i + 5)?,
                None => 0,
            };
            let off = (oh * 60 + om) * 60_000_000;
            Some(if c == b'+' { us - off } else { us + off })
        }
        _ => None,
    }
}

/// A `_airbyte_meta.changes` entry for a field this destination nulled.
pub fn typecast_change(field: &str) -> Value {
    json!({"field": field, "change": "NULLED", "reason": "DESTINATION_TYPECAST_ERROR"})
}

/// A readable summary of a plan, for the start-of-sync LOG.
pub fn describe(stream: &str, cols: &[Column]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|c| {
            let mut s = format!("{} -> {} ({}", c.field, c.tensor, c.htype);
            if let Some(d) = c.dtype {
                s.push_str(&format!(", {d}"));
            }
            if let Some(t) = &c.ts_tensor {
                s.push_str(&format!(", timestamp in {t}"));
            }
            s.push_str(&format!("; {})", c.why));
            s
        })
        .collect();
    format!("stream {stream}: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg() -> Config {
        Config::parse(&json!({"destination": {"path": "/x"},
            "tensors": [{"field": "label", "htype": "class_label", "class_names": ["a", "b"]}]}))
        .unwrap()
    }

    #[test]
    fn schema_types_map_to_tensors() {
        let schema = json!({"properties": {
            "id": {"type": "integer"},
            "score": {"type": ["null", "number"]},
            "ok": {"type": "boolean"},
            "name": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "vec": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
            "nums": {"type": "array", "items": {"type": "number"}},
            "meta": {"type": "object"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "maybe": {"oneOf": [{"type": "null"}, {"type": "integer"}]},
            "image_url": {"type": "string"},
            "label": {"type": "integer"},
            "bad name!": {"type": "string"},
            "_airbyte_raw_id": {"type": "string"},
            "versions": {"type": "string"}
        }});
        let cols = plan_columns("s", &schema, &cfg()).unwrap();
        let by = |f: &str| cols.iter().find(|c| c.field == f).unwrap().clone();
        assert_eq!(by("id").kind, Kind::Int);
        assert_eq!(by("score").kind, Kind::Float);
        assert_eq!(by("ok").kind, Kind::Bool);
        assert_eq!(by("name").kind, Kind::Text);
        assert_eq!(by("at").kind, Kind::DateTime);
        assert_eq!(by("at").ts_tensor.as_deref(), Some("at__ts"));
        assert_eq!(by("tags").htype, "tag");
        assert_eq!(by("vec").htype, "embedding");
        assert_eq!(by("nums").kind, Kind::FloatList(Dtype::F64));
        assert_eq!(by("meta").kind, Kind::Json);
        assert_eq!(by("either").kind, Kind::Json);
        assert_eq!(by("maybe").kind, Kind::Int);
        assert_eq!(by("image_url").htype, "link[image]");
        assert_eq!(by("label").kind, Kind::ClassLabel);
        assert_eq!(by("label").class_names, ["a", "b"]);
        assert_eq!(by("bad name!").tensor, "bad_name_");
        assert_eq!(by("_airbyte_raw_id").tensor, "f__airbyte_raw_id");
        assert_eq!(by("versions").tensor, "f_versions");
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let p: Vec<String> = vec!["https://".into()];
        assert_eq!(to_cell(&Kind::Int, json!(3), &p), Ok(Cell::Int(3)));
        assert_eq!(to_cell(&Kind::Int, json!(3.0), &p), Ok(Cell::Int(3)));
        assert!(to_cell(&Kind::Int, json!(3.5), &p).is_err());
        assert!(to_cell(&Kind::Int, json!("x"), &p).is_err());
        assert_eq!(to_cell(&Kind::Int, json!(null), &p), Ok(Cell::Null));
        assert!(
            matches!(to_cell(&Kind::Float, json!("NaN"), &p), Ok(Cell::Float(f)) if f.is_nan())
        );
        assert_eq!(
            to_cell(&Kind::Text, json!(5), &p),
            Ok(Cell::Text("5".into()))
        );
        assert!(to_cell(&Kind::Link, json!("ftp://x"), &p).is_err());
        assert!(to_cell(&Kind::BBox(Dtype::F32), json!([1, 2, 3]), &p).is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp_us("1970-01-02"), Some(86_400_000_000));
        assert_eq!(
            parse_timestamp_us("2023-11-14T22:13:20+00:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(
            parse_timestamp_us("2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            parse_timestamp_us("2023-11-14 22:13:20"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_timestamp_us("not a date"), None);
        assert_eq!(parse_timestamp_us("2023-13-01"), None);
    }
}
