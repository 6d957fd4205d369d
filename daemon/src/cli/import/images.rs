//! Image files for `deeplake import`: probing (codec and shape from the header, no
//! pixel decode) and loading (the file's bytes as a sample, re-encoded when its codec is
//! not the tensor's).
//!
//! The codec is read from the file's magic number, not its extension. A probe reads at
//! most [`PROBE_BYTES`] unless the header lies further in (a JPEG with large metadata
//! segments), in which case it reads the whole file. Every error names the file.
//! Re-encoding follows what the stored tensor can hold: JPEG keeps 1 or 3 channels, so
//! an alpha channel is dropped; a 16-bit grayscale PNG is scaled to 8 bits.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use deeplake_core::format::compression::{self, Compression};
use deeplake_core::{Dtype, NdArray, Sample};

/// How much of a file a probe reads first.
const PROBE_BYTES: u64 = 256 * 1024;

/// What a header says about an image file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Probe {
    pub codec: Compression,
    /// `(H, W, C)`, as the stored sample will have it.
    pub shape: Vec<usize>,
    /// File size in bytes.
    pub len: u64,
}

/// A file made ready to append.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub sample: Sample,
    /// `(H, W, C)` of the stored sample.
    pub shape: Vec<usize>,
    /// Bytes read from the file.
    pub file_bytes: u64,
    /// Whether the file was decoded and encoded again in the tensor's codec.
    pub reencoded: bool,
}

fn codec_of(bytes: &[u8], path: &Path) -> anyhow::Result<Compression> {
    match Compression::sniff(bytes) {
        Some(c @ (Compression::Jpeg | Compression::Png)) => Ok(c),
        Some(other) => bail!(
            "{}: a {} file, not a JPEG or PNG image",
            path.display(),
            other.name()
        ),
        None if bytes.is_empty() => {
            bail!("corrupt image file {}: the file is empty", path.display())
        }
        None => bail!(
            "corrupt image file {}: not a JPEG or PNG header",
            path.display()
        ),
    }
}

fn shape_of(bytes: &[u8], codec: &Compression, path: &Path) -> anyhow::Result<Vec<usize>> {
    let shape = compression::image_shape(bytes, codec)
        .map_err(|e| anyhow::anyhow!("corrupt image file {}: {e}", path.display()))?;
    if shape.contains(&0) {
        bail!(
            "corrupt image file {}: the header gives an empty image {shape:?}",
            path.display()
        );
    }
    Ok(shape)
}

/// Reads the header of `path`: codec, shape and size. Does not decode pixels.
pub(crate) fn probe(path: &Path) -> anyhow::Result<Probe> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open image file {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let mut head = Vec::with_capacity(PROBE_BYTES.min(len) as usize);
    file.take(PROBE_BYTES)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let codec = codec_of(&head, path)?;
    let shape = match compression::image_shape(&head, &codec) {
        Ok(s) if !s.contains(&0) => s,
        _ if (head.len() as u64) < len => {
            let all =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            shape_of(&all, &codec, path)?
        }
        _ => shape_of(&head, &codec, path)?,
    };
    Ok(Probe { codec, shape, len })
}

/// The codec most files use; PNG wins a tie (it loses no pixels when the others are
/// re-encoded).
pub(crate) fn majority_codec<'a>(codecs: impl IntoIterator<Item = &'a Compression>) -> Compression {
    let (mut jpeg, mut png) = (0u64, 0u64);
    for c in codecs {
        match c {
            Compression::Jpeg => jpeg += 1,
            _ => png += 1,
        }
    }
    if jpeg > png {
        Compression::Jpeg
    } else {
        Compression::Png
    }
}

/// Bit depth and colour type from a PNG's IHDR (which the PNG format places first).
fn png_depth_and_color(bytes: &[u8]) -> Option<(u8, u8)> {
    match (bytes.get(12..16), bytes.get(24), bytes.get(25)) {
        (Some(b"IHDR"), Some(d), Some(c)) => Some((*d, *c)),
        _ => None,
    }
}

/// Decodes `bytes` (of `from`) and encodes the pixels as `to`.
fn reencode(
    bytes: &[u8],
    from: &Compression,
    to: &Compression,
) -> Result<(Vec<u8>, Vec<usize>), String> {
    const GRAY: u8 = 0;
    let gray16 = *from == Compression::Png && png_depth_and_color(bytes) == Some((16, GRAY));
    let arr = if gray16 {
        let wide =
            compression::decode_sample(bytes, from, Dtype::U16, &[]).map_err(|e| e.to_string())?;
        // Little-endian samples: the second byte of each is the high one.
        let narrow: Vec<u8> = wide.data.chunks_exact(2).map(|b| b[1]).collect();
        NdArray::new(Dtype::U8, wide.shape, narrow).map_err(|e| e.to_string())?
    } else {
        compression::decode_sample(bytes, from, Dtype::U8, &[]).map_err(|e| e.to_string())?
    };
    let arr = if *to == Compression::Jpeg {
        drop_alpha(arr)?
    } else {
        arr
    };
    let out = compression::encode_sample(&arr, to).map_err(|e| e.to_string())?;
    Ok((out, arr.shape))
}

/// `(H, W, 2)` gray+alpha → `(H, W, 1)`; `(H, W, 4)` RGBA → `(H, W, 3)`.
fn drop_alpha(arr: NdArray) -> Result<NdArray, String> {
    let (h, w, c) = match arr.shape[..] {
        [h, w, c] => (h, w, c),
        _ => return Err(format!("unexpected decoded shape {:?}", arr.shape)),
    };
    if c != 2 && c != 4 {
        return Ok(arr);
    }
    let keep = c - 1;
    let data: Vec<u8> = arr
        .data
        .chunks_exact(c)
        .flat_map(|px| px.iter().take(keep).copied())
        .collect();
    NdArray::new(Dtype::U8, vec![h, w, keep], data).map_err(|e| e.to_string())
}

/// Reads `path` as a sample of a tensor whose sample compression is `target`. The
/// header is checked again (the file may have changed since it was probed).
pub(crate) fn load(path: &Path, target: &Compression) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read image file {}", path.display()))?;
    let file_bytes = bytes.len() as u64;
    let codec = codec_of(&bytes, path)?;
    let shape = shape_of(&bytes, &codec, path)?;
    if codec == *target {
        let sample = Sample::Encoded {
            bytes: bytes.into(),
            compression: codec,
            shape: Some(shape.clone()),
        };
        return Ok(Loaded {
            sample,
            shape,
            file_bytes,
            reencoded: false,
        });
    }
    let (out, shape) = reencode(&bytes, &codec, target).map_err(|e| {
        anyhow::anyhow!(
            "cannot re-encode {} image file {} as {}: {e}",
            codec.name(),
            path.display(),
            target.name()
        )
    })?;
    let sample = Sample::Encoded {
        bytes: out.into(),
        compression: target.clone(),
        shape: Some(shape.clone()),
    };
    Ok(Loaded {
        sample,
        shape,
        file_bytes,
        reencoded: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_prefers_png_on_ties() {
        let j = Compression::Jpeg;
        let p = Compression::Png;
        assert_eq!(majority_codec([&j, &j, &p]), Compression::Jpeg);
        assert_eq!(majority_codec([&j, &p]), Compression::Png);
        assert_eq!(majority_codec([&p, &p, &j]), Compression::Png);
    }

    #[test]
    fn alpha_is_dropped_for_jpeg() {
        let rgba = NdArray::new(Dtype::U8, vec![1, 2, 4], vec![1, 2, 3, 9, 4, 5, 6, 9]).unwrap();
        let rgb = drop_alpha(rgba).unwrap();
        assert_eq!(rgb.shape, vec![1, 2, 3]);
        assert_eq!(&rgb.data[..], &[1, 2, 3, 4, 5, 6]);
        let la = NdArray::new(Dtype::U8, vec![1, 2, 2], vec![7, 0, 8, 0]).unwrap();
        assert_eq!(&drop_alpha(la).unwrap().data[..], &[7, 8]);
    }

    #[test]
    fn sixteen_bit_gray_png_is_scaled_for_jpeg() {
        let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(8, 8, |x, _| {
            image::Luma([x as u16 * 8000 + 100])
        });
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageLuma16(img)
            .write_to(&mut png, image::ImageFormat::Png)
            .unwrap();
        let png = png.into_inner();
        assert_eq!(png_depth_and_color(&png), Some((16, 0)));
        let (jpg, shape) = reencode(&png, &Compression::Png, &Compression::Jpeg).unwrap();
        assert_eq!(shape, vec![8, 8, 1]);
        let back = compression::decode_sample(&jpg, &Compression::Jpeg, Dtype::U8, &[]).unwrap();
        assert_eq!(back.shape, vec![8, 8, 1]);
        for (i, v) in back.data.iter().enumerate() {
            let want = (((i % 8) as u32 * 8000 + 100) >> 8) as i32;
            assert!(
                (i32::from(*v) - want).abs() <= 3,
                "pixel {i}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn unknown_headers_name_the_file() {
        let p = Path::new("cats/x.jpg");
        let e = codec_of(b"hello", p).unwrap_err().to_string();
        assert!(
            e.contains("cats/x.jpg") && e.contains("not a JPEG or PNG header"),
            "{e}"
        );
        let e = codec_of(b"", p).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = codec_of(b"GIF89a....", p).unwrap_err().to_string();
        assert!(e.contains("gif"), "{e}");
    }
}
