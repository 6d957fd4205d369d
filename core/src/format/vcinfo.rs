//! `version_control_info.json` (the commit tree and branch heads), `commit_info.json`
//! (one node record) and the lock-file record. Unknown keys are kept on round trip,
//! because 3.x ignores fields it does not know and we add some.
//!
//! `merge_parent` is ours: the commit a merge commit merged in. 3.x keeps it in memory
//! only; we persist it in the node record (written only when set), so later merges and
//! our log see it, while 3.x reads the node as an ordinary commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Corruption;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitNode {
    pub branch: String,
    pub parent: Option<String>,
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default)]
    pub commit_message: Option<String>,
    /// `None` marks a head (uncommitted, writable) node.
    #[serde(default)]
    pub commit_time: Option<f64>,
    #[serde(default)]
    pub commit_user_name: Option<String>,
    #[serde(default)]
    pub is_checkpoint: bool,
    #[serde(default)]
    pub total_samples_processed: u64,
    /// The second parent of a merge commit (the source commit it merged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_parent: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CommitNode {
    pub fn head(branch: &str, parent: Option<String>) -> Self {
        CommitNode {
            branch: branch.to_owned(),
            parent,
            children: Vec::new(),
            commit_message: None,
            commit_time: None,
            commit_user_name: None,
            is_checkpoint: false,
            total_samples_processed: 0,
            merge_parent: None,
            extra: Map::new(),
        }
    }

    pub fn is_head(&self) -> bool {
        self.commit_time.is_none()
    }
}

/// Encoded commit nodes of earlier [`VersionControlInfo::encode_cached`] calls, so that
/// re-encoding a tree that changed in a few nodes costs those nodes and a copy of the
/// rest.
#[derive(Clone, Debug, Default)]
pub struct EncodeCache {
    /// Sorted by node id, as the tree is: node id, the node as encoded, and its
    /// `"<id>": {...}` entry.
    nodes: Vec<(String, Arc<CommitNode>, String)>,
    /// Length of the last encoding (the next one is about as long).
    len: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionControlInfo {
    /// Nodes are shared between copies of the tree: a copy (the commit-tree log makes
    /// one per operation) costs the map, not the nodes; change one with
    /// `Arc::make_mut`.
    pub commits: BTreeMap<String, Arc<CommitNode>>,
    pub branches: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl VersionControlInfo {
    /// A fresh tree: the root commit as the head of `main`.
    pub fn new_root() -> Self {
        let root = crate::ids::FIRST_COMMIT_ID.to_owned();
        let mut commits = BTreeMap::new();
        commits.insert(root.clone(), Arc::new(CommitNode::head("main", None)));
        let mut branches = BTreeMap::new();
        branches.insert("main".to_owned(), root);
        VersionControlInfo {
            commits,
            branches,
            extra: Map::new(),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let v: Self = serde_json::from_slice(bytes)
            .map_err(|e| Corruption::new(format!("version_control_info.json: {e}")))?;
        v.check()?;
        Ok(v)
    }

    /// [`VersionControlInfo::encode`], byte for byte, reusing the encoded nodes in
    /// `cache` that did not change since they were encoded and remembering the others.
    pub fn encode_cached(&self, cache: &mut EncodeCache) -> Vec<u8> {
        if self.extra.contains_key("commits") || self.extra.contains_key("branches") {
            return self.encode();
        }
        let Ok(branches) = serde_json::to_value(&self.branches) else {
            return self.encode();
        };
        // The top-level keys in the order `encode` writes them: sorted, as a `Map` keeps
        // them; `commits` is written from the cache in its place.
        let mut top = self.extra.clone();
        top.insert("branches".to_owned(), branches);
        top.insert("commits".to_owned(), Value::Null);
        let mut out = String::with_capacity(cache.len + 64);
        out.push('{');
        for (i, (key, value)) in top.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            super::json::write_str(&mut out, key);
            out.push_str(": ");
            if key != "commits" {
                super::json::write_compact(&mut out, value);
                continue;
            }
            out.push('{');
            // Both sorted by id: one pass, reusing the entries of unchanged nodes.
            let mut seen = std::mem::take(&mut cache.nodes).into_iter().peekable();
            let mut fresh = Vec::with_capacity(self.commits.len());
            for (j, (id, node)) in self.commits.iter().enumerate() {
                if j > 0 {
                    out.push_str(", ");
                }
                while seen.next_if(|(s, _, _)| s < id).is_some() {}
                let hit = seen.next_if(|(s, _, _)| s == id);
                let (key, n, entry) = match hit {
                    // A node the tree still shares with the cache did not change.
                    Some((key, n, entry)) if Arc::ptr_eq(&n, node) || n == *node => (key, n, entry),
                    _ => {
                        let Ok(v) = serde_json::to_value(node) else {
                            return self.encode();
                        };
                        let mut entry = String::new();
                        super::json::write_str(&mut entry, id);
                        entry.push_str(": ");
                        super::json::write_compact(&mut entry, &v);
                        (id.clone(), node.clone(), entry)
                    }
                };
                out.push_str(&entry);
                fresh.push((key, n, entry));
            }
            cache.nodes = fresh;
            out.push('}');
        }
        out.push('}');
        cache.len = out.len();
        out.into_bytes()
    }

    /// Whether the tree is self-consistent: every parent and every branch head names a
    /// commit of the tree.
    pub fn check(&self) -> Result<(), Corruption> {
        for (id, node) in &self.commits {
            if let Some(p) = &node.parent
                && !self.commits.contains_key(p)
            {
                return Err(Corruption::new(format!(
                    "commit {id} has unknown parent {p}"
                )));
            }
        }
        for (b, id) in &self.branches {
            if !self.commits.contains_key(id) {
                return Err(Corruption::new(format!(
                    "branch {b} points at unknown commit {id}"
                )));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        match serde_json::to_value(self) {
            Ok(v) => super::json::to_compact(&v),
            // A struct of strings, numbers and maps always serializes.
            Err(_) => b"{}".to_vec(),
        }
    }

    /// The first-parent chain from `id` to the root, `id` first.
    pub fn ancestry(&self, id: &str) -> Vec<String> {
        self.ancestry_iter(id).map(str::to_owned).collect()
    }

    /// [`VersionControlInfo::ancestry`] without copying: `id`, then each first parent
    /// while the tree knows the node.
    pub fn ancestry_iter<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let mut cur = Some(id);
        // A cycle in a corrupt file must not loop forever.
        let mut left = self.commits.len() + 1;
        std::iter::from_fn(move || {
            let c = cur.take()?;
            if left == 0 {
                return None;
            }
            left -= 1;
            cur = self.commits.get(c).and_then(|n| n.parent.as_deref());
            Some(c)
        })
    }
}

/// A lock-file record: 6-byte node id, f64 expiry (unix seconds, LE), then a tag.
#[derive(Clone, Debug, PartialEq)]
pub struct LockRecord {
    pub node_id: [u8; 6],
    pub expiry: f64,
    pub tag: Vec<u8>,
}

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.tag.len());
        out.extend_from_slice(&self.node_id);
        out.extend_from_slice(&self.expiry.to_le_bytes());
        out.extend_from_slice(&self.tag);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.len() < 14 {
            return Err(Corruption::new(format!(
                "lock record of {} bytes (< 14)",
                bytes.len()
            )));
        }
        let mut node_id = [0u8; 6];
        node_id.copy_from_slice(&bytes[..6]);
        let mut e = [0u8; 8];
        e.copy_from_slice(&bytes[6..14]);
        Ok(LockRecord {
            node_id,
            expiry: f64::from_le_bytes(e),
            tag: bytes[14..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_parent_round_trips_and_is_left_out_when_unset() {
        let mut t = VersionControlInfo::new_root();
        let root = crate::ids::FIRST_COMMIT_ID.to_owned();
        let mut merge = CommitNode::head("main", Some(root.clone()));
        merge.commit_time = Some(1.0);
        merge.merge_parent = Some(root.clone());
        t.commits.insert("m".repeat(40), merge.into());
        let bytes = t.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.matches("merge_parent").count(), 1, "{text}");
        let back = VersionControlInfo::decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            back.commits["m".repeat(40).as_str()]
                .merge_parent
                .as_deref(),
            Some(root.as_str())
        );
        // A 3.x record has no such key, and keys we do not know survive a round trip.
        let x: CommitNode =
            serde_json::from_str(r#"{"branch":"main","parent":null,"later_field":7}"#).unwrap();
        assert_eq!(x.merge_parent, None);
        let v = serde_json::to_value(&x).unwrap();
        assert_eq!(v["later_field"], 7);
        assert!(v.get("merge_parent").is_none());
    }

    #[test]
    fn cached_encoding_is_byte_for_byte_the_plain_one() {
        let mut t = VersionControlInfo::new_root();
        let mut cache = EncodeCache::default();
        let root = crate::ids::FIRST_COMMIT_ID.to_owned();
        let check = |t: &VersionControlInfo, cache: &mut EncodeCache| {
            assert_eq!(
                String::from_utf8(t.encode_cached(cache)).unwrap(),
                String::from_utf8(t.encode()).unwrap()
            );
        };
        check(&t, &mut cache);
        let mut prev = root.clone();
        for i in 0..20 {
            let id = format!("{i:040x}");
            let mut n = CommitNode::head("main", Some(prev.clone()));
            n.commit_time = Some(1.7e9 + i as f64 / 3.0);
            n.commit_message = Some(format!("r\u{e9}sum\u{e9} \"{i}\"\n"));
            t.commits
                .get_mut(&prev)
                .map(Arc::make_mut)
                .unwrap()
                .children
                .push(id.clone());
            t.commits.insert(id.clone(), n.into());
            t.branches.insert("main".into(), id.clone());
            prev = id;
            check(&t, &mut cache);
        }
        // Changed, removed and unknown-keyed nodes; keys of the file 3.x may add.
        t.commits
            .get_mut(&root)
            .map(Arc::make_mut)
            .unwrap()
            .commit_message = Some("changed".into());
        t.commits
            .get_mut(&format!("{:040x}", 3))
            .map(Arc::make_mut)
            .unwrap()
            .extra
            .insert("a_later_field".into(), Value::from(true));
        let last = t.commits.remove(&prev).unwrap();
        t.branches
            .insert("main".into(), last.parent.clone().unwrap());
        check(&t, &mut cache);
        t.extra.insert("aaa".into(), Value::from(1));
        t.extra.insert("zzz".into(), Value::from("x"));
        check(&t, &mut cache);
        // A key that shadows one of ours: the plain encoding decides.
        t.extra.insert("commits".into(), Value::from(0));
        check(&t, &mut cache);
    }
}
