//! `deeplake`: the command-line entry point.

use clap::Parser;

// Streams and reads allocate and free batch-sized buffers (megabytes) all the time; the
// system allocator hands those back to the kernel and faults them in again each time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args = deeplake_daemon::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEEPLAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln_safe(&format!("error: cannot start the async runtime: {e}"));
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(deeplake_daemon::cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln_safe(&format!("error: {e:#}"));
            std::process::ExitCode::from(1)
        }
    }
}

fn eprintln_safe(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}
