"""Session fixtures of the interop suite: the fixture files, and the datasets and dumps
that several tests share, built once per session in a temporary folder.

Run with the deeplake 3.9.52 venv's python (scripts/test.sh does); see harness.py for
the environment variables that locate the tools.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fixtures as fixtures_mod
from harness import (
    CASE_NAMES,
    CASES_JSON,
    DUMP_TIMEOUT_S,
    WRITE_TIMEOUT_S,
    Tools,
    dump_all,
    run,
)


@pytest.fixture(scope="session")
def tools():
    return Tools()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("interop"))


@pytest.fixture(scope="session")
def fixtures_dir(workdir):
    path = os.path.join(workdir, "fixtures")
    fixtures_mod.write_fixtures(path)
    return path


@pytest.fixture(scope="session")
def dl3_datasets(tools, workdir, fixtures_dir):
    """Every case written by deeplake 3.9.52: {case: path}."""
    out = os.path.join(workdir, "dl3")
    run(
        [
            tools.dl3_python,
            tools.script("dl3_write.py"),
            "--cases",
            CASES_JSON,
            "--fixtures",
            fixtures_dir,
            "--out",
            out,
        ],
        WRITE_TIMEOUT_S,
        "deeplake 3.9.52 writer",
    )
    return {name: os.path.join(out, name) for name in CASE_NAMES}


@pytest.fixture(scope="session")
def reference_dumps(tools, workdir, dl3_datasets):
    """dump_dl3 of the deeplake 3.9.52 datasets: the reference of every comparison."""
    return dump_all(
        tools.dl3_python,
        tools.script("dump_dl3.py"),
        list(dl3_datasets.values()),
        os.path.join(workdir, "ref"),
        DUMP_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def dl4_dumps_of_dl3(tools, workdir, dl3_datasets):
    return dump_all(
        tools.dl4_python,
        tools.script("dump_dl4.py"),
        list(dl3_datasets.values()),
        os.path.join(workdir, "dl4_of_dl3"),
        DUMP_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def rust_datasets(tools, workdir, fixtures_dir):
    """Every case written by our fixture writer: {case: (path or None, error or None)}."""
    out = os.path.join(workdir, "rust")
    os.makedirs(out, exist_ok=True)
    result = {}
    for name in CASE_NAMES:
        if not os.path.exists(tools.fixture_writer):
            result[name] = (
                None,
                f"fixture writer not found at {tools.fixture_writer} (build it or set DEEPLAKE_FIXTURE_WRITER)",
            )
            continue
        cmd = [tools.fixture_writer, "--cases", CASES_JSON, "--fixtures", fixtures_dir, "--out", out, "--case", name]
        try:
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=WRITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            result[name] = (None, f"timed out after {WRITE_TIMEOUT_S}s: {' '.join(cmd)}")
            continue
        if proc.returncode != 0:
            result[name] = (None, f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        else:
            result[name] = (os.path.join(out, name), None)
    return result


@pytest.fixture(scope="session")
def dl3_dumps_of_rust(tools, workdir, rust_datasets):
    paths = [p for p, _ in rust_datasets.values() if p]
    return dump_all(
        tools.dl3_python, tools.script("dump_dl3.py"), paths, os.path.join(workdir, "dl3_of_rust"), DUMP_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def dl4_dumps_of_rust(tools, workdir, rust_datasets):
    paths = [p for p, _ in rust_datasets.values() if p]
    return dump_all(
        tools.dl4_python, tools.script("dump_dl4.py"), paths, os.path.join(workdir, "dl4_of_rust"), DUMP_TIMEOUT_S
    )
