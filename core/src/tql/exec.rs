//! Runs a parsed query over sources whose columns are already loaded. Synchronous CPU
//! work, parallel over rows with rayon; the caller runs it on the CPU pool.
//!
//! Stages of a SELECT, in order: source (scan, subquery or set operation) -> WHERE ->
//! EXPAND BY -> GROUP BY / HAVING -> UNGROUP BY -> ORDER BY (stable; a DESC key reverses
//! ties too; a LIMIT makes it a top-k) -> OFFSET / LIMIT / TOP -> SAMPLE BY -> the
//! select list, computed on the rows that remain.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;

use super::ast::*;
use super::columnar;
use super::eval::{Bm25, Env, Row, eval, splitmix};
use super::frame::{ColKind, Frame, NO_ROW, Source, unknown};
use super::value::{Val, order};
use crate::error::{Error, QueryErrorKind, Result};

/// A grouped select's input frame, member positions, keys and GROUP BY expressions.
type Groups<'g, 's> = (&'g Frame<'s>, &'g [Vec<usize>], &'g [Vec<Val>], &'g [Expr]);

/// Pairs a JOIN may produce or examine without an equality condition.
const MAX_JOIN_ROWS: usize = 1 << 26;

fn join_too_big(pos: usize) -> Error {
    Error::query(
        QueryErrorKind::InvalidValue,
        Some(pos),
        format!(
            "the JOIN would examine or produce more than {MAX_JOIN_ROWS} pairs; join on an equality of one column per side"
        ),
    )
}

/// Which side of a join a qualified column reads (by its alias).
fn side_of(e: &Expr, f: &Frame) -> Option<usize> {
    match &e.kind {
        ExprKind::Column {
            qualifier: Some(q), ..
        } => f
            .aliases
            .iter()
            .position(|a| a.as_deref() == Some(q.as_str())),
        _ => None,
    }
}

/// Draws per source row a SAMPLE BY with replacement may make.
const MAX_DRAWS_PER_ROW: usize = 1000;

pub struct Exec {
    pub sources: Vec<Source>,
    /// Source index of each FROM clause, keyed by `url@version` as written.
    pub by_name: HashMap<String, usize>,
    /// The dataset a query without FROM reads.
    pub main: Option<usize>,
    pub seed: u64,
    pub bm25: HashMap<String, Bm25>,
    /// Rows of each `DIFF(a, b)`, keyed by [`diff_key`]: (source, row) and the change.
    pub diffs: HashMap<String, DiffRows>,
}

/// The rows of a DIFF as (source, row), and the `change` of each.
pub type DiffRows = (Vec<(u32, u64)>, Vec<Val>);

pub fn diff_key(a: &str, b: &str) -> String {
    format!("{a}\u{1}{b}")
}

/// Every `DIFF(a, b)` of a query, as (a, b, position).
pub fn diffs_of(q: &Query, out: &mut Vec<(String, String, usize)>) {
    visit_from(q, &mut |f| {
        if let FromClause::Diff { a, b, pos } = f {
            out.push((a.clone(), b.clone(), *pos));
        }
    });
}

pub fn source_key(url: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{url}@{v}"),
        None => url.to_owned(),
    }
}

/// Calls `f` on every FROM clause of a query, those of joins and subqueries included.
pub fn visit_from(q: &Query, f: &mut dyn FnMut(&FromClause)) {
    fn from(fc: &FromClause, f: &mut dyn FnMut(&FromClause)) {
        f(fc);
        match fc {
            FromClause::Subquery { query, .. } => visit_from(query, f),
            FromClause::Join { left, right, .. } => {
                from(left, f);
                from(right, f);
            }
            FromClause::Source { .. } | FromClause::Diff { .. } => {}
        }
    }
    match q {
        Query::Select(s) => {
            if let Some(fc) = &s.from {
                from(fc, f);
            }
        }
        Query::Set { left, right, .. } => {
            visit_from(left, f);
            visit_from(right, f);
        }
        Query::Explain(q) => visit_from(q, f),
    }
}

impl Exec {
    pub fn query<'s>(&'s self, q: &Query) -> Result<Frame<'s>> {
        match q {
            Query::Select(s) => self.select(s),
            Query::Explain(inner) => self.query(inner),
            Query::Set {
                op,
                left,
                right,
                tail,
            } => {
                let l = self.query(left)?;
                let r = self.query(right)?;
                let combined = set_op(*op, l, r);
                self.apply_tail(combined, tail, &[])
            }
        }
    }

    fn from<'s>(&'s self, f: Option<&FromClause>, pos: usize) -> Result<Frame<'s>> {
        match f {
            None => {
                let m = self.main.ok_or_else(|| {
                    Error::query(
                        QueryErrorKind::SourceNotFound,
                        Some(pos),
                        "the query has no FROM and runs on no dataset",
                    )
                })?;
                Ok(Frame::scan(&self.sources[m], None))
            }
            Some(FromClause::Source {
                url,
                version,
                alias,
                pos,
            }) => {
                let k = self
                    .by_name
                    .get(&source_key(url, version.as_deref()))
                    .ok_or_else(|| {
                        Error::query(
                            QueryErrorKind::SourceNotFound,
                            Some(*pos),
                            format!("source {url:?} was not opened"),
                        )
                    })?;
                Ok(Frame::scan(&self.sources[*k], alias.clone()))
            }
            Some(FromClause::Subquery { query, .. }) => self.query(query),
            Some(FromClause::Diff { a, b, pos }) => {
                let (rows, change) = self.diffs.get(&diff_key(a, b)).ok_or_else(|| {
                    Error::query(
                        QueryErrorKind::SourceNotFound,
                        Some(*pos),
                        format!("DIFF({a}, {b}) was not computed"),
                    )
                })?;
                let mut sources: Vec<&Source> = Vec::new();
                let mut remap = HashMap::new();
                let mut out_rows = Vec::with_capacity(rows.len());
                for &(s, r) in rows {
                    let k = *remap.entry(s).or_insert_with(|| {
                        sources.push(&self.sources[s as usize]);
                        (sources.len() - 1) as u32
                    });
                    out_rows.push((k, r));
                }
                let n = sources.len();
                Ok(Frame {
                    sources,
                    rows: out_rows,
                    virt: vec![("change".to_owned(), change.clone())],
                    groups: None,
                    star: true,
                    aliases: vec![None; n],
                    pairs: None,
                })
            }
            Some(FromClause::Join {
                left,
                right,
                kind,
                on,
                using,
            }) => self.join(left, right, *kind, on.as_ref(), using, pos),
        }
    }

    fn join<'s>(
        &'s self,
        left: &FromClause,
        right: &FromClause,
        kind: JoinKind,
        on: Option<&Expr>,
        using: &[String],
        pos: usize,
    ) -> Result<Frame<'s>> {
        let l = self.from(Some(left), pos)?;
        let r = self.from(Some(right), pos)?;
        let plain = |f: &Frame| f.sources.len() == 1 && f.virt.is_empty() && f.pairs.is_none();
        if !plain(&l) || !plain(&r) {
            return Err(Error::query(
                QueryErrorKind::Unsupported,
                Some(pos),
                "JOIN takes two dataset sources, not subqueries, set operations or joins",
            ));
        }
        let alias = |f: &FromClause| match f {
            FromClause::Source { alias, .. } | FromClause::Subquery { alias, .. } => alias.clone(),
            _ => None,
        };
        let shell = Frame {
            sources: vec![l.sources[0], r.sources[0]],
            rows: Vec::new(),
            virt: Vec::new(),
            groups: None,
            star: true,
            aliases: vec![alias(left), alias(right)],
            pairs: Some(Vec::new()),
        };
        let pred = on.map(|e| self.bind(e, &shell, &[])).transpose()?;
        // Equality of one column of each side (ON a.x == b.y, or USING) is a hash join;
        // anything else is a nested loop over every pair, which is bounded.
        let keys: Option<(Expr, Expr)> = if let [c] = using {
            let col = |q: usize| {
                Expr::new(
                    ExprKind::Column {
                        qualifier: shell.aliases[q].clone(),
                        name: c.clone(),
                    },
                    pos,
                )
            };
            if shell.aliases[0].is_none() || shell.aliases[1].is_none() {
                return Err(Error::query(
                    QueryErrorKind::InvalidStatement,
                    Some(pos),
                    "JOIN ... USING needs an alias on each side (FROM \"a\" AS x JOIN \"b\" AS y)",
                ));
            }
            Some((col(0), col(1)))
        } else {
            match pred.as_ref().map(|p| &p.kind) {
                Some(ExprKind::Binary {
                    op: BinOp::Eq,
                    left: a,
                    right: b,
                }) => match (side_of(a, &shell), side_of(b, &shell)) {
                    (Some(0), Some(1)) => Some(((**a).clone(), (**b).clone())),
                    (Some(1), Some(0)) => Some(((**b).clone(), (**a).clone())),
                    _ => None,
                },
                _ => None,
            }
        };
        let key_of = |e: &Expr, side: u32, row: u64| -> Result<Option<String>> {
            let f = Frame {
                rows: vec![if side == 0 { (0, row) } else { (NO_ROW, 0) }],
                pairs: Some(vec![if side == 1 { (1, row) } else { (NO_ROW, 0) }]),
                ..shell.take(&[])
            };
            let v = eval(e, &self.env(&f), Row::One { pos: 0, number: 0 })?;
            Ok((!v.is_null()).then(|| v.key()))
        };
        let mut matches: Vec<(u64, u64)> = Vec::new();
        if let Some((ka, kb)) = &keys {
            let mut index: HashMap<String, Vec<u64>> = HashMap::new();
            for &(_, rr) in &r.rows {
                if let Some(k) = key_of(kb, 1, rr)? {
                    index.entry(k).or_default().push(rr);
                }
            }
            for &(_, lr) in &l.rows {
                if let Some(k) = key_of(ka, 0, lr)?
                    && let Some(rs) = index.get(&k)
                {
                    matches.extend(rs.iter().map(|&rr| (lr, rr)));
                    if matches.len() > MAX_JOIN_ROWS {
                        return Err(join_too_big(pos));
                    }
                }
            }
        } else {
            if l.rows.len().saturating_mul(r.rows.len()) > MAX_JOIN_ROWS {
                return Err(join_too_big(pos));
            }
            for &(_, lr) in &l.rows {
                for &(_, rr) in &r.rows {
                    let hit = match &pred {
                        None => true,
                        Some(p) => {
                            let f = Frame {
                                rows: vec![(0, lr)],
                                pairs: Some(vec![(1, rr)]),
                                ..shell.take(&[])
                            };
                            eval(p, &self.env(&f), Row::One { pos: 0, number: 0 })?.truthy()
                        }
                    };
                    if hit {
                        matches.push((lr, rr));
                    }
                }
            }
        }
        let mut rows = Vec::with_capacity(matches.len());
        let mut pairs = Vec::with_capacity(matches.len());
        let matched_right: HashSet<u64> = matches.iter().map(|m| m.1).collect();
        // Left order, then right order within a left row (and unmatched rows in place).
        let mut by_left: HashMap<u64, Vec<u64>> = HashMap::new();
        for (lr, rr) in matches {
            by_left.entry(lr).or_default().push(rr);
        }
        for &(_, lr) in &l.rows {
            match by_left.get(&lr) {
                Some(rs) => {
                    for &rr in rs {
                        rows.push((0, lr));
                        pairs.push((1, rr));
                    }
                }
                None if matches!(kind, JoinKind::Left | JoinKind::Full) => {
                    rows.push((0, lr));
                    pairs.push((NO_ROW, 0));
                }
                None => {}
            }
        }
        if matches!(kind, JoinKind::Right | JoinKind::Full) {
            for &(_, rr) in &r.rows {
                if !matched_right.contains(&rr) {
                    rows.push((NO_ROW, 0));
                    pairs.push((1, rr));
                }
            }
        }
        Ok(Frame {
            rows,
            pairs: Some(pairs),
            ..shell
        })
    }

    fn select<'s>(&'s self, s: &Select) -> Result<Frame<'s>> {
        if !s.group_by.is_empty() && s.ungroup.is_some() {
            return Err(Error::query(
                QueryErrorKind::InvalidStatement,
                Some(s.pos),
                "GROUP BY and UNGROUP BY cannot be used in the same statement",
            ));
        }
        let mut frame = self.from(s.from.as_ref(), s.pos)?;
        let aliases: Vec<(String, Expr)> = s
            .items
            .iter()
            .filter_map(|it| match it {
                SelectItem::Expr {
                    expr,
                    alias: Some(a),
                } => Some((a.clone(), expr.clone())),
                _ => None,
            })
            .collect();
        if let Some(w) = &s.filter {
            let w = self.bind(w, &frame, &[])?;
            let keep: Vec<usize> = if let Some(t) = columnar::predicate(&w, &frame) {
                t.iter()
                    .enumerate()
                    .filter(|(_, v)| **v == columnar::TRUE)
                    .map(|(p, _)| p)
                    .collect()
            } else {
                let env = self.env(&frame);
                let hits = (0..frame.len())
                    .into_par_iter()
                    .map(|p| {
                        Ok(eval(
                            &w,
                            &env,
                            Row::One {
                                pos: p,
                                number: p as i64,
                            },
                        )?
                        .truthy())
                    })
                    .collect::<Result<Vec<bool>>>()?;
                hits.iter()
                    .enumerate()
                    .filter(|(_, h)| **h)
                    .map(|(p, _)| p)
                    .collect()
            };
            let keep = match s.expand {
                Some((before, after)) => {
                    expand(&keep, frame.len(), before as usize, after as usize)
                }
                None => keep,
            };
            frame = frame.take(&keep);
        }
        let counting = s.group_by.is_empty()
            && s.items.iter().any(|it| {
                matches!(it, SelectItem::Expr { expr: Expr { kind: ExprKind::Func { name, .. }, .. }, .. } if name == "COUNT")
            });
        if !s.group_by.is_empty() || counting {
            return self.grouped(s, frame);
        }
        if let Some(u) = &s.ungroup {
            frame = ungroup(frame, u, s.pos)?;
        }
        let mut tail = s.tail.clone();
        if let Some(t) = s.top {
            tail.limit = Some(tail.limit.map_or(t, |l| l.min(t)));
        }
        let frame = self.apply_tail(frame, &tail, &aliases)?;
        self.project(frame, &s.items, None)
    }

    fn env<'e>(&'e self, frame: &'e Frame<'e>) -> Env<'e> {
        Env {
            frame,
            seed: self.seed,
            bm25: &self.bm25,
        }
    }

    /// Computes the select list on `frame`'s rows (or on its groups).
    fn project<'s>(
        &'s self,
        mut frame: Frame<'s>,
        items: &[SelectItem],
        groups: Option<Groups<'_, 's>>,
    ) -> Result<Frame<'s>> {
        let star = items.iter().any(|i| matches!(i, SelectItem::Star(_)));
        let mut virt = Vec::new();
        for (k, it) in items.iter().enumerate() {
            let SelectItem::Expr { expr, alias } = it else {
                continue;
            };
            let name = alias.clone().unwrap_or_else(|| match &expr.kind {
                ExprKind::Column { name, .. } => name.clone(),
                _ => format!("col{k}"),
            });
            let vals = match groups {
                None => {
                    let e = self.bind(expr, &frame, &[])?;
                    let env = self.env(&frame);
                    (0..frame.len())
                        .into_par_iter()
                        .map(|p| {
                            eval(
                                &e,
                                &env,
                                Row::One {
                                    pos: p,
                                    number: p as i64,
                                },
                            )
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                Some((input, members, keys, group_by)) => {
                    let mut e = self.bind(expr, input, &[])?;
                    let plain: Vec<Expr> = group_by.iter().map(Expr::without_positions).collect();
                    e.replace_group_keys(&plain);
                    if let Some(v) = columnar::aggregate(&e, input, members) {
                        virt.push((name, v));
                        continue;
                    }
                    let env = self.env(input);
                    (0..members.len())
                        .into_par_iter()
                        .map(|g| {
                            eval(
                                &e,
                                &env,
                                Row::Group {
                                    members: &members[g],
                                    keys: &keys[g],
                                    number: g as i64,
                                },
                            )
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            virt.push((name, vals));
        }
        // A subquery's computed columns stay visible unless the list drops them.
        // They come first, in their own order.
        if star {
            let inherited: Vec<_> = std::mem::take(&mut frame.virt)
                .into_iter()
                .filter(|(n, _)| !virt.iter().any(|(m, _)| m == n))
                .collect();
            virt.splice(0..0, inherited);
        }
        frame.virt = virt;
        // `*` over a subquery that chose its columns means those columns, not every
        // stored tensor again beside them.
        frame.star = star && frame.star;
        Ok(frame)
    }

    fn grouped<'s>(&'s self, s: &Select, input: Frame<'s>) -> Result<Frame<'s>> {
        let keys_exprs = s
            .group_by
            .iter()
            .map(|e| self.bind(e, &input, &[]))
            .collect::<Result<Vec<_>>>()?;
        let (mut keys, mut members) = match columnar::group_rows(&keys_exprs, &input) {
            Some(g) => g,
            None => self.group_rows(&keys_exprs, &input)?,
        };
        if s.group_by.is_empty() && members.is_empty() {
            // COUNT over no rows is one row saying 0.
            keys.push(Vec::new());
            members.push(Vec::new());
        }
        if let Some(h) = &s.having {
            let mut h = self.bind(h, &input, &[])?;
            let plain: Vec<Expr> = keys_exprs.iter().map(Expr::without_positions).collect();
            h.replace_group_keys(&plain);
            let env = self.env(&input);
            let keep = (0..members.len())
                .map(|g| {
                    Ok(eval(
                        &h,
                        &env,
                        Row::Group {
                            members: &members[g],
                            keys: &keys[g],
                            number: g as i64,
                        },
                    )?
                    .truthy())
                })
                .collect::<Result<Vec<bool>>>()?;
            let mut it = keep.iter();
            members.retain(|_| *it.next().unwrap_or(&false));
            let mut it = keep.iter();
            keys.retain(|_| *it.next().unwrap_or(&false));
        }
        let mut out = Frame {
            sources: input.sources.clone(),
            rows: members
                .iter()
                .map(|m| m.first().map_or((0, 0), |&p| input.rows[p]))
                .collect(),
            virt: Vec::new(),
            groups: Some(
                members
                    .iter()
                    .map(|m| m.iter().map(|&p| input.rows[p]).collect())
                    .collect(),
            ),
            star: true,
            aliases: input.aliases.clone(),
            pairs: None,
        };
        out = self.project(out, &s.items, Some((&input, &members, &keys, &keys_exprs)))?;
        // ORDER BY / LIMIT over groups see the computed columns by name.
        let mut tail = s.tail.clone();
        if let Some(t) = s.top {
            tail.limit = Some(tail.limit.map_or(t, |l| l.min(t)));
        }
        self.apply_tail(out, &tail, &[])
    }

    /// GROUP BY keys row by row: key values and member positions of each group, in order
    /// of first appearance.
    #[allow(clippy::type_complexity)]
    fn group_rows(
        &self,
        keys_exprs: &[Expr],
        input: &Frame,
    ) -> Result<(Vec<Vec<Val>>, Vec<Vec<usize>>)> {
        let env = self.env(input);
        let row_keys = (0..input.len())
            .into_par_iter()
            .map(|p| {
                keys_exprs
                    .iter()
                    .map(|e| {
                        let v = eval(
                            e,
                            &env,
                            Row::One {
                                pos: p,
                                number: p as i64,
                            },
                        )?;
                        scalar_key(v, e.pos, "GROUP")
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut keys: Vec<Vec<Val>> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (p, k) in row_keys.into_iter().enumerate() {
            let id = k.iter().map(Val::key).collect::<Vec<_>>().join("\u{1}");
            let g = *index.entry(id).or_insert_with(|| {
                keys.push(k);
                members.push(Vec::new());
                members.len() - 1
            });
            members[g].push(p);
        }
        Ok((keys, members))
    }

    fn apply_tail<'s>(
        &'s self,
        mut frame: Frame<'s>,
        tail: &Tail,
        aliases: &[(String, Expr)],
    ) -> Result<Frame<'s>> {
        if !tail.order_by.is_empty() {
            let keys = tail
                .order_by
                .iter()
                .map(|k| {
                    let e = substitute(&k.expr, aliases, &frame);
                    Ok((self.bind(&e, &frame, &[])?, k.desc))
                })
                .collect::<Result<Vec<_>>>()?;
            let want = tail
                .limit
                .map(|l| l.saturating_add(tail.offset.unwrap_or(0)) as usize);
            // Ties: source order, reversed when the first key is descending (the
            // reference engine's DESC is the exact reverse of its stable ASC).
            let first_desc = keys[0].1;
            let tie = |a: &usize, b: &usize| if first_desc { b.cmp(a) } else { a.cmp(b) };
            let typed = keys
                .iter()
                .map(|(e, _)| columnar::sort_keys(e, &frame))
                .collect::<Option<Result<Vec<_>>>>();
            let idx = match typed {
                Some(cols) => {
                    let cols = cols?;
                    let cmp = |a: &usize, b: &usize| -> Ordering {
                        for (col, (_, desc)) in cols.iter().zip(&keys) {
                            let o = col[*a].cmp(&col[*b]);
                            let o = if *desc { o.reverse() } else { o };
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                        tie(a, b)
                    };
                    columnar::order_positions(frame.len(), want, cmp)
                }
                None => {
                    let env = self.env(&frame);
                    let vals = (0..frame.len())
                        .into_par_iter()
                        .map(|p| {
                            keys.iter()
                                .map(|(e, _)| {
                                    let v = eval(
                                        e,
                                        &env,
                                        Row::One {
                                            pos: p,
                                            number: p as i64,
                                        },
                                    )?;
                                    scalar_key(v, e.pos, "ORDER")
                                })
                                .collect::<Result<Vec<_>>>()
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let cmp = |a: &usize, b: &usize| -> Ordering {
                        for (k, (_, desc)) in keys.iter().enumerate() {
                            let o = order(&vals[*a][k], &vals[*b][k]);
                            let o = if *desc { o.reverse() } else { o };
                            if o != Ordering::Equal {
                                return o;
                            }
                        }
                        tie(a, b)
                    };
                    columnar::order_positions(frame.len(), want, cmp)
                }
            };
            frame = frame.take(&idx);
        }
        let off = tail.offset.unwrap_or(0) as usize;
        if off > 0 || tail.limit.is_some() {
            let end = match tail.limit {
                Some(l) => off.saturating_add(l as usize).min(frame.len()),
                None => frame.len(),
            };
            let idx: Vec<usize> = (off.min(frame.len())..end).collect();
            frame = frame.take(&idx);
        }
        if let Some(sample) = &tail.sample {
            frame = self.sample(frame, sample)?;
        }
        Ok(frame)
    }

    fn sample<'s>(&'s self, frame: Frame<'s>, s: &SampleClause) -> Result<Frame<'s>> {
        let w = self.bind(&s.weight, &frame, &[])?;
        let env = self.env(&frame);
        let weights = (0..frame.len())
            .into_par_iter()
            .map(|p| {
                let v = eval(
                    &w,
                    &env,
                    Row::One {
                        pos: p,
                        number: p as i64,
                    },
                )?;
                let v = scalar_key(v, w.pos, "SAMPLE")?;
                Ok(v.as_f64().unwrap_or(0.0).max(0.0))
            })
            .collect::<Result<Vec<f64>>>()?;
        let n = frame.len();
        let want = match (s.limit, s.percent) {
            (None, _) => n,
            (Some(l), false) => l as usize,
            (Some(p), true) => ((n as u128 * u128::from(p)) / 100) as usize,
        };
        // Draws with replacement are bounded: a hostile LIMIT must not allocate at will.
        let cap = n.saturating_mul(MAX_DRAWS_PER_ROW).max(MAX_DRAWS_PER_ROW);
        if s.replace && want > cap {
            return Err(Error::query(
                QueryErrorKind::InvalidValue,
                Some(s.weight.pos),
                format!("SAMPLE BY ... LIMIT {want} draws more than {cap} samples from {n} rows"),
            ));
        }
        let mut rng = s.seed.unwrap_or(self.seed);
        let mut next = move || {
            rng = splitmix(rng);
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let picked: Vec<usize> = if s.replace {
            let total: f64 = weights.iter().sum();
            if total <= 0.0 {
                Vec::new()
            } else {
                let mut cum = Vec::with_capacity(n);
                let mut acc = 0.0;
                for w in &weights {
                    acc += w;
                    cum.push(acc);
                }
                (0..want)
                    .map(|_| {
                        let x = next() * total;
                        cum.partition_point(|c| *c <= x).min(n - 1)
                    })
                    .filter(|&p| weights[p] > 0.0)
                    .collect()
            }
        } else {
            // Weighted sampling without replacement: the largest u^(1/w) keys win;
            // zero-weight rows come only after every weighted row, in random order.
            let mut keyed: Vec<(f64, f64, usize)> = weights
                .iter()
                .enumerate()
                .map(|(p, &w)| {
                    let u = next().max(f64::MIN_POSITIVE);
                    if w > 0.0 {
                        (1.0, u.powf(1.0 / w), p)
                    } else {
                        (0.0, u, p)
                    }
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
            keyed.into_iter().take(want.min(n)).map(|k| k.2).collect()
        };
        Ok(frame.take(&picked))
    }

    /// Checks names and functions against the frame, and maps class names compared
    /// with class_label tensors to their indices.
    pub fn bind(&self, e: &Expr, frame: &Frame, extra: &[String]) -> Result<Expr> {
        let mut e = e.clone();
        self.bind_in(&mut e, frame, extra)?;
        self.fold(&mut e, frame);
        Ok(e)
    }

    /// Evaluates constant sub-expressions once (an `ARRAY[...]` query vector is built
    /// once, not per row). An expression that fails stays as it is, so the error is
    /// reported where it happens, as before.
    fn fold(&self, e: &mut Expr, frame: &Frame) {
        for c in e.children_mut() {
            self.fold(c, frame);
        }
        let foldable = match &e.kind {
            ExprKind::Lit(_)
            | ExprKind::Const(_)
            | ExprKind::Column { .. }
            | ExprKind::Star
            | ExprKind::GroupKey(_) => false,
            ExprKind::Func { name, .. } => !matches!(
                name.as_str(),
                "ROW_NUMBER" | "RANDOM" | "DATA" | "BM25_SIMILARITY" | "COUNT"
            ),
            _ => true,
        };
        if !foldable
            || !e
                .children_mut()
                .iter()
                .all(|c| matches!(c.kind, ExprKind::Lit(_) | ExprKind::Const(_)))
        {
            return;
        }
        let env = self.env(frame);
        if let Ok(v) = eval(e, &env, Row::One { pos: 0, number: 0 }) {
            e.kind = ExprKind::Const(v);
        }
    }

    fn bind_in(&self, e: &mut Expr, frame: &Frame, extra: &[String]) -> Result<()> {
        let pos = e.pos;
        match &mut e.kind {
            ExprKind::Column { name, .. } => {
                if !frame.has_column(name) && !extra.contains(name) {
                    return Err(unknown(name, Some(pos)));
                }
            }
            ExprKind::Func { name, args } => {
                if !super::eval::FUNCTIONS.contains(&name.as_str()) {
                    return Err(Error::query(
                        QueryErrorKind::UnknownFunction,
                        Some(pos),
                        format!("function {name} is not known"),
                    ));
                }
                for a in args {
                    match a {
                        Arg::Expr(x) => self.bind_in(x, frame, extra)?,
                        Arg::Weighted(c, w) => {
                            self.bind_in(c, frame, extra)?;
                            self.bind_in(w, frame, extra)?;
                        }
                    }
                }
            }
            ExprKind::Binary { op, left, right } => {
                self.bind_in(left, frame, extra)?;
                self.bind_in(right, frame, extra)?;
                if matches!(
                    op,
                    BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
                ) {
                    class_names(left, right, frame)?;
                    class_names(right, left, frame)?;
                    text_vs_number(left, right, frame, pos)?;
                    text_vs_number(right, left, frame, pos)?;
                }
            }
            ExprKind::InList { expr, list, .. } => {
                self.bind_in(expr, frame, extra)?;
                for x in list.iter_mut() {
                    self.bind_in(x, frame, extra)?;
                    class_names(expr, x, frame)?;
                }
            }
            ExprKind::Neg(x) | ExprKind::Not(x) => self.bind_in(x, frame, extra)?,
            ExprKind::Index { base, items } => {
                self.bind_in(base, frame, extra)?;
                for it in items {
                    match it {
                        IndexItem::At(x) => self.bind_in(x, frame, extra)?,
                        IndexItem::Slice { start, stop, step } => {
                            for x in [start, stop, step].into_iter().flatten() {
                                self.bind_in(x, frame, extra)?;
                            }
                        }
                    }
                }
            }
            ExprKind::Array(items) => {
                for x in items {
                    self.bind_in(x, frame, extra)?;
                }
            }
            ExprKind::Between {
                expr, low, high, ..
            } => {
                self.bind_in(expr, frame, extra)?;
                self.bind_in(low, frame, extra)?;
                self.bind_in(high, frame, extra)?;
                class_names(expr, low, frame)?;
                class_names(expr, high, frame)?;
            }
            ExprKind::IsNull { expr, .. } => self.bind_in(expr, frame, extra)?,
            ExprKind::Like { expr, pattern, .. } => {
                self.bind_in(expr, frame, extra)?;
                self.bind_in(pattern, frame, extra)?;
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    self.bind_in(o, frame, extra)?;
                }
                for (c, t) in whens {
                    self.bind_in(c, frame, extra)?;
                    self.bind_in(t, frame, extra)?;
                }
                if let Some(o) = otherwise {
                    self.bind_in(o, frame, extra)?;
                }
            }
            ExprKind::Lit(_) | ExprKind::Star | ExprKind::GroupKey(_) | ExprKind::Const(_) => {}
        }
        Ok(())
    }
}

fn col_kind<'f>(e: &Expr, frame: &'f Frame) -> Option<&'f ColKind> {
    let ExprKind::Column { name, .. } = &e.kind else {
        return None;
    };
    if frame.virt.iter().any(|(n, _)| n == name) {
        return None;
    }
    frame
        .sources
        .iter()
        .find_map(|s| s.schema.get(name).map(|c| &c.kind))
}

/// `label == 'dog'`: the literal becomes the class index; an unknown name is an error.
fn class_names(col: &Expr, other: &mut Expr, frame: &Frame) -> Result<()> {
    let Some(ColKind::ClassLabel { names }) = col_kind(col, frame) else {
        return Ok(());
    };
    if let ExprKind::Lit(Lit::Str(s)) = &other.kind {
        let name = match &col.kind {
            ExprKind::Column { name, .. } => name.as_str(),
            _ => "",
        };
        let i = names.iter().position(|n| n == s).ok_or_else(|| {
            Error::query(
                QueryErrorKind::InvalidValue,
                Some(other.pos),
                format!("{s:?} is not a class of tensor {name:?} (classes: {names:?})"),
            )
        })?;
        other.kind = ExprKind::Lit(Lit::Int(i as i64));
    }
    Ok(())
}

fn text_vs_number(col: &Expr, other: &Expr, frame: &Frame, pos: usize) -> Result<()> {
    if let Some(ColKind::Text) = col_kind(col, frame)
        && matches!(
            other.kind,
            ExprKind::Lit(Lit::Int(_) | Lit::Float(_) | Lit::Bool(_))
        )
    {
        return Err(Error::query(
            QueryErrorKind::TypeMismatch,
            Some(pos),
            "can't compare text with a number",
        ));
    }
    Ok(())
}

/// ORDER BY may name a select-list alias.
fn substitute(e: &Expr, aliases: &[(String, Expr)], frame: &Frame) -> Expr {
    if let ExprKind::Column {
        qualifier: None,
        name,
    } = &e.kind
        && !frame.has_column(name)
        && let Some((_, x)) = aliases.iter().find(|(a, _)| a == name)
    {
        return x.clone();
    }
    e.clone()
}

fn scalar_key(v: Val, pos: usize, clause: &str) -> Result<Val> {
    match v {
        Val::Arr(a) if a.data.len() == 1 => Ok(a.scalar_at(0)),
        Val::Arr(_) | Val::List(_) => Err(Error::query(
            QueryErrorKind::TypeMismatch,
            Some(pos),
            format!("{clause} BY needs a scalar per row, not an array"),
        )),
        other => Ok(other),
    }
}

fn expand(hits: &[usize], n: usize, before: usize, after: usize) -> Vec<usize> {
    let mut keep = BTreeMap::new();
    for &h in hits {
        for p in h.saturating_sub(before)..=h.saturating_add(after).min(n.saturating_sub(1)) {
            keep.insert(p, ());
        }
    }
    keep.into_keys().collect()
}

fn ungroup<'s>(frame: Frame<'s>, u: &Ungroup, pos: usize) -> Result<Frame<'s>> {
    let Some(groups) = &frame.groups else {
        return Err(Error::query(
            QueryErrorKind::InvalidStatement,
            Some(pos),
            "UNGROUP BY needs a grouped source (a GROUP BY subquery)",
        ));
    };
    if let Ungroup::By(_) = u {
        return Err(Error::query(
            QueryErrorKind::Unsupported,
            Some(pos),
            "UNGROUP BY takes SPLIT",
        ));
    }
    let mut rows = Vec::new();
    let mut frame_number = Vec::new();
    for g in groups {
        for (k, r) in g.iter().enumerate() {
            rows.push(*r);
            frame_number.push(Val::Int(k as i64));
        }
    }
    Ok(Frame {
        sources: frame.sources.clone(),
        rows,
        virt: vec![("frame_number".to_owned(), frame_number)],
        groups: None,
        star: true,
        aliases: frame.aliases.clone(),
        pairs: None,
    })
}

/// UNION / INTERSECT / EXCEPT. Rows of one version combine as sets in source order;
/// rows of different versions are different rows (UNION concatenates them).
fn set_op<'s>(op: SetOp, l: Frame<'s>, r: Frame<'s>) -> Frame<'s> {
    let same = l.sources.len() == 1 && r.sources.len() == 1 && l.sources[0].same_as(r.sources[0]);
    if same {
        let a: Vec<u64> = l.rows.iter().map(|x| x.1).collect();
        let b: HashSet<u64> = r.rows.iter().map(|x| x.1).collect();
        let mut rows: Vec<u64> = match op {
            SetOp::Union => a.iter().copied().chain(b.iter().copied()).collect(),
            SetOp::Intersect => a.iter().copied().filter(|x| b.contains(x)).collect(),
            SetOp::Except => a.iter().copied().filter(|x| !b.contains(x)).collect(),
        };
        rows.sort_unstable();
        rows.dedup();
        return Frame {
            sources: l.sources.clone(),
            rows: rows.into_iter().map(|x| (0, x)).collect(),
            virt: Vec::new(),
            groups: None,
            star: true,
            aliases: l.aliases.clone(),
            pairs: None,
        };
    }
    let key = |f: &Frame, (s, r): (u32, u64)| {
        (
            f.sources[s as usize].url.clone(),
            f.sources[s as usize].node.clone(),
            r,
        )
    };
    match op {
        SetOp::Union => {
            let mut sources = l.sources.clone();
            let mut aliases = l.aliases.clone();
            let mut remap = Vec::new();
            for (k, s) in r.sources.iter().enumerate() {
                match sources.iter().position(|x| x.same_as(s)) {
                    Some(i) => remap.push(i as u32),
                    None => {
                        sources.push(s);
                        aliases.push(r.aliases[k].clone());
                        remap.push((sources.len() - 1) as u32);
                    }
                }
            }
            let mut rows = l.rows.clone();
            rows.extend(r.rows.iter().map(|&(s, x)| (remap[s as usize], x)));
            Frame {
                sources,
                rows,
                virt: Vec::new(),
                groups: None,
                star: true,
                aliases,
                pairs: None,
            }
        }
        SetOp::Intersect | SetOp::Except => {
            let b: HashSet<_> = r.rows.iter().map(|&x| key(&r, x)).collect();
            let keep: Vec<usize> = (0..l.len())
                .filter(|&p| b.contains(&key(&l, l.rows[p])) == (op == SetOp::Intersect))
                .collect();
            let mut out = l.take(&keep);
            out.virt.clear();
            out
        }
    }
}

/// Calls `f` on every expression of a query, nested ones included.
pub fn visit(q: &Query, f: &mut dyn FnMut(&Expr)) {
    fn expr(e: &Expr, f: &mut dyn FnMut(&Expr)) {
        f(e);
        match &e.kind {
            ExprKind::Func { args, .. } => {
                for a in args {
                    match a {
                        Arg::Expr(x) => expr(x, f),
                        Arg::Weighted(c, w) => {
                            expr(c, f);
                            expr(w, f);
                        }
                    }
                }
            }
            ExprKind::Binary { left, right, .. } => {
                expr(left, f);
                expr(right, f);
            }
            ExprKind::Neg(x) | ExprKind::Not(x) => expr(x, f),
            ExprKind::Index { base, items } => {
                expr(base, f);
                for it in items {
                    match it {
                        IndexItem::At(x) => expr(x, f),
                        IndexItem::Slice { start, stop, step } => {
                            for x in [start, stop, step].into_iter().flatten() {
                                expr(x, f);
                            }
                        }
                    }
                }
            }
            ExprKind::Array(v) => v.iter().for_each(|x| expr(x, f)),
            ExprKind::InList { expr: x, list, .. } => {
                expr(x, f);
                list.iter().for_each(|y| expr(y, f));
            }
            ExprKind::Between {
                expr: x, low, high, ..
            } => {
                expr(x, f);
                expr(low, f);
                expr(high, f);
            }
            ExprKind::IsNull { expr: x, .. } => expr(x, f),
            ExprKind::Like {
                expr: x, pattern, ..
            } => {
                expr(x, f);
                expr(pattern, f);
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    expr(o, f);
                }
                for (c, t) in whens {
                    expr(c, f);
                    expr(t, f);
                }
                if let Some(o) = otherwise {
                    expr(o, f);
                }
            }
            ExprKind::Column { .. }
            | ExprKind::Lit(_)
            | ExprKind::Star
            | ExprKind::GroupKey(_)
            | ExprKind::Const(_) => {}
        }
    }
    fn tail(t: &Tail, f: &mut dyn FnMut(&Expr)) {
        t.order_by.iter().for_each(|k| expr(&k.expr, f));
        if let Some(s) = &t.sample {
            expr(&s.weight, f);
        }
    }
    fn from(fc: &FromClause, f: &mut dyn FnMut(&Expr)) {
        match fc {
            FromClause::Subquery { query, .. } => visit(query, f),
            FromClause::Join {
                left, right, on, ..
            } => {
                from(left, f);
                from(right, f);
                if let Some(o) = on {
                    expr(o, f);
                }
            }
            FromClause::Source { .. } | FromClause::Diff { .. } => {}
        }
    }
    match q {
        Query::Select(s) => {
            for it in &s.items {
                if let SelectItem::Expr { expr: e, .. } = it {
                    expr(e, f);
                }
            }
            if let Some(fc) = &s.from {
                from(fc, f);
            }
            for e in s.filter.iter().chain(&s.group_by).chain(&s.having) {
                expr(e, f);
            }
            if let Some(Ungroup::By(e)) = &s.ungroup {
                expr(e, f);
            }
            tail(&s.tail, f);
        }
        Query::Set {
            left,
            right,
            tail: t,
            ..
        } => {
            visit(left, f);
            visit(right, f);
            tail(t, f);
        }
        Query::Explain(q) => visit(q, f),
    }
}

/// Names of columns a query mentions (the stored ones are loaded before running).
pub fn columns_of(q: &Query) -> HashSet<String> {
    let mut out = HashSet::new();
    visit(q, &mut |e| {
        if let ExprKind::Column { name, .. } = &e.kind {
            out.insert(name.clone());
        }
    });
    collect_using(q, &mut out);
    out
}

fn collect_using(q: &Query, out: &mut HashSet<String>) {
    visit_from(q, &mut |f| {
        if let FromClause::Join { using, .. } = f {
            out.extend(using.iter().cloned());
        }
    });
}

/// Text columns that BM25_SIMILARITY scores (their corpus statistics are needed).
pub fn bm25_columns(q: &Query) -> Vec<String> {
    let mut out = Vec::new();
    visit(q, &mut |e| {
        if let ExprKind::Func { name, args } = &e.kind
            && name == "BM25_SIMILARITY"
            && let Some(Arg::Expr(Expr {
                kind: ExprKind::Column { name: c, .. },
                ..
            })) = args.first()
            && !out.contains(c)
        {
            out.push(c.clone());
        }
    });
    out
}

/// Every FROM source of a query, as (url, version, position).
pub fn sources_of(q: &Query, out: &mut Vec<(String, Option<String>, usize)>) {
    visit_from(q, &mut |f| {
        if let FromClause::Source {
            url, version, pos, ..
        } = f
        {
            out.push((url.clone(), version.clone(), *pos));
        }
    });
}

fn from_reads_main(f: &FromClause) -> bool {
    match f {
        FromClause::Diff { .. } => true,
        FromClause::Subquery { query, .. } => reads_main(query),
        FromClause::Join { left, right, .. } => from_reads_main(left) || from_reads_main(right),
        FromClause::Source { .. } => false,
    }
}

/// Whether a query reads the dataset it is run on (a SELECT without FROM somewhere).
pub fn reads_main(q: &Query) -> bool {
    match q {
        Query::Select(s) => s.from.as_ref().is_none_or(from_reads_main),
        Query::Set { left, right, .. } => reads_main(left) || reads_main(right),
        Query::Explain(q) => reads_main(q),
    }
}
