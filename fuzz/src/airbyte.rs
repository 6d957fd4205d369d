//! Body of `airbyte_messages`: what the connector reads from outside, through the
//! functions a sync calls: the config (checked against the spec, then parsed), the
//! configured catalog and the columns planned from its JSON schemas, and stdin lines
//! (messages parsed into typed cells), then the columns a batch of parsed records
//! becomes.
//!
//! The input is read three ways: whole, as a config and as a catalog; its first line
//! as a catalog (the built-in one when it is not); every line as a message for that
//! catalog's streams.
//!
//! Contract: nothing panics; a planned stream's tensor names are distinct and valid;
//! a parsed record has one cell per column of its stream, and a state echoes as an
//! object; every column of a batch has one row per record.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use deeplake_connector::batch::{self, ColumnOut, MetaTensor, RowMeta, Source};
use deeplake_connector::config::Config;
use deeplake_connector::input::{Parsed, Route, Router, parse_line};
use deeplake_connector::protocol::{self, StreamKey};
use deeplake_connector::schema::{self, Column};
use deeplake_connector::stream::{Mode, StreamConfig};
use deeplake_connector::sync;
use deeplake_core::ids::TensorName;
use serde_json::Value;

/// A config using every option that changes how fields map: link detection, class
/// labels, boxes, binary images, a skipped field.
const CONFIG: &str = r#"{
  "destination": {"path": "memory://fuzz-airbyte"},
  "naming": {"prefix": "ab_"},
  "links": {"detect": true, "url_prefixes": ["http://", "s3://", "/"]},
  "tensors": [
    {"field": "label", "htype": "class_label", "class_names": ["cat", "dog"]},
    {"field": "box", "htype": "bbox", "dtype": "float32"},
    {"field": "photo", "htype": "image", "sample_compression": "png"},
    {"field": "secret", "skip": true}
  ],
  "chunk_compression": "lz4"
}"#;

/// Two streams: one of every JSON schema type, one append_dedup with a nested key.
const CATALOG: &str = r#"{"streams": [
  {"stream": {"name": "users", "namespace": "ns", "json_schema": {"type": "object", "properties": {
      "id": {"type": "integer"}, "score": {"type": "number"}, "ok": {"type": "boolean"},
      "name": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
      "day": {"type": "string", "format": "date"}, "ints": {"type": "array", "items": {"type": "integer"}},
      "vec": {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3},
      "tags": {"type": "array", "items": {"type": "string"}}, "doc": {"type": "object"},
      "any": {}, "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
      "image_url": {"type": "string"}, "label": {"type": "string"},
      "box": {"type": "array"}, "photo": {"type": "string"}, "secret": {"type": "string"}}}},
   "destination_sync_mode": "append"},
  {"stream": {"name": "orders", "json_schema": {"properties": {
      "key": {"type": "object"}, "n": {"type": ["null", "integer"]}}}},
   "destination_sync_mode": "append_dedup", "primary_key": [["key", "a"], ["n"]],
   "generation_id": 3, "minimum_generation_id": 3, "sync_id": 7}
]}"#;

/// Lines read per input, and records batched per stream: enough for any small input.
const MAX_LINES: usize = 256;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let raw: Value = serde_json::from_str(CONFIG).expect("the fuzz config is JSON");
        Config::parse(&raw).unwrap_or_else(|f| panic!("the fuzz config is refused: {}", f.message))
    })
}

fn builtin_catalog() -> Vec<StreamConfig> {
    let raw: Value = serde_json::from_str(CATALOG).expect("the fuzz catalog is JSON");
    sync::parse_catalog(&raw)
        .unwrap_or_else(|f| panic!("the fuzz catalog is refused: {}", f.message))
}

/// Runs `data` through the connector's input parsers (see the module doc).
pub fn airbyte_messages(data: &[u8]) {
    let cfg = config();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        whole_config(&v);
        if let Ok(streams) = sync::parse_catalog(&v) {
            for sc in &streams {
                let _ = plan(sc, cfg);
            }
        }
    }

    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let from_input = serde_json::from_slice::<Value>(first)
        .ok()
        .and_then(|v| sync::parse_catalog(&v).ok())
        .filter(|s| !s.is_empty());
    let streams = from_input.unwrap_or_else(builtin_catalog);
    let mut planned = Vec::new();
    for sc in streams {
        if let Ok(cols) = plan(&sc, cfg) {
            planned.push((sc, cols));
        }
    }
    if planned.is_empty() {
        return;
    }
    let keys: HashMap<StreamKey, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, (sc, _))| (sc.key.clone(), i))
        .collect();
    let routes = planned
        .iter()
        .map(|(sc, cols)| {
            Route::new(
                cols.iter()
                    .map(|c| (c.field.clone(), c.kind.clone()))
                    .collect(),
                (sc.mode == Mode::Dedup).then(|| sc.primary_key.clone()),
            )
        })
        .collect();
    let router = Router::new(&keys, routes, cfg.links.url_prefixes.clone());

    let mut records: Vec<Vec<deeplake_connector::input::RecordIn>> =
        planned.iter().map(|_| Vec::new()).collect();
    for line in std::iter::once(first).chain(lines).take(MAX_LINES) {
        match parse_line(line, &router) {
            Parsed::Record(r) => {
                let (sc, cols) = &planned[r.stream];
                assert_eq!(
                    r.cells.len(),
                    cols.len(),
                    "cells of a {} record",
                    sc.label()
                );
                assert_eq!(
                    r.pk.is_some(),
                    sc.mode == Mode::Dedup,
                    "primary key of {}",
                    sc.label()
                );
                if let Some(pk) = &r.pk {
                    serde_json::from_str::<Value>(pk).expect("a primary key is JSON");
                }
                records[r.stream].push(*r);
            }
            Parsed::Rejected { stream } => assert!(stream < planned.len()),
            Parsed::State(s) => {
                assert!(s.is_object(), "a state echoes as an object");
                let _ = protocol::state_scope(&s);
                let _ = protocol::echo_state(s, 1, 0);
            }
            Parsed::Unknown { .. } | Parsed::Status { .. } | Parsed::Ignored => {}
            Parsed::Bad(preview) => assert!(preview.chars().count() <= 123, "preview too long"),
        }
    }
    for ((sc, cols), recs) in planned.iter().zip(&records) {
        if !recs.is_empty() {
            batch_columns(sc, cols, recs);
        }
    }
}

fn whole_config(v: &Value) {
    let Ok(c) = Config::parse(v) else {
        return;
    };
    assert!(
        !c.root.ends_with('/') || c.root.ends_with("://"),
        "root {:?} keeps a trailing /",
        c.root
    );
    assert!(c.batch_size > 0, "batch size 0");
}

/// Plans a stream's columns and checks the names it chose.
fn plan(sc: &StreamConfig, cfg: &Config) -> Result<Vec<Column>, ()> {
    let cols = schema::plan_columns(&sc.key.1, &sc.schema, cfg).map_err(|_| ())?;
    let mut seen = HashSet::new();
    for c in &cols {
        for t in std::iter::once(&c.tensor).chain(c.ts_tensor.as_ref()) {
            assert!(
                seen.insert(t.clone()),
                "tensor {t:?} planned twice in {}",
                sc.label()
            );
            assert!(
                t.parse::<TensorName>().is_ok(),
                "planned tensor name {t:?} is invalid"
            );
        }
    }
    Ok(cols)
}

/// The tensors of a batch, as `StreamWriter::open` lists them, and their columns.
fn batch_columns(sc: &StreamConfig, cols: &[Column], recs: &[deeplake_connector::input::RecordIn]) {
    let tensors = deeplake_connector::stream::tensor_sources(cols, sc.mode);
    let rows: Vec<&deeplake_connector::input::RecordIn> = recs.iter().collect();
    let rm = RowMeta {
        generation_id: sc.generation_id,
        sync_id: sc.sync_id,
    };
    // Both paths a sync takes: samples for every tensor, and packed rows where the
    // tensor stores the column's type plainly (as a fresh tensor of the plan would).
    let packs: Vec<Option<batch::Pack>> = tensors
        .iter()
        .map(|(_, src)| {
            let (htype, dtype) = match src {
                Source::Field(ci) => (
                    cols[*ci].htype.clone(),
                    cols[*ci].dtype.map(|d| d.name().to_owned()),
                ),
                Source::Timestamp(_)
                | Source::Meta(MetaTensor::ExtractedAt | MetaTensor::GenerationId) => {
                    ("generic".to_owned(), Some("int64".to_owned()))
                }
                Source::Meta(MetaTensor::RawId | MetaTensor::Pk) => ("text".to_owned(), None),
                Source::Meta(MetaTensor::Meta) => ("json".to_owned(), None),
            };
            batch::Pack::for_tensor(src, cols, &htype, dtype.as_deref())
        })
        .collect();
    for packs in [None, Some(packs.as_slice())] {
        let out = batch::columns(cols, &tensors, packs, &rows, rm);
        assert_eq!(out.len(), tensors.len(), "one column per tensor");
        for ((name, _), col) in tensors.iter().zip(&out) {
            let n = match col {
                ColumnOut::Samples(s) => s.len(),
                ColumnOut::Packed(p) => p.len(),
            };
            assert_eq!(n, rows.len(), "tensor {name}: rows of a batch");
        }
    }
}
