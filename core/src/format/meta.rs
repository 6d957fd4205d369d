//! `dataset_meta.json` and `tensor_meta.json`. Written as Python does (sorted keys,
//! 4-space indent); unknown and htype-specific keys are kept on round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Corruption;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub version: String,
    /// Tensor keys (folder names) in creation order, hidden ones included.
    #[serde(default)]
    pub tensors: Vec<String>,
    /// Visible name -> key.
    #[serde(default)]
    pub tensor_names: BTreeMap<String, String>,
    #[serde(default)]
    pub hidden_tensors: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "default_index")]
    pub default_index: Value,
    #[serde(default)]
    pub allow_delete: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_index() -> Value {
    serde_json::json!([{"start": null, "stop": null, "step": null}])
}

impl Default for DatasetMeta {
    fn default() -> Self {
        DatasetMeta {
            version: super::WRITER_VERSION.to_owned(),
            tensors: Vec::new(),
            tensor_names: BTreeMap::new(),
            hidden_tensors: Vec::new(),
            groups: Vec::new(),
            default_index: default_index(),
            allow_delete: true,
            extra: Map::new(),
        }
    }
}

/// How a hidden companion tensor follows its parent (`links` in `tensor_meta.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub extend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    pub flatten_sequence: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    /// 3.x writes `null` for companions that have no data yet; that reads as generic.
    #[serde(deserialize_with = "null_as_generic")]
    pub htype: String,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub typestr: Option<String>,
    #[serde(default)]
    pub min_shape: Vec<u64>,
    #[serde(default)]
    pub max_shape: Vec<u64>,
    #[serde(default)]
    pub length: u64,
    #[serde(default)]
    pub sample_compression: Option<String>,
    #[serde(default)]
    pub chunk_compression: Option<String>,
    #[serde(default)]
    pub max_chunk_size: Option<u64>,
    #[serde(default)]
    pub tiling_threshold: Option<i64>,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub links: BTreeMap<String, LinkSpec>,
    #[serde(default)]
    pub is_sequence: bool,
    #[serde(default)]
    pub is_link: bool,
    #[serde(default)]
    pub verify: bool,
    #[serde(default)]
    pub name: Option<String>,
    pub version: String,
    /// Htype-specific keys (`class_names`, `_info`, `coords`, `vdb_indexes`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_generic<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(|| "generic".to_owned()))
}

fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, Corruption> {
    serde_json::from_slice(bytes).map_err(|e| Corruption::new(format!("{what}: {e}")))
}

fn encode_pretty<T: Serialize>(v: &T) -> Vec<u8> {
    match serde_json::to_value(v) {
        Ok(v) => super::json::to_pretty(&v),
        Err(_) => b"{}".to_vec(),
    }
}

impl DatasetMeta {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        decode_json(bytes, "dataset_meta.json")
    }
    pub fn encode(&self) -> Vec<u8> {
        encode_pretty(self)
    }
}

impl TensorMeta {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let m: TensorMeta = decode_json(bytes, "tensor_meta.json")?;
        if m.min_shape.len() != m.max_shape.len() {
            return Err(Corruption::new(
                "tensor_meta.json: min_shape and max_shape differ in length",
            ));
        }
        Ok(m)
    }
    pub fn encode(&self) -> Vec<u8> {
        encode_pretty(self)
    }
}

/// `dataset_info.json` / `tensor_info.json`: a free-form dict.
pub fn decode_info(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Corruption> {
    decode_json(bytes, what)
}

pub fn encode_info(info: &Map<String, Value>) -> Vec<u8> {
    super::json::to_pretty(&Value::Object(info.clone()))
}
