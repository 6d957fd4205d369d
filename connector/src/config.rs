//! The connector's configuration: checked against the spec's `connectionSpecification`
//! (JSON Schema), then parsed once into validated types. Inner code never re-checks.

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dtype, Htype};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Failure, Result};

/// The ConnectorSpecification printed by `spec`.
pub const SPEC: &str = include_str!("../../spec/connector-spec.json");

#[derive(Deserialize, Default)]
struct RawConfig {
    destination: RawDestination,
    naming: Option<RawNaming>,
    tensors: Option<Vec<RawOverride>>,
    links: Option<RawLinks>,
    chunk_compression: Option<String>,
    batch_size: Option<u64>,
    flush_records: Option<u64>,
    flush_interval_seconds: Option<f64>,
    commits: Option<String>,
    writer_lease_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawDestination {
    path: String,
    s3: Option<RawS3>,
}

#[derive(Deserialize, Default)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    allow_http: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawNaming {
    prefix: Option<String>,
    use_namespace: Option<bool>,
    default_namespace: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct RawOverride {
    pub stream: Option<String>,
    pub field: String,
    pub htype: Option<String>,
    pub dtype: Option<String>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub class_names: Option<Vec<String>>,
    pub bbox_coords: Option<Value>,
    pub skip: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawLinks {
    detect: Option<bool>,
    field_names: Option<Vec<String>>,
    url_prefixes: Option<Vec<String>>,
    image_field_names: Option<Vec<String>>,
    verify: Option<bool>,
}

/// A per-field choice that replaces the automatic mapping.
#[derive(Clone, Debug)]
pub struct Override {
    pub stream: Option<String>,
    pub field: String,
    pub htype: Option<String>,
    pub dtype: Option<Dtype>,
    pub sample_compression: Option<String>,
    pub chunk_compression: Option<String>,
    pub class_names: Vec<String>,
    pub bbox_coords: Option<Value>,
    pub skip: bool,
}

#[derive(Clone, Debug)]
pub struct Links {
    pub detect: bool,
    pub field_names: Vec<String>,
    pub url_prefixes: Vec<String>,
    pub image_field_names: Vec<String>,
    pub verify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commits {
    PerSync,
    PerState,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Root under which each stream's dataset lives (no trailing `/`).
    pub root: String,
    pub storage: StoreOptions,
    pub prefix: String,
    pub use_namespace: bool,
    pub default_namespace: Option<String>,
    pub overrides: Vec<Override>,
    pub links: Links,
    pub chunk_compression: Option<String>,
    pub batch_size: usize,
    pub flush_records: u64,
    pub flush_interval: std::time::Duration,
    pub commits: Commits,
    /// How long a dataset's writer lease lasts without renewal.
    pub lease: std::time::Duration,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The spec's `connectionSpecification`.
pub fn connection_specification() -> Result<Value> {
    let spec: Value = serde_json::from_str(SPEC)
        .map_err(|e| Failure::system(format!("the built-in spec is not JSON: {e}")))?;
    spec.get("connectionSpecification")
        .cloned()
        .ok_or_else(|| Failure::system("the built-in spec has no connectionSpecification"))
}

/// Reads a JSON file named on the command line.
pub fn read_json(path: &str, what: &str) -> Result<Value> {
    let text = std::fs::read(path)
        .map_err(|e| Failure::config(format!("cannot read the {what} file {path}: {e}")))?;
    serde_json::from_slice(&text)
        .map_err(|e| Failure::config(format!("the {what} file {path} is not JSON: {e}")))
}

impl Config {
    /// Validates `raw` against the spec, then parses it.
    pub fn parse(raw: &Value) -> Result<Config> {
        let schema = connection_specification()?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            Failure::system(format!("the built-in spec is not a valid schema: {e}"))
        })?;
        let errors: Vec<String> = validator
            .iter_errors(raw)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    format!("{e}")
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !errors.is_empty() {
            return Err(Failure::config(format!(
                "the config does not match the connector spec: {}",
                errors.join("; ")
            )));
        }
        // Nulls mean absent, as everywhere in the protocol.
        let cleaned = crate::protocol::drop_nulls(raw.clone());
        let rc: RawConfig = serde_json::from_value(cleaned)
            .map_err(|e| Failure::config(format!("the config cannot be read: {e}")))?;
        let root = rc.destination.path.trim().trim_end_matches('/').to_owned();
        if root.is_empty() {
            return Err(Failure::config("destination.path is empty"));
        }
        let mut storage = StoreOptions::default();
        if let Some(s3) = rc.destination.s3 {
            for (k, v) in [
                ("endpoint", s3.endpoint),
                ("region", s3.region),
                ("access_key_id", s3.access_key_id),
                ("secret_access_key", s3.secret_access_key),
                ("token", s3.session_token),
            ] {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    storage = storage.with(k, v);
                }
            }
            if let Some(h) = s3.allow_http {
                storage = storage.with("allow_http", h.to_string());
            }
        }
        let naming = rc.naming.unwrap_or_default();
        let mut overrides = Vec::new();
        for o in rc.tensors.unwrap_or_default() {
            overrides.push(parse_override(o)?);
        }
        let links = rc.links.unwrap_or_default();
        let links = Links {
            detect: links.detect.unwrap_or(true),
            field_names: links
                .field_names
                .unwrap_or_else(|| {
                    strings(&[
                        "*_url", "*_uri", "url", "uri", "image", "*_image", "image_*", "*_path",
                    ])
                })
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            url_prefixes: links.url_prefixes.unwrap_or_else(|| {
                strings(&[
                    "http://", "https://", "s3://", "gcs://", "gs://", "file://", "/",
                ])
            }),
            image_field_names: links
                .image_field_names
                .unwrap_or_else(|| {
                    strings(&["*image*", "*img*", "*photo*", "*picture*", "*thumbnail*"])
                })
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            verify: links.verify.unwrap_or(false),
        };
        let chunk_compression = match rc.chunk_compression.as_deref() {
            None | Some("lz4") => Some("lz4".to_owned()),
            Some("none") => None,
            Some(other) => {
                return Err(Failure::config(format!(
                    "chunk_compression {other:?} is not one of none, lz4"
                )));
            }
        };
        let commits = match rc.commits.as_deref() {
            None | Some("per_sync") => Commits::PerSync,
            Some("per_state") => Commits::PerState,
            Some(other) => {
                return Err(Failure::config(format!(
                    "commits {other:?} is not one of per_sync, per_state"
                )));
            }
        };
        let secs = rc.flush_interval_seconds.unwrap_or(30.0);
        Ok(Config {
            root,
            storage,
            prefix: naming.prefix.unwrap_or_default(),
            use_namespace: naming.use_namespace.unwrap_or(true),
            default_namespace: naming.default_namespace.filter(|s| !s.is_empty()),
            overrides,
            links,
            chunk_compression,
            batch_size: rc.batch_size.unwrap_or(10_000).clamp(1, 1_000_000) as usize,
            flush_records: rc.flush_records.unwrap_or(10_000).max(1),
            flush_interval: std::time::Duration::from_secs_f64(secs.clamp(0.001, 86_400.0)),
            commits,
            lease: std::time::Duration::from_secs(
                rc.writer_lease_seconds.unwrap_or(10).clamp(1, 3600),
            ),
        })
    }

    /// The override for `field` of `stream`, if any (a stream-specific one first).
    pub fn override_for(&self, stream: &str, field: &str) -> Option<&Override> {
        let mut generic = None;
        for o in &self.overrides {
            if o.field != field {
                continue;
            }
            match o.stream.as_deref() {
                Some(s) if s == stream => return Some(o),
                None => generic = generic.or(Some(o)),
                Some(_) => {}
            }
        }
        generic
    }
}

fn parse_override(o: RawOverride) -> Result<Override> {
    let what = format!("tensors override for field {:?}", o.field);
    if let Some(h) = &o.htype {
        Htype::parse(h).map_err(|e| Failure::config(format!("{what}: {e}")))?;
    }
    let dtype = match &o.dtype {
        Some(d) => Some(
            d.parse::<Dtype>()
                .map_err(|e| Failure::config(format!("{what}: {e}")))?,
        ),
        None => None,
    };
    for c in [&o.sample_compression, &o.chunk_compression]
        .into_iter()
        .flatten()
    {
        deeplake_core::format::compression::Compression::parse(c)
            .map_err(|e| Failure::config(format!("{what}: {e}")))?;
    }
    let stream = o.stream.filter(|s| !s.is_empty() && s != "*");
    Ok(Override {
        stream,
        field: o.field,
        htype: o.htype,
        dtype,
        sample_compression: o.sample_compression,
        chunk_compression: o.chunk_compression,
        class_names: o.class_names.unwrap_or_default(),
        bbox_coords: o.bbox_coords,
        skip: o.skip.unwrap_or(false),
    })
}

/// `*` matches any run of characters (case-insensitive: both sides are lowercased).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(&json!({"destination": {"path": "/some/dir/"}})).unwrap();
        assert_eq!(c.root, "/some/dir");
        assert_eq!(c.batch_size, 10_000);
        assert_eq!(c.commits, Commits::PerSync);
        assert_eq!(c.chunk_compression.as_deref(), Some("lz4"));
        assert!(c.links.detect && !c.links.verify);
    }

    #[test]
    fn bad_configs_fail_with_the_reason() {
        let e = Config::parse(&json!({})).err().unwrap();
        assert!(e.message.contains("destination"), "{}", e.message);
        let e = Config::parse(&json!({"destination": {"path": "/x"}, "batch_size": 0}))
            .err()
            .unwrap();
        assert!(e.message.contains("batch_size"), "{}", e.message);
        let e = Config::parse(&json!({"destination": {"path": "/x"},
            "tensors": [{"field": "a", "htype": "nonsense"}]}))
        .err()
        .unwrap();
        assert!(e.message.contains("nonsense"), "{}", e.message);
        // Unknown top-level keys are tolerated.
        assert!(Config::parse(&json!({"destination": {"path": "/x"}, "later": 1})).is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*_url", "Image_URL"));
        assert!(glob_match("image_*", "image_small"));
        assert!(glob_match("url", "url"));
        assert!(!glob_match("*_url", "urls"));
        assert!(glob_match("*a*b", "xxaybb"));
    }
}
