"""The user docs run: every fenced ``sh`` and ``python`` block of each page below runs,
in order, in one scratch folder per page, and must succeed.

A block may be left out only with a reason, in an HTML comment on the line before it:
``<!-- not run: why -->``. Shell blocks run with ``bash -euo pipefail``; Python blocks
with this interpreter (the client's venv: numpy, pyarrow, torch, Pillow). The
``deeplake`` CLI is the one DEEPLAKE_BIN names, put first on PATH; the client package is
imported from the source tree; PORT is a free loopback port for pages that serve.
Processes a page starts in the background write their pid to ``*.pid`` in the scratch
folder and are stopped at the end if the page did not stop them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = ["docs/quickstart.md"]
FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->\s*$")


def blocks(path: Path):
    """(language, code, line number, reason it is not run or None) of each fence."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: unclosed code fence")
        prev = lines[i - 1] if i else ""
        skip = NOT_RUN.match(prev)
        out.append((lang, "\n".join(lines[start:j]) + "\n", i + 1, skip.group(1) if skip else None))
        i = j + 1
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deeplake_bin() -> Path:
    b = Path(os.environ.get("DEEPLAKE_BIN") or REPO / "target" / "debug" / "deeplake")
    if not os.access(b, os.X_OK):
        pytest.fail(f"the deeplake CLI is not at {b}: build it or set DEEPLAKE_BIN")
    return b.resolve()


def stop_started(work: Path) -> None:
    for pidfile in work.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page, tmp_path):
    path = REPO / page
    found = blocks(path)
    runnable = [b for b in found if b[0] in ("sh", "bash", "python")]
    assert runnable, f"{page} has no code blocks"
    for lang, _, line, skip in found:
        assert lang in ("sh", "bash", "python", "text", "json"), f"{page}:{line}: fence language {lang!r}"
    env = {
        **os.environ,
        "PATH": f"{deeplake_bin().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO / "client" / "python" / "src"),
        "PORT": str(free_port()),
    }
    ran = 0
    try:
        for lang, code, line, skip in runnable:
            if skip is not None:
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", code] if lang in ("sh", "bash") else [sys.executable, "-c", code]
            p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, (
                f"{page}:{line}: the {lang} block failed ({p.returncode})\n{code}\n"
                f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
            )
            ran += 1
    finally:
        stop_started(tmp_path)
    assert ran == sum(1 for b in runnable if b[3] is None)


def test_blocks_left_out_say_why():
    for page in PAGES:
        for lang, code, line, skip in blocks(REPO / page):
            if skip is not None:
                assert len(skip) > 10, f"{page}:{line}: give a real reason for not running the block"
