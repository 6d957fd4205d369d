//! Running the connector and checking what it wrote.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use deeplake_core::{Dataset, OpenOptions, Sample};
use serde_json::{Value, json};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_destination-deeplake")
}

/// `shared/airbyte` beside the repository.
pub fn harness() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/airbyte");
    assert!(
        p.join("gen_messages.py").is_file(),
        "the Airbyte harness is missing: expected {} (shared/ beside the repository)",
        p.display()
    );
    p
}

/// Runs `gen_messages.py` with `args`; returns (messages file, catalog file).
pub fn generate(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let msgs = dir.join(format!("{name}.jsonl"));
    let cat = dir.join(format!("{name}.catalog.json"));
    let st = Command::new("python3")
        .arg(harness().join("gen_messages.py"))
        .args(args)
        .arg("--out")
        .arg(&msgs)
        .arg("--catalog-out")
        .arg(&cat)
        .status()
        .expect("python3 must be installed to generate Airbyte messages");
    assert!(st.success(), "gen_messages.py {args:?} failed");
    (msgs, cat)
}

pub fn write_config(dir: &Path, cfg: &Value) -> PathBuf {
    let p = dir.join(format!("config-{:08x}.json", rand::random::<u32>()));
    std::fs::write(&p, serde_json::to_vec(cfg).unwrap()).unwrap();
    p
}

pub fn config_for(root: &Path) -> Value {
    json!({"destination": {"path": root.to_str().unwrap()}, "writer_lease_seconds": 2})
}

pub struct Run {
    pub stdout: String,
    pub code: Option<i32>,
}

impl Run {
    pub fn messages(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line {l:?}: {e}")))
            .collect()
    }

    pub fn states(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == "STATE")
            .map(|m| m["state"].clone())
            .collect()
    }
}

/// Runs `args` with `input` on stdin.
pub fn run(args: &[&str], input: &[u8]) -> Run {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Run {
        stdout: String::from_utf8(out.stdout).unwrap(),
        code: out.status.code(),
    }
}

/// `write` with a config and catalog file, `messages` on stdin; must succeed.
pub fn write(config: &Path, catalog: &Path, messages: &[u8]) -> Run {
    let r = run(
        &[
            "write",
            "--config",
            config.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
        messages,
    );
    assert_eq!(r.code, Some(0), "write failed:\n{}", r.stdout);
    r
}

/// The protocol validator's verdict on a `write` run.
pub fn validate(dir: &Path, input: &[u8], run: &Run, catalog: &Path) {
    let python = std::env::var("DEEPLAKE_PROTO_PYTHON").expect(
        "DEEPLAKE_PROTO_PYTHON must name the python of the airbyte-protocol-models venv \
         (scripts/lib.sh proto_venv; scripts/test.sh sets it)",
    );
    let tag = format!("{:08x}", rand::random::<u32>());
    let (inp, out) = (
        dir.join(format!("in-{tag}.jsonl")),
        dir.join(format!("out-{tag}.jsonl")),
    );
    std::fs::write(&inp, input).unwrap();
    std::fs::write(&out, &run.stdout).unwrap();
    let o = Command::new(python)
        .arg(harness().join("validate_messages.py"))
        .args(["--mode", "write"])
        .arg(&out)
        .arg("--input")
        .arg(&inp)
        .arg("--catalog")
        .arg(catalog)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "validate_messages.py failed:\n{text}");
    assert!(text.contains("OK:"), "{text}");
}

pub fn read_opts() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..Default::default()
    }
}

pub async fn open(path: &Path) -> Dataset {
    Dataset::open(path.to_str().unwrap(), read_opts())
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Every row of an int64 tensor.
pub async fn ints(ds: &Dataset, t: &str) -> Vec<i64> {
    let n = ds.tensor_len(t).unwrap();
    ds.read_range(t, 0..n)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Array(a) => a.to_f64_vec()[0] as i64,
            other => panic!("{t}: {other:?}"),
        })
        .collect()
}

pub async fn texts(ds: &Dataset, t: &str) -> Vec<String> {
    let n = ds.tensor_len(t).unwrap();
    ds.read_range(t, 0..n)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s {
            Sample::Text(x) => x,
            other => panic!("{t}: {other:?}"),
        })
        .collect()
}

/// Per stream, the `id`s of the valid records of a message file (data an object,
/// stream `streams`).
pub fn expected_ids(messages: &[u8], streams: &[&str]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in messages.split(|b| *b == b'\n') {
        let Ok(m) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if m["type"] != "RECORD" {
            continue;
        }
        let s = m["record"]["stream"].as_str().unwrap().to_owned();
        if !streams.contains(&s.as_str()) {
            continue;
        }
        if let Some(id) = m["record"]["data"].get("id").and_then(Value::as_i64) {
            out.entry(s).or_default().push(id);
        }
    }
    out
}

pub fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}
