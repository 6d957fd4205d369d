//! The per-tensor index files: chunk-id encoder (`chunks_index/unsharded`), tile encoder
//! (`tiles_index`), sequence encoder (`sequence_index`), creds encoder (`creds_index`)
//! and pad encoder (`pad_index`). All little-endian, all with a version prefix.
//!
//! Contract: every `decode` accepts what deeplake 3.9.52 writes (including the empty
//! object, which 3.x reads as an empty encoder, and the pre-2.7.6 chunk-id layout) and
//! returns [`Corruption`] for anything it cannot make sense of: a length that is not a
//! whole number of rows, a run table whose last-index column goes backwards, a header
//! count larger than the bytes behind it. Lookups never panic, whatever was decoded.
//!
//! Most of these files are run-length tables whose rows end in `last_index`, the index
//! of the last sample the row covers (see [`rle`]); `encode` always writes the current
//! layout with [`WRITER_VERSION`].

use std::collections::BTreeMap;

use super::{Reader, WRITER_VERSION, write_version};
use crate::error::Corruption;

/// `chunks_index/unsharded`: `u8 id_width (8)`, then `(u64 chunk_id, u64 last_index)`
/// rows in sample order. Tiled samples have several rows with the same `last_index`.
/// Legacy files (no width byte, u32 ids) are read too.
///
/// 3.x stores `last_index = -1` (all bits set) in a chunk that has no sample yet; such a
/// row covers no sample, which is why lookups work on `last_index + 1` (wrapping).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkIdEncoder {
    pub rows: Vec<(u64, u64)>,
}

/// Number of samples up to and including a chunk-id row (`last_index + 1`, where the
/// all-ones "no sample yet" marker wraps to 0).
fn covered(row: &(u64, u64)) -> u64 {
    row.1.wrapping_add(1)
}

impl ChunkIdEncoder {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.is_empty() {
            return Ok(ChunkIdEncoder::default());
        }
        let mut r = Reader::new(bytes, "chunk-id encoder");
        let version = r.version()?;
        // Before 2.7.6 there was no width byte and ids were u32.
        let width = if version_older_than(&version, [2, 7, 6])? {
            4
        } else {
            r.u8()?
        };
        let rows = match width {
            4 | 8 => read_pairs(&mut r, usize::from(width))?,
            w => {
                return Err(Corruption::new(format!(
                    "chunk-id encoder: invalid id width {w} (expected 4 or 8)"
                )));
            }
        };
        let enc = ChunkIdEncoder { rows };
        if let Some(bad) = enc
            .rows
            .windows(2)
            .position(|w| covered(&w[1]) < covered(&w[0]))
        {
            return Err(Corruption::new(format!(
                "chunk-id encoder: last index goes backwards at row {}",
                bad + 1
            )));
        }
        Ok(enc)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + WRITER_VERSION.len() + 16 * self.rows.len());
        write_version(&mut out, WRITER_VERSION);
        out.push(8);
        for (id, last) in &self.rows {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&last.to_le_bytes());
        }
        out
    }

    /// Number of samples covered (last row's `last_index + 1`, 0 when empty).
    pub fn num_samples(&self) -> u64 {
        self.rows.last().map_or(0, covered)
    }

    /// For global sample `i`: the index of the first row holding it and the chunk-local
    /// index of the sample in that chunk. A tiled sample spans rows `row..row + n_tiles`.
    pub fn locate(&self, i: u64) -> Option<(usize, usize)> {
        let row = self.rows.partition_point(|r| covered(r) <= i);
        if row >= self.rows.len() {
            return None;
        }
        let local = i.checked_sub(self.first_index(row))?;
        Some((row, usize::try_from(local).ok()?))
    }

    /// Global index of the first sample in row `row` (the sample count when `row` is past
    /// the end).
    pub fn first_index(&self, row: usize) -> u64 {
        match row.checked_sub(1) {
            None => 0,
            Some(prev) => self
                .rows
                .get(prev)
                .map_or_else(|| self.num_samples(), covered),
        }
    }

    /// All rows holding global sample `i`: one row, or one per tile for a tiled sample.
    pub fn rows_of(&self, i: u64) -> Option<std::ops::Range<usize>> {
        let (row, _) = self.locate(i)?;
        let end = self.rows[row..].iter().take_while(|r| r.1 == i).count();
        Some(row..row + end.max(1))
    }

    /// The chunk file name of an id: lowercase hex without zero padding, as 3.x spells it.
    pub fn chunk_name(id: u64) -> String {
        format!("{id:x}")
    }
}

/// Reads `(chunk_id, last_index)` pairs of `width`-byte integers up to the end.
fn read_pairs(r: &mut Reader<'_>, width: usize) -> Result<Vec<(u64, u64)>, Corruption> {
    if !r.remaining().is_multiple_of(2 * width) {
        return Err(Corruption::new(format!(
            "chunk-id encoder: {} bytes is not a whole number of {}-byte rows",
            r.remaining(),
            2 * width
        )));
    }
    let mut rows = Vec::with_capacity(r.remaining() / (2 * width));
    while r.remaining() > 0 {
        let row = if width == 4 {
            let id = u64::from(r.u32_le()?);
            // Keep the u32 "no sample yet" marker meaning -1 once widened.
            let last = match r.u32_le()? {
                u32::MAX => u64::MAX,
                v => u64::from(v),
            };
            (id, last)
        } else {
            (r.u64_le()?, r.u64_le()?)
        };
        rows.push(row);
    }
    Ok(rows)
}

/// Compares a dotted-integer version string with `than`, the way 3.x's
/// `version_compare` does (missing parts count as 0).
fn version_older_than(version: &str, than: [u64; 3]) -> Result<bool, Corruption> {
    let mut parts = Vec::new();
    for p in version.split('.') {
        let n = p.parse::<u64>().map_err(|_| {
            Corruption::new(format!("version prefix {version:?} is not dotted integers"))
        })?;
        parts.push(n);
    }
    let len = parts.len().max(than.len());
    for k in 0..len {
        let a = parts.get(k).copied().unwrap_or(0);
        let b = than.get(k).copied().unwrap_or(0);
        if a != b {
            return Ok(a < b);
        }
    }
    Ok(false)
}

/// One tiled sample: its full shape and the shape of each tile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TileEntry {
    pub sample_shape: Vec<u64>,
    pub tile_shape: Vec<u64>,
}

impl TileEntry {
    /// Tiles per dimension: `ceil(sample / tile)`. A zero tile dimension (never decoded,
    /// only constructible by hand) yields 0 tiles rather than a division by zero.
    pub fn grid(&self) -> Vec<u64> {
        self.sample_shape
            .iter()
            .zip(&self.tile_shape)
            .map(|(&s, &t)| if t == 0 { 0 } else { s.div_ceil(t) })
            .collect()
    }

    /// Number of tiles (saturating: a count this large never matches a chunk-id table).
    pub fn num_tiles(&self) -> u64 {
        self.grid()
            .iter()
            .fold(1u64, |acc, &g| acc.saturating_mul(g))
    }
}

/// `tiles_index/unsharded`: `u64 n`, then if `n > 0` `u64 ndim` and per entry
/// `u64 index, u64 sample_shape[ndim], u64 tile_shape[ndim]`. Empty = 15 bytes.
///
/// All entries must have the same `ndim` (3.x writes one `ndim` for the whole file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TileEncoder {
    pub entries: BTreeMap<u64, TileEntry>,
}

impl TileEncoder {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.is_empty() {
            return Ok(TileEncoder::default());
        }
        let mut r = Reader::new(bytes, "tile encoder");
        r.version()?;
        let n = r.u64_le()?;
        let mut entries = BTreeMap::new();
        if n > 0 {
            let ndim = r.u64_le()?;
            // Each entry is 8 * (1 + 2 * ndim) bytes; reject before any allocation.
            let entry_size = ndim
                .checked_mul(16)
                .and_then(|x| x.checked_add(8))
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| Corruption::new(format!("tile encoder: ndim {ndim} too large")))?;
            let n = r.check_count(n, entry_size)?;
            let ndim = (entry_size - 8) / 16;
            for _ in 0..n {
                let index = r.u64_le()?;
                let sample_shape = (0..ndim)
                    .map(|_| r.u64_le())
                    .collect::<Result<Vec<_>, _>>()?;
                let tile_shape = (0..ndim)
                    .map(|_| r.u64_le())
                    .collect::<Result<Vec<_>, _>>()?;
                if tile_shape.contains(&0) {
                    return Err(Corruption::new(format!(
                        "tile encoder: sample {index} has a zero tile dimension"
                    )));
                }
                entries.insert(
                    index,
                    TileEntry {
                        sample_shape,
                        tile_shape,
                    },
                );
            }
        }
        r.finish()?;
        Ok(TileEncoder { entries })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_version(&mut out, WRITER_VERSION);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        let Some(first) = self.entries.values().next() else {
            return out;
        };
        let ndim = first.sample_shape.len();
        debug_assert!(
            self.entries
                .values()
                .all(|e| e.sample_shape.len() == ndim && e.tile_shape.len() == ndim),
            "tile entries must share one ndim"
        );
        out.extend_from_slice(&(ndim as u64).to_le_bytes());
        for (index, e) in &self.entries {
            out.extend_from_slice(&index.to_le_bytes());
            for d in e.sample_shape.iter().chain(&e.tile_shape) {
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
        out
    }

    /// Forgets sample `i` (if tiled) and renumbers the later entries down by one, as 3.x
    /// does when a sample is popped.
    pub fn remove(&mut self, i: u64) {
        self.entries.remove(&i);
        let later: Vec<u64> = self.entries.range(i..).map(|(k, _)| *k).collect();
        for k in later {
            if let Some(e) = self.entries.remove(&k) {
                self.entries.insert(k - 1, e);
            }
        }
    }
}

/// `sequence_index/unsharded`: u32 rows `[num_items, start_item, last_sequence_index]`,
/// run-length over sequences of equal length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceEncoder {
    pub rows: Vec<[u32; 3]>,
}

impl SequenceEncoder {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        Ok(SequenceEncoder {
            rows: rle::decode_u32_rows(bytes, "sequence encoder")?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        rle::encode_u32_rows(&self.rows)
    }

    pub fn num_sequences(&self) -> u64 {
        rle::num_samples(&self.rows)
    }

    /// Item range `[start, end)` of sequence `i`.
    pub fn items(&self, i: u64) -> Option<(u64, u64)> {
        rle::sized_range(&self.rows, i)
    }

    /// Appends a sequence of `len` items.
    ///
    /// The columns are u32, as in 3.x: past 2^32 items the start column saturates, and a
    /// table that already holds 2^32 sequences is left unchanged.
    pub fn push(&mut self, len: u32) {
        let start = rle::sized_end(&self.rows).min(u64::from(u32::MAX)) as u32;
        rle::push(&mut self.rows, [len, start, 0]);
    }
}

/// `creds_index/unsharded`: u32 rows `[creds_encoding, last_index]`, run-length.
/// `0` = no creds key, `i >= 1` = `creds_keys[i-1]` of `linked_creds.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredsEncoder {
    pub rows: Vec<[u32; 2]>,
}

impl CredsEncoder {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        Ok(CredsEncoder {
            rows: rle::decode_u32_rows(bytes, "creds encoder")?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        rle::encode_u32_rows(&self.rows)
    }

    pub fn num_samples(&self) -> u64 {
        rle::num_samples(&self.rows)
    }

    pub fn get(&self, i: u64) -> Option<u32> {
        let row = rle::find(&self.rows, i)?;
        self.rows.get(row).map(|r| r[0])
    }

    /// Appends one sample. A table already covering 2^32 samples (its columns are u32) is
    /// left unchanged.
    pub fn push(&mut self, encoding: u32) {
        rle::push(&mut self.rows, [encoding, 0]);
    }

    /// Sets sample `i`'s encoding (splitting runs as needed).
    pub fn set(&mut self, i: u64, encoding: u32) -> Result<(), Corruption> {
        let row =
            rle::isolate(&mut self.rows, i).ok_or_else(|| out_of_range("creds encoder", i))?;
        if let Some(r) = self.rows.get_mut(row) {
            r[0] = encoding;
        }
        rle::merge_around(&mut self.rows, row);
        Ok(())
    }

    pub fn remove(&mut self, i: u64) -> Result<(), Corruption> {
        let row = rle::remove(&mut self.rows, i).ok_or_else(|| out_of_range("creds encoder", i))?;
        rle::merge_around(&mut self.rows, row.saturating_sub(1));
        Ok(())
    }
}

fn out_of_range(what: &str, i: u64) -> Corruption {
    Corruption::new(format!("{what}: sample {i} out of range"))
}

/// `pad_index/unsharded`: a flat u32 array of half-open `[start, end)` pairs of padded
/// global indices.
///
/// Kept sorted and disjoint by [`PadEncoder::add`] and [`PadEncoder::unpad`]; `decode`
/// rejects pairs that overlap or go backwards, drops empty pairs, and reads a lone
/// trailing value `e` (which 3.x's `unpad` can leave behind) as `[e, e + 1)`, the way 3.x
/// reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PadEncoder {
    pub ranges: Vec<(u32, u32)>,
}

impl PadEncoder {
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.is_empty() {
            return Ok(PadEncoder::default());
        }
        let mut r = Reader::new(bytes, "pad encoder");
        r.version()?;
        if !r.remaining().is_multiple_of(4) {
            return Err(Corruption::new(format!(
                "pad encoder: {} bytes is not a whole number of u32 values",
                r.remaining()
            )));
        }
        let mut ranges = Vec::with_capacity(r.remaining() / 8 + 1);
        let mut prev_end = 0u32;
        while r.remaining() > 0 {
            let start = r.u32_le()?;
            // 3.x's `unpad` can leave a lone trailing edge; its reader then treats that
            // edge as one padded index.
            let end = if r.remaining() == 0 {
                start.checked_add(1).ok_or_else(|| {
                    Corruption::new("pad encoder: lone trailing edge overflows u32")
                })?
            } else {
                r.u32_le()?
            };
            if start > end || start < prev_end {
                return Err(Corruption::new(format!(
                    "pad encoder: range [{start}, {end}) is reversed or overlaps the previous one"
                )));
            }
            prev_end = end;
            if start < end {
                ranges.push((start, end));
            }
        }
        Ok(PadEncoder { ranges })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + WRITER_VERSION.len() + 8 * self.ranges.len());
        write_version(&mut out, WRITER_VERSION);
        for (s, e) in &self.ranges {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&e.to_le_bytes());
        }
        out
    }

    pub fn is_padded(&self, i: u64) -> bool {
        let k = self.ranges.partition_point(|&(_, end)| u64::from(end) <= i);
        self.ranges
            .get(k)
            .is_some_and(|&(start, _)| u64::from(start) <= i)
    }

    /// Marks `[start, end)` as padded, merging with ranges it touches or overlaps.
    pub fn add(&mut self, start: u32, end: u32) {
        if start >= end {
            return;
        }
        self.ranges.push((start, end));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.ranges = merged;
    }

    /// Marks `i` as no longer padded (it was written).
    pub fn unpad(&mut self, i: u32) {
        let k = self.ranges.partition_point(|&(_, end)| end <= i);
        let Some(&(start, end)) = self.ranges.get(k) else {
            return;
        };
        if start > i {
            return;
        }
        let pieces = [(start, i), (i + 1, end)];
        let keep = pieces.into_iter().filter(|(s, e)| s < e);
        self.ranges.splice(k..=k, keep);
    }
}

/// Run-length tables whose rows end with `last_index` (the last sample a row covers):
/// the shape and byte-position tables of a chunk and the sequence and creds encoders.
///
/// A row covers the samples `prev.last_index + 1 ..= last_index`. Lookups take the first
/// row whose `last_index >= i`; decoders only accept tables where `last_index` never goes
/// backwards, so that binary search is meaningful. Rows with a start column (byte
/// positions, sequences: `[size, start, last]`) place sample `i` of a row at
/// `start + (i - first) * size`.
pub(crate) mod rle {
    use super::{Reader, WRITER_VERSION, write_version};
    use crate::error::Corruption;

    /// A table row: its value columns plus the `last_index` column.
    pub(crate) trait Row: Clone {
        fn last(&self) -> u32;
        fn set_last(&mut self, last: u32);
        /// Moves the row's first sample `k` samples on (tables with a start column move it).
        fn skip(&mut self, _k: u32) {}
        /// Whether `next` can be folded into this row, which covers `count` samples.
        fn continues(&self, count: u64, next: &Self) -> bool;
    }

    impl Row for Vec<u32> {
        fn last(&self) -> u32 {
            self.as_slice().last().copied().unwrap_or(0)
        }
        fn set_last(&mut self, last: u32) {
            if let Some(l) = self.last_mut() {
                *l = last;
            }
        }
        fn continues(&self, _count: u64, next: &Self) -> bool {
            self.len() == next.len()
                && self.split_last().map(|x| x.1) == next.split_last().map(|x| x.1)
        }
    }

    impl Row for [u32; 2] {
        fn last(&self) -> u32 {
            self[1]
        }
        fn set_last(&mut self, last: u32) {
            self[1] = last;
        }
        fn continues(&self, _count: u64, next: &Self) -> bool {
            self[0] == next[0]
        }
    }

    impl Row for [u32; 3] {
        fn last(&self) -> u32 {
            self[2]
        }
        fn set_last(&mut self, last: u32) {
            self[2] = last;
        }
        fn skip(&mut self, k: u32) {
            self[1] = self[1].saturating_add(self[0].saturating_mul(k));
        }
        fn continues(&self, count: u64, next: &Self) -> bool {
            // A row covers at most 2^32 samples, so this cannot overflow u64.
            self[0] == next[0]
                && u64::from(self[1]) + u64::from(self[0]) * count == u64::from(next[1])
        }
    }

    /// `last_index + 1` of the last row: the number of samples covered.
    pub(crate) fn num_samples<R: Row>(rows: &[R]) -> u64 {
        rows.last().map_or(0, |r| u64::from(r.last()) + 1)
    }

    /// Index of the first sample of `row` (u64: after a row ending at `u32::MAX` it is 2^32).
    pub(crate) fn first<R: Row>(rows: &[R], row: usize) -> u64 {
        match row.checked_sub(1).and_then(|p| rows.get(p)) {
            None => 0,
            Some(prev) => u64::from(prev.last()) + 1,
        }
    }

    /// Samples covered by `row`: up to 2^32, and 0 for a row that repeats (or, in a table
    /// built by hand, undercuts) its predecessor's last index.
    pub(crate) fn count<R: Row>(rows: &[R], row: usize) -> u64 {
        rows.get(row).map_or(0, |r| {
            (u64::from(r.last()) + 1).saturating_sub(first(rows, row))
        })
    }

    /// The row holding sample `i`.
    pub(crate) fn find<R: Row>(rows: &[R], i: u64) -> Option<usize> {
        let row = rows.partition_point(|r| u64::from(r.last()) < i);
        (row < rows.len()).then_some(row)
    }

    /// `[start, end)` of sample `i` in a `[size, start, last]` table.
    pub(crate) fn sized_range(rows: &[[u32; 3]], i: u64) -> Option<(u64, u64)> {
        let row = find(rows, i)?;
        let r = rows.get(row)?;
        let k = i.checked_sub(first(rows, row))?;
        let start = u64::from(r[1]).checked_add(k.checked_mul(u64::from(r[0]))?)?;
        Some((start, start.checked_add(u64::from(r[0]))?))
    }

    /// End of the last sample of a `[size, start, last]` table (0 when empty).
    pub(crate) fn sized_end(rows: &[[u32; 3]]) -> u64 {
        match rows.len().checked_sub(1) {
            None => 0,
            Some(row) => {
                let r = &rows[row];
                u64::from(r[1]) + u64::from(r[0]) * count(rows, row)
            }
        }
    }

    /// Appends one sample whose row (last column ignored) is `row`. Returns false, changing
    /// nothing, when the table already covers 2^32 samples (the last-index column is u32).
    pub(crate) fn push<R: Row>(rows: &mut Vec<R>, mut row: R) -> bool {
        let Ok(n) = u32::try_from(num_samples(rows)) else {
            return false;
        };
        let last_row = rows.len().checked_sub(1);
        if let Some(k) = last_row {
            let c = count(rows, k);
            if rows[k].continues(c, &row) {
                rows[k].set_last(n);
                return true;
            }
        }
        row.set_last(n);
        rows.push(row);
        true
    }

    /// Splits runs so that sample `i` has a row of its own; returns that row.
    pub(crate) fn isolate<R: Row>(rows: &mut Vec<R>, i: u64) -> Option<usize> {
        let mut row = find(rows, i)?;
        // `find` gave a row whose last index (a u32) is at least `i`.
        let i = u32::try_from(i).ok()?;
        let first = first(rows, row);
        let last = rows[row].last();
        if first < u64::from(i) {
            let mut head = rows[row].clone();
            head.set_last(i - 1);
            rows[row].skip(i - first as u32);
            rows.insert(row, head);
            row += 1;
        }
        if last > i {
            let mut tail = rows[row].clone();
            tail.skip(1);
            rows[row].set_last(i);
            rows.insert(row + 1, tail);
        }
        Some(row)
    }

    /// Removes sample `i` (later samples move down by one); returns the row index where
    /// the removed sample's row was. Tables with a start column still need their later
    /// starts shifted by the caller.
    pub(crate) fn remove<R: Row>(rows: &mut Vec<R>, i: u64) -> Option<usize> {
        let row = isolate(rows, i)?;
        rows.remove(row);
        for r in rows.iter_mut().skip(row) {
            let l = r.last();
            r.set_last(l.saturating_sub(1));
        }
        Some(row)
    }

    /// Folds `row` into its neighbours where they continue each other.
    pub(crate) fn merge_around<R: Row>(rows: &mut Vec<R>, row: usize) {
        merge_next(rows, row);
        if let Some(prev) = row.checked_sub(1) {
            merge_next(rows, prev);
        }
    }

    fn merge_next<R: Row>(rows: &mut Vec<R>, row: usize) {
        if row + 1 >= rows.len() {
            return;
        }
        let c = count(rows, row);
        if rows[row].continues(c, &rows[row + 1]) {
            let l = rows[row + 1].last();
            rows[row].set_last(l);
            rows.remove(row + 1);
        }
    }

    /// Checks that the last-index column never goes backwards.
    pub(crate) fn check_monotonic<R: Row>(rows: &[R], what: &str) -> Result<(), Corruption> {
        match rows.windows(2).position(|w| w[1].last() < w[0].last()) {
            None => Ok(()),
            Some(bad) => Err(Corruption::new(format!(
                "{what}: last index goes backwards at row {}",
                bad + 1
            ))),
        }
    }

    /// Version prefix + u32 rows of `N` columns; the empty object is an empty table.
    pub(crate) fn decode_u32_rows<const N: usize>(
        bytes: &[u8],
        what: &'static str,
    ) -> Result<Vec<[u32; N]>, Corruption>
    where
        [u32; N]: Row,
    {
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let mut r = Reader::new(bytes, what);
        r.version()?;
        if !r.remaining().is_multiple_of(4 * N) {
            return Err(Corruption::new(format!(
                "{what}: {} bytes is not a whole number of {N}-column rows",
                r.remaining()
            )));
        }
        let mut rows = Vec::with_capacity(r.remaining() / (4 * N));
        while r.remaining() > 0 {
            let mut row = [0u32; N];
            for v in &mut row {
                *v = r.u32_le()?;
            }
            rows.push(row);
        }
        check_monotonic(&rows, what)?;
        Ok(rows)
    }

    pub(crate) fn encode_u32_rows<const N: usize>(rows: &[[u32; N]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + WRITER_VERSION.len() + 4 * N * rows.len());
        write_version(&mut out, WRITER_VERSION);
        for v in rows.iter().flatten() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn prefixed(version: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_version(&mut out, version);
        out.extend_from_slice(body);
        out
    }

    // Written by deeplake 3.9.52 (see the chunk tests for the datasets they come from).
    const LABEL_IDS: &str = "06332e392e3532084b462f10579f962c0200000000000000";
    // One 6x8 sample in four 3x4 tiles: four rows, all with last index 0.
    const TILE_IDS: &str = "06332e392e353208c846b0e540596c5c00000000000000009a41b0d0c6a608d6\
                            0000000000000000c24a7c2e9cdae9ad00000000000000001147bb74210e51e5\
                            0000000000000000";
    const TILES: &str = "06332e392e35320100000000000000020000000000000000000000000000000600\
                         000000000000080000000000000003000000000000000400000000000000";
    const EMPTY_TILES: &str = "06332e392e35320000000000000000";
    // Sequences of 2 and 3 items.
    const SEQUENCES: &str = "06332e392e3532020000000000000000000000030000000200000001000000";
    // Three local paths, no creds key.
    const CREDS: &str = "06332e392e35320000000002000000";
    // Length 1, then `t[4] = x`.
    const PADS: &str = "06332e392e35320100000004000000";
    const EMPTY_PADS: &str = "06332e392e3532";
    // Then `t[3] = y`: 3.x's unpad leaves `[1, 3, 4]`, which its reader takes as {1, 2, 4}.
    const PADS_ODD: &str = "06332e392e3532010000000300000004000000";

    /// Asserts that every strict prefix of `bytes` fails to decode, except those `ok` allows
    /// (prefixes that are themselves well formed, e.g. ending on a row boundary).
    fn check_truncations<T>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, Corruption>,
        ok: impl Fn(usize) -> bool,
    ) {
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]).is_ok(),
                ok(cut),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
        assert!(decode(bytes).is_ok());
    }

    #[test]
    fn chunk_ids_golden() {
        let enc = ChunkIdEncoder::decode(&hex(LABEL_IDS)).unwrap();
        assert_eq!(enc.rows, vec![(0x2c96_9f57_102f_464b, 2)]);
        assert_eq!(enc.encode(), hex(LABEL_IDS));
        // 24 bytes for one chunk, 16 more per chunk.
        assert_eq!(hex(LABEL_IDS).len(), 24);
        assert_eq!(
            ChunkIdEncoder::chunk_name(enc.rows[0].0),
            "2c969f57102f464b"
        );
        assert_eq!(
            ChunkIdEncoder::chunk_name(0x0322_5842_e7e3_473f),
            "3225842e7e3473f"
        );
        assert_eq!(enc.num_samples(), 3);
        assert_eq!(enc.locate(2), Some((0, 2)));
        assert_eq!(enc.locate(3), None);

        let tiles = ChunkIdEncoder::decode(&hex(TILE_IDS)).unwrap();
        assert_eq!(hex(TILE_IDS).len(), 24 + 3 * 16);
        assert_eq!(tiles.encode(), hex(TILE_IDS));
        let names: Vec<_> = tiles
            .rows
            .iter()
            .map(|r| ChunkIdEncoder::chunk_name(r.0))
            .collect();
        assert_eq!(
            names,
            [
                "5c6c5940e5b046c8",
                "d608a6c6d0b0419a",
                "ade9da9c2e7c4ac2",
                "e5510e2174bb4711"
            ]
        );
        assert_eq!(tiles.num_samples(), 1);
        assert_eq!(tiles.locate(0), Some((0, 0)));
        assert_eq!(tiles.rows_of(0), Some(0..4));
        assert_eq!(tiles.first_index(3), 1, "row 3 holds no sample after 0");
    }

    #[test]
    fn chunk_ids_legacy_and_narrow_layouts() {
        // Before 2.7.6: no width byte, u32 ids.
        let mut body = Vec::new();
        for v in [7u32, 1, 9, 4] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let legacy = ChunkIdEncoder::decode(&prefixed("2.7.5", &body)).unwrap();
        assert_eq!(legacy.rows, vec![(7, 1), (9, 4)]);
        assert_eq!(legacy.locate(3), Some((1, 1)));
        assert_eq!(
            ChunkIdEncoder::decode(&prefixed("2.7", &body)).unwrap(),
            legacy
        );
        // Re-encoded in the current layout.
        assert_eq!(ChunkIdEncoder::decode(&legacy.encode()).unwrap(), legacy);
        assert_eq!(legacy.encode().len(), 8 + 2 * 16);

        let mut narrow = vec![4];
        narrow.extend_from_slice(&body);
        assert_eq!(
            ChunkIdEncoder::decode(&prefixed("2.7.6", &narrow)).unwrap(),
            legacy
        );
        assert!(
            ChunkIdEncoder::decode(&prefixed("3.9.52", &body[1..])).is_err(),
            "width 0"
        );
        assert!(ChunkIdEncoder::decode(&prefixed("x.1", &body)).is_err());
        assert!(version_older_than("2.7.5", [2, 7, 6]).unwrap());
        assert!(!version_older_than("2.7.6", [2, 7, 6]).unwrap());
        assert!(!version_older_than("3.9.52", [2, 7, 6]).unwrap());
        assert!(!version_older_than("2.7.6.1", [2, 7, 6]).unwrap());
    }

    #[test]
    fn chunk_ids_with_an_empty_first_chunk() {
        // 3.x registers a new chunk with last index -1 before any sample lands in it.
        let empty = ChunkIdEncoder {
            rows: vec![(5, u64::MAX)],
        };
        let enc = ChunkIdEncoder::decode(&empty.encode()).unwrap();
        assert_eq!(enc.num_samples(), 0);
        assert_eq!(enc.locate(0), None);
        let filled = ChunkIdEncoder {
            rows: vec![(5, u64::MAX), (6, 1)],
        };
        let enc = ChunkIdEncoder::decode(&filled.encode()).unwrap();
        assert_eq!(enc.locate(0), Some((1, 0)));
        assert_eq!(enc.locate(1), Some((1, 1)));
        // The u32 layout's marker keeps its meaning once widened.
        let mut body = vec![4];
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            ChunkIdEncoder::decode(&prefixed("3.0.0", &body)).unwrap(),
            empty
        );
    }

    #[test]
    fn chunk_ids_reject_corruption() {
        check_truncations(&hex(TILE_IDS), ChunkIdEncoder::decode, |cut| {
            cut == 0 || (cut >= 8 && (cut - 8) % 16 == 0)
        });
        assert_eq!(
            ChunkIdEncoder::decode(&[]).unwrap(),
            ChunkIdEncoder::default()
        );
        let backwards = ChunkIdEncoder {
            rows: vec![(1, 5), (2, 3)],
        };
        assert!(ChunkIdEncoder::decode(&backwards.encode()).is_err());
    }

    #[test]
    fn tiles_golden() {
        let enc = TileEncoder::decode(&hex(TILES)).unwrap();
        let entry = TileEntry {
            sample_shape: vec![6, 8],
            tile_shape: vec![3, 4],
        };
        assert_eq!(enc.entries, BTreeMap::from([(0, entry.clone())]));
        assert_eq!(entry.grid(), vec![2, 2]);
        assert_eq!(entry.num_tiles(), 4);
        assert_eq!(enc.encode(), hex(TILES));
        // Spec example: 60x60 in 30x30 tiles; uneven edges round up.
        assert_eq!(
            TileEntry {
                sample_shape: vec![60, 60],
                tile_shape: vec![30, 30]
            }
            .num_tiles(),
            4
        );
        assert_eq!(
            TileEntry {
                sample_shape: vec![61, 3],
                tile_shape: vec![30, 2]
            }
            .grid(),
            vec![3, 2]
        );

        let empty = TileEncoder::decode(&hex(EMPTY_TILES)).unwrap();
        assert!(empty.entries.is_empty());
        assert_eq!(TileEncoder::default().encode(), hex(EMPTY_TILES));
        assert_eq!(hex(EMPTY_TILES).len(), 15);
        assert_eq!(TileEncoder::decode(&[]).unwrap(), TileEncoder::default());
    }

    #[test]
    fn tiles_reject_corruption() {
        check_truncations(&hex(TILES), TileEncoder::decode, |cut| cut == 0);
        check_truncations(&hex(EMPTY_TILES), TileEncoder::decode, |cut| cut == 0);
        let mut trailing = hex(EMPTY_TILES);
        trailing.push(0);
        assert!(TileEncoder::decode(&trailing).is_err());
        // Hostile counts: entries, then dimensions.
        for (n, ndim) in [(u64::MAX, 2u64), (1 << 61, 0), (1, u64::MAX), (1, 1 << 60)] {
            let mut body = n.to_le_bytes().to_vec();
            body.extend_from_slice(&ndim.to_le_bytes());
            body.extend_from_slice(&[1; 64]);
            assert!(
                TileEncoder::decode(&prefixed("3.9.52", &body)).is_err(),
                "n {n} ndim {ndim}"
            );
        }
        let zero_tile = TileEncoder {
            entries: BTreeMap::from([(
                0,
                TileEntry {
                    sample_shape: vec![4],
                    tile_shape: vec![0],
                },
            )]),
        };
        assert!(TileEncoder::decode(&zero_tile.encode()).is_err());
        assert_eq!(zero_tile.entries[&0].num_tiles(), 0);
    }

    #[test]
    fn tiles_remove_renumbers() {
        let e = |n| TileEntry {
            sample_shape: vec![n],
            tile_shape: vec![1],
        };
        let mut enc = TileEncoder {
            entries: BTreeMap::from([(1, e(1)), (3, e(3)), (4, e(4))]),
        };
        enc.remove(3);
        assert_eq!(enc.entries, BTreeMap::from([(1, e(1)), (3, e(4))]));
        enc.remove(0);
        assert_eq!(enc.entries, BTreeMap::from([(0, e(1)), (2, e(4))]));
    }

    #[test]
    fn sequences_golden() {
        let enc = SequenceEncoder::decode(&hex(SEQUENCES)).unwrap();
        assert_eq!(enc.rows, vec![[2, 0, 0], [3, 2, 1]]);
        assert_eq!(enc.num_sequences(), 2);
        assert_eq!(enc.items(0), Some((0, 2)));
        assert_eq!(enc.items(1), Some((2, 5)));
        assert_eq!(enc.items(2), None);
        let mut built = SequenceEncoder::default();
        built.push(2);
        built.push(3);
        assert_eq!(built.encode(), hex(SEQUENCES));
        check_truncations(&hex(SEQUENCES), SequenceEncoder::decode, |cut| {
            cut == 0 || (cut >= 7 && (cut - 7) % 12 == 0)
        });
    }

    #[test]
    fn creds_golden() {
        let enc = CredsEncoder::decode(&hex(CREDS)).unwrap();
        assert_eq!(enc.rows, vec![[0, 2]]);
        assert_eq!(
            (enc.num_samples(), enc.get(2), enc.get(3)),
            (3, Some(0), None)
        );
        let mut built = CredsEncoder::default();
        for _ in 0..3 {
            built.push(0);
        }
        assert_eq!(built.encode(), hex(CREDS));
        built.set(1, 2).unwrap();
        assert_eq!(built.rows, vec![[0, 0], [2, 1], [0, 2]]);
        built.remove(1).unwrap();
        assert_eq!(built.rows, vec![[0, 1]]);
        assert!(built.set(2, 1).is_err());
        assert!(built.remove(2).is_err());
        check_truncations(&hex(CREDS), CredsEncoder::decode, |cut| {
            cut == 0 || (cut >= 7 && (cut - 7) % 8 == 0)
        });
        let backwards = CredsEncoder {
            rows: vec![[0, 4], [1, 2]],
        };
        assert!(CredsEncoder::decode(&backwards.encode()).is_err());
    }

    #[test]
    fn pads_golden() {
        let enc = PadEncoder::decode(&hex(PADS)).unwrap();
        assert_eq!(enc.ranges, vec![(1, 4)]);
        let padded: Vec<bool> = (0..6).map(|i| enc.is_padded(i)).collect();
        assert_eq!(padded, [false, true, true, true, false, false]);
        let mut built = PadEncoder::default();
        built.add(1, 4);
        assert_eq!(built.encode(), hex(PADS));
        assert_eq!(
            PadEncoder::decode(&hex(EMPTY_PADS)).unwrap(),
            PadEncoder::default()
        );
        assert_eq!(PadEncoder::default().encode(), hex(EMPTY_PADS));
        assert_eq!(hex(EMPTY_PADS).len(), 7);

        let odd = PadEncoder::decode(&hex(PADS_ODD)).unwrap();
        assert_eq!(odd.ranges, vec![(1, 3), (4, 5)]);
        let padded: Vec<bool> = (0..6).map(|i| odd.is_padded(i)).collect();
        // What deeplake 3.9.52's `is_padded` answers for that file.
        assert_eq!(padded, [false, true, true, false, true, false]);

        built.unpad(3);
        assert_eq!(built.ranges, vec![(1, 3)]);
        built.unpad(1);
        assert_eq!(built.ranges, vec![(2, 3)]);
        built.unpad(7);
        assert_eq!(built.ranges, vec![(2, 3)]);

        check_truncations(&hex(PADS), PadEncoder::decode, |cut| {
            cut == 0 || cut == 7 || cut == 11
        });
        let overlapping = PadEncoder {
            ranges: vec![(1, 5), (3, 8)],
        };
        assert!(PadEncoder::decode(&overlapping.encode()).is_err());
        let reversed = PadEncoder {
            ranges: vec![(5, 1)],
        };
        assert!(PadEncoder::decode(&reversed.encode()).is_err());
        let lone_max = prefixed("3.9.52", &u32::MAX.to_le_bytes());
        assert!(PadEncoder::decode(&lone_max).is_err());
    }

    fn tile_entries() -> impl Strategy<Value = BTreeMap<u64, TileEntry>> {
        (0usize..4).prop_flat_map(|ndim| {
            let entry = (
                prop::collection::vec(0u64..1000, ndim),
                prop::collection::vec(1u64..100, ndim),
            )
                .prop_map(|(sample_shape, tile_shape)| TileEntry {
                    sample_shape,
                    tile_shape,
                });
            prop::collection::btree_map(any::<u64>(), entry, 0..8)
        })
    }

    /// A chunk layout: `None` = a tiled sample of `k` tiles, `Some(n)` = a chunk of `n`.
    fn chunk_layout() -> impl Strategy<Value = (bool, Vec<(bool, u64)>)> {
        (
            any::<bool>(),
            prop::collection::vec((any::<bool>(), 1u64..5), 0..12),
        )
    }

    proptest! {
        #[test]
        fn chunk_ids_match_naive_expansion((empty_first, layout) in chunk_layout()) {
            let mut rows = Vec::new();
            if empty_first {
                rows.push((0, u64::MAX));
            }
            // expanded[i] = every (row, local) holding sample i.
            let mut expanded: Vec<Vec<(usize, usize)>> = Vec::new();
            for (k, &(tiled, n)) in layout.iter().enumerate() {
                if tiled {
                    let i = expanded.len() as u64;
                    expanded.push((0..n).map(|t| (rows.len() + t as usize, 0)).collect());
                    rows.extend((0..n).map(|t| (k as u64 * 100 + t, i)));
                } else {
                    let row = rows.len();
                    expanded.extend((0..n as usize).map(|local| vec![(row, local)]));
                    rows.push((k as u64 * 100, expanded.len() as u64 - 1));
                }
            }
            let enc = ChunkIdEncoder::decode(&ChunkIdEncoder { rows }.encode()).unwrap();
            prop_assert_eq!(enc.num_samples(), expanded.len() as u64);
            for (i, holders) in expanded.iter().enumerate() {
                prop_assert_eq!(enc.locate(i as u64), Some(holders[0]));
                let rows = enc.rows_of(i as u64).unwrap();
                prop_assert_eq!(rows.len(), holders.len());
                prop_assert_eq!(enc.first_index(holders[0].0), i as u64 - holders[0].1 as u64);
            }
            prop_assert_eq!(enc.locate(expanded.len() as u64), None);
            prop_assert_eq!(enc.first_index(enc.rows.len() + 3), enc.num_samples());
        }

        #[test]
        fn chunk_ids_round_trip(rows in prop::collection::vec((any::<u64>(), 0u64..50), 0..20)) {
            let mut rows = rows;
            rows.sort_by_key(|r| r.1);
            let enc = ChunkIdEncoder { rows };
            prop_assert_eq!(ChunkIdEncoder::decode(&enc.encode()).unwrap(), enc);
        }

        #[test]
        fn tiles_round_trip(entries in tile_entries()) {
            let enc = TileEncoder { entries };
            let bytes = enc.encode();
            prop_assert_eq!(TileEncoder::decode(&bytes).unwrap(), enc.clone());
            let ndim = enc.entries.values().next().map_or(0, |e| e.sample_shape.len());
            let expected = if enc.entries.is_empty() { 15 } else { 23 + enc.entries.len() * 8 * (1 + 2 * ndim) };
            prop_assert_eq!(bytes.len(), expected);
        }

        #[test]
        fn sequences_match_naive(lens in prop::collection::vec(prop_oneof![Just(0u32), Just(2), 0u32..6], 0..30)) {
            let mut enc = SequenceEncoder::default();
            for &l in &lens {
                enc.push(l);
            }
            let enc = SequenceEncoder::decode(&enc.encode()).unwrap();
            prop_assert_eq!(enc.num_sequences(), lens.len() as u64);
            let mut start = 0u64;
            for (i, &l) in lens.iter().enumerate() {
                prop_assert_eq!(enc.items(i as u64), Some((start, start + u64::from(l))));
                start += u64::from(l);
            }
            prop_assert_eq!(enc.items(lens.len() as u64), None);
            for w in enc.rows.windows(2) {
                prop_assert_ne!(w[0][0], w[1][0]);
            }
        }

        #[test]
        fn creds_match_naive(ops in prop::collection::vec((0u8..3, any::<usize>(), 0u32..3), 0..40)) {
            let mut enc = CredsEncoder::default();
            let mut model: Vec<u32> = Vec::new();
            for (op, at, v) in ops {
                match op {
                    0 => {
                        enc.push(v);
                        model.push(v);
                    }
                    1 if !model.is_empty() => {
                        let i = at % model.len();
                        enc.set(i as u64, v).unwrap();
                        model[i] = v;
                    }
                    2 if !model.is_empty() => {
                        let i = at % model.len();
                        enc.remove(i as u64).unwrap();
                        model.remove(i);
                    }
                    _ => {
                        prop_assert!(enc.set(at as u64, v).is_err());
                        prop_assert!(enc.remove(at as u64).is_err());
                    }
                }
                let dec = CredsEncoder::decode(&enc.encode()).unwrap();
                prop_assert_eq!(&dec, &enc);
                prop_assert_eq!(enc.num_samples(), model.len() as u64);
                for (i, &v) in model.iter().enumerate() {
                    prop_assert_eq!(enc.get(i as u64), Some(v));
                }
                prop_assert_eq!(enc.get(model.len() as u64), None);
                for w in enc.rows.windows(2) {
                    prop_assert_ne!(w[0][0], w[1][0]);
                }
            }
        }

        #[test]
        fn pads_match_naive(ops in prop::collection::vec((any::<bool>(), 0u32..40, 0u32..8), 0..30)) {
            let mut enc = PadEncoder::default();
            let mut model = BTreeSet::new();
            for (add, at, len) in ops {
                if add {
                    enc.add(at, at + len);
                    model.extend(at..at + len);
                } else {
                    enc.unpad(at);
                    model.remove(&at);
                }
                prop_assert_eq!(&PadEncoder::decode(&enc.encode()).unwrap(), &enc);
                for i in 0..50 {
                    prop_assert_eq!(enc.is_padded(i), model.contains(&(i as u32)), "index {}", i);
                }
                for w in enc.ranges.windows(2) {
                    prop_assert!(w[0].1 < w[1].0);
                }
            }
        }

        #[test]
        fn garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..200), raw in any::<bool>()) {
            let bytes = if raw { body } else { prefixed("3.9.52", &body) };
            if let Ok(e) = ChunkIdEncoder::decode(&bytes) {
                for i in 0..e.num_samples().min(64) + 2 {
                    let _ = (e.locate(i), e.rows_of(i), e.first_index(i as usize));
                }
                prop_assert_eq!(ChunkIdEncoder::decode(&e.encode()).unwrap(), e);
            }
            if let Ok(e) = TileEncoder::decode(&bytes) {
                for t in e.entries.values() {
                    let _ = t.num_tiles();
                }
                prop_assert_eq!(TileEncoder::decode(&e.encode()).unwrap(), e);
            }
            if let Ok(e) = SequenceEncoder::decode(&bytes) {
                for i in 0..e.num_sequences().min(64) + 2 {
                    let _ = e.items(i);
                }
                prop_assert_eq!(SequenceEncoder::decode(&e.encode()).unwrap(), e);
            }
            if let Ok(mut e) = CredsEncoder::decode(&bytes) {
                for i in 0..e.num_samples().min(64) + 2 {
                    let _ = e.get(i);
                }
                prop_assert_eq!(CredsEncoder::decode(&e.encode()).unwrap(), e.clone());
                let n = e.num_samples();
                let _ = e.set(n / 2, 7);
                let _ = e.remove(n / 3);
                e.push(1);
            }
            if let Ok(mut e) = PadEncoder::decode(&bytes) {
                for i in 0..64 {
                    let _ = e.is_padded(i);
                }
                prop_assert_eq!(PadEncoder::decode(&e.encode()).unwrap(), e.clone());
                e.unpad(3);
                e.add(2, 9);
            }
        }
    }
}
