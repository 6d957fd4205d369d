//! Body of `http_bodies`: the request bodies the daemon parses, through the functions
//! its routes call before any storage is touched. The first byte picks the body kind,
//! the rest is the body:
//!
//! | byte % 7 | body | parsed by |
//! |---|---|---|
//! | 0 | append, JSON columns | `routes::append::json_columns` |
//! | 1 | append, Arrow IPC stream | `arrow::decode` |
//! | 2 | transform part, JSON columns | `transform_job::decode_part` |
//! | 3 | transform part, Arrow IPC stream | `transform_job::decode_part` |
//! | 4 | query request | `QueryRequest::check` |
//! | 5 | stream request | `StreamRequest::check` |
//! | 6 | transform begin / commit | their JSON types |
//!
//! Column specs come from a small dataset in memory with one tensor of every mapping
//! (`arrow::column_spec`, as the append route makes them).
//!
//! Contract: nothing panics; decoded columns name distinct tensors of the dataset, and
//! every array sample holds the bytes its shape and dtype say, of the tensor's dtype;
//! an Arrow body decodes to columns that encode and decode again to the same samples;
//! a part holds every tensor, all of one length; a checked request is within the
//! route's bounds.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use deeplake_core::dataset::{Dataset, OpenOptions, TensorOptions};
use deeplake_core::{Dtype, Sample};
use deeplake_daemon::serve::arrow::{self, ColumnSpec, Page};
use deeplake_daemon::serve::routes::append::json_columns;
use deeplake_daemon::serve::routes::query::QueryRequest;
use deeplake_daemon::serve::routes::stream::StreamRequest;
use deeplake_daemon::serve::routes::transforms::{TransformBegin, TransformCommit};
use deeplake_daemon::serve::transform_job::decode_part;

type Columns = Vec<(String, Vec<Sample>)>;

/// The column specs of a dataset with a tensor of every mapping. Made once per process.
fn specs() -> &'static HashMap<String, ColumnSpec> {
    static S: OnceLock<HashMap<String, ColumnSpec>> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime starts");
        rt.block_on(async {
            let url = format!("memory://fuzz-http-{}", std::process::id());
            let mut ds = Dataset::create(&url, OpenOptions::default())
                .await
                .expect("memory dataset");
            let tensors: [(&str, &str, Option<Dtype>, Option<&str>); 11] = [
                ("x", "generic", Some(Dtype::F32), None),
                ("n", "generic", Some(Dtype::I64), None),
                ("g", "generic", None, None),
                ("e", "embedding", Some(Dtype::F32), None),
                ("b", "bbox", Some(Dtype::F32), None),
                ("label", "class_label", None, None),
                ("t", "text", None, None),
                ("j", "json", None, None),
                ("l", "list", None, None),
                ("img", "image", Some(Dtype::U8), Some("png")),
                ("link", "link[image]", None, Some("jpeg")),
            ];
            for (name, htype, dtype, compression) in tensors {
                let mut o = TensorOptions::new(htype);
                o.dtype = dtype;
                o.sample_compression = compression.map(str::to_owned);
                if htype.starts_with("link") {
                    o.verify = Some(false);
                }
                ds.create_tensor(name, o)
                    .await
                    .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
            }
            ds.tensor_names()
                .into_iter()
                .map(|t| {
                    let spec = arrow::column_spec(&ds, &t, false)
                        .unwrap_or_else(|e| panic!("spec of {t}: {}", e.message));
                    (t, spec)
                })
                .collect()
        })
    })
}

/// Parses `data` as the body the first byte names (see the module doc).
pub fn http_bodies(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let specs = specs();
    match which % 7 {
        0 => {
            if let Ok(cols) = json_columns(body, specs) {
                check_columns(&cols, specs);
            }
        }
        1 => {
            if let Ok(cols) = arrow::decode(body, specs) {
                check_columns(&cols, specs);
                arrow_round_trip(&cols, specs);
            }
        }
        2 | 3 => {
            if let Ok(cols) = decode_part(body, which % 7 == 2, specs) {
                check_columns(&cols, specs);
                let names: HashSet<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                for t in specs.keys() {
                    assert!(names.contains(t.as_str()), "part lacks tensor {t}");
                }
                let rows = cols.first().map_or(0, |(_, c)| c.len());
                for (t, c) in &cols {
                    assert_eq!(c.len(), rows, "part column {t}");
                }
            }
        }
        4 => {
            if let Ok(q) = serde_json::from_slice::<QueryRequest>(body)
                && let Ok(c) = q.check()
            {
                assert!(c.limit <= 1000, "page limit {}", c.limit);
            }
        }
        5 => {
            if let Ok(s) = serde_json::from_slice::<StreamRequest>(body)
                && let Ok(c) = s.check()
            {
                assert!(
                    (1..=1 << 16).contains(&c.batch_size),
                    "batch {}",
                    c.batch_size
                );
                assert!(c.prefetch_bytes > 0 && c.prefetch_bytes <= 8 << 30);
                assert!(c.rank.index < c.rank.count && c.worker.index < c.worker.count);
                for (t, list) in &c.transforms {
                    for x in list {
                        assert!(
                            x.validate().is_ok(),
                            "tensor {t}: checked transform invalid"
                        );
                    }
                }
            }
        }
        _ => {
            let _ = serde_json::from_slice::<TransformBegin>(body);
            let _ = serde_json::from_slice::<TransformCommit>(body);
        }
    }
}

fn check_columns(cols: &Columns, specs: &HashMap<String, ColumnSpec>) {
    let mut seen = HashSet::new();
    for (t, samples) in cols {
        assert!(seen.insert(t.as_str()), "tensor {t} given twice");
        let spec = specs
            .get(t)
            .unwrap_or_else(|| panic!("column {t} names no tensor"));
        for s in samples {
            if let Sample::Array(a) = s {
                let elements = a
                    .shape
                    .iter()
                    .try_fold(1usize, |n, d| n.checked_mul(*d))
                    .unwrap_or_else(|| panic!("tensor {t}: shape {:?} overflows", a.shape));
                assert_eq!(
                    Some(a.data.len()),
                    elements.checked_mul(a.dtype.size()),
                    "tensor {t}: bytes of shape {:?}",
                    a.shape
                );
                if let Some(d) = spec.dtype {
                    assert_eq!(a.dtype, d, "tensor {t}: dtype");
                }
            }
        }
    }
}

/// What an Arrow body decoded to is what our own encoding of it decodes to.
fn arrow_round_trip(cols: &Columns, specs: &HashMap<String, ColumnSpec>) {
    let page = Page {
        rows: None,
        tensors: cols
            .iter()
            .map(|(t, s)| (specs[t].clone(), s.clone()))
            .collect(),
        computed: Vec::new(),
    };
    let Ok(bytes) = arrow::encode(page) else {
        return;
    };
    let again = arrow::decode(&bytes, specs)
        .unwrap_or_else(|e| panic!("our own Arrow encoding is refused: {}", e.message));
    assert_eq!(&again, cols, "Arrow decode -> encode -> decode");
}
