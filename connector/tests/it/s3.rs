//! The destination on S3 (the local S3-compatible test server): `check` with good and
//! bad credentials, and a two-stream sync whose commit records live in the bucket.

use serde_json::json;

use crate::common::*;

fn s3_config(url: &str, secret: Option<&str>) -> serde_json::Value {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    json!({"destination": {"path": url, "s3": {
        "endpoint": env("AWS_ENDPOINT"),
        "region": env("AWS_REGION"),
        "access_key_id": env("AWS_ACCESS_KEY_ID"),
        "secret_access_key": secret.map(str::to_owned).unwrap_or_else(|| env("AWS_SECRET_ACCESS_KEY")),
        "allow_http": true
    }}, "writer_lease_seconds": 2})
}

#[tokio::test]
async fn check_and_write_on_s3() {
    let (url, storage) = testkit::storage::s3_url_and_options("connector");
    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(dir.path(), &s3_config(&url, Some("not-the-secret")));
    let r = run(&["check", "--config", bad.to_str().unwrap()], b"");
    assert_eq!(
        r.messages()[0]["connectionStatus"]["status"],
        "FAILED",
        "{}",
        r.stdout
    );
    let cfg = write_config(dir.path(), &s3_config(&url, None));
    let r = run(&["check", "--config", cfg.to_str().unwrap()], b"");
    assert_eq!(
        r.messages()[0]["connectionStatus"]["status"],
        "SUCCEEDED",
        "{}",
        r.stdout
    );

    let (msgs, cat) = generate(
        dir.path(),
        "m",
        &[
            "--records",
            "2000",
            "--streams",
            "a,b",
            "--state-every",
            "300",
            "--state-type",
            "GLOBAL",
        ],
    );
    let input = std::fs::read(&msgs).unwrap();
    let r = write(&cfg, &cat, &input);
    validate(dir.path(), &input, &r, &cat);
    let expected = expected_ids(&input, &["a", "b"]);
    for s in ["a", "b"] {
        let ds = deeplake_core::Dataset::open(
            &format!("{url}/{s}"),
            deeplake_core::OpenOptions {
                storage: storage.clone(),
                read_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(sorted(ints(&ds, "id").await), sorted(expected[s].clone()));
    }
}
