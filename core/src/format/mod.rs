//! The Deep Lake 3.x Tensor Storage Format: bytes <-> structs, no IO.
//!
//! Every decoder takes untrusted bytes and returns [`Corruption`] on anything malformed;
//! none panics and none allocates more than the input could justify (lengths read from a
//! header are checked against the bytes that remain before anything is reserved).
//! The store layer attaches the object key to a `Corruption`.
//!
//! Byte order is little-endian everywhere except `commit_diff` and `dataset_diff`
//! (big-endian). Most binary objects begin with a version prefix: `u8 n`, then `n` ASCII
//! bytes of the writer's library version; we always write [`WRITER_VERSION`].

pub mod array;
pub mod chunk;
pub mod compression;
pub mod diff;
pub mod dtype;
pub mod encoders;
pub mod htype;
pub mod json;
pub mod linked_creds;
pub mod meta;
pub mod polygon;
pub mod vcinfo;

use crate::error::Corruption;

/// Version string put in every object we write. 3.x readers parse it as dotted
/// integers, so it must look like a 3.x release.
pub const WRITER_VERSION: &str = "3.9.52";

/// Default `max_chunk_size` (bytes) and tiling threshold of 3.x.
pub const DEFAULT_MAX_CHUNK_SIZE: usize = 16_000_000;
pub const DEFAULT_TILING_THRESHOLD: usize = 16_000_000;
/// `max_chunk_size` of the hidden `_shape` / `_info` tensors.
pub const COMPANION_MAX_CHUNK_SIZE: usize = 4_000_000;

/// Bounds-checked little/big-endian reader over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn err(&self, need: usize) -> Corruption {
        Corruption::new(format!(
            "{}: truncated at byte {} (needed {} more bytes, {} left)",
            self.what,
            self.pos,
            need,
            self.remaining()
        ))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        if n > self.remaining() {
            return Err(self.err(n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corruption> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u32_le(&mut self) -> Result<u32, Corruption> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32_le(&mut self) -> Result<i32, Corruption> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64_le(&mut self) -> Result<u64, Corruption> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn u64_be(&mut self) -> Result<u64, Corruption> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn u16_le(&mut self) -> Result<u16, Corruption> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Checks that `count` items of `item_size` bytes can still be read, before any
    /// allocation sized by `count` (a hostile header cannot make us reserve gigabytes).
    pub fn check_count(&self, count: u64, item_size: usize) -> Result<usize, Corruption> {
        let need = (count as u128) * (item_size as u128);
        if need > self.remaining() as u128 {
            return Err(Corruption::new(format!(
                "{}: header claims {count} items of {item_size} bytes but only {} bytes remain",
                self.what,
                self.remaining()
            )));
        }
        Ok(count as usize)
    }

    /// Reads the `u8 n` + ASCII version prefix.
    pub fn version(&mut self) -> Result<String, Corruption> {
        let n = self.u8()? as usize;
        let s = self.bytes(n)?;
        if !s.iter().all(|b| b.is_ascii_graphic()) {
            return Err(Corruption::new(format!(
                "{}: version prefix is not ASCII",
                self.what
            )));
        }
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    pub fn finish(&self) -> Result<(), Corruption> {
        if self.remaining() != 0 {
            return Err(Corruption::new(format!(
                "{}: {} trailing bytes after the last field",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Appends the version prefix.
pub fn write_version(out: &mut Vec<u8>, version: &str) {
    out.push(version.len() as u8);
    out.extend_from_slice(version.as_bytes());
}
