//! Kill a writer with SIGKILL at random points, many times, on local disk and on S3.
//! After each kill the dataset must open at exactly the last completed state (or the
//! one after it, when the writer finished a step but died before saying so), every
//! tensor agreeing, and deeplake 3.9.52 must read the same.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use deeplake_core::store::StoreOptions;
use deeplake_core::{Dataset, OpenOptions, Sample};
use rand::{Rng, SeedableRng};

async fn check(url: &str, st: &StoreOptions, last_done: u64) -> u64 {
    let opts = OpenOptions {
        storage: st.clone(),
        ..Default::default()
    };
    let ds = match Dataset::open(url, opts).await {
        Ok(ds) => ds,
        Err(deeplake_core::Error::NotFound { .. }) if last_done == 0 => return 0,
        Err(e) => {
            panic!("dataset does not open after a kill (last completed {last_done} rows): {e}")
        }
    };
    if ds.tensor_names().is_empty() {
        assert_eq!(last_done, 0);
        return 0;
    }
    let n = ds.tensor_len("x").unwrap();
    assert!(
        n == last_done || n == last_done + 1,
        "{n} rows after a kill; last completed step had {last_done}"
    );
    assert_eq!(
        ds.tensor_len("t").unwrap(),
        n,
        "tensors disagree after a kill"
    );
    let xs = ds.read_range("x", 0..n).await.unwrap();
    let ts = ds.read_range("t", 0..n).await.unwrap();
    for (i, (x, t)) in xs.iter().zip(&ts).enumerate() {
        match x {
            Sample::Array(a) => assert_eq!(a.to_f64_vec(), vec![i as f64], "row {i}"),
            other => panic!("row {i}: {other:?}"),
        }
        assert_eq!(t, &Sample::Text(format!("row {i}")));
    }
    n
}

/// Runs `rounds` kill cycles; returns the expected row count of each snapshot taken.
async fn crash_loop(
    url: &str,
    st: &StoreOptions,
    rounds: usize,
    seed: u64,
    snapshot: Option<&Path>,
) -> Vec<u64> {
    let bin = env!("CARGO_BIN_EXE_deeplake-crash-writer");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last_done = 0u64;
    let mut expected = Vec::new();
    for round in 0..rounds {
        let mut child = Command::new(bin)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .filter_map(|l| l.strip_prefix("done ").and_then(|n| n.parse::<u64>().ok()))
                .max()
        });
        let ms = if round == 0 {
            800
        } else {
            rng.random_range(30..500)
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("writer exited by itself ({status}): {err}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if let Some(done) = reader.join().unwrap() {
            last_done = last_done.max(done);
        }
        last_done = check(url, st, last_done).await;
        if let Some(dir) = snapshot {
            let to = dir.join(format!("round{round:03}"));
            copy_dir(Path::new(url), &to);
            expected.push(last_done);
        }
    }
    assert!(
        last_done > rounds as u64 / 4,
        "the writer made too little progress ({last_done} rows)"
    );
    expected
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_local_disk() {
    let python = std::env::var("DEEPLAKE_DL3_PYTHON")
        .expect("DEEPLAKE_DL3_PYTHON must point at the deeplake 3.9.52 venv's python (scripts/test.sh sets it)");
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ds").to_string_lossy().into_owned();
    let snaps = dir.path().join("snapshots");
    let expected = crash_loop(&url, &StoreOptions::default(), 50, 7, Some(&snaps)).await;
    // deeplake 3.9.52 reads every post-kill state as we do.
    let script = r#"
import json, sys, deeplake
root, expected = sys.argv[1], json.loads(sys.argv[2])
for i, n in enumerate(expected):
    path = f"{root}/round{i:03d}"
    if n == 0:
        continue
    ds = deeplake.load(path, read_only=True, verbose=False)
    xs = [int(v) for v in ds.x.numpy().reshape(-1)]
    ts = [str(v) for v in ds.t.numpy().reshape(-1)]
    assert xs == list(range(n)), (path, n, xs[-3:])
    assert ts == [f"row {k}" for k in range(n)], (path, ts[-3:])
print("ok", len(expected))
"#;
    let out = Command::new(python)
        .args([
            "-c",
            script,
            snaps.to_str().unwrap(),
            &serde_json::to_string(&expected).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deeplake 3.9.52 disagrees after a kill:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_on_s3() {
    let (url, st) = testkit::storage::s3_url_and_options("crash");
    crash_loop(&url, &st, 50, 11, None).await;
}
