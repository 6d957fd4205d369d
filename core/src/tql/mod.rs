//! The Tensor Query Language: parse, check against the schema, run over columns, and
//! return a view (source, version, row indices, computed columns).
//!
//! ```text
//! text --lexer/parser--> Query (AST with positions)
//!      --open sources--> one Source per dataset version named (FROM "url@ref")
//!      --load columns--> only the tensors the query mentions, decoded once
//!      --exec (rayon)--> Frame --> QueryResult
//! ```
//! Every error is `Error::Query` with a kind and the character position; nothing in a
//! query can panic or allocate without bound (the text and its nesting are bounded,
//! slices are clamped to the data).

pub mod ast;
mod columnar;
mod eval;
mod exec;
pub mod frame;
pub mod lexer;
pub mod parser;
pub mod value;

use std::collections::HashMap;

pub use value::{Arr, Elem, Val};

use crate::dataset::{Dataset, OpenOptions};
use crate::error::{Error, QueryErrorKind, Result};
use crate::store::StoreOptions;
use crate::version::Ref;

#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Seed of RANDOM() and SAMPLE BY (a query may give its own with `SEED n`).
    pub seed: u64,
    /// Storage options for the datasets a query names in FROM.
    pub storage: StoreOptions,
}

/// A dataset version rows of a result come from.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSource {
    pub url: String,
    /// The node read: a commit id, or the id of a branch head with uncommitted changes.
    pub node: String,
    /// The commit, when the node is one.
    pub commit: Option<String>,
}

/// A query's result: a view over one or more dataset versions.
#[derive(Clone, Debug, Default)]
pub struct QueryResult {
    pub sources: Vec<ResultSource>,
    /// (source index, row) of each result row, in result order.
    pub rows: Vec<(u32, u64)>,
    /// Computed columns (select-list expressions), one value per result row.
    pub columns: Vec<(String, Vec<Val>)>,
    /// Whether the stored tensors pass through (`SELECT *`).
    pub star: bool,
    /// For GROUP BY results: each row's member rows.
    pub groups: Option<Vec<Vec<(u32, u64)>>>,
    /// For a JOIN: the right side's row of each result row (`rows` holds the left
    /// side's); a side without a match has source index `u32::MAX`.
    pub joined: Option<Vec<(u32, u64)>>,
    /// For `EXPLAIN`: the plan, and no rows.
    pub explain: Option<String>,
}

impl QueryResult {
    /// Saves the rows as view `id` of `ds` in the 3.x layout (see `dataset::views`). The
    /// result must read only `ds` at its last commit, with no uncommitted changes.
    pub async fn save_view(
        &self,
        ds: &Dataset,
        id: &str,
        message: Option<&str>,
        query: Option<&str>,
        opts: &OpenOptions,
    ) -> Result<crate::dataset::views::SavedView> {
        let rows = self.rows_of(ds, "saves as a view")?;
        ds.save_view(id, &rows, message, query, opts).await
    }

    /// The result's rows as rows of `ds` (at the version it was opened at). Fails when
    /// the result reads another dataset or version, or groups or joins rows; `use_`
    /// says what the rows were wanted for.
    pub fn rows_of(&self, ds: &Dataset, use_: &str) -> Result<Vec<u64>> {
        let one_source = match self.sources.as_slice() {
            [s] => s.url == ds.url() && s.node == ds.node_id().as_str(),
            [] => true,
            _ => false,
        };
        if !one_source || self.groups.is_some() || self.joined.is_some() {
            return Err(Error::invalid(format!(
                "only a result of rows of this dataset (no groups, no other versions) {use_}"
            )));
        }
        Ok(self.rows.iter().map(|r| r.1).collect())
    }

    pub fn column(&self, name: &str) -> Option<&[Val]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Runs `text` on `ds` (a query without FROM reads `ds` as it is checked out).
pub async fn query(ds: &Dataset, text: &str, opts: &QueryOptions) -> Result<QueryResult> {
    run(Some(ds), text, opts).await
}

/// Runs a query whose sources are all named in FROM.
pub async fn query_sources(text: &str, opts: &QueryOptions) -> Result<QueryResult> {
    run(None, text, opts).await
}

async fn run(ds: Option<&Dataset>, text: &str, opts: &QueryOptions) -> Result<QueryResult> {
    let q = parser::parse(text)?;
    let mut sources = Vec::new();
    let mut datasets: Vec<Option<Dataset>> = Vec::new();
    let mut by_name = HashMap::new();
    let mut main = None;
    if exec::reads_main(&q) {
        let d = ds.ok_or_else(|| {
            Error::query(
                QueryErrorKind::SourceNotFound,
                Some(0),
                "the query has no FROM and no dataset to run on",
            )
        })?;
        sources.push(frame::Source::new(d)?);
        datasets.push(None);
        main = Some(0);
    }
    let mut named = Vec::new();
    exec::sources_of(&q, &mut named);
    for (url, version, pos) in named {
        let key = exec::source_key(&url, version.as_deref());
        if by_name.contains_key(&key) {
            continue;
        }
        if let (Some(d), None) = (ds, &version)
            && d.url() == url
        {
            if main.is_none() {
                sources.push(frame::Source::new(d)?);
                datasets.push(None);
                main = Some(sources.len() - 1);
            }
            by_name.insert(key, main.unwrap_or(0));
            continue;
        }
        let open = OpenOptions {
            storage: opts.storage.clone(),
            read_only: true,
            ..Default::default()
        };
        let opened = match &version {
            Some(v) => Dataset::open_ref(&url, &Ref::Name(v.clone()), open).await,
            None => Dataset::open(&url, open).await,
        };
        let d = opened.map_err(|e| match e {
            Error::NotFound { what, name } => Error::query(
                QueryErrorKind::SourceNotFound,
                Some(pos),
                format!("source {key:?}: {what} {name} not found"),
            ),
            other => other,
        })?;
        sources.push(frame::Source::new(&d)?);
        datasets.push(Some(d));
        by_name.insert(key, sources.len() - 1);
    }
    let mut diffs = HashMap::new();
    let mut wanted_diffs = Vec::new();
    exec::diffs_of(&q, &mut wanted_diffs);
    for (a, b, pos) in wanted_diffs {
        let key = exec::diff_key(&a, &b);
        if diffs.contains_key(&key) {
            continue;
        }
        let d = ds.ok_or_else(|| {
            Error::query(
                QueryErrorKind::SourceNotFound,
                Some(pos),
                "DIFF compares two versions of the dataset the query runs on",
            )
        })?;
        let rows = diff_rows(d, &a, &b, pos, opts, &mut sources, &mut datasets).await?;
        diffs.insert(key, rows);
    }
    if let ast::Query::Explain(inner) = &q {
        return Ok(QueryResult {
            explain: Some(explain(inner, &sources, main, &by_name)),
            ..Default::default()
        });
    }
    let wanted = exec::columns_of(&q);
    for (k, src) in sources.iter().enumerate() {
        let d = match (&datasets[k], ds) {
            (Some(d), _) => d,
            (None, Some(d)) => d,
            (None, None) => return Err(Error::internal("a source lost its dataset")),
        };
        for c in &wanted {
            if src.schema.contains_key(c) {
                src.load(d, c).await?;
            }
        }
    }
    let mut bm25 = HashMap::new();
    for c in exec::bm25_columns(&q) {
        if let Some(col) = sources.iter().find_map(|s| s.loaded(&c)) {
            let stats = crate::runtime::spawn_cpu(move || {
                let frame::Column::Vals(vals) = &*col else {
                    // Text columns hold values; a typed column has no text to score.
                    return Ok(eval::Bm25::build(std::iter::empty()));
                };
                Ok(eval::Bm25::build(vals.iter().filter_map(|v| match v {
                    Val::Str(s) => Some(&**s),
                    _ => None,
                })))
            })
            .await?;
            bm25.insert(c, stats);
        }
    }
    let ex = exec::Exec {
        sources,
        by_name,
        main,
        seed: opts.seed,
        bm25,
        diffs,
    };
    crate::runtime::spawn_cpu(move || {
        let f = ex.query(&q)?;
        let sources: Vec<ResultSource> = f
            .sources
            .iter()
            .map(|s| ResultSource {
                url: s.url.clone(),
                node: s.node.clone(),
                commit: s.commit.clone(),
            })
            .collect();
        Ok(QueryResult {
            sources,
            rows: f.rows,
            columns: f.virt,
            star: f.star,
            groups: f.groups,
            joined: f.pairs,
            explain: None,
        })
    })
    .await
}

/// Rows that changed from version `a` to `b` of `ds` since their common ancestor: added
/// and updated rows of `b`, deleted rows of the ancestor (a row counts as changed when
/// any tensor's sample in it changed). Opens both versions as sources.
async fn diff_rows(
    ds: &Dataset,
    a: &str,
    b: &str,
    pos: usize,
    opts: &QueryOptions,
    sources: &mut Vec<frame::Source>,
    datasets: &mut Vec<Option<Dataset>>,
) -> Result<exec::DiffRows> {
    let not_found = |e: Error| match e {
        Error::NotFound { what, name } => Error::query(
            QueryErrorKind::SourceNotFound,
            Some(pos),
            format!("DIFF: {what} {name} not found"),
        ),
        other => other,
    };
    let rd = ds
        .diff_rows(
            Some(&Ref::Name(a.to_owned())),
            Some(&Ref::Name(b.to_owned())),
        )
        .await
        .map_err(not_found)?;
    let open = |r: String| {
        let o = OpenOptions {
            storage: opts.storage.clone(),
            read_only: true,
            ..Default::default()
        };
        async move { Dataset::open_ref(ds.url(), &Ref::Name(r), o).await }
    };
    let after = open(b.to_owned()).await.map_err(not_found)?;
    let base = match &rd.lca {
        Some(n) => Some(open(n.clone()).await.map_err(not_found)?),
        None => None,
    };
    // Per row: 2 = added, 1 = updated; per ancestor row: deleted.
    let mut changed: std::collections::BTreeMap<u64, u8> = Default::default();
    let mut deleted = std::collections::BTreeSet::new();
    let side = rd.sides.last();
    for (tensor, ch) in side.map(|s| s.tensors.iter()).into_iter().flatten() {
        if !ch.added.is_empty() || !ch.updated.is_empty() {
            let ids: Vec<u64> = ch.added.iter().chain(&ch.updated).copied().collect();
            let at_b = row_of_ids(&after, tensor, &ids).await?;
            for id in &ch.added {
                if let Some(&r) = at_b.get(id) {
                    changed.insert(r, 2);
                }
            }
            for id in &ch.updated {
                if let Some(&r) = at_b.get(id) {
                    changed.entry(r).or_insert(1);
                }
            }
        }
        if !ch.deleted.is_empty()
            && let Some(base) = &base
        {
            let at_base = row_of_ids(base, tensor, &ch.deleted).await?;
            deleted.extend(ch.deleted.iter().filter_map(|id| at_base.get(id).copied()));
        }
    }
    sources.push(frame::Source::new(&after)?);
    datasets.push(Some(after));
    let b_idx = (sources.len() - 1) as u32;
    let mut rows: Vec<(u32, u64)> = changed.keys().map(|&r| (b_idx, r)).collect();
    let mut change: Vec<Val> = changed
        .values()
        .map(|&c| Val::str(if c == 2 { "added" } else { "updated" }))
        .collect();
    if let Some(base) = base
        && !deleted.is_empty()
    {
        sources.push(frame::Source::new(&base)?);
        datasets.push(Some(base));
        let l_idx = (sources.len() - 1) as u32;
        rows.extend(deleted.iter().map(|&r| (l_idx, r)));
        change.extend(deleted.iter().map(|_| Val::str("deleted")));
    }
    Ok((rows, change))
}

/// Sample id -> row of a tensor, for the ids in `ids`, from its `_<t>_id` companion (a
/// repeated id maps to its last row).
async fn row_of_ids(d: &Dataset, tensor: &str, ids: &[u64]) -> Result<HashMap<u64, u64>> {
    let name = format!("_{tensor}_id");
    let n = d.tensor_len(&name).unwrap_or(0);
    let wanted: std::collections::HashSet<u64> = ids.iter().copied().collect();
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    // Ids are random 64-bit numbers: read the bytes, not a float.
    let id_of = |b: &[u8]| <[u8; 8]>::try_from(b).ok().map(u64::from_le_bytes);
    if let Some(parts) = d.read_chunk_parts(&name, 0..n).await? {
        let mut row = 0u64;
        for (c, locals) in &parts {
            let uniform = c.uniform_run(locals.clone()).filter(|(dims, size, _)| {
                dims.iter().map(|&x| x as u64).product::<u64>() == 1 && *size == 8
            });
            match uniform.and_then(|(_, _, span)| c.data.get(span)) {
                Some(bytes) => {
                    for b in bytes.chunks_exact(8) {
                        if let Some(id) = id_of(b).filter(|i| wanted.contains(i)) {
                            out.insert(id, row);
                        }
                        row += 1;
                    }
                }
                None => {
                    for l in locals.clone() {
                        let one = c
                            .dims(l)
                            .is_ok_and(|dims| dims.iter().map(|&x| x as u64).product::<u64>() == 1);
                        let bytes = c.byte_range(l).ok().and_then(|r| c.data.get(r));
                        if let (true, Some(id)) = (one, bytes.and_then(id_of))
                            && wanted.contains(&id)
                        {
                            out.insert(id, row);
                        }
                        row += 1;
                    }
                }
            }
        }
        return Ok(out);
    }
    for (r, s) in d.read_range(&name, 0..n).await?.into_iter().enumerate() {
        if let crate::format::array::Sample::Array(a) = s
            && a.num_elements() == 1
            && let Some(id) = id_of(&a.data[..])
            && wanted.contains(&id)
        {
            out.insert(id, r as u64);
        }
    }
    Ok(out)
}

/// The plan of a query, with the rows and chunks each scan reads.
fn explain(
    q: &ast::Query,
    sources: &[frame::Source],
    main: Option<usize>,
    by_name: &HashMap<String, usize>,
) -> String {
    let cols = exec::columns_of(q);
    let mut out = String::new();
    fn walk(
        q: &ast::Query,
        depth: usize,
        out: &mut String,
        scan: &dyn Fn(Option<&ast::FromClause>) -> String,
    ) {
        let pad = "  ".repeat(depth);
        match q {
            ast::Query::Explain(q) => walk(q, depth, out, scan),
            ast::Query::Set {
                op,
                left,
                right,
                tail,
            } => {
                push_tail(tail, &pad, out);
                out.push_str(&format!("{pad}{op:?}\n"));
                walk(left, depth + 1, out, scan);
                walk(right, depth + 1, out, scan);
            }
            ast::Query::Select(s) => {
                if let Some(smp) = &s.tail.sample {
                    out.push_str(&format!(
                        "{pad}Sample (replace: {}, limit: {:?}{})\n",
                        smp.replace,
                        smp.limit,
                        if smp.percent { " percent" } else { "" }
                    ));
                }
                if s.tail.limit.is_some() || s.tail.offset.is_some() || s.top.is_some() {
                    out.push_str(&format!(
                        "{pad}Limit {:?} offset {}\n",
                        s.tail.limit.or(s.top),
                        s.tail.offset.unwrap_or(0)
                    ));
                }
                if !s.tail.order_by.is_empty() {
                    out.push_str(&format!(
                        "{pad}Sort by {} key(s){}\n",
                        s.tail.order_by.len(),
                        if s.tail.limit.is_some() {
                            " (top-k)"
                        } else {
                            ""
                        }
                    ));
                }
                if !s.group_by.is_empty() {
                    out.push_str(&format!(
                        "{pad}Group by {} key(s){}\n",
                        s.group_by.len(),
                        if s.having.is_some() { " having" } else { "" }
                    ));
                }
                if s.filter.is_some() {
                    out.push_str(&format!("{pad}Filter\n"));
                }
                match &s.from {
                    Some(ast::FromClause::Subquery { query, .. }) => {
                        out.push_str(&format!("{pad}Subquery\n"));
                        walk(query, depth + 1, out, scan);
                    }
                    other => out.push_str(&format!("{pad}{}\n", scan(other.as_ref()))),
                }
            }
        }
    }
    fn push_tail(t: &ast::Tail, pad: &str, out: &mut String) {
        if t.limit.is_some() || t.offset.is_some() {
            out.push_str(&format!(
                "{pad}Limit {:?} offset {}\n",
                t.limit,
                t.offset.unwrap_or(0)
            ));
        }
        if !t.order_by.is_empty() {
            out.push_str(&format!("{pad}Sort by {} key(s)\n", t.order_by.len()));
        }
    }
    let scan = |f: Option<&ast::FromClause>| -> String {
        let idx = match f {
            None => main,
            Some(ast::FromClause::Source { url, version, .. }) => by_name
                .get(&exec::source_key(url, version.as_deref()))
                .copied(),
            Some(_) => None,
        };
        match idx.and_then(|i| sources.get(i)) {
            Some(s) => {
                let mut read: Vec<&String> =
                    cols.iter().filter(|c| s.schema.contains_key(*c)).collect();
                read.sort();
                let chunks: usize = read
                    .iter()
                    .map(|c| s.chunks.get(*c).copied().unwrap_or(0))
                    .sum();
                format!(
                    "Scan {}@{} ({} rows; tensors {:?}; about {} chunks)",
                    s.url, s.node, s.len, read, chunks
                )
            }
            None => "Join".to_owned(),
        }
    };
    walk(q, 0, &mut out, &scan);
    out
}
