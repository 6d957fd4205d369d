//! `deeplake-race-worker URL W ROUNDS`: one of several processes racing on one dataset.
//! Worker `W` creates branch `w<W>`, and for each round appends a value and commits on
//! its branch, appends a value and commits on the shared `main` (waiting for main's
//! lease), and tags its last commit `t<W>-<round>`. Every operation that landed is
//! printed as one JSON line (`{"op": "commit"|"branch"|"tag", ...}`) after it returned,
//! so the race test can check that each one is in the final tree exactly once.
//!
//! Retryable conflicts (a lost create-if-absent race that the core's own retries did not
//! settle, or a lease held too long) are retried here a bounded number of times, as a
//! caller is expected to; anything else ends the process with the error on stderr.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use deeplake_core::{Dataset, Error, NdArray, OpenOptions, Sample};
use serde_json::json;

fn opts(branch: &str) -> deeplake_core::Result<OpenOptions> {
    Ok(OpenOptions {
        branch: Some(branch.parse()?),
        lease_ttl: Some(Duration::from_secs(20)),
        lease_wait: Some(Duration::from_secs(60)),
        ..Default::default()
    })
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

async fn retry<T, F, Fut>(what: &str, mut f: F) -> deeplake_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = deeplake_core::Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Err(Error::Conflict {
                retryable: true,
                message,
                ..
            }) if attempt < 20 => {
                attempt += 1;
                let ms = 20 * u64::from(attempt) + rand::random::<u64>() % 50;
                let _ = writeln!(std::io::stderr(), "{what}: retry {attempt}: {message}");
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            other => return other,
        }
    }
}

fn value(v: i64) -> deeplake_core::Result<Sample> {
    Ok(Sample::Array(NdArray::from_slice(vec![1], &[v])?))
}

/// Appends `v` to `x` on `branch` and commits; returns the commit id.
async fn append_commit(
    url: &str,
    branch: &str,
    v: i64,
    msg: &str,
) -> deeplake_core::Result<String> {
    retry(msg, || async {
        let mut ds = Dataset::open(url, opts(branch)?).await?;
        ds.acquire().await?;
        ds.append("x", value(v)?).await?;
        let r = ds.commit(msg).await;
        let closed = ds.close().await;
        let id = r?;
        closed?;
        Ok(id)
    })
    .await
}

async fn run(url: &str, w: u32, rounds: u32) -> deeplake_core::Result<()> {
    let mine = format!("w{w}");
    retry("branch", || async {
        let mut ds = Dataset::open(url, opts("main")?).await?;
        let r = ds.checkout(&mine, true).await;
        let head = ds.node_id().to_string();
        let closed = ds.close().await;
        r?;
        closed?;
        say(json!({"op": "branch", "name": mine, "head": head}));
        Ok(())
    })
    .await?;
    for k in 0..rounds {
        let v = i64::from(w) * 1000 + i64::from(k);
        let msg = format!("w{w} round {k} on {mine}");
        let id = append_commit(url, &mine, v, &msg).await?;
        say(json!({"op": "commit", "branch": mine, "id": id, "value": v}));

        let v_main = -(v + 1);
        let msg = format!("w{w} round {k} on main");
        let id_main = append_commit(url, "main", v_main, &msg).await?;
        say(json!({"op": "commit", "branch": "main", "id": id_main, "value": v_main}));

        let tag = format!("t{w}-{k}");
        retry("tag", || async {
            let mut ds = Dataset::open(url, opts(&mine)?).await?;
            ds.tag(&tag, Some(&id)).await?;
            Ok(())
        })
        .await?;
        say(json!({"op": "tag", "name": tag, "commit": id}));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(Ok(w)), Some(Ok(rounds))) = (
        args.get(1),
        args.get(2).map(|s| s.parse::<u32>()),
        args.get(3).map(|s| s.parse::<u32>()),
    ) else {
        let _ = writeln!(
            std::io::stderr(),
            "usage: deeplake-race-worker URL W ROUNDS"
        );
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(url, w, rounds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "worker {w}: {e}");
            ExitCode::FAILURE
        }
    }
}
