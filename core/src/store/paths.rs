//! Object keys of the 3.x layout, spelled here and nowhere else.
//!
//! Everything of the root commit lives at the top level; everything of commit `<c>`
//! lives under `versions/<c>/` with the same relative layout.
//!
//! ```text
//! dataset_meta.json  dataset_info.json  dataset_diff  commit_info.json  dataset_lock.lock
//! version_control_info.json  version_control_info.lock  linked_creds.json  queries.json
//! <tensor key>/tensor_meta.json  tensor_info.json  chunk_set  commit_diff
//! <tensor key>/chunks/<chunk name>
//! <tensor key>/{chunks_index,tiles_index,sequence_index,creds_index,pad_index}/unsharded
//! ```

use crate::ids::{ChunkId, CommitId, TensorName};

pub const VERSION_CONTROL_INFO: &str = "version_control_info.json";
pub const VERSION_CONTROL_LOCK: &str = "version_control_info.lock";
pub const LINKED_CREDS: &str = "linked_creds.json";
pub const QUERIES: &str = "queries.json";

/// `""` for the root commit, `versions/<c>/` otherwise.
pub fn commit_prefix(c: &CommitId) -> String {
    if c.is_root() {
        String::new()
    } else {
        format!("versions/{c}/")
    }
}

/// The folder of a non-root commit (`versions/<c>`); `None` for the root.
pub fn commit_folder(c: &CommitId) -> Option<String> {
    (!c.is_root()).then(|| format!("versions/{c}"))
}

pub fn dataset_meta(c: &CommitId) -> String {
    format!("{}dataset_meta.json", commit_prefix(c))
}
pub fn dataset_info(c: &CommitId) -> String {
    format!("{}dataset_info.json", commit_prefix(c))
}
pub fn dataset_diff(c: &CommitId) -> String {
    format!("{}dataset_diff", commit_prefix(c))
}
pub fn commit_info(c: &CommitId) -> String {
    format!("{}commit_info.json", commit_prefix(c))
}
pub fn dataset_lock(c: &CommitId) -> String {
    format!("{}dataset_lock.lock", commit_prefix(c))
}

/// The folder of tensor `key` in commit `c` (for listing and deletion).
pub fn tensor_folder(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}", commit_prefix(c))
}
pub fn tensor_meta(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/tensor_meta.json", commit_prefix(c))
}
pub fn tensor_info(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/tensor_info.json", commit_prefix(c))
}
pub fn chunk_set(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/chunk_set", commit_prefix(c))
}
pub fn commit_diff(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/commit_diff", commit_prefix(c))
}
pub fn chunk(c: &CommitId, key: &TensorName, id: ChunkId) -> String {
    format!("{}{key}/chunks/{}", commit_prefix(c), id.name())
}
pub fn chunks_index(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/chunks_index/unsharded", commit_prefix(c))
}
pub fn tiles_index(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/tiles_index/unsharded", commit_prefix(c))
}
pub fn sequence_index(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/sequence_index/unsharded", commit_prefix(c))
}
pub fn creds_index(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/creds_index/unsharded", commit_prefix(c))
}
pub fn pad_index(c: &CommitId, key: &TensorName) -> String {
    format!("{}{key}/pad_index/unsharded", commit_prefix(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_version_keys() {
        let root = CommitId::root();
        let t: TensorName = "images".parse().unwrap();
        assert_eq!(chunk(&root, &t, ChunkId(0xabc)), "images/chunks/abc");
        assert_eq!(chunks_index(&root, &t), "images/chunks_index/unsharded");
        let c: CommitId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(
            tensor_meta(&c, &t),
            "versions/0123456789abcdef0123456789abcdef01234567/images/tensor_meta.json"
        );
        assert_eq!(dataset_meta(&root), "dataset_meta.json");
        assert_eq!(commit_folder(&root), None);
    }
}
