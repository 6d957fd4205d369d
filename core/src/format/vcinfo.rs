//! `version_control_info.json` (the commit tree and branch heads), `commit_info.json`
//! (one node record) and the lock-file record. Unknown keys are kept on round trip,
//! because 3.x ignores fields it does not know and we add some.
//!
//! `merge_parent` is ours: the commit a merge commit merged in. 3.x keeps it in memory
//! only; we persist it in the node record (written only when set), so later merges and
//! our log see it, while 3.x reads the node as an ordinary commit.

use std::collections::BTreeMap;

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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionControlInfo {
    pub commits: BTreeMap<String, CommitNode>,
    pub branches: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl VersionControlInfo {
    /// A fresh tree: the root commit as the head of `main`.
    pub fn new_root() -> Self {
        let root = crate::ids::FIRST_COMMIT_ID.to_owned();
        let mut commits = BTreeMap::new();
        commits.insert(root.clone(), CommitNode::head("main", None));
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
        for (id, node) in &v.commits {
            if let Some(p) = &node.parent
                && !v.commits.contains_key(p)
            {
                return Err(Corruption::new(format!(
                    "commit {id} has unknown parent {p}"
                )));
            }
        }
        for (b, id) in &v.branches {
            if !v.commits.contains_key(id) {
                return Err(Corruption::new(format!(
                    "branch {b} points at unknown commit {id}"
                )));
            }
        }
        Ok(v)
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
        let mut out = Vec::new();
        let mut cur = Some(id.to_owned());
        while let Some(c) = cur {
            if out.len() > self.commits.len() {
                break; // a cycle in a corrupt file must not loop forever
            }
            cur = self.commits.get(&c).and_then(|n| n.parent.clone());
            out.push(c);
        }
        out
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
        t.commits.insert("m".repeat(40), merge);
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
}
