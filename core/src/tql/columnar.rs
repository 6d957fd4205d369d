//! Columnar kernels: the common shapes of WHERE, ORDER BY, GROUP BY and aggregates run
//! over whole typed columns ([`Column::Num`], [`Column::Vecs`]) instead of one [`Val`]
//! per row.
//!
//! Contract: every kernel either declines (`None`: the executor runs its row-at-a-time
//! path) or gives exactly what that path gives: the same three-valued logic, the same
//! NULL handling, the same f64 arithmetic in the same order (sums start at -0.0 as std's
//! do), the same errors. Kernels only apply to a frame over one source without joins,
//! to unqualified stored columns that are not shadowed by computed ones.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use rayon::prelude::*;

use super::ast::{Arg, BinOp, Expr, ExprKind};
use super::eval::lit;
use super::frame::{Column, Frame};
use super::value::{Elem, Val, elem_val};
use crate::error::{Error, QueryErrorKind, Result};

/// Rows per rayon task: below this, splitting costs more than it saves.
const MIN_TASK: usize = 4096;

/// Truth of a predicate per row, in three values.
pub const FALSE: u8 = 0;
pub const TRUE: u8 = 1;
pub const NULL: u8 = 2;

/// The stored column an expression names, if the kernels can read it here.
fn column(e: &Expr, frame: &Frame) -> Option<Arc<Column>> {
    let ExprKind::Column {
        qualifier: None,
        name,
    } = &e.kind
    else {
        return None;
    };
    if frame.pairs.is_some()
        || frame.sources.len() != 1
        || frame.virt.iter().any(|(n, _)| n == name)
    {
        return None;
    }
    frame.sources[0].loaded(name)
}

/// A numeric operand: a typed column read through the frame's rows, or a constant.
enum Operand {
    Col {
        col: Arc<Column>,
    },
    /// A constant number (`None`: NULL).
    Const(Option<f64>),
}

impl Operand {
    fn of(e: &Expr, frame: &Frame) -> Option<Operand> {
        let constant = |v: &Val| match v {
            Val::Null => Some(Operand::Const(None)),
            Val::Int(_) | Val::Float(_) | Val::Bool(_) => Some(Operand::Const(v.as_f64())),
            _ => None,
        };
        match &e.kind {
            ExprKind::Lit(l) => constant(&lit(l)),
            ExprKind::Const(v) => constant(v),
            _ => {
                let col = column(e, frame)?;
                matches!(*col, Column::Num { .. }).then_some(Operand::Col { col })
            }
        }
    }

    /// The number at frame position `p` (`None`: NULL).
    #[inline]
    fn at(&self, frame: &Frame, p: usize) -> Option<f64> {
        match self {
            Operand::Const(c) => *c,
            Operand::Col { col } => num_at(col, frame.rows[p].1),
        }
    }
}

#[inline]
fn num_at(col: &Column, r: u64) -> Option<f64> {
    let Column::Num { data, valid, .. } = col else {
        return None;
    };
    let r = usize::try_from(r).ok()?;
    let x = *data.get(r)?;
    match valid {
        Some(v) if !v[r] => None,
        _ => Some(x),
    }
}

/// Maps every frame position through `f`, in parallel for large frames.
fn per_row<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    (0..n)
        .into_par_iter()
        .with_min_len(MIN_TASK)
        .map(f)
        .collect()
}

fn holds(op: BinOp, o: Ordering) -> bool {
    match op {
        BinOp::Eq => o == Ordering::Equal,
        BinOp::Ne => o != Ordering::Equal,
        BinOp::Lt => o == Ordering::Less,
        BinOp::Le => o != Ordering::Greater,
        BinOp::Gt => o == Ordering::Greater,
        _ => o != Ordering::Less,
    }
}

fn truth(b: bool) -> u8 {
    if b { TRUE } else { FALSE }
}

/// The three-valued truth of a WHERE condition per frame row, for conditions built
/// from comparisons, BETWEEN, IN and IS NULL of numeric columns and constants joined by
/// AND / OR / NOT; `None` for anything else.
pub fn predicate(e: &Expr, frame: &Frame) -> Option<Vec<u8>> {
    let n = frame.len();
    match &e.kind {
        ExprKind::Binary { op, left, right } => match op {
            BinOp::And | BinOp::Or => {
                let l = predicate(left, frame)?;
                let r = predicate(right, frame)?;
                let and = *op == BinOp::And;
                Some(
                    l.par_iter()
                        .with_min_len(MIN_TASK)
                        .zip(r.par_iter())
                        .map(|(&a, &b)| kleene(and, a, b))
                        .collect(),
                )
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let a = Operand::of(left, frame)?;
                let b = Operand::of(right, frame)?;
                Some(per_row(n, |p| match (a.at(frame, p), b.at(frame, p)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y).map_or(NULL, |o| truth(holds(*op, o))),
                    _ => NULL,
                }))
            }
            _ => None,
        },
        ExprKind::Not(x) => {
            let t = predicate(x, frame)?;
            Some(
                t.into_iter()
                    .map(|v| if v == NULL { NULL } else { truth(v == FALSE) })
                    .collect(),
            )
        }
        ExprKind::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = Operand::of(expr, frame)?;
            let lo = Operand::of(low, frame)?;
            let hi = Operand::of(high, frame)?;
            Some(per_row(n, |p| {
                let x = v.at(frame, p);
                let c = |o: &Operand| match (x, o.at(frame, p)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => None,
                };
                match (c(&lo), c(&hi)) {
                    (Some(a), Some(b)) => truth((a.is_ge() && b.is_le()) != *negated),
                    _ => NULL,
                }
            }))
        }
        ExprKind::InList {
            expr,
            list,
            negated,
        } => {
            let v = Operand::of(expr, frame)?;
            let items = list
                .iter()
                .map(|x| match Operand::of(x, frame)? {
                    Operand::Const(c) => Some(c),
                    Operand::Col { .. } => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(per_row(n, |p| match v.at(frame, p) {
                None => NULL,
                Some(x) => {
                    let found = items
                        .iter()
                        .any(|c| c.and_then(|y| x.partial_cmp(&y)) == Some(Ordering::Equal));
                    truth(found != *negated)
                }
            }))
        }
        ExprKind::IsNull { expr, negated } => {
            let v = Operand::of(expr, frame)?;
            Some(per_row(n, |p| truth(v.at(frame, p).is_none() != *negated)))
        }
        // A bare number is true when it is not zero.
        _ => {
            let v = Operand::of(e, frame)?;
            Some(per_row(n, |p| match v.at(frame, p) {
                None => NULL,
                Some(x) => truth(x != 0.0),
            }))
        }
    }
}

fn kleene(and: bool, a: u8, b: u8) -> u8 {
    if and {
        if a == FALSE || b == FALSE {
            FALSE
        } else if a == TRUE && b == TRUE {
            TRUE
        } else {
            NULL
        }
    } else if a == TRUE || b == TRUE {
        TRUE
    } else if a == FALSE && b == FALSE {
        FALSE
    } else {
        NULL
    }
}

/// An ORDER BY key as one integer per row, ordered as `value::order` orders the row
/// values: NULL first, then numbers by `f64::total_cmp`.
pub fn sort_key_of(x: Option<f64>) -> u128 {
    match x {
        None => 0,
        Some(f) => {
            let b = f.to_bits() as i64;
            let t = b ^ ((((b >> 63) as u64) >> 1) as i64);
            (1u128 << 64) | u128::from((t as u64) ^ (1u64 << 63))
        }
    }
}

/// ORDER BY keys of a numeric column, or of COSINE_SIMILARITY / DOT of a float32 array
/// column and a constant vector; `None` for other keys.
pub fn sort_keys(e: &Expr, frame: &Frame) -> Option<Result<Vec<u128>>> {
    if let Some(op) = Operand::of(e, frame) {
        return Some(Ok(per_row(frame.len(), |p| sort_key_of(op.at(frame, p)))));
    }
    let ExprKind::Func { name, args } = &e.kind else {
        return None;
    };
    if !matches!(name.as_str(), "COSINE_SIMILARITY" | "DOT") || args.len() != 2 {
        return None;
    }
    let (Arg::Expr(a), Arg::Expr(b)) = (&args[0], &args[1]) else {
        return None;
    };
    let (col, q) = match (column(a, frame), column(b, frame)) {
        (Some(c), None) => (c, b),
        (None, Some(c)) => (c, a),
        _ => return None,
    };
    let Column::Vecs { shape, .. } = &*col else {
        return None;
    };
    let q: Option<Vec<f64>> = match &q.kind {
        ExprKind::Const(Val::Null) | ExprKind::Lit(super::ast::Lit::Null) => None,
        ExprKind::Const(v @ (Val::Arr(_) | Val::Json(_) | Val::List(_))) => Some(v.numbers()?),
        _ => return None,
    };
    let n = frame.len();
    let Some(q) = q else {
        return Some(Ok(vec![sort_key_of(None); n]));
    };
    let d: usize = shape.iter().product();
    let row = |r: u64| usize::try_from(r).ok().and_then(|r| col.vec_row(r));
    if d != q.len() {
        // Every row has this length: the row path fails on any row, with this error.
        if frame.rows.iter().any(|&(_, r)| row(r).is_some()) {
            return Some(Err(Error::query(
                QueryErrorKind::TypeMismatch,
                Some(e.pos),
                format!("{name} of vectors of lengths {} and {}", d, q.len()),
            )));
        }
        return Some(Ok(vec![sort_key_of(None); n]));
    }
    let cosine = name == "COSINE_SIMILARITY";
    let nq = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut out = vec![0u128; n];
    out.par_chunks_mut(LANES * 64)
        .zip(frame.rows.par_chunks(LANES * 64))
        .for_each(|(keys, rows)| {
            let mut scratch = vec![0f32; LANES * d];
            for (ks, rs) in keys.chunks_mut(LANES).zip(rows.chunks(LANES)) {
                let bytes: Vec<Option<&[u8]>> = rs.iter().map(|&(_, r)| row(r)).collect();
                let (dots, norms) = dots_and_norms(&bytes, &q, &mut scratch);
                for (k, slot) in ks.iter_mut().enumerate() {
                    *slot = sort_key_of(bytes[k].and_then(|_| {
                        if !cosine {
                            return Some(dots[k]);
                        }
                        let na = norms[k].sqrt();
                        (na != 0.0 && nq != 0.0).then(|| dots[k] / (na * nq))
                    }));
                }
            }
        });
    Some(Ok(out))
}

/// Rows scored together, so that their sums (each still added in element order, as the
/// row path adds them) overlap in the CPU instead of waiting on one another.
const LANES: usize = 8;

/// Dot products with `q` and squared norms of up to [`LANES`] rows of float32 bytes
/// (`None` rows are skipped); `scratch` holds `LANES * q.len()` floats.
fn dots_and_norms(
    rows: &[Option<&[u8]>],
    q: &[f64],
    scratch: &mut [f32],
) -> ([f64; LANES], [f64; LANES]) {
    let d = q.len();
    // Sums start at -0.0, as `Iterator::sum` of f64 does.
    let mut dot = [-0.0f64; LANES];
    let mut nrm = [-0.0f64; LANES];
    for (k, r) in rows.iter().enumerate().take(LANES) {
        if let Some(b) = r {
            for (o, x) in scratch[k * d..(k + 1) * d]
                .iter_mut()
                .zip(b.chunks_exact(4))
            {
                *o = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            }
        }
    }
    if rows.len() == LANES && rows.iter().all(Option::is_some) {
        let s = &scratch[..LANES * d];
        for (j, &y) in q.iter().enumerate() {
            for k in 0..LANES {
                let x = f64::from(s[k * d + j]);
                dot[k] += x * y;
                nrm[k] += x * x;
            }
        }
    } else {
        for (k, r) in rows.iter().enumerate().take(LANES) {
            if r.is_some() {
                let s = &scratch[k * d..(k + 1) * d];
                dot[k] = s.iter().zip(q).map(|(&x, y)| f64::from(x) * y).sum();
                nrm[k] = s.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            }
        }
    }
    (dot, nrm)
}

/// Positions `0..n` in the order `cmp` gives (a total order), keeping only the first
/// `want` when given: a top-k of per-thread partial selections, else a parallel sort.
pub fn order_positions<F>(n: usize, want: Option<usize>, cmp: F) -> Vec<usize>
where
    F: Fn(&usize, &usize) -> Ordering + Sync,
{
    let mut idx: Vec<usize> = (0..n).collect();
    match want {
        Some(0) => Vec::new(),
        Some(k) if k < n => {
            let piece = (n / rayon::current_num_threads().max(1))
                .max(k.saturating_mul(4))
                .max(MIN_TASK);
            let mut cand: Vec<usize> = idx
                .par_chunks_mut(piece)
                .flat_map_iter(|c| {
                    if c.len() > k {
                        c.select_nth_unstable_by(k - 1, &cmp);
                    }
                    c[..k.min(c.len())].to_vec()
                })
                .collect();
            if cand.len() > k {
                cand.select_nth_unstable_by(k - 1, &cmp);
                cand.truncate(k);
            }
            cand.sort_by(&cmp);
            cand
        }
        _ => {
            idx.par_sort_by(&cmp);
            idx
        }
    }
}

/// A fast hasher for fixed-size keys (group keys are numbers, not attacker-chosen
/// strings; a skewed table only costs time, never memory).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

type KeyMap<K> = HashMap<K, usize, BuildHasherDefault<KeyHasher>>;

/// A group key per value, equal exactly when `Val::key` is: NULLs together, -0 with 0,
/// every NaN together.
fn group_key_of(x: Option<f64>) -> u128 {
    let Some(f) = x else { return 0 };
    let canonical = if f == 0.0 {
        0.0
    } else if f.is_nan() {
        f64::NAN
    } else {
        f
    };
    (1u128 << 64) | u128::from(canonical.to_bits())
}

/// GROUP BY on numeric columns: the key values and member positions of each group, in
/// order of first appearance; `None` when a key is not a numeric column.
#[allow(clippy::type_complexity)]
pub fn group_rows(exprs: &[Expr], frame: &Frame) -> Option<(Vec<Vec<Val>>, Vec<Vec<usize>>)> {
    let cols = exprs
        .iter()
        .map(|e| match Operand::of(e, frame)? {
            Operand::Col { col } => Some(col),
            Operand::Const(_) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    let n = frame.len();
    let value = |c: &Column, p: usize| num_at(c, frame.rows[p].1);
    let val_of = |c: &Column, p: usize| -> Val {
        match (c, value(c, p)) {
            (Column::Num { elem, .. }, Some(x)) => elem_val(x, *elem),
            _ => Val::Null,
        }
    };
    let mut keys: Vec<Vec<Val>> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut start_group = |p: usize, members: &mut Vec<Vec<usize>>| {
        keys.push(cols.iter().map(|c| val_of(c, p)).collect());
        members.push(vec![p]);
        members.len() - 1
    };
    if let [c] = cols.as_slice() {
        let row_keys = per_row(n, |p| group_key_of(value(c, p)));
        let mut index: KeyMap<u128> = KeyMap::default();
        for (p, k) in row_keys.into_iter().enumerate() {
            match index.get(&k) {
                Some(&g) => members[g].push(p),
                None => {
                    let g = start_group(p, &mut members);
                    index.insert(k, g);
                }
            }
        }
    } else {
        let mut index: KeyMap<Vec<u128>> = KeyMap::default();
        for p in 0..n {
            let k: Vec<u128> = cols.iter().map(|c| group_key_of(value(c, p))).collect();
            match index.get(&k) {
                Some(&g) => members[g].push(p),
                None => {
                    let g = start_group(p, &mut members);
                    index.insert(k, g);
                }
            }
        }
    }
    Some((keys, members))
}

/// An aggregate of a numeric column per group (AVG, SUM, PROD, MIN, MAX, AMIN, AMAX,
/// COUNT of one column), as the row path computes it over each group's list of values;
/// `None` for other expressions.
pub fn aggregate(e: &Expr, input: &Frame, members: &[Vec<usize>]) -> Option<Vec<Val>> {
    let ExprKind::Func { name, args } = &e.kind else {
        return None;
    };
    let [Arg::Expr(arg)] = args.as_slice() else {
        return None;
    };
    let name = name.as_str();
    if !matches!(
        name,
        "AVG" | "SUM" | "PROD" | "MIN" | "MAX" | "AMIN" | "AMAX" | "COUNT"
    ) {
        return None;
    }
    let col = column(arg, input)?;
    let Column::Num { elem, .. } = &*col else {
        return None;
    };
    let elem = *elem;
    let rows = &input.rows;
    Some(
        members
            .par_iter()
            .map(|m| {
                let xs = || m.iter().filter_map(|&p| num_at(&col, rows[p].1));
                if name == "COUNT" {
                    return Val::Int(xs().count() as i64);
                }
                let count = xs().count();
                if count == 0 {
                    return Val::Int(0);
                }
                // The list's kind: a NULL member makes it float, as `Val::elem` says.
                let kind = if count < m.len() { Elem::Float } else { elem };
                let keep = |r: f64| {
                    if matches!(kind, Elem::Int | Elem::Bool) {
                        Val::Int(r as i64)
                    } else {
                        Val::Float(r)
                    }
                };
                match name {
                    "AMIN" | "MIN" => keep(xs().fold(f64::INFINITY, f64::min)),
                    "AMAX" | "MAX" => keep(xs().fold(f64::NEG_INFINITY, f64::max)),
                    "SUM" => keep(xs().sum()),
                    "PROD" => keep(xs().product()),
                    _ => Val::Float(xs().sum::<f64>() / count as f64),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Dataset, OpenOptions, TensorOptions};
    use crate::format::array::{NdArray, Sample};
    use crate::format::dtype::Dtype;
    use crate::tql::exec::Exec;
    use crate::tql::frame::Source;
    use crate::tql::parser;

    /// x: float32 with NULLs, ties, -0, NaN; k: int32 with NULLs; e: 3-float embeddings
    /// (one all zero).
    async fn dataset(name: &str) -> Dataset {
        let mut ds = Dataset::create(&format!("memory://{name}"), OpenOptions::default())
            .await
            .unwrap();
        ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::F32))
            .await
            .unwrap();
        ds.create_tensor("k", TensorOptions::new("generic").dtype(Dtype::I32))
            .await
            .unwrap();
        ds.create_tensor("e", TensorOptions::new("embedding").dtype(Dtype::F32))
            .await
            .unwrap();
        let xs = [
            Some(1.5f32),
            None,
            Some(-0.0),
            Some(0.0),
            Some(f32::NAN),
            Some(1.5),
            Some(-3.0),
            None,
            Some(7.25),
            Some(1.5),
            Some(2.0),
            Some(-1.0),
        ];
        let ks = [
            Some(2i32),
            Some(1),
            None,
            Some(2),
            Some(1),
            Some(3),
            None,
            Some(1),
            Some(2),
            Some(3),
            Some(1),
            Some(2),
        ];
        let s = |v: Option<Sample>| v.unwrap_or(Sample::Empty);
        ds.extend(
            "x",
            xs.iter()
                .map(|v| s(v.map(|f| Sample::Array(NdArray::scalar(f)))))
                .collect(),
        )
        .await
        .unwrap();
        ds.extend(
            "k",
            ks.iter()
                .map(|v| s(v.map(|f| Sample::Array(NdArray::scalar(f)))))
                .collect(),
        )
        .await
        .unwrap();
        let embs: Vec<Sample> = (0..xs.len())
            .map(|i| {
                let v: Vec<f32> = if i == 3 {
                    vec![0.0, 0.0, 0.0]
                } else {
                    vec![i as f32 * 0.5 - 2.0, 1.0 / (i as f32 + 1.0), (i % 3) as f32]
                };
                Sample::Array(NdArray::from_slice(vec![3], &v).unwrap())
            })
            .collect();
        ds.extend("e", embs).await.unwrap();
        ds
    }

    /// Runs `q` twice: on typed columns (kernels) and on the same values held as `Val`s
    /// (the row path); both must give the same rows and computed columns.
    async fn same(ds: &Dataset, q: &str) -> (Vec<(u32, u64)>, Vec<(String, Vec<Val>)>) {
        let query = parser::parse(q).unwrap();
        let typed = Source::new(ds).unwrap();
        let rows = Source::new(ds).unwrap();
        for c in ["x", "k", "e"] {
            let col = typed.load(ds, c).await.unwrap();
            assert!(!matches!(*col, Column::Vals(_)), "{c} was not typed");
            let vals = (0..col.len()).map(|r| col.get(r)).collect();
            rows.set_column(c, Column::Vals(vals));
        }
        let run = |src: Source| {
            let ex = Exec {
                sources: vec![src],
                by_name: HashMap::new(),
                main: Some(0),
                seed: 0,
                bm25: HashMap::new(),
                diffs: HashMap::new(),
            };
            ex.query(&query).map(|f| (f.rows, f.virt))
        };
        let a = run(typed);
        let b = run(rows);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.0, b.0, "rows of {q}");
                assert_eq!(a.1, b.1, "columns of {q}");
                a
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "error of {q}");
                (Vec::new(), Vec::new())
            }
            (a, b) => panic!("{q}: typed {:?} vs rows {:?}", a.is_ok(), b.is_ok()),
        }
    }

    #[tokio::test]
    async fn typed_columns_read_as_the_row_path_reads_them() {
        let ds = dataset("columnar-load").await;
        let src = Source::new(&ds).unwrap();
        let x = src.load(&ds, "x").await.unwrap();
        assert!(matches!(*x, Column::Num { .. }));
        assert_eq!(x.get(1), Val::Null);
        assert!(!x.is_valid(1) && x.is_valid(0) && !x.is_valid(99));
        assert_eq!(x.get(0).to_json(), serde_json::json!(1.5));
        let k = src.load(&ds, "k").await.unwrap();
        assert!(matches!(k.get(0), Val::Int(2)));
        let e = src.load(&ds, "e").await.unwrap();
        assert!(matches!(&*e, Column::Vecs { shape, .. } if shape == &[3]));
        assert_eq!(e.get(3).to_json(), serde_json::json!([0.0, 0.0, 0.0]));
    }

    #[tokio::test]
    async fn where_with_nulls_matches_the_row_path() {
        let ds = dataset("columnar-where").await;
        for q in [
            "SELECT * WHERE x > 1",
            "SELECT * WHERE NOT (x > 1)",
            "SELECT * WHERE x > 1 OR k == 1",
            "SELECT * WHERE NOT (x > 1 AND k < 3)",
            "SELECT * WHERE x IS NULL",
            "SELECT * WHERE k IS NOT NULL AND x <= 0",
            "SELECT * WHERE x BETWEEN -1 AND 2",
            "SELECT * WHERE x NOT BETWEEN -1 AND 2",
            "SELECT * WHERE k IN (1, 3)",
            "SELECT * WHERE k NOT IN (1, NULL)",
            "SELECT * WHERE x == NULL",
            "SELECT * WHERE x",
            "SELECT * WHERE x > 100",
            "SELECT * WHERE x != x",
        ] {
            same(&ds, q).await;
        }
        let (rows, _) = same(&ds, "SELECT * WHERE x > 100").await;
        assert!(rows.is_empty());
    }

    #[tokio::test]
    async fn order_by_ties_nulls_and_limits_match_the_row_path() {
        let ds = dataset("columnar-order").await;
        for q in [
            "SELECT * ORDER BY x",
            "SELECT * ORDER BY x DESC",
            "SELECT * ORDER BY k ASC, x DESC",
            "SELECT * ORDER BY k DESC, x ASC LIMIT 5",
            "SELECT * ORDER BY x LIMIT 3 OFFSET 2",
            "SELECT * ORDER BY x DESC LIMIT 100",
            "SELECT * ORDER BY x LIMIT 0",
            "SELECT * WHERE x > 100 ORDER BY x LIMIT 3",
            "SELECT * ORDER BY COSINE_SIMILARITY(e, ARRAY[1.0, 0.5, -0.25]) DESC LIMIT 4",
            "SELECT * ORDER BY COSINE_SIMILARITY(ARRAY[1.0, 0.5, -0.25], e)",
            "SELECT * ORDER BY DOT(e, ARRAY[-1, 2, 0.5]) LIMIT 7",
            "SELECT * ORDER BY COSINE_SIMILARITY(e, ARRAY[1.0, 0.5])",
        ] {
            same(&ds, q).await;
        }
        // Ties keep source order ascending and the reverse descending.
        let (asc, _) = same(&ds, "SELECT * ORDER BY k").await;
        let (desc, _) = same(&ds, "SELECT * ORDER BY k DESC").await;
        let mut rev = desc.clone();
        rev.reverse();
        assert_eq!(asc, rev);
        assert_eq!(asc[0].1, 2, "NULL sorts first");
    }

    #[tokio::test]
    async fn group_by_and_aggregates_match_the_row_path() {
        let ds = dataset("columnar-group").await;
        for q in [
            "SELECT k, AVG(x) AS a, SUM(x) AS s, MIN(x) AS lo, AMAX(k) AS hi, COUNT(x) AS n GROUP BY k",
            "SELECT x, COUNT(*) AS n, PROD(k) AS p GROUP BY x",
            "SELECT k, x, AVG(k) AS a GROUP BY k, x",
            "SELECT k, AVG(x) AS a WHERE x > 100 GROUP BY k",
            "SELECT COUNT(x) AS n",
            "SELECT COUNT(x) AS n WHERE x > 100",
            "SELECT k, MAX(x) AS m GROUP BY k HAVING MAX(x) > 1 ORDER BY m DESC",
        ] {
            same(&ds, q).await;
        }
    }

    #[test]
    fn sort_keys_order_as_total_cmp_with_null_first() {
        let xs = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
            f64::NAN,
            -f64::NAN,
        ];
        for a in xs {
            assert!(sort_key_of(None) < sort_key_of(Some(a)));
            for b in xs {
                assert_eq!(
                    sort_key_of(Some(a)).cmp(&sort_key_of(Some(b))),
                    a.total_cmp(&b)
                );
            }
        }
    }

    #[test]
    fn top_k_equals_a_full_sort_prefix() {
        let n = 50_000;
        let vals: Vec<u64> = (0..n as u64)
            .map(|i| crate::tql::eval::splitmix(i) % 97)
            .collect();
        let cmp = |a: &usize, b: &usize| vals[*a].cmp(&vals[*b]).then(a.cmp(b));
        let full = order_positions(n, None, cmp);
        for k in [0, 1, 10, 5000, n - 1, n, n + 7] {
            let top = order_positions(n, Some(k), cmp);
            assert_eq!(top, full[..k.min(n)], "k = {k}");
        }
        assert!(order_positions(0, Some(3), cmp).is_empty());
    }

    #[test]
    fn lanes_add_in_the_row_paths_order() {
        let d = 37;
        let data: Vec<f32> = (0..d * 11)
            .map(|i| ((i * 7919) % 101) as f32 / 13.0 - 3.0)
            .collect();
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let q: Vec<f64> = (0..d).map(|j| (j as f64).sin()).collect();
        let mut scratch = vec![0f32; LANES * d];
        for take in [LANES, 3] {
            let rows: Vec<Option<&[u8]>> = (0..take)
                .map(|r| Some(&bytes[(r + 2) * d * 4..(r + 3) * d * 4]))
                .collect();
            let (dots, norms) = dots_and_norms(&rows, &q, &mut scratch);
            for k in 0..take {
                let a: Vec<f64> = data[(k + 2) * d..][..d]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect();
                let dot: f64 = a.iter().zip(&q).map(|(x, y)| x * y).sum();
                let nrm: f64 = a.iter().map(|x| x * x).sum();
                assert_eq!(dots[k].to_bits(), dot.to_bits());
                assert_eq!(norms[k].to_bits(), nrm.to_bits());
            }
        }
    }
}
