//! Bulk changes that become visible together at the next flush: cutting tensors back to
//! a number of rows, and swapping staged tensors in for visible ones.
//!
//! A writer that must replace a dataset's content while readers keep seeing the old one
//! creates *staged* tensors (hidden, with the companions of a visible tensor; see
//! [`TensorOptions::staged`](super::TensorOptions)), fills and flushes them as often as
//! it likes, and finally calls [`Dataset::replace_tensor`] / [`Dataset::unlink_tensor`]
//! for every tensor and flushes once: that one flush record is the swap. A writer that
//! made rows durable past the point it could vouch for (a crash between its own commit
//! points) cuts them off with [`Dataset::truncate_tensor`] or [`Dataset::truncate`].
//!
//! None of these flush by themselves, and none rewrites a stored chunk: a cut chunk is
//! written again under a fresh name, so the previous flush record stays readable.

use super::tensor::{CompanionRole, TensorState};
use super::{Dataset, ensure_builder, is_tile_chunk};
use crate::error::{Error, Result};
use crate::format::array::Sample;
use crate::format::dtype::Dtype;

impl Dataset {
    /// Cuts every visible tensor (and its companions) back to its first `rows` samples;
    /// tensors already that short are left alone.
    pub async fn truncate(&mut self, rows: u64) -> Result<()> {
        for name in self.tensor_names() {
            self.truncate_tensor(&name, rows).await?;
        }
        Ok(())
    }

    /// Cuts tensor `name` (visible or hidden) and its companions back to their first
    /// `rows` samples. Sequence tensors are not supported.
    pub async fn truncate_tensor(&mut self, name: &str, rows: u64) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(name)?;
        let (len, companions) = {
            let t = self.tensor_state(name)?;
            if t.meta.is_sequence {
                return Err(Error::unsupported(format!(
                    "truncating sequence tensor {name:?}"
                )));
            }
            let companions: Vec<(String, CompanionRole)> = t
                .meta
                .links
                .iter()
                .map(|(k, l)| (k.clone(), CompanionRole::from_extend(&l.extend)))
                .collect();
            (t.num_samples(), companions)
        };
        if rows >= len {
            return Ok(());
        }
        // Rows that predate this head leave as deletions, with their sample ids (merge
        // pairs rows by id); rows appended in this head just shrink the added range.
        let first_new = self
            .tensors
            .get(&key)
            .and_then(|t| t.diff.as_ref())
            .map_or(len, |d| {
                if d.added.0 < d.added.1 {
                    d.added.0
                } else {
                    len
                }
            });
        let mut ids = Vec::new();
        if rows < first_new
            && let Some((ck, _)) = companions.iter().find(|(_, r)| *r == CompanionRole::Id)
        {
            for i in rows..first_new.min(self.tensors.get(ck).map_or(0, |c| c.num_samples())) {
                if let Sample::Array(a) = self.read_key(ck, i).await?
                    && a.dtype == Dtype::U64
                    && a.data.len() == 8
                {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&a.data);
                    ids.push(u64::from_le_bytes(b));
                }
            }
        }
        let store = self.store.clone();
        for k in std::iter::once(key.clone()).chain(companions.into_iter().map(|(k, _)| k)) {
            let Some(t) = self.tensors.get_mut(&k) else {
                continue;
            };
            cut_tensor(&store, &self.locator, t, rows).await?;
            let d = t.diff_mut();
            d.updated.retain(|u| *u < rows);
            if d.added.1 > rows {
                d.added.1 = rows.max(d.added.0);
            }
            if d.added.0 > rows {
                d.added = (rows, rows);
            }
            if rows < first_new {
                d.deleted.extend((rows..first_new).rev());
                if k == key {
                    d.deleted_ids.extend(ids.iter().rev());
                }
            }
        }
        self.cache.clear();
        Ok(())
    }

    /// Makes staged tensor `staged` the visible tensor `name` at the next flush: a
    /// tensor `name` that exists is removed from the head first, and `staged` and its
    /// companions take the names of `name` and its companions. Keys (folders) stay, as
    /// with a rename.
    pub async fn replace_tensor(&mut self, name: &str, staged: &str) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let new_name: crate::ids::TensorName = name.parse()?;
        let old_name: crate::ids::TensorName = staged.parse()?;
        if name.rsplit_once('/').map(|x| x.0) != staged.rsplit_once('/').map(|x| x.0) {
            return Err(Error::invalid(
                "a staged tensor must sit in the group of the tensor it replaces",
            ));
        }
        let skey = self.key_of(staged)?;
        if !self.meta.hidden_tensors.contains(&skey) {
            return Err(Error::invalid(format!(
                "tensor {staged:?} is not staged (it is visible already)"
            )));
        }
        if self.meta.tensor_names.contains_key(name) {
            self.unlink_tensor(name).await?;
        }
        let companions: Vec<String> = self
            .tensors
            .get(&skey)
            .map(|t| t.meta.links.keys().cloned().collect())
            .unwrap_or_default();
        self.meta.tensor_names.remove(staged);
        self.meta.tensor_names.insert(name.to_owned(), skey.clone());
        self.meta.hidden_tensors.retain(|k| *k != skey);
        if let Some(t) = self.tensors.get_mut(&skey) {
            t.meta.name = Some(name.to_owned());
            t.meta.hidden = false;
            t.dirty = true;
        }
        self.rename_companions(&companions, &old_name, &new_name);
        self.add_groups_of(name);
        self.ds_diff_mut()
            .renamed
            .insert(staged.to_owned(), name.to_owned());
        self.meta_dirty = true;
        Ok(())
    }

    /// Removes tensor `name` and its companions from the head at the next flush, unlike
    /// [`Dataset::delete_tensor`], which flushes at once. Its objects stay on storage
    /// until garbage collection.
    pub async fn unlink_tensor(&mut self, name: &str) -> Result<()> {
        self.check_writable()?;
        self.ensure_lease().await?;
        let key = self.key_of(name)?;
        let mut keys = vec![key.clone()];
        if let Some(t) = self.tensors.get(&key) {
            keys.extend(t.meta.links.keys().cloned());
        }
        let hidden = self.meta.hidden_tensors.contains(&key);
        self.meta
            .tensor_names
            .retain(|n, k| n != name && !keys.contains(k));
        self.meta.tensors.retain(|k| !keys.contains(k));
        self.meta.hidden_tensors.retain(|k| !keys.contains(k));
        for k in &keys {
            self.tensors.remove(k);
        }
        if !hidden {
            self.ds_diff_mut().deleted.push(name.to_owned());
        }
        self.meta_dirty = true;
        self.cache.clear();
        Ok(())
    }
}

/// Cuts one tensor's items back to `rows`: whole chunk-id rows past the cut go, the
/// chunk holding the cut is held and shortened (written again under a fresh id at the
/// next flush), and the per-sample encoders follow.
async fn cut_tensor(
    store: &crate::store::Store,
    locator: &crate::version::ChunkLocator,
    t: &mut TensorState,
    rows: u64,
) -> Result<()> {
    let len = t.num_samples();
    if rows >= len {
        return Ok(());
    }
    t.tiles.entries.retain(|i, _| *i < rows);
    // Rows whose first sample is at or past the cut go whole.
    let keep = (0..t.chunk_ids.rows.len())
        .take_while(|&r| t.chunk_ids.first_index(r) < rows)
        .count();
    for (id, _) in t.chunk_ids.rows.drain(keep..) {
        t.builders.remove(&id);
        t.dirty_chunks.remove(&id);
    }
    if let Some(&(_, last)) = t.chunk_ids.rows.last()
        && last >= rows
    {
        let row = t.chunk_ids.rows.len() - 1;
        if is_tile_chunk(t, row) {
            return Err(Error::internal(format!(
                "tensor {}: a tiled sample straddles row {rows}",
                t.key
            )));
        }
        let first = t.chunk_ids.first_index(row);
        let id = ensure_builder(store, locator, t, row).await?;
        if let Some(b) = t.builders.get_mut(&id) {
            let keep_local = (rows - first) as usize;
            for local in (keep_local..b.num_samples()).rev() {
                b.remove(local)
                    .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
            }
        }
        if let Some(r) = t.chunk_ids.rows.last_mut() {
            r.1 = rows - 1;
        }
        t.dirty_chunks.insert(id);
        t.in_head.insert(id);
    }
    if let Some(c) = &mut t.creds {
        for i in (rows..c.num_samples()).rev() {
            c.remove(i)
                .map_err(|c| Error::internal(format!("tensor {}: {c}", t.key)))?;
        }
    }
    let cut = u32::try_from(rows).unwrap_or(u32::MAX);
    t.pad.ranges.retain(|(s, _)| *s < cut);
    if let Some(r) = t.pad.ranges.last_mut() {
        r.1 = r.1.min(cut);
    }
    t.meta.length = rows;
    t.dirty = true;
    Ok(())
}
