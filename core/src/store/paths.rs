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
pub const QUERIES_LOCK: &str = "queries.lock";
/// Saved views, each a complete dataset: `.queries/<view id>/...`.
pub const QUERIES_FOLDER: &str = ".queries";

/// The folder (under [`QUERIES_FOLDER`]) of view `id` once optimized, as 3.x names it.
pub fn optimized_view(id: &str) -> String {
    format!("{id}_OPTIMIZED")
}

/// The prefix of a saved view's dataset: `.queries/<folder>`.
pub fn view_folder(folder: &str) -> String {
    format!("{QUERIES_FOLDER}/{folder}")
}
/// Everything of ours that is not per commit (the tree log, leases).
pub const RS_FOLDER: &str = "_rs";

/// Our own records live under `_rs/` (3.x ignores folders it does not know).
///
/// ```text
/// _rs/log/<seq:020>.json                     the commit-tree log (immutable records)
/// _rs/lease/<branch>/<seq:020>.json          writer leases of a branch head
/// _rs/sidecar/<log>/<id>.json                a caller's own commit records
/// <commit prefix>_rs_flush/<seq:020>.json    flush records of a head (immutable)
/// <commit prefix>_rs_flush/applied.json      which record the 3.x files show
/// ```
pub const TREE_LOG_PREFIX: &str = "_rs/log";

pub fn tree_log(seq: u64) -> String {
    format!("{TREE_LOG_PREFIX}/{seq:020}.json")
}

pub fn lease_prefix(branch: &str) -> String {
    format!("_rs/lease/{branch}")
}

pub fn lease(branch: &str, seq: u64) -> String {
    format!("_rs/lease/{branch}/{seq:020}.json")
}

/// Where a commit's checkpoint of chunk locations for one tensor lives (ours; 3.x
/// never reads `_rs/`): every chunk of the commit's chunk index with the commit and key
/// it is stored under, so readers below it stop walking `chunk_set`s there.
pub fn chunk_map(c: &CommitId, key: &TensorName) -> String {
    format!("_rs/chunk_map/{c}/{key}")
}

/// A caller's own create-if-absent record `id` in its sidecar log `log`:
/// `_rs/sidecar/<log>/<id>.json`. Both parts are checked by [`crate::store::Sidecar`].
pub fn sidecar(log: &str, id: &str) -> String {
    format!("_rs/sidecar/{log}/{id}.json")
}

pub fn sidecar_prefix(log: &str) -> String {
    format!("_rs/sidecar/{log}")
}

pub fn flush_log_prefix(c: &CommitId) -> String {
    format!("{}_rs_flush", commit_prefix(c))
}

pub fn flush_log(c: &CommitId, seq: u64) -> String {
    format!("{}_rs_flush/{seq:020}.json", commit_prefix(c))
}

/// Which flush record the 3.x files of `c` show.
pub fn flush_applied(c: &CommitId) -> String {
    format!("{}_rs_flush/applied.json", commit_prefix(c))
}

/// The sequence number in a record key written by [`tree_log`], [`lease`] or
/// [`flush_log`]; `None` for any other key.
pub fn record_seq(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    if name.len() != 20 {
        return None;
    }
    name.parse().ok()
}

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

/// Where a key sits in the layout: the inverse of the builders above, for tools that
/// walk a listing (garbage collection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPlace<'a> {
    /// Our records that are not per commit (`_rs/...`).
    Records,
    /// Saved views: `.queries/...`, `queries.json`, `queries.lock`.
    Views,
    /// A key inside commit `commit`'s prefix; `rest` is relative to that prefix.
    Commit { commit: CommitId, rest: &'a str },
    /// Under `versions/` but not inside a commit folder.
    Unknown,
}

pub fn place(key: &str) -> KeyPlace<'_> {
    let first = key.split('/').next().unwrap_or_default();
    if first == RS_FOLDER {
        return KeyPlace::Records;
    }
    if first == QUERIES_FOLDER || key == QUERIES || key == QUERIES_LOCK {
        return KeyPlace::Views;
    }
    if let Some(inner) = key.strip_prefix("versions/") {
        return match inner.split_once('/') {
            Some((id, rest)) if !rest.is_empty() => match id.parse::<CommitId>() {
                // The root commit has no folder: a `versions/<root>/` is not ours.
                Ok(c) if !c.is_root() => KeyPlace::Commit { commit: c, rest },
                _ => KeyPlace::Unknown,
            },
            _ => KeyPlace::Unknown,
        };
    }
    KeyPlace::Commit {
        commit: CommitId::root(),
        rest: key,
    }
}

/// What a key relative to a commit prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitFile<'a> {
    /// `_rs_flush/<seq>.json`.
    FlushRecord(u64),
    /// `<tensor key>/chunks/<name>`.
    Chunk { tensor: &'a str, name: &'a str },
    /// Metadata, locks, or anything else.
    Other,
}

pub fn commit_file(rest: &str) -> CommitFile<'_> {
    if let Some(rec) = rest.strip_prefix("_rs_flush/") {
        return match record_seq(rec) {
            Some(seq) if !rec.contains('/') => CommitFile::FlushRecord(seq),
            _ => CommitFile::Other,
        };
    }
    let mut it = rest.rsplitn(3, '/');
    match (it.next(), it.next(), it.next()) {
        (Some(name), Some("chunks"), Some(tensor))
            if !tensor.is_empty()
                && (1..=16).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            CommitFile::Chunk { tensor, name }
        }
        _ => CommitFile::Other,
    }
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
        assert_eq!(tree_log(7), "_rs/log/00000000000000000007.json");
        assert_eq!(record_seq(&tree_log(7)), Some(7));
        assert_eq!(record_seq(&flush_log(&c, 12)), Some(12));
        assert_eq!(record_seq("_rs/log/junk.json"), None);
        assert_eq!(flush_log(&root, 0), "_rs_flush/00000000000000000000.json");
    }

    #[test]
    fn keys_parse_back_to_their_place() {
        let root = CommitId::root();
        let c: CommitId = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let t: TensorName = "group/images".parse().unwrap();
        let k = chunk(&c, &t, ChunkId(0xabc));
        let KeyPlace::Commit { commit, rest } = place(&k) else {
            panic!("{k}")
        };
        assert_eq!(commit, c);
        assert_eq!(
            commit_file(rest),
            CommitFile::Chunk {
                tensor: "group/images",
                name: "abc"
            }
        );
        let k = chunk(&root, &t, ChunkId(7));
        assert_eq!(
            place(&k),
            KeyPlace::Commit {
                commit: root.clone(),
                rest: "group/images/chunks/7"
            }
        );
        let k = flush_log(&c, 3);
        let KeyPlace::Commit { rest, .. } = place(&k) else {
            panic!()
        };
        assert_eq!(commit_file(rest), CommitFile::FlushRecord(3));
        let k = flush_applied(&c);
        let KeyPlace::Commit { rest, .. } = place(&k) else {
            panic!()
        };
        assert_eq!(commit_file(rest), CommitFile::Other);
        assert_eq!(commit_file("images/tensor_meta.json"), CommitFile::Other);
        assert_eq!(commit_file("images/chunks/notahexname"), CommitFile::Other);
        assert_eq!(commit_file("chunks/abc"), CommitFile::Other);
        assert_eq!(place(&tree_log(1)), KeyPlace::Records);
        assert_eq!(place(&lease("main", 1)), KeyPlace::Records);
        assert_eq!(place(".queries/v/dataset_meta.json"), KeyPlace::Views);
        assert_eq!(place(QUERIES), KeyPlace::Views);
        assert_eq!(place("versions/nothex/x"), KeyPlace::Unknown);
        assert_eq!(
            place(&format!("versions/{}/x", crate::ids::FIRST_COMMIT_ID)),
            KeyPlace::Unknown
        );
    }
}
