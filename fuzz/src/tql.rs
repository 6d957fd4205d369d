//! Body of `parse_tql`: TQL text through the lexer and parser, then (when it parses)
//! run against a small dataset in memory, so the checks against the schema, the
//! planner and the evaluator see arbitrary queries too.
//!
//! Contract: any text gives a query or an error, never a panic; a parse error names a
//! position inside the text; a query that runs returns rows of the dataset only, and
//! as many values per computed column as rows.

use std::sync::OnceLock;

use deeplake_core::dataset::{Dataset, OpenOptions, TensorOptions};
use deeplake_core::tql::ast::{FromClause, Query};
use deeplake_core::tql::{self, QueryOptions};
use deeplake_core::{Dtype, NdArray, Sample};

/// Rows of the dataset queries run on.
const ROWS: u64 = 6;

/// Parses `data` as a TQL query and runs it (see the module doc).
pub fn parse_tql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match deeplake_core::tql::parser::parse(text) {
        Err(deeplake_core::Error::Query { pos: Some(p), .. }) => {
            assert!(p <= text.chars().count(), "error position {p} past the end");
        }
        Err(_) => {}
        Ok(q) => run(&q, text),
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    ds: Dataset,
}

/// A dataset of every kind of column a query can touch: numbers, vectors, text,
/// json, class labels. Made once per process.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime starts");
        let ds = rt.block_on(async {
            let url = format!("memory://fuzz-tql-{}", std::process::id());
            let mut ds = Dataset::create(&url, OpenOptions::default())
                .await
                .expect("memory dataset");
            let opts = |htype: &str, dtype: Option<Dtype>| {
                let mut o = TensorOptions::new(htype);
                o.dtype = dtype;
                o
            };
            ds.create_tensor("x", opts("generic", Some(Dtype::F32)))
                .await
                .expect("x");
            ds.create_tensor("v", opts("embedding", Some(Dtype::F32)))
                .await
                .expect("v");
            ds.create_tensor("t", opts("text", None)).await.expect("t");
            ds.create_tensor("j", opts("json", None)).await.expect("j");
            ds.create_tensor("labels", opts("class_label", None))
                .await
                .expect("labels");
            let words = ["cat", "dog", "a cat and a dog", "", "bird", "dog"];
            for i in 0..ROWS {
                let f = i as f32;
                ds.extend(
                    "x",
                    vec![Sample::Array(
                        NdArray::from_slice(vec![1], &[f]).expect("x row"),
                    )],
                )
                .await
                .expect("x row");
                ds.extend(
                    "v",
                    vec![Sample::Array(
                        NdArray::from_slice(vec![3], &[f, 1.0 - f, 0.5]).expect("v row"),
                    )],
                )
                .await
                .expect("v row");
                ds.extend("t", vec![Sample::Text(words[i as usize].to_owned())])
                    .await
                    .expect("t row");
                ds.extend(
                    "j",
                    vec![Sample::Json(
                        serde_json::json!({"k": i, "s": words[i as usize]}),
                    )],
                )
                .await
                .expect("j row");
                ds.extend(
                    "labels",
                    vec![Sample::Array(
                        NdArray::from_slice(vec![1], &[(i % 3) as u32]).expect("label row"),
                    )],
                )
                .await
                .expect("label row");
            }
            ds.commit("fuzz fixture").await.expect("commit");
            ds
        });
        Fixture { rt, ds }
    })
}

/// Whether the query reads only the dataset it runs on: a FROM naming a URL would
/// open storage outside the fuzzer's dataset (the daemon refuses those too).
fn reads_only_main(q: &Query) -> bool {
    fn from(fc: &FromClause) -> bool {
        match fc {
            FromClause::Source { .. } => false,
            FromClause::Subquery { query, .. } => reads_only_main(query),
            FromClause::Join { left, right, .. } => from(left) && from(right),
            FromClause::Diff { .. } => true,
        }
    }
    match q {
        Query::Select(s) => s.from.as_ref().is_none_or(from),
        Query::Set { left, right, .. } => reads_only_main(left) && reads_only_main(right),
        Query::Explain(q) => reads_only_main(q),
    }
}

fn run(q: &Query, text: &str) {
    if !reads_only_main(q) {
        return;
    }
    let f = fixture();
    let opts = QueryOptions::default();
    let Ok(res) = f.rt.block_on(tql::query(&f.ds, text, &opts)) else {
        return;
    };
    let rows = res
        .rows
        .iter()
        .chain(res.joined.iter().flatten())
        .chain(res.groups.iter().flatten().flatten());
    for &(src, row) in rows {
        if src == u32::MAX {
            // The unmatched side of an outer join.
            continue;
        }
        assert!(
            (src as usize) < res.sources.len(),
            "row names source {src} of {}",
            res.sources.len()
        );
        assert!(row < ROWS, "row {row} of a {ROWS}-row dataset");
    }
    for (name, vals) in &res.columns {
        assert_eq!(vals.len(), res.rows.len(), "column {name}: values vs rows");
    }
}
