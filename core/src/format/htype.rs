//! Htypes: parsing (`sequence[link[image]]`), the defaults 3.9.52 applies at
//! `create_tensor`, and the rules a sample must satisfy.
//!
//! Everything here was checked against deeplake 3.9.52 by creating one tensor of each
//! htype and reading back the files it wrote. At creation (`length: 0`):
//!
//! | htype | `dtype` | extra `tensor_meta.json` keys | `tensor_info.json` | companions |
//! |---|---|---|---|---|
//! | generic | null | – | – | id, shape |
//! | image | null | `_info: ["intrinsics"], intrinsics: null` | `{"intrinsics": null}` | id, shape, info |
//! | image.rgb, image.gray | uint8 | – | – | id, shape |
//! | video | uint8 | – | – | id, shape, info |
//! | audio | float64 | – | – | id, shape, info |
//! | class_label | uint32 | `_disable_temp_transform: false, _info: ["class_names"], class_names: []` | `{"class_names": []}` | id, shape |
//! | tag | `"List"` | – | – | id |
//! | bbox, bbox.3d | float32 | `_info: ["coords"], coords: {}` | `{"coords": {}}` | id, shape |
//! | intrinsics, polygon, point_cloud | float32 | – | – | id, shape (+ info for point_cloud) |
//! | binary_mask | bool | – | – | id, shape |
//! | segment_mask | uint32 | `_info: ["class_names"], class_names: []` | `{"class_names": []}` | id, shape, info |
//! | instance_label | uint32 | – | – | id, shape |
//! | keypoints_coco | int32 | `_info: ["keypoints", "connections"], connections: [], keypoints: []` | `{"connections": [], "keypoints": []}` | id, shape |
//! | point | int32 | – | – | id, shape |
//! | text | `"str"` | `vdb_indexes: []` | – | id |
//! | json | `"Any"` | – | – | id |
//! | list | `"List"` | – | – | id, shape (`extend_len`) |
//! | embedding | float32 | `vdb_indexes: []` | – | id, shape |
//! | mesh, dicom, nifti | null | – | – | id, shape, info |
//!
//! * `tensor_info.json` is written only when the htype has default info (the rows above
//!   with a value); `typestr` is null at creation for every htype and is only filled
//!   when the dtype is inferred from the first sample (generic, image, mesh, ...).
//! * `dicom` gets `sample_compression: "dcm"` by default; `jpg`/`tif`/`jp2` are stored
//!   as `jpeg`/`tiff`/`jpeg2000`.
//! * `link[X]` and `sequence[X]` store `htype: "X"` with `is_link` / `is_sequence` set,
//!   the same extra keys and info as `X`, and the same companions (a link tensor created
//!   with `verify=False` gets only the id tensor). `link[sequence[X]]` and
//!   `sequence[link[X]]` both store `is_link: true, is_sequence: true`.
//! * A user dtype overrides the default for every htype but `text` (which must be
//!   `str`); for json/list/tag it is stored as given (3.9.52 accepted `"uint8"`).

use std::fmt;

use serde_json::{Map, Value, json};

use super::compression::Compression;
use super::dtype::Dtype;
use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BaseHtype {
    Generic,
    Image,
    ImageRgb,
    ImageGray,
    Video,
    Audio,
    ClassLabel,
    Tag,
    BBox,
    BBox3d,
    Intrinsics,
    BinaryMask,
    SegmentMask,
    InstanceLabel,
    KeypointsCoco,
    Point,
    Polygon,
    Text,
    Json,
    List,
    Embedding,
    PointCloud,
    Mesh,
    Dicom,
    Nifti,
}

/// A full htype: base plus the link / sequence wrappers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Htype {
    pub base: BaseHtype,
    pub is_link: bool,
    pub is_sequence: bool,
}

impl BaseHtype {
    pub const ALL: [BaseHtype; 25] = [
        BaseHtype::Generic,
        BaseHtype::Image,
        BaseHtype::ImageRgb,
        BaseHtype::ImageGray,
        BaseHtype::Video,
        BaseHtype::Audio,
        BaseHtype::ClassLabel,
        BaseHtype::Tag,
        BaseHtype::BBox,
        BaseHtype::BBox3d,
        BaseHtype::Intrinsics,
        BaseHtype::BinaryMask,
        BaseHtype::SegmentMask,
        BaseHtype::InstanceLabel,
        BaseHtype::KeypointsCoco,
        BaseHtype::Point,
        BaseHtype::Polygon,
        BaseHtype::Text,
        BaseHtype::Json,
        BaseHtype::List,
        BaseHtype::Embedding,
        BaseHtype::PointCloud,
        BaseHtype::Mesh,
        BaseHtype::Dicom,
        BaseHtype::Nifti,
    ];

    /// The name stored in `tensor_meta.json`'s `htype`.
    pub fn name(self) -> &'static str {
        match self {
            BaseHtype::Generic => "generic",
            BaseHtype::Image => "image",
            BaseHtype::ImageRgb => "image.rgb",
            BaseHtype::ImageGray => "image.gray",
            BaseHtype::Video => "video",
            BaseHtype::Audio => "audio",
            BaseHtype::ClassLabel => "class_label",
            BaseHtype::Tag => "tag",
            BaseHtype::BBox => "bbox",
            BaseHtype::BBox3d => "bbox.3d",
            BaseHtype::Intrinsics => "intrinsics",
            BaseHtype::BinaryMask => "binary_mask",
            BaseHtype::SegmentMask => "segment_mask",
            BaseHtype::InstanceLabel => "instance_label",
            BaseHtype::KeypointsCoco => "keypoints_coco",
            BaseHtype::Point => "point",
            BaseHtype::Polygon => "polygon",
            BaseHtype::Text => "text",
            BaseHtype::Json => "json",
            BaseHtype::List => "list",
            BaseHtype::Embedding => "embedding",
            BaseHtype::PointCloud => "point_cloud",
            BaseHtype::Mesh => "mesh",
            BaseHtype::Dicom => "dicom",
            BaseHtype::Nifti => "nifti",
        }
    }

    pub fn from_name(s: &str) -> Result<BaseHtype, Error> {
        BaseHtype::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown htype {s:?}; known: {}",
                    BaseHtype::ALL.map(BaseHtype::name).join(", ")
                ))
            })
    }
}

/// `(is_sequence, is_link, inner)` of an htype string, following 3.x
/// `parse_complex_htype`: one level of each wrapper, in either order.
fn split_wrappers(s: &str) -> Result<(bool, bool, &str), Error> {
    let invalid = || Error::invalid(format!("invalid htype {s:?}"));
    let (is_sequence, is_link, inner) =
        if let Some(inner) = strip_wrapper(s, "sequence").map_err(|()| invalid())? {
            match strip_wrapper(inner, "link").map_err(|()| invalid())? {
                Some(inner) => (true, true, inner),
                None => (true, false, inner),
            }
        } else if let Some(inner) = strip_wrapper(s, "link").map_err(|()| invalid())? {
            match strip_wrapper(inner, "sequence").map_err(|()| invalid())? {
                Some(inner) => (true, true, inner),
                None => (false, true, inner),
            }
        } else {
            (false, false, s)
        };
    if inner.contains(['[', ']']) {
        return Err(invalid());
    }
    Ok((is_sequence, is_link, inner))
}

/// `word` -> `Some("")`, `word[x]` -> `Some("x")`, no `word` prefix -> `None`; any other
/// text after `word` is an error (3.x does not read `sequencex` as a base htype either).
fn strip_wrapper<'a>(text: &'a str, word: &str) -> Result<Option<&'a str>, ()> {
    let Some(rest) = text.strip_prefix(word) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(Some(""));
    }
    rest.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(Some)
        .ok_or(())
}

impl Htype {
    /// Parses `image`, `link[image]`, `sequence[bbox]`, `sequence[link[image]]`,
    /// `link[sequence[image]]`. An empty name (or `sequence` alone) is generic. `link` of
    /// nothing or of `generic`, and `sequence[tag]`, are rejected as in 3.x.
    pub fn parse(s: &str) -> Result<Htype, Error> {
        let (is_sequence, is_link, inner) = split_wrappers(s)?;
        let base = if inner.is_empty() {
            BaseHtype::Generic
        } else {
            BaseHtype::from_name(inner)?
        };
        if is_link && base == BaseHtype::Generic {
            return Err(Error::invalid(format!(
                "htype {s:?}: a linked tensor needs a specific htype, e.g. link[image]"
            )));
        }
        if is_sequence && base == BaseHtype::Tag {
            return Err(Error::invalid("htype sequence[tag] is not supported"));
        }
        Ok(Htype {
            base,
            is_link,
            is_sequence,
        })
    }

    pub fn plain(base: BaseHtype) -> Htype {
        Htype {
            base,
            is_link: false,
            is_sequence: false,
        }
    }

    /// The htype as 3.x reads it back from a tensor meta (`htype`, `is_link`,
    /// `is_sequence`; pass `"generic"` for a null `htype`). Reading is lenient: a wrapped
    /// name in `htype` is folded into the flags, and no creation rule is re-checked.
    pub fn from_meta(htype: &str, is_link: bool, is_sequence: bool) -> Result<Htype, Error> {
        let (seq, link, inner) = split_wrappers(htype)?;
        let base = if inner.is_empty() {
            BaseHtype::Generic
        } else {
            BaseHtype::from_name(inner)?
        };
        Ok(Htype {
            base,
            is_link: is_link || link,
            is_sequence: is_sequence || seq,
        })
    }

    /// Text-like htypes store UTF-8 bytes (text) or JSON (json, list, tag).
    pub fn is_text_like(&self) -> bool {
        matches!(
            self.base,
            BaseHtype::Text | BaseHtype::Json | BaseHtype::List | BaseHtype::Tag
        )
    }

    /// The dtype string 3.x writes in the meta at creation: a numpy name, or `"str"`
    /// (text), `"Any"` (json), `"List"` (list, tag), or `None` where 3.x infers it from
    /// the first sample. `user` overrides where the htype allows (all but text).
    pub fn meta_dtype(&self, user: Option<Dtype>) -> Result<Option<String>, Error> {
        let default = match self.base {
            BaseHtype::Text => {
                if let Some(d) = user {
                    return Err(Error::invalid(format!(
                        "dtype of a text tensor must be str, got {d}"
                    )));
                }
                return Ok(Some("str".to_owned()));
            }
            BaseHtype::Json => Some("Any"),
            BaseHtype::List | BaseHtype::Tag => Some("List"),
            _ => self.default_dtype().map(Dtype::name),
        };
        Ok(user.map(Dtype::name).or(default).map(str::to_owned))
    }

    /// Default numeric dtype (`None` where 3.x infers it from the first sample: generic,
    /// image, mesh, dicom, nifti; and for the text-like htypes).
    pub fn default_dtype(&self) -> Option<Dtype> {
        match self.base {
            BaseHtype::ImageRgb | BaseHtype::ImageGray | BaseHtype::Video => Some(Dtype::U8),
            BaseHtype::Audio => Some(Dtype::F64),
            BaseHtype::ClassLabel | BaseHtype::SegmentMask | BaseHtype::InstanceLabel => {
                Some(Dtype::U32)
            }
            BaseHtype::BBox
            | BaseHtype::BBox3d
            | BaseHtype::Intrinsics
            | BaseHtype::Polygon
            | BaseHtype::Embedding
            | BaseHtype::PointCloud => Some(Dtype::F32),
            BaseHtype::BinaryMask => Some(Dtype::Bool),
            BaseHtype::KeypointsCoco | BaseHtype::Point => Some(Dtype::I32),
            BaseHtype::Generic
            | BaseHtype::Image
            | BaseHtype::Mesh
            | BaseHtype::Dicom
            | BaseHtype::Nifti
            | BaseHtype::Text
            | BaseHtype::Json
            | BaseHtype::List
            | BaseHtype::Tag => None,
        }
    }

    /// The sample compression 3.x applies when the caller gives none (`dcm` for dicom).
    pub fn default_sample_compression(&self) -> Option<Compression> {
        match self.base {
            BaseHtype::Dicom => Some(Compression::Other("dcm".to_owned())),
            _ => None,
        }
    }

    /// Whether 3.x makes the caller pass `sample_compression` (or, for images, either
    /// compression) explicitly at `create_tensor`, even if only to say "none". Mesh also
    /// needs it to be ply or stl (see [`Htype::check_compression`]).
    pub fn requires_compression_arg(&self) -> bool {
        matches!(
            self.base,
            BaseHtype::Image
                | BaseHtype::ImageRgb
                | BaseHtype::ImageGray
                | BaseHtype::Video
                | BaseHtype::Audio
                | BaseHtype::PointCloud
                | BaseHtype::Nifti
                | BaseHtype::Mesh
        )
    }

    /// Validates sample/chunk compression for this htype as 3.9.52 does (both given is an
    /// error; video, audio, point_cloud and nifti allow only a sample compression of
    /// their own kind or none; mesh needs ply or stl; dicom only dcm; text-like, polygon
    /// and embedding only lz4; images any image codec but dcm, or lz4).
    pub fn check_compression(
        &self,
        sample: Option<&Compression>,
        chunk: Option<&Compression>,
    ) -> Result<(), Error> {
        if sample.is_some() && chunk.is_some() {
            return Err(Error::invalid(
                "specifying both sample and chunk compression for the same tensor is not supported",
            ));
        }
        let unsupported = |c: &str| {
            Error::invalid(format!(
                "compression {c:?} is not supported for {} tensors",
                self.base.name()
            ))
        };
        let only = |allowed: &[&str]| -> Result<(), Error> {
            match sample.or(chunk) {
                Some(c) if !allowed.contains(&c.name()) => Err(unsupported(c.name())),
                _ => Ok(()),
            }
        };
        match self.base {
            BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray => match sample.or(chunk)
            {
                Some(c) if c.name() == "dcm" || !(c.is_image() || *c == Compression::Lz4) => {
                    Err(unsupported(c.name()))
                }
                _ => Ok(()),
            },
            BaseHtype::Video | BaseHtype::Audio | BaseHtype::PointCloud | BaseHtype::Nifti => {
                if chunk.is_some() {
                    return Err(Error::invalid(format!(
                        "chunk compression is not supported for {} tensors; use a sample compression",
                        self.base.name()
                    )));
                }
                only(match self.base {
                    BaseHtype::Video => &["mp4", "mkv", "avi"],
                    BaseHtype::Audio => &["mp3", "flac", "wav"],
                    BaseHtype::PointCloud => &["las"],
                    _ => &["nii", "nii.gz"],
                })
            }
            BaseHtype::Mesh => match sample {
                Some(c) if matches!(c.name(), "ply" | "stl") => Ok(()),
                Some(c) => Err(unsupported(c.name())),
                None => Err(Error::invalid(
                    "mesh tensors need sample compression ply or stl",
                )),
            },
            BaseHtype::Dicom => only(&["dcm"]),
            BaseHtype::Text
            | BaseHtype::Json
            | BaseHtype::List
            | BaseHtype::Tag
            | BaseHtype::Polygon
            | BaseHtype::Embedding => only(&["lz4"]),
            BaseHtype::Generic
            | BaseHtype::ClassLabel
            | BaseHtype::BBox
            | BaseHtype::BBox3d
            | BaseHtype::Intrinsics
            | BaseHtype::BinaryMask
            | BaseHtype::SegmentMask
            | BaseHtype::InstanceLabel
            | BaseHtype::KeypointsCoco
            | BaseHtype::Point => Ok(()),
        }
    }

    /// Whether `_<t>_shape` is created (all but text, json, tag). Link tensors created
    /// with `verify=False` get none whatever the htype.
    pub fn has_shape_tensor(&self) -> bool {
        !matches!(
            self.base,
            BaseHtype::Text | BaseHtype::Json | BaseHtype::Tag
        )
    }

    /// Whether `_<t>_info` is created (image, audio, video, dicom, point_cloud, mesh,
    /// nifti, segment_mask; not image.rgb / image.gray). Link tensors created with
    /// `verify=False` get none.
    pub fn has_info_tensor(&self) -> bool {
        matches!(
            self.base,
            BaseHtype::Image
                | BaseHtype::Audio
                | BaseHtype::Video
                | BaseHtype::Dicom
                | BaseHtype::PointCloud
                | BaseHtype::Mesh
                | BaseHtype::Nifti
                | BaseHtype::SegmentMask
        )
    }

    /// Htype-specific keys that go into `tensor_meta.json` (e.g. image: `intrinsics:
    /// null, _info: ["intrinsics"]`; class_label: `class_names: [], _info: [..],
    /// _disable_temp_transform: false`; text/embedding: `vdb_indexes: []`).
    pub fn meta_extra(&self) -> Map<String, Value> {
        let v = match self.base {
            BaseHtype::Image => json!({"_info": ["intrinsics"], "intrinsics": null}),
            BaseHtype::ClassLabel => {
                json!({"_disable_temp_transform": false, "_info": ["class_names"], "class_names": []})
            }
            BaseHtype::BBox | BaseHtype::BBox3d => json!({"_info": ["coords"], "coords": {}}),
            BaseHtype::SegmentMask => json!({"_info": ["class_names"], "class_names": []}),
            BaseHtype::KeypointsCoco => {
                json!({"_info": ["keypoints", "connections"], "connections": [], "keypoints": []})
            }
            BaseHtype::Text | BaseHtype::Embedding => json!({"vdb_indexes": []}),
            _ => json!({}),
        };
        into_map(v)
    }

    /// Default `tensor_info.json` content: the `_info` keys of [`Htype::meta_extra`] with
    /// their defaults (class_label: `class_names: []`; bbox: `coords: {}`; image:
    /// `intrinsics: null`). Empty means 3.x writes no `tensor_info.json` at creation.
    pub fn default_info(&self) -> Map<String, Value> {
        let extra = self.meta_extra();
        let keys = extra
            .get("_info")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        keys.iter()
            .filter_map(Value::as_str)
            .filter_map(|k| extra.get(k).map(|v| (k.to_owned(), v.clone())))
            .collect()
    }

    /// Checks a sample shape on append. 3.9.52 applies no htype-specific shape rule when
    /// appending (observed: bbox `(2, 5)` and `(4,)`, point `(2, 4)`, keypoints_coco
    /// `(5, 2)`, image `(2, 2, 8, 8, 5)` and gray+alpha png `(H, W, 2)` all append and read
    /// back), so neither do we: data 3.x accepts must stay writable. Codec limits (jpeg
    /// channels, ...) are enforced by the encoder. For the stricter rules 3.x applies when
    /// converting a tensor's htype, see [`Htype::check_conversion_shape`].
    pub fn check_shape(&self, shape: &[usize]) -> Result<(), Error> {
        let _ = shape;
        Ok(())
    }

    /// 3.x `HTYPE_CONSTRAINTS`, the rules for converting a generic/image tensor to this
    /// htype, stated for one sample (the batch dimension removed): image ndim 2 or 3 with
    /// 1, 3 or 4 channels; class_label ndim 1; bbox ndim 1 or 2, last dim 4; bbox.3d last
    /// dim 8; binary/segment mask ndim 2 or 3; keypoints_coco ndim 2, dim 0 a multiple of
    /// 3; point ndim 2, last dim 2 or 3; embedding float32.
    pub fn check_conversion_shape(
        &self,
        shape: &[usize],
        dtype: Option<Dtype>,
    ) -> Result<(), Error> {
        let name = self.base.name();
        let ndim_err = || {
            Error::invalid(format!(
                "incompatible number of dimensions for htype {name}: {}",
                shape.len()
            ))
        };
        let shape_err = || {
            Error::invalid(format!(
                "incompatible sample shape for htype {name}: {shape:?}"
            ))
        };
        let last = shape.last().copied();
        match self.base {
            BaseHtype::Image => match shape.len() {
                2 => Ok(()),
                3 if matches!(last, Some(1 | 3 | 4)) => Ok(()),
                3 => Err(shape_err()),
                _ => Err(ndim_err()),
            },
            BaseHtype::ClassLabel if shape.len() != 1 => Err(ndim_err()),
            BaseHtype::BBox | BaseHtype::BBox3d => {
                let want = if self.base == BaseHtype::BBox { 4 } else { 8 };
                if !matches!(shape.len(), 1 | 2) {
                    Err(ndim_err())
                } else if last != Some(want) {
                    Err(shape_err())
                } else {
                    Ok(())
                }
            }
            BaseHtype::BinaryMask | BaseHtype::SegmentMask if !matches!(shape.len(), 2 | 3) => {
                Err(ndim_err())
            }
            BaseHtype::KeypointsCoco => match shape {
                [d0, _] if d0 % 3 == 0 => Ok(()),
                [_, _] => Err(shape_err()),
                _ => Err(ndim_err()),
            },
            BaseHtype::Point => match shape {
                [_, 2 | 3] => Ok(()),
                [_, _] => Err(shape_err()),
                _ => Err(ndim_err()),
            },
            BaseHtype::Embedding if dtype.is_some_and(|d| d != Dtype::F32) => {
                Err(Error::invalid(format!(
                    "incompatible dtype for htype embedding: {}",
                    dtype.map(Dtype::name).unwrap_or_default()
                )))
            }
            _ => Ok(()),
        }
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl fmt::Display for Htype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_sequence, self.is_link) {
            (true, true) => write!(f, "sequence[link[{}]]", self.base.name()),
            (true, false) => write!(f, "sequence[{}]", self.base.name()),
            (false, true) => write!(f, "link[{}]", self.base.name()),
            (false, false) => f.write_str(self.base.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What 3.9.52 wrote for one tensor of each htype right after `create_tensor`:
    /// (htype argument, `htype`, `dtype`, htype-specific meta keys, `tensor_info.json` or
    /// null when absent, companions: s = `_shape`, i = `_info`). Base keys every meta has
    /// are left out.
    fn observed() -> Vec<(
        &'static str,
        &'static str,
        Value,
        Value,
        Value,
        &'static str,
    )> {
        vec![
            (
                "generic",
                "generic",
                Value::Null,
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "image",
                "image",
                Value::Null,
                json!({"_info": ["intrinsics"], "intrinsics": null}),
                json!({"intrinsics": null}),
                "si",
            ),
            (
                "image.rgb",
                "image.rgb",
                json!("uint8"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "image.gray",
                "image.gray",
                json!("uint8"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "video",
                "video",
                json!("uint8"),
                json!({}),
                Value::Null,
                "si",
            ),
            (
                "audio",
                "audio",
                json!("float64"),
                json!({}),
                Value::Null,
                "si",
            ),
            (
                "class_label",
                "class_label",
                json!("uint32"),
                json!({"_disable_temp_transform": false, "_info": ["class_names"], "class_names": []}),
                json!({"class_names": []}),
                "s",
            ),
            ("tag", "tag", json!("List"), json!({}), Value::Null, ""),
            (
                "bbox",
                "bbox",
                json!("float32"),
                json!({"_info": ["coords"], "coords": {}}),
                json!({"coords": {}}),
                "s",
            ),
            (
                "bbox.3d",
                "bbox.3d",
                json!("float32"),
                json!({"_info": ["coords"], "coords": {}}),
                json!({"coords": {}}),
                "s",
            ),
            (
                "intrinsics",
                "intrinsics",
                json!("float32"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "binary_mask",
                "binary_mask",
                json!("bool"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "segment_mask",
                "segment_mask",
                json!("uint32"),
                json!({"_info": ["class_names"], "class_names": []}),
                json!({"class_names": []}),
                "si",
            ),
            (
                "instance_label",
                "instance_label",
                json!("uint32"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "keypoints_coco",
                "keypoints_coco",
                json!("int32"),
                json!({"_info": ["keypoints", "connections"], "connections": [], "keypoints": []}),
                json!({"connections": [], "keypoints": []}),
                "s",
            ),
            (
                "point",
                "point",
                json!("int32"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "polygon",
                "polygon",
                json!("float32"),
                json!({}),
                Value::Null,
                "s",
            ),
            (
                "text",
                "text",
                json!("str"),
                json!({"vdb_indexes": []}),
                Value::Null,
                "",
            ),
            ("json", "json", json!("Any"), json!({}), Value::Null, ""),
            ("list", "list", json!("List"), json!({}), Value::Null, "s"),
            (
                "embedding",
                "embedding",
                json!("float32"),
                json!({"vdb_indexes": []}),
                Value::Null,
                "s",
            ),
            (
                "point_cloud",
                "point_cloud",
                json!("float32"),
                json!({}),
                Value::Null,
                "si",
            ),
            ("mesh", "mesh", Value::Null, json!({}), Value::Null, "si"),
            ("dicom", "dicom", Value::Null, json!({}), Value::Null, "si"),
            ("nifti", "nifti", Value::Null, json!({}), Value::Null, "si"),
            (
                "link[image]",
                "image",
                Value::Null,
                json!({"_info": ["intrinsics"], "intrinsics": null}),
                json!({"intrinsics": null}),
                "si",
            ),
            (
                "link[video]",
                "video",
                json!("uint8"),
                json!({}),
                Value::Null,
                "si",
            ),
            (
                "sequence[bbox]",
                "bbox",
                json!("float32"),
                json!({"_info": ["coords"], "coords": {}}),
                json!({"coords": {}}),
                "s",
            ),
            (
                "sequence[image]",
                "image",
                Value::Null,
                json!({"_info": ["intrinsics"], "intrinsics": null}),
                json!({"intrinsics": null}),
                "si",
            ),
            (
                "sequence[link[image]]",
                "image",
                Value::Null,
                json!({"_info": ["intrinsics"], "intrinsics": null}),
                json!({"intrinsics": null}),
                "si",
            ),
            (
                "link[sequence[image]]",
                "image",
                Value::Null,
                json!({"_info": ["intrinsics"], "intrinsics": null}),
                json!({"intrinsics": null}),
                "si",
            ),
            (
                "sequence[text]",
                "text",
                json!("str"),
                json!({"vdb_indexes": []}),
                Value::Null,
                "",
            ),
            (
                "sequence[json]",
                "json",
                json!("Any"),
                json!({}),
                Value::Null,
                "",
            ),
            (
                "sequence[list]",
                "list",
                json!("List"),
                json!({}),
                Value::Null,
                "s",
            ),
        ]
    }

    #[test]
    fn defaults_match_what_3_9_52_wrote() {
        for (arg, stored, dtype, extra, info, companions) in observed() {
            let h = Htype::parse(arg).unwrap();
            assert_eq!(h.base.name(), stored, "{arg}");
            assert_eq!(h.is_link, arg.contains("link"), "{arg}");
            assert_eq!(h.is_sequence, arg.contains("sequence"), "{arg}");
            assert_eq!(
                h.meta_dtype(None)
                    .unwrap()
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                dtype,
                "{arg}"
            );
            assert_eq!(Value::Object(h.meta_extra()), extra, "{arg}");
            let want_info = if info.is_null() { json!({}) } else { info };
            assert_eq!(Value::Object(h.default_info()), want_info, "{arg}");
            assert_eq!(h.has_shape_tensor(), companions.contains('s'), "{arg}");
            assert_eq!(h.has_info_tensor(), companions.contains('i'), "{arg}");
            assert_eq!(
                Htype::from_meta(stored, h.is_link, h.is_sequence).unwrap(),
                h,
                "{arg}"
            );
        }
    }

    #[test]
    fn parse_follows_3x() {
        let p = |s| Htype::parse(s).unwrap();
        assert_eq!(p(""), Htype::plain(BaseHtype::Generic));
        assert_eq!(
            p("sequence"),
            Htype {
                base: BaseHtype::Generic,
                is_link: false,
                is_sequence: true
            }
        );
        assert_eq!(
            p("sequence[]"),
            Htype {
                base: BaseHtype::Generic,
                is_link: false,
                is_sequence: true
            }
        );
        assert_eq!(p("link[sequence[image]]"), p("sequence[link[image]]"));
        for bad in [
            "link",
            "link[]",
            "link[generic]",
            "sequence[link]",
            "sequence[link[generic]]",
            "link[sequence]",
            "sequence[tag]",
            "sequence[sequence[image]]",
            "link[link[image]]",
            "sequence[image",
            "sequencex",
            "image[",
            "linked",
            "picture",
            "IMAGE",
        ] {
            assert!(Htype::parse(bad).is_err(), "{bad}");
        }
        for h in BaseHtype::ALL {
            assert_eq!(BaseHtype::from_name(h.name()).unwrap(), h);
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "image",
            "link[image]",
            "sequence[bbox]",
            "sequence[link[image]]",
            "bbox.3d",
        ] {
            assert_eq!(Htype::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Htype::parse("link[sequence[image]]").unwrap().to_string(),
            "sequence[link[image]]"
        );
    }

    #[test]
    fn from_meta_is_lenient() {
        let h = Htype::from_meta("generic", true, false).unwrap();
        assert_eq!(
            h,
            Htype {
                base: BaseHtype::Generic,
                is_link: true,
                is_sequence: false
            }
        );
        assert_eq!(
            Htype::from_meta("link[image]", false, false).unwrap(),
            Htype::parse("link[image]").unwrap()
        );
        assert!(Htype::from_meta("nonsense", false, false).is_err());
    }

    #[test]
    fn user_dtypes() {
        let h = |s| Htype::parse(s).unwrap();
        // Observed: class_label dtype=int64 -> "int64", json dtype=uint8 -> "uint8",
        // text dtype=uint8 -> error, image dtype=float32 -> "float32".
        assert_eq!(
            h("class_label")
                .meta_dtype(Some(Dtype::I64))
                .unwrap()
                .as_deref(),
            Some("int64")
        );
        assert_eq!(
            h("json").meta_dtype(Some(Dtype::U8)).unwrap().as_deref(),
            Some("uint8")
        );
        assert_eq!(
            h("image").meta_dtype(Some(Dtype::F32)).unwrap().as_deref(),
            Some("float32")
        );
        assert!(h("text").meta_dtype(Some(Dtype::U8)).is_err());
        assert_eq!(h("generic").default_dtype(), None);
        assert_eq!(h("image").default_dtype(), None);
        assert_eq!(h("binary_mask").default_dtype(), Some(Dtype::Bool));
        assert!(
            h("list").is_text_like() && h("tag").is_text_like() && !h("polygon").is_text_like()
        );
    }

    #[test]
    fn compression_rules_match_3x() {
        let c = |s: &str| Compression::parse(s).unwrap();
        let check = |h: &str, sc: Option<&str>, cc: Option<&str>| {
            let (sc, cc) = (sc.map(c).unwrap_or_default(), cc.map(c).unwrap_or_default());
            Htype::parse(h)
                .unwrap()
                .check_compression(sc.as_ref(), cc.as_ref())
                .is_ok()
        };
        // Accepted by 3.9.52.
        assert!(check("image", Some("jpeg"), None));
        assert!(check("image", None, Some("lz4")));
        assert!(check("image", None, Some("jpeg")));
        assert!(check("image", None, None));
        assert!(check("image.gray", Some("png"), None));
        assert!(check("link[image]", Some("jpg"), None));
        assert!(check("video", Some("mp4"), None));
        assert!(check("audio", None, None));
        assert!(check("audio", Some("wav"), None));
        assert!(check("point_cloud", Some("las"), None));
        assert!(check("mesh", Some("ply"), None));
        assert!(check("dicom", None, None));
        assert!(check("dicom", Some("dcm"), None));
        assert!(check("nifti", Some("nii.gz"), None));
        assert!(check("json", None, Some("lz4")));
        assert!(check("class_label", None, Some("png")));
        assert!(check("generic", None, Some("mp4")));
        assert!(check("generic", Some("jpeg"), None));
        // Refused by 3.9.52.
        assert!(!check("image", Some("jpeg"), Some("lz4")));
        assert!(!check("image", Some("mp4"), None));
        assert!(!check("image", Some("dcm"), None));
        assert!(!check("audio", Some("mp3"), Some("lz4")));
        assert!(!check("text", Some("jpeg"), None));
        assert!(!check("mesh", Some("las"), None));
        assert!(!check("mesh", None, None));
        assert!(!check("dicom", Some("png"), None));
        assert!(!check("embedding", Some("png"), None));
        assert!(!check("polygon", None, Some("png")));
        let dicom = Htype::parse("dicom").unwrap();
        assert_eq!(dicom.default_sample_compression().unwrap().name(), "dcm");
        assert!(Htype::parse("image").unwrap().requires_compression_arg());
        assert!(!Htype::parse("bbox").unwrap().requires_compression_arg());
    }

    #[test]
    fn shapes_3x_accepts_on_append() {
        let h = |s| Htype::parse(s).unwrap();
        for (htype, shape) in [
            ("bbox", &[2usize, 5][..]),
            ("bbox", &[4]),
            ("point", &[2, 4]),
            ("keypoints_coco", &[5, 2]),
            ("image", &[2, 2, 8, 8, 5]),
            ("image", &[8, 10, 2]),
            ("class_label", &[2, 2]),
        ] {
            assert!(h(htype).check_shape(shape).is_ok(), "{htype} {shape:?}");
        }
    }

    #[test]
    fn conversion_constraints() {
        let ok = |s: &str, shape: &[usize]| {
            Htype::parse(s)
                .unwrap()
                .check_conversion_shape(shape, None)
                .is_ok()
        };
        assert!(
            ok("image", &[8, 8])
                && ok("image", &[8, 8, 3])
                && !ok("image", &[8, 8, 5])
                && !ok("image", &[8])
        );
        assert!(ok("bbox", &[2, 4]) && !ok("bbox", &[2, 5]) && !ok("bbox", &[1, 2, 4]));
        assert!(ok("bbox.3d", &[2, 8]) && !ok("bbox.3d", &[2, 9]));
        assert!(
            ok("keypoints_coco", &[51, 2])
                && !ok("keypoints_coco", &[5, 2])
                && !ok("keypoints_coco", &[3])
        );
        assert!(ok("point", &[4, 3]) && !ok("point", &[4, 4]));
        assert!(ok("class_label", &[3]) && !ok("class_label", &[3, 1]));
        assert!(ok("binary_mask", &[4, 4, 2]) && !ok("binary_mask", &[4]));
        let emb = Htype::parse("embedding").unwrap();
        assert!(emb.check_conversion_shape(&[4], Some(Dtype::F32)).is_ok());
        assert!(emb.check_conversion_shape(&[4], Some(Dtype::F64)).is_err());
    }
}
