//! deeplake 3.9.52 as the tests' format oracle: a Python script runs in the venv that
//! `scripts/` builds (its python named by `DEEPLAKE_DL3_PYTHON`, which `scripts/test.sh`
//! sets), and the test reads the JSON object it prints last. A missing venv, a failing
//! script or a script that prints no JSON fails the test loudly.

use std::ffi::OsStr;

use serde_json::Value;

/// Imports every script has, with warnings and the usage reporter off.
const PRELUDE: &str = r#"
import json, sys, warnings
warnings.simplefilter("ignore")
import deeplake, numpy as np
from deeplake.util.bugout_reporter import deeplake_reporter
from humbug.consent import HumbugConsent
deeplake_reporter.consent = HumbugConsent(False)
"#;

/// The python of the deeplake 3.9.52 venv.
pub fn dl3_python() -> String {
    std::env::var("DEEPLAKE_DL3_PYTHON").unwrap_or_else(|_| {
        panic!(
            "DEEPLAKE_DL3_PYTHON must point at the deeplake 3.9.52 venv's python (scripts/test.sh sets it)"
        )
    })
}

/// Runs `script` after the prelude (`json`, `sys`, `deeplake` and `numpy as np`
/// imported), with `args` as `sys.argv[1:]`; returns the last line of its output that
/// is a JSON object.
pub fn dl3_json<I, S>(script: &str, args: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = std::process::Command::new(dl3_python())
        .arg("-c")
        .arg(format!("{PRELUDE}{script}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running the deeplake 3.9.52 python: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "deeplake 3.9.52 script failed:\n{stderr}"
    );
    let line = out
        .stdout
        .split(|b| *b == b'\n')
        .rfind(|l| l.starts_with(b"{"))
        .unwrap_or_else(|| {
            panic!(
                "deeplake 3.9.52 script printed no JSON object:\n{}\n{stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
    serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("deeplake 3.9.52 script printed bad JSON ({e})"))
}
