//! Sample and chunk compression.
//!
//! * Chunk compression `lz4`: the whole data section is one LZ4 block with a 4-byte LE
//!   uncompressed-size prefix (python-lz4's default framing); an LZ4 frame (magic
//!   `04 22 4D 18`) is accepted on read. Empty input compresses to empty output, and
//!   empty input or the 5-byte `00 00 00 00 00` block decompress to nothing (3.x
//!   `compress_bytes` / `decompress_bytes`).
//! * Sample compression: each sample is an independent blob. Image files given as bytes
//!   in the tensor's codec are stored verbatim; raw arrays are encoded on append; an
//!   array with a zero-sized dimension is stored as zero bytes whatever the codec.
//!   jpeg and png decode here; other codecs' bytes pass through untouched.
//!
//! Decoded pixels follow what 3.9.52 returns (it decodes with Pillow), observed by
//! writing samples with 3.9.52 and reading `t[i].numpy()` back:
//!
//! | file | 3.9.52 array |
//! |---|---|
//! | grayscale jpeg | `(H, W, 1)` uint8 |
//! | YCbCr / RGB jpeg | `(H, W, 3)` |
//! | CMYK / YCCK jpeg | `(H, W, 4)`, Pillow's inverted-CMYK convention |
//! | png gray 1-bit | `(H, W, 1)`, values 0/1 |
//! | png gray 2/4/8-bit | `(H, W, 1)`, scaled to 0..=255 |
//! | png gray 16-bit | `(H, W, 1)` uint16 values (cast to the tensor dtype, wrapping) |
//! | png palette | `(H, W, 1)` palette **indices** (not colours) |
//! | png gray+alpha 8-bit / 16-bit | `(H, W, 2)` / `(H, W, 4)` RGBA, high bytes |
//! | png RGB / RGBA (8 or 16-bit) | `(H, W, 3)` / `(H, W, 4)`, high bytes |
//!
//! Decoded values are cast to the tensor's dtype the way numpy's `astype` does for
//! integers (wrapping), so a 16-bit png in a uint8 tensor reads as `v % 256`, as in 3.x.
//!
//! Image decoders refuse images of more than [`MAX_IMAGE_PIXELS`] pixels before
//! allocating the output, so a small hostile header cannot reserve gigabytes.

use std::io::{Cursor, Read};

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::array::NdArray;
use super::dtype::Dtype;
use crate::error::{Corruption, Error};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    Lz4,
    Jpeg,
    Png,
    /// Any other codec name 3.x knows (bmp, tiff, webp, mp4, wav, las, ply, dcm, nii, ...);
    /// stored and returned as bytes, never decoded here.
    Other(String),
}

/// Every codec name 3.9.52 accepts (`deeplake.compressions` with Pillow 10.4).
const KNOWN: [&str; 33] = [
    "avi", "bmp", "dcm", "dib", "eps", "flac", "fli", "gif", "ico", "im", "jpeg", "jpeg2000",
    "las", "lz4", "mkv", "mp3", "mp4", "mpo", "msp", "nii", "nii.gz", "pcx", "ply", "png", "ppm",
    "sgi", "stl", "tga", "tiff", "wav", "webp", "wmf", "xbm",
];

/// Codecs 3.x classifies as image compressions (`get_compression_type(c) == "image"`).
/// `dcm` is one, although the `image` htype refuses it.
const IMAGE: [&str; 21] = [
    "bmp", "dcm", "dib", "eps", "fli", "gif", "ico", "im", "jpeg", "jpeg2000", "mpo", "msp", "pcx",
    "png", "ppm", "sgi", "tga", "tiff", "webp", "wmf", "xbm",
];

/// Pillow's `DecompressionBombError` threshold (2 × `Image.MAX_IMAGE_PIXELS`): anything
/// 3.x can decode, we decode; anything larger is refused before allocation.
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// JPEG quality for arrays encoded on append: Pillow's default, which 3.x uses, so both
/// writers give arrays the same fidelity. Image files are stored verbatim, never re-encoded.
pub const JPEG_QUALITY: u8 = 75;

impl Compression {
    /// Parses a 3.x compression name (`None` for `"none"`/empty). Aliases: jpg, tif, jp2.
    /// Names are matched case-insensitively; [`Compression::name`] gives the canonical one.
    pub fn parse(name: &str) -> Result<Option<Compression>, Error> {
        let lower = name.trim().to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "" | "none" => return Ok(None),
            "jpg" => "jpeg",
            "tif" => "tiff",
            "jp2" => "jpeg2000",
            other => other,
        };
        Ok(Some(match canonical {
            "lz4" => Compression::Lz4,
            "jpeg" => Compression::Jpeg,
            "png" => Compression::Png,
            other if KNOWN.contains(&other) => Compression::Other(other.to_owned()),
            _ => {
                return Err(Error::invalid(format!(
                    "unknown compression {name:?}; 3.x knows {} (and none)",
                    KNOWN.join(", ")
                )));
            }
        }))
    }

    pub fn name(&self) -> &str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Jpeg => "jpeg",
            Compression::Png => "png",
            Compression::Other(name) => name,
        }
    }

    /// An image codec (jpeg, png, bmp, gif, tiff, webp, ...), as 3.x classifies codecs
    /// (which includes `dcm`).
    pub fn is_image(&self) -> bool {
        match self {
            Compression::Jpeg | Compression::Png => true,
            Compression::Lz4 => false,
            Compression::Other(name) => IMAGE.contains(&name.as_str()),
        }
    }

    /// Sniffs the codec of file bytes from their magic number.
    pub fn sniff(bytes: &[u8]) -> Option<Compression> {
        let at =
            |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
        let other = |name: &str| Some(Compression::Other(name.to_owned()));
        if at(0, &[0xff, 0xd8, 0xff]) {
            return Some(Compression::Jpeg);
        }
        if at(0, b"\x89PNG\r\n\x1a\n") {
            return Some(Compression::Png);
        }
        if at(0, &[0x04, 0x22, 0x4d, 0x18]) {
            return Some(Compression::Lz4);
        }
        if at(0, b"RIFF") {
            return match bytes.get(8..12) {
                Some(b"WEBP") => other("webp"),
                Some(b"WAVE") => other("wav"),
                Some(b"AVI ") => other("avi"),
                _ => None,
            };
        }
        if at(4, b"ftyp") {
            return other("mp4");
        }
        let simple: [(usize, &[u8], &str); 16] = [
            (0, b"GIF87a", "gif"),
            (0, b"GIF89a", "gif"),
            (0, b"BM", "bmp"),
            (0, b"II*\0", "tiff"),
            (0, b"MM\0*", "tiff"),
            (0, b"\0\0\0\x0cjP  \r\n\x87\n", "jpeg2000"),
            (0, &[0xff, 0x4f, 0xff, 0x51], "jpeg2000"),
            (0, &[0x1a, 0x45, 0xdf, 0xa3], "mkv"),
            (0, b"ID3", "mp3"),
            (0, b"fLaC", "flac"),
            (128, b"DICM", "dcm"),
            (344, b"n+1\0", "nii"),
            (344, b"ni1\0", "nii"),
            (0, b"LASF", "las"),
            (0, b"ply\n", "ply"),
            (0, b"ply\r\n", "ply"),
        ];
        if let Some((_, _, name)) = simple.iter().find(|(offset, magic, _)| at(*offset, magic)) {
            return other(name);
        }
        if let [0xff, b, ..] = bytes
            && matches!(b, 0xfb | 0xf3 | 0xf2)
        {
            return other("mp3");
        }
        if at(0, &[0, 0, 1, 0]) {
            return other("ico");
        }
        if let [b'P', b'1'..=b'6', ws, ..] = bytes
            && ws.is_ascii_whitespace()
        {
            return other("ppm");
        }
        None
    }

    /// Whether this build can decode samples of this codec into arrays.
    pub fn can_decode(&self) -> bool {
        matches!(
            self,
            Compression::Lz4 | Compression::Jpeg | Compression::Png
        )
    }
}

/// The dtype 3.x records for a tensor whose first sample is this blob: the pixel type
/// of a DICOM or NIfTI file, `object` for a mesh, `uint8` for images; `None` when the
/// header does not say (the htype's default then applies).
pub fn blob_dtype(bytes: &[u8], compression: &Compression) -> Option<&'static str> {
    match compression.name() {
        "nii" | "nii.gz" => nifti_dtype(bytes),
        "dcm" => dicom_dtype(bytes),
        "ply" | "stl" => Some("object"),
        _ if compression.is_image() => Some("uint8"),
        _ => None,
    }
}

fn nifti_dtype(b: &[u8]) -> Option<&'static str> {
    let le = |o: usize| {
        b.get(o..o + 4)
            .map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let be = |o: usize| {
        b.get(o..o + 4)
            .map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    };
    // sizeof_hdr tells the version (348: NIfTI-1, 540: NIfTI-2) and the byte order.
    let (code_at, little) = match (le(0), be(0)) {
        (Some(348), _) => (70, true),
        (_, Some(348)) => (70, false),
        (Some(540), _) => (12, true),
        (_, Some(540)) => (12, false),
        _ => return None,
    };
    let c = b.get(code_at..code_at + 2)?;
    let code = if little {
        i16::from_le_bytes([c[0], c[1]])
    } else {
        i16::from_be_bytes([c[0], c[1]])
    };
    Some(match code {
        2 => "uint8",
        4 => "int16",
        8 => "int32",
        16 => "float32",
        64 => "float64",
        256 => "int8",
        512 => "uint16",
        768 => "uint32",
        1024 => "int64",
        1280 => "uint64",
        _ => return None,
    })
}

/// Reads BitsAllocated (0028,0100) and PixelRepresentation (0028,0103) from a DICOM
/// file in explicit- or implicit-VR little endian.
fn dicom_dtype(b: &[u8]) -> Option<&'static str> {
    if b.get(128..132) != Some(b"DICM") {
        return None;
    }
    let u16_at = |o: usize| b.get(o..o + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let mut i = 132;
    let mut implicit = false;
    let (mut bits, mut signed) = (None, None);
    while i + 8 <= b.len() {
        let (group, elem) = (u16_at(i)?, u16_at(i + 2)?);
        if (group, elem) == (0x7FE0, 0x0010) {
            break;
        }
        // The file meta group is always explicit VR; its transfer syntax decides the rest.
        let explicit = group == 0x0002 || !implicit;
        let vr = b.get(i + 4..i + 6)?;
        let (len, head) = if explicit && vr.iter().all(u8::is_ascii_uppercase) {
            if matches!(
                vr,
                b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"OD" | b"OL" | b"UC" | b"UR"
            ) {
                (u32_at(i + 8)?, 12)
            } else {
                (u32::from(u16_at(i + 6)?), 8)
            }
        } else {
            (u32_at(i + 4)?, 8)
        };
        if len == u32::MAX {
            return None; // undefined-length sequences: give up rather than guess
        }
        let value = b.get(i + head..i + head + len as usize)?;
        match (group, elem) {
            (0x0002, 0x0010) => {
                let ts = String::from_utf8_lossy(value);
                implicit = ts.trim_end_matches(['\0', ' ']) == "1.2.840.10008.1.2";
            }
            (0x0028, 0x0100) => bits = u16_at(i + head),
            (0x0028, 0x0103) => signed = u16_at(i + head).map(|v| v == 1),
            _ => {}
        }
        if let (Some(bits), Some(signed)) = (bits, signed) {
            return Some(match (bits, signed) {
                (8, false) => "uint8",
                (8, true) => "int8",
                (16, false) => "uint16",
                (16, true) => "int16",
                (32, false) => "uint32",
                (32, true) => "int32",
                _ => return None,
            });
        }
        i += head + len as usize;
    }
    None
}

/// LZ4 block with a 4-byte LE size prefix.
pub fn lz4_compress(data: &[u8]) -> Vec<u8> {
    if data.is_empty() {
        return Vec::new();
    }
    lz4_flex::block::compress_prepend_size(data)
}

const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// An LZ4 sequence turns one input byte into at most 255 output bytes (a run of `0xff`
/// match-length bytes), so no valid block claims more than this.
fn lz4_max_output(compressed_len: usize) -> usize {
    compressed_len.saturating_mul(255).saturating_add(64)
}

/// Inverse of [`lz4_compress`]; also accepts an LZ4 frame. Refuses to produce more than
/// `max_size` bytes (a hostile size prefix cannot allocate unbounded memory).
pub fn lz4_decompress(data: &[u8], max_size: usize) -> Result<Vec<u8>, Corruption> {
    if data.is_empty() || data == [0u8; 5] {
        return Ok(Vec::new());
    }
    if data.starts_with(&LZ4_FRAME_MAGIC) {
        return lz4_decompress_frame(data, max_size);
    }
    let [a, b, c, d, block @ ..] = data else {
        return Err(Corruption::new(format!(
            "lz4 block: {} bytes, too short for the size prefix",
            data.len()
        )));
    };
    let size = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
    if size > max_size {
        return Err(Corruption::new(format!(
            "lz4 block: size prefix {size} exceeds the limit of {max_size} bytes"
        )));
    }
    if size > lz4_max_output(block.len()) {
        return Err(Corruption::new(format!(
            "lz4 block: size prefix {size} is impossible for {} compressed bytes",
            block.len()
        )));
    }
    let mut out = vec![0u8; size];
    let written = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| Corruption::new(format!("lz4 block: {e}")))?;
    if written != size {
        return Err(Corruption::new(format!(
            "lz4 block: decoded {written} bytes, size prefix says {size}"
        )));
    }
    Ok(out)
}

fn lz4_decompress_frame(data: &[u8], max_size: usize) -> Result<Vec<u8>, Corruption> {
    let limit = (max_size as u64).saturating_add(1);
    let mut out = Vec::new();
    lz4_flex::frame::FrameDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Corruption::new(format!("lz4 frame: {e}")))?;
    if out.len() > max_size {
        return Err(Corruption::new(format!(
            "lz4 frame: decodes to more than the limit of {max_size} bytes"
        )));
    }
    Ok(out)
}

/// The shape of an encoded image, from its header only: `(H, W, C)` for colour,
/// `(H, W, 1)` for grayscale jpeg/png. Channel counts follow the table in the module
/// doc, so the shape always equals that of [`decode_sample`]'s result.
pub fn image_shape(bytes: &[u8], compression: &Compression) -> Result<Vec<usize>, Error> {
    match compression {
        Compression::Jpeg => {
            let header =
                jpeg_frame_scan(bytes).map_err(|e| Error::invalid(format!("jpeg header: {e}")))?;
            Ok(vec![header.height, header.width, header.channels])
        }
        Compression::Png => {
            let header =
                png_header(bytes).map_err(|e| Error::invalid(format!("png header: {e}")))?;
            Ok(vec![header.height, header.width, header.channels])
        }
        other => Err(Error::unsupported(format!(
            "reading the shape of {} samples is not supported",
            other.name()
        ))),
    }
}

/// Decodes one sample-compressed blob to an array of `dtype`. For images the shape comes
/// from the codec; for lz4 the caller's `shape` is used. A `shape` with a zero-sized
/// dimension yields an empty array of that shape (3.x stores such samples as no bytes).
/// Undecodable bytes are `Error::Corrupt`; codecs this build cannot decode are
/// `Error::Unsupported`. Errors name the codec.
pub fn decode_sample(
    bytes: &[u8],
    compression: &Compression,
    dtype: Dtype,
    shape: &[usize],
) -> Result<NdArray, Error> {
    if shape.contains(&0) {
        return NdArray::new(dtype, shape.to_vec(), Vec::new());
    }
    let corrupt = |reason: String| Error::corrupt(format!("{} sample", compression.name()), reason);
    match compression {
        Compression::Lz4 => {
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
                .ok_or_else(|| corrupt(format!("shape {shape:?} overflows")))?;
            let data = lz4_decompress(bytes, expected).map_err(|e| corrupt(e.0))?;
            if data.len() != expected {
                return Err(corrupt(format!(
                    "decoded {} bytes, shape {shape:?} of {dtype} needs {expected}",
                    data.len()
                )));
            }
            NdArray::new(dtype, shape.to_vec(), data)
        }
        Compression::Jpeg => {
            let (pixels, shape) = decode_jpeg(bytes).map_err(corrupt)?;
            Ok(NdArray {
                dtype,
                shape,
                data: cast_samples(Samples::U8(pixels), dtype).into(),
            })
        }
        Compression::Png => {
            let (pixels, shape) = decode_png(bytes).map_err(corrupt)?;
            Ok(NdArray {
                dtype,
                shape,
                data: cast_samples(pixels, dtype).into(),
            })
        }
        Compression::Other(name) => Err(Error::unsupported(format!(
            "decoding {name} samples is not supported"
        ))),
    }
}

/// Decodes a stored sample straight into `out`, which holds exactly its `shape` of
/// `dtype` (a batch buffer's slot), so no per-sample buffer is allocated, zeroed and
/// copied. Only JPEG into uint8 is done here: `Ok(false)` means the caller must
/// decode another way (another codec or dtype, or a header whose shape differs from
/// the stored one, which the ordinary path reports faithfully).
pub fn decode_sample_into(
    bytes: &[u8],
    compression: &Compression,
    dtype: Dtype,
    shape: &[usize],
    out: &mut [u8],
) -> Result<bool, Error> {
    if *compression != Compression::Jpeg || dtype != Dtype::U8 || shape.len() != 3 {
        return Ok(false);
    }
    let Some((mut decoder, header, size)) = plain_jpeg(bytes)? else {
        return Ok(false);
    };
    if header != shape || size != out.len() {
        return Ok(false);
    }
    decode_plain_into(&mut decoder, out)?;
    Ok(true)
}

thread_local! {
    /// Each thread's buffer for full-size pixels that are consumed where they are
    /// decoded ([`with_decoded_image`]): a fresh buffer per image would be allocated and
    /// zeroed, and would come from memory the cache no longer holds.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Decodes a sample-compressed image and lends its pixels and `(height, width[,
/// channels])` shape to `f`, which keeps only what it derives (a resized copy). JPEGs
/// of uint8 RGB or gray decode into a buffer the thread reuses; anything else goes
/// through [`decode_sample`]. Errors are those of [`decode_sample`] and of `f`.
pub fn with_decoded_image<T>(
    bytes: &[u8],
    compression: &Compression,
    dtype: Dtype,
    f: impl FnOnce(&[u8], &[usize]) -> Result<T, Error>,
) -> Result<T, Error> {
    let plain = *compression == Compression::Jpeg && dtype == Dtype::U8;
    let Some((mut decoder, shape, size)) = (if plain { plain_jpeg(bytes)? } else { None }) else {
        let a = decode_sample(bytes, compression, dtype, &[1])?;
        return f(&a.data, &a.shape);
    };
    // Taken, not borrowed: an `f` that decodes again on this thread gets a fresh buffer.
    let mut buf = SCRATCH.take();
    buf.resize(size, 0);
    let res = decode_plain_into(&mut decoder, &mut buf).and_then(|()| f(&buf, &shape));
    SCRATCH.set(buf);
    res
}

/// Decodes into a buffer that may hold an earlier image (a reused one). A damaged
/// stream can leave pixels unwritten, which must read as a fresh buffer's zeros, not
/// as the earlier image.
fn decode_plain_into(
    decoder: &mut JpegDecoder<ZCursor<&[u8]>>,
    out: &mut [u8],
) -> Result<(), Error> {
    out.fill(0);
    decoder
        .decode_into(out)
        .map_err(|e| Error::corrupt("jpeg sample", e.to_string()))
}

/// A JPEG decoder past the headers, the `(height, width, channels)` it decodes to and
/// its output size in bytes.
type PlainJpeg<'a> = (JpegDecoder<ZCursor<&'a [u8]>>, [usize; 3], usize);

/// A decoder past the headers of an RGB or gray JPEG; `None` for other colour spaces.
fn plain_jpeg(bytes: &[u8]) -> Result<Option<PlainJpeg<'_>>, Error> {
    let corrupt = |reason: String| Error::corrupt("jpeg sample", reason);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    decoder
        .decode_headers()
        .map_err(|e| corrupt(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| corrupt("no frame header".into()))?;
    let input = decoder
        .input_colorspace()
        .ok_or_else(|| corrupt("no frame header".into()))?;
    let output = jpeg_output_colorspace(input, info.components).map_err(corrupt)?;
    if !matches!(output, ColorSpace::RGB | ColorSpace::Luma) {
        return Ok(None);
    }
    let (height, width) = (usize::from(info.height), usize::from(info.width));
    check_pixels(height, width).map_err(corrupt)?;
    decoder.set_options(jpeg_options().jpeg_set_out_colorspace(output));
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| corrupt("image too large".into()))?;
    Ok(Some((
        decoder,
        [height, width, output.num_components()],
        size,
    )))
}

/// Encodes a raw array with a sample compression (jpeg quality 90 / png / lz4).
/// Images must be uint8 `(H, W)`, `(H, W, 1)`, `(H, W, 3)` (png also `(H, W, 2)`
/// gray+alpha, `(H, W, 4)` RGBA, and uint16 grayscale), as Pillow accepts them in 3.x.
pub fn encode_sample(arr: &NdArray, compression: &Compression) -> Result<Vec<u8>, Error> {
    if arr.num_elements() == 0 {
        return Ok(Vec::new());
    }
    match compression {
        Compression::Lz4 => Ok(lz4_compress(&arr.data)),
        Compression::Jpeg => encode_jpeg(arr),
        Compression::Png => encode_png(arr),
        Compression::Other(name) => Err(Error::unsupported(format!(
            "encoding arrays as {name} is not supported; append {name} files as bytes instead"
        ))),
    }
}

/// `(height, width, channels)` of an image plus `u32` dimensions for encoders.
fn image_dims(arr: &NdArray, codec: &str) -> Result<(u32, u32, usize), Error> {
    let (h, w, c) = match arr.shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] => (h, w, c),
        _ => {
            return Err(Error::invalid(format!(
                "cannot encode an array of shape {:?} as {codec}: expected (H, W) or (H, W, C)",
                arr.shape
            )));
        }
    };
    match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) => Ok((h, w, c)),
        _ => Err(Error::invalid(format!(
            "image of shape {:?} is too large to encode as {codec}",
            arr.shape
        ))),
    }
}

fn encode_jpeg(arr: &NdArray) -> Result<Vec<u8>, Error> {
    let (h, w, c) = image_dims(arr, "jpeg")?;
    let color = match (arr.dtype, c) {
        (Dtype::U8, 1) => jpeg_encoder::ColorType::Luma,
        (Dtype::U8, 3) => jpeg_encoder::ColorType::Rgb,
        _ => {
            return Err(Error::invalid(format!(
                "cannot encode a {} array of shape {:?} as jpeg: expected uint8 with 1 or 3 channels",
                arr.dtype, arr.shape
            )));
        }
    };
    // The format's frame header holds 16-bit sides.
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(Error::invalid(format!(
            "cannot encode an image of shape {:?} as jpeg: a side exceeds 65535 pixels",
            arr.shape
        )));
    };
    let mut out = Vec::with_capacity(arr.data.len() / 8 + 1024);
    // Below quality 90 the encoder subsamples chroma 4:2:0, as libjpeg and PIL do.
    jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY)
        .encode(&arr.data, w16, h16, color)
        .map_err(|e| {
            Error::invalid(format!(
                "jpeg encoding of shape {:?} failed: {e}",
                arr.shape
            ))
        })?;
    Ok(out)
}

fn encode_png(arr: &NdArray) -> Result<Vec<u8>, Error> {
    let (h, w, c) = image_dims(arr, "png")?;
    let color = match (arr.dtype, c) {
        (Dtype::U8, 1) => image::ExtendedColorType::L8,
        (Dtype::U8, 2) => image::ExtendedColorType::La8,
        (Dtype::U8, 3) => image::ExtendedColorType::Rgb8,
        (Dtype::U8, 4) => image::ExtendedColorType::Rgba8,
        (Dtype::U16, 1) => image::ExtendedColorType::L16,
        _ => {
            return Err(Error::invalid(format!(
                "cannot encode a {} array of shape {:?} as png: expected uint8 with 1 to 4 channels \
                 or uint16 grayscale",
                arr.dtype, arr.shape
            )));
        }
    };
    // The encoder reads 16-bit samples in native byte order; ours are little-endian.
    let native: Vec<u8>;
    let data: &[u8] = if arr.dtype == Dtype::U16 && cfg!(target_endian = "big") {
        native = arr
            .data
            .chunks_exact(2)
            .flat_map(|b| [b[1], b[0]])
            .collect();
        &native
    } else {
        &arr.data
    };
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(data, w, h, color)
        .map_err(|e| {
            Error::invalid(format!("png encoding of shape {:?} failed: {e}", arr.shape))
        })?;
    Ok(out)
}

struct ImageHeader {
    height: usize,
    width: usize,
    channels: usize,
}

fn check_pixels(height: usize, width: usize) -> Result<(), String> {
    let pixels = (height as u64).saturating_mul(width as u64);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "{width}x{height} image exceeds the limit of {MAX_IMAGE_PIXELS} pixels"
        ));
    }
    Ok(())
}

fn jpeg_options() -> DecoderOptions {
    // JPEG dimensions are u16; the pixel-count limit is applied separately.
    DecoderOptions::default()
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

/// The colour space to decode into, from the stored component layout (Pillow's mode).
fn jpeg_output_colorspace(input: ColorSpace, components: u8) -> Result<ColorSpace, String> {
    match (components, input) {
        (1, _) => Ok(ColorSpace::Luma),
        (3, _) => Ok(ColorSpace::RGB),
        (4, ColorSpace::YCCK) => Ok(ColorSpace::YCCK),
        (4, _) => Ok(ColorSpace::CMYK),
        (n, _) => Err(format!("{n}-component jpeg images are not supported")),
    }
}

/// Finds the frame header (SOFn) by walking the marker segments, without setting up a
/// decoder: appending a JPEG file needs only its shape, and this is on the ingest path.
/// Channels follow what the decoder returns: 1 (gray), 3 (colour) or 4 (CMYK / YCCK).
fn jpeg_frame_scan(bytes: &[u8]) -> Result<ImageHeader, String> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err("not a JPEG file (no start-of-image marker)".into());
    }
    let mut i = 2;
    loop {
        if bytes.get(i) != Some(&0xFF) {
            return Err(format!("expected a marker at byte {i}"));
        }
        while bytes.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *bytes.get(i).ok_or("truncated before the frame header")?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return Err("no frame header before the image data".into()),
            _ => {}
        }
        let seg = bytes.get(i..i + 2).ok_or("truncated segment length")?;
        let len = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
        if len < 2 {
            return Err(format!("segment length {len} at byte {i}"));
        }
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let f = bytes.get(i + 2..i + 8).ok_or("truncated frame header")?;
            let height = usize::from(u16::from_be_bytes([f[1], f[2]]));
            let width = usize::from(u16::from_be_bytes([f[3], f[4]]));
            let channels = match f[5] {
                1 => 1,
                3 => 3,
                4 => 4,
                n => return Err(format!("{n} colour components are not supported")),
            };
            if height == 0 || width == 0 {
                return Err(format!("frame size {height}x{width}"));
            }
            check_pixels(height, width)?;
            return Ok(ImageHeader {
                height,
                width,
                channels,
            });
        }
        i += len;
    }
}

#[cfg(test)]
fn jpeg_header(bytes: &[u8]) -> Result<ImageHeader, String> {
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no frame header")?;
    let input = decoder.input_colorspace().ok_or("no frame header")?;
    let channels = jpeg_output_colorspace(input, info.components)?.num_components();
    Ok(ImageHeader {
        height: usize::from(info.height),
        width: usize::from(info.width),
        channels,
    })
}

/// Decodes straight into the stored channel layout: `(H, W, 1)` gray, `(H, W, 3)` RGB,
/// `(H, W, 4)` CMYK as Pillow returns it.
fn decode_jpeg(bytes: &[u8]) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options());
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let info = decoder.info().ok_or("no frame header")?;
    let input = decoder.input_colorspace().ok_or("no frame header")?;
    let (height, width) = (usize::from(info.height), usize::from(info.width));
    check_pixels(height, width)?;
    let output = jpeg_output_colorspace(input, info.components)?;
    decoder.set_options(jpeg_options().jpeg_set_out_colorspace(output));
    let size = decoder.output_buffer_size().ok_or("image too large")?;
    let mut pixels = vec![0u8; size];
    decoder
        .decode_into(&mut pixels)
        .map_err(|e| e.to_string())?;
    match output {
        ColorSpace::CMYK => invert(&mut pixels),
        ColorSpace::YCCK => ycck_to_inverted_cmyk(&mut pixels),
        _ => {}
    }
    Ok((pixels, vec![height, width, output.num_components()]))
}

/// Pillow reads CMYK jpegs with the Adobe convention (`CMYK;I`: stored values inverted).
fn invert(pixels: &mut [u8]) {
    for p in pixels {
        *p = 255 - *p;
    }
}

/// libjpeg turns YCCK into CMYK (`C = 255 - R`, ..., `K` kept) and Pillow then inverts
/// all four, so the result is `(R, G, B, 255 - K)`.
fn ycck_to_inverted_cmyk(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(4) {
        let y = f32::from(px[0]);
        let cb = f32::from(px[1]) - 128.0;
        let cr = f32::from(px[2]) - 128.0;
        let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        px[0] = clamp(y + 1.402 * cr);
        px[1] = clamp(y - 0.344_136 * cb - 0.714_136 * cr);
        px[2] = clamp(y + 1.772 * cb);
        px[3] = 255 - px[3];
    }
}

/// Decoded samples before the cast to the tensor dtype.
enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

fn png_channels(color: png::ColorType, depth: png::BitDepth) -> usize {
    match (color, depth) {
        (png::ColorType::Grayscale | png::ColorType::Indexed, _) => 1,
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Sixteen) => 4,
        (png::ColorType::GrayscaleAlpha, _) => 2,
        (png::ColorType::Rgb, _) => 3,
        (png::ColorType::Rgba, _) => 4,
    }
}

fn png_reader(bytes: &[u8]) -> Result<png::Reader<Cursor<&[u8]>>, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    // Raw samples: palette indices stay indices and 16-bit stays 16-bit, as in Pillow.
    decoder.set_transformations(png::Transformations::IDENTITY);
    decoder.read_info().map_err(|e| e.to_string())
}

fn png_header(bytes: &[u8]) -> Result<ImageHeader, String> {
    let reader = png_reader(bytes)?;
    let info = reader.info();
    Ok(ImageHeader {
        height: info.height as usize,
        width: info.width as usize,
        channels: png_channels(info.color_type, info.bit_depth),
    })
}

fn decode_png(bytes: &[u8]) -> Result<(Samples, Vec<usize>), String> {
    let mut reader = png_reader(bytes)?;
    let (height, width, color, depth) = {
        let info = reader.info();
        (
            info.height as usize,
            info.width as usize,
            info.color_type,
            info.bit_depth,
        )
    };
    check_pixels(height, width)?;
    let size = reader.output_buffer_size().ok_or("image too large")?;
    let mut raw = vec![0u8; size];
    let frame = reader.next_frame(&mut raw).map_err(|e| e.to_string())?;
    let line = frame.line_size;
    let rows = raw.chunks_exact(line.max(1)).take(height);
    let channels = png_channels(color, depth);
    let shape = vec![height, width, channels];
    let samples = match (color, depth) {
        (
            png::ColorType::Grayscale | png::ColorType::Indexed,
            png::BitDepth::One | png::BitDepth::Two | png::BitDepth::Four,
        ) => {
            let bits = depth as usize;
            // Pillow scales 2- and 4-bit gray to 0..=255 but keeps 1-bit gray as 0/1
            // (mode "1") and palette indices unscaled.
            let scale = match (color, depth) {
                (png::ColorType::Grayscale, png::BitDepth::Two) => 85,
                (png::ColorType::Grayscale, png::BitDepth::Four) => 17,
                _ => 1,
            };
            let mask = (1u8 << bits) - 1;
            let mut out = Vec::with_capacity(height * width);
            for row in rows {
                out.extend((0..width).map(|x| {
                    let bit = x * bits;
                    let byte = row.get(bit / 8).copied().unwrap_or(0);
                    ((byte >> (8 - bits - bit % 8)) & mask) * scale
                }));
            }
            Samples::U8(out)
        }
        (png::ColorType::Grayscale, png::BitDepth::Sixteen) => {
            let mut out = Vec::with_capacity(height * width);
            for row in rows {
                out.extend(
                    row.chunks_exact(2)
                        .take(width)
                        .map(|b| u16::from_be_bytes([b[0], b[1]])),
                );
            }
            Samples::U16(out)
        }
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Sixteen) => {
            let mut out = Vec::with_capacity(height * width * 4);
            for row in rows {
                for px in row.chunks_exact(4).take(width) {
                    out.extend_from_slice(&[px[0], px[0], px[0], px[2]]);
                }
            }
            Samples::U8(out)
        }
        (_, png::BitDepth::Sixteen) => {
            let mut out = Vec::with_capacity(height * width * channels);
            for row in rows {
                out.extend(row.chunks_exact(2).take(width * channels).map(|b| b[0]));
            }
            Samples::U8(out)
        }
        _ => {
            let row_bytes = width * channels;
            if line == row_bytes {
                raw.truncate(height * row_bytes);
                Samples::U8(raw)
            } else {
                let mut out = Vec::with_capacity(height * row_bytes);
                for row in rows {
                    out.extend_from_slice(row.get(..row_bytes).unwrap_or(row));
                }
                Samples::U8(out)
            }
        }
    };
    let len = match &samples {
        Samples::U8(v) => v.len(),
        Samples::U16(v) => v.len(),
    };
    if len != height * width * channels {
        return Err(format!(
            "decoded {len} samples, expected {}",
            height * width * channels
        ));
    }
    Ok((samples, shape))
}

/// numpy `astype` from unsigned samples: integers wrap, floats convert exactly, bool is
/// `v != 0`.
fn cast_samples(samples: Samples, dtype: Dtype) -> Vec<u8> {
    fn convert<T: Copy + Into<u64>>(values: &[T], dtype: Dtype) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * dtype.size());
        for v in values {
            let v: u64 = (*v).into();
            match dtype {
                Dtype::Bool => out.push(u8::from(v != 0)),
                Dtype::U8 | Dtype::I8 => out.push(v as u8),
                Dtype::U16 | Dtype::I16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
                Dtype::U32 | Dtype::I32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
                Dtype::U64 | Dtype::I64 => out.extend_from_slice(&v.to_le_bytes()),
                Dtype::F16 | Dtype::F32 | Dtype::F64 => {
                    super::array::put_f64_as(dtype, v as f64, &mut out)
                }
            }
        }
        out
    }
    match samples {
        Samples::U8(v) if dtype == Dtype::U8 => v,
        Samples::U8(v) => convert(&v, dtype),
        Samples::U16(v) => convert(&v, dtype),
    }
}

#[cfg(test)]
mod tests {

    fn dicom_element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }

    #[test]
    fn blob_dtypes_follow_the_file_headers() {
        let mut nii = vec![0u8; 352];
        nii[..4].copy_from_slice(&348i32.to_le_bytes());
        nii[70..72].copy_from_slice(&4i16.to_le_bytes());
        let nii_c = Compression::Other("nii".into());
        assert_eq!(blob_dtype(&nii, &nii_c), Some("int16"));
        nii[..4].copy_from_slice(&348i32.to_be_bytes());
        nii[70..72].copy_from_slice(&512i16.to_be_bytes());
        assert_eq!(blob_dtype(&nii, &nii_c), Some("uint16"));
        assert_eq!(blob_dtype(&nii[..60], &nii_c), None);

        let mut dcm = vec![0u8; 128];
        dcm.extend_from_slice(b"DICM");
        dicom_element(&mut dcm, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
        dicom_element(&mut dcm, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
        dicom_element(&mut dcm, 0x0028, 0x0103, b"US", &1u16.to_le_bytes());
        let dcm_c = Compression::Other("dcm".into());
        assert_eq!(blob_dtype(&dcm, &dcm_c), Some("int16"));
        for cut in [0, 130, 140, dcm.len() - 1] {
            assert_eq!(blob_dtype(&dcm[..cut], &dcm_c), None);
        }
        assert_eq!(
            blob_dtype(b"ply\n", &Compression::Other("ply".into())),
            Some("object")
        );
        assert_eq!(blob_dtype(b"RIFF", &Compression::Other("wav".into())), None);
    }

    #[test]
    fn frame_scan_agrees_with_the_decoder() {
        for (shape, fill) in [
            (vec![16usize, 20, 3], 7u8),
            (vec![9, 31, 1], 200),
            (vec![1, 1, 3], 0),
        ] {
            let n: usize = shape.iter().product();
            let data: Vec<u8> = (0..n).map(|k| (k as u8).wrapping_mul(fill)).collect();
            let arr = NdArray::new(Dtype::U8, shape.clone(), data).unwrap();
            let jpeg = encode_sample(&arr, &Compression::Jpeg).unwrap();
            let fast = jpeg_frame_scan(&jpeg).unwrap();
            let full = jpeg_header(&jpeg).unwrap();
            assert_eq!(
                (fast.height, fast.width, fast.channels),
                (full.height, full.width, full.channels)
            );
            assert_eq!(vec![fast.height, fast.width, fast.channels], shape);
            for cut in [0, 1, 3, 10, 20] {
                assert!(jpeg_frame_scan(&jpeg[..cut.min(jpeg.len())]).is_err());
            }
        }
        assert!(jpeg_frame_scan(b"\xff\xd8\xff\xda\x00\x02").is_err());
        assert!(jpeg_frame_scan(b"\x89PNG").is_err());
    }
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    #[test]
    fn parse_and_names() {
        assert_eq!(Compression::parse("none").unwrap(), None);
        assert_eq!(Compression::parse("").unwrap(), None);
        assert_eq!(Compression::parse("jpg").unwrap(), Some(Compression::Jpeg));
        assert_eq!(Compression::parse("JPEG").unwrap(), Some(Compression::Jpeg));
        assert_eq!(
            Compression::parse("tif").unwrap(),
            Some(Compression::Other("tiff".into()))
        );
        assert_eq!(
            Compression::parse("jp2").unwrap(),
            Some(Compression::Other("jpeg2000".into()))
        );
        assert_eq!(
            Compression::parse("nii.gz").unwrap().unwrap().name(),
            "nii.gz"
        );
        assert!(Compression::parse("zstd").is_err());
        for name in KNOWN {
            let c = Compression::parse(name).unwrap().unwrap();
            assert_eq!(c.name(), name);
            assert_eq!(c.is_image(), IMAGE.contains(&name), "{name}");
        }
        assert!(
            Compression::Png.is_image()
                && Compression::Jpeg.is_image()
                && !Compression::Lz4.is_image()
        );
        assert!(!Compression::Other("mp4".into()).can_decode());
    }

    #[test]
    fn sniff_magic_numbers() {
        let (jpg, png) = (unhex(GRAY_JPG), unhex(RGBA_PNG));
        let mut dcm = vec![0u8; 132];
        dcm[128..].copy_from_slice(b"DICM");
        let cases: [(&[u8], Option<&str>); 14] = [
            (&jpg[..4], Some("jpeg")),
            (&png, Some("png")),
            (&[0x04, 0x22, 0x4d, 0x18, 0], Some("lz4")),
            (b"RIFF\0\0\0\0WEBPVP8 ", Some("webp")),
            (b"RIFF\0\0\0\0WAVEfmt ", Some("wav")),
            (b"\0\0\0\x18ftypisom", Some("mp4")),
            (b"GIF89a..", Some("gif")),
            (b"II*\0....", Some("tiff")),
            (b"ID3\x04", Some("mp3")),
            (&[0xff, 0xfb, 0x90], Some("mp3")),
            (&dcm, Some("dcm")),
            (b"ply\nformat", Some("ply")),
            (b"P6\n10 10", Some("ppm")),
            (b"hello", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Compression::sniff(bytes).as_ref().map(Compression::name),
                want,
                "{bytes:?}"
            );
        }
        assert_eq!(Compression::sniff(&[]), None);
    }

    /// `lz4.block.compress(bytes(range(64)) * 4)` from python-lz4 4.4.5 (3.9.52's venv).
    const PY_LZ4_BLOCK: &str = "00010000ff31000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
        202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f4000a8503b3c3d3e3f";
    /// `lz4.frame.compress(b"hello hello hello hello")`.
    const PY_LZ4_FRAME: &str =
        "04224d1868401700000000000000320f0000006868656c6c6f2006005068656c6c6f00000000";

    fn py_input() -> Vec<u8> {
        (0u8..64).cycle().take(256).collect()
    }

    #[test]
    fn lz4_decodes_python_lz4_output() {
        let block = unhex(PY_LZ4_BLOCK);
        assert_eq!(lz4_decompress(&block, 1 << 20).unwrap(), py_input());
        let frame = unhex(PY_LZ4_FRAME);
        assert_eq!(
            lz4_decompress(&frame, 1 << 20).unwrap(),
            b"hello hello hello hello"
        );
        assert!(lz4_decompress(&frame, 10).is_err());
    }

    /// Our encoder may pick other matches than the reference one, so python-lz4 was run
    /// on this output during development; the bytes below are what it decoded.
    #[test]
    fn lz4_round_trip_and_framing() {
        let data = py_input();
        let c = lz4_compress(&data);
        assert_eq!(&c[..4], &256u32.to_le_bytes());
        assert_eq!(lz4_decompress(&c, data.len()).unwrap(), data);
        assert!(lz4_decompress(&c, data.len() - 1).is_err());
        assert!(lz4_compress(&[]).is_empty());
        assert!(lz4_decompress(&[], 0).unwrap().is_empty());
        assert!(lz4_decompress(&[0; 5], 0).unwrap().is_empty());
    }

    #[test]
    fn lz4_rejects_corrupt_input_without_allocating() {
        // A 4 GiB claim in 9 bytes: refused by the limit and by the ratio bound.
        let hostile = [0xff, 0xff, 0xff, 0xff, 0x1f, 0, 0, 0, 0];
        assert!(lz4_decompress(&hostile, usize::MAX).is_err());
        assert!(lz4_decompress(&[1, 2], 100).is_err());
        let mut c = lz4_compress(&py_input());
        c.truncate(c.len() - 5);
        assert!(lz4_decompress(&c, 1 << 20).is_err());
        let mut frame = unhex(PY_LZ4_FRAME);
        frame.truncate(frame.len() - 6);
        assert!(lz4_decompress(&frame, 1 << 20).is_err());
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..40u32)
                .map(|i| (i.wrapping_mul(seed).wrapping_add(seed * 7) % 251) as u8)
                .collect();
            let _ = lz4_decompress(&junk, 1 << 16);
        }
    }

    // Files written by Pillow 10.4 (3.9.52's venv); the expected arrays are what 3.9.52's
    // `t[i].numpy()` returned for them.

    /// 10x8 grayscale jpeg of `arange(80) % 251`.
    const GRAY_JPG: &str = "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912\
        130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080008\
        000a01011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000020103\
        03020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f024336272\
        82090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475\
        767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9\
        cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00f254d07fd8a9bfb0\
        7fd8afffd9";
    /// `t[0].numpy()` of [`GRAY_JPG`], flattened.
    const GRAY_JPG_PIXELS: [u8; 80] = [
        1, 1, 2, 3, 4, 5, 6, 7, 10, 10, 9, 10, 11, 12, 13, 14, 15, 15, 18, 18, 21, 21, 22, 23, 25,
        26, 27, 27, 30, 30, 31, 31, 32, 33, 34, 36, 36, 37, 40, 40, 39, 40, 40, 42, 43, 44, 45, 45,
        48, 48, 49, 49, 50, 51, 53, 54, 55, 55, 58, 58, 61, 61, 62, 63, 64, 65, 66, 67, 70, 70, 69,
        70, 71, 72, 73, 74, 75, 75, 78, 78,
    ];
    /// 10x8 CMYK jpeg (Adobe marker) of `arange(320) % 251`.
    const CMYK_JPG: &str = "ffd8ffee000e41646f626500640000000000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f\
        141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc00014080008000a\
        044311004d11005911004b1100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc4\
        00b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c115\
        52d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a63646566\
        6768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2\
        c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda000e0443004d005900\
        4b00003f00d88bc43e3bd56dde7b7d1ae9115ca1175225bb6700f0b2329239eb8c75f435af17887c77aadbbcf6fa35d2\
        22b9422ea44b76ce01e164652473d718ebe86b5a2f10f8ef55b779edf46ba44572845d4896ed9c03c2c8ca48e7ae31d7\
        d0d6c8d6fc7ba859a5d43a3ceb1be70279e385c6091ca3b061d3b8e7af4aaa6fbe2164ff00c4abff0027adff00f8e555\
        37df10b27fe255ff0093d6ff00fc72aa9bef88593ff12aff00c9eb7ffe39544df7c42c9ff8957fe4f5bfff001cafffd9";
    /// The first 24 values of `t[0].numpy()` of [`CMYK_JPG`].
    const CMYK_JPG_PIXELS: [u8; 24] = [
        0, 0, 1, 0, 10, 11, 12, 7, 0, 0, 0, 12, 17, 18, 19, 11, 13, 14, 15, 23, 20, 21, 22, 23,
    ];
    /// 10x8 palette png whose indices are `arange(80) % 5`.
    const PAL_PNG: &str = "89504e470d0a1a0a0000000d494844520000000a000000080803000000f7249e8400000300504c54450000000a141e14\
        283c1e3c5a2850783264963c78b4468cd250a0f05ab40e64c82c6edc4a78f0688204868c18a4962cc2a040e0aa54feb4\
        681cbe7c3ac89058d2a476dcb894e6ccb2f0e0d0faf4ee04080c0e1c2a1830482244662c5884366ca24080c04a94de54\
        a8fc5ebc1a68d03872e4567cf874860c929020b09a34cea448ecae5c0ab87028c28446cc9864d6ac82e0c0a0ead4bef4\
        e8dcfefcfa0810181224361c3854264c723060903a74ae4488cc4e9cea58b00862c4266cd84476ec628000808a149e94\
        28bc9e3cdaa850f8b26416bc7834c68c52d0a070dab48ee4c8aceedccaf8f0e80204060c1824162c422040602a547e34\
        689c3e7cba4890d852a4f65cb81466cc3270e0507af46e84088c8e1caa9830c8a244e6ac5804b66c22c08040ca945ed4\
        a87cdebc9ae8d0b8f2e4d6fcf8f4060c121020301a344e24486c2e5c8a3870a84284c64c98e456ac0260c0206ad43e74\
        e85c7efc7a8810989224b69c38d4a64cf2b06010ba742ec4884cce9c6ad8b088e2c4a6ecd8c4f6ece20000000a141e14\
        283c1e3c5a2850783264963c78b4468cd250a0f05ab40e64c82c6edc4a78f0688204868c18a4962cc2a040e0aa54feb4\
        681cbe7c3ac89058d2a476dcb894e6ccb2f0e0d0faf4ee04080c0e1c2a1830482244662c5884366ca24080c04a94de54\
        a8fc5ebc1a68d03872e4567cf874860c929020b09a34cea448ecae5c0ab87028c28446cc9864d6ac82e0c0a0ead4bef4\
        e8dcfefcfa0810181224361c3854264c723060903a74ae4488cc4e9cea58b00862c4266cd84476ec628000808a149e94\
        28bc9e3cdaa850f8b26416bc7834c68c52d0a070dab48ee4c8aceedccaf8f0e80204060c1824162c422040602a547e34\
        689c3e7cba4890d852a4f65cb81466cc3270e0507af46e84088c8e1caa9830c8a244e6ac5804b66c22c08040ca945ed4\
        a87cdebc9ae8d0b8f2e4d6fcf8f4060c121020301a344e24486c2e5c8a3870a84284c64c98e456ac0260c0206ad43e74\
        e85c7efc7a8810989224b69c38d4a64cf2b06010ba742ec4884cce9c6ad8b088e2c4a6ecd8c4f6ece2a1c1134d000000\
        1249444154789c6360606462668110d46402001b3800a15ead53bb0000000049454e44ae426082";
    /// 10x8 RGBA png of `arange(320) % 251`.
    const RGBA_PNG: &str = "89504e470d0a1a0a0000000d494844520000000a000000080806000000c0fa6eb60000002a49444154789c6364606462\
        662106686868680c17858c1f3e7efa0c6573727272e256282b27af408c8900b07b0c12f29ee3300000000049454e44ae\
        426082";
    /// 10x8 gray+alpha png of `arange(160) % 251`.
    const LA_PNG: &str = "89504e470d0a1a0a0000000d494844520000000a0000000808040000006af3a63d0000001349444154789c63646064c2\
        002c2222834d1000c2c2025719c3ce7d0000000049454e44ae426082";
    /// 10x8 1-bit png of `arange(80) % 2`.
    const BW_PNG: &str = "89504e470d0a1a0a0000000d494844520000000a000000080100000000e881531b0000000f49444154789c630c7dcdc4\
        c08089001cad0150a1f0fce40000000049454e44ae426082";
    /// 10x8 16-bit gray png of `arange(80) * 700`.
    const G16_PNG: &str = "89504e470d0a1a0a0000000d494844520000000a000000081000000000b501ed290000003d49444154789c9d8cb11100\
        2008039130029d0e9661339c05a758dbf05cc233cc5c1054b31893a00b094245574cd682bc642c9ebee30fbdef5e3dfb\
        cd063573230c5028519d0000000049454e44ae426082";

    #[test]
    fn grayscale_jpeg_decodes_to_h_w_1() {
        let jpg = unhex(GRAY_JPG);
        assert_eq!(
            image_shape(&jpg, &Compression::Jpeg).unwrap(),
            vec![8, 10, 1]
        );
        let arr = decode_sample(&jpg, &Compression::Jpeg, Dtype::U8, &[]).unwrap();
        assert_eq!(arr.shape, vec![8, 10, 1]);
        // zune-jpeg and libjpeg round differently in the IDCT: allow a small difference.
        for (got, want) in arr.data.iter().zip(GRAY_JPG_PIXELS) {
            assert!(got.abs_diff(want) <= 2, "{got} vs {want}");
        }
    }

    #[test]
    fn cmyk_jpeg_decodes_like_pillow() {
        let jpg = unhex(CMYK_JPG);
        assert_eq!(
            image_shape(&jpg, &Compression::Jpeg).unwrap(),
            vec![8, 10, 4]
        );
        let arr = decode_sample(&jpg, &Compression::Jpeg, Dtype::U8, &[]).unwrap();
        assert_eq!(arr.shape, vec![8, 10, 4]);
        for (got, want) in arr.data.iter().zip(CMYK_JPG_PIXELS) {
            assert!(got.abs_diff(want) <= 2, "{got} vs {want}");
        }
    }

    #[test]
    fn png_variants_decode_like_pillow() {
        let decode = |hex: &str, dtype: Dtype| {
            let bytes = unhex(hex);
            let arr = decode_sample(&bytes, &Compression::Png, dtype, &[]).unwrap();
            assert_eq!(image_shape(&bytes, &Compression::Png).unwrap(), arr.shape);
            arr
        };
        let pal = decode(PAL_PNG, Dtype::U8);
        assert_eq!(pal.shape, vec![8, 10, 1]);
        assert_eq!(
            pal.data.to_vec(),
            (0..80).map(|i| (i % 5) as u8).collect::<Vec<_>>()
        );
        let rgba = decode(RGBA_PNG, Dtype::U8);
        assert_eq!(rgba.shape, vec![8, 10, 4]);
        assert_eq!(
            rgba.data.to_vec(),
            (0..320).map(|i| (i % 251) as u8).collect::<Vec<_>>()
        );
        let la = decode(LA_PNG, Dtype::U8);
        assert_eq!(la.shape, vec![8, 10, 2]);
        assert_eq!(
            la.data.to_vec(),
            (0..160).map(|i| (i % 251) as u8).collect::<Vec<_>>()
        );
        let bw = decode(BW_PNG, Dtype::U8);
        assert_eq!(bw.shape, vec![8, 10, 1]);
        assert_eq!(
            bw.data.to_vec(),
            (0..80).map(|i| (i % 2) as u8).collect::<Vec<_>>()
        );
        let g16 = decode(G16_PNG, Dtype::U16);
        assert_eq!(g16.shape, vec![8, 10, 1]);
        let want: Vec<u16> = (0..80).map(|i| i * 700).collect();
        assert_eq!(g16, NdArray::from_slice(vec![8, 10, 1], &want).unwrap());
        // 3.9.52 read this file into a uint8 tensor as `[0, 188, 120, 52, ...]`.
        let wrapped = decode(G16_PNG, Dtype::U8);
        assert_eq!(&wrapped.data[..4], &[0, 188, 120, 52]);
    }

    fn test_image(shape: &[usize]) -> NdArray {
        let n: usize = shape.iter().product();
        let data: Vec<u8> = (0..n).map(|i| ((i * 7) % 256) as u8).collect();
        NdArray::new(Dtype::U8, shape.to_vec(), data).unwrap()
    }

    #[test]
    fn png_round_trips_every_channel_count() {
        for shape in [
            vec![5, 7],
            vec![5, 7, 1],
            vec![5, 7, 2],
            vec![5, 7, 3],
            vec![5, 7, 4],
        ] {
            let arr = test_image(&shape);
            let bytes = encode_sample(&arr, &Compression::Png).unwrap();
            let want_shape = if shape.len() == 2 {
                vec![5, 7, 1]
            } else {
                shape.clone()
            };
            assert_eq!(image_shape(&bytes, &Compression::Png).unwrap(), want_shape);
            let back = decode_sample(&bytes, &Compression::Png, Dtype::U8, &[]).unwrap();
            assert_eq!(back.shape, want_shape);
            assert_eq!(back.data, arr.data);
        }
    }

    #[test]
    fn png_16_bit_gray_and_casts() {
        let values: Vec<u16> = (0..12).map(|i| i * 700).collect();
        let arr = NdArray::from_slice(vec![3, 4], &values).unwrap();
        let bytes = encode_sample(&arr, &Compression::Png).unwrap();
        assert_eq!(
            image_shape(&bytes, &Compression::Png).unwrap(),
            vec![3, 4, 1]
        );
        let back = decode_sample(&bytes, &Compression::Png, Dtype::U16, &[]).unwrap();
        assert_eq!(back.data, arr.data);
        // 3.9.52 read 700 from a 16-bit png in a uint8 tensor as 188 (numpy astype wraps).
        let wrapped = decode_sample(&bytes, &Compression::Png, Dtype::U8, &[]).unwrap();
        assert_eq!(wrapped.data[1], 188);
        let f = decode_sample(&bytes, &Compression::Png, Dtype::F32, &[]).unwrap();
        assert_eq!(f.to_f64_vec()[1], 700.0);
    }

    #[test]
    fn jpeg_round_trips_gray_and_rgb() {
        for (shape, want) in [
            (vec![16, 24], vec![16, 24, 1]),
            (vec![16, 24, 1], vec![16, 24, 1]),
            (vec![16, 24, 3], vec![16, 24, 3]),
        ] {
            let n: usize = shape.iter().product();
            let arr = NdArray::new(Dtype::U8, shape.clone(), vec![120u8; n]).unwrap();
            let bytes = encode_sample(&arr, &Compression::Jpeg).unwrap();
            assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff]);
            assert_eq!(image_shape(&bytes, &Compression::Jpeg).unwrap(), want);
            let back = decode_sample(&bytes, &Compression::Jpeg, Dtype::U8, &[]).unwrap();
            assert_eq!(back.shape, want);
            assert!(back.data.iter().all(|v| v.abs_diff(120) <= 2));
        }
    }

    /// The reused buffer of `with_decoded_image` lends exactly what `decode_sample`
    /// returns, whatever it held before: a larger image first, then smaller ones, gray
    /// and RGB, a PNG (the plain path), a truncated JPEG (decoded or refused the same
    /// way), and a decode nested inside the lent closure.
    #[test]
    fn images_lent_from_the_reused_buffer_equal_plain_decodes() {
        let mut blobs = vec![
            (
                encode_sample(&test_image(&[40, 48, 3]), &Compression::Jpeg).unwrap(),
                Compression::Jpeg,
            ),
            (
                encode_sample(&test_image(&[9, 13, 3]), &Compression::Jpeg).unwrap(),
                Compression::Jpeg,
            ),
            (
                encode_sample(&test_image(&[10, 7]), &Compression::Jpeg).unwrap(),
                Compression::Jpeg,
            ),
            (
                encode_sample(&test_image(&[6, 5, 3]), &Compression::Png).unwrap(),
                Compression::Png,
            ),
        ];
        let big = blobs[0].0.clone();
        blobs.push((big[..big.len() * 2 / 3].to_vec(), Compression::Jpeg));
        blobs.push((b"not an image".to_vec(), Compression::Jpeg));
        for (bytes, codec) in &blobs {
            let plain = decode_sample(bytes, codec, Dtype::U8, &[1]);
            let lent = with_decoded_image(bytes, codec, Dtype::U8, |px, shape| {
                Ok((px.to_vec(), shape.to_vec()))
            });
            match (plain, lent) {
                (Ok(a), Ok((px, shape))) => {
                    assert_eq!(shape, a.shape);
                    assert!(px == a.data.as_ref(), "pixels differ for shape {shape:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("decode_sample {a:?}, with_decoded_image {b:?}"),
            }
        }
        let (outer, inner) =
            with_decoded_image(&blobs[1].0, &Compression::Jpeg, Dtype::U8, |px, _| {
                let inner =
                    with_decoded_image(&blobs[0].0, &Compression::Jpeg, Dtype::U8, |p, _| {
                        Ok(p.to_vec())
                    })?;
                Ok((px.to_vec(), inner))
            })
            .unwrap();
        assert_eq!(outer.len(), 9 * 13 * 3);
        assert_eq!(inner.len(), 40 * 48 * 3);
        let e = with_decoded_image(&blobs[1].0, &Compression::Jpeg, Dtype::U8, |_, _| {
            Err::<(), _>(Error::invalid("the closure's own error"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("the closure's own error"), "{e}");
    }

    /// A damaged JPEG the decoder accepts without writing every pixel: decoded into a
    /// buffer that held other pixels, it reads as a fresh decode, not the old image.
    #[test]
    fn a_reused_buffer_never_shows_an_earlier_image() {
        let bytes = include_bytes!("../../../fuzz/corpus/decode_format/regress_jpeg_stale_pixels");
        let plain = decode_sample(bytes, &Compression::Jpeg, Dtype::U8, &[1]).unwrap();
        let mut out = vec![0xAB; plain.data.len()];
        assert!(
            decode_sample_into(bytes, &Compression::Jpeg, Dtype::U8, &plain.shape, &mut out)
                .unwrap()
        );
        assert!(
            out == plain.data.as_ref(),
            "decoded in place over other pixels"
        );
        let big = encode_sample(&test_image(&[300, 300, 3]), &Compression::Jpeg).unwrap();
        with_decoded_image(&big, &Compression::Jpeg, Dtype::U8, |_, _| Ok(())).unwrap();
        let lent = with_decoded_image(
            bytes,
            &Compression::Jpeg,
            Dtype::U8,
            |px, _| Ok(px.to_vec()),
        )
        .unwrap();
        assert!(lent == plain.data.as_ref(), "lent after a larger image");
    }

    #[test]
    fn encode_rejects_what_pillow_rejects() {
        let rgba = test_image(&[4, 4, 4]);
        assert!(encode_sample(&rgba, &Compression::Jpeg).is_err());
        assert!(encode_sample(&test_image(&[4, 4, 5]), &Compression::Png).is_err());
        assert!(encode_sample(&test_image(&[4]), &Compression::Png).is_err());
        let f = NdArray::from_slice(vec![2, 2], &[0f32; 4]).unwrap();
        assert!(encode_sample(&f, &Compression::Jpeg).is_err());
        let e = encode_sample(&rgba, &Compression::Other("mp4".into())).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("mp4"));
        assert!(
            encode_sample(&NdArray::empty(Dtype::U8, 3), &Compression::Jpeg)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn lz4_samples_use_the_callers_shape() {
        let arr = NdArray::from_slice(vec![10, 10], &(0..100).collect::<Vec<i32>>()).unwrap();
        let bytes = encode_sample(&arr, &Compression::Lz4).unwrap();
        assert_eq!(
            decode_sample(&bytes, &Compression::Lz4, Dtype::I32, &[10, 10]).unwrap(),
            arr
        );
        assert!(decode_sample(&bytes, &Compression::Lz4, Dtype::I32, &[10, 9]).is_err());
        assert!(decode_sample(&bytes, &Compression::Lz4, Dtype::I32, &[usize::MAX, 3]).is_err());
        let empty = decode_sample(&[], &Compression::Jpeg, Dtype::U8, &[0, 0, 3]).unwrap();
        assert_eq!(empty.shape, vec![0, 0, 3]);
    }

    #[test]
    fn other_codecs_are_unsupported() {
        let e = decode_sample(b"RIFF", &Compression::Other("wav".into()), Dtype::F32, &[1])
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }) && e.to_string().contains("wav"));
        assert!(matches!(
            image_shape(b"BM", &Compression::Other("bmp".into())),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let (jpg, png) = (unhex(GRAY_JPG), unhex(RGBA_PNG));
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff, 0xd8],
            jpg[..20].to_vec(),
            jpg[..200].to_vec(),
            png[..30].to_vec(),
            png[..60].to_vec(),
            b"not an image".to_vec(),
        ];
        // Bit flips all over both files.
        for i in (0..jpg.len()).step_by(7) {
            let mut b = jpg.clone();
            b[i] ^= 0x5a;
            inputs.push(b);
        }
        for i in 0..png.len() {
            let mut b = png.clone();
            b[i] ^= 0xa5;
            inputs.push(b);
        }
        for bytes in &inputs {
            for c in [Compression::Jpeg, Compression::Png] {
                let _ = image_shape(bytes, &c);
                let _ = decode_sample(bytes, &c, Dtype::U8, &[8, 10, 3]);
            }
        }
        assert!(decode_sample(&jpg[..20], &Compression::Jpeg, Dtype::U8, &[]).is_err());
        assert!(decode_sample(&png[..60], &Compression::Png, Dtype::U8, &[]).is_err());
        assert!(matches!(
            decode_sample(b"junk", &Compression::Png, Dtype::U8, &[]),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            image_shape(b"junk", &Compression::Jpeg),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn huge_headers_are_refused_before_allocation() {
        // A png header claiming 100000 x 100000 pixels, then nothing.
        let good = unhex(RGBA_PNG);
        let mut png = good[..33].to_vec();
        png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png.extend_from_slice(&good[33..]);
        let e = decode_sample(&png, &Compression::Png, Dtype::U8, &[]).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
