//! `deeplake demo`, `info` and `dump`, driven through the real argument parser, plus a
//! run of the built binary itself.

use clap::Parser;
use deeplake_daemon::cli::{Cli, run};
use serde_json::Value;

async fn cli(args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["deeplake"];
    full.extend_from_slice(args);
    let cli = Cli::try_parse_from(full)?;
    let mut out = Vec::new();
    match cli.command {
        deeplake_daemon::cli::Command::Info(a) => {
            deeplake_daemon::cli::info::run(&a, &mut out).await?
        }
        deeplake_daemon::cli::Command::Dump(a) => {
            deeplake_daemon::cli::dump::run(&a, &mut out).await?
        }
        deeplake_daemon::cli::Command::Demo(a) => {
            deeplake_daemon::cli::demo::run(&a, &mut out).await?
        }
        deeplake_daemon::cli::Command::Stream(a) => {
            deeplake_daemon::cli::stream::run(&a, &mut out).await?
        }
        other => run(Cli { command: other }).await?,
    }
    Ok(String::from_utf8(out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_then_info_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo").to_string_lossy().into_owned();
    let out = cli(&["demo", &path, "--rows", "300", "--size", "32"])
        .await
        .unwrap();
    assert!(out.contains("wrote 300 rows"), "{out}");

    let info: Value =
        serde_json::from_str(&cli(&["info", &path, "--json"]).await.unwrap()).unwrap();
    assert_eq!(info["length"], 300);
    assert_eq!(info["branch"], "main");
    let tensors = info["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["images", "labels", "boxes", "captions"]);
    let images = &tensors[0];
    assert_eq!(images["htype"], "image");
    assert_eq!(images["sample_compression"], "jpeg");
    assert_eq!(images["max_shape"], serde_json::json!([32, 32, 3]));
    assert!(images["bytes"].as_u64().unwrap() > 300 * 300);
    assert_eq!(tensors[1]["class_names"].as_array().unwrap().len(), 4);

    let table = cli(&["info", &path]).await.unwrap();
    assert!(
        table.contains("images") && table.contains("sample:jpeg") && table.contains("(32, 32, 3)"),
        "{table}"
    );

    let dump = cli(&[
        "dump",
        &path,
        "--rows",
        "10:13",
        "--tensors",
        "labels,captions,images",
    ])
    .await
    .unwrap();
    let rows: Vec<Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let label = r["labels"][0].as_u64().unwrap() as usize;
        let caption = r["captions"].as_str().unwrap();
        assert!(
            caption.starts_with(&format!("a {}", deeplake_daemon::cli::demo::CLASSES[label])),
            "{r}"
        );
        assert_eq!(r["images"]["shape"], serde_json::json!([32, 32, 3]));
        assert_eq!(r["images"]["sha256"].as_str().unwrap().len(), 64);
    }
    // --full prints pixels; --meta adds a first line.
    let full = cli(&[
        "dump",
        &path,
        "--rows",
        "0",
        "--tensors",
        "images",
        "--full",
        "--meta",
    ])
    .await
    .unwrap();
    let mut lines = full.lines();
    let meta: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(meta["__meta__"]["length"], 300);
    let row: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(row["images"].as_array().unwrap().len(), 32);
}

#[tokio::test]
async fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir
        .path()
        .join("nothing-here")
        .to_string_lossy()
        .into_owned();
    let e = cli(&["info", &missing]).await.unwrap_err().to_string();
    assert!(e.contains("not found") && e.contains("nothing-here"), "{e}");
    assert!(
        !dir.path().join("nothing-here").exists(),
        "opening must not create the folder"
    );

    let path = dir.path().join("d").to_string_lossy().into_owned();
    cli(&["demo", &path, "--rows", "5", "--size", "16"])
        .await
        .unwrap();
    // An end past the last row is clipped, as a Python slice is; a start past it is not.
    assert_eq!(
        cli(&["dump", &path, "--rows", "3:99"])
            .await
            .unwrap()
            .lines()
            .count(),
        2
    );
    let e = cli(&["dump", &path, "--rows", "7:9"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = cli(&["dump", &path, "--rows", "a:b"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a row number"), "{e}");
    let e = cli(&["dump", &path, "--tensors", "nope"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    let e = cli(&["info", "gdrive://x/y"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsupported"), "{e}");
    let e = cli(&["info", &path, "--storage-option", "novalue"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("KEY=VALUE"), "{e}");
}

#[test]
fn the_binary_runs_and_reports_errors_on_stderr() {
    let bin = env!("CARGO_BIN_EXE_deeplake");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bin-demo");
    let out = std::process::Command::new(bin)
        .args([
            "demo",
            path.to_str().unwrap(),
            "--rows",
            "20",
            "--size",
            "16",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(bin)
        .args(["dump", path.to_str().unwrap(), "--rows", "0:2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = std::process::Command::new(bin)
        .args(["info", "/definitely/not/here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[test]
fn the_binary_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deeplake"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deeplake {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reports_every_row_of_every_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo").to_string_lossy().into_owned();
    cli(&["demo", &path, "--rows", "150", "--size", "32"])
        .await
        .unwrap();
    let report: Value = serde_json::from_str(
        &cli(&[
            "stream",
            &path,
            "--tensors",
            "images,labels",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--shuffle",
            "--json",
        ])
        .await
        .unwrap(),
    )
    .unwrap();
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    for e in epochs {
        assert_eq!(e["rows"], 150);
        // Decoded 32x32 RGB images plus one u32 label per row.
        let bytes = e["mb_per_s"].as_f64().unwrap() * 1e6 * e["seconds"].as_f64().unwrap();
        assert!(
            (bytes - 150.0 * (32.0 * 32.0 * 3.0 + 4.0)).abs() < 1.0,
            "{e}"
        );
        assert!(e["first_batch_s"].as_f64().unwrap() <= e["seconds"].as_f64().unwrap());
    }
    let peak = report["peak_prefetch_bytes"].as_u64().unwrap();
    assert!(peak > 0 && peak <= report["prefetch_budget_bytes"].as_u64().unwrap());
    let q = cli(&[
        "stream",
        &path,
        "--query",
        "SELECT * WHERE labels == 1",
        "--tensors",
        "labels",
    ])
    .await
    .unwrap();
    assert!(q.starts_with("epoch 0: ") && q.contains("rows/s"), "{q}");
    let err = cli(&["stream", &path, "--tensors", "nope"])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}
