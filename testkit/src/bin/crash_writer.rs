//! `deeplake-crash-writer URL`: appends rows to a dataset in a loop, flushing after
//! each and committing every third, and prints `done <rows>` once each step is durable.
//! The crash test kills it at random points and checks that the dataset opens at the
//! last completed state.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};

async fn run(url: &str) -> deeplake_core::Result<()> {
    let opts = OpenOptions {
        lease_ttl: Some(Duration::from_millis(1500)),
        lease_wait: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let mut ds = Dataset::open_or_create(url, opts).await?;
    if ds.tensor_names().is_empty() {
        ds.create_tensor("x", TensorOptions::new("generic").dtype(Dtype::I64))
            .await?;
        ds.create_tensor("t", TensorOptions::new("text")).await?;
    }
    // Read the head only once it is ours: the previous writer's lease may still run.
    ds.acquire().await?;
    let mut out = std::io::stdout();
    loop {
        let n = ds.tensor_len("x")?;
        ds.append(
            "x",
            Sample::Array(NdArray::from_slice(vec![1], &[n as i64])?),
        )
        .await?;
        ds.append("t", Sample::Text(format!("row {n}"))).await?;
        ds.flush().await?;
        if n % 3 == 2 {
            ds.commit(&format!("rows 0..={n}")).await?;
        }
        let _ = writeln!(out, "done {}", n + 1);
        let _ = out.flush();
    }
}

fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        let _ = writeln!(std::io::stderr(), "usage: deeplake-crash-writer URL");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(1),
    };
    match rt.block_on(run(&url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(1)
        }
    }
}
