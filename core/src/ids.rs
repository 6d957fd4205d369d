//! Validated names that become object keys or cross an API boundary.
//!
//! Each is parsed once, at the edge, with `FromStr`; inner code never re-validates.
//!
//! | type | rule |
//! |---|---|
//! | [`TensorName`] | `/`-separated segments of `[A-Za-z0-9_.-]`, no empty, `.` or `..` segment, at most 255 bytes |
//! | [`CommitId`] | 40 lowercase hex chars, or the fixed root id `firstdbf…` |
//! | [`BranchName`] | 1..=128 chars of `[A-Za-z0-9_.-]`, not starting with `.` or `-` |
//! | [`ChunkId`] | a u64; its key name is unpadded lowercase hex |

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Id of the root commit of every 3.x dataset.
pub const FIRST_COMMIT_ID: &str = "firstdbf9474d461a19e9333c2fd19b46115348f";

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A tensor name or tensor key (the folder name on storage). May contain `/` for groups.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorName(String);

impl TensorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of a hidden companion tensor: `_<t>_<suffix>` (inside the same group).
    pub fn companion(&self, suffix: &str) -> TensorName {
        match self.0.rsplit_once('/') {
            Some((group, base)) => TensorName(format!("{group}/_{base}_{suffix}")),
            None => TensorName(format!("_{}_{suffix}", self.0)),
        }
    }
}

impl FromStr for TensorName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() > 255 || !s.split('/').all(segment_ok) {
            return Err(Error::invalid(format!(
                "tensor name {s:?} is not valid: use '/'-separated segments of letters, digits, '_', '-', '.'"
            )));
        }
        Ok(TensorName(s.to_owned()))
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TensorName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A commit (version node) id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(String);

impl CommitId {
    pub fn root() -> Self {
        CommitId(FIRST_COMMIT_ID.to_owned())
    }

    pub fn is_root(&self) -> bool {
        self.0 == FIRST_COMMIT_ID
    }

    /// A fresh random id (40 hex chars, as 3.x's `sha1(time || random)`).
    pub fn generate() -> Self {
        use sha1::Digest;
        let mut h = sha1::Sha1::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(now.to_le_bytes());
        h.update(rand::random::<[u8; 16]>());
        CommitId(hex::encode(h.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CommitId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let hex40 = s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if hex40 || s == FIRST_COMMIT_ID {
            Ok(CommitId(s.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "{s:?} is not a commit id (40 lowercase hex chars)"
            )))
        }
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BranchName(String);

impl BranchName {
    pub fn main() -> Self {
        BranchName("main".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BranchName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with(['.', '-'])
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(BranchName(s.to_owned()))
        } else {
            Err(Error::invalid(format!(
                "branch name {s:?} is not valid: 1..=128 of letters, digits, '_', '-', '.'"
            )))
        }
    }
}

impl fmt::Display for BranchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chunk id. Its file name is the unpadded lowercase hex of the u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub u64);

impl ChunkId {
    /// A fresh random id: the top 64 bits of a random UUID4, as 3.x does.
    pub fn generate() -> Self {
        // A UUID4's top 64 bits are random except for the version nibble (bits 12..16 of
        // the third group), which 3.x keeps; set it the same way.
        let r: u64 = rand::random();
        ChunkId((r & !0xF000) | 0x4000)
    }

    pub fn name(&self) -> String {
        format!("{:x}", self.0)
    }

    pub fn from_name(name: &str) -> Result<Self, Error> {
        if name.is_empty() || name.len() > 16 {
            return Err(Error::invalid(format!("{name:?} is not a chunk name")));
        }
        u64::from_str_radix(name, 16)
            .map(ChunkId)
            .map_err(|_| Error::invalid(format!("{name:?} is not a chunk name")))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names() {
        assert!("images".parse::<TensorName>().is_ok());
        assert!("a/b/_b_id".parse::<TensorName>().is_ok());
        for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "a b", "ä"] {
            assert!(bad.parse::<TensorName>().is_err(), "{bad}");
        }
        let t: TensorName = "g/img".parse().unwrap();
        assert_eq!(t.companion("id").as_str(), "g/_img_id");
    }

    #[test]
    fn commit_ids() {
        assert!(CommitId::root().is_root());
        let c = CommitId::generate();
        assert_eq!(c.as_str().parse::<CommitId>().unwrap(), c);
        assert!("xyz".parse::<CommitId>().is_err());
    }

    #[test]
    fn chunk_names_are_unpadded_hex() {
        assert_eq!(ChunkId(0x3225842e7e3473f).name(), "3225842e7e3473f");
        assert_eq!(
            ChunkId::from_name("3225842e7e3473f").unwrap().0,
            0x3225842e7e3473f
        );
        assert!(ChunkId::from_name("zz").is_err());
    }
}
