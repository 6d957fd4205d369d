//! Exactly once across crashes: a 200,000-record sync is killed with SIGKILL at 20
//! random moments; each retry replays the records after the last STATE the killed
//! attempt echoed (as the platform does). The final dataset holds every record once.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::*;

/// Runs `write` on `lines`, killing it after `kill_after` if given. Returns the ids of
/// the states it echoed (complete lines only) and whether it finished by itself.
fn attempt(
    cfg: &std::path::Path,
    cat: &std::path::Path,
    lines: &[String],
    kill_after: Option<(Duration, usize)>,
) -> (Vec<i64>, bool, String) {
    let mut child = Command::new(bin())
        .args([
            "write",
            "--config",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // With a kill planned, only the first `n` lines are fed: the connector never sees
    // the end of its input, so however fast it runs, the kill lands inside the sync.
    let fed = match kill_after {
        Some((_, n)) => &lines[..n.min(lines.len())],
        None => lines,
    };
    let data: Vec<u8> = fed
        .iter()
        .flat_map(|l| [l.as_bytes(), b"\n"].concat())
        .collect();
    let keep_open = kill_after.is_some();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
        // Held open until the kill: an end of input would let the connector finish.
        keep_open.then_some(stdin)
    });
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            // A line cut by the kill has no end and does not count as echoed.
            if line.ends_with('\n') {
                out.push_str(&line);
            }
            line.clear();
        }
        out
    });
    // The kill comes at a random time after the start.
    let finished = match kill_after {
        Some((d, _)) => {
            let start = Instant::now();
            loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st.success();
                }
                if start.elapsed() >= d {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None => child.wait().unwrap().success(),
    };
    let _ = feeder.join();
    let out = reader.join().unwrap();
    let ids = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["type"] == "STATE")
        .filter_map(|m| m["state"]["id"].as_i64())
        .collect();
    (ids, finished, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_20_random_points_then_resume_stores_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let n: usize = 200_000;
    let (msgs, cat) = generate(
        dir.path(),
        "m",
        &[
            "--records",
            &n.to_string(),
            "--streams",
            "a,b",
            "--state-every",
            "2000",
            "--state-type",
            "GLOBAL",
            "--platform-ids",
        ],
    );
    let lines: Vec<String> = std::fs::read_to_string(&msgs)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    // Where each state sits: a retry starts right after the last one echoed.
    let state_line: std::collections::HashMap<i64, usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(r#"{"type":"STATE""#))
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["state"]["id"].as_i64().unwrap(), i)
        })
        .collect();
    let root = dir.path().join("lake");
    let mut cfg_v = config_for(&root);
    cfg_v["batch_size"] = 3000.into();
    cfg_v["flush_records"] = 2000.into();
    let cfg = write_config(dir.path(), &cfg_v);
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // First, how long an uninterrupted pass takes, to spread the kills over it.
    let start = Instant::now();
    let probe_root = dir.path().join("probe");
    let mut probe_v = config_for(&probe_root);
    probe_v["batch_size"] = 3000.into();
    let probe = write_config(dir.path(), &probe_v);
    let (_, ok, _) = attempt(&probe, &cat, &lines, None);
    assert!(ok);
    let full = start.elapsed();
    let mut from = 0usize;
    let mut kills = 0;
    let mut finished = false;
    while kills < 20 {
        // Kill anywhere from start-up to most of what is left of the sync.
        let left = full.mul_f64((lines.len() - from) as f64 / lines.len() as f64);
        let ms = rng.random_range(1..(left.as_millis() as u64).max(2) * 3 / 4 + 2);
        // Feed a random prefix of what is left (never all of it), kill at a random time.
        let remaining = lines.len() - from;
        let prefix = rng.random_range(1..remaining.max(2));
        let (ids, done, _) = attempt(
            &cfg,
            &cat,
            &lines[from..],
            Some((Duration::from_millis(ms), prefix)),
        );
        if let Some(last) = ids.last() {
            from = state_line[last] + 1;
        }
        if done {
            finished = true;
            break;
        }
        kills += 1;
    }
    assert!(finished || kills == 20);
    if !finished {
        let (_, ok, out) = attempt(&cfg, &cat, &lines[from..], None);
        assert!(ok, "the final attempt failed:\n{out}");
    }
    eprintln!("{kills} kills");
    assert_eq!(
        kills, 20,
        "the sync finished before 20 kills: spread them more thinly"
    );
    for (stream, parity) in [("a", 0), ("b", 1)] {
        let ds = open(&root.join(stream)).await;
        let ids = sorted(ints(&ds, "id").await);
        let want: Vec<i64> = (0..n as i64).filter(|i| i % 2 == parity).collect();
        assert_eq!(ids.len(), want.len(), "stream {stream}: row count");
        assert_eq!(ids, want, "stream {stream}: every record exactly once");
        assert_eq!(ds.tensor_len("_airbyte_raw_id").unwrap(), want.len() as u64);
    }
}
