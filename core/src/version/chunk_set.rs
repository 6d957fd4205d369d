//! `chunk_set`: UTF-8, comma-separated entries `name`, `name:<commit>` or
//! `name:<commit>:<tensor key>`; an empty file is an empty set. Entries can be stale;
//! `chunks_index` decides which chunks exist, `chunk_set` only where they are.

use std::collections::BTreeMap;

use crate::error::Corruption;
use crate::ids::{CommitId, TensorName};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkLocation {
    /// Stored in the commit that owns this set.
    Here,
    Commit(CommitId),
    CommitKey(CommitId, TensorName),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkSet {
    entries: BTreeMap<String, ChunkLocation>,
}

impl ChunkSet {
    pub fn parse(bytes: &[u8]) -> Result<Self, Corruption> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| Corruption::new("chunk_set is not UTF-8"))?;
        let mut entries = BTreeMap::new();
        for e in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = e.splitn(3, ':');
            let name = parts.next().unwrap_or_default();
            if name.is_empty() || name.len() > 16 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Corruption::new(format!(
                    "chunk_set entry {e:?} has a bad chunk name"
                )));
            }
            let bad = |_| Corruption::new(format!("chunk_set entry {e:?} is malformed"));
            let loc = match (parts.next(), parts.next()) {
                (None, _) => ChunkLocation::Here,
                (Some(c), None) => ChunkLocation::Commit(c.parse().map_err(bad)?),
                (Some(c), Some(k)) => {
                    ChunkLocation::CommitKey(c.parse().map_err(bad)?, k.parse().map_err(bad)?)
                }
            };
            entries.insert(name.to_owned(), loc);
        }
        Ok(ChunkSet { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(n, l)| match l {
                ChunkLocation::Here => n.clone(),
                ChunkLocation::Commit(c) => format!("{n}:{c}"),
                ChunkLocation::CommitKey(c, k) => format!("{n}:{c}:{k}"),
            })
            .collect();
        parts.join(",").into_bytes()
    }

    pub fn get(&self, name: &str) -> Option<&ChunkLocation> {
        self.entries.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ChunkLocation)> {
        self.entries.iter()
    }

    pub fn insert(&mut self, name: String, loc: ChunkLocation) {
        self.entries.insert(name, loc);
    }

    pub fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    pub fn contains_here(&self, name: &str) -> bool {
        matches!(self.entries.get(name), Some(ChunkLocation::Here))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        let text = format!("abc,52d6:{c},ff:{c}:labels");
        let s = ChunkSet::parse(text.as_bytes()).unwrap();
        assert_eq!(s.get("abc"), Some(&ChunkLocation::Here));
        assert!(matches!(s.get("52d6"), Some(ChunkLocation::Commit(_))));
        assert!(matches!(s.get("ff"), Some(ChunkLocation::CommitKey(_, _))));
        assert_eq!(ChunkSet::parse(&s.encode()).unwrap(), s);
        assert!(ChunkSet::parse(b"").unwrap().is_empty());
        assert!(ChunkSet::parse(b"zz").is_err());
        assert!(ChunkSet::parse(b"ab:notacommit").is_err());
        assert!(ChunkSet::parse(&[0xff]).is_err());
    }
}
