//! Commits, branches, checkout, tags and the writer lease: semantics, concurrency on
//! every backend, and deeplake 3.9.52 reading every version we wrote.

use std::time::Duration;

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, Error, OpenOptions, TensorOptions};
use testkit::samples::{int, ints as values};

fn opts(storage: &StoreOptions) -> OpenOptions {
    OpenOptions {
        storage: storage.clone(),
        ..Default::default()
    }
}

/// Builds: main [1,2,3] -> commit c1; +[4] -> commit c2; branch alt (from c2, the head
/// had no changes) +[10] -> commit c3; main +[5] uncommitted.
async fn history(url: &str, storage: &StoreOptions) -> (String, String, String) {
    let mut ds = Dataset::create(url, opts(storage)).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.extend("x", vec![int(1), int(2), int(3)]).await.unwrap();
    let c1 = ds.commit("first").await.unwrap();
    assert_eq!(
        c1,
        deeplake_core::ids::FIRST_COMMIT_ID,
        "the root is the first commit, as in 3.x"
    );
    ds.append("x", int(4)).await.unwrap();
    let c2 = ds.commit("second").await.unwrap();
    ds.checkout("alt", true).await.unwrap();
    assert_eq!(ds.branch(), "alt");
    assert_eq!(values(&ds, "x").await, [1, 2, 3, 4]);
    ds.append("x", int(10)).await.unwrap();
    let c3 = ds.commit("on alt").await.unwrap();
    ds.checkout("main", false).await.unwrap();
    assert_eq!(values(&ds, "x").await, [1, 2, 3, 4]);
    ds.append("x", int(5)).await.unwrap();
    ds.close().await.unwrap();
    (c1, c2, c3)
}

#[tokio::test]
async fn commit_branch_checkout_and_reopen() {
    let url = format!("memory://vc-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let (c1, c2, c3) = history(&url, &st).await;
    let ds = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(values(&ds, "x").await, [1, 2, 3, 4, 5]);
    assert_eq!(ds.commit_id().as_deref(), Some(c2.as_str()));
    let alt = Dataset::open(
        &url,
        OpenOptions {
            branch: Some("alt".parse().unwrap()),
            ..opts(&st)
        },
    )
    .await
    .unwrap();
    assert_eq!(values(&alt, "x").await, [1, 2, 3, 4, 10]);
    assert_eq!(alt.commit_id().as_deref(), Some(c3.as_str()));
    let mut branches = ds.branches();
    branches.sort();
    assert_eq!(branches, ["alt", "main"]);
    assert_ne!(c1, c2);
}

#[tokio::test]
async fn tags_name_commits_once() {
    let url = format!("memory://vc-tags-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let (_, c2, _) = history(&url, &st).await;
    let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(ds.tag("v1", None).await.unwrap(), c2);
    assert!(matches!(
        ds.tag("v1", None).await,
        Err(Error::InvalidInput { .. })
    ));
    let head = ds.node_id().to_string();
    assert!(
        matches!(
            ds.tag("v2", Some(&head)).await,
            Err(Error::InvalidInput { .. })
        ),
        "a head is not taggable"
    );
    let again = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(again.tags().get("v1"), Some(&c2));
}

#[tokio::test]
async fn one_writer_per_branch() {
    let url = format!("memory://vc-lease-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let mut a = Dataset::create(&url, opts(&st)).await.unwrap();
    a.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    a.append("x", int(1)).await.unwrap();
    let mut b = Dataset::open(&url, opts(&st)).await.unwrap();
    match b.append("x", int(2)).await {
        Err(Error::Conflict {
            message,
            retryable: true,
            ..
        }) => {
            assert!(
                message.contains("branch main is held by writer"),
                "{message}"
            )
        }
        other => panic!("expected a lease conflict, got {other:?}"),
    }
    // A writer that waits gets the branch once the holder closes.
    let waiter = tokio::spawn(async move {
        let o = OpenOptions {
            lease_wait: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let mut c = Dataset::open(&url, o).await.unwrap();
        c.append("x", int(3)).await.unwrap();
        c.close().await.unwrap();
        url
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.close().await.unwrap();
    let url = waiter.await.unwrap();
    let ds = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(values(&ds, "x").await, [1, 3]);
    // Other branches are never blocked by main's writer.
    let mut m = Dataset::open(&url, opts(&st)).await.unwrap();
    m.commit("before the side branch").await.unwrap();
    m.append("x", int(4)).await.unwrap();
    let mut other = Dataset::open(&url, opts(&st)).await.unwrap();
    other.checkout("side", true).await.unwrap();
    other.append("x", int(9)).await.unwrap();
    other.close().await.unwrap();
    m.close().await.unwrap();
    let side = Dataset::open(
        &url,
        OpenOptions {
            branch: Some("side".parse().unwrap()),
            ..opts(&st)
        },
    )
    .await
    .unwrap();
    assert_eq!(values(&side, "x").await, [1, 3, 9]);
    let main = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(values(&main, "x").await, [1, 3, 4]);
}

#[tokio::test]
async fn expired_leases_are_taken_over() {
    let url = format!("memory://vc-expire-{:016x}", rand::random::<u64>());
    let o = OpenOptions {
        lease_ttl: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let mut a = Dataset::create(&url, o.clone()).await.unwrap();
    a.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    a.flush().await.unwrap();
    std::mem::forget(a); // dies without releasing its lease
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut b = Dataset::open(&url, o).await.unwrap();
    b.append("x", int(7)).await.unwrap();
    b.close().await.unwrap();
}

/// Writers on their own branches, racing: every branch, commit and tag lands once.
async fn race(url: &str, st: &StoreOptions, writers: usize) {
    let mut ds = Dataset::create(url, opts(st)).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.append("x", int(0)).await.unwrap();
    ds.commit("base").await.unwrap();
    ds.close().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (url, st) = (url.to_owned(), st.clone());
        tasks.push(tokio::spawn(async move {
            let mut d = Dataset::open(&url, opts(&st)).await.unwrap();
            d.checkout(&format!("w{w}"), true).await.unwrap();
            let mut commits = Vec::new();
            for k in 0..2 {
                d.append("x", int((w * 10 + k) as i64)).await.unwrap();
                commits.push(d.commit(&format!("w{w} c{k}")).await.unwrap());
            }
            d.tag(&format!("t{w}"), None).await.unwrap();
            d.close().await.unwrap();
            commits
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let ds = Dataset::open(url, opts(st)).await.unwrap();
    let mut branches = ds.branches();
    branches.sort();
    assert_eq!(branches.len(), writers + 1);
    assert_eq!(ds.tags().len(), writers);
    let mut uniq = all.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), all.len(), "commit ids are distinct");
    for w in 0..writers {
        let b = Dataset::open(
            url,
            OpenOptions {
                branch: Some(format!("w{w}").parse().unwrap()),
                ..opts(st)
            },
        )
        .await
        .unwrap();
        assert_eq!(
            values(&b, "x").await,
            [0, (w * 10) as i64, (w * 10 + 1) as i64]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_branches_commits_and_tags_memory() {
    race(
        &format!("memory://vc-race-{:016x}", rand::random::<u64>()),
        &StoreOptions::default(),
        8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_branches_commits_and_tags_local() {
    let dir = tempfile::tempdir().unwrap();
    race(
        dir.path().join("ds").to_str().unwrap(),
        &StoreOptions::default(),
        8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_branches_commits_and_tags_s3() {
    let (url, st) = testkit::storage::s3_url_and_options("vc-race");
    race(&url, &st, 4).await;
}

/// deeplake 3.9.52 checks out every version we wrote and reads identical values.
#[tokio::test]
async fn deeplake3_reads_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let st = StoreOptions::default();
    let (c1, c2, c3) = history(&url, &st).await;
    let script = r#"
import json, sys, deeplake
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
out = {}
for ref in sys.argv[2:]:
    ds.checkout(ref)
    out[ref] = [int(v) for v in ds.x.numpy().reshape(-1)]
out["log"] = [c["commit"] for c in ds.commits]
print(json.dumps(out))
"#;
    let v = testkit::oracle::dl3_json(script, [url.as_str(), &c1, &c2, &c3, "main", "alt"]);
    assert_eq!(v[&c1], serde_json::json!([1, 2, 3]));
    assert_eq!(v[&c2], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(v[&c3], serde_json::json!([1, 2, 3, 4, 10]));
    assert_eq!(v["main"], serde_json::json!([1, 2, 3, 4, 5]));
    assert_eq!(v["alt"], serde_json::json!([1, 2, 3, 4, 10]));
}

#[tokio::test]
async fn reset_drops_uncommitted_changes() {
    let url = format!("memory://vc-reset-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let mut ds = Dataset::create(&url, opts(&st)).await.unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    assert!(
        matches!(ds.reset().await, Err(Error::InvalidInput { .. })),
        "nothing to reset to yet"
    );
    ds.extend("x", vec![int(1), int(2)]).await.unwrap();
    let c1 = ds.commit("two rows").await.unwrap();
    ds.extend("x", vec![int(3), int(4)]).await.unwrap();
    ds.flush().await.unwrap();
    let old_head = ds.node_id().to_string();
    ds.reset().await.unwrap();
    assert_eq!(values(&ds, "x").await, [1, 2]);
    assert_ne!(ds.node_id().to_string(), old_head);
    assert_eq!(ds.commit_id().as_deref(), Some(c1.as_str()));
    ds.append("x", int(9)).await.unwrap();
    ds.close().await.unwrap();
    let again = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(values(&again, "x").await, [1, 2, 9]);
    let files = again
        .store()
        .list(&format!("versions/{old_head}"))
        .await
        .unwrap();
    assert!(files.is_empty(), "the old head's folder is gone");
}

#[tokio::test]
async fn delete_branch_follows_the_3x_rules() {
    let url = format!("memory://vc-delbr-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    history(&url, &st).await; // main and alt
    let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
    assert!(matches!(
        ds.delete_branch("main").await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        ds.delete_branch("nope").await,
        Err(Error::NotFound { .. })
    ));
    // A branch grown from alt keeps alt alive.
    let mut side = Dataset::open(
        &url,
        OpenOptions {
            branch: Some("alt".parse().unwrap()),
            ..opts(&st)
        },
    )
    .await
    .unwrap();
    side.checkout("alt2", true).await.unwrap();
    side.append("x", int(77)).await.unwrap();
    side.commit("on alt2").await.unwrap();
    side.close().await.unwrap();
    let e = ds.delete_branch("alt").await.unwrap_err().to_string();
    assert!(e.contains("grew from"), "{e}");
    ds.delete_branch("alt2").await.unwrap();
    ds.delete_branch("alt").await.unwrap();
    let mut b = ds.branches();
    b.sort();
    assert_eq!(b, ["main"]);
    ds.close().await.unwrap();
    let again = Dataset::open(&url, opts(&st)).await.unwrap();
    assert_eq!(again.branches(), ["main"]);
    assert_eq!(values(&again, "x").await, [1, 2, 3, 4, 5]);
    // Only main's commits keep version folders.
    let log = again.log();
    for (k, _) in again.store().list("versions").await.unwrap() {
        let id = k.split('/').nth(1).unwrap_or_default();
        assert!(
            log.iter().any(|c| c.id == id),
            "{k} belongs to a deleted branch"
        );
    }
}

/// A branch created while the handle sits at a past commit starts there, and the
/// handle writes on it: creating the branch is the branching off, so no `auto_` branch
/// appears.
#[tokio::test]
async fn new_branch_from_a_tag_takes_the_writes() {
    let url = format!("memory://vc-tag-branch-{:016x}", rand::random::<u64>());
    let st = StoreOptions::default();
    let (c1, _c2, _c3) = history(&url, &st).await;
    let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
    ds.tag("v1", Some(&c1)).await.unwrap();
    ds.checkout("v1", false).await.unwrap();
    assert!(ds.is_detached());
    ds.checkout("exp", true).await.unwrap();
    assert!(!ds.is_detached());
    assert_eq!(ds.branch(), "exp");
    ds.update("x", 0, int(42)).await.unwrap();
    assert_eq!(ds.branch(), "exp");
    ds.commit("on exp").await.unwrap();
    assert!(
        ds.branches().iter().all(|b| !b.starts_with("auto_")),
        "{:?}",
        ds.branches()
    );
    ds.close().await.unwrap();
    let exp = Dataset::open_url(
        &format!("{url}@exp"),
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(values(&exp, "x").await, [42, 2, 3]);
}

/// `checkout` takes a commit id or a tag too: the handle reads that commit, and its
/// first write branches off to `auto_<sha1>` (3.x's auto_checkout), leaving every
/// existing branch as it was. A branch head's id checks that branch out.
#[tokio::test]
async fn checkout_commit_or_tag_then_write_branches_off() {
    for url in [
        format!("memory://vc-detached-{:016x}", rand::random::<u64>()),
        tempfile::tempdir()
            .unwrap()
            .keep()
            .join("ds")
            .to_string_lossy()
            .into_owned(),
    ] {
        let st = StoreOptions::default();
        let (c1, c2, _c3) = history(&url, &st).await;
        let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
        ds.tag("v2", Some(&c2)).await.unwrap();

        ds.checkout(&c1, false).await.unwrap();
        assert!(ds.is_detached());
        assert_eq!(ds.commit_id().as_deref(), Some(c1.as_str()));
        assert_eq!(values(&ds, "x").await, [1, 2, 3]);

        ds.checkout("v2", false).await.unwrap();
        assert!(ds.is_detached());
        assert_eq!(values(&ds, "x").await, [1, 2, 3, 4]);
        let before: Vec<String> = ds.branches();

        ds.append("x", int(99)).await.unwrap();
        assert!(!ds.is_detached());
        let auto = ds.branch().to_owned();
        assert!(
            auto.starts_with("auto_") && auto.len() == "auto_".len() + 40,
            "{auto}"
        );
        assert!(!before.contains(&auto));
        assert_eq!(values(&ds, "x").await, [1, 2, 3, 4, 99]);
        let c4 = ds.commit("on the auto branch").await.unwrap();
        ds.close().await.unwrap();

        let ds = Dataset::open(&url, opts(&st)).await.unwrap();
        assert!(ds.branches().contains(&auto));
        let at = |r: &str| {
            let url = format!("{url}@{r}");
            async move {
                let d = Dataset::open_url(
                    &url,
                    OpenOptions {
                        read_only: true,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
                values(&d, "x").await
            }
        };
        assert_eq!(at("main").await, [1, 2, 3, 4, 5], "main is untouched");
        assert_eq!(at("alt").await, [1, 2, 3, 4, 10], "alt is untouched");
        assert_eq!(at(&c2).await, [1, 2, 3, 4], "the commit is immutable");
        assert_eq!(at(&c4).await, [1, 2, 3, 4, 99]);
        let log: Vec<String> = ds.log().iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert!(
            !log.contains(&c4),
            "main's log does not include the auto branch"
        );

        // The id of a branch head checks that branch out, writable.
        let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
        let alt_head = ds.branch_head("alt").unwrap();
        ds.checkout(&alt_head, false).await.unwrap();
        assert!(!ds.is_detached());
        assert_eq!(ds.branch(), "alt");
        ds.append("x", int(11)).await.unwrap();
        ds.close().await.unwrap();
        assert_eq!(at("alt").await, [1, 2, 3, 4, 10, 11]);

        // Unknown names are a NotFound naming the ref.
        let mut ds = Dataset::open(&url, opts(&st)).await.unwrap();
        let e = ds.checkout("no-such-ref", false).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("no-such-ref"), "{e}");
        assert_eq!(
            values(&ds, "x").await,
            [1, 2, 3, 4, 5],
            "the handle did not move"
        );
    }
}

/// A long chain: every `CHUNK_MAP_EVERY`th commit carries a checkpoint of chunk
/// locations, holding only the chunks that commit's index names (not every superseded
/// copy before it); reads at the head and at old commits find every chunk (through
/// checkpoints, and without them when they are missing), and a corrupt checkpoint is a
/// `Corrupt` error naming it.
#[tokio::test]
async fn long_chains_read_through_chunk_map_checkpoints() {
    let every = deeplake_core::version::CHUNK_MAP_EVERY;
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let st = StoreOptions::default();
    let mut ds = Dataset::create(&url, opts(&st)).await.unwrap();
    let mut o = TensorOptions::new("generic").dtype(Dtype::I64);
    o.max_chunk_size = Some(1024);
    ds.create_tensor("x", o).await.unwrap();
    let mut commits = Vec::new();
    let n = 8 * every + 12;
    for k in 0..n as i64 {
        // 100 rows of 8 bytes per commit: chunks of ~1 KB spread over many commits.
        ds.extend("x", (0..100).map(|i| int(k * 100 + i)).collect())
            .await
            .unwrap();
        commits.push(ds.commit(&format!("c{k}")).await.unwrap());
    }
    ds.close().await.unwrap();
    let maps = dir.path().join("ds/_rs/chunk_map");
    let mut written: Vec<String> = std::fs::read_dir(&maps)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    // The root is depth 0, so commit k sits at depth k.
    let mut expected: Vec<String> = (1..=8).map(|i| commits[i * every].clone()).collect();
    expected.sort();
    assert_eq!(
        written, expected,
        "checkpoints at every depth that is a multiple of {every}"
    );
    let newest = commits[8 * every].clone();
    let older = commits[4 * every].clone();
    for c in [&newest, &older] {
        let entries = std::fs::read_to_string(maps.join(c).join("x")).unwrap();
        let d = Dataset::open_url(
            &format!("{url}@{c}"),
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Chunks stored at the root are found without any entry.
        let at_root = std::fs::read_dir(dir.path().join("ds/x/chunks"))
            .unwrap()
            .count();
        let (named, indexed) = (
            entries.split(',').count(),
            d.summary("x").unwrap().num_chunks,
        );
        assert!(
            named <= indexed && named + at_root >= indexed,
            "a checkpoint names the chunks of its commit's index, no superseded ones: \
             {named} named, {indexed} indexed, {at_root} at the root"
        );
    }

    let check = |r: String, rows: i64| {
        let url = format!("{url}@{r}");
        async move {
            let d = Dataset::open_url(
                &url,
                OpenOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let v = values(&d, "x").await;
            assert_eq!(v, (0..rows).collect::<Vec<_>>(), "{url}");
        }
    };
    let rows = |k: usize| (k as i64 + 1) * 100;
    check("main".into(), rows(n - 1)).await;
    for k in [8 * every, 5 * every + 3, every - 1, 10] {
        check(commits[k].clone(), rows(k)).await;
    }

    // Without the newer checkpoint, the walk goes on to the older one, same values.
    std::fs::remove_dir_all(maps.join(&newest)).unwrap();
    check("main".into(), rows(n - 1)).await;
    // Without any, the whole chain is walked.
    for c in &expected {
        let _ = std::fs::remove_dir_all(maps.join(c));
    }
    check("main".into(), rows(n - 1)).await;
    check(commits[5 * every + 3].clone(), rows(5 * every + 3)).await;

    // A corrupt checkpoint is reported, naming it.
    let f = maps.join(&older).join("x");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, b"zz:not-a-commit").unwrap();
    let d = Dataset::open(
        &url,
        OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = d.read_range("x", 0..1).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("chunk_map"), "{e}");
}
