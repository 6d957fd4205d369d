"""Helpers of the interop suite: the cases, the tools it runs, and running them.

Environment:
  DEEPLAKE_BIN              our CLI (default <cargo target dir>/debug/deeplake)
  DEEPLAKE_FIXTURE_WRITER   our cases.json writer (default <target>/debug/deeplake-fixture-writer)
  DEEPLAKE_DL3_PYTHON       python of the deeplake 3.9.52 venv (default: the one running pytest)
  DEEPLAKE_DL4_PYTHON       python of the deeplake 4.7.4 venv (default: set up by scripts/lib.sh)
"""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
CASES_JSON = os.path.join(HERE, "cases.json")

sys.path.insert(0, HERE)

import cases as cases_mod

CASES = cases_mod.load_cases(CASES_JSON)
CASE_NAMES = [c["name"] for c in CASES]

# Bounds for one external command; the whole suite normally takes well under a minute.
WRITE_TIMEOUT_S = 300
DUMP_TIMEOUT_S = 600


def cargo_target_dir():
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return os.path.join(REPO_ROOT, target) if not os.path.isabs(target) else target
    return os.path.join(REPO_ROOT, "target")


def venv_python(name):
    """Python of one of the project's venvs, created by scripts/lib.sh if needed."""
    script = f'source "{REPO_ROOT}/scripts/lib.sh" && {name}_venv'
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True, timeout=1800)
    return os.path.join(out.stdout.strip().splitlines()[-1], "bin", "python")


class Tools:
    def __init__(self):
        target = cargo_target_dir()
        self.deeplake_bin = os.environ.get("DEEPLAKE_BIN") or os.path.join(target, "debug", "deeplake")
        self.fixture_writer = os.environ.get("DEEPLAKE_FIXTURE_WRITER") or os.path.join(
            target, "debug", "deeplake-fixture-writer"
        )
        self.dl3_python = os.environ.get("DEEPLAKE_DL3_PYTHON") or sys.executable
        self.dl4_python = os.environ.get("DEEPLAKE_DL4_PYTHON") or venv_python("dl4")

    def script(self, name):
        return os.path.join(HERE, name)


def run(cmd, timeout, what):
    """Runs cmd; on failure, fails the test with its output."""
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: timed out after {timeout}s: {' '.join(cmd)}")
    if proc.returncode != 0:
        pytest.fail(
            f"{what}: exit {proc.returncode}: {' '.join(cmd)}\n"
            f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}"
        )
    return proc


def dump_all(python, script, paths, out_dir, timeout):
    """Batch dump (one process). Returns {case: (dump path or None, error text or None)}."""
    os.makedirs(out_dir, exist_ok=True)
    if paths:
        try:
            subprocess.run(
                [python, script, "--to", out_dir, *paths], check=False, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            pass
    result = {}
    for path in paths:
        name = os.path.basename(os.path.normpath(path))
        dump, err = os.path.join(out_dir, name + ".jsonl"), os.path.join(out_dir, name + ".error")
        if os.path.exists(err):
            with open(err, encoding="utf-8") as f:
                result[name] = (None, f.read())
        elif os.path.exists(dump):
            result[name] = (dump, None)
        else:
            result[name] = (None, f"{os.path.basename(script)} produced nothing for {path}")
    return result


def case_by_name(name):
    return cases_mod.find_case(CASES, name)


def read_json_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
