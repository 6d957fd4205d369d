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
    /// The item count of a tensor must stay below 2^32 (3.x's u32 columns); past that the
    /// start column saturates.
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
/// rejects pairs that are not.
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
        fn continues(&self, count: u32, next: &Self) -> bool;
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
        fn continues(&self, _count: u32, next: &Self) -> bool {
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
        fn continues(&self, _count: u32, next: &Self) -> bool {
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
        fn continues(&self, count: u32, next: &Self) -> bool {
            self[0] == next[0]
                && u64::from(self[1]) + u64::from(self[0]) * u64::from(count) == u64::from(next[1])
        }
    }

    /// `last_index + 1` of the last row: the number of samples covered.
    pub(crate) fn num_samples<R: Row>(rows: &[R]) -> u64 {
        rows.last().map_or(0, |r| u64::from(r.last()) + 1)
    }

    /// Index of the first sample of `row`.
    pub(crate) fn first<R: Row>(rows: &[R], row: usize) -> u32 {
        match row.checked_sub(1).and_then(|p| rows.get(p)) {
            None => 0,
            Some(prev) => prev.last().saturating_add(1),
        }
    }

    /// Samples covered by `row` (0 for a row that repeats its predecessor's last index).
    pub(crate) fn count<R: Row>(rows: &[R], row: usize) -> u32 {
        rows.get(row).map_or(0, |r| {
            r.last().wrapping_sub(first(rows, row)).wrapping_add(1)
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
        let k = i.checked_sub(u64::from(first(rows, row)))?;
        let start = u64::from(r[1]).checked_add(k.checked_mul(u64::from(r[0]))?)?;
        Some((start, start.checked_add(u64::from(r[0]))?))
    }

    /// End of the last sample of a `[size, start, last]` table (0 when empty).
    pub(crate) fn sized_end(rows: &[[u32; 3]]) -> u64 {
        match rows.len().checked_sub(1) {
            None => 0,
            Some(row) => {
                let r = &rows[row];
                u64::from(r[1]) + u64::from(r[0]) * u64::from(count(rows, row))
            }
        }
    }

    /// Appends one sample whose row (last column ignored) is `row`.
    pub(crate) fn push<R: Row>(rows: &mut Vec<R>, mut row: R) {
        let n = u32::try_from(num_samples(rows)).unwrap_or(u32::MAX);
        let last_row = rows.len().checked_sub(1);
        if let Some(k) = last_row {
            let c = count(rows, k);
            if rows[k].continues(c, &row) {
                rows[k].set_last(n);
                return;
            }
        }
        row.set_last(n);
        rows.push(row);
    }

    /// Splits runs so that sample `i` has a row of its own; returns that row.
    pub(crate) fn isolate<R: Row>(rows: &mut Vec<R>, i: u64) -> Option<usize> {
        let mut row = find(rows, i)?;
        let i = u32::try_from(i).ok()?;
        let first = first(rows, row);
        let last = rows[row].last();
        if first < i {
            let mut head = rows[row].clone();
            head.set_last(i - 1);
            rows[row].skip(i - first);
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
