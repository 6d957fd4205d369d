//! Eight processes commit, branch and tag concurrently against one dataset, on local
//! disk and on the S3 server. Every operation a worker reports as landed must be in the
//! final tree exactly once: its branch, its commits (on the right branch, in the right
//! order, holding the right values) and its tags. deeplake 3.9.52 must then read the
//! same history.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};
use serde_json::Value;

const WORKERS: u32 = 8;
const ROUNDS: u32 = 3;

async fn at(url: &str, st: &StoreOptions, r: &str) -> Dataset {
    Dataset::open_url(
        &format!("{url}@{r}"),
        OpenOptions {
            storage: st.clone(),
            read_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{url}@{r}: {e}"))
}

async fn race(url: &str, st: &StoreOptions, envs: &[(String, String)]) {
    let mut ds = Dataset::create(
        url,
        OpenOptions {
            storage: st.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
        .await
        .unwrap();
    ds.append(
        "x",
        Sample::Array(NdArray::from_slice(vec![1], &[0i64]).unwrap()),
    )
    .await
    .unwrap();
    let base = ds.commit("base").await.unwrap();
    ds.close().await.unwrap();

    let bin = env!("CARGO_BIN_EXE_deeplake-race-worker");
    let children: Vec<_> = (0..WORKERS)
        .map(|w| {
            Command::new(bin)
                .args([url, &w.to_string(), &ROUNDS.to_string()])
                .envs(envs.iter().cloned())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut landed: Vec<(u32, Value)> = Vec::new();
    for (w, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker {w} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            landed.push((w as u32, serde_json::from_str(line).unwrap()));
        }
    }
    let per_worker = 1 + ROUNDS * 3;
    assert_eq!(landed.len() as u32, WORKERS * per_worker, "{landed:?}");

    let ds = at(url, st, "main").await;
    let tree: BTreeMap<String, (String, Option<String>)> = ds
        .all_commits()
        .into_iter()
        .map(|c| (c.id.clone(), (c.branch.clone(), c.parent.clone())))
        .collect();

    // Each landed commit is in the tree once, on its branch; ids are unique.
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut main_values = Vec::new();
    for (w, op) in &landed {
        match op["op"].as_str().unwrap() {
            "commit" => {
                let id = op["id"].as_str().unwrap();
                *seen.entry(id.to_owned()).or_default() += 1;
                let (branch, _) = tree
                    .get(id)
                    .unwrap_or_else(|| panic!("commit {id} of worker {w} is not in the tree"));
                assert_eq!(branch, op["branch"].as_str().unwrap(), "commit {id}");
                let v = op["value"].as_i64().unwrap();
                let snap = testkit::samples::ints(&at(url, st, id).await, "x").await;
                assert_eq!(snap.last(), Some(&v), "commit {id} holds its value last");
                if op["branch"] == "main" {
                    main_values.push(v);
                }
            }
            "branch" => {
                let name = op["name"].as_str().unwrap();
                assert!(ds.branches().iter().any(|b| b == name), "branch {name}");
            }
            "tag" => {
                let name = op["name"].as_str().unwrap();
                assert_eq!(
                    ds.tags().get(name).map(String::as_str),
                    op["commit"].as_str(),
                    "tag {name}"
                );
            }
            other => panic!("unknown op {other}"),
        }
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a commit id was reported twice"
    );
    assert_eq!(ds.branches().len() as u32, WORKERS + 1);
    assert_eq!(ds.tags().len() as u32, WORKERS * ROUNDS);

    // main holds every main append exactly once, and its log has one commit per append
    // (plus the base), with no gaps.
    let main = testkit::samples::ints(&ds, "x").await;
    assert_eq!(main[0], 0);
    let mut got = main[1..].to_vec();
    got.sort_unstable();
    main_values.sort_unstable();
    assert_eq!(
        got, main_values,
        "main's rows are the landed main commits' values"
    );
    let log: Vec<String> = ds
        .log()
        .iter()
        .filter(|c| !c.is_head)
        .map(|c| c.id.clone())
        .collect();
    let messages: Vec<(String, Option<String>)> = ds
        .log()
        .iter()
        .filter(|c| !c.is_head)
        .map(|c| (c.id.clone(), c.message.clone()))
        .collect();
    assert_eq!(log.len() as u32, WORKERS * ROUNDS + 1, "{messages:?}");
    assert_eq!(log.last(), Some(&base));

    // Each worker's branch: base value, then its own values in order.
    for w in 0..WORKERS {
        let b = at(url, st, &format!("w{w}")).await;
        let v = testkit::samples::ints(&b, "x").await;
        let own: Vec<i64> = (0..ROUNDS)
            .map(|k| i64::from(w) * 1000 + i64::from(k))
            .collect();
        assert_eq!(v[v.len() - own.len()..], own[..], "branch w{w}: {v:?}");
    }
}

fn s3_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("DEEPLAKE_TEST_S3"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_race_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    race(&url, &StoreOptions::default(), &[]).await;

    // deeplake 3.9.52 sees the same history: every branch reads the same values.
    let python = std::env::var("DEEPLAKE_DL3_PYTHON").expect(
        "DEEPLAKE_DL3_PYTHON must point at the deeplake 3.9.52 venv's python (scripts/test.sh sets it)",
    );
    let ds = at(&url, &StoreOptions::default(), "main").await;
    let mut refs: Vec<String> = ds.branches();
    refs.extend(
        ds.all_commits()
            .iter()
            .filter(|c| !c.is_head)
            .map(|c| c.id.clone()),
    );
    let script = r#"
import json, sys, deeplake
ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)
out = {}
for ref in sys.argv[2:]:
    ds.checkout(ref)
    out[ref] = [int(v) for v in ds.x.numpy().reshape(-1)]
print(json.dumps(out))
"#;
    let out = Command::new(python)
        .args(["-c", script, &url])
        .args(&refs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .unwrap(),
    )
    .unwrap();
    for r in &refs {
        let ours = testkit::samples::ints(&at(&url, &StoreOptions::default(), r).await, "x").await;
        assert_eq!(theirs[r], serde_json::json!(ours), "ref {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_race_on_s3() {
    let (url, st) = testkit::storage::s3_url_and_options("race8");
    race(&url, &st, &s3_env()).await;
}
