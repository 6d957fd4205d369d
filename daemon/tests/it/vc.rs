//! `deeplake commit`, `branch`, `tag`, `checkout`, `reset`, `merge` and `gc`, driven
//! through the real argument parser on a small demo dataset; the tree they leave is
//! checked with `deeplake log --json`, `dump PATH@ref` and the core API.

use clap::Parser;
use deeplake_core::ids::FIRST_COMMIT_ID;
use deeplake_core::{Dataset, OpenOptions, Sample};
use deeplake_daemon::cli::{self, Cli, Command};
use serde_json::Value;

async fn cli(args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["deeplake"];
    full.extend_from_slice(args);
    let parsed = Cli::try_parse_from(full)?;
    let mut out = Vec::new();
    match parsed.command {
        Command::Demo(a) => cli::demo::run(&a, &mut out).await?,
        Command::Dump(a) => cli::dump::run(&a, &mut out).await?,
        Command::Log(a) => cli::log::run(&a, &mut out).await?,
        Command::Commit(a) => cli::commit::run(&a, &mut out).await?,
        Command::Branch(a) => cli::branch::run(&a, &mut out).await?,
        Command::Tag(a) => cli::tag::run(&a, &mut out).await?,
        Command::Checkout(a) => cli::checkout::run(&a, &mut out).await?,
        Command::Reset(a) => cli::reset::run(&a, &mut out).await?,
        Command::Gc(a) => cli::gc::run(&a, &mut out).await?,
        Command::Merge(a) => cli::merge::run(&a, &mut out).await?,
        other => cli::run(Cli { command: other }).await?,
    }
    Ok(String::from_utf8(out)?)
}

async fn json(args: &[&str]) -> Value {
    let out = cli(args).await.unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

async fn err(args: &[&str]) -> String {
    format!("{:#}", cli(args).await.unwrap_err())
}

/// A demo dataset of 20 rows at `dir/name`, nothing committed.
async fn demo(dir: &tempfile::TempDir, name: &str) -> String {
    let path = dir.path().join(name).to_string_lossy().into_owned();
    cli(&["demo", &path, "--rows", "20", "--size", "16"])
        .await
        .unwrap();
    path
}

/// Appends one caption to the head of `branch`, leaving it changed.
async fn change(path: &str, branch: &str) {
    let mut ds = Dataset::open(
        path,
        OpenOptions {
            branch: Some(branch.parse().unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ds.append("captions", Sample::Text(format!("more on {branch}")))
        .await
        .unwrap();
    ds.close().await.unwrap();
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// `(commit_id, message, is_head, tags)` of each record of `deeplake log --json`.
async fn log(path: &str) -> Vec<(String, Option<String>, bool, Vec<String>)> {
    let v = json(&["log", path, "--json"]).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                str_of(r, "commit_id").to_owned(),
                r["message"].as_str().map(str::to_owned),
                r["is_head"].as_bool().unwrap(),
                r["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

async fn rows(url: &str) -> usize {
    cli(&["dump", url, "--tensors", "captions"])
        .await
        .unwrap()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_branch_and_tag_build_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo(&dir, "ds").await;

    // The demo's rows are the root's changes: the first commit is the root.
    let c = json(&["commit", &path, "-m", "first rows", "--json"]).await;
    assert_eq!(str_of(&c, "commit"), FIRST_COMMIT_ID);
    assert_eq!(str_of(&c, "branch"), "main");
    let main_head = str_of(&c, "head").to_owned();
    let l = log(&path).await;
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!((l[0].0.as_str(), l[0].2), (main_head.as_str(), true));
    assert_eq!(l[1].0, FIRST_COMMIT_ID);
    assert_eq!(l[1].1.as_deref(), Some("first rows"));

    // A changed head is committed before the branch is made, as 3.x does.
    change(&path, "main").await;
    let b = json(&["branch", &path, "dev", "--json"]).await;
    assert_eq!(b["auto_commit"], true);
    assert_eq!(str_of(&b, "from"), "main");
    let auto = str_of(&b, "base").to_owned();
    assert_eq!(auto, main_head, "the old head became the commit");
    let dev_head = str_of(&b, "head").to_owned();
    let l = log(&format!("{path}@dev")).await;
    assert_eq!(l[0].0, dev_head);
    assert_eq!(l[1].0, auto);
    assert_eq!(
        l[1].1.as_deref(),
        Some("auto commit before checkout to dev")
    );
    assert_eq!(l[2].0, FIRST_COMMIT_ID);

    let branches = json(&["branch", &path, "--json"]).await;
    let main_head = str_of(&branches, "main").to_owned();
    assert_eq!(str_of(&branches, "dev"), dev_head);
    assert_eq!(branches.as_object().unwrap().len(), 2);
    let listed = cli(&["branch", &path]).await.unwrap();
    assert!(
        listed.contains(&format!("dev   head {dev_head}  on {auto}")),
        "{listed}"
    );
    let ds = Dataset::open(
        &path,
        OpenOptions {
            branch: Some("dev".parse().unwrap()),
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ds.node_id().as_str(), dev_head);
    assert_eq!(ds.commit_id().as_deref(), Some(auto.as_str()));
    assert_eq!(ds.tensor_len("captions").unwrap(), 21);

    // A commit on dev moves only dev.
    change(&path, "dev").await;
    let out = cli(&["commit", &path, "-m", "one more", "--branch", "dev"])
        .await
        .unwrap();
    let on_dev = out.trim().to_owned();
    assert_eq!(on_dev, dev_head);
    let after = json(&["branch", &path, "--json"]).await;
    assert_eq!(str_of(&after, "main"), main_head);
    assert_ne!(str_of(&after, "dev"), dev_head);

    // Tags: the last commit of main by default, or a given commit.
    let t = json(&["tag", &path, "v1", "--json"]).await;
    assert_eq!(
        (str_of(&t, "tag"), str_of(&t, "commit")),
        ("v1", auto.as_str())
    );
    let out = cli(&["tag", &path, "v0", FIRST_COMMIT_ID]).await.unwrap();
    assert_eq!(out.trim(), format!("tagged {FIRST_COMMIT_ID} as v0"));
    let out = cli(&["tag", &format!("{path}@dev"), "v2"]).await.unwrap();
    assert_eq!(out.trim(), format!("tagged {on_dev} as v2"));
    let tags = json(&["tag", &path, "--json"]).await;
    assert_eq!(
        tags,
        serde_json::json!({"v0": FIRST_COMMIT_ID, "v1": auto, "v2": on_dev})
    );
    let l = log(&format!("{path}@v2")).await;
    assert_eq!(l[0].3, ["v2"]);
    assert_eq!(l[1].3, ["v1"]);
    assert_eq!(l[2].3, ["v0"]);
    let ds = Dataset::open(&path, OpenOptions::default()).await.unwrap();
    assert_eq!(ds.tags().get("v1"), Some(&auto));
    ds.close().await.unwrap();
    assert_eq!(rows(&format!("{path}@v0")).await, 20);
    assert_eq!(rows(&format!("{path}@v1")).await, 21);
    assert_eq!(rows(&format!("{path}@v2")).await, 22);

    // --from a tag starts at its commit; --from an unchanged branch at its last commit.
    let f = json(&["branch", &path, "fix", "--from", "v0", "--json"]).await;
    assert_eq!(
        (str_of(&f, "base"), &f["auto_commit"]),
        (FIRST_COMMIT_ID, &Value::Bool(false))
    );
    let f = json(&["branch", &path, "exp", "--from", "dev", "--json"]).await;
    assert_eq!(
        (str_of(&f, "base"), &f["auto_commit"]),
        (on_dev.as_str(), &Value::Bool(false))
    );
    // A head's id stands for its branch, auto-commit included.
    change(&path, "exp").await;
    let exp_head = str_of(&f, "head").to_owned();
    let out = cli(&["branch", &path, "exp2", "--from", &exp_head])
        .await
        .unwrap();
    assert!(
        out.starts_with(&format!("committed the changes on exp as {exp_head} first")),
        "{out}"
    );
    assert_eq!(rows(&format!("{path}@exp2")).await, 23);
    assert_eq!(rows(&format!("{path}@fix")).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing").to_string_lossy().into_owned();
    for args in [
        vec!["commit", &missing, "-m", "x"],
        vec!["branch", &missing, "b"],
        vec!["branch", &missing],
        vec!["tag", &missing, "t"],
    ] {
        let e = err(&args).await;
        assert!(
            e.contains("dataset not found") && e.contains("nothing"),
            "{e}"
        );
    }
    assert!(!dir.path().join("nothing").exists());

    let path = demo(&dir, "ds").await;
    let e = err(&["tag", &path, "t"]).await;
    assert!(e.contains("nothing is committed yet"), "{e}");
    assert_eq!(cli(&["tag", &path]).await.unwrap(), "");
    let e = err(&["commit", &path, "-m", "x", "--branch", "nope"]).await;
    assert!(e.contains("branch not found: nope"), "{e}");
    let e = err(&["branch", &path, "b", "--from", "nope"]).await;
    assert!(e.contains("not found: nope"), "{e}");
    let e = err(&["branch", &path, "bad name"]).await;
    assert!(e.contains("not valid"), "{e}");
    let e = err(&["commit", &format!("{path}@main"), "-m", "x"]).await;
    assert!(e.contains("opens read-only"), "{e}");
    assert!(cli(&["branch", &path, "--from", "main"]).await.is_err());
    assert!(cli(&["commit", &path]).await.is_err(), "-m is required");

    let c = cli(&["commit", &path, "-m", "one"]).await.unwrap();
    assert_eq!(c.trim(), FIRST_COMMIT_ID);
    cli(&["branch", &path, "dev"]).await.unwrap();
    let e = err(&["branch", &path, "dev"]).await;
    assert!(e.contains("branch dev already exists"), "{e}");
    cli(&["tag", &path, "t"]).await.unwrap();
    let e = err(&["tag", &path, "t"]).await;
    assert!(e.contains("tag t already exists"), "{e}");
    let e = err(&["tag", &path, "u", &"0".repeat(40)]).await;
    assert!(e.contains("commit not found"), "{e}");
    let head = json(&["branch", &path, "--json"]).await["main"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = err(&["tag", &path, "u", &head]).await;
    assert!(e.contains("is a branch head"), "{e}");

    // Another writer holds main: commit and an auto-committing branch fail with the
    // core's message, and work once it lets go. Tags do not need the lease.
    let mut holder = Dataset::open(&path, OpenOptions::default()).await.unwrap();
    holder.acquire().await.unwrap();
    change_held(&mut holder).await;
    let e = err(&["commit", &path, "-m", "x"]).await;
    assert!(e.contains("branch main is held by writer"), "{e}");
    let e = err(&["branch", &path, "other"]).await;
    assert!(e.contains("branch main is held by writer"), "{e}");
    cli(&["tag", &path, "while-held", FIRST_COMMIT_ID])
        .await
        .unwrap();
    holder.close().await.unwrap();
    cli(&["commit", &path, "-m", "x"]).await.unwrap();
    let branches = json(&["branch", &path, "--json"]).await;
    assert!(branches.get("other").is_none(), "{branches}");
}

/// The keys of every object of the dataset at `path`.
async fn objects(path: &str) -> Vec<String> {
    let store = deeplake_core::Store::open(path, &Default::default()).unwrap();
    store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect()
}

fn item_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(i, "key").to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_lists_by_default_and_deletes_with_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo(&dir, "ds").await;
    cli(&["commit", &path, "-m", "first rows"]).await.unwrap();
    // Two writes to the head: the second rewrites the caption chunk of the first,
    // leaving the old chunk and the old flush record behind.
    change(&path, "main").await;
    change(&path, "main").await;
    // A head folder whose tree record never landed (a writer that died mid-commit).
    let store = deeplake_core::Store::open(&path, &Default::default()).unwrap();
    let dead_id: deeplake_core::ids::CommitId = "ab".repeat(20).parse().unwrap();
    let dead = deeplake_core::store::paths::dataset_meta(&dead_id);
    store
        .put(&dead, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let before = objects(&path).await;

    // Everything is fresh: the default grace period of an hour keeps it.
    let out = cli(&["gc", &path]).await.unwrap();
    assert!(out.contains("nothing to delete"), "{out}");
    assert!(
        out.contains("left alone, younger than the grace period (3600s)"),
        "{out}"
    );
    let v = json(&["gc", &path, "--json"]).await;
    assert_eq!(
        (v["objects"].as_u64(), v["deleted"].as_bool()),
        (Some(0), Some(false))
    );
    assert!(v["young"]["objects"].as_u64().unwrap() > 0, "{v}");

    // A dry run lists, deletes nothing.
    let dry = json(&["gc", &path, "--grace", "0s", "--json"]).await;
    let listed = item_keys(&dry);
    assert!(listed.contains(&dead), "{dry}");
    for reason in [
        "unreachable_commit",
        "unreferenced_chunk",
        "superseded_flush_record",
    ] {
        assert!(
            dry["by_reason"][reason]["objects"].as_u64().unwrap() > 0,
            "{dry}"
        );
    }
    assert_eq!(dry["objects"].as_u64().unwrap() as usize, listed.len());
    let bytes: u64 = dry["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(dry["bytes"].as_u64(), Some(bytes));
    let text = cli(&["gc", &path, "--grace", "0s"]).await.unwrap();
    assert!(text.contains("would delete:"), "{text}");
    assert!(
        text.contains(&format!("versions/{dead_id}/ ")),
        "a dead folder is one line: {text}"
    );
    assert!(text.contains("dry run: run again with --delete"), "{text}");
    assert_eq!(objects(&path).await, before);

    // --delete deletes exactly that; every version still reads.
    let done = json(&["gc", &path, "--grace", "0s", "--delete", "--json"]).await;
    assert_eq!(done["deleted"], true);
    assert_eq!(item_keys(&done), listed);
    assert_eq!(done["kept"], serde_json::json!([]));
    let after = objects(&path).await;
    let expected: Vec<String> = before
        .iter()
        .filter(|k| !listed.contains(k))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert_eq!(rows(&path).await, 22);
    assert_eq!(rows(&format!("{path}@{FIRST_COMMIT_ID}")).await, 20);
    let out = cli(&["gc", &path, "--grace", "0s", "--delete"])
        .await
        .unwrap();
    assert!(out.contains("nothing to delete"), "{out}");

    let e = err(&["gc", &path, "--grace", "1x"]).await;
    assert!(e.contains("not a duration"), "{e}");
    let missing = dir.path().join("nothing").to_string_lossy().into_owned();
    let e = err(&["gc", &missing]).await;
    assert!(e.contains("dataset not found"), "{e}");
}

async fn change_held(ds: &mut Dataset) {
    ds.append("captions", Sample::Text("held".to_owned()))
        .await
        .unwrap();
    ds.flush().await.unwrap();
}

#[test]
fn the_binary_commits_branches_and_tags_across_processes() {
    let bin = env!("CARGO_BIN_EXE_deeplake");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds");
    let path = path.to_str().unwrap();
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    // Each process must give its lease back for the next one to write at once.
    for args in [
        &["demo", path, "--rows", "20", "--size", "16"][..],
        &["commit", path, "-m", "first"],
        &["branch", path, "dev"],
        &["commit", path, "-m", "on dev", "--branch", "dev"],
        &["tag", path, "v1"],
    ] {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&["tag", path]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("v1  {FIRST_COMMIT_ID}")));
    let out = run(&["branch", path, "dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already exists"),
        "{stderr}"
    );
}

/// `checkout` shows what a ref names; `--create` makes a branch; `reset` drops a head's
/// changes; `branch --delete` removes a branch with 3.x's rules.
#[tokio::test]
async fn checkout_reset_and_delete_branch() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo(&dir, "ds").await;
    let c1 = cli(&["commit", &path, "-m", "first"]).await.unwrap();
    let c1 = c1.trim().to_owned();
    cli(&["tag", &path, "v1", &c1]).await.unwrap();

    let v = json(&["checkout", &path, "main", "--json"]).await;
    assert_eq!(v["kind"], "branch");
    assert_eq!(v["head"], true);
    assert_eq!(v["commit"], c1.as_str());
    assert_eq!(v["tensors"]["captions"], 20);
    let v = json(&["checkout", &path, "v1", "--json"]).await;
    assert_eq!(v["kind"], "tag");
    assert_eq!(v["node"], c1.as_str());
    assert_eq!(v["head"], false);
    let text = cli(&["checkout", &path, &c1]).await.unwrap();
    assert!(text.contains("is a commit"), "{text}");
    assert!(text.contains("read-only"), "{text}");
    let e = err(&["checkout", &path, "nope"]).await;
    assert!(e.contains("nope"), "{e}");

    // --create is branch creation with 3.x's rules.
    let v = json(&["checkout", &path, "exp", "--create", "--json"]).await;
    assert_eq!(v["branch"], "exp");
    assert_eq!(v["base"], c1.as_str());

    // reset drops uncommitted rows of the head.
    change(&path, "exp").await;
    let before = json(&["checkout", &path, "exp", "--json"]).await;
    assert_eq!(before["tensors"]["captions"], 21);
    let v = json(&["reset", &path, "--branch", "exp", "--json"]).await;
    assert_eq!(v["commit"], c1.as_str());
    assert_ne!(v["head"], v["dropped_head"]);
    let after = json(&["checkout", &path, "exp", "--json"]).await;
    assert_eq!(after["tensors"]["captions"], 20);
    assert_eq!(after["node"], v["head"]);
    assert!(
        !std::path::Path::new(&path)
            .join("versions")
            .join(v["dropped_head"].as_str().unwrap())
            .exists(),
        "the dropped head's folder is deleted"
    );

    // delete: main is refused, a branch a tag names is refused, a plain one goes.
    let e = err(&["branch", &path, "main", "--delete"]).await;
    assert!(e.contains("main"), "{e}");
    change(&path, "exp").await;
    let c2 = cli(&["commit", &path, "-m", "on exp", "--branch", "exp"])
        .await
        .unwrap();
    cli(&["tag", &path, "on-exp", c2.trim()]).await.unwrap();
    let e = err(&["branch", &path, "exp", "--delete"]).await;
    assert!(e.contains("tag on-exp"), "{e}");
    cli(&["branch", &path, "tmp"]).await.unwrap();
    let v = json(&["branch", &path, "tmp", "--delete", "--json"]).await;
    assert_eq!(v["deleted"], "tmp");
    let branches = json(&["branch", &path, "--json"]).await;
    assert!(branches.get("tmp").is_none(), "{branches}");
    assert!(branches.get("exp").is_some(), "{branches}");
}

/// Sets caption `row` on the head of `branch` (or appends one when `row` is `None`).
async fn caption(path: &str, branch: &str, row: Option<u64>, text: &str) {
    let mut ds = Dataset::open(
        path,
        OpenOptions {
            branch: Some(branch.parse().unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s = Sample::Text(text.to_owned());
    match row {
        Some(r) => ds.update("captions", r, s).await.unwrap(),
        None => ds.append("captions", s).await.unwrap(),
    }
    ds.close().await.unwrap();
}

async fn captions(url: &str) -> Vec<String> {
    let ds = Dataset::open_url(url, OpenOptions::default())
        .await
        .unwrap();
    let n = ds.tensor_len("captions").unwrap();
    ds.read_range("captions", 0..n)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Text(t) => t,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_reports_what_it_merged_and_lists_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let path = demo(&dir, "ds").await;
    cli(&["commit", &path, "-m", "first rows"]).await.unwrap();
    cli(&["branch", &path, "dev"]).await.unwrap();
    caption(&path, "dev", Some(0), "dev zero").await;
    caption(&path, "dev", None, "dev new").await;
    let dev_commit = cli(&["commit", &path, "-m", "on dev", "--branch", "dev"])
        .await
        .unwrap()
        .trim()
        .to_owned();
    caption(&path, "main", Some(1), "main one").await;
    cli(&["commit", &path, "-m", "on main"]).await.unwrap();

    let out = cli(&["merge", &path, "dev"]).await.unwrap();
    assert!(
        out.contains(&format!("merged dev ({dev_commit}) into main")),
        "{out}"
    );
    assert!(
        out.contains("  captions: 1 row added, 1 row updated\n"),
        "{out}"
    );
    let l = log(&path).await;
    let merge = &l[1];
    assert_eq!(
        merge.1.as_deref(),
        Some(format!("Merge {dev_commit} into main").as_str())
    );
    assert!(
        out.ends_with(&format!("merge commit {}\n", merge.0)),
        "{out}"
    );
    let records = json(&["log", &path, "--json"]).await;
    assert_eq!(records[1]["merge_parent"], dev_commit.as_str());
    assert_eq!(records[2]["merge_parent"], Value::Null);
    let text = cli(&["log", &path]).await.unwrap();
    assert!(text.contains(&format!(" {dev_commit}\n")), "{text}");
    let c = captions(&path).await;
    assert_eq!(
        (&c[0][..], &c[1][..], c.len()),
        ("dev zero", "main one", 21)
    );
    assert_eq!(c[20], "dev new");
    let again = cli(&["merge", &path, "dev"]).await.unwrap();
    assert!(again.starts_with("nothing to merge: dev"), "{again}");

    // Both sides change caption 2: refused with the rows listed, then resolved.
    caption(&path, "dev", Some(2), "dev two").await;
    cli(&["commit", &path, "-m", "dev two", "--branch", "dev"])
        .await
        .unwrap();
    caption(&path, "main", Some(2), "main two").await;
    let e = err(&["merge", &path, "dev"]).await;
    assert!(e.contains("tensor captions:"), "{e}");
    assert!(e.contains("row 2 (source row 2, sample id "), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(captions(&path).await[2], "main two");
    let ours = cli(&["merge", &path, "dev", "--policy", "ours"])
        .await
        .unwrap();
    assert!(
        ours.contains("  captions: 1 conflict resolved, our values kept (rows 2)\n"),
        "{ours}"
    );
    assert!(
        ours.contains("committed the uncommitted changes of main as"),
        "{ours}"
    );
    assert_eq!(captions(&path).await[2], "main two");
    caption(&path, "dev", Some(4), "dev four").await;
    caption(&path, "main", Some(4), "main four").await;
    let j = json(&["merge", &path, "dev", "--policy", "theirs", "--json"]).await;
    assert_eq!(j["merged"], true);
    assert_eq!(j["source_auto_commit"], true);
    assert_eq!(j["policy"], "theirs");
    assert_eq!(j["tensors"]["captions"]["conflicts"][0]["row"], 4);
    assert_eq!(j["tensors"]["captions"]["rows_updated"], 1);
    let c = captions(&path).await;
    assert_eq!((&c[2][..], &c[4][..]), ("main two", "dev four"));
    // dev changes row 2 again: its change is newer than the one our last merge
    // weighed against ours, so it is taken without a conflict.
    caption(&path, "dev", Some(2), "dev two again").await;
    let out = cli(&["merge", &path, "dev"]).await.unwrap();
    assert!(out.contains("  captions: 1 row updated\n"), "{out}");
    assert_eq!(captions(&path).await[2], "dev two again");
    let e = err(&["merge", &path, "dev", "--policy", "mine"]).await;
    assert!(e.contains("expected none, ours or theirs"), "{e}");
}

#[test]
fn the_binary_exits_non_zero_on_merge_conflicts() {
    let bin = env!("CARGO_BIN_EXE_deeplake");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds");
    let path = path.to_str().unwrap();
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    for args in [
        &["demo", path, "--rows", "20", "--size", "16"][..],
        &["commit", path, "-m", "first"],
        &["branch", path, "dev"],
    ] {
        assert!(run(args).status.success(), "{args:?}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        caption(path, "dev", Some(3), "dev").await;
        caption(path, "main", Some(3), "main").await;
    });
    let out = run(&["merge", path, "dev"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("tensor captions:\n    row 3 (source row 3"),
        "{stderr}"
    );
    let out = run(&["merge", path, "dev", "--policy", "theirs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("merge commit "));
}
