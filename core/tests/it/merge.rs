//! `Dataset::merge`: 3.x's merge semantics (conflicts under each policy, rows matched by
//! sample id, new and re-appended rows, renamed, deleted and new tensors), the merge
//! commit and its persisted merge parent; each case on memory:// and on local disk.

use deeplake_core::dataset::MergeOptions;
use deeplake_core::version::MergePolicy;
use deeplake_core::{Dataset, Dtype, Error, NdArray, OpenOptions, Sample, TensorOptions};
use testkit::samples::{int, ints};

fn text(s: &str) -> Sample {
    Sample::Text(s.to_owned())
}

async fn texts(ds: &Dataset, t: &str) -> Vec<String> {
    let n = ds.tensor_len(t).unwrap();
    ds.read_range(t, 0..n)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Text(t) => t,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The sample ids of a visible tensor, from its `_<t>_id` companion.
async fn ids(ds: &Dataset, t: &str) -> Vec<u64> {
    let name = match t.rsplit_once('/') {
        Some((group, base)) => format!("{group}/_{base}_id"),
        None => format!("_{t}_id"),
    };
    let n = ds.tensor_len(&name).unwrap();
    ds.read_range(&name, 0..n)
        .await
        .unwrap()
        .iter()
        .map(|s| match s {
            Sample::Array(a) => u64::from_le_bytes(a.data[..8].try_into().unwrap()),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// One memory URL and one local folder (kept alive by the returned guard).
fn urls() -> (Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("ds").to_string_lossy().into_owned();
    let mem = format!("memory://merge-{:016x}", rand::random::<u64>());
    (vec![mem, local], dir)
}

async fn open(url: &str, branch: &str) -> Dataset {
    Dataset::open(
        url,
        OpenOptions {
            branch: Some(branch.parse().unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// main: x = [0, 1, 2, 3], t = [a, b, c, d], committed; branch `alt` from that commit.
/// Returns the handle, on main's (unchanged) head.
async fn base(url: &str) -> Dataset {
    let mut ds = Dataset::create(url, OpenOptions::default()).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.create_tensor("t", TensorOptions::new("text"))
        .await
        .unwrap();
    ds.extend("x", (0..4).map(int).collect()).await.unwrap();
    ds.extend("t", ["a", "b", "c", "d"].map(text).to_vec())
        .await
        .unwrap();
    ds.commit("base").await.unwrap();
    ds.checkout("alt", true).await.unwrap();
    ds.checkout("main", false).await.unwrap();
    ds
}

/// Runs `f` on `alt`'s head, commits it, and returns to main.
async fn on_alt<F>(ds: &mut Dataset, f: F)
where
    F: AsyncFnOnce(&mut Dataset),
{
    ds.checkout("alt", false).await.unwrap();
    f(ds).await;
    ds.commit("on alt").await.unwrap();
    ds.checkout("main", false).await.unwrap();
}

/// Both sides set x[2]: main to 20, alt to 200.
async fn conflicting(url: &str) -> Dataset {
    let mut ds = base(url).await;
    on_alt(&mut ds, async |d| d.update("x", 2, int(200)).await.unwrap()).await;
    ds.update("x", 2, int(20)).await.unwrap();
    ds.commit("on main").await.unwrap();
    ds
}

#[tokio::test]
async fn conflicts_without_a_policy_are_listed_and_nothing_is_written() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = conflicting(&url).await;
        // An uncommitted change stays uncommitted: a refused merge writes nothing.
        ds.update("x", 0, int(-7)).await.unwrap();
        let head = ds.node_id().to_string();
        let branches = ds.branches();
        let ids_before = ids(&ds, "x").await;
        let e = ds.merge("alt", MergePolicy::None).await.unwrap_err();
        let Error::Conflict {
            message,
            retryable: false,
            ..
        } = &e
        else {
            panic!("{e}");
        };
        assert!(message.contains("tensor x:"), "{message}");
        assert!(
            message.contains(&format!(
                "row 2 (source row 2, sample id {})",
                ids_before[2]
            )),
            "{message}"
        );
        assert!(!message.contains("tensor t:"), "{message}");
        // Nothing changed: same head, same values, no new commit.
        assert_eq!(ds.node_id().to_string(), head);
        assert_eq!(ints(&ds, "x").await, [-7, 1, 20, 3]);
        assert_eq!(ds.branches(), branches);
        ds.close().await.unwrap();
        let ds = open(&url, "main").await;
        assert_eq!(ds.node_id().to_string(), head);
        assert!(ds.has_changes());
        assert_eq!(ds.log()[1].message.as_deref(), Some("on main"));
        assert!("mine".parse::<MergePolicy>().is_err());
    }
}

#[tokio::test]
async fn ours_keeps_and_theirs_takes_conflicting_rows() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = conflicting(&url).await;
        let out = ds.merge("alt", MergePolicy::Ours).await.unwrap();
        assert_eq!(ints(&ds, "x").await, [0, 1, 20, 3]);
        assert_eq!(out.tensors["x"].conflicts.len(), 1);
        assert_eq!(out.tensors["x"].rows_updated, 0);
        assert!(out.commit.is_some());
        ds.close().await.unwrap();

        let url2 = format!("{url}-theirs");
        let mut ds = conflicting(&url2).await;
        let alt_ids = ids(&open(&url2, "alt").await, "x").await;
        let out = ds.merge("alt", MergePolicy::Theirs).await.unwrap();
        assert_eq!(ints(&ds, "x").await, [0, 1, 200, 3]);
        assert_eq!(out.tensors["x"].rows_updated, 1);
        assert_eq!(out.tensors["x"].conflicts[0].our_row, 2);
        assert_eq!(ids(&ds, "x").await, alt_ids, "rows keep their sample ids");
        ds.close().await.unwrap();
        let ds = open(&url2, "main").await;
        assert_eq!(ints(&ds, "x").await, [0, 1, 200, 3]);
    }
}

#[tokio::test]
async fn updates_from_both_sides_and_new_rows_merge() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| {
            d.update("x", 1, int(100)).await.unwrap();
            d.update("t", 3, text("D")).await.unwrap();
            d.append_row(vec![("x".into(), int(50)), ("t".into(), text("alt1"))])
                .await
                .unwrap();
            d.append_row(vec![("x".into(), int(51)), ("t".into(), text("alt2"))])
                .await
                .unwrap();
        })
        .await;
        ds.update("x", 0, int(-1)).await.unwrap();
        ds.append_row(vec![("x".into(), int(40)), ("t".into(), text("main1"))])
            .await
            .unwrap();
        ds.commit("on main").await.unwrap();
        let alt = open(&url, "alt").await;
        let alt_ids = ids(&alt, "x").await;
        drop(alt);
        let main_ids = ids(&ds, "x").await;
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        // Ours, then theirs' new rows in their order.
        assert_eq!(ints(&ds, "x").await, [-1, 100, 2, 3, 40, 50, 51]);
        assert_eq!(
            texts(&ds, "t").await,
            ["a", "b", "c", "D", "main1", "alt1", "alt2"]
        );
        let mut want = main_ids.clone();
        want.extend_from_slice(&alt_ids[4..]);
        assert_eq!(
            ids(&ds, "x").await,
            want,
            "appended rows keep the source's ids"
        );
        let x = &out.tensors["x"];
        assert_eq!((x.rows_added, x.rows_updated), (2, 1));
        assert!(x.conflicts.is_empty());
        assert_eq!(out.tensors["t"].rows_updated, 1);
        assert!(!out.source_auto_commit && out.own_auto_commit.is_none());
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_row_we_deleted_and_they_updated_comes_back() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| {
            d.update("x", 1, int(111)).await.unwrap();
            d.update("x", 3, int(333)).await.unwrap();
        })
        .await;
        let row1 = ids(&ds, "x").await[1];
        ds.pop(Some(1)).await.unwrap();
        ds.commit("pop").await.unwrap();
        ds.pop(Some(2)).await.unwrap(); // row 3 of the base, uncommitted
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        // Both come back, in source order, with the source's values.
        assert_eq!(ints(&ds, "x").await, [0, 2, 111, 333]);
        assert_eq!(texts(&ds, "t").await, ["a", "c"]);
        assert_eq!(ids(&ds, "x").await[2], row1);
        assert_eq!(out.tensors["x"].rows_readded, 2);
        assert!(
            out.own_auto_commit.is_some(),
            "the uncommitted pop is committed first"
        );
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_source_head_is_committed_first_and_nothing_to_merge_is_a_no_op() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        let mut alt = open(&url, "alt").await;
        alt.append("x", int(9)).await.unwrap();
        alt.append("t", text("z")).await.unwrap();
        alt.close().await.unwrap();
        let before = ds.log().len();
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert!(out.source_auto_commit);
        assert_eq!(ints(&ds, "x").await, [0, 1, 2, 3, 9]);
        let alt = open(&url, "alt").await;
        assert!(!alt.has_changes());
        let auto = &alt.log()[1];
        assert_eq!(auto.id, out.source_commit);
        assert_eq!(
            auto.message.as_deref(),
            Some("Auto commit before merging into main")
        );
        drop(alt);
        // Merging it again, or any ancestor, changes nothing.
        for src in [
            "alt",
            out.source_commit.as_str(),
            out.lca.as_deref().unwrap(),
        ] {
            let again = ds.merge(src, MergePolicy::None).await.unwrap();
            assert_eq!(again.commit, None, "{src}");
            assert!(again.tensors.is_empty());
        }
        assert_eq!(ds.log().len(), before + 1);
        let e = ds.merge("main", MergePolicy::None).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        let e = ds.merge("nope", MergePolicy::None).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_held_source_branch_cannot_be_auto_committed() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        let mut alt = open(&url, "alt").await;
        alt.append("x", int(9)).await.unwrap();
        alt.flush().await.unwrap();
        let e = ds.merge("alt", MergePolicy::None).await.unwrap_err();
        match &e {
            Error::Conflict { message, .. } => {
                assert!(message.contains("source branch alt"), "{message}")
            }
            other => panic!("{other}"),
        }
        alt.close().await.unwrap();
        ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(ints(&ds, "x").await, [0, 1, 2, 3, 9]);
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_merge_parent_is_persisted_and_later_merges_use_it() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = conflicting(&url).await;
        let out = ds.merge("alt", MergePolicy::Theirs).await.unwrap();
        let merge = out.commit.clone().unwrap();
        ds.close().await.unwrap();
        let ds = open(&url, "main").await;
        let rec = ds.log().into_iter().find(|r| r.id == merge).unwrap();
        assert_eq!(
            rec.message.as_deref(),
            Some(format!("Merge {} into main", out.source_commit).as_str())
        );
        assert_eq!(
            rec.merge_parent.as_deref(),
            Some(out.source_commit.as_str())
        );
        let raw = ds.store().get("version_control_info.json").await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v["commits"][&merge]["merge_parent"],
            out.source_commit.as_str()
        );
        drop(ds);
        // alt changes row 2 again: our last change of it is the merged alt commit, so
        // theirs wins without a conflict; main's later change of row 0 conflicts with
        // nothing.
        let mut ds = open(&url, "main").await;
        on_alt(&mut ds, async |d| {
            d.update("x", 2, int(2000)).await.unwrap()
        })
        .await;
        ds.update("x", 0, int(-5)).await.unwrap();
        let again = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(ints(&ds, "x").await, [-5, 1, 2000, 3]);
        assert!(again.tensors["x"].conflicts.is_empty());
        // A branch merged elsewhere can no longer be deleted.
        let e = ds.delete_branch("alt").await.unwrap_err();
        assert!(e.to_string().contains("merged"), "{e}");
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn renames_on_either_side_are_followed() {
    let (urls, _dir) = urls();
    for url in urls {
        // Renamed on the source: ours follows, and the rows merge.
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| {
            d.rename_tensor("x", "xx").await.unwrap();
            d.update("xx", 0, int(7)).await.unwrap();
        })
        .await;
        ds.update("x", 1, int(8)).await.unwrap();
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(out.renamed.get("x").map(String::as_str), Some("xx"));
        assert_eq!(ints(&ds, "xx").await, [7, 8, 2, 3]);
        assert_eq!(ds.tensor_names(), ["xx", "t"]);
        ds.close().await.unwrap();

        // Renamed here: the name stays ours.
        let url2 = format!("{url}-here");
        let mut ds = base(&url2).await;
        on_alt(&mut ds, async |d| {
            d.update("t", 0, text("A")).await.unwrap()
        })
        .await;
        ds.rename_tensor("t", "text").await.unwrap();
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert!(out.renamed.is_empty());
        assert_eq!(texts(&ds, "text").await, ["A", "b", "c", "d"]);
        ds.close().await.unwrap();

        // Renamed differently on both sides: a conflict, nothing written.
        let url3 = format!("{url}-both");
        let mut ds = base(&url3).await;
        on_alt(&mut ds, async |d| d.rename_tensor("t", "t2").await.unwrap()).await;
        ds.rename_tensor("t", "t3").await.unwrap();
        ds.commit("rename").await.unwrap();
        let head = ds.node_id().to_string();
        let e = ds.merge("alt", MergePolicy::Theirs).await.unwrap_err();
        assert!(
            matches!(&e, Error::Conflict { message, retryable: false, .. }
                if message.contains("renamed to t3 here and to t2")),
            "{e}"
        );
        assert_eq!(ds.node_id().to_string(), head);
        assert!(ds.tensor_len("t3").is_ok());
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn deleted_tensors_on_either_side() {
    let (urls, _dir) = urls();
    for url in urls {
        // Deleted in the source: kept unless asked.
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| d.delete_tensor("t").await.unwrap()).await;
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(out.kept, ["t"]);
        assert_eq!(texts(&ds, "t").await, ["a", "b", "c", "d"]);
        ds.append("x", int(4)).await.unwrap();
        ds.commit("more").await.unwrap();
        ds.close().await.unwrap();
        let url2 = format!("{url}-delete");
        let mut ds = base(&url2).await;
        on_alt(&mut ds, async |d| d.delete_tensor("t").await.unwrap()).await;
        let out = ds
            .merge_with(
                "alt",
                MergeOptions {
                    policy: MergePolicy::None,
                    delete_removed_tensors: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(out.removed, ["t"]);
        assert_eq!(ds.tensor_names(), ["x"]);
        ds.close().await.unwrap();

        // Deleted here: it stays deleted unless the source changed it since.
        let url3 = format!("{url}-here");
        let mut ds = base(&url3).await;
        on_alt(&mut ds, async |d| d.update("x", 0, int(5)).await.unwrap()).await;
        ds.delete_tensor("t").await.unwrap();
        ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(ds.tensor_names(), ["x"]);
        assert_eq!(ints(&ds, "x").await, [5, 1, 2, 3]);
        on_alt(&mut ds, async |d| {
            d.update("t", 1, text("B")).await.unwrap()
        })
        .await;
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert!(out.tensors["t"].created);
        assert_eq!(texts(&ds, "t").await, ["a", "B", "c", "d"]);
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn new_tensors_of_the_source_are_copied_with_their_ids() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| {
            d.create_tensor(
                "labels",
                TensorOptions::new("class_label").class_names(["cat", "dog"]),
            )
            .await
            .unwrap();
            d.extend("labels", vec![text("dog"), text("cat"), text("bird")])
                .await
                .unwrap();
            d.create_tensor(
                "g/seq",
                TensorOptions::new("sequence[generic]").dtype(Dtype::I64),
            )
            .await
            .unwrap();
            d.append("g/seq", Sample::Sequence(vec![int(1), int(2)]))
                .await
                .unwrap();
            d.append("g/seq", Sample::Sequence(vec![int(3)]))
                .await
                .unwrap();
        })
        .await;
        let alt = open(&url, "alt").await;
        let (label_ids, seq_ids) = (ids(&alt, "labels").await, ids(&alt, "g/seq").await);
        drop(alt);
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert!(out.tensors["labels"].created);
        assert_eq!(out.tensors["labels"].rows_added, 3);
        ds.close().await.unwrap();
        let ds = open(&url, "main").await;
        assert_eq!(ints(&ds, "labels").await, [1, 0, 2]);
        assert_eq!(
            ds.summary("labels").unwrap().class_names,
            ["cat", "dog", "bird"]
        );
        assert_eq!(ids(&ds, "labels").await, label_ids);
        assert_eq!(ids(&ds, "g/seq").await, seq_ids);
        let seq = ds.read_range("g/seq", 0..2).await.unwrap();
        assert_eq!(
            seq,
            [
                Sample::Sequence(vec![int(1), int(2)]),
                Sample::Sequence(vec![int(3)])
            ]
        );
        assert_eq!(ds.shape("g/seq", 0).await.unwrap(), [2]);
    }
}

#[tokio::test]
async fn class_labels_remap_through_their_names() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
        ds.create_tensor(
            "labels",
            TensorOptions::new("class_label").class_names(["cat"]),
        )
        .await
        .unwrap();
        ds.append("labels", text("cat")).await.unwrap();
        ds.commit("base").await.unwrap();
        ds.checkout("alt", true).await.unwrap();
        ds.extend("labels", vec![text("fish"), text("cat")])
            .await
            .unwrap();
        ds.commit("fish").await.unwrap();
        ds.checkout("main", false).await.unwrap();
        ds.append("labels", text("dog")).await.unwrap();
        ds.merge("alt", MergePolicy::None).await.unwrap();
        // alt's fish (its label 1) is our label 2 now.
        assert_eq!(ints(&ds, "labels").await, [0, 1, 2, 0]);
        assert_eq!(
            ds.summary("labels").unwrap().class_names,
            ["cat", "dog", "fish"]
        );
        ds.close().await.unwrap();
    }
}

#[tokio::test]
async fn mismatched_tensors_are_refused() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = base(&url).await;
        on_alt(&mut ds, async |d| {
            d.create_tensor("img", TensorOptions::new("image").sample_compression("png"))
                .await
                .unwrap();
        })
        .await;
        ds.create_tensor(
            "img",
            TensorOptions::new("image").sample_compression("jpeg"),
        )
        .await
        .unwrap();
        let e = ds.merge("alt", MergePolicy::Theirs).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { message } if message.contains("sample compression is jpeg here and png")),
            "{e}"
        );
        ds.close().await.unwrap();
    }
}

fn pixels(seed: u8, h: usize, w: usize, c: usize) -> Sample {
    let data: Vec<u8> = (0..h * w * c)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    Sample::Array(NdArray::new(Dtype::U8, vec![h, w, c], data).unwrap())
}

#[tokio::test]
async fn stored_bytes_and_tiles_are_copied_as_they_are() {
    let (urls, _dir) = urls();
    for url in urls {
        let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
        ds.create_tensor("img", TensorOptions::new("image").sample_compression("png"))
            .await
            .unwrap();
        let mut big = TensorOptions::new("generic").dtype(Dtype::U8);
        big.tiling_threshold = Some(1000);
        big.max_chunk_size = Some(4000);
        ds.create_tensor("big", big).await.unwrap();
        ds.append_row(vec![
            ("img".into(), pixels(1, 4, 5, 3)),
            ("big".into(), pixels(2, 2, 2, 1)),
        ])
        .await
        .unwrap();
        ds.commit("base").await.unwrap();
        ds.checkout("alt", true).await.unwrap();
        ds.update("img", 0, pixels(3, 6, 7, 3)).await.unwrap();
        ds.update("big", 0, pixels(4, 60, 60, 1)).await.unwrap();
        ds.append_row(vec![
            ("img".into(), pixels(5, 9, 3, 3)),
            ("big".into(), pixels(6, 50, 45, 1)),
        ])
        .await
        .unwrap();
        ds.commit("alt").await.unwrap();
        ds.checkout("main", false).await.unwrap();
        let out = ds.merge("alt", MergePolicy::None).await.unwrap();
        assert_eq!(out.tensors["big"].rows_updated, 1);
        ds.close().await.unwrap();
        let (main, alt) = (open(&url, "main").await, open(&url, "alt").await);
        for t in ["img", "big"] {
            assert_eq!(main.tensor_len(t).unwrap(), 2);
            for i in 0..2 {
                assert_eq!(
                    main.read(t, i).await.unwrap(),
                    alt.read(t, i).await.unwrap(),
                    "{t}[{i}]"
                );
                assert_eq!(
                    main.read_stored(t, i).await.unwrap(),
                    alt.read_stored(t, i).await.unwrap(),
                    "{t}[{i}] stored"
                );
                assert_eq!(
                    main.shape(t, i).await.unwrap(),
                    alt.shape(t, i).await.unwrap()
                );
            }
        }
        assert_eq!(
            main.summary("big").unwrap().max_shape,
            alt.summary("big").unwrap().max_shape
        );
    }
}
