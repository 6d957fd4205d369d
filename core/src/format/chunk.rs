//! Chunk files (`<tensor>/chunks/<name>`): header (version, shape encoder, byte
//! positions) and the data section, possibly chunk-compressed.
//!
//! ```text
//! u8 vlen | version[vlen] | i32 shape_rows | i32 shape_cols | u32 shapes[rows*cols]
//! | u32 bp_rows | u32 byte_positions[bp_rows*3] | data...
//! ```
//! Shape rows are `[dim_0.., last_local_index]`, byte-position rows
//! `[num_bytes, start_byte, last_local_index]`; both are run-length encoded.
//! Byte positions index the *decompressed* data section.
//!
//! Three kinds of chunk share the layout, told apart by which table is empty:
//!
//! | shape rows | byte positions | kind                                                      |
//! |------------|----------------|-----------------------------------------------------------|
//! | yes        | yes            | ordinary chunk                                            |
//! | 1 row      | none           | tile chunk (one tile of one sample) or image-canvas chunk |
//! | none       | yes            | legacy chunk: shapes unknown (3.x reads them as zeros)    |
//!
//! The sample count comes from the shape table when it has rows, else from the byte
//! positions, as in 3.x. Decoding checks the header against the bytes present and that
//! the last-index columns never go backwards; it does not check byte positions against
//! the data section, which may still be compressed (see [`Chunk::sample_data`]).

use bytes::Bytes;

use super::encoders::rle::{self, Row as _};
use super::{Reader, WRITER_VERSION, write_version};
use crate::error::Corruption;

/// A decoded chunk. `data` is the data section exactly as stored (still compressed when
/// the tensor has a chunk compression).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub version: String,
    /// Shape rows, each `ndim + 1` wide (`[dims.., last_index]`).
    pub shapes: Vec<Vec<u32>>,
    /// Byte-position rows `[num_bytes, start_byte, last_index]`. Empty for tile chunks.
    pub byte_positions: Vec<[u32; 3]>,
    pub data: Bytes,
}

impl Chunk {
    /// Parses a chunk. `data` is a zero-copy slice of `bytes`.
    pub fn decode(bytes: Bytes) -> Result<Chunk, Corruption> {
        let mut r = Reader::new(&bytes, "chunk");
        let version = r.version()?;
        let (rows, cols) = (r.i32_le()?, r.i32_le()?);
        let (rows, cols) = match (u32::try_from(rows), u32::try_from(cols)) {
            (Ok(rows), Ok(cols)) => (u64::from(rows), u64::from(cols)),
            _ => {
                return Err(Corruption::new(format!(
                    "chunk: negative shape table size {rows} x {cols}"
                )));
            }
        };
        // 3.x treats a table with no cells as empty whatever the two counts say; checking
        // cells (not rows) also keeps `rows = 2^31, cols = 0` from allocating row vectors.
        let mut shapes = Vec::new();
        if rows * cols > 0 {
            r.check_count(rows * cols, 4)?;
            // Both fit in usize now: each is at most the number of cells present.
            let (rows, cols) = (rows as usize, cols as usize);
            shapes.reserve_exact(rows);
            for _ in 0..rows {
                let row = (0..cols)
                    .map(|_| r.u32_le())
                    .collect::<Result<Vec<_>, _>>()?;
                shapes.push(row);
            }
        }
        let bp_rows = r.u32_le()?;
        let bp_rows = r.check_count(u64::from(bp_rows), 12)?;
        let mut byte_positions = Vec::with_capacity(bp_rows);
        for _ in 0..bp_rows {
            byte_positions.push([r.u32_le()?, r.u32_le()?, r.u32_le()?]);
        }
        rle::check_monotonic(&shapes, "chunk shape table")?;
        rle::check_monotonic(&byte_positions, "chunk byte positions")?;
        let data = bytes.slice(r.pos()..);
        Ok(Chunk {
            version,
            shapes,
            byte_positions,
            data,
        })
    }

    /// Serializes header and data as stored.
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(
            &self.version,
            &self.shapes,
            &self.byte_positions,
            &self.data,
        )
    }

    /// Number of samples (or 1 for a tile chunk, which has one shape row and no byte
    /// positions).
    pub fn num_samples(&self) -> usize {
        samples_in(&self.shapes, &self.byte_positions)
    }

    /// Whether the chunk has a shape row but no byte positions: a tile chunk (or an
    /// image-canvas chunk, whose samples are cut out by shape, not by byte range).
    pub fn is_tile(&self) -> bool {
        self.byte_positions.is_empty() && self.shapes.len() == 1
    }

    /// Shape of the sample at `local` (chunk-local index).
    pub fn shape(&self, local: usize) -> Result<Vec<u32>, Corruption> {
        if self.shapes.is_empty() {
            return Err(Corruption::new(format!(
                "chunk: no shape table (legacy chunk), cannot give the shape of sample {local}"
            )));
        }
        let row = rle::find(&self.shapes, local as u64).ok_or_else(|| {
            Corruption::new(format!(
                "chunk: sample {local} out of range ({} samples in the shape table)",
                rle::num_samples(&self.shapes)
            ))
        })?;
        let dims = self
            .shapes
            .get(row)
            .and_then(|r| r.split_last())
            .map(|(_, dims)| dims);
        Ok(dims.unwrap_or_default().to_vec())
    }

    /// Dims of the sample at `local`, borrowed from the shape table (no allocation, for
    /// readers that walk every sample of a chunk).
    pub fn dims(&self, local: usize) -> Result<&[u32], Corruption> {
        let row = rle::find(&self.shapes, local as u64).ok_or_else(|| {
            Corruption::new(format!(
                "chunk: sample {local} out of range ({} samples in the shape table)",
                rle::num_samples(&self.shapes)
            ))
        })?;
        Ok(self
            .shapes
            .get(row)
            .and_then(|r| r.split_last())
            .map_or(&[][..], |(_, dims)| dims))
    }

    /// For samples `locals` that share one shape row and one byte-position row: their
    /// dims, the bytes of each, and the byte range they span together (they are laid out
    /// back to back), so a reader can take them in one slice. `None` otherwise.
    pub fn uniform_run(
        &self,
        locals: std::ops::Range<usize>,
    ) -> Option<(&[u32], usize, std::ops::Range<usize>)> {
        let last = locals.end.checked_sub(1)?;
        if locals.is_empty() || self.byte_positions.is_empty() {
            return None;
        }
        let srow = rle::find(&self.shapes, locals.start as u64)?;
        let brow = rle::find(&self.byte_positions, locals.start as u64)?;
        if rle::find(&self.shapes, last as u64)? != srow
            || rle::find(&self.byte_positions, last as u64)? != brow
        {
            return None;
        }
        let dims = self.shapes.get(srow)?.split_last()?.1;
        let size = usize::try_from(self.byte_positions.get(brow)?[0]).ok()?;
        let start =
            usize::try_from(rle::sized_range(&self.byte_positions, locals.start as u64)?.0).ok()?;
        let end = start.checked_add(size.checked_mul(locals.len())?)?;
        Some((dims, size, start..end))
    }

    /// Byte range of sample `local` inside the (decompressed) data section.
    ///
    /// A chunk without byte positions holding one sample (a tile) spans the whole data
    /// section: `0..data.len()` as stored, which is the whole *decompressed* section when
    /// the tensor has a chunk compression. The range is not checked against `data`.
    pub fn byte_range(&self, local: usize) -> Result<std::ops::Range<usize>, Corruption> {
        if self.byte_positions.is_empty() {
            return if local == 0 && self.num_samples() == 1 {
                Ok(0..self.data.len())
            } else {
                Err(Corruption::new(format!(
                    "chunk: no byte positions, cannot give the bytes of sample {local}"
                )))
            };
        }
        byte_range_in(&self.byte_positions, local)
    }

    /// The stored bytes of sample `local`, for chunks without a chunk compression (where
    /// `data` is the decompressed section). Zero-copy; errors if the byte positions point
    /// outside the data section.
    pub fn sample_data(&self, local: usize) -> Result<Bytes, Corruption> {
        let range = self.byte_range(local)?;
        if range.end > self.data.len() {
            return Err(Corruption::new(format!(
                "chunk: sample {local} spans bytes {range:?} but the data section has {}",
                self.data.len()
            )));
        }
        Ok(self.data.slice(range))
    }
}

fn samples_in(shapes: &[Vec<u32>], byte_positions: &[[u32; 3]]) -> usize {
    let n = if shapes.is_empty() {
        rle::num_samples(byte_positions)
    } else {
        rle::num_samples(shapes)
    };
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn byte_range_in(
    byte_positions: &[[u32; 3]],
    local: usize,
) -> Result<std::ops::Range<usize>, Corruption> {
    let (start, end) = rle::sized_range(byte_positions, local as u64).ok_or_else(|| {
        Corruption::new(format!(
            "chunk: sample {local} out of range ({} samples in the byte positions)",
            rle::num_samples(byte_positions)
        ))
    })?;
    match (usize::try_from(start), usize::try_from(end)) {
        (Ok(s), Ok(e)) => Ok(s..e),
        _ => Err(Corruption::new(format!(
            "chunk: sample {local} byte range overflows"
        ))),
    }
}

fn header_len(version: &str, shapes: &[Vec<u32>], byte_positions: &[[u32; 3]]) -> usize {
    let cells: usize = shapes.iter().map(Vec::len).sum();
    1 + version.len() + 8 + 4 * cells + 4 + 12 * byte_positions.len()
}

fn encode_parts(
    version: &str,
    shapes: &[Vec<u32>],
    byte_positions: &[[u32; 3]],
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(version, shapes, byte_positions) + data.len());
    write_version(&mut out, version);
    let cols = shapes.first().map_or(0, Vec::len);
    debug_assert!(
        shapes.iter().all(|r| r.len() == cols),
        "shape rows must have one width"
    );
    let (rows, cols) = if cols == 0 {
        (0, 0)
    } else {
        (shapes.len(), cols)
    };
    out.extend_from_slice(&(rows as i32).to_le_bytes());
    out.extend_from_slice(&(cols as i32).to_le_bytes());
    for v in shapes.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(byte_positions.len() as u32).to_le_bytes());
    for v in byte_positions.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Samples at least this large are kept as shared segments rather than copied.
pub const SHARE_MIN: usize = 4096;

/// The uncompressed data section of a chunk being built: shared segments (typically a
/// sample's file bytes, appended without a copy), then bytes the builder owns. A chunk
/// written as is goes out segment by segment; edits first make it one owned buffer.
#[derive(Clone, Debug, Default)]
pub struct ChunkData {
    shared: Vec<Bytes>,
    open: Vec<u8>,
    len: usize,
}

impl ChunkData {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Appends `bytes`, sharing rather than copying them unless they are small.
    pub fn push_shared(&mut self, bytes: Bytes) {
        if bytes.len() < SHARE_MIN {
            return self.extend_from_slice(&bytes);
        }
        if !self.open.is_empty() {
            self.shared
                .push(Bytes::from(std::mem::take(&mut self.open)));
        }
        self.len += bytes.len();
        self.shared.push(bytes);
    }

    /// The whole section as one owned buffer, for edits.
    pub fn make_contiguous(&mut self) -> &mut Vec<u8> {
        if !self.shared.is_empty() {
            let mut all = Vec::with_capacity(self.len);
            for seg in &self.shared {
                all.extend_from_slice(seg);
            }
            all.extend_from_slice(&self.open);
            self.shared.clear();
            self.open = all;
        }
        &mut self.open
    }

    /// The whole section as one slice, copied only when it is in several pieces.
    pub fn contiguous(&self) -> std::borrow::Cow<'_, [u8]> {
        match (self.shared.as_slice(), self.open.is_empty()) {
            ([], _) => std::borrow::Cow::Borrowed(&self.open),
            ([one], true) => std::borrow::Cow::Borrowed(one),
            _ => std::borrow::Cow::Owned(self.segments().fold(
                Vec::with_capacity(self.len),
                |mut v, s| {
                    v.extend_from_slice(s);
                    v
                },
            )),
        }
    }

    /// The whole section as `Bytes`, copied only when it is in several pieces.
    pub fn to_bytes(&self) -> Bytes {
        match (self.shared.as_slice(), self.open.is_empty()) {
            ([one], true) => one.clone(),
            _ => Bytes::from(self.contiguous().into_owned()),
        }
    }

    /// The pieces in order: the shared segments, then the owned tail.
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.shared
            .iter()
            .map(|b| &b[..])
            .chain((!self.open.is_empty()).then_some(&self.open[..]))
    }

    /// The shared segments (the owned tail is [`ChunkData::owned`]).
    pub fn shared(&self) -> &[Bytes] {
        &self.shared
    }

    /// The owned tail, which follows the shared segments.
    pub fn owned(&self) -> &[u8] {
        &self.open
    }

    /// The owned buffer, to reuse its allocation.
    pub fn into_owned_buffer(self) -> Vec<u8> {
        self.open
    }
}

impl From<Vec<u8>> for ChunkData {
    fn from(open: Vec<u8>) -> Self {
        ChunkData {
            len: open.len(),
            shared: Vec::new(),
            open,
        }
    }
}

impl PartialEq for ChunkData {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.contiguous() == other.contiguous()
    }
}

impl PartialEq<Vec<u8>> for ChunkData {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.len == other.len() && *self.contiguous() == other[..]
    }
}

/// Builds a chunk sample by sample (the writer's side), keeping the run-length tables
/// compact. `data` holds the uncompressed data section.
///
/// Sizes are u32 in the format: the writer keeps a chunk under `max_chunk_size` (16 MB by
/// default), far below the 4 GiB that the tables can address.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkBuilder {
    pub shapes: Vec<Vec<u32>>,
    pub byte_positions: Vec<[u32; 3]>,
    pub data: ChunkData,
}

impl ChunkBuilder {
    /// From a decoded chunk whose data section is already decompressed.
    pub fn from_parts(shapes: Vec<Vec<u32>>, byte_positions: Vec<[u32; 3]>, data: Vec<u8>) -> Self {
        ChunkBuilder {
            shapes,
            byte_positions,
            data: data.into(),
        }
    }

    pub fn num_samples(&self) -> usize {
        samples_in(&self.shapes, &self.byte_positions)
    }

    /// Appends one sample's shape and bytes, for a builder the caller made itself (a
    /// sample of the chunk's rank, a chunk far below 4 GiB). Use [`ChunkBuilder::try_push`]
    /// on a builder made from a chunk read from storage.
    pub fn push(&mut self, shape: &[u32], bytes: &[u8]) {
        let pushed = self.try_push(shape, bytes);
        debug_assert!(pushed.is_ok(), "{pushed:?}");
    }

    /// Appends one sample's shape and bytes; errors (leaving the builder unchanged) when
    /// the sample's rank differs from the chunk's, when the chunk has no byte positions
    /// but several samples (an image-canvas chunk), or when it would exceed 4 GiB.
    ///
    /// On a legacy builder (byte positions but no shape table) the earlier samples get an
    /// all-zero shape of the same rank first, as 3.x does. On a tile builder (one sample,
    /// no byte positions) the tile's bytes become the first byte-position row.
    pub fn try_push(&mut self, shape: &[u32], bytes: &[u8]) -> Result<(), Corruption> {
        self.push_with(shape, bytes.len(), |d| d.extend_from_slice(bytes))
    }

    /// [`ChunkBuilder::try_push`] that keeps a large sample's bytes shared instead of
    /// copying them into the chunk.
    pub fn try_push_shared(&mut self, shape: &[u32], bytes: Bytes) -> Result<(), Corruption> {
        self.push_with(shape, bytes.len(), |d| d.push_shared(bytes))
    }

    fn push_with(
        &mut self,
        shape: &[u32],
        n_bytes: usize,
        put: impl FnOnce(&mut ChunkData),
    ) -> Result<(), Corruption> {
        if let Some(row) = self.shapes.first() {
            check_rank(row, shape)?;
        }
        if self.byte_positions.is_empty() && self.num_samples() > 1 {
            return Err(Corruption::new(
                "chunk builder: cannot append to a chunk without byte positions",
            ));
        }
        let full = |n: u64| n > u64::from(u32::MAX);
        if full(rle::num_samples(&self.byte_positions)) || full(rle::num_samples(&self.shapes)) {
            return Err(Corruption::new(
                "chunk builder: chunk already holds 2^32 samples",
            ));
        }
        let (start, len) = match (u32::try_from(self.data.len()), u32::try_from(n_bytes)) {
            (Ok(start), Ok(len)) if start.checked_add(len).is_some() => (start, len),
            _ => return Err(Corruption::new("chunk builder: chunk would exceed 4 GiB")),
        };
        // Nothing fails past this point, and both tables have room for one more sample.
        self.ensure_byte_positions();
        let n_before = rle::num_samples(&self.byte_positions);
        rle::push(&mut self.byte_positions, [len, start, 0]);
        put(&mut self.data);
        if self.shapes.is_empty() && n_before > 0 {
            let mut zeros = vec![0; shape.len() + 1];
            zeros.set_last(to_u32(n_before as usize - 1));
            self.shapes.push(zeros);
        }
        // The common case, a sample of the last row's shape, only moves that row's
        // last index: no row is built for it.
        let n_shapes = rle::num_samples(&self.shapes);
        if let Some(last) = self.shapes.last_mut()
            && last.len() == shape.len() + 1
            && last[..shape.len()] == *shape
            && let Ok(n) = u32::try_from(n_shapes)
        {
            last.set_last(n);
            return Ok(());
        }
        let mut row = shape.to_vec();
        row.push(0);
        rle::push(&mut self.shapes, row);
        Ok(())
    }

    /// Appends `n` samples of one shape whose bytes, `bytes.len() / n` each, lie back
    /// to back: one run in each table, one copy. Errors like [`ChunkBuilder::try_push`],
    /// changing nothing.
    pub fn try_push_run(
        &mut self,
        shape: &[u32],
        bytes: &[u8],
        n: usize,
    ) -> Result<(), Corruption> {
        if n == 0 {
            return Ok(());
        }
        let item = bytes.len() / n;
        if item * n != bytes.len() {
            return Err(Corruption::new("chunk builder: a run of unequal samples"));
        }
        let fits = u32::try_from(self.data.len() + bytes.len()).is_ok()
            && rle::num_samples(&self.byte_positions) + n as u64 <= u64::from(u32::MAX);
        if !fits {
            return Err(Corruption::new(
                "chunk builder: chunk would exceed 4 GiB or 2^32 samples",
            ));
        }
        self.try_push(shape, &bytes[..item])?;
        if n == 1 {
            return Ok(());
        }
        // The first sample made (or continued) a row of this size and shape in both
        // tables, ending at the chunk's end: the others extend those rows.
        let last = u32::try_from(rle::num_samples(&self.byte_positions) - 1 + (n as u64 - 1))
            .map_err(|_| Corruption::new("chunk builder: chunk already holds 2^32 samples"))?;
        match (self.byte_positions.last_mut(), self.shapes.last_mut()) {
            (Some(bp), Some(sh)) if bp[0] as usize == item => {
                bp[2] = last;
                sh.set_last(last);
            }
            _ => {
                // A builder without tables of its own (a tile): one by one.
                for k in 1..n {
                    self.try_push(shape, &bytes[k * item..(k + 1) * item])?;
                }
                return Ok(());
            }
        }
        self.data.extend_from_slice(&bytes[item..]);
        Ok(())
    }

    /// Replaces sample `local` (shape and bytes may change size).
    pub fn replace(&mut self, local: usize, shape: &[u32], bytes: &[u8]) -> Result<(), Corruption> {
        let n = self.num_samples();
        if local >= n {
            return Err(Corruption::new(format!(
                "chunk builder: sample {local} out of range ({n} samples)"
            )));
        }
        if self.byte_positions.is_empty() {
            if n != 1 {
                return Err(no_byte_positions(local));
            }
            // A tile: one sample that is the whole data section.
            self.shapes = vec![shape.iter().copied().chain([0]).collect()];
            self.data = bytes.to_vec().into();
            return Ok(());
        }
        self.check_contiguous()?;
        let old = byte_range_in(&self.byte_positions, local)?;
        let new_len = u32::try_from(bytes.len())
            .ok()
            .filter(|_| self.data.len() - old.len() + bytes.len() <= u32::MAX as usize)
            .ok_or_else(|| Corruption::new("chunk builder: chunk would exceed 4 GiB"))?;
        if let Some(row) = self.shapes.first() {
            check_rank(row, shape)?;
            if rle::find(&self.shapes, local as u64).is_none() {
                return Err(shape_gap(local));
            }
        }
        // Nothing fails past this point, so an error above leaves the builder unchanged.
        if self.shapes.is_empty() {
            // Legacy chunk: give the other samples the zero shape 3.x reads for them.
            let mut zeros = vec![0; shape.len() + 1];
            zeros.set_last(to_u32(n - 1));
            self.shapes.push(zeros);
        }

        let row = rle::isolate(&mut self.byte_positions, local as u64)
            .ok_or_else(|| no_byte_positions(local))?;
        if let Some(r) = self.byte_positions.get_mut(row) {
            r[0] = new_len;
        }
        shift_starts(&mut self.byte_positions[row + 1..], old.len(), bytes.len());
        rle::merge_around(&mut self.byte_positions, row);
        self.data
            .make_contiguous()
            .splice(old, bytes.iter().copied());
        self.data.len = self.data.open.len();

        let row = rle::isolate(&mut self.shapes, local as u64).ok_or_else(|| shape_gap(local))?;
        if let Some(r) = self.shapes.get_mut(row) {
            *r = shape.iter().copied().chain([to_u32(local)]).collect();
        }
        rle::merge_around(&mut self.shapes, row);
        Ok(())
    }

    /// Removes sample `local`, shifting the later ones down.
    pub fn remove(&mut self, local: usize) -> Result<(), Corruption> {
        let n = self.num_samples();
        if local >= n {
            return Err(Corruption::new(format!(
                "chunk builder: sample {local} out of range ({n} samples)"
            )));
        }
        if self.byte_positions.is_empty() {
            if n != 1 {
                return Err(no_byte_positions(local));
            }
            *self = ChunkBuilder::default();
            return Ok(());
        }
        self.check_contiguous()?;
        let old = byte_range_in(&self.byte_positions, local)?;
        if !self.shapes.is_empty() && rle::find(&self.shapes, local as u64).is_none() {
            return Err(shape_gap(local));
        }
        let row = rle::remove(&mut self.byte_positions, local as u64)
            .ok_or_else(|| no_byte_positions(local))?;
        shift_starts(&mut self.byte_positions[row..], old.len(), 0);
        rle::merge_around(&mut self.byte_positions, row.saturating_sub(1));
        self.data.make_contiguous().drain(old);
        self.data.len = self.data.open.len();
        if let Some(row) = rle::remove(&mut self.shapes, local as u64) {
            rle::merge_around(&mut self.shapes, row.saturating_sub(1));
        }
        Ok(())
    }

    /// A tile chunk: one shape row (the tile shape, last index 0), no byte positions.
    pub fn tile(shape: &[u32], bytes: Vec<u8>) -> Self {
        let row = shape.iter().copied().chain([0]).collect();
        ChunkBuilder {
            shapes: vec![row],
            byte_positions: Vec::new(),
            data: bytes.into(),
        }
    }

    /// Serializes with the given data section (the caller compresses `self.data` first
    /// when the tensor has a chunk compression; else passes `self.data.contiguous()`).
    pub fn encode_with_data(&self, data: &[u8]) -> Vec<u8> {
        encode_parts(WRITER_VERSION, &self.shapes, &self.byte_positions, data)
    }

    /// Only the header; the data section follows it unchanged, so a writer can send
    /// header and data as two parts without copying the data.
    pub fn encode_header(&self) -> Vec<u8> {
        encode_parts(WRITER_VERSION, &self.shapes, &self.byte_positions, &[])
    }

    /// Size of the encoded chunk if written uncompressed.
    pub fn nbytes(&self) -> usize {
        header_len(WRITER_VERSION, &self.shapes, &self.byte_positions) + self.data.len()
    }

    /// Edits move bytes around, so they need the layout 3.x always writes: samples back to
    /// back from byte 0, all inside `data`. Checking this first also keeps every start
    /// within u32 after an edit.
    fn check_contiguous(&self) -> Result<(), Corruption> {
        let mut end = 0u64;
        for (k, r) in self.byte_positions.iter().enumerate() {
            if u64::from(r[1]) != end {
                return Err(Corruption::new(format!(
                    "chunk builder: byte-position row {k} starts at {} instead of {end}",
                    r[1]
                )));
            }
            let len = u64::from(r[0]) * rle::count(&self.byte_positions, k);
            end = end.saturating_add(len);
        }
        if end > self.data.len() as u64 {
            return Err(Corruption::new(format!(
                "chunk builder: byte positions end at {end} but the data section has {}",
                self.data.len()
            )));
        }
        Ok(())
    }

    /// A tile turned into an ordinary one-sample chunk, so that samples can follow it.
    fn ensure_byte_positions(&mut self) {
        if self.byte_positions.is_empty() && self.num_samples() == 1 {
            self.byte_positions.push([to_u32(self.data.len()), 0, 0]);
        }
    }
}

/// Moves the start column of `rows` from an old sample size to a new one.
fn shift_starts(rows: &mut [[u32; 3]], old_len: usize, new_len: usize) {
    for r in rows {
        let start = r[1] as usize - old_len.min(r[1] as usize) + new_len;
        r[1] = to_u32(start);
    }
}

/// Table values are u32; the builder's callers keep chunks far below 4 GiB.
fn to_u32(v: usize) -> u32 {
    debug_assert!(v <= u32::MAX as usize, "chunk table value {v} exceeds u32");
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A chunk's samples share one rank: its shape rows are `rank + 1` wide.
fn check_rank(row: &[u32], shape: &[u32]) -> Result<(), Corruption> {
    if row.len() == shape.len() + 1 {
        return Ok(());
    }
    Err(Corruption::new(format!(
        "chunk builder: sample of rank {} in a chunk of rank {}",
        shape.len(),
        row.len().saturating_sub(1)
    )))
}

fn no_byte_positions(local: usize) -> Corruption {
    Corruption::new(format!(
        "chunk builder: no byte positions for sample {local}"
    ))
}

fn shape_gap(local: usize) -> Corruption {
    Corruption::new(format!(
        "chunk builder: shape table does not cover sample {local}"
    ))
}

#[cfg(test)]
mod tests {

    fn encoded(b: &ChunkBuilder) -> Vec<u8> {
        b.encode_with_data(&b.data.contiguous())
    }

    #[test]
    fn a_run_is_the_same_chunk_as_its_samples_one_by_one() {
        // Runs after samples of another shape, of another size, and of the same kind.
        let prefixes: [&[(&[u32], &[u8])]; 4] = [
            &[],
            &[(&[1], &[9, 9, 9, 9])],
            &[(&[1], &[1, 2])],
            &[(&[2], &[5, 6, 7, 8])],
        ];
        for prefix in prefixes {
            for n in [1usize, 2, 7] {
                let data: Vec<u8> = (0..(n * 4) as u8).collect();
                let mut one = ChunkBuilder::default();
                let mut run = ChunkBuilder::default();
                for (shape, bytes) in prefix {
                    one.push(shape, bytes);
                    run.push(shape, bytes);
                }
                for k in 0..n {
                    one.push(&[1], &data[k * 4..(k + 1) * 4]);
                }
                run.try_push_run(&[1], &data, n).unwrap();
                assert_eq!(encoded(&one), encoded(&run), "prefix {prefix:?}, n {n}");
                assert_eq!(one.num_samples(), run.num_samples());
            }
        }
        let mut b = ChunkBuilder::default();
        b.push(&[1, 1], &[0]);
        let before = encoded(&b);
        assert!(b.try_push_run(&[1], &[1, 2], 2).is_err(), "rank differs");
        assert!(
            b.try_push_run(&[1, 1], &[1, 2, 3], 2).is_err(),
            "unequal samples"
        );
        assert_eq!(encoded(&b), before, "a refused run changes nothing");
    }

    #[test]
    fn header_then_data_is_the_whole_chunk() {
        let mut b = ChunkBuilder::default();
        b.push(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        b.push(&[1, 3], &[7, 8, 9]);
        let mut joined = b.encode_header();
        joined.extend_from_slice(&b.data.contiguous());
        assert_eq!(joined, b.encode_with_data(&b.data.contiguous()));
    }
    use proptest::prelude::*;

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn decode(bytes: &[u8]) -> Result<Chunk, Corruption> {
        Chunk::decode(Bytes::copy_from_slice(bytes))
    }

    // Written by deeplake 3.9.52: class_label tensor, `extend([0, 1, 1])`.
    const LABELS: &str = "06332e392e353201000000020000000100000002000000010000000400000000\
                          00000002000000000000000100000001000000";
    // The same chunk after `labels[1] = 0; labels.append(1)` in the next commit.
    const LABELS_UPDATED: &str = "06332e392e353201000000020000000100000003000000010000000400000000\
                                  0000000300000000000000000000000100000001000000";
    // Tile (0, 0) of a 6x8 uint8 sample cut into 3x4 tiles (tiling_threshold 16).
    const TILE: &str = "06332e392e353201000000030000000300000004000000000000000000000000\
                        01020308090a0b10111213";
    // int32 tensor of length 1 after `t[4] = [7]`: rows 1..=3 padded with empty samples.
    const PADDED: &str = "06332e392e353203000000020000000100000000000000000000000300000001\
                          0000000400000003000000040000000000000000000000000000000400000003\
                          0000000400000004000000040000000100000007000000";
    // polygon tensor: one sample of two polygons (3 and 2 points, 2-D), then `[]`.
    const POLYGONS: &str = "06332e392e353202000000040000000200000003000000020000000000000000\
                            000000000000000000000001000000020000002e000000000000000000000000\
                            0000002e000000010000000200030002000000803f0000004000004040000080\
                            400000a0400000c0400000e040000000410000104100002041";
    // link tensor: three local paths, stored as strings.
    const LINKS: &str = "06332e392e353201000000020000000100000002000000010000000800000000\
                         000000020000002f782f612e6a70672f782f622e6a70672f782f632e6a7067";
    // uint8 tensor with an lz4 chunk compression: the data section is still compressed.
    const LZ4: &str = "06332e392e353201000000020000000400000002000000010000000400000000\
                       000000020000000c000000c0000000000000000000000000";
    // A uint8 tensor of two samples after `pop(0)`.
    const POPPED: &str = "06332e392e353201000000020000000100000000000000010000000100000000\
                          0000000000000002";

    fn all_golden() -> Vec<Vec<u8>> {
        [
            LABELS,
            LABELS_UPDATED,
            TILE,
            PADDED,
            POLYGONS,
            LINKS,
            LZ4,
            POPPED,
        ]
        .iter()
        .map(|h| hex(h))
        .collect()
    }

    fn header_size(c: &Chunk) -> usize {
        header_len(&c.version, &c.shapes, &c.byte_positions)
    }

    #[test]
    fn golden_chunks_decode_and_reencode_byte_for_byte() {
        for bytes in all_golden() {
            let c = decode(&bytes).unwrap();
            assert_eq!(c.version, "3.9.52");
            assert_eq!(c.encode(), bytes);
            assert_eq!(header_size(&c) + c.data.len(), bytes.len());
        }
    }

    #[test]
    fn labels_chunk() {
        let c = decode(&hex(LABELS)).unwrap();
        assert_eq!(c.shapes, vec![vec![1, 2]]);
        assert_eq!(c.byte_positions, vec![[4, 0, 2]]);
        assert_eq!(c.num_samples(), 3);
        for i in 0..3 {
            assert_eq!(c.shape(i).unwrap(), vec![1]);
            assert_eq!(c.byte_range(i).unwrap(), 4 * i..4 * i + 4);
        }
        assert_eq!(&c.sample_data(1).unwrap()[..], &1u32.to_le_bytes());
        assert!(c.shape(3).is_err());
        assert!(c.byte_range(3).is_err());
    }

    #[test]
    fn data_is_a_zero_copy_slice() {
        let bytes = Bytes::from(hex(LABELS));
        let c = Chunk::decode(bytes.clone()).unwrap();
        let header = bytes.len() - 12;
        assert_eq!(c.data.as_ptr(), bytes[header..].as_ptr());
    }

    #[test]
    fn spec_image_chunk_header_is_103_bytes() {
        let shapes = vec![vec![16, 20, 3, 0], vec![20, 20, 3, 1], vec![24, 20, 3, 2]];
        let bps = vec![[985, 0, 0], [1184, 985, 1], [1221, 2169, 2]];
        let data = vec![0xab; 985 + 1184 + 1221];
        let b = ChunkBuilder::from_parts(shapes.clone(), bps.clone(), data.clone());
        let enc = b.encode_with_data(&data);
        // 1 + vlen + 8 + 4 * rows * cols + 4 + 12 * bp_rows
        assert_eq!(enc.len() - data.len(), 1 + 6 + 8 + 4 * 3 * 4 + 4 + 12 * 3);
        assert_eq!(enc.len() - data.len(), 103);
        assert_eq!(b.nbytes(), enc.len());
        assert_eq!(&enc[7..15], &[3, 0, 0, 0, 4, 0, 0, 0]);
        let c = decode(&enc).unwrap();
        assert_eq!((c.shapes.clone(), c.byte_positions.clone()), (shapes, bps));
        assert_eq!(c.shape(1).unwrap(), vec![20, 20, 3]);
        assert_eq!(c.byte_range(0).unwrap(), 0..985);
        assert_eq!(c.byte_range(1).unwrap(), 985..2169);
        assert_eq!(c.byte_range(2).unwrap(), 2169..3390);
    }

    #[test]
    fn builder_reproduces_deeplake_chunks() {
        let mut labels = ChunkBuilder::default();
        for v in [0u32, 1, 1] {
            labels.push(&[1], &v.to_le_bytes());
        }
        assert_eq!(
            labels.encode_with_data(&labels.data.contiguous()),
            hex(LABELS)
        );

        labels.replace(1, &[1], &0u32.to_le_bytes()).unwrap();
        labels.push(&[1], &1u32.to_le_bytes());
        assert_eq!(
            labels.encode_with_data(&labels.data.contiguous()),
            hex(LABELS_UPDATED)
        );

        let mut padded = ChunkBuilder::default();
        padded.push(&[1], &1i32.to_le_bytes());
        for _ in 0..3 {
            padded.push(&[0], &[]);
        }
        padded.push(&[1], &7i32.to_le_bytes());
        assert_eq!(
            padded.encode_with_data(&padded.data.contiguous()),
            hex(PADDED)
        );

        let mut popped = ChunkBuilder::default();
        popped.push(&[1], &[1]);
        popped.push(&[1], &[2]);
        popped.remove(0).unwrap();
        assert_eq!(
            popped.encode_with_data(&popped.data.contiguous()),
            hex(POPPED)
        );

        let tile = ChunkBuilder::tile(&[3, 4], vec![0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]);
        assert_eq!(tile.encode_with_data(&tile.data.contiguous()), hex(TILE));
        assert_eq!(tile.nbytes(), hex(TILE).len());
    }

    #[test]
    fn polygon_and_link_chunks() {
        let c = decode(&hex(POLYGONS)).unwrap();
        assert_eq!(c.num_samples(), 2);
        assert_eq!(c.shape(0).unwrap(), vec![2, 3, 2]);
        assert_eq!(c.shape(1).unwrap(), vec![0, 0, 0]);
        assert_eq!(c.byte_range(0).unwrap(), 0..46);
        assert_eq!(c.byte_range(1).unwrap(), 46..46);

        let c = decode(&hex(LINKS)).unwrap();
        let paths: Vec<_> = (0..3).map(|i| c.sample_data(i).unwrap()).collect();
        assert_eq!(paths, vec![&b"/x/a.jpg"[..], b"/x/b.jpg", b"/x/c.jpg"]);
    }

    #[test]
    fn compressed_data_is_kept_as_stored() {
        let c = decode(&hex(LZ4)).unwrap();
        assert_eq!(c.shapes, vec![vec![4, 2]]);
        assert_eq!(c.byte_positions, vec![[4, 0, 2]]);
        // 4-byte uncompressed size (12), then the LZ4 block.
        assert_eq!(&c.data[..4], &12u32.to_le_bytes());
        assert_eq!(c.byte_range(2).unwrap(), 8..12);
    }

    #[test]
    fn tile_chunk() {
        let c = decode(&hex(TILE)).unwrap();
        assert!(c.is_tile());
        assert_eq!(c.num_samples(), 1);
        assert_eq!(c.shape(0).unwrap(), vec![3, 4]);
        assert_eq!(c.byte_range(0).unwrap(), 0..12);
        assert!(c.byte_range(1).is_err());
        assert!(c.shape(1).is_err());

        let mut b = ChunkBuilder::tile(&[3, 4], vec![1; 12]);
        b.replace(0, &[2, 2], &[5; 4]).unwrap();
        assert_eq!(
            (b.shapes.clone(), b.data.contiguous().to_vec()),
            (vec![vec![2, 2, 0]], vec![5; 4])
        );
        b.push(&[1, 1], &[9]);
        assert_eq!(b.byte_positions, vec![[4, 0, 0], [1, 4, 1]]);
        assert_eq!(b.shapes, vec![vec![2, 2, 0], vec![1, 1, 1]]);
        let mut t = ChunkBuilder::tile(&[3], vec![1, 2, 3]);
        t.remove(0).unwrap();
        assert_eq!(t, ChunkBuilder::default());
    }

    #[test]
    fn image_canvas_chunk_has_no_byte_ranges() {
        // Image chunk compression: shapes only; samples are cut out of one canvas.
        let b = ChunkBuilder::from_parts(vec![vec![2, 2, 3, 0], vec![4, 2, 3, 1]], vec![], vec![]);
        let c = decode(&b.encode_with_data(&[1, 2, 3])).unwrap();
        assert_eq!(c.num_samples(), 2);
        assert!(!c.is_tile());
        assert_eq!(c.shape(1).unwrap(), vec![4, 2, 3]);
        assert!(c.byte_range(0).is_err());
        let mut b = b;
        assert!(b.replace(0, &[1, 1, 3], &[0; 3]).is_err());
        assert!(b.remove(0).is_err());
        assert!(b.try_push(&[1, 1, 3], &[0; 3]).is_err());
        assert_eq!(b.num_samples(), 2);
    }

    #[test]
    fn legacy_chunk_without_shapes() {
        let b = ChunkBuilder::from_parts(vec![], vec![[2, 0, 1], [3, 4, 2]], vec![7; 7]);
        let enc = b.encode_with_data(&b.data.contiguous());
        assert_eq!(&enc[7..15], &[0; 8]);
        let c = decode(&enc).unwrap();
        assert_eq!(c.num_samples(), 3);
        assert!(c.shape(0).is_err());
        assert_eq!(c.byte_range(1).unwrap(), 2..4);
        assert_eq!(c.byte_range(2).unwrap(), 4..7);

        // Writing into it gives the old samples the zero shape 3.x reads for them.
        let mut pushed = b.clone();
        pushed.push(&[5], &[1; 5]);
        assert_eq!(pushed.shapes, vec![vec![0, 2], vec![5, 3]]);
        assert_eq!(pushed.byte_positions, vec![[2, 0, 1], [3, 4, 2], [5, 7, 3]]);

        let mut replaced = b.clone();
        replaced.replace(1, &[2], &[9; 2]).unwrap();
        assert_eq!(replaced.shapes, vec![vec![0, 0], vec![2, 1], vec![0, 2]]);
        assert_eq!(replaced.data, vec![7, 7, 9, 9, 7, 7, 7]);

        let mut removed = b;
        removed.remove(0).unwrap();
        assert!(removed.shapes.is_empty());
        assert_eq!(removed.byte_positions, vec![[2, 0, 0], [3, 2, 1]]);
        assert_eq!(removed.data, vec![7; 5]);
    }

    #[test]
    fn empty_tables_and_scalar_samples() {
        let empty = ChunkBuilder::default();
        let c = decode(&empty.encode_with_data(&[])).unwrap();
        assert_eq!(c.num_samples(), 0);
        assert_eq!(empty.nbytes(), 1 + 6 + 8 + 4);

        // Shape `()` samples: one-column shape rows holding only the last index.
        let mut b = ChunkBuilder::default();
        b.push(&[], &[1]);
        b.push(&[], &[2]);
        assert_eq!(b.shapes, vec![vec![1]]);
        let c = decode(&b.encode_with_data(&b.data.contiguous())).unwrap();
        assert_eq!(c.shape(1).unwrap(), Vec::<u32>::new());

        // Rank mismatches are refused and leave the builder as it was.
        let before = b.clone();
        assert!(b.try_push(&[1], &[3]).is_err());
        assert!(b.replace(0, &[1], &[3]).is_err());
        assert_eq!(b, before);
    }

    #[test]
    fn header_truncations_are_errors() {
        for bytes in all_golden() {
            let c = decode(&bytes).unwrap();
            let header = header_size(&c);
            for cut in 0..header {
                assert!(
                    decode(&bytes[..cut]).is_err(),
                    "cut at {cut} of {}",
                    bytes.len()
                );
            }
            // The data section is not length-prefixed: a shorter one still parses, but
            // the byte positions then point past it.
            let data_end = header + rle::sized_end(&c.byte_positions) as usize;
            for cut in header..data_end.min(bytes.len()) {
                let short = decode(&bytes[..cut]).unwrap();
                assert!((0..short.num_samples()).any(|i| short.sample_data(i).is_err()));
            }
        }
    }

    #[test]
    fn hostile_headers_are_errors_without_allocating() {
        let mut huge_shapes = vec![6];
        huge_shapes.extend_from_slice(b"3.9.52");
        huge_shapes.extend_from_slice(&i32::MAX.to_le_bytes());
        huge_shapes.extend_from_slice(&i32::MAX.to_le_bytes());
        assert!(decode(&huge_shapes).is_err());

        let mut no_cols = huge_shapes[..11].to_vec();
        no_cols.extend_from_slice(&0i32.to_le_bytes());
        no_cols.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&no_cols).is_err(), "u32::MAX byte-position rows");

        let mut negative = huge_shapes[..7].to_vec();
        negative.extend_from_slice(&(-1i32).to_le_bytes());
        negative.extend_from_slice(&1i32.to_le_bytes());
        negative.extend_from_slice(&[0; 8]);
        assert!(decode(&negative).is_err());

        let backwards =
            ChunkBuilder::from_parts(vec![vec![1, 3], vec![2, 1]], vec![[1, 0, 3]], vec![0; 4]);
        assert!(decode(&backwards.encode_with_data(&backwards.data.contiguous())).is_err());
        let backwards = ChunkBuilder::from_parts(vec![], vec![[1, 0, 3], [1, 4, 2]], vec![]);
        assert!(decode(&backwards.encode_with_data(&[])).is_err());
        assert!(decode(b"\x03a\xffb").is_err(), "non-ASCII version");
    }

    #[test]
    fn edits_refuse_non_contiguous_byte_positions() {
        // Found by the fuzzer: starts that do not follow from the sizes made a replace
        // shift a start past u32.
        let c = decode(&hex("06332e392e353201000000000000000200000000000000000000000000ffffff\
                             ffffffffffffffffffffffffffffff00000000000000000000000000000000000013d0000000000000043100000000000000")).unwrap();
        exercise(&c);
        let mut b = ChunkBuilder::from_parts(vec![], vec![[1, 0, 0], [1, 5, 1]], vec![0; 6]);
        assert!(b.replace(0, &[1], &[1, 2]).is_err());
        assert!(b.remove(1).is_err());
        // Also found by the fuzzer: one row covering all 2^32 samples (last index u32::MAX)
        // once counted as 0 samples, so its bytes looked contiguous.
        let c = decode(&hex("0000000000000000010100000000000010000000\
                             00ffffffffff0000006500"))
        .unwrap();
        assert_eq!(c.num_samples(), 1 << 32);
        exercise(&c);
        let mut full =
            ChunkBuilder::from_parts(vec![vec![1, u32::MAX]], vec![[0, 0, u32::MAX]], vec![]);
        assert!(full.try_push(&[1], &[]).is_err());
        assert!(full.remove(5).is_ok());
        assert_eq!(full.num_samples(), u32::MAX as usize);
        let mut short = ChunkBuilder::from_parts(vec![], vec![[4, 0, 1]], vec![0; 7]);
        assert!(short.replace(0, &[1], &[1]).is_err());
        assert_eq!(short.data, vec![0; 7]);
    }

    /// Every lookup of a decoded chunk, and a re-encode round trip.
    fn exercise(c: &Chunk) {
        for i in 0..c.num_samples().min(4096) + 2 {
            let _ = (c.shape(i), c.byte_range(i), c.sample_data(i));
        }
        let again = decode(&c.encode()).unwrap();
        assert_eq!(&again, c);
        let mut b =
            ChunkBuilder::from_parts(c.shapes.clone(), c.byte_positions.clone(), c.data.to_vec());
        let n = b.num_samples();
        let _ = b.clone().remove(n / 2);
        let rank = b.shapes.first().map_or(1, |r| r.len().saturating_sub(1));
        let _ = b.replace(n / 2, &vec![1; rank], &[1, 2]);
        let _ = b.try_push(&vec![3; rank], &[4]);
        let _ = b.encode_with_data(&b.data.contiguous());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(Vec<u32>, Vec<u8>),
        PushShared(Vec<u32>, Vec<u8>),
        Replace(usize, Vec<u32>, Vec<u8>),
        Remove(usize),
    }

    fn sample(ndim: usize) -> impl Strategy<Value = (Vec<u32>, Vec<u8>)> {
        // Few distinct shapes and sizes, so that runs form and split.
        let shape = prop::collection::vec(0u32..3, ndim);
        let bytes = prop_oneof![Just(0usize), Just(1), Just(4), 0usize..9]
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n));
        (shape, bytes)
    }

    fn ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
        (0usize..4).prop_flat_map(|ndim| {
            let op = prop_oneof![
                3 => sample(ndim).prop_map(|(s, b)| Op::Push(s, b)),
                1 => (
                    prop::collection::vec(0u32..3, ndim),
                    prop_oneof![Just(1usize), Just(SHARE_MIN - 1), Just(SHARE_MIN), Just(SHARE_MIN + 7)],
                    any::<u8>(),
                )
                    .prop_map(|(s, n, v)| Op::PushShared(s, vec![v; n])),
                2 => (any::<usize>(), sample(ndim)).prop_map(|(i, (s, b))| Op::Replace(i, s, b)),
                1 => any::<usize>().prop_map(Op::Remove),
            ];
            (Just(ndim), prop::collection::vec(op, 0..40))
        })
    }

    /// Checks a builder against the naive model: same samples, canonical tables.
    fn check_against(b: &ChunkBuilder, model: &[(Vec<u32>, Vec<u8>)]) {
        assert_eq!(b.num_samples(), model.len());
        let enc = b.encode_with_data(&b.data.contiguous());
        assert_eq!(enc.len(), b.nbytes());
        // What a writer sends: the header, then the data section piece by piece.
        let mut parts = b.encode_header();
        b.data.segments().for_each(|s| parts.extend_from_slice(s));
        assert_eq!(parts, enc);
        let c = decode(&enc).unwrap();
        for (i, (shape, bytes)) in model.iter().enumerate() {
            assert_eq!(&c.shape(i).unwrap(), shape, "shape of {i}");
            assert_eq!(&c.sample_data(i).unwrap()[..], &bytes[..], "bytes of {i}");
        }
        assert!(c.shape(model.len()).is_err());
        assert!(c.byte_range(model.len()).is_err());
        // Compact: neighbouring rows never continue each other; bytes are contiguous.
        for w in b.shapes.windows(2) {
            assert_ne!(w[0][..w[0].len() - 1], w[1][..w[1].len() - 1]);
        }
        let mut end = 0;
        for (k, r) in b.byte_positions.iter().enumerate() {
            assert_eq!(r[1] as usize, end);
            end += r[0] as usize * rle::count(&b.byte_positions, k) as usize;
            if let Some(next) = b.byte_positions.get(k + 1) {
                assert_ne!(r[0], next[0]);
            }
        }
        assert_eq!(end, b.data.len());
    }

    proptest! {
        #[test]
        fn builder_matches_reference_model((_, ops) in ops()) {
            let mut b = ChunkBuilder::default();
            let mut model: Vec<(Vec<u32>, Vec<u8>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(s, bytes) => {
                        b.push(&s, &bytes);
                        model.push((s, bytes));
                    }
                    Op::PushShared(s, bytes) => {
                        b.try_push_shared(&s, Bytes::from(bytes.clone())).unwrap();
                        model.push((s, bytes));
                    }
                    Op::Replace(i, s, bytes) => {
                        if model.is_empty() {
                            prop_assert!(b.replace(i, &s, &bytes).is_err());
                        } else {
                            let i = i % model.len();
                            b.replace(i, &s, &bytes).unwrap();
                            model[i] = (s, bytes);
                        }
                    }
                    Op::Remove(i) => {
                        if model.is_empty() {
                            prop_assert!(b.remove(i).is_err());
                        } else {
                            let i = i % model.len();
                            b.remove(i).unwrap();
                            model.remove(i);
                        }
                    }
                }
                check_against(&b, &model);
            }
        }

        #[test]
        fn encode_decode_round_trip(samples in (0usize..4).prop_flat_map(|d| prop::collection::vec(sample(d), 0..30))) {
            let mut b = ChunkBuilder::default();
            for (s, bytes) in &samples {
                b.push(s, bytes);
            }
            check_against(&b, &samples);
            let c = decode(&b.encode_with_data(&b.data.contiguous())).unwrap();
            prop_assert_eq!(&c.shapes, &b.shapes);
            prop_assert_eq!(&c.byte_positions, &b.byte_positions);
            prop_assert_eq!(&c.data[..], &b.data.contiguous()[..]);
            prop_assert_eq!(c.encode(), b.encode_with_data(&b.data.contiguous()));
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(c) = decode(&bytes) {
                exercise(&c);
            }
        }

        #[test]
        fn mutated_chunks_never_panic(
            which in 0usize..8,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = all_golden().swap_remove(which);
            for (at, v) in edits {
                let k = at.index(bytes.len());
                bytes[k] = v;
            }
            let cut = cut.index(bytes.len() + 1);
            if let Ok(c) = decode(&bytes[..cut]) {
                exercise(&c);
            }
        }
    }
}
