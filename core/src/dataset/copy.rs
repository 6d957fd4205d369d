//! Copying rows from one dataset into another as stored, for writers that build a
//! dense copy of a view (materialization).
//!
//! Contract: [`Dataset::read_stored_rows`] returns the rows' stored bytes and shapes
//! verbatim (sample-compressed images stay compressed, tiled samples come as their
//! tiles) with the rows of every companion (`_id`, `_shape`, `_info`) as stored;
//! [`Dataset::append_stored_rows`] appends them without decoding or re-encoding, taking
//! each companion row from the source where the source has a companion of the same
//! role, and making it as an append would otherwise. Reads need only `&Dataset`, writes
//! `&mut Dataset`, so a writer can read its next batch while it appends the last one.

use serde_json::Value;

use super::encode::{self, Prepared};
use super::tensor::CompanionRole;
use super::{Dataset, read, with_tensor};
use crate::error::{Error, Result};
use crate::format::array::Sample;

/// Rows of one tensor as stored, with the rows of its companions.
#[derive(Clone, Debug, Default)]
pub struct StoredRows {
    pub rows: Vec<Prepared>,
    /// (role, flattened over sequence items, rows as stored).
    pub companions: Vec<(CompanionRole, bool, Vec<Prepared>)>,
}

fn prepared_bytes(p: &Prepared) -> u64 {
    let item = |it: &encode::StoredItem| -> u64 {
        it.bytes.len() as u64
            + it.tiles
                .as_ref()
                .map_or(0, |t| t.tiles.iter().map(|x| x.1.len() as u64).sum())
    };
    match p {
        Prepared::Item(it) => item(it),
        Prepared::Sequence(items) => items.iter().map(item).sum(),
    }
}

impl StoredRows {
    /// Stored bytes of the rows themselves (companions not counted).
    pub fn data_bytes(&self) -> u64 {
        self.rows.iter().map(prepared_bytes).sum()
    }

    /// Stored bytes of the rows and their companions: what the batch holds in memory.
    pub fn total_bytes(&self) -> u64 {
        self.data_bytes()
            + self
                .companions
                .iter()
                .flat_map(|c| c.2.iter())
                .map(prepared_bytes)
                .sum::<u64>()
    }
}

impl Dataset {
    /// Rows `rows` (any order) of `tensor` as stored, with their companions' rows.
    pub async fn read_stored_rows(&self, tensor: &str, rows: &[u64]) -> Result<StoredRows> {
        let t = self.tensor_state(tensor)?;
        let main = read::read_prepared(self, t, rows);
        let comp_reads: Vec<_> = t
            .meta
            .links
            .iter()
            .filter_map(|(ck, l)| {
                let role = CompanionRole::from_extend(&l.extend);
                if role == CompanionRole::Other {
                    return None;
                }
                let c = self.tensors.get(ck)?;
                let comp_rows: Vec<u64> = match &t.seq {
                    Some(s) if l.flatten_sequence => rows
                        .iter()
                        .filter_map(|r| s.items(*r))
                        .flat_map(|(a, b)| a..b)
                        .collect(),
                    _ => rows.to_vec(),
                };
                let flatten = l.flatten_sequence && t.seq.is_some();
                Some(async move {
                    // A companion shorter than its tensor (3.x before companions existed)
                    // is made again on append instead.
                    if comp_rows.iter().any(|r| *r >= c.num_samples()) {
                        return Ok((role, flatten, Vec::new()));
                    }
                    Ok::<_, Error>((
                        role,
                        flatten,
                        read::read_prepared(self, c, &comp_rows).await?,
                    ))
                })
            })
            .collect();
        let comps = futures::future::try_join_all(comp_reads);
        let (rows, companions) = futures::future::try_join(main, comps)
            .await
            .map_err(|e| with_tensor(e, tensor))?;
        Ok(StoredRows { rows, companions })
    }

    /// Encodes `samples` for `tensor` as an append would (on the CPU pool), without
    /// appending them: the caller may adjust them and append with
    /// [`Dataset::append_stored_rows`].
    pub async fn encode_rows(&self, tensor: &str, samples: Vec<Sample>) -> Result<Vec<Prepared>> {
        let key = self.key_of(tensor)?;
        let ctx = self.encode_ctx(&key)?;
        crate::runtime::spawn_cpu(move || {
            use rayon::prelude::*;
            samples
                .into_par_iter()
                .map(|s| encode::encode(&ctx, s))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| with_tensor(e, tensor))
    }

    /// Appends stored rows to `tensor` (see the module docs).
    pub async fn append_stored_rows(&mut self, tensor: &str, rows: StoredRows) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(tensor)?;
        let mut comps = self.companion_rows(&key, &rows.rows)?;
        let ours: Vec<(String, CompanionRole, bool)> = {
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| Error::not_found("tensor", tensor))?;
            t.meta
                .links
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        CompanionRole::from_extend(&l.extend),
                        l.flatten_sequence && t.seq.is_some(),
                    )
                })
                .collect()
        };
        let mut given = rows.companions;
        for (ck, out) in comps.iter_mut() {
            let Some((_, role, flatten)) = ours.iter().find(|o| &o.0 == ck) else {
                continue;
            };
            if let Some(pos) = given
                .iter()
                .position(|g| g.0 == *role && g.1 == *flatten && g.2.len() == out.len())
            {
                *out = given.swap_remove(pos).2;
            }
        }
        self.append_with_companions(&key, rows.rows, comps).await
    }
}

/// Sets `key` of the `_info` record of an encoded item (the source file name of a
/// materialized link, say).
pub fn set_item_info(p: &mut Prepared, key: &str, value: Value) {
    let set = |it: &mut encode::StoredItem| {
        if let Some(Value::Object(m)) = &mut it.info {
            m.insert(key.to_owned(), value.clone());
        }
    };
    match p {
        Prepared::Item(it) => set(it),
        Prepared::Sequence(items) => items.iter_mut().for_each(set),
    }
}

/// The stored bytes of an encoded row (for byte counts).
pub fn stored_bytes(p: &Prepared) -> u64 {
    prepared_bytes(p)
}
