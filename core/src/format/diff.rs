//! `commit_diff` (per tensor, per commit) and `dataset_diff` (per commit). Both are
//! **big-endian**, unlike everything else in the format, and have no version prefix.
//!
//! Decoding accepts what 3.x reads: nonzero flag bytes are true, and a `commit_diff`
//! written before pops were recorded may end after `updated` (no `cleared` byte) or after
//! `cleared` (no deleted section), or carry deleted indices without ids. Anything else
//! that is short, longer than its fields, or not UTF-8 in a name is [`Corruption`].
//! `encode` always writes the full current layout.

use std::collections::BTreeMap;

use super::Reader;
use crate::error::Corruption;

/// ```text
/// u8 created | u8 info_updated | u8 data_transformed_in_place
/// u64 added_start | u64 added_end | u64 m | u64 updated[m] | u8 cleared
/// u64 n | u64 deleted[n] | u64 deleted_ids[n]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitDiff {
    pub created: bool,
    pub info_updated: bool,
    pub data_transformed_in_place: bool,
    /// Half-open range of appended global indices.
    pub added: (u64, u64),
    pub updated: Vec<u64>,
    pub cleared: bool,
    pub deleted: Vec<u64>,
    /// Empty, or as long as `deleted`.
    pub deleted_ids: Vec<u64>,
}

impl CommitDiff {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let mut r = Reader::new(bytes, "commit_diff");
        let mut d = CommitDiff {
            created: r.u8()? != 0,
            info_updated: r.u8()? != 0,
            data_transformed_in_place: r.u8()? != 0,
            added: (r.u64_be()?, r.u64_be()?),
            updated: read_u64s(&mut r)?,
            ..CommitDiff::default()
        };
        if r.remaining() == 0 {
            return Ok(d);
        }
        d.cleared = r.u8()? != 0;
        if r.remaining() == 0 {
            return Ok(d);
        }
        d.deleted = read_u64s(&mut r)?;
        if r.remaining() > 0 {
            let n = r.check_count(d.deleted.len() as u64, 8)?;
            d.deleted_ids = (0..n).map(|_| r.u64_be()).collect::<Result<_, _>>()?;
        }
        r.finish()?;
        Ok(d)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36 + 8 * (self.updated.len() + 2 * self.deleted.len()));
        out.extend_from_slice(&[
            u8::from(self.created),
            u8::from(self.info_updated),
            u8::from(self.data_transformed_in_place),
        ]);
        out.extend_from_slice(&self.added.0.to_be_bytes());
        out.extend_from_slice(&self.added.1.to_be_bytes());
        write_u64s(&mut out, &self.updated);
        out.push(u8::from(self.cleared));
        write_u64s(&mut out, &self.deleted);
        debug_assert!(
            self.deleted_ids.is_empty() || self.deleted_ids.len() == self.deleted.len(),
            "deleted_ids must match deleted"
        );
        for id in &self.deleted_ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out
    }
}

/// `u64 n`, then `n` big-endian u64s.
fn read_u64s(r: &mut Reader<'_>) -> Result<Vec<u64>, Corruption> {
    let n = r.u64_be()?;
    let n = r.check_count(n, 8)?;
    (0..n).map(|_| r.u64_be()).collect()
}

fn write_u64s(out: &mut Vec<u8>, values: &[u64]) {
    out.extend_from_slice(&(values.len() as u64).to_be_bytes());
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// `u8 info_updated | u64 n_renamed | n x (u64 len_old, u64 len_new, old, new) |
/// u64 n_deleted | n x (u64 len, name)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetDiff {
    pub info_updated: bool,
    pub renamed: BTreeMap<String, String>,
    pub deleted: Vec<String>,
}

impl DatasetDiff {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let mut r = Reader::new(bytes, "dataset_diff");
        let info_updated = r.u8()? != 0;
        // Each rename takes at least 16 bytes, each deletion 8: bounds the loops.
        let n_renamed = r.u64_be()?;
        let n_renamed = r.check_count(n_renamed, 16)?;
        let mut renamed = BTreeMap::new();
        for _ in 0..n_renamed {
            let (len_old, len_new) = (r.u64_be()?, r.u64_be()?);
            let old = read_name(&mut r, len_old)?;
            let new = read_name(&mut r, len_new)?;
            // A repeated old name overwrites, as 3.x's dict does.
            renamed.insert(old, new);
        }
        let n_deleted = r.u64_be()?;
        let n_deleted = r.check_count(n_deleted, 8)?;
        let mut deleted = Vec::with_capacity(n_deleted);
        for _ in 0..n_deleted {
            let len = r.u64_be()?;
            deleted.push(read_name(&mut r, len)?);
        }
        r.finish()?;
        Ok(DatasetDiff {
            info_updated,
            renamed,
            deleted,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.info_updated)];
        out.extend_from_slice(&(self.renamed.len() as u64).to_be_bytes());
        for (old, new) in &self.renamed {
            out.extend_from_slice(&(old.len() as u64).to_be_bytes());
            out.extend_from_slice(&(new.len() as u64).to_be_bytes());
            out.extend_from_slice(old.as_bytes());
            out.extend_from_slice(new.as_bytes());
        }
        out.extend_from_slice(&(self.deleted.len() as u64).to_be_bytes());
        for name in &self.deleted {
            out.extend_from_slice(&(name.len() as u64).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out
    }
}

fn read_name(r: &mut Reader<'_>, len: u64) -> Result<String, Corruption> {
    let len = r.check_count(len, 1)?;
    let raw = r.bytes(len)?;
    String::from_utf8(raw.to_vec()).map_err(|_| {
        Corruption::new(format!(
            "dataset_diff: tensor name at byte {} is not UTF-8",
            r.pos() - len
        ))
    })
}
