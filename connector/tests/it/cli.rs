//! `spec`, `check` and `--version`.

use serde_json::{Value, json};

use crate::common::{config_for, run, write_config};

#[test]
fn spec_prints_exactly_the_spec_file() {
    let r = run(&["spec"], b"");
    assert_eq!(r.code, Some(0));
    let msgs = r.messages();
    assert_eq!(msgs.len(), 1, "{}", r.stdout);
    assert_eq!(msgs[0]["type"], "SPEC");
    let file: Value =
        serde_json::from_str(include_str!("../../../spec/connector-spec.json")).unwrap();
    assert_eq!(msgs[0]["spec"], file);
    let secret = &file["connectionSpecification"]["properties"]["destination"]["properties"]["s3"]
        ["properties"]["secret_access_key"];
    assert_eq!(secret["airbyte_secret"], true);
}

#[test]
fn version_prints_the_package_version_as_one_plain_line() {
    let r = run(&["--version"], b"");
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.stdout,
        format!("destination-deeplake {}\n", env!("CARGO_PKG_VERSION"))
    );
    // Anything after it is not a version request but a usage error, on the protocol.
    let r = run(&["--version", "spec"], b"");
    assert_ne!(r.code, Some(0));
    assert_eq!(r.messages()[0]["type"], "TRACE", "{}", r.stdout);
}

fn check(cfg: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), cfg);
    let r = run(&["check", "--config", p.to_str().unwrap()], b"");
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    let msgs = r.messages();
    assert_eq!(msgs.len(), 1, "{}", r.stdout);
    assert_eq!(msgs[0]["type"], "CONNECTION_STATUS");
    msgs[0]["connectionStatus"].clone()
}

#[test]
fn check_succeeds_on_a_writable_folder() {
    let dir = tempfile::tempdir().unwrap();
    let s = check(&json!({"destination": {"path": dir.path().join("lake").to_str().unwrap()}}));
    assert_eq!(s["status"], "SUCCEEDED", "{s}");
}

#[test]
fn check_fails_with_a_reason() {
    let s = check(&json!({"destination": {}}));
    assert_eq!(s["status"], "FAILED");
    assert!(s["message"].as_str().unwrap().contains("path"), "{s}");
    let s = check(&json!({"destination": {"path": "/x"}, "commits": "sometimes"}));
    assert_eq!(s["status"], "FAILED");
    assert!(s["message"].as_str().unwrap().contains("commits"), "{s}");
    // Under a regular file nothing can be created.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let s = check(&json!({"destination": {"path": file.join("lake").to_str().unwrap()}}));
    assert_eq!(s["status"], "FAILED", "{s}");
}

#[test]
fn write_with_a_bad_config_is_a_config_error_trace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &json!({"destination": {"path": 5}}));
    let cat = write_config(dir.path(), &json!({"streams": []}));
    let r = run(
        &[
            "write",
            "--config",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
        b"",
    );
    assert_ne!(r.code, Some(0));
    let msgs = r.messages();
    let t = msgs.iter().find(|m| m["type"] == "TRACE").unwrap();
    assert_eq!(t["trace"]["error"]["failure_type"], "config_error", "{t}");
    let r = run(&["bogus"], b"");
    assert_ne!(r.code, Some(0));
    let _ = config_for(dir.path());
}
