//! Garbage collection: garbage made on purpose (superseded chunks, a reset head and a
//! deleted branch whose folder deletion "crashed", stray objects) is listed exactly,
//! deleted by `apply`, and every branch, commit and tag reads the same afterwards, here
//! and in deeplake 3.9.52. Runs on memory, local disk and the S3 test server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use deeplake_core::dataset::gc::{self, GcOptions, GcReason};
use deeplake_core::ids::CommitId;
use deeplake_core::store::{Store, StoreOptions};
use deeplake_core::version::{Ref, log};
use deeplake_core::{Dataset, Dtype, Error, OpenOptions, Sample, TensorOptions};
use testkit::oracle::dl3_json;
use testkit::samples::int;

fn opts(storage: &StoreOptions) -> OpenOptions {
    OpenOptions {
        storage: storage.clone(),
        ..Default::default()
    }
}

fn now_grace() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
    }
}

async fn keys(store: &Store) -> BTreeSet<String> {
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect()
}

/// `<folder>/chunks` -> the chunk objects in it.
fn chunk_folders(keys: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in keys {
        if let Some((folder, name)) = k.rsplit_once('/')
            && folder.ends_with("/chunks")
            && name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.entry(folder.to_owned()).or_default().insert(k.clone());
        }
    }
    out
}

/// The chunks one write step left behind. The data here is small, so each tensor has
/// at most one chunk in each commit folder: a chunk folder that gained an object got it
/// in place of the one it had, which is garbage now.
fn superseded(before: &BTreeSet<String>, after: &BTreeSet<String>) -> BTreeSet<String> {
    let (b, a) = (chunk_folders(before), chunk_folders(after));
    let mut out = BTreeSet::new();
    for (folder, old) in &b {
        if a.get(folder).is_some_and(|new| !new.is_subset(old)) {
            out.extend(old.iter().cloned());
        }
    }
    out
}

/// Every flush record but the newest of its commit.
fn old_flush_records(keys: &BTreeSet<String>) -> BTreeSet<String> {
    let mut newest: BTreeMap<&str, &str> = BTreeMap::new();
    let records: Vec<(&str, &str)> = keys
        .iter()
        .filter_map(|k| {
            let (prefix, file) = k.rsplit_once("_rs_flush/")?;
            (file.len() == 25 && file.ends_with(".json")).then_some((prefix, file))
        })
        .collect();
    for (p, f) in &records {
        let e = newest.entry(p).or_insert(f);
        if *f > *e {
            *e = f;
        }
    }
    records
        .iter()
        .filter(|(p, f)| newest[p] != *f)
        .map(|(p, f)| format!("{p}_rs_flush/{f}"))
        .collect()
}

/// Copies every object under `prefix`, to put back after an operation deletes them (as
/// if it had crashed before its cleanup).
async fn save(store: &Store, prefix: &str) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for (k, _) in store.list(prefix).await.unwrap() {
        let b = store.get(&k).await.unwrap();
        out.push((k, b));
    }
    assert!(!out.is_empty(), "nothing under {prefix}");
    out
}

async fn restore(store: &Store, saved: &[(String, Bytes)]) -> BTreeSet<String> {
    for (k, b) in saved {
        store.put(k, b.clone()).await.unwrap();
    }
    saved.iter().map(|(k, _)| k.clone()).collect()
}

enum Write {
    Update(u64, i64),
    Append(i64),
}

/// One write to x and a flush; returns the chunks it left behind.
async fn write(ds: &mut Dataset, w: Write) -> BTreeSet<String> {
    let before = keys(ds.store()).await;
    match w {
        Write::Update(i, v) => ds.update("x", i, int(v)).await.unwrap(),
        Write::Append(v) => ds.append("x", int(v)).await.unwrap(),
    }
    ds.flush().await.unwrap();
    superseded(&before, &keys(ds.store()).await)
}

/// What the scenario leaves: the garbage it made, and the object a link keeps alive.
struct Scenario {
    garbage: BTreeSet<String>,
    /// Commits whose folders are garbage.
    dead: BTreeSet<String>,
    linked: String,
}

/// main: x = [1, 2, 3] at the root, x[1] rewritten (a), commit; then x[0] rewritten, 4
/// appended, x[3] rewritten (a), commit, tag v1; then 5 appended and reset (b); branch
/// alt with a commit and an uncommitted row, deleted (c); branch dev with uncommitted
/// rows that stay; on main a link tensor and stray objects (d).
async fn scenario(url: &str, st: &StoreOptions) -> Scenario {
    let mut ds = Dataset::create(url, opts(st)).await.unwrap();
    let store = ds.store().clone();
    let mut garbage = BTreeSet::new();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.extend("x", vec![int(1), int(2), int(3)]).await.unwrap();
    ds.flush().await.unwrap();

    // (a) rewrites: a changed chunk goes under a fresh name, the old one stays behind.
    garbage.extend(write(&mut ds, Write::Update(1, 20)).await);
    assert!(!garbage.is_empty(), "the root rewrite left a chunk behind");
    ds.commit("c1").await.unwrap();
    // x[0] lives in the commit: the update copies it into the head (not garbage); the
    // append and the update of x[3] then rewrite the head's copy.
    for w in [Write::Update(0, 10), Write::Append(4), Write::Update(3, 40)] {
        garbage.extend(write(&mut ds, w).await);
    }
    let c2 = ds.commit("c2").await.unwrap();
    ds.tag("v1", Some(&c2)).await.unwrap();

    // (b) reset of a head with writes; its folder comes back, as after a crash before
    // the reset's cleanup.
    ds.append("x", int(5)).await.unwrap();
    ds.flush().await.unwrap();
    let head: CommitId = ds.node_id().clone();
    let saved = save(&store, &format!("versions/{head}")).await;
    ds.reset().await.unwrap();
    garbage.extend(restore(&store, &saved).await);

    // (c) a deleted branch with a commit and a changed head, folders back likewise.
    ds.checkout("alt", true).await.unwrap();
    ds.append("x", int(7)).await.unwrap();
    let alt_commit = ds.commit("on alt").await.unwrap();
    ds.append("x", int(8)).await.unwrap();
    ds.flush().await.unwrap();
    let alt_head = ds.node_id().to_string();
    let mut saved = save(&store, &format!("versions/{alt_commit}")).await;
    saved.extend(save(&store, &format!("versions/{alt_head}")).await);
    ds.checkout("main", false).await.unwrap();
    ds.delete_branch("alt").await.unwrap();
    garbage.extend(restore(&store, &saved).await);

    // A branch that stays, with uncommitted rows.
    ds.checkout("dev", true).await.unwrap();
    ds.extend("x", vec![int(100), int(101)]).await.unwrap();
    ds.checkout("main", false).await.unwrap();

    // (d) a linked tensor whose file lies in a folder that is otherwise garbage, and
    // stray objects: chunks no index names (a writer that died before its flush) and an
    // unknown file (not provably ours: left alone).
    let dead = CommitId::generate();
    let linked = format!("versions/{dead}/media/cat.png");
    let unlinked = format!("versions/{dead}/media/dog.png");
    let dead_chunk = format!("versions/{dead}/x/chunks/abc");
    for k in [&linked, &unlinked, &dead_chunk] {
        store.put(k, Bytes::from_static(b"bytes")).await.unwrap();
    }
    garbage.extend([unlinked, dead_chunk]);
    // The target is a stand-in, not an image: stored unchecked.
    ds.create_tensor("files", TensorOptions::new("link[image]").verify(false))
        .await
        .unwrap();
    ds.append(
        "files",
        Sample::Link {
            path: linked.clone(),
            creds_key: None,
        },
    )
    .await
    .unwrap();
    ds.flush().await.unwrap();
    let main_head = ds.node_id().to_string();
    let stray_head = format!("versions/{main_head}/x/chunks/{:x}", rand::random::<u64>());
    let stray_root = format!("x/chunks/{:x}", rand::random::<u64>());
    for k in [&stray_head, &stray_root] {
        store.put(k, Bytes::from_static(b"stray")).await.unwrap();
    }
    garbage.extend([stray_head, stray_root]);
    for k in [
        format!("versions/{main_head}/notes.txt"),
        "foreign/chunks/abc".to_owned(),
    ] {
        store.put(&k, Bytes::from_static(b"mine")).await.unwrap();
    }
    ds.close().await.unwrap();

    garbage.extend(old_flush_records(&keys(&store).await));
    let dead = [head.to_string(), alt_commit, alt_head, dead.to_string()].into();
    Scenario {
        garbage,
        dead,
        linked,
    }
}

/// Every row of every visible tensor, at every node of the tree, every branch and tag.
async fn everything(url: &str, st: &StoreOptions) -> BTreeMap<String, Vec<String>> {
    let store = Store::open(url, st).unwrap();
    let (_, tree, tags) = log::load(&store).await.unwrap();
    let mut refs: Vec<Ref> = tree
        .commits
        .keys()
        .map(|c| Ref::Commit(c.parse().unwrap()))
        .collect();
    refs.extend(tree.branches.keys().map(|b| Ref::Branch(b.clone())));
    refs.extend(tags.keys().map(|t| Ref::Tag(t.clone())));
    let ro = OpenOptions {
        read_only: true,
        ..opts(st)
    };
    let mut out = BTreeMap::new();
    for r in refs {
        let ds = Dataset::open_ref(url, &r, ro.clone()).await.unwrap();
        let mut rows = Vec::new();
        for t in ds.tensor_names() {
            let n = ds.tensor_len(&t).unwrap();
            for s in ds.read_range(&t, 0..n).await.unwrap() {
                rows.push(format!("{t}: {s:?}"));
            }
        }
        out.insert(format!("{r:?}"), rows);
    }
    out
}

/// The whole check on one backend.
async fn collect(url: &str, st: &StoreOptions) {
    let s = scenario(url, st).await;
    let store = Store::open(url, st).unwrap();

    // Everything is fresh: the default grace period protects it all.
    let young = gc::plan(&store, &GcOptions::default()).await.unwrap();
    assert!(young.is_empty(), "{:?}", young.items);

    let p = gc::plan(&store, &now_grace()).await.unwrap();
    let listed: BTreeSet<String> = p.items.iter().map(|i| i.key.clone()).collect();
    let missing: Vec<_> = s.garbage.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&s.garbage).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    // Under the grace period, records superseded moments ago are live, and so are
    // the chunks they read: fewer objects count as garbage at all.
    assert!(
        young.young_objects > 0 && young.young_objects < p.items.len(),
        "{young:?}"
    );
    for i in &p.items {
        let commit = i
            .key
            .strip_prefix("versions/")
            .and_then(|k| k.split('/').next());
        let want = if commit.is_some_and(|c| s.dead.contains(c)) {
            GcReason::UnreachableCommit
        } else if i.key.contains("_rs_flush/") {
            GcReason::SupersededFlushRecord
        } else {
            GcReason::UnreferencedChunk
        };
        assert_eq!(i.reason, want, "{i:?}");
        assert!(i.bytes > 0, "{i:?}");
    }
    assert_eq!(p.totals().len(), 3, "{:?}", p.totals());
    assert_eq!(p.bytes(), p.items.iter().map(|i| i.bytes).sum::<u64>());

    // Unreadable metadata stops everything before the first delete.
    let before = everything(url, st).await;
    let all = keys(&store).await;
    let victim = deeplake_core::store::paths::dataset_meta(&CommitId::root());
    let good = store.get(&victim).await.unwrap();
    store
        .put(&victim, Bytes::from_static(b"{not json"))
        .await
        .unwrap();
    let e = gc::apply(&store, &p).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(matches!(
        gc::plan(&store, &now_grace()).await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(keys(&store).await, all, "nothing was deleted");
    store.put(&victim, good).await.unwrap();

    // Cancelled before its first delete: every planned key is kept, nothing changes,
    // and the progress names the whole plan as the stage.
    let control = deeplake_core::runtime::Control::default();
    control.cancel();
    let r = gc::apply_with(&store, &p, &control).await.unwrap();
    assert!(r.cancelled);
    assert!(r.deleted.is_empty(), "{:?}", r.deleted);
    assert_eq!(r.kept.len(), p.items.len());
    assert!(r.kept.iter().all(|(_, why)| *why == gc::GcKept::Cancelled));
    assert_eq!(control.progress(), (0, p.items.len() as u64));
    assert_eq!(keys(&store).await, all, "a cancelled apply deletes nothing");

    // Run again, it finishes the job.
    let control = deeplake_core::runtime::Control::default();
    let r = gc::apply_with(&store, &p, &control).await.unwrap();
    assert!(!r.cancelled);
    assert_eq!(
        control.progress(),
        (p.items.len() as u64, p.items.len() as u64)
    );
    assert!(r.kept.is_empty(), "{:?}", r.kept);
    let deleted: BTreeSet<String> = r.deleted.iter().map(|i| i.key.clone()).collect();
    assert_eq!(deleted, s.garbage);
    let left = keys(&store).await;
    assert!(left.is_disjoint(&s.garbage));
    assert!(left.contains(&s.linked), "the linked file stays");
    assert_eq!(
        everything(url, st).await,
        before,
        "every version reads the same"
    );

    // Nothing is left to collect; applying the old plan again deletes nothing new.
    let again = gc::plan(&store, &now_grace()).await.unwrap();
    assert!(again.is_empty(), "{:?}", again.items);
    gc::apply(&store, &p).await.unwrap();
    assert_eq!(keys(&store).await, left);

    // The dataset still takes writes.
    let mut ds = Dataset::open(url, opts(st)).await.unwrap();
    ds.append("x", int(6)).await.unwrap();
    ds.commit("after gc").await.unwrap();
    ds.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_memory() {
    let url = format!("memory://gc-{:016x}", rand::random::<u64>());
    collect(&url, &StoreOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_local_and_deeplake3_reads_every_version_after() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let st = StoreOptions::default();
    collect(&url, &st).await;
    assert!(
        !dir.path().join("ds/versions").read_dir().unwrap().any(|e| {
            let p = e.unwrap().path();
            p.read_dir().unwrap().next().is_none()
        }),
        "no empty commit folder is left"
    );

    // deeplake 3.9.52 opens the collected dataset and reads what we read, everywhere.
    let store = Store::open(&url, &st).unwrap();
    let (_, tree, _) = log::load(&store).await.unwrap();
    let mut refs: Vec<String> = tree.commits.keys().cloned().collect();
    refs.extend(tree.branches.keys().cloned());
    let mut ours = serde_json::Map::new();
    let ro = OpenOptions {
        read_only: true,
        ..opts(&st)
    };
    for r in &refs {
        let ds = Dataset::open_ref(&url, &r.parse().unwrap(), ro.clone())
            .await
            .unwrap();
        let xs = crate::int_column(&ds, "x").await;
        ours.insert(r.clone(), serde_json::json!(xs));
    }
    let script = r#"
import json, sys, deeplake
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
out = {}
for ref in sys.argv[2:]:
    ds.checkout(ref)
    out[ref] = [int(v) for v in ds.x.numpy().reshape(-1)]
print(json.dumps(out))
"#;
    let theirs = dl3_json(script, std::iter::once(&url).chain(&refs));
    assert_eq!(theirs, serde_json::Value::Object(ours));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_s3() {
    let (url, st) = testkit::storage::s3_url_and_options("gc");
    collect(&url, &st).await;
}

/// A history deeplake 3.9.52 wrote (copy-on-write chunks under their old names, a merge
/// that links the other branch's chunks by `name:<commit>`): gc finds nothing of it to
/// delete, and 3.x reads every version the same after `apply`.
#[tokio::test]
async fn gc_keeps_every_version_deeplake3_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let build = r#"
ds = deeplake.empty(sys.argv[1], overwrite=True, verbose=False)
ds.create_tensor("y", htype="generic", dtype="float32", max_chunk_size=40000, tiling_threshold=-1)
def a(v): return np.full((64, 64), v, dtype="float32")
ds.y.extend([a(1), a(2), a(3), a(4)])
ds.commit("c1")
ds.checkout("alt", create=True)
ds.y.extend([a(10), a(11), a(12), a(13)])
ds.y[0] = a(100)
ds.commit("on alt")
ds.checkout("main")
ds.y.append(a(5))
ds.y[1] = a(200)
ds.commit("on main")
ds.merge("alt", conflict_resolution="theirs")
ds.y.append(a(6))
print(json.dumps({"rows": len(ds.y)}))
"#;
    assert_eq!(
        dl3_json(build, std::slice::from_ref(&url)),
        serde_json::json!({"rows": 10})
    );
    let dump = r#"
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
out = {}
for ref in sys.argv[2:]:
    ds.checkout(ref)
    out[ref] = [float(s[0, 0]) for s in ds.y.numpy()]
print(json.dumps(out))
"#;
    let st = StoreOptions::default();
    let store = Store::open(&url, &st).unwrap();
    let (_, tree, _) = log::load(&store).await.unwrap();
    let mut args = vec![url.clone()];
    args.extend(tree.commits.keys().cloned());
    args.extend(tree.branches.keys().cloned());
    let before = dl3_json(dump, &args);
    let mut linked = false;
    for k in keys(&store)
        .await
        .iter()
        .filter(|k| k.ends_with("/chunk_set"))
    {
        linked |= store_text(&store, k).await.contains(':');
    }
    assert!(linked, "the merge links chunks of the other branch");

    let p = gc::plan(&store, &now_grace()).await.unwrap();
    assert!(p.is_empty(), "{:#?}", p.items);
    let all = keys(&store).await;
    gc::apply(&store, &p).await.unwrap();
    assert_eq!(keys(&store).await, all);
    assert_eq!(dl3_json(dump, &args), before);

    // Our reads agree with 3.x's at every version.
    let ro = OpenOptions {
        read_only: true,
        ..opts(&st)
    };
    for r in &args[1..] {
        let ds = Dataset::open_ref(&url, &r.parse().unwrap(), ro.clone())
            .await
            .unwrap();
        let n = ds.tensor_len("y").unwrap();
        let ys: Vec<f64> = ds
            .read_range("y", 0..n)
            .await
            .unwrap()
            .iter()
            .map(|s| match s {
                Sample::Array(a) => a.to_f64_vec()[0],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(serde_json::json!(ys), before[r], "{r}");
    }
}

async fn store_text(store: &Store, key: &str) -> String {
    String::from_utf8_lossy(&store.get(key).await.unwrap()).into_owned()
}

/// Copies every object under `from` to the same relative key under `to`.
async fn copy_folder(store: &Store, from: &str, to: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, _) in store.list(from).await.unwrap() {
        let dst = format!("{to}{}", &k[from.len()..]);
        store.put(&dst, store.get(&k).await.unwrap()).await.unwrap();
        out.insert(dst);
    }
    out
}

/// `apply` scans again: a commit whose tree record landed after the plan keeps its
/// folder, and an object written again since the plan is young again. A commit only a
/// saved view names stays, and the views' own objects are never listed.
#[tokio::test]
async fn apply_rechecks_each_key_and_views_keep_their_source() {
    use deeplake_core::format::vcinfo::CommitNode;
    let url = format!("memory://gc-recheck-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let mut ds = Dataset::create(&url, opts(&st)).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.extend("x", vec![int(1), int(2)]).await.unwrap();
    let c1 = ds.commit("c1").await.unwrap();
    let head = ds.node_id().to_string();
    ds.close().await.unwrap();
    let store = Store::open(&url, &st).unwrap();

    // A new head's files, written before its tree record (as a commit or checkout
    // does), and a commit that is in the tree but on no branch.
    let late = CommitId::generate();
    let late_keys = copy_folder(
        &store,
        &format!("versions/{head}/"),
        &format!("versions/{late}/"),
    )
    .await;
    let viewed = CommitId::generate();
    let viewed_keys = copy_folder(
        &store,
        &format!("versions/{head}/"),
        &format!("versions/{viewed}/"),
    )
    .await;
    let (c, v) = (c1.clone(), viewed.to_string());
    log::update(&store, "test", move |tree, _| {
        let mut n = CommitNode::head("gone", Some(c.clone()));
        n.commit_time = Some(1.0);
        tree.commits.insert(v.clone(), n.into());
        Ok(vec![])
    })
    .await
    .unwrap();
    let stray = format!("x/chunks/{:x}", rand::random::<u64>());
    store
        .put(&stray, Bytes::from_static(b"stray"))
        .await
        .unwrap();
    let view_files = [".queries/v1/dataset_meta.json", ".queries/v1/x/chunks/abc"];
    for k in view_files {
        store.put(k, Bytes::from_static(b"{}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let second = GcOptions {
        grace: Duration::from_secs(1),
    };
    let p = gc::plan(&store, &second).await.unwrap();
    let listed: BTreeSet<String> = p.items.iter().map(|i| i.key.clone()).collect();
    let mut want: BTreeSet<String> = late_keys.union(&viewed_keys).cloned().collect();
    want.insert(stray.clone());
    assert_eq!(listed, want);

    // A view whose source is the commit on no branch keeps it.
    let queries = serde_json::json!([{"id": "v1", "source-dataset-version": viewed.to_string()}]);
    store
        .put("queries.json", serde_json::to_vec(&queries).unwrap())
        .await
        .unwrap();
    let p2 = gc::plan(&store, &second).await.unwrap();
    let listed2: BTreeSet<String> = p2.items.iter().map(|i| i.key.clone()).collect();
    assert_eq!(listed2, &want - &viewed_keys);

    // The late head's record lands, and the stray chunk is written again.
    let (c, l) = (c1.clone(), late.to_string());
    log::update(&store, "branch", move |tree, _| {
        tree.commits
            .insert(l.clone(), CommitNode::head("late", Some(c.clone())).into());
        tree.branches.insert("late".to_owned(), l.clone());
        Ok(vec![l.clone()])
    })
    .await
    .unwrap();
    store
        .put(&stray, Bytes::from_static(b"again"))
        .await
        .unwrap();
    let r = gc::apply(&store, &p).await.unwrap();
    let kept: BTreeMap<String, gc::GcKept> =
        r.kept.iter().map(|(i, w)| (i.key.clone(), *w)).collect();
    for k in late_keys.iter().chain(&viewed_keys) {
        assert_eq!(kept.get(k), Some(&gc::GcKept::Changed), "{k}");
    }
    assert_eq!(kept.get(&stray), Some(&gc::GcKept::Young));
    assert!(r.deleted.is_empty(), "{:?}", r.deleted);
    let all = keys(&store).await;
    assert!(want.is_subset(&all));
    for k in view_files {
        assert!(all.contains(k));
    }
    let on_late = Dataset::open_ref(&url, &Ref::Branch("late".into()), opts(&st))
        .await
        .unwrap();
    assert_eq!(on_late.tensor_len("x").unwrap(), 2);
}
