//! Native per-sample transforms of a stream: resize, crops, flip, normalize, cast.
//!
//! Contract:
//! * Transforms apply in the order given, to decoded arrays only, and run on the CPU
//!   pool with the rest of a batch's preparation.
//! * Images are `(height, width[, channels])`. Resize and the crops need `uint8` pixels
//!   (what JPEG and PNG decode to); normalize turns any dtype into `float32`.
//! * Random transforms draw from a generator seeded by (seed, epoch, source row), so a
//!   row gets the same crop and flip whenever its epoch is replayed or resumed.
//! * A transform that does not fit a sample fails with an error naming the transform,
//!   the tensor and the row.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::dtype::Dtype;

/// The largest side a resize or crop may ask for.
pub const MAX_SIDE: usize = 8192;

/// One transform of a tensor's samples.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Bilinear resize to `height x width`.
    Resize { height: usize, width: usize },
    /// The central `height x width` window.
    CenterCrop { height: usize, width: usize },
    /// A `height x width` window at a random place.
    RandomCrop { height: usize, width: usize },
    /// Mirror left-right with probability `p`.
    HorizontalFlip { p: f64 },
    /// `(x - mean[c]) / std[c]` per channel (the last dimension; one value applies to
    /// all), as float32.
    Normalize { mean: Vec<f32>, std: Vec<f32> },
    /// Convert the values to another dtype (saturating; floats truncate to integers).
    Cast(Dtype),
}

impl Transform {
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Resize { .. } => "resize",
            Transform::CenterCrop { .. } => "center_crop",
            Transform::RandomCrop { .. } => "random_crop",
            Transform::HorizontalFlip { .. } => "flip",
            Transform::Normalize { .. } => "normalize",
            Transform::Cast(_) => "cast",
        }
    }

    /// Checks parameters that do not depend on a sample.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("transform {}: {m}", self.name())));
        match self {
            Transform::Resize { height, width }
            | Transform::CenterCrop { height, width }
            | Transform::RandomCrop { height, width } => {
                if *height == 0 || *width == 0 || *height > MAX_SIDE || *width > MAX_SIDE {
                    return bad(format!(
                        "size {height}x{width} must be between 1 and {MAX_SIDE} on each side"
                    ));
                }
            }
            Transform::HorizontalFlip { p } => {
                if !(0.0..=1.0).contains(p) {
                    return bad(format!("probability {p} is not within 0..1"));
                }
            }
            Transform::Normalize { mean, std } => {
                if mean.is_empty() || std.is_empty() {
                    return bad("mean and std need at least one value".into());
                }
                if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                    return bad("std values must be finite and non-zero".into());
                }
            }
            Transform::Cast(_) => {}
        }
        Ok(())
    }
}

/// Where a sample comes from, for seeding and for errors.
#[derive(Clone, Copy, Debug)]
pub struct SampleAt<'a> {
    pub tensor: &'a str,
    pub row: u64,
    pub seed: u64,
    pub epoch: u64,
}

/// Applies `transforms` in order to `sample` (arrays only; an empty sample passes).
pub fn apply(transforms: &[Transform], sample: Sample, at: SampleAt<'_>) -> Result<Sample> {
    if transforms.is_empty() {
        return Ok(sample);
    }
    let mut a = match sample {
        Sample::Array(a) => a,
        Sample::Empty => return Ok(Sample::Empty),
        other => {
            return Err(Error::invalid(format!(
                "tensor {:?} row {}: transforms need decoded arrays, the sample is {}",
                at.tensor,
                at.row,
                kind(&other)
            )));
        }
    };
    let mut rng = row_rng(at);
    for t in transforms {
        a = apply_one(t, a, &mut rng).map_err(|m| {
            Error::invalid(format!(
                "transform {} on tensor {:?} row {}: {m}",
                t.name(),
                at.tensor,
                at.row
            ))
        })?;
    }
    Ok(Sample::Array(a))
}

fn kind(s: &Sample) -> &'static str {
    match s {
        Sample::Array(_) => "an array",
        Sample::Encoded { .. } => "still encoded (stream with decode on)",
        Sample::Text(_) => "text",
        Sample::Json(_) => "json",
        Sample::List(_) => "a list",
        Sample::Link { .. } => "a link",
        Sample::Polygons(_) => "polygons",
        Sample::Sequence(_) => "a sequence",
        Sample::Empty => "empty",
    }
}

fn row_rng(at: SampleAt<'_>) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&at.seed.to_le_bytes());
    key[8..16].copy_from_slice(&at.epoch.to_le_bytes());
    key[16..24].copy_from_slice(&at.row.to_le_bytes());
    key[24..].copy_from_slice(b"xform\0\0\0");
    ChaCha8Rng::from_seed(key)
}

/// `(height, width, channels)` of an image array.
fn hwc(a: &NdArray) -> std::result::Result<(usize, usize, usize), String> {
    match a.shape[..] {
        [h, w] => Ok((h, w, 1)),
        [h, w, c] => Ok((h, w, c)),
        _ => Err(format!(
            "expects an image of shape (height, width[, channels]), got {:?}",
            a.shape
        )),
    }
}

fn apply_one(
    t: &Transform,
    a: NdArray,
    rng: &mut ChaCha8Rng,
) -> std::result::Result<NdArray, String> {
    match t {
        Transform::Resize { height, width } => resize(&a, *height, *width),
        Transform::CenterCrop { height, width } => {
            let (h, w, _) = hwc(&a)?;
            fits(h, w, *height, *width)?;
            crop(&a, (h - height) / 2, (w - width) / 2, *height, *width)
        }
        Transform::RandomCrop { height, width } => {
            let (h, w, _) = hwc(&a)?;
            fits(h, w, *height, *width)?;
            let top = rng.random_range(0..=h - height);
            let left = rng.random_range(0..=w - width);
            crop(&a, top, left, *height, *width)
        }
        Transform::HorizontalFlip { p } => {
            if rng.random::<f64>() < *p {
                flip(&a)
            } else {
                Ok(a)
            }
        }
        Transform::Normalize { mean, std } => normalize(&a, mean, std),
        Transform::Cast(d) => Ok(a.cast(*d)),
    }
}

fn fits(h: usize, w: usize, ch: usize, cw: usize) -> std::result::Result<(), String> {
    if ch > h || cw > w {
        return Err(format!("a {ch}x{cw} window does not fit a {h}x{w} image"));
    }
    Ok(())
}

fn crop(
    a: &NdArray,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
) -> std::result::Result<NdArray, String> {
    let (_, w, c) = hwc(a)?;
    let px = c * a.dtype.size();
    let mut out = Vec::with_capacity(height * width * px);
    for y in top..top + height {
        let start = (y * w + left) * px;
        out.extend_from_slice(&a.data[start..start + width * px]);
    }
    let mut shape = a.shape.clone();
    shape[0] = height;
    shape[1] = width;
    NdArray::new(a.dtype, shape, out).map_err(|e| e.to_string())
}

fn flip(a: &NdArray) -> std::result::Result<NdArray, String> {
    let (h, w, c) = hwc(a)?;
    let px = c * a.dtype.size();
    let mut out = Vec::with_capacity(a.data.len());
    for y in 0..h {
        let row = &a.data[y * w * px..(y + 1) * w * px];
        for x in (0..w).rev() {
            out.extend_from_slice(&row[x * px..(x + 1) * px]);
        }
    }
    NdArray::new(a.dtype, a.shape.clone(), out).map_err(|e| e.to_string())
}

fn resize(a: &NdArray, height: usize, width: usize) -> std::result::Result<NdArray, String> {
    resize_image(a, height, width).map_err(|e| match e {
        Error::InvalidInput { message } => message,
        other => other.to_string(),
    })
}

/// Bilinear (antialiased when shrinking) resize of `(height, width[, channels])` uint8
/// pixels of 1 to 4 channels, on the SIMD kernels of `fast_image_resize`. The shared
/// resize of streams and transforms.
pub fn resize_image(a: &NdArray, height: usize, width: usize) -> Result<NdArray> {
    let (h, w, _) = resize_dims(&a.shape, height, width)?;
    if a.dtype != Dtype::U8 {
        return Err(Error::invalid(format!(
            "resizes uint8 images, the sample is {} (cast it first)",
            a.dtype.name()
        )));
    }
    if (h, w) == (height, width) {
        return Ok(a.clone());
    }
    resize_pixels(&a.data, &a.shape, height, width)
}

/// The source's `(height, width, channels)`, once the source and target sides are
/// known to be resizable.
fn resize_dims(shape: &[usize], height: usize, width: usize) -> Result<(usize, usize, usize)> {
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] => (h, w, c),
        _ => {
            return Err(Error::invalid(format!(
                "expects an image of shape (height, width[, channels]), got {shape:?}"
            )));
        }
    };
    if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
        return Err(Error::invalid(format!(
            "cannot resize to {height}x{width}: each side must be within 1..={MAX_SIDE}"
        )));
    }
    if h == 0 || w == 0 {
        return Err(Error::invalid(format!(
            "cannot resize an empty image of shape {shape:?}"
        )));
    }
    Ok((h, w, c))
}

thread_local! {
    /// Each thread's resizer keeps its scratch rows between samples.
    static RESIZER: std::cell::RefCell<fast_image_resize::Resizer> =
        std::cell::RefCell::new(fast_image_resize::Resizer::new());
}

/// [`resize_image`] of uint8 pixels held in a borrowed buffer of `shape` (a decoder's
/// scratch buffer), so the full-size image need not be an array of its own.
pub fn resize_pixels(
    pixels: &[u8],
    shape: &[usize],
    height: usize,
    width: usize,
) -> Result<NdArray> {
    use fast_image_resize as fr;
    let (h, w, c) = resize_dims(shape, height, width)?;
    let mut out_shape = shape.to_vec();
    out_shape[0] = height;
    out_shape[1] = width;
    if (h, w) == (height, width) {
        return NdArray::new(Dtype::U8, out_shape, pixels.to_vec());
    }
    let pixel = match c {
        1 => fr::PixelType::U8,
        2 => fr::PixelType::U8x2,
        3 => fr::PixelType::U8x3,
        4 => fr::PixelType::U8x4,
        _ => {
            return Err(Error::invalid(format!(
                "resizes images of 1 to 4 channels, not {c}"
            )));
        }
    };
    let side = |v: usize| u32::try_from(v).map_err(Error::invalid);
    let src = fr::images::ImageRef::new(side(w)?, side(h)?, pixels, pixel)
        .map_err(|e| Error::invalid(format!("the pixel buffer does not match the shape: {e}")))?;
    let mut dst = fr::images::Image::new(side(width)?, side(height)?, pixel);
    // Channels are filtered independently: a second or fourth channel is data here, not
    // necessarily alpha to premultiply by.
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .use_alpha(false);
    let resized = RESIZER.with(|r| match r.try_borrow_mut() {
        Ok(mut r) => r.resize(&src, &mut dst, &opts),
        // Only a resize inside a resize on this thread finds it taken.
        Err(_) => fr::Resizer::new().resize(&src, &mut dst, &opts),
    });
    resized.map_err(|e| Error::internal(format!("resize to {height}x{width}: {e}")))?;
    NdArray::new(Dtype::U8, out_shape, dst.into_vec())
}

fn normalize(a: &NdArray, mean: &[f32], std: &[f32]) -> std::result::Result<NdArray, String> {
    let c = if a.shape.is_empty() {
        1
    } else {
        a.shape[a.shape.len() - 1].max(1)
    };
    for (name, v) in [("mean", mean), ("std", std)] {
        if v.len() != 1 && v.len() != c {
            return Err(format!(
                "{name} has {} values; the samples have {c} channels (give 1 or {c})",
                v.len()
            ));
        }
    }
    let x = a.to_f64_vec();
    let mut out = Vec::with_capacity(x.len() * 4);
    for (i, v) in x.iter().enumerate() {
        let k = i % c;
        let m = mean[if mean.len() == 1 { 0 } else { k }];
        let s = std[if std.len() == 1 { 0 } else { k }];
        out.extend_from_slice(&((*v as f32 - m) / s).to_le_bytes());
    }
    NdArray::new(Dtype::F32, a.shape.clone(), out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(row: u64) -> SampleAt<'static> {
        SampleAt {
            tensor: "images",
            row,
            seed: 9,
            epoch: 0,
        }
    }

    fn image(h: usize, w: usize) -> NdArray {
        let data: Vec<u8> = (0..h * w * 3).map(|i| (i % 251) as u8).collect();
        NdArray::from_slice(vec![h, w, 3], &data).unwrap()
    }

    fn arr(s: Sample) -> NdArray {
        match s {
            Sample::Array(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// The SIMD kernel agrees with the image crate's triangle filter (an independent
    /// antialiased bilinear) within 2 levels, shrinking, keeping and growing, for 1 to
    /// 4 channels; bad targets are errors that say why.
    /// Resizing borrowed pixels equals resizing the array, the per-thread resizer
    /// carries nothing from one size to the next, and bad shapes are refused alike.
    #[test]
    fn resizing_borrowed_pixels_equals_resizing_the_array() {
        for (h, w, oh, ow) in [
            (32, 40, 16, 20),
            (9, 7, 20, 3),
            (16, 16, 16, 16),
            (5, 6, 1, 1),
        ] {
            let a = image(h, w);
            let want = resize_image(&a, oh, ow).unwrap();
            let got = resize_pixels(&a.data, &a.shape, oh, ow).unwrap();
            assert_eq!(
                (got.shape.clone(), got.data.clone()),
                (want.shape, want.data)
            );
        }
        let a = image(4, 4);
        for bad in [vec![4usize], vec![4, 0, 3], vec![4, 4, 5]] {
            assert!(resize_pixels(&a.data, &bad, 2, 2).is_err(), "{bad:?}");
        }
        assert!(resize_pixels(&a.data, &[4, 4, 3], 0, 2).is_err());
        assert!(resize_pixels(&a.data[..10], &[4, 4, 3], 2, 2).is_err());
    }

    #[test]
    fn resize_matches_a_reference_bilinear_kernel() {
        use image::imageops::{FilterType, resize};
        use image::{ImageBuffer, Luma, LumaA, Pixel, Rgb, Rgba};
        fn reference<P: Pixel<Subpixel = u8> + 'static>(
            a: &NdArray,
            oh: usize,
            ow: usize,
        ) -> Vec<u8> {
            let img: ImageBuffer<P, &[u8]> =
                ImageBuffer::from_raw(a.shape[1] as u32, a.shape[0] as u32, &a.data[..]).unwrap();
            resize(&img, ow as u32, oh as u32, FilterType::Triangle).into_raw()
        }
        let (h, w) = (37usize, 53usize);
        for c in 1..=4usize {
            let px: Vec<u8> = (0..h * w * c)
                .map(|i| ((i * 7919) % 251) as u8 / 2 + ((i / c) % w) as u8)
                .collect();
            let a = NdArray::from_slice(vec![h, w, c], &px).unwrap();
            for (oh, ow) in [(16, 20), (37, 53), (64, 80)] {
                let ours = resize_image(&a, oh, ow).unwrap();
                assert_eq!(ours.shape, vec![oh, ow, c]);
                let want = match c {
                    1 => reference::<Luma<u8>>(&a, oh, ow),
                    2 => reference::<LumaA<u8>>(&a, oh, ow),
                    3 => reference::<Rgb<u8>>(&a, oh, ow),
                    _ => reference::<Rgba<u8>>(&a, oh, ow),
                };
                let worst = ours
                    .data
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (i16::from(*x) - i16::from(*y)).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 2, "{c} channels, {oh}x{ow}: differs by {worst}");
            }
        }
        let gray = NdArray::from_slice(vec![4, 6], &[7u8; 24]).unwrap();
        assert_eq!(resize_image(&gray, 2, 3).unwrap().shape, vec![2, 3]);
        let e = resize_image(&image(4, 4), 0, 3).unwrap_err().to_string();
        assert!(e.contains("0x3"), "{e}");
        let five = NdArray::from_slice(vec![2, 2, 5], &[0u8; 20]).unwrap();
        let e = resize_image(&five, 1, 1).unwrap_err().to_string();
        assert!(e.contains("not 5"), "{e}");
        let f = NdArray::from_slice(vec![2, 2, 3], &[0f32; 12]).unwrap();
        assert!(
            resize_image(&f, 1, 1)
                .unwrap_err()
                .to_string()
                .contains("uint8")
        );
    }

    #[test]
    fn crops_take_the_right_window() {
        let a = image(6, 8);
        let c = arr(apply(
            &[Transform::CenterCrop {
                height: 2,
                width: 4,
            }],
            Sample::Array(a.clone()),
            at(0),
        )
        .unwrap());
        assert_eq!(c.shape, vec![2, 4, 3]);
        // Row 2, column 2 of the source is the window's first pixel.
        assert_eq!(&c.data[..3], &a.data[(2 * 8 + 2) * 3..(2 * 8 + 2) * 3 + 3]);
        let too_big = apply(
            &[Transform::CenterCrop {
                height: 7,
                width: 1,
            }],
            Sample::Array(a),
            at(3),
        )
        .unwrap_err()
        .to_string();
        assert!(
            too_big.contains("row 3") && too_big.contains("center_crop"),
            "{too_big}"
        );
    }

    #[test]
    fn random_transforms_repeat_per_row_and_epoch() {
        let t = [
            Transform::RandomCrop {
                height: 4,
                width: 4,
            },
            Transform::HorizontalFlip { p: 0.5 },
        ];
        let a = image(16, 16);
        let one = |row, epoch| {
            arr(apply(&t, Sample::Array(a.clone()), SampleAt { epoch, ..at(row) }).unwrap())
        };
        assert_eq!(one(5, 1), one(5, 1));
        let distinct: std::collections::HashSet<Vec<u8>> =
            (0..20).map(|r| one(r, 0).data.to_vec()).collect();
        assert!(distinct.len() > 5, "crops barely vary: {}", distinct.len());
    }

    #[test]
    fn flip_mirrors_columns() {
        let a = NdArray::from_slice(vec![1, 3], &[1u8, 2, 3]).unwrap();
        let f = arr(apply(
            &[Transform::HorizontalFlip { p: 1.0 }],
            Sample::Array(a),
            at(0),
        )
        .unwrap());
        assert_eq!(&f.data[..], &[3, 2, 1]);
    }

    #[test]
    fn resize_and_normalize() {
        let a = image(32, 48);
        let r = arr(apply(
            &[
                Transform::Resize {
                    height: 16,
                    width: 24,
                },
                Transform::Normalize {
                    mean: vec![0.0, 0.0, 0.0],
                    std: vec![255.0],
                },
            ],
            Sample::Array(a),
            at(0),
        )
        .unwrap());
        assert_eq!((r.shape.clone(), r.dtype), (vec![16, 24, 3], Dtype::F32));
        assert!(r.to_f64_vec().iter().all(|v| (0.0..=1.0).contains(v)));
        let flat = NdArray::from_slice(vec![2, 2, 1], &[10u8, 10, 10, 10]).unwrap();
        let same = arr(apply(
            &[Transform::Resize {
                height: 1,
                width: 1,
            }],
            Sample::Array(flat),
            at(0),
        )
        .unwrap());
        assert_eq!(&same.data[..], &[10]);
        let wrong = Transform::Normalize {
            mean: vec![0.0, 0.0],
            std: vec![1.0],
        };
        assert!(apply(&[wrong], Sample::Array(image(2, 2)), at(0)).is_err());
        assert!(Transform::HorizontalFlip { p: 2.0 }.validate().is_err());
        assert!(
            Transform::Normalize {
                mean: vec![0.0],
                std: vec![0.0]
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn non_arrays_are_refused_by_name() {
        let e = apply(
            &[Transform::Cast(Dtype::F32)],
            Sample::Text("x".into()),
            at(7),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("row 7") && e.contains("text"), "{e}");
        assert_eq!(
            apply(&[Transform::Cast(Dtype::F32)], Sample::Empty, at(0)).unwrap(),
            Sample::Empty
        );
    }
}
