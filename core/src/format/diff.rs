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
        // The ids run to the end of the file with no count of their own. 3.9.52 records
        // the id of a popped row even when the row was appended in the same commit (and
        // so has no entry in `deleted`), so the two lists may differ in length.
        if !r.remaining().is_multiple_of(8) {
            return Err(Corruption::new(format!(
                "commit_diff: {} trailing bytes are not a whole number of sample ids",
                r.remaining()
            )));
        }
        let n = r.remaining() / 8;
        d.deleted_ids = (0..n).map(|_| r.u64_be()).collect::<Result<_, _>>()?;
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // Written by deeplake 3.9.52. Root commit of a class_label tensor: created, class
    // names set, three rows appended.
    const CREATED: &str = "0101000000000000000000000000000000000300000000000000000000000000\
                           00000000";
    // Next commit: `labels[1] = 0; labels.append(1)`.
    const UPDATED: &str = "0001000000000000000003000000000000000400000000000000010000000000\
                           000001000000000000000000";
    // A tensor of two rows after `pop(0)`: deleted index 0 with its sample id.
    const POPPED: &str = "0000000000000000000001000000000000000100000000000000000000000000\
                          0000000100000000000000001189749ab225715c";
    // `rename_tensor("vec", "vectors"); delete_tensor("gone")`.
    const RENAMED: &str = "0000000000000000010000000000000003000000000000000776656376656374\
                           6f727300000000000000010000000000000004676f6e65";

    #[test]
    fn commit_diff_golden() {
        let d = CommitDiff::decode(&hex(CREATED)).unwrap();
        let want = CommitDiff {
            created: true,
            info_updated: true,
            added: (0, 3),
            ..Default::default()
        };
        assert_eq!(d, want);
        assert_eq!(d.encode(), hex(CREATED));

        let d = CommitDiff::decode(&hex(UPDATED)).unwrap();
        let want = CommitDiff {
            info_updated: true,
            added: (3, 4),
            updated: vec![1],
            ..Default::default()
        };
        assert_eq!(d, want);
        assert_eq!(d.encode(), hex(UPDATED));

        let d = CommitDiff::decode(&hex(POPPED)).unwrap();
        let want = CommitDiff {
            added: (1, 1),
            deleted: vec![0],
            deleted_ids: vec![0x1189_749a_b225_715c],
            ..Default::default()
        };
        assert_eq!(d, want);
        assert_eq!(d.encode(), hex(POPPED));
    }

    #[test]
    fn empty_diffs_have_the_spec_sizes() {
        let empty = CommitDiff::default().encode();
        assert_eq!(empty.len(), 36);
        assert_eq!(CommitDiff::decode(&empty).unwrap(), CommitDiff::default());
        let full = CommitDiff {
            updated: vec![1, 2],
            deleted: vec![3],
            deleted_ids: vec![4],
            cleared: true,
            data_transformed_in_place: true,
            ..Default::default()
        };
        assert_eq!(full.encode().len(), 36 + 8 * 2 + 8 * 2);
        assert_eq!(DatasetDiff::default().encode().len(), 17);
        assert_eq!(
            DatasetDiff::decode(&[0; 17]).unwrap(),
            DatasetDiff::default()
        );
    }

    #[test]
    fn commit_diff_is_big_endian() {
        let d = CommitDiff {
            added: (1, 0x0102),
            ..Default::default()
        };
        let bytes = d.encode();
        assert_eq!(
            &bytes[3..19],
            &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]
        );
    }

    #[test]
    fn commit_diff_older_layouts() {
        let full = hex(UPDATED);
        // Without the deleted section, and without the cleared byte.
        let no_deleted = CommitDiff::decode(&full[..36]).unwrap();
        assert_eq!(no_deleted, CommitDiff::decode(&full).unwrap());
        let no_cleared = CommitDiff::decode(&full[..35]).unwrap();
        assert_eq!(no_cleared, no_deleted);
        // Deleted indices without ids.
        let popped = hex(POPPED);
        let no_ids = CommitDiff::decode(&popped[..popped.len() - 8]).unwrap();
        assert_eq!((no_ids.deleted, no_ids.deleted_ids), (vec![0], vec![]));
    }

    #[test]
    fn commit_diff_truncations_and_hostile_counts() {
        for bytes in [hex(CREATED), hex(UPDATED), hex(POPPED)] {
            let m = u64::from_be_bytes(bytes[19..27].try_into().unwrap()) as usize;
            let n_deleted = if bytes.len() > 28 + 8 * m { 1 } else { 0 };
            // Well-formed prefixes: the older layouts above.
            let ends = [27 + 8 * m, 28 + 8 * m, 36 + 8 * m + 8 * n_deleted];
            for cut in 0..bytes.len() {
                assert_eq!(
                    CommitDiff::decode(&bytes[..cut]).is_ok(),
                    ends.contains(&cut),
                    "cut {cut}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(CommitDiff::decode(&longer).is_err());
        }
        let mut huge = hex(CREATED);
        huge[19..27].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(CommitDiff::decode(&huge).is_err());
        let mut huge = hex(CREATED);
        huge[28..36].copy_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(CommitDiff::decode(&huge).is_err());
    }

    #[test]
    fn dataset_diff_golden() {
        let d = DatasetDiff::decode(&hex(RENAMED)).unwrap();
        let want = DatasetDiff {
            info_updated: false,
            renamed: BTreeMap::from([("vec".to_string(), "vectors".to_string())]),
            deleted: vec!["gone".to_string()],
        };
        assert_eq!(d, want);
        assert_eq!(d.encode(), hex(RENAMED));
        assert_eq!(hex(RENAMED).len(), 55);
    }

    #[test]
    fn dataset_diff_rejects_corruption() {
        let bytes = hex(RENAMED);
        for cut in 0..bytes.len() {
            assert!(DatasetDiff::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DatasetDiff::decode(&longer).is_err());
        for at in [1, 9, 17, 35, 43] {
            // Counts and lengths claiming more than is there.
            let mut huge = bytes.clone();
            huge[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
            assert!(DatasetDiff::decode(&huge).is_err(), "huge field at {at}");
        }
        let mut not_utf8 = bytes;
        not_utf8[51] = 0xff;
        assert!(DatasetDiff::decode(&not_utf8).is_err());
    }

    fn commit_diffs() -> impl Strategy<Value = CommitDiff> {
        let ids = prop::collection::vec(any::<u64>(), 0..10);
        (
            any::<[bool; 4]>(),
            any::<(u64, u64)>(),
            ids.clone(),
            ids,
            any::<bool>(),
        )
            .prop_map(|(flags, added, updated, deleted, with_ids)| CommitDiff {
                created: flags[0],
                info_updated: flags[1],
                data_transformed_in_place: flags[2],
                cleared: flags[3],
                added,
                updated,
                deleted_ids: if with_ids {
                    deleted.iter().map(|d| d ^ 0x5555).collect()
                } else {
                    vec![]
                },
                deleted,
            })
    }

    proptest! {
        #[test]
        fn commit_diff_round_trip(d in commit_diffs()) {
            let bytes = d.encode();
            prop_assert_eq!(bytes.len(), 36 + 8 * (d.updated.len() + d.deleted.len() + d.deleted_ids.len()));
            prop_assert_eq!(CommitDiff::decode(&bytes).unwrap(), d);
        }

        #[test]
        fn dataset_diff_round_trip(
            info_updated in any::<bool>(),
            renamed in prop::collection::btree_map(".{0,12}", ".{0,12}", 0..5),
            deleted in prop::collection::vec(".{0,12}", 0..5),
        ) {
            let d = DatasetDiff { info_updated, renamed, deleted };
            prop_assert_eq!(DatasetDiff::decode(&d.encode()).unwrap(), d);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(d) = CommitDiff::decode(&bytes) {
                prop_assert_eq!(CommitDiff::decode(&d.encode()).unwrap(), d);
            }
            if let Ok(d) = DatasetDiff::decode(&bytes) {
                prop_assert_eq!(DatasetDiff::decode(&d.encode()).unwrap(), d);
            }
        }
    }
}
