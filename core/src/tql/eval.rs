//! Evaluates an expression for one row (or one group) of a frame. Pure CPU work over
//! columns loaded beforehand; the executor runs it over rows on rayon.

use std::collections::HashMap;
use std::sync::Arc;

use super::ast::{Arg, BinOp, Expr, ExprKind, IndexItem, Lit};
use super::frame::Frame;
use super::value::{Arr, Elem, Val, compare, elem_val, strides, type_error};
use crate::error::{Error, QueryErrorKind, Result};

/// Corpus statistics of one text column, for BM25_SIMILARITY.
#[derive(Debug, Default)]
pub struct Bm25 {
    pub docs: f64,
    pub avg_len: f64,
    pub df: HashMap<String, f64>,
}

pub fn tokens(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

impl Bm25 {
    pub fn build<'a>(texts: impl Iterator<Item = &'a str>) -> Self {
        let mut b = Bm25::default();
        let mut total = 0.0;
        for t in texts {
            b.docs += 1.0;
            let mut seen = std::collections::HashSet::new();
            for tok in tokens(t) {
                total += 1.0;
                if seen.insert(tok.clone()) {
                    *b.df.entry(tok).or_default() += 1.0;
                }
            }
        }
        b.avg_len = if b.docs > 0.0 { total / b.docs } else { 0.0 };
        b
    }

    fn score(&self, doc: &str, query: &str) -> f64 {
        const K1: f64 = 1.2;
        const B: f64 = 0.75;
        let words: Vec<String> = tokens(doc).collect();
        let len = words.len() as f64;
        let mut s = 0.0;
        for q in tokens(query) {
            let tf = words.iter().filter(|w| **w == q).count() as f64;
            if tf == 0.0 {
                continue;
            }
            let n = self.df.get(&q).copied().unwrap_or(0.0);
            let idf = ((self.docs - n + 0.5) / (n + 0.5) + 1.0).ln();
            let norm = if self.avg_len > 0.0 {
                len / self.avg_len
            } else {
                1.0
            };
            s += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * norm));
        }
        s
    }
}

/// What an expression is evaluated against.
pub struct Env<'a> {
    pub frame: &'a Frame<'a>,
    pub seed: u64,
    /// BM25 statistics by column name.
    pub bm25: &'a HashMap<String, Bm25>,
}

/// The row being evaluated.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    One {
        pos: usize,
        /// What ROW_NUMBER() returns here.
        number: i64,
    },
    Group {
        members: &'a [usize],
        keys: &'a [Val],
        number: i64,
    },
}

pub fn eval(e: &Expr, env: &Env, row: Row) -> Result<Val> {
    match &e.kind {
        ExprKind::GroupKey(k) => match row {
            Row::Group { keys, .. } => keys
                .get(*k)
                .cloned()
                .ok_or_else(|| Error::internal("group key out of range")),
            Row::One { .. } => Err(Error::internal("a group key outside a grouped select")),
        },
        ExprKind::Lit(l) => Ok(lit(l)),
        ExprKind::Const(v) => Ok(v.clone()),
        ExprKind::Column { qualifier, name } => match row {
            Row::One { pos, .. } => env.frame.value(qualifier.as_deref(), name, pos, e.pos),
            Row::Group { members, .. } => {
                let vals = members
                    .iter()
                    .map(|&p| env.frame.value(qualifier.as_deref(), name, p, e.pos))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Val::List(Arc::new(vals)))
            }
        },
        ExprKind::Star => Ok(Val::Int(1)),
        ExprKind::Neg(x) => neg(eval(x, env, row)?, e.pos),
        ExprKind::Not(x) => Ok(match eval(x, env, row)? {
            Val::Null => Val::Null,
            Val::Arr(a) => Val::arr(map_arr(&a, Elem::Bool, |v| f64::from(u8::from(v == 0.0)))),
            v => Val::Bool(!v.truthy()),
        }),
        ExprKind::Binary { op, left, right } => {
            let l = eval(left, env, row)?;
            match op {
                BinOp::And if !l.is_null() && !l.truthy() && !matches!(l, Val::Arr(_)) => {
                    return Ok(Val::Bool(false));
                }
                BinOp::Or if l.truthy() && !matches!(l, Val::Arr(_)) => {
                    return Ok(Val::Bool(true));
                }
                _ => {}
            }
            let r = eval(right, env, row)?;
            binary(*op, &l, &r, e.pos)
        }
        ExprKind::Func { name, args } => func(name, args, env, row, e.pos),
        ExprKind::Index { base, items } => {
            let b = eval(base, env, row)?;
            index(&b, items, env, row, e.pos)
        }
        ExprKind::Array(items) => array_lit(items, env, row, e.pos),
        ExprKind::InList {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, env, row)?;
            if v.is_null() {
                return Ok(Val::Null);
            }
            let mut found = false;
            for item in list {
                let w = eval(item, env, row)?;
                if compare(&v, &w, item.pos)? == Some(std::cmp::Ordering::Equal) {
                    found = true;
                    break;
                }
            }
            Ok(Val::Bool(found != *negated))
        }
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = eval(expr, env, row)?;
            let lo = compare(&v, &eval(low, env, row)?, e.pos)?;
            let hi = compare(&v, &eval(high, env, row)?, e.pos)?;
            Ok(match (lo, hi) {
                (Some(a), Some(b)) => Val::Bool((a.is_ge() && b.is_le()) != *negated),
                _ => Val::Null,
            })
        }
        ExprKind::IsNull { expr, negated } => {
            let v = eval(expr, env, row)?;
            Ok(Val::Bool(v.is_null() != *negated))
        }
        ExprKind::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
        } => {
            let v = eval(expr, env, row)?;
            let p = eval(pattern, env, row)?;
            match (&v, &p) {
                (Val::Null, _) | (_, Val::Null) => Ok(Val::Null),
                (Val::Str(s), Val::Str(p)) => {
                    let m = if *case_insensitive {
                        glob(&s.to_lowercase(), &p.to_lowercase())
                    } else {
                        glob(s, p)
                    };
                    Ok(Val::Bool(m != *negated))
                }
                _ => Err(type_error(
                    e.pos,
                    format!(
                        "LIKE needs text on both sides, got {} and {}",
                        v.type_name(),
                        p.type_name()
                    ),
                )),
            }
        }
        ExprKind::Case {
            operand,
            whens,
            otherwise,
        } => {
            let subject = match operand {
                Some(o) => Some(eval(o, env, row)?),
                None => None,
            };
            for (c, then) in whens {
                let cv = eval(c, env, row)?;
                let hit = match &subject {
                    Some(s) => compare(s, &cv, c.pos)? == Some(std::cmp::Ordering::Equal),
                    None => cv.truthy(),
                };
                if hit {
                    return eval(then, env, row);
                }
            }
            match otherwise {
                Some(o) => eval(o, env, row),
                None => Ok(Val::Null),
            }
        }
    }
}

pub fn lit(l: &Lit) -> Val {
    match l {
        Lit::Null => Val::Null,
        Lit::Bool(b) => Val::Bool(*b),
        Lit::Int(i) => Val::Int(*i),
        Lit::Float(f) => Val::Float(*f),
        Lit::Str(s) => Val::str(s),
    }
}

fn neg(v: Val, pos: usize) -> Result<Val> {
    Ok(match v {
        Val::Null => Val::Null,
        Val::Int(i) => Val::Int(i.wrapping_neg()),
        Val::Float(f) => Val::Float(-f),
        Val::Bool(b) => Val::Int(-i64::from(b)),
        Val::Arr(a) => Val::arr(map_arr(&a, promote(a.elem), |x| -x)),
        other => {
            return Err(type_error(
                pos,
                format!("can't negate {}", other.type_name()),
            ));
        }
    })
}

fn promote(e: Elem) -> Elem {
    if e == Elem::Bool { Elem::Int } else { e }
}

fn map_arr(a: &Arr, elem: Elem, f: impl Fn(f64) -> f64) -> Arr {
    Arr::new(
        a.shape.clone(),
        a.data.iter().map(|&x| f(x)).collect(),
        elem,
    )
}

/// An operand of element-wise arithmetic.
fn as_arr(v: &Val) -> Option<Arr> {
    match v {
        Val::Arr(a) => Some((**a).clone()),
        Val::Json(j) if j.is_array() => {
            let nums = v.numbers()?;
            Some(Arr::vector(nums, v.elem()))
        }
        Val::List(_) => Some(Arr::vector(v.numbers()?, v.elem())),
        _ => None,
    }
}

pub fn binary(op: BinOp, l: &Val, r: &Val, pos: usize) -> Result<Val> {
    match op {
        BinOp::And | BinOp::Or => return logic(op, l, r),
        BinOp::Concat => {
            return match (l, r) {
                (Val::Null, _) | (_, Val::Null) => Ok(Val::Null),
                (Val::Str(a), Val::Str(b)) => Ok(Val::str(&format!("{a}{b}"))),
                _ => Err(type_error(pos, "|| joins text only")),
            };
        }
        _ => {}
    }
    if l.is_null() || r.is_null() {
        return Ok(Val::Null);
    }
    let array_side = matches!(l, Val::Arr(_))
        || matches!(r, Val::Arr(_))
        || (matches!(l, Val::Json(j) if j.is_array()) && !matches!(r, Val::Json(_)))
        || matches!(l, Val::List(_))
        || matches!(r, Val::List(_));
    if array_side {
        return elementwise(op, l, r, pos);
    }
    if is_cmp(op) {
        let o = compare(l, r, pos)?;
        return Ok(match o {
            None => {
                // JSON values that differ are simply unequal.
                if matches!(l, Val::Json(_)) || matches!(r, Val::Json(_)) {
                    Val::Bool(op == BinOp::Ne)
                } else {
                    Val::Null
                }
            }
            Some(o) => Val::Bool(cmp_holds(op, o)),
        });
    }
    arith(op, l, r, pos)
}

fn is_cmp(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
    )
}

fn cmp_holds(op: BinOp, o: std::cmp::Ordering) -> bool {
    match op {
        BinOp::Eq => o.is_eq(),
        BinOp::Ne => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::Le => o.is_le(),
        BinOp::Gt => o.is_gt(),
        BinOp::Ge => o.is_ge(),
        _ => false,
    }
}

fn logic(op: BinOp, l: &Val, r: &Val) -> Result<Val> {
    if let (Some(a), Some(b)) = (as_arr(l), as_arr(r)) {
        return zip(&a, &b, Elem::Bool, |x, y| {
            let (x, y) = (x != 0.0, y != 0.0);
            f64::from(u8::from(if op == BinOp::And { x && y } else { x || y }))
        })
        .map(Val::arr)
        .ok_or_else(|| type_error(0, "element-wise logic on arrays of different shapes"));
    }
    let t = |v: &Val| if v.is_null() { None } else { Some(v.truthy()) };
    Ok(match (op, t(l), t(r)) {
        (BinOp::And, Some(false), _) | (BinOp::And, _, Some(false)) => Val::Bool(false),
        (BinOp::And, Some(true), Some(true)) => Val::Bool(true),
        (BinOp::Or, Some(true), _) | (BinOp::Or, _, Some(true)) => Val::Bool(true),
        (BinOp::Or, Some(false), Some(false)) => Val::Bool(false),
        _ => Val::Null,
    })
}

fn arith(op: BinOp, l: &Val, r: &Val, pos: usize) -> Result<Val> {
    let num = |v: &Val| {
        v.as_f64().ok_or_else(|| {
            type_error(
                pos,
                format!("can't apply {} to {}", op.symbol(), v.type_name()),
            )
        })
    };
    let (a, b) = (num(l)?, num(r)?);
    let ints = matches!(l, Val::Int(_) | Val::Bool(_)) && matches!(r, Val::Int(_) | Val::Bool(_));
    if ints && matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mod) {
        let (x, y) = (l.as_i64().unwrap_or(0), r.as_i64().unwrap_or(0));
        return Ok(match op {
            BinOp::Add => x.checked_add(y).map_or(Val::Float(a + b), Val::Int),
            BinOp::Sub => x.checked_sub(y).map_or(Val::Float(a - b), Val::Int),
            BinOp::Mul => x.checked_mul(y).map_or(Val::Float(a * b), Val::Int),
            _ => x.checked_rem_euclid(y).map_or(Val::Null, Val::Int),
        });
    }
    Ok(Val::Float(apply(op, a, b)))
}

fn apply(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a.rem_euclid(b),
        BinOp::Pow => a.powf(b),
        _ => f64::NAN,
    }
}

fn elementwise(op: BinOp, l: &Val, r: &Val, pos: usize) -> Result<Val> {
    // Text against an array of strings: element-wise comparison (`KEYS(j) == 'k'`).
    let text_side = match (l, r) {
        (Val::Str(_), other) => Some((other, l)),
        (other, Val::Str(_)) => Some((other, r)),
        _ => None,
    };
    if let Some((arr, s)) = text_side
        && is_cmp(op)
        && let Some(items) = arr.elements()
    {
        let data = items
            .iter()
            .map(|v| match compare(v, s, pos) {
                Ok(Some(o)) => f64::from(u8::from(cmp_holds(op, o))),
                _ => 0.0,
            })
            .collect();
        return Ok(Val::arr(Arr::vector(data, Elem::Bool)));
    }
    let scalar = |v: &Val| -> Option<Arr> {
        let f = v.as_f64()?;
        let e = match v {
            Val::Float(_) => Elem::Float,
            Val::Bool(_) => Elem::Bool,
            _ => Elem::Int,
        };
        Some(Arr::new(Vec::new(), vec![f], e))
    };
    let (a, b) = match (
        as_arr(l).or_else(|| scalar(l)),
        as_arr(r).or_else(|| scalar(r)),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(type_error(
                pos,
                format!(
                    "can't apply {} to {} and {}",
                    op.symbol(),
                    l.type_name(),
                    r.type_name()
                ),
            ));
        }
    };
    let elem = if is_cmp(op) {
        Elem::Bool
    } else if op == BinOp::Div || op == BinOp::Pow || a.elem == Elem::Float || b.elem == Elem::Float
    {
        Elem::Float
    } else {
        Elem::Int
    };
    let out = zip(&a, &b, elem, |x, y| {
        if is_cmp(op) {
            f64::from(u8::from(
                x.partial_cmp(&y).is_some_and(|o| cmp_holds(op, o)),
            ))
        } else {
            apply(op, x, y)
        }
    })
    .ok_or_else(|| {
        Error::query(
            QueryErrorKind::TypeMismatch,
            Some(pos),
            format!(
                "shape mismatch: {:?} {} {:?}",
                a.shape,
                op.symbol(),
                b.shape
            ),
        )
    })?;
    Ok(Val::arr(out))
}

/// Element-wise with broadcasting of a one-element operand; `None` on a shape mismatch.
fn zip(a: &Arr, b: &Arr, elem: Elem, f: impl Fn(f64, f64) -> f64) -> Option<Arr> {
    if a.data.len() == 1 && b.data.len() != 1 {
        return Some(Arr::new(
            b.shape.clone(),
            b.data.iter().map(|&y| f(a.data[0], y)).collect(),
            elem,
        ));
    }
    if b.data.len() == 1 {
        return Some(Arr::new(
            a.shape.clone(),
            a.data.iter().map(|&x| f(x, b.data[0])).collect(),
            elem,
        ));
    }
    let flat = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if a.shape != b.shape && flat(&a.shape) != flat(&b.shape) {
        return None;
    }
    Some(Arr::new(
        a.shape.clone(),
        a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
        elem,
    ))
}

fn array_lit(items: &[Expr], env: &Env, row: Row, pos: usize) -> Result<Val> {
    let mut data = Vec::new();
    let mut inner: Option<Vec<usize>> = None;
    let mut elem = Elem::Int;
    for it in items {
        let v = eval(it, env, row)?;
        let (shape, d, e) = match &v {
            Val::Arr(a) => (a.shape.clone(), a.data.clone(), a.elem),
            Val::Int(i) => (Vec::new(), vec![*i as f64], Elem::Int),
            Val::Float(f) => (Vec::new(), vec![*f], Elem::Float),
            Val::Bool(b) => (Vec::new(), vec![f64::from(u8::from(*b))], Elem::Bool),
            other => {
                return Err(type_error(
                    it.pos,
                    format!("ARRAY items must be numbers, got {}", other.type_name()),
                ));
            }
        };
        match &inner {
            None => inner = Some(shape),
            Some(s) if *s != shape => {
                return Err(type_error(pos, "ARRAY rows must have one shape"));
            }
            _ => {}
        }
        if e == Elem::Float {
            elem = Elem::Float;
        }
        data.extend(d);
    }
    let mut shape = vec![items.len()];
    shape.extend(inner.unwrap_or_default());
    Ok(Val::arr(Arr::new(shape, data, elem)))
}

fn index(b: &Val, items: &[IndexItem], env: &Env, row: Row, pos: usize) -> Result<Val> {
    let int = |e: &Expr| -> Result<i64> {
        eval(e, env, row)?
            .as_i64()
            .ok_or_else(|| type_error(e.pos, "an index must be an integer"))
    };
    match b {
        Val::Null => Ok(Val::Null),
        Val::Json(j) => {
            let mut cur = (**j).clone();
            for it in items {
                let IndexItem::At(e) = it else {
                    return Err(type_error(
                        pos,
                        "JSON values take keys or integer indices, not slices",
                    ));
                };
                let k = eval(e, env, row)?;
                cur = match (&cur, &k) {
                    (serde_json::Value::Object(m), Val::Str(s)) => {
                        m.get(&**s).cloned().unwrap_or(serde_json::Value::Null)
                    }
                    (serde_json::Value::Array(a), _) if k.as_i64().is_some() => {
                        let i = k.as_i64().unwrap_or(0);
                        let i = if i < 0 { a.len() as i64 + i } else { i };
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| a.get(i))
                            .cloned()
                            .unwrap_or(serde_json::Value::Null)
                    }
                    _ => serde_json::Value::Null,
                };
            }
            Ok(Val::from_json(&cur))
        }
        Val::List(l) => {
            let vals = l
                .iter()
                .map(|v| index(v, items, env, row, pos))
                .collect::<Result<Vec<_>>>()?;
            Ok(Val::List(Arc::new(vals)))
        }
        Val::Arr(a) => {
            if items.len() > a.shape.len() {
                return Err(Error::query(
                    QueryErrorKind::TypeMismatch,
                    Some(pos),
                    format!(
                        "can't index an array of {} dimensions with {} indices",
                        a.shape.len(),
                        items.len()
                    ),
                ));
            }
            // Per dimension: the source positions it keeps, and whether it stays.
            let mut picks: Vec<(Vec<usize>, bool)> = Vec::with_capacity(a.shape.len());
            for (d, &n) in a.shape.iter().enumerate() {
                match items.get(d) {
                    None => picks.push(((0..n).collect(), true)),
                    Some(IndexItem::At(e)) => {
                        let i = int(e)?;
                        let i = if i < 0 { n as i64 + i } else { i };
                        if i < 0 || i >= n as i64 {
                            // Out of range for this sample: no value, not an error.
                            return Ok(Val::Null);
                        }
                        picks.push((vec![i as usize], false));
                    }
                    Some(IndexItem::Slice { start, stop, step }) => {
                        let step = match step {
                            Some(s) => int(s)?,
                            None => 1,
                        };
                        if step == 0 {
                            return Err(type_error(pos, "slice step cannot be zero"));
                        }
                        let start = start.as_ref().map(&int).transpose()?;
                        let stop = stop.as_ref().map(&int).transpose()?;
                        picks.push((slice_positions(n, start, stop, step), true));
                    }
                }
            }
            let st = strides(&a.shape);
            let shape: Vec<usize> = picks.iter().filter(|p| p.1).map(|p| p.0.len()).collect();
            let mut data = Vec::with_capacity(shape.iter().product());
            gather(a, &picks, &st, 0, 0, &mut data);
            if shape.is_empty() {
                return Ok(elem_val(data.first().copied().unwrap_or(0.0), a.elem));
            }
            Ok(Val::arr(Arr::new(shape, data, a.elem)))
        }
        other => Err(type_error(
            pos,
            format!("can't index a value of type {}", other.type_name()),
        )),
    }
}

fn gather(
    a: &Arr,
    picks: &[(Vec<usize>, bool)],
    st: &[usize],
    d: usize,
    off: usize,
    out: &mut Vec<f64>,
) {
    if d == picks.len() {
        out.push(a.data[off]);
        return;
    }
    for &i in &picks[d].0 {
        gather(a, picks, st, d + 1, off + i * st[d], out);
    }
}

/// NumPy's slice rules for a dimension of length `n`.
pub fn slice_positions(n: usize, start: Option<i64>, stop: Option<i64>, step: i64) -> Vec<usize> {
    let n = n as i64;
    let norm = |v: i64, lo: i64, hi: i64| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    let mut out = Vec::new();
    if step > 0 {
        let s = start.map_or(0, |v| norm(v, 0, n));
        let e = stop.map_or(n, |v| norm(v, 0, n));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            match i.checked_add(step) {
                Some(x) => i = x,
                None => break,
            }
        }
    } else {
        let s = start.map_or(n - 1, |v| norm(v, -1, n - 1));
        let e = stop.map_or(-1, |v| norm(v, -1, n - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            match i.checked_add(step) {
                Some(x) => i = x,
                None => break,
            }
        }
    }
    out
}

fn glob(s: &str, p: &str) -> bool {
    let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
    let (mut i, mut j) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if j < p.len() && (p[j] == '?' || p[j] == s[i]) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '*' {
            star = Some(j);
            mark = i;
            j += 1;
        } else if let Some(st) = star {
            j = st + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '*' {
        j += 1;
    }
    j == p.len()
}

/// Functions the engine knows, for the planner's check.
pub const FUNCTIONS: &[&str] = &[
    "SHAPE",
    "CONTAINS",
    "ANY",
    "ALL",
    "ALL_STRICT",
    "LOGICAL_AND",
    "LOGICAL_OR",
    "AMIN",
    "AMAX",
    "SUM",
    "AVG",
    "PROD",
    "ABS",
    "SQRT",
    "L1_NORM",
    "L2_NORM",
    "LINF_NORM",
    "COSINE_SIMILARITY",
    "DOT",
    "DATA",
    "NONZERO",
    "KEYS",
    "ROW_NUMBER",
    "RANDOM",
    "BM25_SIMILARITY",
    "COUNT",
    "LOWER",
    "UPPER",
    "MAX_WEIGHT",
    "SUM_WEIGHT",
    "MIN",
    "MAX",
];

fn func(name: &str, args: &[Arg], env: &Env, row: Row, pos: usize) -> Result<Val> {
    let exprs = || {
        args.iter().map(|a| match a {
            Arg::Expr(e) => Ok(e),
            Arg::Weighted(..) => Err(type_error(
                pos,
                format!("{name} does not take `condition: weight` arguments"),
            )),
        })
    };
    let arity = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            Err(type_error(
                pos,
                format!("{name} takes {n} argument(s), got {}", args.len()),
            ))
        }
    };
    let arg = |k: usize| -> Result<Val> {
        match exprs().nth(k) {
            Some(e) => eval(e?, env, row),
            None => Err(type_error(
                pos,
                format!("{name} is missing argument {}", k + 1),
            )),
        }
    };
    match name {
        "MAX_WEIGHT" | "SUM_WEIGHT" => {
            let mut total = 0.0;
            for a in args {
                let Arg::Weighted(c, w) = a else {
                    return Err(type_error(
                        pos,
                        format!("{name} takes `condition: weight` pairs"),
                    ));
                };
                if eval(c, env, row)?.truthy() {
                    let w = eval(w, env, row)?.as_f64().unwrap_or(0.0);
                    if name == "MAX_WEIGHT" {
                        return Ok(Val::Float(w));
                    }
                    total += w;
                }
            }
            Ok(Val::Float(total))
        }
        "ROW_NUMBER" => {
            arity(0)?;
            Ok(Val::Int(match row {
                Row::One { number, .. } | Row::Group { number, .. } => number,
            }))
        }
        "RANDOM" => {
            arity(0)?;
            let n = match row {
                Row::One { pos, .. } => pos as u64,
                Row::Group { members, .. } => members.first().copied().unwrap_or(0) as u64,
            };
            Ok(Val::Int(
                (splitmix(env.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 1) as i64,
            ))
        }
        "COUNT" => {
            arity(1)?;
            match row {
                Row::Group { members, .. } => {
                    if matches!(&args[0], Arg::Expr(e) if e.kind == super::ast::ExprKind::Star) {
                        return Ok(Val::Int(members.len() as i64));
                    }
                    let v = arg(0)?;
                    Ok(Val::Int(match v {
                        Val::List(l) => l.iter().filter(|x| !x.is_null()).count() as i64,
                        Val::Null => 0,
                        _ => 1,
                    }))
                }
                Row::One { .. } => {
                    if matches!(&args[0], Arg::Expr(e) if e.kind == super::ast::ExprKind::Star) {
                        return Ok(Val::Int(1));
                    }
                    Ok(Val::Int(match arg(0)? {
                        Val::Null => 0,
                        Val::Arr(a) => a.data.len() as i64,
                        v => v.elements().map_or(1, |e| e.len() as i64),
                    }))
                }
            }
        }
        "DATA" => {
            arity(2)?;
            let Some(Ok(Expr {
                kind:
                    super::ast::ExprKind::Column {
                        qualifier,
                        name: col,
                    },
                ..
            })) = exprs().next()
            else {
                return Err(type_error(pos, "DATA takes a column and a row number"));
            };
            let r = arg(1)?
                .as_i64()
                .ok_or_else(|| type_error(pos, "DATA's row must be an integer"))?;
            env.frame.source_value(qualifier.as_deref(), col, r, pos)
        }
        "BM25_SIMILARITY" => {
            arity(2)?;
            let Some(Ok(Expr {
                kind: super::ast::ExprKind::Column { name: col, .. },
                ..
            })) = exprs().next()
            else {
                return Err(type_error(
                    pos,
                    "BM25_SIMILARITY takes a text column and a query",
                ));
            };
            let stats = env
                .bm25
                .get(col)
                .ok_or_else(|| Error::internal(format!("no BM25 statistics for column {col:?}")))?;
            match (arg(0)?, arg(1)?) {
                (Val::Str(d), Val::Str(q)) => Ok(Val::Float(stats.score(&d, &q))),
                (Val::Null, _) => Ok(Val::Null),
                _ => Err(type_error(
                    pos,
                    "BM25_SIMILARITY takes text and a text query",
                )),
            }
        }
        _ => {
            let vals = exprs()
                .map(|e| eval(e?, env, row))
                .collect::<Result<Vec<_>>>()?;
            pure(name, &vals, pos)
        }
    }
}

pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Functions of their argument values only.
fn pure(name: &str, v: &[Val], pos: usize) -> Result<Val> {
    let want = |n: usize| -> Result<()> {
        if v.len() == n {
            Ok(())
        } else {
            Err(type_error(
                pos,
                format!("{name} takes {n} argument(s), got {}", v.len()),
            ))
        }
    };
    let nums = |x: &Val| -> Result<Vec<f64>> {
        x.numbers()
            .ok_or_else(|| type_error(pos, format!("{name} needs numbers, got {}", x.type_name())))
    };
    let reduce_out = |x: &Val, r: f64, keep_kind: bool| -> Val {
        if keep_kind && matches!(x.elem(), Elem::Int | Elem::Bool) {
            Val::Int(r as i64)
        } else {
            Val::Float(r)
        }
    };
    match name {
        "SHAPE" => {
            want(1)?;
            Ok(match &v[0] {
                Val::Null => Val::arr(Arr::vector(vec![0.0], Elem::Int)),
                Val::Arr(a) => Val::arr(Arr::vector(
                    a.shape.iter().map(|&d| d as f64).collect(),
                    Elem::Int,
                )),
                other => Val::arr(Arr::vector(
                    vec![other.elements().map_or(1, |e| e.len()) as f64],
                    Elem::Int,
                )),
            })
        }
        "CONTAINS" => {
            want(2)?;
            Ok(match (&v[0], &v[1]) {
                (Val::Null, _) | (_, Val::Null) => Val::Null,
                (Val::Str(s), Val::Str(t)) => Val::Bool(s.contains(&**t)),
                (hay, needle) => match hay.elements() {
                    Some(items) => Val::Bool(items.iter().any(|x| {
                        compare(x, needle, pos).ok().flatten() == Some(std::cmp::Ordering::Equal)
                    })),
                    None => {
                        Val::Bool(compare(hay, needle, pos)? == Some(std::cmp::Ordering::Equal))
                    }
                },
            })
        }
        "ANY" | "ALL" | "ALL_STRICT" => {
            want(1)?;
            if v[0].is_null() {
                return Ok(Val::Null);
            }
            let items = match v[0].elements() {
                Some(e) => e,
                None => vec![v[0].clone()],
            };
            Ok(Val::Bool(match name {
                "ANY" => items.iter().any(Val::truthy),
                "ALL" => items.iter().all(Val::truthy),
                _ => !items.is_empty() && items.iter().all(Val::truthy),
            }))
        }
        "LOGICAL_AND" | "LOGICAL_OR" => {
            want(2)?;
            logic(
                if name == "LOGICAL_AND" {
                    BinOp::And
                } else {
                    BinOp::Or
                },
                &v[0],
                &v[1],
            )
        }
        "AMIN" | "AMAX" | "MIN" | "MAX" | "SUM" | "AVG" | "PROD" => {
            want(1)?;
            if v[0].is_null() {
                return Ok(Val::Null);
            }
            let xs = nums(&v[0])?;
            if xs.is_empty() {
                return Ok(Val::Int(0));
            }
            Ok(match name {
                "AMIN" | "MIN" => reduce_out(
                    &v[0],
                    xs.iter().copied().fold(f64::INFINITY, f64::min),
                    true,
                ),
                "AMAX" | "MAX" => reduce_out(
                    &v[0],
                    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    true,
                ),
                "SUM" => reduce_out(&v[0], xs.iter().sum(), true),
                "PROD" => reduce_out(&v[0], xs.iter().product(), true),
                _ => Val::Float(xs.iter().sum::<f64>() / xs.len() as f64),
            })
        }
        "ABS" | "SQRT" => {
            want(1)?;
            let f = |x: f64| if name == "ABS" { x.abs() } else { x.sqrt() };
            Ok(match &v[0] {
                Val::Null => Val::Null,
                Val::Int(i) if name == "ABS" => Val::Int(i.wrapping_abs()),
                Val::Arr(a) => Val::arr(map_arr(
                    a,
                    if name == "ABS" {
                        promote(a.elem)
                    } else {
                        Elem::Float
                    },
                    f,
                )),
                other => Val::Float(f(other.as_f64().ok_or_else(|| {
                    type_error(
                        pos,
                        format!("{name} needs a number, got {}", other.type_name()),
                    )
                })?)),
            })
        }
        "L1_NORM" | "L2_NORM" | "LINF_NORM" => {
            want(1)?;
            if v[0].is_null() {
                return Ok(Val::Null);
            }
            let xs = nums(&v[0])?;
            Ok(Val::Float(match name {
                "L1_NORM" => xs.iter().map(|x| x.abs()).sum(),
                "L2_NORM" => xs.iter().map(|x| x * x).sum::<f64>().sqrt(),
                _ => xs.iter().fold(0.0, |m, x| m.max(x.abs())),
            }))
        }
        "COSINE_SIMILARITY" | "DOT" => {
            want(2)?;
            if v[0].is_null() || v[1].is_null() {
                return Ok(Val::Null);
            }
            // Arrays are read in place: a 512-float row is not copied per call.
            let own_a;
            let a: &[f64] = match &v[0] {
                Val::Arr(x) => &x.data,
                other => {
                    own_a = nums(other)?;
                    &own_a
                }
            };
            let own_b;
            let b: &[f64] = match &v[1] {
                Val::Arr(x) => &x.data,
                other => {
                    own_b = nums(other)?;
                    &own_b
                }
            };
            if a.len() != b.len() {
                return Err(Error::query(
                    QueryErrorKind::TypeMismatch,
                    Some(pos),
                    format!("{name} of vectors of lengths {} and {}", a.len(), b.len()),
                ));
            }
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            if name == "DOT" {
                return Ok(Val::Float(dot));
            }
            let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            Ok(if na == 0.0 || nb == 0.0 {
                Val::Null
            } else {
                Val::Float(dot / (na * nb))
            })
        }
        "NONZERO" => {
            want(1)?;
            let Val::Arr(a) = &v[0] else {
                return Ok(Val::Null);
            };
            let st = strides(&a.shape);
            let mut data = Vec::new();
            let mut count = 0;
            for (k, &x) in a.data.iter().enumerate() {
                if x != 0.0 {
                    count += 1;
                    if a.shape.len() <= 1 {
                        data.push(k as f64);
                    } else {
                        let mut rem = k;
                        for s in &st {
                            data.push((rem / s) as f64);
                            rem %= s;
                        }
                    }
                }
            }
            let shape = if a.shape.len() <= 1 {
                vec![count]
            } else {
                vec![count, a.shape.len()]
            };
            Ok(Val::arr(Arr::new(shape, data, Elem::Int)))
        }
        "KEYS" => {
            want(1)?;
            Ok(match &v[0] {
                Val::Json(j) => match j.as_object() {
                    Some(m) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        Val::Json(Arc::new(serde_json::json!(keys)))
                    }
                    None => Val::Null,
                },
                _ => Val::Null,
            })
        }
        "LOWER" | "UPPER" => {
            want(1)?;
            Ok(match &v[0] {
                Val::Null => Val::Null,
                Val::Str(s) => Val::str(&if name == "LOWER" {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                }),
                other => {
                    return Err(type_error(
                        pos,
                        format!("{name} needs text, got {}", other.type_name()),
                    ));
                }
            })
        }
        _ => Err(Error::query(
            QueryErrorKind::UnknownFunction,
            Some(pos),
            format!("function {name} is not known"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_slices() {
        assert_eq!(slice_positions(5, None, None, 2), vec![0, 2, 4]);
        assert_eq!(slice_positions(5, Some(-2), None, 1), vec![3, 4]);
        assert_eq!(slice_positions(5, None, Some(-1), 1), vec![0, 1, 2, 3]);
        assert_eq!(slice_positions(5, None, None, -1), vec![4, 3, 2, 1, 0]);
        assert_eq!(slice_positions(5, Some(10), None, 1), Vec::<usize>::new());
        assert_eq!(slice_positions(0, None, None, 1), Vec::<usize>::new());
    }

    #[test]
    fn glob_wildcards() {
        assert!(glob("black horse number 12", "*horse number 1?"));
        assert!(!glob("horse number 1", "*horse number 1?"));
        assert!(!glob("horse number 12", "%horse number 1_"));
        assert!(glob("%x_", "%x_"));
        assert!(glob("", "*"));
    }

    #[test]
    fn bm25_prefers_rare_terms() {
        let docs = ["red dog", "red cat", "blue dog", "red red red"];
        let b = Bm25::build(docs.iter().copied());
        assert!(b.score("blue dog", "blue") > b.score("red cat", "red"));
        assert_eq!(b.score("blue dog", "zebra"), 0.0);
    }
}
