//! COCO detection files for `deeplake import --from-coco`: parsing, validation and the
//! rows they become.
//!
//! Required keys: top-level `images`, `annotations`, `categories`; per image `id`
//! (integer) and `file_name`; per category `id` and `name`; per annotation `id`,
//! `image_id`, `category_id` and `bbox` (4 numbers, `[x, y, width, height]` in pixels).
//! Optional, with defaults: image `width`/`height` (checked against the file when
//! given), annotation `area` (bbox width × height, as pycocotools assumes for
//! detections), `iscrowd` (0) and `segmentation` (an all-false mask). A segmentation is a
//! list of polygons or an RLE object (see [`super::mask`]) whose `size` must be the
//! image's `[height, width]`.
//!
//! Rows are the images in id order; an image's annotations are in annotation-id order.
//! Categories become class indices in category-id order. Every error names the image or
//! annotation id it is about.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, bail};
use deeplake_core::{Dtype, NdArray, Sample};
use serde::Deserialize;
use serde_json::Value;

use super::images::Probe;
use super::mask;

/// One mask (all annotations of an image) may hold at most this many pixels × objects.
pub(crate) const MAX_MASK_BYTES: u64 = 1 << 30;

#[derive(Deserialize)]
struct RawCoco {
    images: Option<Vec<RawImage>>,
    annotations: Option<Vec<RawAnnotation>>,
    categories: Option<Vec<RawCategory>>,
}

#[derive(Deserialize)]
struct RawImage {
    id: Option<Value>,
    file_name: Option<Value>,
    width: Option<Value>,
    height: Option<Value>,
}

#[derive(Deserialize)]
struct RawCategory {
    id: Option<Value>,
    name: Option<Value>,
}

#[derive(Deserialize)]
struct RawAnnotation {
    id: Option<Value>,
    image_id: Option<Value>,
    category_id: Option<Value>,
    bbox: Option<Value>,
    area: Option<Value>,
    iscrowd: Option<Value>,
    segmentation: Option<RawSegmentation>,
}

// Typed rather than `Value` so that a large file's polygons are held as plain numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSegmentation {
    Polygons(Vec<Vec<f64>>),
    Rle { counts: RawCounts, size: Value },
    Other(Value),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCounts {
    Runs(Vec<u64>),
    Compressed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Segmentation {
    None,
    /// Flat `x0, y0, x1, y1, ...` lists, one per polygon.
    Polygons(Vec<Vec<f64>>),
    Rle {
        height: u64,
        width: u64,
        runs: Vec<u32>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Annotation {
    pub id: i64,
    /// Index into the class names.
    pub category: u32,
    pub bbox: [f32; 4],
    pub area: f32,
    pub iscrowd: u8,
    pub segmentation: Segmentation,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CocoImage {
    pub id: i64,
    pub file_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub annotations: Vec<Annotation>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CocoPlan {
    /// In image-id order.
    pub images: Vec<CocoImage>,
    /// Category names in category-id order.
    pub class_names: Vec<String>,
    pub num_annotations: usize,
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn show(v: Option<&Value>) -> String {
    v.map(Value::to_string)
        .unwrap_or_else(|| "nothing".to_owned())
}

/// Parses and validates a COCO annotation file. `source` names it in errors.
pub(crate) fn parse(bytes: &[u8], source: &str) -> anyhow::Result<CocoPlan> {
    let raw: RawCoco = serde_json::from_slice(bytes)
        .with_context(|| format!("{source}: not a COCO annotation file"))?;
    let missing = |key: &str| anyhow::anyhow!("{source}: missing key {key:?}");
    let raw_images = raw.images.ok_or_else(|| missing("images"))?;
    let raw_annotations = raw.annotations.ok_or_else(|| missing("annotations"))?;
    let raw_categories = raw.categories.ok_or_else(|| missing("categories"))?;

    let mut categories: BTreeMap<i64, String> = BTreeMap::new();
    for (i, c) in raw_categories.into_iter().enumerate() {
        let id = int(c.id.as_ref()).ok_or_else(|| {
            anyhow::anyhow!("{source}: categories[{i}]: missing or non-integer \"id\"")
        })?;
        let name = match c.name {
            Some(Value::String(s)) => s,
            other => bail!(
                "{source}: category {id}: \"name\" must be a string, got {}",
                show(other.as_ref())
            ),
        };
        if categories.insert(id, name).is_some() {
            bail!("{source}: category id {id} appears twice");
        }
    }
    let class_index: HashMap<i64, u32> = categories
        .keys()
        .enumerate()
        .map(|(i, id)| (*id, i as u32))
        .collect();
    let class_names: Vec<String> = categories.into_values().collect();

    let mut images: BTreeMap<i64, CocoImage> = BTreeMap::new();
    for (i, im) in raw_images.into_iter().enumerate() {
        let id = int(im.id.as_ref()).ok_or_else(|| {
            anyhow::anyhow!("{source}: images[{i}]: missing or non-integer \"id\"")
        })?;
        let file_name = match im.file_name {
            Some(Value::String(s)) if !s.is_empty() => s,
            other => bail!(
                "{source}: image {id}: \"file_name\" must be a file name, got {}",
                show(other.as_ref())
            ),
        };
        let dim = |key: &str, v: Option<Value>| -> anyhow::Result<Option<u64>> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => bail!("{source}: image {id}: {key:?} must be a positive integer, got {v}"),
                },
            }
        };
        let width = dim("width", im.width)?;
        let height = dim("height", im.height)?;
        let image = CocoImage {
            id,
            file_name,
            width,
            height,
            annotations: Vec::new(),
        };
        if images.insert(id, image).is_some() {
            bail!("{source}: image id {id} appears twice");
        }
    }

    let mut seen = std::collections::HashSet::new();
    let num_annotations = raw_annotations.len();
    for (i, a) in raw_annotations.into_iter().enumerate() {
        let id = int(a.id.as_ref()).ok_or_else(|| {
            anyhow::anyhow!("{source}: annotations[{i}]: missing or non-integer \"id\"")
        })?;
        if !seen.insert(id) {
            bail!("{source}: annotation id {id} appears twice");
        }
        let ctx = |msg: String| anyhow::anyhow!("{source}: annotation {id}: {msg}");
        let image_id = int(a.image_id.as_ref()).ok_or_else(|| {
            ctx(format!(
                "\"image_id\" must be an integer, got {}",
                show(a.image_id.as_ref())
            ))
        })?;
        let category_id = int(a.category_id.as_ref()).ok_or_else(|| {
            ctx(format!(
                "\"category_id\" must be an integer, got {}",
                show(a.category_id.as_ref())
            ))
        })?;
        let category = *class_index.get(&category_id).ok_or_else(|| {
            ctx(format!(
                "category_id {category_id} is not the id of an entry in \"categories\""
            ))
        })?;
        let bbox = parse_bbox(a.bbox.as_ref()).map_err(ctx)?;
        let area = match &a.area {
            None | Some(Value::Null) => bbox[2] * bbox[3],
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ctx(format!("\"area\" must be a number, got {v}")))?
                as f32,
        };
        let iscrowd = match &a.iscrowd {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(b)) => u8::from(*b),
            Some(v) => match v.as_u64() {
                Some(n @ (0 | 1)) => n as u8,
                _ => return Err(ctx(format!("\"iscrowd\" must be 0 or 1, got {v}"))),
            },
        };
        let segmentation = parse_segmentation(a.segmentation).map_err(ctx)?;
        let image = images.get_mut(&image_id).ok_or_else(|| {
            ctx(format!(
                "image_id {image_id} is not the id of an entry in \"images\""
            ))
        })?;
        image.annotations.push(Annotation {
            id,
            category,
            bbox,
            area,
            iscrowd,
            segmentation,
        });
    }
    let mut images: Vec<CocoImage> = images.into_values().collect();
    for im in &mut images {
        im.annotations.sort_by_key(|a| a.id);
    }
    Ok(CocoPlan {
        images,
        class_names,
        num_annotations,
    })
}

fn parse_bbox(v: Option<&Value>) -> Result<[f32; 4], String> {
    let bad = || format!("\"bbox\" must be 4 numbers, got {}", show(v));
    let Some(Value::Array(items)) = v else {
        return Err(bad());
    };
    let nums: Vec<f32> = items
        .iter()
        .filter_map(Value::as_f64)
        .map(|x| x as f32)
        .collect();
    match nums[..] {
        [x, y, w, h] if items.len() == 4 => Ok([x, y, w, h]),
        _ => Err(bad()),
    }
}

fn parse_segmentation(raw: Option<RawSegmentation>) -> Result<Segmentation, String> {
    match raw {
        None => Ok(Segmentation::None),
        Some(RawSegmentation::Polygons(polys)) => {
            if let Some((i, p)) = polys.iter().enumerate().find(|(_, p)| p.len() % 2 != 0) {
                return Err(format!(
                    "polygon {i} has an odd number of coordinates ({})",
                    p.len()
                ));
            }
            Ok(Segmentation::Polygons(polys))
        }
        Some(RawSegmentation::Rle { counts, size }) => {
            let (height, width) = match size
                .as_array()
                .map(|s| s.iter().map(Value::as_u64).collect::<Vec<_>>())
            {
                Some(s) => match s[..] {
                    [Some(h), Some(w)] => (h, w),
                    _ => return Err(format!("RLE \"size\" must be [height, width], got {size}")),
                },
                None => return Err(format!("RLE \"size\" must be [height, width], got {size}")),
            };
            let runs = match counts {
                RawCounts::Runs(runs) => runs
                    .into_iter()
                    .map(|r| {
                        u32::try_from(r).map_err(|_| format!("RLE run length {r} is too large"))
                    })
                    .collect::<Result<Vec<u32>, String>>()?,
                RawCounts::Compressed(s) => mask::decode_rle_string(&s)?,
            };
            Ok(Segmentation::Rle {
                height,
                width,
                runs,
            })
        }
        Some(RawSegmentation::Other(v)) => {
            let mut shown = v.to_string();
            if shown.len() > 80 {
                shown = format!("{}...", shown.chars().take(80).collect::<String>());
            }
            Err(format!(
                "\"segmentation\" must be a list of polygons or an RLE object, got {shown}"
            ))
        }
    }
}

/// Checks an image's annotations against its file's header: `width`/`height`, RLE sizes
/// and run totals, and the mask size limit.
pub(crate) fn check_image(im: &CocoImage, probe: &Probe, path: &Path) -> anyhow::Result<()> {
    let (h, w) = match probe.shape[..] {
        [h, w, _] => (h as u64, w as u64),
        _ => bail!(
            "image {} ({}): unexpected shape {:?}",
            im.id,
            path.display(),
            probe.shape
        ),
    };
    if im.width.is_some_and(|x| x != w) || im.height.is_some_and(|x| x != h) {
        bail!(
            "image {} ({}): \"images\" gives {}x{}, the file is {w}x{h} (width x height)",
            im.id,
            path.display(),
            show(im.width.map(Value::from).as_ref()),
            show(im.height.map(Value::from).as_ref()),
        );
    }
    let n = im.annotations.len() as u64;
    if h.saturating_mul(w).saturating_mul(n) > MAX_MASK_BYTES {
        bail!(
            "image {}: {n} masks of {w}x{h} pixels exceed the limit of {MAX_MASK_BYTES} bytes per row",
            im.id
        );
    }
    for a in &im.annotations {
        if let Segmentation::Rle {
            height,
            width,
            runs,
        } = &a.segmentation
        {
            if (*height, *width) != (h, w) {
                bail!(
                    "annotation {}: RLE size [{height}, {width}] is not the size of image {} [{h}, {w}]",
                    a.id,
                    im.id
                );
            }
            mask::check_runs(h as usize, w as usize, runs)
                .map_err(|e| anyhow::anyhow!("annotation {}: {e}", a.id))?;
        }
    }
    Ok(())
}

/// The (H, W, n) boolean mask of an image's annotations, one plane per annotation.
pub(crate) fn build_mask(
    height: usize,
    width: usize,
    anns: &[Annotation],
) -> anyhow::Result<NdArray> {
    let n = anns.len();
    let pixels = height
        .checked_mul(width)
        .filter(|p| p.checked_mul(n).is_some_and(|b| b as u64 <= MAX_MASK_BYTES));
    let Some(pixels) = pixels else {
        bail!(
            "{n} masks of {width}x{height} pixels exceed the limit of {MAX_MASK_BYTES} bytes per row"
        );
    };
    let mut data = vec![0u8; pixels * n];
    let mut plane = vec![false; pixels];
    for (k, a) in anns.iter().enumerate() {
        plane.fill(false);
        match &a.segmentation {
            Segmentation::None => {}
            Segmentation::Polygons(polys) => {
                for p in polys {
                    mask::fill_polygon(&mut plane, height, width, p);
                }
            }
            Segmentation::Rle { runs, .. } => {
                mask::paint_runs(&mut plane, height, width, runs)
                    .map_err(|e| anyhow::anyhow!("annotation {}: {e}", a.id))?;
            }
        }
        // Pixel i of plane k is element (i, k) of the C-order (H·W, n) array; `data`
        // starts all false and masks are sparse, so only set pixels are visited.
        for (i, _) in plane.iter().enumerate().filter(|(_, on)| **on) {
            if let Some(slot) = data.get_mut(i * n + k) {
                *slot = 1;
            }
        }
    }
    Ok(NdArray::new(Dtype::Bool, vec![height, width, n], data)?)
}

/// The annotation samples of one row: boxes, categories, masks, areas, iscrowd.
pub(crate) fn annotation_samples(
    im: &CocoImage,
    height: usize,
    width: usize,
) -> anyhow::Result<[Sample; 5]> {
    let anns = &im.annotations;
    let n = anns.len();
    let boxes: Vec<f32> = anns.iter().flat_map(|a| a.bbox).collect();
    let cats: Vec<u32> = anns.iter().map(|a| a.category).collect();
    let areas: Vec<f32> = anns.iter().map(|a| a.area).collect();
    let crowd: Vec<u8> = anns.iter().map(|a| a.iscrowd).collect();
    let masks = build_mask(height, width, anns).with_context(|| format!("image {}", im.id))?;
    Ok([
        Sample::Array(NdArray::from_slice(vec![n, 4], &boxes)?),
        Sample::Array(NdArray::from_slice(vec![n], &cats)?),
        Sample::Array(masks),
        Sample::Array(NdArray::from_slice(vec![n], &areas)?),
        Sample::Array(NdArray::from_slice(vec![n], &crowd)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use deeplake_core::format::compression::Compression;
    use serde_json::json;

    fn plan(v: Value) -> anyhow::Result<CocoPlan> {
        parse(v.to_string().as_bytes(), "ann.json")
    }

    fn base() -> Value {
        json!({
            "images": [{"id": 7, "file_name": "b.png"}, {"id": 2, "file_name": "a.jpg", "width": 6, "height": 5}],
            "categories": [{"id": 9, "name": "dog"}, {"id": 1, "name": "cat"}],
            "annotations": [
                {"id": 11, "image_id": 2, "category_id": 9, "bbox": [1, 2, 3, 4.5], "area": 3.5, "iscrowd": 0,
                 "segmentation": [[0, 0, 2, 0, 2, 2]]},
                {"id": 10, "image_id": 2, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 1,
                 "segmentation": {"counts": "32i0", "size": [5, 6]}},
            ],
        })
    }

    fn err(v: Value) -> String {
        format!("{:#}", plan(v).unwrap_err())
    }

    #[test]
    fn orders_images_annotations_and_categories_by_id() {
        let p = plan(base()).unwrap();
        assert_eq!(p.class_names, ["cat", "dog"]);
        assert_eq!(p.num_annotations, 2);
        assert_eq!(p.images.iter().map(|i| i.id).collect::<Vec<_>>(), [2, 7]);
        let im = &p.images[0];
        assert_eq!((im.width, im.height), (Some(6), Some(5)));
        assert_eq!(
            im.annotations.iter().map(|a| a.id).collect::<Vec<_>>(),
            [10, 11]
        );
        let (a10, a11) = (&im.annotations[0], &im.annotations[1]);
        assert_eq!((a10.category, a10.iscrowd, a10.area), (0, 1, 4.0));
        assert_eq!(
            a10.segmentation,
            Segmentation::Rle {
                height: 5,
                width: 6,
                runs: vec![3, 2, 25]
            }
        );
        assert_eq!(
            (a11.category, a11.iscrowd, a11.area, a11.bbox),
            (1, 0, 3.5, [1.0, 2.0, 3.0, 4.5])
        );
        assert!(p.images[1].annotations.is_empty());
    }

    #[test]
    fn validation_errors_name_the_entry() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("categories");
        assert!(err(v).contains("missing key \"categories\""));
        let mut v = base();
        v["annotations"][0]["category_id"] = json!(3);
        assert!(err(v).contains("annotation 11: category_id 3 is not the id"));
        let mut v = base();
        v["annotations"][1]["bbox"] = json!([1, 2, 3]);
        assert!(err(v).contains("annotation 10: \"bbox\" must be 4 numbers, got [1,2,3]"));
        let mut v = base();
        v["annotations"][1]["bbox"] = json!([1, 2, "3", 4]);
        assert!(err(v).contains("annotation 10: \"bbox\" must be 4 numbers"));
        let mut v = base();
        v["annotations"][1].as_object_mut().unwrap().remove("bbox");
        assert!(err(v).contains("annotation 10: \"bbox\" must be 4 numbers, got nothing"));
        let mut v = base();
        v["annotations"][0]["image_id"] = json!(99);
        assert!(err(v).contains("annotation 11: image_id 99 is not the id"));
        let mut v = base();
        v["annotations"][0].as_object_mut().unwrap().remove("id");
        assert!(err(v).contains("annotations[0]: missing or non-integer \"id\""));
        let mut v = base();
        v["images"][1].as_object_mut().unwrap().remove("file_name");
        assert!(err(v).contains("image 2: \"file_name\""));
        let mut v = base();
        v["images"][0]["id"] = json!(2);
        assert!(err(v).contains("image id 2 appears twice"));
        let mut v = base();
        v["annotations"][0]["segmentation"] = json!([[0, 0, 2]]);
        assert!(err(v).contains("annotation 11: polygon 0 has an odd number"));
        let mut v = base();
        v["annotations"][0]["segmentation"] = json!({"counts": "3 2", "size": [5, 6]});
        assert!(err(v).contains("annotation 11: compressed RLE has an invalid character"));
        let mut v = base();
        v["annotations"][0]["segmentation"] = json!({"counts": [1, 2], "size": [5]});
        assert!(err(v).contains("annotation 11: RLE \"size\""));
        let mut v = base();
        v["annotations"][0]["segmentation"] = json!("nope");
        assert!(err(v).contains("annotation 11: \"segmentation\" must be"));
        let mut v = base();
        v["annotations"][0]["iscrowd"] = json!(2);
        assert!(err(v).contains("annotation 11: \"iscrowd\" must be 0 or 1"));
        assert!(
            format!("{:#}", parse(b"[1, 2]", "ann.json").unwrap_err())
                .contains("not a COCO annotation file")
        );
    }

    #[test]
    fn images_are_checked_against_their_headers() {
        let p = plan(base()).unwrap();
        let im = &p.images[0];
        let probe = |h, w| Probe {
            codec: Compression::Jpeg,
            shape: vec![h, w, 3],
            len: 10,
        };
        check_image(im, &probe(5, 6), Path::new("a.jpg")).unwrap();
        let e = check_image(im, &probe(6, 5), Path::new("a.jpg"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("image 2 (a.jpg): \"images\" gives 6x5, the file is 5x6"),
            "{e}"
        );
        let mut im2 = im.clone();
        im2.width = None;
        im2.height = None;
        let e = check_image(&im2, &probe(6, 5), Path::new("a.jpg"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("annotation 10: RLE size [5, 6] is not the size of image 2 [6, 5]"),
            "{e}"
        );
        let mut im3 = im.clone();
        im3.annotations[0].segmentation = Segmentation::Rle {
            height: 5,
            width: 6,
            runs: vec![3, 2],
        };
        let e = check_image(&im3, &probe(5, 6), Path::new("a.jpg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("annotation 10: RLE runs cover 5 pixels"), "{e}");
    }

    #[test]
    fn masks_interleave_planes() {
        let p = plan(base()).unwrap();
        let m = build_mask(5, 6, &p.images[0].annotations).unwrap();
        assert_eq!(m.shape, vec![5, 6, 2]);
        // Plane 0 (annotation 10): RLE runs 3 zeros, 2 ones: column-major pixels 3, 4 =
        // rows 3 and 4 of column 0. Plane 1 (annotation 11): the triangle (0,0) (2,0)
        // (2,2) spans x in [0.5, 2) on row 0 and [1.5, 2) on row 1.
        let at = |r: usize, c: usize, k: usize| m.data[(r * 6 + c) * 2 + k];
        let on0: Vec<(usize, usize)> = (0..5)
            .flat_map(|r| (0..6).map(move |c| (r, c)))
            .filter(|&(r, c)| at(r, c, 0) == 1)
            .collect();
        let on1: Vec<(usize, usize)> = (0..5)
            .flat_map(|r| (0..6).map(move |c| (r, c)))
            .filter(|&(r, c)| at(r, c, 1) == 1)
            .collect();
        assert_eq!(on0, [(3, 0), (4, 0)]);
        assert_eq!(on1, [(0, 0), (0, 1), (1, 1)]);
        let empty = build_mask(5, 6, &[]).unwrap();
        assert_eq!((empty.shape, empty.data.len()), (vec![5, 6, 0], 0));
    }
}
