"""Real daemons for the client tests: `deeplake demo` writes a dataset, two
`deeplake serve` processes on 127.0.0.1 serve the same root, and both stop at the end.

DEEPLAKE_BIN names the CLI (default: the workspace's target/debug/deeplake, which the
test script builds). DEEPLAKE_DL3_PYTHON names deeplake 3.9.52's Python, the oracle.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "client" / "python" / "src"))

ROWS = 120


def _bin() -> str:
    b = os.environ.get("DEEPLAKE_BIN") or str(REPO / "target" / "debug" / "deeplake")
    if not os.access(b, os.X_OK):
        pytest.fail(f"the deeplake CLI is not at {b}: build it (cargo build -p deeplake-daemon) or set DEEPLAKE_BIN")
    return b


def _serve(bin_: str, root: Path, log: Path) -> tuple:
    out = open(log.with_suffix(".out"), "w+")
    err = open(log, "w")
    p = subprocess.Popen(
        [bin_, "serve", "--root", str(root), "--bind", "127.0.0.1:0"],
        stdout=out,
        stderr=err,
        env={**os.environ, "RUST_LOG": "info"},
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        out.seek(0)
        m = re.search(r"at (http://127\.0\.0\.1:\d+)", out.read())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    pytest.fail(f"deeplake serve did not start; its log: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """(root, [address of daemon 1, address of daemon 2]) over one dataset "demo"."""
    bin_ = _bin()
    root = tmp_path_factory.mktemp("root")
    subprocess.run(
        [bin_, "demo", str(root / "demo"), "--rows", str(ROWS), "--size", "16"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([bin_, "commit", str(root / "demo"), "-m", "demo rows"], check=True, stdout=subprocess.DEVNULL)
    procs = []
    try:
        addrs = []
        for i in range(2):
            p, addr = _serve(bin_, root, root.parent / f"serve{i}.log")
            procs.append(p)
            addrs.append(addr)
        yield root, addrs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def url(served):
    return served[1][0] + "/datasets/demo"


@pytest.fixture
def urls(served):
    return [a + "/datasets/demo" for a in served[1]]
