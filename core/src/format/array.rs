//! In-memory values: [`NdArray`] (dtype + shape + little-endian C-order bytes) and
//! [`Sample`], what a user appends and what a read returns.

use bytes::Bytes;

use super::compression::Compression;
use super::dtype::Dtype;
use crate::error::{Error, Result};

/// An n-dimensional array: little-endian, C order.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl NdArray {
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: impl Into<Bytes>) -> Result<Self> {
        let data = data.into();
        let n: usize = shape.iter().product();
        if n.checked_mul(dtype.size()) != Some(data.len()) {
            return Err(Error::invalid(format!(
                "array of shape {shape:?} and dtype {dtype} needs {} bytes, got {}",
                n.saturating_mul(dtype.size()),
                data.len()
            )));
        }
        Ok(NdArray { dtype, shape, data })
    }

    /// An array of zero elements with the given number of dims (shape all zeros).
    pub fn empty(dtype: Dtype, ndim: usize) -> Self {
        NdArray {
            dtype,
            shape: vec![0; ndim],
            data: Bytes::new(),
        }
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Builds an array from native values.
    pub fn from_slice<T: Element>(shape: Vec<usize>, values: &[T]) -> Result<Self> {
        let mut data = Vec::with_capacity(values.len() * T::DTYPE.size());
        for v in values {
            v.put_le(&mut data);
        }
        NdArray::new(T::DTYPE, shape, data)
    }

    pub fn scalar<T: Element>(v: T) -> Self {
        let mut data = Vec::with_capacity(T::DTYPE.size());
        v.put_le(&mut data);
        NdArray {
            dtype: T::DTYPE,
            shape: vec![1],
            data: data.into(),
        }
    }

    /// Every element as f64 (bool → 0/1), for comparisons, display and casting.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let s = self.dtype.size();
        self.data
            .chunks_exact(s)
            .map(|b| element_to_f64(self.dtype, b))
            .collect()
    }

    /// Converts to another dtype (numpy `astype` semantics for in-range values).
    pub fn cast(&self, to: Dtype) -> NdArray {
        if to == self.dtype {
            return self.clone();
        }
        let mut out = Vec::with_capacity(self.num_elements() * to.size());
        for v in self.to_f64_vec() {
            put_f64_as(to, v, &mut out);
        }
        NdArray {
            dtype: to,
            shape: self.shape.clone(),
            data: out.into(),
        }
    }
}

/// Reads one little-endian element as f64.
pub fn element_to_f64(dtype: Dtype, b: &[u8]) -> f64 {
    fn a<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut x = [0u8; N];
        x.copy_from_slice(&b[..N]);
        x
    }
    match dtype {
        Dtype::Bool => (b[0] != 0) as u8 as f64,
        Dtype::U8 => b[0] as f64,
        Dtype::I8 => b[0] as i8 as f64,
        Dtype::U16 => u16::from_le_bytes(a(b)) as f64,
        Dtype::I16 => i16::from_le_bytes(a(b)) as f64,
        Dtype::U32 => u32::from_le_bytes(a(b)) as f64,
        Dtype::I32 => i32::from_le_bytes(a(b)) as f64,
        Dtype::U64 => u64::from_le_bytes(a(b)) as f64,
        Dtype::I64 => i64::from_le_bytes(a(b)) as f64,
        Dtype::F16 => f16_to_f64(u16::from_le_bytes(a(b))),
        Dtype::F32 => f32::from_le_bytes(a(b)) as f64,
        Dtype::F64 => f64::from_le_bytes(a(b)),
    }
}

/// Writes `v` as one little-endian element of `dtype` (saturating for integers).
pub fn put_f64_as(dtype: Dtype, v: f64, out: &mut Vec<u8>) {
    match dtype {
        Dtype::Bool => out.push((v != 0.0) as u8),
        Dtype::U8 => out.push(v as u8),
        Dtype::I8 => out.push(v as i8 as u8),
        Dtype::U16 => out.extend_from_slice(&(v as u16).to_le_bytes()),
        Dtype::I16 => out.extend_from_slice(&(v as i16).to_le_bytes()),
        Dtype::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
        Dtype::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        Dtype::U64 => out.extend_from_slice(&(v as u64).to_le_bytes()),
        Dtype::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
        Dtype::F16 => out.extend_from_slice(&f64_to_f16(v).to_le_bytes()),
        Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn f64_to_f16(v: f64) -> u16 {
    let x = v as f32;
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7e00;
    }
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    if exp >= 31 {
        return sign | 0x7c00;
    }
    if exp <= 0 {
        if exp < -10 {
            return sign;
        }
        let m = (mant | 0x80_0000) >> (1 - exp);
        // round to nearest
        let r = (m + 0x1000) >> 13;
        return sign | r as u16;
    }
    let r = ((exp as u32) << 10) | (mant >> 13);
    let round = (mant >> 12) & 1;
    sign | (r + round) as u16
}

/// A native element type.
pub trait Element: Copy {
    const DTYPE: Dtype;
    fn put_le(&self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $d;
            fn put_le(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(u8, Dtype::U8);
element!(u16, Dtype::U16);
element!(u32, Dtype::U32);
element!(u64, Dtype::U64);
element!(i8, Dtype::I8);
element!(i16, Dtype::I16);
element!(i32, Dtype::I32);
element!(i64, Dtype::I64);
element!(f32, Dtype::F32);
element!(f64, Dtype::F64);

impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
    fn put_le(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

/// One sample, as appended or as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// A numeric array (generic, class_label, bbox, decoded image pixels, ...).
    Array(NdArray),
    /// Already-compressed bytes, stored verbatim when the tensor's sample compression
    /// matches (an image file read from disk). `shape` is filled from the header when
    /// the codec is known.
    Encoded {
        bytes: Bytes,
        compression: Compression,
        shape: Option<Vec<usize>>,
    },
    /// text htype; also a class name for class_label tensors.
    Text(String),
    /// json htype.
    Json(serde_json::Value),
    /// list and tag htypes (also a list of class names for class_label).
    List(Vec<serde_json::Value>),
    /// A link tensor's target.
    Link {
        path: String,
        creds_key: Option<String>,
    },
    /// A polygon sample: one `(points, dims)` array per polygon.
    Polygons(Vec<NdArray>),
    /// A sequence tensor's sample: its items.
    Sequence(Vec<Sample>),
    /// An empty sample (`None` in Python): zero bytes and an all-zero shape.
    Empty,
}
