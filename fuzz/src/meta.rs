//! Body of `meta_json`: the JSON files of the 3.x layout and of our own records, as
//! core parses them: `dataset_meta.json`, `tensor_meta.json`, the info files,
//! `version_control_info.json` and commit-tree log records, `linked_creds.json`,
//! `chunk_set`, lock records, saved-view entries, and the tagged values (ndarray,
//! bytes, Sample) nested in json samples.
//!
//! Contract: no parser panics; what parses re-encodes to bytes that parse to the same
//! value; Python-style JSON (`to_pretty`, `to_compact`) reads back as the value written;
//! a log delta that applies to a consistent tree and passes its check leaves the
//! whole tree consistent, and a consistent tree's encoding round-trips.

use deeplake_core::Htype;
use deeplake_core::dataset::views::SavedView;
use deeplake_core::format::json;
use deeplake_core::format::linked_creds::LinkedCreds;
use deeplake_core::format::meta::{self, DatasetMeta, TensorMeta};
use deeplake_core::format::vcinfo::{EncodeCache, LockRecord, VersionControlInfo};
use deeplake_core::version::chunk_set::ChunkSet;
use deeplake_core::version::log::TreeRecord;
use serde_json::Value;

/// Runs `data` through every JSON parser (see the module doc).
pub fn meta_json(data: &[u8]) {
    dataset_meta(data);
    tensor_meta(data);
    info(data);
    version_control(data);
    tree_record(data);
    linked_creds(data);
    chunk_set(data);
    lock_record(data);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        python_json(&v);
        custom_values(&v);
        views(&v);
    }
}

fn dataset_meta(data: &[u8]) {
    let Ok(m) = DatasetMeta::decode(data) else {
        return;
    };
    let again = DatasetMeta::decode(&m.encode()).expect("re-encoded dataset_meta decodes");
    assert_eq!(again, m, "dataset_meta round trip");
}

fn tensor_meta(data: &[u8]) {
    let Ok(m) = TensorMeta::decode(data) else {
        return;
    };
    assert_eq!(m.min_shape.len(), m.max_shape.len(), "checked on decode");
    let _ = Htype::from_meta(&m.htype, m.is_link, m.is_sequence);
    let again = TensorMeta::decode(&m.encode()).expect("re-encoded tensor_meta decodes");
    assert_eq!(again, m, "tensor_meta round trip");
}

fn info(data: &[u8]) {
    let Ok(m) = meta::decode_info(data, "tensor_info.json") else {
        return;
    };
    let again =
        meta::decode_info(&meta::encode_info(&m), "tensor_info.json").expect("info re-decodes");
    assert_eq!(again, m, "info round trip");
}

fn version_control(data: &[u8]) {
    let Ok(t) = VersionControlInfo::decode(data) else {
        return;
    };
    let plain = t.encode();
    let mut cache = EncodeCache::default();
    assert_eq!(
        t.encode_cached(&mut cache),
        plain,
        "cached encoding differs"
    );
    // Twice: the second call reuses the cache.
    assert_eq!(t.encode_cached(&mut cache), plain, "cache reuse differs");
    let again = VersionControlInfo::decode(&plain).expect("re-encoded tree decodes");
    assert_eq!(again, t, "version_control_info round trip");
    if t.check().is_ok() {
        for id in t.commits.keys().take(16) {
            // Ancestry walks parents: bounded by the tree even if it has a cycle.
            let chain = t.ancestry(id);
            assert!(
                chain.len() <= t.commits.len() + 1,
                "ancestry of {id} unbounded"
            );
        }
    }
}

fn tree_record(data: &[u8]) {
    let Ok(r) = serde_json::from_slice::<TreeRecord>(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&r).expect("a decoded record serializes");
    let again: TreeRecord = serde_json::from_slice(&bytes).expect("re-encoded record decodes");
    assert_eq!(again.seq, r.seq);
    assert_eq!(again.tree, r.tree, "log record tree round trip");
    assert_eq!(again.delta, r.delta, "log record delta round trip");
    let (Some(tree), Some(delta)) = (&r.tree, &r.delta) else {
        return;
    };
    let mut t = tree.clone();
    let mut tags = r.tags.clone();
    if delta.apply(&mut t, &mut tags).is_ok() && delta.check(&t).is_ok() {
        // The check covers what the delta touched: on a consistent tree, that keeps
        // the whole tree consistent.
        if tree.check().is_ok() {
            assert!(
                t.check().is_ok(),
                "a delta that passed its check broke the tree"
            );
        }
        if t.check().is_ok() {
            let round = VersionControlInfo::decode(&t.encode()).expect("applied tree re-decodes");
            assert_eq!(round, t, "tree after a delta round trip");
        }
    }
}

fn linked_creds(data: &[u8]) {
    let Ok(c) = LinkedCreds::decode(data) else {
        return;
    };
    let again = LinkedCreds::decode(&c.encode()).expect("re-encoded linked_creds decodes");
    assert_eq!(again, c, "linked_creds round trip");
    for k in c.creds_keys.iter().take(16) {
        if let Some(e) = c.encoding(Some(k)) {
            // A repeated name encodes as its first occurrence.
            assert_eq!(
                c.key_of(e).ok().flatten(),
                Some(k.as_str()),
                "creds key {k:?} round trip"
            );
        }
    }
}

fn chunk_set(data: &[u8]) {
    let Ok(s) = ChunkSet::parse(data) else {
        return;
    };
    let again = ChunkSet::parse(&s.encode()).expect("re-encoded chunk_set parses");
    assert_eq!(again, s, "chunk_set round trip");
}

fn lock_record(data: &[u8]) {
    let Ok(r) = LockRecord::decode(data) else {
        return;
    };
    let again = LockRecord::decode(&r.encode()).expect("re-encoded lock record decodes");
    // NaN expiries compare unequal: compare the bits.
    assert_eq!(again.node_id, r.node_id);
    assert_eq!(again.expiry.to_bits(), r.expiry.to_bits());
    assert_eq!(again.tag, r.tag);
}

fn python_json(v: &Value) {
    for (form, bytes) in [
        ("pretty", json::to_pretty(v)),
        ("compact", json::to_compact(v)),
    ] {
        let back: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{form} JSON does not parse back: {e}"));
        assert_eq!(&back, v, "{form} JSON round trip");
    }
}

fn custom_values(v: &Value) {
    let mut stack = vec![v];
    let mut seen = 0;
    while let Some(x) = stack.pop() {
        seen += 1;
        if seen > 256 {
            break;
        }
        if let Ok(Some(json::CustomValue::NdArray(a))) = json::decode_custom(x) {
            let back = json::decode_custom(&json::ndarray_to_value(&a))
                .expect("own ndarray value decodes");
            assert_eq!(
                back,
                Some(json::CustomValue::NdArray(a)),
                "ndarray round trip"
            );
        }
        match x {
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
}

fn views(v: &Value) {
    let entries = match v {
        Value::Array(a) => a.iter().collect::<Vec<_>>(),
        other => vec![other],
    };
    for e in entries.into_iter().take(16) {
        let Value::Object(info) = e else { continue };
        let view = SavedView {
            info: info.clone(),
            indices: Vec::new(),
        };
        let _ = (view.id(), view.folder(), view.is_virtual(), view.commit());
    }
}
