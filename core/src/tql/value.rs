//! Values a TQL expression produces for one row: SQL scalars, text, JSON and n-d arrays.
//!
//! Array elements are held as f64 with an element kind, so arithmetic on any dtype is
//! exact for integers below 2^53 and reductions never wrap (a uint8 SUM is a wide sum).
//! NULL propagates through arithmetic and never satisfies a comparison.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::error::{Error, QueryErrorKind, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Bool,
    Int,
    Float,
}

/// An n-d array in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Arr {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
    pub elem: Elem,
}

impl Arr {
    pub fn new(shape: Vec<usize>, data: Vec<f64>, elem: Elem) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Arr { shape, data, elem }
    }

    pub fn vector(data: Vec<f64>, elem: Elem) -> Self {
        Arr {
            shape: vec![data.len()],
            data,
            elem,
        }
    }

    pub fn scalar_at(&self, k: usize) -> Val {
        elem_val(self.data[k], self.elem)
    }

    pub fn to_json(&self) -> Json {
        fn rec(a: &Arr, dim: usize, off: usize, stride: &[usize]) -> Json {
            if dim == a.shape.len() {
                return a.scalar_at(off).to_json();
            }
            Json::Array(
                (0..a.shape[dim])
                    .map(|i| rec(a, dim + 1, off + i * stride[dim], stride))
                    .collect(),
            )
        }
        rec(self, 0, 0, &strides(&self.shape))
    }
}

pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

pub fn elem_val(v: f64, e: Elem) -> Val {
    match e {
        Elem::Bool => Val::Bool(v != 0.0),
        Elem::Int => Val::Int(v as i64),
        Elem::Float => Val::Float(v),
    }
}

#[derive(Clone, Debug)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    /// A JSON object or array (JSON scalars become the scalar variants).
    Json(Arc<Json>),
    Arr(Arc<Arr>),
    /// The members' values of one group, in a grouped select.
    List(Arc<Vec<Val>>),
}

/// Values are equal when they print the same (used to compare planned expressions).
impl PartialEq for Val {
    fn eq(&self, other: &Val) -> bool {
        self.type_name() == other.type_name() && self.to_json() == other.to_json()
    }
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(Arc::from(s))
    }

    pub fn arr(a: Arr) -> Val {
        Val::Arr(Arc::new(a))
    }

    /// A JSON value as a TQL value: scalars unwrap, objects and arrays stay JSON.
    pub fn from_json(j: &Json) -> Val {
        match j {
            Json::Null => Val::Null,
            Json::Bool(b) => Val::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Val::str(s),
            other => Val::Json(Arc::new(other.clone())),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Val::Null => Json::Null,
            Val::Bool(b) => json!(b),
            Val::Int(i) => json!(i),
            Val::Float(f) => {
                if f.is_finite() {
                    json!(f)
                } else {
                    json!(f.to_string())
                }
            }
            Val::Str(s) => json!(&**s),
            Val::Json(j) => (**j).clone(),
            Val::Arr(a) => a.to_json(),
            Val::List(l) => Json::Array(l.iter().map(Val::to_json).collect()),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "str",
            Val::Json(_) => "json",
            Val::Arr(_) => "array",
            Val::List(_) => "group",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Bool(b) => Some(f64::from(u8::from(*b))),
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            Val::Arr(a) if a.data.len() == 1 => Some(a.data[0]),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Bool(b) => Some(i64::from(*b)),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            Val::Arr(a) if a.data.len() == 1 && a.elem != Elem::Float => Some(a.data[0] as i64),
            _ => None,
        }
    }

    /// Truth in WHERE: NULL and false drop the row.
    pub fn truthy(&self) -> bool {
        match self {
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Arr(a) if a.data.len() == 1 => a.data[0] != 0.0,
            _ => false,
        }
    }

    /// Elements of an array-like value (an array, a JSON array, a group), as values.
    pub fn elements(&self) -> Option<Vec<Val>> {
        match self {
            Val::Arr(a) => Some((0..a.data.len()).map(|k| a.scalar_at(k)).collect()),
            Val::Json(j) => j.as_array().map(|v| v.iter().map(Val::from_json).collect()),
            Val::List(l) => Some(l.iter().cloned().collect()),
            _ => None,
        }
    }

    /// Numbers of an array-like value, flattened (groups flatten their members).
    pub fn numbers(&self) -> Option<Vec<f64>> {
        match self {
            Val::Arr(a) => Some(a.data.clone()),
            Val::List(l) => {
                let mut out = Vec::new();
                for v in l.iter() {
                    match v {
                        Val::Null => {}
                        other => out.extend(other.numbers()?),
                    }
                }
                Some(out)
            }
            Val::Json(j) => j
                .as_array()?
                .iter()
                .map(|v| v.as_f64())
                .collect::<Option<Vec<_>>>(),
            other => other.as_f64().map(|f| vec![f]),
        }
    }

    /// Kind of the numbers `numbers` returns.
    pub fn elem(&self) -> Elem {
        match self {
            Val::Arr(a) => a.elem,
            Val::Bool(_) => Elem::Bool,
            Val::Int(_) => Elem::Int,
            Val::List(l) => l
                .iter()
                .map(Val::elem)
                .fold(Elem::Bool, |a, b| match (a, b) {
                    (Elem::Float, _) | (_, Elem::Float) => Elem::Float,
                    (Elem::Int, _) | (_, Elem::Int) => Elem::Int,
                    _ => Elem::Bool,
                }),
            Val::Json(j) => {
                if j.as_array()
                    .is_some_and(|v| v.iter().all(|x| x.as_i64().is_some()))
                {
                    Elem::Int
                } else {
                    Elem::Float
                }
            }
            _ => Elem::Float,
        }
    }

    /// A hashable key for grouping and set operations.
    pub fn key(&self) -> String {
        match self {
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (*f as i64).to_string(),
            other => other.to_json().to_string(),
        }
    }
}

pub fn type_error(pos: usize, msg: impl std::fmt::Display) -> Error {
    Error::query(QueryErrorKind::TypeMismatch, Some(pos), msg)
}

/// Orders two scalars for ORDER BY: NULL first, numbers numerically, text by bytes.
pub fn order(a: &Val, b: &Val) -> Ordering {
    match (a, b) {
        (Val::Null, Val::Null) => Ordering::Equal,
        (Val::Null, _) => Ordering::Less,
        (_, Val::Null) => Ordering::Greater,
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.key().cmp(&b.key()),
        },
    }
}

/// SQL comparison of two scalars; `None` when either is NULL.
pub fn compare(a: &Val, b: &Val, pos: usize) -> Result<Option<Ordering>> {
    Ok(match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Str(_), _) | (_, Val::Str(_)) => {
            return Err(type_error(
                pos,
                format!(
                    "can't compare values of types {} and {}",
                    a.type_name(),
                    b.type_name()
                ),
            ));
        }
        (Val::Json(x), Val::Json(y)) => {
            if x == y {
                Some(Ordering::Equal)
            } else {
                None
            }
        }
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
    })
}
