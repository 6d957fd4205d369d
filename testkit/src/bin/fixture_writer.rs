//! `deeplake-fixture-writer`: builds the interop cases of `integration-tests/interop/cases.json`
//! with our writer, so that deeplake 3.9.52 and 4.7.4 can read them back.
//!
//! Usage: `deeplake-fixture-writer --cases FILE --fixtures DIR --out DIR [--case NAME]`.
//! The case format is described in `integration-tests/interop/README.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use testkit::cases::{self, Case};

fn usage() -> ExitCode {
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"usage: deeplake-fixture-writer --cases FILE --fixtures DIR --out DIR [--case NAME]\n",
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cases_file = None;
    let mut fixtures = None;
    let mut out = None;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cases" => cases_file = it.next().map(PathBuf::from),
            "--fixtures" => fixtures = it.next().map(PathBuf::from),
            "--out" => out = it.next().map(PathBuf::from),
            "--case" => only = it.next().cloned(),
            _ => return usage(),
        }
    }
    let (Some(cases_file), Some(fixtures), Some(out)) = (cases_file, fixtures, out) else {
        return usage();
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(1),
    };
    match rt.block_on(run(&cases_file, &fixtures, &out, only.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: {e}\n").as_bytes(),
            );
            ExitCode::from(1)
        }
    }
}

async fn run(
    cases_file: &Path,
    fixtures: &Path,
    out: &Path,
    only: Option<&str>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(cases_file)
        .map_err(|e| format!("{}: {e}", cases_file.display()))?;
    let all: Vec<Case> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", cases_file.display()))?;
    let mut n = 0;
    for case in all.iter().filter(|c| only.is_none_or(|o| o == c.name)) {
        let path = out.join(&case.name);
        cases::build(case, fixtures, &path.to_string_lossy())
            .await
            .map_err(|e| format!("case {}: {e}", case.name))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("no case named {:?}", only.unwrap_or("")));
    }
    Ok(())
}
