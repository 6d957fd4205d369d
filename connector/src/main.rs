//! `destination-deeplake`: the Airbyte destination of deeplake-rs.
//!
//! ```text
//! destination-deeplake spec
//! destination-deeplake check --config CONFIG.json
//! destination-deeplake write --config CONFIG.json --catalog CATALOG.json < messages
//! destination-deeplake --version
//! ```
//!
//! stdout carries Airbyte messages only, one per line; a failure is a TRACE ERROR
//! (with `failure_type`) followed by a non-zero exit. This file is the process shell
//! (arguments, runtime, allocator); the work is in the `deeplake_connector` library.

use std::process::ExitCode;

// Parsing makes many small, short-lived allocations on several threads at once, and the
// system allocator spent about a fifth of a sync's CPU time on them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::{Value, json};

use deeplake_connector::config::{self, Config};
use deeplake_connector::error::{CoreContext, Failure, Result};
use deeplake_connector::{protocol, sync};

fn usage() -> Failure {
    Failure::config(
        "usage: destination-deeplake spec | check --config FILE | write --config FILE --catalog FILE | --version",
    )
}

struct Args {
    cmd: String,
    config: Option<String>,
    catalog: Option<String>,
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let cmd = argv.first().cloned().ok_or_else(usage)?;
    let (mut config, mut catalog) = (None, None);
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned();
        match argv[i].as_str() {
            "--config" => config = Some(value.ok_or_else(usage)?),
            "--catalog" => catalog = Some(value.ok_or_else(usage)?),
            // Options of newer platforms (e.g. --state) are not ours to refuse.
            other if other.starts_with("--") => {}
            _ => return Err(usage()),
        }
        i += 2;
    }
    Ok(Args {
        cmd,
        config,
        catalog,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File puts and fsyncs run on blocking threads, mostly waiting on the device;
        // each thread also keeps an allocator heap, so their number bounds memory too.
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| Failure::system(format!("cannot start the async runtime: {e}")))
}

fn spec() -> Result<()> {
    let spec: Value = serde_json::from_str(config::SPEC)
        .map_err(|e| Failure::system(format!("the built-in spec is not JSON: {e}")))?;
    protocol::emit(&json!({"type": "SPEC", "spec": spec}))
        .map_err(|e| Failure::system(format!("writing to stdout failed: {e}")))
}

/// Checks the config and that the destination can be written; never fails the process
/// for a bad destination, it says so in the CONNECTION_STATUS.
fn check(path: &str) -> Result<()> {
    let outcome = (|| -> Result<()> {
        let raw = config::read_json(path, "config")?;
        let cfg = Config::parse(&raw)?;
        runtime()?.block_on(async {
            let store = sync::root_store(&cfg)?;
            let log = deeplake_core::store::Sidecar::new(&store, "airbyte-check")
                .ctx("opening the destination")?;
            let id = format!("probe-{}", hex::encode(rand::random::<[u8; 8]>()));
            log.create(&id, b"{}".to_vec())
                .await
                .ctx(format!("writing a probe object under {}", cfg.root))?;
            log.delete(&id)
                .await
                .ctx(format!("deleting the probe object under {}", cfg.root))
        })
    })();
    let status = match outcome {
        Ok(()) => json!({"status": "SUCCEEDED"}),
        Err(f) => json!({"status": "FAILED", "message": f.message}),
    };
    protocol::emit(&json!({"type": "CONNECTION_STATUS", "connectionStatus": status}))
        .map_err(|e| Failure::system(format!("writing to stdout failed: {e}")))
}

fn write(config_path: &str, catalog_path: &str) -> Result<()> {
    let raw = config::read_json(config_path, "config")?;
    let cfg = Config::parse(&raw)?;
    let catalog = config::read_json(catalog_path, "catalog")?;
    runtime()?.block_on(sync::write(
        cfg,
        &catalog,
        std::io::stdin(),
        protocol::Emit::stdout(),
    ))
}

/// `--version` is for people and packaging checks, not the platform: a plain line, as
/// `deeplake --version` prints it.
fn version() -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "destination-deeplake {}", env!("CARGO_PKG_VERSION"))
        .and_then(|()| out.flush())
        .map_err(|e| Failure::system(format!("writing to stdout failed: {e}")))
}

fn run(argv: &[String]) -> Result<()> {
    if matches!(argv, [flag] if flag == "--version" || flag == "-V") {
        return version();
    }
    let args = parse_args(argv)?;
    match (args.cmd.as_str(), args.config, args.catalog) {
        ("spec", _, _) => spec(),
        ("check", Some(c), _) => check(&c),
        ("write", Some(c), Some(k)) => write(&c, &k),
        _ => Err(usage()),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            protocol::trace_error(&f);
            ExitCode::FAILURE
        }
    }
}
